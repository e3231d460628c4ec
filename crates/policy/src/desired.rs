//! Desired state: from a Tenant and its namespaces, every object that must exist. The controller applies
//! exactly this (server-side apply) and deletes what it owns that is not in it.

use std::collections::BTreeMap;

use bulkhead_api::labels;
use bulkhead_api::owner::{OwnerKind, SERVICE_ACCOUNT_PREFIX};
use bulkhead_api::tenant::QuotaScope;
use bulkhead_api::{BulkheadConfigurationSpec, OwnerSpec, Tenant};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::quota;
use crate::selector;

/// A tenant namespace as the desired state needs it: its name and current labels.
#[derive(Clone, Debug)]
pub struct TenantNamespace {
    /// Namespace name.
    pub name: String,
    /// Its labels now (for `additionalMetadataList` selectors).
    pub labels: BTreeMap<String, String>,
}

/// Labels and annotations Bulkhead manages on one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceMetadata {
    /// Namespace name.
    pub namespace: String,
    /// Labels to set.
    pub labels: BTreeMap<String, String>,
    /// Annotations to set.
    pub annotations: BTreeMap<String, String>,
}

/// Every object a Tenant wants.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    /// Metadata per tenant namespace.
    pub namespaces: Vec<NamespaceMetadata>,
    /// RoleBindings, in every tenant namespace.
    pub role_bindings: Vec<RoleBinding>,
    /// ResourceQuotas, in every tenant namespace.
    pub resource_quotas: Vec<ResourceQuota>,
    /// LimitRanges, in every tenant namespace.
    pub limit_ranges: Vec<LimitRange>,
    /// NetworkPolicies, in every tenant namespace.
    pub network_policies: Vec<NetworkPolicy>,
    /// What could not be made (an owner that is not a valid subject, say), for the status and Events.
    pub problems: Vec<String>,
}

/// The labels every object Bulkhead creates for a tenant carries.
pub fn managed_labels(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::TENANT.to_owned(), tenant.to_owned()),
        (labels::MANAGED_BY.to_owned(), labels::MANAGED_BY_VALUE.to_owned()),
    ])
}

