//! Admission benchmarks.
//!
//! - `decide/*`: one policy decision (decoded request in, verdict out) with 1,000 tenants and 10,000
//!   namespaces in the cache (`pod_create_with_rules`: in a tenant with six namespace rules). Before criterion runs, 200,000 individually timed decisions per check
//!   print p50 / p99 / max (target: p99 under 20 us).
//! - `round_trip/*`: AdmissionReviews posted over TLS on loopback to the real server, keep-alive, 8 in
//!   flight; criterion reports the time per batch of 256 and the bench prints reviews per second
//!   (target: 3,000/s on a 2-core machine, client included).
//!
//! `cargo bench -p bulkhead-webhook --bench admission`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bulkhead_api::{Tenant, labels};
use bulkhead_cache::Cache;
use bulkhead_tls::certs::{Plan, issue};
use bulkhead_webhook::review::decode;
use bulkhead_webhook::{AdmissionMetrics, AppState, Check, Context, Denials, decide, router};
use criterion::{Criterion, Throughput, criterion_group};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

const TENANTS: usize = 1_000;
const NAMESPACES_PER_TENANT: usize = 10;

fn cache() -> Cache {
    let cache = Cache::detached();
    let feed = cache.tenants_feed();
    feed.apply(Event::Init);
    for t in 0..TENANTS {
        let tenant: Tenant = serde_json::from_value(json!({
            "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": format!("tenant-{t}"), "uid": format!("uid-{t}")},
            "spec": {
                "owners": [{"kind": "User", "name": format!("user-{t}")}, {"kind": "Group", "name": format!("group-{t}")}],
                "namespaceOptions": {"quota": 50, "forbiddenLabels": {"denied": ["team"], "deniedRegex": "^internal\\."}},
                "containerRegistries": {"allowed": ["docker.io", "quay.io"], "allowedRegex": "\\.corp\\.example$"},
                "priorityClasses": {"allowed": ["high"], "default": "normal"},
                "ingressOptions": {"allowedHostnames": {"allowedRegex": format!("^.*\\.t{t}\\.example\\.com$")}, "hostnameCollisionScope": "Cluster"}
            }
        }))
        .unwrap();
        feed.apply(Event::InitApply(tenant));
    }
    // One tenant with Capsule's documented namespace rules (134-tenant-solar.yaml), a QoS rule, a
    // scheduler allow-list and a CEL condition.
    let ruled: Tenant = serde_json::from_value(json!({
        "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": "ruled", "uid": "uid-ruled"},
        "spec": {
            "owners": [{"kind": "User", "name": "user-ruled"}],
            "rules": [
                {"enforce": {"action": "allow", "workloads": {"registries": [{"exp": "^quay\\.io/"}, {"exp": "\\.corp\\.example/"}, {"exp": "^docker\\.io/library/"}]}}},
                {"enforce": {"action": "deny", "workloads": {"targets": ["pod/containers", "pod/volumes"], "registries": [{"exp": "^quay\\.io/customer/"}]}}},
                {"enforce": {"action": "audit", "workloads": {"targets": ["pod/containers"], "registries": [{"exp": "^audit/"}]}}},
                {"namespaceSelector": {"matchLabels": {"env": "prod"}}, "enforce": {"action": "allow", "workloads": {"registries": [{"exp": "^quay\\.io/customer/prod/", "policy": ["Always"]}]}}},
                {"enforce": {"action": "deny", "workloads": {"qosClasses": ["BestEffort"]}}},
                {"enforce": {"action": "allow", "conditions": [{"expression": "!has(object.metadata.labels) || !('debug' in object.metadata.labels)"}],
                  "workloads": {"schedulers": [{"exact": ["default-scheduler"]}]}}}
            ]
        }
    }))
    .unwrap();
    feed.apply(Event::InitApply(ruled));
    feed.apply(Event::InitDone);
    let feed = cache.namespaces_feed();
    feed.apply(Event::Init);
    for t in 0..TENANTS {
        for n in 0..NAMESPACES_PER_TENANT {
            let ns: Namespace = serde_json::from_value(json!({"metadata": {
                "name": format!("tenant-{t}-ns-{n}"), "labels": {labels::TENANT: format!("tenant-{t}")}}}))
            .unwrap();
            feed.apply(Event::InitApply(ns));
        }
    }
    let ruled: Namespace = serde_json::from_value(
        json!({"metadata": {"name": "ruled-ns", "labels": {labels::TENANT: "ruled"}}}),
    )
    .unwrap();
    feed.apply(Event::InitApply(ruled));
    feed.apply(Event::InitDone);
    cache
}

fn review(operation: &str, kind: &str, namespace: Option<&str>, user: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "b3a4", "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "x"},
            "name": object["metadata"]["name"], "namespace": namespace, "operation": operation,
            "userInfo": {"username": user, "groups": ["bulkhead.dev", "system:authenticated"]},
            "object": object
        }
    }))
    .unwrap()
}

fn namespace_review() -> Vec<u8> {
    review(
        "CREATE",
        "Namespace",
        None,
        "user-512",
        json!({"metadata": {"name": "tenant-512-new", "labels": {"app": "web"}}}),
    )
}

fn pod_review() -> Vec<u8> {
    review(
        "CREATE",
        "Pod",
        Some("tenant-512-ns-3"),
        "system:serviceaccount:kube-system:replicaset-controller",
        json!({"metadata": {"name": "web-7d9f", "labels": {"app": "web"}}, "spec": {
            "containers": [{"name": "web", "image": "quay.io/org/web:1.2.3", "imagePullPolicy": "IfNotPresent"},
                           {"name": "sidecar", "image": "registry.corp.example/proxy:2"}],
            "initContainers": [{"name": "init", "image": "docker.io/library/busybox:1.36"}]}}),
    )
}

