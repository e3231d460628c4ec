//! ProxySettings by the subjects they name, so the proxy finds a caller's in one lookup however many
//! tenants lend their view.

use std::collections::BTreeSet;

use bulkhead_api::{ProxySetting, Subject};
use kube::ResourceExt;

use crate::index::{Index, Reverse};

/// (namespace, name) of each ProxySetting naming a subject.
#[derive(Debug, Default)]
pub struct SubjectIndex {
    named: Reverse<(String, String), Subject>,
}

impl SubjectIndex {
    /// The ProxySettings (namespace, name) naming any of these subjects.
    pub fn naming_any(&self, subjects: &[Subject]) -> BTreeSet<(String, String)> {
        self.named.any(subjects)
    }
}

fn key(setting: &ProxySetting) -> (String, String) {
    (setting.namespace().unwrap_or_default(), setting.name_any())
}

impl Index<ProxySetting> for SubjectIndex {
    fn insert(&mut self, setting: &ProxySetting) {
        let subjects = setting.spec.subjects.iter().map(|s| s.subject()).collect();
        self.named.set(key(setting), subjects);
    }

    fn remove(&mut self, setting: &ProxySetting) {
        self.named.remove(&key(setting));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Indexed;
    use kube::runtime::watcher::Event;

    fn setting(namespace: &str, name: &str, subjects: &str) -> ProxySetting {
        serde_saphyr::from_str(&format!(
            "metadata: {{name: {name}, namespace: {namespace}}}\nspec: {{subjects: {subjects}}}"
        ))
        .unwrap()
    }

    #[test]
    fn settings_are_found_by_every_subject_they_name_and_forgotten_when_changed() {
        let mut index = Indexed::<SubjectIndex>::default();
        index.apply(&Event::Apply(setting(
            "solar-prod",
            "share",
            "[{kind: User, name: dave}, {kind: Group, name: auditors}, {kind: User, name: 'system:serviceaccount:ci:bot'}]",
        )));
        index.apply(&Event::Apply(setting(
            "wind-prod",
            "share",
            "[{kind: Group, name: auditors}]",
        )));
        let find = |index: &Indexed<SubjectIndex>, s: Subject| index.get().naming_any(&[s]);
        let solar = ("solar-prod".to_owned(), "share".to_owned());
        let wind = ("wind-prod".to_owned(), "share".to_owned());
        assert_eq!(
            find(&index, Subject::User("dave".into())),
            BTreeSet::from([solar.clone()])
        );
        assert_eq!(
            find(&index, Subject::Group("auditors".into())),
            BTreeSet::from([solar.clone(), wind.clone()])
        );
        assert_eq!(
            find(
                &index,
                Subject::ServiceAccount("system:serviceaccount:ci:bot".into())
            ),
            BTreeSet::from([solar.clone()]),
            "a user name of a service account is that service account"
        );
        index.apply(&Event::Apply(setting(
            "solar-prod",
            "share",
            "[{kind: User, name: erin}]",
        )));
        assert!(find(&index, Subject::User("dave".into())).is_empty());
        assert_eq!(
            find(&index, Subject::User("erin".into())),
            BTreeSet::from([solar.clone()])
        );
        index.apply(&Event::Delete(setting("wind-prod", "share", "[]")));
        assert!(find(&index, Subject::Group("auditors".into())).is_empty());
    }
}
