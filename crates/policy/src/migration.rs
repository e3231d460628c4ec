//! Taking a cluster over from Capsule: which namespaces Capsule made for which tenant, and the
//! ownerReferences a tenant namespace ends up with in each phase (docs/migrating.md).

use bulkhead_api::config::CapsuleMigration;
use bulkhead_api::labels::CAPSULE_TENANT;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// Whether an ownerReference points at one of Capsule's Tenants.
pub fn is_capsule_tenant(reference: &OwnerReference) -> bool {
    reference.kind == "Tenant" && reference.api_version.starts_with("capsule.clastix.io/")
}

/// The Capsule tenant a namespace was made for: Capsule's label and Capsule's ownerReference must
/// both name it (a label alone is what anyone with namespace rights could write).
pub fn capsule_tenant_of(ns: &Namespace) -> Option<&str> {
    let label = ns.metadata.labels.as_ref()?.get(CAPSULE_TENANT)?;
    ns.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| is_capsule_tenant(r) && r.name == *label)
        .then_some(label.as_str())
}

/// What a tenant user may not change on a namespace, because adoption reads it: Capsule's tenant label
/// and ownerReferences to Capsule's Tenants.
pub fn capsule_claim(ns: &Namespace) -> (Option<&str>, Vec<(&str, &str)>) {
    let label = ns
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CAPSULE_TENANT))
        .map(String::as_str);
    let mut refs: Vec<(&str, &str)> = ns
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| is_capsule_tenant(r))
        .map(|r| (r.name.as_str(), r.uid.as_str()))
        .collect();
    refs.sort_unstable();
    (label, refs)
}

/// The ownerReferences a tenant namespace should have besides those Bulkhead does not manage: Bulkhead's
/// `ours` is the controller reference unless another controller reference stays (Capsule's, before
/// `Complete`), since an object has at most one. With `Complete`, Capsule's references go.
pub fn owner_references(
    current: &[OwnerReference],
    ours: &OwnerReference,
    phase: Option<CapsuleMigration>,
) -> Vec<OwnerReference> {
    let complete = phase == Some(CapsuleMigration::Complete);
    let mut kept: Vec<OwnerReference> = current
        .iter()
        .filter(|r| r.uid != ours.uid)
        .filter(|r| !(complete && is_capsule_tenant(r)))
        .cloned()
        .collect();
    let other_controller = kept.iter().any(|r| r.controller == Some(true));
    let mut mine = ours.clone();
    if other_controller {
        mine.controller = Some(false);
    }
    kept.push(mine);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reference(api_version: &str, name: &str, uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: "Tenant".into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: Some(true),
        }
    }

    fn ns(labels: serde_json::Value, refs: &[OwnerReference]) -> Namespace {
        serde_json::from_value(
            json!({"metadata": {"name": "solar-a", "labels": labels, "ownerReferences": refs}}),
        )
        .unwrap_or_default()
    }

    #[test]
    fn a_capsule_namespace_needs_both_the_label_and_the_owner_reference() {
        let capsule = reference("capsule.clastix.io/v1beta2", "solar", "c-1", true);
        assert_eq!(
            capsule_tenant_of(&ns(
                json!({CAPSULE_TENANT: "solar"}),
                std::slice::from_ref(&capsule)
            )),
            Some("solar")
        );
        // A label alone, or a label naming another tenant than the reference, is no claim.
        assert_eq!(
            capsule_tenant_of(&ns(json!({CAPSULE_TENANT: "solar"}), &[])),
            None
        );
        assert_eq!(
            capsule_tenant_of(&ns(
                json!({CAPSULE_TENANT: "wind"}),
                std::slice::from_ref(&capsule)
            )),
            None
        );
        let ours = reference("bulkhead.dev/v1alpha1", "solar", "c-1", true);
        assert_eq!(
            capsule_tenant_of(&ns(json!({CAPSULE_TENANT: "solar"}), &[ours])),
            None
        );
    }

    #[test]
    fn bulkhead_is_controller_only_once_capsule_lets_go() {
        let capsule = reference("capsule.clastix.io/v1beta2", "solar", "c-1", true);
        let other = reference("example.com/v1", "x", "o-1", false);
        let ours = reference("bulkhead.dev/v1alpha1", "solar", "b-1", true);
        let adopt = owner_references(
            &[capsule.clone(), other.clone()],
            &ours,
            Some(CapsuleMigration::Adopt),
        );
        assert_eq!(adopt.len(), 3);
        assert_eq!(adopt[2].uid, "b-1");
        assert_eq!(adopt[2].controller, Some(false));
        assert_eq!(
            adopt[0].controller,
            Some(true),
            "Capsule's reference stays the controller"
        );
        let complete = owner_references(&adopt, &ours, Some(CapsuleMigration::Complete));
        assert_eq!(
            complete
                .iter()
                .map(|r| (r.uid.as_str(), r.controller))
                .collect::<Vec<_>>(),
            [("o-1", Some(false)), ("b-1", Some(true))]
        );
        // Without a migration Capsule's reference is left alone, and Bulkhead's does not claim control.
        let off = owner_references(&[capsule], &ours, None);
        assert_eq!(off.len(), 2);
        assert_eq!(off[1].controller, Some(false));
    }
}
