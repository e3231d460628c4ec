//! What each verb does.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::admission::Operation;
use crate::auth::UserInfo;
use crate::patch::{PatchType, apply_patch, server_side_apply};
use crate::rbac::{Attributes, Authorizer};
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector, matches};
use crate::server::{Query, Shared, Target, json_response, wants_table};
use crate::status::{ApiError, ApiResult};
use crate::store::{Change, DeleteOptions, EventType};
use crate::table;

/// One parsed, authenticated and authorized request.
pub struct Request {
    /// Server state.
    pub shared: Arc<Shared>,
    /// Who is asking (after impersonation).
    pub user: UserInfo,
    /// What it is about.
    pub target: Target,
    /// Query parameters.
    pub query: Query,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
}

impl Request {
    fn rt(&self) -> &ResourceType {
        &self.target.rt
    }

    fn namespace(&self) -> &str {
        self.target.namespace.as_deref().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or("")
    }

    /// The object the path names, as stored now.
    fn current(&self) -> Option<Arc<Value>> {
        self.shared
            .store
            .lock()
            .get(&self.rt().group_resource(), self.namespace(), self.name())
    }

    /// The object the path names, or the API server's 404.
    fn existing(&self) -> ApiResult<Arc<Value>> {
        self.current()
            .ok_or_else(|| ApiError::not_found(self.rt(), self.name()))
    }

    fn selectors(&self) -> ApiResult<(LabelSelector, FieldSelector)> {
        Ok((
            LabelSelector::parse(&self.query.label_selector)?,
            FieldSelector::parse(&self.query.field_selector)?,
        ))
    }

    fn body_object(&self) -> ApiResult<Value> {
        let content_type = self
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.contains("protobuf") {
            let value = crate::protobuf::decode(&self.body).map_err(|e| ApiError {
                code: 415,
                reason: "UnsupportedMediaType".into(),
                message: format!("the body of the request could not be decoded from protobuf: {e}"),
                details: None,
            })?;
            return Ok(value);
        }
        if content_type.contains("cbor") {
            // Like an API server without that serializer: clients fall back to JSON on 415.
            return Err(ApiError {
                code: 415,
                reason: "UnsupportedMediaType".into(),
                message: format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type})"
                ),
                details: None,
            });
        }
        let value: Value = if content_type.contains("yaml") {
            let text = std::str::from_utf8(&self.body)
                .map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
        } else {
            serde_json::from_slice(&self.body).map_err(|e| {
                ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
            })?
        };
        if !value.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        Ok(value)
    }
}

/// The object as served at the requested version.
fn at_version(object: &Value, rt: &ResourceType) -> Value {
    let mut o = object.clone();
    o["apiVersion"] = json!(rt.api_version());
    o
}

fn object_response(code: StatusCode, object: &Value, rt: &ResourceType, warnings: &[String]) -> Response {
    let mut response = json_response(code, &at_version(object, rt));
    for warning in warnings {
        if let Ok(value) = HeaderValue::from_str(&format!("299 - \"{}\"", warning.replace('"', "'"))) {
            response.headers_mut().append("warning", value);
        }
    }
    response
}

/// GET of one object.
pub fn get(req: Request) -> ApiResult<Response> {
    let object = req.existing()?;
    if wants_table(&req.headers) {
        let rv = req.shared.store.lock().resource_version();
        return Ok(json_response(
            StatusCode::OK,
            &table::table(req.rt(), &[object], rv, req.query.include_object.as_deref()),
        ));
    }
    Ok(object_response(StatusCode::OK, &object, req.rt(), &[]))
}

/// POST `serviceaccounts/<name>/token` (TokenRequest): a new bearer token for the service account,
/// accepted by this server and by its TokenReview until the server stops.
pub fn token_request(req: Request) -> ApiResult<Response> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static ISSUED: AtomicU64 = AtomicU64::new(0);
    let account = req.existing()?;
    let namespace = account
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = account
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let token = format!(
        "{}{nanos:x}-{:x}",
        crate::auth::BOUND_TOKEN_PREFIX,
        ISSUED.fetch_add(1, Ordering::Relaxed)
    );
    let user = format!("system:serviceaccount:{namespace}:{name}");
    req.shared
        .tokens
        .write()
        .insert(token.clone(), crate::auth::UserInfo::new(&user, &[]));
    let request = req.body_object().unwrap_or_else(|_| json!({}));
    let seconds = request
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    let expires = k8s_openapi::jiff::Timestamp::now()
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
        .map(|t| t.to_string())
        .unwrap_or_default();
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace},
            "spec": request.get("spec").cloned().unwrap_or_else(|| json!({})),
            "status": {"token": token, "expirationTimestamp": expires},
        }),
    ))
}

