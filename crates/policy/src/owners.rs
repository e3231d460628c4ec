//! Who owns a tenant: its `spec.owners`, the TenantOwners it selects, and the ServiceAccounts its
//! owners promoted. The controller works this out and writes it to `status.owners`; the webhook, the
//! proxy and the cache's owner index read it there.

use std::collections::BTreeMap;

use bulkhead_api::config::BulkheadConfigurationSpec;
use bulkhead_api::owner::{OwnerKind, OwnerSpec, SERVICE_ACCOUNT_PREFIX, Subject};
use bulkhead_api::tenant::{AdditionalRoleBinding, OwnerStatus};
use bulkhead_api::{Tenant, TenantOwner, labels};
use k8s_openapi::api::rbac::v1::Subject as RbacSubject;

use crate::selector;

/// Whether a TenantOwner is an owner of `tenant`: one of `permissions.matchOwners` selects its labels,
/// or its `projectcapsule.dev/tenant` label names the tenant.
pub fn selects(tenant: &Tenant, owner: &TenantOwner) -> bool {
    let no_labels = BTreeMap::new();
    let labels = owner.metadata.labels.as_ref().unwrap_or(&no_labels);
    let name = tenant.metadata.name.as_deref().unwrap_or_default();
    if labels.get(labels::TENANT_OWNER_OF).is_some_and(|t| t == name) {
        return true;
    }
    tenant
        .spec
        .permissions
        .iter()
        .flat_map(|p| &p.match_owners)
        .any(|s| selector::matches(s, labels))
}

/// Whether the tenant lets its owners promote ServiceAccounts (the configuration must allow it too).
pub fn promotion_allowed(tenant: &Tenant, config: &BulkheadConfigurationSpec) -> bool {
    config.allow_service_account_promotion
        && tenant
            .spec
            .permissions
            .as_ref()
            .and_then(|p| p.promotions.as_ref())
            .is_none_or(|p| p.allow_owner_promotion)
}

/// The user name of the ServiceAccount `name` in `namespace`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}")
}

/// Every owner of `tenant`, one entry per subject, in `spec.owners`' order and then by kind and name:
/// `spec.owners` as written; then each TenantOwner the tenant selects among `tenant_owners`; then, when
/// promotion is allowed, each of `promoted` (ServiceAccounts of the tenant's namespaces labelled for
/// promotion, as `(namespace, name)`) with the configuration's `promotionClusterRoles`. A subject named
/// more than once gets the cluster roles of every entry, each once; the first entry's labels,
/// annotations and proxy settings stay.
pub fn effective<'a>(
    tenant: &Tenant,
    tenant_owners: impl IntoIterator<Item = &'a TenantOwner>,
    promoted: &[(String, String)],
    config: &BulkheadConfigurationSpec,
) -> Vec<OwnerSpec> {
    let mut out: Vec<OwnerSpec> = Vec::new();
    let mut upsert = |owner: OwnerSpec| {
        let subject = owner.subject();
        match out.iter_mut().find(|o| o.subject() == subject) {
            Some(existing) => {
                for role in owner.cluster_roles {
                    if !existing.cluster_roles.contains(&role) {
                        existing.cluster_roles.push(role);
                    }
                }
            }
            None => out.push(owner),
        }
    };
    for owner in &tenant.spec.owners {
        upsert(owner.clone());
    }
    let mut chosen: Vec<OwnerSpec> = tenant_owners
        .into_iter()
        .filter(|o| selects(tenant, o))
        .map(|o| o.spec.as_owner())
        .collect();
    if promotion_allowed(tenant, config) {
        for (namespace, name) in promoted {
            let mut owner = OwnerSpec::new(OwnerKind::ServiceAccount, service_account_user(namespace, name));
            owner.cluster_roles = config.promotion_cluster_roles.clone();
            chosen.push(owner);
        }
    }
    chosen.sort_by_key(|o| o.subject());
    for owner in chosen {
        upsert(owner);
    }
    out
}

