//! The real `helm` CLI (built from its Go module by `cargo xtask`, named by `BULKHEAD_E2E_HELM`):
//! the chart installs, upgrades and uninstalls in both modes, and a tenant user runs helm through the
//! proxy in their own namespace. Where no helm is given (the testkit run), the tests say so and return.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::harness::{Bulkhead, Cluster, eventually};

/// The helm CLI, when the run provides one.
fn helm_binary(cluster: &Cluster) -> Option<PathBuf> {
    let helm = std::env::var_os("BULKHEAD_E2E_HELM").map(PathBuf::from);
    if helm.is_none() || cluster.is_testkit() {
        eprintln!(
            "not run: needs the helm CLI (BULKHEAD_E2E_HELM, set by `cargo xtask test` for the real control plane run)"
        );
        return None;
    }
    helm
}

fn helm(binary: &PathBuf, kubeconfig: &std::path::Path, args: &[&str]) -> Output {
    Command::new(binary)
        .env("KUBECONFIG", kubeconfig)
        .env("HELM_CACHE_HOME", kubeconfig.with_extension("helm-cache"))
        .env("HELM_CONFIG_HOME", kubeconfig.with_extension("helm-config"))
        .env("HELM_DATA_HOME", kubeconfig.with_extension("helm-data"))
        .args(args)
        .output()
        .expect("helm runs")
}

fn helm_ok(binary: &PathBuf, kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let out = helm(binary, kubeconfig, args);
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../charts/bulkhead");

/// Uninstalls the release and deletes its namespace when the test ends, however it ends: the chart's
/// webhook configurations fail closed and point at pods that never run here.
struct Release {
    helm: PathBuf,
    kubeconfig: PathBuf,
    name: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(
            &self.helm,
            &self.kubeconfig,
            &["uninstall", &self.name, "-n", &self.name],
        );
        let _ = Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            .args([
                "delete",
                "namespace",
                &self.name,
                "--ignore-not-found",
                "--wait=false",
            ])
            .output();
    }
}

#[tokio::test]
async fn helm_installs_upgrades_and_uninstalls_the_chart_in_both_modes() {
    let cluster = Cluster::start().await;
    let Some(binary) = helm_binary(&cluster) else {
        return;
    };
    let name = cluster.unique("e2e-helm");
    let kubeconfig = cluster.kubeconfig().to_owned();
    let release = Release {
        helm: binary.clone(),
        kubeconfig: kubeconfig.clone(),
        name: name.clone(),
    };
    let values = [
        "--set",
        "configuration.create=false",
        "--set",
        &format!("webhook.configurationName={name}"),
        // The proxy published through an Ingress, re-encrypting to it behind an allow-list: the API
        // server must take the Ingress the chart renders.
        "--set",
        "proxy.tls.secretName=proxy-internal",
        "--set",
        "proxy.ingress.enabled=true",
        "--set",
        "proxy.ingress.host=tenants.example.com",
        "--set",
        "proxy.ingress.tls.mode=reencrypt",
        "--set",
        "proxy.ingress.tls.secretName=proxy-public",
        "--set",
        "proxy.ingress.sourceRanges={10.0.0.0/8,192.0.2.0/24}",
    ];
    let mut install = vec!["install", &name, CHART, "-n", &name, "--create-namespace"];
    install.extend(values);
    helm_ok(&binary, &kubeconfig, &install);
    let selector = format!("app.kubernetes.io/instance={name}");
    let k = cluster.kubectl();
    // Every object was accepted; the webhook configurations point at the release's Service.
    let deployments = k.ok(&["get", "deployments", "-n", &name, "-o", "name"]);
    assert_eq!(deployments.lines().count(), 1, "combined mode: {deployments}");
    let service = k.ok(&[
        "get",
        "validatingwebhookconfiguration",
        &name,
        "-o",
        "jsonpath={.webhooks[0].clientConfig.service.namespace}/{.webhooks[0].clientConfig.service.name}",
    ]);
    assert_eq!(service, format!("{name}/{name}-bulkhead-webhook"));
    let ingress = k.ok(&[
        "get",
        "ingress",
        "-n",
        &name,
        &format!("{name}-bulkhead-proxy"),
        "-o",
        r"jsonpath={.spec.rules[0].host}|{.spec.tls[0].secretName}|{.spec.rules[0].http.paths[0].backend.service.name}|{.metadata.annotations.nginx\.ingress\.kubernetes\.io/proxy-ssl-verify}|{.metadata.annotations.nginx\.ingress\.kubernetes\.io/whitelist-source-range}",
    ]);
    assert_eq!(
        ingress,
        format!("tenants.example.com|proxy-public|{name}-bulkhead-proxy|on|10.0.0.0/8,192.0.2.0/24")
    );
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/tenants.bulkhead.dev",
        "crd/tenantresources.bulkhead.dev",
        "--timeout=30s",
    ]);

    let mut upgrade = vec!["upgrade", &name, CHART, "-n", &name, "--set", "mode=split"];
    upgrade.extend(values);
    helm_ok(&binary, &kubeconfig, &upgrade);
    let deployments = k.ok(&["get", "deployments", "-n", &name, "-o", "name"]);
    assert_eq!(deployments.lines().count(), 3, "split mode: {deployments}");
    let accounts = k.ok(&[
        "get",
        "serviceaccounts",
        "-n",
        &name,
        "-l",
        &selector,
        "-o",
        "name",
    ]);
    assert_eq!(accounts.lines().count(), 2, "the proxy has its own: {accounts}");
    let listed = helm_ok(&binary, &kubeconfig, &["list", "-n", &name, "-q"]);
    assert_eq!(listed.trim(), name);

    helm_ok(&binary, &kubeconfig, &["uninstall", &name, "-n", &name, "--wait"]);
    // Nothing of the release is left but the CRDs (which Helm never deletes).
    let namespaced = k.ok(&[
        "get",
        "deployments,services,serviceaccounts,roles,rolebindings,secrets,configmaps,poddisruptionbudgets,ingresses",
        "-n",
        &name,
        "-l",
        &selector,
        "-o",
        "name",
    ]);
    assert_eq!(namespaced.trim(), "", "left behind: {namespaced}");
    let cluster_wide = k.ok(&[
        "get",
        "clusterroles,clusterrolebindings,validatingwebhookconfigurations,mutatingwebhookconfigurations,validatingadmissionpolicies,validatingadmissionpolicybindings",
        "-l",
        &selector,
        "-o",
        "name",
    ]);
    assert_eq!(cluster_wide.trim(), "", "left behind: {cluster_wide}");
    k.ok(&["get", "crd", "tenants.bulkhead.dev"]);
    drop(release);
    // The API server drops a deleted ValidatingAdmissionPolicy from its admission cache some time after
    // the delete; until then the release's policy still judges the next test's Bulkhead (a service
    // account outside this release's namespace) as a tenant user. Wait until a tenant user's dry run
    // that the policy would deny goes through.
    let probe = cluster.unique("e2e-helm-probe");
    k.ok(&["create", "namespace", &probe]);
    let prober = cluster.kubectl_as(&cluster.unique("prober"), &["bulkhead.dev", "system:masters"]);
    crate::harness::eventually(std::time::Duration::from_secs(60), || async {
        let out = prober.run(&[
            "label",
            "namespace",
            &probe,
            "bulkhead.dev/tenant=nobody",
            "--dry-run=server",
        ]);
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await;
    k.ok(&["delete", "namespace", &probe, "--wait=false"]);
}

#[tokio::test]
async fn a_tenant_user_runs_helm_in_their_namespace_through_the_proxy() {
    let cluster = Cluster::start().await;
    let Some(binary) = helm_binary(&cluster) else {
        return;
    };
    let lease = cluster.unique("e2e-helm-lease");
    let bulkhead = Bulkhead::start(
        &cluster,
        &["--lease-namespace", "default", "--lease-name", &lease],
    );
    bulkhead.wait_ready().await;
    let t = cluster.unique("e2e-helm-t");
    let other = cluster.unique("e2e-helm-other");
    let accounts = cluster.unique("e2e-helm-accounts");
    cluster.apply(&format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {accounts}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: owner, namespace: {accounts}}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {t}}}