/// GET of a collection: a list, with selectors and pagination.
pub fn list(req: Request) -> ApiResult<Response> {
    let (labels, fields) = req.selectors()?;
    let (objects, rv) = {
        let store = req.shared.store.lock();
        (
            store.list(&req.rt().group_resource(), req.target.namespace.as_deref()),
            store.resource_version(),
        )
    };
    let mut items: Vec<Arc<Value>> = objects
        .into_iter()
        .filter(|o| matches(&labels, &fields, o))
        .collect();
    let mut next = None;
    if let Some(token) = &req.query.continue_token {
        let (ns, name) = token
            .split_once('/')
            .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
        items.retain(|o| {
            let key = (
                o.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""),
            );
            key > (ns, name)
        });
    }
    let mut remaining = None;
    if let Some(limit) = req.query.limit
        && items.len() > limit
    {
        remaining = Some(items.len() - limit);
        items.truncate(limit);
        if let Some(last) = items.last() {
            next = Some(format!(
                "{}/{}",
                last.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                last.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            ));
        }
    }
    if wants_table(&req.headers) {
        let mut t = table::table(req.rt(), &items, rv, req.query.include_object.as_deref());
        if let Some(next) = next {
            t["metadata"]["continue"] = json!(next);
        }
        return Ok(json_response(StatusCode::OK, &t));
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(next) = next {
        metadata["continue"] = json!(next);
        metadata["remainingItemCount"] = json!(remaining);
    }
    let items: Vec<Value> = items.iter().map(|o| at_version(o, req.rt())).collect();
    let list = json!({
        "kind": format!("{}List", req.rt().kind),
        "apiVersion": req.rt().api_version(),
        "metadata": metadata,
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &list))
}

/// How unknown fields of a custom resource are treated (`fieldValidation`).
fn field_validation(req: &Request) -> &str {
    req.query.field_validation.as_deref().unwrap_or("Warn")
}

/// Decoding of a custom resource: strict field check or pruning, then defaults.
fn decode_custom(req: &Request, object: &mut Value) -> ApiResult<Vec<String>> {
    let Some(crd) = &req.rt().crd else {
        return Ok(Vec::new());
    };
    let mut warnings = Vec::new();
    match field_validation(req) {
        "Strict" => {
            let unknown: Vec<String> = bulkhead_api::validation::validate(crd, object)
                .into_iter()
                .filter(|e| e.starts_with("unknown field"))
                .collect();
            if !unknown.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                    req.rt().kind,
                    req.rt().version,
                    req.rt().kind,
                    unknown.join(", ")
                )));
            }
        }
        mode => {
            let dropped = bulkhead_api::validation::prune(crd, object);
            if mode == "Warn" {
                warnings.extend(dropped.into_iter().map(|f| format!("unknown field \"{f}\"")));
            }
        }
    }
    bulkhead_api::validation::apply_defaults(crd, object);
    Ok(warnings)
}

/// Schema validation of a custom resource (after mutating admission).
fn validate_custom(rt: &ResourceType, object: &Value, old: Option<&Value>) -> ApiResult<()> {
    let Some(crd) = &rt.crd else { return Ok(()) };
    let errors = bulkhead_api::validation::validate_update(crd, object, old);
    if errors.is_empty() {
        return Ok(());
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut e = ApiError::invalid(rt, name, &errors);
    e.message = format!(
        "{}.{} \"{name}\" is invalid: {}",
        rt.kind,
        rt.group,
        errors.join(", ")
    );
    Err(e)
}

fn check_identity(req: &Request, object: &mut Value) -> ApiResult<()> {
    let rt = req.rt();
    if let Some(kind) = object.get("kind").and_then(Value::as_str)
        && kind != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the object ({kind}) does not match the resource ({})",
            rt.kind
        )));
    }
    if let Some(api_version) = object.get("apiVersion").and_then(Value::as_str)
        && api_version.split('/').next_back().is_none_or(|v| v != rt.version)
        && !(rt.group.is_empty() && api_version == rt.version)
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    object["apiVersion"] = json!(rt.api_version());
    object["kind"] = json!(rt.kind);
    if rt.namespaced {
        match object.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != req.namespace() => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                if object.get("metadata").is_none() {
                    object["metadata"] = json!({});
                }
                object["metadata"]["namespace"] = json!(req.namespace());
            }
        }
    }
    Ok(())
}

