//! The guard rails that are not about one workload kind: cordoned tenants, objects Bulkhead manages,
//! node metadata, and the Tenant objects themselves.

use std::collections::BTreeMap;

use bulkhead_api::common::{AllowedList, ClassAllowedList, ForbiddenList};
use bulkhead_api::owner::{OwnerKind, SERVICE_ACCOUNT_PREFIX};
use bulkhead_api::{Tenant, labels};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::lists::{is_forbidden, pattern_matches};
use super::workload::cidr_contains;
use super::{Operation, Request, Verdict, View, join_or_none};
use crate::identity::CallerClass;

/// While a tenant is cordoned, its users may not create, change or delete anything in its namespaces.
/// `what` names the object, e.g. `` deployment `web` ``.
pub fn cordoned(req: &Request<'_>, tenant: &Tenant, what: &str) -> Verdict {
    let t = tenant.metadata.name.as_deref().unwrap_or_default();
    let writes = matches!(
        req.operation,
        Operation::Create | Operation::Update | Operation::Delete
    );
    if writes && tenant.spec.cordoned && req.class == CallerClass::TenantUser {
        return Verdict::deny(
            Some(t),
            format!(
                "{what} cannot be {}: tenant `{t}` is cordoned, nothing in it can be created, changed or deleted",
                past_tense(req.operation)
            ),
        );
    }
    Verdict::allow()
}

/// How a denial names what the request would have done.
fn past_tense(operation: Operation) -> &'static str {
    match operation {
        Operation::Create => "created",
        Operation::Delete => "deleted",
        _ => "changed",
    }
}

fn managed(meta: Option<&ObjectMeta>) -> Option<&ObjectMeta> {
    meta.filter(|m| {
        m.labels
            .as_ref()
            .and_then(|l| l.get(labels::MANAGED_BY))
            .is_some_and(|v| v == labels::MANAGED_BY_VALUE)
    })
}

/// Objects Bulkhead manages (RoleBindings, ResourceQuotas, LimitRanges, NetworkPolicies, labelled
/// `app.kubernetes.io/managed-by=bulkhead`) are changed only by Bulkhead and administrators. A tenant user can neither change or delete them nor create objects that pose as them.
/// `kind` is the lower-case kind for the message.
pub fn managed_object(
    req: &Request<'_>,
    kind: &str,
    object: Option<&ObjectMeta>,
    old: Option<&ObjectMeta>,
) -> Verdict {
    if req.class != CallerClass::TenantUser || req.operation == Operation::Connect {
        return Verdict::allow();
    }
    let Some(meta) = managed(old).or(managed(object)) else {
        return Verdict::allow();
    };
    let name = meta.name.as_deref().unwrap_or_default();
    let tenant = meta.labels.as_ref().and_then(|l| l.get(labels::TENANT));
    let verb = past_tense(req.operation);
    let whose = tenant.map(|t| format!(" for tenant `{t}`")).unwrap_or_default();
    let pool = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(bulkhead_api::resource_pool::POOL_LABEL));
    let instead = match pool {
        Some(pool) => format!("claim from ResourcePool `{pool}` with a ResourcePoolClaim instead"),
        None => "change the Tenant instead".to_owned(),
    };
    Verdict::deny(
        tenant.map(String::as_str),
        format!(
            "{kind} `{name}` is managed by Bulkhead{whose} and cannot be {verb} by tenant users; {instead}"
        ),
    )
}

/// The `bulkhead.dev/replicated-by` label of an object, if it has one.
fn replicated_by(meta: Option<&ObjectMeta>) -> Option<(&ObjectMeta, &str)> {
    let meta = meta?;
    let owner = meta.labels.as_ref()?.get(labels::REPLICATED_BY)?;
    Some((meta, owner.as_str()))
}

