//! Namespace admission: tenant assignment on create, and the ownership rules on every later write.

use std::collections::{BTreeMap, BTreeSet};

use bulkhead_api::common::ForbiddenList;
use bulkhead_api::{Tenant, labels};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};

use super::lists::{is_forbidden, pattern_matches};
use super::{Operation, Request, Verdict, View, join_or_none, metadata_patch};
use crate::desired::{TenantNamespace, namespace_metadata, tenant_owner_reference};
use crate::identity::CallerClass;
use crate::migration;

/// Decides a write to a Namespace (including its `status` and `finalize` subresources).
/// `object` is the namespace after the write (absent on delete), `old` before it (absent on create).
pub fn namespace(
    req: &Request<'_>,
    view: &dyn View,
    object: Option<&Namespace>,
    old: Option<&Namespace>,
) -> Verdict {
    match (req.operation, object, old) {
        (Operation::Create, Some(ns), _) => create(req, view, ns),
        (Operation::Update, Some(ns), Some(old)) => update(req, view, ns, old),
        (Operation::Delete, _, Some(old)) => delete(req, view, old),
        (Operation::Connect, _, _) => Verdict::allow(),
        _ => Verdict::deny(None, "the admission request carries no namespace object"),
    }
}

fn name_of(ns: &Namespace) -> &str {
    ns.metadata.name.as_deref().unwrap_or_default()
}

fn map_of(map: Option<&BTreeMap<String, String>>) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    map.unwrap_or(&EMPTY)
}

/// The tenant label of a namespace.
fn tenant_label(ns: &Namespace) -> Option<&str> {
    map_of(ns.metadata.labels.as_ref())
        .get(labels::TENANT)
        .map(String::as_str)
}

/// The ownerReferences of a namespace that point at a Tenant.
fn tenant_references(ns: &Namespace) -> Vec<&OwnerReference> {
    ns.metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.kind == "Tenant" && r.api_version.starts_with("bulkhead.dev/"))
        .collect()
}

/// The tenant a namespace claims, by label or by ownerReference.
fn claimed_tenant(ns: &Namespace) -> Option<&str> {
    tenant_label(ns).or_else(|| tenant_references(ns).first().map(|r| r.name.as_str()))
}

fn no_tenant_message(req: &Request<'_>) -> String {
    let groups = if req.caller.groups.is_empty() {
        String::new()
    } else {
        format!(" (groups {})", join_or_none(&req.caller.groups))
    };
    format!(
        "no tenant assigned to you: `{}`{groups} is not an owner of any Tenant, so it cannot create namespaces",
        req.caller.user
    )
}

fn create(req: &Request<'_>, view: &dyn View, ns: &Namespace) -> Verdict {
    let name = name_of(ns);
    if req.class != CallerClass::TenantUser {
        // Administrators and users Bulkhead does not manage create unmanaged namespaces, or assign
        // one to a tenant explicitly.
        let Some(tenant_name) = claimed_tenant(ns) else {
            return Verdict::allow();
        };
        let Some(tenant) = view.tenant(tenant_name) else {
            return Verdict::deny(
                None,
                format!("namespace `{name}` names tenant `{tenant_name}`, which does not exist"),
            );
        };
        if let Some(denial) = foreign_references(&tenant, ns) {
            return denial;
        }
        return Verdict::Allow(assignment_patch(&tenant, ns));
    }

    let owned = view.tenants_owned_by(req.caller);
    let tenant_name = match tenant_label(ns) {
        Some(label) if owned.contains(label) => label.to_owned(),
        Some(label) if owned.is_empty() => {
            return Verdict::deny(Some(label), no_tenant_message(req));
        }
        Some(label) => {
            return Verdict::deny(
                Some(label),
                format!(
                    "you are not an owner of tenant `{label}`: you may create namespaces in {}",
                    join_or_none(&owned)
                ),
            );
        }
        None => match choose_tenant(&owned, name) {
            Ok(t) => t,
            Err(message) => return Verdict::deny(None, message.unwrap_or_else(|| no_tenant_message(req))),
        },
    };
    let t = tenant_name.as_str();
    let Some(tenant) = view.tenant(t) else {
        return Verdict::deny(Some(t), format!("tenant `{t}` does not exist"));
    };
    if tenant.spec.cordoned {
        return cordoned_denial(t, &format!("namespace `{name}` cannot be created"));
    }
    let prefix = format!("{t}-");
    if tenant
        .spec
        .force_tenant_prefix
        .unwrap_or(req.config.force_tenant_prefix)
        && !name.starts_with(&prefix)
    {
        return Verdict::deny(
            Some(t),
            format!("namespace `{name}` must be named `{prefix}<name>`: tenant `{t}` requires its prefix"),
        );
    }
    if let Some(re) = req
        .config
        .protected_namespace_regex
        .as_deref()
        .filter(|r| !r.is_empty())
    {
        match pattern_matches(re, name) {
            Ok(false) => {}
            Ok(true) => {
                return Verdict::deny(
                    Some(t),
                    format!("namespace name `{name}` is protected: it matches `{re}`"),
                );
            }
            Err(e) => return Verdict::deny(Some(t), format!("protectedNamespaceRegex: {e}")),
        }
    }
    let options = tenant.spec.namespace_options.as_ref();
    if let Some(quota) = options.and_then(|o| o.quota) {
        let count = view.namespace_count(t);
        if count >= usize::try_from(quota).unwrap_or(0) {
            return Verdict::deny(
                Some(t),
                format!(
                    "namespace `{name}` is over the namespace quota of tenant `{t}`: it has {count} of {quota} namespaces"
                ),
            );
        }
    }
    if let Some(denial) = foreign_references(&tenant, ns) {
        return denial;
    }
    if let Some(denial) = capsule_claim_denial(name, t, ns, "") {
        return denial;
    }
    if let Some(denial) = metadata_changes(&tenant, None, ns) {
        return denial;
    }
    Verdict::Allow(assignment_patch(&tenant, ns))
}

