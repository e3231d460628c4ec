//! The controller's metrics.

use bulkhead_api::Tenant;
use kube::ResourceExt;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Reconcile counts and durations, and per-tenant gauges (labelled by tenant name only).
#[derive(Clone)]
pub struct ControllerMetrics {
    /// `bulkhead_reconcile_total{result}`.
    pub reconciles: IntCounterVec,
    /// `bulkhead_reconcile_duration_seconds{result}`.
    pub duration: HistogramVec,
    /// `bulkhead_tenant_namespaces{tenant}`.
    pub tenant_namespaces: IntGaugeVec,
    /// `bulkhead_tenant_namespace_quota{tenant}` (absent when unlimited).
    pub tenant_namespace_quota: IntGaugeVec,
    /// `bulkhead_tenant_ready{tenant}`.
    pub tenant_ready: IntGaugeVec,
}

impl ControllerMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &Registry) -> prometheus::Result<ControllerMetrics> {
        let m = ControllerMetrics {
            reconciles: IntCounterVec::new(
                Opts::new("bulkhead_reconcile_total", "Tenant reconciles, by result."),
                &["result"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "bulkhead_reconcile_duration_seconds",
                    "Time to reconcile one Tenant, by result.",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
                &["result"],
            )?,
            tenant_namespaces: IntGaugeVec::new(
                Opts::new("bulkhead_tenant_namespaces", "Namespaces of a tenant."),
                &["tenant"],
            )?,
            tenant_namespace_quota: IntGaugeVec::new(
                Opts::new(
                    "bulkhead_tenant_namespace_quota",
                    "How many namespaces a tenant may have.",
                ),
                &["tenant"],
            )?,
            tenant_ready: IntGaugeVec::new(
                Opts::new(
                    "bulkhead_tenant_ready",
                    "1 while a tenant's Ready condition is true.",
                ),
                &["tenant"],
            )?,
        };
        registry.register(Box::new(m.reconciles.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.tenant_namespaces.clone()))?;
        registry.register(Box::new(m.tenant_namespace_quota.clone()))?;
        registry.register(Box::new(m.tenant_ready.clone()))?;
        Ok(m)
    }

    /// Metrics that are not exported anywhere (for tests).
    pub fn unregistered() -> ControllerMetrics {
        // Registering into a fresh registry cannot collide.
        match Self::register(&Registry::new()) {
            Ok(m) => m,
            Err(_) => unreachable_registry(),
        }
    }

    /// Records a tenant's gauges after a reconcile.
    pub fn observe_tenant(&self, tenant: &Tenant, namespaces: usize, ready: bool) {
        let name = tenant.name_any();
        self.tenant_namespaces
            .with_label_values(&[&name])
            .set(namespaces as i64);
        self.tenant_ready
            .with_label_values(&[&name])
            .set(i64::from(ready));
        match tenant.spec.namespace_options.as_ref().and_then(|o| o.quota) {
            Some(quota) => self
                .tenant_namespace_quota
                .with_label_values(&[&name])
                .set(i64::from(quota)),
            None => {
                let _ = self.tenant_namespace_quota.remove_label_values(&[&name]);
            }
        }
    }

    /// Drops a deleted tenant's gauges.
    pub fn forget_tenant(&self, tenant: &str) {
        let _ = self.tenant_namespaces.remove_label_values(&[tenant]);
        let _ = self.tenant_ready.remove_label_values(&[tenant]);
        let _ = self.tenant_namespace_quota.remove_label_values(&[tenant]);
    }
}

#[allow(clippy::panic)]
fn unreachable_registry() -> ! {
    panic!("a fresh registry rejected the controller's metrics")
}