/// Objects replication created (labelled `bulkhead.dev/replicated-by`) are changed only by Bulkhead,
/// administrators, and the ServiceAccount their TenantResource writes as. A tenant user can neither
/// change or delete them nor create objects that pose as them.
pub fn replicated_object(
    req: &Request<'_>,
    view: &dyn View,
    kind: &str,
    object: Option<&ObjectMeta>,
    old: Option<&ObjectMeta>,
) -> Verdict {
    if req.class != CallerClass::TenantUser || req.operation == Operation::Connect {
        return Verdict::allow();
    }
    for (meta, owner) in [replicated_by(old), replicated_by(object)].into_iter().flatten() {
        if view.replication_writer(owner).as_deref() == Some(req.caller.user.as_str()) {
            continue;
        }
        let name = meta.name.as_deref().unwrap_or_default();
        let tenant = meta.labels.as_ref().and_then(|l| l.get(labels::TENANT));
        let verb = past_tense(req.operation);
        return Verdict::deny(
            tenant.map(String::as_str),
            format!(
                "{kind} `{name}` is replicated by `{owner}` and cannot be {verb} by tenant users; change the replicating resource instead"
            ),
        );
    }
    Verdict::allow()
}

/// Tenant users may not add, change or remove the node labels and annotations the configuration's
/// `nodeMetadata` forbids.
pub fn node(req: &Request<'_>, object: Option<&Node>, old: Option<&Node>) -> Verdict {
    if req.class != CallerClass::TenantUser || req.operation != Operation::Update {
        return Verdict::allow();
    }
    let Some(rules) = req.config.node_metadata.as_ref() else {
        return Verdict::allow();
    };
    let (Some(new), Some(old)) = (object, old) else {
        return Verdict::allow();
    };
    let name = new.metadata.name.as_deref().unwrap_or_default();
    let kinds = [
        (
            "label",
            old.metadata.labels.as_ref(),
            new.metadata.labels.as_ref(),
            rules.forbidden_labels.as_ref(),
        ),
        (
            "annotation",
            old.metadata.annotations.as_ref(),
            new.metadata.annotations.as_ref(),
            rules.forbidden_annotations.as_ref(),
        ),
    ];
    for (noun, before, after, list) in kinds {
        let Some(list) = list else { continue };
        let empty = BTreeMap::new();
        let (before, after) = (before.unwrap_or(&empty), after.unwrap_or(&empty));
        let changed = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .chain(before.keys().filter(|k| !after.contains_key(*k)));
        for key in changed {
            if is_forbidden(list, key) {
                return Verdict::deny(
                    None,
                    format!("{noun} `{key}` of node `{name}` is forbidden to tenant users"),
                );
            }
        }
    }
    Verdict::allow()
}

/// Validates a Tenant beyond its schema: regular expressions compile, owners are well formed, CIDRs
/// parse; `preventDeletion` denies deletion. Applies to every caller.
pub fn tenant(req: &Request<'_>, object: Option<&Tenant>, old: Option<&Tenant>) -> Verdict {
    match req.operation {
        Operation::Delete => {
            let Some(old) = old else {
                return Verdict::allow();
            };
            let t = old.metadata.name.as_deref().unwrap_or_default();
            if old.spec.prevent_deletion {
                return Verdict::deny(
                    Some(t),
                    format!(
                        "tenant `{t}` has preventDeletion set: set it to false before deleting the tenant"
                    ),
                );
            }
            Verdict::allow()
        }
        Operation::Create | Operation::Update => match object {
            Some(tenant) => match tenant_problems(tenant)
                .into_iter()
                .chain(crate::desired::default_namespace_problems(tenant, req.config))
                .chain(crate::desired::unbindable_roles(tenant, req.config))
                .next()
            {
                Some(problem) => Verdict::deny(
                    tenant.metadata.name.as_deref(),
                    format!(
                        "tenant `{}` is invalid: {problem}",
                        tenant.metadata.name.as_deref().unwrap_or_default()
                    ),
                ),
                None => Verdict::allow(),
            },
            None => Verdict::allow(),
        },
        Operation::Connect => Verdict::allow(),
    }
}

/// Everything wrong with a Tenant that its schema cannot express, as sentences naming the field.
pub fn tenant_problems(tenant: &Tenant) -> Vec<String> {
    problems(tenant, true)
}

/// [`tenant_problems`] but for the owners: what the controller reports beside the owner problems it
/// finds itself while making bindings.
pub fn tenant_problems_beyond_owners(tenant: &Tenant) -> Vec<String> {
    problems(tenant, false)
}

