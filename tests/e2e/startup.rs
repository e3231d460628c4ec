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

/// The chart's split mode: controller, webhook and proxy in three processes, each under the RBAC the
/// chart gives its Deployment (on a real cluster: the controller and webhook as the main
/// ServiceAccount, the proxy as its own). A tenant owner's namespace is admitted by the webhook,
/// equipped by the controller and listed through the proxy.
#[tokio::test]
async fn the_roles_work_apart_as_the_charts_split_mode_runs_them() {
    let cluster = Cluster::start().await;
    let name = cluster.unique("e2e-split");
    let lease = cluster.unique("e2e-split-lease");
    let (addr, url) = crate::harness::webhook_endpoint();
    for kind in ["mutatingwebhookconfiguration", "validatingwebhookconfiguration"] {
        cluster.clean_up(&[kind, &name]);
    }
    cluster.clean_up(&["secret", "-n", "default", &name]);
    let chart = [
        format!("webhook.configurationName={name}"),
        format!("webhook.secretName={name}"),
    ];
    let chart: Vec<&str> = chart.iter().map(String::as_str).collect();
    let shared = [
        "--webhook-tls",
        "managed",
        "--namespace",
        "default",
        "--webhook-configuration",
        &name,
        "--webhook-secret",
        &name,
    ];
    let mut controller_args = vec![
        "--roles",
        "controller",
        "--webhook-url",
        &url,
        "--lease-namespace",
        "default",
        "--lease-name",
        &lease,
    ];
    controller_args.extend(shared);
    // Both are told where the API server reaches the webhook, as the chart tells both its Service.
    let mut webhook_args = vec![
        "--roles",
        "webhook",
        "--webhook-addr",
        &addr,
        "--webhook-url",
        &url,
    ];
    webhook_args.extend(shared);
    let controller = Bulkhead::start_with_chart(&cluster, &controller_args, &chart);
    let webhook = Bulkhead::start_with_chart(&cluster, &webhook_args, &chart);
    let proxy = Bulkhead::start(&cluster, &["--roles", "proxy"]);
    for process in [&controller, &webhook, &proxy] {
        process.wait_ready().await;
    }

    let t = cluster.unique("e2e-split-t");
    let alice = cluster.unique("alice");
    let accounts = cluster.unique("e2e-split-accounts");
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {accounts}}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: owner, namespace: {accounts}}}\n---\napiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec: {{owners: [{{kind: User, name: {alice}}}, {{kind: ServiceAccount, name: 'system:serviceaccount:{accounts}:owner'}}]}}\n"
    ));
    // A person in the user groups creates a namespace; the ServiceAccount owner (whose token the proxy
    // can review) lists it through the proxy.
    let owner = cluster.kubectl_as(&alice, &["bulkhead.dev"]);
    let ns = format!("{t}-one");
    cluster.clean_up(&["namespace", &ns]);
    // The webhook assigns it (the controller's provisioner binding may take a moment).
    owner
        .ok_eventually(Duration::from_secs(30), &["create", "namespace", &ns])
        .await;
    let label = cluster.kubectl().ok(&[
        "get",
        "namespace",
        &ns,
        "-o",
        "jsonpath={.metadata.labels.bulkhead\\.dev/tenant}",
    ]);
    assert_eq!(label, t, "the webhook assigned the namespace");
    // The controller gives the owner its RoleBinding there.
    owner
        .ok_eventually(
            Duration::from_secs(30),
            &["create", "configmap", "made-by-owner", "-n", &ns],
        )
        .await;
    // The proxy shows the owner exactly its namespace.
    let token = cluster.service_account_token(&accounts, "owner");
    let through = crate::harness::Kubectl::at(proxy.proxy_kubeconfig(cluster.dir(), &t, &token));
    eventually(Duration::from_secs(30), || async {
        let out = through.run(&["get", "namespaces", "-o", "name"]);
        let seen = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (seen == format!("namespace/{ns}"))
            .then_some(())
            .ok_or_else(|| format!("saw {seen:?}; {}", String::from_utf8_lossy(&out.stderr)))
    })
    .await;
}