fn check_crd(rt: &ResourceType, object: &Value) -> ApiResult<Option<CustomResourceDefinition>> {
    if rt.group != "apiextensions.k8s.io" || rt.plural != "customresourcedefinitions" {
        return Ok(None);
    }
    let crd: CustomResourceDefinition = serde_json::from_value(object.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid CustomResourceDefinition: {e}")))?;
    let name = crd.metadata.name.clone().unwrap_or_default();
    let expected = format!("{}.{}", crd.spec.names.plural, crd.spec.group);
    let mut problems = Vec::new();
    if name != expected {
        problems.push(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        ));
    }
    problems.extend(
        bulkhead_api::crds::structural_violations(&crd)
            .into_iter()
            .map(|v| format!("spec.validation.openAPIV3Schema: {v}")),
    );
    if !problems.is_empty() {
        return Err(ApiError::invalid(rt, &name, &problems));
    }
    Ok(Some(crd))
}

/// After a CRD is written: serve it, and mark it established.
fn established(req: &Request, crd: &CustomResourceDefinition) {
    req.shared.registry.write().register_crd(crd);
    let registry = req.shared.registry.read();
    let mut store = req.shared.store.lock();
    let name = crd.metadata.name.clone().unwrap_or_default();
    let Some(current) = store.get(&req.rt().group_resource(), "", &name) else {
        return;
    };
    let mut with_status = (*current).clone();
    let stored: Vec<String> = crd
        .spec
        .versions
        .iter()
        .filter(|v| v.storage)
        .map(|v| v.name.clone())
        .collect();
    let condition = |t: &str, reason: &str| json!({"type": t, "status": "True", "reason": reason, "message": "", "lastTransitionTime": current.pointer("/metadata/creationTimestamp")});
    with_status["status"] = json!({
        "conditions": [condition("NamesAccepted", "NoConflicts"), condition("Established", "InitialNamesAccepted")],
        "acceptedNames": serde_json::to_value(&crd.spec.names).unwrap_or(Value::Null),
        "storedVersions": stored,
    });
    // Writing our own status on an object that exists cannot fail.
    let _ = store.update(&registry, req.rt(), "", &name, with_status, Some("status"));
}

/// POST: create.
pub async fn create(req: Request) -> ApiResult<Response> {
    if req.query.dry_run {
        return Err(ApiError::bad_request("dryRun is not supported by the testkit"));
    }
    let mut object = req.body_object()?;
    check_identity(&req, &mut object)?;
    record_manager(&req, &mut object, None, "Update");
    let mut warnings = decode_custom(&req, &mut object)?;
    store_new(&req, object, &mut warnings).await
}

