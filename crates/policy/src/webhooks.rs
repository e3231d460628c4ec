//! The webhook configurations Bulkhead registers: which requests reach which check.
//!
//! Availability before all: webhooks for namespaced objects select tenant namespaces only, so a
//! Bulkhead outage never touches kube-system or Bulkhead's own namespace. The Namespace webhooks see
//! every namespace (a tenant user must not label kube-system into a tenant), but their match
//! conditions pass only requests from possible tenant users (members of the user groups and service
//! accounts), so an outage affects tenant users only. Workload checks match every caller, because
//! controllers create the pods of a tenant's Deployments.

use std::collections::BTreeMap;

use bulkhead_api::labels;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};

/// The default name of both configurations.
pub const CONFIGURATION_NAME: &str = "bulkhead";

/// Where the API server reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A URL (`https://host:port`), for a webhook running outside the cluster.
    Url(String),
    /// The in-cluster Service.
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its port.
        port: i32,
    },
}

impl Endpoint {
    fn client_config(&self, path: &str, ca_bundle: &str) -> WebhookClientConfig {
        let ca_bundle = Some(ByteString(ca_bundle.as_bytes().to_vec()));
        match self {
            Endpoint::Url(base) => WebhookClientConfig {
                url: Some(format!("{}{path}", base.trim_end_matches('/'))),
                ca_bundle,
                service: None,
            },
            Endpoint::Service {
                namespace,
                name,
                port,
            } => WebhookClientConfig {
                service: Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: Some(path.to_owned()),
                    port: Some(*port),
                }),
                ca_bundle,
                url: None,
            },
        }
    }
}

struct Hook {
    /// The check (route); also names the hook, unless `name` says otherwise.
    check: &'static str,
    name: Option<&'static str>,
    rules: Vec<RuleWithOperations>,
    tenant_namespaces_only: bool,
    tenant_users_only: bool,
    object_selector: Option<LabelSelector>,
}

impl Hook {
    /// The tenants webhook fails open: administrators keep applying Tenants while Bulkhead is down.
    /// What must hold then is enforced by the API server itself ([`admission_policies`]); the rest of
    /// a Tenant's validation (regexes, CIDRs) is reported in its status by the controller.
    fn failure_policy(&self) -> &'static str {
        if self.check == "tenants" { "Ignore" } else { "Fail" }
    }
}

fn rule(
    groups: &[&str],
    versions: &[&str],
    resources: &[&str],
    operations: &[&str],
    scope: &str,
) -> RuleWithOperations {
    let strings = |v: &[&str]| Some(v.iter().map(|s| (*s).to_owned()).collect());
    RuleWithOperations {
        api_groups: strings(groups),
        api_versions: strings(versions),
        resources: strings(resources),
        operations: strings(operations),
        scope: Some(scope.to_owned()),
    }
}

fn tenant_namespaces() -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: labels::TENANT.to_owned(),
            operator: "Exists".to_owned(),
            values: None,
        }]),
        match_labels: None,
    }
}

/// A CEL string literal of `s`.
fn cel_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The CEL condition passing only requests from possible tenant users: members of `user_groups`, and
/// service accounts except those of kube-system and of Bulkhead's own namespaces (`exempt_namespaces`).
/// Those are never tenant namespaces, and kube-system's controllers (the namespace controller deletes
/// and finalizes namespaces) must keep working while Bulkhead is down.
pub fn tenant_users_condition(user_groups: &[String], exempt_namespaces: &[String]) -> MatchCondition {
    let quote = cel_string;
    let groups: Vec<String> = user_groups.iter().map(|g| quote(g)).collect();
    let mut exempt: Vec<String> = vec![quote("system:serviceaccount:kube-system:")];
    for ns in exempt_namespaces
        .iter()
        .filter(|ns| !ns.is_empty() && *ns != "kube-system")
    {
        exempt.push(quote(&format!("system:serviceaccount:{ns}:")));
    }
    MatchCondition {
        name: "tenant-users".to_owned(),
        expression: format!(
            "(request.userInfo.username.startsWith('system:serviceaccount:') && !({})) || request.userInfo.groups.exists(g, g in [{}])",
            exempt
                .iter()
                .map(|p| format!("request.userInfo.username.startsWith({p})"))
                .collect::<Vec<_>>()
                .join(" || "),
            groups.join(", ")
        ),
    }
}

