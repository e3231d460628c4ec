//! Workload admission in tenant namespaces: Pods, PersistentVolumeClaims, Services and Ingresses.
//!
//! These checks apply to every caller, not just tenant users: pods made by a Deployment are created
//! by the ReplicaSet controller, and they must follow the tenant's rules all the same.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use bulkhead_api::Tenant;
use bulkhead_api::common::{AdditionalMetadata, ClassAllowedList, ForbiddenList};
use bulkhead_api::gateway::{GRPCRoute, HTTPRoute, TLSRoute};
use bulkhead_api::labels;
use bulkhead_api::tenant::{HostnameCollisionScope, IngressOptions};
use k8s_openapi::api::core::v1::{
    Binding, Container, NodeSelectorRequirement, PersistentVolumeClaim, Pod, PodSpec, Service,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use super::lists::{AllowedCheck, check_allowed, check_class, is_forbidden};
use super::{ClassKind, Operation, Request, Verdict, View, join_or_none, metadata_patch, pointer_segment};

/// The storage class annotation that predates `spec.storageClassName`; the volume controllers still
/// read it first.
pub const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The ingress class annotation that predates `spec.ingressClassName`.
pub const INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The annotations External DNS publishes names from, on Services and Ingresses (each a
/// comma-separated list).
pub const EXTERNAL_DNS_ANNOTATIONS: [&str; 2] = [
    "external-dns.alpha.kubernetes.io/hostname",
    "external-dns.alpha.kubernetes.io/internal-hostname",
];

/// One host (and path) an object serves, for the collision check: an Ingress rule's host and path,
/// or a name External DNS publishes from an annotation (the whole host, whatever the path).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostRoute {
    /// The object's kind as denials name it: `ingress` or `service`.
    pub kind: &'static str,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The host.
    pub host: String,
    /// The path (`""` for a rule without paths); `None` for the whole host (a DNS name from an
    /// annotation), which collides with every path of that host.
    pub path: Option<String>,
}

impl HostRoute {
    /// Whether two routes of different objects serve the same requests.
    fn overlaps(&self, other: &HostRoute) -> bool {
        // No path (an Ingress rule without paths, a route without matches) is the path `/`.
        fn root(p: &str) -> &str {
            if p.is_empty() { "/" } else { p }
        }
        self.host == other.host
            && match (&self.path, &other.path) {
                (Some(a), Some(b)) => root(a) == root(b),
                _ => true,
            }
    }

    fn same_object(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.kind == kind && self.namespace == namespace && self.name == name
    }
}

/// The names External DNS publishes from an object's annotations, read as it reads them (spaces
/// dropped, split at commas), each with the annotation it came from. Names are compared as DNS
/// compares them: without a trailing dot, in lower case.
pub fn external_dns_names(meta: &ObjectMeta) -> Vec<(String, &'static str)> {
    let mut names = Vec::new();
    for key in EXTERNAL_DNS_ANNOTATIONS {
        let Some(value) = annotation(meta, key) else {
            continue;
        };
        for name in value.replace(' ', "").split(',') {
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            if !name.is_empty() && !names.iter().any(|(n, _)| *n == name) {
                names.push((name, key));
            }
        }
    }
    names
}

fn annotation_routes(kind: &'static str, meta: &ObjectMeta) -> Vec<HostRoute> {
    external_dns_names(meta)
        .into_iter()
        .map(|(host, _)| HostRoute {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            host,
            path: None,
        })
        .collect()
}

/// The hosts a Service serves: the names External DNS publishes for it from its annotations.
pub fn service_routes(svc: &Service) -> Vec<HostRoute> {
    annotation_routes("service", &svc.metadata)
}

fn tenant_name(tenant: &Tenant) -> &str {
    tenant.metadata.name.as_deref().unwrap_or_default()
}

fn object_name(meta: &ObjectMeta) -> &str {
    meta.name
        .as_deref()
        .or(meta.generate_name.as_deref())
        .unwrap_or_default()
}

/// Patch operations stamping `additionalMetadata` on an object.
fn stamp(meta: &ObjectMeta, extra: Option<&AdditionalMetadata>) -> Vec<Value> {
    let Some(extra) = extra else {
        return Vec::new();
    };
    let mut patch = metadata_patch("labels", meta.labels.as_ref(), &extra.labels);
    patch.extend(metadata_patch(
        "annotations",
        meta.annotations.as_ref(),
        &extra.annotations,
    ));
    patch
}

/// Checks a class name against the tenant's list, or injects the default when none is named.
/// Returns the denial, or the patch (if any) that sets the default at `path`.
fn class_rule(
    view: &dyn View,
    tenant: &Tenant,
    kind: ClassKind,
    list: Option<&ClassAllowedList>,
    named: Option<&str>,
    path: &str,
    what: &str,
) -> Result<Vec<Value>, Verdict> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let t = tenant_name(tenant);
    match named.filter(|n| !n.is_empty()) {
        None => match list.default.as_deref() {
            Some(default) => {
                let mut patch = vec![json!({"op": "add", "path": path, "value": default})];
                if kind == ClassKind::Priority
                    && let Some(value) = view.class(kind, default).and_then(|c| c.value)
                {
                    patch.push(json!({"op": "add", "path": "/spec/priority", "value": value}));
                }
                Ok(patch)
            }
            None => Ok(Vec::new()),
        },
        Some(name) => match check_class(list, name, view.class(kind, name).as_ref()) {
            AllowedCheck::Allowed => Ok(Vec::new()),
            AllowedCheck::NotAllowed(allowed) => Err(Verdict::deny(
                Some(t),
                format!(
                    "{} `{name}` of {what} is not allowed in tenant `{t}`: allowed are {allowed}",
                    kind.noun()
                ),
            )),
        },
    }
}

