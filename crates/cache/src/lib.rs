//! The shared informer cache: each Kubernetes kind is watched once, and every role reads the same
//! stores and indexes.
//!
//! Index logic is pure: an [`index::Indexed`] is fed watcher events and answers queries, with no server
//! involved, so it is unit-tested on its own. [`Cache::start`] is the only place that talks to the API.

pub mod admission;
pub mod index;
pub mod kind;
pub mod namespaces;
pub mod owned;
pub mod projected;
pub mod proxy_settings;
pub mod quota_ref;
pub mod quota_sources;
pub mod reflector;
pub mod sources;
pub mod tenants;

use std::collections::BTreeSet;
use std::sync::Arc;

use bulkhead_api::custom_quota::{CustomQuota, GlobalCustomQuota};
use bulkhead_api::gateway::{DeviceClass, GRPCRoute, GatewayClass, HTTPRoute, TLSRoute};
use bulkhead_api::resource_pool::{ResourcePool, ResourcePoolClaim};
use bulkhead_api::{
    BulkheadConfiguration, GlobalTenantResource, ProxySetting, Tenant, TenantOwner, TenantResource, labels,
};
use bulkhead_policy::Caller;
use bulkhead_policy::admission::{ClassInfo, ClassKind, HostRoute, View};
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, Node, PersistentVolume, ResourceQuota, Service, ServiceAccount,
};
use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use crate::admission::{HostIndex, NoIndex, NodeLabels};
use crate::kind::KindCache;
use crate::namespaces::NamespaceIndex;
use crate::owned::ByTenant;
use crate::projected::{Interner, OwnedCache};
use crate::proxy_settings::SubjectIndex;
use crate::tenants::OwnerIndex;

/// The shared cache. Cloning it is cheap: clones share the same stores.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    tenants: KindCache<Tenant, OwnerIndex>,
    tenant_owners: KindCache<TenantOwner, crate::tenants::AggregatedIndex>,
    promoted_service_accounts: KindCache<ServiceAccount, NoIndex>,
    rule_promoted_service_accounts: KindCache<ServiceAccount, NoIndex>,
    namespaces: KindCache<Namespace, NamespaceIndex>,
    configurations: KindCache<BulkheadConfiguration, ByTenant>,
    role_bindings: OwnedCache<RoleBinding>,
    resource_quotas: OwnedCache<ResourceQuota>,
    limit_ranges: OwnedCache<LimitRange>,
    network_policies: OwnedCache<NetworkPolicy>,
    storage_classes: KindCache<StorageClass, NoIndex>,
    ingress_classes: KindCache<IngressClass, NoIndex>,
    priority_classes: KindCache<PriorityClass, NoIndex>,
    runtime_classes: KindCache<RuntimeClass, NoIndex>,
    persistent_volumes: KindCache<PersistentVolume, NoIndex>,
    ingresses: KindCache<Ingress, HostIndex>,
    services: KindCache<Service, HostIndex>,
    nodes: KindCache<Node, NodeLabels>,
    global_tenant_resources: KindCache<GlobalTenantResource, NoIndex>,
    tenant_resources: KindCache<TenantResource, NoIndex>,
    proxy_settings: KindCache<ProxySetting, SubjectIndex>,
    global_proxy_settings: KindCache<bulkhead_api::GlobalProxySettings, NoIndex>,
    all_role_bindings: KindCache<RoleBinding, crate::reflector::BindingSubjects>,
    http_routes: KindCache<HTTPRoute, HostIndex>,
    grpc_routes: KindCache<GRPCRoute, HostIndex>,
    tls_routes: KindCache<TLSRoute, HostIndex>,
    gateway_classes: KindCache<GatewayClass, NoIndex>,
    device_classes: KindCache<DeviceClass, NoIndex>,
    flow_schemas: KindCache<FlowSchema, NoIndex>,
    priority_levels: KindCache<PriorityLevelConfiguration, NoIndex>,
    custom_quotas: KindCache<CustomQuota, NoIndex>,
    global_custom_quotas: KindCache<GlobalCustomQuota, NoIndex>,
    resource_pools: KindCache<ResourcePool, NoIndex>,
    resource_pool_claims: KindCache<ResourcePoolClaim, NoIndex>,
    quota_sources: crate::quota_sources::QuotaSources,
    replication_account: parking_lot::RwLock<String>,
    /// The Gateway API route kinds whose watches have started.
    gateway_started: parking_lot::Mutex<GatewayRoutes>,
    started: std::sync::Mutex<Vec<&'static str>>,
    /// Set once every started store has synced (a store never unsyncs), so the request paths that
    /// ask [`Cache::is_synced`] stop asking every store.
    synced: std::sync::atomic::AtomicBool,
}

