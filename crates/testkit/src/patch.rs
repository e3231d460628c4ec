//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch for what
//! kubectl sends (metadata maps and plain fields; lists are replaced rather than merged by key, and
//! `$`-directives are dropped), and server-side apply.

use serde_json::{Map, Value};

use crate::status::ApiError;

/// The patch types of the `Content-Type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// The patch type of a Content-Type value.
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// Applies a merge, JSON or strategic patch to `target`.
pub fn apply_patch(patch_type: PatchType, target: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let mut out = target.clone();
    match patch_type {
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut out, &patch).map_err(|e| ApiError::invalid_patch(e.to_string()))?;
        }
        PatchType::Merge | PatchType::Strategic => {
            let mut patch: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON merge patch: {e}")))?;
            if patch_type == PatchType::Strategic {
                strip_directives(&mut patch);
            }
            json_patch::merge(&mut out, &patch);
        }
        PatchType::Apply => return Err(ApiError::internal("apply is not a plain patch")),
    }
    Ok(out)
}

fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// Server-side apply, simplified: fields this manager applied before and no longer applies are removed,
/// then the new configuration is merged over the object (maps merge, lists and scalars replace). Field
/// conflicts between managers are not reported.
pub fn server_side_apply(existing: &Value, previous: Option<&Value>, config: &Value) -> Value {
    let mut out = existing.clone();
    if let Some(previous) = previous {
        remove_dropped(&mut out, previous, config);
    }
    merge_over(&mut out, config);
    out
}

/// The one list Bulkhead applies whose entries several managers share, merged by key as the API
/// server merges it; other lists are replaced whole (docs/testing.md).
const OWNER_REFERENCES: &str = "ownerReferences";

fn uids(list: Option<&Value>) -> Vec<&str> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i["uid"].as_str())
        .collect()
}

fn remove_dropped(target: &mut Value, previous: &Value, config: &Value) {
    let (Value::Object(target), Value::Object(previous)) = (target, previous) else {
        return;
    };
    let empty = Map::new();
    let config = config.as_object().unwrap_or(&empty);
    for (key, previous_value) in previous {
        if key == OWNER_REFERENCES {
            // Entries are keyed by uid: only those this manager applied and no longer applies go.
            let kept = uids(config.get(key));
            let dropped: Vec<&str> = uids(Some(previous_value))
                .into_iter()
                .filter(|u| !kept.contains(u))
                .collect();
            if let Some(Value::Array(items)) = target.get_mut(key) {
                items.retain(|i| !dropped.contains(&i["uid"].as_str().unwrap_or_default()));
                if items.is_empty() {
                    target.remove(key);
                }
            }
            continue;
        }
        match config.get(key) {
            // A map the manager stops applying loses the entries it had applied, not those of others
            // (another manager's key in `data` stays, as on a real API server).
            None if previous_value.is_object() && target.get(key).is_some_and(Value::is_object) => {
                if let Some(child) = target.get_mut(key) {
                    remove_dropped(child, previous_value, &Value::Object(Map::new()));
                    if child.as_object().is_some_and(Map::is_empty) {
                        target.remove(key);
                    }
                }
            }
            None => {
                target.remove(key);
            }
            Some(config_value) if previous_value.is_object() && config_value.is_object() => {
                if let Some(child) = target.get_mut(key) {
                    remove_dropped(child, previous_value, config_value);
                }
            }
            Some(_) => {}
        }
    }
}

fn merge_over(target: &mut Value, config: &Value) {
    match (target, config) {
        (Value::Object(target), Value::Object(config)) => {
            for (key, value) in config {
                match target.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge_over(existing, value)
                    }
                    // ownerReferences is a list keyed by uid (`x-kubernetes-list-map-keys: [uid]`):
                    // applied entries replace those of the same uid, others stay.
                    Some(Value::Array(existing)) if key == OWNER_REFERENCES && value.is_array() => {
                        for item in value.as_array().into_iter().flatten() {
                            match existing.iter_mut().find(|e| e["uid"] == item["uid"]) {
                                Some(e) => *e = item.clone(),
                                None => existing.push(item.clone()),
                            }
                        }
                    }
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, config) => *target = config.clone(),
    }
}

