//! Requests about a namespace the shared cache has not seen yet. The API server sends the workload
//! webhooks requests for tenant namespaces only (by the tenant label), so a namespace the cache does
//! not know is one it has not caught up with: an owner who creates a namespace and a pod in it at once
//! (`kubectl apply` of both, Helm, Argo CD) gets here within milliseconds. Such a request is never
//! allowed by default: the namespace is read from the API server, and when that cannot be done in time
//! the request is denied with a message that says to retry.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_api::{Tenant, labels};
use bulkhead_cache::Cache;
use bulkhead_policy::Caller;
use bulkhead_policy::admission::{ClassInfo, ClassKind, HostRoute, View};
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};

/// How long a live read may take before the request is denied (the API server waits 10 s for the
/// whole webhook call by default).
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// What is known of a namespace the cache has not seen: its tenant label as the API server has it
/// now (`None`: no label, or no such namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// The namespace.
    pub namespace: String,
    /// Its tenant.
    pub tenant: Option<String>,
}

/// The denial's message when the namespace cannot be read.
pub fn retry_message(namespace: &str, why: &str) -> String {
    format!(
        "namespace `{namespace}` is not in Bulkhead's cache yet and could not be read ({why}); retry in a moment"
    )
}

/// `None` when the cache knows `namespace`; otherwise the namespace as read from the API server, or
/// why it could not be read.
pub async fn look_up(
    cache: &Cache,
    client: Option<&Client>,
    namespace: &str,
) -> Result<Option<Read>, String> {
    if cache.namespace(namespace).is_some() {
        return Ok(None);
    }
    let Some(client) = client else {
        return Err(retry_message(namespace, "no API client"));
    };
    let api: Api<Namespace> = Api::all(client.clone());
    match tokio::time::timeout(READ_TIMEOUT, api.get_opt(namespace)).await {
        Ok(Ok(found)) => Ok(Some(Read {
            namespace: namespace.to_owned(),
            tenant: found
                .and_then(|ns| ns.metadata.labels)
                .and_then(|mut l| l.remove(labels::TENANT))
                .filter(|t| !t.is_empty()),
        })),
        Ok(Err(error)) => Err(retry_message(namespace, &error.to_string())),
        Err(_) => Err(retry_message(namespace, "the API server did not answer in time")),
    }
}

/// The cache, with one namespace it has not seen answered from a live read.
pub struct Overlay<'a> {
    /// The cache.
    pub base: &'a dyn View,
    /// The namespace read.
    pub read: &'a Read,
}

impl View for Overlay<'_> {
    fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.base.tenant(name)
    }

    fn tenants_owned_by(&self, caller: &Caller) -> BTreeSet<String> {
        self.base.tenants_owned_by(caller)
    }

    fn is_aggregated_owner(&self, caller: &Caller) -> bool {
        self.base.is_aggregated_owner(caller)
    }

    fn namespace_labels(&self, namespace: &str) -> Option<std::collections::BTreeMap<String, String>> {
        self.base.namespace_labels(namespace)
    }

    fn namespace_count(&self, tenant: &str) -> usize {
        self.base.namespace_count(tenant)
    }

    fn tenant_of_namespace(&self, namespace: &str) -> Option<String> {
        if namespace == self.read.namespace {
            return self.read.tenant.clone();
        }
        self.base.tenant_of_namespace(namespace)
    }

    fn class(&self, kind: ClassKind, name: &str) -> Option<ClassInfo> {
        self.base.class(kind, name)
    }

    fn persistent_volume_tenant(&self, name: &str) -> Option<Option<String>> {
        self.base.persistent_volume_tenant(name)
    }

    fn host_routes(&self, host: &str) -> Vec<HostRoute> {
        self.base.host_routes(host)
    }

    fn replication_writer(&self, owner: &str) -> Option<String> {
        self.base.replication_writer(owner)
    }

    fn node_labels(&self, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
        self.base.node_labels(name)
    }
}