const CUD: &[&str] = &["CREATE", "UPDATE", "DELETE"];
const CU: &[&str] = &["CREATE", "UPDATE"];
const C: &[&str] = &["CREATE"];

fn mutating_hooks() -> Vec<Hook> {
    let workload = |check, rules| Hook {
        check,
        name: None,
        rules,
        tenant_namespaces_only: true,
        tenant_users_only: false,
        object_selector: None,
    };
    vec![
        Hook {
            check: "namespaces",
            name: None,
            rules: vec![rule(&[""], &["v1"], &["namespaces"], C, "Cluster")],
            tenant_namespaces_only: false,
            tenant_users_only: true,
            object_selector: None,
        },
        workload("pods", vec![rule(&[""], &["v1"], &["pods"], C, "Namespaced")]),
        workload(
            "persistentvolumeclaims",
            vec![rule(
                &[""],
                &["v1"],
                &["persistentvolumeclaims"],
                CU,
                "Namespaced",
            )],
        ),
        workload(
            "services",
            vec![rule(&[""], &["v1"], &["services"], CU, "Namespaced")],
        ),
        workload(
            "ingresses",
            vec![rule(
                &["networking.k8s.io"],
                &["v1"],
                &["ingresses"],
                CU,
                "Namespaced",
            )],
        ),
        // Gateway API Gateways: their GatewayClass (any served version).
        workload(
            "gateways",
            vec![rule(
                &["gateway.networking.k8s.io"],
                &["*"],
                &["gateways"],
                CU,
                "Namespaced",
            )],
        ),
    ]
}

