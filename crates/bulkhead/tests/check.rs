//! `bulkhead check`: the webhook's rules offline, on manifests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test file: failing loudly is the point

use std::path::Path;
use std::process::{Command, Output};

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .arg("check")
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .output()
        .expect("bulkhead runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The verdict line for `object` and the line after it (a denial's message).
fn verdict_of(report: &str, object: &str) -> String {
    let lines: Vec<&str> = report.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.contains(&format!(" {object} (")))
        .unwrap_or_else(|| panic!("{object} is not in the report:\n{report}"));
    // The verdict line and its indented details (one patch operation a line).
    let details = lines[i + 1..].iter().take_while(|l| l.starts_with(' '));
    std::iter::once(&lines[i])
        .chain(details)
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_examples_get_the_answers_they_expect() {
    let out = check(&["examples/"]);
    let report = stdout(&out);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("0 not as expected"), "{report}");
    let cases = [
        (
            "Namespace solar-dev",
            "allow",
            "add /metadata/labels/bulkhead.dev~1tenant \"solar\"",
        ),
        (
            "Namespace kube-tools",
            "deny",
            "namespace name `kube-tools` is protected",
        ),
        ("Namespace wind-dev", "deny", "it has 1 of 1 namespaces"),
        (
            "Namespace solar-bob",
            "deny",
            "you are not an owner of tenant `solar`",
        ),
        ("Pod solar-dev/miner", "deny", "registry `ghcr.io`"),
        (
            "Pod solar-dev/web",
            "allow",
            "add /spec/priorityClassName \"tenant-low\"",
        ),
        (
            "Pod solar-dev/web",
            "allow",
            "add /spec/nodeSelector {\"kubernetes.io/os\":\"linux\",\"pool\":\"solar\"}",
        ),
        (
            "PersistentVolumeClaim solar-dev/data",
            "allow",
            "add /spec/storageClassName \"standard\"",
        ),
        (
            "Service solar-dev/exposed",
            "deny",
            "of type `NodePort` is not allowed",
        ),
        (
            "Ingress solar-dev/web-copy",
            "deny",
            "is already served by ingress `solar-dev/web`",
        ),
        ("ResourcePoolClaim solar-dev/web", "allow", ""),
        (
            "ResourcePoolClaim solar-dev/typo",
            "deny",
            "ResourcePoolClaim typo: not a non-negative quantity: requests.cpu: \"two\"",
        ),
    ];
    for (object, verdict, detail) in cases {
        let got = verdict_of(&report, object);
        assert!(got.starts_with(verdict), "{object}: {got}");
        assert!(got.contains(detail), "{object}: {got}");
    }
}

#[test]
fn a_denial_without_an_expectation_exits_1_and_as_sets_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("all.yaml"),
        "apiVersion: capsule.clastix.io/v1beta2\nkind: Tenant\nmetadata: {name: oil}\nspec:\n  owners: [{kind: User, name: carol}]\n  namespaceOptions: {quota: 1}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: oil-a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: oil-b}\n",
    )
    .unwrap();
    let path = dir.path().to_str().unwrap();
    let out = check(&["-f", path, "--as", "carol"]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        verdict_of(&report, "Namespace oil-a").starts_with("allow  Namespace oil-a (as carol)"),
        "{report}"
    );
    assert!(
        verdict_of(&report, "Namespace oil-b").contains("over the namespace quota of tenant `oil`"),
        "{report}"
    );
    // As someone else, both are refused.
    let out = check(&["-f", path, "--as", "dave", "--as-group", "bulkhead.dev"]);
    assert!(
        stdout(&out).contains("no tenant assigned to you: `dave`"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn unreadable_input_exits_2_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "kind: [unclosed\n").unwrap();
    let out = check(&[dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.yaml is not valid YAML"));
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("name the manifests to check"));
    let out = check(&["/nonexistent/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/x"));
}

#[test]
fn a_tenant_its_crd_refuses_is_denied_with_the_api_servers_words() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.yaml"),
        "apiVersion: capsule.clastix.io/v1beta2\nkind: Tenant\nmetadata: {name: gas}\nspec:\n  owners: [{kind: ServiceAccount, name: robot}]\n  ingressOptions: {allowedHostnames: {allowedRegex: '*.gas.example'}}\n",
    )
    .unwrap();
    let out = check(&["-f", dir.path().to_str().unwrap()]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let got = verdict_of(&report, "Tenant gas");
    assert!(got.starts_with("deny"), "{got}");
    assert!(
        got.contains("Tenant.bulkhead.dev \"gas\" is invalid: ")
            && got.contains("spec.ingressOptions.allowedHostnames.allowedRegex: Invalid value: \"string\": ")
            && got.contains("evaluating rule: must be a regular expression that compiles (RE2 syntax)")
            && got.contains("spec.owners: Invalid value: a ServiceAccount owner must be named system:serviceaccount:<namespace>:<name>"),
        "{got}"
    );
}

