//! Admission decisions, one behaviour per test; each security invariant of DESIGN.md is here by name.

use std::collections::BTreeMap;

use bulkhead_api::config::BulkheadConfigurationSpec;
use bulkhead_api::{Tenant, labels};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::{Value, json};

use super::workload::{BETA_STORAGE_CLASS, INGRESS_CLASS_ANNOTATION};
use super::*;
use crate::identity::{Caller, CallerClass};

fn tenant(yaml: &str) -> Tenant {
    let mut t: Tenant = serde_saphyr::from_str(yaml).unwrap();
    let name = t.metadata.name.clone().unwrap();
    t.metadata.uid = Some(format!("uid-{name}"));
    t
}

fn obj<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn namespace_obj(name: &str, labels: Value) -> Namespace {
    obj(json!({"metadata": {"name": name, "labels": labels}}))
}

fn tenant_namespace(name: &str, tenant: &str) -> Namespace {
    obj(
        json!({"metadata": {"name": name, "labels": {labels::TENANT: tenant},
        "ownerReferences": [{"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "name": tenant,
            "uid": format!("uid-{tenant}"), "controller": true, "blockOwnerDeletion": true}]}}),
    )
}

/// Two tenants: `solar` (owned by alice and the group `solar-devs`) and `solar-eu` (owned by alice),
/// and `wind` owned by bob. `solar` has most rules set.
fn world() -> Snapshot {
    let mut s = Snapshot::new();
    s.add_tenant(tenant(
        r#"
metadata: {name: solar}
spec:
  owners: [{kind: User, name: alice}, {kind: Group, name: solar-devs}]
  namespaceOptions:
    quota: 3
    forbiddenLabels: {denied: [team], deniedRegex: "^internal\\."}
    forbiddenAnnotations: {denied: [billing]}
    additionalMetadata: {labels: {cost-center: solar}}
  nodeSelector: {pool: solar}
  containerRegistries: {allowed: [docker.io, quay.io], allowedRegex: "\\.solar\\.corp$"}
  imagePullPolicies: [Always, IfNotPresent]
  priorityClasses: {allowed: [high], default: normal}
  runtimeClasses: {allowed: [gvisor]}
  storageClasses: {allowed: [silver, bronze], default: bronze}
  serviceOptions:
    allowedServices: {nodePort: false, externalName: false, loadBalancer: true}
    externalIPs: {allowed: [10.20.0.0/16]}
    forbiddenLabels: {denied: [exposed]}
    additionalMetadata: {labels: {stamped: "yes"}, annotations: {owner: solar}}
  podOptions:
    additionalMetadata: {labels: {tenant-pod: solar}}
  ingressOptions:
    allowedClasses: {allowed: [nginx], default: nginx}
    allowedHostnames: {allowed: [solar.example.com], allowedRegex: "^.*\\.solar\\.example\\.com$"}
    hostnameCollisionScope: Cluster
"#,
    ));
    s.add_tenant(tenant(
        "metadata: {name: solar-eu}\nspec: {owners: [{kind: User, name: alice}]}",
    ));
    s.add_tenant(tenant(
        "metadata: {name: wind}\nspec: {owners: [{kind: User, name: bob}], ingressOptions: {hostnameCollisionScope: Tenant}}",
    ));
    for (ns, t) in [
        ("solar-one", "solar"),
        ("solar-two", "solar"),
        ("wind-one", "wind"),
        ("wind-two", "wind"),
    ] {
        s.add_namespace(&tenant_namespace(ns, t));
    }
    s.add_namespace(&namespace_obj("kube-system", json!({})));
    s.add_class(
        ClassKind::Priority,
        "normal",
        ClassInfo {
            labels: BTreeMap::new(),
            value: Some(1000),
        },
    );
    s
}

fn config() -> BulkheadConfigurationSpec {
    BulkheadConfigurationSpec {
        user_groups: vec!["tenants".into()],
        protected_namespace_regex: Some("^(kube|bulkhead)-".into()),
        ..Default::default()
    }
}

struct Who {
    caller: Caller,
    class: CallerClass,
}

fn user(name: &str) -> Who {
    Who {
        caller: Caller::new(name, ["tenants"]),
        class: CallerClass::TenantUser,
    }
}

fn admin() -> Who {
    Who {
        caller: Caller::new("root", ["system:masters"]),
        class: CallerClass::Administrator,
    }
}

fn request<'a>(who: &'a Who, config: &'a BulkheadConfigurationSpec, op: Operation) -> Request<'a> {
    Request {
        operation: op,
        subresource: None,
        caller: &who.caller,
        class: who.class,
        config,
        mutating: true,
        own_identity: "system:serviceaccount:bulkhead-system:bulkhead",
    }
}

fn create_ns(s: &Snapshot, who: &Who, ns: &Namespace) -> Verdict {
    let c = config();
    namespace(&request(who, &c, Operation::Create), s, Some(ns), None)
}

fn update_ns(s: &Snapshot, who: &Who, sub: Option<&str>, old: &Namespace, new: &Namespace) -> Verdict {
    let c = config();
    let mut r = request(who, &c, Operation::Update);
    r.subresource = sub;
    namespace(&r, s, Some(new), Some(old))
}

fn denied_with(v: &Verdict, needle: &str) {
    let message = v
        .message()
        .unwrap_or_else(|| panic!("allowed, expected a denial with {needle:?}: {v:?}"));
    assert!(
        message.contains(needle),
        "{message:?} does not contain {needle:?}"
    );
}

fn patch_of(v: &Verdict) -> &[Value] {
    match v {
        Verdict::Allow(p) => p,
        Verdict::Deny(d) => panic!("denied: {}", d.message),
    }
}

/// Applies a verdict's patch to `object`, as the API server would.
fn patched<T: serde::Serialize + serde::de::DeserializeOwned>(object: &T, v: &Verdict) -> T {
    let mut value = serde_json::to_value(object).unwrap();
    for op in patch_of(v) {
        let path = op["path"].as_str().unwrap();
        let parts: Vec<String> = path[1..]
            .split('/')
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        let mut target = &mut value;
        for part in &parts[..parts.len() - 1] {
            target = target.get_mut(part.as_str()).unwrap();
        }
        let last = parts.last().unwrap();
        match (target, last.as_str()) {
            (Value::Array(a), "-") => a.push(op["value"].clone()),
            (Value::Object(m), key) => {
                m.insert(key.to_owned(), op["value"].clone());
            }
            other => panic!("cannot apply {op} at {other:?}"),
        }
    }
    serde_json::from_value(value).unwrap()
}

// ---- namespace assignment ----

#[test]
fn the_single_owned_tenant_gets_the_namespace_with_label_metadata_and_owner_reference() {
    let s = world();
    let bob = user("bob");
    let ns = namespace_obj("team-a", json!({"app": "x"}));
    let v = create_ns(&s, &bob, &ns);
    let ns = patched(&ns, &v);
    let l = ns.metadata.labels.unwrap();
    assert_eq!(l[labels::TENANT], "wind");
    assert_eq!(l["app"], "x");
    let refs = ns.metadata.owner_references.unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(
        (refs[0].name.as_str(), refs[0].uid.as_str(), refs[0].controller),
        ("wind", "uid-wind", Some(true))
    );
}

#[test]
fn several_owned_tenants_pick_the_longest_prefix_or_deny() {
    let s = world();
    let alice = user("alice");
    let eu = patched(
        &namespace_obj("solar-eu-web", json!({})),
        &create_ns(&s, &alice, &namespace_obj("solar-eu-web", json!({}))),
    );
    assert_eq!(eu.metadata.labels.unwrap()[labels::TENANT], "solar-eu");
    let plain = patched(
        &namespace_obj("solar-web", json!({})),
        &create_ns(&s, &alice, &namespace_obj("solar-web", json!({}))),
    );
    let l = plain.metadata.labels.unwrap();
    assert_eq!(l[labels::TENANT], "solar");
    assert_eq!(l["cost-center"], "solar", "managed metadata is stamped at once");
    assert_eq!(
        plain.metadata.annotations.unwrap()[labels::NODE_SELECTOR_ANNOTATION],
        "pool=solar"
    );
    denied_with(
        &create_ns(&s, &alice, &namespace_obj("web", json!({}))),
        "you own several tenants (`solar`, `solar-eu`)",
    );
    // The label decides among owned tenants, whatever the name.
    let labelled = namespace_obj("web", json!({labels::TENANT: "solar-eu"}));
    assert!(create_ns(&s, &alice, &labelled).is_allowed());
}

