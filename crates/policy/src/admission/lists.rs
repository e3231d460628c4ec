//! Allowed and forbidden lists: exact names plus an optional regular expression.
//!
//! Regular expressions match anywhere in the value (unanchored), as Capsule's Go `MatchString` does;
//! anchor them with `^...$` to match whole values. Compiled expressions are memoised, so a decision
//! never compiles one twice.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use bulkhead_api::common::{AllowedList, ClassAllowedList, ForbiddenList};
use regex::Regex;

use super::{ClassInfo, join_or_none};
use crate::selector;

/// At most this many distinct patterns are memoised; past it the memo starts over.
const MEMO_LIMIT: usize = 4096;

type Memo = RwLock<HashMap<String, Option<Arc<Regex>>>>;

fn memo() -> &'static Memo {
    static MEMO: OnceLock<Memo> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

fn compiled(pattern: &str) -> Option<Arc<Regex>> {
    if let Ok(map) = memo().read()
        && let Some(found) = map.get(pattern)
    {
        return found.clone();
    }
    let regex = Regex::new(pattern).ok().map(Arc::new);
    if let Ok(mut map) = memo().write() {
        if map.len() >= MEMO_LIMIT {
            map.clear();
        }
        map.insert(pattern.to_owned(), regex.clone());
    }
    regex
}

/// Whether `pattern` matches somewhere in `text`; `Err` with the reason when it does not compile.
pub fn pattern_matches(pattern: &str, text: &str) -> Result<bool, String> {
    match compiled(pattern) {
        Some(re) => Ok(re.is_match(text)),
        None => Err(match Regex::new(pattern) {
            Err(e) => format!("invalid regular expression `{pattern}`: {e}"),
            Ok(_) => format!("invalid regular expression `{pattern}`"),
        }),
    }
}

/// The outcome of checking a value against an allowed list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedCheck {
    /// The value is allowed.
    Allowed,
    /// The value is not allowed; the text describes what is (`` `a`, `b` or names matching `re` ``).
    NotAllowed(String),
}

fn describe(names: &[String], regex: Option<&str>, selector: bool) -> String {
    let mut parts = Vec::new();
    if !names.is_empty() {
        parts.push(join_or_none(names));
    }
    if let Some(re) = regex.filter(|r| !r.is_empty()) {
        parts.push(format!("names matching `{re}`"));
    }
    if selector {
        parts.push("classes with the selected labels".to_owned());
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(" or ")
    }
}

fn regex_allows(regex: Option<&str>, value: &str) -> bool {
    regex
        .filter(|r| !r.is_empty())
        .is_some_and(|r| pattern_matches(r, value).unwrap_or(false))
}

/// Checks `value` against an allowed list (exact names or the regex). An empty list allows nothing;
/// callers skip the check when the list itself is absent. A regex that does not compile allows nothing.
pub fn check_allowed(list: &AllowedList, value: &str) -> AllowedCheck {
    if list.allowed.iter().any(|a| a == value) || regex_allows(list.allowed_regex.as_deref(), value) {
        AllowedCheck::Allowed
    } else {
        AllowedCheck::NotAllowed(describe(&list.allowed, list.allowed_regex.as_deref(), false))
    }
}

/// Checks a class name against a class list: by name, by regex, or by the class object's labels
/// (`info` is `None` when the class does not exist). The list's default is always allowed.
pub fn check_class(list: &ClassAllowedList, name: &str, info: Option<&ClassInfo>) -> AllowedCheck {
    let by_selector = list
        .selector()
        .zip(info)
        .is_some_and(|(s, i)| selector::matches(&s, &i.labels));
    if list.allowed.iter().any(|a| a == name)
        || list.default.as_deref() == Some(name)
        || regex_allows(list.allowed_regex.as_deref(), name)
        || by_selector
    {
        AllowedCheck::Allowed
    } else {
        let mut names = list.allowed.clone();
        if let Some(d) = &list.default
            && !names.contains(d)
        {
            names.push(d.clone());
        }
        AllowedCheck::NotAllowed(describe(
            &names,
            list.allowed_regex.as_deref(),
            list.selector().is_some(),
        ))
    }
}

