//! The webhook router without sockets: real AdmissionReviews in, responses out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test file: failing loudly is the point

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use bulkhead_api::{Tenant, labels};
use bulkhead_cache::Cache;
use bulkhead_webhook::{AdmissionMetrics, AppState, Denials, router};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use tower::ServiceExt;

fn state() -> (Arc<AppState>, prometheus::Registry) {
    state_with(None)
}

fn state_with(client: Option<kube::Client>) -> (Arc<AppState>, prometheus::Registry) {
    let cache = Cache::detached();
    load_tenants(&cache);
    load_namespaces(&cache);
    state_over(cache, client)
}

/// The Tenant store's first list: `solar`, owned by alice, pulling only from quay.io.
fn load_tenants(cache: &Cache) {
    let tenant: Tenant = serde_json::from_value(json!({
        "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": "solar", "uid": "uid-solar"},
        "spec": {"owners": [{"kind": "User", "name": "alice"}],
                 "containerRegistries": {"allowed": ["quay.io"]}}
    }))
    .unwrap();
    let feed = cache.tenants_feed();
    feed.apply(Event::Init);
    feed.apply(Event::InitApply(tenant));
    feed.apply(Event::InitDone);
}

/// The Namespace store's first list: `solar-one` of tenant solar, and `elsewhere` of none.
fn load_namespaces(cache: &Cache) {
    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": "solar-one", "labels": {labels::TENANT: "solar"}}}),
    )
    .unwrap();
    let elsewhere: Namespace = serde_json::from_value(json!({"metadata": {"name": "elsewhere"}})).unwrap();
    let feed = cache.namespaces_feed();
    feed.apply(Event::Init);
    feed.apply(Event::InitApply(ns));
    feed.apply(Event::InitApply(elsewhere));
    feed.apply(Event::InitDone);
}

fn state_over(cache: Cache, client: Option<kube::Client>) -> (Arc<AppState>, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let metrics = AdmissionMetrics::register(&registry).unwrap();
    (
        Arc::new(AppState {
            cache,
            own_identity: "system:serviceaccount:bulkhead-system:bulkhead".into(),
            metrics,
            denials: Denials::discard(),
            client,
            ledgers: Default::default(),
        }),
        registry,
    )
}

fn review(
    operation: &str,
    kind: &str,
    namespace: Option<&str>,
    user: &str,
    object: Value,
    old: Value,
) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "3f1c", "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "x"},
            "name": object["metadata"]["name"].as_str().or(old["metadata"]["name"].as_str()).unwrap_or_default(),
            "namespace": namespace, "operation": operation,
            "userInfo": {"username": user, "groups": ["bulkhead.dev", "system:authenticated"]},
            "object": object, "oldObject": old
        }
    })
}

async fn post(state: Arc<AppState>, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let response = router(state)
        .oneshot(
            Request::post(path)
                .header("content-type", "application/json")
                .body(body.into())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_owner_creating_a_namespace_gets_the_tenant_label_and_owner_reference_patched_in() {
    let (s, registry) = state();
    let body = review(
        "CREATE",
        "Namespace",
        None,
        "alice",
        json!({"metadata": {"name": "web"}}),
        Value::Null,
    );
    let (status, out) = post(s, "/mutate/namespaces", body.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let response = &out["response"];
    assert_eq!(response["uid"], "3f1c");
    assert_eq!(response["allowed"], true);
    let patch: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(
        patch
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["path"] == "/metadata/labels" && op["value"][labels::TENANT] == "solar"),
        "{patch}"
    );
    assert!(
        patch
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["path"] == "/metadata/ownerReferences" && op["value"][0]["uid"] == "uid-solar"),
        "{patch}"
    );
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        text.contains(
            r#"bulkhead_admission_requests_total{allowed="true",operation="CREATE",webhook="namespaces"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn removing_the_tenant_label_is_denied_with_a_message_and_never_patched() {
    let (s, _) = state();
    let old = json!({"metadata": {"name": "solar-one", "labels": {labels::TENANT: "solar"}}});
    let new = json!({"metadata": {"name": "solar-one", "labels": {}}});
    let (status, out) = post(
        s,
        "/validate/namespaces",
        review("UPDATE", "Namespace", None, "alice", new, old).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out["response"]["allowed"], false);
    assert_eq!(
        out["response"]["status"]["message"],
        "the label `bulkhead.dev/tenant` of namespace `solar-one` cannot be removed: it belongs to tenant `solar`"
    );
    assert!(out["response"].get("patch").is_none());
}

#[tokio::test]
async fn pods_in_tenant_namespaces_are_checked_and_others_are_not() {
    let (s, _) = state();
    let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "a", "image": "ghcr.io/x/y:1"}]}});
    let (_, out) = post(
        s.clone(),
        "/validate/pods",
        review(
            "CREATE",
            "Pod",
            Some("solar-one"),
            "system:serviceaccount:kube-system:replicaset-controller",
            pod.clone(),
            Value::Null,
        )
        .to_string(),
    )
    .await;
    assert_eq!(out["response"]["allowed"], false);
    assert!(
        out["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("registry `ghcr.io`")
    );
    let (_, out) = post(
        s.clone(),
        "/validate/pods",
        review(
            "CREATE",
            "Pod",
            Some("elsewhere"),
            "alice",
            pod.clone(),
            Value::Null,
        )
        .to_string(),
    )
    .await;
    assert_eq!(out["response"]["allowed"], true);
    // A namespace the cache has not seen is not passed by: with nothing to read it with, the request
    // is denied with a message to retry.
    let (_, out) = post(
        s,
        "/validate/pods",
        review("CREATE", "Pod", Some("solar-new"), "alice", pod, Value::Null).to_string(),
    )
    .await;
    assert_eq!(out["response"]["allowed"], false);
    let message = out["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("namespace `solar-new` is not in Bulkhead's cache yet and could not be read")
            && message.contains("retry in a moment"),
        "{message}"
    );
}