/// The registry of an image reference, when it names one (`registry.example.com/app`,
/// `localhost:5000/app`); `None` for short names such as `nginx` or `library/nginx`.
pub fn registry_of(image: &str) -> Option<&str> {
    let (first, _) = image.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

/// The pull policy Kubernetes defaults to when a container names none.
fn effective_pull_policy(container_image: &str, policy: Option<&str>) -> String {
    if let Some(p) = policy.filter(|p| !p.is_empty()) {
        return p.to_owned();
    }
    let last = container_image.rsplit('/').next().unwrap_or_default();
    let digest = container_image.contains('@');
    let tag = last.split_once(':').map(|(_, t)| t);
    if !digest && tag.is_none_or(|t| t == "latest") {
        "Always".to_owned()
    } else {
        "IfNotPresent".to_owned()
    }
}

/// Decides a Pod write in a namespace of `tenant`.
pub fn pod(req: &Request<'_>, view: &dyn View, tenant: &Tenant, pod: &Pod, old: Option<&Pod>) -> Verdict {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Verdict::allow();
    }
    let t = tenant_name(tenant);
    let name = object_name(&pod.metadata);
    let Some(spec) = pod.spec.as_ref() else {
        return Verdict::allow();
    };
    let old_images: BTreeSet<&str> = old
        .and_then(|o| o.spec.as_ref())
        .map(|s| all_containers(s).map(|c| c.image).collect())
        .unwrap_or_default();
    for container in all_containers(spec) {
        let image = container.image;
        if old_images.contains(image) {
            continue;
        }
        if let Some(registries) = tenant.spec.container_registries.as_ref() {
            let Some(registry) = registry_of(image) else {
                return Verdict::deny(
                    Some(t),
                    format!(
                        "image `{image}` of container `{}` in pod `{name}` does not name its registry: tenant `{t}` needs a fully qualified image such as `docker.io/library/nginx:1.27`",
                        container.name
                    ),
                );
            };
            if let AllowedCheck::NotAllowed(allowed) = check_allowed(registries, registry) {
                return Verdict::deny(
                    Some(t),
                    format!(
                        "registry `{registry}` of image `{image}` (container `{}` in pod `{name}`) is not allowed in tenant `{t}`: allowed are {allowed}",
                        container.name
                    ),
                );
            }
        }
        if !tenant.spec.image_pull_policies.is_empty() {
            let policy = effective_pull_policy(image, container.pull_policy);
            let allowed: Vec<String> = tenant
                .spec
                .image_pull_policies
                .iter()
                .map(|p| format!("{p:?}"))
                .collect();
            if !allowed.contains(&policy) {
                return Verdict::deny(
                    Some(t),
                    format!(
                        "image pull policy `{policy}` of container `{}` in pod `{name}` is not allowed in tenant `{t}`: allowed are {}",
                        container.name,
                        join_or_none(&allowed)
                    ),
                );
            }
        }
    }
    let mut patch = match placement(req, view, tenant, name, spec, old.and_then(|o| o.spec.as_ref())) {
        Ok(patch) => patch,
        Err(denial) => return denial,
    };
    if req.operation == Operation::Create {
        let what = format!("pod `{name}`");
        for (kind, list, named, path) in [
            (
                ClassKind::Priority,
                tenant.spec.priority_classes.as_ref(),
                spec.priority_class_name.as_deref(),
                "/spec/priorityClassName",
            ),
            (
                ClassKind::Runtime,
                tenant.spec.runtime_classes.as_ref(),
                spec.runtime_class_name.as_deref(),
                "/spec/runtimeClassName",
            ),
        ] {
            match class_rule(view, tenant, kind, list, named, path, &what) {
                Ok(p) => patch.extend(p),
                Err(denial) => return denial,
            }
        }
        patch.extend(stamp(
            &pod.metadata,
            tenant
                .spec
                .pod_options
                .as_ref()
                .and_then(|o| o.additional_metadata.as_ref()),
        ));
    }
    Verdict::Allow(patch)
}