/// The tenant as provisioned with its rule promotions made into rule bindings: for each
/// `rules[].permissions.promotions` entry, each of `promoted` (the tenant's ServiceAccounts labelled
/// `projectcapsule.dev/promote: "true"`, as `(namespace, name, labels)`) its selector matches is bound
/// to each of its cluster roles in the rule's namespaces. Nothing when the configuration does not
/// allow promotion.
pub fn with_rule_promotions(
    tenant: &Tenant,
    promoted: &[(String, String, BTreeMap<String, String>)],
    config: &BulkheadConfigurationSpec,
) -> Tenant {
    let mut out = tenant.clone();
    if !config.allow_service_account_promotion || promoted.is_empty() {
        return out;
    }
    for rule in &mut out.spec.rules {
        let Some(permissions) = rule.permissions.as_mut() else {
            continue;
        };
        let mut bindings = Vec::new();
        for promotion in &permissions.promotions {
            let subjects: Vec<RbacSubject> = promoted
                .iter()
                .filter(|(_, _, labels)| {
                    promotion
                        .selector
                        .as_ref()
                        .is_none_or(|s| selector::matches(s, labels))
                })
                .map(|(namespace, name, _)| RbacSubject {
                    kind: "ServiceAccount".into(),
                    api_group: Some(String::new()),
                    name: name.clone(),
                    namespace: Some(namespace.clone()),
                })
                .collect();
            if subjects.is_empty() {
                continue;
            }
            for role in &promotion.cluster_roles {
                bindings.push(AdditionalRoleBinding {
                    cluster_role_name: role.clone(),
                    subjects: subjects.clone(),
                    ..Default::default()
                });
            }
        }
        permissions.bindings.extend(bindings);
    }
    out
}

/// The owners as `status.owners` lists them: those that are valid subjects (the Tenant's status
/// reports the others, and its CRD would refuse them).
pub fn status(owners: &[OwnerSpec]) -> Vec<OwnerStatus> {
    owners
        .iter()
        .filter(|o| crate::desired::owner_subject(o).is_ok())
        .map(|o| OwnerStatus {
            kind: o.effective_kind(),
            name: o.name.clone(),
            cluster_roles: o.cluster_roles.clone(),
        })
        .collect()
}

