//! What the webhook reads besides Tenants and Namespaces: class objects, PersistentVolumes, and the
//! routes every Ingress serves (for hostname collisions).

use std::collections::HashMap;

use bulkhead_policy::admission::{IngressRoute, ingress_routes};
use k8s_openapi::api::networking::v1::Ingress;

use crate::index::{Contributions, Index};

/// An index that keeps nothing: for kinds read only by name from their store.
#[derive(Debug, Default)]
pub struct NoIndex;

impl<K> Index<K> for NoIndex {
    fn insert(&mut self, _object: &K) {}
    fn remove(&mut self, _object: &K) {}
}

/// The routes (host + path) of every Ingress, by host.
#[derive(Debug, Default)]
pub struct HostIndex {
    by_host: HashMap<String, Vec<IngressRoute>>,
    hosts_of: Contributions<(String, String), String>,
}

impl HostIndex {
    /// The routes that serve `host`.
    pub fn routes(&self, host: &str) -> &[IngressRoute] {
        self.by_host.get(host).map(Vec::as_slice).unwrap_or_default()
    }

    fn unlink(&mut self, key: &(String, String), hosts: Vec<String>) {
        for host in hosts {
            if let Some(routes) = self.by_host.get_mut(&host) {
                routes.retain(|r| !(r.namespace == key.0 && r.name == key.1));
                if routes.is_empty() {
                    self.by_host.remove(&host);
                }
            }
        }
    }
}

fn key(ingress: &Ingress) -> (String, String) {
    (
        ingress.metadata.namespace.clone().unwrap_or_default(),
        ingress.metadata.name.clone().unwrap_or_default(),
    )
}

impl Index<Ingress> for HostIndex {
    fn insert(&mut self, ingress: &Ingress) {
        let key = key(ingress);
        let routes = ingress_routes(ingress);
        let mut hosts: Vec<String> = routes.iter().map(|r| r.host.clone()).collect();
        hosts.sort();
        hosts.dedup();
        let previous = self.hosts_of.replace(key.clone(), hosts);
        self.unlink(&key, previous);
        for route in routes {
            self.by_host.entry(route.host.clone()).or_default().push(route);
        }
    }

    fn remove(&mut self, ingress: &Ingress) {
        let key = key(ingress);
        let previous = self.hosts_of.take(&key);
        self.unlink(&key, previous);
    }

    /// The Ingresses that serve some host.
    fn objects(&self) -> usize {
        self.hosts_of.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Indexed;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn ingress(ns: &str, name: &str, hosts: &[&str]) -> Ingress {
        let rules: Vec<_> = hosts.iter().map(|h| json!({"host": h})).collect();
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": {"rules": rules}}))
            .unwrap_or_default()
    }

    #[test]
    fn routes_follow_changes_deletions_and_relists() {
        let mut index: Indexed<HostIndex> = Indexed::default();
        index.apply(&Event::Apply(ingress("a", "web", &["x.com", "y.com"])));
        index.apply(&Event::Apply(ingress("b", "api", &["x.com"])));
        assert_eq!(index.get().routes("x.com").len(), 2);
        index.apply(&Event::Apply(ingress("a", "web", &["y.com"])));
        assert_eq!(index.get().routes("x.com").len(), 1);
        assert_eq!(index.get().routes("x.com")[0].name, "api");
        index.apply(&Event::Delete(ingress("b", "api", &["x.com"])));
        assert!(index.get().routes("x.com").is_empty());
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(ingress("c", "new", &["z.com"])));
        assert_eq!(
            index.get().routes("y.com").len(),
            1,
            "the old state answers during a relist"
        );
        index.apply(&Event::InitDone);
        assert!(index.get().routes("y.com").is_empty());
        assert_eq!(index.get().routes("z.com")[0].namespace, "c");
    }
}
