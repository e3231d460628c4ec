//! From a decoded request to a verdict: pick the check, read the objects, find the tenant, ask policy.

use bulkhead_api::Tenant;
use bulkhead_api::config::BulkheadConfigurationSpec;
use bulkhead_api::gateway::{GRPCRoute, HTTPRoute, TLSRoute};
use bulkhead_policy::Caller;
use bulkhead_policy::admission::{self as policy, Request, Verdict, View, classify_caller};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::review::{AdmissionRequest, typed};

/// The check families, one route each (`/validate/<check>`, `/mutate/<check>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    /// Namespace assignment and ownership.
    Namespaces,
    /// Pod images, pull policies, classes, metadata.
    Pods,
    /// Claim storage classes and volumes.
    PersistentVolumeClaims,
    /// Service types, external IPs, metadata.
    Services,
    /// Ingress classes, hostnames, collisions.
    Ingresses,
    /// Gateway API route hostnames and collisions (HTTPRoute, GRPCRoute, TLSRoute).
    Routes,
    /// Gateway API Gateways: their class.
    Gateways,
    /// DRA ResourceClaims and ResourceClaimTemplates: the device classes of every request.
    ResourceClaims,
    /// Node metadata.
    Nodes,
    /// Tenant validation and preventDeletion.
    Tenants,
    /// Who may promote a ServiceAccount to tenant owner.
    Promotions,
    /// Any write in a cordoned tenant.
    Cordoned,
    /// Objects Bulkhead manages.
    Managed,
}

impl Check {
    /// Every check, in route order.
    pub const ALL: [Check; 13] = [
        Check::Namespaces,
        Check::Pods,
        Check::PersistentVolumeClaims,
        Check::Services,
        Check::Ingresses,
        Check::Routes,
        Check::Gateways,
        Check::ResourceClaims,
        Check::Nodes,
        Check::Tenants,
        Check::Promotions,
        Check::Cordoned,
        Check::Managed,
    ];

    /// The route segment, also the `webhook` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Namespaces => "namespaces",
            Check::Pods => "pods",
            Check::PersistentVolumeClaims => "persistentvolumeclaims",
            Check::Services => "services",
            Check::Ingresses => "ingresses",
            Check::Routes => "routes",
            Check::Gateways => "gateways",
            Check::ResourceClaims => "resourceclaims",
            Check::Nodes => "nodes",
            Check::Tenants => "tenants",
            Check::Promotions => "promotions",
            Check::Cordoned => "cordoned",
            Check::Managed => "managed",
        }
    }

    /// The check a route segment names.
    pub fn parse(segment: &str) -> Option<Check> {
        Check::ALL.into_iter().find(|c| c.as_str() == segment)
    }

    /// The reason of the Event a denial by this check records on the Tenant.
    pub fn denial_reason(self) -> &'static str {
        match self {
            Check::Namespaces => "NamespaceDenied",
            Check::Pods => "PodDenied",
            Check::PersistentVolumeClaims => "ClaimDenied",
            Check::Services => "ServiceDenied",
            Check::Ingresses => "IngressDenied",
            Check::Routes => "RouteDenied",
            Check::Gateways => "GatewayDenied",
            Check::ResourceClaims => "ResourceClaimDenied",
            Check::Nodes => "NodeDenied",
            Check::Tenants => "TenantDenied",
            Check::Promotions => "PromotionDenied",
            Check::Cordoned => "CordonedDenied",
            Check::Managed => "ManagedObjectDenied",
        }
    }

    /// Whether the check judges objects in tenant namespaces by their tenant (so a namespace the cache
    /// has not seen must be read before it is decided).
    pub fn by_namespace_tenant(self) -> bool {
        matches!(
            self,
            Check::Pods
                | Check::PersistentVolumeClaims
                | Check::Services
                | Check::Ingresses
                | Check::Routes
                | Check::Gateways
                | Check::ResourceClaims
                | Check::Promotions
                | Check::Cordoned
        )
    }

    /// Whether the check can mutate (has a `/mutate/` route).
    pub fn mutates(self) -> bool {
        matches!(
            self,
            Check::Namespaces
                | Check::Pods
                | Check::PersistentVolumeClaims
                | Check::Services
                | Check::Ingresses
                | Check::Gateways
        )
    }

    /// The checks that apply to an object of this kind (API group, kind), in the order the API server
    /// would call them; used by `bulkhead check`.
    pub fn for_kind(group: &str, kind: &str) -> Vec<Check> {
        let mut checks = Vec::new();
        match (group, kind) {
            ("", "Namespace") => return vec![Check::Namespaces],
            ("", "Node") => return vec![Check::Nodes],
            ("bulkhead.dev", "Tenant") => return vec![Check::Tenants],
            ("", "Pod") => checks.push(Check::Pods),
            ("", "ServiceAccount") => checks.push(Check::Promotions),
            ("", "PersistentVolumeClaim") => checks.push(Check::PersistentVolumeClaims),
            ("", "Service") => checks.push(Check::Services),
            ("networking.k8s.io", "Ingress") => checks.push(Check::Ingresses),
            ("gateway.networking.k8s.io", "HTTPRoute" | "GRPCRoute" | "TLSRoute") => {
                checks.push(Check::Routes)
            }
            ("gateway.networking.k8s.io", "Gateway") => checks.push(Check::Gateways),
            ("resource.k8s.io", "ResourceClaim" | "ResourceClaimTemplate") => {
                checks.push(Check::ResourceClaims)
            }
            _ => {}
        }
        checks.push(Check::Managed);
        checks.push(Check::Cordoned);
        checks
    }
}

