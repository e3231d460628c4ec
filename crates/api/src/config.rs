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
