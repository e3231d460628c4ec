//! Fair shares of the API server between tenants (API Priority and Fairness): from the configuration
//! and the Tenants, the PriorityLevelConfigurations and FlowSchemas that must exist. The controller
//! applies exactly these and deletes the ones it made that are not among them.
//!
//! Each tier is one priority level; each tenant one FlowSchema without a distinguisher, so the API
//! server queues the whole tenant as one flow: a tenant sending with fifty identities is still one
//! flow, and fair queuing gives every busy tenant of the level the same share.

use std::collections::{BTreeMap, BTreeSet};

use bulkhead_api::config::{ApiFairness, ApiTier};
use bulkhead_api::{Tenant, labels};
use k8s_openapi::api::flowcontrol::v1::{
    FlowSchema, FlowSchemaSpec, GroupSubject, LimitResponse, LimitedPriorityLevelConfiguration,
    NonResourcePolicyRule, PolicyRulesWithSubjects, PriorityLevelConfiguration,
    PriorityLevelConfigurationReference, PriorityLevelConfigurationSpec, QueuingConfiguration,
    ResourcePolicyRule, ServiceAccountSubject, Subject, UserSubject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::desired::{managed_labels, owner_subject, readable_name, tenant_owner_reference};

/// A tenant as fair shares need it: the Tenant and the names of its namespaces.
pub struct TenantFlows<'a> {
    /// The Tenant.
    pub tenant: &'a Tenant,
    /// Its namespaces (their service accounts are the tenant's).
    pub namespaces: &'a BTreeSet<String>,
}

/// Every object fair shares want.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FairShares {
    /// One priority level per tier.
    pub levels: Vec<PriorityLevelConfiguration>,
    /// One FlowSchema per tenant that has anyone to match.
    pub flow_schemas: Vec<FlowSchema>,
    /// What could not be done as asked, per tenant, for Events; a problem of the configuration itself
    /// (a tier) has an empty tenant.
    pub problems: Vec<(String, String)>,
}

/// The name of a tier's priority level.
pub fn level_name(tier: &str) -> String {
    format!("bulkhead-tier-{tier}")
}

/// The name of a tenant's FlowSchema: `bulkhead-tenant-<tenant>`, shortened with a hash where the
/// tenant's name is too long for it.
pub fn flow_schema_name(tenant: &str) -> String {
    let name = format!("bulkhead-tenant-{tenant}");
    if name.len() <= 253 {
        name
    } else {
        readable_name("bulkhead-tenant", tenant, &[tenant])
    }
}

/// The tiers of a configuration: those it names, or the one standard tier.
pub fn tiers(fairness: &ApiFairness) -> Vec<ApiTier> {
    if fairness.tiers.is_empty() {
        vec![ApiTier::standard()]
    } else {
        fairness.tiers.clone()
    }
}