fn validating_hooks() -> Vec<Hook> {
    let mut hooks = mutating_hooks();
    hooks[0].rules = vec![rule(
        &[""],
        &["v1"],
        &["namespaces", "namespaces/status", "namespaces/finalize"],
        CUD,
        "Cluster",
    )];
    // Where a pod runs is decided by its spec, or by a Binding: `pods/binding`, or the older
    // `bindings` resource that does the same.
    hooks[1].rules = vec![rule(
        &[""],
        &["v1"],
        &["pods", "pods/ephemeralcontainers", "pods/binding", "bindings"],
        CU,
        "Namespaced",
    )];
    hooks.extend([
        // Gateway API routes: their hostnames (which External DNS publishes) follow the tenant's
        // hostname rules. Every version: the API server may have several served.
        Hook {
            check: "routes",
            name: None,
            rules: vec![rule(
                &["gateway.networking.k8s.io"],
                &["*"],
                &["httproutes", "grpcroutes", "tlsroutes"],
                CU,
                "Namespaced",
            )],
            tenant_namespaces_only: true,
            tenant_users_only: false,
            object_selector: None,
        },
        // Dynamic resource allocation: the device classes of every request of a claim or template.
        Hook {
            check: "resourceclaims",
            name: None,
            rules: vec![rule(
                &["resource.k8s.io"],
                &["*"],
                &["resourceclaims", "resourceclaimtemplates"],
                CU,
                "Namespaced",
            )],
            tenant_namespaces_only: true,
            tenant_users_only: false,
            object_selector: None,
        },
        Hook {
            check: "nodes",
            name: None,
            // A node's labels and annotations can be changed through its status too.
            rules: vec![rule(
                &[""],
                &["v1"],
                &["nodes", "nodes/status"],
                &["UPDATE"],
                "Cluster",
            )],
            tenant_namespaces_only: false,
            tenant_users_only: true,
            object_selector: None,
        },
        Hook {
            check: "tenants",
            name: None,
            rules: vec![rule(
                &["bulkhead.dev"],
                &["v1alpha1"],
                &["tenants"],
                CUD,
                "Cluster",
            )],
            tenant_namespaces_only: false,
            tenant_users_only: false,
            object_selector: None,
        },
        Hook {
            check: "promotions",
            name: None,
            // Only where the promotion label is (or was: the API server matches an update on either
            // side): who may promote a ServiceAccount to owner.
            rules: vec![rule(&[""], &["v1"], &["serviceaccounts"], CU, "Namespaced")],
            tenant_namespaces_only: true,
            // Anyone who may edit ServiceAccounts there, not only tenant users.
            tenant_users_only: false,
            object_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: labels::PROMOTE.to_owned(),
                    operator: "Exists".to_owned(),
                    values: None,
                }]),
                match_labels: None,
            }),
        },
        Hook {
            check: "promotions",
            name: Some("rule-promotions"),
            // Only where the promotion label is (or was: the API server matches an update on either
            // side): who may promote a ServiceAccount to owner.
            rules: vec![rule(&[""], &["v1"], &["serviceaccounts"], CU, "Namespaced")],
            tenant_namespaces_only: true,
            // Anyone who may edit ServiceAccounts there, not only tenant users.
            tenant_users_only: false,
            object_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: labels::RULE_PROMOTE.to_owned(),
                    operator: "Exists".to_owned(),
                    values: None,
                }]),
                match_labels: None,
            }),
        },
        Hook {
            check: "cordoned",
            name: None,
            // `*/*`: subresource writes (scale, eviction, status, binding) change things too.
            rules: vec![rule(&["*"], &["*"], &["*/*"], CUD, "Namespaced")],
            tenant_namespaces_only: true,
            tenant_users_only: true,
            object_selector: None,
        },
        Hook {
            check: "managed",
            name: None,
            rules: vec![
                rule(
                    &["rbac.authorization.k8s.io"],
                    &["v1"],
                    &["rolebindings"],
                    CUD,
                    "Namespaced",
                ),
                rule(
                    &[""],
                    &["v1"],
                    &["resourcequotas", "limitranges"],
                    CUD,
                    "Namespaced",
                ),
                rule(
                    &["networking.k8s.io"],
                    &["v1"],
                    &["networkpolicies"],
                    CUD,
                    "Namespaced",
                ),
            ],
            tenant_namespaces_only: true,
            tenant_users_only: true,
            object_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    labels::MANAGED_BY.to_owned(),
                    labels::MANAGED_BY_VALUE.to_owned(),
                )])),
                match_expressions: None,
            }),
        },
        Hook {
            check: "managed",
            name: Some("replicated"),
            // `*/*`: subresource writes (scale, eviction, status, binding) change things too.
            rules: vec![rule(&["*"], &["*"], &["*/*"], CUD, "Namespaced")],
            tenant_namespaces_only: true,
            tenant_users_only: true,
            object_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: labels::REPLICATED_BY.to_owned(),
                    operator: "Exists".to_owned(),
                    values: None,
                }]),
                match_labels: None,
            }),
        },
        // Its rules are the kinds CustomQuotas count, kept by the controller ([`custom_quota_rules`]);
        // shipped without any, so that nothing else owns them.
        Hook {
            check: CUSTOM_QUOTAS,
            name: None,
            rules: Vec::new(),
            tenant_namespaces_only: false,
            tenant_users_only: false,
            object_selector: None,
        },
        // Claims in use cannot be changed, released or deleted; pools cannot shrink below their
        // claims. Pools select any namespace, so every namespace is asked, by every caller but
        // Bulkhead and kube-system's controllers ([`not_system_condition`]).
        Hook {
            check: RESOURCE_POOLS,
            name: None,
            rules: vec![
                rule(
                    &[bulkhead_api::GROUP],
                    &[bulkhead_api::VERSION],
                    &["resourcepoolclaims"],
                    CUD,
                    "Namespaced",
                ),
                rule(
                    &[bulkhead_api::GROUP],
                    &[bulkhead_api::VERSION],
                    &["resourcepools"],
                    &["UPDATE"],
                    "Cluster",
                ),
            ],
            tenant_namespaces_only: false,
            tenant_users_only: false,
            object_selector: None,
        },
    ]);
    hooks
}

/// The check (and path) of the hook that guards ResourcePools and their claims.
pub const RESOURCE_POOLS: &str = "resourcepools";

/// The CEL condition passing every caller but the service accounts of kube-system and of Bulkhead's
/// own namespace (`own_namespace`).
fn not_system_condition(own_namespace: &str) -> MatchCondition {
    let quote = cel_string;
    MatchCondition {
        name: "not-system".to_owned(),
        expression: format!(
            "!request.userInfo.username.startsWith({}) && !request.userInfo.username.startsWith({})",
            quote("system:serviceaccount:kube-system:"),
            quote(&format!("system:serviceaccount:{own_namespace}:"))
        ),
    }
}

