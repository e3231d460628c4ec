//! The controller turns a Tenant into its namespaces' objects, keeps them that way, and is idle when
//! nothing changes.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::harness::{Bulkhead, Cluster, event_notes, eventually};

/// (cluster role, subject kind, subject name) of every RoleBinding Bulkhead made in a namespace.
pub(crate) async fn bindings(cluster: &Cluster, ns: &str) -> BTreeSet<(String, String, String)> {
    let api: Api<RoleBinding> = Api::namespaced(cluster.admin.clone(), ns);
    let list = api
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=bulkhead"))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|b| b.owner_references().iter().any(|r| r.kind == "Tenant"))
        .flat_map(|b| {
            b.subjects
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(move |s| (b.role_ref.name.clone(), s.kind, s.name))
        })
        .collect()
}

fn set(items: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| ((*a).into(), (*b).into(), (*c).into()))
        .collect()
}

/// What a jsonpath reads of a Tenant ([`READY`] reads its `Ready` condition as `status|message`).
fn tenant_reads(cluster: &Cluster, tenant: &str, what: &str) -> String {
    cluster
        .kubectl()
        .ok(&["get", "tenant", tenant, "-o", &format!("jsonpath={what}")])
}

const READY: &str = "{.status.conditions[0].status}|{.status.conditions[0].message}";

/// A cluster, a unique tenant name from `prefix`, and Bulkhead running the controller, ready.
async fn with_controller(prefix: &str) -> (Cluster, String, Bulkhead) {
    let cluster = Cluster::start().await;
    let tenant = cluster.unique(prefix);
    let lease = cluster.unique(&format!("{prefix}-lease"));
    let bulkhead = Bulkhead::start(
        &cluster,
        &["--lease-namespace", "default", "--lease-name", &lease],
    );
    bulkhead.wait_ready().await;
    (cluster, tenant, bulkhead)
}

#[tokio::test]
async fn a_tenant_becomes_its_namespaces_objects_stays_so_and_is_idle_when_nothing_changes() {
    let (cluster, tenant, _bulkhead) = with_controller("e2e-ctl").await;
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {tenant}}}
spec:
  owners:
  - {{kind: User, name: alice}}
  - {{kind: Group, name: {tenant}-devs, clusterRoles: [edit]}}
  additionalRoleBindings:
  - clusterRoleName: view
    subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: Group, name: {tenant}-auditors}}]
  namespaceOptions: {{quota: 3}}
  resourceQuotas:
    scope: Namespace
    items: [{{hard: {{pods: "5"}}}}]
  limitRanges:
    items: [{{limits: [{{type: Container, default: {{cpu: 500m}}}}]}}]
  networkPolicies:
    items: [{{podSelector: {{}}, policyTypes: [Ingress]}}]
