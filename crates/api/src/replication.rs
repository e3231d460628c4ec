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
    /// Where items go: `Namespace` (the default) into every selected namespace, `Tenant` once per
    /// selected tenant (where the item's own namespace says, or cluster-wide for a cluster-scoped
    /// kind), `None` once in all.
    #[serde(default)]
    pub scope: ReplicationScope,
    /// How existing objects are treated.
    #[serde(default)]
    pub settings: ReplicationOptions,
    /// GlobalTenantResources that must be Ready before this one is applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependsOn>,
    /// While true nothing is applied or deleted (for maintenance); the status says so.
    #[serde(default)]
    pub cordoned: bool,
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
    /// Where items go: `Namespace` (the default) into every selected namespace of the tenant, `Tenant`
    /// once (into the namespace the item names, which must be the tenant's, else this resource's own).
    /// Cluster-scoped kinds are never written by a TenantResource.
    #[serde(default)]
    pub scope: ReplicationScope,
    /// How existing objects are treated.
    #[serde(default)]
    pub settings: ReplicationOptions,
    /// TenantResources of this namespace that must be Ready before this one is applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependsOn>,
    /// While true nothing is applied or deleted (for maintenance); the status says so.
    #[serde(default)]
    pub cordoned: bool,
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

/// Where a replication resource's items go.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReplicationScope {
    /// Into every selected namespace.
    #[default]
    Namespace,
    /// Once per selected tenant.
    Tenant,
    /// Once in all (GlobalTenantResource; a TenantResource treats it as `Tenant`).
    None,
}

/// How a replication resource treats objects it did not create.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ReplicationOptions {
    /// Manage objects that exist already and were not created by this resource: its fields are applied
    /// onto them, and pruning removes only those fields, never the object. Without it such an object is
    /// left alone and reported.
    #[serde(default)]
    pub adopt: bool,
    /// Take the fields of an adopted object that another field manager owns (server-side apply
    /// `force`). Objects this resource created are always kept as it wants them.
    #[serde(default)]
    pub force: bool,
}

/// Another replication resource, by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct DependsOn {
    /// Its name (a TenantResource: in the same namespace).
    #[schemars(length(min = 1))]
    pub name: String,
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
    /// Go templates, each rendering any number of YAML manifests (`---` between them), over
    /// `$.tenant`, `$.namespace` and the `context` objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generators: Vec<Generator>,
    /// Objects read before the templates run, put in the template data under their `index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<TemplateContext>,
    /// Labels and annotations added to every object created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metadata: Option<AdditionalMetadata>,
}

/// A Go template producing manifests.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Generator {
    /// What a key missing from the data gives: `zero` and `invalid` print `<no value>` (as Go does
    /// for maps), `error` fails the item.
    #[serde(default)]
    pub missing_key: MissingKey,
    /// The template: YAML manifests, several separated by `---`.
    #[serde(default)]
    pub template: String,
}

/// Go's `missingkey` option.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MissingKey {
    /// Missing keys print `<no value>`.
    #[default]
    Zero,
    /// Missing keys print `<no value>`.
    Invalid,
    /// A missing key is an error.
    Error,
}

/// Objects read for the templates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TemplateContext {
    /// Each kind (and namespace, name or selector) to read.
    #[serde(default)]
    pub resources: Vec<ContextResource>,
}

/// Objects of one kind read for the templates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextResource {
    /// API version, e.g. `v1`.
    #[schemars(length(min = 1))]
    pub api_version: String,
    /// Kind, e.g. `Secret`.
    #[schemars(length(min = 1))]
    pub kind: String,
    /// The key in the template data (`$.<index>`): a list, or with `name` the object itself. When
    /// absent, the kind in lower case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// One object by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The namespace to read from (`{{tenant.name}}` and `{{namespace}}` are replaced); absent: the
    /// target namespace in scope `Namespace`, all namespaces otherwise (a TenantResource: its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// With `name`: whether a missing object is fine (the default) or an error.
    #[serde(default = "yes")]
    pub optional: bool,
    /// Which objects, by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
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
    /// The namespace the objects are copied from (`{{tenant.name}}` is replaced). Absent: a
    /// TenantResource's own namespace; a GlobalTenantResource must name one.
    #[serde(default)]
    pub namespace: String,
    /// One object by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// With `name`: whether a missing object is fine (the default) or reported.
    #[serde(default = "yes")]
    pub optional: bool,
    /// Which objects in that namespace, by their labels (values may use `{{tenant.name}}`); all of
    /// that kind when absent.
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
    /// Whether the object existed before and was adopted (`settings.adopt`): pruning then removes
    /// only the fields this resource set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
}

fn default_resync_period() -> String {
    "60s".to_owned()
}

fn yes() -> bool {
    true
}
