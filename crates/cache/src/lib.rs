//! The shared informer cache: each Kubernetes kind is watched once, and every role reads the same
//! stores and indexes.
//!
//! Index logic is pure: an [`index::Indexed`] is fed watcher events and answers queries, with no server
//! involved, so it is unit-tested on its own. [`Cache::start`] is the only place that talks to the API.

pub mod index;
pub mod kind;
pub mod namespaces;
pub mod owned;
pub mod tenants;

use std::collections::BTreeSet;
use std::sync::Arc;

use bulkhead_api::{BulkheadConfiguration, Tenant, labels};
use bulkhead_policy::Caller;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use crate::kind::KindCache;
use crate::namespaces::NamespaceIndex;
use crate::owned::ByTenant;
use crate::tenants::OwnerIndex;

/// The shared cache. Cloning it is cheap: clones share the same stores.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    tenants: KindCache<Tenant, OwnerIndex>,
    namespaces: KindCache<Namespace, NamespaceIndex>,
    configurations: KindCache<BulkheadConfiguration, ByTenant>,
    role_bindings: KindCache<RoleBinding, ByTenant>,
    resource_quotas: KindCache<ResourceQuota, ByTenant>,
    limit_ranges: KindCache<LimitRange, ByTenant>,
    network_policies: KindCache<NetworkPolicy, ByTenant>,
    started: std::sync::Mutex<Vec<&'static str>>,
}

/// Which kinds a process watches: each role asks for what it reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// The objects Bulkhead creates in tenant namespaces (RoleBindings, ResourceQuotas, LimitRanges,
    /// NetworkPolicies), watched only where labelled `app.kubernetes.io/managed-by=bulkhead`.
    pub owned_objects: bool,
    /// The BulkheadConfiguration.
    pub configuration: bool,
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
                configurations: KindCache::new("BulkheadConfiguration"),
                role_bindings: KindCache::new("RoleBinding"),
                resource_quotas: KindCache::new("ResourceQuota"),
                limit_ranges: KindCache::new("LimitRange"),
                network_policies: KindCache::new("NetworkPolicy"),
                started: std::sync::Mutex::new(vec!["Tenant", "Namespace"]),
            }),
        }
    }

    /// A detached cache that also reports the kinds `needs` names (for readiness), for tests.
    pub fn detached_with(needs: Needs) -> Cache {
        let cache = Cache::detached();
        cache.mark_started(needs);
        cache
    }

    fn mark_started(&self, needs: Needs) {
        let mut started = self.inner.started.lock().unwrap_or_else(|e| e.into_inner());
        if needs.configuration {
            started.push("BulkheadConfiguration");
        }
        if needs.owned_objects {
            started.extend(["RoleBinding", "ResourceQuota", "LimitRange", "NetworkPolicy"]);
        }
    }

    /// Starts one watch per kind against the API server: Tenants and Namespaces always, the rest as
    /// `needs` says. The watches run until `shutdown` is cancelled, retrying with backoff on errors
    /// (each is logged).
    pub fn start(client: Client, needs: Needs, shutdown: CancellationToken) -> Cache {
        let cache = Cache::detached_with(needs);
        let all = watcher::Config::default();
        let inner = &cache.inner;
        inner
            .tenants
            .spawn_watch(kube::Api::all(client.clone()), all.clone(), shutdown.clone());
        inner
            .namespaces
            .spawn_watch(kube::Api::all(client.clone()), all.clone(), shutdown.clone());
        if needs.configuration {
            inner
                .configurations
                .spawn_watch(kube::Api::all(client.clone()), all, shutdown.clone());
        }
        if needs.owned_objects {
            let managed = watcher::Config::default().labels(&format!(
                "{}={}",
                labels::MANAGED_BY,
                labels::MANAGED_BY_VALUE
            ));
            inner.role_bindings.spawn_watch(
                kube::Api::all(client.clone()),
                managed.clone(),
                shutdown.clone(),
            );
            inner.resource_quotas.spawn_watch(
                kube::Api::all(client.clone()),
                managed.clone(),
                shutdown.clone(),
            );
            inner
                .limit_ranges
                .spawn_watch(kube::Api::all(client.clone()), managed.clone(), shutdown.clone());
            inner
                .network_policies
                .spawn_watch(kube::Api::all(client), managed, shutdown);
        }
        cache
    }

    /// BulkheadConfigurations (only `default` is read).
    pub fn configurations(&self) -> &KindCache<BulkheadConfiguration, ByTenant> {
        &self.inner.configurations
    }

    /// The cluster configuration: the `default` BulkheadConfiguration, or the defaults without one.
    pub fn configuration(&self) -> bulkhead_api::BulkheadConfigurationSpec {
        self.inner
            .configurations
            .store()
            .get(&ObjectRef::new(labels::CONFIGURATION_NAME))
            .map(|c| c.spec.clone())
            .unwrap_or_default()
    }

    /// RoleBindings Bulkhead created.
    pub fn role_bindings(&self) -> &KindCache<RoleBinding, ByTenant> {
        &self.inner.role_bindings
    }

    /// ResourceQuotas Bulkhead created.
    pub fn resource_quotas(&self) -> &KindCache<ResourceQuota, ByTenant> {
        &self.inner.resource_quotas
    }

    /// LimitRanges Bulkhead created.
    pub fn limit_ranges(&self) -> &KindCache<LimitRange, ByTenant> {
        &self.inner.limit_ranges
    }

    /// NetworkPolicies Bulkhead created.
    pub fn network_policies(&self) -> &KindCache<NetworkPolicy, ByTenant> {
        &self.inner.network_policies
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

    /// The status of every kind this cache watches, in a stable order.
    pub fn status(&self) -> Vec<KindStatus> {
        let started = self.started();
        let inner = &self.inner;
        [
            inner.tenants.status(),
            inner.namespaces.status(),
            inner.configurations.status(),
            inner.role_bindings.status(),
            inner.resource_quotas.status(),
            inner.limit_ranges.status(),
            inner.network_policies.status(),
        ]
        .into_iter()
        .filter(|s| started.contains(&s.kind))
        .collect()
    }

    fn started(&self) -> Vec<&'static str> {
        self.inner
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether every watched store has received its first full list.
    pub fn is_synced(&self) -> bool {
        self.status().iter().all(|s| s.synced)
    }

    /// Waits until every watched store has received its first full list.
    pub async fn wait_synced(&self) {
        let started = self.started();
        let inner = &self.inner;
        inner.tenants.wait_synced().await;
        inner.namespaces.wait_synced().await;
        if started.contains(&"BulkheadConfiguration") {
            inner.configurations.wait_synced().await;
        }
        if started.contains(&"RoleBinding") {
            inner.role_bindings.wait_synced().await;
            inner.resource_quotas.wait_synced().await;
            inner.limit_ranges.wait_synced().await;
            inner.network_policies.wait_synced().await;
        }
    }
}
