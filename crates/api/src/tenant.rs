//! The Tenant: one team's slice of the cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LimitRangeSpec, ResourceQuotaSpec};
use k8s_openapi::api::networking::v1::NetworkPolicySpec;
use k8s_openapi::api::rbac::v1::Subject as RbacSubject;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    AdditionalMetadata, AllowedList, ClassAllowedList, ForbiddenList, RequiredMetadata, SelectedMetadata,
};
use crate::owner::{OwnerKind, OwnerSpec};

/// A Tenant gives a team a slice of the cluster: namespaces its owners create themselves, with RBAC,
/// quotas, limit ranges, network policies and metadata applied to each, and rules on what may run there.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "Tenant",
    shortname = "tnt",
    category = "bulkhead",
    status = "TenantStatus",
    doc = "A Tenant gives a team a slice of the cluster: namespaces its owners create themselves, with RBAC, quotas, limit ranges, network policies and metadata applied to each, and guard rails on what may run there.",
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state","description":"Active, or Cordoned while the tenant is frozen"}"#,
    printcolumn = r#"{"name":"Namespace quota","type":"integer","jsonPath":".spec.namespaceOptions.quota","description":"How many namespaces the tenant may have"}"#,
    printcolumn = r#"{"name":"Namespace count","type":"integer","jsonPath":".status.size","description":"How many namespaces the tenant has"}"#,
    printcolumn = r#"{"name":"Node selector","type":"string","jsonPath":".spec.nodeSelector","description":"Node selector applied to the tenant's pods"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Who owns the tenant. Owners create the tenant's namespaces and get the listed cluster roles in each.
    #[serde(default)]
    pub owners: Vec<OwnerSpec>,
    /// Options for the tenant's namespaces: how many, and which metadata they get, need or may not have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_options: Option<NamespaceOptions>,
    /// Options for Services: metadata stamped on them, which types are allowed, which external IPs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_options: Option<ServiceOptions>,
    /// Options for Pods: metadata stamped on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_options: Option<PodOptions>,
    /// StorageClasses PersistentVolumeClaims in the tenant may use; `default` is set on claims without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_classes: Option<ClassAllowedList>,
    /// PriorityClasses Pods in the tenant may use; `default` is set on Pods without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_classes: Option<ClassAllowedList>,
    /// RuntimeClasses Pods in the tenant may use; `default` is set on Pods without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_classes: Option<ClassAllowedList>,
    /// DeviceClasses (dynamic resource allocation) the tenant may use, where the cluster serves that API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_classes: Option<ClassAllowedList>,
    /// Options for Ingresses: classes, hostnames, wildcard hosts and host collisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_options: Option<IngressOptions>,
    /// Options for Gateway API objects, where the cluster serves that API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_options: Option<GatewayOptions>,
    /// Registries every container image in the tenant must come from (images must be fully qualified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_registries: Option<AllowedList>,
    /// The imagePullPolicy values containers in the tenant may use; any when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_policies: Vec<ImagePullPolicy>,
    /// Node labels that place the tenant's pods: written to every tenant namespace's
    /// `scheduler.alpha.kubernetes.io/node-selector` annotation, and used by the proxy to show nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// NetworkPolicies created in every tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policies: Option<NetworkPolicies>,
    /// LimitRanges created in every tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_ranges: Option<LimitRanges>,
    /// ResourceQuotas for the tenant, per namespace or shared by all its namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quotas: Option<ResourceQuotas>,
    /// More RoleBindings created in every tenant namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_role_bindings: Vec<AdditionalRoleBinding>,
    /// While true, tenant users may not create, change or delete anything in the tenant's namespaces.
    #[serde(default)]
    pub cordoned: bool,
    /// While true, the Tenant cannot be deleted.
    #[serde(default)]
    pub prevent_deletion: bool,
    /// Namespaces must be named `<tenant>-<something>`. Overrides the configuration's `forceTenantPrefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_tenant_prefix: Option<bool>,
    /// Namespace rules: per selected namespace, allow-lists, denials and audits of images, QoS classes,
    /// schedulers, Service types and namespace metadata, and RoleBindings. The last matching `allow` or
    /// `deny` rule decides each value (docs/rules.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<crate::namespace_rules::NamespaceRule>,
    /// Owners chosen among TenantOwner objects, and service accounts promoted to owners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
    /// Free-form values for templates (replication raw items refer to them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::tenant_data")]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Options for the tenant's namespaces.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceOptions {
    /// The most namespaces the tenant may have; creating one more is denied. Unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub quota: Option<i32>,
    /// Labels and annotations put on every tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metadata: Option<AdditionalMetadata>,
    /// Labels and annotations put on the tenant namespaces each selector matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_metadata_list: Vec<SelectedMetadata>,
    /// Labels tenant users may not set on their namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forbidden_labels: Option<ForbiddenList>,
    /// Annotations tenant users may not set on their namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forbidden_annotations: Option<ForbiddenList>,
    /// Labels and annotations every tenant namespace must carry, with a regular expression for each value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_metadata: Option<RequiredMetadata>,
    /// When true, tenant users may not set any label or annotation on namespaces beyond what Bulkhead manages.
    #[serde(default)]
    pub managed_metadata_only: bool,
    /// Namespaces the tenant starts with: the controller creates each one that does not exist, as the
    /// tenant's, and creates it again if it is deleted. It never takes a namespace that exists and is
    /// not the tenant's, and removing an entry never deletes the namespace. They count towards `quota`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub default_namespaces: Vec<DefaultNamespace>,
}