/// Records the writer in the object's managedFields as the API server does: one entry per manager,
/// operation and subresource, stamped with the time (a write that changes nothing keeps the old
/// entries, as the store keeps the old object). The manager is `fieldManager`, else the client's
/// user agent up to its first `/`. Field sets are not tracked: every entry's `fieldsV1` is empty.
fn record_manager(req: &Request, object: &mut Value, old: Option<&Value>, operation: &str) {
    let manager = req
        .query
        .field_manager
        .clone()
        .filter(|m| !m.is_empty())
        .or_else(|| {
            req.headers
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let subresource = req.target.subresource.clone();
    let mut entries: Vec<Value> = old
        .and_then(|o| o.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    entries.retain(|e| {
        !(e["manager"] == json!(manager)
            && e["operation"] == json!(operation)
            && e.get("subresource").and_then(Value::as_str) == subresource.as_deref())
    });
    let mut entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": req.rt().api_version(),
        "time": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "fieldsType": "FieldsV1",
        "fieldsV1": {},
    });
    if let Some(sub) = subresource {
        entry["subresource"] = json!(sub);
    }
    entries.push(entry);
    if let Some(meta) = object
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
    {
        meta["managedFields"] = Value::Array(entries);
    }
}

/// Admission, validation and storage of a new object: the common end of a POST and of an apply that creates.
async fn store_new(req: &Request, mut object: Value, warnings: &mut Vec<String>) -> ApiResult<Response> {
    let crd = check_crd(req.rt(), &object)?;
    // The API server ignores a uid the client sends and gives its own before validating admission.
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("uid");
    }
    let object = admit(req, Operation::Create, Some(object), None, warnings)
        .await?
        .unwrap_or(Value::Null);
    let created = {
        let _registry = req.shared.registry.read();
        req.shared
            .store
            .lock()
            .create(req.rt(), req.namespace(), object)?
    };
    if let Some(crd) = crd {
        established(req, &crd);
    }
    Ok(object_response(StatusCode::CREATED, &created, req.rt(), warnings))
}

async fn admit(
    req: &Request,
    op: Operation,
    object: Option<Value>,
    old: Option<Arc<Value>>,
    warnings: &mut Vec<String>,
) -> ApiResult<Option<Value>> {
    req.shared
        .admission
        .admit(
            &req.shared,
            &req.user,
            &req.target,
            op,
            object,
            old.as_deref(),
            warnings,
            &|object| {
                if matches!(op, Operation::Create | Operation::Update) {
                    validate_custom(req.rt(), object, old.as_deref())?;
                }
                Ok(())
            },
        )
        .await
}

/// POST `pods/<name>/binding`, or of the older `bindings` resource: places a pod on a node, as the
/// scheduler does. Admission sees a Binding create (for `pods/binding` the resource is `pods` with
/// subresource `binding`); then the pod's `spec.nodeName` is set, once: a pod already placed is a 409.
pub async fn bind(req: Request) -> ApiResult<Response> {
    let mut binding = req.body_object()?;
    let pod_name = match req.target.name.clone() {
        Some(name) => name,
        None => binding
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    };
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let pods = req
        .shared
        .registry
        .read()
        .find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("no pods resource"))?;
    if node.is_empty() {
        return Err(ApiError::invalid(
            &pods,
            &pod_name,
            &["target.name: Required value".to_owned()],
        ));
    }
    binding["apiVersion"] = json!("v1");
    binding["kind"] = json!("Binding");
    if binding.get("metadata").is_none() {
        binding["metadata"] = json!({});
    }
    binding["metadata"]["name"] = json!(pod_name);
    binding["metadata"]["namespace"] = json!(req.namespace());
    let binding_meta = binding["metadata"].clone();
    let mut warnings = Vec::new();
    admit(&req, Operation::Create, Some(binding), None, &mut warnings).await?;
    let registry = req.shared.registry.read();
    let mut store = req.shared.store.lock();
    let pod = store
        .get(&pods.group_resource(), req.namespace(), &pod_name)
        .ok_or_else(|| ApiError::not_found(&pods, &pod_name))?;
    if let Some(placed) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        let mut e = ApiError::conflict(&pods, &pod_name);
        e.message = format!(
            "Operation cannot be fulfilled on pods/binding \"{pod_name}\": pod {pod_name} is already assigned to node \"{placed}\""
        );
        return Err(e);
    }
    let mut placed = (*pod).clone();
    placed["spec"]["nodeName"] = json!(node);
    // The API server merges the Binding's labels and annotations into the pod's.
    for field in ["labels", "annotations"] {
        if let Some(extra) = binding_meta.get(field).and_then(Value::as_object) {
            let meta = &mut placed["metadata"];
            if !meta[field].is_object() {
                meta[field] = json!({});
            }
            for (k, v) in extra {
                meta[field][k] = v.clone();
            }
        }
    }
    store.update(&registry, &pods, req.namespace(), &pod_name, placed, None)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// PUT: replace, on the object or its status / finalize subresource.
