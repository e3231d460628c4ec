//! The admin server: `/metrics`, `/healthz` (the process is alive) and `/readyz` (every store has
//! synced and every enabled role is up).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bulkhead_cache::Cache;
use tokio::sync::watch;

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
        let (tx, rx) = watch::channel(up);
        let state = AdminState {
            cache,
            roles: Arc::new(vec![RoleState {
                role: Role::Webhook,
                up: rx,
            }]),
            leading: None,
            metrics: Arc::new(Metrics::new().unwrap()),
        };
        (state, tx)
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