#[tokio::test]
async fn a_cache_still_loading_fails_the_call_and_answers_once_it_has_loaded() {
    // A process just started: the Tenants are listed, the Namespaces not yet. Judged now, a pod in
    // solar-one would look like a pod outside every tenant and pass.
    let cache = Cache::detached();
    load_tenants(&cache);
    let (s, registry) = state_over(cache.clone(), None);
    let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "a", "image": "ghcr.io/x/y:1"}]}});
    let body = review("CREATE", "Pod", Some("solar-one"), "alice", pod, Value::Null).to_string();
    let started = std::time::Instant::now();
    let (status, out) = post(s.clone(), "/validate/pods", body.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{out}");
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains("cache is still loading"),
        "{out}"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "it should wait for the cache a little before failing the call"
    );

    // A call that arrives while the cache loads waits and is judged on the loaded cache.
    let waiting = tokio::spawn(post(s.clone(), "/validate/pods", body));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    load_namespaces(&cache);
    let (status, out) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out["response"]["allowed"], false, "{out}");
    assert!(
        out["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("registry `ghcr.io`"),
        "{out}"
    );
    // The failed call was never counted as an answer.
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        text.contains(
            r#"bulkhead_admission_requests_total{allowed="false",operation="CREATE",webhook="pods"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn malformed_oversized_and_misrouted_requests_get_clear_errors() {
    let (s, _) = state();
    let (status, out) = post(s.clone(), "/validate/namespaces", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .starts_with("the body is not an AdmissionReview")
    );
    let huge = vec![b' '; bulkhead_webhook::review::MAX_BODY + 10];
    let (status, out) = post(s.clone(), "/validate/namespaces", huge).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(out["message"].as_str().unwrap().contains("larger than"));
    let bad_object = review(
        "CREATE",
        "Pod",
        Some("solar-one"),
        "alice",
        json!({"metadata": {"name": 7}}),
        Value::Null,
    );
    let (status, out) = post(s.clone(), "/validate/pods", bad_object.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains("the pod cannot be read")
    );
    let (status, _) = post(s.clone(), "/validate/secrets", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(s, "/mutate/nodes", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_namespace_the_cache_has_not_seen_is_read_from_the_api_server_and_judged() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = bulkhead_testkit::TestServer::start().await.unwrap();
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&server.kubeconfig(bulkhead_testkit::ADMIN_TOKEN)).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    for (name, tenant) in [("solar-late", "solar"), ("ghost-one", "ghost")] {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {labels::TENANT: tenant}}}))
                .unwrap();
        namespaces
            .create(&kube::api::PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let (s, _) = state_with(Some(client));
    let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "a", "image": "ghcr.io/x/y:1"}]}});
    let ask = |ns: &str| review("CREATE", "Pod", Some(ns), "alice", pod.clone(), Value::Null).to_string();
    // Read live: the namespace is solar's, and solar's registry rule applies.
    let (_, out) = post(s.clone(), "/validate/pods", ask("solar-late")).await;
    assert_eq!(out["response"]["allowed"], false);
    let message = out["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("registry `ghcr.io`") && message.contains("tenant `solar`"),
        "{message}"
    );
    // A namespace naming a Tenant the cache has not seen either.
    let (_, out) = post(s.clone(), "/validate/pods", ask("ghost-one")).await;
    assert_eq!(out["response"]["allowed"], false);
    let message = out["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("namespace `ghost-one` belongs to tenant `ghost`, which is not in Bulkhead's cache yet; retry in a moment"),
        "{message}"
    );
    // A namespace that does not exist belongs to no tenant (the API server refuses the pod itself).
    let (_, out) = post(s, "/validate/pods", ask("nowhere")).await;
    assert_eq!(out["response"]["allowed"], true);
}