/// Whether `key` is forbidden by the list (exact or regex). A regex that does not compile forbids
/// every key: a broken rule must not open the door.
pub fn is_forbidden(list: &ForbiddenList, key: &str) -> bool {
    list.denied.iter().any(|d| d == key)
        || list
            .denied_regex
            .as_deref()
            .filter(|r| !r.is_empty())
            .is_some_and(|r| pattern_matches(r, key).unwrap_or(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn regexes_match_anywhere_like_go_match_string_and_are_memoised() {
        assert_eq!(pattern_matches(r"\.acme\.com$", "api.acme.com"), Ok(true));
        assert_eq!(pattern_matches("acme", "xacmex"), Ok(true));
        assert_eq!(pattern_matches("^acme$", "xacmex"), Ok(false));
        assert!(pattern_matches("(", "x").is_err_and(|e| e.contains("invalid regular expression `(`")));
        // The memo answers the same way the second time.
        assert_eq!(pattern_matches(r"\.acme\.com$", "acme.org"), Ok(false));
        assert!(pattern_matches("(", "x").is_err());
    }

    #[test]
    fn allowed_lists_take_names_or_regex_and_describe_themselves() {
        let list = AllowedList {
            allowed: vec!["docker.io".into(), "quay.io".into()],
            allowed_regex: Some(r"^.*\.corp$".into()),
        };
        assert_eq!(check_allowed(&list, "quay.io"), AllowedCheck::Allowed);
        assert_eq!(check_allowed(&list, "registry.corp"), AllowedCheck::Allowed);
        assert_eq!(
            check_allowed(&list, "ghcr.io"),
            AllowedCheck::NotAllowed(r"`docker.io`, `quay.io` or names matching `^.*\.corp$`".into())
        );
        assert_eq!(
            check_allowed(&AllowedList::default(), "x"),
            AllowedCheck::NotAllowed("none".into())
        );
        let broken = AllowedList {
            allowed: vec![],
            allowed_regex: Some("(".into()),
        };
        assert!(matches!(check_allowed(&broken, "("), AllowedCheck::NotAllowed(_)));
    }

    #[test]
    fn classes_are_allowed_by_name_default_regex_or_labels() {
        let list = ClassAllowedList {
            allowed: vec!["silver".into()],
            allowed_regex: Some("^fast-".into()),
            match_labels: Some([("tier".to_owned(), "tenant".to_owned())].into()),
            default: Some("bronze".into()),
            ..Default::default()
        };
        let labelled = ClassInfo {
            labels: BTreeMap::from([("tier".to_owned(), "tenant".to_owned())]),
            value: None,
        };
        assert_eq!(check_class(&list, "silver", None), AllowedCheck::Allowed);
        assert_eq!(check_class(&list, "bronze", None), AllowedCheck::Allowed);
        assert_eq!(check_class(&list, "fast-ssd", None), AllowedCheck::Allowed);
        assert_eq!(check_class(&list, "gold", Some(&labelled)), AllowedCheck::Allowed);
        assert_eq!(
            check_class(&list, "gold", Some(&ClassInfo::default())),
            AllowedCheck::NotAllowed(
                "`silver`, `bronze` or names matching `^fast-` or classes with the selected labels".into()
            )
        );
        assert!(matches!(
            check_class(&list, "gold", None),
            AllowedCheck::NotAllowed(_)
        ));
    }

    #[test]
    fn forbidden_lists_fail_closed_on_a_broken_regex() {
        let list = ForbiddenList {
            denied: vec!["team".into()],
            denied_regex: Some(r"^secret\.".into()),
        };
        assert!(is_forbidden(&list, "team"));
        assert!(is_forbidden(&list, "secret.io/x"));
        assert!(!is_forbidden(&list, "app"));
        let broken = ForbiddenList {
            denied: vec![],
            denied_regex: Some("[".into()),
        };
        assert!(is_forbidden(&broken, "anything"));
    }
}
