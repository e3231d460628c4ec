//! Replication end to end: GlobalTenantResource and TenantResource copying into tenant namespaces.

use std::time::Duration;

use crate::harness::{Bulkhead, Cluster, eventually};

async fn start(cluster: &Cluster) -> Bulkhead {
    let lease = cluster.unique("e2e-rep-lease");
    let bulkhead = Bulkhead::start(cluster, &["--lease-namespace", "default", "--lease-name", &lease]);
    bulkhead.wait_ready().await;
    bulkhead
}

fn get(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.kubectl().run(args);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_global_tenant_resource_fills_selected_tenants_follows_its_source_and_prunes() {
    let cluster = Cluster::start().await;
    let (a, b) = (cluster.unique("e2e-rep-a"), cluster.unique("e2e-rep-b"));
    let platform = cluster.unique("e2e-platform");
    let gtr = cluster.unique("e2e-gtr");
    let alice = cluster.unique("alice");
    let bulkhead = start(&cluster).await;
    cluster.apply(&format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {platform}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: cluster-info, namespace: {platform}, labels: {{share: "yes"}}}}
data: {{region: eu-west-1}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: private, namespace: {platform}}}
data: {{secret: "no"}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {a}, labels: {{e2e-replication: {gtr}-in}}}}
spec: {{owners: [{{kind: User, name: {alice}}}]}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {b}, labels: {{e2e-replication: {gtr}-out}}}}
spec: {{owners: [{{kind: User, name: bob}}]}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {a}-one, labels: {{bulkhead.dev/tenant: {a}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {a}-two, labels: {{bulkhead.dev/tenant: {a}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {b}-one, labels: {{bulkhead.dev/tenant: {b}}}}}
"#
    ));
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: GlobalTenantResource
metadata: {{name: {gtr}}}
spec:
  # A selector no other tenant matches: the suite may share a real cluster.
  tenantSelector: {{matchLabels: {{e2e-replication: {gtr}-in}}}}
  resyncPeriod: 10m  # source edits must arrive through the source watch, not a resync
  resources:
  - additionalMetadata: {{labels: {{copied-by: platform}}}}
    namespacedItems:
    - {{apiVersion: v1, kind: ConfigMap, namespace: {platform}, selector: {{matchLabels: {{share: "yes"}}}}}}
    rawItems:
    - apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata: {{name: deny-all}}
      spec: {{podSelector: {{}}, policyTypes: [Ingress]}}
"#
    ));
    for ns in [format!("{a}-one"), format!("{a}-two")] {
        eventually(Duration::from_secs(20), || async {
            let cm = get(&cluster, &["get", "configmap", "cluster-info", "-n", &ns, "-o",
                "jsonpath={.data.region}|{.metadata.labels.copied-by}|{.metadata.labels.bulkhead\\.dev/replicated-by}|{.metadata.labels.bulkhead\\.dev/tenant}"]);
            let np = get(&cluster, &["get", "networkpolicy", "deny-all", "-n", &ns, "-o", "name"]);
            let want = format!("eu-west-1|platform|globaltenantresource..{gtr}|{a}");
            (cm == want && np == "networkpolicy.networking.k8s.io/deny-all")
                .then_some(())
                .ok_or(format!("{ns}: {cm:?} {np:?}"))
        })
        .await;
    }
    let b_ns = format!("{b}-one");
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "configmaps",
                "-n",
                &b_ns,
                "-l",
                "bulkhead.dev/replicated-by",
                "-o",
                "name"
            ]
        ),
        ""
    );
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "configmap",
                "private",
                "-n",
                &format!("{a}-one"),
                "-o",
                "name",
                "--ignore-not-found"
            ]
        ),
        ""
    );
    let status = get(
        &cluster,
        &[
            "get",
            "globaltenantresource",
            &gtr,
            "-o",
            "jsonpath={.status.conditions[0].status}|{.status.processedItems[*].kind}",
        ],
    );
    assert_eq!(status, "True|ConfigMap NetworkPolicy ConfigMap NetworkPolicy");
    let sample = format!(
        r#"bulkhead_replication_items{{kind="GlobalTenantResource",name="{gtr}",namespace="",state="applied"}}"#
    );
    assert_eq!(bulkhead.metric(&sample), Some(4.0));
    // The tenant's owner may edit its namespace's ConfigMaps, but not the copies.
    let a_one = format!("{a}-one");
    let k = cluster.kubectl_as(&alice, &["bulkhead.dev"]);
    eventually(Duration::from_secs(20), || async {
        let out = k.run(&["delete", "configmap", "cluster-info", "-n", &a_one]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "the owner deleted a replicated ConfigMap");
        let want = format!(
            "configmap `cluster-info` is replicated by `globaltenantresource..{gtr}` and cannot be deleted by tenant users"
        );
        // Until the owner's RoleBinding exists, RBAC refuses first.
        err.contains(&want).then_some(()).ok_or(err)
    })
    .await;

    // Drift is repaired: a copy deleted or edited by hand comes back as it was.
    cluster
        .kubectl()
        .ok(&["delete", "networkpolicy", "deny-all", "-n", &a_one]);
    cluster.kubectl().ok(&[
        "patch",
        "configmap",
        "cluster-info",
        "-n",
        &a_one,
        "--type=merge",
        "-p",
        r#"{"data":{"region":"tampered"}}"#,
    ]);
    eventually(Duration::from_secs(20), || async {
        let np = get(
            &cluster,
            &[
                "get",
                "networkpolicy",
                "deny-all",
                "-n",
                &a_one,
                "-o",
                "name",
                "--ignore-not-found",
            ],
        );
        let region = get(
            &cluster,
            &[
                "get",
                "configmap",
                "cluster-info",
                "-n",
                &a_one,
                "-o",
                "jsonpath={.data.region}",
            ],
        );
        (!np.is_empty() && region == "eu-west-1")
            .then_some(())
            .ok_or(format!("{np:?} {region:?}"))
    })
    .await;

    // The copies follow their source (at once: the source is watched).
    cluster.kubectl().ok(&[
        "patch",
        "configmap",
        "cluster-info",
        "-n",
        &platform,
        "--type=merge",
        "-p",
        r#"{"data":{"region":"us-east-2"}}"#,
    ]);
    eventually(Duration::from_secs(20), || async {
        let got = get(
            &cluster,
            &[
                "get",
                "configmap",
                "cluster-info",
                "-n",
                &format!("{a}-two"),
                "-o",
                "jsonpath={.data.region}",
            ],
        );
        (got == "us-east-2").then_some(()).ok_or(got)
    })
    .await;

    // A tenant that stops matching loses the copies; one that starts matching gets them.
    cluster.kubectl().ok(&[
        "label",
        "tenant",
        &a,
        &format!("e2e-replication={gtr}-out"),
        "--overwrite",
    ]);
    cluster.kubectl().ok(&[
        "label",
        "tenant",
        &b,
        &format!("e2e-replication={gtr}-in"),
        "--overwrite",
    ]);
    eventually(Duration::from_secs(20), || async {
        let gone = get(
            &cluster,
            &[
                "get",
                "configmaps,networkpolicies",
                "-n",
                &format!("{a}-one"),
                "-l",
                "bulkhead.dev/replicated-by",
                "-o",
                "name",
            ],
        );
        let arrived = get(
            &cluster,
            &[
                "get",
                "configmap",
                "cluster-info",
                "-n",
                &b_ns,
                "-o",
                "name",
                "--ignore-not-found",
            ],
        );
        (gone.is_empty() && !arrived.is_empty())
            .then_some(())
            .ok_or(format!("left in a: {gone:?}; in b: {arrived:?}"))
    })
    .await;

    // Deleting the resource prunes what it made (pruningOnDelete defaults to true).
    cluster
        .kubectl()
        .ok(&["delete", "globaltenantresource", &gtr, "--wait=false"]);
    eventually(Duration::from_secs(20), || async {
        let left = get(
            &cluster,
            &[
                "get",
                "configmaps,networkpolicies",
                "-n",
                &b_ns,
                "-l",
                "bulkhead.dev/replicated-by",
                "-o",
                "name",
            ],
        );
        let resource = get(
            &cluster,
            &[
                "get",
                "globaltenantresource",
                &gtr,
                "-o",
                "name",
                "--ignore-not-found",
            ],
        );
        (left.is_empty() && resource.is_empty())
            .then_some(())
            .ok_or(format!("{left:?} {resource:?}"))
    })
    .await;
    // The source is untouched.
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "configmap",
                "cluster-info",
                "-n",
                &platform,
                "-o",
                "jsonpath={.data.region}"
            ]
        ),
        "us-east-2"
    );
}

