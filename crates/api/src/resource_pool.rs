//! ResourcePool and ResourcePoolClaim, with Capsule v0.15's field names (`capsule.clastix.io/v1beta2`
//! manifests migrate by their apiVersion).
//!
//! A pool (cluster-scoped, written by administrators) holds an amount of resources (`quota.hard`) and
//! names the namespaces that may claim from it (`selectors`). Each selected namespace gets one
//! ResourceQuota, `bulkhead-pool-<pool>`, whose `hard` starts at the pool's `defaults` and grows by
//! every claim bound in that namespace. Claims (namespaced, written by the namespace's users) queue in
//! order of creation and bind while the pool has room; a claim whose resources are in use cannot be
//! changed, released or deleted. What a namespace uses beyond its claims still counts against the pool,
//! so moving claims between namespaces never frees what is in use (capsule#1662). docs/quotas.md says
//! how.

use k8s_openapi::api::core::v1::ResourceQuotaSpec;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The annotation that releases a claim from its pool (`"true"`); the claim queues again.
pub const RELEASE_ANNOTATION: &str = "projectcapsule.dev/release";

/// The prefix of the ResourceQuota a pool keeps in each selected namespace.
pub const QUOTA_PREFIX: &str = "bulkhead-pool-";

/// The label naming the pool on the ResourceQuotas it keeps.
pub const POOL_LABEL: &str = "bulkhead.dev/resource-pool";

/// The finalizer by which a deleted pool's ResourceQuotas are removed and its claims let go.
pub const POOL_FINALIZER: &str = "bulkhead.dev/resource-pool";

/// An amount of resources that the namespaces it selects claim from.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "ResourcePool",
    shortname = "pool",
    category = "bulkhead",
    status = "ResourcePoolStatus",
    doc = "An amount of resources the selected namespaces claim from with ResourcePoolClaims; each selected namespace gets one ResourceQuota holding its defaults and its bound claims.",
    printcolumn = r#"{"name":"Namespaces","type":"integer","jsonPath":".status.namespaceCount"}"#,
    printcolumn = r#"{"name":"Claims","type":"integer","jsonPath":".status.claimCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Exhausted","type":"string","jsonPath":".status.conditions[?(@.type==\"Exhausted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePoolSpec {
    /// What the pool holds (`hard`), and the scope of the ResourceQuota it keeps in each namespace
    /// (`scopes`, `scopeSelector`), as in a ResourceQuota.
    pub quota: ResourceQuotaSpec,
    /// The namespaces that may claim: those matching any of these selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<LabelSelector>,
    /// What every selected namespace's ResourceQuota holds before any claim (`requests.storage: 0`
    /// blocks a resource; resources the pool does not hold may be named too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub defaults: BTreeMap<String, Quantity>,
    /// Options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ResourcePoolConfig>,
}

/// How a pool behaves.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePoolConfig {
    /// Claims bind strictly in order: a claim that does not fit holds back every later claim for the
    /// same resources, even smaller ones. Default false: a later claim that fits binds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered_queue: Option<bool>,
    /// Every resource the pool holds starts at 0 in each namespace's ResourceQuota, so nothing of it
    /// is used without a claim. Default false: a resource without claims or defaults is not limited
    /// by the pool in that namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults_zero: Option<bool>,
    /// When the pool is deleted, its bound claims are deleted too. Default false: they are let go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_bound_resources: Option<bool>,
}

/// What a pool holds and what its claims took, as the controller last counted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePoolStatus {
    /// The selected namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// How many namespaces are selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_count: Option<i64>,
    /// How many claims are bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_count: Option<i64>,
    /// Per resource: what the pool holds, what is taken (bound claims, defaults, and use beyond
    /// them), and what is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<PoolAllocation>,
    /// The bound claims, by namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, Vec<PoolClaimRef>>,
    /// Resources some queued claim asks more of than is left: what is asked, what is left.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exhaustions: BTreeMap<String, PoolExhaustion>,
    /// `Ready` (the pool was counted) and `Exhausted` (a claim is queued for want of room).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation last counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Per resource: held, taken, left.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolAllocation {
    /// What the pool holds.
    #[serde(default)]
    pub hard: BTreeMap<String, Quantity>,
    /// What is taken.
    #[serde(default)]
    pub claimed: BTreeMap<String, Quantity>,
    /// What is left.
    #[serde(default)]
    pub available: BTreeMap<String, Quantity>,
}

/// A bound claim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolClaimRef {
    /// The claim's name.
    pub name: String,
    /// The claim's uid.
    #[serde(default)]
    pub uid: String,
    /// What it claims.
    #[serde(default)]
    pub claims: BTreeMap<String, Quantity>,
}

/// A resource claims are queued for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolExhaustion {
    /// What the queued claims ask for in all.
    pub requesting: Quantity,
    /// What is left.
    pub available: Quantity,
}

/// A claim of resources from a pool, for the claim's namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "ResourcePoolClaim",
    namespaced,
    shortname = "poolclaim",
    category = "bulkhead",
    status = "ResourcePoolClaimStatus",
    doc = "A claim of resources from a ResourcePool for this namespace: it queues until the pool has room, then raises the namespace's ResourceQuota for the pool.",
    printcolumn = r#"{"name":"Pool","type":"string","jsonPath":".status.pool.name"}"#,
    printcolumn = r#"{"name":"Bound","type":"string","jsonPath":".status.conditions[?(@.type==\"Bound\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Bound\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.conditions[?(@.type==\"Bound\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePoolClaimSpec {
    /// The pool claimed from. When empty, the controller picks the first pool (by name) that selects
    /// the namespace and holds every resource claimed, preferring one with room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub pool: Option<String>,
    /// What is claimed, by resource name as in a ResourceQuota (`requests.cpu: 2`).
    #[schemars(length(min = 1))]
    pub claim: BTreeMap<String, Quantity>,
}

/// Where a claim stands.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePoolClaimStatus {
    /// The pool the claim is assigned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolReference>,
    /// What is bound (empty while queued).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocation: BTreeMap<String, Quantity>,
    /// `Assigned` (a pool may be claimed from), `Bound` (reason `Succeeded`, `PoolExhausted`,
    /// `QueueExhausted`, `Failed`, `Released`) and `InUse` (what the namespace uses needs this claim:
    /// it cannot be changed, released or deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A pool by name and uid.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolReference {
    /// The pool's name.
    pub name: String,
    /// The pool's uid.
    #[serde(default)]
    pub uid: String,
}
