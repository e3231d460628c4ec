//! The admin server: `/metrics`, `/healthz` (the process is alive) and `/readyz` (every store has
//! synced, every enabled role is up and the API server answers).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bulkhead_cache::Cache;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cli::Role;
use crate::metrics::Metrics;

/// A role's liveness as the admin server sees it.
#[derive(Clone, Debug)]
pub struct RoleState {
    /// Which role.
    pub role: Role,
    /// True once the role is up.
    pub up: watch::Receiver<bool>,
}

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// The shared cache.
    pub cache: Cache,
    /// The enabled roles.
    pub roles: Arc<Vec<RoleState>>,
    /// Leadership of the controller role, when it runs.
    pub leading: Option<watch::Receiver<bool>>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Why the API server did not answer the last probe; `None` while it does (see [`probe_api_server`]).
    pub api_server: watch::Receiver<Option<String>>,
}

/// How often the API server's own `/readyz` is asked.
pub const PROBE_PERIOD: Duration = Duration::from_secs(2);

/// Asks the API server's `/readyz` every [`PROBE_PERIOD`] (each answer within one period) until
/// `shutdown`, and says in `state` why it did not answer. While it is away, or restarting, Bulkhead is
/// not ready: its cache is then as old as the moment the watches broke, and the watches resume by
/// themselves once it is back (from their last resource version). Every user may read `/readyz`
/// (`system:public-info-viewer`).
pub async fn probe_api_server(
    client: kube::Client,
    state: watch::Sender<Option<String>>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut ticks = tokio::time::interval(PROBE_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let request = http::Request::get("/readyz").body(Vec::new());
        let answer = match request {
            Ok(request) => match tokio::time::timeout(PROBE_PERIOD, client.request_text(request)).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(one_line(&e.to_string())),
                Err(_) => Some(format!("no answer within {PROBE_PERIOD:?}")),
            },
            Err(e) => Some(e.to_string()),
        };
        let changed = *state.borrow() != answer;
        if changed {
            match &answer {
                Some(why) => warn!(reason = %why, "the API server does not answer /readyz: not ready"),
                None => info!("the API server answers /readyz again"),
            }
            state.send_replace(answer);
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let mut lines = Vec::new();
    let mut ready = true;
    for status in state.cache.status() {
        ready &= status.synced;
        let verdict = if status.synced { "ok" } else { "waiting" };
        lines.push(format!(
            "[{verdict}] cache {}: {} objects",
            status.kind, status.objects
        ));
    }
    let api_server = state.api_server.borrow().clone();
    ready &= api_server.is_none();
    lines.push(match api_server {
        None => "[ok] api server".to_owned(),
        Some(why) => format!("[waiting] api server: {why}"),
    });
    for role in state.roles.iter() {
        let up = *role.up.borrow();
        ready &= up;
        let verdict = if up { "ok" } else { "waiting" };
        lines.push(format!("[{verdict}] role {}", role.role.as_str()));
    }
    lines.push(if ready {
        "ready".to_owned()
    } else {
        "not ready".to_owned()
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, lines.join("\n") + "\n")
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let leading = state.leading.as_ref().map(|l| *l.borrow());
    let body = state.metrics.render(&state.cache, &state.roles, leading);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use bulkhead_api::{Tenant, TenantSpec};
    use k8s_openapi::api::core::v1::Namespace;
    use kube::runtime::watcher::Event;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn state(cache: Cache, up: bool) -> (AdminState, watch::Sender<bool>) {
        let (state, tx, _api) = state_with_api(cache, up);
        (state, tx)
    }

    fn state_with_api(
        cache: Cache,
        up: bool,
    ) -> (AdminState, watch::Sender<bool>, watch::Sender<Option<String>>) {
        let (tx, rx) = watch::channel(up);
        let (api_tx, api_rx) = watch::channel(None);
        let state = AdminState {
            cache,
            roles: Arc::new(vec![RoleState {
                role: Role::Webhook,
                up: rx,
            }]),
            leading: None,
            metrics: Arc::new(Metrics::new().unwrap()),
            api_server: api_rx,
        };
        (state, tx, api_tx)
    }

    #[tokio::test]
    async fn readyz_says_not_ready_while_the_api_server_does_not_answer() {
        let cache = Cache::detached();
        sync(&cache, &["a"]);
        let (state, _role, api) = state_with_api(cache, true);
        assert_eq!(get(router(state.clone()), "/readyz").await.0, StatusCode::OK);
        api.send_replace(Some("connection refused".into()));
        let (code, body) = get(router(state.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            body.contains("[waiting] api server: connection refused"),
            "{body}"
        );
        api.send_replace(None);
        let (code, body) = get(router(state), "/readyz").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert!(body.contains("[ok] api server"), "{body}");
    }

    fn sync(cache: &Cache, tenants: &[&str]) {
        let feed = cache.tenants_feed();
        feed.apply(Event::Init);
        for name in tenants {
            feed.apply(Event::InitApply(Tenant::new(name, TenantSpec::default())));
        }
        feed.apply(Event::InitDone);
        let namespaces = cache.namespaces_feed();
        namespaces.apply(Event::Init);
        namespaces.apply(Event::InitApply(Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        }));
        namespaces.apply(Event::InitDone);
    }

    #[tokio::test]
    async fn readyz_waits_for_every_store_and_every_role() {
        let cache = Cache::detached();
        let (state, role_up) = state(cache.clone(), false);
        let (code, body) = get(router(state.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("[waiting] cache Tenant: 0 objects"), "{body}");
        sync(&cache, &["a"]);
        let (code, body) = get(router(state.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("[waiting] role webhook"), "{body}");
        role_up.send_replace(true);
        let (code, body) = get(router(state), "/readyz").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert!(body.ends_with("ready\n"), "{body}");
    }

    #[tokio::test]
    async fn metrics_count_cached_objects_by_kind() {
        let cache = Cache::detached();
        sync(&cache, &["a", "b", "c"]);
        let (state, _role) = state(cache, true);
        let (code, body) = get(router(state), "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(
            body.contains("bulkhead_cache_objects{kind=\"Tenant\"} 3"),
            "{body}"
        );
        assert!(
            body.contains("bulkhead_cache_objects{kind=\"Namespace\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("bulkhead_cache_synced{kind=\"Tenant\"} 1"),
            "{body}"
        );
        assert!(body.contains("bulkhead_role_up{role=\"webhook\"} 1"), "{body}");
        assert!(body.contains("bulkhead_leader 0"), "{body}");
        assert!(body.contains("bulkhead_tokio_alive_tasks "), "{body}");
        assert!(body.contains("process_resident_memory_bytes"), "{body}");
    }

    #[tokio::test]
    async fn healthz_is_ok_while_the_process_runs() {
        let (state, _role) = state(Cache::detached(), false);
        assert_eq!(
            get(router(state), "/healthz").await,
            (StatusCode::OK, "ok\n".to_owned())
        );
    }
}
