//! The webhook role: admission for tenant users, in the shape decode -> look up the tenant in the
//! shared cache -> call a pure `bulkhead-policy` function -> encode.
//!
//! This build wires the role into the process (its readiness is part of `/readyz`); the HTTPS server
//! and its routes are not in this build yet.

use bulkhead_cache::Cache;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Runs the webhook role until `shutdown` is cancelled.
pub async fn run(_cache: Cache, up: watch::Sender<bool>, shutdown: CancellationToken) {
    info!("webhook role started (no admission routes in this build)");
    up.send_replace(true);
    shutdown.cancelled().await;
}
