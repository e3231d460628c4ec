//! Capsule compatibility and round trips.
//!
//! The promise: every Capsule `v1beta2` Tenant in `capsule-compat/` (a copy of the project's shared
//! corpus), with only its apiVersion changed, is accepted by the Tenant CRD under strict field validation
//! and means the same thing once read into Bulkhead's types.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test file: failing loudly is the point

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bulkhead_api::Tenant;
use bulkhead_api::owner::{OwnerKind, ProxyKind, ProxyOperation, Subject};
use bulkhead_api::tenant::{HostnameCollisionScope, QuotaScope};
use bulkhead_api::validation::validate;
use kube::CustomResourceExt;
use serde_json::Value;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/capsule-compat")
}

fn corpus() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let migrated = text.replace(
                "apiVersion: capsule.clastix.io/v1beta2",
                "apiVersion: bulkhead.dev/v1alpha1",
            );
            assert_ne!(text, migrated, "{} has no Capsule apiVersion", p.display());
            let value: Value = serde_saphyr::from_str(&migrated).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), value)
        })
        .collect()
}

fn tenant(name: &str) -> Tenant {
    let (_, value) = corpus().into_iter().find(|(n, _)| n == name).unwrap();
    serde_json::from_value(value).unwrap()
}

#[test]
fn the_corpus_copy_matches_the_shared_one() {
    // CI and developers have ../shared beside the checkout; a lone clone tests its own copy.
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/capsule-compat");
    let Ok(entries) = std::fs::read_dir(&shared) else {
        return;
    };
    let mut count = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let ours = corpus_dir().join(path.file_name().unwrap());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&ours).unwrap_or_default(),
            "{} differs from the shared corpus: copy it again",
            ours.display()
        );
        count += 1;
    }
    assert_eq!(count, std::fs::read_dir(corpus_dir()).unwrap().count());
}

#[test]
fn every_capsule_tenant_is_accepted_under_strict_validation() {
    // The CRD as installed: with the CEL rules (`Tenant::crd()` alone has none).
    let crd = bulkhead_api::crds::all()
        .into_iter()
        .find(|c| c.spec.names.kind == "Tenant")
        .unwrap();
    let corpus = corpus();
    assert_eq!(corpus.len(), 65);
    for (name, value) in corpus {
        let errors = validate(&crd, &value);
        assert!(errors.is_empty(), "{name} rejected: {errors:#?}");
        let tenant: Tenant = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        // What Bulkhead writes back is accepted again.
        let written = serde_json::to_value(&tenant).unwrap();
        assert!(
            validate(&crd, &written).is_empty(),
            "{name}: written form rejected"
        );
    }
}