/// The service accounts among `owners` that are tenant users wherever they live: promoted ones, and
/// those of TenantOwners with `aggregate` (the namespace provisioner role is bound to them).
pub fn aggregated_service_accounts<'a>(
    tenant_owners: impl IntoIterator<Item = &'a TenantOwner>,
) -> Vec<Subject> {
    let mut out: Vec<Subject> = tenant_owners
        .into_iter()
        .filter(|o| o.spec.aggregate && o.spec.kind == OwnerKind::ServiceAccount)
        .map(|o| o.spec.subject())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tenant(spec: serde_json::Value) -> Tenant {
        let mut t = Tenant::new("solar", serde_json::from_value(spec).unwrap());
        t.metadata.uid = Some("uid".into());
        t
    }

    fn tenant_owner(name: &str, labels: serde_json::Value, spec: serde_json::Value) -> TenantOwner {
        serde_json::from_value(json!({
            "apiVersion": "bulkhead.dev/v1alpha1",
            "kind": "TenantOwner",
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
        }))
        .unwrap()
    }

    fn names(owners: &[OwnerSpec]) -> Vec<(String, Vec<String>)> {
        owners
            .iter()
            .map(|o| (o.subject().to_string(), o.cluster_roles.clone()))
            .collect()
    }

    #[test]
    fn selected_tenant_owners_join_the_spec_owners_and_merge_roles_by_subject() {
        // Capsule's documentation: alice from spec.owners, the devops group by label, and the
        // controller's ServiceAccount named in both places with the roles of both.
        let t = tenant(json!({
            "owners": [
                {"name": "alice", "kind": "User"},
                {"name": "system:serviceaccount:capsule:controller", "kind": "ServiceAccount"},
            ],
            "permissions": {"matchOwners": [{"matchLabels": {"team": "devops"}}, {"matchLabels": {"customer": "x"}}]},
        }));
        let owners = [
            tenant_owner(
                "devops",
                json!({"team": "devops"}),
                json!({"kind": "Group", "name": "oidc:org:devops:a"}),
            ),
            tenant_owner(
                "controller",
                json!({"customer": "x"}),
                json!({"kind": "ServiceAccount", "name": "system:serviceaccount:capsule:controller", "clusterRoles": ["mega-admin", "controller"]}),
            ),
            tenant_owner(
                "other",
                json!({"team": "ops"}),
                json!({"kind": "User", "name": "mallory"}),
            ),
            tenant_owner(
                "by-label",
                json!({"projectcapsule.dev/tenant": "solar"}),
                json!({"kind": "User", "name": "joe", "clusterRoles": ["view"]}),
            ),
            tenant_owner(
                "elsewhere",
                json!({"projectcapsule.dev/tenant": "wind"}),
                json!({"kind": "User", "name": "eve"}),
            ),
        ];
        let effective = effective(&t, &owners, &[], &BulkheadConfigurationSpec::default());
        assert_eq!(
            names(&effective),
            [
                (
                    "User alice".to_owned(),
                    vec!["admin".to_owned(), "bulkhead-namespace-deleter".to_owned()]
                ),
                (
                    "ServiceAccount system:serviceaccount:capsule:controller".to_owned(),
                    vec![
                        "admin".to_owned(),
                        "bulkhead-namespace-deleter".to_owned(),
                        "mega-admin".to_owned(),
                        "controller".to_owned()
                    ]
                ),
                ("User joe".to_owned(), vec!["view".to_owned()]),
                (
                    "Group oidc:org:devops:a".to_owned(),
                    vec!["admin".to_owned(), "bulkhead-namespace-deleter".to_owned()]
                ),
            ]
        );
        let status = status(&effective);
        assert_eq!(status[2].kind, OwnerKind::User);
        assert_eq!(status[2].name, "joe");
        // An owner that is no valid subject (admitted while the webhook was down) is not listed.
        let bad =
            tenant(json!({"owners": [{"name": "system:serviceaccount:nope", "kind": "ServiceAccount"}]}));
        assert!(super::status(&bad.spec.owners).is_empty());
    }

    #[test]
    fn an_empty_selector_chooses_every_tenant_owner_and_no_permissions_choose_none_but_the_labelled() {
        let all = tenant(json!({"permissions": {"matchOwners": [{}]}}));
        let none = tenant(json!({}));
        let o = tenant_owner("x", json!({}), json!({"kind": "User", "name": "x"}));
        assert!(selects(&all, &o));
        assert!(!selects(&none, &o));
    }

    #[test]
    fn promoted_service_accounts_count_only_where_the_configuration_and_the_tenant_allow() {
        let promoted = [("solar-dev".to_owned(), "robot".to_owned())];
        let t = tenant(json!({"owners": [{"name": "alice", "kind": "User"}]}));
        let off = BulkheadConfigurationSpec::default();
        assert_eq!(effective(&t, [], &promoted, &off).len(), 1);
        let on = BulkheadConfigurationSpec {
            allow_service_account_promotion: true,
            ..Default::default()
        };
        let owners = effective(&t, [], &promoted, &on);
        assert_eq!(
            names(&owners)[1],
            (
                "ServiceAccount system:serviceaccount:solar-dev:robot".to_owned(),
                vec!["bulkhead-namespace-deleter".to_owned()]
            )
        );
        let refused = tenant(json!({"permissions": {"promotions": {"allowOwnerPromotion": false}}}));
        assert!(effective(&refused, [], &promoted, &on).is_empty());
    }

    #[test]
    fn rule_promotions_bind_the_promoted_accounts_their_selectors_match() {
        // Capsule's documentation (203-tenant-solar.yaml).
        let t = tenant(json!({"rules": [
            {"permissions": {"promotions": [
                {"clusterRoles": ["configmap-replicator"]},
                {"clusterRoles": ["secret-replicator"], "selector": {"matchLabels": {"super": "account"}}}
            ]}},
            {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
             "permissions": {"promotions": [{"clusterRoles": ["secret-replicator:prod"]}]}}
        ]}));
        let promoted = [
            ("solar-test".to_owned(), "gitops".to_owned(), BTreeMap::new()),
            (
                "solar-test".to_owned(),
                "super".to_owned(),
                BTreeMap::from([("super".to_owned(), "account".to_owned())]),
            ),
        ];
        let off = BulkheadConfigurationSpec::default();
        assert_eq!(with_rule_promotions(&t, &promoted, &off).spec, t.spec);
        let on = BulkheadConfigurationSpec {
            allow_service_account_promotion: true,
            ..Default::default()
        };
        let out = with_rule_promotions(&t, &promoted, &on);
        let bound = |rule: usize| -> Vec<(String, Vec<String>)> {
            out.spec.rules[rule]
                .permissions
                .as_ref()
                .unwrap()
                .bindings
                .iter()
                .map(|b| {
                    (
                        b.cluster_role_name.clone(),
                        b.subjects.iter().map(|s| s.name.clone()).collect(),
                    )
                })
                .collect()
        };
        assert_eq!(
            bound(0),
            [
                (
                    "configmap-replicator".to_owned(),
                    vec!["gitops".to_owned(), "super".to_owned()]
                ),
                ("secret-replicator".to_owned(), vec!["super".to_owned()]),
            ]
        );
        assert_eq!(
            bound(1),
            [(
                "secret-replicator:prod".to_owned(),
                vec!["gitops".to_owned(), "super".to_owned()]
            )]
        );
    }

    #[test]
    fn only_aggregated_service_account_owners_become_tenant_users_everywhere() {
        let owners = [
            tenant_owner(
                "a",
                json!({}),
                json!({"kind": "ServiceAccount", "name": "system:serviceaccount:ci:deployer"}),
            ),
            tenant_owner(
                "b",
                json!({}),
                json!({"kind": "ServiceAccount", "name": "system:serviceaccount:capsule:controller", "aggregate": false}),
            ),
            tenant_owner("c", json!({}), json!({"kind": "Group", "name": "devs"})),
        ];
        assert_eq!(
            aggregated_service_accounts(&owners),
            [Subject::ServiceAccount(
                "system:serviceaccount:ci:deployer".into()
            )]
        );
    }
}
