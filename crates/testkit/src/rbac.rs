//! RBAC evaluation over the stored Roles, ClusterRoles (with aggregation) and their bindings, and the
//! default cluster roles a fresh cluster has.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::auth::UserInfo;
use crate::registry::{GroupResource, RESOURCE_VERBS};
use crate::selector::{labels_of, selector_value_matches};
use crate::store::Store;

/// What a request asks to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection, impersonate, ...
    pub verb: String,
    /// API group of the resource.
    pub group: String,
    /// Resource (plural), empty for a non-resource request.
    pub resource: String,
    /// Subresource (`status`, `log`), if any.
    pub subresource: Option<String>,
    /// Namespace, if any.
    pub namespace: Option<String>,
    /// Object name, if any.
    pub name: Option<String>,
    /// Path of a non-resource request.
    pub path: Option<String>,
}

impl Attributes {
    /// A resource request.
    pub fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: None,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            path: None,
        }
    }

    /// A non-resource request (`/version`, `/apis`).
    pub fn non_resource(verb: &str, path: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: String::new(),
            resource: String::new(),
            subresource: None,
            namespace: None,
            name: None,
            path: Some(path.into()),
        }
    }

    /// The API server's wording for a denial.
    pub fn forbidden_message(&self, user: &str) -> String {
        if let Some(path) = &self.path {
            return format!("forbidden: User \"{user}\" cannot {} path \"{path}\"", self.verb);
        }
        let resource = match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        };
        let what = match (&self.name, self.group.is_empty()) {
            (Some(name), true) => format!("{} \"{name}\"", self.resource),
            (Some(name), false) => format!("{}.{} \"{name}\"", self.resource, self.group),
            (None, true) => self.resource.clone(),
            (None, false) => format!("{}.{}", self.resource, self.group),
        };
        let scope = match &self.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_owned(),
        };
        format!(
            "{what} is forbidden: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
            self.verb, self.group
        )
    }
}

/// Evaluates RBAC against a store.
pub struct Authorizer<'a> {
    store: &'a Store,
}

fn gr(group: &str, resource: &str) -> GroupResource {
    GroupResource {
        group: group.into(),
        resource: resource.into(),
    }
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

impl<'a> Authorizer<'a> {
    /// An authorizer reading the store's RBAC objects.
    pub fn new(store: &'a Store) -> Self {
        Authorizer { store }
    }

    /// Whether the user may do what the attributes say.
    pub fn allows(&self, user: &UserInfo, attrs: &Attributes) -> bool {
        if user.groups.iter().any(|g| g == "system:masters") {
            return true;
        }
        for binding in self
            .store
            .list(&gr("rbac.authorization.k8s.io", "clusterrolebindings"), None)
        {
            if self.binding_allows(&binding, user, attrs, None) {
                return true;
            }
        }
        if let Some(ns) = &attrs.namespace {
            for binding in self
                .store
                .list(&gr("rbac.authorization.k8s.io", "rolebindings"), Some(ns))
            {
                if self.binding_allows(&binding, user, attrs, Some(ns)) {
                    return true;
                }
            }
        }
        false
    }

    /// Every rule that applies to the user in a namespace (for SelfSubjectRulesReview).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<Value> {
        let mut rules = Vec::new();
        for binding in self
            .store
            .list(&gr("rbac.authorization.k8s.io", "clusterrolebindings"), None)
        {
            if binds(&binding, user) {
                rules.extend(self.role_rules(&binding, None));
            }
        }
        for binding in self
            .store
            .list(&gr("rbac.authorization.k8s.io", "rolebindings"), Some(namespace))
        {
            if binds(&binding, user) {
                rules.extend(self.role_rules(&binding, Some(namespace)));
            }
        }
        rules
    }

    fn binding_allows(
        &self,
        binding: &Value,
        user: &UserInfo,
        attrs: &Attributes,
        namespace: Option<&str>,
    ) -> bool {
        binds(binding, user)
            && self
                .role_rules(binding, namespace)
                .iter()
                .any(|rule| rule_allows(rule, attrs))
    }

    fn role_rules(&self, binding: &Value, namespace: Option<&str>) -> Vec<Value> {
        let kind = binding
            .pointer("/roleRef/kind")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = binding
            .pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let role: Option<Arc<Value>> = match (kind, namespace) {
            ("ClusterRole", _) => self
                .store
                .get(&gr("rbac.authorization.k8s.io", "clusterroles"), "", name),
            ("Role", Some(ns)) => self
                .store
                .get(&gr("rbac.authorization.k8s.io", "roles"), ns, name),
            _ => None,
        };
        let Some(role) = role else { return Vec::new() };
        let mut rules: Vec<Value> = role
            .get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(selectors) = role
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
        {
            for other in self
                .store
                .list(&gr("rbac.authorization.k8s.io", "clusterroles"), None)
            {
                let labels = labels_of(&other);
                let selected = selectors.iter().any(|s| selector_value_matches(s, &labels));
                if selected && other.pointer("/metadata/name") != role.pointer("/metadata/name") {
                    rules.extend(
                        other
                            .get("rules")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default(),
                    );
                }
            }
        }
        rules
    }
}

