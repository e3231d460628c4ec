//! Replication: which objects a GlobalTenantResource or TenantResource wants, in which namespaces.
//!
//! The caller gives the selected tenants with their namespaces and answers the reads this module asks
//! for ([`reads`]: sources of `namespacedItems`, `context` objects); this module turns them into the
//! exact objects to apply: copies without server-set fields, raw items and generator output with their
//! templates filled in, per namespace, per tenant or once (`scope`), with `additionalMetadata`, the
//! tenant label and the `bulkhead.dev/replicated-by` label. [`place`] then decides, once the kind's
//! scope is known, where each may go.

use std::collections::{BTreeMap, BTreeSet};

use bulkhead_api::common::AdditionalMetadata;
use bulkhead_api::labels;
use bulkhead_api::replication::{ContextResource, NamespacedItem, ReplicatedResources, ReplicationScope};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use crate::desired::TenantNamespace;
use crate::selector;
use crate::template::{self, FastVars, fast, fast_value};

/// The value of `bulkhead.dev/replicated-by` for a resource: `<kind>.<namespace>.<name>` (kind
/// lowercased, namespace empty for a GlobalTenantResource), shortened with a hash past 63 characters so
/// it stays a valid label value.
pub fn owner_label(kind: &str, namespace: Option<&str>, name: &str) -> String {
    let full = format!("{}.{}.{name}", kind.to_lowercase(), namespace.unwrap_or_default());
    if full.len() <= 63 {
        return full;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in full.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let keep: String = full.chars().take(46).collect();
    format!("{}-{h:016x}", keep.trim_end_matches(['.', '-', '_']))
}

/// A namespace objects are replicated into.
#[derive(Clone, Debug)]
pub struct Target {
    /// The tenant it belongs to.
    pub tenant: String,
    /// The namespace, with its labels (for `namespaceSelector`).
    pub namespace: TenantNamespace,
}

/// A selected tenant: its object (the templates' `$.tenant`) and its namespaces.
#[derive(Clone, Debug)]
pub struct Selected {
    /// The Tenant as JSON (apiVersion, kind, metadata, spec, status).
    pub tenant: Value,
    /// Its namespaces (not terminating).
    pub namespaces: Vec<Target>,
}

impl Selected {
    fn name(&self) -> &str {
        self.tenant["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Who a resource writes as, which decides where its objects may go.
#[derive(Clone, Debug)]
pub enum Writer {
    /// A GlobalTenantResource, written by an administrator: anywhere, cluster-scoped kinds included
    /// (scope `Tenant` or `None`).
    Global,
    /// A TenantResource: only into its own tenant's namespaces, never cluster-scoped.
    Tenant {
        /// The TenantResource's namespace.
        own: String,
    },
}

/// What a resource asks for: the objects of `namespacedItems` to copy, or of `context` for templates.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Read {
    /// API version of the objects.
    pub api_version: String,
    /// Kind of the objects.
    pub kind: String,
    /// The namespace, or all namespaces (and cluster-scoped kinds) when absent.
    pub namespace: Option<String>,
    /// One object by name.
    pub name: Option<String>,
    /// A label selector in the API's query form (`a=b,c in (d)`), or empty.
    pub selector: String,
}

/// Everything a plan works from.
pub struct Input<'a> {
    /// The resource's `replicated-by` value.
    pub owner: &'a str,
    /// Who writes.
    pub writer: &'a Writer,
    /// Where items go.
    pub scope: ReplicationScope,
    /// The resource's `spec.resources`.
    pub resources: &'a [ReplicatedResources],
    /// The selected tenants (a TenantResource: its own, or none outside a tenant).
    pub tenants: &'a [Selected],
}

/// What a resource wants applied, and what is wrong with it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Objects to apply, each with apiVersion, kind and metadata (name, labels; a namespace where the
    /// item or the scope gives one, placed finally by [`place`]).
    pub objects: Vec<Value>,
    /// Sentences about items that cannot be replicated.
    pub problems: Vec<String>,
}

/// Fields the API server sets, which a copy must not carry.
const SERVER_FIELDS: [&str; 8] = [
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "ownerReferences",
    "deletionTimestamp",
    "selfLink",
];

/// Identifies an object: (apiVersion, kind, namespace, name).
pub fn key_of(object: &Value) -> (String, String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        s(&object["apiVersion"]),
        s(&object["kind"]),
        s(&object["metadata"]["namespace"]),
        s(&object["metadata"]["name"]),
    )
}