/// The controller reference to a Tenant.
pub fn tenant_owner_reference(tenant: &Tenant) -> OwnerReference {
    OwnerReference {
        api_version: bulkhead_api::API_VERSION.to_owned(),
        kind: "Tenant".to_owned(),
        name: tenant.metadata.name.clone().unwrap_or_default(),
        uid: tenant.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The name of the `index`-th item's object (quota, limit range, network policy).
pub fn item_name(tenant: &str, index: usize) -> String {
    format!("bulkhead-{tenant}-{index}")
}

fn short_hash(parts: &[&str]) -> String {
    // FNV-1a: stable across processes and Rust versions, unlike the standard hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0u8]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{:08x}", (h >> 32) as u32 ^ h as u32)
}

/// A name readable by people and unique: `<prefix>-<sanitized text>-<hash>`, at most 253 characters.
pub(crate) fn readable_name(prefix: &str, text: &str, hash_parts: &[&str]) -> String {
    let sanitized: String = text
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let sanitized = sanitized.trim_matches(|c| c == '-' || c == '.');
    let hash = short_hash(hash_parts);
    let room = 253 - prefix.len() - hash.len() - 2;
    let text: String = sanitized.chars().take(room).collect();
    let text = text.trim_end_matches(['-', '.']);
    format!("{prefix}-{text}-{hash}")
}

/// The RoleBinding name for an owner and cluster role: stable when other owners come or go.
pub fn owner_binding_name(owner: &OwnerSpec, role: &str) -> String {
    let kind = owner.effective_kind().to_string();
    readable_name(
        &format!("bulkhead-{}", role.replace(':', "-")),
        &owner.name,
        &[&kind, &owner.name, role],
    )
}

pub(crate) fn owner_subject(owner: &OwnerSpec) -> Result<Subject, String> {
    let rbac = Some("rbac.authorization.k8s.io".to_owned());
    match owner.effective_kind() {
        OwnerKind::User => Ok(Subject {
            kind: "User".into(),
            api_group: rbac,
            name: owner.name.clone(),
            namespace: None,
        }),
        OwnerKind::Group => Ok(Subject {
            kind: "Group".into(),
            api_group: rbac,
            name: owner.name.clone(),
            namespace: None,
        }),
        OwnerKind::ServiceAccount => {
            let (ns, name) = owner
                .name
                .strip_prefix(SERVICE_ACCOUNT_PREFIX)
                .and_then(|rest| rest.split_once(':'))
                .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'))
                .ok_or_else(|| {
                    format!("owner {:?} is a ServiceAccount but not named system:serviceaccount:<namespace>:<name>", owner.name)
                })?;
            Ok(Subject {
                kind: "ServiceAccount".into(),
                api_group: Some(String::new()),
                name: name.into(),
                namespace: Some(ns.into()),
            })
        }
    }
}

fn meta(
    tenant: &Tenant,
    name: String,
    namespace: &str,
    extra_labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> ObjectMeta {
    let tenant_name = tenant.metadata.name.as_deref().unwrap_or_default();
    let mut all_labels = extra_labels.clone();
    all_labels.extend(managed_labels(tenant_name));
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_owned()),
        labels: Some(all_labels),
        annotations: (!annotations.is_empty()).then(|| annotations.clone()),
        owner_references: Some(vec![tenant_owner_reference(tenant)]),
        ..Default::default()
    }
}

/// Quota usage by namespace and item index, as the ResourceQuotas' status reports it.
pub type QuotaUsage =
    BTreeMap<(String, usize), BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>;

/// What the tenant's ResourceQuotas say now, by namespace and item index: usage (`status.used`) and
/// the limits in force (`spec.hard`).
#[derive(Debug, Clone, Default)]
pub struct QuotaObserved {
    /// `status.used`.
    pub used: QuotaUsage,
    /// `spec.hard`.
    pub in_force: QuotaUsage,
}

/// Everything `tenant` wants in `namespaces`. For tenant-scope quotas, `quotas` is what each
/// namespace's quota reports as used and holds in force now.
pub fn desired_state(tenant: &Tenant, namespaces: &[TenantNamespace], quotas: &QuotaObserved) -> Desired {
    let name = tenant.metadata.name.as_deref().unwrap_or_default();
    let spec = &tenant.spec;
    let mut out = Desired::default();
    let no_labels = BTreeMap::new();

    // Owner subjects are checked once, not once per namespace.
    let mut owner_bindings = Vec::new();
    for owner in &spec.owners {
        match owner_subject(owner) {
            Ok(subject) => {
                for role in owner.bound_cluster_roles() {
                    owner_bindings.push((
                        owner_binding_name(owner, role),
                        role.to_owned(),
                        vec![subject.clone()],
                        &owner.labels,
                        &owner.annotations,
                    ));
                }
            }
            Err(problem) => out.problems.push(problem),
        }
    }
    for extra in &spec.additional_role_bindings {
        let subjects_key = serde_json::to_string(&extra.subjects).unwrap_or_default();
        let binding = readable_name(
            "bulkhead-extra",
            &extra.cluster_role_name,
            &[&extra.cluster_role_name, &subjects_key],
        );
        owner_bindings.push((
            binding,
            extra.cluster_role_name.clone(),
            extra.subjects.clone(),
            &extra.labels,
            &extra.annotations,
        ));
    }

    let quota_scope = spec.resource_quotas.as_ref().map(|q| q.scope).unwrap_or_default();
    let quota_items = spec
        .resource_quotas
        .as_ref()
        .map(|q| q.items.as_slice())
        .unwrap_or_default();
    let tenant_hard: Vec<_> = quota_items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let names: Vec<&str> = namespaces.iter().map(|n| n.name.as_str()).collect();
            let total = item.hard.clone().unwrap_or_default();
            let used = |ns: &str| quotas.used.get(&(ns.to_owned(), i));
            let shares = quota::share_tenant_hard(&total, &names, used);
            quota::raise_within_slack(&total, shares, used, |ns| {
                quotas.in_force.get(&(ns.to_owned(), i))
            })
        })
        .collect();

    // The tenant as rule templates see it (`{{ .tenant.metadata.name }}`).
    // Serialized only if a rule binding's subject is a template.
    let tenant_json = std::cell::OnceCell::new();
    for ns in namespaces {
        out.namespaces.push(namespace_metadata(tenant, ns));
        for (binding, role, subjects, extra_labels, annotations) in
            rule_bindings(tenant, &tenant_json, ns, &mut out.problems)
        {
            out.role_bindings.push(RoleBinding {
                metadata: meta(tenant, binding, &ns.name, extra_labels, annotations),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name: role,
                },
                subjects: Some(subjects),
            });
        }
        for (binding, role, subjects, extra_labels, annotations) in &owner_bindings {
            out.role_bindings.push(RoleBinding {
                metadata: meta(tenant, binding.clone(), &ns.name, extra_labels, annotations),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name: role.clone(),
                },
                subjects: Some(subjects.clone()),
            });
        }
        for (i, item) in quota_items.iter().enumerate() {
            let mut spec = item.clone();
            if quota_scope == QuotaScope::Tenant
                && let Some(per_namespace) = tenant_hard.get(i).and_then(|h| h.get(&ns.name))
            {
                spec.hard = Some(per_namespace.clone());
            }
            out.resource_quotas.push(ResourceQuota {
                metadata: meta(tenant, item_name(name, i), &ns.name, &no_labels, &BTreeMap::new()),
                spec: Some(spec),
                status: None,
            });
        }
        for (i, item) in spec.limit_ranges.iter().flat_map(|l| l.items.iter()).enumerate() {
            out.limit_ranges.push(LimitRange {
                metadata: meta(tenant, item_name(name, i), &ns.name, &no_labels, &BTreeMap::new()),
                spec: Some(item.clone()),
            });
        }
        for (i, item) in spec
            .network_policies
            .iter()
            .flat_map(|n| n.items.iter())
            .enumerate()
        {
            out.network_policies.push(NetworkPolicy {
                metadata: meta(tenant, item_name(name, i), &ns.name, &no_labels, &BTreeMap::new()),
                spec: Some(item.clone()),
            });
        }
    }
    out
}

