//! The proxy role: an authenticating reverse proxy in front of the API server that shows each tenant
//! user only their own slice, answering filtered requests from the shared cache.
//!
//! This build wires the role into the process (its readiness is part of `/readyz`); the HTTPS listener
//! is not in this build yet.

use bulkhead_cache::Cache;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Runs the proxy role until `shutdown` is cancelled.
pub async fn run(_cache: Cache, up: watch::Sender<bool>, shutdown: CancellationToken) {
    info!("proxy role started (no listener in this build)");
    up.send_replace(true);
    shutdown.cancelled().await;
}
