//! Tenant owners, the subjects they name, and their proxy settings.

use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::labels;

/// The prefix of a service account's user name.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// User, Group or ServiceAccount. In a Tenant's owner entry it may be omitted: a name starting with
/// `system:serviceaccount:` is then a ServiceAccount, any other name a User.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub enum OwnerKind {
    /// A user name, as the API server authenticates it.
    User,
    /// A group name; every member owns the tenant.
    Group,
    /// A service account, named `system:serviceaccount:<namespace>:<name>`.
    ServiceAccount,
}

impl fmt::Display for OwnerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OwnerKind::User => "User",
            OwnerKind::Group => "Group",
            OwnerKind::ServiceAccount => "ServiceAccount",
        })
    }
}

/// A subject as the API server sees it: the key of the "tenants by owner" index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A user, by user name.
    User(String),
    /// A group, by name.
    Group(String),
    /// A service account, by its full user name `system:serviceaccount:<namespace>:<name>`.
    ServiceAccount(String),
}

impl Subject {
    /// The subject a user name stands for: a service account for `system:serviceaccount:...`, else a user.
    pub fn from_user_name(name: &str) -> Subject {
        if name.starts_with(SERVICE_ACCOUNT_PREFIX) {
            Subject::ServiceAccount(name.to_owned())
        } else {
            Subject::User(name.to_owned())
        }
    }

    /// The subject of this kind and name.
    pub fn new(kind: OwnerKind, name: impl Into<String>) -> Subject {
        let name = name.into();
        match kind {
            OwnerKind::User => Subject::User(name),
            OwnerKind::Group => Subject::Group(name),
            OwnerKind::ServiceAccount => Subject::ServiceAccount(name),
        }
    }

    /// The subject a `kind` and `name` entry of a proxy setting names, as callers are named (a user
    /// name of the form `system:serviceaccount:...` is that service account).
    pub fn named(kind: OwnerKind, name: &str) -> Subject {
        match kind {
            OwnerKind::User => Subject::from_user_name(name),
            OwnerKind::Group => Subject::Group(name.to_owned()),
            OwnerKind::ServiceAccount => Subject::ServiceAccount(name.to_owned()),
        }
    }

    /// The kind of this subject.
    pub fn kind(&self) -> OwnerKind {
        match self {
            Subject::User(_) => OwnerKind::User,
            Subject::Group(_) => OwnerKind::Group,
            Subject::ServiceAccount(_) => OwnerKind::ServiceAccount,
        }
    }

    /// The subject's name (for a service account, its full user name).
    pub fn name(&self) -> &str {
        match self {
            Subject::User(n) | Subject::Group(n) | Subject::ServiceAccount(n) => n,
        }
    }

    /// For a service account, its namespace and name.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        match self {
            Subject::ServiceAccount(n) => n.strip_prefix(SERVICE_ACCOUNT_PREFIX)?.split_once(':'),
            _ => None,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.name())
    }
}

/// One owner of a tenant: who, which cluster roles they get in every tenant namespace, and what the
/// proxy lets them see and change among cluster-scoped objects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerSpec {
    /// Kind of owner: User, Group or ServiceAccount. When omitted it is inferred from the name: a name
    /// starting with `system:serviceaccount:` is a ServiceAccount, anything else a User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<OwnerKind>,
    /// Name of the owner. For a ServiceAccount: `system:serviceaccount:<namespace>:<name>`.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Cluster roles bound to this owner in every tenant namespace (one RoleBinding each).
    /// Capsule's `capsule-namespace-deleter` is understood as `bulkhead-namespace-deleter`.
    #[serde(default = "default_cluster_roles")]
    pub cluster_roles: Vec<String>,
    /// What the proxy shows and lets this owner do among cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_settings: Vec<ProxySettings>,
    /// Labels put on the RoleBindings made for this owner.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations put on the RoleBindings made for this owner.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The cluster roles an owner gets when the Tenant names none.
pub fn default_cluster_roles() -> Vec<String> {
    vec!["admin".to_owned(), labels::NAMESPACE_DELETER_ROLE.to_owned()]
}

impl OwnerSpec {
    /// An owner of the given kind and name with the default cluster roles.
    pub fn new(kind: OwnerKind, name: impl Into<String>) -> OwnerSpec {
        OwnerSpec {
            kind: Some(kind),
            name: name.into(),
            cluster_roles: default_cluster_roles(),
            proxy_settings: Vec::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// The owner's kind, inferred from the name when the manifest omits it.
    pub fn effective_kind(&self) -> OwnerKind {
        match self.kind {
            Some(kind) => kind,
            None if self.name.starts_with(SERVICE_ACCOUNT_PREFIX) => OwnerKind::ServiceAccount,
            None => OwnerKind::User,
        }
    }

    /// The cluster roles to bind for this owner, with Capsule's role names translated to Bulkhead's
    /// (a migrated Tenant naming `capsule-namespace-deleter` gets `bulkhead-namespace-deleter`).
    pub fn bound_cluster_roles(&self) -> impl Iterator<Item = &str> {
        self.cluster_roles.iter().map(|role| match role.as_str() {
            labels::CAPSULE_NAMESPACE_DELETER_ROLE => labels::NAMESPACE_DELETER_ROLE,
            other => other,
        })
    }

    /// The subject this owner entry names.
    pub fn subject(&self) -> Subject {
        Subject::new(self.effective_kind(), self.name.clone())
    }
}

/// What the proxy lets an owner do with one kind of cluster-scoped object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ProxySettings {
    /// The kind of cluster-scoped object.
    pub kind: ProxyKind,
    /// The operations allowed on the objects of that kind the tenant may use.
    pub operations: Vec<ProxyOperation>,
}

/// An operation the proxy may allow on filtered cluster-scoped objects.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub enum ProxyOperation {
    /// List, get and watch.
    List,
    /// Update and patch.
    Update,
    /// Delete.
    Delete,
}