impl ApiError {
    /// 422 for a JSON patch that cannot be applied.
    pub fn invalid_patch(message: String) -> ApiError {
        ApiError {
            code: 422,
            reason: "Invalid".into(),
            message: format!("the server rejected our request due to an error in our request: {message}"),
            details: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_removes_labels() {
        let target = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let out = apply_patch(
            PatchType::Merge,
            &target,
            br#"{"metadata":{"labels":{"a":null,"c":"3"}}}"#,
        )
        .unwrap();
        assert_eq!(out, json!({"metadata": {"labels": {"b": "2", "c": "3"}}}));
    }

    #[test]
    fn json_patch_and_its_failures() {
        let target = json!({"metadata": {"labels": {"a": "1"}}});
        let out = apply_patch(
            PatchType::Json,
            &target,
            br#"[{"op":"remove","path":"/metadata/labels/a"},{"op":"add","path":"/metadata/labels/b","value":"2"}]"#,
        )
        .unwrap();
        assert_eq!(out, json!({"metadata": {"labels": {"b": "2"}}}));
        let err = apply_patch(
            PatchType::Json,
            &target,
            br#"[{"op":"remove","path":"/metadata/labels/zz"}]"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(apply_patch(PatchType::Json, &target, b"{").unwrap_err().code, 400);
    }

    #[test]
    fn strategic_patch_drops_directives() {
        let target = json!({"metadata": {"labels": {"a": "1"}}});
        let out = apply_patch(
            PatchType::Strategic,
            &target,
            br#"{"metadata":{"labels":{"b":"2"},"$setElementOrder/finalizers":[]}}"#,
        )
        .unwrap();
        assert_eq!(out, json!({"metadata": {"labels": {"a": "1", "b": "2"}}}));
    }

    #[test]
    fn apply_removes_what_the_manager_stopped_applying_and_keeps_the_rest() {
        let existing = json!({"metadata": {"labels": {"mine": "1", "theirs": "x"}}, "spec": {"hard": {"pods": "5", "cpu": "1"}}});
        let previous =
            json!({"metadata": {"labels": {"mine": "1"}}, "spec": {"hard": {"pods": "5", "cpu": "1"}}});
        let config = json!({"metadata": {"labels": {}}, "spec": {"hard": {"cpu": "2"}}});
        let out = server_side_apply(&existing, Some(&previous), &config);
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"theirs": "x"}}, "spec": {"hard": {"cpu": "2"}}})
        );
        // A map no longer applied at all keeps the entries of other managers.
        let adopted = json!({"metadata": {"name": "x", "labels": {"mine": "1", "theirs": "x"}}, "data": {"owner": "team", "region": "eu"}});
        let mine = json!({"metadata": {"name": "x", "labels": {"mine": "1"}}, "data": {"region": "eu"}});
        let out = server_side_apply(&adopted, Some(&mine), &json!({"metadata": {"name": "x"}}));
        assert_eq!(
            out,
            json!({"metadata": {"name": "x", "labels": {"theirs": "x"}}, "data": {"owner": "team"}})
        );
        let only_mine = json!({"data": {"region": "eu"}});
        assert_eq!(
            server_side_apply(&only_mine, Some(&only_mine), &json!({})),
            json!({})
        );
        // ownerReferences merge by uid: another manager's entry stays; one this manager drops goes.
        let theirs = json!({"uid": "c-1", "kind": "Tenant", "controller": true});
        let owned = json!({"metadata": {"ownerReferences": [theirs.clone()]}});
        let mine = json!({"metadata": {"ownerReferences": [{"uid": "b-1", "controller": false}]}});
        let both = server_side_apply(&owned, None, &mine);
        assert_eq!(
            both["metadata"]["ownerReferences"],
            json!([theirs, {"uid": "b-1", "controller": false}])
        );
        let flipped = json!({"metadata": {"ownerReferences": [{"uid": "b-1", "controller": true}]}});
        let out = server_side_apply(&both, Some(&mine), &flipped);
        assert_eq!(
            out["metadata"]["ownerReferences"][1],
            json!({"uid": "b-1", "controller": true})
        );
        let gone = server_side_apply(&out, Some(&flipped), &json!({"metadata": {}}));
        assert_eq!(gone["metadata"]["ownerReferences"], json!([theirs]));
        // First apply: a plain merge over the object.
        let out = server_side_apply(&existing, None, &json!({"spec": {"hard": {"memory": "1Gi"}}}));
        assert_eq!(
            out["spec"]["hard"],
            json!({"pods": "5", "cpu": "1", "memory": "1Gi"})
        );
    }
}