/// What a decision reads besides the request.
pub struct Context<'a> {
    /// The cluster as the check sees it.
    pub view: &'a dyn View,
    /// The cluster configuration.
    pub config: &'a BulkheadConfigurationSpec,
    /// Bulkhead's own user name (an administrator).
    pub own_identity: &'a str,
    /// Whether the call is the mutating one (`/mutate/<check>`).
    pub mutating: bool,
}

fn tenant_of(ctx: &Context<'_>, namespace: Option<&str>) -> Option<std::sync::Arc<Tenant>> {
    let name = ctx.view.tenant_of_namespace(namespace?)?;
    ctx.view.tenant(&name)
}

/// The tenant of a tenant namespace for a check that must not pass it by: `Err` (a denial that says to
/// retry) when the namespace names a Tenant the cache has not seen (one created a moment ago).
fn tenant_to_check(
    ctx: &Context<'_>,
    namespace: Option<&str>,
) -> Result<Option<std::sync::Arc<Tenant>>, Verdict> {
    let Some(ns) = namespace else { return Ok(None) };
    let Some(name) = ctx.view.tenant_of_namespace(ns) else {
        return Ok(None);
    };
    match ctx.view.tenant(&name) {
        Some(tenant) => Ok(Some(tenant)),
        None => Err(Verdict::deny(
            None,
            format!(
                "namespace `{ns}` belongs to tenant `{name}`, which is not in Bulkhead's cache yet; retry in a moment (if it lasts, no Tenant `{name}` exists)"
            ),
        )),
    }
}

