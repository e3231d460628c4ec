//! What only a real API server can show: the webhook configurations' CEL `matchConditions` while
//! Bulkhead is down, garbage collection of a deleted Tenant's namespaces and what is in them, and quota
//! usage kept by the quota controller. On the testkit these tests say so and return: it evaluates no
//! CEL and runs no kube-controller-manager (docs/testing.md lists both).

use std::time::Duration;

use crate::harness::{Bulkhead, Cluster, Kubectl, eventually};

const USERS: &str = "bulkhead.dev";

/// Returns true (after saying why) when the cluster is the testkit.
fn testkit_cannot(cluster: &Cluster, what: &str) -> bool {
    if cluster.is_testkit() {
        eprintln!("not run on the testkit: {what}; this test runs on the real control plane");
    }
    cluster.is_testkit()
}

async fn started(cluster: &Cluster) -> Bulkhead {
    let lease = cluster.unique("e2e-real-lease");
    let bulkhead = Bulkhead::start(cluster, &["--lease-namespace", "default", "--lease-name", &lease]);
    bulkhead.wait_ready().await;
    bulkhead
}

/// Creates a namespace as `k`, retrying while RBAC or the webhook is still being set up.
async fn create_namespace(k: &Kubectl, ns: &str) {
    k.ok_eventually(Duration::from_secs(20), &["create", "namespace", ns])
        .await;
}

#[tokio::test]
async fn with_bulkhead_down_only_tenant_users_are_refused() {
    let cluster = Cluster::start().await;
    if testkit_cannot(&cluster, "matchConditions (CEL) are not evaluated") {
        return;
    }
    let t = cluster.unique("e2e-outage");
    let alice = cluster.unique("alice");
    let ops = cluster.unique("e2e-ops");
    let mut bulkhead = started(&cluster).await;
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {t}}}
spec: {{owners: [{{kind: User, name: {alice}}}]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {ops}}}
rules:
- {{apiGroups: [""], resources: [namespaces, namespaces/status], verbs: [create, patch, delete, get]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {ops}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {ops}}}
subjects: [{{kind: Group, name: {ops}, apiGroup: rbac.authorization.k8s.io}}]
"#
    ));
    let owner = cluster.kubectl_as(&alice, &[USERS]);
    let first = format!("{t}-first");
    cluster.clean_up(&["namespace", &first]);
    create_namespace(&owner, &first).await;
    // A Tenant that must not be deleted, and the API server's own locks registered and in force.
    let keep = cluster.unique("e2e-outage-keep");
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {keep}}}\nspec: {{owners: [{{kind: User, name: {alice}-keep}}], preventDeletion: true}}\n"
    ));
    let configuration = bulkhead.webhook_configuration.clone().unwrap();
    for suffix in ["namespace-ownership", "tenant-prevent-deletion"] {
        let policy = format!("{configuration}-{suffix}");
        cluster
            .kubectl()
            .ok_eventually(
                Duration::from_secs(20),
                &["get", "validatingadmissionpolicybinding", &policy],
            )
            .await;
    }

    // Bulkhead goes away; its fail-closed webhook configurations stay registered.
    bulkhead.terminate();
    let admin = cluster.kubectl();
    // The webhook is really gone: a tenant user's request that must reach it fails closed.
    let second = format!("{t}-second");
    let err = owner.fails(&["create", "namespace", &second]);
    assert!(err.contains("failed calling webhook"), "{err}");

    // Administrators keep working, on namespaces (seen by the namespace webhook) and elsewhere.
    let unmanaged = cluster.unique("e2e-outage-free");
    cluster.clean_up(&["namespace", &unmanaged]);
    admin.ok(&["create", "namespace", &unmanaged]);
    admin.ok(&["label", "namespace", &unmanaged, "touched=by-admin"]);
    for ns in ["kube-system", "default"] {
        let cm = cluster.unique("e2e-outage-cm");
        admin.ok(&["create", "configmap", &cm, "-n", ns]);
        admin.ok(&["delete", "configmap", &cm, "-n", ns]);
    }
    // Callers who are not tenant users: a person outside the user groups, and kube-system's own
    // controllers (here the namespace controller, which deletes and finalizes namespaces).
    let operator = cluster.kubectl_as(&cluster.unique("ops-person"), &[&ops]);
    operator.ok(&["label", "namespace", &unmanaged, "ops=yes"]);
    let controller = cluster.kubectl_as(
        "system:serviceaccount:kube-system:namespace-controller",
        &["system:serviceaccounts", "system:serviceaccounts:kube-system"],
    );
    let doomed = cluster.unique("e2e-outage-doomed");
    admin.ok(&["create", "namespace", &doomed]);
    controller.ok(&["delete", "namespace", &doomed, "--wait=false"]);

    // Tenant users are refused, for new namespaces and for changes to their tenant's, even with the
    // RBAC to patch namespaces.
    let patcher = cluster.kubectl_as(&alice, &[USERS, &ops]);
    let err = patcher.fails(&["label", "namespace", &first, "touched=by-owner"]);
    assert!(err.contains("failed calling webhook"), "{err}");
    let labels = admin.ok(&["get", "namespace", &first, "-o", "jsonpath={.metadata.labels}"]);
    assert!(!labels.contains("by-owner"), "{labels}");
    let err = owner.fails(&["create", "namespace", &format!("{t}-third")]);
    assert!(err.contains("failed calling webhook"), "{err}");

    // The locks the API server keeps itself (ValidatingAdmissionPolicies) hold with Bulkhead gone:
    // a tenant user cannot move a namespace, through the object or its status.
    let by_policy = format!("ValidatingAdmissionPolicy '{configuration}-namespace-ownership'");
    let moved = format!(
        "namespace `{first}` belongs to tenant `{t}` and cannot be moved to tenant `{keep}`: the label `bulkhead.dev/tenant` is locked"
    );
    eventually(Duration::from_secs(20), || async {
        let out = patcher.run(&[
            "label",
            "namespace",
            &first,
            &format!("{}={keep}", "bulkhead.dev/tenant"),
            "--overwrite",
        ]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (err.contains(&by_policy) && err.contains(&moved))
            .then_some(())
            .ok_or(err)
    })
    .await;
    let err = patcher.fails(&[
        "patch",
        "namespace",
        &first,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"bulkhead.dev/tenant":null}}}"#,
    ]);
    assert!(
        err.contains(&by_policy)
            && err.contains(&format!("the label `bulkhead.dev/tenant` of namespace `{first}` cannot be removed (through `status`): it belongs to tenant `{t}`")),
        "{err}"
    );
    let err = patcher.fails(&[
        "patch",
        "namespace",
        &first,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/ownerReferences"}]"#,
    ]);
    assert!(
        err.contains(&by_policy)
            && err.contains(&format!("the ownerReference of namespace `{first}` to its Tenant `{t}` cannot be added, changed or removed")),
        "{err}"
    );
    let label = admin.ok(&[
        "get",
        "namespace",
        &first,
        "-o",
        "jsonpath={.metadata.labels.bulkhead\\.dev/tenant}",
    ]);
    assert_eq!(label, t);
    // Administrators keep applying Tenants (the tenants webhook fails open), and preventDeletion holds.
    let later = cluster.unique("e2e-outage-later");
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {later}}}\nspec: {{owners: [{{kind: User, name: {alice}-later}}]}}\n"
    ));
    let err = admin.fails(&["delete", "tenant", &keep]);
    assert!(
        err.contains(&format!(
            "tenant `{keep}` has preventDeletion set: set it to false before deleting the tenant"
        )),
        "{err}"
    );
    admin.ok(&["get", "tenant", &keep]);
    admin.ok(&[
        "patch",
        "tenant",
        &keep,
        "--type=merge",
        "-p",
        r#"{"spec":{"preventDeletion":false}}"#,
    ]);
    admin.ok(&["delete", "tenant", &keep, &later]);
}

