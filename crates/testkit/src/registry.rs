//! The resource types the server serves: the built-in kinds Bulkhead and kubectl use, and every
//! CustomResourceDefinition once it is created. Also the discovery documents.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition,
};
use serde_json::{Value, json};

/// Every verb a stored resource serves (discovery lists them; RBAC's broad roles grant them).
pub const RESOURCE_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// A group and resource: the key of a store bucket (all versions of a resource share one bucket).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    /// API group, `""` for the core group.
    pub group: String,
    /// Plural resource name.
    pub resource: String,
}

/// One served resource at one version.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural name (the URL segment).
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names (`ns`, `tnt`).
    pub short_names: Vec<String>,
    /// Whether the resource has a `status` subresource (main writes keep status; status writes keep the rest).
    pub status: bool,
    /// Create-only virtual resources (reviews): nothing is stored.
    pub virtual_create: bool,
    /// The CRD that defines it, for validation and printer columns.
    pub crd: Option<Arc<CustomResourceDefinition>>,
    /// Categories (`all`).
    pub categories: Vec<String>,
}

impl ResourceType {
    /// The bucket this resource is stored in.
    pub fn group_resource(&self) -> GroupResource {
        GroupResource {
            group: self.group.clone(),
            resource: self.plural.clone(),
        }
    }

    /// `plural` for core resources, `plural.group` otherwise (as in error messages).
    pub fn group_resource_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Extra printer columns of a CRD version.
    pub fn printer_columns(&self) -> Vec<CustomResourceColumnDefinition> {
        self.crd
            .as_ref()
            .and_then(|crd| crd.spec.versions.iter().find(|v| v.name == self.version))
            .and_then(|v| v.additional_printer_columns.clone())
            .unwrap_or_default()
    }

    fn verbs(&self) -> Vec<&'static str> {
        if self.virtual_create {
            vec!["create"]
        } else {
            RESOURCE_VERBS.to_vec()
        }
    }
}

struct Builtin(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    bool,
);

// group, version, kind, plural, namespaced, short names, status subresource
const BUILTINS: &[Builtin] = &[
    Builtin("", "v1", "Namespace", "namespaces", false, &["ns"], true),
    Builtin("", "v1", "ConfigMap", "configmaps", true, &["cm"], false),
    Builtin("", "v1", "Secret", "secrets", true, &[], false),
    Builtin(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        true,
        &["sa"],
        false,
    ),
    Builtin("", "v1", "Pod", "pods", true, &["po"], true),
    Builtin("", "v1", "Service", "services", true, &["svc"], true),
    Builtin(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
        &["pvc"],
        true,
    ),
    Builtin(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        false,
        &["pv"],
        true,
    ),
    Builtin(
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        true,
        &["quota"],
        true,
    ),
    Builtin("", "v1", "LimitRange", "limitranges", true, &["limits"], false),
    Builtin("", "v1", "Node", "nodes", false, &["no"], true),
    Builtin("", "v1", "Event", "events", true, &["ev"], false),
    Builtin("apps", "v1", "Deployment", "deployments", true, &["deploy"], true),
    Builtin("apps", "v1", "ReplicaSet", "replicasets", true, &["rs"], true),
    Builtin(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
        &["netpol"],
        false,
    ),
    Builtin(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        true,
        &["ing"],
        true,
    ),
    Builtin(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        false,
        &[],
        false,
    ),
    Builtin(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        false,
        &["sc"],
        false,
    ),
    Builtin(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        false,
        &["pc"],
        false,
    ),
    Builtin(
        "node.k8s.io",
        "v1",
        "RuntimeClass",
        "runtimeclasses",
        false,
        &[],
        false,
    ),
    Builtin(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        true,
        &[],
        false,
    ),
    Builtin(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
        false,
    ),
    Builtin(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
        false,
    ),
    Builtin(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
        false,
    ),
    Builtin("coordination.k8s.io", "v1", "Lease", "leases", true, &[], false),
    Builtin(
        "flowcontrol.apiserver.k8s.io",
        "v1",
        "FlowSchema",
        "flowschemas",
        false,
        &[],
        true,
    ),
    Builtin(
        "flowcontrol.apiserver.k8s.io",
        "v1",
        "PriorityLevelConfiguration",
        "prioritylevelconfigurations",
        false,
        &[],
        true,
    ),
    Builtin("events.k8s.io", "v1", "Event", "events", true, &["ev"], false),
    Builtin(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        true,
    ),
    Builtin(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
        &[],
        false,
    ),
    Builtin(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
        &[],
        false,
    ),
    // Stored, not evaluated: the testkit runs no CEL (docs/testing.md).
    Builtin(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        false,
        &[],
        true,
    ),
    Builtin(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        false,
        &[],
        false,
    ),
];

// group, kind, plural, namespaced: create-only reviews.
const REVIEWS: &[(&str, &str, &str, bool)] = &[
    ("authentication.k8s.io", "TokenReview", "tokenreviews", false),
    (
        "authorization.k8s.io",
        "SubjectAccessReview",
        "subjectaccessreviews",
        false,
    ),
    (
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        false,
    ),
    (
        "authorization.k8s.io",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        false,
    ),
    (
        "authorization.k8s.io",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        true,
    ),
    // The older way to place a pod (`pods/binding` is the newer): created, never stored.
    ("", "Binding", "bindings", true),
];