fn problems(tenant: &Tenant, with_owners: bool) -> Vec<String> {
    let spec = &tenant.spec;
    let mut problems = Vec::new();
    let mut regex = |field: &str, pattern: Option<&str>| {
        if let Some(p) = pattern.filter(|p| !p.is_empty())
            && let Err(e) = pattern_matches(p, "")
        {
            problems.push(format!("{field}: {e}"));
        }
    };
    fn allowed(l: Option<&AllowedList>) -> Option<&str> {
        l.and_then(|l| l.allowed_regex.as_deref())
    }
    fn class(l: Option<&ClassAllowedList>) -> Option<&str> {
        l.and_then(|l| l.allowed_regex.as_deref())
    }
    fn denied(l: Option<&ForbiddenList>) -> Option<&str> {
        l.and_then(|l| l.denied_regex.as_deref())
    }
    let ns = spec.namespace_options.as_ref();
    let svc = spec.service_options.as_ref();
    let ing = spec.ingress_options.as_ref();
    regex(
        "containerRegistries.allowedRegex",
        allowed(spec.container_registries.as_ref()),
    );
    regex(
        "storageClasses.allowedRegex",
        class(spec.storage_classes.as_ref()),
    );
    regex(
        "priorityClasses.allowedRegex",
        class(spec.priority_classes.as_ref()),
    );
    regex(
        "runtimeClasses.allowedRegex",
        class(spec.runtime_classes.as_ref()),
    );
    regex("deviceClasses.allowedRegex", class(spec.device_classes.as_ref()));
    regex(
        "ingressOptions.allowedClasses.allowedRegex",
        class(ing.and_then(|i| i.allowed_classes.as_ref())),
    );
    regex(
        "ingressOptions.allowedHostnames.allowedRegex",
        allowed(ing.and_then(|i| i.allowed_hostnames.as_ref())),
    );
    regex(
        "gatewayOptions.allowedClasses.allowedRegex",
        class(
            spec.gateway_options
                .as_ref()
                .and_then(|g| g.allowed_classes.as_ref()),
        ),
    );
    regex(
        "namespaceOptions.forbiddenLabels.deniedRegex",
        denied(ns.and_then(|n| n.forbidden_labels.as_ref())),
    );
    regex(
        "namespaceOptions.forbiddenAnnotations.deniedRegex",
        denied(ns.and_then(|n| n.forbidden_annotations.as_ref())),
    );
    regex(
        "serviceOptions.forbiddenLabels.deniedRegex",
        denied(svc.and_then(|s| s.forbidden_labels.as_ref())),
    );
    regex(
        "serviceOptions.forbiddenAnnotations.deniedRegex",
        denied(svc.and_then(|s| s.forbidden_annotations.as_ref())),
    );
    if let Some(required) = ns.and_then(|n| n.required_metadata.as_ref()) {
        for (key, pattern) in required.labels.iter().chain(&required.annotations) {
            regex(
                &format!("namespaceOptions.requiredMetadata `{key}`"),
                Some(pattern),
            );
        }
    }
    problems.extend(super::tenant_rules::problems(tenant));
    let owners = if with_owners { spec.owners.as_slice() } else { &[] };
    for owner in owners {
        if owner.effective_kind() == OwnerKind::ServiceAccount {
            let ok = owner
                .name
                .strip_prefix(SERVICE_ACCOUNT_PREFIX)
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'));
            if !ok {
                problems.push(format!(
                    "owner `{}` of kind ServiceAccount must be named `{SERVICE_ACCOUNT_PREFIX}<namespace>:<name>`",
                    owner.name
                ));
            }
        }
        if owner.name.trim().is_empty() {
            problems.push("an owner has an empty name".to_owned());
        }
    }
    for cidr in svc
        .and_then(|s| s.external_ips.as_ref())
        .map(|e| e.allowed.as_slice())
        .unwrap_or_default()
    {
        let address = cidr.split_once('/').map_or(cidr.as_str(), |(a, _)| a);
        if !cidr_contains(cidr, address) {
            problems.push(format!(
                "serviceOptions.externalIPs.allowed: `{cidr}` is not an IP address or CIDR (allowed are addresses such as {})",
                join_or_none(["10.0.0.0/8", "192.0.2.10"])
            ));
        }
    }
    problems
}