/// A cluster-scoped kind the proxy filters per tenant. The singular spellings (`Node`, `StorageClass`,
/// ...) found in some Capsule documents are accepted and mean the same as the plural ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProxyKind {
    /// Nodes matching the tenant's node selector.
    Nodes,
    /// StorageClasses the tenant may use.
    StorageClasses,
    /// IngressClasses the tenant may use.
    IngressClasses,
    /// PriorityClasses the tenant may use.
    PriorityClasses,
    /// RuntimeClasses the tenant may use.
    RuntimeClasses,
    /// PersistentVolumes labelled for the tenant.
    PersistentVolumes,
}

impl ProxyKind {
    /// Every kind, in schema order.
    pub const ALL: [ProxyKind; 6] = [
        ProxyKind::Nodes,
        ProxyKind::StorageClasses,
        ProxyKind::IngressClasses,
        ProxyKind::PriorityClasses,
        ProxyKind::RuntimeClasses,
        ProxyKind::PersistentVolumes,
    ];

    /// The canonical (plural) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Nodes => "Nodes",
            ProxyKind::StorageClasses => "StorageClasses",
            ProxyKind::IngressClasses => "IngressClasses",
            ProxyKind::PriorityClasses => "PriorityClasses",
            ProxyKind::RuntimeClasses => "RuntimeClasses",
            ProxyKind::PersistentVolumes => "PersistentVolumes",
        }
    }

    /// The singular spelling accepted as an alias.
    fn singular(self) -> &'static str {
        let plural = self.as_str();
        &plural[..plural.len() - if plural.ends_with("sses") { 2 } else { 1 }]
    }

    /// Parses either spelling.
    pub fn parse(s: &str) -> Option<ProxyKind> {
        ProxyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s || k.singular() == s)
    }
}

impl Serialize for ProxyKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ProxyKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ProxyKind::parse(&s).ok_or_else(|| {
            let expected: Vec<&str> = ProxyKind::ALL.iter().map(|k| k.as_str()).collect();
            serde::de::Error::custom(format!(
                "unknown proxy kind `{s}`, expected one of {}",
                expected.join(", ")
            ))
        })
    }
}

impl JsonSchema for ProxyKind {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ProxyKind".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let values: Vec<&str> = ProxyKind::ALL
            .iter()
            .flat_map(|k| [k.as_str(), k.singular()])
            .collect();
        json_schema!({
            "type": "string",
            "enum": values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_kind_accepts_both_spellings_and_writes_the_plural() {
        for (input, kind) in [
            ("Node", ProxyKind::Nodes),
            ("Nodes", ProxyKind::Nodes),
            ("StorageClass", ProxyKind::StorageClasses),
            ("IngressClasses", ProxyKind::IngressClasses),
            ("PriorityClass", ProxyKind::PriorityClasses),
            ("RuntimeClass", ProxyKind::RuntimeClasses),
            ("PersistentVolume", ProxyKind::PersistentVolumes),
        ] {
            assert_eq!(ProxyKind::parse(input), Some(kind), "{input}");
        }
        assert_eq!(ProxyKind::parse("Pods"), None);
        assert_eq!(serde_json::to_string(&ProxyKind::Nodes).unwrap(), "\"Nodes\"");
        let err = serde_json::from_str::<ProxyKind>("\"Pods\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown proxy kind `Pods`"), "{err}");
    }

    #[test]
    fn owner_kind_is_inferred_from_the_name_when_omitted() {
        let sa: OwnerSpec = serde_json::from_str(r#"{"name":"system:serviceaccount:team:robot"}"#).unwrap();
        assert_eq!(
            sa.subject(),
            Subject::ServiceAccount("system:serviceaccount:team:robot".into())
        );
        assert_eq!(sa.subject().service_account(), Some(("team", "robot")));
        assert_eq!(sa.cluster_roles, default_cluster_roles());
        let user: OwnerSpec = serde_json::from_str(r#"{"name":"alice"}"#).unwrap();
        assert_eq!(user.subject(), Subject::User("alice".into()));
        let group: OwnerSpec = serde_json::from_str(r#"{"name":"devs","kind":"Group"}"#).unwrap();
        assert_eq!(group.subject(), Subject::Group("devs".into()));
    }

    #[test]
    fn capsule_role_names_are_bound_as_bulkhead_ones() {
        let owner: OwnerSpec = serde_json::from_str(
            r#"{"name":"bob","kind":"User","clusterRoles":["admin","capsule-namespace-deleter"]}"#,
        )
        .unwrap();
        assert_eq!(
            owner.bound_cluster_roles().collect::<Vec<_>>(),
            ["admin", "bulkhead-namespace-deleter"]
        );
    }
}