pub async fn update(req: Request) -> ApiResult<Response> {
    let mut object = req.body_object()?;
    check_identity(&req, &mut object)?;
    let old = req.existing()?;
    record_manager(&req, &mut object, Some(&old), "Update");
    let mut warnings = decode_custom(&req, &mut object)?;
    write(&req, object, old, &mut warnings).await
}

async fn write(
    req: &Request,
    object: Value,
    old: Arc<Value>,
    warnings: &mut Vec<String>,
) -> ApiResult<Response> {
    let crd = check_crd(req.rt(), &object)?;
    let object = admit(req, Operation::Update, Some(object), Some(old), warnings)
        .await?
        .unwrap_or(Value::Null);
    if req.query.dry_run {
        // A dry run: admitted and validated, answered with the object it would store, nothing stored.
        return Ok(object_response(StatusCode::OK, &object, req.rt(), warnings));
    }
    let updated = {
        let registry = req.shared.registry.read();
        req.shared.store.lock().update(
            &registry,
            req.rt(),
            req.namespace(),
            req.name(),
            object,
            req.target.subresource.as_deref(),
        )?
    };
    if let Some(crd) = crd {
        established(req, &crd);
    }
    Ok(object_response(StatusCode::OK, &updated, req.rt(), warnings))
}

/// PATCH: merge, JSON, strategic or server-side apply.
pub async fn patch(req: Request) -> ApiResult<Response> {
    let content_type = req
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let patch_type = PatchType::from_content_type(content_type).ok_or_else(|| ApiError {
        code: 415,
        reason: "UnsupportedMediaType".into(),
        message: format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"),
        details: None,
    })?;
    let gr = req.rt().group_resource();
    let old = req.current();
    if patch_type == PatchType::Apply {
        let manager = req.query.field_manager.clone().filter(|m| !m.is_empty()).ok_or_else(|| {
            ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
        })?;
        let mut config = req.body_object()?;
        check_identity(&req, &mut config)?;
        if let Some(name) = config.pointer("/metadata/name").and_then(Value::as_str)
            && name != req.name()
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                req.name()
            )));
        }
        config["metadata"]["name"] = json!(req.name());
        let previous = req
            .shared
            .store
            .lock()
            .last_applied(&gr, req.namespace(), req.name(), &manager)
            .cloned();
        let mut warnings = Vec::new();
        let response = match old {
            None => {
                if req.target.subresource.is_some() {
                    return Err(ApiError::not_found(req.rt(), req.name()));
                }
                let authorized = {
                    let store = req.shared.store.lock();
                    let attrs = Attributes::resource(
                        "create",
                        &req.rt().group,
                        &req.rt().plural,
                        req.target.namespace.as_deref(),
                        None,
                    );
                    Authorizer::new(&store).allows(&req.user, &attrs)
                };
                if !authorized {
                    let attrs = Attributes::resource(
                        "create",
                        &req.rt().group,
                        &req.rt().plural,
                        req.target.namespace.as_deref(),
                        Some(req.name()),
                    );
                    return Err(ApiError::forbidden(attrs.forbidden_message(&req.user.name)));
                }
                let mut object = config.clone();
                record_manager(&req, &mut object, None, "Apply");
                warnings.extend(decode_custom(&req, &mut object)?);
                store_new(&req, object, &mut warnings).await?
            }
            Some(old) => {
                let mut object = server_side_apply(&old, previous.as_ref(), &config);
                record_manager(&req, &mut object, Some(&old), "Apply");
                if let Some(rv) = old.pointer("/metadata/resourceVersion") {
                    // Apply never conflicts on resourceVersion unless the config names one.
                    if config.pointer("/metadata/resourceVersion").is_none() {
                        object["metadata"]["resourceVersion"] = rv.clone();
                    }
                }
                warnings.extend(decode_custom(&req, &mut object)?);
                write(&req, object, old, &mut warnings).await?
            }
        };
        req.shared
            .store
            .lock()
            .set_applied(&gr, req.namespace(), req.name(), &manager, config);
        return Ok(response);
    }
    let old = old.ok_or_else(|| ApiError::not_found(req.rt(), req.name()))?;
    let mut object = apply_patch(patch_type, &old, &req.body)?;
    check_identity(&req, &mut object)?;
    record_manager(&req, &mut object, Some(&old), "Update");
    let mut warnings = decode_custom(&req, &mut object)?;
    write(&req, object, old, &mut warnings).await
}