#[test]
fn a_user_with_no_tenant_is_told_so() {
    let s = world();
    let v = create_ns(&s, &user("mallory"), &namespace_obj("m-one", json!({})));
    denied_with(
        &v,
        "no tenant assigned to you: `mallory` (groups `tenants`) is not an owner of any Tenant",
    );
}

#[test]
fn group_membership_makes_an_owner() {
    let s = world();
    let dev = Who {
        caller: Caller::new("carol", ["tenants", "solar-devs"]),
        class: CallerClass::TenantUser,
    };
    let ns = namespace_obj("anything", json!({}));
    assert_eq!(
        patched(&ns, &create_ns(&s, &dev, &ns)).metadata.labels.unwrap()[labels::TENANT],
        "solar"
    );
}

#[test]
fn a_label_naming_a_tenant_the_caller_does_not_own_is_denied() {
    let s = world();
    let v = create_ns(
        &s,
        &user("bob"),
        &namespace_obj("x", json!({labels::TENANT: "solar"})),
    );
    denied_with(
        &v,
        "you are not an owner of tenant `solar`: you may create namespaces in `wind`",
    );
}

#[test]
fn the_namespace_over_quota_is_denied() {
    let mut s = world();
    let alice = user("alice");
    assert!(create_ns(&s, &alice, &namespace_obj("solar-three", json!({}))).is_allowed());
    s.add_namespace(&tenant_namespace("solar-three", "solar"));
    denied_with(
        &create_ns(&s, &alice, &namespace_obj("solar-four", json!({}))),
        "namespace `solar-four` is over the namespace quota of tenant `solar`: it has 3 of 3 namespaces",
    );
}

#[test]
fn forced_prefix_globally_or_per_tenant() {
    let s = world();
    let mut c = config();
    c.force_tenant_prefix = true;
    let bob = user("bob");
    let v = namespace(
        &request(&bob, &c, Operation::Create),
        &s,
        Some(&namespace_obj("prod", json!({}))),
        None,
    );
    denied_with(
        &v,
        "namespace `prod` must be named `wind-<name>`: tenant `wind` requires its prefix",
    );
    let v = namespace(
        &request(&bob, &c, Operation::Create),
        &s,
        Some(&namespace_obj("wind-prod", json!({}))),
        None,
    );
    assert!(v.is_allowed());
    // A tenant's own false wins over the global true.
    let mut s2 = world();
    s2.add_tenant(tenant(
        "metadata: {name: wind}\nspec: {owners: [{kind: User, name: bob}], forceTenantPrefix: false}",
    ));
    let v = namespace(
        &request(&bob, &c, Operation::Create),
        &s2,
        Some(&namespace_obj("prod", json!({}))),
        None,
    );
    assert!(v.is_allowed());
}

#[test]
fn protected_names_are_denied_to_tenant_users_but_not_administrators() {
    let s = world();
    denied_with(
        &create_ns(&s, &user("bob"), &namespace_obj("kube-extra", json!({}))),
        "namespace name `kube-extra` is protected: it matches `^(kube|bulkhead)-`",
    );
    assert_eq!(
        create_ns(&s, &admin(), &namespace_obj("kube-extra", json!({}))),
        Verdict::allow()
    );
}

#[test]
fn forbidden_namespace_metadata_is_denied_and_managed_keys_are_exempt() {
    let s = world();
    let alice = user("alice");
    denied_with(
        &create_ns(&s, &alice, &namespace_obj("solar-x", json!({"team": "a"}))),
        "label `team` is forbidden on the namespaces of tenant `solar` (forbidden: `team`; keys matching `^internal\\.`)",
    );
    denied_with(
        &create_ns(
            &s,
            &alice,
            &namespace_obj("solar-x", json!({"internal.solar/x": "1"})),
        ),
        "label `internal.solar/x` is forbidden",
    );
    let managed = namespace_obj("solar-x", json!({"cost-center": "other"}));
    assert!(create_ns(&s, &alice, &managed).is_allowed());
    let old = tenant_namespace("solar-one", "solar");
    let mut new = old.clone();
    new.metadata.annotations = Some([("billing".to_owned(), "x".to_owned())].into());
    denied_with(
        &update_ns(&s, &alice, None, &old, &new),
        "annotation `billing` is forbidden",
    );
}

#[test]
fn the_node_selector_annotation_is_locked() {
    let s = world();
    let alice = user("alice");
    let mut old = tenant_namespace("solar-one", "solar");
    old.metadata.annotations = Some(
        [(
            labels::NODE_SELECTOR_ANNOTATION.to_owned(),
            "pool=solar".to_owned(),
        )]
        .into(),
    );
    let mut new = old.clone();
    new.metadata.annotations =
        Some([(labels::NODE_SELECTOR_ANNOTATION.to_owned(), "pool=gpu".to_owned())].into());
    denied_with(
        &update_ns(&s, &alice, None, &old, &new),
        "annotation `scheduler.alpha.kubernetes.io/node-selector` of namespace `solar-one` is set by Bulkhead",
    );
    new.metadata.annotations = None;
    denied_with(&update_ns(&s, &alice, None, &old, &new), "is set by Bulkhead");
}

#[test]
fn required_metadata_must_be_present_and_match() {
    let mut s = world();
    s.add_tenant(tenant(
        "metadata: {name: wind}\nspec: {owners: [{kind: User, name: bob}], namespaceOptions: {requiredMetadata: {labels: {env: '^(dev|prod)$'}}}}",
    ));
    let bob = user("bob");
    denied_with(
        &create_ns(&s, &bob, &namespace_obj("wind-x", json!({}))),
        "namespace `wind-x` needs the label `env` with a value matching `^(dev|prod)$`",
    );
    denied_with(
        &create_ns(&s, &bob, &namespace_obj("wind-x", json!({"env": "qa"}))),
        "needs the label `env`",
    );
    assert!(create_ns(&s, &bob, &namespace_obj("wind-x", json!({"env": "prod"}))).is_allowed());
}

#[test]
fn administrators_create_unmanaged_namespaces_or_assign_one_explicitly() {
    let s = world();
    assert_eq!(
        create_ns(&s, &admin(), &namespace_obj("infra", json!({}))),
        Verdict::allow()
    );
    let ns = namespace_obj("solar-admin", json!({labels::TENANT: "solar"}));
    let v = create_ns(&s, &admin(), &ns);
    assert_eq!(
        patched(&ns, &v).metadata.owner_references.unwrap()[0].name,
        "solar"
    );
    denied_with(
        &create_ns(
            &s,
            &admin(),
            &namespace_obj("x", json!({labels::TENANT: "ghost"})),
        ),
        "names tenant `ghost`, which does not exist",
    );
}

// ---- the advisories: ownership can never move ----

#[test]
fn cve_2022_46167_the_owner_reference_cannot_be_removed_or_changed() {
    let s = world();
    let alice = user("alice");
    let old = tenant_namespace("solar-one", "solar");
    let mut removed = old.clone();
    removed.metadata.owner_references = None;
    denied_with(
        &update_ns(&s, &alice, None, &old, &removed),
        "the ownerReference of namespace `solar-one` to its Tenant `solar` cannot be added, changed or removed",
    );
    let mut changed = old.clone();
    if let Some(r) = changed.metadata.owner_references.as_mut() {
        r[0].uid = "uid-wind".into();
        r[0].name = "wind".into();
    }
    assert!(!update_ns(&s, &alice, None, &old, &changed).is_allowed());
    let mut added = old.clone();
    if let Some(r) = added.metadata.owner_references.as_mut() {
        let mut extra = r[0].clone();
        extra.name = "solar-eu".into();
        extra.uid = "uid-solar-eu".into();
        extra.controller = None;
        r.push(extra);
    }
    assert!(!update_ns(&s, &alice, None, &old, &added).is_allowed());
    // An unrelated change passes.
    let mut fine = old.clone();
    fine.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("app".into(), "web".into());
    assert_eq!(update_ns(&s, &alice, None, &old, &fine), Verdict::allow());
}

