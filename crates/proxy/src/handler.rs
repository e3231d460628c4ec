//! One request, start to finish: authenticate, decide what the caller sees, answer or pass through.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use bulkhead_api::owner::{ProxyKind, ProxyOperation};
use bulkhead_api::{ProxySetting, Tenant, labels};
use bulkhead_cache::kind::Change;
use bulkhead_policy::admission::ClassInfo;
use bulkhead_policy::proxy::{
    GlobalGrant, Visibility, class_allowed, global_grants, node_allowed, persistent_volume_allowed,
    visibility,
};
use bulkhead_policy::{Caller, CallerClass, classify};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Namespace;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::Proxy;
use crate::auth::{ClientCertificate, Rejection};
use crate::filter::{
    WatchFilter, filter_collection, merge_lists, readable_accept, shape_single, single_object, wants_table,
};
use crate::metrics::WatchGuard;
use crate::route::{Query, Target};
use crate::status;
use crate::{filter, forward};

/// The largest self-review body the proxy reads.
const MAX_REVIEW_BODY: usize = 1024 * 1024;

/// How long a cross-namespace watch retries a new namespace where the caller is not (yet) allowed.
const NEW_NAMESPACE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// How many namespaces a cross-namespace list asks at once.
const FAN_OUT: usize = 8;

/// The watches of one cross-namespace watch: where their lines go, and how they stop together.
struct Fan {
    api: crate::upstream::ApiServer,
    caller: Caller,
    accept: &'static str,
    tx: mpsc::Sender<Bytes>,
    guard: Arc<WatchGuard>,
    stop: tokio_util::sync::CancellationToken,
}

impl Fan {
    /// Watches `uri` as the caller, passing its lines on. A watch the API server refuses is skipped
    /// (a namespace where the caller may not list); one that ends after it started stops them all.
    /// `patience`: how long a refusal is retried (a new namespace's RoleBindings come a moment after
    /// the namespace).
    fn spawn(&self, uri: String, patience: std::time::Duration) {
        let api = self.api.clone();
        let caller = self.caller.clone();
        let accept = self.accept;
        let tx = self.tx.clone();
        let guard = self.guard.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let deadline = tokio::time::Instant::now() + patience;
            let response = loop {
                let response = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tx.closed() => return,
                    response = api.send(new_request(Method::GET, &uri, accept, Some(&caller))) => response,
                };
                let Ok(response) = response else { return };
                if response.status().is_success() {
                    break response;
                }
                if response.status() != StatusCode::FORBIDDEN || tokio::time::Instant::now() >= deadline {
                    return;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                }
            };
            let mut lines = Lines::new(response.into_body());
            loop {
                let line = tokio::select! {
                    line = lines.next() => line,
                    _ = tx.closed() => return,
                    _ = stop.cancelled() => return,
                };
                let Some(mut line) = line else { break };
                line.push(b'\n');
                if tx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
            }
            stop.cancel();
        });
    }
}

/// How a request was served, for metrics.
#[derive(Clone, Copy)]
enum Class {
    Filtered,
    Passthrough,
    Upgrade,
    Rejected,
}

impl Class {
    fn as_str(self) -> &'static str {
        match self {
            Class::Filtered => "filtered",
            Class::Passthrough => "passthrough",
            Class::Upgrade => "upgrade",
            Class::Rejected => "rejected",
        }
    }
}

/// What a tenant user sees.
struct View {
    caller: Caller,
    visibility: Visibility,
    tenants: BTreeMap<String, Arc<Tenant>>,
    /// What GlobalProxySettings grant the caller (for a request on one resource: the grants naming it).
    global: Vec<GlobalGrant>,
    /// Namespaces where a RoleBinding labelled for reflection names the caller: its lists across
    /// namespaces reach them too.
    reflected_lists: std::collections::BTreeSet<String>,
}

/// The largest body of an update the proxy judges before making it (the API server's own limit).
const MAX_WRITE_BODY: usize = 3 * 1024 * 1024;

/// The kinds whose answers the proxy narrows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Filtered {
    Cluster(ProxyKind),
    Tenants,
    /// Any other cluster-scoped resource a GlobalProxySettings rule grants the caller.
    Global,
}

impl Filtered {
    fn of(group: &str, resource: &str) -> Option<Filtered> {
        Some(match (group, resource) {
            ("", "nodes") => Filtered::Cluster(ProxyKind::Nodes),
            ("", "persistentvolumes") => Filtered::Cluster(ProxyKind::PersistentVolumes),
            ("storage.k8s.io", "storageclasses") => Filtered::Cluster(ProxyKind::StorageClasses),
            ("networking.k8s.io", "ingressclasses") => Filtered::Cluster(ProxyKind::IngressClasses),
            ("scheduling.k8s.io", "priorityclasses") => Filtered::Cluster(ProxyKind::PriorityClasses),
            ("node.k8s.io", "runtimeclasses") => Filtered::Cluster(ProxyKind::RuntimeClasses),
            ("bulkhead.dev", "tenants") => Filtered::Tenants,
            _ => return None,
        })
    }
}