/// The labels and annotations Bulkhead manages on one tenant namespace. The tenant label always wins.
pub fn namespace_metadata(tenant: &Tenant, ns: &TenantNamespace) -> NamespaceMetadata {
    let name = tenant.metadata.name.as_deref().unwrap_or_default();
    let options = tenant.spec.namespace_options.as_ref();
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    if let Some(extra) = options.and_then(|o| o.additional_metadata.as_ref()) {
        labels.extend(extra.labels.clone());
        annotations.extend(extra.annotations.clone());
    }
    for entry in options
        .map(|o| o.additional_metadata_list.as_slice())
        .unwrap_or_default()
    {
        let selected = entry
            .namespace_selector
            .as_ref()
            .is_none_or(|s| selector::matches(s, &ns.labels));
        if selected {
            labels.extend(entry.labels.clone());
            annotations.extend(entry.annotations.clone());
        }
    }
    // Managed metadata of namespace rules (allow rules without conditions whose selector matches):
    // kept on existing namespaces too, as Capsule's RuleStatus controller does.
    for rule in &tenant.spec.rules {
        let Some(enforce) = rule.enforce.as_ref() else {
            continue;
        };
        let selected = rule
            .namespace_selector
            .as_ref()
            .is_none_or(|s| selector::matches(s, &ns.labels));
        if !selected
            || !rule.audience.is_empty()
            || enforce.action != bulkhead_api::namespace_rules::Action::Allow
            || !enforce.conditions.is_empty()
        {
            continue;
        }
        for m in enforce
            .metadata
            .iter()
            .filter(|m| crate::admission::tenant_rules::targets_namespaces(m))
        {
            for (into, from) in [(&mut labels, &m.labels), (&mut annotations, &m.annotations)] {
                for (key, value) in from {
                    if let Some(managed) = &value.managed {
                        into.insert(key.clone(), managed.clone());
                    }
                }
            }
        }
    }
    if !tenant.spec.node_selector.is_empty() {
        let selector: Vec<String> = tenant
            .spec
            .node_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        annotations.insert(labels::NODE_SELECTOR_ANNOTATION.to_owned(), selector.join(","));
    }
    labels.insert(labels::TENANT.to_owned(), name.to_owned());
    NamespaceMetadata {
        namespace: ns.name.clone(),
        labels,
        annotations,
    }
}

/// A RoleBinding to make in every selected namespace: its name, cluster role, subjects, labels and
/// annotations.
type Binding<'t> = (
    String,
    String,
    Vec<Subject>,
    &'t BTreeMap<String, String>,
    &'t BTreeMap<String, String>,
);

/// The RoleBindings `rules[].permissions.bindings` give namespace `ns` (rules whose selector matches
/// its labels), subject names rendered as Go templates over the tenant and the namespace. A template
/// that fails is reported in `problems` (once per rule and binding) and its binding is not made.
fn rule_bindings<'t>(
    tenant: &'t Tenant,
    tenant_json: &std::cell::OnceCell<serde_json::Value>,
    ns: &TenantNamespace,
    problems: &mut Vec<String>,
) -> Vec<Binding<'t>> {
    let mut out = Vec::new();
    let data = std::cell::OnceCell::new();
    let data = || {
        data.get_or_init(|| {
            serde_json::json!({
                "tenant": tenant_json.get_or_init(|| serde_json::to_value(tenant).unwrap_or_default()),
                "namespace": {"metadata": {"name": ns.name, "labels": ns.labels}},
            })
        })
    };
    for (i, rule) in tenant.spec.rules.iter().enumerate() {
        let selected = rule
            .namespace_selector
            .as_ref()
            .is_none_or(|s| selector::matches(s, &ns.labels));
        if !selected {
            continue;
        }
        for (b, binding) in rule
            .permissions
            .iter()
            .flat_map(|p| p.bindings.iter())
            .enumerate()
        {
            let mut subjects = Vec::new();
            let mut failed = None;
            for subject in &binding.subjects {
                let rendered = if subject.name.contains("{{") {
                    crate::template::render_text(&subject.name, data())
                } else {
                    Ok(subject.name.clone())
                };
                match rendered {
                    Ok(name) => subjects.push(Subject {
                        name,
                        ..subject.clone()
                    }),
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                let problem = format!("rules[{i}].permissions.bindings[{b}]: a subject's name {e}");
                if !problems.contains(&problem) {
                    problems.push(problem);
                }
                continue;
            }
            let subjects_key = serde_json::to_string(&subjects).unwrap_or_default();
            let name = readable_name(
                "bulkhead-rule",
                &binding.cluster_role_name,
                &[&binding.cluster_role_name, &subjects_key],
            );
            out.push((
                name,
                binding.cluster_role_name.clone(),
                subjects,
                &binding.labels,
                &binding.annotations,
            ));
        }
    }
    out
}

