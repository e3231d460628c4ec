//! What the webhook reads besides Tenants and Namespaces: class objects, PersistentVolumes, the
//! routes every Ingress, Service and Gateway API route serves (for hostname collisions) and the labels of every Node (for
//! pods placed by name).

use std::collections::{BTreeMap, HashMap};

use bulkhead_api::gateway::{GRPCRoute, HTTPRoute, TLSRoute};
use bulkhead_policy::admission::{GatewayRoute, HostRoute, ingress_routes, service_routes};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::index::{Contributions, Index};

/// An index that keeps nothing: for kinds read only by name from their store.
#[derive(Debug, Default)]
pub struct NoIndex;

impl<K> Index<K> for NoIndex {
    fn insert(&mut self, _object: &K) {}
    fn remove(&mut self, _object: &K) {}
}

/// An object that serves hosts: an Ingress (its rules and External DNS annotations), a Service (its
/// External DNS annotations).
pub trait ServesHosts {
    /// The routes it serves.
    fn routes(&self) -> Vec<HostRoute>;
    /// Its namespace and name.
    fn key(&self) -> (String, String);
}

fn meta_key(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl ServesHosts for Ingress {
    fn routes(&self) -> Vec<HostRoute> {
        ingress_routes(self)
    }
    fn key(&self) -> (String, String) {
        meta_key(&self.metadata)
    }
}

impl ServesHosts for Service {
    fn routes(&self) -> Vec<HostRoute> {
        service_routes(self)
    }
    fn key(&self) -> (String, String) {
        meta_key(&self.metadata)
    }
}

impl ServesHosts for HTTPRoute {
    fn routes(&self) -> Vec<HostRoute> {
        GatewayRoute::http(self).routes()
    }
    fn key(&self) -> (String, String) {
        meta_key(&self.metadata)
    }
}

impl ServesHosts for GRPCRoute {
    fn routes(&self) -> Vec<HostRoute> {
        GatewayRoute::grpc(self).routes()
    }
    fn key(&self) -> (String, String) {
        meta_key(&self.metadata)
    }
}

impl ServesHosts for TLSRoute {
    fn routes(&self) -> Vec<HostRoute> {
        GatewayRoute::tls(self).routes()
    }
    fn key(&self) -> (String, String) {
        meta_key(&self.metadata)
    }
}

/// The routes of every object of one kind, by host (one index per kind, so a key is a namespace and
/// name).
#[derive(Debug, Default)]
pub struct HostIndex {
    by_host: HashMap<String, Vec<HostRoute>>,
    hosts_of: Contributions<(String, String), String>,
}

impl HostIndex {
    /// The routes that serve `host`.
    pub fn routes(&self, host: &str) -> &[HostRoute] {
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

impl<K: ServesHosts> Index<K> for HostIndex {
    fn insert(&mut self, object: &K) {
        let key = object.key();
        let routes = object.routes();
        let mut hosts: Vec<String> = routes.iter().map(|r| r.host.clone()).collect();
        hosts.sort();
        hosts.dedup();
        let previous = self.hosts_of.replace(key.clone(), hosts);
        self.unlink(&key, previous);
        for route in routes {
            self.by_host.entry(route.host.clone()).or_default().push(route);
        }
    }

    fn remove(&mut self, object: &K) {
        let key = object.key();
        let previous = self.hosts_of.take(&key);
        self.unlink(&key, previous);
    }

    /// The objects that serve some host.
    fn objects(&self) -> usize {
        self.hosts_of.len()
    }
}

/// The labels of every Node, by name: all the webhook reads of a node (a Node object itself, with its
/// images and conditions, is many times larger).
#[derive(Debug, Default)]
pub struct NodeLabels {
    labels: HashMap<String, BTreeMap<String, String>>,
}

impl NodeLabels {
    /// The labels of the node of this name, if it exists.
    pub fn get(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.labels.get(name)
    }
}

impl Index<Node> for NodeLabels {
    fn insert(&mut self, node: &Node) {
        self.labels.insert(
            node.metadata.name.clone().unwrap_or_default(),
            node.metadata.labels.clone().unwrap_or_default(),
        );
    }

    fn remove(&mut self, node: &Node) {
        self.labels
            .remove(node.metadata.name.as_deref().unwrap_or_default());
    }

    fn objects(&self) -> usize {
        self.labels.len()
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
        index.apply(&Event::<Ingress>::Init);
        index.apply(&Event::InitApply(ingress("c", "new", &["z.com"])));
        assert_eq!(
            index.get().routes("y.com").len(),
            1,
            "the old state answers during a relist"
        );
        index.apply(&Event::<Ingress>::InitDone);
        assert!(index.get().routes("y.com").is_empty());
        assert_eq!(index.get().routes("z.com")[0].namespace, "c");
    }

    #[test]
    fn services_serve_the_names_their_external_dns_annotations_publish() {
        let mut index: Indexed<HostIndex> = Indexed::default();
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "a",
            "annotations": {"external-dns.alpha.kubernetes.io/hostname": "Shop.Example.com., api.example.com",
                "external-dns.alpha.kubernetes.io/internal-hostname": "web.internal"}}}))
        .unwrap_or_default();
        index.apply(&Event::Apply(svc.clone()));
        for host in ["shop.example.com", "api.example.com", "web.internal"] {
            let routes = index.get().routes(host);
            assert_eq!(routes.len(), 1, "{host}");
            assert_eq!((routes[0].kind, routes[0].path.as_deref()), ("service", None));
        }
        index.apply(&Event::Delete(svc));
        assert!(index.get().routes("shop.example.com").is_empty());
    }

    fn node(name: &str, pool: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"pool": pool}}}))
            .unwrap_or_default()
    }

    #[test]
    fn node_labels_follow_relabelling_deletions_and_relists() {
        let mut index: Indexed<NodeLabels> = Indexed::default();
        index.apply(&Event::Apply(node("n1", "blue")));
        index.apply(&Event::Apply(node("n1", "green")));
        assert_eq!(index.get().get("n1").unwrap()["pool"], "green");
        index.apply(&Event::Apply(node("n2", "blue")));
        index.apply(&Event::Delete(node("n1", "green")));
        assert!(index.get().get("n1").is_none());
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(node("n3", "red")));
        index.apply(&Event::InitDone);
        assert!(
            index.get().get("n2").is_none(),
            "a node gone during a relist is forgotten"
        );
        assert_eq!(index.get().get("n3").unwrap()["pool"], "red");
    }
}
