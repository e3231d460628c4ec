//! Narrowing API server answers to what a caller may see: lists, Tables and watch events, whatever
//! the kind. The proxy asks for Tables with whole objects (`includeObject=Object`) so that each row can
//! be judged, then gives the caller the rows in the form it asked for.

use serde_json::{Value, json};

/// The `Accept` the proxy sends when it must read the answer: JSON, as a Table when the caller asked
/// for one (kubectl's `get`), never protobuf.
pub fn readable_accept(client_accept: Option<&str>) -> &'static str {
    if wants_table(client_accept) {
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    } else {
        "application/json"
    }
}

/// Whether the caller asked for server-side printing.
pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("as=Table"))
}

/// Puts a Table row's object into the form the caller asked for (`includeObject`: `None`, `Object`,
/// or by default `Metadata`).
fn shape_row(row: &mut Value, include_object: Option<&str>) {
    match include_object {
        Some("Object") => {}
        Some("None") => {
            if let Some(map) = row.as_object_mut() {
                map.remove("object");
            }
        }
        _ => {
            if let Some(object) = row.get("object")
                && object["kind"] != "PartialObjectMetadata"
            {
                let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
                row["object"] = json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                });
            }
        }
    }
}

fn is_table(value: &Value) -> bool {
    value["kind"] == "Table"
}

/// Keeps the items of a list (or the rows of a Table) that `visible` accepts; rows are then shaped as
/// the caller asked. Anything else (a Status, say) is left as it is.
pub fn filter_collection(value: &mut Value, include_object: Option<&str>, visible: &dyn Fn(&Value) -> bool) {
    if is_table(value) {
        if let Some(rows) = value.get_mut("rows").and_then(Value::as_array_mut) {
            rows.retain(|row| row.get("object").is_some_and(visible));
            for row in rows.iter_mut() {
                shape_row(row, include_object);
            }
        }
    } else if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
        items.retain(visible);
    }
}

/// The object an answer is about: the object itself, or the object of a one-row Table.
pub fn single_object(value: &Value) -> Option<&Value> {
    if is_table(value) {
        value["rows"].as_array()?.first()?.get("object")
    } else {
        Some(value)
    }
}

/// Shapes the rows of a Table answer for one object.
pub fn shape_single(value: &mut Value, include_object: Option<&str>) {
    if is_table(value)
        && let Some(rows) = value.get_mut("rows").and_then(Value::as_array_mut)
    {
        for row in rows {
            shape_row(row, include_object);
        }
    }
}

/// What a watch keeps of each object it has shown, so that objects leaving the caller's view are
/// reported as deleted and objects entering it as added.
#[derive(Default)]
pub struct WatchFilter {
    shown: std::collections::HashSet<(String, String)>,
}

impl WatchFilter {
    /// The event the caller gets for one line of the API server's watch, if any.
    pub fn event(
        &mut self,
        line: &[u8],
        include_object: Option<&str>,
        visible: &dyn Fn(&Value) -> bool,
    ) -> Option<Vec<u8>> {
        let mut event: Value = serde_json::from_slice(line).ok()?;
        let kind = event["type"].as_str().unwrap_or_default().to_owned();
        if !matches!(kind.as_str(), "ADDED" | "MODIFIED" | "DELETED") {
            // BOOKMARK and ERROR carry no object to judge.
            return Some(line.to_vec());
        }
        let object = single_object(&event["object"])?;
        let key = (
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            object["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
        );
        let now = kind != "DELETED" && visible(object);
        let shown = self.shown.contains(&key);
        let out = match (kind.as_str(), shown, now) {
            ("DELETED", true, _) => {
                self.shown.remove(&key);
                "DELETED"
            }
            ("DELETED", false, _) => {
                // A deleted object the caller never saw: judge it as it was.
                if !visible(object) {
                    return None;
                }
                "DELETED"
            }
            (_, true, true) => "MODIFIED",
            (_, false, true) => {
                self.shown.insert(key);
                "ADDED"
            }
            (_, true, false) => {
                self.shown.remove(&key);
                "DELETED"
            }
            (_, false, false) => return None,
        };
        event["type"] = json!(out);
        shape_single(&mut event["object"], include_object);
        let mut bytes = serde_json::to_vec(&event).ok()?;
        bytes.push(b'\n');
        Some(bytes)
    }
}

/// Merges the answers of the same list request in several namespaces into one: items (or Table
/// rows) in order, the highest resourceVersion. `None` when there is nothing to merge.
pub fn merge_lists(parts: Vec<Value>) -> Option<Value> {
    let mut parts = parts.into_iter();
    let mut merged = parts.next()?;
    let field = if is_table(&merged) { "rows" } else { "items" };
    let mut version = resource_version(&merged);
    for part in parts {
        version = version.max(resource_version(&part));
        if let (Some(into), Some(Value::Array(more))) = (
            merged.get_mut(field).and_then(Value::as_array_mut),
            part.get(field).cloned(),
        ) {
            into.extend(more);
        }
    }
    if let Some(metadata) = merged.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("continue");
        metadata.remove("remainingItemCount");
        if let Some(version) = version {
            metadata.insert("resourceVersion".into(), json!(version.to_string()));
        }
    }
    Some(merged)
}

