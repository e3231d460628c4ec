//! Every role in one process at platform scale: `cargo xtask bench-scale` (the real control plane by
//! default). 1,000 tenants of 2 owners, a quota, a limit range and a network policy each, 10 namespaces
//! each with an Ingress, and 50 storage, ingress and priority classes; then `bulkhead run` with the
//! controller, webhook and proxy in one process. It reports, side by side with the API server's own
//! figures from the same run: convergence against a plain client's write rate, writes against the
//! fewest possible, writes while idle and after a `kill -9` and restart, peak memory (after converging,
//! under load, after the restart, and of a standby replica), the proxy's filtered lists, and the latency
//! the webhook adds to a namespace create.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

use crate::harness::{Bulkhead, Cluster};
use crate::scale::{create_tenants, env, peak_rss_kib, percentile, plain_write_rate, timed, wait_converged};

/// Writes the process's shared client sent: every POST, PUT, PATCH and DELETE but the Lease's
/// renewals and Events, by resource.
fn writes(bulkhead: &Bulkhead) -> f64 {
    bulkhead.metric_sum("bulkhead_api_requests_total", |labels| {
        ["POST", "PUT", "PATCH", "DELETE"]
            .iter()
            .any(|v| labels.contains(&format!("verb=\"{v}\"")))
            && !labels.contains("resource=\"leases\"")
            && !labels.contains("resource=\"events\"")
    })
}

