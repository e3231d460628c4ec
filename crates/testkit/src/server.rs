//! The HTTP front: parses Kubernetes API paths, authenticates, applies impersonation, authorizes with
//! RBAC, and dispatches to the handlers.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};

use crate::admission::Admission;
use crate::auth::{Tokens, UserInfo, impersonate};
use crate::handlers;
use crate::openapi;
use crate::rbac::{Attributes, Authorizer};
use crate::registry::{Registry, ResourceType};
use crate::status::{ApiError, ApiResult};
use crate::store::Store;

/// The largest request body accepted, as the API server's limit.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Everything the server shares between requests.
pub struct Shared {
    /// Objects. Lock order: registry before store.
    pub store: Mutex<Store>,
    /// Served types.
    pub registry: RwLock<Registry>,
    /// Bearer tokens.
    pub tokens: RwLock<Tokens>,
    /// Calls admission webhooks.
    pub admission: Admission,
    /// Counts of requests by verb, for tests (requests, not writes).
    pub requests: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// A parsed resource path.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource type.
    pub rt: Arc<ResourceType>,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Object name from the path.
    pub name: Option<String>,
    /// Subresource from the path.
    pub subresource: Option<String>,
}

enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList(String, String),
    OpenApiV3,
    OpenApiV3Doc(String),
    Health,
    Resource(Target),
}

fn parse_route(registry: &Registry, path: &str) -> ApiResult<Route> {
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (group, version, rest) = match seg.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["healthz"] | ["livez"] | ["readyz"] => return Ok(Route::Health),
        ["openapi", "v3"] => return Ok(Route::OpenApiV3),
        ["openapi", "v3", rest @ ..] => return Ok(Route::OpenApiV3Doc(rest.join("/"))),
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["apis", group] => return Ok(Route::Group((*group).to_owned())),
        ["api", version] => return Ok(Route::ResourceList(String::new(), (*version).to_owned())),
        ["apis", group, version] => {
            return Ok(Route::ResourceList((*group).to_owned(), (*version).to_owned()));
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    let find = |plural: &str| {
        registry
            .find(group, version, plural)
            .ok_or_else(|| ApiError::no_route(path))
    };
    let target =
        |rt: Arc<ResourceType>, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>| Target {
            rt,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            subresource: sub.map(str::to_owned),
        };
    let namespaces_is_namespace =
        |rest: &[&str]| rest.len() <= 2 || matches!(rest.get(2), Some(&"status") | Some(&"finalize"));
    let route = match rest {
        ["namespaces", ns, resource, tail @ ..]
            if group.is_empty() && !namespaces_is_namespace(rest) || !group.is_empty() =>
        {
            let rt = find(resource)?;
            if !rt.namespaced {
                return Err(ApiError::no_route(path));
            }
            match tail {
                [] => target(rt, Some(ns), None, None),
                [name] => target(rt, Some(ns), Some(name), None),
                [name, sub] => target(rt, Some(ns), Some(name), Some(sub)),
                _ => return Err(ApiError::no_route(path)),
            }
        }
        [resource] => target(find(resource)?, None, None, None),
        [resource, name] => {
            let rt = find(resource)?;
            if rt.namespaced {
                return Err(ApiError::no_route(path));
            }
            target(rt, None, Some(name), None)
        }
        [resource, name, sub] => {
            let rt = find(resource)?;
            if rt.namespaced {
                return Err(ApiError::no_route(path));
            }
            target(rt, None, Some(name), Some(sub))
        }
        _ => return Err(ApiError::no_route(path)),
    };
    if let Target {
        subresource: Some(sub),
        rt,
        ..
    } = &route
    {
        let known = (sub == "status" && rt.status)
            || (sub == "finalize" && rt.group.is_empty() && rt.plural == "namespaces")
            || (sub == "token" && rt.group.is_empty() && rt.plural == "serviceaccounts")
            || (sub == "binding" && rt.group.is_empty() && rt.plural == "pods");
        if !known {
            return Err(ApiError::no_route(path));
        }
    }
    Ok(Route::Resource(route))
}

/// The one handler: every request goes through here.
pub async fn handle(State(shared): State<Arc<Shared>>, request: Request<Body>) -> Response {
    match handle_inner(shared, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle_inner(shared: Arc<Shared>, request: Request<Body>) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let query = Query::parse(parts.uri.query().unwrap_or(""));
    let headers = parts.headers;

    let caller = shared.tokens.read().authenticate(&headers)?;
    let user = {
        let store = shared.store.lock();
        impersonate(caller, &headers, &Authorizer::new(&store))?
    };
    let route = {
        let registry = shared.registry.read();
        parse_route(&registry, &path)?
    };
    let Route::Resource(target) = route else {
        authorize(
            &shared,
            &user,
            &Attributes::non_resource(&method.as_str().to_lowercase(), &path),
        )?;
        return discovery(&shared, route);
    };

    let body = read_body(body).await?;
    let verb = verb_of(&method, &target, &query)?;
    *shared.requests.lock().entry(verb.to_owned()).or_default() += 1;
    // Reviews are answered to anyone; a Binding (also served as created-only) is authorized.
    if !target.rt.virtual_create || target.rt.plural == "bindings" {
        let mut attrs = Attributes::resource(
            verb,
            &target.rt.group,
            &target.rt.plural,
            target.namespace.as_deref(),
            target.name.as_deref(),
        );
        attrs.subresource = target.subresource.clone();
        authorize(&shared, &user, &attrs)?;
    }
    let request = handlers::Request {
        shared: shared.clone(),
        user,
        target,
        query,
        headers,
        body,
    };
    match (method, request.target.name.is_some()) {
        (Method::GET, false) if request.query.watch => handlers::watch(request).await,
        (Method::GET, false) => handlers::list(request),
        (Method::GET, true) => handlers::get(request),
        (Method::POST, false) if request.target.rt.plural == "bindings" => handlers::bind(request).await,
        (Method::POST, true)
            if request.target.rt.plural == "pods"
                && request.target.subresource.as_deref() == Some("binding") =>
        {
            handlers::bind(request).await
        }
        (Method::POST, false) if request.target.rt.virtual_create => handlers::review(request),
        (Method::POST, false) => handlers::create(request).await,
        (Method::POST, true)
            if request.target.rt.plural == "serviceaccounts"
                && request.target.subresource.as_deref() == Some("token") =>
        {
            handlers::token_request(request)
        }
        (Method::PUT, true) => handlers::update(request).await,
        (Method::PATCH, true) => handlers::patch(request).await,
        (Method::DELETE, true) => handlers::delete(request).await,
        (Method::DELETE, false) => handlers::delete_collection(request).await,
        (method, _) => Err(ApiError::method_not_allowed(method.as_str(), &request.target.rt)),
    }
}

/// Reads a body up to [`MAX_BODY`]. A larger one is read to its end (up to a bound) and dropped, so that
/// the client, still sending, receives the 413 instead of a broken connection.
async fn read_body(body: Body) -> ApiResult<axum::body::Bytes> {
    use http_body_util::BodyExt;
    let too_large = || ApiError {
        code: 413,
        reason: "RequestEntityTooLarge".into(),
        message: format!("Request entity too large: limit is {MAX_BODY}"),
        details: None,
    };
    let mut body = body;
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= MAX_BODY {
                kept.extend_from_slice(&data);
            } else if seen > 16 * MAX_BODY {
                return Err(too_large());
            }
        }
    }
    if seen > MAX_BODY {
        return Err(too_large());
    }
    Ok(axum::body::Bytes::from(kept))
}