/// A namespace a tenant starts with.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefaultNamespace {
    /// The namespace's name (a DNS label).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Labels the namespace is created with (the tenant's own label always wins).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations the namespace is created with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Options for Services in the tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceOptions {
    /// Labels and annotations stamped on every Service at admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metadata: Option<AdditionalMetadata>,
    /// Which Service types are allowed; all are when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_services: Option<AllowedServices>,
    /// CIDRs `spec.externalIPs` must fall in; when set with an empty list, no external IP is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "externalIPs")]
    pub external_ips: Option<ExternalIps>,
    /// Labels tenant users may not set on Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forbidden_labels: Option<ForbiddenList>,
    /// Annotations tenant users may not set on Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forbidden_annotations: Option<ForbiddenList>,
}

/// Which Service types a tenant may create. ClusterIP is always allowed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedServices {
    /// Whether Services of type NodePort are allowed.
    #[serde(default = "yes")]
    pub node_port: bool,
    /// Whether Services of type ExternalName are allowed.
    #[serde(default = "yes")]
    pub external_name: bool,
    /// Whether Services of type LoadBalancer are allowed.
    #[serde(default = "yes")]
    pub load_balancer: bool,
}

impl Default for AllowedServices {
    fn default() -> Self {
        AllowedServices {
            node_port: true,
            external_name: true,
            load_balancer: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// External IPs allowed on Services.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ExternalIps {
    /// CIDRs (IPv4 or IPv6) each external IP must fall in.
    pub allowed: Vec<String>,
}

/// Options for Pods in the tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOptions {
    /// Labels and annotations stamped on every Pod at admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metadata: Option<AdditionalMetadata>,
}

/// Options for Ingresses in the tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressOptions {
    /// IngressClasses the tenant may use; `default` is set on Ingresses without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_classes: Option<ClassAllowedList>,
    /// Where an Ingress host and path must be unique: across the Cluster, the Tenant, the Namespace, or
    /// not checked (Disabled).
    #[serde(default)]
    pub hostname_collision_scope: HostnameCollisionScope,
    /// Hostnames Ingresses in the tenant may use; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hostnames: Option<AllowedList>,
    /// Whether Ingress hosts may be wildcards (`*.example.com`). Denied unless true.
    #[serde(default)]
    pub allow_wildcard_hostnames: bool,
}

/// The scope in which an Ingress host and path must be unique.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum HostnameCollisionScope {
    /// Unique across the whole cluster.
    Cluster,
    /// Unique across the tenant's namespaces.
    Tenant,
    /// Unique within the namespace.
    Namespace,
    /// Not checked.
    #[default]
    Disabled,
}

/// Options for Gateway API objects in the tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayOptions {
    /// GatewayClasses Gateways in the tenant may use; `default` is set on Gateways without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_classes: Option<ClassAllowedList>,
}

/// A container image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ImagePullPolicy {
    /// Always pull.
    Always,
    /// Never pull.
    Never,
    /// Pull when the image is not on the node.
    IfNotPresent,
}

