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
    validate_update(crd, object, None)
}

/// [`validate`] for an update from `old`: a CEL rule broken by a value the update leaves as it was is
/// not reported (the API server's validation ratcheting, on by default since Kubernetes 1.30), so an
/// object that got in before a rule existed can still have its status written.
pub fn validate_update(crd: &CustomResourceDefinition, object: &Value, old: Option<&Value>) -> Vec<String> {
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
    // The root's required fields (`spec`), as the API server's structural schema requires them.
    for required in schema.required.iter().flatten() {
        if fields.get(required).is_none_or(Value::is_null) {
            errors.push(format!("{required}: Required value"));
        }
    }
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
    if errors.is_empty() {
        errors.extend(rule_errors(schema, object, old));
    }
    errors
}

/// The CEL validation rules (`x-kubernetes-validations`) of `schema` that `object` breaks (on update,
/// with `old` as `oldSelf`), in the API server's wording: `<path>: Invalid value: "<type>": <message>`,
/// and for a rule whose evaluation fails, `<error> evaluating rule: <message>`. Evaluated with
/// kube-cel, kube-rs's implementation of the Kubernetes CEL libraries; its regular expressions are
/// Rust's, which refuse what RE2 refuses (they differ on a few extensions RE2 lacks).
pub fn rule_errors(schema: &JSONSchemaProps, object: &Value, old: Option<&Value>) -> Vec<String> {
    let Ok(schema_json) = serde_json::to_value(schema) else {
        return vec!["the schema cannot be read".to_owned()];
    };
    let Err(errors) = kube_cel::Validator::new().validate(&schema_json, object, old) else {
        return Vec::new();
    };
    errors
        .into_vec()
        .into_iter()
        .filter_map(|e| {
            let (path, value) = located(schema, object, &e.field_path);
            if let Some(old) = old
                && value.is_some()
                && located(schema, old, &e.field_path).1 == value
            {
                return None;
            }
            let message = match e.kind {
                kube_cel::ErrorKind::ValidationFailure => e.message,
                _ => {
                    let stated = rule_message(schema, &e.rule).unwrap_or(e.rule.as_str());
                    // One line: the regex crate's errors span several.
                    let cause = e.message.trim_start_matches("rule evaluation error: ");
                    let cause = cause.split_whitespace().collect::<Vec<_>>().join(" ");
                    format!("{cause} evaluating rule: {stated}")
                }
            };
            // The API server names the type of a scalar and leaves an object's or a list's out.
            Some(match value.map(json_type) {
                Some(t @ ("string" | "integer" | "number" | "boolean")) => {
                    format!("{path}: Invalid value: \"{t}\": {message}")
                }
                _ => format!("{path}: Invalid value: {message}"),
            })
        })
        .collect()
}

/// The value at a field path as kube-cel writes it (`spec.owners[0].name`, map keys as fields), and the
/// path as the API server writes it (map keys in brackets: `requiredMetadata.labels[team]`).
fn located<'a>(schema: &JSONSchemaProps, object: &'a Value, path: &str) -> (String, Option<&'a Value>) {
    let mut at = Some(object);
    let mut s = Some(schema);
    let mut out = String::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let property = s.and_then(|s| s.properties.as_ref()).and_then(|p| p.get(name));
        let map_value = match s.and_then(|s| s.additional_properties.as_ref()) {
            Some(JSONSchemaPropsOrBool::Schema(v)) if property.is_none() => Some(v.as_ref()),
            _ => None,
        };
        match map_value {
            Some(v) => {
                out.push_str(&format!("[{name}]"));
                s = Some(v);
            }
            None => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
                s = property;
            }
        }
        at = at.and_then(|v| v.get(name));
        if let Some(i) = index {
            out.push_str(&format!("[{i}]"));
            at = at.and_then(|v| v.get(i));
            s = match s.and_then(|s| s.items.as_ref()) {
                Some(JSONSchemaPropsOrArray::Schema(item)) => Some(item.as_ref()),
                _ => None,
            };
        }
    }
    (out, at)
}

