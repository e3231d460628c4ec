//! The controller at scale: many tenants, each with a few namespaces. Ignored in the normal run; run it
//! with `cargo xtask bench-controller` (release build). Reports time to converge, API writes against
//! the fewest possible, and the bulkhead process's peak memory.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

use crate::harness::{Bulkhead, Cluster};

pub(crate) fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Creates `count` tenants `<prefix>-t<i>` with the spec `spec(i, name)`, each with `per_tenant`
/// namespaces `<name>-<n>`, everything labelled `bulkhead-bench=<prefix>` (32 requests at a time).
pub(crate) async fn create_tenants(
    cluster: &Cluster,
    prefix: &str,
    count: usize,
    per_tenant: usize,
    spec: impl Fn(usize, &str) -> serde_json::Value,
) {
    let tenants: Api<bulkhead_api::Tenant> = Api::all(cluster.admin.clone());
    let namespaces: Api<Namespace> = Api::all(cluster.admin.clone());
    futures::stream::iter(0..count)
        .map(|i| {
            let tenants = tenants.clone();
            let namespaces = namespaces.clone();
            let name = format!("{prefix}-t{i}");
            let spec = spec(i, &name);
            async move {
                let tenant: bulkhead_api::Tenant = serde_json::from_value(json!({
                    "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
                    "metadata": {"name": name, "labels": {"bulkhead-bench": prefix}},
                    "spec": spec,
                }))?;
                tenants.create(&PostParams::default(), &tenant).await?;
                for n in 0..per_tenant {
                    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": format!("{name}-{n}"), "labels": {"bulkhead.dev/tenant": name, "bulkhead-bench": prefix}}}))?;
                    namespaces.create(&PostParams::default(), &ns).await?;
                }
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
}

/// Waits until every tenant labelled `bulkhead-bench=<prefix>` (all [`create_tenants`] makes) is Ready
/// with at least `size` namespaces.
pub(crate) async fn wait_converged(
    cluster: &Cluster,
    prefix: &str,
    tenants_n: usize,
    size: usize,
    limit: Duration,
) {
    let tenants: Api<bulkhead_api::Tenant> = Api::all(cluster.admin.clone());
    let started = Instant::now();
    loop {
        let list = tenants
            .list(&ListParams::default().labels(&format!("bulkhead-bench={prefix}")))
            .await
            .unwrap();
        let done = list
            .items
            .iter()
            .filter(|t| {
                t.status.as_ref().is_some_and(|s| {
                    s.size as usize >= size
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if done == tenants_n {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "only {done}/{tenants_n} tenants converged in {limit:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `bulkhead run --roles controller` holding the Lease `lease` in `default`, with `extra` arguments.
pub(crate) fn start_controller(cluster: &Cluster, lease: &str, extra: &[&str]) -> Bulkhead {
    let mut args = vec![
        "--roles",
        "controller",
        "--webhook-tls",
        "external",
        "--lease-namespace",
        "default",
        "--lease-name",
        lease,
    ];
    args.extend_from_slice(extra);
    Bulkhead::start(cluster, &args)
}

/// Peak resident memory (VmHWM), KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}

/// A memory line of `/proc/<pid>/status` (`VmHWM:`, `VmRSS:`), KiB.
pub(crate) fn proc_status_kib(pid: u32, line: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[tokio::test]
#[ignore = "a benchmark: cargo xtask bench-controller"]
async fn scale_many_tenants_converge() {
    let tenants_n = env("BULKHEAD_BENCH_TENANTS", 1000);
    let per_tenant = env("BULKHEAD_BENCH_NAMESPACES", 3);
    let cluster = Cluster::start().await;
    let prefix = cluster.unique("bench");
    // Everything made here carries a label, so that a real cluster is cleaned up in two calls.
    let mark = format!("bulkhead-bench={prefix}");
    cluster.clean_up(&["tenants", "-l", &mark]);
    cluster.clean_up(&["namespaces", "-l", &mark]);
    let started = Instant::now();
    create_tenants(&cluster, &prefix, tenants_n, per_tenant, |_, name| {
        json!({
            "owners": [{"kind": "User", "name": format!("{name}-owner")}, {"kind": "Group", "name": format!("{name}-devs"), "clusterRoles": ["edit", "view"]}],
            "resourceQuotas": {"scope": "Namespace", "items": [{"hard": {"pods": "10"}}]},
            "limitRanges": {"items": [{"limits": [{"type": "Container", "default": {"cpu": "500m"}}]}]},
            "networkPolicies": {"items": [{"podSelector": {}, "policyTypes": ["Ingress"]}]},
        })
    })
    .await;
    eprintln!(
        "created {tenants_n} tenants x {per_tenant} namespaces in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let writes = |c: &Cluster| {
        c.testkit().map(|t| {
            t.writes()
                .iter()
                .filter(|((_, r), _)| !r.starts_with("leases."))
                .map(|(_, n)| n)
                .sum::<u64>()
        })
    };
    let writes_before = writes(&cluster);
    let breakdown_before = cluster.testkit().map(|t| t.writes());
    let lease = cluster.unique("bench-lease");
    let start = Instant::now();
    let bulkhead = start_controller(&cluster, &lease, &["--log-level", "warn,bulkhead::run=info"]);
    let pid = bulkhead.pid();
    wait_converged(&cluster, &prefix, tenants_n, per_tenant, Duration::from_secs(900)).await;
    let converged = start.elapsed();
    // Each namespace: 2 owners -> 1 (User: admin) + 1 (deleter) + 2 (Group: edit, view) RoleBindings,
    // one quota, one limit range, one network policy; each tenant: one status write.
    let minimum = (tenants_n * per_tenant * 7 + tenants_n) as u64;
    let issued = match (writes(&cluster), writes_before) {
        (Some(after), Some(before)) => (after - before).to_string(),
        _ => "n/a (real cluster)".to_owned(),
    };
    if let (Some(t), Some(before)) = (cluster.testkit(), breakdown_before) {
        for (key, n) in t.writes() {
            let delta = n - before.get(&key).copied().unwrap_or(0);
            if delta > 0 && !key.1.starts_with("leases.") {
                eprintln!("  {} {}: {delta}", key.0, key.1);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = peak_rss_kib(pid)
        .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into());
    // The API server's own write rate in the same run: a plain client creating as many ConfigMaps as
    // the controller had to write, 16 at a time.
    let rate = plain_write_rate(&cluster, &prefix, minimum as usize, 16).await;
    let floor = minimum as f64 / rate;
    println!(
        "BENCH controller tenants={tenants_n} namespaces_per_tenant={per_tenant} converge_seconds={:.2} writes={issued} minimum_writes={minimum} peak_rss={rss} plain_client_writes_per_second={rate:.0} plain_client_seconds_for_minimum={floor:.2} ratio={:.2}",
        converged.as_secs_f64(),
        converged.as_secs_f64() / floor
    );
}

/// Creates `count` ConfigMaps in a namespace of their own, `concurrency` at a time, and returns the
/// writes per second: what the API server sustains for a plain client in this run.
pub(crate) async fn plain_write_rate(
    cluster: &Cluster,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> f64 {
    use k8s_openapi::api::core::v1::ConfigMap;
    let ns = format!("{prefix}-plain-writes");
    let namespaces: Api<Namespace> = Api::all(cluster.admin.clone());
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns, "labels": {"bulkhead-bench": prefix}}}))
            .unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(cluster.admin.clone(), &ns);
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let configmaps = configmaps.clone();
            async move {
                let cm: ConfigMap = serde_json::from_value(
                    json!({"metadata": {"name": format!("plain-{i}")}, "data": {"k": "v"}}),
                )
                .unwrap();
                configmaps.create(&PostParams::default(), &cm).await.map(|_| ())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    count as f64 / started.elapsed().as_secs_f64()
}

/// The API server's rate for the writes the controller makes, by a plain client: for each of
/// `namespaces` fresh namespaces `<prefix>-plain-<k>`, a create of the namespace, then a server-side
/// apply of a copy of each object Bulkhead keeps in the tenant namespace `model` (its RoleBindings,
/// quota, limit range and network policy, with their names, labels, annotations and specs), one
/// namespace after the other's objects, `concurrency` namespaces at a time. Returns writes per second
/// and the writes made.
pub(crate) async fn plain_apply_rate(
    cluster: &Cluster,
    prefix: &str,
    model: &str,
    namespaces: usize,
    concurrency: usize,
) -> (f64, usize) {
    use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
    let kinds = [
        ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
        ("", "v1", "ResourceQuota", "resourcequotas"),
        ("", "v1", "LimitRange", "limitranges"),
        ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
    ];
    let mut copies: Vec<(ApiResource, serde_json::Value)> = Vec::new();
    for (group, version, kind, plural) in kinds {
        let resource = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() {
                version.into()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(cluster.admin.clone(), model, &resource);
        let listed = api
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=bulkhead"))
            .await
            .unwrap();
        for object in listed.items {
            let mut body = object.data.clone();
            if let Some(fields) = body.as_object_mut() {
                fields.remove("status");
            }
            body["apiVersion"] = json!(resource.api_version);
            body["kind"] = json!(kind);
            body["metadata"] = json!({
                "name": object.metadata.name,
                "labels": object.metadata.labels,
                "annotations": object.metadata.annotations,
            });
            copies.push((resource.clone(), body));
        }
    }
    assert!(!copies.is_empty(), "no objects of Bulkhead's in {model}");
    let per_namespace = copies.len() + 1;
    let copies = std::sync::Arc::new(copies);
    let namespaces_api: Api<Namespace> = Api::all(cluster.admin.clone());
    let params = PatchParams::apply("bench-plain-client").force();
    let started = Instant::now();
    futures::stream::iter(0..namespaces)
        .map(|k| {
            let (namespaces_api, copies, params) = (namespaces_api.clone(), copies.clone(), params.clone());
            let admin = cluster.admin.clone();
            async move {
                let ns = format!("{prefix}-plain-{k}");
                let namespace: Namespace = serde_json::from_value(
                    json!({"metadata": {"name": ns, "labels": {"bulkhead-bench": prefix}}}),
                )
                .unwrap();
                namespaces_api.create(&PostParams::default(), &namespace).await?;
                for (resource, body) in copies.iter() {
                    let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, resource);
                    let name = body["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                    api.patch(&name, &params, &Patch::Apply(body)).await?;
                }
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let writes = namespaces * per_namespace;
    (writes as f64 / started.elapsed().as_secs_f64(), writes)
}

#[tokio::test]
#[ignore = "a benchmark: cargo xtask bench-quota"]
async fn tenant_quota_overshoot_under_concurrent_pod_creation() {
    let limit = env("BULKHEAD_BENCH_QUOTA", 20);
    let namespaces_n = env("BULKHEAD_BENCH_QUOTA_NAMESPACES", 4);
    // How many of the namespaces create pods (the others stay empty): 1 shows how fast one namespace
    // can take the whole budget as the controller shares it again.
    let busy = env("BULKHEAD_BENCH_QUOTA_BUSY", namespaces_n).min(namespaces_n);
    let cluster = Cluster::start().await;
    let tenant = cluster.unique("bench-quota");
    let lease = cluster.unique("bench-quota-lease");
    let bulkhead = start_controller(&cluster, &lease, &[]);
    bulkhead.wait_ready().await;
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {tenant}}}\nspec:\n  owners: [{{kind: User, name: alice}}]\n  resourceQuotas:\n    scope: Tenant\n    items: [{{hard: {{pods: \"{limit}\"}}}}]\n"
    ));
    let names: Vec<String> = (0..namespaces_n).map(|i| format!("{tenant}-{i}")).collect();
    for ns in &names {
        cluster.apply(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{bulkhead.dev/tenant: {tenant}}}}}\n"));
    }
    let quota_name = format!("bulkhead-{tenant}-0");
    for ns in &names {
        let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> =
            Api::namespaced(cluster.admin.clone(), ns);
        crate::harness::eventually(Duration::from_secs(30), || async {
            let q = quotas.get(&quota_name).await.map_err(|e| e.to_string())?;
            q.status
                .and_then(|s| s.hard)
                .map(|_| ())
                .ok_or_else(|| "no quota status yet".to_owned())
        })
        .await;
    }

    // Every namespace creates pods as fast as it can, retrying refusals, until none is admitted for 2 s.
    let started = Instant::now();
    let created: Vec<usize> = futures::future::join_all(names.iter().take(busy).map(|ns| {
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cluster.admin.clone(), ns);
        async move {
            let (mut made, mut last_success, mut i) = (0usize, Instant::now(), 0usize);
            while last_success.elapsed() < Duration::from_secs(2) {
                i += 1;
                let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("p{i}")},
                    "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}], "nodeSelector": {"bulkhead.dev/bench": "nowhere"}},
                }))
                .unwrap();
                match pods.create(&PostParams::default(), &pod).await {
                    Ok(_) => {
                        made += 1;
                        last_success = Instant::now();
                    }
                    // A real API server also answers 409 when quota admission keeps losing the race to
                    // update the ResourceQuota's usage: a refusal like the other, to retry.
                    Err(kube::Error::Api(s))
                        if (s.code == 403 && s.message.contains("exceeded quota")) || s.code == 409 =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("creating a pod in {ns}: {e}"),
                }
            }
            made
        }
    }))
    .await;
    let total: usize = created.iter().sum();
    let overshoot = total as i64 - limit as i64;
    println!(
        "BENCH quota limit={limit} namespaces={namespaces_n} busy={busy} created={total} per_namespace={created:?} overshoot={overshoot} seconds={:.1}",
        started.elapsed().as_secs_f64() - 2.0
    );
    assert!(
        total <= limit,
        "the tenant went over its limit: {total} pods for {limit}"
    );
    assert_eq!(total, limit, "the whole budget is usable, however it is spread");
    drop(bulkhead);
}

/// Writes the testkit served for replication's kinds (copies, and the resource's finalizer and status).
fn replication_writes(cluster: &Cluster) -> Option<u64> {
    cluster.testkit().map(|t| {
        t.writes()
            .iter()
            .filter(|((_, r), _)| {
                [
                    "configmaps",
                    "secrets",
                    "networkpolicies",
                    "globaltenantresources",
                ]
                .iter()
                .any(|k| r == k || r.starts_with(&format!("{k}.")))
            })
            .map(|(_, n)| n)
            .sum::<u64>()
    })
}

#[tokio::test]
#[ignore = "a benchmark: cargo xtask bench-replication"]
async fn replication_converges_at_scale_and_idles() {
    let tenants_n = env("BULKHEAD_BENCH_TENANTS", 200);
    let per_tenant = env("BULKHEAD_BENCH_NAMESPACES", 5);
    let cluster = Cluster::start().await;
    let prefix = cluster.unique("rbench");
    let mark = format!("bulkhead-bench={prefix}");
    cluster.clean_up(&["tenants", "-l", &mark]);
    cluster.clean_up(&["namespaces", "-l", &mark]);
    let platform = format!("{prefix}-platform");
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {platform}, labels: {{bulkhead-bench: {prefix}}}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cluster-info, namespace: {platform}, labels: {{share: \"yes\"}}}}\ndata: {{region: eu}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: pull, namespace: {platform}, labels: {{share: \"yes\"}}}}\nstringData: {{token: x}}\n"
    ));
    create_tenants(
        &cluster,
        &prefix,
        tenants_n,
        per_tenant,
        |_, name| json!({"owners": [{"kind": "User", "name": format!("{name}-owner")}]}),
    )
    .await;
    let gtr = format!("{prefix}-gtr");
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: GlobalTenantResource
metadata: {{name: {gtr}}}
spec:
  tenantSelector: {{matchLabels: {{bulkhead-bench: {prefix}}}}}
  resyncPeriod: 2s
  resources:
  - namespacedItems:
    - {{apiVersion: v1, kind: ConfigMap, namespace: {platform}, selector: {{matchLabels: {{share: "yes"}}}}}}
    - {{apiVersion: v1, kind: Secret, namespace: {platform}, selector: {{matchLabels: {{share: "yes"}}}}}}
    rawItems:
    - {{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {{name: deny-all}}, spec: {{podSelector: {{}}, policyTypes: [Ingress]}}}}
"#
    ));
    let items = tenants_n * per_tenant * 3;
    let before = replication_writes(&cluster);
    let lease = cluster.unique("rbench-lease");
    let start = Instant::now();
    let bulkhead = start_controller(&cluster, &lease, &["--log-level", "warn,bulkhead::run=info"]);
    let resources: Api<bulkhead_api::GlobalTenantResource> = Api::all(cluster.admin.clone());
    loop {
        let r = resources.get(&gtr).await.unwrap();
        let status = r.status.unwrap_or_default();
        let applied = status.processed_items.iter().filter(|i| i.applied).count();
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready && applied == items {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{applied}/{items} items after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let converged = start.elapsed();
    let at_convergence = replication_writes(&cluster);
    // Idle: three resync periods with nothing changing.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after_idle = replication_writes(&cluster);
    let show = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).to_string(),
        _ => "n/a (real cluster)".to_owned(),
    };
    let rss = peak_rss_kib(bulkhead.pid())
        .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into());
    // The fewest writes: one apply per copy, the finalizer, one status write; and what a plain client
    // takes for as many writes in the same run.
    let rate = plain_write_rate(&cluster, &prefix, items + 2, 16).await;
    println!(
        "BENCH replication tenants={tenants_n} namespaces_per_tenant={per_tenant} items=3 copies={items} converge_seconds={:.2} writes={} minimum_writes={} idle_writes_6s={} peak_rss={rss} plain_client_seconds_for_minimum={:.2}",
        converged.as_secs_f64(),
        show(at_convergence, before),
        items + 2,
        show(after_idle, at_convergence),
        (items + 2) as f64 / rate,
    );
    if let (Some(a), Some(b)) = (after_idle, at_convergence) {
        assert_eq!(a, b, "replication wrote while idle");
    }
}

pub(crate) fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

pub(crate) async fn timed<F, Fut>(n: usize, mut call: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        call().await;
        out.push(started.elapsed());
    }
    out
}

/// `samples` namespace lists through the proxy (the caller's, answered from its cache), then as many of
/// the API server's own label-selected lists: the two timings, in that order.
pub(crate) async fn namespace_list_timings(
    through_proxy: &Api<Namespace>,
    direct: &Api<Namespace>,
    selector: &ListParams,
    samples: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let proxy = timed(samples, || async {
        through_proxy.list(&ListParams::default()).await.unwrap();
    })
    .await;
    let server = timed(samples, || async {
        direct.list(selector).await.unwrap();
    })
    .await;
    (proxy, server)
}

pub(crate) async fn throughput<F, Fut>(concurrency: usize, window: Duration, call: F) -> f64
where
    F: Fn() -> Fut + Clone,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let done: usize = futures::future::join_all((0..concurrency).map(|_| {
        let call = call.clone();
        async move {
            let mut n = 0;
            while started.elapsed() < window {
                call().await;
                n += 1;
            }
            n
        }
    }))
    .await
    .into_iter()
    .sum();
    done as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test]
#[ignore = "a benchmark: cargo xtask bench-proxy"]
async fn proxy_overhead_and_filtered_lists() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let tenants_n = env("BULKHEAD_BENCH_TENANTS", 1000);
    let per_tenant = env("BULKHEAD_BENCH_NAMESPACES", 10);
    let samples = env("BULKHEAD_BENCH_SAMPLES", 300);
    let cluster = Cluster::start().await;
    let prefix = cluster.unique("pxbench");
    let mark = format!("bulkhead-bench={prefix}");
    cluster.clean_up(&["tenants", "-l", &mark]);
    cluster.clean_up(&["namespaces", "-l", &mark]);
    // The measured user: a ServiceAccount owning tenant 0, allowed to read ConfigMaps in its first
    // namespace (so passthrough requests succeed on both paths).
    let accounts = format!("{prefix}-accounts");
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {accounts}, labels: {{bulkhead-bench: {prefix}}}}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: user, namespace: {accounts}}}\n"
    ));
    let user = format!("system:serviceaccount:{accounts}:user");
    let started = Instant::now();
    create_tenants(&cluster, &prefix, tenants_n, per_tenant, |i, name| {
        let owner = if i == 0 {
            json!({"kind": "ServiceAccount", "name": user})
        } else {
            json!({"kind": "User", "name": format!("{name}-owner")})
        };
        json!({"owners": [owner]})
    })
    .await;
    let first = format!("{prefix}-t0-0");
    cluster.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bench, namespace: {first}}}\ndata: {{k: v}}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: bench-view, namespace: {first}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}}\nsubjects: [{{kind: ServiceAccount, name: user, namespace: {accounts}}}]\n"
    ));
    eprintln!(
        "created {tenants_n} tenants x {per_tenant} namespaces in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let http2 = if env("BULKHEAD_BENCH_HTTP2", 0) == 1 {
        "true"
    } else {
        "false"
    };
    eprintln!(
        "proxy to API server: HTTP/{}",
        if http2 == "true" { "2" } else { "1.1" }
    );
    let bulkhead = Bulkhead::start(&cluster, &["--roles", "proxy", "--proxy-upstream-http2", http2]);
    bulkhead.wait_ready().await;
    let token = cluster.service_account_token(&accounts, "user");
    let through_proxy = bulkhead.proxy_client(&cluster, &accounts, "user").await;
    // The same user straight to the API server: the administrator's kubeconfig with the user's token.
    let direct_config = {
        let path = cluster.dir().join("direct.kubeconfig");
        let admin = std::fs::read_to_string(cluster.kubeconfig()).unwrap();
        std::fs::write(&path, &admin).unwrap();
        crate::harness::Kubectl::at(path.clone()).ok(&[
            "config",
            "set-credentials",
            "bench-user",
            &format!("--token={token}"),
        ]);
        let context = crate::harness::Kubectl::at(path.clone()).ok(&["config", "current-context"]);
        crate::harness::Kubectl::at(path.clone()).ok(&[
            "config",
            "set-context",
            context.trim(),
            "--user=bench-user",
        ]);
        path
    };
    let direct_user = crate::harness::client_for(&direct_config, None, &[]).await;
    let selector = ListParams::default().labels(&format!("bulkhead.dev/tenant={prefix}-t0"));

    let proxy_ns: Api<Namespace> = Api::all(through_proxy.clone());
    let direct_ns: Api<Namespace> = Api::all(cluster.admin.clone());
    assert_eq!(
        proxy_ns.list(&ListParams::default()).await.unwrap().items.len(),
        per_tenant
    );
    assert_eq!(direct_ns.list(&selector).await.unwrap().items.len(), per_tenant);
    let (mut filtered, mut selected) =
        namespace_list_timings(&proxy_ns, &direct_ns, &selector, samples).await;

    let proxy_cm: Api<ConfigMap> = Api::namespaced(through_proxy.clone(), &first);
    let direct_cm: Api<ConfigMap> = Api::namespaced(direct_user.clone(), &first);
    proxy_cm.get("bench").await.unwrap();
    direct_cm.get("bench").await.unwrap();
    let mut via_proxy = timed(samples, || async {
        proxy_cm.get("bench").await.unwrap();
    })
    .await;
    let mut direct = timed(samples, || async {
        direct_cm.get("bench").await.unwrap();
    })
    .await;
    let window = Duration::from_secs(3);
    let rps_passthrough = throughput(16, window, || {
        let api = proxy_cm.clone();
        async move {
            api.get("bench").await.unwrap();
        }
    })
    .await;
    let rps_direct = throughput(16, window, || {
        let api = direct_cm.clone();
        async move {
            api.get("bench").await.unwrap();
        }
    })
    .await;
    let rps_filtered = throughput(16, window, || {
        let api = proxy_ns.clone();
        async move {
            api.list(&ListParams::default()).await.unwrap();
        }
    })
    .await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "namespace list, {per_tenant} of {} namespaces: proxy (cache) median {:.3} ms p99 {:.3} ms; API server with label selector median {:.3} ms p99 {:.3} ms",
        tenants_n * per_tenant,
        ms(percentile(&mut filtered, 0.5)),
        ms(percentile(&mut filtered, 0.99)),
        ms(percentile(&mut selected, 0.5)),
        ms(percentile(&mut selected, 0.99)),
    );
    let overhead = ms(percentile(&mut via_proxy, 0.5)) - ms(percentile(&mut direct, 0.5));
    eprintln!(
        "passthrough GET: proxy median {:.3} ms p99 {:.3} ms; direct median {:.3} ms p99 {:.3} ms; median overhead {overhead:.3} ms",
        ms(percentile(&mut via_proxy, 0.5)),
        ms(percentile(&mut via_proxy, 0.99)),
        ms(percentile(&mut direct, 0.5)),
        ms(percentile(&mut direct, 0.99)),
    );
    eprintln!(
        "concurrency 16: passthrough GET {rps_passthrough:.0} req/s (direct {rps_direct:.0} req/s); filtered namespace list {rps_filtered:.0} req/s"
    );
    // One token made every request above: how many TokenReviews did that cost?
    let hits = bulkhead
        .metric(r#"bulkhead_proxy_token_cache_total{result="hit"}"#)
        .unwrap_or(0.0);
    let misses = bulkhead
        .metric(r#"bulkhead_proxy_token_cache_total{result="miss"}"#)
        .unwrap_or(0.0);
    eprintln!(
        "TokenReviews with one token: {misses:.0} for {:.0} requests ({:.2} per 1,000)",
        hits + misses,
        misses * 1000.0 / (hits + misses).max(1.0)
    );
    if let Some(kib) = peak_rss_kib(bulkhead.pid()) {
        eprintln!("proxy peak RSS {:.0} MiB", kib as f64 / 1024.0);
    }
}

/// Namespace creates by a tenant user with Bulkhead's webhooks registered, then with them gone (same
/// run, same user, same RBAC): creates per second at concurrency 16 and the latency of one create at a
/// time, so the latency Bulkhead adds is the difference. Run it with `cargo xtask bench-namespaces
/// [--controlplane]`.
#[tokio::test]
#[ignore = "a benchmark: cargo xtask bench-namespaces"]
async fn namespace_creates_with_and_without_webhooks() {
    let samples = env("BULKHEAD_BENCH_SAMPLES", 200);
    let tenants_n = env("BULKHEAD_BENCH_TENANTS", 100);
    let cluster = Cluster::start().await;
    let prefix = cluster.unique("nsbench");
    let mark = format!("bulkhead-bench={prefix}");
    cluster.clean_up(&["tenants", "-l", &mark]);
    cluster.clean_up(&["namespaces", "-l", &mark]);
    // Other tenants load the webhook's cache; the measured one is t0, owned by `owner`.
    let owner = format!("{prefix}-owner");
    create_tenants(&cluster, &prefix, tenants_n, 1, |i, name| {
        let user = if i == 0 {
            owner.clone()
        } else {
            format!("{name}-owner")
        };
        json!({"owners": [{"kind": "User", "name": user}]})
    })
    .await;
    let lease = format!("{prefix}-lease");
    let mut bulkhead = Bulkhead::start(
        &cluster,
        &[
            "--roles",
            "controller,webhook",
            "--lease-namespace",
            "default",
            "--lease-name",
            &lease,
        ],
    );
    bulkhead.wait_ready().await;
    let user = cluster.client_as(&owner, &["bulkhead.dev"]).await;
    let namespaces: Api<Namespace> = Api::all(user);
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let create = |phase: &'static str| {
        let (namespaces, counter, prefix) = (namespaces.clone(), counter.clone(), prefix.clone());
        move || {
            let (namespaces, counter, prefix) = (namespaces.clone(), counter.clone(), prefix.clone());
            async move {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let ns: Namespace = serde_json::from_value(json!({"metadata": {
                    "name": format!("{prefix}-t0-{phase}-{n}"),
                    "labels": {"bulkhead-bench": prefix},
                }}))
                .unwrap();
                namespaces.create(&PostParams::default(), &ns).await.unwrap();
            }
        }
    };
    // Until the controller's provisioner binding and the webhook are in place.
    let probe: Namespace = serde_json::from_value(
        json!({"metadata": {"name": format!("{prefix}-t0-probe"), "labels": {"bulkhead-bench": prefix}}}),
    )
    .unwrap();
    crate::harness::eventually(Duration::from_secs(30), || async {
        namespaces
            .create(&PostParams::default(), &probe)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    let ns = cluster.kubectl().ok(&[
        "get",
        "namespace",
        &format!("{prefix}-t0-probe"),
        "-o",
        "jsonpath={.metadata.labels.bulkhead\\.dev/tenant}",
    ]);
    assert_eq!(
        ns,
        format!("{prefix}-t0"),
        "the webhook assigns the user's namespaces"
    );

    let window = Duration::from_secs(5);
    let mut with_latency = timed(samples, create("with")).await;
    let with_rate = throughput(16, window, create("withc")).await;
    // The API server's own measure of each webhook call (on a real one): sum and count per webhook.
    if !cluster.is_testkit() {
        let metrics = cluster.kubectl().ok(&["get", "--raw", "/metrics"]);
        for line in metrics.lines().filter(|l| {
            l.starts_with("apiserver_admission_webhook_admission_duration_seconds_")
                && (l.contains("_sum{") || l.contains("_count{"))
                && l.contains("namespaces.")
        }) {
            eprintln!("API server: {line}");
        }
    }
    let review_seconds = bulkhead.metric(r#"bulkhead_admission_duration_seconds_sum{webhook="namespaces"}"#);
    let reviews = bulkhead.metric(r#"bulkhead_admission_duration_seconds_count{webhook="namespaces"}"#);
    // Bulkhead goes, and its webhook configurations with it; RBAC stays as the controller left it.
    bulkhead.terminate();
    let configuration = bulkhead.webhook_configuration.clone().unwrap();
    for kind in ["mutatingwebhookconfiguration", "validatingwebhookconfiguration"] {
        cluster.kubectl().ok(&["delete", kind, &configuration]);
    }
    let mut without_latency = timed(samples, create("without")).await;
    let without_rate = throughput(16, window, create("withoutc")).await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "namespace create, one at a time ({samples}): with webhooks median {:.2} ms p99 {:.2} ms; without median {:.2} ms p99 {:.2} ms; p99 added {:.2} ms",
        ms(percentile(&mut with_latency, 0.5)),
        ms(percentile(&mut with_latency, 0.99)),
        ms(percentile(&mut without_latency, 0.5)),
        ms(percentile(&mut without_latency, 0.99)),
        ms(percentile(&mut with_latency, 0.99)) - ms(percentile(&mut without_latency, 0.99)),
    );
    eprintln!(
        "namespace creates at concurrency 16: with webhooks {with_rate:.0}/s, without {without_rate:.0}/s (ratio {:.2})",
        with_rate / without_rate
    );
    if let (Some(sum), Some(count)) = (review_seconds, reviews) {
        eprintln!(
            "the webhook's own time per namespace review: {:.3} ms mean over {count} reviews",
            sum / count * 1000.0
        );
    }
}
