//! The proxy role: an authenticating reverse proxy in front of the API server that shows each tenant
//! user only their own slice.
//!
//! Per request: authenticate ([`auth`]), decide the caller's tenants from the shared cache
//! ([`bulkhead_policy::proxy`]), then either answer a filtered request (namespaces, the cluster-scoped
//! kinds tenants may see, tenants, cross-namespace lists) or pass the request through as the caller
//! ([`forward`]), streaming, upgrades included.

pub mod auth;
pub mod filter;
pub mod forward;
pub mod metrics;
pub mod route;
pub mod server;
pub mod status;
pub mod upstream;

mod discovery;
mod handler;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_cache::Cache;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use auth::{Authenticator, ClientCertificate};
pub use metrics::ProxyMetrics;
pub use upstream::ApiServer;

/// How the proxy role is set up.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// A directory with `tls.crt` and `tls.key`; without one, a self-signed certificate for
    /// `hostnames` is made at start-up.
    pub cert_dir: Option<PathBuf>,
    /// The names a self-signed certificate is made for.
    pub hostnames: Vec<String>,
    /// The CA client certificates must chain to; without one, client certificates are not asked for.
    pub client_ca: Option<PathBuf>,
    /// How long TokenReview answers (and failures) are remembered.
    pub token_ttl: Duration,
    /// Bulkhead's own user name (it is never filtered).
    pub own_identity: String,
}

/// The proxy: everything a request needs.
pub struct Proxy {
    cache: Cache,
    api: ApiServer,
    auth: Authenticator,
    discovery: discovery::Discovery,
    metrics: ProxyMetrics,
    own_identity: String,
}

impl Proxy {
    /// A proxy over `cache` that reaches the API server through `api`.
    pub fn new(
        cache: Cache,
        api: ApiServer,
        token_ttl: Duration,
        own_identity: String,
        metrics: ProxyMetrics,
    ) -> Proxy {
        Proxy {
            auth: Authenticator::new(api.clone(), token_ttl, metrics.clone()),
            discovery: discovery::Discovery::new(api.clone()),
            cache,
            api,
            metrics,
            own_identity,
        }
    }
}

/// How often a certificate directory is read again for a renewed certificate.
const CERT_RELOAD: Duration = Duration::from_secs(10);

async fn read_pair(dir: &Path) -> Result<(Vec<u8>, Vec<u8>), String> {
    let read = |name: &str| {
        let path = dir.join(name);
        async move {
            tokio::fs::read(&path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
    };
    Ok((read("tls.crt").await?, read("tls.key").await?))
}

/// What the proxy serves with: the TLS configuration, its replaceable certificate, and the PEM pair
/// read from `--proxy-cert-dir` (if one is set).
type Tls = (
    Arc<rustls::ServerConfig>,
    Arc<server::ServingCert>,
    Option<(Vec<u8>, Vec<u8>)>,
);

async fn read_tls(settings: &ProxySettings) -> Result<Tls, String> {
    let from_dir = match &settings.cert_dir {
        Some(dir) => Some(read_pair(dir).await?),
        None => None,
    };
    let (cert, key) = match from_dir.clone() {
        Some(pair) => pair,
        None => {
            warn!(names = ?settings.hostnames, "no --proxy-cert-dir: serving a self-signed certificate");
            let (cert, key) = server::self_signed(&settings.hostnames).map_err(|e| e.to_string())?;
            (cert.into_bytes(), key.into_bytes())
        }
    };
    let serving = Arc::new(server::ServingCert::from_pem(&cert, &key).map_err(|e| e.to_string())?);
    let client_ca = match &settings.client_ca {
        Some(path) => Some(
            tokio::fs::read(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let config = server::tls_config(serving.clone(), client_ca.as_deref()).map_err(|e| e.to_string())?;
    Ok((config, serving, from_dir))
}

/// Reads `dir` (`tls.crt`, `tls.key`) again every `every` and serves a changed certificate from the
/// next handshake; `served` is the PEM pair being served now. A pair that cannot be read or used
/// (unreadable, or a certificate whose key is not written yet) is logged and the current one kept.
pub async fn reload_certificates(
    dir: PathBuf,
    serving: Arc<server::ServingCert>,
    served: Option<(Vec<u8>, Vec<u8>)>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut last = served;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match read_pair(&dir).await {
            Ok(pair) if last.as_ref() != Some(&pair) => match serving.replace(&pair.0, &pair.1) {
                Ok(()) => {
                    info!(dir = %dir.display(), "proxy serving certificate reloaded");
                    last = Some(pair);
                }
                Err(error) => {
                    warn!(%error, "the renewed proxy certificate cannot be used; keeping the current one")
                }
            },
            Ok(_) => {}
            Err(error) => warn!(%error, "cannot read the proxy certificate; keeping the current one"),
        }
    }
}

/// Runs the proxy role until `shutdown` is cancelled. Ready once the cache has synced and the
/// listener is up.
pub async fn run(
    cache: Cache,
    api: ApiServer,
    listener: TcpListener,
    settings: ProxySettings,
    metrics: ProxyMetrics,
    up: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let tls = match read_tls(&settings).await {
        Ok((tls, serving, served)) => {
            if let Some(dir) = settings.cert_dir.clone() {
                tokio::spawn(reload_certificates(
                    dir,
                    serving,
                    served,
                    CERT_RELOAD,
                    shutdown.clone(),
                ));
            }
            tls
        }
        Err(reason) => {
            error!(%reason, "proxy cannot serve TLS; the role stays unready");
            shutdown.cancelled().await;
            return;
        }
    };
    let proxy = Arc::new(Proxy::new(
        cache.clone(),
        api,
        settings.token_ttl,
        settings.own_identity.clone(),
        metrics,
    ));
    let ready = cache.clone();
    let ready_shutdown = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = ready.wait_synced() => { up.send_replace(true); }
            _ = ready_shutdown.cancelled() => {}
        }
    });
    server::serve(listener, tls, proxy, shutdown).await;
}
