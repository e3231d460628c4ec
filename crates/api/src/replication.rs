//! Replication: GlobalTenantResource and TenantResource copy objects into tenant namespaces.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::AdditionalMetadata;

/// Copies objects into the namespaces of every Tenant its `tenantSelector` matches. Writes as Bulkhead.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "GlobalTenantResource",
    shortname = "gtr",
    category = "bulkhead",
    status = "ReplicationStatus",
    doc = "Copies objects into the namespaces of every Tenant its tenantSelector matches. Writes as Bulkhead.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GlobalTenantResourceSpec {
    /// Which Tenants, by their labels; all Tenants when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_selector: Option<LabelSelector>,
    /// How often everything is applied again even when nothing changed (for example `60s`, `5m`).
    #[serde(default = "default_resync_period")]
    pub resync_period: String,
    /// Whether the objects created are deleted when their item, their namespace's selection or this
    /// resource goes away.
    #[serde(default = "yes")]
    pub pruning_on_delete: bool,
    /// What to copy, and where.
    #[serde(default)]
    pub resources: Vec<ReplicatedResources>,
}

/// Copies objects into the namespaces of its own tenant only. Writes as a ServiceAccount of the tenant,
/// so RBAC limits it exactly as it limits the tenant.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "TenantResource",
    namespaced,
    shortname = "tr",
    category = "bulkhead",
    status = "ReplicationStatus",
    doc = "Copies objects into the namespaces of its own tenant only, writing as a ServiceAccount of the tenant.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TenantResourceSpec {
    /// How often everything is applied again even when nothing changed (for example `60s`, `5m`).
    #[serde(default = "default_resync_period")]
    pub resync_period: String,
    /// Whether the objects created are deleted when their item, their namespace's selection or this
    /// resource goes away.
    #[serde(default = "yes")]
    pub pruning_on_delete: bool,
    /// The ServiceAccount, in this resource's namespace, whose identity every write is made with.
    /// Bulkhead's configured default is used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountRef>,
    /// What to copy, and where.
    #[serde(default)]
    pub resources: Vec<ReplicatedResources>,
}

/// A ServiceAccount in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ServiceAccountRef {
    /// The ServiceAccount's name.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// One group of objects to copy and the namespaces they go to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedResources {
    /// Which of the selected tenants' namespaces, by their labels; all of them when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Existing objects to copy, found by kind, namespace and labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaced_items: Vec<NamespacedItem>,
    /// Complete manifests to create in each namespace (their own namespace is ignored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::raw_items")]
    pub raw_items: Vec<serde_json::Value>,
    /// Labels and annotations added to every object created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metadata: Option<AdditionalMetadata>,
}

/// Existing objects to copy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedItem {
    /// API version of the objects, e.g. `v1`.
    #[schemars(length(min = 1))]
    pub api_version: String,
    /// Kind of the objects, e.g. `ConfigMap`.
    #[schemars(length(min = 1))]
    pub kind: String,
    /// The namespace the objects are copied from.
    #[schemars(length(min = 1))]
    pub namespace: String,
    /// Which objects in that namespace, by their labels; all of that kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// What a replication resource last did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationStatus {
    /// Every object it manages, with the result of the last attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processed_items: Vec<ProcessedItem>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions; `Ready` says whether every item was applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One object a replication resource manages.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessedItem {
    /// API version of the object.
    pub api_version: String,
    /// Kind of the object.
    pub kind: String,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// Tenant the namespace belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Applied, or the reason it could not be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whether the last attempt succeeded.
    #[serde(default)]
    pub applied: bool,
}

fn default_resync_period() -> String {
    "60s".to_owned()
}

fn yes() -> bool {
    true
}
