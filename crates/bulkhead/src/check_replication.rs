//! `bulkhead check`'s replication part: what each GlobalTenantResource and TenantResource in the
//! manifests would write, rendered offline by the controller's own planning functions
//! (`bulkhead_policy::replication`), templates included. The manifests are the cluster: Tenants, their
//! namespaces (tenant label, plus the default namespaces the controller would create) and every other
//! object a `namespacedItem` or `context` reads.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use bulkhead_api::config::BulkheadConfigurationSpec;
use bulkhead_api::replication::{GlobalTenantResourceSpec, ReplicationScope, TenantResourceSpec};
use bulkhead_api::{Tenant, labels};
use bulkhead_policy::desired::TenantNamespace;
use bulkhead_policy::desired::{self, Existing};
use bulkhead_policy::replication::{Input, Read, Selected, Target, Writer, key_of, owner_label, place, plan};
use bulkhead_policy::selector;
use serde_json::{Value, json};

/// Kinds Kubernetes serves cluster-scoped. Offline there is no discovery: these, Bulkhead's own
/// cluster-scoped kinds and CustomResourceDefinitions in the manifests say which kinds are; any other
/// kind counts as namespaced.
const CLUSTER_KINDS: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("storage.k8s.io", "StorageClass"),
    ("networking.k8s.io", "IngressClass"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("node.k8s.io", "RuntimeClass"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    ("apiregistration.k8s.io", "APIService"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("gateway.networking.k8s.io", "GatewayClass"),
    ("resource.k8s.io", "DeviceClass"),
];

/// What one replication resource would write.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// `Kind [namespace/]name` of the resource.
    pub resource: String,
    /// `Kind [namespace/]name (tenant t)` of each object it writes.
    pub objects: Vec<String>,
    /// Why items could not be written.
    pub problems: Vec<String>,
    /// The objects themselves, placed.
    pub manifests: Vec<Value>,
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn slash(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}/{name}")
    }
}

/// The default namespaces the controller would create for each admitted Tenant, added to `cluster`
/// (so replication sees them) and reported with any entry it cannot make.
pub fn default_namespaces(cluster: &mut Vec<Value>, config: &BulkheadConfigurationSpec) -> Vec<Rendered> {
    let mut out = Vec::new();
    let tenants: Vec<Tenant> = cluster
        .iter()
        .filter(|o| o["kind"] == "Tenant")
        .filter_map(|o| serde_json::from_value(o.clone()).ok())
        .collect();
    for tenant in tenants {
        let name = tenant.metadata.name.clone().unwrap_or_default();
        if tenant
            .spec
            .namespace_options
            .as_ref()
            .is_none_or(|o| o.default_namespaces.is_empty())
        {
            continue;
        }
        let namespace_of = |n: &str| {
            cluster
                .iter()
                .find(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == n)
                .map(|o| {
                    o["metadata"]["labels"][labels::TENANT]
                        .as_str()
                        .map(str::to_owned)
                })
        };
        let count = cluster
            .iter()
            .filter(|o| o["kind"] == "Namespace" && o["metadata"]["labels"][labels::TENANT] == name.as_str())
            .count();
        let planned = desired::default_namespaces(&tenant, config, count, |n| match namespace_of(n) {
            None => Existing::Absent,
            Some(tenant) => Existing::Present {
                tenant,
                terminating: false,
            },
        });
        let objects = planned
            .create
            .iter()
            .map(|ns| {
                format!(
                    "Namespace {} (tenant {name})",
                    ns.metadata.name.clone().unwrap_or_default()
                )
            })
            .collect();
        cluster.extend(planned.create.iter().filter_map(|ns| {
            let mut v = serde_json::to_value(ns).ok()?;
            v["apiVersion"] = json!("v1");
            v["kind"] = json!("Namespace");
            Some(v)
        }));
        out.push(Rendered {
            resource: format!("Tenant {name} (defaultNamespaces)"),
            objects,
            problems: planned.problems,
            manifests: cluster[cluster.len() - planned.create.len()..].to_vec(),
        });
    }
    out
}