fn resource_version(list: &Value) -> Option<u64> {
    list["metadata"]["resourceVersion"].as_str()?.parse().ok()
}

/// A duration as the API server prints ages (`HumanDuration` in apimachinery): `45s`, `3m20s`, `5h`,
/// `2d4h`, `3y12d`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Namespaces as the Table the API server prints for them (Name, Status, Age), rows shaped as
/// `include_object` asks; `now` in seconds since the epoch.
pub fn namespace_table(
    namespaces: &[&k8s_openapi::api::core::v1::Namespace],
    resource_version: &str,
    include_object: Option<&str>,
    now: i64,
) -> Value {
    let rows: Vec<Value> = namespaces
        .iter()
        .map(|ns| {
            let age = ns.metadata.creation_timestamp.as_ref().map_or_else(
                || "<unknown>".to_owned(),
                |t| human_duration(now - t.0.as_second()),
            );
            let phase = ns
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            let object = serde_json::to_value(ns).unwrap_or(Value::Null);
            let mut row = json!({"cells": [ns.metadata.name, phase, age], "object": object});
            shape_row(&mut row, include_object);
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "priority": 0,
             "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"},
            {"name": "Status", "type": "string", "format": "", "priority": 0,
             "description": "The status of the namespace"},
            {"name": "Age", "type": "string", "format": "", "priority": 0,
             "description": "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"},
        ],
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"pool": name}}, "spec": {}})
    }

    fn only_a(v: &Value) -> bool {
        v["metadata"]["name"].as_str().is_some_and(|n| n.starts_with('a'))
    }

    #[test]
    fn lists_and_tables_keep_only_visible_objects_in_the_asked_shape() {
        let mut list = json!({"kind": "NodeList", "items": [named("a1"), named("b1"), named("a2")]});
        filter_collection(&mut list, None, &only_a);
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a1", "a2"]);

        let table = json!({"kind": "Table", "columnDefinitions": [], "rows": [
            {"cells": ["a1"], "object": named("a1")},
            {"cells": ["b1"], "object": named("b1")},
        ]});
        let mut metadata = table.clone();
        filter_collection(&mut metadata, None, &only_a);
        assert_eq!(metadata["rows"].as_array().unwrap().len(), 1);
        assert_eq!(metadata["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(metadata["rows"][0]["object"]["metadata"]["name"], "a1");
        assert!(metadata["rows"][0]["object"].get("spec").is_none());
        let mut whole = table.clone();
        filter_collection(&mut whole, Some("Object"), &only_a);
        assert!(whole["rows"][0]["object"].get("spec").is_some());
        let mut none = table;
        filter_collection(&mut none, Some("None"), &only_a);
        assert!(none["rows"][0].get("object").is_none());

        let mut status = json!({"kind": "Status", "code": 403});
        filter_collection(&mut status, None, &only_a);
        assert_eq!(status, json!({"kind": "Status", "code": 403}));
    }

    fn line(kind: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap()
    }

    fn decode(bytes: Option<Vec<u8>>) -> Option<(String, String)> {
        let v: Value = serde_json::from_slice(&bytes?).unwrap();
        Some((
            v["type"].as_str().unwrap().to_owned(),
            single_object(&v["object"]).unwrap()["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ))
    }

    #[test]
    fn watches_show_objects_entering_and_leaving_the_view() {
        let visible = |v: &Value| v["metadata"]["labels"]["pool"] == "mine";
        let node = |pool: &str| json!({"metadata": {"name": "n1", "labels": {"pool": pool}}});
        let mut watch = WatchFilter::default();
        let mut ev = |kind: &str, object: Value| decode(watch.event(&line(kind, object), None, &visible));
        assert_eq!(ev("ADDED", node("theirs")), None);
        assert_eq!(ev("MODIFIED", node("mine")), Some(("ADDED".into(), "n1".into())));
        assert_eq!(
            ev("MODIFIED", node("mine")),
            Some(("MODIFIED".into(), "n1".into()))
        );
        assert_eq!(
            ev("MODIFIED", node("theirs")),
            Some(("DELETED".into(), "n1".into()))
        );
        assert_eq!(ev("DELETED", node("theirs")), None);
        assert_eq!(ev("ADDED", node("mine")), Some(("ADDED".into(), "n1".into())));
        assert_eq!(ev("DELETED", node("mine")), Some(("DELETED".into(), "n1".into())));
        let bookmark = line("BOOKMARK", json!({"metadata": {"resourceVersion": "9"}}));
        assert_eq!(watch.event(&bookmark, None, &visible), Some(bookmark.clone()));
        assert_eq!(watch.event(b"{not json", None, &visible), None);

        let table = json!({"kind": "Table", "rows": [{"cells": ["n2"], "object":
            {"metadata": {"name": "n2", "labels": {"pool": "mine"}}, "spec": {"x": 1}}}]});
        let out: Value =
            serde_json::from_slice(&watch.event(&line("ADDED", table), None, &visible).unwrap()).unwrap();
        assert_eq!(
            out["object"]["rows"][0]["object"]["kind"],
            "PartialObjectMetadata"
        );
    }

    #[test]
    fn lists_from_several_namespaces_merge_with_the_newest_version() {
        let merged = merge_lists(vec![
            json!({"kind": "PodList", "metadata": {"resourceVersion": "10"}, "items": [named("a")]}),
            json!({"kind": "PodList", "metadata": {"resourceVersion": "12", "continue": "x"}, "items": [named("b")]}),
        ])
        .unwrap();
        assert_eq!(merged["metadata"]["resourceVersion"], "12");
        assert_eq!(merged["items"].as_array().unwrap().len(), 2);
        let tables = merge_lists(vec![
            json!({"kind": "Table", "metadata": {"resourceVersion": "3", "continue": "t"}, "rows": [{"cells": [1]}]}),
            json!({"kind": "Table", "metadata": {"resourceVersion": "2"}, "rows": [{"cells": [2]}]}),
        ])
        .unwrap();
        assert_eq!(tables["rows"].as_array().unwrap().len(), 2);
        assert_eq!(tables["metadata"]["resourceVersion"], "3");
        assert!(tables["metadata"].get("continue").is_none());
        assert_eq!(merge_lists(vec![]), None);
    }

    #[test]
    fn ages_are_printed_as_the_api_server_prints_them() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (10_799, "179m"),
            (10_800, "3h"),
            (4 * 3600 + 30 * 60, "4h30m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (50 * 3600, "2d2h"),
            (8 * 86_400, "8d"),
            (729 * 86_400, "729d"),
            (730 * 86_400, "2y"),
            (742 * 86_400, "2y12d"),
            (8 * 365 * 86_400, "8y"),
        ];
        for (seconds, printed) in cases {
            assert_eq!(human_duration(seconds), printed, "{seconds}s");
        }
    }

    #[test]
    fn namespaces_print_as_the_api_servers_table() {
        let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(json!({
            "metadata": {"name": "solar-dev", "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"a": "b"}},
            "status": {"phase": "Active"},
        }))
        .unwrap();
        let created = 1_767_225_600; // 2026-01-01T00:00:00Z
        let table = namespace_table(&[&ns], "42", None, created + 3 * 86_400);
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["metadata"]["resourceVersion"], "42");
        let names: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Status", "Age"]);
        assert_eq!(table["rows"][0]["cells"], json!(["solar-dev", "Active", "3d"]));
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(table["rows"][0]["object"]["metadata"]["labels"]["a"], "b");
        let whole = namespace_table(&[&ns], "42", Some("Object"), created);
        assert_eq!(whole["rows"][0]["object"]["status"]["phase"], "Active");
        assert_eq!(whole["rows"][0]["cells"][2], "0s");
    }
}
