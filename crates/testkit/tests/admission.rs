//! Admission webhooks, called the way the API server calls them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test file: failing loudly is the point

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::routing::post as route_post;
use base64::Engine;
use bulkhead_testkit::tls::{ServingCert, serve_tls};
use serde_json::{Value, json};

use common::{admin, raw, server};

type Seen = Arc<Mutex<Vec<Value>>>;

/// A webhook over TLS: /mutate adds a label, /validate denies `deny=yes`, /slow answers after 3 s.
async fn webhook() -> (String, String, Seen, tokio_util::sync::CancellationToken) {
    let cert = ServingCert::generate(&["127.0.0.1"]).unwrap();
    let seen: Seen = Arc::default();
    let (s1, s2) = (seen.clone(), seen.clone());
    let app = axum::Router::new()
        .route(
            "/mutate",
            route_post(move |Json(review): Json<Value>| async move {
                s1.lock().unwrap().push(review.clone());
                let patch = json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "true"}]);
                let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
                Json(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
                    "uid": review["request"]["uid"], "allowed": true, "patchType": "JSONPatch", "patch": patch}}))
            }),
        )
        .route(
            "/validate",
            route_post(move |Json(review): Json<Value>| async move {
                s2.lock().unwrap().push(review.clone());
                let denied = review["request"]["object"]["metadata"]["labels"]["deny"] == "yes";
                let mut response = json!({"uid": review["request"]["uid"], "allowed": !denied});
                if denied {
                    response["status"] = json!({"code": 403, "reason": "Forbidden", "message": "configmaps labelled deny=yes are not allowed"});
                }
                Json(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}))
            }),
        )
        .route(
            "/slow",
            route_post(|Json(review): Json<Value>| async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Json(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": review["request"]["uid"], "allowed": true}}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(serve_tls(
        listener,
        cert.server_config().unwrap(),
        app,
        stop.clone(),
    ));
    let ca = base64::engine::general_purpose::STANDARD.encode(&cert.ca_pem);
    (url, ca, seen, stop)
}

fn hook(name: &str, url: &str, ca: &str, failure: &str, timeout: u64) -> Value {
    json!({
        "name": name,
        "clientConfig": {"url": url, "caBundle": ca},
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "scope": "Namespaced"}],
        "namespaceSelector": {"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]},
        "failurePolicy": failure, "sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": timeout,
    })
}

async fn post(client: &kube::Client, path: &str, body: Value) -> (u16, Value) {
    raw(
        client,
        "POST",
        path,
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    )
    .await
}

fn cm(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}})
}

#[tokio::test]
async fn webhooks_mutate_deny_see_the_request_and_respect_selectors() {
    let server = server().await;
    let client = admin(&server).await;
    let (url, ca, seen, _stop) = webhook().await;
    let mutating = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": {"name": "m"},
        "webhooks": [hook("mutate.example.com", &format!("{url}/mutate"), &ca, "Fail", 5)]});
    let validating = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "v"},
        "webhooks": [hook("validate.example.com", &format!("{url}/validate"), &ca, "Fail", 5)]});
    assert_eq!(
        post(
            &client,
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            mutating
        )
        .await
        .0,
        201
    );
    assert_eq!(
        post(
            &client,
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            validating
        )
        .await
        .0,
        201
    );
    for (name, labels) in [("a", json!({})), ("skipped", json!({"skip": "true"}))] {
        let ns =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}});
        assert_eq!(post(&client, "/api/v1/namespaces", ns).await.0, 201);
    }

    let (code, created) = post(&client, "/api/v1/namespaces/a/configmaps", cm("ok", json!({}))).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["metadata"]["labels"]["mutated"], "true",
        "the mutating webhook's patch is applied"
    );

    let (code, status) = post(
        &client,
        "/api/v1/namespaces/a/configmaps",
        cm("no", json!({"deny": "yes"})),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "admission webhook \"validate.example.com\" denied the request: configmaps labelled deny=yes are not allowed"
    );
    assert_eq!(status["reason"], "Forbidden");

    {
        let reviews = seen.lock().unwrap();
        let first = &reviews[0]["request"];
        assert_eq!(reviews[0]["kind"], "AdmissionReview");
        assert_eq!(first["operation"], "CREATE");
        assert_eq!(first["namespace"], "a");
        assert_eq!(
            first["resource"],
            json!({"group": "", "version": "v1", "resource": "configmaps"})
        );
        assert_eq!(first["userInfo"]["username"], bulkhead_testkit::ADMIN_USER);
        // The validating webhook sees the object as mutated.
        assert_eq!(
            reviews[1]["request"]["object"]["metadata"]["labels"]["mutated"],
            "true"
        );
    }
    let patch = serde_json::to_vec(&json!({"data": {"k": "v"}})).unwrap();
    let (code, _) = raw(
        &client,
        "PATCH",
        "/api/v1/namespaces/a/configmaps/ok",
        "application/merge-patch+json",
        patch,
    )
    .await;
    assert_eq!(code, 200);
    {
        let reviews = seen.lock().unwrap();
        let update = &reviews.last().unwrap()["request"];
        assert_eq!(update["operation"], "UPDATE");
        assert_eq!(update["oldObject"]["metadata"]["name"], "ok");
        assert_eq!(update["object"]["data"]["k"], "v");
    }

    // Namespaces outside the namespaceSelector are not sent to the webhooks.
    let calls = seen.lock().unwrap().len();
    let (code, _) = post(
        &client,
        "/api/v1/namespaces/skipped/configmaps",
        cm("free", json!({"deny": "yes"})),
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(seen.lock().unwrap().len(), calls);
}

