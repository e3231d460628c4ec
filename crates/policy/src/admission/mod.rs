//! Admission decisions: what the webhook answers and what `bulkhead check` prints.
//!
//! Each check is a pure function of the request, the objects involved and a [`View`] of the cluster
//! (the shared cache in the webhook, the loaded manifests offline). A verdict is either an allowance,
//! with the JSON patch that mutates the object, or a denial whose message names the offending value
//! and what is allowed.

mod lists;
mod namespace;
mod rules;
mod snapshot;
pub mod tenant_rules;
#[cfg(test)]
mod tests;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bulkhead_api::Tenant;
use bulkhead_api::config::BulkheadConfigurationSpec;
use serde_json::{Value, json};

use crate::identity::{Caller, CallerClass, classify};

pub use lists::{AllowedCheck, check_class as lists_check_class, pattern_matches};
pub use namespace::namespace;
pub use rules::{
    cordoned, managed_object, node, promotion, replicated_object, tenant, tenant_problems,
    tenant_problems_beyond_owners,
};
pub use snapshot::Snapshot;
pub use workload::{
    EXTERNAL_DNS_ANNOTATIONS, GatewayRoute, HostRoute, cidr_contains, device_requests, external_dns_names,
    gateway, gateway_route, ingress, ingress_routes, persistent_volume_claim, pod, pod_binding, registry_of,
    resource_claim, service, service_routes,
};

/// The operation being admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A create.
    Create,
    /// An update, a patch, or a write to a subresource.
    Update,
    /// A delete.
    Delete,
    /// A connect (exec, attach, port-forward, proxy).
    Connect,
}

impl Operation {
    /// Parses the `operation` field of an AdmissionRequest.
    pub fn parse(text: &str) -> Option<Operation> {
        match text {
            "CREATE" => Some(Operation::Create),
            "UPDATE" => Some(Operation::Update),
            "DELETE" => Some(Operation::Delete),
            "CONNECT" => Some(Operation::Connect),
            _ => None,
        }
    }

    /// The name Kubernetes uses, e.g. `CREATE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// The kinds of cluster-scoped classes a tenant may be limited to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClassKind {
    /// storage.k8s.io/v1 StorageClass.
    Storage,
    /// networking.k8s.io/v1 IngressClass.
    Ingress,
    /// scheduling.k8s.io/v1 PriorityClass.
    Priority,
    /// node.k8s.io/v1 RuntimeClass.
    Runtime,
    /// gateway.networking.k8s.io/v1 GatewayClass.
    Gateway,
    /// resource.k8s.io/v1 DeviceClass.
    Device,
}

impl ClassKind {
    /// How a denial names the class, e.g. `storage class`.
    pub fn noun(self) -> &'static str {
        match self {
            ClassKind::Storage => "storage class",
            ClassKind::Ingress => "ingress class",
            ClassKind::Priority => "priority class",
            ClassKind::Runtime => "runtime class",
            ClassKind::Gateway => "gateway class",
            ClassKind::Device => "device class",
        }
    }
}

/// What a check needs to know of a class object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassInfo {
    /// The class's labels (matched by `matchLabels`/`matchExpressions` in the tenant's allowed list).
    pub labels: BTreeMap<String, String>,
    /// A PriorityClass's value, copied into `spec.priority` when the class is injected.
    pub value: Option<i32>,
}

/// The cluster as a check sees it. The webhook answers from the shared cache; `bulkhead check` from
/// the manifests it loaded.
pub trait View {
    /// The Tenant of this name.
    fn tenant(&self, name: &str) -> Option<Arc<Tenant>>;
    /// The tenants that list the caller (its user, a group, or its service account) as an owner.
    fn tenants_owned_by(&self, caller: &Caller) -> BTreeSet<String>;
    /// Whether the caller is a service account that a TenantOwner with `aggregate` names (a tenant user
    /// wherever it lives).
    fn is_aggregated_owner(&self, _caller: &Caller) -> bool {
        false
    }
    /// The labels of a namespace, if it is known.
    fn namespace_labels(&self, _namespace: &str) -> Option<BTreeMap<String, String>> {
        None
    }
    /// How many namespaces the tenant has now.
    fn namespace_count(&self, tenant: &str) -> usize;
    /// The tenant a namespace belongs to, by its tenant label.
    fn tenant_of_namespace(&self, namespace: &str) -> Option<String>;
    /// A class object, if it exists.
    fn class(&self, kind: ClassKind, name: &str) -> Option<ClassInfo>;
    /// The tenant label of a PersistentVolume: `None` when the volume is unknown, `Some(None)` when it
    /// belongs to no tenant.
    fn persistent_volume_tenant(&self, name: &str) -> Option<Option<String>>;
    /// The routes that already serve `host` (any namespace): Ingress rules, Gateway API route
    /// hostnames, and the names External DNS publishes from annotations on Ingresses and Services.
    fn host_routes(&self, host: &str) -> Vec<HostRoute>;
    /// The user a replicating resource writes as, by its `bulkhead.dev/replicated-by` value: the
    /// ServiceAccount of a TenantResource; `None` for a GlobalTenantResource (it writes as Bulkhead) or
    /// an unknown resource.
    fn replication_writer(&self, owner: &str) -> Option<String>;
    /// The labels of the node of this name, if it exists.
    fn node_labels(&self, name: &str) -> Option<BTreeMap<String, String>>;
}

