//! Admission webhooks, as the API server calls them: every Mutating- then ValidatingWebhookConfiguration
//! whose rules, namespaceSelector and objectSelector match is called over TLS (with its caBundle) at its
//! `url`; JSON patches from mutating webhooks are applied; `failurePolicy` and `timeoutSeconds` are
//! honoured; a denial reaches the client worded as the API server words it.
//!
//! Not modelled: `service` client configs (only `url`), `matchConditions` (CEL is not evaluated: a
//! webhook is called whatever its match conditions say, so it must decide for itself too), reinvocation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::auth::UserInfo;
use crate::registry::{GroupResource, ResourceType};
use crate::selector::{labels_of, selector_value_matches};
use crate::server::{Shared, Target};
use crate::status::{ApiError, ApiResult};

/// The operation being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// CREATE.
    Create,
    /// UPDATE (also patches and subresource writes).
    Update,
    /// DELETE.
    Delete,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Calls webhooks; keeps one TLS client per CA bundle.
#[derive(Default)]
pub struct Admission {
    clients: Mutex<HashMap<String, HttpsClient>>,
    counter: Mutex<u64>,
    audit: Mutex<std::collections::VecDeque<Value>>,
}

/// How many audit events are kept (the oldest go first).
const AUDIT_EVENTS: usize = 10_000;

struct Webhook {
    name: String,
    config: Value,
    mutating: bool,
}

impl Admission {
    /// The audit events of requests some webhook annotated (`auditAnnotations`, keyed
    /// `<webhook name>/<key>` as the API server writes them), oldest first: what an audit log at level
    /// Metadata holds of them (verb, user, objectRef, annotations, responseStatus code).
    pub fn audit_events(&self) -> Vec<Value> {
        self.audit.lock().iter().cloned().collect()
    }