#[test]
fn cve_2024_39690_an_unmanaged_namespace_cannot_be_patched_into_a_tenant() {
    let s = world();
    let alice = user("alice");
    let old = namespace_obj("kube-system", json!({}));
    let by_label = namespace_obj("kube-system", json!({labels::TENANT: "solar"}));
    denied_with(
        &update_ns(&s, &alice, None, &old, &by_label),
        "namespace `kube-system` is not part of a tenant and cannot be moved into tenant `solar`",
    );
    let mut by_reference = old.clone();
    by_reference.metadata.owner_references = tenant_namespace("x", "solar").metadata.owner_references;
    assert!(!update_ns(&s, &alice, None, &old, &by_reference).is_allowed());
}

#[test]
fn cve_2025_55205_the_tenant_label_cannot_be_changed_injected_or_removed() {
    let s = world();
    let alice = user("alice");
    let old = tenant_namespace("solar-one", "solar");
    let mut moved = old.clone();
    moved.metadata.labels = Some([(labels::TENANT.to_owned(), "solar-eu".to_owned())].into());
    denied_with(
        &update_ns(&s, &alice, None, &old, &moved),
        "namespace `solar-one` belongs to tenant `solar` and cannot be moved to tenant `solar-eu`",
    );
    let mut removed = old.clone();
    removed.metadata.labels = Some(BTreeMap::new());
    denied_with(
        &update_ns(&s, &alice, None, &old, &removed),
        "the label `bulkhead.dev/tenant` of namespace `solar-one` cannot be removed",
    );
    // Creating a namespace labelled into someone else's tenant is the injection at create time.
    denied_with(
        &create_ns(&s, &alice, &namespace_obj("x", json!({labels::TENANT: "wind"}))),
        "you are not an owner of tenant `wind`",
    );
    // ...and an ownerReference smuggled in at create time.
    let mut smuggled = namespace_obj("solar-new", json!({}));
    smuggled.metadata.owner_references = tenant_namespace("x", "wind").metadata.owner_references;
    denied_with(
        &create_ns(&s, &alice, &smuggled),
        "cannot carry an ownerReference to Tenant `wind`",
    );
}

#[test]
fn capsule_s_label_and_owner_references_may_name_only_the_namespace_s_own_tenant() {
    // Adoption from Capsule reads them (docs/migrating.md): a tenant user writing another tenant's
    // name could queue a namespace for adoption into that tenant. Naming its own tenant is what
    // Capsule's webhook writes while both run, so that stays allowed.
    let s = world();
    let alice = user("alice");
    let capsule_ref = |tenant: &str| {
        json!([{"apiVersion": "capsule.clastix.io/v1beta2", "kind": "Tenant", "name": tenant,
            "uid": "c-1", "controller": true}])
    };
    let with = |ns: &Namespace, label: Option<&str>, owner: Option<&str>| {
        let mut out = ns.clone();
        if let Some(l) = label {
            out.metadata
                .labels
                .get_or_insert_default()
                .insert("capsule.clastix.io/tenant".into(), l.into());
        }
        if let Some(o) = owner {
            let extra: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> =
                obj(capsule_ref(o));
            out.metadata
                .owner_references
                .get_or_insert_default()
                .extend(extra);
        }
        out
    };
    let old = tenant_namespace("solar-one", "solar");
    denied_with(
        &update_ns(&s, &alice, None, &old, &with(&old, Some("wind"), None)),
        "namespace `solar-one` of tenant `solar` cannot carry the label `capsule.clastix.io/tenant` or an ownerReference to a Capsule Tenant naming another tenant",
    );
    denied_with(
        &update_ns(&s, &alice, Some("status"), &old, &with(&old, None, Some("wind"))),
        "naming another tenant (through `status`)",
    );
    assert!(update_ns(&s, &alice, None, &old, &with(&old, Some("solar"), Some("solar"))).is_allowed());
    // At creation too; a namespace Capsule's webhook marked for the same tenant is fine.
    let fresh = namespace_obj("solar-new", json!({}));
    denied_with(
        &create_ns(&s, &alice, &with(&fresh, Some("wind"), None)),
        "cannot carry the label `capsule.clastix.io/tenant`",
    );
    assert!(create_ns(&s, &alice, &with(&fresh, Some("solar"), Some("solar"))).is_allowed());
    // A namespace no Bulkhead tenant holds yet keeps its Capsule claim as it is.
    let capsule_only = with(&namespace_obj("legacy", json!({})), Some("solar"), Some("solar"));
    denied_with(
        &update_ns(
            &s,
            &alice,
            None,
            &capsule_only,
            &with(&namespace_obj("legacy", json!({})), Some("wind"), Some("wind")),
        ),
        "cannot be changed: they decide which tenant adopts it",
    );
    // Administrators are not limited.
    assert!(update_ns(&s, &admin(), None, &old, &with(&old, Some("wind"), None)).is_allowed());
}

#[test]
fn cve_2026_30963_status_and_finalize_subresources_get_the_same_checks() {
    let s = world();
    let alice = user("alice");
    let old = tenant_namespace("solar-one", "solar");
    let mut moved = old.clone();
    moved.metadata.labels = Some([(labels::TENANT.to_owned(), "solar-eu".to_owned())].into());
    moved.metadata.owner_references = None;
    for sub in ["status", "finalize"] {
        let v = update_ns(&s, &alice, Some(sub), &old, &moved);
        denied_with(&v, &format!("(through `{sub}`)"));
    }
    let unmanaged = namespace_obj("default", json!({}));
    let into = namespace_obj("default", json!({labels::TENANT: "solar"}));
    assert!(!update_ns(&s, &alice, Some("finalize"), &unmanaged, &into).is_allowed());
}

#[test]
fn a_tenant_user_cannot_touch_another_tenants_namespace_but_administrators_can() {
    let s = world();
    let old = tenant_namespace("wind-one", "wind");
    let mut new = old.clone();
    new.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("x".into(), "y".into());
    denied_with(
        &update_ns(&s, &user("alice"), None, &old, &new),
        "namespace `wind-one` belongs to tenant `wind`, of which you are not an owner",
    );
    let c = config();
    let del = namespace(
        &request(&user("alice"), &c, Operation::Delete),
        &s,
        None,
        Some(&old),
    );
    assert!(!del.is_allowed());
    assert!(
        namespace(
            &request(&user("bob"), &c, Operation::Delete),
            &s,
            None,
            Some(&old)
        )
        .is_allowed()
    );
    let mut moved = old.clone();
    moved.metadata.labels = Some([(labels::TENANT.to_owned(), "solar".to_owned())].into());
    moved.metadata.owner_references = None;
    assert_eq!(update_ns(&s, &admin(), None, &old, &moved), Verdict::allow());
}

#[test]
fn a_cordoned_tenant_freezes_its_namespaces_and_their_contents() {
    let mut s = world();
    s.add_tenant(tenant(
        "metadata: {name: wind}\nspec: {owners: [{kind: User, name: bob}], cordoned: true}",
    ));
    let bob = user("bob");
    denied_with(
        &create_ns(&s, &bob, &namespace_obj("wind-3", json!({}))),
        "tenant `wind` is cordoned",
    );
    let old = tenant_namespace("wind-one", "wind");
    let c = config();
    assert!(!namespace(&request(&bob, &c, Operation::Delete), &s, None, Some(&old)).is_allowed());
    let t = s.tenant("wind").unwrap();
    denied_with(
        &cordoned(&request(&bob, &c, Operation::Create), &t, "deployment `web`"),
        "deployment `web` cannot be created: tenant `wind` is cordoned",
    );
    let controller = Who {
        caller: Caller::new(
            "system:serviceaccount:kube-system:replicaset-controller",
            ["system:serviceaccounts"],
        ),
        class: CallerClass::Unmanaged,
    };
    assert!(cordoned(&request(&controller, &c, Operation::Delete), &t, "pod `web-1`").is_allowed());
}

// ---- workloads ----

fn pod_obj(spec: Value) -> Pod {
    obj(json!({"metadata": {"name": "web", "namespace": "solar-one"}, "spec": spec}))
}