"#
    ));
    let namespaces = [format!("{tenant}-a"), format!("{tenant}-b")];
    for ns in &namespaces {
        // Until the admission webhook assigns namespaces, the administrator labels them.
        cluster.apply(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{bulkhead.dev/tenant: {tenant}}}}}\n"));
    }
    let expected = set(&[
        ("admin", "User", "alice"),
        ("bulkhead-namespace-deleter", "User", "alice"),
        ("edit", "Group", &format!("{tenant}-devs")),
        ("view", "Group", &format!("{tenant}-auditors")),
    ]);
    for ns in &namespaces {
        eventually(Duration::from_secs(20), || async {
            let got = bindings(&cluster, ns).await;
            (got == expected).then_some(()).ok_or(format!("{ns}: {got:?}"))
        })
        .await;
        // Kinds are applied one after another: wait for the last of them too.
        eventually(Duration::from_secs(20), || async {
            let quota: Api<ResourceQuota> = Api::namespaced(cluster.admin.clone(), ns);
            let lr: Api<LimitRange> = Api::namespaced(cluster.admin.clone(), ns);
            let np: Api<NetworkPolicy> = Api::namespaced(cluster.admin.clone(), ns);
            let name = format!("bulkhead-{tenant}-0");
            let q = quota.get(&name).await.map_err(|e| format!("quota: {e}"))?;
            lr.get(&name).await.map_err(|e| format!("limit range: {e}"))?;
            np.get(&name).await.map_err(|e| format!("network policy: {e}"))?;
            assert_eq!(q.spec.unwrap().hard.unwrap()["pods"].0, "5");
            assert_eq!(q.metadata.owner_references.unwrap()[0].kind, "Tenant");
            Ok::<(), String>(())
        })
        .await;
    }
    let status = |out: String| out;
    eventually(Duration::from_secs(10), || async {
        let s = status(cluster.kubectl().ok(&[
            "get",
            "tenant",
            &tenant,
            "-o",
            "jsonpath={.status.size} {.status.conditions[0].status}",
        ]));
        (s == "2 True").then_some(()).ok_or(s)
    })
    .await;

    // Drift: a managed RoleBinding deleted by hand comes back; one Bulkhead did not make is left alone,
    // even when it carries Bulkhead's labels (only what the Tenant owns is ever deleted).
    let ns = &namespaces[0];
    cluster.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: mine, namespace: {ns}, labels: {{app.kubernetes.io/managed-by: bulkhead, bulkhead.dev/tenant: {tenant}}}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}}\nsubjects: [{{kind: User, name: carol}}]\n"
    ));
    let rbs: Api<RoleBinding> = Api::namespaced(cluster.admin.clone(), ns);
    let managed = rbs
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=bulkhead"))
        .await
        .unwrap();
    let victim = managed
        .items
        .iter()
        .find(|b| b.role_ref.name == "edit")
        .unwrap()
        .name_any();
    rbs.delete(&victim, &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(20), || async {
        rbs.get(&victim)
            .await
            .map(|_| ())
            .map_err(|e| format!("{victim} not back: {e}"))
    })
    .await;
    assert!(
        rbs.get("mine").await.is_ok(),
        "an unrelated RoleBinding is left alone"
    );
    // Drift by an edit: a managed quota changed by hand goes back to the Tenant's limit (the watch event
    // of someone else's write is never taken for the echo of Bulkhead's own).
    let quotas: Api<ResourceQuota> = Api::namespaced(cluster.admin.clone(), ns);
    let quota_name = format!("bulkhead-{tenant}-0");
    quotas
        .patch(
            &quota_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"hard": {"pods": "99"}}})),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(20), || async {
        let pods = quotas
            .get(&quota_name)
            .await
            .map(|q| q.spec.unwrap().hard.unwrap()["pods"].0.clone())
            .map_err(|e| e.to_string())?;
        (pods == "5").then_some(()).ok_or(format!("pods {pods}"))
    })
    .await;

    // Edits converge: drop an owner, change the quota, remove the network policy.
    let tenants: Api<bulkhead_api::Tenant> = Api::all(cluster.admin.clone());
    let edit = json!({"spec": {
        "owners": [{"kind": "User", "name": "alice"}],
        "resourceQuotas": {"scope": "Namespace", "items": [{"hard": {"pods": "7"}}]},
        "networkPolicies": {"items": []},
    }});
    tenants
        .patch(&tenant, &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    let expected = set(&[
        ("admin", "User", "alice"),
        ("bulkhead-namespace-deleter", "User", "alice"),
        ("view", "Group", &format!("{tenant}-auditors")),
    ]);
    for ns in &namespaces {
        eventually(Duration::from_secs(20), || async {
            let got = bindings(&cluster, ns).await;
            let quota: Api<ResourceQuota> = Api::namespaced(cluster.admin.clone(), ns);
            let pods = quota
                .get(&format!("bulkhead-{tenant}-0"))
                .await
                .map(|q| q.spec.unwrap().hard.unwrap()["pods"].0.clone());
            let np: Api<NetworkPolicy> = Api::namespaced(cluster.admin.clone(), ns);
            let policies = np
                .list(&ListParams::default().labels("app.kubernetes.io/managed-by=bulkhead"))
                .await
                .unwrap()
                .items
                .len();
            (got == expected && pods.as_deref().ok() == Some("7") && policies == 0)
                .then_some(())
                .ok_or(format!("{ns}: {got:?}, pods {pods:?}, {policies} policies"))
        })
        .await;
    }

    // Idle means idle: once the status reports the current generation, nothing Bulkhead manages changes.
    eventually(Duration::from_secs(20), || async {
        let t = tenants.get(&tenant).await.map_err(|e| e.to_string())?;
        let observed = t.status.as_ref().and_then(|s| s.observed_generation);
        (observed == t.metadata.generation)
            .then_some(())
            .ok_or(format!("observed {observed:?} of {:?}", t.metadata.generation))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snapshot = || async {
        let mut versions = vec![tenants.get(&tenant).await.unwrap().resource_version()];
        for ns in &namespaces {
            let rbs: Api<RoleBinding> = Api::namespaced(cluster.admin.clone(), ns);
            let quotas: Api<ResourceQuota> = Api::namespaced(cluster.admin.clone(), ns);
            versions.extend(
                rbs.list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .iter()
                    .map(|o| o.resource_version()),
            );
            versions.extend(
                quotas
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .iter()
                    .map(|o| o.resource_version()),
            );
        }
        versions
    };
    // Lease renewals are leader election's writes, not the controller's.
    let controller_writes = |t: &bulkhead_testkit::TestServer| {
        t.writes()
            .iter()
            .filter(|((_, resource), _)| !resource.starts_with("leases."))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let writes_before = cluster.testkit().map(controller_writes);
    let before = snapshot().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(snapshot().await, before, "objects changed while nothing happened");
    if let Some(t) = cluster.testkit() {
        assert_eq!(
            Some(controller_writes(t)),
            writes_before,
            "the controller wrote while idle: {:?}",
            t.writes()
        );
    }
}

#[tokio::test]
async fn an_owner_that_is_not_a_valid_subject_is_reported_in_status_and_as_an_event() {
    let cluster = Cluster::start().await;
    let tenant = cluster.unique("e2e-bad");
    let lease = cluster.unique("e2e-bad-lease");
    // Such Tenants are refused at the door now (the CRD's rules, see webhook.rs); the controller must
    // still report one that got in before an upgrade brought the rules.
    cluster.install_crds(false);
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {tenant}}}\nspec:\n  owners: [{{kind: User, name: alice}}, {{kind: ServiceAccount, name: robot}}]\n---\napiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {tenant}-re}}\nspec:\n  owners: [{{kind: User, name: alice}}]\n  containerRegistries: {{allowedRegex: '([a-z'}}\n"
    ));
    cluster.install_crds(true);
    let bulkhead = Bulkhead::start(
        &cluster,
        &["--lease-namespace", "default", "--lease-name", &lease],
    );
    bulkhead.wait_ready().await;
    cluster.apply(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {tenant}-a, labels: {{bulkhead.dev/tenant: {tenant}}}}}\n"));
    let message =
        "owner \"robot\" is a ServiceAccount but not named system:serviceaccount:<namespace>:<name>";
    eventually(Duration::from_secs(20), || async {
        let got = tenant_reads(&cluster, &tenant, READY);
        (got == format!("False|{message}")).then_some(()).ok_or(got)
    })
    .await;
    // What admission refuses (here a regex that does not compile) is reported too: such a Tenant can be
    // applied while the webhook is down, since the tenants webhook fails open.
    eventually(Duration::from_secs(20), || async {
        let got = tenant_reads(&cluster, &format!("{tenant}-re"), READY);
        (got.starts_with("False|containerRegistries.allowedRegex: invalid regular expression `([a-z`"))
            .then_some(())
            .ok_or(got)
    })
    .await;
    cluster
        .kubectl()
        .ok(&["delete", "tenant", &format!("{tenant}-re")]);
    // The valid owner still gets its bindings.
    eventually(Duration::from_secs(10), || async {
        let got = bindings(&cluster, &format!("{tenant}-a")).await;
        (got.len() == 2).then_some(()).ok_or(format!("{got:?}"))
    })
    .await;
    eventually(Duration::from_secs(10), || async {
        let notes = event_notes(&cluster, &tenant, "InvalidSpec").await?;
        notes
            .first()
            .map(|note| assert_eq!(note, message))
            .ok_or_else(|| "no InvalidSpec event yet".to_owned())
    })
    .await;
}