/// The same, one line per verb and resource (for the report).
fn write_breakdown(bulkhead: &Bulkhead) -> String {
    let (_, body) = bulkhead.admin_get("/metrics");
    body.lines()
        .filter(|l| {
            l.starts_with("bulkhead_api_requests_total{")
                && !l.contains("verb=\"GET\"")
                && !l.contains("verb=\"LIST\"")
                && !l.contains("verb=\"WATCH\"")
        })
        .map(|l| l.trim_start_matches("bulkhead_api_requests_total").to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

/// Resident memory now (VmRSS), KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    crate::scale::proc_status_kib(pid, "VmRSS:")
}

#[tokio::test]
#[ignore = "a benchmark: cargo xtask bench-scale"]
async fn scale_every_role_in_one_process() {
    let tenants_n = env("BULKHEAD_BENCH_TENANTS", 1000);
    let per_tenant = env("BULKHEAD_BENCH_NAMESPACES", 10);
    let classes = env("BULKHEAD_BENCH_CLASSES", 50);
    let load_seconds = env("BULKHEAD_BENCH_LOAD_SECONDS", 60) as u64;
    let idle_seconds = env("BULKHEAD_BENCH_IDLE_SECONDS", 60) as u64;
    let samples = env("BULKHEAD_BENCH_SAMPLES", 200);
    let cluster = Cluster::start().await;
    let prefix = cluster.unique("scale");
    let mark = format!("bulkhead-bench={prefix}");
    for kind in [
        "tenants",
        "namespaces",
        "storageclasses",
        "ingressclasses",
        "priorityclasses",
    ] {
        cluster.clean_up(&[kind, "-l", &mark]);
    }
    let started = Instant::now();
    let mut objects = String::new();
    for i in 0..classes {
        objects.push_str(&format!(
            "---\napiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {prefix}-sc{i}, labels: {{bulkhead-bench: {prefix}}}}}\nprovisioner: example.com/none\n\
             ---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: {prefix}-ic{i}, labels: {{bulkhead-bench: {prefix}}}}}\nspec: {{controller: example.com/none}}\n\
             ---\napiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {{name: {prefix}-pc{i}, labels: {{bulkhead-bench: {prefix}}}}}\nvalue: {i}\n"
        ));
    }
    // The proxy's measured user: a ServiceAccount owning tenant 0.
    let accounts = format!("{prefix}-accounts");
    objects.push_str(&format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {accounts}, labels: {{bulkhead-bench: {prefix}}}}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: user, namespace: {accounts}}}\n"
    ));
    cluster.apply(&objects);
    let account = format!("system:serviceaccount:{accounts}:user");
    create_tenants(&cluster, &prefix, tenants_n, per_tenant, |i, name| {
        let user = if i == 0 {
            json!({"kind": "ServiceAccount", "name": account})
        } else {
            json!({"kind": "User", "name": format!("{name}-owner")})
        };
        json!({
            "owners": [user, {"kind": "Group", "name": format!("{name}-devs"), "clusterRoles": ["edit"]}],
            "resourceQuotas": {"scope": "Namespace", "items": [{"hard": {"pods": "50"}}]},
            "limitRanges": {"items": [{"limits": [{"type": "Container", "default": {"cpu": "500m"}}]}]},
            "networkPolicies": {"items": [{"podSelector": {}, "policyTypes": ["Ingress"]}]},
        })
    })
    .await;
    futures::stream::iter((0..tenants_n).flat_map(|t| (0..per_tenant).map(move |n| (t, n))))
        .map(|(t, n)| {
            let ns = format!("{prefix}-t{t}-{n}");
            let ingresses: Api<Ingress> = Api::namespaced(cluster.admin.clone(), &ns);
            let class = format!("{prefix}-ic{}", (t + n) % classes.max(1));
            async move {
                let ingress: Ingress = serde_json::from_value(json!({
                    "metadata": {"name": "web"},
                    "spec": {"ingressClassName": class, "rules": [{"host": format!("{ns}.apps.example.com"), "http": {"paths": [
                        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
                }))
                .unwrap();
                ingresses.create(&PostParams::default(), &ingress).await.map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let namespaces_n = tenants_n * per_tenant;
    eprintln!(
        "created {tenants_n} tenants x {per_tenant} namespaces, {namespaces_n} Ingresses and {classes} classes of each kind in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Convergence from nothing: every role in one process, as the chart's combined mode runs it.
    let lease = format!("{prefix}-lease");
    let log_level =
        std::env::var("BULKHEAD_BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn,bulkhead::run=info".into());
    let roles = [
        "--roles",
        "controller,webhook,proxy",
        "--lease-namespace",
        "default",
        "--lease-name",
        &lease,
        "--log-level",
        &log_level,
    ];
    let start = Instant::now();
    let mut bulkhead = Bulkhead::start(&cluster, &roles);
    wait_converged(
        &cluster,
        &prefix,
        tenants_n,
        per_tenant,
        Duration::from_secs(1800),
    )
    .await;
    let converged = start.elapsed();
    if let Ok(file) = std::env::var("BULKHEAD_BENCH_LOG_FILE") {
        std::fs::write(file, bulkhead.log()).unwrap();
    }
    // Per namespace: the User owner's admin and namespace-deleter bindings, the Group's edit binding,
    // the quota, limit range and network policy, and the namespace's own metadata (ownerReference);
    // per tenant, one status write.
    let minimum = namespaces_n * 7 + tenants_n;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written = writes(&bulkhead);
    let breakdown = write_breakdown(&bulkhead);
    let pid = bulkhead.pid();
    let hwm_converged = peak_rss_kib(pid);
    let rss_converged = rss_kib(pid);
    let cached = bulkhead.metric_sum("bulkhead_cache_objects", |_| true);
    let reconciles = bulkhead.metric_sum("bulkhead_reconcile_total", |_| true);
    let reconcile_seconds = bulkhead.metric_sum("bulkhead_reconcile_duration_seconds_sum", |_| true);
    eprintln!("converged in {:.1}s; writes {breakdown}", converged.as_secs_f64());

    // Idle: nothing changes, nothing is written.
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let idle_writes = writes(&bulkhead) - written;

    // The proxy: tenant 0's `kubectl get ns` (its namespaces of all) against the API server's own
    // label-selected consistent list, and `kubectl get pods -A` through the proxy.
    let through_proxy = bulkhead.proxy_client(&cluster, &accounts, "user").await;
    let proxy_ns: Api<Namespace> = Api::all(through_proxy.clone());
    let direct_ns: Api<Namespace> = Api::all(cluster.admin.clone());
    let selector = ListParams::default().labels(&format!("bulkhead.dev/tenant={prefix}-t0"));
    crate::harness::eventually(Duration::from_secs(30), || async {
        let n = proxy_ns
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        (n == per_tenant)
            .then_some(())
            .ok_or(format!("{n} namespaces through the proxy"))
    })
    .await;
    let (mut proxy_list, mut server_list) =
        crate::scale::namespace_list_timings(&proxy_ns, &direct_ns, &selector, samples).await;
    let proxy_pods: Api<Pod> = Api::all(through_proxy.clone());
    let upstream_before = bulkhead.metric_sum("bulkhead_proxy_upstream_requests_total", |_| true);
    let mut pods_all = timed(samples / 4, || async {
        proxy_pods.list(&ListParams::default()).await.unwrap();
    })
    .await;
    let upstream_per_call = (bulkhead.metric_sum("bulkhead_proxy_upstream_requests_total", |_| true)
        - upstream_before)
        / (samples / 4).max(1) as f64;

    // Load: tenant users create namespaces (through the webhook) and pods in them, and list their
    // namespaces through the proxy, for `load_seconds`.
    let load_users = 8.min(tenants_n);
    let made = Arc::new(AtomicUsize::new(0));
    let load_started = Instant::now();
    let window = Duration::from_secs(load_seconds);
    let mut workers = Vec::new();
    for u in 0..load_users {
        let tenant = format!("{prefix}-t{u}");
        let user = if u == 0 {
            None
        } else {
            Some(
                cluster
                    .client_as(&format!("{tenant}-owner"), &["bulkhead.dev"])
                    .await,
            )
        };
        let creator = match &user {
            Some(c) => c.clone(),
            None => {
                cluster
                    .client_as(
                        &account,
                        &[
                            "bulkhead.dev",
                            "system:serviceaccounts",
                            &format!("system:serviceaccounts:{accounts}"),
                        ],
                    )
                    .await
            }
        };
        let (made, prefix, proxy_ns) = (made.clone(), prefix.clone(), proxy_ns.clone());
        workers.push(tokio::spawn(async move {
            let namespaces: Api<Namespace> = Api::all(creator.clone());
            let mut n = 0;
            while load_started.elapsed() < window {
                n += 1;
                let name = format!("{tenant}-load-{n}");
                let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"bulkhead-bench": prefix}}})).unwrap();
                match namespaces.create(&PostParams::default(), &ns).await {
                    Ok(_) => {}
                    Err(e) => panic!("{tenant} creating namespace {name}: {e}"),
                }
                // Pods go to the tenant's first namespaces, whose service account `default` exists (in a
                // new namespace the API server refuses pods until kube-controller-manager made it).
                let home = format!("{tenant}-{}", n % per_tenant);
                let pods: Api<Pod> = Api::namespaced(creator.clone(), &home);
                let pod: Pod = serde_json::from_value(json!({"metadata": {"name": format!("p{n}")}, "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}})).unwrap();
                match pods.create(&PostParams::default(), &pod).await {
                    Ok(_) => {}
                    // Over the namespace's quota of 50 pods: refused as it should be.
                    Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("exceeded quota") => {}
                    Err(e) => panic!("{tenant} creating a pod in {home}: {e}"),
                }
                if u == 0 {
                    proxy_ns.list(&ListParams::default()).await.unwrap();
                }
                made.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let loaded = made.load(Ordering::Relaxed);

    // kill -9 and a restart with nothing changed: it reads, sees all is as wanted, and writes nothing.
    // First the controller catches up with what the load asked for (no write for 10 s).
    let mut last = writes(&bulkhead);
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(10) {
        assert!(
            load_started.elapsed() < Duration::from_secs(900),
            "the controller never caught up with the load"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = writes(&bulkhead);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    let caught_up = load_started.elapsed().saturating_sub(window);
    let hwm_load = peak_rss_kib(pid);
    bulkhead.kill_and_restart();
    let restarted = Instant::now();
    crate::harness::eventually(Duration::from_secs(120), || async {
        let leading = bulkhead.metric("bulkhead_leader").unwrap_or(0.0);
        let reconciled = bulkhead.metric_sum("bulkhead_reconcile_total", |_| true);
        (leading == 1.0 && reconciled >= tenants_n as f64)
            .then_some(())
            .ok_or(format!("leader {leading}, {reconciled} reconciles"))
    })
    .await;
    let back_in = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let restart_writes = writes(&bulkhead);
    let restart_reads = bulkhead.metric_sum("bulkhead_api_requests_total", |l| {
        l.contains("verb=\"GET\"") || l.contains("verb=\"LIST\"")
    });
    let restart_breakdown = write_breakdown(&bulkhead);
    let pid = bulkhead.pid();
    let hwm_restart = peak_rss_kib(pid);

    // A standby replica (all roles, not leading) beside it.
    // Its webhook has no certificate of its own (the leader keeps the one registered), so what is
    // waited for is its cache.
    let standby = Bulkhead::start(&cluster, &roles);
    crate::harness::eventually(Duration::from_secs(120), || async {
        let synced = standby.metric_sum("bulkhead_cache_synced", |_| true);
        let kinds = bulkhead.metric_sum("bulkhead_cache_synced", |_| true);
        (synced >= kinds)
            .then_some(())
            .ok_or(format!("{synced} of {kinds} kinds synced"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        standby.metric("bulkhead_leader"),
        Some(0.0),
        "the standby does not lead"
    );
    let hwm_standby = peak_rss_kib(standby.pid());
    drop(standby);

    // The webhook's cost at this scale, as the API server's clients see it: namespace creates by a
    // tenant owner with Bulkhead's webhooks registered, then with its webhook configurations deleted.
    // Bulkhead keeps running in both, and the namespaces carry their tenant label themselves, so the
    // controller does the same work for each: the difference is the webhooks alone.
    let owner = cluster
        .client_as(&format!("{prefix}-t1-owner"), &["bulkhead.dev"])
        .await;
    let owner_ns: Api<Namespace> = Api::all(owner);
    let counter = Arc::new(AtomicUsize::new(0));
    let create = |phase: &'static str| {
        let (api, counter, prefix) = (owner_ns.clone(), counter.clone(), prefix.clone());
        move || {
            let (api, counter, prefix) = (api.clone(), counter.clone(), prefix.clone());
            async move {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let ns: Namespace =
                    serde_json::from_value(json!({"metadata": {"name": format!("{prefix}-t1-{phase}-{n}"),
                    "labels": {"bulkhead-bench": prefix, "bulkhead.dev/tenant": format!("{prefix}-t1")}}}))
                    .unwrap();
                api.create(&PostParams::default(), &ns).await.unwrap();
            }
        }
    };
    let mut with_webhooks = timed(samples, create("with")).await;
    let configuration = bulkhead.webhook_configuration.clone().unwrap();
    for kind in ["mutatingwebhookconfiguration", "validatingwebhookconfiguration"] {
        cluster.kubectl().ok(&["delete", kind, &configuration]);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut without_webhooks = timed(samples, create("without")).await;
    bulkhead.terminate();

    // The API server's own write rate in this run: a plain client writing as many objects as the
    // controller had to, at the controller's write concurrency.
    let concurrency = env("BULKHEAD_BENCH_WRITE_CONCURRENCY", 16);
    let rate = plain_write_rate(&cluster, &prefix, minimum, concurrency).await;
    let floor = minimum as f64 / rate;
    // The same writes the controller made (its objects of one namespace, copied into as many fresh
    // namespaces, server-side applied), by a plain client at the same concurrency.
    let (apply_rate, applied) = crate::scale::plain_apply_rate(
        &cluster,
        &prefix,
        &format!("{prefix}-t1-0"),
        namespaces_n,
        concurrency,
    )
    .await;
    let apply_floor = minimum as f64 / apply_rate;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99_added = ms(percentile(&mut with_webhooks, 0.99)) - ms(percentile(&mut without_webhooks, 0.99));
    let list_ratio = ms(percentile(&mut proxy_list, 0.5)) / ms(percentile(&mut server_list, 0.5));
    println!(
        "BENCH scale tenants={tenants_n} namespaces={namespaces_n} classes={classes} cached_objects={cached} \
         converge_seconds={:.1} plain_client_seconds={floor:.1} convergence_ratio={:.2} \
         plain_same_writes={applied} plain_same_writes_per_second={apply_rate:.0} plain_same_seconds={apply_floor:.1} convergence_ratio_same_writes={:.2} \
         reconciles={reconciles:.0} reconcile_seconds={reconcile_seconds:.1} writes={written:.0} minimum_writes={minimum} \
         idle_writes_{idle_seconds}s={idle_writes:.0} restart_writes={restart_writes:.0} restart_seconds={:.1} restart_gets={restart_reads:.0} \
         rss_mib_converged={} hwm_mib_converged={} hwm_mib_after_load={} hwm_mib_after_restart={} hwm_mib_standby={} \
         load_namespaces_and_pods={loaded} caught_up_after_load_seconds={:.1} \
         proxy_ns_list_median_ms={:.3} server_selected_list_median_ms={:.3} proxy_list_ratio={list_ratio:.4} \
         proxy_pods_all_median_ms={:.3} upstream_requests_per_pods_all={upstream_per_call:.1} \
         ns_create_p99_ms_with={:.2} without={:.2} webhook_p99_added_ms={p99_added:.2} median_with={:.2} median_without={:.2}",
        converged.as_secs_f64(),
        converged.as_secs_f64() / floor,
        converged.as_secs_f64() / apply_floor,
        back_in.as_secs_f64(),
        mib(rss_converged),
        mib(hwm_converged),
        mib(hwm_load),
        mib(hwm_restart),
        mib(hwm_standby),
        caught_up.as_secs_f64(),
        ms(percentile(&mut proxy_list, 0.5)),
        ms(percentile(&mut server_list, 0.5)),
        ms(percentile(&mut pods_all, 0.5)),
        ms(percentile(&mut with_webhooks, 0.99)),
        ms(percentile(&mut without_webhooks, 0.99)),
        ms(percentile(&mut with_webhooks, 0.5)),
        ms(percentile(&mut without_webhooks, 0.5)),
    );
    eprintln!("writes after the restart: {restart_breakdown}");
}