/// `k=v, k2=v2`, as denials name a node selector.
fn selector_text(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("`{k}={v}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a node whose label `key` has `value` meets a required node affinity requirement on that key,
/// as the scheduler reads it (`Gt` and `Lt` compare integers; a value that is not one never meets them).
fn requirement_met(requirement: &NodeSelectorRequirement, value: &str) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match requirement.operator.as_str() {
        "In" => values.iter().any(|v| v == value),
        "NotIn" => !values.iter().any(|v| v == value),
        "Exists" => true,
        "Gt" | "Lt" => match (number(value), values.first().and_then(|v| number(v))) {
            (Some(have), Some(bound)) if requirement.operator == "Gt" => have > bound,
            (Some(have), Some(bound)) => have < bound,
            _ => false,
        },
        // `DoesNotExist`, and operators the API server refuses anyway.
        _ => false,
    }
}

/// The first place a pod asks for node labels the tenant's node selector rules out: its
/// `nodeSelector`, or a term of its required node affinity (terms are alternatives, but one that can
/// never be met is a mistake worth naming).
fn placement_conflict(spec: &PodSpec, selector: &BTreeMap<String, String>) -> Option<String> {
    for (key, want) in selector {
        if let Some(asked) = spec.node_selector.as_ref().and_then(|s| s.get(key))
            && asked != want
        {
            return Some(format!("node label `{key}={asked}` in its nodeSelector"));
        }
    }
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    for term in terms {
        for requirement in term.match_expressions.iter().flatten() {
            if let Some(want) = selector.get(&requirement.key)
                && !requirement_met(requirement, want)
            {
                let values = requirement.values.as_deref().unwrap_or_default();
                let values = if values.is_empty() {
                    String::new()
                } else {
                    format!(" {}", join_or_none(values))
                };
                return Some(format!(
                    "node label `{}` {}{values} in its required node affinity",
                    requirement.key, requirement.operator
                ));
            }
        }
    }
    None
}

/// How a node's labels fall short of the tenant's node selector: the first label missing or different.
fn node_shortfall(labels: &BTreeMap<String, String>, selector: &BTreeMap<String, String>) -> Option<String> {
    selector.iter().find_map(|(key, want)| match labels.get(key) {
        Some(have) if have == want => None,
        Some(have) => Some(format!("has `{key}={have}`")),
        None => Some(format!("has no label `{key}`")),
    })
}

/// The tenant's node selector on a pod (`nodeSelector`), which the scheduler ANDs with everything
/// else the pod asks for. Managed clusters do not run the PodNodeSelector admission plugin that reads
/// the namespace annotation, so the webhook places pods itself: the mutating call adds the missing
/// labels, the validating call refuses a pod without them (a webhook skipped or reordered), and both
/// refuse a pod that asks for other values of the same labels, or names a node (`spec.nodeName`,
/// which skips the scheduler) outside the selector.
fn placement(
    req: &Request<'_>,
    view: &dyn View,
    tenant: &Tenant,
    name: &str,
    spec: &PodSpec,
    old: Option<&PodSpec>,
) -> Result<Vec<Value>, Verdict> {
    let selector = &tenant.spec.node_selector;
    if selector.is_empty() {
        return Ok(Vec::new());
    }
    let t = tenant_name(tenant);
    let wanted = selector_text(selector);
    if req.operation == Operation::Update
        && old.is_some_and(|o| o.node_selector == spec.node_selector && o.affinity == spec.affinity)
    {
        // Only a scheduling-gated pod may change where it runs; every other update leaves it be (pods
        // made before the tenant had a node selector keep running where they are).
        return Ok(Vec::new());
    }
    if let Some(conflict) = placement_conflict(spec, selector) {
        return Err(Verdict::deny(
            Some(t),
            format!(
                "pod `{name}` asks for {conflict}: tenant `{t}` runs its pods only on nodes labelled {wanted}"
            ),
        ));
    }
    if req.operation == Operation::Create
        && let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty())
    {
        node_allowed(view, tenant, name, node)?;
    }
    let missing: BTreeMap<&String, &String> = selector
        .iter()
        .filter(|(k, _)| spec.node_selector.as_ref().and_then(|s| s.get(*k)).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    if let Some((key, value)) = missing.iter().next()
        && (!req.mutating || req.operation != Operation::Create)
    {
        return Err(Verdict::deny(
            Some(t),
            format!(
                "pod `{name}` has no node label `{key}={value}` in its nodeSelector: tenant `{t}` runs its pods only on nodes labelled {wanted} (Bulkhead's mutating webhook sets them on create)"
            ),
        ));
    }
    Ok(match spec.node_selector.as_ref() {
        None => vec![json!({"op": "add", "path": "/spec/nodeSelector", "value": missing})],
        Some(_) => missing
            .into_iter()
            .map(|(k, v)| json!({"op": "add", "path": format!("/spec/nodeSelector/{}", pointer_segment(k)), "value": v}))
            .collect(),
    })
}

/// Whether a pod of `tenant` may be placed on `node` by name (a pod's `spec.nodeName`, or a Binding).
fn node_allowed(view: &dyn View, tenant: &Tenant, pod: &str, node: &str) -> Result<(), Verdict> {
    let selector = &tenant.spec.node_selector;
    if selector.is_empty() {
        return Ok(());
    }
    let t = tenant_name(tenant);
    let wanted = selector_text(selector);
    let Some(labels) = view.node_labels(node) else {
        return Err(Verdict::deny(
            Some(t),
            format!(
                "pod `{pod}` cannot be placed on node `{node}`, which is not in Bulkhead's cache (yet): tenant `{t}` runs its pods only on nodes labelled {wanted}; retry in a moment"
            ),
        ));
    };
    match node_shortfall(&labels, selector) {
        None => Ok(()),
        Some(shortfall) => Err(Verdict::deny(
            Some(t),
            format!(
                "pod `{pod}` cannot be placed on node `{node}`, which {shortfall}: tenant `{t}` runs its pods only on nodes labelled {wanted}"
            ),
        )),
    }
}

/// Decides a Binding of a pod of `tenant` to a node (`pods/binding`, or the older `bindings`
/// resource): what the scheduler writes, and what anyone allowed to bind could write instead.
pub fn pod_binding(req: &Request<'_>, view: &dyn View, tenant: &Tenant, binding: &Binding) -> Verdict {
    if req.operation != Operation::Create {
        return Verdict::allow();
    }
    let pod = object_name(&binding.metadata);
    let target = &binding.target;
    if target
        .kind
        .as_deref()
        .is_some_and(|k| !k.is_empty() && k != "Node")
    {
        // The API server binds only to nodes; anything else it refuses itself.
        return Verdict::allow();
    }
    match node_allowed(view, tenant, pod, target.name.as_deref().unwrap_or_default()) {
        Ok(()) => Verdict::allow(),
        Err(denial) => denial,
    }
}

/// A container, init container or ephemeral container, as the image checks see it.
struct ContainerRef<'a> {
    name: &'a str,
    image: &'a str,
    pull_policy: Option<&'a str>,
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = ContainerRef<'_>> {
    fn plain(c: &Container) -> ContainerRef<'_> {
        ContainerRef {
            name: c.name.as_str(),
            image: c.image.as_deref().unwrap_or_default(),
            pull_policy: c.image_pull_policy.as_deref(),
        }
    }
    let plain = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(plain);
    let ephemeral = spec.ephemeral_containers.iter().flatten().map(|e| ContainerRef {
        name: e.name.as_str(),
        image: e.image.as_deref().unwrap_or_default(),
        pull_policy: e.image_pull_policy.as_deref(),
    });
    plain.chain(ephemeral)
}