/// A tenant of many namespaces is compared only where something happened: a namespace provisioned and
/// left alone is settled, and relabelling it later (into an `additionalMetadataList` selector and out
/// again) still reaches it, as does an edit by hand of one of its objects.
#[tokio::test]
async fn a_settled_namespace_still_follows_its_labels_and_its_objects() {
    let (cluster, tenant, _bulkhead) = with_controller("e2e-settle").await;
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {tenant}}}
spec:
  owners: [{{kind: User, name: alice}}]
  namespaceOptions:
    additionalMetadataList:
    - namespaceSelector: {{matchLabels: {{env: prod}}}}
      annotations: {{example.com/tier: gold}}
  limitRanges:
    items: [{{limits: [{{type: Container, default: {{cpu: 500m}}}}]}}]
"#
    ));
    // More namespaces than the controller provisions at once.
    let names: Vec<String> = (0..20).map(|i| format!("{tenant}-{i}")).collect();
    let mut manifest = String::new();
    for ns in &names {
        manifest.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{bulkhead.dev/tenant: {tenant}}}}}\n"
        ));
    }
    cluster.apply(&manifest);
    let limit_name = format!("bulkhead-{tenant}-0");
    for ns in &names {
        let api: Api<LimitRange> = Api::namespaced(cluster.admin.clone(), ns);
        eventually(Duration::from_secs(30), || async {
            api.get(&limit_name)
                .await
                .map(|_| ())
                .map_err(|e| format!("{ns}: {e}"))
        })
        .await;
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cluster.admin.clone());
    let tier = |ns: k8s_openapi::api::core::v1::Namespace| ns.annotations().get("example.com/tier").cloned();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let target = &names[17];
    assert_eq!(tier(namespaces.get(target).await.unwrap()), None);
    namespaces
        .patch(
            target,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"env": "prod"}}})),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(20), || async {
        let got = tier(namespaces.get(target).await.map_err(|e| e.to_string())?);
        (got.as_deref() == Some("gold"))
            .then_some(())
            .ok_or(format!("tier {got:?}"))
    })
    .await;
    namespaces
        .patch(
            target,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"env": null}}})),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(20), || async {
        let got = tier(namespaces.get(target).await.map_err(|e| e.to_string())?);
        got.is_none().then_some(()).ok_or(format!("tier {got:?}"))
    })
    .await;
    // An edit by hand of a settled namespace's object is put back.
    let other = &names[3];
    let limits: Api<LimitRange> = Api::namespaced(cluster.admin.clone(), other);
    limits
        .patch(
            &limit_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"limits": [{"type": "Container", "default": {"cpu": "2"}}]}})),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(20), || async {
        let cpu = limits
            .get(&limit_name)
            .await
            .map_err(|e| e.to_string())?
            .spec
            .and_then(|s| s.limits.into_iter().next())
            .and_then(|l| l.default)
            .and_then(|d| d.get("cpu").map(|q| q.0.clone()));
        (cpu.as_deref() == Some("500m"))
            .then_some(())
            .ok_or(format!("cpu {cpu:?}"))
    })
    .await;
    // Every namespace keeps its objects: none was pruned for being settled.
    for ns in &names {
        let api: Api<LimitRange> = Api::namespaced(cluster.admin.clone(), ns);
        assert!(api.get(&limit_name).await.is_ok(), "{ns} lost its limit range");
    }
}

