//! `bulkhead kubeconfig`: the kubeconfig a platform team hands to a tenant user, pointing at the proxy.

use anyhow::{Result, bail};
use base64::Engine;
use serde_json::{Value, json};

use crate::cli::KubeconfigArgs;

/// The kubeconfig, as YAML. `ca_pem` is the proxy's CA, if given.
pub fn render(args: &KubeconfigArgs, ca_pem: Option<&[u8]>) -> Result<String> {
    if !args.server.starts_with("https://") {
        bail!(
            "--server must be an https:// URL (the proxy only speaks TLS), not {:?}",
            args.server
        );
    }
    if args.tenant.trim().is_empty() {
        bail!("--tenant must name a tenant");
    }
    let cluster_name = format!("bulkhead-{}", args.tenant);
    let user_name = format!("{}-user", args.tenant);
    let mut cluster = json!({"server": args.server});
    if let Some(pem) = ca_pem {
        if !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----") {
            bail!("--certificate-authority holds no PEM certificate");
        }
        cluster["certificate-authority-data"] = json!(base64::engine::general_purpose::STANDARD.encode(pem));
    }
    // `--exec-command -- kubelogin get-token ...` means the same as without the `--` (a shell habit),
    // not a plugin named `--`.
    let exec: &[String] = match args.exec_command.split_first() {
        Some((dashes, rest)) if dashes == "--" => rest,
        _ => &args.exec_command,
    };
    let user: Value = match (exec.split_first(), &args.token_file) {
        (Some((command, rest)), _) => json!({"exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": command,
            "args": rest,
            "interactiveMode": "IfAvailable",
            "provideClusterInfo": false,
        }}),
        (None, Some(file)) => json!({"tokenFile": file.display().to_string()}),
        (None, None) => json!({}),
    };
    let mut context = json!({"cluster": cluster_name, "user": user_name});
    if let Some(namespace) = &args.namespace {
        context["namespace"] = json!(namespace);
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": args.tenant, "context": context}],
        "current-context": args.tenant,
        "preferences": {},
    });
    Ok(serde_saphyr::to_string(&config)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn args() -> KubeconfigArgs {
        KubeconfigArgs {
            server: "https://proxy.example.com:9001".into(),
            tenant: "solar".into(),
            namespace: Some("solar-prod".into()),
            certificate_authority: None,
            exec_command: vec![],
            token_file: None,
        }
    }

    fn parse(yaml: &str) -> Value {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn exec_plugins_carry_no_key_material() {
        let mut a = args();
        a.exec_command = vec![
            "kubectl".into(),
            "oidc-login".into(),
            "get-token".into(),
            "--oidc-issuer-url=https://id".into(),
        ];
        let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let config = parse(&render(&a, Some(pem)).unwrap());
        assert_eq!(config["current-context"], "solar");
        assert_eq!(config["contexts"][0]["context"]["namespace"], "solar-prod");
        assert_eq!(
            config["clusters"][0]["cluster"]["server"],
            "https://proxy.example.com:9001"
        );
        let user = &config["users"][0]["user"];
        assert_eq!(user["exec"]["command"], "kubectl");
        assert_eq!(
            user["exec"]["args"],
            json!(["oidc-login", "get-token", "--oidc-issuer-url=https://id"])
        );
        assert!(user.get("token").is_none() && user.get("client-key-data").is_none());
        // A leading `--` is the shell habit, not the plugin.
        let mut dashed = args();
        dashed.exec_command = std::iter::once("--".to_owned())
            .chain(a.exec_command.clone())
            .collect();
        assert_eq!(
            parse(&render(&dashed, Some(pem)).unwrap())["users"],
            config["users"]
        );
        let ca = config["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(ca).unwrap(), pem);
    }

    #[test]
    fn token_files_are_referenced_and_bad_input_is_refused() {
        let mut a = args();
        a.token_file = Some(PathBuf::from("/var/run/secrets/token"));
        let config = parse(&render(&a, None).unwrap());
        assert_eq!(config["users"][0]["user"]["tokenFile"], "/var/run/secrets/token");
        assert!(
            config["clusters"][0]["cluster"]
                .get("certificate-authority-data")
                .is_none()
        );
        let mut plain = args();
        plain.server = "http://proxy:9001".into();
        assert!(render(&plain, None).unwrap_err().to_string().contains("https://"));
        assert!(render(&args(), Some(b"garbage")).is_err());
    }
}