/// The tenant an answer concerns, for the audit log: the tenant whose rule denied it; for a namespace,
/// the tenant it is (or is being) assigned to, read from the object, the label the mutation adds, or
/// the object as it was; for a Tenant, itself; for an object in a namespace, that namespace's tenant.
pub fn answer_tenant(
    check: Check,
    request: &AdmissionRequest,
    verdict: &Verdict,
    view: &dyn View,
) -> Option<String> {
    if let Verdict::Deny(denial) = verdict
        && denial.tenant.is_some()
    {
        return denial.tenant.clone();
    }
    let label = |raw: Option<&serde_json::value::RawValue>| -> Option<String> {
        let object: serde_json::Value = serde_json::from_str(raw?.get()).ok()?;
        object
            .pointer(&format!(
                "/metadata/labels/{}",
                policy::pointer_segment(bulkhead_api::labels::TENANT)
            ))?
            .as_str()
            .map(str::to_owned)
    };
    match check {
        Check::Tenants => Some(request.name.clone()).filter(|n| !n.is_empty()),
        Check::Nodes => None,
        Check::Namespaces => {
            let patched = match verdict {
                Verdict::Allow(patch) => patch.iter().find_map(|op| {
                    let path = op.get("path")?.as_str()?;
                    let value = op.get("value")?;
                    let key = policy::pointer_segment(bulkhead_api::labels::TENANT);
                    if path == format!("/metadata/labels/{key}") {
                        value.as_str().map(str::to_owned)
                    } else if path == "/metadata/labels" {
                        value
                            .get(bulkhead_api::labels::TENANT)?
                            .as_str()
                            .map(str::to_owned)
                    } else {
                        None
                    }
                }),
                Verdict::Deny(_) => None,
            };
            patched
                .or_else(|| label(request.object.as_deref()))
                .or_else(|| label(request.old_object.as_deref()))
                .or_else(|| view.tenant_of_namespace(&request.name))
        }
        _ => request
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .and_then(|ns| view.tenant_of_namespace(ns)),
    }
}

/// The `auditAnnotations` of an answer: the check that decided, its decision, and the tenant the
/// answer concerns (see [`answer_tenant`]), so the API server's audit log tells which tenant did what.
pub fn audit_annotations(
    check: Check,
    request: &AdmissionRequest,
    verdict: &Verdict,
    view: &dyn View,
) -> std::collections::BTreeMap<&'static str, String> {
    let mut audit = std::collections::BTreeMap::from([
        ("check", check.as_str().to_owned()),
        (
            "decision",
            if verdict.is_allowed() { "allowed" } else { "denied" }.to_owned(),
        ),
    ]);
    if let Some(tenant) = answer_tenant(check, request, verdict, view) {
        audit.insert("tenant", tenant);
    }
    audit
}

/// The metadata of an object in a request, whatever its kind.
fn meta(raw: Option<&serde_json::value::RawValue>, what: &str) -> Result<Option<ObjectMeta>, String> {
    typed::<serde_json::Value>(raw, what)?
        .and_then(|v| v.get("metadata").cloned())
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| format!("the {what}'s metadata cannot be read: {e}"))
}

/// Decides one request. `Err` means the objects in it cannot be read (a 400).
pub fn decide(check: Check, request: &AdmissionRequest, ctx: &Context<'_>) -> Result<Verdict, String> {
    decide_audited(check, request, ctx).map(|(verdict, _)| verdict)
}

/// As [`decide`], with what `audit` namespace rules matched (admitted, to be reported).
pub fn decide_audited(
    check: Check,
    request: &AdmissionRequest,
    ctx: &Context<'_>,
) -> Result<(Verdict, Vec<String>), String> {
    let caller = Caller::new(
        request.user_info.username.clone(),
        request.user_info.groups.clone(),
    );
    let class = classify_caller(ctx.view, ctx.config, ctx.own_identity, &caller);
    let req = Request {
        operation: request.operation()?,
        subresource: request.sub_resource.as_deref().filter(|s| !s.is_empty()),
        caller: &caller,
        class,
        config: ctx.config,
        mutating: ctx.mutating,
        own_identity: ctx.own_identity,
    };
    let verdict = decide_checked(check, request, ctx, &req)?;
    if !verdict.is_allowed() || class == bulkhead_policy::identity::CallerClass::Ignored {
        return Ok((verdict, Vec::new()));
    }
    with_namespace_rules(check, request, ctx, &req, verdict)
}

/// The admission request as CEL conditions of namespace rules see it (`request`).
fn cel_request(request: &AdmissionRequest) -> serde_json::Value {
    serde_json::json!({
        "operation": request.operation,
        "namespace": request.namespace.clone().unwrap_or_default(),
        "name": request.name,
        "userInfo": {"username": request.user_info.username, "groups": request.user_info.groups},
        "kind": {"group": request.kind.group, "version": request.kind.version, "kind": request.kind.kind},
        "subResource": request.sub_resource.clone().unwrap_or_default(),
        "dryRun": request.dry_run.unwrap_or(false),
    })
}