/// The cluster-wide objects of the configuration: the namespace provisioner and deleter roles, and the
/// binding that lets the tenant user groups create namespaces.
/// `service_accounts` are bound to the provisioner role beside the groups: the ServiceAccounts
/// TenantOwners name with `aggregate`, and the promoted ones of tenant namespaces.
pub fn cluster_objects(
    user_groups: &[String],
    service_accounts: &[bulkhead_api::Subject],
) -> (Vec<ClusterRole>, ClusterRoleBinding) {
    let managed = BTreeMap::from([(labels::MANAGED_BY.to_owned(), labels::MANAGED_BY_VALUE.to_owned())]);
    let role = |name: &str, verbs: &[&str]| ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(managed.clone()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["namespaces".into()]),
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            ..Default::default()
        }]),
        aggregation_rule: None,
    };
    let roles = vec![
        role(labels::NAMESPACE_PROVISIONER_ROLE, &["create"]),
        role(labels::NAMESPACE_DELETER_ROLE, &["delete"]),
    ];
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(labels::NAMESPACE_PROVISIONER_ROLE.to_owned()),
            labels: Some(managed),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: labels::NAMESPACE_PROVISIONER_ROLE.into(),
        },
        subjects: Some(
            user_groups
                .iter()
                .map(|g| Subject {
                    kind: "Group".into(),
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    name: g.clone(),
                    namespace: None,
                })
                .chain(service_accounts.iter().filter_map(|sa| {
                    let (namespace, name) = sa.service_account()?;
                    Some(Subject {
                        kind: "ServiceAccount".into(),
                        api_group: Some(String::new()),
                        name: name.to_owned(),
                        namespace: Some(namespace.to_owned()),
                    })
                }))
                .collect(),
        ),
    };
    (roles, binding)
}

/// What the cache knows of a namespace a tenant lists in `defaultNamespaces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Existing {
    /// No such namespace.
    Absent,
    /// It exists; its tenant label, if any, and whether it is being deleted.
    Present {
        /// The tenant it belongs to.
        tenant: Option<String>,
        /// Whether it is terminating.
        terminating: bool,
    },
}

/// What the controller does about a tenant's default namespaces.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DefaultNamespaces {
    /// The namespaces to create, as the tenant's.
    pub create: Vec<Namespace>,
    /// Entries that cannot be made, as sentences for the status and Events.
    pub problems: Vec<String>,
}

/// The cluster roles a Tenant hands out that the configuration's `bindableClusterRoles` does not list
/// (none when the list is empty), as sentences naming the field.
pub fn unbindable_roles(tenant: &Tenant, config: &BulkheadConfigurationSpec) -> Vec<String> {
    let bindable = &config.bindable_cluster_roles;
    if bindable.is_empty() {
        return Vec::new();
    }
    let allowed = |role: &str| bindable.iter().any(|b| b == role);
    let list = bindable.join(", ");
    let mut problems = Vec::new();
    for (i, owner) in tenant.spec.owners.iter().enumerate() {
        for role in owner.bound_cluster_roles().filter(|r| !allowed(r)) {
            problems.push(format!(
                "owners[{i}] (`{}`): cluster role `{role}` is not one tenants may be given; the BulkheadConfiguration's bindableClusterRoles are {list}",
                owner.name
            ));
        }
    }
    for (i, extra) in tenant.spec.additional_role_bindings.iter().enumerate() {
        if !allowed(&extra.cluster_role_name) {
            problems.push(format!(
                "additionalRoleBindings[{i}]: cluster role `{}` is not one tenants may be given; the BulkheadConfiguration's bindableClusterRoles are {list}",
                extra.cluster_role_name
            ));
        }
    }
    for (i, rule) in tenant.spec.rules.iter().enumerate() {
        for (b, binding) in rule.permissions.iter().flat_map(|p| &p.bindings).enumerate() {
            if !allowed(&binding.cluster_role_name) {
                problems.push(format!(
                    "rules[{i}].permissions.bindings[{b}]: cluster role `{}` is not one tenants may be given; the BulkheadConfiguration's bindableClusterRoles are {list}",
                    binding.cluster_role_name
                ));
            }
        }
    }
    problems
}

/// The Tenant as the controller provisions it: without the cluster roles [`unbindable_roles`] reports
/// (their RoleBindings are not made, and go if they were).
pub fn without_unbindable_roles(tenant: &Tenant, config: &BulkheadConfigurationSpec) -> Tenant {
    let mut out = tenant.clone();
    let bindable = &config.bindable_cluster_roles;
    if bindable.is_empty() {
        return out;
    }
    let allowed = |role: &str| bindable.iter().any(|b| b == role);
    for owner in &mut out.spec.owners {
        // Judged by the role bound (Capsule's deleter role is Bulkhead's), kept as written.
        let kept: Vec<String> = owner
            .cluster_roles
            .iter()
            .zip(owner.bound_cluster_roles())
            .filter(|(_, bound)| allowed(bound))
            .map(|(written, _)| written.clone())
            .collect();
        owner.cluster_roles = kept;
    }
    out.spec
        .additional_role_bindings
        .retain(|extra| allowed(&extra.cluster_role_name));
    for permissions in out.spec.rules.iter_mut().filter_map(|r| r.permissions.as_mut()) {
        permissions
            .bindings
            .retain(|binding| allowed(&binding.cluster_role_name));
    }
    out
}

