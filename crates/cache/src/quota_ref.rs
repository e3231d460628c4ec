//! A CustomQuota or a GlobalCustomQuota by name, read and status-patched on the API server as one
//! kind: the webhook (reservations) and the controller (counts) both write a quota's status with its
//! resourceVersion as a precondition.

use bulkhead_api::custom_quota::{CustomQuotaStatus, QuotaDefinition};
use bulkhead_api::{CustomQuota, GlobalCustomQuota};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::Value;

/// Which quota: a CustomQuota (namespace, name) or a GlobalCustomQuota (name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaRef {
    /// A CustomQuota.
    Namespaced(String, String),
    /// A GlobalCustomQuota.
    Global(String),
}

/// A quota as the API server answered.
#[derive(Clone, Debug)]
pub enum AnyQuota {
    /// A CustomQuota.
    Namespaced(CustomQuota),
    /// A GlobalCustomQuota.
    Global(GlobalCustomQuota),
}

impl AnyQuota {
    /// Its metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            AnyQuota::Namespaced(q) => q.meta(),
            AnyQuota::Global(q) => q.meta(),
        }
    }

    /// Its spec, as both kinds share it.
    pub fn definition(&self) -> QuotaDefinition<'_> {
        match self {
            AnyQuota::Namespaced(q) => q.definition(),
            AnyQuota::Global(q) => q.definition(),
        }
    }

    /// Its status.
    pub fn status(&self) -> Option<&CustomQuotaStatus> {
        match self {
            AnyQuota::Namespaced(q) => q.status.as_ref(),
            AnyQuota::Global(q) => q.status.as_ref(),
        }
    }
}

impl QuotaRef {
    /// How messages name it (`CustomQuota ns/name`, `GlobalCustomQuota name`).
    pub fn describe(&self) -> String {
        match self {
            QuotaRef::Namespaced(ns, name) => format!("CustomQuota {ns}/{name}"),
            QuotaRef::Global(name) => format!("GlobalCustomQuota {name}"),
        }
    }

    /// Reads it from the API server.
    pub async fn get(&self, client: &Client) -> Result<AnyQuota, kube::Error> {
        match self {
            QuotaRef::Namespaced(ns, name) => Api::<CustomQuota>::namespaced(client.clone(), ns)
                .get(name)
                .await
                .map(AnyQuota::Namespaced),
            QuotaRef::Global(name) => Api::<GlobalCustomQuota>::all(client.clone())
                .get(name)
                .await
                .map(AnyQuota::Global),
        }
    }

    /// Merge-patches its status subresource with `patch` (which may carry
    /// `metadata.resourceVersion` as a precondition: a 409 when it changed).
    pub async fn patch_status(&self, client: &Client, patch: &Value) -> Result<AnyQuota, kube::Error> {
        let params = PatchParams::default();
        match self {
            QuotaRef::Namespaced(ns, name) => Api::<CustomQuota>::namespaced(client.clone(), ns)
                .patch_status(name, &params, &Patch::Merge(patch))
                .await
                .map(AnyQuota::Namespaced),
            QuotaRef::Global(name) => Api::<GlobalCustomQuota>::all(client.clone())
                .patch_status(name, &params, &Patch::Merge(patch))
                .await
                .map(AnyQuota::Global),
        }
    }
}
