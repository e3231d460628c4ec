//! BulkheadConfiguration: the cluster-wide settings (a singleton named `default`).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::ForbiddenList;
use crate::owner::OwnerKind;

/// Cluster-wide settings of Bulkhead. Only the object named `default` is read.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "BulkheadConfiguration",
    shortname = "bhconfig",
    category = "bulkhead",
    doc = "Cluster-wide settings of Bulkhead. Only the object named `default` is read."
)]
#[serde(rename_all = "camelCase")]
pub struct BulkheadConfigurationSpec {
    /// Groups whose members are tenant users: their requests are checked by Bulkhead, and they may
    /// create namespaces (the `bulkhead-namespace-provisioner` ClusterRole is bound to these groups).
    #[serde(default = "default_user_groups")]
    pub user_groups: Vec<String>,
    /// Members of these groups are never treated as tenant users, even if they are in `userGroups`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_user_with_groups: Vec<String>,
    /// Users, groups and service accounts that administer tenants: no tenant rule applies to them, and
    /// they may manage the objects Bulkhead creates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub administrators: Vec<SubjectRef>,
    /// Require every tenant namespace to be named `<tenant>-<something>`. A Tenant may override it.
    #[serde(default)]
    pub force_tenant_prefix: bool,
    /// Namespaces whose name matches this regular expression may not be created by tenant users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_namespace_regex: Option<String>,
    /// Node labels and annotations tenant users may not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_metadata: Option<NodeMetadata>,
    /// Whether the controller manages the webhook's TLS certificate (a self-signed CA in a Secret,
    /// renewed before expiry, its bundle written into the webhook configurations). Turn off when
    /// cert-manager provides the certificate.
    #[serde(default = "yes", rename = "enableTLSReconciler")]
    pub enable_tls_reconciler: bool,
    /// Fair shares of the API server between tenants (API Priority and Fairness). When set, the
    /// controller keeps one PriorityLevelConfiguration per tier and one FlowSchema per tenant that
    /// sends every request of the tenant's owners, additional role binding subjects and service accounts
    /// to its tier's level as one flow, so a tenant flooding the API server (with however many
    /// identities) gets its share of the level and the other tenants keep theirs. Absent: nothing is
    /// kept, and what was kept is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_fairness: Option<ApiFairness>,
    /// Taking over a cluster from Capsule (docs/migrating.md). `Adopt`: a namespace Capsule made for a
    /// tenant (label `capsule.clastix.io/tenant: <name>` and an ownerReference to Capsule's Tenant of that
    /// name) becomes the Bulkhead Tenant's of the same name, Capsule's ownerReference kept as the
    /// controller one. `Complete`: as `Adopt`, and Capsule's ownerReferences are removed from the
    /// tenants' namespaces (Bulkhead's becomes the controller one), so that deleting Capsule's Tenants
    /// no longer deletes the namespaces. Absent: Capsule's namespaces are left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capsule_migration: Option<CapsuleMigration>,
    /// The only cluster roles Tenants may hand out (owners' `clusterRoles`, `additionalRoleBindings`):
    /// a Tenant naming another is refused, and the controller binds no other. The chart grants the
    /// controller `bind` on exactly these (strict RBAC: no cluster-admin, no `bind` on every role).
    /// Empty: any cluster role, which needs `bind` on every role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindable_cluster_roles: Vec<String>,
    /// Whether a tenant owner may promote a ServiceAccount of a tenant namespace to owner of the
    /// tenant, by labelling it `owner.projectcapsule.dev/promote: "true"` (a Tenant may refuse it with
    /// `permissions.promotions.allowOwnerPromotion: false`). Only owners may set or remove the label, and
    /// a promoted account may not promote others.
    #[serde(default)]
    pub allow_service_account_promotion: bool,
    /// The cluster roles a promoted ServiceAccount gets in every tenant namespace. Like every tenant
    /// owner it may also create the tenant's namespaces.
    #[serde(default = "default_promotion_cluster_roles")]
    pub promotion_cluster_roles: Vec<String>,
}

/// The cluster roles of a promoted ServiceAccount when the configuration names none: it may delete the
/// tenant's namespaces (and create them, as every owner may).
pub fn default_promotion_cluster_roles() -> Vec<String> {
    vec![crate::labels::NAMESPACE_DELETER_ROLE.to_owned()]
}

/// The phase of a migration from Capsule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CapsuleMigration {
    /// Adopt Capsule's namespaces beside Capsule.
    Adopt,
    /// Adopt, and release them from Capsule's Tenants.
    Complete,
}