/// The problems of a tenant's `defaultNamespaces` that the spec and the configuration alone show: a
/// name the tenant's prefix rule or `protectedNamespaceRegex` forbids, more entries than the
/// namespace quota. The admission webhook refuses such a Tenant; the controller reports them.
pub fn default_namespace_problems(tenant: &Tenant, config: &BulkheadConfigurationSpec) -> Vec<String> {
    let t = tenant.metadata.name.as_deref().unwrap_or_default();
    let Some(options) = tenant.spec.namespace_options.as_ref() else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    let prefix = format!("{t}-");
    let forced = tenant
        .spec
        .force_tenant_prefix
        .unwrap_or(config.force_tenant_prefix);
    let protected = config
        .protected_namespace_regex
        .as_deref()
        .filter(|r| !r.is_empty());
    for entry in &options.default_namespaces {
        let name = entry.name.as_str();
        if forced && !name.starts_with(&prefix) {
            problems.push(format!(
                "namespaceOptions.defaultNamespaces: `{name}` must be named `{prefix}<name>`: tenant `{t}` requires its prefix"
            ));
        }
        if let Some(re) = protected
            && let Ok(true) = crate::admission::pattern_matches(re, name)
        {
            problems.push(format!(
                "namespaceOptions.defaultNamespaces: `{name}` is protected: it matches protectedNamespaceRegex `{re}`"
            ));
        }
        if entry.labels.get(labels::TENANT).is_some_and(|v| v != t) {
            problems.push(format!(
                "namespaceOptions.defaultNamespaces: `{name}` cannot carry the label `{}` of another tenant",
                labels::TENANT
            ));
        }
    }
    if let Some(quota) = options.quota {
        let wanted = options.default_namespaces.len();
        if wanted > usize::try_from(quota).unwrap_or(0) {
            problems.push(format!(
                "namespaceOptions.defaultNamespaces: {wanted} default namespaces are more than the namespace quota of {quota}"
            ));
        }
    }
    problems
}