/// Whether `object` of `kind` is one the caller may `operation`.
fn allowed(kind: Filtered, view: &View, object: &Value, operation: ProxyOperation) -> bool {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let labels: BTreeMap<String, String> = object["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let tenants = &view.tenants;
    match kind {
        Filtered::Tenants => view.visibility.sees_tenant(name),
        Filtered::Global => view.global.iter().any(|g| g.allows(operation, &labels)),
        Filtered::Cluster(ProxyKind::Nodes) => node_allowed(&view.visibility, tenants, &labels, operation),
        Filtered::Cluster(ProxyKind::PersistentVolumes) => {
            persistent_volume_allowed(&view.visibility, &labels, operation)
        }
        Filtered::Cluster(class) => {
            let info = ClassInfo {
                labels,
                value: object["value"].as_i64().and_then(|v| i32::try_from(v).ok()),
            };
            class_allowed(&view.visibility, tenants, class, name, &info, operation)
        }
    }
}

fn accept_of(request: &Request<Body>) -> Option<String> {
    request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn path_and_query(request: &Request<Body>) -> String {
    request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
}

/// A request the proxy makes as Bulkhead (or as `caller`), with no body.
fn new_request(method: Method, uri: &str, accept: &str, caller: Option<&Caller>) -> Request<Body> {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_default();
    forward::outgoing(request, caller, uri)
}

fn relay(status: StatusCode, headers: &http::HeaderMap, bytes: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        response.headers_mut().insert(header::CONTENT_TYPE, kind.clone());
    }
    response
}

/// A response body that keeps `guard` alive as long as the stream.
fn guarded(body: Incoming, guard: WatchGuard) -> Body {
    Body::from_stream(body.into_data_stream().map(move |chunk| {
        let _ = &guard;
        chunk
    }))
}

fn channel_body(rx: mpsc::Receiver<Bytes>) -> Body {
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }))
}

fn watch_response(status: StatusCode, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Reads a streaming body line by line (watch events are one JSON object per line).
struct Lines {
    stream: http_body_util::BodyDataStream<Incoming>,
    buffer: Vec<u8>,
}

impl Lines {
    fn new(body: Incoming) -> Lines {
        Lines {
            stream: body.into_data_stream(),
            buffer: Vec::new(),
        }
    }

    /// The next non-empty line, without its newline; `None` at the end of the body.
    async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(line);
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                _ => {
                    let rest = std::mem::take(&mut self.buffer);
                    return (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest);
                }
            }
        }
    }
}

#[derive(Serialize)]
struct NamespaceList<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: ListMeta,
    items: Vec<&'a Namespace>,
}

#[derive(Serialize)]
struct ListMeta {
    #[serde(rename = "resourceVersion")]
    resource_version: String,
}

