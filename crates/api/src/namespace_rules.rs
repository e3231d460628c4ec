//! Namespace rules (`Tenant.spec.rules[]`, Capsule v0.15): per selected namespace, what workloads,
//! Services and namespace metadata may be (allow-lists, denials, audits), and the RoleBindings the
//! namespaces get. The last matching `allow` or `deny` rule decides each value.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::tenant::AdditionalRoleBinding;

/// One rule: the tenant namespaces it selects, the callers it concerns, what it enforces there and the
/// RoleBindings it distributes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceRule {
    /// The tenant namespaces the rule applies to, by their labels; all of them when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// The callers the rule concerns (any one of them); everyone when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<Audience>,
    /// What the rule allows, denies or audits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce: Option<Enforce>,
    /// RoleBindings the selected namespaces get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<RulePermissions>,
}

/// A caller a rule concerns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Audience {
    /// User, Group, ServiceAccount, or Custom (a category: CapsuleUser, Administrator, TenantOwner,
    /// Controller).
    pub kind: AudienceKind,
    /// The user name, group, `system:serviceaccount:<namespace>:<name>`, or the Custom category.
    #[schemars(length(min = 1, max = 512))]
    pub name: String,
}

/// The kind of an audience entry.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AudienceKind {
    /// A user name.
    User,
    /// A group every member of which is concerned.
    Group,
    /// A service account, `system:serviceaccount:<namespace>:<name>`.
    ServiceAccount,
    /// A category: `CapsuleUser` (tenant users), `Administrator` (the configuration's
    /// administrators), `TenantOwner` (owners of the namespace's tenant), `Controller` (Bulkhead).
    Custom,
}

/// What a rule does with what it matches.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Matching values are refused, unless a later matching `allow` rule admits them.
    #[default]
    Deny,
    /// Matching values are admitted, and the list becomes an allow-list: a value no rule matches is
    /// refused.
    Allow,
    /// Matching values are admitted and reported (an admission warning, an Event on the Tenant and the
    /// `bulkhead_rule_audits_total` metric); it decides nothing.
    Audit,
}

/// What a rule enforces.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Enforce {
    /// `deny` (the default), `allow` or `audit`.
    #[serde(default)]
    pub action: Action,
    /// CEL expressions that must all be true for the rule to apply to a request; `object` is the object
    /// admitted and `request` the admission request (operation, namespace, name, userInfo, kind,
    /// resource, subResource, dryRun).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub conditions: Vec<RuleCondition>,
    /// Pods: images, QoS classes and schedulers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<Workloads>,
    /// Services: types and ExternalName hostnames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceRules>,
    /// Labels and annotations of Namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<MetadataRule>,
    /// Capsule's earlier form of `workloads.registries`: `url` is a regular expression over the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registries: Vec<UrlRegistry>,
}

/// A CEL condition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct RuleCondition {
    /// A name for messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub name: Option<String>,
    /// A Boolean CEL expression.
    #[schemars(length(min = 1, max = 4096))]
    pub expression: String,
}

/// A value matcher: the value is one of `exact`, or matches the regular expression `exp` (either may
/// be given; both: either matches); `negate` inverts the result.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Match {
    /// Exact values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub exact: Vec<String>,
    /// A regular expression (unanchored, as in Go: anchor it with `^...$` to match the whole value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub exp: Option<String>,
    /// Inverts the match.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub negate: bool,
}

/// Which images of a Pod a workloads rule looks at.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum WorkloadTarget {
    /// Containers.
    #[serde(rename = "pod/containers")]
    Containers,
    /// Init containers.
    #[serde(rename = "pod/initcontainers")]
    InitContainers,
    /// Ephemeral containers.
    #[serde(rename = "pod/ephemeralcontainers")]
    EphemeralContainers,
    /// Image volumes.
    #[serde(rename = "pod/volumes")]
    Volumes,
}

