//! TenantOwner: an owner declared once and chosen by Tenants through `permissions.matchOwners`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::owner::{OwnerKind, OwnerSpec, Subject, default_cluster_roles};

/// A user, group or service account that Tenants choose as an owner by label: every Tenant whose
/// `permissions.matchOwners` selects this object's labels (or that the label
/// `projectcapsule.dev/tenant: <tenant>` names) lists it in `status.owners` and binds its cluster
/// roles in each of its namespaces. When a Tenant's own `owners` names the same subject, the cluster
/// roles of both are bound.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "TenantOwner",
    shortname = "to",
    category = "bulkhead",
    status = "TenantOwnerStatus",
    doc = "A user, group or service account that Tenants choose as an owner by label (spec.permissions.matchOwners).",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.kind"}"#,
    printcolumn = r#"{"name":"Subject","type":"string","jsonPath":".spec.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TenantOwnerSpec {
    /// User, Group or ServiceAccount.
    pub kind: OwnerKind,
    /// The name; for a ServiceAccount, `system:serviceaccount:<namespace>:<name>`.
    #[schemars(length(min = 1, max = 512))]
    pub name: String,
    /// Cluster roles bound to this subject in every namespace of the tenants that choose it.
    /// Capsule's `capsule-namespace-deleter` is understood as `bulkhead-namespace-deleter`.
    #[serde(default = "default_cluster_roles")]
    pub cluster_roles: Vec<String>,
    /// Capsule's switch that makes the subject a Capsule user. Bulkhead's tenant users are the members
    /// of the configuration's `userGroups` and service accounts: with `true` (the default) a
    /// ServiceAccount owner is treated as a tenant user wherever it lives and may create the tenant's
    /// namespaces; a User or Group owner must be a member of `userGroups` to create namespaces, as any
    /// owner (docs/controller.md). With `false` the subject gets its RoleBindings only.
    #[serde(default = "yes")]
    pub aggregate: bool,
}

fn yes() -> bool {
    true
}

/// What the controller last saw of a TenantOwner.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantOwnerStatus {
    /// The generation last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl TenantOwnerSpec {
    /// The subject named.
    pub fn subject(&self) -> Subject {
        self.as_owner().subject()
    }

    /// The same subject and roles as a Tenant owner entry.
    pub fn as_owner(&self) -> OwnerSpec {
        let mut owner = OwnerSpec::new(self.kind, self.name.clone());
        owner.cluster_roles = self.cluster_roles.clone();
        owner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capsules_defaults_apply() {
        let spec: TenantOwnerSpec =
            serde_json::from_str(r#"{"kind":"Group","name":"oidc:kubernetes:admin"}"#).unwrap();
        assert!(spec.aggregate);
        assert_eq!(spec.cluster_roles, ["admin", "bulkhead-namespace-deleter"]);
        assert_eq!(spec.subject(), Subject::Group("oidc:kubernetes:admin".into()));
        let sa: TenantOwnerSpec = serde_json::from_str(
            r#"{"kind":"ServiceAccount","name":"system:serviceaccount:capsule:controller","aggregate":false}"#,
        )
        .unwrap();
        assert!(!sa.aggregate);
        assert_eq!(sa.subject().service_account(), Some(("capsule", "controller")));
    }
}