/// Decides a PersistentVolumeClaim write in a namespace of `tenant`.
pub fn persistent_volume_claim(
    req: &Request<'_>,
    view: &dyn View,
    tenant: &Tenant,
    claim: &PersistentVolumeClaim,
) -> Verdict {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Verdict::allow();
    }
    let t = tenant_name(tenant);
    let name = object_name(&claim.metadata);
    let spec = claim.spec.clone().unwrap_or_default();
    let what = format!("persistent volume claim `{name}`");
    // The volume controllers read the older annotation before the field: both are judged, on update
    // too (an annotation can be added to a claim that is not bound yet; the field is immutable).
    let annotated = annotation(&claim.metadata, BETA_STORAGE_CLASS).filter(|c| !c.is_empty());
    let list = tenant.spec.storage_classes.as_ref();
    if let Some(class) = annotated
        && let Err(denial) = class_rule(view, tenant, ClassKind::Storage, list, Some(class), "", &what)
    {
        return denial;
    }
    let named = spec.storage_class_name.as_deref().or(annotated);
    let patch = match class_rule(
        view,
        tenant,
        ClassKind::Storage,
        list,
        named,
        "/spec/storageClassName",
        &what,
    ) {
        Ok(p) if req.operation == Operation::Create => p,
        Ok(_) => Vec::new(),
        Err(denial) => return denial,
    };
    // `volumeName` may be set once after creation (that is how a claim is bound), so it is judged on
    // update as well.
    if let Some(volume) = spec.volume_name.as_deref().filter(|v| !v.is_empty())
        && let Some(Some(owner)) = view.persistent_volume_tenant(volume)
        && owner != t
    {
        return Verdict::deny(
            Some(t),
            format!(
                "persistent volume claim `{name}` cannot bind persistent volume `{volume}`: it belongs to tenant `{owner}`, not `{t}`"
            ),
        );
    }
    if let Some(other) = spec
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .and_then(|l| l.get(labels::TENANT))
        .filter(|other| other.as_str() != t)
    {
        return Verdict::deny(
            Some(t),
            format!(
                "persistent volume claim `{name}` cannot select the persistent volumes of tenant `{other}`: it is in tenant `{t}`"
            ),
        );
    }
    Verdict::Allow(patch)
}