#[tokio::test]
async fn every_answer_tells_the_audit_log_its_tenant_check_and_decision() {
    let (s, _) = state();
    // A namespace being created: the tenant is the one the mutation assigns.
    let create = review(
        "CREATE",
        "Namespace",
        None,
        "alice",
        json!({"metadata": {"name": "web"}}),
        Value::Null,
    );
    let (_, out) = post(s.clone(), "/mutate/namespaces", create.to_string()).await;
    assert_eq!(
        out["response"]["auditAnnotations"],
        json!({"tenant": "solar", "check": "namespaces", "decision": "allowed"})
    );
    // A denied pod in a tenant namespace.
    let pod = json!({"metadata": {"name": "miner", "namespace": "solar-one"},
        "spec": {"containers": [{"name": "a", "image": "ghcr.io/evil/miner:1"}]}});
    let denied = review("CREATE", "Pod", Some("solar-one"), "alice", pod, Value::Null);
    let (_, out) = post(s.clone(), "/validate/pods", denied.to_string()).await;
    assert_eq!(out["response"]["allowed"], false);
    assert_eq!(
        out["response"]["auditAnnotations"],
        json!({"tenant": "solar", "check": "pods", "decision": "denied"})
    );
    // Outside any tenant: no tenant named.
    let svc = json!({"metadata": {"name": "web", "namespace": "elsewhere"}, "spec": {}});
    let other = review("CREATE", "Service", Some("elsewhere"), "bob", svc, Value::Null);
    let (_, out) = post(s, "/validate/services", other.to_string()).await;
    assert_eq!(
        out["response"]["auditAnnotations"],
        json!({"check": "services", "decision": "allowed"})
    );
}

#[tokio::test]
async fn the_quota_hook_refuses_broken_quotas_and_fails_closed_without_a_ledger() {
    let cache = Cache::detached();
    load_tenants(&cache);
    load_namespaces(&cache);
    let quota: bulkhead_api::CustomQuota = serde_json::from_value(json!({
        "apiVersion": "bulkhead.dev/v1alpha1", "kind": "CustomQuota",
        "metadata": {"name": "cms", "namespace": "elsewhere", "uid": "uid-cms", "generation": 1, "resourceVersion": "7"},
        "spec": {"limit": 1, "sources": [{"apiVersion": "v1", "kind": "ConfigMap", "op": "count"}]},
        "status": {"claims": [{"group": "", "version": "v1", "kind": "ConfigMap", "namespace": "elsewhere",
                               "name": "first", "uid": "uid-first", "usage": "1"}]}
    }))
    .unwrap();
    let feed = cache.custom_quotas();
    feed.apply(Event::Init);
    feed.apply(Event::InitApply(quota));
    feed.apply(Event::InitDone);
    let (state, _) = state_over(cache, None);
    // Not an AdmissionReview: a 400 naming the problem, as every check answers.
    let (status, body) = post(state.clone(), "/validate/customquotas", "{").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not an AdmissionReview"),
        "{body}"
    );
    // A quota whose path does not parse is refused, each problem named.
    let mut broken = review(
        "CREATE",
        "CustomQuota",
        Some("elsewhere"),
        "admin",
        json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "CustomQuota",
               "metadata": {"name": "broken", "namespace": "elsewhere"},
               "spec": {"limit": "2Gi", "sources": [
                   {"apiVersion": "v1", "kind": "Pod", "op": "add", "path": "spec.x"},
                   {"apiVersion": "v1", "kind": "Pod", "op": "count", "selectors": [{"fieldSelectors": [".a[?(@==)]"]}]}]}}),
        Value::Null,
    );
    broken["request"]["kind"]["group"] = json!("bulkhead.dev");
    let (status, body) = post(state.clone(), "/validate/customquotas", broken.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert_eq!(body["response"]["allowed"], json!(false));
    assert!(
        message.starts_with("CustomQuota elsewhere/broken: sources[0]: path `spec.x` must start with a dot")
            && message.contains("sources[1].selectors[0].fieldSelectors[0]"),
        "{message}"
    );
    // A ConfigMap the quota counts needs a reservation written through the API server: with no
    // client to write it, the hook refuses (fails closed) rather than admit unaccounted.
    let cm = |name: &str, uid: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "elsewhere", "uid": uid}})
    };
    let (_, body) = post(
        state.clone(),
        "/validate/customquotas",
        review(
            "CREATE",
            "ConfigMap",
            Some("elsewhere"),
            "bob",
            cm("second", "uid-second"),
            Value::Null,
        )
        .to_string(),
    )
    .await;
    assert_eq!(body["response"]["allowed"], json!(false));
    assert_eq!(
        body["response"]["status"]["message"],
        json!("quotas cannot be reserved: no API client")
    );
    // An update that does not raise usage needs no room.
    let (_, body) = post(
        state.clone(),
        "/validate/customquotas",
        review(
            "UPDATE",
            "ConfigMap",
            Some("elsewhere"),
            "bob",
            cm("first", "uid-first"),
            cm("first", "uid-first"),
        )
        .to_string(),
    )
    .await;
    assert_eq!(body["response"]["allowed"], json!(true));
    // Elsewhere the quota does not count: allowed, nothing to reserve.
    let (_, body) = post(
        state,
        "/validate/customquotas",
        review(
            "CREATE",
            "ConfigMap",
            Some("solar-one"),
            "alice",
            cm("x", "uid-x"),
            Value::Null,
        )
        .to_string(),
    )
    .await;
    assert_eq!(body["response"]["allowed"], json!(true));
}