/// A Tenant's `defaultNamespaces` are created as the tenant's (labels, owner reference, the owners'
/// bindings), created again when deleted, never taken from another tenant or from nobody, never
/// deleted when taken off the list, and held to the namespace quota at admission.
#[tokio::test]
async fn default_namespaces_are_made_for_the_tenant_and_never_taken_or_deleted() {
    let (cluster, tenant, _bulkhead) = with_controller("e2e-dflt").await;
    let dev = format!("{tenant}-dev");
    let taken = format!("{tenant}-taken");
    cluster.clean_up(&["namespace", &dev]);
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {taken}, labels: {{keep: me}}}}\n"
    ));
    let spec = |entries: &str| {
        format!(
            r#"apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {tenant}}}
spec:
  owners: [{{kind: User, name: alice}}]
  namespaceOptions:
    quota: 3
    additionalMetadata: {{labels: {{team: {tenant}}}}}
    defaultNamespaces: {entries}
"#
        )
    };
    cluster.apply(&spec(&format!(
        "[{{name: {dev}, labels: {{env: dev}}, annotations: {{contact: ops}}}}, {{name: {taken}}}]"
    )));
    let kubectl = cluster.kubectl();
    let shape = "jsonpath={.metadata.labels.bulkhead\\.dev/tenant}|{.metadata.labels.env}|{.metadata.labels.team}|{.metadata.annotations.contact}|{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}";
    let want = format!("{tenant}|dev|{tenant}|ops|Tenant/{tenant}");
    eventually(Duration::from_secs(20), || async {
        let got = kubectl.run(&["get", "namespace", &dev, "-o", shape]);
        let got = String::from_utf8_lossy(&got.stdout).into_owned();
        (got == want).then_some(()).ok_or(got)
    })
    .await;
    // It is the tenant's like any other: its owner has its binding there.
    eventually(Duration::from_secs(20), || async {
        let got = bindings(&cluster, &dev).await;
        got.contains(&("admin".to_owned(), "User".to_owned(), "alice".to_owned()))
            .then_some(())
            .ok_or(format!("{got:?}"))
    })
    .await;
    // A namespace of that name that is nobody's stays nobody's, and the Tenant says so.
    let taken_message =
        format!("namespace `{taken}` exists and belongs to no tenant: Bulkhead does not take it");
    eventually(Duration::from_secs(20), || async {
        let got = tenant_reads(&cluster, &tenant, READY);
        got.starts_with("False|")
            .then_some(())
            .filter(|()| got.contains(&taken_message))
            .ok_or(got)
    })
    .await;
    assert_eq!(
        kubectl.ok(&["get", "namespace", &taken, "-o", "jsonpath={.metadata.labels}"]),
        r#"{"keep":"me","kubernetes.io/metadata.name":"REPLACE"}"#.replace("REPLACE", &taken)
    );
    assert!(
        kubectl
            .ok(&[
                "get",
                "namespace",
                &taken,
                "-o",
                "jsonpath={.metadata.ownerReferences}"
            ])
            .is_empty()
    );

    // Deleted, it comes back (empty: a new namespace).
    let uid = kubectl.ok(&["get", "namespace", &dev, "-o", "jsonpath={.metadata.uid}"]);
    kubectl.ok(&["delete", "namespace", &dev, "--wait=false"]);
    eventually(Duration::from_secs(60), || async {
        let out = kubectl.run(&[
            "get",
            "namespace",
            &dev,
            "-o",
            "jsonpath={.metadata.uid}|{.status.phase}",
        ]);
        let got = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success()
            && got != format!("{uid}|Active")
            && got.ends_with("|Active")
            && !got.starts_with(&uid))
        .then_some(())
        .ok_or(got)
    })
    .await;

    // Off the list, it stays, with its data, and still the tenant's.
    kubectl.ok(&["create", "configmap", "data", "-n", &dev, "--from-literal=k=v"]);
    cluster.apply(&spec("[]"));
    eventually(Duration::from_secs(20), || async {
        let got = tenant_reads(
            &cluster,
            &tenant,
            "{.status.conditions[0].status}|{.status.namespaces}",
        );
        (got == format!("True|[\"{dev}\"]")).then_some(()).ok_or(got)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        kubectl.ok(&["get", "configmap", "data", "-n", &dev, "-o", "jsonpath={.data.k}"]),
        "v"
    );
    assert_eq!(
        kubectl.ok(&[
            "get",
            "namespace",
            &dev,
            "-o",
            "jsonpath={.metadata.labels.bulkhead\\.dev/tenant}"
        ]),
        tenant
    );

    // More default namespaces than the quota is refused at the door, naming the field.
    let path = cluster.dir().join("over-quota.yaml");
    std::fs::write(
        &path,
        spec(&format!(
            "[{{name: {tenant}-a}}, {{name: {tenant}-b}}, {{name: {tenant}-c}}, {{name: {tenant}-d}}]"
        )),
    )
    .unwrap();
    let refused = kubectl.fails(&["apply", "-f", path.to_str().unwrap()]);
    assert!(
        refused.contains(
            "namespaceOptions.defaultNamespaces: 4 default namespaces are more than the namespace quota of 3"
        ),
        "{refused}"
    );
    assert!(
        kubectl
            .run(&["get", "namespace", &format!("{tenant}-a")])
            .status
            .code()
            != Some(0)
    );
}

