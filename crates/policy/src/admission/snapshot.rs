//! A [`View`] over plain objects: what `bulkhead check` loads from manifests, and what tests build.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bulkhead_api::{Tenant, labels};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume};
use k8s_openapi::api::networking::v1::Ingress;

use super::workload::ingress_routes;
use super::{ClassInfo, ClassKind, IngressRoute, View};
use crate::identity::Caller;

/// Objects held in memory, answering as the cache would.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    tenants: BTreeMap<String, Arc<Tenant>>,
    namespaces: BTreeMap<String, Option<String>>,
    classes: BTreeMap<(ClassKind, String), ClassInfo>,
    volumes: BTreeMap<String, Option<String>>,
    routes: Vec<IngressRoute>,
    writers: BTreeMap<String, String>,
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
        self.namespaces
            .insert(ns.metadata.name.clone().unwrap_or_default(), tenant);
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
        let new = ingress_routes(ingress);
        let ns = ingress.metadata.namespace.as_deref().unwrap_or_default();
        let name = ingress.metadata.name.as_deref().unwrap_or_default();
        self.routes.retain(|r| !(r.namespace == ns && r.name == name));
        self.routes.extend(new);
    }

    /// Records who a replicating resource writes as (its `replicated-by` value and user).
    pub fn add_replication_writer(&mut self, owner: &str, user: &str) {
        self.writers.insert(owner.to_owned(), user.to_owned());
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
            .filter(|(_, t)| t.spec.owners.iter().any(|o| subjects.contains(&o.subject())))
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn namespace_count(&self, tenant: &str) -> usize {
        self.namespaces
            .values()
            .filter(|t| t.as_deref() == Some(tenant))
            .count()
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

    fn ingress_routes(&self, host: &str) -> Vec<IngressRoute> {
        self.routes.iter().filter(|r| r.host == host).cloned().collect()
    }

    fn replication_writer(&self, owner: &str) -> Option<String> {
        self.writers.get(owner).cloned()
    }
}
