//! The webhook's routes and handler; `bulkhead-tls` serves them.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bulkhead_cache::Cache;
use bulkhead_policy::admission::Verdict;
use serde_json::json;
use tracing::debug;

use crate::decide::{Check, Context, audit_annotations, decide_audited};
use crate::events::Denials;
use crate::metrics::AdmissionMetrics;
use crate::review::{MAX_BODY, decode, encode};
use crate::unseen;

/// How long a request waits for a cache that is still loading before it fails: well inside the five
/// seconds the API server gives a call.
const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// What every request handler shares.
pub struct AppState {
    /// The shared cache (the handlers' view of the cluster and the configuration).
    pub cache: Cache,
    /// Bulkhead's own user name.
    pub own_identity: String,
    /// Metrics.
    pub metrics: AdmissionMetrics,
    /// Where denials go to become Events.
    pub denials: Denials,
    /// The API client, to read a namespace the cache has not seen yet; without one such requests are
    /// denied with a message to retry.
    pub client: Option<kube::Client>,
    /// CustomQuota reservations in flight in this process.
    pub ledgers: crate::custom_quota::Ledgers,
}

/// The webhook routes: `POST /validate/{check}` and `POST /mutate/{check}`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/validate/{check}", post(validate))
        .route("/mutate/{check}", post(mutate))
        .with_state(state)
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"message": message}))).into_response()
}

async fn validate(state: State<Arc<AppState>>, check: Path<String>, body: Body) -> Response {
    handle(state, check, body, false).await
}

async fn mutate(state: State<Arc<AppState>>, check: Path<String>, body: Body) -> Response {
    handle(state, check, body, true).await
}

