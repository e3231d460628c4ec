//! What the proxy shows a caller: the tenants it acts for, and which cluster-scoped objects it sees
//! and may change. Pure: the proxy answers list, get and watch requests from the shared cache with
//! these functions.
//!
//! A caller acts for a tenant when it owns it (as user, through a group, or as service account), or when
//! a ProxySetting in one of the tenant's namespaces names it. Cluster-scoped kinds are gated per tenant
//! by the owner's (or the ProxySetting subject's) `proxySettings`: `List` to see them at all, `Update` and
//! `Delete` to change them; what is seen is then narrowed to the tenant's own: nodes matching its
//! `nodeSelector`, classes in its allowed lists, persistent volumes labelled with it.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use bulkhead_api::owner::{ProxyKind, ProxyOperation, ProxySettings};
use bulkhead_api::proxy_setting::ProxySetting;
use bulkhead_api::{Tenant, labels};

use crate::admission::{AllowedCheck, ClassInfo, lists_check_class};
use crate::identity::Caller;

/// What one caller may see and do through the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Visibility {
    /// The tenants the caller acts for.
    pub tenants: BTreeSet<String>,
    /// Namespaces a RoleBinding names the caller in (the RoleBinding reflector), listed beside its
    /// tenants' namespaces.
    pub reflected: BTreeSet<String>,
    /// Per tenant, the operations granted per cluster-scoped kind.
    pub operations: BTreeMap<String, BTreeMap<ProxyKind, BTreeSet<ProxyOperation>>>,
}

fn grant(into: &mut BTreeMap<ProxyKind, BTreeSet<ProxyOperation>>, settings: &[ProxySettings]) {
    for s in settings {
        into.entry(s.kind)
            .or_default()
            .extend(s.operations.iter().copied());
    }
}

/// Works out what `caller` sees. `tenants` are the Tenants to consider (all of them, or those the
/// caller owns); `settings` the ProxySettings with the Tenant of their namespace (`None` outside
/// tenants: such a setting grants nothing).
///
/// A ProxySetting lends at most what the tenant's owners were granted: a tenant owner can share their
/// view, never widen it (an owner with `List` on Nodes cannot hand out `Delete`).
pub fn visibility<'a>(
    caller: &Caller,
    tenants: impl IntoIterator<Item = &'a Tenant>,
    settings: impl IntoIterator<Item = (&'a ProxySetting, Option<&'a Tenant>)>,
) -> Visibility {
    let subjects = caller.subjects();
    let mut out = Visibility::default();
    for tenant in tenants {
        let name = tenant.metadata.name.clone().unwrap_or_default();
        // Owners the controller found (TenantOwners, promoted ServiceAccounts) see the tenant; only
        // `spec.owners` entries carry proxy settings.
        if tenant.owner_subjects().any(|s| subjects.contains(&s)) {
            out.tenants.insert(name.clone());
        }
        for owner in tenant
            .spec
            .owners
            .iter()
            .filter(|o| subjects.contains(&o.subject()))
        {
            out.tenants.insert(name.clone());
            grant(
                out.operations.entry(name.clone()).or_default(),
                &owner.proxy_settings,
            );
        }
    }
    for (setting, tenant) in settings {
        let Some(tenant) = tenant else { continue };
        let mut ceiling = BTreeMap::new();
        for owner in &tenant.spec.owners {
            grant(&mut ceiling, &owner.proxy_settings);
        }
        let tenant = tenant.metadata.name.as_deref().unwrap_or_default();
        for subject in &setting.spec.subjects {
            if subjects.contains(&subject.subject()) {
                out.tenants.insert(tenant.to_owned());
                let lent = out.operations.entry(tenant.to_owned()).or_default();
                for s in &subject.proxy_settings {
                    let allowed = ceiling.get(&s.kind);
                    lent.entry(s.kind).or_default().extend(
                        s.operations
                            .iter()
                            .filter(|o| allowed.is_some_and(|a: &BTreeSet<ProxyOperation>| a.contains(o)))
                            .copied(),
                    );
                }
            }
        }
    }
    out
}

impl Visibility {
    /// Whether the caller acts for any tenant (otherwise the proxy passes its requests through as is).
    pub fn is_tenant_user(&self) -> bool {
        !self.tenants.is_empty()
    }