/// #15.7: with `apiFairness`, every tenant is one flow of its tier's priority level. On the real API
/// server the answer to a tenant's request names the tenant's FlowSchema and its tier's level (the
/// `X-Kubernetes-PF-*` headers API Priority and Fairness sets); the testkit has no APF, so there the
/// objects alone are checked.
#[tokio::test]
async fn each_tenant_is_one_flow_of_its_tiers_priority_level() {
    use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
    let cluster = Cluster::start().await;
    if cluster.has_configuration() {
        return;
    }
    let plain = cluster.unique("e2e-fair");
    let gold = cluster.unique("e2e-fair-gold");
    let alice = cluster.unique("alice");
    let team = cluster.unique("gold-team");
    let (std_tier, gold_tier) = (cluster.unique("std"), cluster.unique("gold"));
    let config = |fairness: &str| {
        format!(
            "apiVersion: bulkhead.dev/v1alpha1\nkind: BulkheadConfiguration\nmetadata: {{name: default}}\nspec:\n  userGroups: [bulkhead.dev]\n{fairness}"
        )
    };
    let fair = format!(
        "  apiFairness:\n    matchingPrecedence: 4500\n    tiers:\n    - {{name: {std_tier}, nominalConcurrencyShares: 20}}\n    - {{name: {gold_tier}, nominalConcurrencyShares: 40, queues: 32, handSize: 4}}\n"
    );
    cluster.apply(&config(&fair));
    let ns = format!("{plain}-dev");
    cluster.clean_up(&["namespace", &ns]);
    for tier in [&std_tier, &gold_tier] {
        cluster.clean_up(&["prioritylevelconfiguration", &format!("bulkhead-tier-{tier}")]);
    }
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {plain}}}
spec:
  owners: [{{kind: User, name: {alice}}}]
  namespaceOptions: {{defaultNamespaces: [{{name: {ns}}}]}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {gold}, labels: {{bulkhead.dev/api-tier: {gold_tier}}}}}