/// The message written beside `rule` anywhere in `schema`.
fn rule_message<'a>(schema: &'a JSONSchemaProps, rule: &str) -> Option<&'a str> {
    if let Some(found) = schema
        .x_kubernetes_validations
        .iter()
        .flatten()
        .find(|r| r.rule == rule)
    {
        return found.message.as_deref();
    }
    let props = schema.properties.iter().flat_map(|p| p.values());
    let extra = match &schema.additional_properties {
        Some(JSONSchemaPropsOrBool::Schema(s)) => Some(s.as_ref()),
        _ => None,
    };
    let item = match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(s)) => Some(s.as_ref()),
        _ => None,
    };
    props
        .chain(extra)
        .chain(item)
        .find_map(|child| rule_message(child, rule))
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
    // kube-openapi counts characters, although the message says bytes.
    if let (Some(max), Some(text)) = (s.max_length, v.as_str())
        && text.chars().count() as i64 > max
    {
        let unit = if max == 1 { "byte" } else { "bytes" };
        errors.push(format!("{path}: Too long: may not be more than {max} {unit}"));
    }
    let count = match v {
        Value::Array(items) => Some((items.len(), s.max_items)),
        Value::Object(fields) => Some((fields.len(), s.max_properties)),
        _ => None,
    };
    if let Some((n, Some(max))) = count
        && n as i64 > max
    {
        let unit = if max == 1 { "item" } else { "items" };
        errors.push(format!("{path}: Too many: {n}: must have at most {max} {unit}"));
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

    /// The Tenant CRD as installed: with the CEL rules of `crate::rules`.
    fn installed() -> CustomResourceDefinition {
        crate::crds::all().remove(0)
    }

    #[test]
    fn the_api_server_refuses_regexes_that_do_not_compile_wherever_they_are() {
        let crd = installed();
        let errors = validate(
            &crd,
            &tenant(json!({
                "owners": [{"name": "alice"}],
                "containerRegistries": {"allowedRegex": "docker.io/("},
                "namespaceOptions": {
                    "forbiddenLabels": {"deniedRegex": "[a-"},
                    "requiredMetadata": {"labels": {"team": "^(a|b$", "ok": "^[a-z]+$"}}
                },
                "ingressOptions": {"allowedHostnames": {"allowedRegex": "^.*\\.example\\.com$"}},
            })),
        );
        assert_eq!(errors.len(), 3, "{errors:#?}");
        for (field, error) in [
            "spec.containerRegistries.allowedRegex",
            "spec.namespaceOptions.forbiddenLabels.deniedRegex",
            "spec.namespaceOptions.requiredMetadata.labels[team]",
        ]
        .iter()
        .zip(&errors)
        {
            assert!(
                error.starts_with(&format!("{field}: Invalid value: \"string\": ")),
                "{error}"
            );
            assert!(
                error.ends_with(&format!("evaluating rule: {}", crate::rules::REGEX_MESSAGE)),
                "{error}"
            );
        }
    }

    #[test]
    fn the_api_server_refuses_selectors_and_owners_that_cannot_work() {
        let crd = installed();
        let errors = validate(
            &crd,
            &tenant(json!({
                "owners": [
                    {"name": "  "},
                    {"kind": "ServiceAccount", "name": "robot"},
                    {"name": "system:serviceaccount:ci:"},
                    {"kind": "User", "name": "system:serviceaccount:x"},
                    {"name": "system:serviceaccount:ci:deployer"},
                ],
                "storageClasses": {"matchExpressions": [
                    {"key": "tier", "operator": "In"},
                    {"key": "tier", "operator": "Exists", "values": ["x"]}, // as Capsule accepts it
                    {"key": "tier", "operator": "Matches", "values": ["x"]},
                    {"key": "tier", "operator": "NotIn", "values": ["x"]},
                ]},
                "namespaceOptions": {"additionalMetadataList": [{"namespaceSelector": {"matchExpressions": [
                    {"key": "a", "operator": "DoesNotExist"},
                    {"key": "b", "operator": "NotIn", "values": []},
                ]}}]},
            })),
        );
        let mut expected = [
            "spec.owners: Invalid value: an owner's name must not be blank",
            "spec.owners: Invalid value: a ServiceAccount owner must be named system:serviceaccount:<namespace>:<name>",
            "spec.storageClasses.matchExpressions[0]: Invalid value: values must be non-empty when operator is In or NotIn",
            "spec.storageClasses.matchExpressions[2]: Invalid value: operator must be one of In, NotIn, Exists, DoesNotExist",
            "spec.namespaceOptions.additionalMetadataList[0].namespaceSelector.matchExpressions[1]: Invalid value: values must be non-empty when operator is In or NotIn",
        ];
        expected.sort();
        let mut errors = errors;
        errors.sort();
        assert_eq!(errors, expected);
    }

    #[test]
    fn the_bounds_the_rules_need_are_enforced_in_the_api_servers_words() {
        let owners: Vec<Value> = (0..130).map(|i| json!({"name": format!("u{i}")})).collect();
        let mut owners = owners;
        owners[0] = json!({"name": "a".repeat(600)});
        let labels: serde_json::Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!("x"))).collect();
        let errors = validate(
            &installed(),
            &tenant(json!({"owners": owners, "namespaceOptions": {"requiredMetadata": {"labels": labels}}})),
        );
        assert_eq!(
            errors,
            [
                "spec.namespaceOptions.requiredMetadata.labels: Too many: 65: must have at most 64 items",
                "spec.owners: Too many: 130: must have at most 128 items",
                "spec.owners[0].name: Too long: may not be more than 512 bytes",
            ]
        );
    }

    #[test]
    fn an_update_that_leaves_a_broken_value_as_it_was_is_not_refused_for_it() {
        let crd = installed();
        let old = tenant(json!({"owners": [{"name": "a"}], "containerRegistries": {"allowedRegex": "("}}));
        let mut new = old.clone();
        new["status"] = json!({"state": "Active"});
        assert_eq!(validate_update(&crd, &new, Some(&old)), Vec::<String>::new());
        new["spec"]["containerRegistries"]["allowedRegex"] = json!("[");
        let errors = validate_update(&crd, &new, Some(&old));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("spec.containerRegistries.allowedRegex: "),
            "{errors:?}"
        );
        assert_eq!(validate(&crd, &old).len(), 1);
    }

    #[test]
    fn every_regex_selector_and_owner_in_every_crd_has_its_rule() {
        fn walk(s: &JSONSchemaProps, path: &str, found: &mut Vec<String>) {
            let rules: Vec<&str> = s
                .x_kubernetes_validations
                .iter()
                .flatten()
                .map(|r| r.rule.as_str())
                .collect();
            if rules.contains(&crate::rules::REGEX) {
                found.push(path.to_owned());
            }
            if rules.contains(&crate::rules::OPERATOR) || rules.contains(&crate::rules::OWNER_SERVICE_ACCOUNT)
            {
                found.push(path.to_owned());
            }
            for (name, p) in s.properties.iter().flatten() {
                walk(p, &format!("{path}.{name}"), found);
            }
            if let Some(JSONSchemaPropsOrBool::Schema(x)) = &s.additional_properties {
                walk(x, &format!("{path}.*"), found);
            }
            if let Some(JSONSchemaPropsOrArray::Schema(x)) = &s.items {
                walk(x, &format!("{path}[]"), found);
            }
        }
        let mut found = Vec::new();
        for crd in crate::crds::all() {
            walk(
                crate::crds::schema_of(&crd).unwrap(),
                &crd.spec.names.kind,
                &mut found,
            );
        }
        let text = serde_json::to_string(&crate::crds::all()).unwrap();
        // Every field named *Regex, every matchExpressions and every owners list, counted in the JSON.
        let regex_fields = text.matches("Regex\":{").count();
        let selector_lists = text.matches("\"matchExpressions\":{").count();
        let owners = text.matches("\"owners\":{").count();
        let required = found.iter().filter(|p| p.contains("requiredMetadata")).count();
        assert_eq!(
            found.len(),
            regex_fields + selector_lists + owners + required,
            "{found:#?}"
        );
        assert!(found.iter().any(|p| p == "Tenant.spec.owners"), "{found:#?}");
        assert!(
            found
                .iter()
                .any(|p| p == "BulkheadConfiguration.spec.protectedNamespaceRegex"),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("GlobalTenantResource.spec.tenantSelector.matchExpressions")),
            "{found:#?}"
        );
        assert_eq!(required, 2, "{found:#?}");
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