fn decide_pod(p: &Pod, op: Operation, old: Option<&Pod>) -> Verdict {
    let s = world();
    let c = config();
    let who = user("alice");
    let t = s.tenant("solar").unwrap();
    pod(&request(&who, &c, op), &s, &t, p, old)
}

#[test]
fn pods_need_fully_qualified_images_from_allowed_registries() {
    let ok = pod_obj(
        json!({"containers": [{"name": "a", "image": "quay.io/org/app:1.0"}],
        "initContainers": [{"name": "i", "image": "builds.solar.corp/init:2", "imagePullPolicy": "IfNotPresent"}]}),
    );
    assert!(decide_pod(&ok, Operation::Create, None).is_allowed());
    denied_with(
        &decide_pod(
            &pod_obj(json!({"containers": [{"name": "a", "image": "ghcr.io/evil/miner:1"}]})),
            Operation::Create,
            None,
        ),
        "registry `ghcr.io` of image `ghcr.io/evil/miner:1` (container `a` in pod `web`) is not allowed in tenant `solar`: allowed are `docker.io`, `quay.io` or names matching `\\.solar\\.corp$`",
    );
    denied_with(
        &decide_pod(
            &pod_obj(json!({"containers": [{"name": "a", "image": "nginx"}]})),
            Operation::Create,
            None,
        ),
        "image `nginx` of container `a` in pod `web` does not name its registry",
    );
    let init = pod_obj(json!({"containers": [{"name": "a", "image": "quay.io/a:1"}],
        "initContainers": [{"name": "i", "image": "ghcr.io/x:1"}]}));
    assert!(!decide_pod(&init, Operation::Create, None).is_allowed());
    // An ephemeral container added later (pods/ephemeralcontainers) is checked too.
    let mut debug = ok.clone();
    debug.spec.as_mut().unwrap().ephemeral_containers = Some(vec![obj(
        json!({"name": "dbg", "image": "ghcr.io/tools/debug:1"}),
    )]);
    denied_with(
        &decide_pod(&debug, Operation::Update, Some(&ok)),
        "registry `ghcr.io`",
    );
}

#[test]
fn pull_policies_are_checked_with_the_kubernetes_default_in_mind() {
    let never =
        pod_obj(json!({"containers": [{"name": "a", "image": "quay.io/a:1", "imagePullPolicy": "Never"}]}));
    denied_with(
        &decide_pod(&never, Operation::Create, None),
        "image pull policy `Never` of container `a` in pod `web` is not allowed in tenant `solar`: allowed are `Always`, `IfNotPresent`",
    );
}

#[test]
fn pod_priority_and_runtime_classes_are_checked_and_defaults_injected_with_metadata() {
    let plain = pod_obj(json!({"containers": [{"name": "a", "image": "quay.io/a:1"}]}));
    let v = decide_pod(&plain, Operation::Create, None);
    let p = patched(&plain, &v);
    let spec = p.spec.unwrap();
    assert_eq!(spec.priority_class_name.as_deref(), Some("normal"));
    assert_eq!(spec.priority, Some(1000));
    assert_eq!(spec.runtime_class_name, None, "no runtime default configured");
    assert_eq!(p.metadata.labels.unwrap()["tenant-pod"], "solar");
    let bad = pod_obj(
        json!({"priorityClassName": "system-cluster-critical", "containers": [{"name": "a", "image": "quay.io/a:1"}]}),
    );
    denied_with(
        &decide_pod(&bad, Operation::Create, None),
        "priority class `system-cluster-critical` of pod `web` is not allowed in tenant `solar`: allowed are `high`, `normal`",
    );
    let runc =
        pod_obj(json!({"runtimeClassName": "runc", "containers": [{"name": "a", "image": "quay.io/a:1"}]}));
    denied_with(
        &decide_pod(&runc, Operation::Create, None),
        "runtime class `runc` of pod `web` is not allowed",
    );
}

/// A pod decided in `solar` (node selector `pool=solar`) in the mutating or the validating call, with
/// nodes `solar-1` (`pool=solar`) and `shared-1` (`pool=shared`) known.
fn place_pod(p: &Pod, op: Operation, old: Option<&Pod>, mutating: bool) -> Verdict {
    let mut s = world();
    for (name, pool) in [("solar-1", "solar"), ("shared-1", "shared")] {
        s.add_node(&obj(
            json!({"metadata": {"name": name, "labels": {"pool": pool, "zone": "a"}}}),
        ));
    }
    let c = config();
    let who = user("alice");
    let t = s.tenant("solar").unwrap();
    let mut r = request(&who, &c, op);
    r.mutating = mutating;
    pod(&r, &s, &t, p, old)
}

fn affinity(expressions: Value) -> Value {
    json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": expressions}]}}})
}

#[test]
fn pods_get_the_tenants_node_selector_without_the_pod_node_selector_plugin() {
    let image = json!([{"name": "a", "image": "quay.io/a:1"}]);
    let plain = pod_obj(json!({"containers": image}));
    let v = place_pod(&plain, Operation::Create, None, true);
    let placed = patched(&plain, &v);
    assert_eq!(
        placed.spec.as_ref().unwrap().node_selector,
        Some(BTreeMap::from([("pool".to_owned(), "solar".to_owned())]))
    );
    // The pod's own labels are kept beside the tenant's.
    let zoned = pod_obj(json!({"containers": image, "nodeSelector": {"zone": "a"}}));
    let zoned_placed = patched(&zoned, &place_pod(&zoned, Operation::Create, None, true));
    assert_eq!(zoned_placed.spec.unwrap().node_selector.unwrap().len(), 2);
    // The validating call sees the mutated pod and lets it be; a pod the mutation missed is refused.
    assert!(place_pod(&placed, Operation::Create, None, false).is_allowed());
    denied_with(
        &place_pod(&plain, Operation::Create, None, false),
        "pod `web` has no node label `pool=solar` in its nodeSelector: tenant `solar` runs its pods only on nodes labelled `pool=solar`",
    );
}

#[test]
fn pods_asking_for_other_nodes_are_denied_naming_the_label() {
    let image = json!([{"name": "a", "image": "quay.io/a:1"}]);
    let other = pod_obj(json!({"containers": image, "nodeSelector": {"pool": "shared"}}));
    for mutating in [true, false] {
        denied_with(
            &place_pod(&other, Operation::Create, None, mutating),
            "pod `web` asks for node label `pool=shared` in its nodeSelector: tenant `solar` runs its pods only on nodes labelled `pool=solar`",
        );
    }
    for (expressions, needle) in [
        (
            json!([{"key": "pool", "operator": "In", "values": ["shared", "gpu"]}]),
            "node label `pool` In `shared`, `gpu` in its required node affinity",
        ),
        (
            json!([{"key": "pool", "operator": "NotIn", "values": ["solar"]}]),
            "node label `pool` NotIn `solar`",
        ),
        (
            json!([{"key": "pool", "operator": "DoesNotExist"}]),
            "node label `pool` DoesNotExist in its required",
        ),
        (
            json!([{"key": "pool", "operator": "Gt", "values": ["3"]}]),
            "node label `pool` Gt `3`",
        ),
    ] {
        let p = pod_obj(json!({"containers": image, "affinity": affinity(expressions)}));
        denied_with(&place_pod(&p, Operation::Create, None, true), needle);
    }
    for fine in [
        json!([{"key": "pool", "operator": "In", "values": ["solar", "shared"]}]),
        json!([{"key": "pool", "operator": "Exists"}]),
        json!([{"key": "pool", "operator": "NotIn", "values": ["shared"]}]),
        json!([{"key": "zone", "operator": "In", "values": ["b"]}]),
    ] {
        let p = pod_obj(json!({"containers": image, "affinity": affinity(fine.clone())}));
        assert!(
            place_pod(&p, Operation::Create, None, true).is_allowed(),
            "{fine}"
        );
    }
}

