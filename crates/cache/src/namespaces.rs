//! Namespaces: each one whole, as compact JSON, and which namespaces each tenant has.
//!
//! The proxy serves namespaces whole, so they cannot be projected like the owned kinds; but as
//! k8s-openapi structs (a B-tree node per label map, a heap string per field) one took 2.9 KB, where its
//! JSON (without managedFields, which the cache drops) is about a fifth of that. A namespace is read
//! whole a few at a time (a tenant's reconcile, a proxy list), and parsing it back costs microseconds.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bulkhead_api::labels;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;

use crate::index::Index;

/// Every namespace as JSON, and which namespaces each tenant has, by the `bulkhead.dev/tenant` label.
#[derive(Debug, Default)]
pub struct NamespaceIndex {
    by_tenant: HashMap<String, BTreeSet<String>>,
    tenant_of: HashMap<String, String>,
    /// Namespaces by Capsule's tenant label, for adoption from Capsule (most clusters have none).
    by_capsule_tenant: HashMap<String, BTreeSet<String>>,
    capsule_tenant_of: HashMap<String, String>,
    stored: HashMap<Box<str>, Box<str>>,
}

impl NamespaceIndex {
    /// A namespace, whole.
    pub fn get(&self, name: &str) -> Option<Arc<Namespace>> {
        let json = self.stored.get(name)?;
        serde_json::from_str(json).ok().map(Arc::new)
    }

    /// Every namespace's name and labels (read from the stored JSON each time: a few microseconds a
    /// namespace).
    pub fn all_labels(&self) -> Vec<(String, std::collections::BTreeMap<String, String>)> {
        #[derive(serde::Deserialize)]
        struct Meta {
            #[serde(default)]
            labels: std::collections::BTreeMap<String, String>,
        }
        #[derive(serde::Deserialize)]
        struct Labelled {
            metadata: Meta,
        }
        self.stored
            .iter()
            .map(|(name, json)| {
                let labels = serde_json::from_str::<Labelled>(json)
                    .map(|l| l.metadata.labels)
                    .unwrap_or_default();
                (name.to_string(), labels)
            })
            .collect()
    }

    /// The namespaces of a tenant.
    pub fn namespaces_of(&self, tenant: &str) -> Option<&BTreeSet<String>> {
        self.by_tenant.get(tenant)
    }

    /// The tenant a namespace belongs to.
    pub fn tenant_of(&self, namespace: &str) -> Option<&str> {
        self.tenant_of.get(namespace).map(String::as_str)
    }

    /// The namespaces labelled `capsule.clastix.io/tenant: <tenant>`.
    pub fn capsule_namespaces_of(&self, tenant: &str) -> Option<&BTreeSet<String>> {
        self.by_capsule_tenant.get(tenant)
    }

    /// How many tenants have at least one namespace.
    pub fn tenant_count(&self) -> usize {
        self.by_tenant.len()
    }

    fn unlink(&mut self, namespace: &str) {
        for (of, by) in [
            (&mut self.tenant_of, &mut self.by_tenant),
            (&mut self.capsule_tenant_of, &mut self.by_capsule_tenant),
        ] {
            if let Some(tenant) = of.remove(namespace)
                && let Some(set) = by.get_mut(&tenant)
            {
                set.remove(namespace);
                if set.is_empty() {
                    by.remove(&tenant);
                }
            }
        }
    }
}

impl Index<Namespace> for NamespaceIndex {
    fn insert(&mut self, namespace: &Namespace) {
        let name = namespace.name_any();
        self.unlink(&name);
        if let Ok(json) = serde_json::to_string(namespace) {
            self.stored
                .insert(Box::from(name.as_str()), json.into_boxed_str());
        }
        if let Some(tenant) = namespace.labels().get(labels::TENANT).filter(|t| !t.is_empty()) {
            self.by_tenant
                .entry(tenant.clone())
                .or_default()
                .insert(name.clone());
            self.tenant_of.insert(name.clone(), tenant.clone());
        }
        if let Some(tenant) = namespace
            .labels()
            .get(labels::CAPSULE_TENANT)
            .filter(|t| !t.is_empty())
        {
            self.by_capsule_tenant
                .entry(tenant.clone())
                .or_default()
                .insert(name.clone());
            self.capsule_tenant_of.insert(name, tenant.clone());
        }
    }