/// Whether `ip` lies in `cidr` (`10.0.0.0/8`, `2001:db8::/32`, or a single address).
pub fn cidr_contains(cidr: &str, ip: &str) -> bool {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    // The prefix length as Go's netip.ParsePrefix reads it: decimal digits only (no sign), no leading
    // zero, at most the address's width (`/33` is an error, not `/32`).
    let (net, bits) = match cidr.split_once('/') {
        Some((net, bits))
            if !bits.is_empty()
                && bits.bytes().all(|b| b.is_ascii_digit())
                && (bits == "0" || !bits.starts_with('0')) =>
        {
            match bits.parse::<u32>() {
                Ok(bits) => (net, Some(bits)),
                Err(_) => return false,
            }
        }
        Some(_) => return false,
        None => (cidr, None),
    };
    let Ok(net) = net.parse::<IpAddr>() else {
        return false;
    };
    let width = if net.is_ipv4() { 32 } else { 128 };
    if bits.is_some_and(|b| b > width) {
        return false;
    }
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Labels and annotations changed by a write that the list forbids.
fn forbidden_change(
    noun: &str,
    before: Option<&BTreeMap<String, String>>,
    after: Option<&BTreeMap<String, String>>,
    list: Option<&ForbiddenList>,
) -> Option<String> {
    let list = list?;
    let after = after.cloned().unwrap_or_default();
    let before = before.cloned().unwrap_or_default();
    let changed = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .chain(before.keys().filter(|k| !after.contains_key(*k)));
    changed
        .into_iter()
        .find(|k| is_forbidden(list, k))
        .map(|k| format!("{noun} `{k}`"))
}

/// Decides a Service write in a namespace of `tenant`.
pub fn service(
    req: &Request<'_>,
    view: &dyn View,
    tenant: &Tenant,
    namespace: &str,
    svc: &Service,
    old: Option<&Service>,
) -> Verdict {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Verdict::allow();
    }
    let t = tenant_name(tenant);
    let name = object_name(&svc.metadata);
    // External DNS publishes a Service's annotated names: the tenant's hostname rules hold there too.
    if let Err(denial) = dns_names_allowed(
        view,
        tenant,
        "service",
        namespace,
        &svc.metadata,
        &service_routes(svc),
    ) {
        return denial;
    }
    let Some(options) = tenant.spec.service_options.as_ref() else {
        return Verdict::allow();
    };
    let spec = svc.spec.clone().unwrap_or_default();
    if let Some(allowed) = options.allowed_services.as_ref() {
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        let ok = match kind {
            "NodePort" => allowed.node_port,
            "LoadBalancer" => allowed.load_balancer,
            "ExternalName" => allowed.external_name,
            _ => true,
        };
        if !ok {
            let mut types = vec!["ClusterIP"];
            for (yes, kind) in [
                (allowed.node_port, "NodePort"),
                (allowed.load_balancer, "LoadBalancer"),
                (allowed.external_name, "ExternalName"),
            ] {
                if yes {
                    types.push(kind);
                }
            }
            return Verdict::deny(
                Some(t),
                format!(
                    "service `{name}` of type `{kind}` is not allowed in tenant `{t}`: allowed types are {}",
                    join_or_none(types)
                ),
            );
        }
    }
    if let Some(external) = options.external_ips.as_ref() {
        for ip in spec.external_ips.iter().flatten() {
            if !external.allowed.iter().any(|cidr| cidr_contains(cidr, ip)) {
                return Verdict::deny(
                    Some(t),
                    format!(
                        "external IP `{ip}` of service `{name}` is not allowed in tenant `{t}`: allowed are {}",
                        join_or_none(&external.allowed)
                    ),
                );
            }
        }
    }
    let old_meta = old.map(|o| &o.metadata);
    for (noun, before, after, list) in [
        (
            "label",
            old_meta.and_then(|m| m.labels.as_ref()),
            svc.metadata.labels.as_ref(),
            options.forbidden_labels.as_ref(),
        ),
        (
            "annotation",
            old_meta.and_then(|m| m.annotations.as_ref()),
            svc.metadata.annotations.as_ref(),
            options.forbidden_annotations.as_ref(),
        ),
    ] {
        if let Some(what) = forbidden_change(noun, before, after, list) {
            return Verdict::deny(
                Some(t),
                format!("{what} of service `{name}` is forbidden in tenant `{t}`"),
            );
        }
    }
    Verdict::Allow(stamp(&svc.metadata, options.additional_metadata.as_ref()))
}

/// The routes an Ingress serves: each rule's host and path, and the names External DNS publishes for
/// it from its annotations.
pub fn ingress_routes(ingress: &Ingress) -> Vec<HostRoute> {
    let namespace = ingress.metadata.namespace.clone().unwrap_or_default();
    let name = ingress.metadata.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    for rule in ingress.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
        let host = rule.host.clone().unwrap_or_default();
        let paths: Vec<String> = rule
            .http
            .iter()
            .flat_map(|h| h.paths.iter())
            .map(|p| p.path.clone().unwrap_or_default())
            .collect();
        let paths = if paths.is_empty() {
            vec![String::new()]
        } else {
            paths
        };
        for path in paths {
            out.push(HostRoute {
                kind: "ingress",
                namespace: namespace.clone(),
                name: name.clone(),
                host: host.clone(),
                path: Some(path),
            });
        }
    }
    out.extend(annotation_routes("ingress", &ingress.metadata));
    out
}

/// One hostname under `ingressOptions`: a wildcard only with `allowWildcardHostnames`, and allowed by
/// `allowedHostnames`. `whence` says where the name was found (`of ingress `web``).
fn hostname_allowed(options: &IngressOptions, t: &str, host: &str, whence: &str) -> Result<(), Verdict> {
    if host.starts_with('*') && !options.allow_wildcard_hostnames {
        return Err(Verdict::deny(
            Some(t),
            format!("wildcard hostname `{host}` {whence} is not allowed in tenant `{t}`"),
        ));
    }
    if let Some(list) = options.allowed_hostnames.as_ref()
        && let AllowedCheck::NotAllowed(allowed) = check_allowed(list, host)
    {
        return Err(Verdict::deny(
            Some(t),
            format!("hostname `{host}` {whence} is not allowed in tenant `{t}`: allowed are {allowed}"),
        ));
    }
    Ok(())
}

/// The hostname rules of `ingressOptions` for the names External DNS publishes from an object's
/// annotations: each allowed (and not a wildcard unless wildcards are), and none served by another
/// object in the collision scope. `routes` are the object's own (its Ingress rules too).
fn dns_names_allowed(
    view: &dyn View,
    tenant: &Tenant,
    kind: &'static str,
    namespace: &str,
    meta: &ObjectMeta,
    routes: &[HostRoute],
) -> Result<(), Verdict> {
    let Some(options) = tenant.spec.ingress_options.as_ref() else {
        return Ok(());
    };
    let t = tenant_name(tenant);
    let name = object_name(meta);
    for (host, key) in external_dns_names(meta) {
        hostname_allowed(
            options,
            t,
            &host,
            &format!("in annotation `{key}` of {kind} `{name}`"),
        )?;
    }
    collisions(
        view,
        tenant,
        kind,
        namespace,
        name,
        routes,
        options.hostname_collision_scope,
    )
}

