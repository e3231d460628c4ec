//! The shared informer cache: each Kubernetes kind is watched once, and every role reads the same
//! stores and indexes.
//!
//! Index logic is pure: an [`index::Indexed`] is fed watcher events and answers queries, with no server
//! involved, so it is unit-tested on its own. [`Cache::start`] is the only place that talks to the API.

pub mod index;
pub mod kind;
pub mod namespaces;
pub mod tenants;

use std::collections::BTreeSet;
use std::sync::Arc;

use bulkhead_api::Tenant;
use bulkhead_policy::Caller;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio_util::sync::CancellationToken;

use crate::kind::KindCache;
use crate::namespaces::NamespaceIndex;
use crate::tenants::OwnerIndex;

/// The shared cache. Cloning it is cheap: clones share the same stores.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    tenants: KindCache<Tenant, OwnerIndex>,
    namespaces: KindCache<Namespace, NamespaceIndex>,
}

/// How one kind's store is doing, for `/readyz` and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindStatus {
    /// The kind, e.g. `Tenant`.
    pub kind: &'static str,
    /// Whether its first full list has been received.
    pub synced: bool,
    /// How many objects its store holds.
    pub objects: usize,
}

impl Cache {
    /// An empty cache with no watches: fed by [`Cache::tenants_feed`] and [`Cache::namespaces_feed`].
    /// [`Cache::start`] uses it too, so tests and production share every code path below the watch.
    pub fn detached() -> Cache {
        Cache {
            inner: Arc::new(Inner {
                tenants: KindCache::new("Tenant"),
                namespaces: KindCache::new("Namespace"),
            }),
        }
    }

    /// Starts one watch per kind against the API server. The watches run until `shutdown` is cancelled,
    /// retrying with backoff on errors (each is logged).
    pub fn start(client: Client, shutdown: CancellationToken) -> Cache {
        let cache = Cache::detached();
        cache
            .inner
            .tenants
            .spawn_watch(kube::Api::all(client.clone()), shutdown.clone());
        cache
            .inner
            .namespaces
            .spawn_watch(kube::Api::all(client), shutdown);
        cache
    }

    /// The Tenant store (read-only).
    pub fn tenants(&self) -> &Store<Tenant> {
        self.inner.tenants.store()
    }

    /// The Namespace store (read-only).
    pub fn namespaces(&self) -> &Store<Namespace> {
        self.inner.namespaces.store()
    }

    /// Where Tenant watch events go; for tests and tools that feed the cache themselves.
    pub fn tenants_feed(&self) -> &KindCache<Tenant, OwnerIndex> {
        &self.inner.tenants
    }

    /// Where Namespace watch events go; for tests and tools that feed the cache themselves.
    pub fn namespaces_feed(&self) -> &KindCache<Namespace, NamespaceIndex> {
        &self.inner.namespaces
    }

    /// A Tenant by name.
    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants().get(&ObjectRef::new(name))
    }

    /// A Namespace by name.
    pub fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.namespaces().get(&ObjectRef::new(name))
    }

    /// The names of the tenants the caller owns: as a user or service account, or through any group.
    pub fn tenants_owned_by(&self, caller: &Caller) -> BTreeSet<String> {
        let subjects = caller.subjects();
        self.inner
            .tenants
            .read_index(|index| index.tenants_owned_by_any(&subjects))
    }

    /// The names of a tenant's namespaces (those labelled `bulkhead.dev/tenant=<tenant>`).
    pub fn namespaces_of(&self, tenant: &str) -> BTreeSet<String> {
        self.inner
            .namespaces
            .read_index(|index| index.namespaces_of(tenant).cloned().unwrap_or_default())
    }

    /// The tenant a namespace belongs to, if any.
    pub fn tenant_of_namespace(&self, namespace: &str) -> Option<String> {
        self.inner
            .namespaces
            .read_index(|index| index.tenant_of(namespace).map(str::to_owned))
    }

    /// Every kind's status, in a stable order.
    pub fn status(&self) -> Vec<KindStatus> {
        vec![self.inner.tenants.status(), self.inner.namespaces.status()]
    }

    /// Whether every store has received its first full list.
    pub fn is_synced(&self) -> bool {
        self.status().iter().all(|s| s.synced)
    }

    /// Waits until every store has received its first full list.
    pub async fn wait_synced(&self) {
        self.inner.tenants.wait_synced().await;
        self.inner.namespaces.wait_synced().await;
    }
}