fn binds(binding: &Value, user: &UserInfo) -> bool {
    binding
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|s| {
            let name = s.get("name").and_then(Value::as_str).unwrap_or("");
            match s.get("kind").and_then(Value::as_str).unwrap_or("") {
                "User" => user.name == name,
                "Group" => user.groups.iter().any(|g| g == name),
                "ServiceAccount" => {
                    let ns = s.get("namespace").and_then(Value::as_str).unwrap_or("");
                    user.name == format!("system:serviceaccount:{ns}:{name}")
                }
                _ => false,
            }
        })
}

fn covers(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

fn rule_allows(rule: &Value, attrs: &Attributes) -> bool {
    if !covers(&strings(rule, "verbs"), &attrs.verb) {
        return false;
    }
    if let Some(path) = &attrs.path {
        return strings(rule, "nonResourceURLs").iter().any(|u| {
            u == path || u == "*" || u.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
        });
    }
    if !covers(&strings(rule, "apiGroups"), &attrs.group) {
        return false;
    }
    let resources = strings(rule, "resources");
    let resource_ok = match &attrs.subresource {
        Some(sub) => resources
            .iter()
            .any(|r| *r == format!("{}/{sub}", attrs.resource) || r == "*" || *r == format!("*/{sub}")),
        None => covers(&resources, &attrs.resource),
    };
    if !resource_ok {
        return false;
    }
    let names = strings(rule, "resourceNames");
    names.is_empty() || attrs.name.as_ref().is_some_and(|n| names.contains(n))
}

const READ: &[&str] = &["get", "list", "watch"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

/// The cluster roles and bindings every cluster starts with (a faithful subset of Kubernetes' own).
pub fn default_rbac() -> Vec<Value> {
    let workloads = |verbs: &[&str]| {
        vec![
            rule(
                &[""],
                &[
                    "pods",
                    "pods/attach",
                    "pods/exec",
                    "pods/portforward",
                    "pods/proxy",
                ],
                verbs,
            ),
            rule(
                &[""],
                &[
                    "configmaps",
                    "endpoints",
                    "persistentvolumeclaims",
                    "replicationcontrollers",
                    "secrets",
                    "serviceaccounts",
                    "services",
                    "services/proxy",
                ],
                verbs,
            ),
            rule(
                &["apps"],
                &[
                    "deployments",
                    "deployments/scale",
                    "replicasets",
                    "replicasets/scale",
                    "statefulsets",
                    "statefulsets/scale",
                    "daemonsets",
                ],
                verbs,
            ),
            rule(&["batch"], &["jobs", "cronjobs"], verbs),
            rule(&["networking.k8s.io"], &["ingresses", "networkpolicies"], verbs),
            rule(&["policy"], &["poddisruptionbudgets"], verbs),
            rule(&["autoscaling"], &["horizontalpodautoscalers"], verbs),
        ]
    };
    let namespace_reads = vec![
        rule(
            &[""],
            &[
                "events",
                "limitranges",
                "resourcequotas",
                "resourcequotas/status",
                "namespaces",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "services/status",
                "persistentvolumeclaims/status",
                "bindings",
            ],
            READ,
        ),
        rule(
            &["apps"],
            &[
                "deployments/status",
                "replicasets/status",
                "statefulsets/status",
                "daemonsets/status",
            ],
            READ,
        ),
        rule(&["events.k8s.io"], &["events"], READ),
    ];
    let mut edit = workloads(RESOURCE_VERBS);
    edit.push(rule(&[""], &["serviceaccounts/token"], &["create"]));
    edit.extend(namespace_reads.clone());
    let mut admin = edit.clone();
    admin.push(rule(
        &["rbac.authorization.k8s.io"],
        &["roles", "rolebindings"],
        RESOURCE_VERBS,
    ));
    admin.push(rule(
        &["authorization.k8s.io"],
        &["localsubjectaccessreviews"],
        &["create"],
    ));
    let mut view: Vec<Value> = workloads(READ)
        .into_iter()
        .map(|mut r| {
            if let Some(res) = r.get_mut("resources").and_then(Value::as_array_mut) {
                res.retain(|x| {
                    x != "secrets"
                        && !x.as_str().unwrap_or("").contains("/exec")
                        && !x.as_str().unwrap_or("").contains("/attach")
                        && !x.as_str().unwrap_or("").contains("/portforward")
                        && !x.as_str().unwrap_or("").contains("proxy")
                });
            }
            r
        })
        .collect();
    view.extend(namespace_reads);
    let cluster_role = |name: &str, rules: Vec<Value>, aggregate: Option<&str>| {
        let mut role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": rules,
        });
        if let Some(agg) = aggregate {
            // Like Kubernetes: admin/edit/view also take the rules of roles labelled aggregate-to-<name>.
            role["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{agg}"): "true"}}]});
        }
        role
    };
    let binding = |name: &str, role: &str, group: &str| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
        })
    };
    vec![
        cluster_role(
            "cluster-admin",
            vec![
                rule(&["*"], &["*"], &["*"]),
                json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
            ],
            None,
        ),
        cluster_role("admin", admin, Some("admin")),
        cluster_role("edit", edit, Some("edit")),
        cluster_role("view", view, Some("view")),
        cluster_role(
            "system:discovery",
            vec![
                json!({"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/openapi", "/openapi/*", "/version", "/version/"], "verbs": ["get"]}),
            ],
            None,
        ),
        cluster_role(
            "system:basic-user",
            vec![rule(
                &["authorization.k8s.io"],
                &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                &["create"],
            )],
            None,
        ),
        binding("cluster-admin", "cluster-admin", "system:masters"),
        binding("system:discovery", "system:discovery", "system:authenticated"),
        binding("system:basic-user", "system:basic-user", "system:authenticated"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn store_with(objects: Vec<Value>) -> Store {
        let registry = Registry::default();
        let mut store = Store::new();
        for mut o in default_rbac().into_iter().chain(objects) {
            let kind = o["kind"].as_str().unwrap().to_owned();
            let rt = registry
                .all()
                .iter()
                .find(|t| t.kind == kind && t.group == "rbac.authorization.k8s.io")
                .unwrap()
                .clone();
            let ns = o
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            o["apiVersion"] = json!(rt.api_version());
            store.create(&rt, &ns, o).unwrap();
        }
        store
    }

    fn ns(store: &mut Store, name: &str) {
        let registry = Registry::default();
        let rt = registry.find("", "v1", "namespaces").unwrap();
        store
            .create(
                &rt,
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            )
            .unwrap();
    }

    #[test]
    fn admin_in_a_namespace_may_manage_workloads_but_only_read_quotas() {
        let mut store = store_with(vec![]);
        ns(&mut store, "team");
        let registry = Registry::default();
        let rt = registry
            .find("rbac.authorization.k8s.io", "v1", "rolebindings")
            .unwrap();
        store
            .create(&rt, "team", json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "alice-admin", "namespace": "team"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                "subjects": [{"kind": "User", "name": "alice"}],
            }))
            .unwrap();
        let auth = Authorizer::new(&store);
        let alice = UserInfo::new("alice", &[]);
        assert!(auth.allows(
            &alice,
            &Attributes::resource("create", "apps", "deployments", Some("team"), None)
        ));
        assert!(auth.allows(
            &alice,
            &Attributes::resource("list", "", "resourcequotas", Some("team"), None)
        ));
        assert!(!auth.allows(
            &alice,
            &Attributes::resource("update", "", "resourcequotas", Some("team"), Some("q"))
        ));
        assert!(!auth.allows(
            &alice,
            &Attributes::resource("create", "apps", "deployments", Some("other"), None)
        ));
        assert!(!auth.allows(
            &alice,
            &Attributes::resource("list", "", "namespaces", None, None)
        ));
        assert!(auth.allows(&alice, &Attributes::non_resource("get", "/apis")));
        assert!(auth.allows(
            &UserInfo::new("root", &["system:masters"]),
            &Attributes::resource("delete", "", "nodes", None, Some("n"))
        ));
        assert_eq!(
            Attributes::resource("list", "", "namespaces", None, None).forbidden_message("alice"),
            "namespaces is forbidden: User \"alice\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
        );
    }

    #[test]
    fn aggregated_roles_and_resource_names_and_service_accounts() {
        let store = store_with(vec![
            json!({"kind": "ClusterRole", "metadata": {"name": "tenant-viewer", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                   "rules": [{"apiGroups": ["bulkhead.dev"], "resources": ["tenants"], "verbs": ["get", "list"]}]}),
            json!({"kind": "ClusterRole", "metadata": {"name": "one-cm"},
                   "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"], "verbs": ["get"]}]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "v"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                   "subjects": [{"kind": "Group", "name": "viewers"}]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "c"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "one-cm"},
                   "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "ci"}]}),
        ]);
        let auth = Authorizer::new(&store);
        let viewer = UserInfo::new("v", &["viewers"]);
        assert!(auth.allows(
            &viewer,
            &Attributes::resource("list", "bulkhead.dev", "tenants", None, None)
        ));
        assert!(!auth.allows(
            &viewer,
            &Attributes::resource("list", "", "secrets", Some("x"), None)
        ));
        let bot = UserInfo::new("system:serviceaccount:ci:bot", &[]);
        assert!(bot.groups.contains(&"system:serviceaccounts:ci".to_owned()));
        assert!(auth.allows(
            &bot,
            &Attributes::resource("get", "", "configmaps", Some("x"), Some("cfg"))
        ));
        assert!(!auth.allows(
            &bot,
            &Attributes::resource("get", "", "configmaps", Some("x"), Some("other"))
        ));
        assert!(!auth.allows(
            &bot,
            &Attributes::resource("list", "", "configmaps", Some("x"), None)
        ));
    }
}