/// An item made ready to apply: server fields dropped, the namespace set (when given), metadata added.
fn finish_item(
    source: &Value,
    namespace: Option<&str>,
    tenant: Option<&str>,
    owner: &str,
    extra: Option<&AdditionalMetadata>,
) -> Value {
    let mut object = source.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    let meta = &mut object["metadata"];
    if let Some(m) = meta.as_object_mut() {
        for field in SERVER_FIELDS {
            m.remove(field);
        }
        if let Some(annotations) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    if let Some(ns) = namespace {
        meta["namespace"] = json!(ns);
    }
    let mut labels: BTreeMap<String, Value> = meta["labels"]
        .as_object()
        .map(|m| m.clone().into_iter().collect())
        .unwrap_or_default();
    let mut annotations: BTreeMap<String, Value> = meta["annotations"]
        .as_object()
        .map(|m| m.clone().into_iter().collect())
        .unwrap_or_default();
    if let Some(extra) = extra {
        labels.extend(extra.labels.iter().map(|(k, v)| (k.clone(), json!(v))));
        annotations.extend(extra.annotations.iter().map(|(k, v)| (k.clone(), json!(v))));
    }
    if let Some(tenant) = tenant {
        labels.insert(labels::TENANT.to_owned(), json!(tenant));
    }
    labels.insert(labels::REPLICATED_BY.to_owned(), json!(owner));
    meta["labels"] = json!(labels);
    if annotations.is_empty() {
        if let Some(m) = meta.as_object_mut() {
            m.remove("annotations");
        }
    } else {
        meta["annotations"] = json!(annotations);
    }
    object
}

/// The read a `namespacedItem` makes for one tenant and namespace (short-form templates replaced).
/// `None` with a reason when it has no namespace to read from.
pub fn item_read(item: &NamespacedItem, writer: &Writer, vars: &FastVars<'_>) -> Result<Read, String> {
    let namespace = fast(&item.namespace, vars);
    let namespace = match (namespace.is_empty(), writer) {
        (false, _) => namespace,
        (true, Writer::Tenant { own }) => own.clone(),
        (true, Writer::Global) => {
            return Err("a namespacedItem of a GlobalTenantResource needs a namespace".to_owned());
        }
    };
    Ok(read_of(
        (&item.api_version, &item.kind),
        Some(namespace),
        item.name.as_deref(),
        item.selector.as_ref(),
        vars,
    ))
}

/// A read with the short form replaced in its name and selector.
fn read_of(
    (api_version, kind): (&str, &str),
    namespace: Option<String>,
    name: Option<&str>,
    label_selector: Option<&LabelSelector>,
    vars: &FastVars<'_>,
) -> Read {
    Read {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        namespace,
        name: name.map(|n| fast(n, vars)),
        selector: label_selector
            .map(|s| fast(&selector::to_query(s), vars))
            .unwrap_or_default(),
    }
}

/// The read a `context` resource makes. Without a namespace: the target namespace in scope
/// `Namespace`, a TenantResource's own namespace, else every namespace.
pub fn context_read(item: &ContextResource, writer: &Writer, vars: &FastVars<'_>) -> Read {
    let namespace = item
        .namespace
        .as_ref()
        .map(|n| fast(n, vars))
        .filter(|n| !n.is_empty())
        .or_else(|| vars.namespace.map(str::to_owned))
        .or_else(|| match writer {
            Writer::Tenant { own } => Some(own.clone()),
            Writer::Global => None,
        });
    read_of(
        (&item.api_version, &item.kind),
        namespace,
        item.name.as_deref(),
        item.selector.as_ref(),
        vars,
    )
}

/// Every read a plan will make, so the caller can do them all before planning.
pub fn reads(input: &Input<'_>) -> BTreeSet<Read> {
    let wanted = std::cell::RefCell::new(BTreeSet::new());
    plan(input, &|read| {
        wanted.borrow_mut().insert(read.clone());
        Ok(Vec::new())
    });
    wanted.into_inner()
}

/// One place items are made for: a tenant (absent in scope `None`) and a namespace (scope
/// `Namespace` only).
struct Spot<'a> {
    tenant: Option<&'a Selected>,
    namespace: Option<&'a Target>,
}