/// The Pod QoS class, as Kubernetes computes it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum QosClass {
    /// Every container has CPU and memory requests equal to limits.
    Guaranteed,
    /// Some request or limit, not Guaranteed.
    Burstable,
    /// No CPU or memory request or limit.
    BestEffort,
}

/// Rules on Pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workloads {
    /// Where `registries` looks: all four when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<WorkloadTarget>,
    /// Image references (`harbor/team/app:1.0`), each with the pull policies allowed with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registries: Vec<Registry>,
    /// The Pod's QoS class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub qos_classes: Vec<QosClass>,
    /// The Pod's `spec.schedulerName`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedulers: Vec<Match>,
}

/// An image matcher.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registry {
    /// Exact image references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub exact: Vec<String>,
    /// A regular expression over the image reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub exp: Option<String>,
    /// Inverts the match.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub negate: bool,
    /// The image pull policies the image may be pulled with; any when empty. A container without one
    /// has Kubernetes' default (`Always` for `:latest` or no tag, else `IfNotPresent`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<PullPolicy>,
}

/// An image pull policy (Capsule's earlier spellings in lower case are accepted).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Always.
    #[serde(alias = "always")]
    Always,
    /// Never.
    #[serde(alias = "never")]
    Never,
    /// IfNotPresent.
    #[serde(alias = "ifNotPresent")]
    IfNotPresent,
}

impl PullPolicy {
    /// The policy as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::Never => "Never",
            PullPolicy::IfNotPresent => "IfNotPresent",
        }
    }
}

impl JsonSchema for PullPolicy {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PullPolicy".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "enum": ["Always", "Never", "IfNotPresent", "always", "never", "ifNotPresent"],
        })
    }
}

/// Capsule's earlier image rule (`enforce.registries`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UrlRegistry {
    /// A regular expression over the image reference.
    #[schemars(length(min = 1, max = 4096))]
    pub url: String,
    /// The pull policies allowed; any when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<PullPolicy>,
}

/// Rules on Services.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRules {
    /// Service types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<ServiceType>,
    /// The `spec.externalName` of ExternalName Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_names: Option<ExternalNames>,
}

/// A Service type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// ClusterIP.
    ClusterIP,
    /// NodePort.
    NodePort,
    /// LoadBalancer.
    LoadBalancer,
    /// ExternalName.
    ExternalName,
}

/// Hostnames of ExternalName Services.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalNames {
    /// Hostname matchers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<Match>,
}

/// Rules on the labels and annotations of Namespaces.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetadataRule {
    /// API groups (or group/versions); empty means core `v1`, `*` any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Kinds. Bulkhead enforces metadata rules on `Namespace` (the only kind Capsule's quickstart
    /// and migrations use); a rule naming another kind is refused.
    pub kinds: Vec<String>,
    /// Label key -> rule. A key that is not a valid label key (`openshift.io/.*`) is an anchored regular
    /// expression over keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, MetadataValueRule>,
    /// Annotation key -> rule, as for labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, MetadataValueRule>,
}

/// What one label or annotation must be.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetadataValueRule {
    /// With `allow`: the key must be present.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// With `allow`: the value set when the key is absent (then checked like any value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// With `allow`: the value always set, replacing what the object says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<String>,
    /// Value matchers (any one matches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Match>,
}

/// RoleBindings a rule distributes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RulePermissions {
    /// RoleBindings made in every selected namespace; subject names may use `{{ .tenant.metadata.name }}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<AdditionalRoleBinding>,
    /// Cluster roles given, in every selected namespace, to the tenant's ServiceAccounts labelled
    /// `projectcapsule.dev/promote: "true"` (and matching `selector`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotions: Vec<RulePromotion>,
}

/// Cluster roles for promoted ServiceAccounts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RulePromotion {
    /// The cluster roles.
    pub cluster_roles: Vec<String>,
    /// Which promoted ServiceAccounts, by their labels; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}