spec:
  owners: [{{kind: Group, name: {team}}}, {{kind: Group, name: bulkhead.dev}}]
"#
    ));
    let lease = cluster.unique("e2e-fair-lease");
    let bulkhead = Bulkhead::start(
        &cluster,
        &["--lease-namespace", "default", "--lease-name", &lease],
    );
    bulkhead.wait_ready().await;

    let schemas: Api<FlowSchema> = Api::all(cluster.admin.clone());
    let levels: Api<PriorityLevelConfiguration> = Api::all(cluster.admin.clone());
    let shape = |f: &FlowSchema| {
        let spec = f.spec.clone().unwrap_or_default();
        let subjects: Vec<String> = spec
            .rules
            .unwrap_or_default()
            .iter()
            .flat_map(|r| r.subjects.iter())
            .map(|s| match (&s.user, &s.group, &s.service_account) {
                (Some(u), _, _) => format!("User {}", u.name),
                (_, Some(g), _) => format!("Group {}", g.name),
                (_, _, Some(sa)) => format!("ServiceAccount {}/{}", sa.namespace, sa.name),
                _ => "?".to_owned(),
            })
            .collect();
        format!(
            "{} @{} -> {}: {}",
            f.name_any(),
            spec.matching_precedence.unwrap_or_default(),
            spec.priority_level_configuration.name,
            subjects.join(", ")
        )
    };
    let plain_schema = format!("bulkhead-tenant-{plain}");
    let gold_schema = format!("bulkhead-tenant-{gold}");
    let want_plain =
        format!("{plain_schema} @4500 -> bulkhead-tier-{std_tier}: User {alice}, ServiceAccount {ns}/*");
    // The tenant user group holds every tenant's users: it is left out, and the Tenant says so.
    let want_gold = format!("{gold_schema} @4500 -> bulkhead-tier-{gold_tier}: Group {team}");
    eventually(Duration::from_secs(30), || async {
        let mut got = Vec::new();
        for name in [&plain_schema, &gold_schema] {
            let schema = schemas.get_opt(name).await.map_err(|e| e.to_string())?;
            got.push(schema.as_ref().map(shape).unwrap_or_default());
        }
        (got == [want_plain.clone(), want_gold.clone()])
            .then_some(())
            .ok_or(format!("{got:#?}"))
    })
    .await;
    let level = levels.get(&format!("bulkhead-tier-{gold_tier}")).await.unwrap();
    let limited = level.spec.unwrap().limited.unwrap();
    let queuing = limited.limit_response.unwrap().queuing.unwrap();
    assert_eq!(
        (
            limited.nominal_concurrency_shares,
            queuing.queues,
            queuing.hand_size
        ),
        (Some(40), Some(32), Some(4))
    );
    eventually(Duration::from_secs(20), || async {
        let notes = event_notes(&cluster, &gold, "FairShare").await?;
        notes
            .iter()
            .any(|n| n.contains("group \"bulkhead.dev\" holds users of other tenants too"))
            .then_some(())
            .ok_or(format!("{notes:?}"))
    })
    .await;

    if !cluster.is_testkit() {
        // The API server itself files the tenant's requests under its FlowSchema and level: the owner's,
        // a service account's of the tenant namespace, and a member's of the gold tenant's group.
        let uid = |name: &str| {
            let schemas = schemas.clone();
            let name = name.to_owned();
            async move { schemas.get(&name).await.unwrap().metadata.uid.unwrap() }
        };
        let level_uid = |name: String| {
            let levels = levels.clone();
            async move { levels.get(&name).await.unwrap().metadata.uid.unwrap() }
        };
        let sa = format!("system:serviceaccount:{ns}:default");
        let sa_groups = [
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{ns}"),
        ];
        let sa_groups: Vec<&str> = sa_groups.iter().map(String::as_str).collect();
        for (user, groups, schema, tier) in [
            (alice.as_str(), vec!["bulkhead.dev"], &plain_schema, &std_tier),
            (sa.as_str(), sa_groups.clone(), &plain_schema, &std_tier),
            (
                "carol",
                vec!["bulkhead.dev", team.as_str()],
                &gold_schema,
                &gold_tier,
            ),
        ] {
            let client = cluster.client_as(user, &groups).await;
            let request = http::Request::get(format!("/api/v1/namespaces/{ns}/configmaps"))
                .body(kube::client::Body::empty())
                .unwrap();
            let response = client.send(request).await.unwrap();
            let header = |h: &str| {
                response
                    .headers()
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            assert_eq!(
                header("X-Kubernetes-PF-FlowSchema-UID"),
                uid(schema).await,
                "{user}'s request was not filed under {schema}"
            );
            assert_eq!(
                header("X-Kubernetes-PF-PriorityLevel-UID"),
                level_uid(format!("bulkhead-tier-{tier}")).await,
                "{user}'s request was not in tier {tier}"
            );
        }
    }

    // Drift comes back; turning the feature off takes everything away.
    schemas
        .delete(&plain_schema, &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(20), || async {
        match schemas.get_opt(&plain_schema).await {
            Ok(Some(f)) if f.metadata.deletion_timestamp.is_none() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    cluster.apply(&config(""));
    eventually(Duration::from_secs(30), || async {
        let managed = ListParams::default().labels("app.kubernetes.io/managed-by=bulkhead");
        let left: Vec<String> = schemas
            .list(&managed)
            .await
            .unwrap()
            .items
            .iter()
            .map(ResourceExt::name_any)
            .chain(
                levels
                    .list(&managed)
                    .await
                    .unwrap()
                    .items
                    .iter()
                    .map(ResourceExt::name_any),
            )
            .filter(|n| {
                n.contains(&plain) || n.contains(&gold) || n.contains(&std_tier) || n.contains(&gold_tier)
            })
            .collect();
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    })
    .await;
    drop(bulkhead);
}

/// Strict RBAC: Tenants hand out only the configuration's bindableClusterRoles. A Tenant naming another
/// is refused at the door; one admitted before the list narrowed loses that binding and says why. (The
/// chart grants Bulkhead `bind` on the listed roles only: it could not bind another anyway.)
#[tokio::test]
async fn tenants_hand_out_only_the_bindable_cluster_roles() {
    let cluster = Cluster::start().await;
    if cluster.has_configuration() {
        return;
    }
    let tenant = cluster.unique("e2e-strict");
    let alice = cluster.unique("alice");
    let config = |roles: &str| {
        format!(
            "apiVersion: bulkhead.dev/v1alpha1\nkind: BulkheadConfiguration\nmetadata: {{name: default}}\nspec:\n  userGroups: [bulkhead.dev]\n  bindableClusterRoles: [{roles}]\n"
        )
    };
    cluster.apply(&config("admin, bulkhead-namespace-deleter, view"));
    let lease = cluster.unique("e2e-strict-lease");
    let bulkhead = Bulkhead::start(
        &cluster,
        &["--lease-namespace", "default", "--lease-name", &lease],
    );
    bulkhead.wait_ready().await;
    let spec = |roles: &str, extra: &str| {
        format!(
            "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {tenant}}}\nspec:\n  owners: [{{kind: User, name: {alice}, clusterRoles: [{roles}]}}]\n  additionalRoleBindings: [{{clusterRoleName: {extra}, subjects: [{{kind: Group, name: auditors, apiGroup: rbac.authorization.k8s.io}}]}}]\n  namespaceOptions: {{defaultNamespaces: [{{name: {tenant}-a}}]}}\n"
        )
    };
    cluster.clean_up(&["tenant", &tenant]);
    cluster.clean_up(&["namespace", &format!("{tenant}-a")]);
    let refused = |manifest: String| {
        let out = cluster
            .kubectl()
            .run_with_input(&["apply", "-f", "-"], Some(&manifest));
        assert!(
            !out.status.success(),
            "a Tenant handing out a role outside the list was admitted"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(spec("admin, cluster-admin", "view"));
    assert!(
        err.contains(&format!("tenant `{tenant}` is invalid: owners[0] (`{alice}`): cluster role `cluster-admin` is not one tenants may be given; the BulkheadConfiguration's bindableClusterRoles are admin, bulkhead-namespace-deleter, view")),
        "{err}"
    );
    let err = refused(spec("admin", "edit"));
    assert!(
        err.contains("additionalRoleBindings[0]: cluster role `edit` is not one tenants may be given"),
        "{err}"
    );
    cluster.apply(&spec("admin, bulkhead-namespace-deleter", "view"));
    let ns = format!("{tenant}-a");
    let roles = || async {
        bindings(&cluster, &ns)
            .await
            .into_iter()
            .map(|(role, _, _)| role)
            .collect::<BTreeSet<String>>()
    };
    eventually(Duration::from_secs(30), || async {
        let got = roles().await;
        (got == BTreeSet::from([
            "admin".to_owned(),
            "bulkhead-namespace-deleter".to_owned(),
            "view".to_owned(),
        ]))
        .then_some(())
        .ok_or(format!("{got:?}"))
    })
    .await;
    // The list narrows: `view` is no longer handed out, and the Tenant says why.
    cluster.apply(&config("admin, bulkhead-namespace-deleter"));
    eventually(Duration::from_secs(30), || async {
        let got = roles().await;
        let ready = tenant_reads(&cluster, &tenant, READY);
        let ok = got == BTreeSet::from(["admin".to_owned(), "bulkhead-namespace-deleter".to_owned()])
            && ready.starts_with("False|")
            && ready
                .contains("additionalRoleBindings[0]: cluster role `view` is not one tenants may be given");
        ok.then_some(()).ok_or(format!("{got:?} {ready}"))
    })
    .await;
}