#[tokio::test]
async fn the_pool_hook_refuses_bad_claims_shrinking_pools_and_fails_closed_on_claims_in_use() {
    let cache = Cache::detached();
    load_tenants(&cache);
    load_namespaces(&cache);
    let (state, _) = state_over(cache, None);
    let (status, body) = post(state.clone(), "/validate/resourcepools", "[]").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let claim = |amount: &str, bound: bool| {
        let mut c = json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "ResourcePoolClaim",
            "metadata": {"name": "get-me-cpu", "namespace": "solar-one"},
            "spec": {"pool": "solar", "claim": {"requests.cpu": amount}}});
        if bound {
            c["status"] = json!({"pool": {"name": "solar", "uid": "u"}, "allocation": {"requests.cpu": amount},
                                 "conditions": [{"type": "Bound", "status": "True", "reason": "Succeeded",
                                                 "message": "", "lastTransitionTime": "2026-12-07T00:00:00Z"}]});
        }
        c
    };
    let ask = |operation: &str, object: Value, old: Value, kind: &str| {
        let mut r = review(operation, kind, Some("solar-one"), "alice", object, old);
        r["request"]["kind"]["group"] = json!("bulkhead.dev");
        r.to_string()
    };
    // Not a quantity: refused, named.
    let (_, body) = post(
        state.clone(),
        "/validate/resourcepools",
        ask("CREATE", claim("lots", false), Value::Null, "ResourcePoolClaim"),
    )
    .await;
    assert_eq!(body["response"]["allowed"], json!(false));
    assert_eq!(
        body["response"]["status"]["message"],
        json!("ResourcePoolClaim get-me-cpu: not a non-negative quantity: requests.cpu: \"lots\"")
    );
    // A queued claim may change and go.
    let (_, body) = post(
        state.clone(),
        "/validate/resourcepools",
        ask(
            "UPDATE",
            claim("3", false),
            claim("2", false),
            "ResourcePoolClaim",
        ),
    )
    .await;
    assert_eq!(body["response"]["allowed"], json!(true));
    // Whether a bound one is in use is read from the API server: without a client, refused.
    let (_, body) = post(
        state.clone(),
        "/validate/resourcepools",
        ask("DELETE", Value::Null, claim("2", true), "ResourcePoolClaim"),
    )
    .await;
    assert_eq!(body["response"]["allowed"], json!(false));
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot tell whether the claim is in use"),
        "{body}"
    );
    // A pool cannot shrink below what is taken.
    let pool = |cpu: &str| {
        json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "ResourcePool", "metadata": {"name": "solar"},
               "spec": {"quota": {"hard": {"requests.cpu": cpu}}},
               "status": {"allocation": {"hard": {"requests.cpu": "4"}, "claimed": {"requests.cpu": "3"},
                                         "available": {"requests.cpu": "1"}}}})
    };
    let (_, body) = post(
        state.clone(),
        "/validate/resourcepools",
        ask("UPDATE", pool("2"), pool("4"), "ResourcePool"),
    )
    .await;
    assert_eq!(body["response"]["allowed"], json!(false));
    assert_eq!(
        body["response"]["status"]["message"],
        json!(
            "ResourcePool solar cannot hold less than its claims and their use take: requests.cpu: 3 is taken, more than the new 2; release claims first"
        )
    );
    let (_, body) = post(
        state,
        "/validate/resourcepools",
        ask("UPDATE", pool("3"), pool("4"), "ResourcePool"),
    )
    .await;
    assert_eq!(body["response"]["allowed"], json!(true));
}