impl Proxy {
    /// Serves one request.
    pub async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let started = Instant::now();
        let (class, response) = self.dispatch(request).await;
        let code = response.status().as_u16().to_string();
        self.metrics
            .requests
            .with_label_values(&[class.as_str(), &code])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[class.as_str()])
            .observe(started.elapsed().as_secs_f64());
        response
    }

    async fn dispatch(&self, request: Request<Body>) -> (Class, Response<Body>) {
        if !self.cache.is_synced() {
            return (
                Class::Rejected,
                status::unavailable("the proxy is still loading its cache; retry shortly"),
            );
        }
        let certificate = request.extensions().get::<ClientCertificate>().cloned();
        let caller = match self
            .auth
            .authenticate(request.headers(), certificate.as_ref())
            .await
        {
            Ok(caller) => caller,
            Err(Rejection::Unauthenticated(m)) => return (Class::Rejected, status::unauthorized(&m)),
            Err(Rejection::Forbidden(m)) => return (Class::Rejected, status::forbidden(&m)),
            Err(Rejection::Unavailable(m)) => return (Class::Rejected, status::unavailable(&m)),
            Err(Rejection::Busy(m)) => return (Class::Rejected, status::too_many_requests(&m)),
        };
        if request.headers().contains_key(header::UPGRADE) {
            return (Class::Upgrade, self.upgrade(request, &caller).await);
        }
        // Requests inside a namespace are never narrowed (the API server's RBAC keeps tenants apart
        // there): they skip working out what the caller sees.
        let target = Target::parse(request.uri().path()).filter(|t| t.namespace.is_none());
        let Some(target) = target else {
            return (Class::Passthrough, self.passthrough(request, &caller).await);
        };
        let Some(view) = self.view(&caller) else {
            return (Class::Passthrough, self.passthrough(request, &caller).await);
        };
        let query = Query::parse(request.uri().query());
        match self.filtered(request, &view, &target, query).await {
            Ok(response) => (Class::Filtered, response),
            Err(request) => (Class::Passthrough, self.passthrough(request, &caller).await),
        }
    }

    /// What `caller` sees, if it is a tenant user the proxy filters for.
    fn view(&self, caller: &Caller) -> Option<Arc<View>> {
        if caller.user == self.own_identity {
            return None;
        }
        let config = self.cache.configuration();
        let in_tenant_namespace = caller
            .service_account_namespace()
            .is_some_and(|ns| self.cache.tenant_of_namespace(ns).is_some())
            || self.cache.is_aggregated_owner(caller);
        if matches!(
            classify(&config, &self.own_identity, caller, in_tenant_namespace),
            CallerClass::Administrator | CallerClass::Ignored
        ) {
            return None;
        }
        let mut tenants: BTreeMap<String, Arc<Tenant>> = self
            .cache
            .tenants_owned_by(caller)
            .iter()
            .filter_map(|name| Some((name.clone(), self.cache.tenant(name)?)))
            .collect();
        let settings: Vec<(Arc<ProxySetting>, Option<Arc<Tenant>>)> = self
            .cache
            .proxy_settings_naming(caller)
            .into_iter()
            .map(|setting| {
                let tenant = setting
                    .metadata
                    .namespace
                    .as_deref()
                    .and_then(|ns| self.cache.tenant_of_namespace(ns))
                    .and_then(|t| self.cache.tenant(&t));
                (setting, tenant)
            })
            .collect();
        let mut visibility = visibility(
            caller,
            tenants.values().map(AsRef::as_ref),
            settings.iter().map(|(s, t)| (s.as_ref(), t.as_deref())),
        );
        // The RoleBinding reflector (empty unless it runs): namespaces a RoleBinding names the caller in.
        visibility.reflected = self.cache.reflected_namespaces(caller);
        let global_settings = self.cache.global_proxy_settings().store().state();
        let global = global_grants(caller, global_settings.iter().map(AsRef::as_ref));
        // Namespaces a global rule grants are listed like reflected ones (capsule-proxy selects them by
        // `kubernetes.io/metadata.name`).
        let namespace_grants: Vec<&GlobalGrant> =
            global.iter().filter(|g| g.covers("", "namespaces")).collect();
        if !namespace_grants.is_empty() {
            for (name, labels) in self.cache.namespace_labels() {
                if namespace_grants
                    .iter()
                    .any(|g| g.allows(ProxyOperation::List, &labels))
                {
                    visibility.reflected.insert(name);
                }
            }
        }
        let reflected_lists = self.cache.reflected_list_namespaces(caller);
        if !visibility.is_tenant_user() && visibility.reflected.is_empty() && global.is_empty() {
            return None;
        }
        for (_, tenant) in settings {
            if let Some(tenant) = tenant {
                let name = tenant.metadata.name.clone().unwrap_or_default();
                if visibility.tenants.contains(&name) {
                    tenants.entry(name).or_insert(tenant);
                }
            }
        }
        Some(Arc::new(View {
            caller: caller.clone(),
            visibility,
            tenants,
            global,
            reflected_lists,
        }))
    }

    /// Answers a request the proxy narrows; gives the request back when it is not one.
    async fn filtered(
        &self,
        request: Request<Body>,
        view: &Arc<View>,
        target: &Target,
        query: Query,
    ) -> Result<Response<Body>, Request<Body>> {
        let method = request.method().clone();
        let accept = accept_of(&request);
        let path = request.uri().path().to_owned();
        // A caller seen only through the reflector acts for no tenant: only its namespace list is
        // narrowed; one seen only through GlobalProxySettings gets its grants and nothing narrowed;
        // everything else goes through as it asked.
        let tenant_user = view.visibility.is_tenant_user();
        if target.is_namespaces() && !tenant_user && view.visibility.reflected.is_empty() {
            return Err(request);
        }
        if target.is_namespaces() {
            return match (&method, target.name.as_deref()) {
                (&Method::GET, None) => Ok(self.namespaces(accept, view, query).await),
                (&Method::GET, Some(name)) => {
                    let tenant = self.cache.tenant_of_namespace(name);
                    if view.visibility.lists_namespace(name, tenant.as_deref()) {
                        let accept = accept.unwrap_or_else(|| "application/json".into());
                        Ok(self.stream_as_bulkhead(&path_and_query(&request), &accept).await)
                    } else {
                        Ok(status::not_found("", "namespaces", name))
                    }
                }
                _ => Err(request),
            };
        }
        let special = Filtered::of(&target.group, &target.resource).filter(|kind| {
            tenant_user
                && match kind {
                    Filtered::Tenants => true,
                    Filtered::Cluster(k) => view
                        .visibility
                        .tenants_allowing(*k, ProxyOperation::List)
                        .next()
                        .is_some(),
                    Filtered::Global => false,
                }
        });
        let (kind, view) = match special {
            Some(kind) => (Some(kind), view.clone()),
            None => match self.global_view(view, target).await {
                Some(narrowed) => (Some(Filtered::Global), narrowed),
                None => (None, view.clone()),
            },
        };
        if !tenant_user && kind.is_none() && view.reflected_lists.is_empty() {
            return Err(request);
        }
        let view = &view;
        if let Some(kind) = kind {
            if target.namespace.is_some() {
                return Err(request);
            }
            let name = target.name.clone();
            return match (&method, name, target.subresource.as_deref()) {
                (&Method::GET, None, None) => Ok(self
                    .cluster_collection(accept, &path, view, kind, target, query)
                    .await),
                (&Method::GET, Some(_), None) => Ok(self
                    .cluster_object(accept, &path, view, kind, target, query)
                    .await),
                (&Method::PUT | &Method::PATCH, Some(name), None) => match kind {
                    Filtered::Tenants => Err(request),
                    k => Ok(self
                        .cluster_write(request, view, k, target, &name, ProxyOperation::Update)
                        .await),
                },
                (&Method::DELETE, Some(name), None) => match kind {
                    Filtered::Tenants => Err(request),
                    k => Ok(self
                        .cluster_write(request, view, k, target, &name, ProxyOperation::Delete)
                        .await),
                },
                _ => Err(request),
            };
        }
        if tenant_user
            && method == Method::POST
            && target.group == "authorization.k8s.io"
            && target.namespace.is_none()
            && target.name.is_none()
            && matches!(
                target.resource.as_str(),
                "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
            )
        {
            return Ok(self.self_review(request, view).await);
        }
        if method == Method::GET
            && target.namespace.is_none()
            && target.name.is_none()
            && self
                .discovery
                .namespaced(&target.group, &target.version, &target.resource)
                .await
                == Some(true)
        {
            return Ok(self.across_namespaces(accept, view, target, query).await);
        }
        Err(request)
    }

    /// The caller's namespaces: a plain list straight from the cache; anything else (watches,
    /// Tables, selectors, protobuf) from the API server with the caller's tenants as a label
    /// selector, so resourceVersions, bookmarks and printing are the API server's own.
    async fn namespaces(&self, accept: Option<String>, view: &View, mut query: Query) -> Response<Body> {
        // From the cache: plain JSON lists and kubectl's v1 Tables, without selectors.
        let format = match accept.as_deref() {
            _ if query.is_watch()
                || query.get("labelSelector").is_some()
                || query.get("fieldSelector").is_some() =>
            {
                None
            }
            Some(a) if a.contains("as=Table;v=v1;g=meta.k8s.io") => Some(true),
            Some(a) if wants_table(Some(a)) || a.contains("protobuf") => None,
            Some(a) if !(a.contains("application/json") || a.contains("*/*")) => None,
            _ => Some(false),
        };
        if let Some(table) = format {
            return self.namespaces_from_cache(view, table.then(|| query.get("includeObject")));
        }
        // The caller's tenants by their label; with reflected namespaces too, every namespace by name
        // (label selectors cannot say "either").
        let selector = if view.visibility.reflected.is_empty() {
            let tenants: Vec<&str> = view.visibility.tenants.iter().map(String::as_str).collect();
            format!("{} in ({})", labels::TENANT, tenants.join(","))
        } else {
            let names: Vec<String> = self.listed_namespaces(view).into_iter().collect();
            format!("{} in ({})", labels::NAMESPACE_NAME_LABEL, names.join(","))
        };
        if let Err(reason) = query.and_label_selector(&selector) {
            return status::bad_request(&reason);
        }
        let uri = query.uri("/api/v1/namespaces");
        self.stream_as_bulkhead(&uri, accept.as_deref().unwrap_or("application/json"))
            .await
    }

    /// The names of the namespaces the caller lists: its tenants' and the reflected ones.
    fn listed_namespaces(&self, view: &View) -> std::collections::BTreeSet<String> {
        let mut names: std::collections::BTreeSet<String> = view
            .visibility
            .tenants
            .iter()
            .flat_map(|t| self.cache.namespaces_of(t))
            .collect();
        names.extend(view.visibility.reflected.iter().cloned());
        names
    }

    /// The caller's namespaces from the cache: a NamespaceList, or with `table` (the `includeObject`
    /// asked) the Table the API server prints.
    fn namespaces_from_cache(&self, view: &View, table: Option<Option<&str>>) -> Response<Body> {
        let mut namespaces: Vec<Arc<Namespace>> = self
            .listed_namespaces(view)
            .into_iter()
            .filter_map(|name| self.cache.namespace(&name))
            .collect();
        namespaces.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let version = namespaces
            .iter()
            .filter_map(|n| n.metadata.resource_version.as_deref()?.parse::<u64>().ok())
            .max()
            .unwrap_or_default();
        if let Some(include_object) = table {
            let now = k8s_openapi::jiff::Timestamp::now().as_second();
            let namespaces: Vec<&Namespace> = namespaces.iter().map(AsRef::as_ref).collect();
            let table = filter::namespace_table(&namespaces, &version.to_string(), include_object, now);
            return status::json_response(StatusCode::OK, &table);
        }
        let list = NamespaceList {
            kind: "NamespaceList",
            api_version: "v1",
            metadata: ListMeta {
                resource_version: version.to_string(),
            },
            items: namespaces.iter().map(AsRef::as_ref).collect(),
        };
        match serde_json::to_vec(&list) {
            Ok(bytes) => {
                let mut response = Response::new(Body::from(bytes));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            Err(error) => status::upstream_failed(&error.to_string()),
        }
    }

    /// A GET as Bulkhead, streamed back as is (watches included).
    async fn stream_as_bulkhead(&self, uri: &str, accept: &str) -> Response<Body> {
        let watch = Query::parse(uri.split_once('?').map(|(_, q)| q)).is_watch();
        match self.api.send(new_request(Method::GET, uri, accept, None)).await {
            Ok(response) if watch => {
                let guard = WatchGuard::new(&self.metrics.open_watches);
                forward::incoming_with(response, |body| guarded(body, guard))
            }
            Ok(response) => forward::incoming(response),
            Err(error) => status::upstream_failed(&error.to_string()),
        }
    }
}

