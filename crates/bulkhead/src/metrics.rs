//! The process's Prometheus registry. Gauges that mirror state (cache sizes, readiness, leadership)
//! are read from their source at scrape time, so they can never go stale.

use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::admin::RoleState;
use bulkhead_cache::Cache;

/// Bulkhead's metrics.
pub struct Metrics {
    registry: Registry,
    cache_objects: IntGaugeVec,
    cache_synced: IntGaugeVec,
    role_up: IntGaugeVec,
    leader: IntGauge,
}

impl Metrics {
    /// Registers every metric, including the process collector (CPU, memory, file descriptors).
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let cache_objects = IntGaugeVec::new(
            Opts::new(
                "bulkhead_cache_objects",
                "Objects held in the shared cache, by kind.",
            ),
            &["kind"],
        )?;
        let cache_synced = IntGaugeVec::new(
            Opts::new(
                "bulkhead_cache_synced",
                "1 once the kind's first full list has been received.",
            ),
            &["kind"],
        )?;
        let role_up = IntGaugeVec::new(
            Opts::new("bulkhead_role_up", "1 while a role of this process is up."),
            &["role"],
        )?;
        let leader = IntGauge::new(
            "bulkhead_leader",
            "1 while this process's controller role holds the Lease.",
        )?;
        let build = IntGaugeVec::new(
            Opts::new("bulkhead_build_info", "Always 1; labels say which build runs."),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(cache_objects.clone()))?;
        registry.register(Box::new(cache_synced.clone()))?;
        registry.register(Box::new(role_up.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(build))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            cache_objects,
            cache_synced,
            role_up,
            leader,
        })
    }

    /// The registry, for roles that register their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric, with state gauges refreshed first.
    pub fn render(&self, cache: &Cache, roles: &[RoleState], leading: Option<bool>) -> String {
        for status in cache.status() {
            self.cache_objects
                .with_label_values(&[status.kind])
                .set(status.objects as i64);
            self.cache_synced
                .with_label_values(&[status.kind])
                .set(i64::from(status.synced));
        }
        for role in roles {
            self.role_up
                .with_label_values(&[role.role.as_str()])
                .set(i64::from(*role.up.borrow()));
        }
        self.leader.set(i64::from(leading.unwrap_or(false)));
        let mut out = Vec::new();
        // Encoding into a Vec only fails on a metric with invalid names, which registration rejects.
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(%error, "could not encode metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
