//! ProxySetting: a tenant owner lends their proxy view of the tenant to other subjects.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::owner::{OwnerKind, ProxySettings, Subject};

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
        match self.kind {
            OwnerKind::User => Subject::from_user_name(&self.name),
            OwnerKind::Group => Subject::Group(self.name.clone()),
            OwnerKind::ServiceAccount => Subject::ServiceAccount(self.name.clone()),
        }
    }
}
