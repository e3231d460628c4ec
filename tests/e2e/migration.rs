//! Taking a cluster over from Capsule (docs/migrating.md), on a cluster in the state Capsule leaves
//! it: Capsule's Tenant CRD and Tenants, namespaces with Capsule's label and ownerReference, Capsule's
//! RoleBindings. Capsule itself does not run (its module is not served by the Go module proxy here, and
//! a migration starts by stopping its controller anyway); its objects are what Bulkhead must handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

use crate::harness::{Bulkhead, Cluster, eventually};

/// Capsule's Tenant CRD as far as the API server needs it to store Capsule's objects.
const CAPSULE_TENANT_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: tenants.capsule.clastix.io}
spec:
  group: capsule.clastix.io
  scope: Cluster
  names: {kind: Tenant, plural: tenants, singular: tenant, listKind: TenantList}
  versions:
  - name: v1beta2
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

fn get(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.kubectl().run(args);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether `user` may create ConfigMaps in `namespace`, as the API server's authorizer says.
async fn may_create(cluster: &Cluster, user: &str, namespace: &str) -> Option<bool> {
    let client = cluster.client_as(user, &["bulkhead.dev"]).await;
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client);
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_owned()),
                verb: Some("create".into()),
                resource: Some("configmaps".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = reviews.create(&PostParams::default(), &review).await.ok()?;
    answer.status.map(|s| s.allowed)
}