/// NetworkPolicies created in every tenant namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NetworkPolicies {
    /// One NetworkPolicy per item, named `bulkhead-<tenant>-<index>`.
    #[serde(default)]
    pub items: Vec<NetworkPolicySpec>,
}

/// LimitRanges created in every tenant namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct LimitRanges {
    /// One LimitRange per item, named `bulkhead-<tenant>-<index>`.
    #[serde(default)]
    pub items: Vec<LimitRangeSpec>,
}

/// ResourceQuotas for the tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ResourceQuotas {
    /// Tenant: each item's hard limits are shared by all the tenant's namespaces together.
    /// Namespace: each namespace gets each item's hard limits for itself.
    #[serde(default)]
    pub scope: QuotaScope,
    /// One ResourceQuota per item in every tenant namespace, named `bulkhead-<tenant>-<index>`.
    #[serde(default)]
    pub items: Vec<ResourceQuotaSpec>,
}

/// How a tenant's ResourceQuota items apply.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum QuotaScope {
    /// The hard limits are for all the tenant's namespaces together.
    #[default]
    Tenant,
    /// The hard limits are for each namespace.
    Namespace,
}

/// A RoleBinding created in every tenant namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdditionalRoleBinding {
    /// The ClusterRole to bind.
    #[schemars(length(min = 1))]
    pub cluster_role_name: String,
    /// The subjects bound to it.
    pub subjects: Vec<RbacSubject>,
    /// Labels put on the RoleBinding.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations put on the RoleBinding.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Owners beyond `spec.owners`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    /// Selectors of TenantOwner objects whose subjects own this tenant; an object matching any one of
    /// them is an owner (the selectors are ORed). TenantOwners labelled
    /// `projectcapsule.dev/tenant: <this tenant>` are owners too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_owners: Vec<LabelSelector>,
    /// Promotion of the tenant's service accounts to owners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotions: Option<Promotions>,
}

/// Promotion of service accounts to owners.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Promotions {
    /// Whether an owner may promote a ServiceAccount of a tenant namespace to owner by labelling it
    /// `owner.projectcapsule.dev/promote: "true"` (only when the configuration's
    /// `allowServiceAccountPromotion` is on too).
    #[serde(default = "yes")]
    pub allow_owner_promotion: bool,
}

impl Default for Promotions {
    fn default() -> Self {
        Promotions {
            allow_owner_promotion: true,
        }
    }
}

/// One owner of the tenant as the controller found it: from `spec.owners`, a TenantOwner, a promoted
/// ServiceAccount or the configuration's administrators.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerStatus {
    /// User, Group or ServiceAccount.
    pub kind: OwnerKind,
    /// The name; for a ServiceAccount, `system:serviceaccount:<namespace>:<name>`.
    pub name: String,
    /// The cluster roles bound to it in every tenant namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_roles: Vec<String>,
}

/// What the controller last observed of a Tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// Active, or Cordoned while `spec.cordoned` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TenantState>,
    /// How many namespaces the tenant has.
    #[serde(default)]
    #[schemars(extend("format" = "int32"))]
    pub size: u32,
    /// The tenant's namespaces, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Every owner of the tenant: `spec.owners`, the TenantOwners chosen by `permissions.matchOwners`
    /// and promoted ServiceAccounts, one entry per subject with the cluster roles of all its sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<OwnerStatus>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions; `Ready` says whether every namespace has everything the spec asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The state of a Tenant.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TenantState {
    /// The tenant is in use.
    Active,
    /// The tenant is frozen: tenant users may not change anything in it.
    Cordoned,
}

impl Tenant {
    /// The tenant's owners.
    pub fn owners(&self) -> &[OwnerSpec] {
        &self.spec.owners
    }

    /// Every subject that owns the tenant: those of `spec.owners`, and those the controller found and
    /// listed in `status.owners` (TenantOwners the tenant selects, promoted ServiceAccounts). Only the
    /// controller and administrators can write a Tenant's status.
    pub fn owner_subjects(&self) -> impl Iterator<Item = crate::owner::Subject> + '_ {
        let listed = self
            .status
            .iter()
            .flat_map(|s| &s.owners)
            .map(|o| crate::owner::Subject::new(o.kind, o.name.clone()));
        self.spec.owners.iter().map(OwnerSpec::subject).chain(listed)
    }
}
