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
}
