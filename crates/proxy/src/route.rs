//! What a request is about, read from its path and query the way the API server reads them.

/// A resource request: `/api/v1/...` or `/apis/<group>/<version>/...`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// API group (`""` for the core group).
    pub group: String,
    /// API version.
    pub version: String,
    /// The namespace in the path, if any.
    pub namespace: Option<String>,
    /// The resource (plural).
    pub resource: String,
    /// The object's name, if the path names one.
    pub name: Option<String>,
    /// The subresource, if any (`status`, `log`, `exec`, ...).
    pub subresource: Option<String>,
}

impl Target {
    /// `resource.group` as the API server names it in messages (`nodes`, `storageclasses.storage.k8s.io`).
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// Reads a path; `None` for anything that is not a resource request (discovery, `/version`,
    /// OpenAPI, health).
    pub fn parse(path: &str) -> Option<Target> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let mut target = Target {
            group: group.to_owned(),
            version: version.to_owned(),
            ..Target::default()
        };
        match rest {
            [] => return None,
            ["namespaces", namespace, resource, more @ ..]
                if !(group.is_empty() && matches!(*resource, "status" | "finalize")) =>
            {
                target.namespace = Some((*namespace).to_owned());
                target.resource = (*resource).to_owned();
                target.name = more.first().map(|n| (*n).to_owned());
                target.subresource = more.get(1).map(|s| (*s).to_owned());
                if more.len() > 2 {
                    return None;
                }
            }
            [resource, more @ ..] => {
                target.resource = (*resource).to_owned();
                target.name = more.first().map(|n| (*n).to_owned());
                target.subresource = more.get(1).map(|s| (*s).to_owned());
                if more.len() > 2 {
                    return None;
                }
            }
        }
        Some(target)
    }

    /// Whether this is the core `namespaces` resource.
    pub fn is_namespaces(&self) -> bool {
        self.group.is_empty() && self.resource == "namespaces" && self.namespace.is_none()
    }
}

/// A boolean query parameter as the API server reads it (apimachinery's `Convert_Slice_string_To_bool`
/// on the first value): false only for `0` and for `false` in any case, as Go's `strings.EqualFold`
/// folds it (so `FALSE` and `falſe`, with U+017F for the s, are false too); anything else, the empty
/// string and `no` included, is true.
pub fn api_bool(value: &str) -> bool {
    let folded: String = value
        .chars()
        .map(|c| if c == '\u{17F}' { 's' } else { c })
        .collect();
    !(value == "0" || folded.eq_ignore_ascii_case("false"))
}

