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

use crate::decide::{Check, Context, decide};
use crate::events::Denials;
use crate::metrics::AdmissionMetrics;
use crate::review::{MAX_BODY, decode, encode};

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
    // The server limits the time a body may take to arrive (and its size, as here).
    let bytes = match bulkhead_tls::read_body(body, MAX_BODY).await {
        Ok(b) => b,
        Err(message) => return bad_request(message),
    };
    let (api_version, request) = match decode(&bytes) {
        Ok(decoded) => decoded,
        Err(message) => return bad_request(message),
    };
    let config = state.cache.configuration();
    let ctx = Context {
        view: &state.cache,
        config: &config,
        own_identity: &state.own_identity,
    };
    let verdict = match decide(check, &request, &ctx) {
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
    let allowed = if verdict.is_allowed() { "true" } else { "false" };
    state
        .metrics
        .requests
        .with_label_values(&[check.as_str(), request.operation.as_str(), allowed])
        .inc();
    let response = axum::Json(encode(&api_version, &request.uid, &verdict, mutating)).into_response();
    state
        .metrics
        .duration
        .with_label_values(&[check.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}
