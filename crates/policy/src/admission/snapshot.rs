//! A [`View`] over plain objects: what `bulkhead check` loads from manifests, and what tests build.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bulkhead_api::{Tenant, labels};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, Service};
use k8s_openapi::api::networking::v1::Ingress;

use super::workload::{ingress_routes, service_routes};
use super::{ClassInfo, ClassKind, HostRoute, View};
use crate::identity::Caller;

/// Objects held in memory, answering as the cache would.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    tenants: BTreeMap<String, Arc<Tenant>>,
    namespaces: BTreeMap<String, Option<String>>,
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    classes: BTreeMap<(ClassKind, String), ClassInfo>,
    volumes: BTreeMap<String, Option<String>>,
    routes: Vec<HostRoute>,
    writers: BTreeMap<String, String>,
    nodes: BTreeMap<String, BTreeMap<String, String>>,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// Adds or replaces a Tenant.
    pub fn add_tenant(&mut self, tenant: Tenant) {
        let name = tenant.metadata.name.clone().unwrap_or_default();
        self.tenants.insert(name, Arc::new(tenant));
    }

    /// Adds or replaces a Namespace (its tenant is read from the tenant label).
    pub fn add_namespace(&mut self, ns: &Namespace) {
        let tenant = ns
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::TENANT))
            .cloned();
        let name = ns.metadata.name.clone().unwrap_or_default();
        self.namespace_labels
            .insert(name.clone(), ns.metadata.labels.clone().unwrap_or_default());
        self.namespaces.insert(name, tenant);
    }

    /// Adds a class object.
    pub fn add_class(&mut self, kind: ClassKind, name: &str, info: ClassInfo) {
        self.classes.insert((kind, name.to_owned()), info);
    }

    /// Adds a PersistentVolume (its tenant is read from the tenant label).
    pub fn add_persistent_volume(&mut self, pv: &PersistentVolume) {
        let tenant = pv
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::TENANT))
            .cloned();
        self.volumes
            .insert(pv.metadata.name.clone().unwrap_or_default(), tenant);
    }

    /// Adds an Ingress's routes (replacing earlier routes of the same Ingress).
    pub fn add_ingress(&mut self, ingress: &Ingress) {
        self.replace_routes("ingress", &ingress.metadata, ingress_routes(ingress));
    }

    /// Adds the names External DNS publishes for a Service (replacing earlier ones of that Service).
    pub fn add_service(&mut self, svc: &Service) {
        self.replace_routes("service", &svc.metadata, service_routes(svc));
    }

    /// Adds a Gateway API route's hostnames (replacing earlier ones of that route).
    pub fn add_gateway_route(&mut self, route: &super::GatewayRoute<'_>) {
        self.replace_routes(route.kind, route.meta, route.routes());
    }

    fn replace_routes(
        &mut self,
        kind: &str,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        new: Vec<HostRoute>,
    ) {
        let ns = meta.namespace.as_deref().unwrap_or_default();
        let name = meta.name.as_deref().unwrap_or_default();
        self.routes
            .retain(|r| !(r.kind == kind && r.namespace == ns && r.name == name));
        self.routes.extend(new);
    }

    /// Records who a replicating resource writes as (its `replicated-by` value and user).
    pub fn add_replication_writer(&mut self, owner: &str, user: &str) {
        self.writers.insert(owner.to_owned(), user.to_owned());
    }

    /// Adds or replaces a Node (only its labels are kept).
    pub fn add_node(&mut self, node: &Node) {
        self.nodes.insert(
            node.metadata.name.clone().unwrap_or_default(),
            node.metadata.labels.clone().unwrap_or_default(),
        );
    }

    /// The tenants held.
    pub fn tenant_names(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }
}

impl View for Snapshot {
    fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.get(name).cloned()
    }

    fn tenants_owned_by(&self, caller: &Caller) -> BTreeSet<String> {
        let subjects = caller.subjects();
        self.tenants
            .iter()
            .filter(|(_, t)| t.owner_subjects().any(|o| subjects.contains(&o)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn namespace_count(&self, tenant: &str) -> usize {
        self.namespaces
            .values()
            .filter(|t| t.as_deref() == Some(tenant))
            .count()
    }

    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespace_labels.get(namespace).cloned()
    }

    fn tenant_of_namespace(&self, namespace: &str) -> Option<String> {
        self.namespaces.get(namespace).cloned().flatten()
    }

    fn class(&self, kind: ClassKind, name: &str) -> Option<ClassInfo> {
        self.classes.get(&(kind, name.to_owned())).cloned()
    }

    fn persistent_volume_tenant(&self, name: &str) -> Option<Option<String>> {
        self.volumes.get(name).cloned()
    }

    fn host_routes(&self, host: &str) -> Vec<HostRoute> {
        self.routes.iter().filter(|r| r.host == host).cloned().collect()
    }

    fn replication_writer(&self, owner: &str) -> Option<String> {
        self.writers.get(owner).cloned()
    }

    fn node_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.nodes.get(name).cloned()
    }
}