spec: {{owners: [{{kind: ServiceAccount, name: 'system:serviceaccount:{accounts}:owner'}}]}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {other}}}
spec: {{owners: [{{kind: User, name: someone-else}}]}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {t}-apps, labels: {{bulkhead.dev/tenant: {t}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {other}-apps, labels: {{bulkhead.dev/tenant: {other}}}}}
"#
    ));
    let ns = format!("{t}-apps");
    let token = cluster.service_account_token(&accounts, "owner");
    let kubeconfig = bulkhead.proxy_kubeconfig(cluster.dir(), &t, &token);
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/e2e/fixtures/tenant-app");
    // Until the controller has given the owner its RoleBinding in the namespace.
    eventually(Duration::from_secs(30), || async {
        let out = helm(
            &binary,
            &kubeconfig,
            &["install", "app", chart, "-n", &ns, "--set", "greeting=hi"],
        );
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await;
    let greeting = cluster.kubectl().ok(&[
        "get",
        "configmap",
        "app-settings",
        "-n",
        &ns,
        "-o",
        "jsonpath={.data.greeting}",
    ]);
    assert_eq!(greeting, "hi");
    // Another tenant's release, made by its administrator: never in this owner's lists.
    let admin = cluster.kubeconfig().to_owned();
    helm_ok(
        &binary,
        &admin,
        &["install", "theirs", chart, "-n", &format!("{other}-apps")],
    );
    let mine = helm_ok(&binary, &kubeconfig, &["list", "-n", &ns, "-q"]);
    assert_eq!(mine.trim(), "app");
    let everywhere = helm_ok(&binary, &kubeconfig, &["list", "-A", "-q"]);
    assert_eq!(
        everywhere.trim(),
        "app",
        "helm list -A shows the tenant's releases only"
    );
    let theirs = helm(
        &binary,
        &kubeconfig,
        &["list", "-n", &format!("{other}-apps"), "-q"],
    );
    let stderr = String::from_utf8_lossy(&theirs.stderr);
    assert!(
        !theirs.status.success() && stderr.contains("forbidden"),
        "another tenant's releases: {}{stderr}",
        String::from_utf8_lossy(&theirs.stdout)
    );
    helm_ok(&binary, &kubeconfig, &["uninstall", "app", "-n", &ns]);
    let gone = cluster
        .kubectl()
        .run(&["get", "configmap", "app-settings", "-n", &ns]);
    assert!(!gone.status.success(), "the release's objects went with it");
    helm_ok(
        &binary,
        &admin,
        &["uninstall", "theirs", "-n", &format!("{other}-apps")],
    );
}