/// The first route of an object that another object in the scope already serves.
fn collisions(
    view: &dyn View,
    tenant: &Tenant,
    kind: &'static str,
    namespace: &str,
    name: &str,
    routes: &[HostRoute],
    scope: HostnameCollisionScope,
) -> Result<(), Verdict> {
    if scope == HostnameCollisionScope::Disabled {
        return Ok(());
    }
    let t = tenant_name(tenant);
    for route in routes {
        if route.host.is_empty() {
            continue;
        }
        let clash = view.host_routes(&route.host).into_iter().find(|other| {
            !other.same_object(kind, namespace, name)
                && route.overlaps(other)
                && match scope {
                    HostnameCollisionScope::Cluster => true,
                    HostnameCollisionScope::Tenant => {
                        view.tenant_of_namespace(&other.namespace).as_deref() == Some(t)
                    }
                    HostnameCollisionScope::Namespace => other.namespace == namespace,
                    HostnameCollisionScope::Disabled => false,
                }
        });
        if let Some(other) = clash {
            let what = match route.path.as_deref() {
                Some("") => "with path `/` ".to_owned(),
                Some(path) => format!("with path `{path}` "),
                None => "(an External DNS name) ".to_owned(),
            };
            return Err(Verdict::deny(
                Some(t),
                format!(
                    "host `{}` {what}of {kind} `{name}` is already served by {} `{}/{}` ({scope:?} scope)",
                    route.host, other.kind, other.namespace, other.name
                ),
            ));
        }
    }
    Ok(())
}

/// Decides an Ingress (networking.k8s.io/v1) write in `namespace` of `tenant`.
pub fn ingress(
    req: &Request<'_>,
    view: &dyn View,
    tenant: &Tenant,
    namespace: &str,
    ingress: &Ingress,
) -> Verdict {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Verdict::allow();
    }
    let t = tenant_name(tenant);
    let name = object_name(&ingress.metadata);
    let Some(options) = tenant.spec.ingress_options.as_ref() else {
        return Verdict::allow();
    };
    let spec = ingress.spec.clone().unwrap_or_default();
    // Ingress controllers read the older annotation too (some before the field), and the API server
    // lets an update add it beside the field: every class named is judged.
    let annotated = annotation(&ingress.metadata, INGRESS_CLASS_ANNOTATION).map(str::to_owned);
    let class = spec.ingress_class_name.clone().or_else(|| annotated.clone());
    let mut patch = Vec::new();
    if let Some(list) = options.allowed_classes.as_ref() {
        if let Some(other) = annotated.as_deref().filter(|a| Some(*a) != class.as_deref())
            && let Err(denial) = class_rule(
                view,
                tenant,
                ClassKind::Ingress,
                Some(list),
                Some(other),
                "",
                &format!("ingress `{name}`"),
            )
        {
            return denial;
        }
        if class.is_none() && list.default.is_none() {
            let allowed = match check_class(list, "", None) {
                AllowedCheck::NotAllowed(a) => a,
                AllowedCheck::Allowed => "none".to_owned(),
            };
            return Verdict::deny(
                Some(t),
                format!("ingress `{name}` names no ingress class: tenant `{t}` allows {allowed}"),
            );
        }
        match class_rule(
            view,
            tenant,
            ClassKind::Ingress,
            Some(list),
            class.as_deref(),
            "/spec/ingressClassName",
            &format!("ingress `{name}`"),
        ) {
            Ok(p) if req.operation == Operation::Create => patch.extend(p),
            Ok(_) => {}
            Err(denial) => return denial,
        }
    }
    let mut hosts: Vec<String> = spec
        .rules
        .iter()
        .flatten()
        .filter_map(|r| r.host.clone())
        .chain(
            spec.tls
                .iter()
                .flatten()
                .flat_map(|t| t.hosts.iter().flatten().cloned()),
        )
        .collect();
    hosts.sort();
    hosts.dedup();
    // A rule with no host, and the default backend, serve every hostname the controller receives:
    // with hostnames restricted, that is broader than any wildcard.
    if let Some(list) = options.allowed_hostnames.as_ref() {
        let hostless = spec
            .rules
            .iter()
            .flatten()
            .any(|r| r.host.as_deref().unwrap_or("").is_empty());
        // Only a list that allows any name at all (a regex matching the empty one) allows them.
        if (hostless || spec.default_backend.is_some())
            && let AllowedCheck::NotAllowed(allowed) = check_allowed(list, "")
        {
            let part = if hostless {
                "a rule with no host"
            } else {
                "a default backend"
            };
            return Verdict::deny(
                Some(t),
                format!(
                    "ingress `{name}` has {part}, which serves every hostname: tenant `{t}` allows only hostnames {allowed}"
                ),
            );
        }
    }
    for host in &hosts {
        if let Err(denial) = hostname_allowed(options, t, host, &format!("of ingress `{name}`")) {
            return denial;
        }
    }
    if let Err(denial) = dns_names_allowed(
        view,
        tenant,
        "ingress",
        namespace,
        &ingress.metadata,
        &ingress_routes(ingress),
    ) {
        return denial;
    }
    Verdict::Allow(patch)
}

