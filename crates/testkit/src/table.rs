//! Server-side printing: the `Table` kubectl asks for, with CRD printer columns evaluated.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::registry::ResourceType;

fn column(name: &str, kind: &str, format: &str, description: &str, priority: i32) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority})
}

/// A Table of objects of one type.
pub fn table(rt: &ResourceType, objects: &[Arc<Value>], rv: u64, include_object: Option<&str>) -> Value {
    let custom = rt.printer_columns();
    let mut columns = vec![column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
    )];
    let is_namespace = rt.group.is_empty() && rt.plural == "namespaces";
    if is_namespace {
        columns.push(column("Status", "string", "", "The status of the namespace", 0));
    }
    for c in &custom {
        columns.push(column(
            &c.name,
            &c.type_,
            c.format.as_deref().unwrap_or(""),
            c.description.as_deref().unwrap_or(""),
            c.priority.unwrap_or(0),
        ));
    }
    if custom.is_empty() {
        columns.push(column(
            "Age",
            "string",
            "",
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
            0,
        ));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            if is_namespace {
                cells.push(object.pointer("/status/phase").cloned().unwrap_or(Value::Null));
            }
            for c in &custom {
                let value = json_path(object, &c.json_path);
                cells.push(match (c.type_.as_str(), value) {
                    ("date", Some(Value::String(t))) => json!(age(&t)),
                    (_, Some(Value::Object(m))) => json!(Value::Object(m).to_string()),
                    (_, Some(v)) => v,
                    (_, None) => Value::Null,
                });
            }
            if custom.is_empty() {
                let created = object
                    .pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                cells.push(json!(age(created)));
            }
            let mut row = json!({"cells": cells});
            match include_object.unwrap_or("Metadata") {
                "None" => {}
                "Object" => row["object"] = (**object).clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": object.get("metadata").cloned().unwrap_or(json!({})),
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// A duration in kubectl's short form (`45s`, `3m`, `2h`, `5d`).
fn age(timestamp: &str) -> String {
    let Ok(then) = timestamp.parse::<Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = Timestamp::now()
        .as_second()
        .saturating_sub(then.as_second())
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7_200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

/// Evaluates the JSONPath subset printer columns use: `.a.b`, `.a[0]`, `.a[?(@.k=="v")].b`.
pub fn json_path(object: &Value, path: &str) -> Option<Value> {
    let mut current = object.clone();
    let mut rest = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            current = current.get(key)?.clone();
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let inner = &after[..end];
            rest = &after[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (key, value) = filter.split_once("==")?;
                let value = value.trim().trim_matches('"').trim_matches('\'');
                current = current
                    .as_array()?
                    .iter()
                    .find(|item| item.get(key.trim()).and_then(Value::as_str) == Some(value))?
                    .clone();
            } else {
                let index: usize = inner.parse().ok()?;
                current = current.get(index)?.clone();
            }
        } else {
            return None;
        }
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_of_printer_columns() {
        let o = json!({"status": {"state": "Active", "conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}, "spec": {"items": [1, 2]}});
        assert_eq!(json_path(&o, ".status.state"), Some(json!("Active")));
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(json!("True"))
        );
        assert_eq!(json_path(&o, ".spec.items[1]"), Some(json!(2)));
        assert_eq!(json_path(&o, ".spec.missing"), None);
    }
}