#[tokio::test]
async fn a_cluster_capsule_left_is_taken_over_with_no_access_lost_or_gained() {
    let cluster = Cluster::start().await;
    if cluster.has_configuration() {
        return;
    }
    let (t, other) = (cluster.unique("e2e-mig"), cluster.unique("e2e-mig-other"));
    let (alice, bob) = (cluster.unique("alice"), cluster.unique("bob"));
    cluster.apply(CAPSULE_TENANT_CRD);
    cluster.kubectl().ok(&[
        "wait",
        "--for=condition=Established",
        "crd/tenants.capsule.clastix.io",
        "--timeout=60s",
    ]);
    // Capsule's Tenants, as in its documentation.
    let capsule_tenant = |name: &str, owner: &str| {
        format!(
            "apiVersion: capsule.clastix.io/v1beta2\nkind: Tenant\nmetadata: {{name: {name}}}\nspec:\n  owners:\n  - {{kind: User, name: {owner}}}\n"
        )
    };
    cluster.apply(&capsule_tenant(&t, &alice));
    cluster.apply(&capsule_tenant(&other, &bob));
    let uid = |name: &str| {
        get(
            &cluster,
            &[
                "get",
                "tenants.capsule.clastix.io",
                name,
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        )
    };
    let (t_uid, other_uid) = (uid(&t), uid(&other));
    // What Capsule made: namespaces with its label and controller ownerReference, and a RoleBinding
    // giving the owner `admin` in each, owned by Capsule's Tenant.
    let capsule_namespace = |ns: &str, tenant: &str, tenant_uid: &str| {
        format!(
            r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels: {{capsule.clastix.io/tenant: {tenant}}}
  ownerReferences:
  - {{apiVersion: capsule.clastix.io/v1beta2, kind: Tenant, name: {tenant}, uid: {tenant_uid}, controller: true, blockOwnerDeletion: true}}
"#
        )
    };
    let capsule_binding = |ns: &str, tenant: &str, tenant_uid: &str, owner: &str| {
        format!(
            r#"apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: capsule-{tenant}-0-admin
  namespace: {ns}
  labels: {{capsule.clastix.io/tenant: {tenant}}}
  ownerReferences:
  - {{apiVersion: capsule.clastix.io/v1beta2, kind: Tenant, name: {tenant}, uid: {tenant_uid}, controller: true, blockOwnerDeletion: true}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {owner}}}]
"#
        )
    };
    let (a, b, x) = (format!("{t}-a"), format!("{t}-b"), format!("{other}-x"));
    let forged = format!("{t}-forged");
    for (ns, tenant, tenant_uid, owner) in [
        (&a, &t, &t_uid, &alice),
        (&b, &t, &t_uid, &alice),
        (&x, &other, &other_uid, &bob),
    ] {
        cluster.apply(&capsule_namespace(ns, tenant, tenant_uid));
        cluster.apply(&capsule_binding(ns, tenant, tenant_uid, owner));
        cluster.clean_up(&["namespace", ns]);
    }
    // A namespace with Capsule's label and no ownerReference is no claim.
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {forged}, labels: {{capsule.clastix.io/tenant: {t}}}}}\n"
    ));
    cluster.clean_up(&["namespace", &forged]);

    // Access, watched for the whole migration: alice keeps `admin` in her namespaces and gets nothing
    // in bob's or in the forged one; bob gets nothing in alice's.
    let expected: Vec<(String, String, bool)> = vec![
        (alice.clone(), a.clone(), true),
        (alice.clone(), b.clone(), true),
        (alice.clone(), x.clone(), false),
        (alice.clone(), forged.clone(), false),
        (bob.clone(), a.clone(), false),
        (bob.clone(), x.clone(), true),
    ];
    for (user, ns, want) in &expected {
        assert_eq!(
            may_create(&cluster, user, ns).await,
            Some(*want),
            "{user} in {ns} before the migration"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let deviations = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let checks = {
        let (stop, deviations) = (stop.clone(), deviations.clone());
        let cluster = &cluster;
        let expected = expected.clone();
        async move {
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) {
                for (user, ns, want) in &expected {
                    let got = may_create(cluster, user, ns).await;
                    if got != Some(*want) {
                        deviations
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(format!("{user} in {ns}: {got:?}, wanted {want}"));
                    }
                }
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            rounds
        }
    };
    let migrate = async {
        // 1. Bulkhead beside Capsule, Capsule's Tenants converted.
        let config = |phase: &str| {
            format!(
                "apiVersion: bulkhead.dev/v1alpha1\nkind: BulkheadConfiguration\nmetadata: {{name: default}}\nspec:\n  userGroups: [bulkhead.dev]\n  capsuleMigration: {phase}\n"
            )
        };
        cluster.apply(&config("Adopt"));
        let lease = cluster.unique("e2e-mig-lease");
        let bulkhead = Bulkhead::start(
            &cluster,
            &["--lease-namespace", "default", "--lease-name", &lease],
        );
        bulkhead.wait_ready().await;
        let source = std::env::temp_dir().join(format!("{}.yaml", cluster.unique("e2e-capsule-tenant")));
        std::fs::write(&source, capsule_tenant(&t, &alice)).expect("a temporary file");
        let converted = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .args(["convert", source.to_str().unwrap_or_default()])
            .output()
            .expect("bulkhead convert runs");
        let _ = std::fs::remove_file(&source);
        assert!(
            converted.status.success(),
            "{}",
            String::from_utf8_lossy(&converted.stderr)
        );
        let converted = String::from_utf8_lossy(&converted.stdout).into_owned();
        assert!(
            converted.contains("apiVersion: bulkhead.dev/v1alpha1"),
            "{converted}"
        );
        cluster.apply(&converted);

        // 2. Adopt: the namespaces become the Bulkhead Tenant's; Capsule's reference stays the
        //    controller one, Bulkhead's sits beside it.
        let state = |ns: &str| {
            get(
                &cluster,
                &[
                    "get",
                    "namespace",
                    ns,
                    "-o",
                    "jsonpath={.metadata.labels.bulkhead\\.dev/tenant}|{range .metadata.ownerReferences[*]}{.apiVersion}={.controller};{end}|{.status.phase}",
                ],
            )
        };
        let both_become = |want: String| {
            let state = &state;
            let (a, b) = (&a, &b);
            async move {
                for ns in [a, b] {
                    eventually(Duration::from_secs(30), || async {
                        let got = state(ns);
                        (got == want).then_some(()).ok_or(got)
                    })
                    .await;
                }
            }
        };
        both_become(format!(
            "{t}|capsule.clastix.io/v1beta2=true;bulkhead.dev/v1alpha1=false;|Active"
        ))
        .await;
        eventually(Duration::from_secs(30), || async {
            let got = get(
                &cluster,
                &[
                    "get",
                    "rolebindings",
                    "-n",
                    &a,
                    "-l",
                    &format!("bulkhead.dev/tenant={t}"),
                    "-o",
                    "jsonpath={.items[*].subjects[*].name}",
                ],
            );
            got.contains(&alice).then_some(()).ok_or(got)
        })
        .await;
        let status = get(
            &cluster,
            &[
                "get",
                "tenants.bulkhead.dev",
                &t,
                "-o",
                "jsonpath={.status.namespaces[*]}",
            ],
        );
        assert_eq!(status, format!("{a} {b}"));
        // Another tenant's namespace and the forged one are left alone.
        for ns in [&x, &forged] {
            let got = state(ns);
            assert!(got.starts_with('|'), "{ns} was adopted: {got}");
        }

        // 3. Complete: Capsule's references go, Bulkhead's becomes the controller.
        cluster.apply(&config("Complete"));
        both_become(format!("{t}|bulkhead.dev/v1alpha1=true;|Active")).await;

        // 4. Capsule's Tenant is deleted (with its dependents, as uninstalling Capsule does): the
        //    namespaces stay, and so does alice's access, through Bulkhead's RoleBindings.
        cluster.kubectl().ok(&[
            "delete",
            "tenants.capsule.clastix.io",
            &t,
            "--cascade=background",
            "--wait=true",
        ]);
        if !cluster.is_testkit() {
            // The garbage collector (kube-controller-manager) removes what Capsule's Tenant owned.
            eventually(Duration::from_secs(60), || async {
                let left = get(
                    &cluster,
                    &[
                        "get",
                        "rolebinding",
                        &format!("capsule-{t}-0-admin"),
                        "-n",
                        &a,
                        "--ignore-not-found",
                        "-o",
                        "name",
                    ],
                );
                left.is_empty().then_some(()).ok_or(left)
            })
            .await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        for ns in [&a, &b] {
            assert_eq!(
                state(ns),
                format!("{t}|bulkhead.dev/v1alpha1=true;|Active"),
                "{ns} after Capsule's Tenant went"
            );
        }
        drop(bulkhead);
    };
    let (rounds, ()) = tokio::join!(checks, async {
        migrate.await;
        stop.store(true, Ordering::Relaxed);
    });
    let deviations = deviations
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert!(rounds > 3, "the access checks ran {rounds} times");
    assert!(
        deviations.is_empty(),
        "access changed during the migration: {deviations:#?}"
    );
}