/// Which kinds a process watches: each role asks for what it reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// The objects Bulkhead creates in tenant namespaces (RoleBindings, ResourceQuotas, LimitRanges,
    /// NetworkPolicies; FlowSchemas and PriorityLevelConfigurations of fair shares), watched only where
    /// labelled `app.kubernetes.io/managed-by=bulkhead`.
    pub owned_objects: bool,
    /// The BulkheadConfiguration.
    pub configuration: bool,
    /// What admission checks read: StorageClasses, IngressClasses, PriorityClasses, RuntimeClasses,
    /// PersistentVolumes, Ingresses, Services (their External DNS names) and Nodes (their labels).
    pub admission: bool,
    /// What the proxy reads besides Tenants and Namespaces: ProxySettings.
    pub proxy: bool,
    /// Every RoleBinding's subjects (an index, not the objects), for the proxy's RoleBinding reflector
    /// (`--proxy-role-binding-reflector`).
    pub role_binding_reflector: bool,
    /// The Gateway API routes the cluster serves, watched with [`Needs::admission`] for hostname
    /// collisions ([`served_gateway_routes`] finds them).
    pub gateway_routes: GatewayRoutes,
}

/// Which optional kinds a cluster serves: the Gateway API route kinds and GatewayClass
/// (`gateway.networking.k8s.io/v1`), and DRA's DeviceClass (`resource.k8s.io/v1`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayRoutes {
    /// HTTPRoute.
    pub http: bool,
    /// GRPCRoute.
    pub grpc: bool,
    /// TLSRoute.
    pub tls: bool,
    /// GatewayClass (its labels, for `gatewayOptions.allowedClasses`).
    pub gateway_classes: bool,
    /// DeviceClass (its labels, for `deviceClasses`).
    pub device_classes: bool,
}

/// Asks the API server which Gateway API route kinds it serves at `gateway.networking.k8s.io/v1`.
/// None when the group version is not there (404); an error otherwise (retried by the caller): a
/// route kind taken as absent would leave its hostnames out of the collision check.
pub async fn served_gateway_routes(client: &Client) -> Result<GatewayRoutes, kube::Error> {
    match client
        .list_api_group_resources("gateway.networking.k8s.io/v1")
        .await
    {
        Ok(list) => {
            let has = |plural: &str| list.resources.iter().any(|r| r.name == plural);
            Ok(GatewayRoutes {
                http: has("httproutes"),
                grpc: has("grpcroutes"),
                tls: has("tlsroutes"),
                gateway_classes: has("gatewayclasses"),
                device_classes: served_device_classes(client).await?,
            })
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(GatewayRoutes {
            device_classes: served_device_classes(client).await?,
            ..GatewayRoutes::default()
        }),
        Err(error) => Err(error),
    }
}

/// Whether the API server serves DeviceClasses at `resource.k8s.io/v1` (Kubernetes 1.34 and later).
async fn served_device_classes(client: &Client) -> Result<bool, kube::Error> {
    match client.list_api_group_resources("resource.k8s.io/v1").await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == "deviceclasses")),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}

/// The ServiceAccounts of `cached` labelled `label: "true"` in these namespaces, sorted.
fn labelled_in(
    cached: &KindCache<ServiceAccount, NoIndex>,
    label: &str,
    namespaces: &BTreeSet<String>,
) -> Vec<(String, String, std::collections::BTreeMap<String, String>)> {
    let mut out: Vec<_> = cached
        .store()
        .state()
        .iter()
        .filter_map(|sa| {
            let labels = sa.metadata.labels.clone().unwrap_or_default();
            if labels.get(label).is_none_or(|v| v != "true") {
                return None;
            }
            Some((sa.metadata.namespace.clone()?, sa.metadata.name.clone()?, labels))
        })
        .filter(|(ns, _, _)| namespaces.contains(ns))
        .collect();
    out.sort();
    out
}

