//! ProxySetting: a tenant owner lends their proxy view of the tenant to other subjects.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::owner::{OwnerKind, ProxyOperation, ProxySettings, Subject};

/// Lets a tenant owner give other users, groups or service accounts the same view of the tenant through
/// the proxy (its namespaces, and the cluster-scoped objects listed). Valid only in a tenant namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "ProxySetting",
    namespaced,
    shortname = "pxs",
    category = "bulkhead",
    doc = "Lets a tenant owner give other subjects the same view of the tenant through the proxy."
)]
#[serde(rename_all = "camelCase")]
pub struct ProxySettingSpec {
    /// The subjects granted the view.
    pub subjects: Vec<ProxySubject>,
}

/// A subject granted the tenant's proxy view.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySubject {
    /// User, Group or ServiceAccount.
    pub kind: OwnerKind,
    /// The name; for a ServiceAccount, `system:serviceaccount:<namespace>:<name>`.
    #[schemars(length(min = 1))]
    pub name: String,
    /// What the proxy lets this subject do among cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_settings: Vec<ProxySettings>,
}

impl ProxySubject {
    /// The subject this entry names, as a caller's subjects are named (a user name of the form
    /// `system:serviceaccount:...` is that service account).
    pub fn subject(&self) -> Subject {
        Subject::named(self.kind, &self.name)
    }
}

/// Lets subjects list (and, if granted, update or delete) chosen cluster-scoped objects through the
/// proxy, whatever their tenants: capsule-proxy's GlobalProxySettings. Written by administrators.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "GlobalProxySettings",
    plural = "globalproxysettings",
    shortname = "gpxs",
    category = "bulkhead",
    doc = "Lets subjects list, update or delete chosen cluster-scoped objects through the proxy, selected by label, whatever their tenants."
)]
#[serde(rename_all = "camelCase")]
pub struct GlobalProxySettingsSpec {
    /// Each rule grants its subjects its cluster resources.
    #[schemars(length(max = 32))]
    pub rules: Vec<GlobalProxyRule>,
}

/// Subjects, and what they may do among cluster-scoped objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlobalProxyRule {
    /// The users, groups and service accounts granted.
    #[schemars(length(min = 1, max = 64))]
    pub subjects: Vec<GlobalProxySubject>,
    /// The cluster-scoped objects granted.
    #[schemars(length(max = 16))]
    pub cluster_resources: Vec<ClusterResource>,
}

/// A subject of a global rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlobalProxySubject {
    /// User, Group or ServiceAccount.
    pub kind: OwnerKind,
    /// The name; for a ServiceAccount, `system:serviceaccount:<namespace>:<name>`.
    #[schemars(length(min = 1, max = 512))]
    pub name: String,
}

impl GlobalProxySubject {
    /// The subject this entry names, as a caller's subjects are named.
    pub fn subject(&self) -> Subject {
        Subject::named(self.kind, &self.name)
    }
}

/// Cluster-scoped resources, as in a ClusterRole rule, with the operations granted and a label selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterResource {
    /// API groups (`""` for the core group, `*` for all).
    #[schemars(length(min = 1, max = 64))]
    pub api_groups: Vec<String>,
    /// Resources (plural, `*` for all).
    #[schemars(length(min = 1, max = 64))]
    pub resources: Vec<String>,
    /// `List` (list, get, watch), `Update` (update, patch), `Delete`.
    #[schemars(length(min = 1))]
    pub operations: Vec<ProxyOperation>,
    /// Only objects whose labels match; every object when absent or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}