/// The check (and path) of the hook that admits the kinds CustomQuotas count.
pub const CUSTOM_QUOTAS: &str = "customquotas";
/// The name of that hook in the validating configuration.
pub const CUSTOM_QUOTAS_HOOK: &str = "customquotas.validate.bulkhead.dev";

/// The rules of the CustomQuota hook for the counted kinds, each as (group, version, resource): creates
/// and updates of the kind, and of its `resize` (a Pod's resources) and `scale` (`.spec.replicas`)
/// subresources; and of the quotas themselves, whose paths and selectors the hook checks.
pub fn custom_quota_rules(kinds: &[(String, String, String)]) -> Vec<RuleWithOperations> {
    let mut kinds = kinds.to_vec();
    kinds.sort();
    kinds.dedup();
    let mut rules = vec![
        rule(
            &[bulkhead_api::GROUP],
            &[bulkhead_api::VERSION],
            &["customquotas"],
            CU,
            "Namespaced",
        ),
        rule(
            &[bulkhead_api::GROUP],
            &[bulkhead_api::VERSION],
            &["globalcustomquotas"],
            CU,
            "Cluster",
        ),
    ];
    rules.extend(kinds.iter().map(|(group, version, resource)| {
        let (resize, scale) = (format!("{resource}/resize"), format!("{resource}/scale"));
        rule(
            &[group],
            &[version],
            &[resource, &resize, &scale],
            CU,
            "Namespaced",
        )
    }));
    rules
}

/// Where the CustomQuota hook is asked: every namespace but kube-system and Bulkhead's own.
fn custom_quota_namespaces(own_namespace: &str) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".to_owned(),
            operator: "NotIn".to_owned(),
            values: Some(vec!["kube-system".to_owned(), own_namespace.to_owned()]),
        }]),
        match_labels: None,
    }
}

fn metadata(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(BTreeMap::from([(
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        )])),
        ..Default::default()
    }
}

/// The mutating and validating configurations (both called `name`) for `endpoint`, trusting
/// `ca_bundle` (PEM). `own_namespace` is Bulkhead's: its service accounts are never tenant users.
pub fn configurations(
    name: &str,
    endpoint: &Endpoint,
    ca_bundle: &str,
    user_groups: &[String],
    own_namespace: &str,
) -> (MutatingWebhookConfiguration, ValidatingWebhookConfiguration) {
    let condition = tenant_users_condition(user_groups, &[own_namespace.to_owned()]);
    let common = |hook: &Hook, mode: &str| {
        (
            format!("{}.{mode}.bulkhead.dev", hook.name.unwrap_or(hook.check)),
            endpoint.client_config(&format!("/{mode}/{}", hook.check), ca_bundle),
            hook.tenant_namespaces_only.then(tenant_namespaces),
            hook.tenant_users_only.then(|| vec![condition.clone()]),
        )
    };
    let mutating = MutatingWebhookConfiguration {
        metadata: metadata(name),
        webhooks: Some(
            mutating_hooks()
                .into_iter()
                .map(|hook| {
                    let (hook_name, client_config, namespace_selector, match_conditions) =
                        common(&hook, "mutate");
                    MutatingWebhook {
                        name: hook_name,
                        client_config,
                        namespace_selector,
                        match_conditions,
                        object_selector: hook.object_selector,
                        rules: Some(hook.rules),
                        admission_review_versions: vec!["v1".to_owned()],
                        side_effects: "NoneOnDryRun".to_owned(),
                        failure_policy: Some("Fail".to_owned()),
                        match_policy: Some("Equivalent".to_owned()),
                        reinvocation_policy: Some("IfNeeded".to_owned()),
                        timeout_seconds: Some(5),
                    }
                })
                .collect(),
        ),
    };
    let validating = ValidatingWebhookConfiguration {
        metadata: metadata(name),
        webhooks: Some(
            validating_hooks()
                .into_iter()
                .map(|hook| {
                    let (hook_name, client_config, mut namespace_selector, mut match_conditions) =
                        common(&hook, "validate");
                    if hook.check == RESOURCE_POOLS {
                        match_conditions = Some(vec![not_system_condition(own_namespace)]);
                    }
                    let failure_policy = Some(hook.failure_policy().to_owned());
                    if hook.check == CUSTOM_QUOTAS {
                        namespace_selector = Some(custom_quota_namespaces(own_namespace));
                    }
                    let rules = (!hook.rules.is_empty()).then_some(hook.rules);
                    ValidatingWebhook {
                        name: hook_name,
                        client_config,
                        namespace_selector,
                        match_conditions,
                        object_selector: hook.object_selector,
                        rules,
                        admission_review_versions: vec!["v1".to_owned()],
                        side_effects: "NoneOnDryRun".to_owned(),
                        failure_policy,
                        match_policy: Some("Equivalent".to_owned()),
                        timeout_seconds: Some(5),
                    }
                })
                .collect(),
        ),
    };
    (mutating, validating)
}