/// The kinds [`Needs::admission`] adds.
const ADMISSION_KINDS: [&str; 8] = [
    "StorageClass",
    "IngressClass",
    "PriorityClass",
    "RuntimeClass",
    "PersistentVolume",
    "Ingress",
    "Service",
    "Node",
];

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
        let names = Arc::new(Interner::default());
        Cache {
            inner: Arc::new(Inner {
                tenants: KindCache::for_many("Tenant"),
                tenant_owners: KindCache::new("TenantOwner"),
                promoted_service_accounts: KindCache::new("ServiceAccount"),
                rule_promoted_service_accounts: KindCache::new("ServiceAccount (rule promotions)"),
                namespaces: KindCache::index_only_for_many("Namespace"),
                configurations: KindCache::new("BulkheadConfiguration"),
                role_bindings: OwnedCache::new("RoleBinding", names.clone()),
                resource_quotas: OwnedCache::new("ResourceQuota", names.clone()),
                limit_ranges: OwnedCache::new("LimitRange", names.clone()),
                network_policies: OwnedCache::new("NetworkPolicy", names),
                storage_classes: KindCache::new("StorageClass"),
                ingress_classes: KindCache::new("IngressClass"),
                priority_classes: KindCache::new("PriorityClass"),
                runtime_classes: KindCache::new("RuntimeClass"),
                persistent_volumes: KindCache::new("PersistentVolume"),
                ingresses: KindCache::index_only("Ingress"),
                services: KindCache::index_only("Service"),
                nodes: KindCache::index_only("Node"),
                global_tenant_resources: KindCache::new("GlobalTenantResource"),
                tenant_resources: KindCache::new("TenantResource"),
                proxy_settings: KindCache::new("ProxySetting"),
                global_proxy_settings: KindCache::new("GlobalProxySettings"),
                all_role_bindings: KindCache::index_only("RoleBinding (reflector)"),
                http_routes: KindCache::index_only("HTTPRoute"),
                grpc_routes: KindCache::index_only("GRPCRoute"),
                tls_routes: KindCache::index_only("TLSRoute"),
                gateway_classes: KindCache::new("GatewayClass"),
                device_classes: KindCache::new("DeviceClass"),
                flow_schemas: KindCache::new("FlowSchema"),
                priority_levels: KindCache::new("PriorityLevelConfiguration"),
                custom_quotas: KindCache::new("CustomQuota"),
                global_custom_quotas: KindCache::new("GlobalCustomQuota"),
                resource_pools: KindCache::new("ResourcePool"),
                resource_pool_claims: KindCache::new("ResourcePoolClaim"),
                quota_sources: Default::default(),
                replication_account: parking_lot::RwLock::new("default".to_owned()),
                gateway_started: parking_lot::Mutex::new(GatewayRoutes::default()),
                started: std::sync::Mutex::new(vec!["Tenant", "Namespace"]),
                synced: std::sync::atomic::AtomicBool::new(false),
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
        self.inner
            .synced
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if needs.configuration {
            started.push("BulkheadConfiguration");
        }
        if needs.owned_objects {
            started.extend([
                "ServiceAccount",
                "ServiceAccount (rule promotions)",
                "RoleBinding",
                "ResourceQuota",
                "LimitRange",
                "NetworkPolicy",
                "GlobalTenantResource",
                "FlowSchema",
                "PriorityLevelConfiguration",
                "ResourcePool",
                "ResourcePoolClaim",
            ]);
        }
        if needs.owned_objects || needs.admission {
            started.extend(["TenantResource", "CustomQuota", "GlobalCustomQuota"]);
        }
        if needs.admission {
            started.extend(ADMISSION_KINDS);
        }
        if needs.proxy {
            started.extend(["ProxySetting", "GlobalProxySettings"]);
        }
        if needs.role_binding_reflector {
            started.push("RoleBinding (reflector)");
        }
    }

    /// Starts one watch per kind against the API server: Tenants, TenantOwners and Namespaces always,
    /// the rest as `needs` says. The watches run until `shutdown` is cancelled, retrying with backoff on errors
    /// (each is logged).
    pub fn start(client: Client, needs: Needs, shutdown: CancellationToken) -> Cache {
        let cache = Cache::detached_with(needs);
        // Always watched (the owner index needs them), so always waited for; a detached cache for tests
        // feeds only what it names.
        cache
            .inner
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push("TenantOwner");
        let all = watcher::Config::default();
        let inner = &cache.inner;
        inner
            .tenants
            .spawn_watch(kube::Api::all(client.clone()), all.clone(), shutdown.clone());
        inner
            .tenant_owners
            .spawn_watch(kube::Api::all(client.clone()), all.clone(), shutdown.clone());
        inner
            .namespaces
            .spawn_watch(kube::Api::all(client.clone()), all.clone(), shutdown.clone());
        if needs.configuration {
            inner
                .configurations
                .spawn_watch(kube::Api::all(client.clone()), all.clone(), shutdown.clone());
        }
        if needs.admission {
            let c = &client;
            let s = &shutdown;
            inner
                .storage_classes
                .spawn_watch(kube::Api::all(c.clone()), all.clone(), s.clone());
            inner
                .ingress_classes
                .spawn_watch(kube::Api::all(c.clone()), all.clone(), s.clone());
            inner
                .priority_classes
                .spawn_watch(kube::Api::all(c.clone()), all.clone(), s.clone());
            inner
                .runtime_classes
                .spawn_watch(kube::Api::all(c.clone()), all.clone(), s.clone());
            inner
                .persistent_volumes
                .spawn_watch(kube::Api::all(c.clone()), all.clone(), s.clone());
            inner
                .ingresses
                .spawn_watch(kube::Api::all(c.clone()), all.clone(), s.clone());
            inner
                .services
                .spawn_watch(kube::Api::all(c.clone()), all.clone(), s.clone());
            inner
                .nodes
                .spawn_watch(kube::Api::all(c.clone()), all.clone(), s.clone());
            cache.start_gateway_routes(c, needs.gateway_routes, s);
        }
        if needs.proxy {
            inner
                .proxy_settings
                .spawn_watch(kube::Api::all(client.clone()), all.clone(), shutdown.clone());
            inner.global_proxy_settings.spawn_watch(
                kube::Api::all(client.clone()),
                all.clone(),
                shutdown.clone(),
            );
        }
        if needs.role_binding_reflector {
            inner.all_role_bindings.spawn_watch(
                kube::Api::all(client.clone()),
                all.clone(),
                shutdown.clone(),
            );
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
            // Only the ServiceAccounts an owner promoted: their label is the selector (one watch per
            // label: a selector cannot say "either").
            inner.promoted_service_accounts.spawn_watch(
                kube::Api::all(client.clone()),
                watcher::Config::default().labels(&format!("{}=true", labels::PROMOTE)),
                shutdown.clone(),
            );
            inner.rule_promoted_service_accounts.spawn_watch(
                kube::Api::all(client.clone()),
                watcher::Config::default().labels(&format!("{}=true", labels::RULE_PROMOTE)),
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
            inner.network_policies.spawn_watch(
                kube::Api::all(client.clone()),
                managed.clone(),
                shutdown.clone(),
            );
            inner.global_tenant_resources.spawn_watch(
                kube::Api::all(client.clone()),
                all.clone(),
                shutdown.clone(),
            );
            inner
                .flow_schemas
                .spawn_watch(kube::Api::all(client.clone()), managed.clone(), shutdown.clone());
            inner
                .priority_levels
                .spawn_watch(kube::Api::all(client.clone()), managed, shutdown.clone());
            inner
                .resource_pools
                .spawn_watch(kube::Api::all(client.clone()), all.clone(), shutdown.clone());
            inner.resource_pool_claims.spawn_watch(
                kube::Api::all(client.clone()),
                all.clone(),
                shutdown.clone(),
            );
        }
        // The webhook reads TenantResources too (who may change a copy): a webhook-only process (the
        // chart's split mode) must watch them, or it waits for them forever and is never ready.
        if needs.owned_objects || needs.admission {
            inner
                .tenant_resources
                .spawn_watch(kube::Api::all(client.clone()), all.clone(), shutdown.clone());
            // The webhook admits against the quotas; the controller counts for them.
            inner
                .custom_quotas
                .spawn_watch(kube::Api::all(client.clone()), all.clone(), shutdown.clone());
            inner
                .global_custom_quotas
                .spawn_watch(kube::Api::all(client), all, shutdown);
        }
        cache
    }

    /// Every namespace's name and labels.
    pub fn namespace_labels(&self) -> Vec<(String, std::collections::BTreeMap<String, String>)> {
        self.inner.namespaces.read_index(|i| i.all_labels())
    }

    /// CustomQuotas.
    pub fn custom_quotas(&self) -> &KindCache<CustomQuota, NoIndex> {
        &self.inner.custom_quotas
    }

    /// GlobalCustomQuotas.
    pub fn global_custom_quotas(&self) -> &KindCache<GlobalCustomQuota, NoIndex> {
        &self.inner.global_custom_quotas
    }

    /// GlobalProxySettings (watched for the proxy).
    pub fn global_proxy_settings(&self) -> &KindCache<bulkhead_api::GlobalProxySettings, NoIndex> {
        &self.inner.global_proxy_settings
    }

    /// ResourcePools.
    pub fn resource_pools(&self) -> &KindCache<ResourcePool, NoIndex> {
        &self.inner.resource_pools
    }

    /// ResourcePoolClaims.
    pub fn resource_pool_claims(&self) -> &KindCache<ResourcePoolClaim, NoIndex> {
        &self.inner.resource_pool_claims
    }

    /// The objects of the kinds CustomQuotas count (the controller starts their watches).
    pub fn quota_sources(&self) -> &crate::quota_sources::QuotaSources {
        &self.inner.quota_sources
    }

    /// The FlowSchemas Bulkhead made (labelled `managed-by=bulkhead`): tenants' fair shares.
    pub fn flow_schemas(&self) -> &KindCache<FlowSchema, NoIndex> {
        &self.inner.flow_schemas
    }

    /// The PriorityLevelConfigurations Bulkhead made (labelled `managed-by=bulkhead`): fair-share tiers.
    pub fn priority_levels(&self) -> &KindCache<PriorityLevelConfiguration, NoIndex> {
        &self.inner.priority_levels
    }

    /// Starts the watches of the Gateway API route kinds in `served` not watched yet, counted for
    /// readiness from now on (requests wait for their first list like any other store's). Returns the
    /// kinds it started.
    fn start_gateway_routes(
        &self,
        client: &Client,
        served: GatewayRoutes,
        shutdown: &CancellationToken,
    ) -> GatewayRoutes {
        let mut watched = self.inner.gateway_started.lock();
        let new = GatewayRoutes {
            http: served.http && !watched.http,
            grpc: served.grpc && !watched.grpc,
            tls: served.tls && !watched.tls,
            gateway_classes: served.gateway_classes && !watched.gateway_classes,
            device_classes: served.device_classes && !watched.device_classes,
        };
        if new == GatewayRoutes::default() {
            return new;
        }
        {
            let mut started = self.inner.started.lock().unwrap_or_else(|e| e.into_inner());
            self.inner
                .synced
                .store(false, std::sync::atomic::Ordering::Relaxed);
            for (is_new, kind) in [
                (new.http, "HTTPRoute"),
                (new.grpc, "GRPCRoute"),
                (new.tls, "TLSRoute"),
                (new.gateway_classes, "GatewayClass"),
                (new.device_classes, "DeviceClass"),
            ] {
                if is_new {
                    started.push(kind);
                }
            }
        }
        let all = watcher::Config::default();
        let inner = &self.inner;
        if new.http {
            inner
                .http_routes
                .spawn_watch(kube::Api::all(client.clone()), all.clone(), shutdown.clone());
        }
        if new.grpc {
            inner
                .grpc_routes
                .spawn_watch(kube::Api::all(client.clone()), all.clone(), shutdown.clone());
        }
        if new.tls {
            inner
                .tls_routes
                .spawn_watch(kube::Api::all(client.clone()), all.clone(), shutdown.clone());
        }
        if new.gateway_classes {
            inner
                .gateway_classes
                .spawn_watch(kube::Api::all(client.clone()), all.clone(), shutdown.clone());
        }
        if new.device_classes {
            inner
                .device_classes
                .spawn_watch(kube::Api::all(client.clone()), all, shutdown.clone());
        }
        watched.http |= new.http;
        watched.grpc |= new.grpc;
        watched.tls |= new.tls;
        watched.gateway_classes |= new.gateway_classes;
        watched.device_classes |= new.device_classes;
        new
    }

    /// Asks every `every` which Gateway API route kinds the API server serves, and watches those that
    /// came since (Gateway API installed after Bulkhead started), so their hostnames count for
    /// collisions without a restart. Runs until `shutdown`.
    pub fn keep_discovering_gateway_routes(
        &self,
        client: Client,
        every: std::time::Duration,
        shutdown: CancellationToken,
    ) {
        let cache = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                match served_gateway_routes(&client).await {
                    Ok(served) => {
                        let new = cache.start_gateway_routes(&client, served, &shutdown);
                        if new != GatewayRoutes::default() {
                            tracing::info!(
                                http = new.http,
                                grpc = new.grpc,
                                tls = new.tls,
                                gateway_classes = new.gateway_classes,
                                device_classes = new.device_classes,
                                "Gateway API kinds or DRA device classes now served: watching them"
                            );
                        }
                    }
                    Err(error) => tracing::debug!(%error, "cannot tell which Gateway API routes are served"),
                }
            }
        });
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
    pub fn role_bindings(&self) -> &OwnedCache<RoleBinding> {
        &self.inner.role_bindings
    }

    /// ResourceQuotas Bulkhead created.
    pub fn resource_quotas(&self) -> &OwnedCache<ResourceQuota> {
        &self.inner.resource_quotas
    }

    /// LimitRanges Bulkhead created.
    pub fn limit_ranges(&self) -> &OwnedCache<LimitRange> {
        &self.inner.limit_ranges
    }

    /// NetworkPolicies Bulkhead created.
    pub fn network_policies(&self) -> &OwnedCache<NetworkPolicy> {
        &self.inner.network_policies
    }

    /// The Tenant store (read-only).
    pub fn tenants(&self) -> &Store<Tenant> {
        self.inner.tenants.store()
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
        self.inner.namespaces.read_index(|index| index.get(name))
    }

    /// The namespaces labelled `capsule.clastix.io/tenant: <tenant>` (adoption from Capsule).
    pub fn capsule_namespaces_of(&self, tenant: &str) -> BTreeSet<String> {
        self.inner
            .namespaces
            .read_index(|index| index.capsule_namespaces_of(tenant).cloned().unwrap_or_default())
    }

    /// TenantOwners (always watched).
    pub fn tenant_owners(&self) -> &KindCache<TenantOwner, crate::tenants::AggregatedIndex> {
        &self.inner.tenant_owners
    }

    /// ServiceAccounts labelled for promotion to owner (watched with [`Needs::owned_objects`]).
    pub fn promoted_service_accounts(&self) -> &KindCache<ServiceAccount, NoIndex> {
        &self.inner.promoted_service_accounts
    }

    /// ServiceAccounts labelled for the tenant's rule promotions (watched with [`Needs::owned_objects`]).
    pub fn rule_promoted_service_accounts(&self) -> &KindCache<ServiceAccount, NoIndex> {
        &self.inner.rule_promoted_service_accounts
    }

    /// The ServiceAccounts labelled for promotion to owner in these namespaces, as `(namespace, name)`,
    /// sorted.
    pub fn promoted_in(&self, namespaces: &BTreeSet<String>) -> Vec<(String, String)> {
        labelled_in(&self.inner.promoted_service_accounts, labels::PROMOTE, namespaces)
            .into_iter()
            .map(|(ns, name, _)| (ns, name))
            .collect()
    }

    /// The ServiceAccounts labelled for rule promotions in these namespaces, as `(namespace, name,
    /// labels)`, sorted.
    pub fn rule_promoted_in(
        &self,
        namespaces: &BTreeSet<String>,
    ) -> Vec<(String, String, std::collections::BTreeMap<String, String>)> {
        labelled_in(
            &self.inner.rule_promoted_service_accounts,
            labels::RULE_PROMOTE,
            namespaces,
        )
    }

    /// Whether the caller is a service account a TenantOwner with `aggregate` names: such an account
    /// is a tenant user wherever it lives, whether or not a tenant has chosen it yet (it is bound to
    /// the namespace provisioner role, so a namespace it creates must be judged: assigned to its
    /// tenant, or refused while it owns none).
    pub fn is_aggregated_owner(&self, caller: &Caller) -> bool {
        if !caller
            .user
            .starts_with(bulkhead_api::owner::SERVICE_ACCOUNT_PREFIX)
        {
            return false;
        }
        self.inner
            .tenant_owners
            .read_index(|index| index.names(&bulkhead_api::Subject::ServiceAccount(caller.user.clone())))
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
        self.status_of(&self.started())
    }

    /// The status of the kinds in `started`.
    fn status_of(&self, started: &[&str]) -> Vec<KindStatus> {
        let inner = &self.inner;
        [
            inner.tenants.status(),
            inner.tenant_owners.status(),
            inner.promoted_service_accounts.status(),
            inner.rule_promoted_service_accounts.status(),
            inner.namespaces.status(),
            inner.configurations.status(),
            inner.role_bindings.status(),
            inner.resource_quotas.status(),
            inner.limit_ranges.status(),
            inner.network_policies.status(),
            inner.storage_classes.status(),
            inner.ingress_classes.status(),
            inner.priority_classes.status(),
            inner.runtime_classes.status(),
            inner.persistent_volumes.status(),
            inner.ingresses.status(),
            inner.services.status(),
            inner.nodes.status(),
            inner.global_tenant_resources.status(),
            inner.tenant_resources.status(),
            inner.proxy_settings.status(),
            inner.global_proxy_settings.status(),
            inner.all_role_bindings.status(),
            inner.flow_schemas.status(),
            inner.priority_levels.status(),
            inner.http_routes.status(),
            inner.grpc_routes.status(),
            inner.tls_routes.status(),
            inner.gateway_classes.status(),
            inner.device_classes.status(),
            inner.custom_quotas.status(),
            inner.global_custom_quotas.status(),
            inner.resource_pools.status(),
            inner.resource_pool_claims.status(),
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
        use std::sync::atomic::Ordering;
        if self.inner.synced.load(Ordering::Relaxed) {
            return true;
        }
        // Under the lock that starting a kind takes to clear the flag, so a kind started meanwhile is
        // never taken as synced.
        let started = self.inner.started.lock().unwrap_or_else(|e| e.into_inner());
        let synced = self.status_of(&started).iter().all(|s| s.synced);
        if synced {
            self.inner.synced.store(true, Ordering::Relaxed);
        }
        synced
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
            inner.global_tenant_resources.wait_synced().await;
            inner.flow_schemas.wait_synced().await;
            inner.priority_levels.wait_synced().await;
            inner.resource_pools.wait_synced().await;
            inner.resource_pool_claims.wait_synced().await;
        }
        if started.contains(&"TenantResource") {
            inner.tenant_resources.wait_synced().await;
            inner.custom_quotas.wait_synced().await;
            inner.global_custom_quotas.wait_synced().await;
        }
        if started.contains(&"ProxySetting") {
            inner.proxy_settings.wait_synced().await;
            inner.global_proxy_settings.wait_synced().await;
        }
        if started.contains(&"Ingress") {
            inner.storage_classes.wait_synced().await;
            inner.ingress_classes.wait_synced().await;
            inner.priority_classes.wait_synced().await;
            inner.runtime_classes.wait_synced().await;
            inner.persistent_volumes.wait_synced().await;
            inner.ingresses.wait_synced().await;
            inner.services.wait_synced().await;
            inner.nodes.wait_synced().await;
        }
        if started.contains(&"HTTPRoute") {
            inner.http_routes.wait_synced().await;
        }
        if started.contains(&"GRPCRoute") {
            inner.grpc_routes.wait_synced().await;
        }
        if started.contains(&"TLSRoute") {
            inner.tls_routes.wait_synced().await;
        }
    }

    /// A class object's labels (and a PriorityClass's value), if the class exists.
    pub fn class(&self, kind: ClassKind, name: &str) -> Option<ClassInfo> {
        fn info(
            labels: Option<&std::collections::BTreeMap<String, String>>,
            value: Option<i32>,
        ) -> ClassInfo {
            ClassInfo {
                labels: labels.cloned().unwrap_or_default(),
                value,
            }
        }
        let inner = &self.inner;
        match kind {
            ClassKind::Storage => inner
                .storage_classes
                .store()
                .get(&ObjectRef::new(name))
                .map(|c| info(c.metadata.labels.as_ref(), None)),
            ClassKind::Ingress => inner
                .ingress_classes
                .store()
                .get(&ObjectRef::new(name))
                .map(|c| info(c.metadata.labels.as_ref(), None)),
            ClassKind::Priority => inner
                .priority_classes
                .store()
                .get(&ObjectRef::new(name))
                .map(|c| info(c.metadata.labels.as_ref(), Some(c.value))),
            ClassKind::Runtime => inner
                .runtime_classes
                .store()
                .get(&ObjectRef::new(name))
                .map(|c| info(c.metadata.labels.as_ref(), None)),
            ClassKind::Gateway => inner
                .gateway_classes
                .store()
                .get(&ObjectRef::new(name))
                .map(|c| info(c.metadata.labels.as_ref(), None)),
            ClassKind::Device => inner
                .device_classes
                .store()
                .get(&ObjectRef::new(name))
                .map(|c| info(c.metadata.labels.as_ref(), None)),
        }
    }

    /// The tenant label of a PersistentVolume: `None` when unknown, `Some(None)` when it has none.
    pub fn persistent_volume_tenant(&self, name: &str) -> Option<Option<String>> {
        self.inner
            .persistent_volumes
            .store()
            .get(&ObjectRef::new(name))
            .map(|pv| {
                pv.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(labels::TENANT))
                    .cloned()
            })
    }

    /// The routes that serve `host`: Ingress rules, Gateway API route hostnames, and the names External
    /// DNS publishes from Ingress and Service annotations.
    pub fn host_routes(&self, host: &str) -> Vec<HostRoute> {
        let inner = &self.inner;
        let mut routes = inner.ingresses.read_index(|index| index.routes(host).to_vec());
        routes.extend(inner.services.read_index(|index| index.routes(host).to_vec()));
        routes.extend(inner.http_routes.read_index(|index| index.routes(host).to_vec()));
        routes.extend(inner.grpc_routes.read_index(|index| index.routes(host).to_vec()));
        routes.extend(inner.tls_routes.read_index(|index| index.routes(host).to_vec()));
        routes
    }

    /// Sets the ServiceAccount a TenantResource that names none writes as (`default` unless set).
    pub fn set_default_replication_account(&self, name: &str) {
        *self.inner.replication_account.write() = name.to_owned();
    }

    fn default_replication_account(&self) -> String {
        self.inner.replication_account.read().clone()
    }

    /// GlobalTenantResources.
    pub fn global_tenant_resources(&self) -> &KindCache<GlobalTenantResource, NoIndex> {
        &self.inner.global_tenant_resources
    }

    /// TenantResources.
    pub fn tenant_resources(&self) -> &KindCache<TenantResource, NoIndex> {
        &self.inner.tenant_resources
    }

    /// ProxySettings (watched when [`Needs::proxy`]).
    pub fn proxy_settings(&self) -> &KindCache<ProxySetting, SubjectIndex> {
        &self.inner.proxy_settings
    }

    /// The namespaces where a RoleBinding names `caller` (its user, a group, or its ServiceAccount), for
    /// the proxy's RoleBinding reflector; none unless [`Needs::role_binding_reflector`].
    pub fn reflected_namespaces(&self, caller: &Caller) -> BTreeSet<String> {
        let subjects = caller.subjects();
        self.inner
            .all_role_bindings
            .read_index(|index| index.namespaces_naming_any(&subjects))
    }

    /// The namespaces where a RoleBinding labelled for reflection names `caller`: its namespaced lists
    /// across namespaces reach these too.
    pub fn reflected_list_namespaces(&self, caller: &Caller) -> BTreeSet<String> {
        let subjects = caller.subjects();
        self.inner
            .all_role_bindings
            .read_index(|index| index.reflecting_namespaces_naming_any(&subjects))
    }

    /// Where RoleBinding watch events go for the reflector; for tests.
    pub fn all_role_bindings_feed(&self) -> &KindCache<RoleBinding, crate::reflector::BindingSubjects> {
        &self.inner.all_role_bindings
    }

    /// The ProxySettings that name `caller` (as user, through a group, or as service account).
    pub fn proxy_settings_naming(&self, caller: &Caller) -> Vec<Arc<ProxySetting>> {
        let subjects = caller.subjects();
        let keys = self
            .inner
            .proxy_settings
            .read_index(|index| index.naming_any(&subjects));
        keys.into_iter()
            .filter_map(|(namespace, name)| {
                self.inner
                    .proxy_settings
                    .store()
                    .get(&ObjectRef::new(&name).within(&namespace))
            })
            .collect()
    }

    /// Where Ingress watch events go; for tests.
    pub fn ingresses_feed(&self) -> &KindCache<Ingress, HostIndex> {
        &self.inner.ingresses
    }

    /// Where Service watch events go; for tests.
    pub fn services_feed(&self) -> &KindCache<Service, HostIndex> {
        &self.inner.services
    }

    /// Where Node watch events go; for tests.
    pub fn nodes_feed(&self) -> &KindCache<Node, NodeLabels> {
        &self.inner.nodes
    }

    /// Where PersistentVolume watch events go; for tests.
    pub fn persistent_volumes_feed(&self) -> &KindCache<PersistentVolume, NoIndex> {
        &self.inner.persistent_volumes
    }
}