impl Proxy {
    /// For a request on a cluster-scoped resource that GlobalProxySettings grant the caller: the
    /// caller's view with only the grants naming that resource.
    async fn global_view(&self, view: &Arc<View>, target: &Target) -> Option<Arc<View>> {
        if target.namespace.is_some() || target.subresource.is_some() || target.is_namespaces() {
            return None;
        }
        let global: Vec<GlobalGrant> = view
            .global
            .iter()
            .filter(|g| g.covers(&target.group, &target.resource))
            .cloned()
            .collect();
        if global.is_empty()
            || self
                .discovery
                .namespaced(&target.group, &target.version, &target.resource)
                .await
                != Some(false)
        {
            return None;
        }
        Some(Arc::new(View {
            caller: view.caller.clone(),
            visibility: view.visibility.clone(),
            tenants: view.tenants.clone(),
            global,
            reflected_lists: view.reflected_lists.clone(),
        }))
    }

    /// A list or watch of a cluster-scoped kind, read as Bulkhead and narrowed to what the caller's
    /// tenants allow.
    async fn cluster_collection(
        &self,
        client_accept: Option<String>,
        path: &str,
        view: &Arc<View>,
        kind: Filtered,
        target: &Target,
        mut query: Query,
    ) -> Response<Body> {
        let accept = readable_accept(client_accept.as_deref());
        let include = query.get("includeObject").map(str::to_owned);
        if wants_table(client_accept.as_deref()) {
            query.set("includeObject", "Object");
        }
        let uri = query.uri(path);
        let outgoing = new_request(Method::GET, &uri, accept, None);
        if !query.is_watch() {
            let (code, headers, bytes) = match self.api.send_buffered(outgoing).await {
                Ok(answer) => answer,
                Err(error) => return status::upstream_failed(&error.to_string()),
            };
            if !code.is_success() {
                return relay(code, &headers, bytes);
            }
            let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
                return status::upstream_failed(&format!(
                    "the API server's {} list is not JSON",
                    target.resource
                ));
            };
            filter_collection(&mut value, include.as_deref(), &|o| {
                allowed(kind, view, o, ProxyOperation::List)
            });
            return status::json_response(code, &value);
        }
        let response = match self.api.send(outgoing).await {
            Ok(response) => response,
            Err(error) => return status::upstream_failed(&error.to_string()),
        };
        if !response.status().is_success() {
            return forward::incoming(response);
        }
        let code = response.status();
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        let guard = WatchGuard::new(&self.metrics.open_watches);
        let view = view.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let mut watch = WatchFilter::default();
            let visible = |o: &Value| allowed(kind, &view, o, ProxyOperation::List);
            let mut lines = Lines::new(response.into_body());
            loop {
                let line = tokio::select! {
                    line = lines.next() => line,
                    _ = tx.closed() => None,
                };
                let Some(line) = line else { return };
                if let Some(event) = watch.event(&line, include.as_deref(), &visible)
                    && tx.send(Bytes::from(event)).await.is_err()
                {
                    return;
                }
            }
        });
        watch_response(code, channel_body(rx))
    }
}