/// The suffix of the ValidatingAdmissionPolicy (after the configuration's name) that keeps namespace
/// ownership in the API server.
pub const OWNERSHIP_POLICY: &str = "namespace-ownership";
/// The suffix of the ValidatingAdmissionPolicy that keeps `preventDeletion` in the API server.
pub const PREVENT_DELETION_POLICY: &str = "tenant-prevent-deletion";

/// The names of the admission policies (and their bindings) of the configuration `name`.
pub fn admission_policy_names(name: &str) -> [String; 2] {
    [
        format!("{name}-{OWNERSHIP_POLICY}"),
        format!("{name}-{PREVENT_DELETION_POLICY}"),
    ]
}

/// What the API server enforces itself, with no call to Bulkhead, so that no outage can reach it:
/// ValidatingAdmissionPolicies (GA since Kubernetes 1.30) and their bindings, named after the webhook
/// configuration `name` ([`admission_policy_names`]).
///
/// - `<name>-namespace-ownership`: a tenant user (the same match condition as the webhooks') never
///   adds, changes or removes a namespace's tenant label or its ownerReference to a Tenant, through
///   update, patch, `status` or `finalize`; the messages are the webhook's own.
/// - `<name>-tenant-prevent-deletion`: a Tenant with `preventDeletion` is not deleted, by anyone.
///
/// The webhook checks the same and more; these hold while it is down.
pub fn admission_policies(
    name: &str,
    user_groups: &[String],
    own_namespace: &str,
) -> Vec<(ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding)> {
    let condition = tenant_users_condition(user_groups, &[own_namespace.to_owned()]);
    let key = labels::TENANT;
    let label = |side: &str| {
        format!(
            "has({side}.metadata.labels) && '{key}' in {side}.metadata.labels ? {side}.metadata.labels['{key}'] : ''"
        )
    };
    let refs = |side: &str| {
        format!(
            "(has({side}.metadata.ownerReferences) ? {side}.metadata.ownerReferences : []).filter(r, r.kind == 'Tenant' && r.apiVersion.startsWith('bulkhead.dev/'))"
        )
    };
    let [ownership_name, prevent_name] = admission_policy_names(name);
    let ownership = serde_json::json!({
        "metadata": {"name": ownership_name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "resources": ["namespaces", "namespaces/status", "namespaces/finalize"],
                "operations": ["UPDATE"],
            }]},
            "matchConditions": [{"name": condition.name, "expression": condition.expression}],
            "variables": [
                {"name": "oldTenant", "expression": label("oldObject")},
                {"name": "newTenant", "expression": label("object")},
                {"name": "oldRefs", "expression": refs("oldObject")},
                {"name": "newRefs", "expression": refs("object")},
                {"name": "oldKeys", "expression": "variables.oldRefs.map(r, r.name + '/' + r.uid + '/' + r.apiVersion)"},
                {"name": "newKeys", "expression": "variables.newRefs.map(r, r.name + '/' + r.uid + '/' + r.apiVersion)"},
                {"name": "via", "expression": "has(request.subResource) && request.subResource != '' ? ' (through `' + request.subResource + '`)' : ''"},
                {"name": "refTenant", "expression": "variables.oldTenant != '' ? variables.oldTenant : (variables.oldRefs.size() > 0 ? variables.oldRefs[0].name : (variables.newRefs.size() > 0 ? variables.newRefs[0].name : ''))"},
            ],
            "validations": [
                {
                    "expression": "variables.oldTenant == variables.newTenant",
                    "messageExpression": format!(
                        "variables.oldTenant == '' ? 'namespace `' + object.metadata.name + '` is not part of a tenant and cannot be moved into tenant `' + variables.newTenant + '`' + variables.via : (variables.newTenant == '' ? 'the label `{key}` of namespace `' + object.metadata.name + '` cannot be removed' + variables.via + ': it belongs to tenant `' + variables.oldTenant + '`' : 'namespace `' + object.metadata.name + '` belongs to tenant `' + variables.oldTenant + '` and cannot be moved to tenant `' + variables.newTenant + '`' + variables.via + ': the label `{key}` is locked')"
                    ),
                    "reason": "Forbidden",
                },
                {
                    "expression": "variables.oldKeys.all(k, k in variables.newKeys) && variables.newKeys.all(k, k in variables.oldKeys)",
                    "messageExpression": "'the ownerReference of namespace `' + object.metadata.name + '` to its Tenant `' + variables.refTenant + '` cannot be added, changed or removed' + variables.via",
                    "reason": "Forbidden",
                },
            ],
        },
    });
    let prevent_deletion = serde_json::json!({
        "metadata": {"name": prevent_name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["bulkhead.dev"], "apiVersions": ["*"],
                "resources": ["tenants"], "operations": ["DELETE"],
            }]},
            "validations": [{
                "expression": "!(has(oldObject.spec) && has(oldObject.spec.preventDeletion) && oldObject.spec.preventDeletion)",
                "messageExpression": "'tenant `' + oldObject.metadata.name + '` has preventDeletion set: set it to false before deleting the tenant'",
                "reason": "Forbidden",
            }],
        },
    });
    [ownership, prevent_deletion]
        .into_iter()
        .filter_map(|policy| {
            let mut policy: ValidatingAdmissionPolicy = serde_json::from_value(policy).ok()?;
            let name = policy.metadata.name.clone()?;
            policy.metadata.labels = metadata(&name).labels;
            let binding = ValidatingAdmissionPolicyBinding {
                metadata: metadata(&name),
                spec: Some(ValidatingAdmissionPolicyBindingSpec {
                    policy_name: Some(name),
                    validation_actions: Some(vec!["Deny".to_owned()]),
                    ..Default::default()
                }),
            };
            Some((policy, binding))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_servers_own_locks_match_tenant_users_like_the_webhooks_and_deny() {
        let groups = ["bulkhead.dev".to_owned()];
        let policies = admission_policies("bulkhead", &groups, "bulkhead-system");
        let names: Vec<_> = policies
            .iter()
            .map(|(p, _)| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            ["bulkhead-namespace-ownership", "bulkhead-tenant-prevent-deletion"]
        );
        assert_eq!(names, admission_policy_names("bulkhead"));
        for (policy, binding) in &policies {
            let spec = policy.spec.as_ref().unwrap();
            assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
            let binding = binding.spec.as_ref().unwrap();
            assert_eq!(binding.policy_name, policy.metadata.name);
            assert_eq!(
                binding.validation_actions.as_deref(),
                Some(&["Deny".to_owned()][..])
            );
        }
        let ownership = policies[0].0.spec.as_ref().unwrap();
        let condition = tenant_users_condition(&groups, &["bulkhead-system".to_owned()]);
        assert_eq!(
            ownership.match_conditions.as_ref().unwrap()[0].expression,
            condition.expression
        );
        let rules = ownership
            .match_constraints
            .as_ref()
            .unwrap()
            .resource_rules
            .as_ref()
            .unwrap();
        assert_eq!(
            rules[0].resources.as_deref().unwrap(),
            ["namespaces", "namespaces/status", "namespaces/finalize"]
        );
        // Everyone: preventDeletion binds administrators too.
        assert!(policies[1].0.spec.as_ref().unwrap().match_conditions.is_none());
        let (_, v) = configurations(
            CONFIGURATION_NAME,
            &Endpoint::Url("https://x".into()),
            "CA",
            &groups,
            "b",
        );
        for hook in v.webhooks.unwrap() {
            let want = if hook.name == "tenants.validate.bulkhead.dev" {
                "Ignore"
            } else {
                "Fail"
            };
            assert_eq!(hook.failure_policy.as_deref(), Some(want), "{}", hook.name);
        }
    }

    #[test]
    fn namespaced_hooks_select_tenant_namespaces_and_namespace_hooks_only_tenant_users() {
        let (m, v) = configurations(
            CONFIGURATION_NAME,
            &Endpoint::Url("https://127.0.0.1:9443/".into()),
            "CA",
            &["bulkhead.dev".into(), "it's".into()],
            "bulkhead-system",
        );
        let validating = v.webhooks.unwrap();
        let ns = validating
            .iter()
            .find(|w| w.name == "namespaces.validate.bulkhead.dev")
            .unwrap();
        assert!(ns.namespace_selector.is_none(), "kube-system must be seen");
        let rules = ns.rules.as_ref().unwrap();
        assert_eq!(
            rules[0].resources.as_deref().unwrap(),
            ["namespaces", "namespaces/status", "namespaces/finalize"]
        );
        assert_eq!(
            ns.match_conditions.as_ref().unwrap()[0].expression,
            r"(request.userInfo.username.startsWith('system:serviceaccount:') && !(request.userInfo.username.startsWith('system:serviceaccount:kube-system:') || request.userInfo.username.startsWith('system:serviceaccount:bulkhead-system:'))) || request.userInfo.groups.exists(g, g in ['bulkhead.dev', 'it\'s'])"
        );
        assert_eq!(
            ns.client_config.url.as_deref(),
            Some("https://127.0.0.1:9443/validate/namespaces")
        );
        for hook in validating.iter().filter(|w| {
            !w.name.starts_with("namespaces.")
                && !w.name.starts_with("nodes.")
                && !w.name.starts_with("tenants.")
                && w.name != CUSTOM_QUOTAS_HOOK
                && w.name != "resourcepools.validate.bulkhead.dev"
        }) {
            assert_eq!(
                hook.namespace_selector,
                Some(tenant_namespaces()),
                "{}",
                hook.name
            );
            assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
            assert!(hook.timeout_seconds.unwrap() <= 5);
        }
        let pods = validating
            .iter()
            .find(|w| w.name == "pods.validate.bulkhead.dev")
            .unwrap();
        assert!(pods.match_conditions.is_none(), "controllers create pods too");
        // The quota hook is asked everywhere but kube-system and Bulkhead's own namespace, by every
        // caller, and ships without rules: the controller keeps them.
        let quotas = validating.iter().find(|w| w.name == CUSTOM_QUOTAS_HOOK).unwrap();
        assert!(quotas.rules.is_none() && quotas.match_conditions.is_none());
        assert_eq!(
            quotas
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_expressions
                .as_ref()
                .unwrap()[0]
                .values
                .as_deref(),
            Some(&["kube-system".to_owned(), "bulkhead-system".to_owned()][..])
        );
        let pools = validating
            .iter()
            .find(|w| w.name == "resourcepools.validate.bulkhead.dev")
            .unwrap();
        assert!(pools.namespace_selector.is_none(), "pools select any namespace");
        assert_eq!(
            pools.match_conditions.as_ref().unwrap()[0].expression,
            "!request.userInfo.username.startsWith('system:serviceaccount:kube-system:') && !request.userInfo.username.startsWith('system:serviceaccount:bulkhead-system:')"
        );
        let rules = custom_quota_rules(&[
            ("".into(), "v1".into(), "pods".into()),
            ("".into(), "v1".into(), "pods".into()),
        ]);
        assert_eq!(rules.len(), 3, "the quotas themselves, and pods once");
        assert_eq!(
            rules[2].resources.as_deref().unwrap(),
            ["pods", "pods/resize", "pods/scale"]
        );
        let mutating = m.webhooks.unwrap();
        assert_eq!(mutating.len(), 6);
        assert_eq!(mutating[0].client_config.ca_bundle.as_ref().unwrap().0, b"CA");
    }

    #[test]
    fn the_service_endpoint_names_a_path_per_check() {
        let (_, v) = configurations(
            "bulkhead-e2e",
            &Endpoint::Service {
                namespace: "bulkhead-system".into(),
                name: "bulkhead-webhook".into(),
                port: 443,
            },
            "CA",
            &[],
            "bulkhead-system",
        );
        assert_eq!(v.metadata.name.as_deref(), Some("bulkhead-e2e"));
        let hooks = v.webhooks.unwrap();
        let managed = hooks
            .iter()
            .find(|w| w.name == "managed.validate.bulkhead.dev")
            .unwrap();
        let service = managed.client_config.service.as_ref().unwrap();
        assert_eq!(service.path.as_deref(), Some("/validate/managed"));
        assert_eq!(
            managed
                .object_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()[labels::MANAGED_BY],
            "bulkhead"
        );
    }
}
