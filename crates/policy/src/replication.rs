//! Replication: which objects a GlobalTenantResource or TenantResource wants, in which namespaces.
//!
//! The caller lists the source objects of `namespacedItems` and the target namespaces; this module
//! turns them into the exact objects to apply: copies without server-set fields, in each target
//! namespace, with `additionalMetadata`, the tenant label and the `bulkhead.dev/replicated-by` label.

use std::collections::{BTreeMap, BTreeSet};

use bulkhead_api::labels;
use bulkhead_api::replication::{NamespacedItem, ReplicatedResources};
use serde_json::{Value, json};

use crate::desired::TenantNamespace;
use crate::selector;

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

/// What a resource wants applied, and what is wrong with it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Objects to apply, each with apiVersion, kind and metadata (name, namespace, labels).
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

fn copy_into(
    source: &Value,
    target: &Target,
    owner: &str,
    extra: Option<&bulkhead_api::common::AdditionalMetadata>,
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
    meta["namespace"] = json!(target.namespace.name);
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
    labels.insert(labels::TENANT.to_owned(), json!(target.tenant));
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

/// Plans a resource's objects. `sources` answers a `namespacedItem` with the objects it selects (the
/// caller lists them by apiVersion, kind, namespace and selector).
pub fn plan(
    owner: &str,
    resources: &[ReplicatedResources],
    targets: &[Target],
    sources: &dyn Fn(&NamespacedItem) -> Result<Vec<Value>, String>,
) -> Plan {
    let mut plan = Plan::default();
    let mut seen = BTreeSet::new();
    for (i, resource) in resources.iter().enumerate() {
        let selected: Vec<&Target> = targets
            .iter()
            .filter(|t| {
                resource
                    .namespace_selector
                    .as_ref()
                    .is_none_or(|s| selector::matches(s, &t.namespace.labels))
            })
            .collect();
        let mut items: Vec<(String, Value)> = Vec::new();
        for item in &resource.namespaced_items {
            match sources(item) {
                Ok(found) => items.extend(found.into_iter().map(|o| (item.namespace.clone(), o))),
                Err(e) => plan.problems.push(format!(
                    "resources[{i}]: cannot read {} {} in namespace `{}`: {e}",
                    item.api_version, item.kind, item.namespace
                )),
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
            items.push((String::new(), raw.clone()));
        }
        for target in &selected {
            for (source_namespace, item) in &items {
                if *source_namespace == target.namespace.name {
                    continue; // never overwrite the source with its own copy
                }
                let object = copy_into(item, target, owner, resource.additional_metadata.as_ref());
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
    plan
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
        let plan = plan("globaltenantresource..shared", &res, &targets, &|item| {
            assert_eq!(
                (item.kind.as_str(), item.namespace.as_str()),
                ("ConfigMap", "platform")
            );
            Ok(vec![source.clone()])
        });
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
        let plan = plan("tenantresource.solar-a.pull", &res, &targets, &|item| {
            if item.namespace == "gone" {
                return Err("namespaces \"gone\" not found".into());
            }
            Ok(vec![
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pull", "namespace": "solar-a"}}),
            ])
        });
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