/// Plans a resource's objects. `read` answers a [`Read`] with the objects it finds (the caller lists
/// them; [`reads`] says which beforehand).
pub fn plan(input: &Input<'_>, read: &dyn Fn(&Read) -> Result<Vec<Value>, String>) -> Plan {
    let mut plan = Plan::default();
    let mut seen = BTreeSet::new();
    for (i, resource) in input.resources.iter().enumerate() {
        let spots: Vec<Spot<'_>> = match (input.scope, input.writer) {
            (ReplicationScope::Namespace, _) => input
                .tenants
                .iter()
                .flat_map(|t| {
                    t.namespaces
                        .iter()
                        .filter(|n| {
                            resource
                                .namespace_selector
                                .as_ref()
                                .is_none_or(|s| selector::matches(s, &n.namespace.labels))
                        })
                        .map(move |n| Spot {
                            tenant: Some(t),
                            namespace: Some(n),
                        })
                })
                .collect(),
            // A TenantResource always has its tenant: `None` means the same as `Tenant` there.
            (ReplicationScope::Tenant, _) | (ReplicationScope::None, Writer::Tenant { .. }) => input
                .tenants
                .iter()
                .map(|t| Spot {
                    tenant: Some(t),
                    namespace: None,
                })
                .collect(),
            (ReplicationScope::None, Writer::Global) => vec![Spot {
                tenant: None,
                namespace: None,
            }],
        };
        // Each template is parsed once for all the places it renders in.
        let compiled: Vec<Result<template::Compiled, String>> = resource
            .generators
            .iter()
            .map(|g| template::compile(&g.template, g.missing_key))
            .collect();
        for (j, c) in compiled.iter().enumerate() {
            if let Err(e) = c {
                plan.problems.push(format!("resources[{i}].generators[{j}]: {e}"));
            }
        }
        if input.scope != ReplicationScope::Namespace && !resource.namespaced_items.is_empty() {
            plan.problems.push(format!(
                "resources[{i}]: namespacedItems are copied into namespaces: they need scope Namespace"
            ));
        }
        for spot in spots {
            let tenant_name = spot.tenant.map(Selected::name);
            let vars = FastVars {
                tenant: tenant_name,
                namespace: spot.namespace.map(|n| n.namespace.name.as_str()),
            };
            let extra = resource.additional_metadata.as_ref().map(|m| AdditionalMetadata {
                labels: m
                    .labels
                    .iter()
                    .map(|(k, v)| (fast(k, &vars), fast(v, &vars)))
                    .collect(),
                annotations: m
                    .annotations
                    .iter()
                    .map(|(k, v)| (fast(k, &vars), fast(v, &vars)))
                    .collect(),
            });
            let mut items: Vec<(Option<String>, Value)> = Vec::new();
            if input.scope == ReplicationScope::Namespace {
                for item in &resource.namespaced_items {
                    let found = item_read(item, input.writer, &vars).and_then(|r| {
                        let objects = read(&r)?;
                        if objects.is_empty() && r.name.is_some() && !item.optional {
                            return Err(format!(
                                "{} `{}` does not exist",
                                r.kind,
                                r.name.unwrap_or_default()
                            ));
                        }
                        Ok((r.namespace, objects))
                    });
                    match found {
                        Ok((ns, objects)) => items.extend(objects.into_iter().map(|o| (ns.clone(), o))),
                        Err(e) => plan.problems.push(format!(
                            "resources[{i}]: cannot read {} {} in namespace `{}`: {e}",
                            item.api_version,
                            item.kind,
                            fast(&item.namespace, &vars)
                        )),
                    }
                }
            }
            for (j, raw) in resource.raw_items.iter().enumerate() {
                let named = raw["metadata"]["name"].as_str().is_some_and(|n| !n.is_empty());
                if raw["apiVersion"].as_str().is_none() || raw["kind"].as_str().is_none() || !named {
                    plan.problems.push(format!(
                        "resources[{i}].rawItems[{j}]: an item needs apiVersion, kind and metadata.name"
                    ));
                    continue;
                }
                items.push((None, fast_value(raw, &vars)));
            }
            if !resource.generators.is_empty() {
                match template_data(resource, &spot, input.writer, &vars, read) {
                    Ok(data) => {
                        for (j, generator) in compiled.iter().enumerate() {
                            let Ok(generator) = generator else {
                                continue; // reported once, above
                            };
                            match generator.render(&data) {
                                Ok(docs) => {
                                    for (k, doc) in docs.into_iter().enumerate() {
                                        let named =
                                            doc["metadata"]["name"].as_str().is_some_and(|n| !n.is_empty());
                                        if doc["apiVersion"].as_str().is_none()
                                            || doc["kind"].as_str().is_none()
                                            || !named
                                        {
                                            plan.problems.push(format!(
                                                "resources[{i}].generators[{j}]{}: document {} needs apiVersion, kind and metadata.name",
                                                where_(tenant_name, vars.namespace),
                                                k + 1
                                            ));
                                            continue;
                                        }
                                        items.push((None, doc));
                                    }
                                }
                                Err(e) => plan.problems.push(format!(
                                    "resources[{i}].generators[{j}]{}: {e}",
                                    where_(tenant_name, vars.namespace)
                                )),
                            }
                        }
                    }
                    Err(e) => plan.problems.push(format!(
                        "resources[{i}].context{}: {e}",
                        where_(tenant_name, vars.namespace)
                    )),
                }
            }
            let target_ns = spot.namespace.map(|n| n.namespace.name.as_str());
            for (source_namespace, item) in &items {
                if target_ns.is_some() && source_namespace.as_deref() == target_ns {
                    continue; // never overwrite the source with its own copy
                }
                let object = finish_item(item, target_ns, tenant_name, input.owner, extra.as_ref());
                let key = key_of(&object);
                if seen.insert(key.clone()) {
                    plan.objects.push(object);
                } else {
                    plan.problems.push(format!(
                        "resources[{i}]: {} {}/{} is named twice; the first one is applied",
                        key.1, key.2, key.3
                    ));
                }
            }
        }
    }
    let mut said = BTreeSet::new();
    plan.problems.retain(|p| said.insert(p.clone()));
    plan
}

