//! The HTTPS server: routes, the handler, and TLS with a certificate that can change under it.

use std::fmt;
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
use parking_lot::RwLock;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

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
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return bad_request(format!(
                "the body is larger than {MAX_BODY} bytes, or was cut off"
            ));
        }
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

/// A certificate resolver whose certificate can be replaced while serving.
#[derive(Default)]
pub struct ReloadableCert {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("loaded", &self.current.read().is_some())
            .finish()
    }
}

impl ReloadableCert {
    /// Serves `key` from the next handshake on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write() = Some(key);
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.read().is_some()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().clone()
    }
}

/// A rustls server configuration that serves whatever `cert` holds (HTTP/2 and HTTP/1.1).
pub fn server_config(cert: Arc<ReloadableCert>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` over TLS on `listener` until `shutdown`; open connections end with it.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving HTTPS");
    }
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(error) => {
                    debug!(%error, "TLS handshake failed");
                    return;
                }
            };
            let io = hyper_util::rt::TokioIo::new(tls);
            let service = hyper_util::service::TowerToHyperService::new(app);
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(io, service);
            tokio::select! {
                _ = connection => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}