/// The pod of [`pod_review`] in the tenant with namespace rules, with resources (not BestEffort).
fn pod_rules_review() -> Vec<u8> {
    review(
        "CREATE",
        "Pod",
        Some("ruled-ns"),
        "system:serviceaccount:kube-system:replicaset-controller",
        json!({"metadata": {"name": "web-7d9f", "labels": {"app": "web"}}, "spec": {
            "containers": [{"name": "web", "image": "quay.io/org/web:1.2.3", "imagePullPolicy": "IfNotPresent",
                            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}},
                           {"name": "sidecar", "image": "registry.corp.example/proxy:2"}],
            "initContainers": [{"name": "init", "image": "docker.io/library/busybox:1.36"}]}}),
    )
}

fn percentiles(cache: &Cache) {
    let config = cache.configuration();
    let ctx = Context {
        view: cache,
        config: &config,
        own_identity: "system:serviceaccount:bulkhead-system:bulkhead",
        mutating: false,
    };
    for (name, check, body) in [
        ("namespace create", Check::Namespaces, namespace_review()),
        ("pod create", Check::Pods, pod_review()),
        (
            "pod create under namespace rules",
            Check::Pods,
            pod_rules_review(),
        ),
    ] {
        let (_, request) = decode(&body).unwrap();
        assert!(decide(check, &request, &ctx).unwrap().is_allowed());
        let mut samples: Vec<Duration> = (0..200_000)
            .map(|_| {
                let start = Instant::now();
                let verdict = decide(check, &request, &ctx).unwrap();
                let elapsed = start.elapsed();
                std::hint::black_box(verdict);
                elapsed
            })
            .collect();
        samples.sort();
        let at = |q: f64| samples[((samples.len() as f64) * q) as usize];
        println!(
            "decision latency, {name} ({TENANTS} tenants, {} namespaces): p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
            TENANTS * NAMESPACES_PER_TENANT,
            at(0.50),
            at(0.99),
            at(0.999),
            samples[samples.len() - 1]
        );
    }
}

fn bench_decide(c: &mut Criterion) {
    let cache = cache();
    percentiles(&cache);
    let config = cache.configuration();
    let ctx = Context {
        view: &cache,
        config: &config,
        own_identity: "",
        mutating: false,
    };
    let mut group = c.benchmark_group("decide");
    for (name, check, body) in [
        ("namespace_create", Check::Namespaces, namespace_review()),
        ("pod_create", Check::Pods, pod_review()),
        ("pod_create_with_rules", Check::Pods, pod_rules_review()),
    ] {
        let (_, request) = decode(&body).unwrap();
        group.bench_function(name, |b| b.iter(|| decide(check, &request, &ctx).unwrap()));
        group.bench_function(format!("{name}_with_decode"), |b| {
            b.iter(|| {
                let (_, request) = decode(&body).unwrap();
                decide(check, &request, &ctx).unwrap()
            })
        });
    }
    group.finish();
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

async fn post(client: &Client, url: &str, body: Bytes) {
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert!(response.status().is_success());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert!(bytes.len() > 20);
}

async fn batch(client: &Client, url: &str, body: &Bytes, total: usize, in_flight: usize) {
    let mut tasks = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let client = client.clone();
        let url = url.to_owned();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..total / in_flight {
                post(&client, &url, body.clone()).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn bench_round_trip(c: &mut Criterion) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let names = vec!["127.0.0.1".to_owned()];
    let bundle = issue(None, Plan::NewAuthority, &names, SystemTime::now()).unwrap();
    let (url, client) = runtime.block_on(async {
        let cert = Arc::new(
            bulkhead_tls::ServingCert::from_pem(bundle.cert.as_bytes(), bundle.key.as_bytes()).unwrap(),
        );
        let registry = prometheus::Registry::new();
        let state = Arc::new(AppState {
            cache: cache(),
            own_identity: String::new(),
            metrics: AdmissionMetrics::register(&registry).unwrap(),
            denials: Denials::discard(),
            client: None,
            ledgers: Default::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = bulkhead_tls::server_config(cert, None).unwrap();
        tokio::spawn(bulkhead_webhook::serve(
            listener,
            config,
            router(state),
            tokio_util::sync::CancellationToken::new(),
        ));
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(bundle.ca_cert.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client: Client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(16)
                .build(connector);
        (format!("https://{addr}"), client)
    });
    use rustls::pki_types::pem::PemObject;
    const BATCH: usize = 256;
    const IN_FLIGHT: usize = 8;
    let mut group = c.benchmark_group("round_trip");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, path, body) in [
        ("pod_create", "/mutate/pods", pod_review()),
        ("namespace_create", "/mutate/namespaces", namespace_review()),
    ] {
        let url = format!("{url}{path}");
        let body = Bytes::from(body);
        // A plain throughput figure first: reviews per second over three seconds.
        let (n, elapsed) = runtime.block_on(async {
            batch(&client, &url, &body, BATCH, IN_FLIGHT).await; // warm the connections
            let start = Instant::now();
            let mut n = 0;
            while start.elapsed() < Duration::from_secs(3) {
                batch(&client, &url, &body, BATCH, IN_FLIGHT).await;
                n += BATCH;
            }
            (n, start.elapsed())
        });
        println!(
            "round trip over TLS, {name}: {:.0} reviews/s ({n} in {elapsed:.2?}, {IN_FLIGHT} in flight, keep-alive)",
            n as f64 / elapsed.as_secs_f64()
        );
        group.bench_function(name, |b| {
            b.to_async(&runtime)
                .iter(|| batch(&client, &url, &body, BATCH, IN_FLIGHT))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decide, bench_round_trip);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
