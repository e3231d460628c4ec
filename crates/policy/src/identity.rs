//! Who a request comes from, decided once per request.

use bulkhead_api::config::{BulkheadConfigurationSpec, SubjectRef};
use bulkhead_api::owner::{OwnerKind, Subject};

/// The authenticated identity behind a request, as the API server reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The user name (`system:serviceaccount:<ns>:<name>` for a service account).
    pub user: String,
    /// The groups the user is in.
    pub groups: Vec<String>,
}

impl Caller {
    /// A caller with a user name and groups.
    pub fn new(user: impl Into<String>, groups: impl IntoIterator<Item = impl Into<String>>) -> Caller {
        Caller {
            user: user.into(),
            groups: groups.into_iter().map(Into::into).collect(),
        }
    }

    /// Every subject a tenant owner entry could name to match this caller: the user (or service
    /// account) and each group.
    pub fn subjects(&self) -> Vec<Subject> {
        let mut subjects = Vec::with_capacity(1 + self.groups.len());
        subjects.push(Subject::from_user_name(&self.user));
        subjects.extend(self.groups.iter().map(|g| Subject::Group(g.clone())));
        subjects
    }

    /// For a service account, its namespace.
    pub fn service_account_namespace(&self) -> Option<&str> {
        self.user
            .strip_prefix(bulkhead_api::owner::SERVICE_ACCOUNT_PREFIX)?
            .split_once(':')
            .map(|(ns, _)| ns)
    }

    fn is(&self, subject: &SubjectRef) -> bool {
        match subject.kind {
            OwnerKind::User | OwnerKind::ServiceAccount => self.user == subject.name,
            OwnerKind::Group => self.groups.contains(&subject.name),
        }
    }
}

/// How Bulkhead treats a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerClass {
    /// Bulkhead itself or a configured administrator: no tenant rule applies, and it may manage what
    /// Bulkhead creates.
    Administrator,
    /// A member of `ignoreUserWithGroups`: treated as if Bulkhead did not exist.
    Ignored,
    /// A member of `userGroups`, or a service account living in a tenant namespace: every tenant rule applies.
    TenantUser,
    /// Anyone else: most checks skip them; the API server's RBAC still applies.
    Unmanaged,
}

/// Classifies a caller. `own_identity` is Bulkhead's own user name; `in_tenant_namespace` says whether
/// the caller is a service account whose namespace belongs to a tenant (the cache knows).
///
/// Order matters: Bulkhead and administrators first (so an administrator who is also in a user group is
/// still an administrator), then ignored groups, then tenant users.
pub fn classify(
    config: &BulkheadConfigurationSpec,
    own_identity: &str,
    caller: &Caller,
    in_tenant_namespace: bool,
) -> CallerClass {
    if caller.user == own_identity || config.administrators.iter().any(|a| caller.is(a)) {
        return CallerClass::Administrator;
    }
    if caller
        .groups
        .iter()
        .any(|g| config.ignore_user_with_groups.contains(g))
    {
        return CallerClass::Ignored;
    }
    if caller.groups.iter().any(|g| config.user_groups.contains(g)) || in_tenant_namespace {
        return CallerClass::TenantUser;
    }
    CallerClass::Unmanaged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BulkheadConfigurationSpec {
        BulkheadConfigurationSpec {
            user_groups: vec!["tenants".into()],
            ignore_user_with_groups: vec!["break-glass".into()],
            administrators: vec![
                SubjectRef {
                    kind: OwnerKind::User,
                    name: "root".into(),
                },
                SubjectRef {
                    kind: OwnerKind::Group,
                    name: "platform".into(),
                },
                SubjectRef {
                    kind: OwnerKind::ServiceAccount,
                    name: "system:serviceaccount:ci:deployer".into(),
                },
            ],
            ..Default::default()
        }
    }

    const ME: &str = "system:serviceaccount:bulkhead-system:bulkhead";

    #[test]
    fn administrators_win_over_every_other_membership() {
        let c = config();
        assert_eq!(
            classify(&c, ME, &Caller::new(ME, ["tenants"]), true),
            CallerClass::Administrator
        );
        assert_eq!(
            classify(&c, ME, &Caller::new("root", ["tenants"]), false),
            CallerClass::Administrator
        );
        assert_eq!(
            classify(&c, ME, &Caller::new("bob", ["tenants", "platform"]), false),
            CallerClass::Administrator
        );
        assert_eq!(
            classify(
                &c,
                ME,
                &Caller::new("system:serviceaccount:ci:deployer", Vec::<String>::new()),
                false
            ),
            CallerClass::Administrator
        );
    }

    #[test]
    fn ignored_groups_beat_user_groups() {
        let c = config();
        assert_eq!(
            classify(&c, ME, &Caller::new("alice", ["tenants", "break-glass"]), false),
            CallerClass::Ignored
        );
    }

    #[test]
    fn tenant_users_are_user_group_members_or_service_accounts_of_tenant_namespaces() {
        let c = config();
        assert_eq!(
            classify(&c, ME, &Caller::new("alice", ["tenants"]), false),
            CallerClass::TenantUser
        );
        let sa = Caller::new(
            "system:serviceaccount:solar-dev:builder",
            ["system:serviceaccounts"],
        );
        assert_eq!(sa.service_account_namespace(), Some("solar-dev"));
        assert_eq!(classify(&c, ME, &sa, true), CallerClass::TenantUser);
        assert_eq!(classify(&c, ME, &sa, false), CallerClass::Unmanaged);
        assert_eq!(
            classify(&c, ME, &Caller::new("carol", ["devs"]), false),
            CallerClass::Unmanaged
        );
        // A user named like an administrator group is not an administrator.
        assert_eq!(
            classify(&c, ME, &Caller::new("platform", ["tenants"]), false),
            CallerClass::TenantUser
        );
    }

    #[test]
    fn a_caller_matches_owner_entries_by_user_service_account_and_group() {
        let sa = Caller::new("system:serviceaccount:ns:robot", ["g1"]);
        assert_eq!(
            sa.subjects(),
            [
                Subject::ServiceAccount("system:serviceaccount:ns:robot".into()),
                Subject::Group("g1".into())
            ]
        );
        assert_eq!(
            Caller::new("alice", Vec::<String>::new()).subjects(),
            [Subject::User("alice".into())]
        );
    }
}
