//! The RoleBinding reflector: every RoleBinding of the cluster by the subjects it names, kept as this
//! index alone (never the objects), so the proxy lists a caller the namespaces where a RoleBinding
//! names it (Capsule proxy's `--enable-reflector`).

use std::collections::BTreeSet;

use bulkhead_api::Subject;
use bulkhead_api::owner::SERVICE_ACCOUNT_PREFIX;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;

use crate::index::{Index, Reverse};

/// The label that makes a RoleBinding reflect its role's LIST permissions to lists across namespaces
/// (capsule-proxy's reflection of namespaced items).
pub const REFLECTION_LABEL: &str = "reflection.proxy.projectcapsule.dev/enabled";

/// (namespace, name) of each RoleBinding naming a subject, and of those labelled for reflection.
#[derive(Debug, Default)]
pub struct BindingSubjects {
    named: Reverse<(String, String), Subject>,
    reflecting: Reverse<(String, String), Subject>,
}

impl BindingSubjects {
    /// The namespaces where a RoleBinding names any of these subjects.
    pub fn namespaces_naming_any(&self, subjects: &[Subject]) -> BTreeSet<String> {
        self.named
            .any(subjects)
            .into_iter()
            .map(|(namespace, _)| namespace)
            .collect()
    }

    /// The namespaces where a RoleBinding labelled for reflection (`REFLECTION_LABEL: "true"`) names
    /// any of these subjects.
    pub fn reflecting_namespaces_naming_any(&self, subjects: &[Subject]) -> BTreeSet<String> {
        self.reflecting
            .any(subjects)
            .into_iter()
            .map(|(namespace, _)| namespace)
            .collect()
    }
}

/// The subjects a RoleBinding names, as callers are named (a ServiceAccount without a namespace is of
/// the binding's).
pub fn subjects_of(binding: &RoleBinding) -> Vec<Subject> {
    let namespace = binding.namespace().unwrap_or_default();
    binding
        .subjects
        .iter()
        .flatten()
        .filter_map(|s| match s.kind.as_str() {
            "User" => Some(Subject::from_user_name(&s.name)),
            "Group" => Some(Subject::Group(s.name.clone())),
            "ServiceAccount" => {
                let ns = s
                    .namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(&namespace);
                Some(Subject::ServiceAccount(format!(
                    "{SERVICE_ACCOUNT_PREFIX}{ns}:{}",
                    s.name
                )))
            }
            _ => None,
        })
        .collect()
}

impl Index<RoleBinding> for BindingSubjects {
    fn insert(&mut self, binding: &RoleBinding) {
        let key = (binding.namespace().unwrap_or_default(), binding.name_any());
        let subjects = subjects_of(binding);
        if binding
            .labels()
            .get(REFLECTION_LABEL)
            .is_some_and(|v| v == "true")
        {
            self.reflecting.set(key.clone(), subjects.clone());
        } else {
            self.reflecting.remove(&key);
        }
        self.named.set(key, subjects);
    }

    fn remove(&mut self, binding: &RoleBinding) {
        let key = (binding.namespace().unwrap_or_default(), binding.name_any());
        self.reflecting.remove(&key);
        self.named.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Indexed;
    use kube::runtime::watcher::Event;

    fn binding(namespace: &str, name: &str, subjects: &str) -> RoleBinding {
        serde_saphyr::from_str(&format!(
            "metadata: {{name: {name}, namespace: {namespace}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}}\nsubjects: {subjects}"
        ))
        .unwrap()
    }

    #[test]
    fn a_caller_finds_the_namespaces_where_a_binding_names_it_by_user_group_or_account() {
        let mut index = Indexed::<BindingSubjects>::default();
        index.apply(&Event::Apply(binding(
            "green-test",
            "alice",
            "[{kind: User, name: alice}]",
        )));
        index.apply(&Event::Apply(binding(
            "green-prod",
            "ops",
            "[{kind: Group, name: ops}]",
        )));
        index.apply(&Event::Apply(binding(
            "ci",
            "bot",
            "[{kind: ServiceAccount, name: bot}]",
        )));
        let found = |index: &Indexed<BindingSubjects>, subjects: &[Subject]| {
            index.get().namespaces_naming_any(subjects)
        };
        assert_eq!(
            found(
                &index,
                &[Subject::User("alice".into()), Subject::Group("ops".into())]
            ),
            BTreeSet::from(["green-prod".to_owned(), "green-test".to_owned()])
        );
        assert_eq!(
            found(
                &index,
                &[Subject::ServiceAccount("system:serviceaccount:ci:bot".into())]
            ),
            BTreeSet::from(["ci".to_owned()])
        );
        // Only labelled bindings reflect lists; a label taken off stops it.
        let alice = [Subject::User("alice".into())];
        assert!(index.get().reflecting_namespaces_naming_any(&alice).is_empty());
        let mut labelled = binding("green-test", "alice", "[{kind: User, name: alice}]");
        labelled.metadata.labels = Some([(REFLECTION_LABEL.to_owned(), "true".to_owned())].into());
        index.apply(&Event::Apply(labelled));
        assert_eq!(
            index.get().reflecting_namespaces_naming_any(&alice),
            BTreeSet::from(["green-test".to_owned()])
        );
        index.apply(&Event::Apply(binding(
            "green-test",
            "alice",
            "[{kind: User, name: alice}]",
        )));
        assert!(index.get().reflecting_namespaces_naming_any(&alice).is_empty());
        index.apply(&Event::Delete(binding("green-test", "alice", "[]")));
        assert!(found(&index, &[Subject::User("alice".into())]).is_empty());
    }
}
