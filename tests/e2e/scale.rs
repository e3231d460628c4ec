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

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[tokio::test]
#[ignore = "a benchmark: cargo xtask bench-controller"]
async fn scale_many_tenants_converge() {
    let tenants_n = env("BULKHEAD_BENCH_TENANTS", 1000);
    let per_tenant = env("BULKHEAD_BENCH_NAMESPACES", 3);
    let cluster = Cluster::start().await;
    let prefix = cluster.unique("bench");
    let tenants: Api<bulkhead_api::Tenant> = Api::all(cluster.admin.clone());
    let namespaces: Api<Namespace> = Api::all(cluster.admin.clone());
    // Everything made here carries a label, so that a real cluster is cleaned up in two calls.
    let mark = format!("bulkhead-bench={prefix}");
    cluster.clean_up(&["tenants", "-l", &mark]);
    cluster.clean_up(&["namespaces", "-l", &mark]);
    let started = Instant::now();
    futures::stream::iter(0..tenants_n)
        .map(|i| {
            let tenants = tenants.clone();
            let namespaces = namespaces.clone();
            let name = format!("{prefix}-t{i}");
            let prefix = prefix.clone();
            async move {
                let tenant: bulkhead_api::Tenant = serde_json::from_value(json!({
                    "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name, "labels": {"bulkhead-bench": prefix}},
                    "spec": {
                        "owners": [{"kind": "User", "name": format!("{name}-owner")}, {"kind": "Group", "name": format!("{name}-devs"), "clusterRoles": ["edit", "view"]}],
                        "resourceQuotas": {"scope": "Namespace", "items": [{"hard": {"pods": "10"}}]},
                        "limitRanges": {"items": [{"limits": [{"type": "Container", "default": {"cpu": "500m"}}]}]},
                        "networkPolicies": {"items": [{"podSelector": {}, "policyTypes": ["Ingress"]}]},
                    },
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
    let bulkhead = Bulkhead::start(
        &cluster,
        &[
            "--roles",
            "controller",
            "--lease-namespace",
            "default",
            "--lease-name",
            &lease,
            "--log-level",
            "warn,bulkhead::run=info",
        ],
    );
    let pid = bulkhead.pid();
    loop {
        let list = tenants.list(&ListParams::default()).await.unwrap();
        let done = list
            .items
            .iter()
            .filter(|t| t.metadata.name.as_deref().is_some_and(|n| n.starts_with(&prefix)))
            .filter(|t| {
                t.status.as_ref().is_some_and(|s| {
                    s.size as usize == per_tenant
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if done == tenants_n {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "only {done}/{tenants_n} tenants converged in 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
    println!(
        "BENCH controller tenants={tenants_n} namespaces_per_tenant={per_tenant} converge_seconds={:.2} writes={issued} minimum_writes={minimum} peak_rss={rss}",
        converged.as_secs_f64()
    );
}