async fn handle(
    State(state): State<Arc<AppState>>,
    Path(check): Path<String>,
    body: Body,
    mutating: bool,
) -> Response {
    let started = Instant::now();
    if check == "customquotas" && !mutating {
        return custom_quotas(&state, body, started).await;
    }
    if check == "resourcepools" && !mutating {
        return resource_pools(&state, body, started).await;
    }
    let Some(check) = Check::parse(&check) else {
        return (StatusCode::NOT_FOUND, format!("no check named `{check}`")).into_response();
    };
    if mutating && !check.mutates() {
        return (
            StatusCode::NOT_FOUND,
            format!("the `{}` check does not mutate", check.as_str()),
        )
            .into_response();
    }
    let (api_version, request) = match receive(&state, body).await {
        Ok(received) => received,
        Err(response) => return response,
    };
    let config = state.cache.configuration();
    let namespace = request.namespace.as_deref().filter(|n| !n.is_empty());
    let read = match namespace {
        Some(ns) if check.by_namespace_tenant() => {
            unseen::look_up(&state.cache, state.client.as_ref(), ns).await
        }
        _ => Ok(None),
    };
    let verdict = match &read {
        Err(message) => {
            let verdict = Verdict::deny(None, message.clone());
            Ok((
                audit_annotations(check, &request, &verdict, &state.cache),
                verdict,
                Vec::new(),
            ))
        }
        Ok(read) => {
            let overlay = read.as_ref().map(|read| unseen::Overlay {
                base: &state.cache,
                read,
            });
            let view: &dyn bulkhead_policy::admission::View = match &overlay {
                Some(overlay) => overlay,
                None => &state.cache,
            };
            let ctx = Context {
                view,
                config: &config,
                own_identity: &state.own_identity,
                mutating,
            };
            decide_audited(check, &request, &ctx).map(|(verdict, audits)| {
                (
                    audit_annotations(check, &request, &verdict, view),
                    verdict,
                    audits,
                )
            })
        }
    };
    let (audit, verdict, audits) = match verdict {
        Ok(v) => v,
        Err(message) => return bad_request(message),
    };
    if let Verdict::Deny(denial) = &verdict {
        debug!(check = check.as_str(), user = %request.user_info.username, message = %denial.message, "denied");
        if let Some(tenant) = &denial.tenant
            && request.dry_run != Some(true)
        {
            state
                .denials
                .record(tenant, check.denial_reason(), &denial.message);
        }
    }
    // Audits of namespace rules: admitted, and reported as a warning to the client, an Event on the
    // tenant and a metric.
    if !audits.is_empty() {
        let tenant = crate::decide::answer_tenant(check, &request, &verdict, &state.cache);
        for message in &audits {
            state
                .metrics
                .rule_audits
                .with_label_values(&[check.as_str()])
                .inc();
            if let Some(tenant) = &tenant
                && request.dry_run != Some(true)
            {
                state.denials.record(tenant, "RuleAudit", message);
            }
        }
    }
    let allowed = if verdict.is_allowed() { "true" } else { "false" };
    state
        .metrics
        .requests
        .with_label_values(&[check.as_str(), request.operation.as_str(), allowed])
        .inc();
    let response = axum::Json(encode(
        &api_version,
        &request.uid,
        &verdict,
        mutating,
        &audit,
        &audits,
    ))
    .into_response();
    state
        .metrics
        .duration
        .with_label_values(&[check.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The `customquotas` hook: its decision writes reservations, so it runs apart from the synchronous
/// checks.
async fn custom_quotas(state: &AppState, body: Body, started: Instant) -> Response {
    let (api_version, request) = match receive(state, body).await {
        Ok(received) => received,
        Err(response) => return response,
    };
    let verdict =
        crate::custom_quota::decide(&state.cache, state.client.as_ref(), &state.ledgers, &request).await;
    answer(state, "customquotas", &api_version, &request, verdict, started)
}

/// The `resourcepools` hook: its decision reads a claim's ResourceQuota from the API server.
async fn resource_pools(state: &AppState, body: Body, started: Instant) -> Response {
    let (api_version, request) = match receive(state, body).await {
        Ok(received) => received,
        Err(response) => return response,
    };
    let verdict = crate::resource_pool::decide(&state.cache, state.client.as_ref(), &request).await;
    answer(state, "resourcepools", &api_version, &request, verdict, started)
}

/// The response to a review decided by an asynchronous check, counted in the metrics.
fn answer(
    state: &AppState,
    check: &str,
    api_version: &str,
    request: &crate::review::AdmissionRequest,
    verdict: Result<Verdict, String>,
    started: Instant,
) -> Response {
    let verdict = match verdict {
        Ok(v) => v,
        Err(message) => return bad_request(message),
    };
    if let Verdict::Deny(denial) = &verdict {
        debug!(check, user = %request.user_info.username, message = %denial.message, "denied");
    }
    let allowed = if verdict.is_allowed() { "true" } else { "false" };
    state
        .metrics
        .requests
        .with_label_values(&[check, request.operation.as_str(), allowed])
        .inc();
    let response = axum::Json(encode(
        api_version,
        &request.uid,
        &verdict,
        false,
        &std::collections::BTreeMap::new(),
        &[],
    ))
    .into_response();
    state
        .metrics
        .duration
        .with_label_values(&[check])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Reads and decodes a review, and waits a little for a cache still loading: the common start of
/// every route. `Err` is the response to send instead.
async fn receive(
    state: &AppState,
    body: Body,
) -> Result<(String, crate::review::AdmissionRequest), Response> {
    // The server limits the time a body may take to arrive (and its size, as here).
    let bytes = match bulkhead_tls::read_body(body, MAX_BODY).await {
        Ok(b) => b,
        Err(message) => return Err(bad_request(message)),
    };
    let (api_version, request) = match decode(&bytes) {
        Ok(decoded) => decoded,
        Err(message) => return Err(bad_request(message)),
    };
    // A decision on a cache still loading (a process just started) would count namespaces, hosts and
    // tenants it has not seen yet: wait for it a little, then fail the call so the API server applies
    // the failure policy, never an answer.
    if !state.cache.is_synced()
        && tokio::time::timeout(SYNC_WAIT, state.cache.wait_synced())
            .await
            .is_err()
    {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"message": "Bulkhead's cache is still loading; retry shortly"})),
        )
            .into_response());
    }
    Ok((api_version, request))
}