#[tokio::test]
async fn an_unreachable_or_slow_webhook_fails_closed_or_is_ignored_by_its_policy() {
    let server = server().await;
    let client = admin(&server).await;
    let (url, ca, _seen, _stop) = webhook().await;
    assert_eq!(
        post(
            &client,
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}})
        )
        .await
        .0,
        201
    );
    let path = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";
    let config = |name: &str, hook: Value| json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {"name": name}, "webhooks": [hook]});

    // Nothing listens on port 1.
    assert_eq!(
        post(
            &client,
            path,
            config(
                "down",
                hook("down.example.com", "https://127.0.0.1:1/", &ca, "Fail", 2)
            )
        )
        .await
        .0,
        201
    );
    let (code, status) = post(&client, "/api/v1/namespaces/a/configmaps", cm("x", json!({}))).await;
    assert_eq!(code, 500);
    let message = status["message"].as_str().unwrap();
    assert!(message.starts_with("Internal error occurred: failed calling webhook \"down.example.com\": failed to call webhook: Post \"https://127.0.0.1:1/?timeout=2s\""), "{message}");

    let ignore = serde_json::to_vec(
        &json!({"webhooks": [hook("down.example.com", "https://127.0.0.1:1/", &ca, "Ignore", 2)]}),
    )
    .unwrap();
    let (code, _) = raw(
        &client,
        "PATCH",
        &format!("{path}/down"),
        "application/merge-patch+json",
        ignore,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        post(&client, "/api/v1/namespaces/a/configmaps", cm("y", json!({})))
            .await
            .0,
        201,
        "Ignore lets the request through"
    );

    // A webhook slower than its timeout counts as a failed call.
    assert_eq!(
        post(
            &client,
            path,
            config(
                "slow",
                hook("slow.example.com", &format!("{url}/slow"), &ca, "Fail", 1)
            )
        )
        .await
        .0,
        201
    );
    let (code, status) = post(&client, "/api/v1/namespaces/a/configmaps", cm("z", json!({}))).await;
    assert_eq!(code, 500);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .ends_with("context deadline exceeded"),
        "{status}"
    );

    // A CA that did not sign the webhook's certificate fails the TLS handshake.
    let other_ca = base64::engine::general_purpose::STANDARD
        .encode(ServingCert::generate(&["127.0.0.1"]).unwrap().ca_pem);
    let wrong = serde_json::to_vec(
        &json!({"webhooks": [hook("slow.example.com", &format!("{url}/validate"), &other_ca, "Fail", 2)]}),
    )
    .unwrap();
    raw(
        &client,
        "PATCH",
        &format!("{path}/slow"),
        "application/merge-patch+json",
        wrong,
    )
    .await;
    let (code, status) = post(&client, "/api/v1/namespaces/a/configmaps", cm("w", json!({}))).await;
    assert_eq!(code, 500, "{status}");
}