    /// The tenants for which the caller may perform `operation` on `kind`.
    pub fn tenants_allowing(&self, kind: ProxyKind, operation: ProxyOperation) -> impl Iterator<Item = &str> {
        self.operations
            .iter()
            .filter(move |(_, ops)| ops.get(&kind).is_some_and(|o| o.contains(&operation)))
            .map(|(t, _)| t.as_str())
    }

    /// Whether a namespace with this tenant label is visible.
    pub fn sees_namespace(&self, tenant_label: Option<&str>) -> bool {
        tenant_label.is_some_and(|t| self.tenants.contains(t))
    }

    /// Whether the namespace `name` (whose tenant label is `tenant_label`) is listed: one of the
    /// caller's tenants', or one the reflector found a RoleBinding naming the caller in.
    pub fn lists_namespace(&self, name: &str, tenant_label: Option<&str>) -> bool {
        self.sees_namespace(tenant_label) || self.reflected.contains(name)
    }

    /// Whether the Tenant of this name is visible.
    pub fn sees_tenant(&self, name: &str) -> bool {
        self.tenants.contains(name)
    }
}

/// What GlobalProxySettings grant one caller among cluster-scoped objects: one entry of a rule naming
/// the caller.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GlobalGrant {
    /// API groups (`*`: all).
    pub api_groups: Vec<String>,
    /// Resources (`*`: all).
    pub resources: Vec<String>,
    /// The operations granted.
    pub operations: BTreeSet<ProxyOperation>,
    /// Which objects (all when absent).
    pub selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

impl GlobalGrant {
    /// Whether the grant names this group and resource.
    pub fn covers(&self, group: &str, resource: &str) -> bool {
        let named = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
        named(&self.api_groups, group) && named(&self.resources, resource)
    }

    /// Whether the grant allows `operation` on an object with `labels`.
    pub fn allows(&self, operation: ProxyOperation, labels: &BTreeMap<String, String>) -> bool {
        self.operations.contains(&operation)
            && self
                .selector
                .as_ref()
                .is_none_or(|s| crate::selector::matches(s, labels))
    }
}

/// The grants of every GlobalProxySettings rule that names `caller` (as user, through a group, or as
/// service account).
pub fn global_grants<'a>(
    caller: &Caller,
    settings: impl IntoIterator<Item = &'a bulkhead_api::GlobalProxySettings>,
) -> Vec<GlobalGrant> {
    let subjects = caller.subjects();
    let mut out = Vec::new();
    for setting in settings {
        for rule in &setting.spec.rules {
            if !rule.subjects.iter().any(|s| subjects.contains(&s.subject())) {
                continue;
            }
            out.extend(rule.cluster_resources.iter().map(|r| GlobalGrant {
                api_groups: r.api_groups.clone(),
                resources: r.resources.clone(),
                operations: r.operations.iter().copied().collect(),
                selector: r.selector.clone(),
            }));
        }
    }
    out
}

/// Whether a node with `node_labels` may be seen (`List`) or changed (`Update`, `Delete`): some tenant
/// the caller acts for grants the operation on Nodes and the node matches that tenant's `nodeSelector`.
pub fn node_allowed(
    visibility: &Visibility,
    tenants: &BTreeMap<String, impl Borrow<Tenant>>,
    node_labels: &BTreeMap<String, String>,
    operation: ProxyOperation,
) -> bool {
    visibility
        .tenants_allowing(ProxyKind::Nodes, operation)
        .filter_map(|t| tenants.get(t))
        .any(|t| {
            t.borrow()
                .spec
                .node_selector
                .iter()
                .all(|(k, v)| node_labels.get(k) == Some(v))
        })
}

/// Whether a class of `kind` (storage, ingress, priority or runtime) may be seen or changed: some tenant
/// grants the operation on that kind and allows the class (by name, regex, labels or default).
pub fn class_allowed(
    visibility: &Visibility,
    tenants: &BTreeMap<String, impl Borrow<Tenant>>,
    kind: ProxyKind,
    name: &str,
    info: &ClassInfo,
    operation: ProxyOperation,
) -> bool {
    visibility
        .tenants_allowing(kind, operation)
        .filter_map(|t| tenants.get(t))
        .any(|t| {
            let t: &Tenant = t.borrow();
            let list = match kind {
                ProxyKind::StorageClasses => t.spec.storage_classes.as_ref(),
                ProxyKind::IngressClasses => t
                    .spec
                    .ingress_options
                    .as_ref()
                    .and_then(|i| i.allowed_classes.as_ref()),
                ProxyKind::PriorityClasses => t.spec.priority_classes.as_ref(),
                ProxyKind::RuntimeClasses => t.spec.runtime_classes.as_ref(),
                ProxyKind::Nodes | ProxyKind::PersistentVolumes => None,
            };
            list.is_some_and(|l| lists_check_class(l, name, Some(info)) == AllowedCheck::Allowed)
        })
}