/// `Tenant.spec.rules` on top of a verdict that allowed: Pods and Services are judged in the validating
/// call; a Namespace gets the rules' default and managed metadata in the mutating call (create) and is
/// judged in the validating one (create, update and its subresources).
fn with_namespace_rules(
    check: Check,
    request: &AdmissionRequest,
    ctx: &Context<'_>,
    req: &Request<'_>,
    verdict: Verdict,
) -> Result<(Verdict, Vec<String>), String> {
    use bulkhead_policy::admission::tenant_rules::{self, Scope};
    if !matches!(
        req.operation,
        policy::Operation::Create | policy::Operation::Update
    ) {
        return Ok((verdict, Vec::new()));
    }
    let Some(raw) = request.object.as_deref() else {
        return Ok((verdict, Vec::new()));
    };
    // Only a tenant with rules pays for reading the object again.
    let with_rules = match check {
        Check::Pods | Check::Services if !ctx.mutating && request.kind.kind != "Binding" => {
            tenant_of(ctx, request.namespace.as_deref()).is_some_and(|t| !t.spec.rules.is_empty())
        }
        Check::Namespaces => req.class == bulkhead_policy::identity::CallerClass::TenantUser,
        _ => false,
    };
    if !with_rules {
        return Ok((verdict, Vec::new()));
    }
    let mut object: serde_json::Value =
        serde_json::from_str(raw.get()).map_err(|e| format!("the object cannot be read: {e}"))?;
    let cel_request = cel_request(request);
    let no_labels = std::collections::BTreeMap::new();
    let finish = |verdict: Verdict, outcome: tenant_rules::Outcome, tenant: &str| match outcome.denial {
        Some(message) => (Verdict::deny(Some(tenant), message), outcome.audits),
        None => (verdict, outcome.audits),
    };
    match check {
        Check::Pods | Check::Services if !ctx.mutating && request.kind.kind != "Binding" => {
            let namespace = request.namespace.as_deref().unwrap_or_default();
            let Some(tenant) = tenant_of(ctx, Some(namespace)) else {
                return Ok((verdict, Vec::new()));
            };
            if tenant.spec.rules.is_empty() {
                return Ok((verdict, Vec::new()));
            }
            let labels = ctx.view.namespace_labels(namespace).unwrap_or_default();
            let scope = Scope {
                req,
                view: ctx.view,
                tenant: &tenant,
                namespace_name: namespace,
                namespace_labels: &labels,
                request: &cel_request,
                object: &object,
            };
            let outcome = if check == Check::Pods {
                let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(object.clone())
                    .map_err(|e| format!("the pod cannot be read: {e}"))?;
                let old = typed(request.old_object.as_deref(), "old pod")?;
                tenant_rules::pod(&scope, &pod, old.as_ref())
            } else {
                let svc = <k8s_openapi::api::core::v1::Service as serde::Deserialize>::deserialize(&object)
                    .map_err(|e| format!("the service cannot be read: {e}"))?;
                tenant_rules::service(&scope, &svc)
            };
            let name = tenant.metadata.name.clone().unwrap_or_default();
            Ok(finish(verdict, outcome, &name))
        }
        // As the rest of namespace metadata, the rules hold for tenant users; administrators and the
        // controller (which keeps managed values) are not held by them.
        Check::Namespaces if req.class == bulkhead_policy::identity::CallerClass::TenantUser => {
            let mut patch = match &verdict {
                Verdict::Allow(patch) => patch.clone(),
                Verdict::Deny(_) => return Ok((verdict, Vec::new())),
            };
            if ctx.mutating && !patch.is_empty() {
                let ops: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(patch.clone()))
                    .map_err(|e| format!("the namespace patch cannot be read: {e}"))?;
                json_patch::patch(&mut object, &ops)
                    .map_err(|e| format!("the namespace patch does not apply: {e}"))?;
            }
            let map = |field: &str| -> std::collections::BTreeMap<String, String> {
                object
                    .pointer(&format!("/metadata/{field}"))
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .unwrap_or_default()
            };
            let (labels, annotations) = (map("labels"), map("annotations"));
            let Some(tenant) = labels
                .get(bulkhead_api::labels::TENANT)
                .and_then(|t| ctx.view.tenant(t))
            else {
                return Ok((verdict, Vec::new()));
            };
            if tenant.spec.rules.is_empty() {
                return Ok((verdict, Vec::new()));
            }
            let scope = Scope {
                req,
                view: ctx.view,
                tenant: &tenant,
                namespace_name: &request.name,
                namespace_labels: &no_labels,
                request: &cel_request,
                object: &object,
            };
            let name = tenant.metadata.name.clone().unwrap_or_default();
            if ctx.mutating {
                if req.operation != policy::Operation::Create {
                    return Ok((verdict, Vec::new()));
                }
                let (want_labels, want_annotations) =
                    match tenant_rules::namespace_defaults(&scope, &labels, &annotations) {
                        Ok(wanted) => wanted,
                        Err(message) => return Ok((Verdict::deny(Some(&name), message), Vec::new())),
                    };
                for (kind, have, want) in [
                    (tenant_rules::MetadataKind::Labels, &labels, &want_labels),
                    (
                        tenant_rules::MetadataKind::Annotations,
                        &annotations,
                        &want_annotations,
                    ),
                ] {
                    if want == have {
                        continue;
                    }
                    if have.is_empty() {
                        let field = if kind == tenant_rules::MetadataKind::Labels {
                            "labels"
                        } else {
                            "annotations"
                        };
                        patch.push(serde_json::json!({"op": "add", "path": format!("/metadata/{field}"), "value": want}));
                        continue;
                    }
                    for (key, value) in want {
                        if have.get(key) != Some(value) {
                            patch.push(
                                serde_json::json!({"op": "add", "path": kind.pointer(key), "value": value}),
                            );
                        }
                    }
                }
                return Ok((Verdict::Allow(patch), Vec::new()));
            }
            let scope = Scope {
                namespace_labels: &labels,
                ..scope
            };
            let outcome = tenant_rules::namespace(&scope, &labels, &annotations);
            Ok(finish(verdict, outcome, &name))
        }
        _ => Ok((verdict, Vec::new())),
    }
}