impl Proxy {
    /// One cluster-scoped object: read as Bulkhead, shown only if the caller may see it (else the
    /// same 404 as for an object that does not exist).
    async fn cluster_object(
        &self,
        client_accept: Option<String>,
        path: &str,
        view: &View,
        kind: Filtered,
        target: &Target,
        mut query: Query,
    ) -> Response<Body> {
        let name = target.name.as_deref().unwrap_or_default();
        let include = query.get("includeObject").map(str::to_owned);
        if wants_table(client_accept.as_deref()) {
            query.set("includeObject", "Object");
        }
        let uri = query.uri(path);
        let outgoing = new_request(Method::GET, &uri, readable_accept(client_accept.as_deref()), None);
        let (code, headers, bytes) = match self.api.send_buffered(outgoing).await {
            Ok(answer) => answer,
            Err(error) => return status::upstream_failed(&error.to_string()),
        };
        if code == StatusCode::NOT_FOUND {
            return status::not_found(&target.group, &target.resource, name);
        }
        if !code.is_success() {
            return relay(code, &headers, bytes);
        }
        let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
            return status::upstream_failed("the API server's answer is not JSON");
        };
        if !single_object(&value).is_some_and(|o| allowed(kind, view, o, ProxyOperation::List)) {
            return status::not_found(&target.group, &target.resource, name);
        }
        shape_single(&mut value, include.as_deref());
        status::json_response(code, &value)
    }

    /// An update, patch or delete of a cluster-scoped object, made as Bulkhead when the caller's
    /// tenants grant the operation on this object (proxySettings), refused otherwise.
    async fn cluster_write(
        &self,
        request: Request<Body>,
        view: &View,
        filtered: Filtered,
        target: &Target,
        name: &str,
        operation: ProxyOperation,
    ) -> Response<Body> {
        let (code, current) = match self.api.json(Method::GET, request.uri().path(), None).await {
            Ok(answer) => answer,
            Err(error) => return status::upstream_failed(&error.to_string()),
        };
        if code == StatusCode::NOT_FOUND
            || (code.is_success() && !allowed(filtered, view, &current, ProxyOperation::List))
        {
            return status::not_found(&target.group, &target.resource, name);
        }
        if !code.is_success() {
            return status::json_response(code, &current);
        }
        if !allowed(filtered, view, &current, operation) {
            let what = target.qualified_resource();
            let grants = match filtered {
                Filtered::Cluster(kind) => {
                    format!("no tenant of theirs grants {operation:?} on {kind:?} in its proxySettings")
                }
                _ => format!("no GlobalProxySettings rule grants them {operation:?} on it"),
            };
            return status::forbidden(&format!(
                "{what} \"{name}\" is forbidden: User \"{}\" may not {} it: {grants}",
                view.caller.user,
                if operation == ProxyOperation::Delete {
                    "delete"
                } else {
                    "update"
                },
            ));
        }
        if operation == ProxyOperation::Update {
            return self
                .judged_update(request, view, filtered, target, name, &current)
                .await;
        }
        let uri = path_and_query(&request);
        match self.api.send(forward::outgoing(request, None, &uri)).await {
            Ok(response) => forward::incoming(response),
            Err(error) => status::upstream_failed(&error.to_string()),
        }
    }

    /// An update made as Bulkhead for a tenant user is judged as the user's own write would be: the
    /// API server computes the object it would make (a dry run of the caller's request, whatever its
    /// patch type), the webhook's rule for the kind decides on it as for the caller (a node's
    /// forbidden labels), the object must stay in the caller's slice (a node still matching the
    /// tenant's selector, a volume still labelled for it), and then exactly that object is written,
    /// with the resource version it was judged at: a change in between makes it a 409 Conflict, never
    /// a write nobody judged.
    async fn judged_update(
        &self,
        request: Request<Body>,
        view: &View,
        kind: Filtered,
        target: &Target,
        name: &str,
        current: &Value,
    ) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = match bulkhead_tls::read_body(body, MAX_WRITE_BODY).await {
            Ok(bytes) => bytes,
            Err(message) => return status::bad_request(&message),
        };
        let path = parts.uri.path().to_owned();
        let mut query = Query::parse(parts.uri.query());
        let caller_dry_run = query.get("dryRun").is_some();
        query.remove("dryRun");
        let write_uri = query.uri(&path);
        query.set("dryRun", "All");
        let dry_uri = query.uri(&path);
        let mut dry = Request::from_parts(parts, Body::from(bytes));
        dry.headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let (code, _, answer) = match self
            .api
            .send_buffered(forward::outgoing(dry, None, &dry_uri))
            .await
        {
            Ok(answer) => answer,
            Err(error) => return status::upstream_failed(&error.to_string()),
        };
        let result: Value = match serde_json::from_slice(&answer) {
            Ok(value) => value,
            Err(e) => {
                return status::upstream_failed(&format!("the API server's dry run answered {code}: {e}"));
            }
        };
        if !code.is_success() {
            return status::json_response(code, &result);
        }
        let what = target.qualified_resource();
        if !allowed(kind, view, &result, ProxyOperation::List) {
            let whose = match kind {
                Filtered::Cluster(k) => {
                    format!("what your tenants may use (their proxySettings for {k:?} and their selectors)")
                }
                _ => "what GlobalProxySettings grant you (their selectors)".to_owned(),
            };
            return status::forbidden(&format!(
                "{what} \"{name}\" is forbidden: the change would take it out of {whose}; User \"{}\" may not make it",
                view.caller.user
            ));
        }
        if kind == Filtered::Cluster(ProxyKind::Nodes) {
            let config = self.cache.configuration();
            let request = bulkhead_policy::admission::Request {
                operation: bulkhead_policy::admission::Operation::Update,
                subresource: None,
                caller: &view.caller,
                class: CallerClass::TenantUser,
                config: &config,
                mutating: false,
                own_identity: &self.own_identity,
            };
            let typed =
                |v: &Value| serde_json::from_value::<k8s_openapi::api::core::v1::Node>(v.clone()).ok();
            if let bulkhead_policy::admission::Verdict::Deny(denial) =
                bulkhead_policy::admission::node(&request, typed(&result).as_ref(), typed(current).as_ref())
            {
                return status::forbidden(&format!("{what} \"{name}\" is forbidden: {}", denial.message));
            }
        }
        if caller_dry_run {
            return status::json_response(code, &result);
        }
        let write = Request::builder()
            .method(Method::PUT)
            .uri(&write_uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(Body::from(result.to_string()));
        let write = match write {
            Ok(write) => write,
            Err(e) => return status::upstream_failed(&e.to_string()),
        };
        match self.api.send(forward::outgoing(write, None, &write_uri)).await {
            Ok(response) => forward::incoming(response),
            Err(error) => status::upstream_failed(&error.to_string()),
        }
    }

    /// SelfSubjectAccessReview and SelfSubjectRulesReview, answered by the API server for the caller,
    /// then told that listing, watching and getting (its own) namespaces is allowed: through the proxy
    /// it is, and tools such as k9s ask before they list.
    async fn self_review(&self, request: Request<Body>, view: &View) -> Response<Body> {
        let uri = path_and_query(&request);
        let (parts, body) = request.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_REVIEW_BODY)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => return status::bad_request("the review is too large or could not be read"),
        };
        let rebuilt = Request::from_parts(parts, Body::from(body));
        let mut outgoing = forward::outgoing(rebuilt, Some(&view.caller), &uri);
        // kubectl sends the review in protobuf and accepts JSON too: the answer must be one the
        // proxy can read and amend (the API server answers protobuf when asked first for it).
        outgoing
            .headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let (code, headers, bytes) = match self.api.send_buffered(outgoing).await {
            Ok(answer) => answer,
            Err(error) => return status::upstream_failed(&error.to_string()),
        };
        let Ok(mut review) = serde_json::from_slice::<Value>(&bytes) else {
            return relay(code, &headers, bytes);
        };
        if !code.is_success() {
            return relay(code, &headers, bytes);
        }
        match review["kind"].as_str() {
            Some("SelfSubjectAccessReview") => {
                let attributes = &review["spec"]["resourceAttributes"];
                let about_namespaces = attributes["group"].as_str().unwrap_or_default().is_empty()
                    && attributes["resource"] == "namespaces"
                    && attributes["subresource"].as_str().unwrap_or_default().is_empty()
                    && matches!(attributes["verb"].as_str(), Some("get" | "list" | "watch"));
                // A name matters to `get` only: a list or watch through the proxy shows the caller's
                // namespaces whatever it names (k9s asks "list namespaces" naming its current one).
                let visible = match (
                    attributes["verb"].as_str(),
                    attributes["name"].as_str().filter(|n| !n.is_empty()),
                ) {
                    (Some("get"), Some(name)) => view
                        .visibility
                        .lists_namespace(name, self.cache.tenant_of_namespace(name).as_deref()),
                    _ => true,
                };
                if about_namespaces && visible && review["status"]["allowed"] != true {
                    review["status"] = json!({
                        "allowed": true,
                        "reason": "the Bulkhead proxy shows this user the namespaces of its tenants",
                    });
                }
            }
            Some("SelfSubjectRulesReview") => {
                let rule = json!({"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["namespaces"]});
                if let Some(rules) = review["status"]["resourceRules"].as_array_mut() {
                    rules.push(rule);
                } else {
                    review["status"]["resourceRules"] = json!([rule]);
                }
            }
            _ => {}
        }
        status::json_response(code, &review)
    }

    /// A list or watch of a namespaced kind across all namespaces (`kubectl get pods -A`): asked in
    /// each of the caller's namespaces as the caller, and merged.
    async fn across_namespaces(
        &self,
        client_accept: Option<String>,
        view: &View,
        target: &Target,
        mut query: Query,
    ) -> Response<Body> {
        let mut namespaces: Vec<String> = view
            .visibility
            .tenants
            .iter()
            .flat_map(|t| self.cache.namespaces_of(t))
            .chain(view.reflected_lists.iter().cloned())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        let accept = readable_accept(client_accept.as_deref());
        query.remove("limit");
        query.remove("continue");
        let prefix = if target.group.is_empty() {
            format!("/api/{}", target.version)
        } else {
            format!("/apis/{}/{}", target.group, target.version)
        };
        let path_of = {
            let resource = target.resource.clone();
            move |ns: &str| format!("{prefix}/namespaces/{ns}/{resource}")
        };
        if query.is_watch() {
            return self.watch_across(namespaces, path_of, query, accept, view);
        }
        let uris: Vec<String> = namespaces.iter().map(|ns| query.uri(&path_of(ns))).collect();
        let answers: Vec<_> = futures::stream::iter(uris)
            .map(|uri| {
                let caller = view.caller.clone();
                async move {
                    self.api
                        .send_buffered(new_request(Method::GET, &uri, accept, Some(&caller)))
                        .await
                }
            })
            .buffered(FAN_OUT)
            .collect()
            .await;
        let mut parts = Vec::new();
        let mut refusal = None;
        for answer in answers {
            match answer {
                Ok((code, _, bytes)) if code.is_success() => match serde_json::from_slice::<Value>(&bytes) {
                    Ok(value) => parts.push(value),
                    Err(_) => return status::upstream_failed("the API server's list is not JSON"),
                },
                Ok((code, headers, bytes))
                    if matches!(code, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) =>
                {
                    refusal.get_or_insert((code, headers, bytes));
                }
                Ok((code, headers, bytes)) => return relay(code, &headers, bytes),
                Err(error) => return status::upstream_failed(&error.to_string()),
            }
        }
        match merge_lists(parts) {
            Some(merged) => status::json_response(StatusCode::OK, &merged),
            None => match refusal {
                Some((code, headers, bytes)) => relay(code, &headers, bytes),
                None => status::json_response(
                    StatusCode::OK,
                    &if wants_table(client_accept.as_deref()) {
                        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "columnDefinitions": [], "rows": []})
                    } else {
                        json!({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []})
                    },
                ),
            },
        }
    }

    /// Watches in each namespace as the caller, merged into one stream. Namespaces the caller's
    /// tenants gain while the watch is open are watched from then on. When one namespace's watch ends
    /// (its timeout, an error), the whole stream ends, so that the client watches again from its last
    /// resourceVersion instead of silently missing that namespace's events.
    fn watch_across(
        &self,
        namespaces: Vec<String>,
        path_of: impl Fn(&str) -> String + Send + 'static,
        query: Query,
        accept: &'static str,
        view: &View,
    ) -> Response<Body> {
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        let fan = Fan {
            api: self.api.clone(),
            caller: view.caller.clone(),
            accept,
            tx,
            guard: Arc::new(WatchGuard::new(&self.metrics.open_watches)),
            stop: tokio_util::sync::CancellationToken::new(),
        };
        let mut watched: std::collections::HashSet<String> = namespaces.iter().cloned().collect();
        for ns in &namespaces {
            fan.spawn(query.uri(&path_of(ns)), std::time::Duration::ZERO);
        }
        // Later namespaces start from now: their earlier history is not part of this watch.
        let mut fresh = query;
        fresh.remove("resourceVersion");
        fresh.remove("resourceVersionMatch");
        let tenants = view.visibility.tenants.clone();
        let mut changes = self.cache.namespaces_feed().subscribe();
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    _ = fan.stop.cancelled() => return,
                    _ = fan.tx.closed() => return,
                    change = changes.recv() => change,
                };
                let namespace = match change {
                    Ok(Change::Applied(namespace, _)) => namespace,
                    Ok(Change::Deleted(_)) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(name) = namespace.metadata.name.clone() else {
                    continue;
                };
                let tenant = namespace
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(labels::TENANT));
                if tenant.is_some_and(|t| tenants.contains(t)) && watched.insert(name.clone()) {
                    fan.spawn(fresh.uri(&path_of(&name)), NEW_NAMESPACE_PATIENCE);
                }
            }
        });
        watch_response(StatusCode::OK, channel_body(rx))
    }

    /// exec, attach, port-forward: forwarded as the caller over HTTP/1.1; once both sides have switched
    /// protocols, bytes are copied both ways until either side closes.
    async fn upgrade(&self, mut request: Request<Body>, caller: &Caller) -> Response<Body> {
        let client_side = hyper::upgrade::on(&mut request);
        let uri = path_and_query(&request);
        match self
            .api
            .send_upgrade(forward::outgoing(request, Some(caller), &uri))
            .await
        {
            Ok(mut response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let upstream_side = hyper::upgrade::on(&mut response);
                tokio::spawn(async move {
                    if let (Ok(client), Ok(upstream)) = tokio::join!(client_side, upstream_side) {
                        let _ = tokio::io::copy_bidirectional(
                            &mut TokioIo::new(client),
                            &mut TokioIo::new(upstream),
                        )
                        .await;
                    }
                });
                forward::incoming(response)
            }
            Ok(response) => forward::incoming(response),
            Err(error) => status::upstream_failed(&error.to_string()),
        }
    }

    /// Anything else: forwarded as the caller, streamed both ways.
    async fn passthrough(&self, request: Request<Body>, caller: &Caller) -> Response<Body> {
        let watch = Query::parse(request.uri().query()).is_watch();
        let uri = path_and_query(&request);
        match self
            .api
            .send(forward::outgoing(request, Some(caller), &uri))
            .await
        {
            Ok(response) if watch => {
                let guard = WatchGuard::new(&self.metrics.open_watches);
                forward::incoming_with(response, |body| guarded(body, guard))
            }
            Ok(response) => forward::incoming(response),
            Err(error) => status::upstream_failed(&error.to_string()),
        }
    }
}