    /// Runs admission for one request. Returns the (possibly mutated) object.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit(
        &self,
        shared: &Shared,
        user: &UserInfo,
        target: &Target,
        op: Operation,
        object: Option<Value>,
        old: Option<&Value>,
        warnings: &mut Vec<String>,
        validate: &(dyn Fn(&Value) -> ApiResult<()> + Sync),
    ) -> ApiResult<Option<Value>> {
        let mut annotations = serde_json::Map::new();
        // As the API server fills the objectRef of a create from the object it decoded.
        let object_name = object
            .as_ref()
            .and_then(|o| o.pointer("/metadata/name")?.as_str().map(str::to_owned));
        let result = self
            .admit_annotated(
                shared,
                user,
                target,
                op,
                object,
                old,
                warnings,
                validate,
                &mut annotations,
            )
            .await;
        if !annotations.is_empty() {
            let rt = &target.rt;
            let name = target.name.clone().or(object_name);
            let mut object_ref =
                json!({"resource": rt.plural, "apiGroup": rt.group, "apiVersion": rt.version});
            for (key, value) in [
                ("namespace", target.namespace.clone()),
                ("name", name),
                ("subresource", target.subresource.clone()),
            ] {
                if let Some(value) = value {
                    object_ref[key] = json!(value);
                }
            }
            let code = match &result {
                Ok(_) if op == Operation::Create => 201,
                Ok(_) => 200,
                Err(e) => e.code,
            };
            let mut audit = self.audit.lock();
            if audit.len() == AUDIT_EVENTS {
                audit.pop_front();
            }
            audit.push_back(json!({
                "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "stage": "ResponseComplete",
                "verb": op.as_str().to_lowercase(), "user": {"username": user.name, "groups": user.groups},
                "objectRef": object_ref, "responseStatus": {"code": code}, "annotations": annotations,
            }));
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn admit_annotated(
        &self,
        shared: &Shared,
        user: &UserInfo,
        target: &Target,
        op: Operation,
        object: Option<Value>,
        old: Option<&Value>,
        warnings: &mut Vec<String>,
        validate: &(dyn Fn(&Value) -> ApiResult<()> + Sync),
        annotations: &mut serde_json::Map<String, Value>,
    ) -> ApiResult<Option<Value>> {
        let (webhooks, namespace_labels) = {
            let store = shared.store.lock();
            let mut hooks = Vec::new();
            for (resource, mutating) in [
                ("mutatingwebhookconfigurations", true),
                ("validatingwebhookconfigurations", false),
            ] {
                let gr = GroupResource {
                    group: "admissionregistration.k8s.io".into(),
                    resource: resource.into(),
                };
                for config in store.list(&gr, None) {
                    for hook in config
                        .get("webhooks")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        hooks.push(Webhook {
                            name: hook.get("name").and_then(Value::as_str).unwrap_or("").to_owned(),
                            config: hook.clone(),
                            mutating,
                        });
                    }
                }
            }
            let ns_labels = target.namespace.as_ref().and_then(|ns| {
                let gr = GroupResource {
                    group: String::new(),
                    resource: "namespaces".into(),
                };
                store.get(&gr, "", ns).map(|n| labels_of(&n))
            });
            (hooks, ns_labels)
        };
        // The API server's order: mutating webhooks, then the object's own validation (schema and CEL
        // rules of a CRD), then validating webhooks.
        let mut validated = false;
        let mut validate_once = |object: &Option<Value>| -> ApiResult<()> {
            if !validated {
                validated = true;
                if let Some(o) = object {
                    validate(o)?;
                }
            }
            Ok(())
        };
        if webhooks.is_empty() {
            validate_once(&object)?;
            return Ok(object);
        }
        let rt = &target.rt;
        let is_namespace = rt.group.is_empty() && rt.plural == "namespaces";
        let mut object = object;
        let mut uid_given = false;
        for hook in webhooks {
            if !hook.mutating {
                validate_once(&object)?;
                // Validating webhooks see a new object with its uid, as the API server fills it in
                // (BeforeCreate) between mutating and validating admission; mutating ones do not.
                if !uid_given && op == Operation::Create && target.subresource.is_none() {
                    uid_given = true;
                    if let Some(meta) = object
                        .as_mut()
                        .and_then(|o| o.get_mut("metadata"))
                        .and_then(Value::as_object_mut)
                        && !meta.contains_key("uid")
                    {
                        let uid = shared.store.lock().new_uid();
                        meta.insert("uid".into(), Value::String(uid));
                    }
                }
            }
            let own_labels = if is_namespace {
                object.as_ref().or(old).map(labels_of).unwrap_or_default()
            } else {
                namespace_labels.clone().unwrap_or_default()
            };
            if !matches_rules(&hook.config, op, rt, target.subresource.as_deref()) {
                continue;
            }
            let scoped = rt.namespaced || is_namespace;
            if scoped
                && let Some(selector) = hook.config.get("namespaceSelector")
                && !selector_value_matches(selector, &own_labels)
            {
                continue;
            }
            if let Some(selector) = hook.config.get("objectSelector") {
                let new_ok = object
                    .as_ref()
                    .is_some_and(|o| selector_value_matches(selector, &labels_of(o)));
                let old_ok = old.is_some_and(|o| selector_value_matches(selector, &labels_of(o)));
                if !new_ok && !old_ok {
                    continue;
                }
            }
            let review = self.review(user, target, op, object.as_ref(), old);
            match self.call(&hook, &review).await {
                Ok(response) => {
                    for (key, value) in response
                        .get("auditAnnotations")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                    {
                        annotations.insert(format!("{}/{key}", hook.name), value.clone());
                    }
                    warnings.extend(
                        response
                            .get("warnings")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_owned),
                    );
                    if response.get("allowed").and_then(Value::as_bool) != Some(true) {
                        return Err(denial(&hook.name, response.get("status")));
                    }
                    if hook.mutating
                        && let Some(patch) = response.get("patch").and_then(Value::as_str)
                        && let Some(current) = object.as_mut()
                    {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(patch)
                            .map_err(|e| call_failed(&hook.name, &format!("invalid patch encoding: {e}")))?;
                        let patch: json_patch::Patch = serde_json::from_slice(&bytes)
                            .map_err(|e| call_failed(&hook.name, &format!("invalid JSON patch: {e}")))?;
                        json_patch::patch(current, &patch)
                            .map_err(|e| call_failed(&hook.name, &format!("patch does not apply: {e}")))?;
                    }
                }
                Err(message) => {
                    let ignore = hook.config.get("failurePolicy").and_then(Value::as_str) == Some("Ignore");
                    if !ignore {
                        return Err(call_failed(&hook.name, &message));
                    }
                }
            }
        }
        validate_once(&object)?;
        Ok(object)
    }

    fn review(
        &self,
        user: &UserInfo,
        target: &Target,
        op: Operation,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Value {
        let rt = &target.rt;
        let uid = {
            let mut counter = self.counter.lock();
            *counter += 1;
            format!("00000000-0000-4000-8000-{:012x}", *counter)
        };
        let name = target.name.clone().or_else(|| {
            object
                .and_then(|o| o.pointer("/metadata/name"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        // A subresource has a kind of its own (what the body is).
        let kind_name = match target.subresource.as_deref() {
            Some("binding") => "Binding",
            _ => rt.kind.as_str(),
        };
        let kind = json!({"group": rt.group, "version": rt.version, "kind": kind_name});
        let resource = json!({"group": rt.group, "version": rt.version, "resource": rt.plural});
        let options_kind = match op {
            Operation::Create => "CreateOptions",
            Operation::Update => "UpdateOptions",
            Operation::Delete => "DeleteOptions",
        };
        let mut request = json!({
            "uid": uid, "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
            "name": name.unwrap_or_default(), "namespace": target.namespace.clone().unwrap_or_default(),
            "operation": op.as_str(),
            "userInfo": {"username": user.name, "groups": user.groups},
            "object": object.cloned().unwrap_or(Value::Null), "oldObject": old.cloned().unwrap_or(Value::Null),
            "dryRun": false,
            "options": {"kind": options_kind, "apiVersion": "meta.k8s.io/v1"},
        });
        if let Some(sub) = &target.subresource {
            request["subResource"] = json!(sub);
            request["requestSubResource"] = json!(sub);
        }
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
    }

    async fn call(&self, hook: &Webhook, review: &Value) -> Result<Value, String> {
        let url = hook
            .config
            .pointer("/clientConfig/url")
            .and_then(Value::as_str)
            .ok_or_else(|| "only clientConfig.url is supported by the testkit".to_owned())?;
        let timeout = Duration::from_secs(
            hook.config
                .get("timeoutSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(10),
        );
        let ca = hook
            .config
            .pointer("/clientConfig/caBundle")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let client = self.client(&ca)?;
        let full_url = format!(
            "{url}{}timeout={}s",
            if url.contains('?') { '&' } else { '?' },
            timeout.as_secs()
        );
        let request = http::Request::post(&full_url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(review.to_string())))
            .map_err(|e| format!("Post \"{full_url}\": {e}"))?;
        let response = tokio::time::timeout(timeout, async {
            let response = client
                .request(request)
                .await
                .map_err(|e| format!("Post \"{full_url}\": {}", error_chain(&e)))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the response: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!(
                    "received invalid webhook response: expected status 200, got {}",
                    status.as_u16()
                ));
            }
            Ok::<Bytes, String>(body)
        })
        .await
        .map_err(|_| format!("Post \"{full_url}\": context deadline exceeded"))??;
        let review: Value = serde_json::from_slice(&response)
            .map_err(|e| format!("received invalid webhook response: {e}"))?;
        review
            .get("response")
            .cloned()
            .ok_or_else(|| "received invalid webhook response: no response".to_owned())
    }

    fn client(&self, ca_bundle: &str) -> Result<HttpsClient, String> {
        if let Some(client) = self.clients.lock().get(ca_bundle) {
            return Ok(client.clone());
        }
        let mut roots = rustls::RootCertStore::empty();
        if !ca_bundle.is_empty() {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(ca_bundle)
                .map_err(|e| format!("invalid caBundle: {e}"))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("invalid caBundle: {e}"))?;
                roots.add(cert).map_err(|e| format!("invalid caBundle: {e}"))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Without TCP_NODELAY a review's body waits for the ACK of its headers (Nagle's algorithm
        // meeting delayed ACKs): 10-50 ms per review instead of well under one.
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client: HttpsClient = Client::builder(TokioExecutor::new()).build(connector);
        self.clients.lock().insert(ca_bundle.to_owned(), client.clone());
        Ok(client)
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

fn covers(list: Option<&Value>, value: &str) -> bool {
    list.and_then(Value::as_array)
        .is_some_and(|l| l.iter().filter_map(Value::as_str).any(|v| v == "*" || v == value))
}

fn matches_rules(hook: &Value, op: Operation, rt: &ResourceType, subresource: Option<&str>) -> bool {
    hook.get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|rule| {
            let resource_ok = rule
                .get("resources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|r| {
                    let (res, sub) = r.split_once('/').map_or((r, None), |(a, b)| (a, Some(b)));
                    let res_ok = res == "*" || res == rt.plural;
                    match (sub, subresource) {
                        (None, None) => res_ok,
                        (None, Some(_)) => false,
                        // `*/*` covers resources and subresources; `pods/*` only the subresources of pods.
                        (Some(s), None) => res == "*" && s == "*",
                        (Some(s), Some(actual)) => res_ok && (s == "*" || s == actual),
                    }
                });
            let scope_ok = match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
                "Cluster" => !rt.namespaced,
                "Namespaced" => rt.namespaced,
                _ => true,
            };
            covers(rule.get("operations"), op.as_str())
                && covers(rule.get("apiGroups"), &rt.group)
                && covers(rule.get("apiVersions"), &rt.version)
                && resource_ok
                && scope_ok
        })
}

fn denial(name: &str, status: Option<&Value>) -> ApiError {
    let status = status.cloned().unwrap_or_default();
    let code = status.get("code").and_then(Value::as_u64).unwrap_or(0).max(400) as u16;
    let reason = status
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let message = status.get("message").and_then(Value::as_str).unwrap_or("");
    let denied_by = format!("admission webhook \"{name}\" denied the request");
    let message = if !message.is_empty() {
        format!("{denied_by}: {message}")
    } else if !reason.is_empty() {
        format!("{denied_by}: {reason}")
    } else {
        format!("{denied_by} without explanation")
    };
    ApiError {
        code,
        reason,
        message,
        details: None,
    }
}

fn call_failed(name: &str, message: &str) -> ApiError {
    ApiError {
        code: 500,
        reason: "InternalError".into(),
        message: format!(
            "Internal error occurred: failed calling webhook \"{name}\": failed to call webhook: {message}"
        ),
        details: None,
    }
}