#[test]
fn the_platform_example_renders_the_team_s_objects() {
    let out = check(&["--show-rendered", "examples/platform/"]);
    let report = stdout(&out);
    assert!(out.status.success(), "{report}");
    for line in [
        "Tenant comet (defaultNamespaces) writes 1 object(s)\n         Namespace comet-dev (tenant comet)",
        "GlobalTenantResource argo-cd-projects writes 1 object(s)\n         AppProject argocd/comet (tenant comet)",
        "NetworkPolicy comet-staging/tenant-isolation (tenant comet)",
        "ConfigMap comet-dev/cluster-info (tenant comet)",
    ] {
        assert!(report.contains(line), "{line:?} missing:\n{report}");
    }
    // The rendered AppProject, as YAML after the report.
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&report[report.find("\n---\n").unwrap()..]).unwrap();
    let project = docs.iter().find(|d| d["kind"] == "AppProject").unwrap();
    assert_eq!(
        project["spec"]["destinations"],
        serde_json::json!([
            {"namespace": "comet-dev", "server": "https://kubernetes.default.svc"},
            {"namespace": "comet-staging", "server": "https://kubernetes.default.svc"}
        ])
    );
    assert_eq!(
        project["spec"]["roles"][0]["groups"],
        serde_json::json!(["comet-devs"])
    );
}

#[test]
fn replication_problems_fail_the_check() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("all.yaml"),
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {name: oil}
spec: {owners: [{kind: User, name: carol}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: oil-a, labels: {bulkhead.dev/tenant: oil}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: TenantResource
metadata: {name: escape, namespace: oil-a}
spec:
  scope: Tenant
  resources:
  - generators:
    - template: "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: '{{ $.tenant.metadata.name }}-all'}"
    - missingKey: error
      template: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {v: '{{ $.nothing.here }}'}"
"#,
    )
    .unwrap();
    let out = check(&[dir.path().to_str().unwrap()]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("TenantResource oil-a/escape writes 0 object(s) (PROBLEMS)"),
        "{report}"
    );
    assert!(
        report.contains("problem: ClusterRole oil-all: is cluster-scoped: a TenantResource writes only into its tenant's namespaces"),
        "{report}"
    );
    assert!(
        report.contains("problem: resources[0].generators[1] (tenant `oil`): the template fails"),
        "{report}"
    );
}

#[test]
fn the_platform_example_s_kubeconfig_is_what_bulkhead_kubeconfig_writes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let file = std::fs::read_to_string(root.join("examples/platform/comet.kubeconfig")).unwrap();
    // The command is in the file's comment; run it.
    let command: String = file
        .lines()
        .take_while(|l| l.starts_with('#'))
        .skip(1)
        .take(2)
        .map(|l| l.trim_start_matches('#').trim().trim_end_matches('\\').trim())
        .collect::<Vec<_>>()
        .join(" ");
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    assert_eq!(args.first(), Some(&"kubeconfig"), "{command}");
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body: String = file
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), body);
    let config: serde_json::Value = serde_saphyr::from_str(&body).unwrap();
    let user = &config["users"][0]["user"];
    assert_eq!(user["exec"]["command"], "kubelogin");
    assert!(
        config["clusters"][0]["cluster"]
            .get("certificate-authority-data")
            .is_none()
    );
    assert!(user.get("token").is_none() && user.get("client-key-data").is_none());
}