/// The objects fair shares want for these tenants. `user_groups` are the configuration's tenant user
/// groups: like the API server's own `system:` groups they hold users of every tenant, so a tenant
/// naming one is not matched by it (it would take everyone's requests into its flow).
pub fn fair_shares<'a>(
    fairness: &ApiFairness,
    user_groups: &[String],
    tenants: impl IntoIterator<Item = TenantFlows<'a>>,
) -> FairShares {
    let tiers = tiers(fairness);
    let mut out = FairShares {
        levels: tiers.iter().map(level).collect(),
        ..FairShares::default()
    };
    for tier in &tiers {
        let usable = usable_hand_size(tier.queues, tier.hand_size);
        if usable != tier.hand_size {
            out.problems.push((
                String::new(),
                format!(
                    "tier `{}`: a hand of {} of {} queues is more than the API server allows (at most 60 bits: handSize x log2(queues)); a hand of {usable} is used",
                    tier.name, tier.hand_size, tier.queues
                ),
            ));
        }
    }
    for TenantFlows { tenant, namespaces } in tenants {
        let name = tenant.metadata.name.clone().unwrap_or_default();
        if tenant.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let asked = tenant
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::API_TIER));
        let tier = match asked {
            Some(asked) => match tiers.iter().find(|t| &t.name == asked) {
                Some(tier) => tier,
                None => {
                    out.problems.push((
                        name.clone(),
                        format!(
                            "label {}={asked:?} names no tier of apiFairness (there are {}); the tenant is in tier `{}`",
                            labels::API_TIER,
                            tiers.iter().map(|t| format!("`{}`", t.name)).collect::<Vec<_>>().join(", "),
                            tiers[0].name
                        ),
                    ));
                    &tiers[0]
                }
            },
            None => &tiers[0],
        };
        let (subjects, shared) = subjects(tenant, namespaces, user_groups);
        for group in shared {
            out.problems.push((
                name.clone(),
                format!("group {group:?} holds users of other tenants too: the tenant's fair share does not take its requests"),
            ));
        }
        if subjects.is_empty() {
            continue;
        }
        out.flow_schemas.push(FlowSchema {
            metadata: ObjectMeta {
                name: Some(flow_schema_name(&name)),
                labels: Some(managed_labels(&name)),
                owner_references: Some(vec![tenant_owner_reference(tenant)]),
                ..ObjectMeta::default()
            },
            spec: Some(FlowSchemaSpec {
                matching_precedence: Some(fairness.matching_precedence),
                priority_level_configuration: PriorityLevelConfigurationReference {
                    name: level_name(&tier.name),
                },
                // No distinguisher: the whole tenant is one flow, however many identities it uses.
                distinguisher_method: None,
                rules: Some(vec![PolicyRulesWithSubjects {
                    subjects,
                    resource_rules: Some(vec![ResourcePolicyRule {
                        verbs: vec!["*".into()],
                        api_groups: vec!["*".into()],
                        resources: vec!["*".into()],
                        cluster_scope: Some(true),
                        namespaces: Some(vec!["*".into()]),
                    }]),
                    non_resource_rules: Some(vec![NonResourcePolicyRule {
                        verbs: vec!["*".into()],
                        non_resource_urls: vec!["*".into()],
                    }]),
                }]),
            }),
            status: None,
        });
    }
    out
}

/// The largest hand, up to `hand` and `queues`, the API server accepts: shuffle sharding needs
/// `ceil(log2(queues) * handSize)` bits of hash, at most 60 (apiserver's
/// `shufflesharding.RequiredEntropyBits` and `MaxHashBits`).
pub fn usable_hand_size(queues: i32, hand: i32) -> i32 {
    let bits = |h: i32| (f64::from(queues.max(1)).log2() * f64::from(h)).ceil();
    let hand = hand.min(queues).max(1);
    (1..=hand).rev().find(|h| bits(*h) <= 60.0).unwrap_or(1)
}

