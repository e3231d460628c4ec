//! What each cached kind costs per object: the heap the cache holds after taking in N objects of the
//! shapes the scale benchmark creates (as the API server sends them: uid, resourceVersion,
//! managedFields, timestamps), divided by N. Whole objects (the kind's store and index) beside the
//! projections the owned kinds are kept as now. Run: `cargo bench -p bulkhead-cache --bench memory`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, missing_docs)]

use std::sync::Arc;

use bulkhead_api::Tenant;
use bulkhead_cache::admission::HostIndex;
use bulkhead_cache::kind::KindCache;
use bulkhead_cache::namespaces::NamespaceIndex;
use bulkhead_cache::owned::ByTenant;
use bulkhead_cache::projected::{Interner, OwnedCache, OwnedKind};
use bulkhead_cache::tenants::OwnerIndex;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Resource;
use kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bytes allocated and not yet freed, as jemalloc counts them.
fn live() -> isize {
    tikv_jemalloc_ctl::epoch::advance().unwrap();
    tikv_jemalloc_ctl::stats::allocated::read().unwrap() as isize
}

const N: usize = 10_000;

fn meta(kind: &str, namespace: Option<&str>, name: &str, tenant: &str, i: usize) -> Value {
    let mut m = json!({
        "name": name,
        "uid": format!("4f1c2a8e-{i:04}-4a6b-9c1d-{i:012}"),
        "resourceVersion": format!("{}", 100_000 + i),
        "creationTimestamp": "2026-12-02T03:00:00Z",
        "labels": {"app.kubernetes.io/managed-by": "bulkhead", "bulkhead.dev/tenant": tenant},
        "annotations": {"bulkhead.dev/applied": "0123456789abcdef"},
        "ownerReferences": [{"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "name": tenant,
            "uid": format!("9d7e0b1c-{i:04}-4f2a-8e3b-{i:012}"), "controller": true, "blockOwnerDeletion": true}],
        "managedFields": [{"manager": "bulkhead", "operation": "Apply", "apiVersion": "v1", "time": "2026-12-02T03:00:00Z",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}, "f:bulkhead.dev/tenant": {}}}}}],
    });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    let _ = kind;
    m
}

/// The i-th object of the scale benchmark's shape: tenant `i / 10`, namespace `i % 10` of it.
fn object(kind: &str, i: usize) -> Value {
    let tenant = format!("scale-12345-0-t{}", i / 10);
    let ns = format!("{tenant}-{}", i % 10);
    match kind {
        "Namespace" => {
            let mut m = meta(kind, None, &ns, &tenant, i);
            m["labels"]["kubernetes.io/metadata.name"] = json!(ns);
            m["labels"]["bulkhead-bench"] = json!("scale-12345-0");
            json!({"metadata": m, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
        }
        "RoleBinding" => json!({
            "metadata": meta(kind, Some(&ns), &format!("bulkhead-admin-{tenant}-owner-4db7bd93"), &tenant, i),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": format!("{tenant}-owner")}],
        }),
        "ResourceQuota" => json!({
            "metadata": meta(kind, Some(&ns), &format!("bulkhead-{tenant}-0"), &tenant, i),
            "spec": {"hard": {"pods": "50"}},
            "status": {"hard": {"pods": "50"}, "used": {"pods": "0"}},
        }),
        "LimitRange" => json!({
            "metadata": meta(kind, Some(&ns), &format!("bulkhead-{tenant}-0"), &tenant, i),
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "500m"}}]},
        }),
        "NetworkPolicy" => json!({
            "metadata": meta(kind, Some(&ns), &format!("bulkhead-{tenant}-0"), &tenant, i),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }),
        "Ingress" => {
            let mut m = meta(kind, Some(&ns), "web", &tenant, i);
            m["labels"] = json!({});
            m["ownerReferences"] = json!([]);
            json!({"metadata": m, "spec": {"ingressClassName": "scale-12345-0-ic3", "rules": [{"host": format!("{ns}.apps.example.com"),
                "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
                "status": {"loadBalancer": {}}})
        }
        "Tenant" => {
            let name = format!("scale-12345-0-t{i}");
            let mut m = meta(kind, None, &name, &name, i);
            m["ownerReferences"] = json!([]);
            json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": m, "spec": {
                "owners": [{"kind": "User", "name": format!("{name}-owner")}, {"kind": "Group", "name": format!("{name}-devs"), "clusterRoles": ["edit"]}],
                "resourceQuotas": {"scope": "Namespace", "items": [{"hard": {"pods": "50"}}]},
                "limitRanges": {"items": [{"limits": [{"type": "Container", "default": {"cpu": "500m"}}]}]},
                "networkPolicies": {"items": [{"podSelector": {}, "policyTypes": ["Ingress"]}]}},
                "status": {"state": "Active", "size": 10, "namespaces": (0..10).map(|n| format!("{name}-{n}")).collect::<Vec<_>>(),
                    "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "10 namespaces have everything the spec asks for",
                        "lastTransitionTime": "2026-12-02T03:00:00Z", "observedGeneration": 1}]}})
        }
        _ => unreachable!(),
    }
}

