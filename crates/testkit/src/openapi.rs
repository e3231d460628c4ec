//! OpenAPI v3 documents, enough for `kubectl explain` on custom resources and for kubectl to see that
//! the server validates fields itself.

use serde_json::{Value, json};

use crate::registry::Registry;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the list of group-version documents.
pub fn index(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for t in registry.all() {
        let path = gv_path(&t.group, &t.version);
        let url = format!("/openapi/v3/{path}?hash={}", hash(registry, &t.group, &t.version));
        paths.insert(path, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

fn hash(registry: &Registry, group: &str, version: &str) -> String {
    let text = document(registry, &gv_path(group, version))
        .map(|d| d.to_string())
        .unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

fn schema_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    if group.is_empty() {
        format!("io.k8s.api.core.{version}.{kind}")
    } else {
        format!("{}.{version}.{kind}", reversed.join("."))
    }
}

/// One group-version document.
pub fn document(registry: &Registry, gv: &str) -> Option<Value> {
    let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), (*v).to_owned()),
        ["apis", g, v] => ((*g).to_owned(), (*v).to_owned()),
        _ => return None,
    };
    let types: Vec<_> = registry
        .all()
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .cloned()
        .collect();
    if types.is_empty() {
        return None;
    }
    let mut schemas = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".into(),
        object_meta(),
    );
    for t in &types {
        let gvk = json!([{"group": t.group, "version": t.version, "kind": t.kind}]);
        let mut schema = t
            .crd
            .as_ref()
            .and_then(|crd| crd.spec.versions.iter().find(|v| v.name == t.version))
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or_else(
                || json!({"type": "object", "description": format!("{} ({})", t.kind, t.api_version())}),
            );
        if let Some(props) = schema
            .get_mut("properties")
            .and_then(Value::as_object_mut)
            .or(None)
        {
            props.insert("metadata".into(), json!({
                "description": "Standard object's metadata.",
                "allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}],
            }));
            props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        }
        schema["x-kubernetes-group-version-kind"] = gvk;
        schemas.insert(schema_name(&t.group, &t.version, &t.kind), schema);
        // kubectl finds a resource's kind through the operations' x-kubernetes-group-version-kind
        // (explain reads `get`; the field-validation check reads `patch`'s fieldValidation parameter).
        let prefix = format!("/{}", gv_path(&t.group, &t.version));
        let gvk_object = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let field_validation = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let ok = json!({"200": {"description": "OK"}});
        let op = |action: &str, params: bool| {
            let mut o = json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk_object, "responses": ok});
            if params {
                o["parameters"] = json!([field_validation]);
            }
            o
        };
        let collections = if t.namespaced {
            vec![
                format!("{prefix}/namespaces/{{namespace}}/{}", t.plural),
                format!("{prefix}/{}", t.plural),
            ]
        } else {
            vec![format!("{prefix}/{}", t.plural)]
        };
        for (i, collection) in collections.iter().enumerate() {
            let mut ops = json!({"get": op("list", false)});
            if i == 0 {
                ops["post"] = op("post", true);
                paths.insert(format!("{collection}/{{name}}"), json!({
                    "get": op("get", false), "put": op("put", true), "patch": op("patch", true), "delete": op("delete", false),
                }));
            }
            paths.insert(collection.clone(), ops);
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

fn object_meta() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    let m = |d: &str| json!({"type": "object", "additionalProperties": {"type": "string"}, "description": d});
    json!({
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have.",
        "properties": {
            "name": s("Name must be unique within a namespace."),
            "namespace": s("Namespace defines the space within which each name must be unique."),
            "generateName": s("GenerateName is an optional prefix, used by the server, to generate a unique name."),
            "labels": m("Map of string keys and values that can be used to organize and categorize objects."),
            "annotations": m("Annotations is an unstructured key value map stored with a resource."),
            "uid": s("UID is the unique in time and space value for this object."),
            "resourceVersion": s("An opaque value that represents the internal version of this object."),
            "creationTimestamp": s("CreationTimestamp is a timestamp representing the server time when this object was created."),
        },
    })
}