fn decide_checked(
    check: Check,
    request: &AdmissionRequest,
    ctx: &Context<'_>,
    req: &Request<'_>,
) -> Result<Verdict, String> {
    let req = *req;
    let object = request.object.as_deref();
    let old = request.old_object.as_deref();
    let namespace = request.namespace.as_deref().filter(|n| !n.is_empty());
    Ok(match check {
        Check::Namespaces => policy::namespace(
            &req,
            ctx.view,
            typed(object, "namespace")?.as_ref(),
            typed(old, "old namespace")?.as_ref(),
        ),
        Check::Nodes => policy::node(
            &req,
            typed(object, "node")?.as_ref(),
            typed(old, "old node")?.as_ref(),
        ),
        Check::Tenants => policy::tenant(
            &req,
            typed(object, "tenant")?.as_ref(),
            typed(old, "old tenant")?.as_ref(),
        ),
        Check::Managed => {
            let kind = request.kind.kind.to_lowercase();
            let (object, old) = (meta(object, "object")?, meta(old, "old object")?);
            match policy::managed_object(&req, &kind, object.as_ref(), old.as_ref()) {
                Verdict::Allow(_) => {
                    policy::replicated_object(&req, ctx.view, &kind, object.as_ref(), old.as_ref())
                }
                denied => denied,
            }
        }
        Check::Gateways | Check::ResourceClaims => {
            let tenant = match tenant_to_check(ctx, namespace) {
                Ok(Some(tenant)) => tenant,
                Ok(None) => return Ok(Verdict::allow()),
                Err(denial) => return Ok(denial),
            };
            let Some(object) = typed::<serde_json::Value>(object, "object")? else {
                return Ok(Verdict::allow());
            };
            if check == Check::Gateways {
                policy::gateway(&req, ctx.view, &tenant, &object)
            } else {
                let template = request.kind.kind == "ResourceClaimTemplate";
                policy::resource_claim(&req, ctx.view, &tenant, &object, template)
            }
        }
        Check::Promotions => {
            let tenant = match tenant_to_check(ctx, namespace) {
                Ok(Some(tenant)) => tenant,
                Ok(None) => return Ok(Verdict::allow()),
                Err(denial) => return Ok(denial),
            };
            let (object, old) = (
                meta(object, "service account")?,
                meta(old, "old service account")?,
            );
            policy::promotion(
                &req,
                ctx.view,
                &tenant,
                &request.name,
                object.as_ref(),
                old.as_ref(),
            )
        }
        Check::Cordoned => match tenant_of(ctx, namespace) {
            Some(tenant) => {
                let what = match req.subresource {
                    // A subresource's kind (Scale, Eviction) does not say whose it is.
                    Some(sub) => format!("the {sub} of `{}`", request.name),
                    None => format!("{} `{}`", request.kind.kind.to_lowercase(), request.name),
                };
                policy::cordoned(&req, &tenant, &what)
            }
            None => Verdict::allow(),
        },
        Check::Pods | Check::PersistentVolumeClaims | Check::Services | Check::Ingresses | Check::Routes => {
            let tenant = match tenant_to_check(ctx, namespace) {
                Ok(Some(tenant)) => tenant,
                Ok(None) => return Ok(Verdict::allow()),
                Err(denial) => return Ok(denial),
            };
            if !matches!(
                req.operation,
                policy::Operation::Create | policy::Operation::Update
            ) {
                return Ok(Verdict::allow());
            }
            match check {
                // `pods/binding`, and the older `bindings` resource: where the pod is placed.
                Check::Pods if request.kind.kind == "Binding" => match typed(object, "binding")? {
                    Some(binding) => policy::pod_binding(&req, ctx.view, &tenant, &binding),
                    None => Verdict::allow(),
                },
                Check::Pods => match typed(object, "pod")? {
                    Some(pod) => policy::pod(&req, ctx.view, &tenant, &pod, typed(old, "old pod")?.as_ref()),
                    None => Verdict::allow(),
                },
                Check::PersistentVolumeClaims => match typed(object, "persistent volume claim")? {
                    Some(claim) => policy::persistent_volume_claim(&req, ctx.view, &tenant, &claim),
                    None => Verdict::allow(),
                },
                Check::Services => match typed(object, "service")? {
                    Some(svc) => policy::service(
                        &req,
                        ctx.view,
                        &tenant,
                        namespace.unwrap_or_default(),
                        &svc,
                        typed(old, "old service")?.as_ref(),
                    ),
                    None => Verdict::allow(),
                },
                Check::Routes => {
                    let namespace = namespace.unwrap_or_default();
                    let judge = |route: &policy::GatewayRoute<'_>| {
                        policy::gateway_route(&req, ctx.view, &tenant, namespace, route)
                    };
                    match request.kind.kind.as_str() {
                        "HTTPRoute" => match typed::<HTTPRoute>(object, "HTTPRoute")? {
                            Some(route) => judge(&policy::GatewayRoute::http(&route)),
                            None => Verdict::allow(),
                        },
                        "GRPCRoute" => match typed::<GRPCRoute>(object, "GRPCRoute")? {
                            Some(route) => judge(&policy::GatewayRoute::grpc(&route)),
                            None => Verdict::allow(),
                        },
                        "TLSRoute" => match typed::<TLSRoute>(object, "TLSRoute")? {
                            Some(route) => judge(&policy::GatewayRoute::tls(&route)),
                            None => Verdict::allow(),
                        },
                        other => return Err(format!("the routes check does not judge `{other}` objects")),
                    }
                }
                _ => match typed(object, "ingress")? {
                    Some(ing) => {
                        policy::ingress(&req, ctx.view, &tenant, namespace.unwrap_or_default(), &ing)
                    }
                    None => Verdict::allow(),
                },
            }
        }
    })
}
