//! #15.7 measured: one tenant floods the API server with LISTs, from many identities at once, while
//! another tenant's client keeps working. Three phases on a control plane of the benchmark's own, with
//! a small concurrency limit so that the API server's seats, not the machine, are what is shared:
//! the other tenant alone (the API server's own figure), beside the flood with APF's defaults (users
//! queued one flow each in `global-default`), and beside the flood with `apiFairness` (each tenant one
//! flow of Bulkhead's tier).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bulkhead_testkit::controlplane;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

use crate::harness::{Bulkhead, Cluster, eventually};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one phase measured.
struct Phase {
    /// The quiet tenant's request latencies.
    quiet: Vec<Duration>,
    /// The quiet tenant's requests refused (429 or otherwise failed).
    quiet_failed: usize,
    /// The flooding tenant's requests answered and refused.
    flood: (usize, usize),
    seconds: f64,
}

impl Phase {
    fn row(&self, name: &str, baseline: Option<&Phase>) -> String {
        let mut q = self.quiet.clone();
        q.sort();
        let at = |p: f64| {
            q.get(((q.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or_default()
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let rate = q.len() as f64 / self.seconds;
        let ratio = baseline
            .map(|b| {
                let base = b.quiet.len() as f64 / b.seconds;
                format!("{:.2}", rate / base)
            })
            .unwrap_or_else(|| "1.00".to_owned());
        format!(
            "| {name} | {rate:.0} | {ratio} | {:.1} | {:.1} | {} | {:.0} | {} |",
            ms(at(0.5)),
            ms(at(0.99)),
            self.quiet_failed,
            self.flood.0 as f64 / self.seconds,
            self.flood.1
        )
    }
}

/// Runs `workers` loops per client of LISTs of `namespace`'s ConfigMaps until `stop`, recording
/// latencies (when `latencies`) and counting answers and refusals.
fn load(
    clients: Vec<kube::Client>,
    workers: usize,
    namespace: &str,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(Vec<Duration>, usize)>> {
    let mut handles = Vec::new();
    for client in clients {
        for _ in 0..workers {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            let stop = stop.clone();
            handles.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (Vec::new(), 0);
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    match api.list(&ListParams::default()).await {
                        Ok(_) => ok.push(started.elapsed()),
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            }));
        }
    }
    handles
}

async fn phase(
    cluster: &Cluster,
    quiet: &(String, String),
    flood: Option<&(Vec<String>, String)>,
    seconds: u64,
) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let quiet_client = cluster.client_as(&quiet.0, &["bulkhead.dev"]).await;
    let quiet_workers = env("BULKHEAD_BENCH_QUIET_WORKERS", 4);
    let flood_workers = env("BULKHEAD_BENCH_FLOOD_WORKERS", 2);
    let quiet_handles = load(vec![quiet_client], quiet_workers, &quiet.1, stop.clone());
    let mut flood_handles = Vec::new();
    if let Some((users, namespace)) = flood {
        let mut clients = Vec::new();
        for user in users {
            clients.push(cluster.client_as(user, &["bulkhead.dev"]).await);
        }
        flood_handles = load(clients, flood_workers, namespace, stop.clone());
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut out = Phase {
        quiet: Vec::new(),
        quiet_failed: 0,
        flood: (0, 0),
        seconds: elapsed,
    };
    for h in quiet_handles {
        let (ok, failed) = h.await.unwrap();
        out.quiet.extend(ok);
        out.quiet_failed += failed;
    }
    for h in flood_handles {
        let (ok, failed) = h.await.unwrap();
        out.flood.0 += ok.len();
        out.flood.1 += failed;
    }
    out
}

#[tokio::test]
#[ignore = "a benchmark: cargo xtask bench-fairness"]
async fn a_flooding_tenant_leaves_the_others_their_share() {
    let bin = controlplane::bin_dir();
    assert!(
        controlplane::binaries_present(&bin),
        "the benchmark needs the real control plane: cargo xtask controlplane"
    );
    let inflight = env("BULKHEAD_BENCH_INFLIGHT", 20);
    let flags = [
        format!("--max-requests-inflight={inflight}"),
        format!("--max-mutating-requests-inflight={}", inflight / 2),
    ];
    let plane =
        controlplane::ControlPlane::start_with(&bin, &flags).expect("a control plane of its own starts");
    let cluster = Cluster::at(plane.kubeconfig().to_owned()).await;
    let identities = env("BULKHEAD_BENCH_FLOOD_IDENTITIES", 16);
    let objects = env("BULKHEAD_BENCH_OBJECTS", 200);
    let seconds = env("BULKHEAD_BENCH_SECONDS", 10) as u64;

    let flood_users: Vec<String> = (0..identities).map(|i| format!("flooder-{i}")).collect();
    let owners: Vec<serde_json::Value> = flood_users
        .iter()
        .map(|u| json!({"kind": "User", "name": u}))
        .collect();
    let manifest = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "flood"},
         "spec": {"owners": owners, "namespaceOptions": {"defaultNamespaces": [{"name": "flood-a"}]}}},
        {"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "quiet"},
         "spec": {"owners": [{"kind": "User", "name": "bob"}],
                  "namespaceOptions": {"defaultNamespaces": [{"name": "quiet-a"}]}}}
    ]});
    cluster.apply(&manifest.to_string());
    let bulkhead = Bulkhead::start(
        &cluster,
        &[
            "--roles",
            "controller",
            "--lease-namespace",
            "default",
            "--lease-name",
            "bench-fair",
        ],
    );
    bulkhead.wait_ready().await;
    // Each owner may list its namespace's ConfigMaps once its RoleBinding is there.
    for (user, ns) in [
        ("bob", "quiet-a"),
        (flood_users[identities - 1].as_str(), "flood-a"),
    ] {
        let api: Api<ConfigMap> = Api::namespaced(cluster.client_as(user, &["bulkhead.dev"]).await, ns);
        eventually(Duration::from_secs(60), || async {
            api.list(&ListParams::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await;
    }
    // The flood lists a namespace of `objects` ConfigMaps of 1 KiB; the quiet tenant one of ten.
    let admin_maps = |ns: &str| Api::<ConfigMap>::namespaced(cluster.admin.clone(), ns);
    let data = "x".repeat(1024);
    let created = AtomicUsize::new(0);
    for (ns, n) in [("flood-a", objects), ("quiet-a", 10)] {
        let api = admin_maps(ns);
        for i in 0..n {
            let map: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": format!("m{i}")}, "data": {"v": data}}))
                    .unwrap();
            api.create(&PostParams::default(), &map).await.unwrap();
            created.fetch_add(1, Ordering::Relaxed);
        }
    }

    let quiet = ("bob".to_owned(), "quiet-a".to_owned());
    let flood = (flood_users.clone(), "flood-a".to_owned());
    let alone = phase(&cluster, &quiet, None, seconds).await;
    let defaults = phase(&cluster, &quiet, Some(&flood), seconds).await;

    cluster.apply(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: BulkheadConfiguration\nmetadata: {name: default}\nspec:\n  userGroups: [bulkhead.dev]\n  apiFairness: {}\n",
    );
    // Until the API server files a flooder's requests under the flood tenant's FlowSchema.
    let schemas: Api<k8s_openapi::api::flowcontrol::v1::FlowSchema> = Api::all(cluster.admin.clone());
    let flooder = cluster.client_as(&flood_users[0], &["bulkhead.dev"]).await;
    eventually(Duration::from_secs(60), || async {
        let uid = schemas
            .get_opt("bulkhead-tenant-flood")
            .await
            .map_err(|e| e.to_string())?
            .and_then(|f| f.metadata.uid)
            .ok_or("no FlowSchema yet")?;
        let request = http::Request::get("/api/v1/namespaces/flood-a/configmaps?limit=1")
            .body(kube::client::Body::empty())
            .unwrap();
        let response = flooder.send(request).await.map_err(|e| e.to_string())?;
        let filed = response
            .headers()
            .get("X-Kubernetes-PF-FlowSchema-UID")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (filed == uid).then_some(()).ok_or(format!("filed under {filed}"))
    })
    .await;
    let fair = phase(&cluster, &quiet, Some(&flood), seconds).await;

    println!(
        "\nfair shares: {inflight}+{} seats, the flood {identities} identities x {} LIST loops of {objects} ConfigMaps of 1 KiB, the quiet tenant {} LIST loops of 10, {seconds} s a phase\n",
        inflight / 2,
        env("BULKHEAD_BENCH_FLOOD_WORKERS", 2),
        env("BULKHEAD_BENCH_QUIET_WORKERS", 4),
    );
    println!(
        "| phase | quiet tenant's LISTs/s | vs alone | p50 ms | p99 ms | quiet refused | flood LISTs/s | flood refused |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "{}",
        alone.row("quiet tenant alone (the API server's own figure)", None)
    );
    println!(
        "{}",
        defaults.row("beside the flood, APF defaults (a flow per user)", Some(&alone))
    );
    println!(
        "{}",
        fair.row("beside the flood, apiFairness (a flow per tenant)", Some(&alone))
    );
    drop(bulkhead);
    drop(cluster);
    drop(plane);
}