/// A Gateway API route (HTTPRoute, GRPCRoute, TLSRoute) as the hostname rules read it.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayRoute<'a> {
    /// The kind as denials name it: `httproute`, `grpcroute` or `tlsroute`.
    pub kind: &'static str,
    /// Its metadata.
    pub meta: &'a ObjectMeta,
    /// Its hostnames, as DNS compares them (lower case, no final dot).
    pub hostnames: Vec<String>,
    /// What it matches on each hostname, as [`HostRoute::path`]: an HTTP path (`""` for the prefix
    /// `/`), a gRPC method as its HTTP/2 path (`/service/method`, `/service/` for a whole service);
    /// `None` for the whole host (TLS: the SNI name alone).
    pub paths: Vec<Option<String>>,
}

fn dns_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl<'a> GatewayRoute<'a> {
    /// An HTTPRoute's hostnames and paths.
    pub fn http(route: &'a HTTPRoute) -> Self {
        let mut paths: Vec<Option<String>> = Vec::new();
        for rule in &route.spec.rules {
            let matches = if rule.matches.is_empty() {
                vec![None]
            } else {
                rule.matches.iter().map(|m| m.path.as_ref()).collect()
            };
            for path in matches {
                let prefix = path
                    .and_then(|p| p.type_.as_deref())
                    .is_none_or(|t| t == "PathPrefix");
                let value = path.and_then(|p| p.value.as_deref()).unwrap_or("/");
                let value = if prefix && value == "/" { "" } else { value };
                paths.push(Some(value.to_owned()));
            }
        }
        if paths.is_empty() {
            paths.push(Some(String::new()));
        }
        Self::new("httproute", &route.metadata, &route.spec.hostnames, paths)
    }

    /// A GRPCRoute's hostnames and methods.
    pub fn grpc(route: &'a GRPCRoute) -> Self {
        let mut paths: Vec<Option<String>> = Vec::new();
        for rule in &route.spec.rules {
            let matches = if rule.matches.is_empty() {
                vec![None]
            } else {
                rule.matches.iter().map(|m| m.method.as_ref()).collect()
            };
            for method in matches {
                let path = match method.map(|m| (m.service.as_deref(), m.method.as_deref())) {
                    Some((Some(service), Some(method))) => format!("/{service}/{method}"),
                    Some((Some(service), None)) => format!("/{service}/"),
                    _ => String::new(),
                };
                paths.push(Some(path));
            }
        }
        if paths.is_empty() {
            paths.push(Some(String::new()));
        }
        Self::new("grpcroute", &route.metadata, &route.spec.hostnames, paths)
    }

    /// A TLSRoute's SNI names: each the whole host.
    pub fn tls(route: &'a TLSRoute) -> Self {
        Self::new("tlsroute", &route.metadata, &route.spec.hostnames, vec![None])
    }

    fn new(
        kind: &'static str,
        meta: &'a ObjectMeta,
        hostnames: &[String],
        mut paths: Vec<Option<String>>,
    ) -> Self {
        let mut names: Vec<String> = Vec::new();
        for name in hostnames.iter().map(|h| dns_name(h)) {
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
        paths.sort();
        paths.dedup();
        GatewayRoute {
            kind,
            meta,
            hostnames: names,
            paths,
        }
    }

    /// The routes it serves: each hostname with each path, and the names External DNS publishes from
    /// its annotations.
    pub fn routes(&self) -> Vec<HostRoute> {
        let namespace = self.meta.namespace.clone().unwrap_or_default();
        let name = self.meta.name.clone().unwrap_or_default();
        let mut out = Vec::new();
        for host in &self.hostnames {
            for path in &self.paths {
                out.push(HostRoute {
                    kind: self.kind,
                    namespace: namespace.clone(),
                    name: name.clone(),
                    host: host.clone(),
                    path: path.clone(),
                });
            }
        }
        out.extend(annotation_routes(self.kind, self.meta));
        out
    }
}

/// Decides a Gateway API route write in `namespace` of `tenant` under `ingressOptions`: every hostname
/// allowed by `allowedHostnames` (wildcards only with `allowWildcardHostnames`), none when the route
/// names no hostname and hostnames are restricted (it would serve every name its listeners accept),
/// and none served by another object (Ingress, Service, route) in the collision scope. External DNS
/// publishes a route's hostnames, so this is where a tenant could otherwise take another's name.
pub fn gateway_route(
    req: &Request<'_>,
    view: &dyn View,
    tenant: &Tenant,
    namespace: &str,
    route: &GatewayRoute<'_>,
) -> Verdict {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Verdict::allow();
    }
    let Some(options) = tenant.spec.ingress_options.as_ref() else {
        return Verdict::allow();
    };
    let t = tenant_name(tenant);
    let (kind, name) = (route.kind, object_name(route.meta));
    if route.hostnames.is_empty()
        && let Some(list) = options.allowed_hostnames.as_ref()
        && let AllowedCheck::NotAllowed(allowed) = check_allowed(list, "")
    {
        return Verdict::deny(
            Some(t),
            format!(
                "{kind} `{name}` names no hostname, which serves every hostname its listeners accept: tenant `{t}` allows only hostnames {allowed}"
            ),
        );
    }
    for host in &route.hostnames {
        if let Err(denial) = hostname_allowed(options, t, host, &format!("of {kind} `{name}`")) {
            return denial;
        }
    }
    match dns_names_allowed(view, tenant, kind, namespace, route.meta, &route.routes()) {
        Ok(()) => Verdict::allow(),
        Err(denial) => denial,
    }
}

