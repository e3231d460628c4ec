//! ResourcePools and ResourcePoolClaims with Capsule's meaning: one ResourceQuota per selected
//! namespace, claims that bind while the pool has room and queue when it has not, and a claim whose
//! resources are in use cannot be deleted, released or changed. That last rule is what capsule#1662
//! broke: there, a tenant claimed the whole pool in one namespace, used it, removed the claim, claimed
//! again in a second namespace and used the pool twice. Here the objects are Secrets counted by
//! `count/secrets`: the testkit keeps object counts as the API server does (docs/testing.md).

use std::time::Duration;

use crate::harness::{Bulkhead, Cluster, eventually};

fn jsonpath(cluster: &Cluster, what: &[&str], path: &str) -> String {
    let template = format!("jsonpath={path}");
    let args = [&["get"], what, &["-o", template.as_str()]].concat();
    String::from_utf8_lossy(&cluster.kubectl().run(&args).stdout).into_owned()
}

fn claim(ns: &str, name: &str, pool: &str, secrets: u32) -> String {
    format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: ResourcePoolClaim\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  pool: {pool}\n  claim:\n    count/secrets: \"{secrets}\"\n"
    )
}

fn secret(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\nstringData: {{a: b}}\n"
    )
}

/// The pool quota's `count/secrets` limit in `ns` ("" while there is none).
fn quota_hard(cluster: &Cluster, ns: &str, pool: &str) -> String {
    jsonpath(
        cluster,
        &["resourcequota", &format!("bulkhead-pool-{pool}"), "-n", ns],
        r"{.spec.hard.count/secrets}",
    )
}

async fn wait_for(check: impl Fn() -> Result<(), String>) {
    eventually(Duration::from_secs(60), || async { check() }).await;
}