#[test]
fn pods_named_to_a_node_or_bound_to_one_must_land_inside_the_selector() {
    let image = json!([{"name": "a", "image": "quay.io/a:1"}]);
    let pinned = pod_obj(json!({"containers": image, "nodeName": "shared-1"}));
    denied_with(
        &place_pod(&pinned, Operation::Create, None, true),
        "pod `web` cannot be placed on node `shared-1`, which has `pool=shared`: tenant `solar` runs its pods only on nodes labelled `pool=solar`",
    );
    let unknown = pod_obj(json!({"containers": image, "nodeName": "ghost"}));
    denied_with(
        &place_pod(&unknown, Operation::Create, None, true),
        "node `ghost`, which is not in Bulkhead's cache (yet)",
    );
    let inside = pod_obj(json!({"containers": image, "nodeName": "solar-1"}));
    assert!(place_pod(&inside, Operation::Create, None, true).is_allowed());

    let mut s = world();
    s.add_node(&obj(
        json!({"metadata": {"name": "solar-1", "labels": {"pool": "solar"}}}),
    ));
    s.add_node(&obj(json!({"metadata": {"name": "bare"}})));
    let c = config();
    let who = user("alice");
    let t = s.tenant("solar").unwrap();
    let r = request(&who, &c, Operation::Create);
    let binding = |node: &str| -> k8s_openapi::api::core::v1::Binding {
        obj(json!({"metadata": {"name": "web"}, "target": {"kind": "Node", "name": node}}))
    };
    assert!(pod_binding(&r, &s, &t, &binding("solar-1")).is_allowed());
    denied_with(
        &pod_binding(&r, &s, &t, &binding("bare")),
        "pod `web` cannot be placed on node `bare`, which has no label `pool`",
    );
}

#[test]
fn a_pod_update_is_judged_on_placement_only_when_it_changes_placement() {
    let image = json!([{"name": "a", "image": "quay.io/a:1"}]);
    // A pod from before the tenant had a node selector may still be relabelled.
    let old = pod_obj(json!({"containers": image}));
    let mut relabelled = old.clone();
    relabelled.metadata.labels = Some(BTreeMap::from([("x".to_owned(), "y".to_owned())]));
    assert!(place_pod(&relabelled, Operation::Update, Some(&old), false).is_allowed());
    // A scheduling-gated pod may change its placement, but only within the tenant's nodes.
    let gated = pod_obj(
        json!({"containers": image, "nodeSelector": {"pool": "solar"}, "schedulingGates": [{"name": "g"}]}),
    );
    let mut moved = gated.clone();
    moved.spec.as_mut().unwrap().node_selector =
        Some(BTreeMap::from([("pool".to_owned(), "shared".to_owned())]));
    denied_with(
        &place_pod(&moved, Operation::Update, Some(&gated), false),
        "asks for node label `pool=shared`",
    );
    let mut dropped = gated.clone();
    dropped.spec.as_mut().unwrap().node_selector = None;
    dropped.spec.as_mut().unwrap().affinity = Some(obj(affinity(
        json!([{"key": "zone", "operator": "In", "values": ["a"]}]),
    )));
    denied_with(
        &place_pod(&dropped, Operation::Update, Some(&gated), false),
        "has no node label `pool=solar`",
    );
}

fn decide(f: impl FnOnce(&Request<'_>, &Snapshot, &Tenant) -> Verdict) -> Verdict {
    let s = world();
    let c = config();
    let who = user("alice");
    let t = s.tenant("solar").unwrap();
    f(&request(&who, &c, Operation::Create), &s, &t)
}

#[test]
fn claims_get_the_default_class_and_may_not_use_other_classes_or_tenants_volumes() {
    let plain: PersistentVolumeClaim = obj(json!({"metadata": {"name": "data"}, "spec": {}}));
    let v = decide(|r, s, t| persistent_volume_claim(r, s, t, &plain));
    assert_eq!(
        patched(&plain, &v).spec.unwrap().storage_class_name.as_deref(),
        Some("bronze")
    );
    let gold: PersistentVolumeClaim =
        obj(json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "gold"}}));
    denied_with(
        &decide(|r, s, t| persistent_volume_claim(r, s, t, &gold)),
        "storage class `gold` of persistent volume claim `data` is not allowed in tenant `solar`: allowed are `silver`, `bronze`",
    );
    let mut s = world();
    let pv: PersistentVolume =
        obj(json!({"metadata": {"name": "pv-wind", "labels": {labels::TENANT: "wind"}}}));
    s.add_persistent_volume(&pv);
    let steal: PersistentVolumeClaim = obj(
        json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "silver", "volumeName": "pv-wind"}}),
    );
    let c = config();
    let who = user("alice");
    let t = s.tenant("solar").unwrap();
    denied_with(
        &persistent_volume_claim(&request(&who, &c, Operation::Create), &s, &t, &steal),
        "cannot bind persistent volume `pv-wind`: it belongs to tenant `wind`, not `solar`",
    );
    let select: PersistentVolumeClaim = obj(json!({"metadata": {"name": "data"},
        "spec": {"selector": {"matchLabels": {labels::TENANT: "wind"}}}}));
    assert!(!persistent_volume_claim(&request(&who, &c, Operation::Create), &s, &t, &select).is_allowed());
}

#[test]
fn services_types_external_ips_and_metadata() {
    let np: Service = obj(json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort"}}));
    denied_with(
        &decide(|r, s, t| service(r, s, t, "solar-one", &np, None)),
        "service `web` of type `NodePort` is not allowed in tenant `solar`: allowed types are `ClusterIP`, `LoadBalancer`",
    );
    let ext: Service =
        obj(json!({"metadata": {"name": "web"}, "spec": {"externalIPs": ["10.20.1.1", "10.21.0.1"]}}));
    denied_with(
        &decide(|r, s, t| service(r, s, t, "solar-one", &ext, None)),
        "external IP `10.21.0.1` of service `web` is not allowed in tenant `solar`: allowed are `10.20.0.0/16`",
    );
    let labelled: Service =
        obj(json!({"metadata": {"name": "web", "labels": {"exposed": "true"}}, "spec": {}}));
    denied_with(
        &decide(|r, s, t| service(r, s, t, "solar-one", &labelled, None)),
        "label `exposed` of service `web` is forbidden",
    );
    let lb: Service = obj(
        json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "externalIPs": ["10.20.3.4"]}}),
    );
    let v = decide(|r, s, t| service(r, s, t, "solar-one", &lb, None));
    let out = patched(&lb, &v);
    assert_eq!(out.metadata.labels.unwrap()["stamped"], "yes");
    assert_eq!(out.metadata.annotations.unwrap()["owner"], "solar");
}