/// A Gateway (`gateway.networking.k8s.io`, any version) in `tenant`: its `spec.gatewayClassName` must
/// be one `gatewayOptions.allowedClasses` allows; a Gateway created without one gets the list's
/// `default`.
pub fn gateway(req: &Request<'_>, view: &dyn View, tenant: &Tenant, gateway: &Value) -> Verdict {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Verdict::allow();
    }
    let list = tenant
        .spec
        .gateway_options
        .as_ref()
        .and_then(|g| g.allowed_classes.as_ref());
    let name = gateway
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let class = gateway.pointer("/spec/gatewayClassName").and_then(Value::as_str);
    let what = format!("gateway `{name}`");
    match class_rule(
        view,
        tenant,
        ClassKind::Gateway,
        list,
        class,
        "/spec/gatewayClassName",
        &what,
    ) {
        // The patch is the default, when the Gateway names no class (only the mutating call patches).
        Ok(patch) if req.mutating => Verdict::Allow(patch),
        Ok(_) => Verdict::allow(),
        Err(denial) => denial,
    }
}

/// The device classes every device request of a ResourceClaim (or, with `template`, of a
/// ResourceClaimTemplate's claim) names, whatever its API version: `deviceClassName` (v1beta1),
/// `exactly.deviceClassName` (v1beta2, v1) and each `firstAvailable[].deviceClassName`; with the path
/// of each.
pub fn device_requests(object: &Value, template: bool) -> Vec<(String, String)> {
    let base = if template {
        "/spec/spec/devices/requests"
    } else {
        "/spec/devices/requests"
    };
    let mut out = Vec::new();
    for (i, request) in object
        .pointer(base)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("{}[{i}]", base.trim_start_matches('/').replace('/', "."));
        for (field, path) in [("/deviceClassName", ""), ("/exactly/deviceClassName", ".exactly")] {
            if let Some(class) = request.pointer(field).and_then(Value::as_str) {
                out.push((format!("{at}{path}.deviceClassName"), class.to_owned()));
            }
        }
        for (j, sub) in request
            .get("firstAvailable")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(class) = sub.get("deviceClassName").and_then(Value::as_str) {
                out.push((
                    format!("{at}.firstAvailable[{j}].deviceClassName"),
                    class.to_owned(),
                ));
            }
        }
    }
    out
}

/// A ResourceClaim or ResourceClaimTemplate (`resource.k8s.io`, any version) in `tenant`: every device
/// class any of its requests names, not only the first's (GHSA-4qv9-xv9f-w5xh), must be one
/// `deviceClasses` allows.
pub fn resource_claim(
    req: &Request<'_>,
    view: &dyn View,
    tenant: &Tenant,
    object: &Value,
    template: bool,
) -> Verdict {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Verdict::allow();
    }
    let Some(list) = tenant.spec.device_classes.as_ref() else {
        return Verdict::allow();
    };
    let t = tenant_name(tenant);
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = if template {
        "resource claim template"
    } else {
        "resource claim"
    };
    for (path, class) in device_requests(object, template) {
        if let AllowedCheck::NotAllowed(allowed) =
            check_class(list, &class, view.class(ClassKind::Device, &class).as_ref())
        {
            return Verdict::deny(
                Some(t),
                format!(
                    "device class `{class}` of {kind} `{name}` ({path}) is not allowed in tenant `{t}`: allowed are {allowed}"
                ),
            );
        }
    }
    Verdict::allow()
}

#[cfg(test)]
mod class_tests {
    use super::*;

    #[test]
    fn every_request_shape_of_every_version_names_its_device_classes() {
        let v1beta1 = json!({"spec": {"devices": {"requests": [
            {"name": "a", "deviceClassName": "gpu"},
            {"name": "b", "firstAvailable": [{"name": "b1", "deviceClassName": "gpu"}, {"name": "b2", "deviceClassName": "fpga"}]}
        ]}}});
        assert_eq!(
            device_requests(&v1beta1, false),
            [
                (
                    "spec.devices.requests[0].deviceClassName".to_owned(),
                    "gpu".to_owned()
                ),
                (
                    "spec.devices.requests[1].firstAvailable[0].deviceClassName".to_owned(),
                    "gpu".to_owned()
                ),
                (
                    "spec.devices.requests[1].firstAvailable[1].deviceClassName".to_owned(),
                    "fpga".to_owned()
                ),
            ]
        );
        let template = json!({"spec": {"spec": {"devices": {"requests": [
            {"name": "a", "exactly": {"deviceClassName": "gpu"}},
            {"name": "b", "exactly": {"deviceClassName": "fpga"}}
        ]}}}});
        assert_eq!(
            device_requests(&template, true)[1],
            (
                "spec.spec.devices.requests[1].exactly.deviceClassName".to_owned(),
                "fpga".to_owned()
            )
        );
        assert!(device_requests(&json!({"spec": {}}), false).is_empty());
    }
}