impl View for Cache {
    fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        Cache::tenant(self, name)
    }

    fn tenants_owned_by(&self, caller: &Caller) -> BTreeSet<String> {
        Cache::tenants_owned_by(self, caller)
    }

    fn namespace_count(&self, tenant: &str) -> usize {
        self.inner
            .namespaces
            .read_index(|index| index.namespaces_of(tenant).map_or(0, BTreeSet::len))
    }

    fn tenant_of_namespace(&self, namespace: &str) -> Option<String> {
        Cache::tenant_of_namespace(self, namespace)
    }

    fn is_aggregated_owner(&self, caller: &Caller) -> bool {
        Cache::is_aggregated_owner(self, caller)
    }

    fn namespace_labels(&self, namespace: &str) -> Option<std::collections::BTreeMap<String, String>> {
        self.namespace(namespace)
            .map(|ns| ns.metadata.labels.clone().unwrap_or_default())
    }

    fn class(&self, kind: ClassKind, name: &str) -> Option<ClassInfo> {
        Cache::class(self, kind, name)
    }

    fn persistent_volume_tenant(&self, name: &str) -> Option<Option<String>> {
        Cache::persistent_volume_tenant(self, name)
    }

    fn host_routes(&self, host: &str) -> Vec<HostRoute> {
        Cache::host_routes(self, host)
    }

    fn replication_writer(&self, owner: &str) -> Option<String> {
        self.inner.tenant_resources.store().state().iter().find_map(|tr| {
            let namespace = tr.metadata.namespace.as_deref()?;
            let name = tr.metadata.name.as_deref()?;
            if bulkhead_policy::replication::owner_label("TenantResource", Some(namespace), name) != owner {
                return None;
            }
            let account = tr
                .spec
                .service_account
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_else(|| self.default_replication_account());
            Some(format!("system:serviceaccount:{namespace}:{account}"))
        })
    }

    fn node_labels(&self, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
        self.inner.nodes.read_index(|index| index.get(name).cloned())
    }
}
