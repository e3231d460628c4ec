//! Authentication, impersonation, RBAC and the review APIs, as the API server does them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test file: failing loudly is the point

mod common;

use serde_json::json;

use common::{admin, client, kubectl, raw, server};

#[tokio::test]
async fn rbac_denials_use_the_api_servers_wording_and_bindings_grant() {
    let server = server().await;
    server.add_token("alice-token", "alice", &["devs"]);
    let alice = client(&server, "alice-token").await;
    let (code, status) = raw(
        &alice,
        "GET",
        "/api/v1/namespaces",
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "namespaces is forbidden: User \"alice\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
    );
    let (code, status) = raw(
        &alice,
        "GET",
        "/api/v1/namespaces/default/configmaps/x",
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "configmaps \"x\" is forbidden: User \"alice\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );

    // A RoleBinding to the group gives alice `view` in one namespace only.
    let admin = admin(&server).await;
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "devs-view", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "devs"}],
    });
    let (code, _) = raw(
        &admin,
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
        "application/json",
        serde_json::to_vec(&binding).unwrap(),
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(
        raw(
            &alice,
            "GET",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            Vec::new()
        )
        .await
        .0,
        200
    );
    assert_eq!(
        raw(
            &alice,
            "GET",
            "/api/v1/namespaces/kube-system/configmaps",
            "application/json",
            Vec::new()
        )
        .await
        .0,
        403
    );
    assert_eq!(
        raw(
            &alice,
            "GET",
            "/api/v1/namespaces/default/secrets",
            "application/json",
            Vec::new()
        )
        .await
        .0,
        403,
        "view does not read secrets"
    );
    // Discovery is open to every authenticated user.
    assert_eq!(
        raw(&alice, "GET", "/apis", "application/json", Vec::new())
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn impersonation_needs_the_impersonate_verb() {
    let server = server().await;
    server.add_token("alice-token", "alice", &[]);
    let request = |token: &str| {
        http::Request::get("/api/v1/namespaces")
            .header("authorization", format!("Bearer {token}"))
            .header("impersonate-user", "someone-else")
            .header("impersonate-group", "system:masters")
            .body(Vec::new())
            .unwrap()
    };
    let alice = client(&server, "alice-token").await;
    let response = alice
        .send(request("alice-token").map(kube::client::Body::from))
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = serde_json::from_slice(
        &http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    assert_eq!(
        body["message"],
        "users \"someone-else\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    // The administrator may impersonate, and is then treated as the impersonated user.
    let dir = tempfile::tempdir().unwrap();
    let out = kubectl(
        &server,
        dir.path(),
        bulkhead_testkit::ADMIN_TOKEN,
        &["get", "ns", "--as", "bob"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("User \"bob\" cannot list resource \"namespaces\"")
    );
    let out = kubectl(
        &server,
        dir.path(),
        bulkhead_testkit::ADMIN_TOKEN,
        &["get", "ns", "--as", "bob", "--as-group", "system:masters"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn token_and_subject_access_reviews() {
    let server = server().await;
    server.add_token("alice-token", "alice", &["devs"]);
    let admin = admin(&server).await;
    let review = |token: &str| {
        serde_json::to_vec(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})).unwrap()
    };
    let (code, r) = raw(
        &admin,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "application/json",
        review("alice-token"),
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(r["status"]["authenticated"], true);
    assert_eq!(r["status"]["user"]["username"], "alice");
    assert_eq!(
        r["status"]["user"]["groups"],
        json!(["devs", "system:authenticated"])
    );
    server.revoke_token("alice-token");
    let (_, r) = raw(
        &admin,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "application/json",
        review("alice-token"),
    )
    .await;
    assert_eq!(
        r["status"]["authenticated"], false,
        "a revoked token no longer authenticates"
    );

    let sar = |verb: &str, namespace: &str| {
        serde_json::to_vec(&json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": "carol", "groups": ["system:masters"], "resourceAttributes": {"verb": verb, "resource": "pods", "namespace": namespace}},
        }))
        .unwrap()
    };
    let (code, r) = raw(
        &admin,
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        "application/json",
        sar("delete", "x"),
    )
    .await;
    assert_eq!((code, r["status"]["allowed"].as_bool()), (201, Some(true)));
    let plain = serde_json::to_vec(&json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "carol", "resourceAttributes": {"verb": "delete", "resource": "pods", "namespace": "x"}},
    }))
    .unwrap();
    let (_, r) = raw(
        &admin,
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        "application/json",
        plain,
    )
    .await;
    assert_eq!(r["status"]["allowed"], false);
    // Only those allowed to create reviews may ask.
    server.add_token("dave-token", "dave", &[]);
    let dave = client(&server, "dave-token").await;
    assert_eq!(
        raw(
            &dave,
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            "application/json",
            sar("get", "x")
        )
        .await
        .0,
        403
    );
    assert_eq!(
        raw(
            &dave,
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            "application/json",
            review("x")
        )
        .await
        .0,
        403
    );
}
