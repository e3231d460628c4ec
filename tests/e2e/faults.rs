//! Faults on purpose (#16): what a replica, a restart or a kill leaves behind, and that nothing is lost
//! or written twice. docs/reliability.md lists what has been tried.

use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

use crate::harness::{Bulkhead, Cluster, eventually};
use crate::scale::{create_tenants, start_controller, wait_converged};

/// The RoleBindings Bulkhead has made in the namespaces of tenants named `<prefix>-t*`.
async fn bindings_made(cluster: &Cluster, prefix: &str) -> usize {
    let api: Api<RoleBinding> = Api::all(cluster.admin.clone());
    let list = api
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=bulkhead"))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|b| {
            b.metadata
                .namespace
                .as_deref()
                .is_some_and(|ns| ns.starts_with(&format!("{prefix}-t")))
        })
        .count()
}

/// RoleBinding writes a replica sent (its own client's count).
fn binding_writes(bulkhead: &Bulkhead) -> f64 {
    bulkhead.metric_sum("bulkhead_api_requests_total", |labels| {
        ["POST", "PUT", "PATCH"]
            .iter()
            .any(|v| labels.contains(&format!("verb=\"{v}\"")))
            && labels.contains("resource=\"rolebindings\"")
    })
}

/// RoleBinding writes the testkit served (create, update, patch), all clients together.
fn served_binding_writes(cluster: &Cluster) -> Option<u64> {
    cluster.testkit().map(|t| {
        t.writes()
            .iter()
            .filter(|((verb, resource), _)| verb != "delete" && resource.starts_with("rolebindings"))
            .map(|(_, n)| n)
            .sum()
    })
}

#[tokio::test]
async fn a_standby_takes_over_from_a_leader_killed_mid_converge_and_writes_only_what_is_missing() {
    let cluster = Cluster::start().await;
    let prefix = cluster.unique("e2e-kill");
    let lease = cluster.unique("e2e-kill-lease");
    let (tenants_n, per_tenant) = (60, 2);
    // Each namespace: the owner's admin RoleBinding and the namespace deleter's.
    let wanted = tenants_n * per_tenant * 2;
    let mark = format!("bulkhead-bench={prefix}");
    cluster.clean_up(&["tenants", "-l", &mark]);
    cluster.clean_up(&["namespaces", "-l", &mark]);
    let lease_args = ["--lease-duration", "3s", "--lease-retry-period", "200ms"];
    let mut leader = start_controller(&cluster, &lease, &lease_args);
    leader.wait_ready().await;
    eventually(Duration::from_secs(10), || async {
        (leader.metric("bulkhead_leader") == Some(1.0))
            .then_some(())
            .ok_or("the first replica does not lead".to_owned())
    })
    .await;
    let standby = start_controller(&cluster, &lease, &lease_args);
    standby.wait_ready().await;
    let served_before = served_binding_writes(&cluster);

    create_tenants(
        &cluster,
        &prefix,
        tenants_n,
        per_tenant,
        |_, name| json!({"owners": [{"kind": "User", "name": format!("{name}-owner")}]}),
    )
    .await;
    // Kill the leader once it has made some of the bindings, without letting it release the Lease.
    let made = eventually(Duration::from_secs(60), || async {
        let made = bindings_made(&cluster, &prefix).await;
        (made > 0).then_some(made).ok_or(format!("{made} bindings yet"))
    })
    .await;
    leader.kill();
    let killed = Instant::now();
    let at_kill = bindings_made(&cluster, &prefix).await;
    eprintln!("leader killed with {at_kill} of {wanted} RoleBindings made (first seen: {made})");
    assert_eq!(
        standby.metric("bulkhead_leader"),
        Some(0.0),
        "the standby led before the leader was gone"
    );

    // The standby waits out the Lease it was never handed, then leads.
    eventually(Duration::from_secs(10), || async {
        (standby.metric("bulkhead_leader") == Some(1.0))
            .then_some(())
            .ok_or("the standby has not taken over".to_owned())
    })
    .await;
    let took_over = killed.elapsed();
    assert!(
        took_over < Duration::from_secs(3) + Duration::from_secs(3),
        "took over after {took_over:?}, lease duration 3 s"
    );
    wait_converged(&cluster, &prefix, tenants_n, per_tenant, Duration::from_secs(120)).await;
    assert_eq!(bindings_made(&cluster, &prefix).await, wanted);

    // Only what was missing is written: the standby's writes are the bindings not made at the kill
    // (plus at most the leader's writes in flight then); on the testkit, every binding once in all.
    let standby_writes = binding_writes(&standby) as usize;
    let missing = wanted - at_kill;
    eprintln!(
        "took over in {:.1}s; the standby wrote {standby_writes} RoleBindings, {missing} were missing",
        took_over.as_secs_f64()
    );
    assert!(
        standby_writes <= missing + 16,
        "the standby wrote {standby_writes} RoleBindings for {missing} missing"
    );
    if let (Some(after), Some(before)) = (served_binding_writes(&cluster), served_before) {
        assert_eq!(
            (after - before) as usize,
            wanted,
            "the two replicas together wrote the {wanted} RoleBindings more than once each"
        );
    }
    // And then it is idle.
    let settled = binding_writes(&standby);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        binding_writes(&standby),
        settled,
        "the standby keeps writing after converging"
    );
    cluster.clean_up(&["tenants", "-l", &mark]);
    cluster.clean_up(&["namespaces", "-l", &mark]);
}
