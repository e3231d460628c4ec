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