fn where_(tenant: Option<&str>, namespace: Option<&str>) -> String {
    match (tenant, namespace) {
        (Some(t), Some(n)) => format!(" (tenant `{t}`, namespace `{n}`)"),
        (Some(t), None) => format!(" (tenant `{t}`)"),
        _ => String::new(),
    }
}

/// The data generators see: `$.tenant`, `$.namespace` where there is one, and each context index.
fn template_data(
    resource: &ReplicatedResources,
    spot: &Spot<'_>,
    writer: &Writer,
    vars: &FastVars<'_>,
    read: &dyn Fn(&Read) -> Result<Vec<Value>, String>,
) -> Result<Value, String> {
    let mut data = serde_json::Map::new();
    if let Some(t) = spot.tenant {
        data.insert("tenant".into(), t.tenant.clone());
    }
    if let Some(n) = spot.namespace {
        data.insert(
            "namespace".into(),
            json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": n.namespace.name, "labels": n.namespace.labels}}),
        );
    }
    for item in resource.context.iter().flat_map(|c| c.resources.iter()) {
        let r = context_read(item, writer, vars);
        let index = item.index.clone().unwrap_or_else(|| item.kind.to_lowercase());
        if matches!(index.as_str(), "tenant" | "namespace") {
            return Err(format!("index `{index}` would hide $.{index}: choose another"));
        }
        let objects = read(&r).map_err(|e| format!("cannot read {} {}: {e}", r.api_version, r.kind))?;
        let value = match &r.name {
            Some(name) => match objects.into_iter().next() {
                Some(o) => o,
                None if item.optional => Value::Null,
                None => return Err(format!("{} `{name}` does not exist and is not optional", r.kind)),
            },
            None => Value::Array(objects),
        };
        data.insert(index, value);
    }
    Ok(Value::Object(data))
}