/// Renders every GlobalTenantResource and TenantResource among `cluster`.
pub fn render(cluster: &[Value]) -> Vec<Rendered> {
    let kind = |o: &Value| o["kind"].as_str().unwrap_or_default().to_owned();
    let ours = |o: &Value| group_of(o["apiVersion"].as_str().unwrap_or_default()) == bulkhead_api::GROUP;
    // Which kinds are cluster-scoped.
    let mut cluster_kinds: BTreeSet<(String, String)> = CLUSTER_KINDS
        .iter()
        .map(|(g, k)| ((*g).to_owned(), (*k).to_owned()))
        .collect();
    for crd in bulkhead_api::crds::all() {
        if crd.spec.scope == "Cluster" {
            cluster_kinds.insert((crd.spec.group.clone(), crd.spec.names.kind.clone()));
        }
    }
    for o in cluster.iter().filter(|o| kind(o) == "CustomResourceDefinition") {
        if o["spec"]["scope"] == "Cluster" {
            cluster_kinds.insert((
                o["spec"]["group"].as_str().unwrap_or_default().to_owned(),
                o["spec"]["names"]["kind"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    // Tenants and their namespaces, as the controller's cache would have them.
    let mut namespaces: BTreeMap<String, Vec<Target>> = BTreeMap::new();
    for ns in cluster.iter().filter(|o| kind(o) == "Namespace") {
        let meta = &ns["metadata"];
        if let Some(tenant) = meta["labels"][labels::TENANT].as_str() {
            namespaces.entry(tenant.to_owned()).or_default().push(Target {
                tenant: tenant.to_owned(),
                namespace: TenantNamespace {
                    name: meta["name"].as_str().unwrap_or_default().to_owned(),
                    labels: serde_json::from_value(meta["labels"].clone()).unwrap_or_default(),
                },
            });
        }
    }
    let tenants: Vec<(BTreeMap<String, String>, Selected)> = cluster
        .iter()
        .filter(|o| kind(o) == "Tenant" && ours(o))
        .map(|t| {
            let name = t["metadata"]["name"].as_str().unwrap_or_default();
            let mut own = namespaces.get(name).cloned().unwrap_or_default();
            own.sort_by(|a, b| a.namespace.name.cmp(&b.namespace.name));
            let mut tenant = t.clone();
            tenant["status"]["namespaces"] = json!(own.iter().map(|n| &n.namespace.name).collect::<Vec<_>>());
            let labels = serde_json::from_value(t["metadata"]["labels"].clone()).unwrap_or_default();
            (
                labels,
                Selected {
                    tenant,
                    namespaces: own,
                },
            )
        })
        .collect();
    // Reads are answered from the manifests.
    let read = |r: &Read| -> Result<Vec<Value>, String> {
        Ok(cluster
            .iter()
            .filter(|o| o["apiVersion"] == r.api_version.as_str() && kind(o) == r.kind)
            .filter(|o| {
                r.namespace.as_deref().is_none_or(|ns| {
                    o["metadata"]["namespace"].as_str().unwrap_or("default") == ns
                        || cluster_kinds.contains(&(group_of(&r.api_version).to_owned(), r.kind.clone()))
                })
            })
            .filter(|o| r.name.as_deref().is_none_or(|n| o["metadata"]["name"] == n))
            .filter(|o| {
                let labels = serde_json::from_value(o["metadata"]["labels"].clone()).unwrap_or_default();
                selector::matches_query(&r.selector, &labels)
            })
            .cloned()
            .collect())
    };
    let mut out = Vec::new();
    for o in cluster.iter().filter(|o| ours(o)) {
        let name = o["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let (resource, owner, writer, scope, resources, selected) = match kind(o).as_str() {
            "GlobalTenantResource" => {
                let Ok(spec) = serde_json::from_value::<GlobalTenantResourceSpec>(o["spec"].clone()) else {
                    continue; // the CRD check has reported it
                };
                let selected: Vec<Selected> = tenants
                    .iter()
                    .filter(|(l, _)| {
                        spec.tenant_selector
                            .as_ref()
                            .is_none_or(|s| selector::matches(s, l))
                    })
                    .map(|(_, t)| t.clone())
                    .collect();
                (
                    format!("GlobalTenantResource {name}"),
                    owner_label("GlobalTenantResource", None, &name),
                    Writer::Global,
                    spec.scope,
                    spec.resources,
                    selected,
                )
            }
            "TenantResource" => {
                let Ok(spec) = serde_json::from_value::<TenantResourceSpec>(o["spec"].clone()) else {
                    continue;
                };
                let own = o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned();
                let tenant = namespaces
                    .iter()
                    .find(|(_, list)| list.iter().any(|t| t.namespace.name == own))
                    .map(|(t, _)| t.clone());
                let selected: Vec<Selected> = tenants
                    .iter()
                    .filter(|(_, t)| {
                        Some(t.tenant["metadata"]["name"].as_str().unwrap_or_default()) == tenant.as_deref()
                    })
                    .map(|(_, t)| t.clone())
                    .collect();
                (
                    format!("TenantResource {own}/{name}"),
                    owner_label("TenantResource", Some(&own), &name),
                    Writer::Tenant { own },
                    spec.scope,
                    spec.resources,
                    selected,
                )
            }
            _ => continue,
        };
        let input = Input {
            owner: &owner,
            writer: &writer,
            scope,
            resources: &resources,
            tenants: &selected,
        };
        let planned = plan(&input, &read);
        let mut rendered = Rendered {
            resource,
            objects: Vec::new(),
            problems: planned.problems,
            manifests: Vec::new(),
        };
        if let (Writer::Tenant { own }, true) = (&writer, selected.is_empty()) {
            rendered.problems.push(format!(
                "namespace `{own}` is not part of a tenant: a TenantResource replicates only within its own tenant"
            ));
        }
        let tenant_namespaces: BTreeSet<String> = selected
            .iter()
            .flat_map(|t| t.namespaces.iter().map(|n| n.namespace.name.clone()))
            .collect();
        for object in &planned.objects {
            let (api_version, kind, namespace, name) = key_of(object);
            let namespaced = !cluster_kinds.contains(&(group_of(&api_version).to_owned(), kind.clone()));
            let tenant = object["metadata"]["labels"][labels::TENANT]
                .as_str()
                .map(|t| format!(" (tenant {t})"))
                .unwrap_or_default();
            match place(&writer, scope, namespaced, &namespace, &tenant_namespaces) {
                Ok(ns) => {
                    rendered
                        .objects
                        .push(format!("{kind} {}{tenant}", slash(&ns, &name)));
                    let mut placed = object.clone();
                    if let Some(meta) = placed["metadata"].as_object_mut() {
                        if ns.is_empty() {
                            meta.remove("namespace");
                        } else {
                            meta.insert("namespace".into(), json!(ns));
                        }
                    }
                    rendered.manifests.push(placed);
                }
                Err(e) => rendered
                    .problems
                    .push(format!("{kind} {}: {e}", slash(&namespace, &name))),
            }
        }
        if scope == ReplicationScope::Namespace && selected.iter().all(|t| t.namespaces.is_empty()) {
            rendered
                .problems
                .push("no tenant namespace is selected: nothing is written".to_owned());
        }
        out.push(rendered);
    }
    out
}

/// The replication part of the report.
pub fn report(rendered: &[Rendered]) -> String {
    let mut out = String::new();
    if rendered.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\nreplication, rendered offline:");
    for r in rendered {
        let _ = writeln!(
            out,
            "{} writes {} object(s){}",
            r.resource,
            r.objects.len(),
            if r.problems.is_empty() { "" } else { " (PROBLEMS)" }
        );
        for o in &r.objects {
            let _ = writeln!(out, "         {o}");
        }
        for p in &r.problems {
            let _ = writeln!(out, "         problem: {p}");
        }
    }
    out
}