/// Every served resource type.
#[derive(Debug, Clone)]
pub struct Registry {
    types: Vec<Arc<ResourceType>>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut types: Vec<Arc<ResourceType>> = BUILTINS
            .iter()
            .map(
                |Builtin(group, version, kind, plural, namespaced, short, status)| {
                    Arc::new(ResourceType {
                        group: (*group).into(),
                        version: (*version).into(),
                        kind: (*kind).into(),
                        plural: (*plural).into(),
                        singular: kind.to_lowercase(),
                        namespaced: *namespaced,
                        short_names: short.iter().map(|s| (*s).into()).collect(),
                        status: *status,
                        virtual_create: false,
                        crd: None,
                        categories: if ["pods", "services", "deployments", "replicasets"].contains(plural) {
                            vec!["all".into()]
                        } else {
                            Vec::new()
                        },
                    })
                },
            )
            .collect();
        types.extend(REVIEWS.iter().map(|(group, kind, plural, namespaced)| {
            Arc::new(ResourceType {
                group: (*group).into(),
                version: "v1".into(),
                kind: (*kind).into(),
                plural: (*plural).into(),
                singular: kind.to_lowercase(),
                namespaced: *namespaced,
                short_names: Vec::new(),
                status: false,
                virtual_create: true,
                crd: None,
                categories: Vec::new(),
            })
        }));
        Registry { types }
    }
}

impl Registry {
    /// The type served at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// Any served version of a group/resource (the first), e.g. to decide if a bucket is namespaced.
    pub fn any_version(&self, gr: &GroupResource) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == gr.group && t.plural == gr.resource)
            .cloned()
    }

    /// Every type.
    pub fn all(&self) -> &[Arc<ResourceType>] {
        &self.types
    }

    /// Registers (or re-registers) the served versions of a CRD.
    pub fn register_crd(&mut self, crd: &CustomResourceDefinition) {
        self.unregister_crd(&crd.spec.group, &crd.spec.names.plural);
        let crd = Arc::new(crd.clone());
        for version in crd.spec.versions.iter().filter(|v| v.served) {
            self.types.push(Arc::new(ResourceType {
                group: crd.spec.group.clone(),
                version: version.name.clone(),
                kind: crd.spec.names.kind.clone(),
                plural: crd.spec.names.plural.clone(),
                singular: crd
                    .spec
                    .names
                    .singular
                    .clone()
                    .unwrap_or_else(|| crd.spec.names.kind.to_lowercase()),
                namespaced: crd.spec.scope == "Namespaced",
                short_names: crd.spec.names.short_names.clone().unwrap_or_default(),
                status: version.subresources.as_ref().is_some_and(|s| s.status.is_some()),
                virtual_create: false,
                crd: Some(crd.clone()),
                categories: crd.spec.names.categories.clone().unwrap_or_default(),
            }));
        }
    }

    /// Stops serving a CRD's resource.
    pub fn unregister_crd(&mut self, group: &str, plural: &str) {
        self.types
            .retain(|t| !(t.crd.is_some() && t.group == group && t.plural == plural));
    }

    /// `/api`.
    pub fn core_versions() -> Value {
        json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
    }

    /// `/apis`.
    pub fn groups(&self) -> Value {
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            let versions = groups.entry(&t.group).or_default();
            if !versions.contains(&t.version.as_str()) {
                versions.push(&t.version);
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(name, versions)| {
                let list: Vec<Value> = versions
                    .iter()
                    .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                    .collect();
                json!({"name": name, "versions": list, "preferredVersion": list[0]})
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/apis/<group>`.
    pub fn group(&self, group: &str) -> Option<Value> {
        let all = self.groups();
        all["groups"]
            .as_array()?
            .iter()
            .find(|g| g["name"] == group)
            .map(|g| {
                let mut g = g.clone();
                g["kind"] = json!("APIGroup");
                g["apiVersion"] = json!("v1");
                g
            })
    }

    /// `/api/v1` or `/apis/<group>/<version>`.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let types: Vec<&Arc<ResourceType>> = self
            .types
            .iter()
            .filter(|t| t.group == group && t.version == version)
            .collect();
        if types.is_empty() {
            return None;
        }
        let mut resources = Vec::new();
        for t in &types {
            let mut r = json!({
                "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
                "kind": t.kind, "verbs": t.verbs(),
            });
            if !t.short_names.is_empty() {
                r["shortNames"] = json!(t.short_names);
            }
            if !t.categories.is_empty() {
                r["categories"] = json!(t.categories);
            }
            resources.push(r);
            if t.status {
                resources.push(json!({
                    "name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                    "kind": t.kind, "verbs": ["get", "patch", "update"],
                }));
            }
            if t.group.is_empty() && t.plural == "namespaces" {
                resources.push(json!({
                    "name": "namespaces/finalize", "singularName": "", "namespaced": false,
                    "kind": "Namespace", "verbs": ["update"],
                }));
            }
        }
        let group_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        )
    }
}
