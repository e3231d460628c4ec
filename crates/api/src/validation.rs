//! Checks an object against a CRD's OpenAPI schema the way the API server does on create with
//! `fieldValidation=Strict`: unknown fields, types, enums, bounds and required fields are reported with
//! the field path, in the API server's wording. Null values are dropped first (the API server prunes
//! them unless the field is nullable), so they are never an error.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

/// Every problem the API server would report creating `object` against `crd` (the version named by the
/// object's apiVersion); empty when it would accept it.
pub fn validate(crd: &CustomResourceDefinition, object: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if group != crd.spec.group || kind != crd.spec.names.kind {
        errors.push(format!(
            "apiVersion/kind: {api_version}/{kind} is not {}/{}",
            crd.spec.group, crd.spec.names.kind
        ));
        return errors;
    }
    let Some(schema) = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == version && v.served)
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
    else {
        errors.push(format!("apiVersion: version {version:?} is not served"));
        return errors;
    };
    let Some(fields) = object.as_object() else {
        errors.push("object: must be a JSON object".to_owned());
        return errors;
    };
    for (name, value) in fields {
        match name.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                if !value.is_object() {
                    errors.push("metadata: Invalid value: must be an object".to_owned());
                }
            }
            _ => match schema.properties.as_ref().and_then(|p| p.get(name)) {
                Some(prop) => check(prop, value, name, &mut errors),
                None if schema.x_kubernetes_preserve_unknown_fields == Some(true) => {}
                None => errors.push(format!("unknown field \"{name}\"")),
            },
        }
    }
    errors
}

fn check(s: &JSONSchemaProps, v: &Value, path: &str, errors: &mut Vec<String>) {
    if v.is_null() {
        return;
    }
    if s.x_kubernetes_int_or_string == Some(true) {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            errors.push(format!(
                "{path}: Invalid value: {}: must be an integer or a string",
                short(v)
            ));
        }
        return;
    }
    let type_ok = match s.type_.as_deref() {
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some("array") => v.is_array(),
        Some("object") => v.is_object(),
        _ => true,
    };
    if !type_ok {
        errors.push(format!(
            "{path}: Invalid value: \"{}\": {path} in body must be of type {}: \"{}\"",
            json_type(v),
            s.type_.as_deref().unwrap_or("?"),
            json_type(v)
        ));
        return;
    }
    if let Some(allowed) = &s.enum_
        && !allowed.iter().any(|a| &a.0 == v)
    {
        let list: Vec<String> = allowed.iter().map(|a| a.0.to_string()).collect();
        errors.push(format!(
            "{path}: Unsupported value: {v}: supported values: {}",
            list.join(", ")
        ));
    }
    if let (Some(min), Some(n)) = (s.minimum, v.as_f64())
        && n < min
    {
        errors.push(format!(
            "{path}: Invalid value: {v}: {path} in body should be greater than or equal to {min}"
        ));
    }
    if let (Some(min), Some(text)) = (s.min_length, v.as_str())
        && (text.chars().count() as i64) < min
    {
        errors.push(format!(
            "{path}: Invalid value: {v}: {path} in body should be at least {min} chars long"
        ));
    }
    match v {
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &s.items {
                for (i, item_value) in items.iter().enumerate() {
                    check(item, item_value, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(fields) => check_object(s, fields, path, errors),
        _ => {}
    }
}

fn check_object(
    s: &JSONSchemaProps,
    fields: &serde_json::Map<String, Value>,
    path: &str,
    errors: &mut Vec<String>,
) {
    let preserve = s.x_kubernetes_preserve_unknown_fields == Some(true);
    if s.x_kubernetes_embedded_resource == Some(true) {
        for required in ["apiVersion", "kind"] {
            if fields
                .get(required)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errors.push(format!("{path}.{required}: Required value: must not be empty"));
            }
        }
    }
    for required in s.required.iter().flatten() {
        if fields.get(required).is_none_or(Value::is_null) {
            errors.push(format!("{path}.{required}: Required value"));
        }
    }
    for (name, value) in fields {
        let child = format!("{path}.{name}");
        if let Some(prop) = s.properties.as_ref().and_then(|p| p.get(name)) {
            check(prop, value, &child, errors);
        } else if let Some(JSONSchemaPropsOrBool::Schema(extra)) = &s.additional_properties {
            check(extra, value, &child, errors);
        } else if !preserve && !matches!(s.additional_properties, Some(JSONSchemaPropsOrBool::Bool(true))) {
            errors.push(format!("unknown field \"{child}\""));
        }
    }
}

/// The schema of the version an object is written in, if the CRD serves it.
fn version_schema<'a>(crd: &'a CustomResourceDefinition, object: &Value) -> Option<&'a JSONSchemaProps> {
    let api_version = object.get("apiVersion").and_then(Value::as_str)?;
    let version = api_version.rsplit('/').next()?;
    crd.spec
        .versions
        .iter()
        .find(|v| v.name == version)
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
}