#[tokio::test]
async fn a_tenant_resource_writes_as_the_tenant_and_only_inside_it() {
    let cluster = Cluster::start().await;
    let (a, b) = (cluster.unique("e2e-tr-a"), cluster.unique("e2e-tr-b"));
    let free = cluster.unique("e2e-tr-free");
    let alice = cluster.unique("alice");
    let _bulkhead = start(&cluster).await;
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {a}}}
spec:
  owners: [{{kind: User, name: {alice}}}]
  additionalRoleBindings:
  - clusterRoleName: edit
    subjects: [{{kind: ServiceAccount, name: replicator, namespace: {a}-one}}]
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {b}}}
spec: {{owners: [{{kind: User, name: bob}}]}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {a}-one, labels: {{bulkhead.dev/tenant: {a}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {a}-two, labels: {{bulkhead.dev/tenant: {a}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {b}-one, labels: {{bulkhead.dev/tenant: {b}}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: b-secret-config, namespace: {b}-one}}
data: {{token: b-only}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {free}}}
"#
    ));
    let a_one = format!("{a}-one");
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: TenantResource
metadata: {{name: shared, namespace: {a_one}}}
spec:
  serviceAccount: {{name: replicator}}
  resyncPeriod: 1s
  resources:
  - rawItems:
    - {{apiVersion: v1, kind: ConfigMap, metadata: {{name: app-config, namespace: {b}-one}}, data: {{mode: tenant}}}}
    - {{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRoleBinding, metadata: {{name: {a}-escalate}}, roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}, subjects: [{{kind: ServiceAccount, name: replicator, namespace: {a_one}}}]}}
    namespacedItems:
    - {{apiVersion: v1, kind: ConfigMap, namespace: {b}-one}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: TenantResource
metadata: {{name: stray, namespace: {free}}}
spec:
  resources:
  - rawItems: [{{apiVersion: v1, kind: ConfigMap, metadata: {{name: stray}}, data: {{x: "1"}}}}]
"#
    ));
    // Lands in both of tenant A's namespaces (the raw item's namespace is ignored), never in B's.
    for ns in [a_one.clone(), format!("{a}-two")] {
        eventually(Duration::from_secs(20), || async {
            let got = get(
                &cluster,
                &[
                    "get",
                    "configmap",
                    "app-config",
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.data.mode}",
                ],
            );
            (got == "tenant").then_some(()).ok_or(format!("{ns}: {got:?}"))
        })
        .await;
    }
    let b_one = format!("{b}-one");
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "configmap",
                "app-config",
                "-n",
                &b_one,
                "-o",
                "name",
                "--ignore-not-found"
            ]
        ),
        ""
    );
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "clusterrolebinding",
                &format!("{a}-escalate"),
                "-o",
                "name",
                "--ignore-not-found"
            ]
        ),
        ""
    );
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "configmap",
                "b-secret-config",
                "-n",
                &a_one,
                "-o",
                "name",
                "--ignore-not-found"
            ]
        ),
        ""
    );
    // Only the TenantResource's ServiceAccount writes the copies; the tenant's owner cannot edit them.
    let k = cluster.kubectl_as(&alice, &["bulkhead.dev"]);
    eventually(Duration::from_secs(20), || async {
        let out = k.run(&["label", "configmap", "app-config", "-n", &a_one, "edited=yes"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "the owner changed a replicated ConfigMap");
        err.contains(&format!("is replicated by `tenantresource.{a_one}.shared`"))
            .then_some(())
            .ok_or(err)
    })
    .await;
    // The status says why the rest was not done.
    eventually(Duration::from_secs(20), || async {
        let status = get(
            &cluster,
            &[
                "get",
                "tenantresource",
                "shared",
                "-n",
                &a_one,
                "-o",
                "jsonpath={.status.conditions[0].status}|{.status.conditions[0].message}",
            ],
        );
        let ok = status.starts_with("False|")
            && status.contains(
                "ClusterRoleBinding is cluster-scoped: replication writes only into tenant namespaces",
            )
            && status.contains(&format!("cannot read v1 ConfigMap in namespace `{b_one}`"));
        ok.then_some(()).ok_or(status)
    })
    .await;
    eventually(Duration::from_secs(20), || async {
        let status = get(
            &cluster,
            &[
                "get",
                "tenantresource",
                "stray",
                "-n",
                &free,
                "-o",
                "jsonpath={.status.conditions[0].message}",
            ],
        );
        status
            .contains(&format!("namespace `{free}` is not part of a tenant"))
            .then_some(())
            .ok_or(status)
    })
    .await;
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "configmap",
                "stray",
                "-n",
                &free,
                "-o",
                "name",
                "--ignore-not-found"
            ]
        ),
        ""
    );
    // Deleted while Bulkhead runs, a TenantResource goes once Bulkhead has pruned its copies. Left for
    // the end of the test, its finalizer would outlive Bulkhead and keep its namespace Terminating on a
    // real API server (docs/replication.md says so for uninstalling).
    for (name, ns) in [("shared", &a_one), ("stray", &free)] {
        cluster
            .kubectl()
            .ok(&["delete", "tenantresource", name, "-n", ns, "--timeout=30s"]);
    }
}
