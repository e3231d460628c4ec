//! kubectl as a real client of the testkit: tables, explain, protobuf creates, apply, can-i.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test file: failing loudly is the point

mod common;

use bulkhead_testkit::ADMIN_TOKEN;

use common::{kubectl, server};

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn kubectl_create_get_explain_and_can_i() {
    let server = server().await;
    server.install_bulkhead_crds().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let k = |args: &[&str]| kubectl(&server, dir.path(), ADMIN_TOKEN, args);

    // `kubectl create <kind>` sends protobuf bodies.
    ok(k(&["create", "namespace", "team-a"]));
    ok(k(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
        "-n",
        "team-a",
    ]));
    assert_eq!(
        ok(k(&[
            "get",
            "deploy",
            "web",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}"
        ])),
        "2 nginx:1.27"
    );
    ok(k(&[
        "create",
        "rolebinding",
        "alice-admin",
        "--clusterrole=admin",
        "--user=alice",
        "-n",
        "team-a",
    ]));
    assert_eq!(
        ok(k(&[
            "auth",
            "can-i",
            "create",
            "deployments",
            "-n",
            "team-a",
            "--as",
            "alice"
        ]))
        .trim(),
        "yes"
    );
    let denied = k(&[
        "auth",
        "can-i",
        "create",
        "deployments",
        "-n",
        "default",
        "--as",
        "alice",
    ]);
    assert_eq!(String::from_utf8_lossy(&denied.stdout).trim(), "no");

    // Server-side printing, with the CRD's printer columns.
    let manifest = dir.path().join("tenant.yaml");
    std::fs::write(&manifest, "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {name: solar}\nspec:\n  owners: [{kind: User, name: alice}]\n  namespaceOptions: {quota: 3}\n").unwrap();
    ok(k(&["apply", "-f", manifest.to_str().unwrap()]));
    let table = ok(k(&["get", "tenants"]));
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "STATE",
            "NAMESPACE QUOTA",
            "NAMESPACE COUNT",
            "NODE SELECTOR",
            "AGE"
        ]
    );
    assert!(table.lines().nth(1).unwrap().starts_with("solar"), "{table}");
    let namespaces = ok(k(&["get", "ns"]));
    assert!(
        namespaces.starts_with("NAME") && namespaces.contains("STATUS") && namespaces.contains("team-a"),
        "{namespaces}"
    );

    // kubectl explain reads the CRD's field documentation.
    let explained = ok(k(&["explain", "tenant.spec.owners.kind"]));
    assert!(explained.contains("system:serviceaccount:"), "{explained}");
    for value in ["User", "Group", "ServiceAccount"] {
        assert!(explained.lines().any(|l| l.trim() == value), "{explained}");
    }

    // Strict field validation (kubectl's default) refuses unknown fields.
    std::fs::write(
        &manifest,
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {name: typo}\nspec: {ownerz: []}\n",
    )
    .unwrap();
    let refused = k(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unknown field \"spec.ownerz\""),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Deleting a namespace removes what it holds.
    ok(k(&["delete", "namespace", "team-a"]));
    let gone = k(&["get", "deploy", "web", "-n", "team-a"]);
    assert!(!gone.status.success());
}
