//! Label selectors evaluated against labels, as Kubernetes evaluates them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `selector`. The empty selector matches everything. An unknown operator
/// matches nothing (the API server would have rejected it). `Exists` / `DoesNotExist` ignore values.
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
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

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
        // NotIn matches objects without the key; Exists ignores values (a Capsule manifest gives some).
        assert!(matches(
            &LabelSelector {
                match_expressions: Some(vec![req("x", "NotIn", &["a"])]),
                ..Default::default()
            },
            &labels(&[])
        ));
        assert!(matches(
            &LabelSelector {
                match_expressions: Some(vec![req("x", "Exists", &["ignored"])]),
                ..Default::default()
            },
            &labels(&[("x", "b")])
        ));
        assert!(!matches(
            &LabelSelector {
                match_expressions: Some(vec![req("x", "Like", &["a"])]),
                ..Default::default()
            },
            &labels(&[("x", "a")])
        ));
    }
}