    fn remove(&mut self, namespace: &Namespace) {
        let name = namespace.name_any();
        self.stored.remove(name.as_str());
        self.unlink(&name);
    }

    fn objects(&self) -> usize {
        self.stored.len()
    }

    fn tenant_label(&self, namespace: &Namespace) -> Option<String> {
        self.tenant_of.get(namespace.name_any().as_str()).cloned()
    }

    fn all(&self) -> Vec<Arc<Namespace>> {
        self.stored.keys().filter_map(|name| self.get(name)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Indexed;
    use kube::api::ObjectMeta;
    use kube::runtime::watcher::Event;

    fn ns(name: &str, tenant: Option<&str>) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: tenant.map(|t| [(labels::TENANT.to_owned(), t.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn of(index: &Indexed<NamespaceIndex>, tenant: &str) -> Vec<String> {
        index
            .get()
            .namespaces_of(tenant)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn namespaces_are_grouped_by_their_tenant_label() {
        let mut index = Indexed::<NamespaceIndex>::default();
        for (name, tenant) in [
            ("solar-a", Some("solar")),
            ("solar-b", Some("solar")),
            ("wind-a", Some("wind")),
            ("kube-system", None),
        ] {
            index.apply(&Event::Apply(ns(name, tenant)));
        }
        assert_eq!(of(&index, "solar"), ["solar-a", "solar-b"]);
        assert_eq!(of(&index, "wind"), ["wind-a"]);
        assert_eq!(index.get().tenant_of("solar-b"), Some("solar"));
        assert_eq!(index.get().tenant_of("kube-system"), None);
        assert_eq!(index.get().tenant_count(), 2);
    }

    #[test]
    fn relabelling_moves_a_namespace_and_unlabelling_or_deleting_drops_it() {
        let mut index = Indexed::<NamespaceIndex>::default();
        index.apply(&Event::Apply(ns("shared", Some("solar"))));
        index.apply(&Event::Apply(ns("shared", Some("wind"))));
        assert_eq!(of(&index, "solar"), Vec::<String>::new());
        assert_eq!(of(&index, "wind"), ["shared"]);
        index.apply(&Event::Apply(ns("shared", None)));
        assert_eq!(index.get().tenant_of("shared"), None);
        assert_eq!(index.get().tenant_count(), 0);
        index.apply(&Event::Apply(ns("other", Some("wind"))));
        index.apply(&Event::Delete(ns("other", Some("wind"))));
        assert_eq!(of(&index, "wind"), Vec::<String>::new());
    }

    #[test]
    fn an_empty_tenant_label_is_no_tenant() {
        let mut index = Indexed::<NamespaceIndex>::default();
        index.apply(&Event::Apply(ns("x", Some(""))));
        assert_eq!(index.get().tenant_of("x"), None);
    }

    #[test]
    fn capsule_labelled_namespaces_are_found_by_their_capsule_tenant() {
        let capsule = |name: &str, tenant: &str| {
            let mut n = ns(name, None);
            n.metadata.labels = Some([(labels::CAPSULE_TENANT.to_owned(), tenant.to_owned())].into());
            n
        };
        let mut index = Indexed::<NamespaceIndex>::default();
        index.apply(&Event::Apply(capsule("solar-a", "solar")));
        index.apply(&Event::Apply(capsule("solar-b", "solar")));
        index.apply(&Event::Apply(ns("wind-a", Some("wind"))));
        let solar = |index: &Indexed<NamespaceIndex>| {
            index
                .get()
                .capsule_namespaces_of("solar")
                .map(|s| s.iter().cloned().collect::<Vec<_>>())
        };
        assert_eq!(
            solar(&index),
            Some(vec!["solar-a".to_owned(), "solar-b".to_owned()])
        );
        assert_eq!(index.get().capsule_namespaces_of("wind"), None);
        // Relabelled, unlabelled or deleted, it is no longer one.
        index.apply(&Event::Apply(capsule("solar-b", "wind")));
        index.apply(&Event::Apply(ns("solar-a", Some("solar"))));
        assert_eq!(solar(&index), None);
        index.apply(&Event::Delete(capsule("solar-b", "wind")));
        assert_eq!(index.get().capsule_namespaces_of("wind"), None);
    }
}