/// Picks the tenant for a namespace created without a label. `Err(None)` means the caller owns no
/// tenant; `Err(Some(message))` that it owns several and the name picks none.
fn choose_tenant(owned: &BTreeSet<String>, name: &str) -> Result<String, Option<String>> {
    match owned.len() {
        0 => Err(None),
        1 => Ok(owned.iter().next().cloned().unwrap_or_default()),
        _ => owned
            .iter()
            .filter(|t| name.len() > t.len() + 1 && name.starts_with(t.as_str()) && name.as_bytes()[t.len()] == b'-')
            .max_by_key(|t| t.len())
            .cloned()
            .ok_or_else(|| {
                Some(format!(
                    "you own several tenants ({}): name the namespace `<tenant>-<name>` or set the label `{}`",
                    join_or_none(owned),
                    labels::TENANT
                ))
            }),
    }
}

fn cordoned_denial(tenant: &str, what: &str) -> Verdict {
    Verdict::deny(
        Some(tenant),
        format!("{what}: tenant `{tenant}` is cordoned, nothing in it can be created, changed or deleted"),
    )
}

/// A tenant user may not point a namespace at a Tenant other than its own.
fn foreign_references(tenant: &Tenant, ns: &Namespace) -> Option<Verdict> {
    let ours = tenant_owner_reference(tenant);
    let foreign = tenant_references(ns)
        .into_iter()
        .find(|r| r.name != ours.name || (!r.uid.is_empty() && !ours.uid.is_empty() && r.uid != ours.uid))?;
    Some(Verdict::deny(
        Some(&ours.name),
        format!(
            "namespace `{}` cannot carry an ownerReference to Tenant `{}`: it belongs to tenant `{}`",
            name_of(ns),
            foreign.name,
            ours.name
        ),
    ))
}

/// The patch that puts a new namespace into `tenant`: the tenant label, the metadata Bulkhead
/// manages, and a controller ownerReference to the Tenant.
fn assignment_patch(tenant: &Tenant, ns: &Namespace) -> Vec<Value> {
    let wanted = namespace_metadata(
        tenant,
        &TenantNamespace {
            name: name_of(ns).to_owned(),
            labels: map_of(ns.metadata.labels.as_ref()).clone(),
        },
    );
    let mut patch = metadata_patch("labels", ns.metadata.labels.as_ref(), &wanted.labels);
    patch.extend(metadata_patch(
        "annotations",
        ns.metadata.annotations.as_ref(),
        &wanted.annotations,
    ));
    let reference = tenant_owner_reference(tenant);
    if !reference.uid.is_empty() {
        let present = tenant_references(ns).iter().any(|r| r.uid == reference.uid);
        match &ns.metadata.owner_references {
            None => {
                patch.push(json!({"op": "add", "path": "/metadata/ownerReferences", "value": [reference]}))
            }
            Some(_) if present => {}
            Some(_) => {
                patch.push(json!({"op": "add", "path": "/metadata/ownerReferences/-", "value": reference}))
            }
        }
    }
    patch
}