fn authorize(shared: &Shared, user: &UserInfo, attrs: &Attributes) -> ApiResult<()> {
    let store = shared.store.lock();
    if Authorizer::new(&store).allows(user, attrs) {
        Ok(())
    } else {
        Err(ApiError::forbidden(attrs.forbidden_message(&user.name)))
    }
}

fn verb_of(method: &Method, target: &Target, query: &Query) -> ApiResult<&'static str> {
    let has_name = target.name.is_some();
    Ok(match *method {
        Method::GET if has_name => "get",
        Method::GET if query.watch => "watch",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if has_name => "delete",
        Method::DELETE => "deletecollection",
        _ => return Err(ApiError::method_not_allowed(method.as_str(), &target.rt)),
    })
}

fn discovery(shared: &Shared, route: Route) -> ApiResult<Response> {
    let registry = shared.registry.read();
    let body = match route {
        Route::Version => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-bulkhead-testkit", "gitCommit": "0000000",
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
            "platform": "linux/amd64",
        }),
        Route::Health => return Ok((StatusCode::OK, "ok").into_response()),
        Route::CoreVersions => Registry::core_versions(),
        Route::Groups => registry.groups(),
        Route::Group(group) => registry
            .group(&group)
            .ok_or_else(|| ApiError::no_route(&format!("/apis/{group}")))?,
        Route::ResourceList(group, version) => registry
            .resource_list(&group, &version)
            .ok_or_else(|| ApiError::no_route(&format!("/apis/{group}/{version}")))?,
        Route::OpenApiV3 => openapi::index(&registry),
        Route::OpenApiV3Doc(gv) => {
            openapi::document(&registry, &gv).ok_or_else(|| ApiError::no_route(&gv))?
        }
        Route::Resource(_) => return Err(ApiError::internal("not a discovery route")),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// A JSON response.
pub fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The query parameters the server understands.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// `watch=true`.
    pub watch: bool,
    /// `labelSelector`.
    pub label_selector: String,
    /// `fieldSelector`.
    pub field_selector: String,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `sendInitialEvents=true`.
    pub send_initial_events: bool,
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<u64>,
    /// `limit`.
    pub limit: Option<usize>,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `fieldValidation` (Strict, Warn, Ignore).
    pub field_validation: Option<String>,
    /// `propagationPolicy`.
    pub propagation_policy: Option<String>,
    /// `dryRun`.
    pub dry_run: bool,
    /// `includeObject` (for tables).
    pub include_object: Option<String>,
}

impl Query {
    fn parse(query: &str) -> Query {
        let mut q = Query::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            match key {
                "watch" => q.watch = value == "true" || value == "1",
                "labelSelector" => q.label_selector = value,
                "fieldSelector" => q.field_selector = value,
                "resourceVersion" => q.resource_version = Some(value),
                "allowWatchBookmarks" => q.bookmarks = value == "true",
                "sendInitialEvents" => q.send_initial_events = value == "true",
                "timeoutSeconds" => q.timeout_seconds = value.parse().ok(),
                "limit" => q.limit = value.parse().ok().filter(|l: &usize| *l > 0),
                "continue" => q.continue_token = Some(value).filter(|v| !v.is_empty()),
                "fieldManager" => q.field_manager = Some(value),
                "fieldValidation" => q.field_validation = Some(value),
                "propagationPolicy" => q.propagation_policy = Some(value),
                "dryRun" => q.dry_run = !value.is_empty(),
                "includeObject" => q.include_object = Some(value),
                _ => {}
            }
        }
        q
    }
}

/// Whether the client asked for a Table (`kubectl get`).
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("as=Table"))
}