/// Where an object finally goes, once discovery told whether its kind is namespaced: the namespace
/// (empty for a cluster-scoped object), or why it may not be written.
pub fn place(
    writer: &Writer,
    scope: ReplicationScope,
    namespaced: bool,
    object_namespace: &str,
    tenant_namespaces: &BTreeSet<String>,
) -> Result<String, String> {
    match (namespaced, writer) {
        (false, Writer::Tenant { .. }) => Err(
            "is cluster-scoped: a TenantResource writes only into its tenant's namespaces \
             (cluster-scoped objects come from a GlobalTenantResource, written by an administrator)"
                .to_owned(),
        ),
        (false, Writer::Global) if scope == ReplicationScope::Namespace => Err(
            "is cluster-scoped: with scope Namespace items go into namespaces; use scope Tenant or None"
                .to_owned(),
        ),
        (false, Writer::Global) => Ok(String::new()),
        (true, _) if scope == ReplicationScope::Namespace => Ok(object_namespace.to_owned()),
        (true, Writer::Global) if object_namespace.is_empty() => Err(format!(
            "needs metadata.namespace: with scope {scope:?} a namespaced item says where it goes"
        )),
        (true, Writer::Global) => Ok(object_namespace.to_owned()),
        (true, Writer::Tenant { own }) if object_namespace.is_empty() => Ok(own.clone()),
        (true, Writer::Tenant { .. }) if tenant_namespaces.contains(object_namespace) => {
            Ok(object_namespace.to_owned())
        }
        (true, Writer::Tenant { .. }) => Err(format!(
            "names namespace `{object_namespace}`, which is not one of the tenant's"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(tenant: &str, ns: &str, labels: &[(&str, &str)]) -> Target {
        Target {
            tenant: tenant.into(),
            namespace: TenantNamespace {
                name: ns.into(),
                labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            },
        }
    }

    fn tenant(name: &str, namespaces: &[Target]) -> Selected {
        Selected {
            tenant: json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
                "metadata": {"name": name}, "spec": {"data": {"repo": format!("https://git.example/{name}")}},
                "status": {"namespaces": namespaces.iter().map(|n| n.namespace.name.clone()).collect::<Vec<_>>()}}),
            namespaces: namespaces.to_vec(),
        }
    }

    /// The selected tenants for a list of targets, grouped by tenant in order.
    fn selected(targets: &[Target]) -> Vec<Selected> {
        let mut out: Vec<Selected> = Vec::new();
        for t in targets {
            match out.iter_mut().find(|s| s.name() == t.tenant) {
                Some(s) => {
                    let mut all = s.namespaces.clone();
                    all.push(t.clone());
                    *s = tenant(&t.tenant, &all);
                }
                None => out.push(tenant(&t.tenant, std::slice::from_ref(t))),
            }
        }
        out
    }

    fn input<'a>(
        owner: &'a str,
        writer: &'a Writer,
        scope: ReplicationScope,
        resources: &'a [ReplicatedResources],
        tenants: &'a [Selected],
    ) -> Input<'a> {
        Input {
            owner,
            writer,
            scope,
            resources,
            tenants,
        }
    }

    fn resources(yaml: &str) -> Vec<ReplicatedResources> {
        serde_saphyr::from_str(yaml).unwrap()
    }

    /// `Kind/namespace/name` of every object a plan wants, in order.
    fn kinds_and_names(plan: &Plan) -> Vec<String> {
        plan.objects
            .iter()
            .map(key_of)
            .map(|k| format!("{}/{}/{}", k.1, k.2, k.3))
            .collect()
    }

    #[test]
    fn copies_and_raw_items_land_in_every_selected_namespace_with_metadata() {
        let res = resources(
            r#"
- namespaceSelector: {matchLabels: {env: prod}}
  additionalMetadata: {labels: {copied: "yes"}, annotations: {note: platform}}
  namespacedItems: [{apiVersion: v1, kind: ConfigMap, namespace: platform}]
  rawItems:
  - {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: deny-all, namespace: ignored}, spec: {podSelector: {}}}
"#,
        );
        let source = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cluster-info",
            "namespace": "platform", "uid": "u1", "resourceVersion": "7", "labels": {"app": "info"},
            "managedFields": [{}], "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "data": {"region": "eu"}});
        let targets = [
            target("solar", "solar-prod", &[("env", "prod")]),
            target("solar", "solar-dev", &[("env", "dev")]),
            target("wind", "wind-prod", &[("env", "prod")]),
        ];
        let tenants = selected(&targets);
        let plan = plan(
            &input(
                "globaltenantresource..shared",
                &Writer::Global,
                ReplicationScope::Namespace,
                &res,
                &tenants,
            ),
            &|item| {
                assert_eq!(
                    (item.kind.as_str(), item.namespace.as_deref()),
                    ("ConfigMap", Some("platform"))
                );
                Ok(vec![source.clone()])
            },
        );
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        let keys = kinds_and_names(&plan);
        assert_eq!(
            keys,
            [
                "ConfigMap/solar-prod/cluster-info",
                "NetworkPolicy/solar-prod/deny-all",
                "ConfigMap/wind-prod/cluster-info",
                "NetworkPolicy/wind-prod/deny-all"
            ]
        );
        let copy = &plan.objects[0];
        assert_eq!(copy["data"]["region"], "eu");
        assert!(copy["metadata"].get("uid").is_none() && copy["metadata"].get("resourceVersion").is_none());
        assert!(copy["metadata"].get("managedFields").is_none());
        assert_eq!(
            copy["metadata"]["labels"],
            json!({"app": "info", "copied": "yes",
            labels::TENANT: "solar", labels::REPLICATED_BY: "globaltenantresource..shared"})
        );
        assert_eq!(copy["metadata"]["annotations"], json!({"note": "platform"}));
        assert_eq!(plan.objects[3]["metadata"]["labels"][labels::TENANT], "wind");
    }

    #[test]
    fn a_source_is_never_copied_onto_itself_and_bad_items_are_reported() {
        let res = resources(
            r#"
- namespacedItems: [{apiVersion: v1, kind: Secret, namespace: solar-a}, {apiVersion: v1, kind: Secret, namespace: gone}]
  rawItems: [{apiVersion: v1, kind: ConfigMap}, {apiVersion: v1, kind: ConfigMap, metadata: {name: x}}, {apiVersion: v1, kind: ConfigMap, metadata: {name: x}}]
"#,
        );
        let targets = [target("solar", "solar-a", &[]), target("solar", "solar-b", &[])];
        let tenants = selected(&targets);
        let writer = Writer::Tenant {
            own: "solar-a".into(),
        };
        let plan = plan(
            &input(
                "tenantresource.solar-a.pull",
                &writer,
                ReplicationScope::Namespace,
                &res,
                &tenants,
            ),
            &|item| {
                if item.namespace.as_deref() == Some("gone") {
                    return Err("namespaces \"gone\" not found".into());
                }
                Ok(vec![
                    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pull", "namespace": "solar-a"}}),
                ])
            },
        );
        let keys = kinds_and_names(&plan);
        assert_eq!(
            keys,
            [
                "ConfigMap/solar-a/x",
                "Secret/solar-b/pull",
                "ConfigMap/solar-b/x"
            ]
        );
        assert_eq!(plan.problems.len(), 4, "{:?}", plan.problems);
        assert!(plan.problems[0].contains("cannot read v1 Secret in namespace `gone`"));
        assert!(plan.problems[1].contains("rawItems[0]: an item needs apiVersion, kind and metadata.name"));
        assert!(plan.problems[2].contains("ConfigMap solar-a/x is named twice"));
    }

    #[test]
    fn short_form_templates_fill_names_sources_and_metadata_per_namespace() {
        // Capsule's examples: a LimitRange named per tenant and namespace, a source namespace and a
        // selector per tenant, a label per tenant.
        let res = resources(
            r#"
- additionalMetadata: {labels: {k8s.company.com/tenant: '{{tenant.name}}'}}
  namespacedItems:
  - {apiVersion: v1, kind: Secret, namespace: '{{tenant.name}}-system', selector: {matchLabels: {for: '{{tenant.name}}'}}}
  rawItems:
  - {apiVersion: v1, kind: LimitRange, metadata: {name: '{{tenant.name}}-{{namespace}}-limits'}, spec: {note: 'for {{tenant.name}}, keep {{ .Values.x }}'}}
"#,
        );
        let targets = [target("solar", "solar-a", &[]), target("wind", "wind-a", &[])];
        let tenants = selected(&targets);
        let asked = std::cell::RefCell::new(Vec::new());
        let input = input(
            "globaltenantresource..lr",
            &Writer::Global,
            ReplicationScope::Namespace,
            &res,
            &tenants,
        );
        let plan = plan(&input, &|r| {
            asked
                .borrow_mut()
                .push((r.namespace.clone().unwrap_or_default(), r.selector.clone()));
            Ok(vec![
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pull"}}),
            ])
        });
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        assert_eq!(
            asked.into_inner(),
            [
                ("solar-system".to_owned(), "for=solar".to_owned()),
                ("wind-system".to_owned(), "for=wind".to_owned())
            ]
        );
        assert_eq!(
            kinds_and_names(&plan),
            [
                "Secret/solar-a/pull",
                "LimitRange/solar-a/solar-solar-a-limits",
                "Secret/wind-a/pull",
                "LimitRange/wind-a/wind-wind-a-limits"
            ]
        );
        assert_eq!(plan.objects[1]["spec"]["note"], "for solar, keep {{ .Values.x }}");
        assert_eq!(
            plan.objects[3]["metadata"]["labels"]["k8s.company.com/tenant"],
            "wind"
        );
        assert_eq!(reads(&input).len(), 2);
    }

    #[test]
    fn scope_tenant_renders_generators_once_per_tenant_where_the_item_says() {
        // An Argo CD AppProject per tenant, in the argocd namespace, with the tenant's namespaces as
        // destinations and its repository from spec.data; and a ClusterRole per tenant.
        let res = resources(
            r#"
- generators:
  - missingKey: error
    template: |
      apiVersion: argoproj.io/v1alpha1
      kind: AppProject
      metadata: {name: '{{ $.tenant.metadata.name }}', namespace: argocd}
      spec:
        sourceRepos: ['{{ $.tenant.spec.data.repo }}']
        destinations:
        {{- range $.tenant.status.namespaces }}
        - {server: https://kubernetes.default.svc, namespace: '{{ . }}'}
        {{- end }}
      ---
      apiVersion: rbac.authorization.k8s.io/v1
      kind: ClusterRole
      metadata: {name: 'tenant:{{ $.tenant.metadata.name }}:reader'}
      rules: []
"#,
        );
        let targets = [
            target("solar", "solar-a", &[]),
            target("solar", "solar-b", &[]),
            target("wind", "wind-a", &[]),
        ];
        let tenants = selected(&targets);
        let plan = plan(
            &input(
                "globaltenantresource..argo",
                &Writer::Global,
                ReplicationScope::Tenant,
                &res,
                &tenants,
            ),
            &|_| Ok(vec![]),
        );
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        assert_eq!(
            kinds_and_names(&plan),
            [
                "AppProject/argocd/solar",
                "ClusterRole//tenant:solar:reader",
                "AppProject/argocd/wind",
                "ClusterRole//tenant:wind:reader"
            ]
        );
        let solar = &plan.objects[0];
        assert_eq!(solar["spec"]["sourceRepos"], json!(["https://git.example/solar"]));
        assert_eq!(
            solar["spec"]["destinations"],
            json!([{"server": "https://kubernetes.default.svc", "namespace": "solar-a"},
                   {"server": "https://kubernetes.default.svc", "namespace": "solar-b"}])
        );
        assert_eq!(solar["metadata"]["labels"][labels::TENANT], "solar");
        assert_eq!(
            plan.objects[1]["metadata"]["labels"][labels::REPLICATED_BY],
            "globaltenantresource..argo"
        );
    }

    #[test]
    fn context_objects_reach_the_templates_and_their_errors_are_reported() {
        let res = resources(
            r#"
- context:
    resources:
    - {index: secrets, apiVersion: v1, kind: Secret, namespace: system-pull, selector: {matchLabels: {pull: "true"}}}
    - {index: must, apiVersion: v1, kind: ConfigMap, name: settings, optional: false}
  generators:
  - template: |
      apiVersion: v1
      kind: ServiceAccount
      metadata: {name: default}
      imagePullSecrets:
      {{- range $.secrets }}
      - name: {{ .metadata.name }}
      {{- end }}
"#,
        );
        let targets = [target("solar", "solar-a", &[])];
        let tenants = selected(&targets);
        let settings_exist = std::cell::Cell::new(true);
        let read = |r: &Read| -> Result<Vec<Value>, String> {
            match (r.kind.as_str(), r.namespace.as_deref(), r.name.as_deref()) {
                ("Secret", Some("system-pull"), None) if r.selector == "pull=true" => Ok(vec![
                    json!({"metadata": {"name": "harbor"}}),
                    json!({"metadata": {"name": "quay"}}),
                ]),
                // No namespace given: the target namespace.
                ("ConfigMap", Some("solar-a"), Some("settings")) if settings_exist.get() => {
                    Ok(vec![json!({"data": {}})])
                }
                ("ConfigMap", Some("solar-a"), Some("settings")) => Ok(vec![]),
                other => Err(format!("unexpected read {other:?}")),
            }
        };
        let input = input(
            "globaltenantresource..sa",
            &Writer::Global,
            ReplicationScope::Namespace,
            &res,
            &tenants,
        );
        let ok = plan(&input, &read);
        assert!(ok.problems.is_empty(), "{:?}", ok.problems);
        assert_eq!(
            ok.objects[0]["imagePullSecrets"],
            json!([{"name": "harbor"}, {"name": "quay"}])
        );
        assert_eq!(ok.objects[0]["metadata"]["namespace"], "solar-a");
        settings_exist.set(false);
        let missing = plan(&input, &read);
        assert!(missing.objects.is_empty());
        assert_eq!(missing.problems.len(), 1, "{:?}", missing.problems);
        assert!(
            missing.problems[0].contains("resources[0].context (tenant `solar`, namespace `solar-a`): ConfigMap `settings` does not exist"),
            "{:?}",
            missing.problems
        );
    }

    #[test]
    fn scope_none_renders_once_and_namespaced_items_need_scope_namespace() {
        let res = resources(
            r#"
- namespacedItems: [{apiVersion: v1, kind: Secret, namespace: x}]
  generators:
  - template: |
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: overrides, namespace: observability}
      data: {tenant: '{{ $.tenant }}'}
"#,
        );
        let targets = [target("solar", "solar-a", &[]), target("wind", "wind-a", &[])];
        let tenants = selected(&targets);
        let plan = plan(
            &input(
                "globaltenantresource..m",
                &Writer::Global,
                ReplicationScope::None,
                &res,
                &tenants,
            ),
            &|_| Ok(vec![]),
        );
        assert_eq!(kinds_and_names(&plan), ["ConfigMap/observability/overrides"]);
        assert_eq!(plan.objects[0]["data"]["tenant"], "<no value>");
        assert!(
            plan.objects[0]["metadata"]["labels"]
                .get(labels::TENANT)
                .is_none()
        );
        assert_eq!(plan.problems.len(), 1);
        assert!(plan.problems[0].contains("they need scope Namespace"));
    }

    #[test]
    fn placement_keeps_tenant_resources_in_their_tenant_and_out_of_cluster_scope() {
        let ns: BTreeSet<String> = ["solar-a".to_owned(), "solar-b".to_owned()].into();
        let tr = Writer::Tenant {
            own: "solar-a".into(),
        };
        use ReplicationScope::{Namespace, None as Once, Tenant};
        // CVE-2026-22872: a TenantResource never writes a cluster-scoped object, in any scope.
        for scope in [Namespace, Tenant, Once] {
            let e = place(&tr, scope, false, "", &ns).unwrap_err();
            assert!(
                e.contains("a TenantResource writes only into its tenant's namespaces"),
                "{e}"
            );
        }
        assert_eq!(place(&tr, Tenant, true, "", &ns).unwrap(), "solar-a");
        assert_eq!(place(&tr, Tenant, true, "solar-b", &ns).unwrap(), "solar-b");
        assert!(
            place(&tr, Tenant, true, "kube-system", &ns)
                .unwrap_err()
                .contains("not one of the tenant's")
        );
        assert_eq!(place(&Writer::Global, Tenant, false, "x", &ns).unwrap(), "");
        assert!(
            place(&Writer::Global, Namespace, false, "", &ns)
                .unwrap_err()
                .contains("use scope Tenant or None")
        );
        assert!(
            place(&Writer::Global, Once, true, "", &ns)
                .unwrap_err()
                .contains("needs metadata.namespace")
        );
        assert_eq!(
            place(&Writer::Global, Once, true, "argocd", &ns).unwrap(),
            "argocd"
        );
    }

    #[test]
    fn owner_labels_stay_valid_label_values() {
        assert_eq!(
            owner_label("GlobalTenantResource", None, "shared"),
            "globaltenantresource..shared"
        );
        assert_eq!(
            owner_label("TenantResource", Some("solar-a"), "pull"),
            "tenantresource.solar-a.pull"
        );
        let long = owner_label("TenantResource", Some(&"n".repeat(60)), &"r".repeat(60));
        assert_eq!(long.len(), 63);
        assert_ne!(
            long,
            owner_label("TenantResource", Some(&"n".repeat(60)), &"s".repeat(60))
        );
    }
}