/// The labels and annotations a tenant user added, changed or removed (between `old` and `new`) that
/// the tenant forbids or Bulkhead locks. Keys Bulkhead itself manages may only keep Bulkhead's value.
fn metadata_changes(tenant: &Tenant, old: Option<&Namespace>, new: &Namespace) -> Option<Verdict> {
    let t = tenant.metadata.name.as_deref().unwrap_or_default();
    let managed = namespace_metadata(
        tenant,
        &TenantNamespace {
            name: name_of(new).to_owned(),
            labels: map_of(new.metadata.labels.as_ref()).clone(),
        },
    );
    let options = tenant.spec.namespace_options.as_ref();
    let kinds = [
        (
            "label",
            old.and_then(|o| o.metadata.labels.as_ref()),
            new.metadata.labels.as_ref(),
            options.and_then(|o| o.forbidden_labels.as_ref()),
            &managed.labels,
        ),
        (
            "annotation",
            old.and_then(|o| o.metadata.annotations.as_ref()),
            new.metadata.annotations.as_ref(),
            options.and_then(|o| o.forbidden_annotations.as_ref()),
            &managed.annotations,
        ),
    ];
    for (noun, before, after, forbidden, managed) in kinds {
        let (before, after) = (map_of(before), map_of(after));
        for key in changed_keys(before, after) {
            if key == labels::NODE_SELECTOR_ANNOTATION && noun == "annotation" {
                if after.get(key) != managed.get(key) {
                    return Some(Verdict::deny(
                        Some(t),
                        format!(
                            "annotation `{key}` of namespace `{}` is set by Bulkhead from the node selector of tenant `{t}` and cannot be changed",
                            name_of(new)
                        ),
                    ));
                }
                continue;
            }
            // What Bulkhead stamps (additionalMetadata, Pod Security labels among them) keeps Bulkhead's
            // value: a tenant user cannot change it even for the moments before the next reconcile. (On
            // create the mutation writes Bulkhead's value over the user's.)
            if let Some(value) = managed.get(key) {
                if old.is_some() && after.get(key) != Some(value) {
                    return Some(Verdict::deny(
                        Some(t),
                        format!(
                            "{noun} `{key}` of namespace `{}` is set by Bulkhead to `{value}` for tenant `{t}` and cannot be changed or removed",
                            name_of(new)
                        ),
                    ));
                }
                continue;
            }
            if forbidden.is_some_and(|f| is_forbidden(f, key)) {
                return Some(Verdict::deny(
                    Some(t),
                    format!(
                        "{noun} `{key}` is forbidden on the namespaces of tenant `{t}` ({})",
                        describe_forbidden(forbidden)
                    ),
                ));
            }
        }
    }
    required_metadata(tenant, old, new)
}

fn describe_forbidden(list: Option<&ForbiddenList>) -> String {
    let Some(list) = list else {
        return String::new();
    };
    let mut parts = Vec::new();
    if !list.denied.is_empty() {
        parts.push(format!("forbidden: {}", join_or_none(&list.denied)));
    }
    if let Some(re) = list.denied_regex.as_deref().filter(|r| !r.is_empty()) {
        parts.push(format!("keys matching `{re}`"));
    }
    parts.join("; ")
}

/// Keys added, changed or removed between two maps.
fn changed_keys<'a>(
    before: &'a BTreeMap<String, String>,
    after: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = &'a str> {
    let added_or_changed = after
        .iter()
        .filter(move |(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str());
    let removed = before
        .keys()
        .filter(move |k| !after.contains_key(*k))
        .map(String::as_str);
    added_or_changed.chain(removed)
}

/// `requiredMetadata`: each listed key must be present with a value matching its pattern. On update
/// only keys the write touches are checked, so an older namespace stays editable.
fn required_metadata(tenant: &Tenant, old: Option<&Namespace>, new: &Namespace) -> Option<Verdict> {
    let t = tenant.metadata.name.as_deref().unwrap_or_default();
    let required = tenant
        .spec
        .namespace_options
        .as_ref()
        .and_then(|o| o.required_metadata.as_ref())?;
    let kinds = [
        (
            "label",
            &required.labels,
            old.map(|o| map_of(o.metadata.labels.as_ref())),
            map_of(new.metadata.labels.as_ref()),
        ),
        (
            "annotation",
            &required.annotations,
            old.map(|o| map_of(o.metadata.annotations.as_ref())),
            map_of(new.metadata.annotations.as_ref()),
        ),
    ];
    for (noun, wanted, before, after) in kinds {
        for (key, pattern) in wanted {
            if before.is_some_and(|b| b.get(key) == after.get(key)) {
                continue;
            }
            let ok = after
                .get(key)
                .is_some_and(|v| pattern.is_empty() || pattern_matches(pattern, v).unwrap_or(false));
            if !ok {
                return Some(Verdict::deny(
                    Some(t),
                    format!(
                        "namespace `{}` needs the {noun} `{key}` with a value matching `{pattern}`, as tenant `{t}` requires",
                        name_of(new)
                    ),
                ));
            }
        }
    }
    None
}