fn ingress_obj(ns: &str, name: &str, class: Option<&str>, hosts: &[(&str, &str)]) -> Ingress {
    let rules: Vec<Value> = hosts
        .iter()
        .map(|(h, p)| {
            json!({"host": h, "http": {"paths": [{"path": p, "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}})
        })
        .collect();
    let mut spec = json!({"rules": rules});
    if let Some(c) = class {
        spec["ingressClassName"] = json!(c);
    }
    obj(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
}

#[test]
fn ingresses_classes_hostnames_wildcards_and_collisions() {
    let mut s = world();
    s.add_ingress(&ingress_obj(
        "wind-one",
        "taken",
        Some("nginx"),
        &[("api.solar.example.com", "/v1")],
    ));
    let c = config();
    let who = user("alice");
    let t = s.tenant("solar").unwrap();
    let r = request(&who, &c, Operation::Create);
    let check = |i: &Ingress| ingress(&r, &s, &t, "solar-one", i);

    let ok = ingress_obj(
        "solar-one",
        "web",
        None,
        &[("solar.example.com", "/"), ("api.solar.example.com", "/v2")],
    );
    let v = check(&ok);
    assert_eq!(
        patched(&ok, &v).spec.unwrap().ingress_class_name.as_deref(),
        Some("nginx")
    );
    denied_with(
        &check(&ingress_obj(
            "solar-one",
            "web",
            Some("traefik"),
            &[("solar.example.com", "/")],
        )),
        "ingress class `traefik` of ingress `web` is not allowed in tenant `solar`: allowed are `nginx`",
    );
    denied_with(
        &check(&ingress_obj(
            "solar-one",
            "web",
            Some("nginx"),
            &[("evil.com", "/")],
        )),
        "hostname `evil.com` of ingress `web` is not allowed in tenant `solar`: allowed are `solar.example.com` or names matching",
    );
    denied_with(
        &check(&ingress_obj(
            "solar-one",
            "web",
            Some("nginx"),
            &[("*.solar.example.com", "/")],
        )),
        "wildcard hostname `*.solar.example.com` of ingress `web` is not allowed in tenant `solar`",
    );
    denied_with(
        &check(&ingress_obj(
            "solar-one",
            "web",
            Some("nginx"),
            &[("api.solar.example.com", "/v1")],
        )),
        "host `api.solar.example.com` with path `/v1` of ingress `web` is already served by ingress `wind-one/taken` (Cluster scope)",
    );
    // Updating the ingress that holds the route is no collision with itself.
    let own = ingress_obj(
        "wind-one",
        "taken",
        Some("nginx"),
        &[("api.solar.example.com", "/v1")],
    );
    let wind = s.tenant("wind").unwrap();
    assert!(ingress(&r, &s, &wind, "wind-one", &own).is_allowed());
}

#[test]
fn tenant_scope_collisions_only_count_the_tenants_own_namespaces() {
    let mut s = world();
    s.add_ingress(&ingress_obj(
        "solar-one",
        "a",
        None,
        &[("shared.example.com", "/")],
    ));
    s.add_ingress(&ingress_obj("wind-two", "b", None, &[("mine.example.com", "/")]));
    let c = config();
    let who = user("bob");
    let wind = s.tenant("wind").unwrap();
    let r = request(&who, &c, Operation::Create);
    assert!(
        ingress(
            &r,
            &s,
            &wind,
            "wind-one",
            &ingress_obj("wind-one", "x", None, &[("shared.example.com", "/")])
        )
        .is_allowed()
    );
    denied_with(
        &ingress(
            &r,
            &s,
            &wind,
            "wind-one",
            &ingress_obj("wind-one", "x", None, &[("mine.example.com", "/")]),
        ),
        "already served by ingress `wind-two/b` (Tenant scope)",
    );
}

fn annotated<T: serde::de::DeserializeOwned>(ns: &str, name: &str, spec: Value, names: &[(&str, &str)]) -> T {
    let annotations: serde_json::Map<String, Value> =
        names.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
    obj(json!({"metadata": {"name": name, "namespace": ns, "annotations": annotations}, "spec": spec}))
}

const DNS: &str = "external-dns.alpha.kubernetes.io/hostname";
const INTERNAL_DNS: &str = "external-dns.alpha.kubernetes.io/internal-hostname";

#[test]
fn external_dns_annotations_follow_the_hostname_rules_on_services_and_ingresses() {
    let s = world();
    let c = config();
    let who = user("alice");
    let t = s.tenant("solar").unwrap();
    let r = request(&who, &c, Operation::Create);
    let svc = |names: &[(&str, &str)]| -> Service { annotated("solar-one", "lb", json!({}), names) };
    assert!(
        service(
            &r,
            &s,
            &t,
            "solar-one",
            &svc(&[(DNS, "shop.solar.example.com")]),
            None
        )
        .is_allowed()
    );
    denied_with(
        &service(
            &r,
            &s,
            &t,
            "solar-one",
            &svc(&[(DNS, "shop.solar.example.com, bank.com")]),
            None,
        ),
        "hostname `bank.com` in annotation `external-dns.alpha.kubernetes.io/hostname` of service `lb` is not allowed in tenant `solar`: allowed are `solar.example.com` or names matching",
    );
    denied_with(
        &service(
            &r,
            &s,
            &t,
            "solar-one",
            &svc(&[(INTERNAL_DNS, "db.internal")]),
            None,
        ),
        "hostname `db.internal` in annotation `external-dns.alpha.kubernetes.io/internal-hostname`",
    );
    denied_with(
        &service(
            &r,
            &s,
            &t,
            "solar-one",
            &svc(&[(DNS, "*.solar.example.com")]),
            None,
        ),
        "wildcard hostname `*.solar.example.com` in annotation",
    );
    // An Ingress's own annotation is read as well as its rules.
    let mut ing = ingress_obj("solar-one", "web", Some("nginx"), &[("solar.example.com", "/")]);
    ing.metadata.annotations = Some(BTreeMap::from([(DNS.to_owned(), "bank.com".to_owned())]));
    denied_with(
        &ingress(&r, &s, &t, "solar-one", &ing),
        "hostname `bank.com` in annotation `external-dns.alpha.kubernetes.io/hostname` of ingress `web`",
    );
}

#[test]
fn a_tenant_cannot_take_another_tenants_dns_name_through_an_annotation() {
    let mut s = world();
    s.add_ingress(&ingress_obj(
        "wind-one",
        "shop",
        None,
        &[("shop.solar.example.com", "/")],
    ));
    s.add_service(&annotated(
        "wind-two",
        "api",
        json!({}),
        &[(DNS, "api.solar.example.com")],
    ));
    let c = config();
    let who = user("alice");
    let t = s.tenant("solar").unwrap();
    let r = request(&who, &c, Operation::Create);
    // Another tenant's Ingress host, named in a Service's annotation: the whole name is taken, so
    // case and a trailing dot make no difference.
    for name in ["shop.solar.example.com", "Shop.Solar.Example.COM."] {
        let svc: Service = annotated("solar-one", "lb", json!({}), &[(DNS, name)]);
        denied_with(
            &service(&r, &s, &t, "solar-one", &svc, None),
            "host `shop.solar.example.com` (an External DNS name) of service `lb` is already served by ingress `wind-one/shop` (Cluster scope)",
        );
    }
    // Another tenant's annotated name, as an Ingress rule (any path) or in an Ingress's annotation.
    denied_with(
        &ingress(
            &r,
            &s,
            &t,
            "solar-one",
            &ingress_obj("solar-one", "web", None, &[("api.solar.example.com", "/x")]),
        ),
        "host `api.solar.example.com` with path `/x` of ingress `web` is already served by service `wind-two/api` (Cluster scope)",
    );
    let mut ing = ingress_obj("solar-one", "web", None, &[("solar.example.com", "/")]);
    ing.metadata.annotations = Some(BTreeMap::from([(
        INTERNAL_DNS.to_owned(),
        "api.solar.example.com".to_owned(),
    )]));
    denied_with(
        &ingress(&r, &s, &t, "solar-one", &ing),
        "already served by service `wind-two/api`",
    );
    // Updating the Service that holds the name is no collision with itself.
    let wind = s.tenant("wind").unwrap();
    let own: Service = annotated("wind-two", "api", json!({}), &[(DNS, "api.solar.example.com")]);
    assert!(service(&r, &s, &wind, "wind-two", &own, None).is_allowed());
}

// ---- the other guard rails ----

#[test]
fn objects_bulkhead_manages_are_off_limits_to_tenant_users_only() {
    let c = config();
    let meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
        obj(json!({"name": "bulkhead-admin-alice-1",
        "labels": {labels::MANAGED_BY: "bulkhead", labels::TENANT: "solar"}}));
    let alice = user("alice");
    denied_with(
        &managed_object(
            &request(&alice, &c, Operation::Delete),
            "rolebinding",
            None,
            Some(&meta),
        ),
        "rolebinding `bulkhead-admin-alice-1` is managed by Bulkhead for tenant `solar` and cannot be deleted by tenant users",
    );
    let mut stripped = meta.clone();
    stripped.labels = None;
    assert!(
        !managed_object(
            &request(&alice, &c, Operation::Update),
            "rolebinding",
            Some(&stripped),
            Some(&meta)
        )
        .is_allowed()
    );
    assert!(
        !managed_object(
            &request(&alice, &c, Operation::Create),
            "rolebinding",
            Some(&meta),
            None
        )
        .is_allowed()
    );
    let gc = Who {
        caller: Caller::new(
            "system:serviceaccount:kube-system:namespace-controller",
            ["system:serviceaccounts"],
        ),
        class: CallerClass::Unmanaged,
    };
    assert!(
        managed_object(
            &request(&gc, &c, Operation::Delete),
            "rolebinding",
            None,
            Some(&meta)
        )
        .is_allowed()
    );
    assert!(
        managed_object(
            &request(&admin(), &c, Operation::Delete),
            "rolebinding",
            None,
            Some(&meta)
        )
        .is_allowed()
    );
}

#[test]
fn node_metadata_rules_bind_tenant_users() {
    let mut c = config();
    c.node_metadata =
        Some(serde_json::from_value(json!({"forbiddenLabels": {"deniedRegex": "^node-role\\."}})).unwrap());
    let old: Node =
        obj(json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/worker": ""}}}));
    let mut new = old.clone();
    new.metadata.labels = Some(BTreeMap::new());
    let alice = user("alice");
    denied_with(
        &node(&request(&alice, &c, Operation::Update), Some(&new), Some(&old)),
        "label `node-role.kubernetes.io/worker` of node `n1` is forbidden to tenant users",
    );
    assert!(node(&request(&admin(), &c, Operation::Update), Some(&new), Some(&old)).is_allowed());
}

#[test]
fn tenants_are_validated_and_prevent_deletion_holds() {
    let c = config();
    let who = admin();
    let bad = tenant(
        "metadata: {name: bad}\nspec: {owners: [{kind: ServiceAccount, name: robot}], containerRegistries: {allowedRegex: '('}}",
    );
    let v = super::tenant(&request(&who, &c, Operation::Create), Some(&bad), None);
    denied_with(
        &v,
        "tenant `bad` is invalid: containerRegistries.allowedRegex: invalid regular expression `(`",
    );
    assert_eq!(tenant_problems(&bad).len(), 2, "{:?}", tenant_problems(&bad));
    let locked = tenant("metadata: {name: locked}\nspec: {preventDeletion: true}");
    denied_with(
        &super::tenant(&request(&who, &c, Operation::Delete), None, Some(&locked)),
        "tenant `locked` has preventDeletion set",
    );
}

#[test]
fn every_capsule_compat_tenant_passes_tenant_validation() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/tests/capsule-compat");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("capsule.clastix.io/v1beta2", "bulkhead.dev/v1alpha1");
        let t: Tenant = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(tenant_problems(&t), Vec::<String>::new(), "{}", path.display());
        seen += 1;
    }
    assert_eq!(seen, 65);
}

#[test]
fn registries_and_cidrs_parse_like_the_container_runtime() {
    assert_eq!(registry_of("quay.io/a/b:1"), Some("quay.io"));
    assert_eq!(registry_of("localhost:5000/a"), Some("localhost:5000"));
    assert_eq!(registry_of("localhost/a"), Some("localhost"));
    assert_eq!(registry_of("library/nginx"), None);
    assert_eq!(registry_of("nginx:1.27"), None);
    assert!(cidr_contains("10.0.0.0/8", "10.255.0.1"));
    assert!(!cidr_contains("10.0.0.0/8", "11.0.0.1"));
    assert!(cidr_contains("192.0.2.10", "192.0.2.10"));
    assert!(cidr_contains("2001:db8::/32", "2001:db8::1"));
    assert!(!cidr_contains("10.0.0.0/x", "10.0.0.0"));
    assert!(cidr_contains("0.0.0.0/0", "8.8.8.8"));
    // Prefix lengths as Go's parser reads them: none wider than the address, no sign, no leading zero.
    for bad in [
        "10.0.0.0/33",
        "2001:db8::/129",
        "10.0.0.0/+8",
        "10.0.0.0/08",
        "10.0.0.0/",
        "10.0.0.0/ 8",
    ] {
        assert!(!cidr_contains(bad, "10.0.0.0"), "{bad}");
    }
    assert!(cidr_contains("10.0.0.0/32", "10.0.0.0"));
    assert!(cidr_contains("::/0", "2001:db8::1"));
}

#[test]
fn replicated_objects_are_changed_only_by_their_writer() {
    let c = config();
    let mut s = world();
    s.add_replication_writer(
        "tenantresource.solar-one.pull",
        "system:serviceaccount:solar-one:replicator",
    );
    let copy: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta = obj(json!({"name": "pull",
        "labels": {labels::REPLICATED_BY: "tenantresource.solar-one.pull", labels::TENANT: "solar"}}));
    let global: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
        obj(json!({"name": "cluster-info",
        "labels": {labels::REPLICATED_BY: "globaltenantresource..platform", labels::TENANT: "solar"}}));
    let alice = user("alice");
    denied_with(
        &replicated_object(
            &request(&alice, &c, Operation::Delete),
            &s,
            "configmap",
            None,
            Some(&global),
        ),
        "configmap `cluster-info` is replicated by `globaltenantresource..platform` and cannot be deleted by tenant users",
    );
    assert!(
        !replicated_object(
            &request(&alice, &c, Operation::Update),
            &s,
            "secret",
            Some(&copy),
            Some(&copy)
        )
        .is_allowed()
    );
    // Posing as a copy is refused too.
    assert!(
        !replicated_object(
            &request(&alice, &c, Operation::Create),
            &s,
            "configmap",
            Some(&global),
            None
        )
        .is_allowed()
    );
    let writer = Who {
        caller: Caller::new(
            "system:serviceaccount:solar-one:replicator",
            ["system:serviceaccounts"],
        ),
        class: CallerClass::TenantUser,
    };
    assert!(
        replicated_object(
            &request(&writer, &c, Operation::Update),
            &s,
            "secret",
            Some(&copy),
            Some(&copy)
        )
        .is_allowed()
    );
    // ...but the writer of one resource cannot touch another's copies.
    assert!(
        !replicated_object(
            &request(&writer, &c, Operation::Delete),
            &s,
            "configmap",
            None,
            Some(&global)
        )
        .is_allowed()
    );
    assert!(
        replicated_object(
            &request(&admin(), &c, Operation::Delete),
            &s,
            "configmap",
            None,
            Some(&global)
        )
        .is_allowed()
    );
}

#[test]
fn a_class_in_the_older_annotation_is_judged_beside_the_field_on_create_and_update() {
    let s = world();
    let c = config();
    let who = user("alice");
    let t = s.tenant("solar").unwrap();
    for op in [Operation::Create, Operation::Update] {
        let r = request(&who, &c, op);
        // A storage class only in the annotation the volume controllers read first.
        let claim: PersistentVolumeClaim = obj(json!({"metadata": {"name": "data",
            "annotations": {BETA_STORAGE_CLASS: "gold"}}, "spec": {"storageClassName": "silver"}}));
        denied_with(
            &persistent_volume_claim(&r, &s, &t, &claim),
            "storage class `gold` of persistent volume claim `data` is not allowed in tenant `solar`",
        );
        // An ingress class added as the annotation beside an allowed field (an update allows both).
        let mut web = ingress_obj("solar-one", "web", Some("nginx"), &[("solar.example.com", "/")]);
        web.metadata.annotations = Some([(INGRESS_CLASS_ANNOTATION.to_owned(), "traefik".to_owned())].into());
        denied_with(
            &ingress(&r, &s, &t, "solar-one", &web),
            "ingress class `traefik` of ingress `web` is not allowed in tenant `solar`: allowed are `nginx`",
        );
    }
    // The annotation alone names the class: no default is injected over it, and an allowed one passes.
    let annotated: PersistentVolumeClaim = obj(json!({"metadata": {"name": "data",
        "annotations": {BETA_STORAGE_CLASS: "silver"}}, "spec": {}}));
    let r = request(&who, &c, Operation::Create);
    let v = persistent_volume_claim(&r, &s, &t, &annotated);
    assert!(v.is_allowed());
    assert_eq!(patched(&annotated, &v).spec.unwrap().storage_class_name, None);
}

#[test]
fn a_claim_bound_later_to_another_tenants_volume_is_denied() {
    let mut s = world();
    let pv: PersistentVolume =
        obj(json!({"metadata": {"name": "pv-wind", "labels": {labels::TENANT: "wind"}}}));
    s.add_persistent_volume(&pv);
    let c = config();
    let who = user("alice");
    let t = s.tenant("solar").unwrap();
    // `volumeName` may be set once after creation: the update is judged as the create would be.
    let bound: PersistentVolumeClaim = obj(
        json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "silver", "volumeName": "pv-wind"}}),
    );
    denied_with(
        &persistent_volume_claim(&request(&who, &c, Operation::Update), &s, &t, &bound),
        "cannot bind persistent volume `pv-wind`: it belongs to tenant `wind`, not `solar`",
    );
    // An update injects no default.
    let plain: PersistentVolumeClaim = obj(json!({"metadata": {"name": "data"}, "spec": {}}));
    let v = persistent_volume_claim(&request(&who, &c, Operation::Update), &s, &t, &plain);
    assert_eq!(v, Verdict::allow());
}

#[test]
fn an_ingress_rule_with_no_host_or_a_default_backend_is_judged_not_skipped() {
    let s = world();
    let c = config();
    let who = user("alice");
    let t = s.tenant("solar").unwrap();
    let r = request(&who, &c, Operation::Create);
    let hostless = ingress_obj("solar-one", "web", Some("nginx"), &[("", "/")]);
    denied_with(
        &ingress(&r, &s, &t, "solar-one", &hostless),
        "ingress `web` has a rule with no host, which serves every hostname: tenant `solar` allows only hostnames `solar.example.com`",
    );
    let mut default_backend = ingress_obj("solar-one", "web", Some("nginx"), &[("solar.example.com", "/")]);
    default_backend.spec.as_mut().unwrap().default_backend =
        Some(obj(json!({"service": {"name": "web", "port": {"number": 80}}})));
    denied_with(
        &ingress(&r, &s, &t, "solar-one", &default_backend),
        "ingress `web` has a default backend, which serves every hostname",
    );
    // A tenant whose hostnames are not restricted may have both.
    let wind = s.tenant("wind").unwrap();
    let bob = user("bob");
    let r = request(&bob, &c, Operation::Create);
    assert!(
        ingress(
            &r,
            &s,
            &wind,
            "wind-one",
            &ingress_obj("wind-one", "w", None, &[("", "/")])
        )
        .is_allowed()
    );
}

#[test]
fn metadata_bulkhead_stamps_keeps_its_value_even_before_the_next_reconcile() {
    let s = world();
    let alice = user("alice");
    let mut old = tenant_namespace("solar-one", "solar");
    old.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("cost-center".into(), "solar".into());
    // A Pod Security label stamped from additionalMetadata works the same way: here `cost-center`.
    for value in [Some("elsewhere"), None] {
        let mut changed = old.clone();
        let labels = changed.metadata.labels.as_mut().unwrap();
        match value {
            Some(v) => labels.insert("cost-center".into(), v.into()),
            None => labels.remove("cost-center"),
        };
        denied_with(
            &update_ns(&s, &alice, None, &old, &changed),
            "label `cost-center` of namespace `solar-one` is set by Bulkhead to `solar` for tenant `solar` and cannot be changed or removed",
        );
    }
    // Other labels, and Bulkhead's own value written again, are fine.
    let mut other = old.clone();
    other
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("app".into(), "web".into());
    assert!(update_ns(&s, &alice, None, &old, &other).is_allowed());
    let mut unstamped = old.clone();
    unstamped.metadata.labels.as_mut().unwrap().remove("cost-center");
    assert!(update_ns(&s, &alice, None, &unstamped, &old).is_allowed());
}

#[test]
fn gateway_routes_follow_the_hostname_rules_and_collide_with_every_other_name() {
    use bulkhead_api::gateway::{GRPCRoute, HTTPRoute, TLSRoute};
    let mut s = world();
    s.add_ingress(&ingress_obj(
        "wind-one",
        "shop",
        None,
        &[("shop.solar.example.com", "/")],
    ));
    let c = config();
    let who = user("alice");
    let t = s.tenant("solar").unwrap();
    let r = request(&who, &c, Operation::Create);
    let http = |name: &str, spec: Value| -> HTTPRoute {
        obj(
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "solar-one"}, "spec": spec}),
        )
    };
    let judge =
        |route: &HTTPRoute, s: &Snapshot| gateway_route(&r, s, &t, "solar-one", &GatewayRoute::http(route));

    // Allowed names pass; every hostname is judged, in DNS's comparison.
    let web = http(
        "web",
        json!({"hostnames": ["API.solar.example.com."], "rules": [{"matches": [{"path": {"value": "/v1"}}]}]}),
    );
    assert!(judge(&web, &s).is_allowed());
    denied_with(
        &judge(
            &http("web", json!({"hostnames": ["solar.example.com", "bank.com"]})),
            &s,
        ),
        "hostname `bank.com` of httproute `web` is not allowed in tenant `solar`: allowed are `solar.example.com` or names matching",
    );
    denied_with(
        &judge(&http("web", json!({"hostnames": ["*.solar.example.com"]})), &s),
        "wildcard hostname `*.solar.example.com` of httproute `web` is not allowed in tenant `solar`",
    );
    // No hostname: every name the Gateway's listeners accept.
    denied_with(
        &judge(&http("web", json!({"rules": [{}]})), &s),
        "httproute `web` names no hostname, which serves every hostname its listeners accept: tenant `solar` allows only hostnames `solar.example.com` or names matching",
    );
    // Its annotations are External DNS names too.
    let mut annotated_route = http("web", json!({"hostnames": ["solar.example.com"]}));
    annotated_route.metadata.annotations = Some(BTreeMap::from([(DNS.to_owned(), "bank.com".to_owned())]));
    denied_with(
        &judge(&annotated_route, &s),
        "hostname `bank.com` in annotation `external-dns.alpha.kubernetes.io/hostname` of httproute `web`",
    );

    // Another tenant's Ingress host: the route's path `/` (no match) collides with the Ingress's `/`.
    denied_with(
        &judge(&http("web", json!({"hostnames": ["shop.solar.example.com"]})), &s),
        "host `shop.solar.example.com` with path `/` of httproute `web` is already served by ingress `wind-one/shop` (Cluster scope)",
    );
    // A route's names are taken for Ingresses, Services and other routes alike.
    s.add_gateway_route(&GatewayRoute::http(&web));
    denied_with(
        &ingress(
            &r,
            &s,
            &t,
            "solar-one",
            &ingress_obj("solar-one", "other", None, &[("api.solar.example.com", "/v1")]),
        ),
        "host `api.solar.example.com` with path `/v1` of ingress `other` is already served by httproute `solar-one/web` (Cluster scope)",
    );
    assert!(
        judge(&web, &s).is_allowed(),
        "a route does not collide with itself"
    );
    let svc: Service = annotated("solar-one", "lb", json!({}), &[(DNS, "api.solar.example.com")]);
    denied_with(
        &service(&r, &s, &t, "solar-one", &svc, None),
        "host `api.solar.example.com` (an External DNS name) of service `lb` is already served by httproute `solar-one/web`",
    );
    // gRPC methods are paths of HTTP/2: another method on the same host does not collide, the same does.
    let grpc = |name: &str, method: Value| -> GRPCRoute {
        obj(json!({"metadata": {"name": name, "namespace": "solar-one"},
            "spec": {"hostnames": ["grpc.solar.example.com"], "rules": [{"matches": [{"method": method}]}]}}))
    };
    let pay = grpc("pay", json!({"service": "shop.Payments", "method": "Charge"}));
    s.add_gateway_route(&GatewayRoute::grpc(&pay));
    assert!(
        gateway_route(
            &r,
            &s,
            &t,
            "solar-one",
            &GatewayRoute::grpc(&grpc(
                "refund",
                json!({"service": "shop.Payments", "method": "Refund"})
            ))
        )
        .is_allowed()
    );
    denied_with(
        &gateway_route(
            &r,
            &s,
            &t,
            "solar-one",
            &GatewayRoute::grpc(&grpc(
                "copy",
                json!({"service": "shop.Payments", "method": "Charge"}),
            )),
        ),
        "host `grpc.solar.example.com` with path `/shop.Payments/Charge` of grpcroute `copy` is already served by grpcroute `solar-one/pay`",
    );
    // A TLSRoute takes the whole name (SNI has no path).
    let tls: TLSRoute = obj(json!({"metadata": {"name": "db", "namespace": "solar-one"},
        "spec": {"hostnames": ["api.solar.example.com"]}}));
    denied_with(
        &gateway_route(&r, &s, &t, "solar-one", &GatewayRoute::tls(&tls)),
        "host `api.solar.example.com` (an External DNS name) of tlsroute `db` is already served by httproute `solar-one/web`",
    );
    // Deletes are not judged.
    let d = request(&who, &c, Operation::Delete);
    assert!(
        gateway_route(
            &d,
            &s,
            &t,
            "solar-one",
            &GatewayRoute::http(&http("web", json!({"rules": [{}]})))
        )
        .is_allowed()
    );
}