fn delete_options(req: &Request) -> ApiResult<DeleteOptions> {
    let mut options = DeleteOptions {
        orphan: req.query.propagation_policy.as_deref() == Some("Orphan"),
        ..Default::default()
    };
    if !req.body.is_empty() {
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        if let Some(policy) = body.get("propagationPolicy").and_then(Value::as_str) {
            options.orphan = policy == "Orphan";
        }
        if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            options.orphan = true;
        }
        options.uid = body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        options.resource_version = body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    Ok(options)
}

/// DELETE of one object.
pub async fn delete(req: Request) -> ApiResult<Response> {
    if req.query.dry_run {
        return Err(ApiError::bad_request("dryRun is not supported by the testkit"));
    }
    let options = delete_options(&req)?;
    let old = req.existing()?;
    let mut warnings = Vec::new();
    admit(&req, Operation::Delete, None, Some(old), &mut warnings).await?;
    let deleted = {
        let registry = req.shared.registry.read();
        req.shared
            .store
            .lock()
            .delete(&registry, req.rt(), req.namespace(), req.name(), &options)?
    };
    after_delete(&req, &deleted);
    Ok(object_response(StatusCode::OK, &deleted, req.rt(), &warnings))
}

/// The string at a JSON pointer, or "" (absent fields of Kubernetes objects read as empty strings).
fn text(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// After an object is gone for good: a deleted CRD stops being served and its objects go.
fn after_delete(req: &Request, deleted: &Value) {
    if req.rt().group.is_empty() && req.rt().plural == "serviceaccounts" {
        // Tokens issued by TokenRequest are bound to the account: they die with it.
        let user = format!(
            "system:serviceaccount:{}:{}",
            text(deleted, "/metadata/namespace"),
            text(deleted, "/metadata/name")
        );
        req.shared.tokens.write().revoke_bound(&user);
    }
    if req.rt().group == "apiextensions.k8s.io" && deleted.pointer("/metadata/deletionTimestamp").is_none() {
        let group = text(deleted, "/spec/group");
        let plural = text(deleted, "/spec/names/plural");
        req.shared.registry.write().unregister_crd(&group, &plural);
        req.shared
            .store
            .lock()
            .drop_bucket(&crate::registry::GroupResource {
                group,
                resource: plural,
            });
    }
}

/// DELETE of a collection (with selectors).
pub async fn delete_collection(req: Request) -> ApiResult<Response> {
    let (labels, fields) = req.selectors()?;
    let options = delete_options(&req)?;
    let objects: Vec<Arc<Value>> = req
        .shared
        .store
        .lock()
        .list(&req.rt().group_resource(), req.target.namespace.as_deref());
    let mut deleted = Vec::new();
    for object in objects.into_iter().filter(|o| matches(&labels, &fields, o)) {
        let ns = text(&object, "/metadata/namespace");
        let name = text(&object, "/metadata/name");
        let target = Target {
            rt: req.target.rt.clone(),
            namespace: Some(ns.clone()).filter(|n| !n.is_empty()),
            name: Some(name.clone()),
            subresource: None,
        };
        let mut warnings = Vec::new();
        let sub = Request {
            shared: req.shared.clone(),
            user: req.user.clone(),
            target,
            query: req.query.clone(),
            headers: req.headers.clone(),
            body: Bytes::new(),
        };
        admit(&sub, Operation::Delete, None, Some(object.clone()), &mut warnings).await?;
        let result = {
            let registry = req.shared.registry.read();
            req.shared
                .store
                .lock()
                .delete(&registry, req.rt(), &ns, &name, &options)
        };
        // Already gone, or a precondition failed: a collection delete goes on with the others.
        if let Ok(d) = result {
            after_delete(&sub, &d);
            deleted.push(at_version(&d, req.rt()));
        }
    }
    let rv = req.shared.store.lock().resource_version();
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", req.rt().kind), "apiVersion": req.rt().api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": deleted}),
    ))
}