#[test]
fn capsule_tenants_mean_the_same_thing() {
    // The singular proxy kind `Node` (a Capsule documentation page uses it) means Nodes.
    let t = tenant("004-oil.yaml");
    assert_eq!(t.spec.owners[0].proxy_settings[0].kind, ProxyKind::Nodes);
    assert_eq!(
        t.spec.owners[0].proxy_settings[0].operations,
        [ProxyOperation::List]
    );
    assert_eq!(
        t.spec.node_selector,
        BTreeMap::from([("capsule.clastix.io/tenant".into(), "oil".into())])
    );

    // An owner without a kind is inferred from its name.
    let t = tenant("064-my-tenant.yaml");
    assert_eq!(
        t.spec.owners[0].subject(),
        Subject::ServiceAccount("system:serviceaccount:my-tenant:gitops-reconciler".into())
    );
    let t = tenant("047-solar.yaml");
    assert_eq!(t.spec.owners[0].effective_kind(), OwnerKind::ServiceAccount);

    // Default cluster roles, and explicit ones kept as written.
    let t = tenant("042-solar.yaml");
    assert_eq!(
        t.spec.owners[0].cluster_roles,
        ["admin", "bulkhead-namespace-deleter"]
    );
    let t = tenant("048-solar.yaml");
    assert_eq!(t.spec.owners[1].cluster_roles, ["view"]);

    // An empty resourceQuotas means tenant scope with no items; quota and scope are kept.
    let t = tenant("007-migration.yaml");
    let rq = t.spec.resource_quotas.unwrap();
    assert_eq!((rq.scope, rq.items.len()), (QuotaScope::Tenant, 0));
    let t = tenant("052-solar.yaml");
    assert_eq!(t.spec.namespace_options.as_ref().unwrap().quota, Some(3));
    assert_eq!(t.spec.resource_quotas.unwrap().items.len(), 2);

    // externalIPs with an empty list (no external IP allowed) is not the same as no externalIPs.
    let t = tenant("018-solar.yaml");
    assert_eq!(
        t.spec.service_options.unwrap().external_ips.unwrap().allowed,
        Vec::<String>::new()
    );
    let t = tenant("020-solar.yaml");
    let allowed = t.spec.service_options.unwrap().allowed_services.unwrap();
    assert!(!allowed.node_port && allowed.external_name && allowed.load_balancer);

    // Regexes are kept byte for byte.
    let t = tenant("034-solar.yaml");
    assert_eq!(
        t.spec.container_registries.unwrap().allowed_regex.as_deref(),
        Some(r"internal.registry.\\w.tld")
    );

    // Selector-based class lists and defaults.
    let t = tenant("032-solar.yaml");
    let sc = t.spec.storage_classes.unwrap();
    assert_eq!(sc.default.as_deref(), Some("tenant-default"));
    assert_eq!(sc.selector().unwrap().match_labels.unwrap()["env"], "production");
    let t = tenant("060-oil.yaml");
    let rc = t.spec.runtime_classes.unwrap();
    assert_eq!(rc.match_expressions.unwrap()[0].operator, "Exists");

    // Ingress options.
    let t = tenant("026-solar.yaml");
    assert_eq!(
        t.spec.ingress_options.unwrap().hostname_collision_scope,
        HostnameCollisionScope::Tenant
    );
    let t = tenant("025-solar.yaml");
    let hosts = t.spec.ingress_options.unwrap().allowed_hostnames.unwrap();
    assert_eq!(hosts.allowed, ["solar.acmecorp.com"]);

    // Free-form data keeps its types.
    let t = tenant("005-solar.yaml");
    let data = t.spec.data.unwrap();
    assert_eq!(data["number"], 123);
    assert_eq!(data["obj"]["nested"], "value");

    // Additional metadata lists with selectors, required metadata, managed-only.
    let t = tenant("037-solar.yaml");
    let ns = t.spec.namespace_options.unwrap();
    assert_eq!(ns.additional_metadata_list.len(), 3);
    assert!(ns.additional_metadata_list[0].namespace_selector.is_none());
    let t = tenant("036-solar.yaml");
    let required = t.spec.namespace_options.unwrap().required_metadata.unwrap();
    assert_eq!(required.labels["env"], "^(prod|test|dev)$");
    assert!(
        tenant("035-solar.yaml")
            .spec
            .namespace_options
            .unwrap()
            .managed_metadata_only
    );

    // Flags.
    assert!(tenant("008-solar.yaml").spec.cordoned);
    assert_eq!(tenant("009-solar.yaml").spec.force_tenant_prefix, Some(true));
    assert!(tenant("010-solar.yaml").spec.prevent_deletion);

    // Status written into a manifest is read (and ignored on create by the status subresource).
    let t = tenant("006-migration.yaml");
    assert_eq!(
        t.status.unwrap().namespaces,
        ["migration-dev", "migration-prod", "migration-test"]
    );
}

#[test]
fn the_full_example_round_trips_without_loss() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tenant-full.yaml");
    let original: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(
        validate(&Tenant::crd(), &original).is_empty(),
        "{:#?}",
        validate(&Tenant::crd(), &original)
    );
    let tenant: Tenant = serde_json::from_value(original.clone()).unwrap();
    let written = serde_json::to_value(&tenant).unwrap();
    assert_eq!(written, original);
    // Every top-level spec field is exercised.
    let schema = serde_json::to_value(Tenant::crd()).unwrap();
    let fields =
        schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            .as_object()
            .unwrap();
    for field in fields.keys() {
        assert!(
            original["spec"].get(field).is_some(),
            "examples/tenant-full.yaml does not use spec.{field}"
        );
    }
}

#[test]
fn every_bulkhead_object_in_the_examples_is_accepted_under_strict_validation() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let crds = bulkhead_api::crds::all();
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let docs: Vec<Value> = serde_saphyr::from_multiple(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for doc in docs.into_iter().filter(|d| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("bulkhead.dev/"))
        }) {
            let kind = doc["kind"].as_str().unwrap();
            let crd = crds
                .iter()
                .find(|c| c.spec.names.kind == kind)
                .unwrap_or_else(|| panic!("no CRD for {kind}"));
            let errors = validate(crd, &doc);
            assert!(errors.is_empty(), "{} {kind}: {errors:#?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 5, "{checked}");
}