impl Default for BulkheadConfigurationSpec {
    fn default() -> Self {
        BulkheadConfigurationSpec {
            user_groups: default_user_groups(),
            ignore_user_with_groups: Vec::new(),
            administrators: Vec::new(),
            force_tenant_prefix: false,
            protected_namespace_regex: None,
            node_metadata: None,
            enable_tls_reconciler: true,
            api_fairness: None,
            capsule_migration: None,
            bindable_cluster_roles: Vec::new(),
            allow_service_account_promotion: false,
            promotion_cluster_roles: default_promotion_cluster_roles(),
        }
    }
}

/// The tenant user group used when the configuration names none.
pub fn default_user_groups() -> Vec<String> {
    vec!["bulkhead.dev".to_owned()]
}

fn yes() -> bool {
    true
}

/// A user, group or service account.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub struct SubjectRef {
    /// User, Group or ServiceAccount.
    pub kind: OwnerKind,
    /// The name; for a ServiceAccount, `system:serviceaccount:<namespace>:<name>`.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Node labels and annotations tenant users may not set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeMetadata {
    /// Labels tenant users may not set on nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forbidden_labels: Option<ForbiddenList>,
    /// Annotations tenant users may not set on nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forbidden_annotations: Option<ForbiddenList>,
}

/// How tenants share the API server: a priority level per tier, each tenant one flow in it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiFairness {
    /// The `matchingPrecedence` of the tenants' FlowSchemas: lower numbers are matched first. Between
    /// 1000 (after the system's own schemas, such as `kube-system-service-accounts` at 900) and 8999
    /// (before `service-accounts` at 9000 and `global-default` at 9900, which would otherwise take
    /// tenant service accounts and users).
    #[serde(default = "default_precedence")]
    #[schemars(range(min = 1000, max = 8999))]
    pub matching_precedence: i32,
    /// The tiers of tenants. A Tenant labelled `bulkhead.dev/api-tier: <name>` is in that tier; any
    /// other Tenant is in the first tier. Empty: one tier named `standard` with the defaults below.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub tiers: Vec<ApiTier>,
}

impl Default for ApiFairness {
    fn default() -> Self {
        ApiFairness {
            matching_precedence: default_precedence(),
            tiers: Vec::new(),
        }
    }
}

fn default_precedence() -> i32 {
    5000
}

/// One tier: a PriorityLevelConfiguration `bulkhead-tier-<name>` shared by its tenants, each tenant one
/// flow in it (fair queuing between tenants, not between their users).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.handSize <= self.queues", "message": "handSize must not exceed queues"}
]))]
pub struct ApiTier {
    /// The tier's name (a DNS label): the value of a Tenant's `bulkhead.dev/api-tier` label.
    #[schemars(
        length(min = 1, max = 48),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The level's share of the API server's concurrency, against the other levels' (the built-in
    /// `global-default` has 20, `workload-low` 100).
    #[serde(default = "default_shares")]
    #[schemars(range(min = 1, max = 10000))]
    pub nominal_concurrency_shares: i32,
    /// How much of its concurrency the level lends to other levels while it does not use it (percent).
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub lendable_percent: i32,
    /// How many queues the level has: more queues keep more tenants apart.
    #[serde(default = "default_queues")]
    #[schemars(range(min = 1, max = 512))]
    pub queues: i32,
    /// How many queues each tenant's flow is shuffle-sharded over: at most `queues`. The API server
    /// allows at most 60 bits of hash (`handSize` times log2(`queues`); 64 queues: a hand of 10); a
    /// larger hand is lowered to the largest it allows, with a warning in the controller's log.
    #[serde(default = "default_hand_size")]
    #[schemars(range(min = 1, max = 64))]
    pub hand_size: i32,
    /// How many requests may wait in one queue; beyond it a request is answered 429.
    #[serde(default = "default_queue_length")]
    #[schemars(range(min = 1, max = 10000))]
    pub queue_length_limit: i32,
}

impl ApiTier {
    /// The tier used when the configuration names none.
    pub fn standard() -> ApiTier {
        ApiTier {
            name: "standard".to_owned(),
            nominal_concurrency_shares: default_shares(),
            lendable_percent: 0,
            queues: default_queues(),
            hand_size: default_hand_size(),
            queue_length_limit: default_queue_length(),
        }
    }
}

fn default_shares() -> i32 {
    30
}

fn default_queues() -> i32 {
    64
}

fn default_hand_size() -> i32 {
    6
}

fn default_queue_length() -> i32 {
    50
}