#[tokio::test]
async fn a_deleted_tenant_takes_its_namespaces_and_their_contents() {
    let cluster = Cluster::start().await;
    if testkit_cannot(
        &cluster,
        "namespace contents are removed by kube-controller-manager",
    ) {
        return;
    }
    let t = cluster.unique("e2e-gc");
    let alice = cluster.unique("alice");
    let _bulkhead = started(&cluster).await;
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec: {{owners: [{{kind: User, name: {alice}}}]}}\n"
    ));
    let owner = cluster.kubectl_as(&alice, &[USERS]);
    let namespaces = [format!("{t}-a"), format!("{t}-b")];
    for ns in &namespaces {
        create_namespace(&owner, ns).await;
        owner.ok(&["create", "configmap", "data", "-n", ns, "--from-literal=k=v"]);
    }
    // The controller gave the owner their RoleBinding: the ConfigMap above was made with it.
    cluster.kubectl().ok(&["delete", "tenant", &t, "--wait=false"]);
    for ns in &namespaces {
        eventually(Duration::from_secs(60), || async {
            let out = cluster.kubectl().run(&["get", "namespace", ns, "-o", "name"]);
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            (!out.status.success() && err.contains("NotFound"))
                .then_some(())
                .ok_or_else(|| format!("namespace {ns} still exists: {err}"))
        })
        .await;
    }
    let out = cluster.kubectl().run(&["get", "tenant", &t]);
    assert!(!out.status.success(), "the tenant is gone too");
}

#[tokio::test]
async fn tenant_quota_usage_comes_from_the_quota_controller() {
    let cluster = Cluster::start().await;
    if testkit_cannot(&cluster, "only pod counts are accounted there, and synchronously") {
        return;
    }
    let t = cluster.unique("e2e-usage");
    let alice = cluster.unique("alice");
    let _bulkhead = started(&cluster).await;
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {t}}}
spec:
  owners: [{{kind: User, name: {alice}}}]
  resourceQuotas:
    items:
    - hard: {{configmaps: "5"}}
"#
    ));
    let owner = cluster.kubectl_as(&alice, &[USERS]);
    let ns = format!("{t}-a");
    create_namespace(&owner, &ns).await;
    // What the quota controller reports as used comes to `want` ConfigMaps.
    let used_becomes = |want: &'static str| {
        let (cluster, ns) = (&cluster, &ns);
        eventually(Duration::from_secs(30), move || async move {
            let used = cluster.kubectl().ok(&[
                "get",
                "resourcequota",
                "-n",
                ns,
                "-o",
                "jsonpath={.items[0].status.used.configmaps}",
            ]);
            (used == want).then_some(()).ok_or(format!("used: {used:?}"))
        })
    };
    // The namespace's kube-root-ca.crt counts too: the quota controller counts what is there.
    used_becomes("1").await;
    for i in 0..4 {
        owner
            .ok_eventually(
                Duration::from_secs(20),
                &["create", "configmap", &format!("c{i}"), "-n", &ns],
            )
            .await;
    }
    let err = owner.fails(&["create", "configmap", "one-too-many", "-n", &ns]);
    assert!(err.contains("exceeded quota"), "{err}");
    used_becomes("5").await;
}