fn typed<K: DeserializeOwned>(kind: &str, i: usize) -> K {
    serde_json::from_value(object(kind, i)).unwrap()
}

/// Bytes held per object once `n` objects are in, measured around `fill` (which builds and keeps the
/// cache, returning it so that it is still alive when the heap is read).
fn per_object<T>(n: usize, fill: impl FnOnce() -> T) -> f64 {
    let before = live();
    let kept = fill();
    let after = live();
    drop(kept);
    (after - before) as f64 / n as f64
}

/// A whole-object kind (its store and index), or with `index_only` its index alone.
fn kept<K, I>(kind: &'static str, index_only: bool) -> f64
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    I: bulkhead_cache::index::Index<K> + Send + Sync + 'static,
{
    // Each object is decoded and handed over one at a time, as the watch does: what stays is the cache.
    per_object(N, move || {
        let cache: KindCache<K, I> = if index_only {
            KindCache::index_only(kind)
        } else {
            KindCache::new(kind)
        };
        cache.apply(Event::Init);
        for i in 0..N {
            cache.apply(Event::InitApply(typed::<K>(kind, i)));
        }
        cache.apply(Event::InitDone);
        cache
    })
}

fn whole<K, I>(kind: &'static str) -> f64
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    I: bulkhead_cache::index::Index<K> + Send + Sync + 'static,
{
    kept::<K, I>(kind, false)
}

fn projected<K: OwnedKind>(kind: &'static str) -> f64 {
    per_object(N, move || {
        let names = Arc::new(Interner::default());
        let cache: OwnedCache<K> = OwnedCache::new(kind, names.clone());
        cache.apply(Event::Init);
        for i in 0..N {
            cache.apply(Event::InitApply(typed::<K>(kind, i)));
        }
        cache.apply(Event::InitDone);
        (cache, names)
    })
}

fn main() {
    println!("bytes held per object, {N} objects of each kind (scale benchmark shapes)");
    println!("| kind | whole object (store + index) | projection |");
    println!("|---|---|---|");
    println!("| Tenant | {:.0} | |", whole::<Tenant, OwnerIndex>("Tenant"));
    println!(
        "| Namespace | {:.0} (with its compact copy too) | {:.0} (compact JSON and the tenant index) |",
        whole::<Namespace, NamespaceIndex>("Namespace"),
        kept::<Namespace, NamespaceIndex>("Namespace", true)
    );
    println!(
        "| Ingress | {:.0} | {:.0} (its host index alone) |",
        whole::<Ingress, HostIndex>("Ingress"),
        kept::<Ingress, HostIndex>("Ingress", true)
    );
    println!(
        "| RoleBinding | {:.0} | {:.0} |",
        whole::<RoleBinding, ByTenant>("RoleBinding"),
        projected::<RoleBinding>("RoleBinding")
    );
    println!(
        "| ResourceQuota | {:.0} | {:.0} |",
        whole::<ResourceQuota, ByTenant>("ResourceQuota"),
        projected::<ResourceQuota>("ResourceQuota")
    );
    println!(
        "| LimitRange | {:.0} | {:.0} |",
        whole::<LimitRange, ByTenant>("LimitRange"),
        projected::<LimitRange>("LimitRange")
    );
    println!(
        "| NetworkPolicy | {:.0} | {:.0} |",
        whole::<NetworkPolicy, ByTenant>("NetworkPolicy"),
        projected::<NetworkPolicy>("NetworkPolicy")
    );
}