/// The query parameters the proxy acts on, and the rest as given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// Every pair, in order.
    pub pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses a query string.
    pub fn parse(query: Option<&str>) -> Query {
        Query {
            pairs: form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    /// The value of a parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Whether this is a watch, read as the API server reads it (see [`api_bool`]).
    pub fn is_watch(&self) -> bool {
        self.get("watch").is_some_and(api_bool)
    }

    /// Sets a parameter, replacing any value it had.
    pub fn set(&mut self, key: &str, value: &str) {
        self.pairs.retain(|(k, _)| k != key);
        self.pairs.push((key.to_owned(), value.to_owned()));
    }

    /// Removes a parameter.
    pub fn remove(&mut self, key: &str) {
        self.pairs.retain(|(k, _)| k != key);
    }

    /// Adds a requirement to the label selector (ANDed with the caller's own). A caller's selector
    /// with unbalanced parentheses is refused, so that it cannot swallow the requirement into a value
    /// list of its own.
    pub fn and_label_selector(&mut self, requirement: &str) -> Result<(), String> {
        let selector = match self.get("labelSelector").filter(|s| !s.trim().is_empty()) {
            Some(existing) => {
                let mut depth = 0i32;
                for c in existing.chars() {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    if !(0..=1).contains(&depth) {
                        return Err(format!(
                            "invalid label selector {existing:?}: unbalanced parentheses"
                        ));
                    }
                }
                if depth != 0 {
                    return Err(format!(
                        "invalid label selector {existing:?}: unbalanced parentheses"
                    ));
                }
                format!("{existing},{requirement}")
            }
            None => requirement.to_owned(),
        };
        self.set("labelSelector", &selector);
        Ok(())
    }

    /// The encoded query string (empty when there are no pairs).
    pub fn encode(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.pairs {
            out.append_pair(k, v);
        }
        out.finish()
    }

    /// `path` with this query.
    pub fn uri(&self, path: &str) -> String {
        let query = self.encode();
        if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Group, namespace, resource, name, subresource.
    type Parsed = (String, Option<String>, String, Option<String>, Option<String>);

    fn t(path: &str) -> Option<Parsed> {
        Target::parse(path).map(|t| (t.group, t.namespace, t.resource, t.name, t.subresource))
    }

    #[test]
    fn paths_are_read_as_the_api_server_reads_them() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            t("/api/v1/namespaces"),
            Some(("".into(), None, "namespaces".into(), None, None))
        );
        assert_eq!(
            t("/api/v1/namespaces/a"),
            Some(("".into(), None, "namespaces".into(), s("a"), None))
        );
        assert_eq!(
            t("/api/v1/namespaces/a/status"),
            Some(("".into(), None, "namespaces".into(), s("a"), s("status")))
        );
        assert_eq!(
            t("/api/v1/namespaces/a/finalize"),
            Some(("".into(), None, "namespaces".into(), s("a"), s("finalize")))
        );
        assert_eq!(
            t("/api/v1/namespaces/a/pods"),
            Some(("".into(), s("a"), "pods".into(), None, None))
        );
        assert_eq!(
            t("/api/v1/namespaces/a/pods/p/exec"),
            Some(("".into(), s("a"), "pods".into(), s("p"), s("exec")))
        );
        assert_eq!(
            t("/apis/apps/v1/deployments"),
            Some(("apps".into(), None, "deployments".into(), None, None))
        );
        assert_eq!(
            t("/apis/storage.k8s.io/v1/storageclasses/gold"),
            Some((
                "storage.k8s.io".into(),
                None,
                "storageclasses".into(),
                s("gold"),
                None
            ))
        );
        assert_eq!(
            t("/api/v1/nodes/n1/proxy/metrics"),
            None,
            "deeper paths are not resource requests we read"
        );
        assert_eq!(t("/apis"), None);
        assert_eq!(t("/api/v1"), None);
        assert_eq!(t("/version"), None);
        assert_eq!(t("/api//v1/pods"), None);
    }

    #[test]
    fn queries_keep_what_they_do_not_touch_and_and_selectors() {
        let mut q = Query::parse(Some("watch=1&labelSelector=app%3Dweb&resourceVersion=5"));
        assert!(q.is_watch());
        q.and_label_selector("bulkhead.dev/tenant in (a,b)").unwrap();
        assert_eq!(
            q.get("labelSelector"),
            Some("app=web,bulkhead.dev/tenant in (a,b)")
        );
        assert_eq!(q.get("resourceVersion"), Some("5"));
        let mut empty = Query::parse(None);
        assert!(!empty.is_watch());
        // The API server's reading: only 0 and false (any case, Unicode folding) are false; the first
        // value counts.
        for watch in ["true", "1", "", "yes", "no", "True", "2", "f"] {
            assert!(
                Query::parse(Some(&format!("watch={watch}"))).is_watch(),
                "{watch:?}"
            );
        }
        for list in ["0", "false", "FALSE", "False", "fal\u{17F}e", "0&watch=true"] {
            assert!(
                !Query::parse(Some(&format!("watch={list}"))).is_watch(),
                "{list:?}"
            );
        }
        assert!(Query::parse(Some("watch")).is_watch());
        empty.and_label_selector("x=y").unwrap();
        for sneaky in ["x in (a", "x notin (a,b", "x in (a)) ,y in (b"] {
            let mut q = Query::parse(Some(&format!("labelSelector={sneaky}")));
            assert!(q.and_label_selector("t in (mine)").is_err(), "{sneaky}");
        }
        assert_eq!(
            empty.uri("/api/v1/namespaces"),
            "/api/v1/namespaces?labelSelector=x%3Dy"
        );
        assert_eq!(Query::parse(None).uri("/p"), "/p");
    }

    #[test]
    fn the_api_server_reads_the_selector_the_proxy_wrote_and_no_other() {
        // Repeated: the API server reads the first value; the proxy sends one, the caller's first
        // ANDed with the tenant requirement.
        let mut q = Query::parse(Some("labelSelector=a%3D1&labelSelector=&labelSelector=b%3D2"));
        q.and_label_selector("t in (mine)").unwrap();
        assert_eq!(q.encode(), "labelSelector=a%3D1%2Ct+in+%28mine%29");
        // Go's query parser drops a pair with a raw `;` (the selector would vanish and the list be
        // unfiltered); the proxy sends every value encoded, so the API server reads the pair the proxy
        // judged, requirement included.
        let mut q = Query::parse(Some("labelSelector=a%3D1;b&watch=1;x"));
        q.and_label_selector("t in (mine)").unwrap();
        let sent = q.encode();
        assert!(!sent.contains(';'), "{sent}");
        let read = Query::parse(Some(&sent));
        assert_eq!(read.get("labelSelector"), Some("a=1;b,t in (mine)"));
        assert!(read.is_watch());
        // Keys are decoded as the API server decodes them, `+` is a space in both.
        let mut q = Query::parse(Some("%6CabelSelector=a+in+(x)"));
        q.and_label_selector("t in (mine)").unwrap();
        assert_eq!(q.get("labelSelector"), Some("a in (x),t in (mine)"));
        assert_eq!(q.pairs.len(), 1);
    }
}
