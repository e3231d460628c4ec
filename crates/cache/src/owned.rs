//! Objects Bulkhead created, by the tenant they belong to (their `bulkhead.dev/tenant` label).

use std::collections::{BTreeSet, HashMap};

use bulkhead_api::labels;
use kube::{Resource, ResourceExt};

use crate::index::{Contributions, Index};

/// Which objects (namespace, name) each tenant owns. Also usable for kinds nothing needs indexed.
#[derive(Debug, Default)]
pub struct ByTenant {
    by_tenant: HashMap<String, BTreeSet<(String, String)>>,
    tenant_of: Contributions<(String, String), String>,
}

impl ByTenant {
    /// The objects of a tenant, as (namespace, name).
    pub fn of(&self, tenant: &str) -> Option<&BTreeSet<(String, String)>> {
        self.by_tenant.get(tenant)
    }

    fn unlink(&mut self, key: &(String, String), tenants: Vec<String>) {
        for tenant in tenants {
            if let Some(set) = self.by_tenant.get_mut(&tenant) {
                set.remove(key);
                if set.is_empty() {
                    self.by_tenant.remove(&tenant);
                }
            }
        }
    }
}

impl<K: Resource> Index<K> for ByTenant {
    fn insert(&mut self, object: &K) {
        let key = (object.namespace().unwrap_or_default(), object.name_any());
        let tenant: Vec<String> = object.labels().get(labels::TENANT).cloned().into_iter().collect();
        let previous = self.tenant_of.replace(key.clone(), tenant.clone());
        self.unlink(&key, previous);
        for t in tenant {
            self.by_tenant.entry(t).or_default().insert(key.clone());
        }
    }

    fn remove(&mut self, object: &K) {
        let key = (object.namespace().unwrap_or_default(), object.name_any());
        let previous = self.tenant_of.take(&key);
        self.unlink(&key, previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Indexed;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    use kube::api::ObjectMeta;
    use kube::runtime::watcher::Event;

    fn rb(ns: &str, name: &str, tenant: Option<&str>) -> RoleBinding {
        RoleBinding {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: tenant.map(|t| [(labels::TENANT.to_owned(), t.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn objects_are_found_by_tenant_and_follow_relabelling_and_deletion() {
        let mut index = Indexed::<ByTenant>::default();
        index.apply(&Event::Apply(rb("a", "x", Some("solar"))));
        index.apply(&Event::Apply(rb("b", "x", Some("solar"))));
        index.apply(&Event::Apply(rb("c", "y", Some("wind"))));
        let of = |index: &Indexed<ByTenant>, t: &str| {
            index
                .get()
                .of(t)
                .map(|s| s.iter().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert_eq!(
            of(&index, "solar"),
            [("a".to_owned(), "x".to_owned()), ("b".to_owned(), "x".to_owned())]
        );
        index.apply(&Event::Apply(rb("b", "x", Some("wind"))));
        index.apply(&Event::Delete(rb("a", "x", Some("solar"))));
        assert_eq!(of(&index, "solar"), Vec::<(String, String)>::new());
        assert_eq!(of(&index, "wind").len(), 2);
    }
}