fn level(tier: &ApiTier) -> PriorityLevelConfiguration {
    PriorityLevelConfiguration {
        metadata: ObjectMeta {
            name: Some(level_name(&tier.name)),
            labels: Some(BTreeMap::from([(
                labels::MANAGED_BY.to_owned(),
                labels::MANAGED_BY_VALUE.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PriorityLevelConfigurationSpec {
            type_: "Limited".into(),
            limited: Some(LimitedPriorityLevelConfiguration {
                nominal_concurrency_shares: Some(tier.nominal_concurrency_shares),
                lendable_percent: Some(tier.lendable_percent),
                borrowing_limit_percent: None,
                limit_response: Some(LimitResponse {
                    type_: "Queue".into(),
                    queuing: Some(QueuingConfiguration {
                        queues: Some(tier.queues),
                        hand_size: Some(usable_hand_size(tier.queues, tier.hand_size)),
                        queue_length_limit: Some(tier.queue_length_limit),
                    }),
                }),
            }),
            exempt: None,
        }),
        status: None,
    }
}

/// Who a tenant's requests come from: its owners, the subjects of its additional role bindings, and
/// every service account of its namespaces. Sorted, without repeats. Groups shared with other tenants
/// (`system:` groups, tenant user groups) are left out and returned apart.
fn subjects(
    tenant: &Tenant,
    namespaces: &BTreeSet<String>,
    user_groups: &[String],
) -> (Vec<Subject>, BTreeSet<String>) {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Who {
        User(String),
        Group(String),
        ServiceAccount(String, String),
    }
    let mut who = BTreeSet::new();
    let mut shared = BTreeSet::new();
    let mut add = |kind: &str, name: &str, namespace: Option<&str>| match kind {
        "User" => {
            who.insert(Who::User(name.to_owned()));
        }
        "Group" if name.starts_with("system:") || user_groups.iter().any(|g| g == name) => {
            shared.insert(name.to_owned());
        }
        "Group" => {
            who.insert(Who::Group(name.to_owned()));
        }
        "ServiceAccount" => match namespace {
            Some(ns) => {
                who.insert(Who::ServiceAccount(ns.to_owned(), name.to_owned()));
            }
            // A RoleBinding's ServiceAccount subject without a namespace is of the binding's namespace.
            None => {
                for ns in namespaces {
                    who.insert(Who::ServiceAccount(ns.clone(), name.to_owned()));
                }
            }
        },
        _ => {}
    };
    // Every owner: spec.owners and those the controller listed in the status (TenantOwners, promoted
    // ServiceAccounts).
    let listed = tenant.status.iter().flat_map(|s| &s.owners).map(|o| {
        let mut owner = bulkhead_api::OwnerSpec::new(o.kind, o.name.clone());
        owner.cluster_roles.clone_from(&o.cluster_roles);
        owner
    });
    for owner in tenant.spec.owners.iter().cloned().chain(listed) {
        // An owner that is no valid subject is reported by the Tenant controller.
        if let Ok(s) = owner_subject(&owner) {
            add(&s.kind, &s.name, s.namespace.as_deref());
        }
    }
    for binding in &tenant.spec.additional_role_bindings {
        for s in &binding.subjects {
            add(&s.kind, &s.name, s.namespace.as_deref());
        }
    }
    for ns in namespaces {
        add("ServiceAccount", "*", Some(ns));
    }
    let subjects = who
        .into_iter()
        .filter(|w| !matches!(w, Who::User(n) | Who::Group(n) | Who::ServiceAccount(_, n) if n.is_empty()))
        .map(|w| match w {
            Who::User(name) => Subject {
                kind: "User".into(),
                user: Some(UserSubject { name }),
                ..Subject::default()
            },
            Who::Group(name) => Subject {
                kind: "Group".into(),
                group: Some(GroupSubject { name }),
                ..Subject::default()
            },
            Who::ServiceAccount(namespace, name) => Subject {
                kind: "ServiceAccount".into(),
                service_account: Some(ServiceAccountSubject { name, namespace }),
                ..Subject::default()
            },
        })
        .collect();
    (subjects, shared)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    fn tenant(value: serde_json::Value) -> Tenant {
        serde_json::from_value(value).unwrap()
    }

    fn solar() -> Tenant {
        tenant(json!({
            "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "solar", "uid": "u1"},
            "spec": {
                "owners": [
                    {"kind": "User", "name": "alice"},
                    {"kind": "Group", "name": "solar-team"},
                    {"name": "system:serviceaccount:ci:deployer"},
                    {"kind": "Group", "name": "system:authenticated"},
                    {"kind": "Group", "name": "bulkhead.dev"}
                ],
                "additionalRoleBindings": [{
                    "clusterRoleName": "view",
                    "subjects": [
                        {"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"},
                        {"kind": "ServiceAccount", "name": "robot"}
                    ]
                }]
            }
        }))
    }

    fn rendered(subjects: &[Subject]) -> Vec<String> {
        subjects
            .iter()
            .map(|s| match (&s.user, &s.group, &s.service_account) {
                (Some(u), _, _) => format!("User {}", u.name),
                (_, Some(g), _) => format!("Group {}", g.name),
                (_, _, Some(sa)) => format!("ServiceAccount {}/{}", sa.namespace, sa.name),
                _ => String::new(),
            })
            .collect()
    }

    #[test]
    fn a_tenant_is_one_flow_of_its_owners_bindings_and_service_accounts() {
        let t = solar();
        let namespaces = BTreeSet::from(["solar-a".to_owned(), "solar-b".to_owned()]);
        let out = fair_shares(
            &ApiFairness::default(),
            &["bulkhead.dev".to_owned()],
            [TenantFlows {
                tenant: &t,
                namespaces: &namespaces,
            }],
        );
        assert_eq!(out.levels.len(), 1);
        let level = &out.levels[0];
        assert_eq!(level.metadata.name.as_deref(), Some("bulkhead-tier-standard"));
        let limited = level.spec.as_ref().unwrap().limited.as_ref().unwrap();
        assert_eq!(limited.nominal_concurrency_shares, Some(30));
        let queuing = limited.limit_response.as_ref().unwrap().queuing.as_ref().unwrap();
        assert_eq!(
            (queuing.queues, queuing.hand_size, queuing.queue_length_limit),
            (Some(64), Some(6), Some(50))
        );

        assert_eq!(out.flow_schemas.len(), 1);
        let schema = &out.flow_schemas[0];
        assert_eq!(schema.metadata.name.as_deref(), Some("bulkhead-tenant-solar"));
        assert_eq!(schema.metadata.owner_references.as_ref().unwrap()[0].uid, "u1");
        assert_eq!(schema.metadata.labels.as_ref().unwrap()[labels::TENANT], "solar");
        let spec = schema.spec.as_ref().unwrap();
        assert_eq!(spec.matching_precedence, Some(5000));
        assert_eq!(spec.priority_level_configuration.name, "bulkhead-tier-standard");
        assert!(
            spec.distinguisher_method.is_none(),
            "the whole tenant is one flow"
        );
        let rule = &spec.rules.as_ref().unwrap()[0];
        assert_eq!(
            rendered(&rule.subjects),
            [
                "User alice",
                "User bob",
                "Group solar-team",
                "ServiceAccount ci/deployer",
                "ServiceAccount solar-a/*",
                "ServiceAccount solar-a/robot",
                "ServiceAccount solar-b/*",
                "ServiceAccount solar-b/robot",
            ]
        );
        let resources = &rule.resource_rules.as_ref().unwrap()[0];
        assert_eq!(resources.cluster_scope, Some(true));
        assert_eq!(resources.namespaces.as_deref(), Some(&["*".to_owned()][..]));
        assert_eq!(
            rule.non_resource_rules.as_ref().unwrap()[0].non_resource_urls,
            ["*"]
        );
        // Groups every tenant's users are in are left out, and said so.
        let problems: Vec<&str> = out.problems.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("\"system:authenticated\"")));
        assert!(problems.iter().any(|p| p.contains("\"bulkhead.dev\"")));
    }

    #[test]
    fn a_tenant_is_in_the_tier_its_label_names_or_the_first_one() {
        let fairness: ApiFairness = serde_json::from_value(json!({
            "matchingPrecedence": 4000,
            "tiers": [{"name": "bronze", "nominalConcurrencyShares": 10, "queues": 4, "handSize": 8},
                      {"name": "gold", "nominalConcurrencyShares": 60, "lendablePercent": 25}]
        }))
        .unwrap();
        let gold = tenant(
            json!({"metadata": {"name": "g", "labels": {labels::API_TIER: "gold"}},
            "spec": {"owners": [{"name": "alice"}]}}),
        );
        let plain = tenant(json!({"metadata": {"name": "p"}, "spec": {"owners": [{"name": "bob"}]}}));
        let typo = tenant(
            json!({"metadata": {"name": "t", "labels": {labels::API_TIER: "golden"}},
            "spec": {"owners": [{"name": "carol"}]}}),
        );
        let nobody = tenant(json!({"metadata": {"name": "n"}, "spec": {"owners": []}}));
        let none = BTreeSet::new();
        let out = fair_shares(
            &fairness,
            &[],
            [&gold, &plain, &typo, &nobody].map(|tenant| TenantFlows {
                tenant,
                namespaces: &none,
            }),
        );
        let levels: Vec<_> = out
            .levels
            .iter()
            .map(|l| l.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(levels, ["bulkhead-tier-bronze", "bulkhead-tier-gold"]);
        let bronze = out.levels[0].spec.as_ref().unwrap().limited.as_ref().unwrap();
        let queuing = bronze.limit_response.as_ref().unwrap().queuing.as_ref().unwrap();
        assert_eq!(queuing.hand_size, Some(4), "a hand is never larger than the deck");
        let gold_level = out.levels[1].spec.as_ref().unwrap().limited.as_ref().unwrap();
        assert_eq!(
            (gold_level.nominal_concurrency_shares, gold_level.lendable_percent),
            (Some(60), Some(25))
        );
        let routed: Vec<(String, String, i32)> = out
            .flow_schemas
            .iter()
            .map(|f| {
                let spec = f.spec.as_ref().unwrap();
                (
                    f.metadata.name.clone().unwrap(),
                    spec.priority_level_configuration.name.clone(),
                    spec.matching_precedence.unwrap(),
                )
            })
            .collect();
        // A tenant nobody can act for gets no FlowSchema (one with no subjects is invalid).
        assert_eq!(
            routed,
            [
                (
                    "bulkhead-tenant-g".to_owned(),
                    "bulkhead-tier-gold".to_owned(),
                    4000
                ),
                (
                    "bulkhead-tenant-p".to_owned(),
                    "bulkhead-tier-bronze".to_owned(),
                    4000
                ),
                (
                    "bulkhead-tenant-t".to_owned(),
                    "bulkhead-tier-bronze".to_owned(),
                    4000
                ),
            ]
        );
        // The tier whose hand is larger than its deck (the CRD refuses it; policy lowers it all the same),
        // and the tenant naming no tier.
        assert_eq!(out.problems.len(), 2, "{:?}", out.problems);
        assert_eq!(out.problems[0].0, "");
        assert!(
            out.problems[0]
                .1
                .contains("tier `bronze`: a hand of 8 of 4 queues")
        );
        assert_eq!(out.problems[1].0, "t");
        assert!(
            out.problems[1].1.contains("\"golden\" names no tier"),
            "{}",
            out.problems[1].1
        );
    }

    #[test]
    fn a_hand_is_never_larger_than_the_api_server_allows() {
        // 64 queues: 6 bits a card, so 10 cards.
        assert_eq!(usable_hand_size(64, 6), 6);
        assert_eq!(usable_hand_size(64, 10), 10);
        assert_eq!(usable_hand_size(64, 11), 10);
        // 512 queues: 9 bits a card; 100 queues: ceil(6.64 x 9) = 60, ceil(6.64 x 10) = 67.
        assert_eq!(usable_hand_size(512, 64), 6);
        assert_eq!(usable_hand_size(100, 10), 9);
        // Never more than the deck, never less than one.
        assert_eq!(usable_hand_size(4, 8), 4);
        assert_eq!(usable_hand_size(1, 1), 1);
        let fairness: ApiFairness = serde_json::from_value(json!({
            "tiers": [{"name": "wide", "queues": 512, "handSize": 8}]
        }))
        .unwrap();
        let out = fair_shares(&fairness, &[], []);
        let queuing = out.levels[0].spec.as_ref().unwrap().limited.as_ref().unwrap();
        let queuing = queuing.limit_response.as_ref().unwrap().queuing.as_ref().unwrap();
        assert_eq!(queuing.hand_size, Some(6));
        assert_eq!(out.problems.len(), 1);
        assert_eq!(
            out.problems[0].0, "",
            "a problem of the configuration, not of a tenant"
        );
        assert!(
            out.problems[0]
                .1
                .contains("tier `wide`: a hand of 8 of 512 queues"),
            "{}",
            out.problems[0].1
        );
    }

    #[test]
    fn a_long_tenant_name_still_makes_a_valid_name() {
        let long = "a".repeat(253);
        let name = flow_schema_name(&long);
        assert!(
            name.len() <= 253 && name.starts_with("bulkhead-tenant-a"),
            "{name}"
        );
        assert_ne!(name, flow_schema_name(&"a".repeat(252)));
    }
}