/// The default namespaces to create for a tenant that has `count` namespaces now, given what the cache
/// holds of each name (`existing`). A name that exists and is another tenant's (or no tenant's) is never
/// taken: that is a problem to report. A namespace being deleted is created again once it is gone. The
/// namespace quota holds: no namespace is created past it.
pub fn default_namespaces(
    tenant: &Tenant,
    config: &BulkheadConfigurationSpec,
    count: usize,
    existing: impl Fn(&str) -> Existing,
) -> DefaultNamespaces {
    let t = tenant.metadata.name.as_deref().unwrap_or_default();
    let Some(options) = tenant.spec.namespace_options.as_ref() else {
        return DefaultNamespaces::default();
    };
    let problems = default_namespace_problems(tenant, config);
    if !problems.is_empty() {
        return DefaultNamespaces {
            create: Vec::new(),
            problems,
        };
    }
    let mut out = DefaultNamespaces::default();
    let quota = options.quota.map(|q| usize::try_from(q).unwrap_or(0));
    let mut count = count;
    for entry in &options.default_namespaces {
        let name = entry.name.as_str();
        match existing(name) {
            Existing::Present {
                tenant: Some(owner), ..
            } if owner == t => continue,
            Existing::Present {
                terminating: true, ..
            } => continue,
            Existing::Present { tenant, .. } => {
                let whose = tenant.map_or_else(|| "no tenant".to_owned(), |o| format!("tenant `{o}`"));
                out.problems.push(format!(
                    "namespaceOptions.defaultNamespaces: namespace `{name}` exists and belongs to {whose}: Bulkhead does not take it"
                ));
                continue;
            }
            Existing::Absent => {}
        }
        if quota.is_some_and(|q| count >= q) {
            out.problems.push(format!(
                "namespaceOptions.defaultNamespaces: namespace `{name}` is over the namespace quota of tenant `{t}`: it has {count} of {} namespaces",
                quota.unwrap_or_default()
            ));
            continue;
        }
        count += 1;
        let managed = namespace_metadata(
            tenant,
            &TenantNamespace {
                name: name.to_owned(),
                labels: entry.labels.clone(),
            },
        );
        let mut labels = entry.labels.clone();
        labels.extend(managed.labels);
        let mut annotations = entry.annotations.clone();
        annotations.extend(managed.annotations);
        out.create.push(Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                owner_references: Some(vec![tenant_owner_reference(tenant)]),
                ..Default::default()
            },
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_api::tenant::{QuotaScope, ResourceQuotas};
    use k8s_openapi::api::core::v1::ResourceQuotaSpec;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    fn full() -> Tenant {
        let text = include_str!("../../../examples/tenant-full.yaml");
        let mut value: serde_json::Value = serde_saphyr::from_str(text).unwrap();
        value["metadata"]["uid"] = json!("uid-solar");
        serde_json::from_value(value).unwrap()
    }

    fn ns(name: &str, labels: &[(&str, &str)]) -> TenantNamespace {
        TenantNamespace {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        }
    }

    fn names<T: k8s_openapi::Metadata<Ty = ObjectMeta>>(objects: &[T], namespace: &str) -> Vec<String> {
        let mut names: Vec<String> = objects
            .iter()
            .filter(|o| o.metadata().namespace.as_deref() == Some(namespace))
            .map(|o| o.metadata().name.clone().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_full_example_wants_every_object_in_every_namespace() {
        let tenant = full();
        let namespaces = [ns("solar-dev", &[]), ns("solar-prod", &[("env", "prod")])];
        let d = desired_state(&tenant, &namespaces, &QuotaObserved::default());
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        // alice: admin + deleter; solar-devs: edit; gitops: admin; one additional binding.
        for namespace in ["solar-dev", "solar-prod"] {
            assert_eq!(names(&d.role_bindings, namespace).len(), 5, "{namespace}");
            assert_eq!(
                names(&d.resource_quotas, namespace),
                ["bulkhead-solar-0", "bulkhead-solar-1"]
            );
            assert_eq!(names(&d.limit_ranges, namespace), ["bulkhead-solar-0"]);
            assert_eq!(names(&d.network_policies, namespace), ["bulkhead-solar-0"]);
        }
        let roles: Vec<(&str, &str)> = d
            .role_bindings
            .iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some("solar-dev"))
            .map(|b| {
                (
                    b.role_ref.name.as_str(),
                    b.subjects.as_ref().unwrap()[0].name.as_str(),
                )
            })
            .collect();
        for expected in [
            ("admin", "alice"),
            ("bulkhead-namespace-deleter", "alice"),
            ("edit", "solar-devs"),
            ("admin", "gitops"),
            ("view", "solar-auditors"),
        ] {
            assert!(roles.contains(&expected), "{expected:?} in {roles:?}");
        }

        let gitops = d
            .role_bindings
            .iter()
            .find(|b| b.subjects.as_ref().unwrap()[0].name == "gitops")
            .unwrap();
        let subject = &gitops.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (subject.kind.as_str(), subject.namespace.as_deref()),
            ("ServiceAccount", Some("solar-system"))
        );
        let alice = d
            .role_bindings
            .iter()
            .find(|b| b.subjects.as_ref().unwrap()[0].name == "alice")
            .unwrap();
        let labels = alice.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "solar", "the owner's labels");
        assert_eq!(labels[bulkhead_api::labels::TENANT], "solar");
        assert_eq!(labels[bulkhead_api::labels::MANAGED_BY], "bulkhead");
        assert_eq!(
            alice.metadata.annotations.as_ref().unwrap()["contact"],
            "alice@example.com"
        );
        let owner = &alice.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("Tenant", "solar", "uid-solar", Some(true))
        );

        let np = &d.network_policies[0];
        assert_eq!(
            np.spec,
            Some(tenant.spec.network_policies.as_ref().unwrap().items[0].clone())
        );
    }

    #[test]
    fn namespace_metadata_follows_selectors_and_the_tenant_label_wins() {
        let mut tenant = full();
        tenant
            .spec
            .namespace_options
            .as_mut()
            .unwrap()
            .additional_metadata
            .as_mut()
            .unwrap()
            .labels
            .insert(bulkhead_api::labels::TENANT.into(), "someone-else".into());
        let d = desired_state(
            &tenant,
            &[ns("solar-dev", &[]), ns("solar-prod", &[("env", "prod")])],
            &QuotaObserved::default(),
        );
        let dev = &d.namespaces[0];
        let prod = &d.namespaces[1];
        assert_eq!(dev.labels[bulkhead_api::labels::TENANT], "solar");
        assert_eq!(dev.labels["cost-center"], "solar");
        assert_eq!(
            dev.labels.get("pod-security.kubernetes.io/enforce"),
            None,
            "selector does not match dev"
        );
        assert_eq!(prod.labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(prod.annotations["example.com/tier"], "gold");
        assert_eq!(
            dev.annotations[bulkhead_api::labels::NODE_SELECTOR_ANNOTATION],
            "kubernetes.io/os=linux,pool=solar"
        );
        assert_eq!(dev.annotations["backup.example.com/schedule"], "nightly");
    }

    #[test]
    fn binding_names_do_not_move_when_another_owner_goes() {
        let mut tenant = full();
        let before = desired_state(&tenant, &[ns("x", &[])], &QuotaObserved::default());
        tenant.spec.owners.remove(0);
        let after = desired_state(&tenant, &[ns("x", &[])], &QuotaObserved::default());
        let before_names = names(&before.role_bindings, "x");
        let after_names = names(&after.role_bindings, "x");
        assert_eq!(after_names.len(), 3);
        assert!(
            after_names.iter().all(|n| before_names.contains(n)),
            "{after_names:?} vs {before_names:?}"
        );
        // Names are valid object names even for odd owner names, and distinct per role.
        let long = OwnerSpec::new(OwnerKind::User, format!("{}@example.com", "x".repeat(300)));
        let name = owner_binding_name(&long, "admin");
        assert!(name.len() <= 253 && !name.contains('@'), "{name}");
        assert_ne!(
            owner_binding_name(&long, "admin"),
            owner_binding_name(&long, "edit")
        );
        assert_ne!(
            owner_binding_name(&OwnerSpec::new(OwnerKind::User, "devs"), "admin"),
            owner_binding_name(&OwnerSpec::new(OwnerKind::Group, "devs"), "admin"),
            "a user and a group with one name get different bindings"
        );
    }

    #[test]
    fn capsule_role_names_and_invalid_owners() {
        let tenant: Tenant = serde_json::from_value(json!({
            "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "t", "uid": "u"},
            "spec": {"owners": [
                {"kind": "User", "name": "bob", "clusterRoles": ["admin", "capsule-namespace-deleter"]},
                {"kind": "ServiceAccount", "name": "robot"},
            ]},
        }))
        .unwrap();
        let d = desired_state(&tenant, &[ns("t-a", &[])], &QuotaObserved::default());
        let roles: Vec<&str> = d.role_bindings.iter().map(|b| b.role_ref.name.as_str()).collect();
        assert_eq!(roles, ["admin", "bulkhead-namespace-deleter"]);
        assert_eq!(
            d.problems,
            ["owner \"robot\" is a ServiceAccount but not named system:serviceaccount:<namespace>:<name>"]
        );
    }

    #[test]
    fn tenant_scope_quotas_share_the_budget_and_namespace_scope_copies_it() {
        let hard = |pods: &str| ResourceQuotaSpec {
            hard: Some([("pods".to_owned(), Quantity(pods.into()))].into()),
            ..Default::default()
        };
        let mut tenant = full();
        tenant.spec.resource_quotas = Some(ResourceQuotas {
            scope: QuotaScope::Tenant,
            items: vec![hard("10")],
        });
        let usage = QuotaObserved {
            used: [(
                ("a".to_owned(), 0),
                [("pods".to_owned(), Quantity("4".into()))].into(),
            )]
            .into(),
            in_force: QuotaUsage::new(),
        };
        let d = desired_state(&tenant, &[ns("a", &[]), ns("b", &[])], &usage);
        let pods = |n: usize| {
            d.resource_quotas[n].spec.as_ref().unwrap().hard.as_ref().unwrap()["pods"]
                .0
                .clone()
        };
        // 6 pods are left: 3 each, on top of the 4 namespace a uses.
        assert_eq!((pods(0), pods(1)), ("7".to_owned(), "3".to_owned()));
        tenant.spec.resource_quotas.as_mut().unwrap().scope = QuotaScope::Namespace;
        let d = desired_state(&tenant, &[ns("a", &[]), ns("b", &[])], &usage);
        assert!(
            d.resource_quotas
                .iter()
                .all(|q| q.spec.as_ref().unwrap().hard.as_ref().unwrap()["pods"].0 == "10")
        );
    }

    #[test]
    fn no_namespaces_no_objects_and_the_cluster_roles() {
        let d = desired_state(&full(), &[], &QuotaObserved::default());
        assert!(d.role_bindings.is_empty() && d.resource_quotas.is_empty() && d.namespaces.is_empty());
        let (roles, binding) = cluster_objects(
            &["tenants".to_owned()],
            &[bulkhead_api::Subject::ServiceAccount(
                "system:serviceaccount:ci:deployer".into(),
            )],
        );
        let verbs: Vec<(String, Vec<String>)> = roles
            .iter()
            .map(|r| {
                (
                    r.metadata.name.clone().unwrap(),
                    r.rules.as_ref().unwrap()[0].verbs.clone(),
                )
            })
            .collect();
        assert_eq!(
            verbs,
            [
                (
                    "bulkhead-namespace-provisioner".to_owned(),
                    vec!["create".to_owned()]
                ),
                ("bulkhead-namespace-deleter".to_owned(), vec!["delete".to_owned()])
            ]
        );
        let subjects = binding.subjects.unwrap();
        assert_eq!(subjects[0].name, "tenants");
        assert_eq!(
            (
                subjects[1].kind.as_str(),
                subjects[1].namespace.as_deref(),
                subjects[1].name.as_str()
            ),
            ("ServiceAccount", Some("ci"), "deployer")
        );
    }

    fn with_defaults(quota: Option<i32>, names: &[&str]) -> Tenant {
        let mut tenant = Tenant::new("solar", serde_json::from_value(json!({})).unwrap());
        tenant.metadata.uid = Some("uid-solar".into());
        tenant.spec.namespace_options = Some(bulkhead_api::tenant::NamespaceOptions {
            quota,
            additional_metadata: Some(bulkhead_api::common::AdditionalMetadata {
                labels: [("team".to_owned(), "solar".to_owned())].into(),
                annotations: BTreeMap::new(),
            }),
            default_namespaces: names
                .iter()
                .map(|n| bulkhead_api::tenant::DefaultNamespace {
                    name: (*n).into(),
                    labels: [
                        ("env".to_owned(), "dev".to_owned()),
                        (labels::TENANT.to_owned(), "solar".to_owned()),
                    ]
                    .into(),
                    annotations: [("note".to_owned(), "first".to_owned())].into(),
                })
                .collect(),
            ..Default::default()
        });
        tenant
    }

    fn config() -> BulkheadConfigurationSpec {
        serde_json::from_value(json!({})).unwrap()
    }

    #[test]
    fn default_namespaces_are_created_as_the_tenants_and_never_taken_from_others() {
        let tenant = with_defaults(None, &["solar-dev", "solar-prod", "taken", "loose", "going"]);
        let existing = |name: &str| match name {
            "solar-prod" => Existing::Present {
                tenant: Some("solar".into()),
                terminating: false,
            },
            "taken" => Existing::Present {
                tenant: Some("wind".into()),
                terminating: false,
            },
            "loose" => Existing::Present {
                tenant: None,
                terminating: false,
            },
            "going" => Existing::Present {
                tenant: Some("solar".into()),
                terminating: true,
            },
            _ => Existing::Absent,
        };
        let plan = default_namespaces(&tenant, &config(), 2, existing);
        let created: Vec<&str> = plan
            .create
            .iter()
            .map(|n| n.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(created, ["solar-dev"]);
        let ns = &plan.create[0].metadata;
        let labels = ns.labels.as_ref().unwrap();
        assert_eq!(labels[labels::TENANT], "solar");
        assert_eq!(labels["env"], "dev");
        assert_eq!(labels["team"], "solar");
        assert_eq!(ns.annotations.as_ref().unwrap()["note"], "first");
        let owner = &ns.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Tenant", "uid-solar"));
        assert_eq!(
            plan.problems,
            [
                "namespaceOptions.defaultNamespaces: namespace `taken` exists and belongs to tenant `wind`: Bulkhead does not take it",
                "namespaceOptions.defaultNamespaces: namespace `loose` exists and belongs to no tenant: Bulkhead does not take it",
            ]
        );
    }

    #[test]
    fn default_namespaces_keep_the_quota_the_prefix_and_the_protected_names() {
        let tenant = with_defaults(Some(3), &["solar-a", "solar-b"]);
        let plan = default_namespaces(&tenant, &config(), 2, |_| Existing::Absent);
        assert_eq!(plan.create.len(), 1);
        assert_eq!(
            plan.problems,
            [
                "namespaceOptions.defaultNamespaces: namespace `solar-b` is over the namespace quota of tenant `solar`: it has 3 of 3 namespaces"
            ]
        );

        let too_many = with_defaults(Some(1), &["solar-a", "solar-b"]);
        assert_eq!(
            default_namespace_problems(&too_many, &config()),
            [
                "namespaceOptions.defaultNamespaces: 2 default namespaces are more than the namespace quota of 1"
            ]
        );

        let mut prefixed = with_defaults(None, &["dev"]);
        prefixed.spec.force_tenant_prefix = Some(true);
        let plan = default_namespaces(&prefixed, &config(), 0, |_| Existing::Absent);
        assert!(plan.create.is_empty());
        assert_eq!(
            plan.problems,
            [
                "namespaceOptions.defaultNamespaces: `dev` must be named `solar-<name>`: tenant `solar` requires its prefix"
            ]
        );

        let mut protected = config();
        protected.protected_namespace_regex = Some("^kube-".into());
        let system = with_defaults(None, &["kube-system"]);
        assert_eq!(
            default_namespace_problems(&system, &protected),
            [
                "namespaceOptions.defaultNamespaces: `kube-system` is protected: it matches protectedNamespaceRegex `^kube-`"
            ]
        );

        let mut foreign = with_defaults(None, &["solar-a"]);
        foreign
            .spec
            .namespace_options
            .as_mut()
            .unwrap()
            .default_namespaces[0]
            .labels
            .insert(labels::TENANT.into(), "wind".into());
        assert_eq!(default_namespace_problems(&foreign, &config()).len(), 1);
    }

    #[test]
    fn only_bindable_cluster_roles_are_handed_out() {
        // tenant-full.yaml: alice [admin, bulkhead-namespace-deleter], solar-devs [edit], the gitops
        // ServiceAccount [admin], an additional binding to `view` and a rule binding to `view`.
        let mut tenant = full();
        tenant.spec.owners[1].cluster_roles = vec!["edit".into(), "capsule-namespace-deleter".into()];
        let mut config = BulkheadConfigurationSpec::default();
        assert!(
            unbindable_roles(&tenant, &config).is_empty(),
            "an empty list allows any role"
        );
        assert_eq!(without_unbindable_roles(&tenant, &config).spec, tenant.spec);
        config.bindable_cluster_roles = vec!["admin".into(), "bulkhead-namespace-deleter".into()];
        let problems = unbindable_roles(&tenant, &config);
        assert_eq!(
            problems,
            [
                "owners[1] (`solar-devs`): cluster role `edit` is not one tenants may be given; the BulkheadConfiguration's bindableClusterRoles are admin, bulkhead-namespace-deleter",
                "additionalRoleBindings[0]: cluster role `view` is not one tenants may be given; the BulkheadConfiguration's bindableClusterRoles are admin, bulkhead-namespace-deleter",
                "rules[1].permissions.bindings[0]: cluster role `view` is not one tenants may be given; the BulkheadConfiguration's bindableClusterRoles are admin, bulkhead-namespace-deleter",
            ]
        );
        let kept = without_unbindable_roles(&tenant, &config);
        // Capsule's deleter role is Bulkhead's, and so is bindable.
        assert_eq!(kept.spec.owners[1].cluster_roles, ["capsule-namespace-deleter"]);
        assert!(kept.spec.additional_role_bindings.is_empty());
        let roles: std::collections::BTreeSet<String> =
            desired_state(&kept, &[ns("solar-a", &[])], &QuotaObserved::default())
                .role_bindings
                .iter()
                .map(|b| b.role_ref.name.clone())
                .collect();
        assert_eq!(
            roles,
            std::collections::BTreeSet::from(["admin".to_owned(), "bulkhead-namespace-deleter".to_owned()])
        );
    }
}