/// The promotion labels of a ServiceAccount in a tenant namespace: `owner.projectcapsule.dev/promote`
/// (`"true"` makes the account an owner of the tenant) and `projectcapsule.dev/promote` (`"true"` gives
/// it the cluster roles of the tenant's `rules[].permissions.promotions`). Only an owner (or an
/// administrator) may set, change or remove either, whoever else asks (not one of the tenant's own
/// ServiceAccounts that `spec.owners` does not name: a promoted account may not promote others), only
/// to `"true"`, and only while the configuration's `allowServiceAccountPromotion` (and, for owners, the
/// Tenant's `permissions.promotions.allowOwnerPromotion`) allow it.
pub fn promotion(
    req: &Request<'_>,
    view: &dyn View,
    tenant: &Tenant,
    name: &str,
    object: Option<&ObjectMeta>,
    old: Option<&ObjectMeta>,
) -> Verdict {
    // Not only tenant users: anyone with `edit` in a tenant namespace (a subject of
    // additionalRoleBindings outside userGroups, a platform tool) could otherwise make an owner.
    if matches!(req.class, CallerClass::Administrator | CallerClass::Ignored) {
        return Verdict::allow();
    }
    for key in [labels::PROMOTE, labels::RULE_PROMOTE] {
        let label = |meta: Option<&ObjectMeta>| {
            meta.and_then(|m| m.labels.as_ref())
                .and_then(|l| l.get(key))
                .cloned()
        };
        let (now, before) = (label(object), label(old));
        if now == before {
            continue;
        }
        let verdict = promotion_label(req, view, tenant, name, key, now.as_deref());
        if !verdict.is_allowed() {
            return verdict;
        }
    }
    Verdict::allow()
}

/// One promotion label changed to `now` (`None`: removed).
fn promotion_label(
    req: &Request<'_>,
    view: &dyn View,
    tenant: &Tenant,
    name: &str,
    key: &str,
    now: Option<&str>,
) -> Verdict {
    let t = tenant.metadata.name.as_deref().unwrap_or_default();
    let deny = |message: String| Verdict::deny(Some(t), message);
    let in_tenant = req
        .caller
        .service_account_namespace()
        .is_some_and(|ns| view.tenant_of_namespace(ns).as_deref() == Some(t));
    let named = tenant
        .spec
        .owners
        .iter()
        .any(|o| o.subject() == bulkhead_api::Subject::from_user_name(&req.caller.user));
    if in_tenant && !named {
        return deny(format!(
            "serviceaccount `{name}`: the label `{key}` cannot be changed by a ServiceAccount of tenant `{t}` (a promoted account may not promote others)"
        ));
    }
    if !view.tenants_owned_by(req.caller).contains(t) {
        return deny(format!(
            "serviceaccount `{name}`: only an owner of tenant `{t}` may set or remove the label `{key}`"
        ));
    }
    let Some(value) = now else {
        return Verdict::allow();
    };
    if value != "true" {
        return deny(format!(
            "serviceaccount `{name}`: the label `{key}` may only be \"true\" (it promotes the account in tenant `{t}`), not {value:?}"
        ));
    }
    let allowed = if key == labels::PROMOTE {
        crate::owners::promotion_allowed(tenant, req.config)
    } else {
        req.config.allow_service_account_promotion
    };
    if !allowed {
        let why = if req.config.allow_service_account_promotion {
            format!("tenant `{t}` does not allow it (permissions.promotions.allowOwnerPromotion is false)")
        } else {
            "the BulkheadConfiguration does not allow it (allowServiceAccountPromotion is false)".to_owned()
        };
        let what = if key == labels::PROMOTE {
            "to owner of"
        } else {
            "in"
        };
        return deny(format!(
            "serviceaccount `{name}` cannot be promoted {what} tenant `{t}`: {why}"
        ));
    }
    Verdict::allow()
}
