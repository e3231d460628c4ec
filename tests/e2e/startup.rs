//! Bulkhead starts against a cluster, syncs, reports ready, follows Tenants, and stops cleanly.

use std::time::Duration;

use bulkhead_api::Tenant;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;

use crate::harness::{Bulkhead, Cluster, eventually};

fn tenant(name: &str) -> Tenant {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": name}, "spec": {"owners": [{"kind": "User", "name": "alice"}]},
    }))
    .unwrap()
}

#[tokio::test]
async fn bulkhead_syncs_reports_ready_follows_tenants_and_stops_on_sigterm() {
    let cluster = Cluster::start().await;
    let tenants: Api<Tenant> = Api::all(cluster.admin.clone());
    let first = cluster.unique("e2e-start");
    tenants
        .create(&PostParams::default(), &tenant(&first))
        .await
        .unwrap();
    cluster.clean_up(&["tenant", &first]);
    let lease_name = cluster.unique("e2e-lease");

    let mut bulkhead = Bulkhead::start(
        &cluster,
        &["--lease-namespace", "default", "--lease-name", &lease_name],
    );
    bulkhead.wait_ready().await;
    let (_, ready) = bulkhead.admin_get("/readyz");
    for line in [
        "[ok] cache Tenant",
        "[ok] cache Namespace",
        "[ok] role controller",
        "[ok] role webhook",
        "[ok] role proxy",
    ] {
        assert!(ready.contains(line), "{ready}");
    }

    // kubectl sees the Tenant CRD and the tenant, with the printer columns.
    let table = cluster.kubectl().ok(&["get", "tenants"]);
    assert!(
        table.contains("NAMESPACE QUOTA") && table.lines().any(|l| l.starts_with(&first)),
        "{table}"
    );

    // The API server serves the CRD's field documentation.
    let explained = cluster.kubectl().ok(&["explain", "tenant.spec.owners"]);
    assert!(explained.contains("Who owns the tenant."), "{explained}");
    assert!(
        explained.contains("clusterRoles") && explained.contains("proxySettings"),
        "{explained}"
    );

    // The cache follows a Tenant created after start.
    let sample = "bulkhead_cache_objects{kind=\"Tenant\"}";
    let before = bulkhead.metric(sample).expect("the metric exists");
    assert!(before >= 1.0, "the tenant made before start is counted: {before}");
    let second = cluster.unique("e2e-start");
    tenants
        .create(&PostParams::default(), &tenant(&second))
        .await
        .unwrap();
    cluster.clean_up(&["tenant", &second]);
    eventually(Duration::from_secs(20), || async {
        let now = bulkhead.metric(sample).unwrap_or(0.0);
        (now >= before + 1.0)
            .then_some(())
            .ok_or(format!("{sample} is {now}, expected {}", before + 1.0))
    })
    .await;
    if cluster.is_testkit() {
        // Alone on the cluster, the count is exact.
        assert_eq!(bulkhead.metric(sample), Some(2.0));
    }
    assert_eq!(bulkhead.metric("bulkhead_leader"), Some(1.0));

    // SIGTERM: a clean exit, and the Lease is released for a successor.
    let status = bulkhead.terminate();
    assert!(status.success(), "exit status {status:?}:\n{}", bulkhead.log());
    let leases: Api<Lease> = Api::namespaced(cluster.admin.clone(), "default");
    let lease = leases.get(&lease_name).await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None, "the Lease is released");
    let _ = leases.delete(&lease_name, &Default::default()).await;
}

#[tokio::test]
async fn a_second_replica_takes_over_when_the_leader_stops() {
    let cluster = Cluster::start().await;
    let lease = cluster.unique("e2e-failover");
    let args = [
        "--roles",
        "controller",
        "--webhook-tls",
        "external",
        "--lease-namespace",
        "default",
        "--lease-name",
        &lease,
        "--lease-retry-period",
        "200ms",
    ];
    let mut first = Bulkhead::start(&cluster, &args);
    first.wait_ready().await;
    eventually(Duration::from_secs(10), || async {
        (first.metric("bulkhead_leader") == Some(1.0))
            .then_some(())
            .ok_or("the first replica does not lead".to_owned())
    })
    .await;
    let second = Bulkhead::start(&cluster, &args);
    second.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        second.metric("bulkhead_leader"),
        Some(0.0),
        "only one replica leads"
    );

    assert!(first.terminate().success());
    // The leader released the Lease, so the follower takes it at its next retry, well before expiry.
    eventually(Duration::from_secs(5), || async {
        (second.metric("bulkhead_leader") == Some(1.0))
            .then_some(())
            .ok_or("the second replica has not taken over".to_owned())
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(cluster.admin.clone(), "default");
    let spec = leases.get(&lease).await.unwrap().spec.unwrap();
    assert!(spec.lease_transitions.unwrap_or(0) >= 1, "{spec:?}");
    drop(second);
    let _ = leases.delete(&lease, &Default::default()).await;
}
