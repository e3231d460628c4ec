//! Tenants by owner subject.

use std::collections::BTreeSet;

use bulkhead_api::{Subject, Tenant};
use kube::ResourceExt;

use crate::index::{Index, Reverse};

/// Which tenants each subject (user, group, service account) owns.
#[derive(Debug, Default)]
pub struct OwnerIndex {
    owners: Reverse<String, Subject>,
}

impl OwnerIndex {
    /// The tenants a subject owns directly.
    pub fn tenants_owned_by(&self, subject: &Subject) -> Option<&BTreeSet<String>> {
        self.owners.get(subject)
    }

    /// The tenants any of these subjects owns.
    pub fn tenants_owned_by_any(&self, subjects: &[Subject]) -> BTreeSet<String> {
        self.owners.any(subjects)
    }
}

impl Index<Tenant> for OwnerIndex {
    fn insert(&mut self, tenant: &Tenant) {
        let subjects = tenant.owner_subjects().collect();
        self.owners.set(tenant.name_any(), subjects);
    }

    fn remove(&mut self, tenant: &Tenant) {
        self.owners.remove(&tenant.name_any());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Indexed;
    use bulkhead_api::{OwnerKind, OwnerSpec, TenantSpec};
    use kube::runtime::watcher::Event;

    fn tenant(name: &str, owners: &[(OwnerKind, &str)]) -> Tenant {
        Tenant::new(
            name,
            TenantSpec {
                owners: owners.iter().map(|(k, n)| OwnerSpec::new(*k, *n)).collect(),
                ..Default::default()
            },
        )
    }

    fn owned(index: &Indexed<OwnerIndex>, subject: Subject) -> Vec<String> {
        index
            .get()
            .tenants_owned_by(&subject)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn owners_of_every_kind_are_indexed() {
        let mut index = Indexed::<OwnerIndex>::default();
        index.apply(&Event::Apply(tenant(
            "solar",
            &[
                (OwnerKind::User, "alice"),
                (OwnerKind::Group, "devs"),
                (OwnerKind::ServiceAccount, "system:serviceaccount:ci:bot"),
            ],
        )));
        index.apply(&Event::Apply(tenant("wind", &[(OwnerKind::Group, "devs")])));
        assert_eq!(owned(&index, Subject::User("alice".into())), ["solar"]);
        assert_eq!(owned(&index, Subject::Group("devs".into())), ["solar", "wind"]);
        assert_eq!(
            owned(
                &index,
                Subject::ServiceAccount("system:serviceaccount:ci:bot".into())
            ),
            ["solar"]
        );
        // A user and a group with the same name are different subjects.
        assert_eq!(
            owned(&index, Subject::Group("alice".into())),
            Vec::<String>::new()
        );
        let any = index
            .get()
            .tenants_owned_by_any(&[Subject::User("alice".into()), Subject::Group("devs".into())]);
        assert_eq!(any.into_iter().collect::<Vec<_>>(), ["solar", "wind"]);
    }

    #[test]
    fn an_update_replaces_the_previous_owners_and_a_delete_removes_them() {
        let mut index = Indexed::<OwnerIndex>::default();
        index.apply(&Event::Apply(tenant(
            "solar",
            &[(OwnerKind::User, "alice"), (OwnerKind::User, "bob")],
        )));
        index.apply(&Event::Apply(tenant(
            "solar",
            &[(OwnerKind::User, "bob"), (OwnerKind::User, "carol")],
        )));
        assert_eq!(owned(&index, Subject::User("alice".into())), Vec::<String>::new());
        assert_eq!(owned(&index, Subject::User("bob".into())), ["solar"]);
        assert_eq!(owned(&index, Subject::User("carol".into())), ["solar"]);
        index.apply(&Event::Delete(tenant("solar", &[])));
        assert_eq!(owned(&index, Subject::User("bob".into())), Vec::<String>::new());
        assert!(index.get().owners.is_empty(), "no empty entries are left behind");
    }

    #[test]
    fn a_relist_answers_from_the_old_state_until_done_then_drops_what_vanished() {
        let mut index = Indexed::<OwnerIndex>::default();
        index.apply(&Event::Apply(tenant("gone", &[(OwnerKind::User, "alice")])));
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(tenant("kept", &[(OwnerKind::User, "alice")])));
        assert_eq!(owned(&index, Subject::User("alice".into())), ["gone"]);
        index.apply(&Event::InitDone);
        assert_eq!(owned(&index, Subject::User("alice".into())), ["kept"]);
    }

    #[test]
    fn owners_the_controller_lists_in_the_status_are_indexed_too() {
        let mut t = tenant("solar", &[(OwnerKind::User, "alice")]);
        t.status = Some(
            serde_json::from_value(serde_json::json!({
                "owners": [{"kind": "Group", "name": "oidc:devops", "clusterRoles": ["admin"]}]
            }))
            .unwrap(),
        );
        let mut index = Indexed::<OwnerIndex>::default();
        index.apply(&Event::Apply(t.clone()));
        assert_eq!(owned(&index, Subject::Group("oidc:devops".into())), ["solar"]);
        assert_eq!(owned(&index, Subject::User("alice".into())), ["solar"]);
        t.status = None;
        index.apply(&Event::Apply(t));
        assert_eq!(
            owned(&index, Subject::Group("oidc:devops".into())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn an_owner_without_a_kind_is_indexed_by_its_inferred_kind() {
        let mut t = tenant("gitops", &[]);
        t.spec.owners =
            vec![serde_json::from_str(r#"{"name":"system:serviceaccount:gitops:flux"}"#).unwrap()];
        let mut index = Indexed::<OwnerIndex>::default();
        index.apply(&Event::Apply(t));
        assert_eq!(
            owned(
                &index,
                Subject::ServiceAccount("system:serviceaccount:gitops:flux".into())
            ),
            ["gitops"]
        );
    }
}

/// The ServiceAccounts TenantOwners name with `aggregate` (tenant users wherever they live), so a
/// webhook request finds out in one lookup, not a scan of every TenantOwner.
#[derive(Debug, Default)]
pub struct AggregatedIndex {
    accounts: Reverse<String, Subject>,
}

impl AggregatedIndex {
    /// Whether an aggregated TenantOwner names this subject.
    pub fn names(&self, subject: &Subject) -> bool {
        self.accounts.get(subject).is_some()
    }
}

impl Index<bulkhead_api::TenantOwner> for AggregatedIndex {
    fn insert(&mut self, owner: &bulkhead_api::TenantOwner) {
        let subjects = match owner.spec.subject() {
            s @ Subject::ServiceAccount(_) if owner.spec.aggregate => vec![s],
            _ => Vec::new(),
        };
        self.accounts.set(owner.name_any(), subjects);
    }

    fn remove(&mut self, owner: &bulkhead_api::TenantOwner) {
        self.accounts.remove(&owner.name_any());
    }
}

#[cfg(test)]
mod aggregated_tests {
    use super::*;
    use crate::index::Indexed;
    use kube::runtime::watcher::Event;

    fn owner(name: &str, spec: &str) -> bulkhead_api::TenantOwner {
        serde_saphyr::from_str(&format!("metadata: {{name: {name}}}\nspec: {spec}")).unwrap()
    }

    #[test]
    fn only_aggregated_service_accounts_are_named() {
        let mut index = Indexed::<AggregatedIndex>::default();
        index.apply(&Event::Apply(owner(
            "ci",
            "{kind: ServiceAccount, name: 'system:serviceaccount:ci:deployer'}",
        )));
        index.apply(&Event::Apply(owner(
            "capsule",
            "{kind: ServiceAccount, name: 'system:serviceaccount:capsule:controller', aggregate: false}",
        )));
        index.apply(&Event::Apply(owner("devs", "{kind: Group, name: devs}")));
        let named =
            |index: &Indexed<AggregatedIndex>, n: &str| index.get().names(&Subject::ServiceAccount(n.into()));
        assert!(named(&index, "system:serviceaccount:ci:deployer"));
        assert!(!named(&index, "system:serviceaccount:capsule:controller"));
        index.apply(&Event::Apply(owner(
            "ci",
            "{kind: ServiceAccount, name: 'system:serviceaccount:ci:deployer', aggregate: false}",
        )));
        assert!(!named(&index, "system:serviceaccount:ci:deployer"), "turned off");
    }
}