/// Applies `manifest` with `kubectl`, failing the test if it is refused.
fn apply_with(kubectl: &crate::harness::Kubectl, manifest: &str) {
    let out = kubectl.run_with_input(&["apply", "-f", "-"], Some(manifest));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn claims_queue_for_room_and_a_claim_in_use_cannot_be_moved_to_another_namespace() {
    let cluster = Cluster::start().await;
    let (tenant, alice, dev, prod) = crate::rules::names(&cluster, "e2e-pool");
    let pool = cluster.unique("e2e-pool");
    let role = cluster.unique("e2e-pool-claims");
    cluster.clean_up(&["resourcepool", &pool]);
    cluster.clean_up(&["clusterrole", &role]);
    cluster.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {role}}}\nrules:\n- apiGroups: [bulkhead.dev]\n  resources: [resourcepoolclaims]\n  verbs: ['*']\n- apiGroups: ['']\n  resources: [secrets, resourcequotas]\n  verbs: ['*']\n"
    ));
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {tenant}}}\nspec:\n  owners: [{{kind: User, name: {alice}}}]\n  namespaceOptions:\n    defaultNamespaces: [{{name: {dev}}}, {{name: {prod}}}]\n"
    ));
    let lease = cluster.unique("e2e-pool-lease");
    let bulkhead = Bulkhead::start(
        &cluster,
        &["--lease-namespace", "default", "--lease-name", &lease],
    );
    bulkhead.wait_ready().await;
    for ns in [&dev, &prod] {
        eventually(Duration::from_secs(60), || async {
            cluster
                .kubectl()
                .run(&["get", "namespace", ns])
                .status
                .success()
                .then_some(())
                .ok_or(format!("no namespace {ns} yet"))
        })
        .await;
        cluster.kubectl().ok(&[
            "create",
            "rolebinding",
            "pool-claims",
            "--clusterrole",
            &role,
            "--user",
            &alice,
            "-n",
            ns,
        ]);
    }
    let as_alice = || cluster.kubectl_as(&alice, &["bulkhead.dev"]);
    // Capsule's manifest shape (113-resourcepool-solar.yaml): the selector names Capsule's tenant
    // label, which Bulkhead's tenant namespaces are seen with.
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: ResourcePool\nmetadata: {{name: {pool}}}\nspec:\n  config: {{defaultsZero: true}}\n  quota:\n    hard:\n      count/secrets: \"2\"\n  selectors:\n  - matchLabels:\n      capsule.clastix.io/tenant: {tenant}\n"
    ));
    // One ResourceQuota per selected namespace, at 0: nothing is used without a claim.
    wait_for(|| {
        let (d, p) = (
            quota_hard(&cluster, &dev, &pool),
            quota_hard(&cluster, &prod, &pool),
        );
        (d == "0" && p == "0")
            .then_some(())
            .ok_or(format!("dev {d:?}, prod {p:?}"))
    })
    .await;
    let out = as_alice().run_with_input(&["create", "-f", "-"], Some(&secret(&prod, "early")));
    assert!(!out.status.success(), "a secret was created without a claim");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exceeded quota"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The whole pool claimed in dev: bound, and dev's quota raised.
    apply_with(&as_alice(), &claim(&dev, "all", &pool, 2));
    let bound = |ns: &str, name: &str| {
        jsonpath(
            &cluster,
            &["resourcepoolclaim", name, "-n", ns],
            r#"{.status.conditions[?(@.type=="Bound")].status}/{.status.conditions[?(@.type=="Bound")].reason}"#,
        )
    };
    wait_for(|| {
        let (b, h) = (bound(&dev, "all"), quota_hard(&cluster, &dev, &pool));
        (b == "True/Succeeded" && h == "2")
            .then_some(())
            .ok_or(format!("{b}, hard {h:?}"))
    })
    .await;
    // Used: two secrets (the API server's quota admission may need a moment to see the new limit).
    for name in ["one", "two"] {
        eventually(Duration::from_secs(60), || async {
            let out = as_alice().run_with_input(&["apply", "-f", "-"], Some(&secret(&dev, name)));
            out.status
                .success()
                .then_some(())
                .ok_or(String::from_utf8_lossy(&out.stderr).into_owned())
        })
        .await;
    }
    let out = as_alice().run_with_input(&["create", "-f", "-"], Some(&secret(&dev, "three")));
    assert!(!out.status.success(), "a third secret passed the claim");

    // capsule#1662: the claim cannot be deleted, released or changed while what it paid for exists.
    eventually(Duration::from_secs(30), || async {
        let out = as_alice().run(&["delete", "resourcepoolclaim", "all", "-n", &dev]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (!out.status.success()
            && err.contains(&format!("ResourcePoolClaim all is in use in namespace {dev} (ResourcePool {pool}) and cannot be deleted"))
            && err.contains("count/secrets: 2 used of 2, 0 without this claim"))
        .then_some(())
        .ok_or(format!("deleted, or not for that reason: {err}"))
    })
    .await;
    let out = as_alice().run(&[
        "annotate",
        "resourcepoolclaim",
        "all",
        "-n",
        &dev,
        "projectcapsule.dev/release=true",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be released"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_alice().run_with_input(&["apply", "-f", "-"], Some(&claim(&dev, "all", &pool, 1)));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be changed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The pool's quota in dev is Bulkhead's, not the tenant's to raise.
    let out = as_alice().run(&[
        "patch",
        "resourcequota",
        &format!("bulkhead-pool-{pool}"),
        "-n",
        &dev,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"hard":{"count/secrets":"9"}}}"#,
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("with a ResourcePoolClaim instead"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A claim in prod queues: the pool has nothing left, and prod's quota stays at 0.
    apply_with(&as_alice(), &claim(&prod, "moved", &pool, 2));
    wait_for(|| {
        let b = bound(&prod, "moved");
        let message = jsonpath(
            &cluster,
            &["resourcepoolclaim", "moved", "-n", &prod],
            r#"{.status.conditions[?(@.type=="Bound")].message}"#,
        );
        (b == "False/PoolExhausted" && message == "requested: count/secrets=2, available: count/secrets=0")
            .then_some(())
            .ok_or(format!("{b}: {message}"))
    })
    .await;
    assert_eq!(quota_hard(&cluster, &prod, &pool), "0");
    let status = jsonpath(
        &cluster,
        &["resourcepool", &pool],
        r#"{.status.allocation.claimed.count/secrets}/{.status.allocation.available.count/secrets} {.status.conditions[?(@.type=="Exhausted")].status} {.status.namespaceCount}"#,
    );
    assert_eq!(status, "2/0 True 2");

    // Even a claim in use that goes past the webhook (kube-system's controllers are not asked: here
    // the garbage collector's identity) frees nothing: dev's use still counts against the pool.
    cluster
        .kubectl_as(
            "system:serviceaccount:kube-system:generic-garbage-collector",
            &["system:masters"],
        )
        .ok(&["delete", "resourcepoolclaim", "all", "-n", &dev]);
    wait_for(|| {
        let d = quota_hard(&cluster, &dev, &pool);
        (d == "0").then_some(()).ok_or(format!("dev {d:?}"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(bound(&prod, "moved"), "False/PoolExhausted");
    assert_eq!(quota_hard(&cluster, &prod, &pool), "0");
    assert_eq!(
        jsonpath(
            &cluster,
            &["resourcepool", &pool],
            "{.status.allocation.claimed.count/secrets}"
        ),
        "2",
        "dev's use beyond its claims is taken from the pool"
    );
    // Once what dev used is gone, the queued claim binds in prod.
    as_alice().ok(&["delete", "secret", "one", "two", "-n", &dev]);
    wait_for(|| {
        let (b, p, d) = (
            bound(&prod, "moved"),
            quota_hard(&cluster, &prod, &pool),
            quota_hard(&cluster, &dev, &pool),
        );
        (b == "True/Succeeded" && p == "2" && d == "0")
            .then_some(())
            .ok_or(format!("{b}, prod {p:?}, dev {d:?}"))
    })
    .await;

    // capsule#1977: an unused bound claim may change, but growing it past the pool queues it again
    // instead of handing out more than the pool holds.
    apply_with(&as_alice(), &claim(&prod, "moved", &pool, 3));
    wait_for(|| {
        let (b, p) = (bound(&prod, "moved"), quota_hard(&cluster, &prod, &pool));
        (b == "False/PoolExhausted" && p == "0")
            .then_some(())
            .ok_or(format!("{b}, prod {p:?}"))
    })
    .await;

    // A deleted pool takes its quotas with it and lets its claims go.
    cluster
        .kubectl()
        .ok(&["delete", "resourcepool", &pool, "--wait=false"]);
    wait_for(|| {
        let gone = !cluster
            .kubectl()
            .run(&["get", "resourcepool", &pool])
            .status
            .success();
        let (d, p) = (
            quota_hard(&cluster, &dev, &pool),
            quota_hard(&cluster, &prod, &pool),
        );
        let assigned = jsonpath(
            &cluster,
            &["resourcepoolclaim", "moved", "-n", &prod],
            r#"{.status.conditions[?(@.type=="Assigned")].message}"#,
        );
        (gone && d.is_empty() && p.is_empty() && assigned == format!("ResourcePool {pool:?} not found"))
            .then_some(())
            .ok_or(format!("gone {gone}, dev {d:?}, prod {p:?}, {assigned}"))
    })
    .await;
    drop(bulkhead);
}