/// The request as every check sees it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The operation.
    pub operation: Operation,
    /// The subresource written (`status`, `finalize`), if any.
    pub subresource: Option<&'a str>,
    /// The caller.
    pub caller: &'a Caller,
    /// The caller's class, decided once with [`classify_caller`].
    pub class: CallerClass,
    /// The cluster-wide configuration.
    pub config: &'a BulkheadConfigurationSpec,
    /// Whether this is the mutating call (which may patch) rather than the validating one (which
    /// sees the object after every mutation and must refuse what a patch would have mended).
    pub mutating: bool,
    /// Bulkhead's own user name (the `Controller` audience of namespace rules).
    pub own_identity: &'a str,
}

/// Classifies the caller; a service account counts as a tenant user when its namespace is a tenant's, or
/// when an aggregated TenantOwner names it.
pub fn classify_caller(
    view: &dyn View,
    config: &BulkheadConfigurationSpec,
    own_identity: &str,
    caller: &Caller,
) -> CallerClass {
    let in_tenant_namespace = caller
        .service_account_namespace()
        .is_some_and(|ns| view.tenant_of_namespace(ns).is_some())
        || view.is_aggregated_owner(caller);
    classify(config, own_identity, caller, in_tenant_namespace)
}

/// A denial: the message the caller reads and the tenant whose rule denied it (for an Event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// A plain sentence naming the offending value and what is allowed.
    pub message: String,
    /// The tenant whose rule denied the request, if any.
    pub tenant: Option<String>,
}

/// The answer to one admission request.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Allowed, with JSON patch operations (RFC 6902) to apply; empty when nothing changes.
    Allow(Vec<Value>),
    /// Denied.
    Deny(Denial),
}

impl Verdict {
    /// An allowance without changes.
    pub fn allow() -> Verdict {
        Verdict::Allow(Vec::new())
    }

    /// A denial by `tenant`'s rules (or by no tenant's).
    pub fn deny(tenant: Option<&str>, message: impl Into<String>) -> Verdict {
        Verdict::Deny(Denial {
            message: message.into(),
            tenant: tenant.map(str::to_owned),
        })
    }

    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allow(_))
    }

    /// The denial message, if denied.
    pub fn message(&self) -> Option<&str> {
        match self {
            Verdict::Allow(_) => None,
            Verdict::Deny(d) => Some(&d.message),
        }
    }
}

/// Escapes one JSON pointer segment (RFC 6901): `~` -> `~0`, `/` -> `~1`.
pub fn pointer_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Patch operations that set `entries` in the map at `/metadata/<field>` (labels or annotations),
/// given the object's current map (`None` when the field is absent). Entries already set to the same
/// value produce nothing.
pub(crate) fn metadata_patch(
    field: &str,
    current: Option<&BTreeMap<String, String>>,
    entries: &BTreeMap<String, String>,
) -> Vec<Value> {
    let changed: BTreeMap<&String, &String> = entries
        .iter()
        .filter(|(k, v)| current.and_then(|c| c.get(*k)) != Some(*v))
        .collect();
    if changed.is_empty() {
        return Vec::new();
    }
    match current {
        None => vec![json!({"op": "add", "path": format!("/metadata/{field}"), "value": changed})],
        Some(_) => changed
            .into_iter()
            .map(|(k, v)| {
                json!({"op": "add", "path": format!("/metadata/{field}/{}", pointer_segment(k)), "value": v})
            })
            .collect(),
    }
}

/// `a, b, c` — or `none` for an empty list.
pub(crate) fn join_or_none<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let joined = items
        .into_iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ");
    if joined.is_empty() {
        "none".to_owned()
    } else {
        joined
    }
}