/// Whether a PersistentVolume with these labels may be seen or changed: some tenant grants the
/// operation on PersistentVolumes and the volume carries that tenant's label.
pub fn persistent_volume_allowed(
    visibility: &Visibility,
    volume_labels: &BTreeMap<String, String>,
    operation: ProxyOperation,
) -> bool {
    let owner = volume_labels.get(labels::TENANT);
    visibility
        .tenants_allowing(ProxyKind::PersistentVolumes, operation)
        .any(|t| owner.is_some_and(|o| o == t))
}

#[cfg(test)]
mod global_tests {
    use super::*;

    #[test]
    fn global_rules_grant_their_subjects_the_selected_cluster_objects() {
        // Capsule's example (012-globalproxysettings-global-proxy-settings.yaml).
        let settings: bulkhead_api::GlobalProxySettings = serde_json::from_value(serde_json::json!({
            "apiVersion": "bulkhead.dev/v1alpha1", "kind": "GlobalProxySettings",
            "metadata": {"name": "g"},
            "spec": {"rules": [{
                "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"}],
                "clusterResources": [
                    {"apiGroups": ["bulkhead.dev"], "resources": ["globalcustomquotas"], "operations": ["List"],
                     "selector": {"matchLabels": {"capsule.clastix.io/tenant": "green"}}},
                    {"apiGroups": ["kyverno.io"], "resources": ["*"], "operations": ["List", "Delete"]}
                ]
            }]}
        }))
        .unwrap();
        let alice = Caller {
            user: "alice".into(),
            groups: vec![],
        };
        let grants = global_grants(&alice, [&settings]);
        assert_eq!(grants.len(), 2);
        let green: BTreeMap<String, String> =
            [("capsule.clastix.io/tenant".to_owned(), "green".to_owned())].into();
        assert!(grants[0].covers("bulkhead.dev", "globalcustomquotas"));
        assert!(!grants[0].covers("bulkhead.dev", "customquotas"));
        assert!(grants[0].allows(ProxyOperation::List, &green));
        assert!(!grants[0].allows(ProxyOperation::List, &BTreeMap::new()));
        assert!(!grants[0].allows(ProxyOperation::Delete, &green));
        assert!(
            grants[1].covers("kyverno.io", "clusterpolicies")
                && grants[1].allows(ProxyOperation::Delete, &BTreeMap::new())
        );
        let dev = Caller {
            user: "bob".into(),
            groups: vec!["devs".into()],
        };
        assert_eq!(global_grants(&dev, [&settings]).len(), 2);
        let other = Caller {
            user: "carol".into(),
            groups: vec![],
        };
        assert!(global_grants(&other, [&settings]).is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(yaml: &str) -> Tenant {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn setting(yaml: &str) -> ProxySetting {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn world() -> Vec<Tenant> {
        vec![
            tenant(
                r#"
metadata: {name: solar}
spec:
  owners:
  - kind: User
    name: alice
    proxySettings:
    - {kind: Nodes, operations: [List]}
    - {kind: StorageClasses, operations: [List, Update]}
    - {kind: PersistentVolumes, operations: [List]}
  - {kind: Group, name: solar-devs}
  nodeSelector: {pool: solar}
  storageClasses: {allowed: [standard], allowedRegex: "^solar-"}
"#,
            ),
            tenant(
                "metadata: {name: wind}\nspec: {owners: [{kind: User, name: bob, proxySettings: [{kind: Nodes, operations: [List]}]}], nodeSelector: {pool: wind}}",
            ),
        ]
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn owners_see_their_tenants_and_proxy_settings_lend_the_view() {
        let tenants = world();
        let alice = visibility(&Caller::new("alice", ["bulkhead.dev"]), &tenants, []);
        assert_eq!(alice.tenants, BTreeSet::from(["solar".to_owned()]));
        assert!(alice.sees_namespace(Some("solar")));
        assert!(!alice.sees_namespace(Some("wind")));
        assert!(!alice.sees_namespace(None), "unmanaged namespaces are not shown");
        let mut reflected = alice.clone();
        reflected.reflected.insert("ops-tools".into());
        assert!(reflected.lists_namespace("ops-tools", None));
        assert!(!reflected.lists_namespace("other", None));
        assert!(reflected.lists_namespace("solar-a", Some("solar")));
        assert!(alice.sees_tenant("solar") && !alice.sees_tenant("wind"));
        let dev = visibility(&Caller::new("carol", ["solar-devs"]), &tenants, []);
        assert!(dev.sees_namespace(Some("solar")));
        assert!(
            dev.tenants_allowing(ProxyKind::Nodes, ProxyOperation::List)
                .next()
                .is_none(),
            "no proxySettings"
        );
        let nobody = visibility(&Caller::new("mallory", ["bulkhead.dev"]), &tenants, []);
        assert!(!nobody.is_tenant_user());

        let lent = setting(
            "metadata: {name: share, namespace: wind-prod}\nspec: {subjects: [{kind: User, name: dave, proxySettings: [{kind: Nodes, operations: [List, Delete]}]}]}",
        );
        let stray =
            setting("metadata: {name: x, namespace: default}\nspec: {subjects: [{kind: User, name: dave}]}");
        let dave = visibility(
            &Caller::new("dave", Vec::<String>::new()),
            &tenants,
            [(&lent, Some(&tenants[1])), (&stray, None)],
        );
        assert_eq!(dave.tenants, BTreeSet::from(["wind".to_owned()]));
        assert_eq!(
            dave.tenants_allowing(ProxyKind::Nodes, ProxyOperation::List)
                .collect::<Vec<_>>(),
            ["wind"]
        );
        assert!(
            dave.tenants_allowing(ProxyKind::Nodes, ProxyOperation::Delete)
                .next()
                .is_none(),
            "a ProxySetting cannot lend more than the owners have"
        );
    }

    #[test]
    fn cluster_scoped_objects_are_narrowed_to_the_tenant_and_gated_by_operations() {
        let tenants = world();
        let by_name: BTreeMap<String, &Tenant> = tenants
            .iter()
            .map(|t| (t.metadata.name.clone().unwrap_or_default(), t))
            .collect();
        let alice = visibility(&Caller::new("alice", ["bulkhead.dev"]), &tenants, []);
        let node = |l: &[(&str, &str)], op| node_allowed(&alice, &by_name, &labels(l), op);
        assert!(node(&[("pool", "solar"), ("zone", "a")], ProxyOperation::List));
        assert!(!node(&[("pool", "wind")], ProxyOperation::List));
        assert!(!node(&[("pool", "solar")], ProxyOperation::Delete), "List only");
        let class = |name: &str, op| {
            class_allowed(
                &alice,
                &by_name,
                ProxyKind::StorageClasses,
                name,
                &ClassInfo::default(),
                op,
            )
        };
        assert!(class("standard", ProxyOperation::List));
        assert!(class("solar-fast", ProxyOperation::Update));
        assert!(!class("gold", ProxyOperation::List));
        assert!(!class("standard", ProxyOperation::Delete));
        assert!(!class_allowed(
            &alice,
            &by_name,
            ProxyKind::IngressClasses,
            "nginx",
            &ClassInfo::default(),
            ProxyOperation::List
        ));
        assert!(persistent_volume_allowed(
            &alice,
            &labels(&[(labels::TENANT, "solar")]),
            ProxyOperation::List
        ));
        assert!(!persistent_volume_allowed(
            &alice,
            &labels(&[(labels::TENANT, "wind")]),
            ProxyOperation::List
        ));
        assert!(!persistent_volume_allowed(
            &alice,
            &labels(&[]),
            ProxyOperation::List
        ));
        let bob = visibility(&Caller::new("bob", Vec::<String>::new()), &tenants, []);
        assert!(node_allowed(
            &bob,
            &by_name,
            &labels(&[("pool", "wind")]),
            ProxyOperation::List
        ));
        assert!(!node_allowed(
            &bob,
            &by_name,
            &labels(&[("pool", "solar")]),
            ProxyOperation::List
        ));
        assert!(!node_allowed(
            &bob,
            &by_name,
            &labels(&[("pool", "wind")]),
            ProxyOperation::Update
        ));
    }
}