/// A tenant user's namespace may carry Capsule's tenant label and ownerReferences to Capsule's Tenants
/// only naming its own tenant: adoption from Capsule reads them (docs/migrating.md), so naming another
/// would queue the namespace for adoption into that tenant. Naming its own is what Capsule's webhook
/// writes while both run, and removing them loses nothing.
fn capsule_claim_denial(name: &str, tenant: &str, ns: &Namespace, via: &str) -> Option<Verdict> {
    let (label, references) = migration::capsule_claim(ns);
    let foreign = label.is_some_and(|l| l != tenant) || references.iter().any(|(n, _)| *n != tenant);
    foreign.then(|| {
        Verdict::deny(
            Some(tenant),
            format!(
                "namespace `{name}` of tenant `{tenant}` cannot carry the label `{}` or an ownerReference to a Capsule Tenant naming another tenant{via}: they decide which tenant adopts it",
                labels::CAPSULE_TENANT
            ),
        )
    })
}

fn update(req: &Request<'_>, view: &dyn View, new: &Namespace, old: &Namespace) -> Verdict {
    if req.class != CallerClass::TenantUser {
        return Verdict::allow();
    }
    let name = name_of(new);
    let via = req
        .subresource
        .map(|s| format!(" (through `{s}`)"))
        .unwrap_or_default();
    let Some(t) = claimed_tenant(old) else {
        if let Some(claimed) = claimed_tenant(new) {
            return Verdict::deny(
                Some(claimed),
                format!(
                    "namespace `{name}` is not part of a tenant and cannot be moved into tenant `{claimed}`{via}"
                ),
            );
        }
        // Not (yet) Bulkhead's: what decides its adoption stays as it is.
        if migration::capsule_claim(old) != migration::capsule_claim(new) {
            return Verdict::deny(
                migration::capsule_claim(old).0,
                format!(
                    "the label `{}` and ownerReferences to Capsule's Tenants of namespace `{name}` cannot be changed{via}: they decide which tenant adopts it",
                    labels::CAPSULE_TENANT
                ),
            );
        }
        return Verdict::allow();
    };
    if let Some(denial) = capsule_claim_denial(name, t, new, &via) {
        return denial;
    }
    let owned = view.tenants_owned_by(req.caller);
    if !owned.contains(t) {
        return Verdict::deny(
            Some(t),
            format!("namespace `{name}` belongs to tenant `{t}`, of which you are not an owner"),
        );
    }
    let Some(tenant) = view.tenant(t) else {
        return Verdict::deny(
            Some(t),
            format!("tenant `{t}` of namespace `{name}` does not exist"),
        );
    };
    if tenant.spec.cordoned {
        return cordoned_denial(t, &format!("namespace `{name}` cannot be changed"));
    }
    match tenant_label(new) {
        Some(label) if label == t => {}
        Some(label) => {
            return Verdict::deny(
                Some(t),
                format!(
                    "namespace `{name}` belongs to tenant `{t}` and cannot be moved to tenant `{label}`{via}: the label `{}` is locked",
                    labels::TENANT
                ),
            );
        }
        None => {
            return Verdict::deny(
                Some(t),
                format!(
                    "the label `{}` of namespace `{name}` cannot be removed{via}: it belongs to tenant `{t}`",
                    labels::TENANT
                ),
            );
        }
    }
    let before: BTreeSet<(&str, &str, &str)> = tenant_references(old)
        .into_iter()
        .map(|r| (r.name.as_str(), r.uid.as_str(), r.api_version.as_str()))
        .collect();
    let after: BTreeSet<(&str, &str, &str)> = tenant_references(new)
        .into_iter()
        .map(|r| (r.name.as_str(), r.uid.as_str(), r.api_version.as_str()))
        .collect();
    if before != after {
        return Verdict::deny(
            Some(t),
            format!(
                "the ownerReference of namespace `{name}` to its Tenant `{t}` cannot be added, changed or removed{via}"
            ),
        );
    }
    if let Some(denial) = metadata_changes(&tenant, Some(old), new) {
        return denial;
    }
    Verdict::allow()
}

fn delete(req: &Request<'_>, view: &dyn View, old: &Namespace) -> Verdict {
    if req.class != CallerClass::TenantUser {
        return Verdict::allow();
    }
    let name = name_of(old);
    let Some(t) = claimed_tenant(old) else {
        return Verdict::allow();
    };
    if !view.tenants_owned_by(req.caller).contains(t) {
        return Verdict::deny(
            Some(t),
            format!("namespace `{name}` belongs to tenant `{t}`, of which you are not an owner"),
        );
    }
    if view.tenant(t).is_some_and(|tenant| tenant.spec.cordoned) {
        return cordoned_denial(t, &format!("namespace `{name}` cannot be deleted"));
    }
    Verdict::allow()
}