/// POST of a review: TokenReview, SubjectAccessReview and its self and local forms, SelfSubjectRulesReview.
pub fn review(req: Request) -> ApiResult<Response> {
    let mut review = req.body_object()?;
    let rt = req.rt().clone();
    review["apiVersion"] = json!(rt.api_version());
    review["kind"] = json!(rt.kind);
    let store = req.shared.store.lock();
    let authorizer = Authorizer::new(&store);
    let may_create = |resource: &str| {
        authorizer.allows(
            &req.user,
            &Attributes::resource(
                "create",
                &rt.group,
                resource,
                req.target.namespace.as_deref(),
                None,
            ),
        )
    };
    match rt.plural.as_str() {
        "tokenreviews" => {
            if !may_create("tokenreviews") {
                let attrs = Attributes::resource("create", &rt.group, "tokenreviews", None, None);
                return Err(ApiError::forbidden(attrs.forbidden_message(&req.user.name)));
            }
            let token = review
                .pointer("/spec/token")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            review["status"] = match req.shared.tokens.read().lookup(&token) {
                Some(user) => {
                    json!({"authenticated": true, "user": {"username": user.name, "groups": user.groups}})
                }
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
        }
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            if !may_create(&rt.plural) {
                let attrs = Attributes::resource(
                    "create",
                    &rt.group,
                    &rt.plural,
                    req.target.namespace.as_deref(),
                    None,
                );
                return Err(ApiError::forbidden(attrs.forbidden_message(&req.user.name)));
            }
            let spec = review.get("spec").cloned().unwrap_or_default();
            let name = spec.get("user").and_then(Value::as_str).unwrap_or("");
            let groups: Vec<&str> = spec
                .get("groups")
                .and_then(Value::as_array)
                .map(|g| g.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let subject = UserInfo::new(name, &groups);
            let mut attrs = review_attributes(&spec);
            if rt.plural == "localsubjectaccessreviews" {
                attrs.namespace = req.target.namespace.clone();
            }
            let allowed = authorizer.allows(&subject, &attrs);
            review["status"] = json!({"allowed": allowed});
        }
        "selfsubjectaccessreviews" => {
            let spec = review.get("spec").cloned().unwrap_or_default();
            let allowed = authorizer.allows(&req.user, &review_attributes(&spec));
            review["status"] = json!({"allowed": allowed});
        }
        "selfsubjectrulesreviews" => {
            let ns = review
                .pointer("/spec/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let rules = authorizer.rules_for(&req.user, &ns);
            let (non_resource, resource): (Vec<Value>, Vec<Value>) = rules
                .into_iter()
                .partition(|r| r.get("nonResourceURLs").is_some());
            review["status"] =
                json!({"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": false});
        }
        _ => return Err(ApiError::method_not_allowed("POST", &rt)),
    }
    Ok(json_response(StatusCode::CREATED, &review))
}

fn review_attributes(spec: &Value) -> Attributes {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    if let Some(nr) = spec.get("nonResourceAttributes") {
        return Attributes::non_resource(&s(nr, "verb"), &s(nr, "path"));
    }
    let ra = spec.get("resourceAttributes").cloned().unwrap_or_default();
    let mut attrs = Attributes::resource(&s(&ra, "verb"), &s(&ra, "group"), &s(&ra, "resource"), None, None);
    attrs.namespace = Some(s(&ra, "namespace")).filter(|v| !v.is_empty());
    attrs.name = Some(s(&ra, "name")).filter(|v| !v.is_empty());
    attrs.subresource = Some(s(&ra, "subresource")).filter(|v| !v.is_empty());
    attrs
}

/// The watch event a change is for this watch, if any: selector transitions become ADDED / DELETED as
/// in the API server's watch cache.
fn event_for(
    change: &Change,
    rt: &ResourceType,
    namespace: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Option<(&'static str, Value)> {
    if change.gr != rt.group_resource() || namespace.is_some_and(|ns| ns != change.namespace) {
        return None;
    }
    let now = matches(labels, fields, &change.object);
    let (kind, object) = match change.kind {
        EventType::Added if now => ("ADDED", (*change.object).clone()),
        EventType::Deleted if now => ("DELETED", (*change.object).clone()),
        EventType::Modified => {
            let before = change.old.as_ref().is_some_and(|o| matches(labels, fields, o));
            match (before, now) {
                (true, true) => ("MODIFIED", (*change.object).clone()),
                (false, true) => ("ADDED", (*change.object).clone()),
                (true, false) => {
                    let mut old = change.old.as_deref().cloned().unwrap_or(Value::Null);
                    old["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                    ("DELETED", old)
                }
                (false, false) => return None,
            }
        }
        _ => return None,
    };
    Some((kind, at_version(&object, rt)))
}

/// GET with `watch=true`: a stream of events, one JSON object per line.
pub async fn watch(req: Request) -> ApiResult<Response> {
    let (labels, fields) = req.selectors()?;
    let rt = req.target.rt.clone();
    let namespace = req.target.namespace.clone();
    let table_mode = wants_table(&req.headers);
    let include = req.query.include_object.clone();
    let bookmarks = req.query.bookmarks;
    let initial_events = req.query.send_initial_events;
    let (mut rx, initial, start_rv, error) = {
        let store = req.shared.store.lock();
        let rx = store.subscribe();
        let start = store.resource_version();
        // Without a resourceVersion (or with "0", or when initial events are asked for) a watch starts
        // with the current state as ADDED events; with one, it replays what happened after it.
        let from: Option<u64> = match req.query.resource_version.as_deref() {
            _ if initial_events => None,
            None | Some("") | Some("0") => None,
            Some(rv) => Some(
                rv.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
            ),
        };
        let mut error = None;
        let initial: Vec<(&'static str, Value)> = match from {
            None => store
                .list(&rt.group_resource(), namespace.as_deref())
                .into_iter()
                .filter(|o| matches(&labels, &fields, o))
                .map(|o| ("ADDED", at_version(&o, &rt)))
                .collect(),
            Some(rv) => match store.changes_since(rv, &rt.group_resource()) {
                Ok(changes) => changes
                    .iter()
                    .filter_map(|c| event_for(c, &rt, namespace.as_deref(), &labels, &fields))
                    .collect(),
                Err(e) => {
                    error = Some(e);
                    Vec::new()
                }
            },
        };
        (rx, initial, start, error)
    };
    let timeout = req.query.timeout_seconds.map(Duration::from_secs);
    let render = move |kind: &str, object: Value| -> Bytes {
        let object = if table_mode && kind != "BOOKMARK" && kind != "ERROR" {
            table::table(&rt, &[Arc::new(object)], 0, include.as_deref())
        } else {
            object
        };
        Bytes::from(format!("{}\n", json!({"type": kind, "object": object})))
    };
    let bookmark_kind = req.target.rt.kind.clone();
    let bookmark_version = req.target.rt.api_version();
    let bookmark = move |rv: u64, initial_end: bool| -> Value {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": bookmark_kind, "apiVersion": bookmark_version, "metadata": metadata})
    };
    let rt = req.target.rt.clone();
    let stream = async_stream(move |tx| async move {
        if let Some(error) = error {
            let _ = tx.send(render("ERROR", error.to_status())).await;
            return;
        }
        for (kind, object) in initial {
            if tx.send(render(kind, object)).await.is_err() {
                return;
            }
        }
        if initial_events
            && bookmarks
            && tx
                .send(render("BOOKMARK", bookmark(start_rv, true)))
                .await
                .is_err()
        {
            return;
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut last_rv = start_rv;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let sleep_until =
                deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep_until(sleep_until) => {
                    if deadline.is_some() { return; }
                }
                _ = tick.tick(), if bookmarks => {
                    if tx.send(render("BOOKMARK", bookmark(last_rv, false))).await.is_err() { return; }
                }
                change = rx.recv() => match change {
                    Ok(change) => {
                        last_rv = last_rv.max(change.rv);
                        if change.rv <= start_rv { continue; }
                        if let Some((kind, object)) = event_for(&change, &rt, namespace.as_deref(), &labels, &fields)
                            && tx.send(render(kind, object)).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let _ = tx.send(render("ERROR", ApiError::gone(last_rv, last_rv).to_status())).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    let body = Body::from_stream(stream);
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A stream fed by a task through a channel; the task stops when the client goes away.
fn async_stream<F, Fut>(producer: F) -> impl futures::Stream<Item = Result<Bytes, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(producer(tx));
    futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}
