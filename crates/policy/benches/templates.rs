//! Replication planning with templates: what the controller does for every reconcile of a templated
//! GlobalTenantResource, without the API server.
//!
//! - `plan/app-projects`: examples/platform's Argo CD AppProject generator (scope Tenant) over 200
//!   tenants of 5 namespaces each: one render per tenant.
//! - `plan/isolation`: its NetworkPolicy raw item with the `{{tenant.name}}` short form (scope
//!   Namespace) over the same 1,000 namespaces.
//!
//! `cargo bench -p bulkhead-policy --bench templates`; figures in docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use bulkhead_api::replication::{GlobalTenantResource, ReplicationScope};
use bulkhead_policy::desired::TenantNamespace;
use bulkhead_policy::replication::{Input, Selected, Target, Writer, plan};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

const TENANTS: usize = 200;
const NAMESPACES: usize = 5;

fn tenants() -> Vec<Selected> {
    (0..TENANTS)
        .map(|t| {
            let name = format!("team-{t}");
            let namespaces: Vec<Target> = (0..NAMESPACES)
                .map(|n| Target {
                    tenant: name.clone(),
                    namespace: TenantNamespace {
                        name: format!("{name}-{n}"),
                        labels: [("bulkhead.dev/tenant".to_owned(), name.clone())].into(),
                    },
                })
                .collect();
            Selected {
                tenant: json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
                    "metadata": {"name": name, "labels": {"platform.example.com/onboarded": "true"}},
                    "spec": {"owners": [{"kind": "Group", "name": format!("{name}-devs")}],
                        "data": {"repositories": [format!("https://git.example.com/{name}/deploy.git")]}},
                    "status": {"namespaces": namespaces.iter().map(|n| n.namespace.name.clone()).collect::<Vec<_>>()}}),
                namespaces,
            }
        })
        .collect()
}

/// The GlobalTenantResources of examples/platform/10-platform.yaml, by name.
fn platform(name: &str) -> GlobalTenantResource {
    let text = include_str!("../../../examples/platform/10-platform.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).unwrap();
    let doc = docs.into_iter().find(|d| d["metadata"]["name"] == name).unwrap();
    serde_json::from_value(doc).unwrap()
}

fn bench(c: &mut Criterion) {
    let selected = tenants();
    let mut group = c.benchmark_group("plan");
    for (name, expected) in [
        ("argo-cd-projects", TENANTS),
        ("tenant-isolation", TENANTS * NAMESPACES),
    ] {
        let resource = platform(name);
        let input = Input {
            owner: "globaltenantresource..bench",
            writer: &Writer::Global,
            scope: resource.spec.scope,
            resources: &resource.spec.resources,
            tenants: &selected,
        };
        let once = plan(&input, &|_| Ok(Vec::new()));
        assert!(once.problems.is_empty(), "{:?}", once.problems);
        assert_eq!(once.objects.len(), expected);
        let label = if resource.spec.scope == ReplicationScope::Tenant {
            "app-projects"
        } else {
            "isolation"
        };
        group.throughput(Throughput::Elements(expected as u64));
        group.bench_function(label, |b| b.iter(|| plan(&input, &|_| Ok(Vec::new()))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