/// Drops every field the schema does not know, as the API server does with `fieldValidation` Ignore or
/// Warn. Returns the paths dropped.
pub fn prune(crd: &CustomResourceDefinition, object: &mut Value) -> Vec<String> {
    let mut dropped = Vec::new();
    let Some(schema) = version_schema(crd, object) else {
        return dropped;
    };
    if let Some(fields) = object.as_object_mut() {
        let known: Vec<String> = fields.keys().cloned().collect();
        for name in known {
            if matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match schema.properties.as_ref().and_then(|p| p.get(&name)) {
                Some(prop) => {
                    if let Some(value) = fields.get_mut(&name) {
                        prune_value(prop, value, &name, &mut dropped);
                    }
                }
                None if schema.x_kubernetes_preserve_unknown_fields == Some(true) => {}
                None => {
                    fields.remove(&name);
                    dropped.push(name);
                }
            }
        }
    }
    dropped
}

fn prune_value(s: &JSONSchemaProps, v: &mut Value, path: &str, dropped: &mut Vec<String>) {
    if s.x_kubernetes_preserve_unknown_fields == Some(true) && s.properties.is_none() {
        return;
    }
    match v {
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &s.items {
                for (i, value) in items.iter_mut().enumerate() {
                    prune_value(item, value, &format!("{path}[{i}]"), dropped);
                }
            }
        }
        Value::Object(fields) => {
            let names: Vec<String> = fields.keys().cloned().collect();
            for name in names {
                let child = format!("{path}.{name}");
                let schema =
                    s.properties
                        .as_ref()
                        .and_then(|p| p.get(&name))
                        .or(match &s.additional_properties {
                            Some(JSONSchemaPropsOrBool::Schema(extra)) => Some(extra.as_ref()),
                            _ => None,
                        });
                match schema {
                    Some(schema) => {
                        if let Some(value) = fields.get_mut(&name) {
                            prune_value(schema, value, &child, dropped);
                        }
                    }
                    None if s.x_kubernetes_preserve_unknown_fields == Some(true)
                        || matches!(s.additional_properties, Some(JSONSchemaPropsOrBool::Bool(true))) => {}
                    None => {
                        fields.remove(&name);
                        dropped.push(child);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Fills in the schema's `default` values for absent fields of present objects, as the API server does.
pub fn apply_defaults(crd: &CustomResourceDefinition, object: &mut Value) {
    let Some(schema) = version_schema(crd, object) else {
        return;
    };
    default_value(schema, object);
}

fn default_value(s: &JSONSchemaProps, v: &mut Value) {
    match v {
        Value::Object(fields) => {
            for (name, prop) in s.properties.iter().flatten() {
                match fields.get_mut(name) {
                    Some(value) if !value.is_null() => default_value(prop, value),
                    _ => {
                        if let Some(default) = &prop.default {
                            let mut value = default.0.clone();
                            default_value(prop, &mut value);
                            fields.insert(name.clone(), value);
                        }
                    }
                }
            }
            if let Some(JSONSchemaPropsOrBool::Schema(extra)) = &s.additional_properties {
                for value in fields.values_mut() {
                    default_value(extra, value);
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &s.items {
                items.iter_mut().for_each(|value| default_value(item, value));
            }
        }
        _ => {}
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 60 {
        format!("{}...", &text[..57])
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tenant;
    use kube::CustomResourceExt;
    use serde_json::json;

    fn tenant(spec: Value) -> Value {
        json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "t"}, "spec": spec})
    }

    #[test]
    fn a_valid_tenant_passes() {
        let errors = validate(
            &Tenant::crd(),
            &tenant(json!({"owners": [{"kind": "User", "name": "alice"}], "namespaceOptions": {"quota": 3}})),
        );
        assert_eq!(errors, Vec::<String>::new());
    }

    #[test]
    fn unknown_fields_are_reported_with_their_path() {
        let errors = validate(
            &Tenant::crd(),
            &tenant(json!({"owners": [{"name": "alice", "role": "x"}], "nodeSelectr": {}})),
        );
        assert!(
            errors.contains(&"unknown field \"spec.owners[0].role\"".to_owned()),
            "{errors:?}"
        );
        assert!(
            errors.contains(&"unknown field \"spec.nodeSelectr\"".to_owned()),
            "{errors:?}"
        );
    }

    #[test]
    fn enums_minimums_types_and_required_fields_are_checked() {
        let errors = validate(
            &Tenant::crd(),
            &tenant(json!({
                "owners": [{"kind": "Robot", "name": ""}],
                "namespaceOptions": {"quota": 0},
                "cordoned": "yes",
                "additionalRoleBindings": [{"subjects": []}],
                "ingressOptions": {"hostnameCollisionScope": "Galaxy"},
            })),
        );
        let joined = errors.join("\n");
        for expected in [
            "spec.owners[0].kind: Unsupported value: \"Robot\"",
            "spec.owners[0].name: Invalid value: \"\": spec.owners[0].name in body should be at least 1 chars long",
            "spec.namespaceOptions.quota: Invalid value: 0",
            "spec.cordoned: Invalid value: \"string\": spec.cordoned in body must be of type boolean",
            "spec.additionalRoleBindings[0].clusterRoleName: Required value",
            "spec.ingressOptions.hostnameCollisionScope: Unsupported value: \"Galaxy\"",
        ] {
            assert!(joined.contains(expected), "missing {expected:?} in:\n{joined}");
        }
    }

    #[test]
    fn quantities_take_integers_or_strings_and_free_form_data_takes_anything() {
        let ok = tenant(json!({
            "resourceQuotas": {"items": [{"hard": {"pods": 7, "limits.cpu": "2"}}]},
            "data": {"a": [1, {"b": null}], "c": true},
        }));
        assert_eq!(validate(&Tenant::crd(), &ok), Vec::<String>::new());
        let bad = tenant(json!({"resourceQuotas": {"items": [{"hard": {"pods": [7]}}]}}));
        assert_eq!(validate(&Tenant::crd(), &bad).len(), 1);
    }

    #[test]
    fn pruning_drops_unknown_fields_and_keeps_free_form_ones() {
        let mut object = tenant(json!({
            "owners": [{"name": "alice", "role": "x"}],
            "nodeSelectr": {},
            "data": {"anything": {"goes": 1}},
        }));
        let dropped = prune(&Tenant::crd(), &mut object);
        assert_eq!(dropped, ["spec.nodeSelectr", "spec.owners[0].role"]);
        assert_eq!(object["spec"]["data"]["anything"]["goes"], 1);
        assert!(validate(&Tenant::crd(), &object).is_empty());
    }

    #[test]
    fn defaults_are_filled_in_where_the_parent_exists() {
        let mut object = tenant(json!({"owners": [{"name": "alice"}], "ingressOptions": {}}));
        apply_defaults(&Tenant::crd(), &mut object);
        assert_eq!(
            object["spec"]["owners"][0]["clusterRoles"],
            json!(["admin", "bulkhead-namespace-deleter"])
        );
        assert_eq!(
            object["spec"]["ingressOptions"]["hostnameCollisionScope"],
            "Disabled"
        );
        assert!(object["spec"].get("serviceOptions").is_none());
    }

    #[test]
    fn the_wrong_kind_or_version_is_refused() {
        let mut object = tenant(json!({}));
        object["apiVersion"] = json!("bulkhead.dev/v9");
        assert_eq!(
            validate(&Tenant::crd(), &object),
            ["apiVersion: version \"v9\" is not served"]
        );
        object["apiVersion"] = json!("capsule.clastix.io/v1beta2");
        assert_eq!(validate(&Tenant::crd(), &object).len(), 1);
    }
}
