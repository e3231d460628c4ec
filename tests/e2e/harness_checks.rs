//! The harness acts as the users it says it acts as, on the testkit and on a real cluster alike.

use bulkhead_api::Tenant;
use kube::Api;
use kube::api::ListParams;

use crate::harness::Cluster;

#[tokio::test]
async fn users_are_who_the_harness_says_and_rbac_applies_to_them() {
    let cluster = Cluster::start().await;
    let user = cluster.unique("e2e-nobody");

    // The administrator may list tenants; a user nobody granted anything may not.
    cluster.kubectl().ok(&["get", "tenants"]);
    let denied = cluster
        .kubectl_as(&user, &["e2e-group"])
        .fails(&["get", "tenants"]);
    assert!(
        denied.contains(&format!("User \"{user}\" cannot list resource \"tenants\" in API group \"bulkhead.dev\" at the cluster scope")),
        "{denied}"
    );
    let as_user: Api<Tenant> = Api::all(cluster.client_as(&user, &["e2e-group"]).await);
    let err = as_user.list(&ListParams::default()).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 403), "{err}");

    // A grant through a group binding applies to the impersonated group membership.
    let binding = cluster.unique("e2e-view-tenants");
    cluster.apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {binding}}}
rules: [{{apiGroups: [bulkhead.dev], resources: [tenants], verbs: [get, list]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {binding}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {binding}}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: Group, name: {binding}}}]
"#
    ));
    let allowed = cluster.client_as(&user, &[&binding]).await;
    crate::harness::eventually(std::time::Duration::from_secs(10), || async {
        Api::<Tenant>::all(allowed.clone())
            .list(&ListParams::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(
        cluster
            .kubectl_as(&user, &[&binding])
            .ok(&["auth", "can-i", "list", "tenants.bulkhead.dev"])
            .trim(),
        "yes"
    );
}
