//! Label selectors evaluated against labels, as Kubernetes evaluates them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `selector`. The empty selector matches everything. An unknown operator
/// matches nothing (the API server would have rejected it), and so does `Exists` / `DoesNotExist` with
/// values: Kubernetes cannot make a selector of it (`LabelSelectorAsSelector` fails), and Capsule, whose
/// CRDs accept it, then matches nothing.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => values.is_empty() && value.is_some(),
            "DoesNotExist" => values.is_empty() && value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// Whether a namespace selector of a pool or quota selects a namespace with `labels`. A tenant
/// namespace (`bulkhead.dev/tenant: <t>`) is seen with Capsule's tenant label too
/// (`capsule.clastix.io/tenant: <t>`, unless it has its own), so that selectors migrated from Capsule
/// manifests select the namespaces they selected there.
pub fn matches_namespace(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    use bulkhead_api::labels::{CAPSULE_TENANT, TENANT};
    match labels.get(TENANT) {
        Some(tenant) if !labels.contains_key(CAPSULE_TENANT) => {
            let mut aliased = labels.clone();
            aliased.insert(CAPSULE_TENANT.to_owned(), tenant.clone());
            matches(selector, &aliased)
        }
        _ => matches(selector, labels),
    }
}

/// A label selector in the API's `labelSelector` query form (`app=web,tier in (a,b),!x`).
pub fn to_query(s: &LabelSelector) -> String {
    let mut parts: Vec<String> = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            // With values it is no selector Kubernetes can make: `k,!k` matches nothing, as `matches` says.
            "Exists" | "DoesNotExist" if !values.is_empty() => format!("{0},!{0}", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// Whether `labels` satisfy a selector in the query form [`to_query`] writes (`a=b`, `a in (x,y)`,
/// `a notin (x)`, `a`, `!a`, joined by commas). An empty query matches everything; a term it cannot
/// read matches nothing.
pub fn matches_query(query: &str, labels: &BTreeMap<String, String>) -> bool {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in query.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&query[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&query[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            let set = |rest: &str| -> Option<Vec<String>> {
                let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
                Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
            };
            if let Some(key) = term.strip_prefix('!') {
                return !labels.contains_key(key.trim());
            }
            if let Some((key, rest)) = term.split_once(" notin ") {
                return set(rest)
                    .is_some_and(|vals| labels.get(key.trim()).is_none_or(|v| !vals.contains(v)));
            }
            if let Some((key, rest)) = term.split_once(" in ") {
                return set(rest)
                    .is_some_and(|vals| labels.get(key.trim()).is_some_and(|v| vals.contains(v)));
            }
            match term.split_once('=') {
                Some((key, value)) => labels.get(key.trim()).map(String::as_str) == Some(value.trim()),
                None => labels.contains_key(term),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn capsule_tenant_selectors_select_bulkhead_tenant_namespaces() {
        let by_capsule = LabelSelector {
            match_labels: Some([("capsule.clastix.io/tenant".to_owned(), "solar".to_owned())].into()),
            match_expressions: None,
        };
        let ours: BTreeMap<String, String> = [("bulkhead.dev/tenant".to_owned(), "solar".to_owned())].into();
        assert!(matches_namespace(&by_capsule, &ours));
        assert!(!matches(&by_capsule, &ours));
        // A namespace's own Capsule label wins over the alias.
        let mut both = ours.clone();
        both.insert("capsule.clastix.io/tenant".into(), "wind".into());
        assert!(!matches_namespace(&by_capsule, &both));
        let untenanted = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![req("capsule.clastix.io/tenant", "DoesNotExist", &[])]),
        };
        assert!(!matches_namespace(&untenanted, &ours));
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| (*v).into()).collect()),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let s = LabelSelector {
            match_labels: Some([("tier".to_owned(), "web".to_owned())].into()),
            match_expressions: Some(vec![
                req("env", "In", &["prod", "stage"]),
                req("legacy", "DoesNotExist", &[]),
            ]),
        };
        assert!(matches(&s, &labels(&[("tier", "web"), ("env", "prod")])));
        assert!(!matches(&s, &labels(&[("tier", "web"), ("env", "dev")])));
        assert!(!matches(
            &s,
            &labels(&[("tier", "web"), ("env", "prod"), ("legacy", "1")])
        ));
        assert!(matches(&LabelSelector::default(), &labels(&[])));
        // NotIn matches objects without the key; Exists with values (a Capsule manifest has one) matches
        // nothing, as in Capsule, where Kubernetes cannot make a selector of it.
        assert!(matches(
            &LabelSelector {
                match_expressions: Some(vec![req("x", "NotIn", &["a"])]),
                ..Default::default()
            },
            &labels(&[])
        ));
        for op in ["Exists", "DoesNotExist"] {
            let odd = LabelSelector {
                match_expressions: Some(vec![req("x", op, &["bronze"])]),
                ..Default::default()
            };
            assert!(!matches(&odd, &labels(&[("x", "bronze")])), "{op}");
            assert!(!matches(&odd, &labels(&[])), "{op}");
            assert!(
                !matches_query(&to_query(&odd), &labels(&[("x", "bronze")])),
                "{op}"
            );
            assert!(!matches_query(&to_query(&odd), &labels(&[])), "{op}");
        }
        assert!(!matches(
            &LabelSelector {
                match_expressions: Some(vec![req("x", "Like", &["a"])]),
                ..Default::default()
            },
            &labels(&[("x", "a")])
        ));
    }

    #[test]
    fn query_strings_match_as_the_selectors_they_came_from() {
        let s = LabelSelector {
            match_labels: Some([("tier".to_owned(), "web".to_owned())].into()),
            match_expressions: Some(vec![
                req("env", "In", &["prod", "stage"]),
                req("zone", "NotIn", &["a"]),
                req("team", "Exists", &[]),
                req("legacy", "DoesNotExist", &[]),
            ]),
        };
        let q = to_query(&s);
        assert_eq!(q, "tier=web,env in (prod,stage),zone notin (a),team,!legacy");
        for l in [
            labels(&[("tier", "web"), ("env", "prod"), ("team", "x")]),
            labels(&[("tier", "web"), ("env", "stage"), ("team", "x"), ("zone", "b")]),
            labels(&[("tier", "web"), ("env", "prod"), ("team", "x"), ("zone", "a")]),
            labels(&[("tier", "web"), ("env", "prod"), ("team", "x"), ("legacy", "1")]),
            labels(&[("tier", "db"), ("env", "prod"), ("team", "x")]),
            labels(&[("tier", "web"), ("env", "prod")]),
        ] {
            assert_eq!(matches_query(&q, &l), matches(&s, &l), "{l:?}");
        }
        assert!(matches_query("", &labels(&[])));
    }
}
