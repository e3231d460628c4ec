//! Label and field selectors, parsed and matched as the API server does.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::status::ApiError;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(text: &str) -> Result<LabelSelector, ApiError> {
        let mut out = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            out.push(parse_requirement(part).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to parse requirement: invalid label selector {text:?}"
                ))
            })?);
        }
        Ok(LabelSelector(out))
    }

    /// Whether labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Whether the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Option<Requirement> {
    if let Some(key) = part.strip_prefix('!') {
        return valid_key(key.trim()).then(|| Requirement::DoesNotExist(key.trim().to_owned()));
    }
    for (op, set) in [(" notin ", false), (" in ", true)] {
        if let Some((key, rest)) = part.split_once(op) {
            let values = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
            let values: Vec<String> = values
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect();
            let key = key.trim().to_owned();
            if !valid_key(&key) || !values.iter().all(|v| valid_value(v)) {
                return None;
            }
            return Some(if set {
                Requirement::In(key, values)
            } else {
                Requirement::NotIn(key, values)
            });
        }
    }
    if let Some((key, value)) = part.split_once("!=") {
        return (valid_key(key.trim()) && valid_value(value.trim()))
            .then(|| Requirement::NotEquals(key.trim().into(), value.trim().into()));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return (valid_key(key.trim()) && valid_value(value.trim()))
            .then(|| Requirement::Equals(key.trim().into(), value.trim().into()));
    }
    valid_key(part).then(|| Requirement::Exists(part.to_owned()))
}

/// A label value: empty, or up to 63 alphanumerics, '-', '_' and '.', starting and ending alphanumeric.
fn valid_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// A parsed field selector: `metadata.name=x,metadata.namespace!=y` (any dotted path into the object).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(Vec<String>, bool, String)>);

impl FieldSelector {
    /// Parses a field selector.
    pub fn parse(text: &str) -> Result<FieldSelector, ApiError> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, equal, value) = if let Some((p, v)) = part.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (p, true, v)
            } else {
                return Err(ApiError::bad_request(format!("invalid field selector: {text:?}")));
            };
            out.push((
                path.trim().split('.').map(str::to_owned).collect(),
                equal,
                value.trim().to_owned(),
            ));
        }
        Ok(FieldSelector(out))
    }

    /// Whether the object satisfies every term (a missing field is the empty string).
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            let mut cur = object;
            for segment in path {
                cur = cur.get(segment).unwrap_or(&Value::Null);
            }
            let actual = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

/// Whether labels match a `LabelSelector` object (`matchLabels` / `matchExpressions`); an empty one matches all.
pub fn selector_value_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let mut terms = Vec::new();
    if let Some(m) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            terms.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>())
            .unwrap_or_default()
            .join(",");
        match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => terms.push(format!("{key} in ({values})")),
            "NotIn" => terms.push(format!("{key} notin ({values})")),
            "Exists" => terms.push(key.to_owned()),
            "DoesNotExist" => terms.push(format!("!{key}")),
            _ => return false,
        }
    }
    LabelSelector::parse(&terms.join(",")).is_ok_and(|s| s.matches(labels))
}

/// The labels of an object.
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an object matches both selectors.
pub fn matches(labels: &LabelSelector, fields: &FieldSelector, object: &Value) -> bool {
    (labels.is_empty() || labels.matches(&labels_of(object))) && fields.matches(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_follow_kubernetes_semantics() {
        let s = LabelSelector::parse("app=web,tier!=db,env in (prod, test),zone notin (z1),team,!legacy")
            .unwrap();
        assert!(s.matches(&l(&[("app", "web"), ("env", "prod"), ("team", "a")])));
        assert!(!s.matches(&l(&[
            ("app", "web"),
            ("env", "prod"),
            ("team", "a"),
            ("legacy", "1")
        ])));
        assert!(!s.matches(&l(&[("app", "web"), ("env", "dev"), ("team", "a")])));
        assert!(!s.matches(&l(&[
            ("app", "web"),
            ("env", "prod"),
            ("team", "a"),
            ("zone", "z1")
        ])));
        assert!(!s.matches(&l(&[("app", "web"), ("env", "prod")])));
        // != and notin match objects without the label, as in Kubernetes.
        assert!(LabelSelector::parse("a!=b").unwrap().matches(&l(&[])));
        assert!(LabelSelector::parse("a notin (b)").unwrap().matches(&l(&[])));
        assert!(
            LabelSelector::parse("bulkhead.dev/tenant==solar")
                .unwrap()
                .matches(&l(&[("bulkhead.dev/tenant", "solar")]))
        );
        assert!(LabelSelector::parse("").unwrap().is_empty());
        assert_eq!(LabelSelector::parse("a=(b").unwrap_err().code, 400);
    }

    #[test]
    fn field_selectors_compare_dotted_paths() {
        let obj = json!({"metadata": {"name": "x", "namespace": "ns"}, "status": {"phase": "Active"}});
        assert!(FieldSelector::parse("metadata.name=x").unwrap().matches(&obj));
        assert!(
            FieldSelector::parse("metadata.name!=y,status.phase=Active")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            !FieldSelector::parse("metadata.namespace=other")
                .unwrap()
                .matches(&obj)
        );
        assert!(FieldSelector::parse("spec.nodeName=").unwrap().matches(&obj));
        assert_eq!(FieldSelector::parse("metadata.name").unwrap_err().code, 400);
    }
}
