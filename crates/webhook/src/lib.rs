//! The webhook role: admission for tenant users, in the shape decode -> look up the tenant in the
//! shared cache -> call a pure `bulkhead-policy` function -> encode.
//!
//! Served over HTTPS with a certificate that is reloaded when it changes: from a Secret the controller
//! role keeps (see [`bulkhead_tls::certs`]), or from a directory (cert-manager, or any mounted certificate).

pub mod custom_quota;
pub mod decide;
pub mod events;
pub mod metrics;
pub mod resource_pool;
pub mod review;
pub mod server;
pub mod unseen;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_cache::Cache;
use bulkhead_tls::{Limits, ServingCert, certs};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use decide::{Check, Context, answer_tenant, audit_annotations, decide, decide_audited};
pub use events::Denials;
pub use metrics::AdmissionMetrics;
pub use server::{AppState, router};

/// Where the serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// `tls.crt` and `tls.key` in a directory (a mounted Secret, cert-manager).
    Dir(PathBuf),
    /// The Secret the controller role keeps.
    Secret {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// How the webhook role runs.
pub struct Settings {
    /// The bound listener (bound at start-up, so a taken port fails fast).
    pub listener: TcpListener,
    /// Bulkhead's own user name (always an administrator).
    pub own_identity: String,
    /// Where the certificate comes from.
    pub cert_source: CertSource,
    /// How often to look for a changed certificate once one is loaded.
    pub reload_every: Duration,
    /// The names the API server reaches the webhook by (the certificate the controller issues names
    /// them). Until the loaded certificate names them all the role is not up: a certificate left from a
    /// run with another address would make every review fail. Empty: not checked (cert-manager).
    pub expected_names: Vec<String>,
}

/// Runs the webhook role until `shutdown` is cancelled. It reports up once a certificate is loaded.
pub async fn run(
    client: Client,
    cache: Cache,
    settings: Settings,
    metrics: AdmissionMetrics,
    up: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let cert = Arc::new(ServingCert::default());
    let config = match bulkhead_tls::server_config(cert.clone(), None) {
        Ok(c) => c,
        Err(error) => {
            error!(%error, "cannot configure TLS; the webhook does not serve");
            shutdown.cancelled().await;
            return;
        }
    };
    let state = Arc::new(AppState {
        cache: cache.clone(),
        own_identity: settings.own_identity,
        metrics,
        denials: Denials::start(client.clone(), cache, shutdown.clone()),
        client: Some(client.clone()),
        ledgers: Default::default(),
    });
    let reload = keep_loaded(
        client,
        settings.cert_source,
        cert,
        (settings.reload_every, settings.expected_names),
        up,
        shutdown.clone(),
    );
    tokio::join!(
        serve(settings.listener, config, router(state), shutdown.clone()),
        reload
    );
}

/// The webhook's limits: the API server's requests, each at most [`review::MAX_BODY`] bytes (an
/// UPDATE carries the object twice). Its clients are API servers, a few connections each.
pub fn limits() -> Limits {
    Limits {
        max_body_bytes: review::MAX_BODY,
        max_connections: 1024,
        ..Limits::default()
    }
}

/// Serves the webhook's routes over TLS with [`limits`] until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
    shutdown: CancellationToken,
) {
    bulkhead_tls::serve(listener, config, limits(), move |_| app.clone(), shutdown).await;
}

/// Reads the certificate now and then; serves each new one from the next handshake. The role is up
/// while the certificate served names every expected name.
async fn keep_loaded(
    client: Client,
    source: CertSource,
    cert: Arc<ServingCert>,
    (every, expected): (Duration, Vec<String>),
    up: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let mut current: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut complained = false;
    let mut covers = false;
    loop {
        match read(&client, &source).await {
            Ok(Some(pair)) if current.as_ref() != Some(&pair) => {
                match bulkhead_tls::certified_key(&pair.0, &pair.1) {
                    Ok(key) => {
                        cert.set(key);
                        let missing = certs::names_missing(&pair.0, &expected);
                        covers = missing.is_empty();
                        if covers {
                            info!(source = ?source, "serving certificate loaded");
                        } else {
                            warn!(source = ?source, missing = %missing.join(","), "the serving certificate does not name this webhook's address yet; not ready until it is renewed");
                        }
                        current = Some(pair);
                        up.send_replace(covers);
                    }
                    Err(e) => warn!(source = ?source, error = %e, "the serving certificate is unusable"),
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                if !complained {
                    info!(source = ?source, "waiting for the serving certificate");
                    complained = true;
                }
            }
            Err(e) => warn!(source = ?source, error = %e, "cannot read the serving certificate"),
        }
        let wait = if cert.is_loaded() && covers {
            every
        } else {
            Duration::from_millis(500)
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn read(client: &Client, source: &CertSource) -> Result<Option<(Vec<u8>, Vec<u8>)>, String> {
    match source {
        CertSource::Dir(dir) => {
            let cert = tokio::fs::read(dir.join(certs::TLS_CERT)).await;
            let key = tokio::fs::read(dir.join(certs::TLS_KEY)).await;
            match (cert, key) {
                (Ok(c), Ok(k)) => Ok(Some((c, k))),
                (Err(e), _) | (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                (Err(e), _) | (_, Err(e)) => Err(format!("{}: {e}", dir.display())),
            }
        }
        CertSource::Secret { namespace, name } => {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let secret = api
                .get_opt(name)
                .await
                .map_err(|e| format!("secret {namespace}/{name}: {e}"))?;
            let data = secret.and_then(|s| s.data).unwrap_or_default();
            match (data.get(certs::TLS_CERT), data.get(certs::TLS_KEY)) {
                (Some(c), Some(k)) => Ok(Some((c.0.clone(), k.0.clone()))),
                _ => Ok(None),
            }
        }
    }
}
