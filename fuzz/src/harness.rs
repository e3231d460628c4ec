//! What each fuzz target does with its input. The same functions replay the committed corpus in the
//! workspace's tests (`crates/bulkhead/tests/fuzz_corpus.rs`, stable Rust), so every finding, once in
//! the corpus, is a regression test. Each function panics only when an invariant breaks.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bulkhead_api::config::BulkheadConfigurationSpec;
use bulkhead_api::{Tenant, labels};
use bulkhead_cache::Cache;
use bulkhead_policy::admission::{Verdict, registry_of, tenant_problems};
use bulkhead_proxy::route::{Query, Target as RouteTarget};
use bulkhead_webhook::review::{decode, encode};
use bulkhead_webhook::{Check, Context, audit_annotations, decide_audited};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::runtime::watcher::Event;

/// A cache holding one tenant with most rules set and one of its namespaces, built once.
fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let cache = Cache::detached();
        let tenant: Tenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "solar", "uid": "uid-solar"},
            "spec": {
                "owners": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "solar-devs"}],
                "namespaceOptions": {"quota": 3, "forbiddenLabels": {"denied": ["team"], "deniedRegex": "^internal\\."}},
                "containerRegistries": {"allowed": ["quay.io"], "allowedRegex": "\\.solar\\.corp$"},
                "storageClasses": {"allowed": ["silver"], "default": "silver"},
                "priorityClasses": {"allowed": ["high"]},
                "serviceOptions": {"allowedServices": {"nodePort": false}, "externalIPs": {"allowed": ["10.0.0.0/8"]}},
                "ingressOptions": {"allowedClasses": {"allowed": ["nginx"]}, "allowedHostnames": {"allowedRegex": "^.*\\.solar\\.example\\.com$"}, "hostnameCollisionScope": "Cluster"},
                "nodeSelector": {"pool": "solar"},
                "rules": [
                    {"enforce": {"action": "allow", "workloads": {"registries": [{"exp": "^quay\\.io/", "policy": ["IfNotPresent"]}, {"exact": ["{{ .tenant.metadata.name }}/{{ .namespace.metadata.name }}/app:1"]}]}}},
                    {"audience": [{"kind": "Custom", "name": "TenantOwner"}], "enforce": {"action": "audit", "workloads": {"qosClasses": ["BestEffort"], "schedulers": [{"exp": ".*", "negate": true}]}}},
                    {"namespaceSelector": {"matchLabels": {"env": "prod"}}, "enforce": {"action": "deny", "conditions": [{"expression": "has(object.metadata.labels) && 'debug' in object.metadata.labels"}], "services": {"types": ["NodePort"], "externalNames": {"hostnames": [{"exp": "\\.evil$"}]}}}},
                    {"enforce": {"action": "allow", "metadata": [{"kinds": ["Namespace"], "labels": {"env": {"required": true, "default": "dev", "values": [{"exact": ["dev", "prod"]}]}, "a.b/.*": {"values": [{"exp": "x"}]}}, "annotations": {"owner": {"managed": "solar"}}}]}}
                ],
            }
        }))
        .unwrap_or_else(|e| panic!("the fuzz tenant does not parse: {e}"));
        let feed = cache.tenants_feed();
        feed.apply(Event::Init);
        feed.apply(Event::InitApply(tenant));
        feed.apply(Event::InitDone);
        let ns: Namespace = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "solar-one", "labels": {labels::TENANT: "solar"}}}),
        )
        .unwrap_or_else(|e| panic!("the fuzz namespace does not parse: {e}"));
        let feed = cache.namespaces_feed();
        feed.apply(Event::Init);
        feed.apply(Event::InitApply(ns));
        feed.apply(Event::InitDone);
        cache
    })
}

/// An AdmissionReview body as the webhook reads it: decoded, decided by every check, encoded. A body
/// either does not decode (a 400 with a reason) or yields a response for every check.
pub fn admission_review(data: &[u8]) {
    let Ok((api_version, request)) = decode(data) else {
        return;
    };
    let config = BulkheadConfigurationSpec::default();
    for (check, mutating) in Check::ALL.into_iter().flat_map(|c| [(c, false), (c, true)]) {
        if mutating && !check.mutates() {
            continue;
        }
        let ctx = Context {
            view: cache(),
            config: &config,
            own_identity: "system:serviceaccount:bulkhead-system:bulkhead",
            mutating,
        };
        if let Ok((verdict, audits)) = decide_audited(check, &request, &ctx) {
            let audit = audit_annotations(check, &request, &verdict, ctx.view);
            let response = encode(&api_version, &request.uid, &verdict, mutating, &audit, &audits);
            assert_eq!(response["response"]["uid"], request.uid.as_str());
            if let Verdict::Deny(denial) = &verdict {
                assert!(!denial.message.is_empty(), "a denial without a message");
            }
        }
    }
}

/// A request line as the proxy routes it: `path?query`. The requirement the proxy adds to a label
/// selector always ends up in the selector the API server receives, whatever the caller's own.
pub fn proxy_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text.as_ref(), None),
    };
    let _ = RouteTarget::parse(path);
    let mut parsed = Query::parse(query);
    let _ = parsed.is_watch();
    let requirement = "bulkhead.dev/tenant in (solar)";
    if parsed.and_label_selector(requirement).is_ok() {
        let uri = parsed.uri("/api/v1/namespaces");
        let sent = Query::parse(uri.split_once('?').map(|(_, q)| q));
        let selector = sent.get("labelSelector").unwrap_or_default();
        assert!(
            selector == requirement || selector.ends_with(&format!(",{requirement}")),
            "the tenant requirement was lost from {selector:?} (query {query:?})"
        );
        // The caller's selector cannot close the requirement's value list or open one around it.
        let before = &selector[..selector.len() - requirement.len()];
        let depth = before.chars().fold(0i32, |d, c| match c {
            '(' => d + 1,
            ')' => d - 1,
            _ => d,
        });
        assert_eq!(depth, 0, "unbalanced caller selector {before:?} was accepted");
    }
}

/// A LabelSelector (JSON) and labels (JSON) after it, matched as the cache and the controller match
/// them: no input panics.
pub fn label_selector(data: &[u8]) {
    let mut stream = serde_json::Deserializer::from_slice(data).into_iter::<serde_json::Value>();
    let Some(Ok(selector)) = stream.next() else {
        return;
    };
    let Ok(selector) = serde_json::from_value::<LabelSelector>(selector) else {
        return;
    };
    let labels: BTreeMap<String, String> = stream
        .next()
        .and_then(Result::ok)
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let _ = bulkhead_policy::selector::matches(&selector, &labels);
}

/// An image reference: the registry read from it is a prefix of it, followed by `/`.
pub fn image_reference(data: &[u8]) {
    let image = String::from_utf8_lossy(data);
    if let Some(registry) = registry_of(&image) {
        assert!(
            image.starts_with(&format!("{registry}/")),
            "registry {registry:?} is not the first part of {image:?}"
        );
        assert!(!registry.is_empty());
    }
}

/// A Tenant (JSON) as admission validates it: every regex compiled, every problem a message.
pub fn tenant_spec(data: &[u8]) {
    let Ok(tenant) = serde_json::from_slice::<Tenant>(data) else {
        return;
    };
    for problem in tenant_problems(&tenant) {
        assert!(!problem.is_empty());
    }
}

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay.
pub const TARGETS: [(&str, Target); 5] = [
    ("admission_review", admission_review),
    ("proxy_request", proxy_request),
    ("label_selector", label_selector),
    ("image_reference", image_reference),
    ("tenant_spec", tenant_spec),
];
