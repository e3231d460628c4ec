//! The controller role: it takes a `coordination.k8s.io/v1` Lease so that only one replica acts, then
//! runs the reconcilers that turn Tenants into their namespaces' objects.

pub mod leader;

use std::time::Duration;

use bulkhead_cache::Cache;
use kube::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use leader::{LeaderElection, LeaseSettings};

/// The controller role's settings.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Leader election; `None` runs without a Lease (one replica only).
    pub lease: Option<LeaseSettings>,
}

/// What the controller role reports while it runs.
#[derive(Clone, Debug)]
pub struct ControllerHandle {
    /// True while this replica holds the Lease (always true without leader election).
    pub leading: watch::Receiver<bool>,
    /// True once the role has started: the Lease has been read or written at least once.
    pub up: watch::Receiver<bool>,
}

/// Runs the controller role until `shutdown` is cancelled; a held Lease is released on the way out.
pub async fn run(
    client: Client,
    _cache: Cache,
    config: ControllerConfig,
    leading: watch::Sender<bool>,
    up: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    match config.lease {
        Some(settings) => {
            let election = LeaderElection::new(client, settings);
            election.run(leading, up, shutdown).await;
        }
        None => {
            info!("leader election disabled: this replica acts alone");
            leading.send_replace(true);
            up.send_replace(true);
            shutdown.cancelled().await;
        }
    }
}

/// The default time a Lease is valid without renewal.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
