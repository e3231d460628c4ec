//! The controller's metrics.

use bulkhead_api::Tenant;
use kube::ResourceExt;
use prometheus::core::Collector;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

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
    /// `bulkhead_tenant_quota_used{tenant,item,resource}`: usage summed over the tenant's namespaces.
    pub quota_used: GaugeVec,
    /// `bulkhead_tenant_quota_hard{tenant,item,resource}`: the tenant's hard limit.
    pub quota_hard: GaugeVec,
    /// `bulkhead_replication_reconcile_total{kind,result}`.
    pub replication_reconciles: IntCounterVec,
    /// `bulkhead_replication_items{kind,namespace,name,state}`: a replicating resource's items by
    /// state (`applied`, `failed`).
    pub replication_items: IntGaugeVec,
    /// `bulkhead_resource_pool{pool,resource,value}`: a ResourcePool's hard, claimed and available.
    pub resource_pool: GaugeVec,
    /// `bulkhead_resource_pool_claim{namespace,name,pool,condition}`: 1 when a claim is `Bound` or
    /// `InUse`, else 0.
    pub resource_pool_claim: IntGaugeVec,
    /// CustomQuota and GlobalCustomQuota usage, limit and availability, by quota.
    pub custom_quota: GaugeVec,
    /// Each counted object's usage, for quotas with `emitMetricPerClaimUsage`.
    pub custom_quota_item: GaugeVec,
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
            quota_used: GaugeVec::new(
                Opts::new(
                    "bulkhead_tenant_quota_used",
                    "Usage of a tenant quota item, summed over the tenant's namespaces.",
                ),
                &["tenant", "item", "resource"],
            )?,
            quota_hard: GaugeVec::new(
                Opts::new(
                    "bulkhead_tenant_quota_hard",
                    "Hard limit of a tenant quota item (per namespace for scope Namespace).",
                ),
                &["tenant", "item", "resource"],
            )?,
            replication_reconciles: IntCounterVec::new(
                Opts::new(
                    "bulkhead_replication_reconcile_total",
                    "GlobalTenantResource and TenantResource reconciles, by kind and result.",
                ),
                &["kind", "result"],
            )?,
            replication_items: IntGaugeVec::new(
                Opts::new(
                    "bulkhead_replication_items",
                    "Items of a replicating resource, by state (applied, failed).",
                ),
                &["kind", "namespace", "name", "state"],
            )?,
            resource_pool: GaugeVec::new(
                Opts::new(
                    "bulkhead_resource_pool",
                    "A ResourcePool's hard, claimed (bound claims, defaults and use beyond them) and available, per resource.",
                ),
                &["pool", "resource", "value"],
            )?,
            resource_pool_claim: IntGaugeVec::new(
                Opts::new(
                    "bulkhead_resource_pool_claim",
                    "Whether a ResourcePoolClaim is Bound, and InUse (1) or not (0).",
                ),
                &["namespace", "name", "pool", "condition"],
            )?,
            custom_quota: GaugeVec::new(
                Opts::new(
                    "bulkhead_custom_quota",
                    "A CustomQuota's (kind CustomQuota) or GlobalCustomQuota's used, limit and available, in the quota's unit.",
                ),
                &["kind", "namespace", "name", "value"],
            )?,
            custom_quota_item: GaugeVec::new(
                Opts::new(
                    "bulkhead_custom_quota_item_usage",
                    "What one counted object adds to a quota (quotas with emitMetricPerClaimUsage).",
                ),
                &[
                    "kind",
                    "namespace",
                    "name",
                    "target_kind",
                    "target_namespace",
                    "target_name",
                ],
            )?,
        };
        registry.register(Box::new(m.resource_pool.clone()))?;
        registry.register(Box::new(m.resource_pool_claim.clone()))?;
        registry.register(Box::new(m.custom_quota.clone()))?;
        registry.register(Box::new(m.custom_quota_item.clone()))?;
        registry.register(Box::new(m.replication_reconciles.clone()))?;
        registry.register(Box::new(m.replication_items.clone()))?;
        registry.register(Box::new(m.reconciles.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.tenant_namespaces.clone()))?;
        registry.register(Box::new(m.tenant_namespace_quota.clone()))?;
        registry.register(Box::new(m.tenant_ready.clone()))?;
        registry.register(Box::new(m.quota_used.clone()))?;
        registry.register(Box::new(m.quota_hard.clone()))?;
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

    /// Records a replicating resource's items after a reconcile (`None`: it is gone).
    pub fn observe_replication(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        counts: Option<(usize, usize)>,
    ) {
        for (state, n) in [("applied", counts.map(|c| c.0)), ("failed", counts.map(|c| c.1))] {
            match n {
                Some(n) => self
                    .replication_items
                    .with_label_values(&[kind, namespace, name, state])
                    .set(n as i64),
                None => {
                    let _ = self
                        .replication_items
                        .remove_label_values(&[kind, namespace, name, state]);
                }
            }
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

    /// Records a tenant's quota items: their hard limits and the usage summed over its namespaces.
    pub fn observe_quota(&self, tenant: &Tenant, usage: &bulkhead_policy::desired::QuotaUsage) {
        let name = tenant.name_any();
        let items = tenant
            .spec
            .resource_quotas
            .as_ref()
            .map(|q| q.items.as_slice())
            .unwrap_or_default();
        for (index, item) in items.iter().enumerate() {
            let index_label = index.to_string();
            for (resource, hard) in item.hard.iter().flatten() {
                let millis = |q: &str| bulkhead_policy::quota::parse_millis(q).map(|m| m as f64 / 1000.0);
                if let Some(h) = millis(&hard.0) {
                    self.quota_hard
                        .with_label_values(&[&name, &index_label, resource])
                        .set(h);
                }
                let used: f64 = usage
                    .iter()
                    .filter(|((_, i), _)| *i == index)
                    .filter_map(|(_, used)| used.get(resource).and_then(|q| millis(&q.0)))
                    .sum();
                self.quota_used
                    .with_label_values(&[&name, &index_label, resource])
                    .set(used);
            }
        }
    }

    /// Drops a deleted tenant's gauges.
    pub fn forget_tenant(&self, tenant: &str) {
        for gauge in [&self.quota_used, &self.quota_hard] {
            let series: Vec<std::collections::HashMap<String, String>> = gauge
                .collect()
                .iter()
                .flat_map(|family| family.get_metric().iter())
                .map(|m| {
                    m.get_label()
                        .iter()
                        .map(|l| (l.name().to_owned(), l.value().to_owned()))
                        .collect()
                })
                .collect();
            for labels in series
                .iter()
                .filter(|l| l.get("tenant").map(String::as_str) == Some(tenant))
            {
                let refs: std::collections::HashMap<&str, &str> =
                    labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let _ = gauge.remove(&refs);
            }
        }
        let _ = self.tenant_namespaces.remove_label_values(&[tenant]);
        let _ = self.tenant_ready.remove_label_values(&[tenant]);
        let _ = self.tenant_namespace_quota.remove_label_values(&[tenant]);
    }
}

#[allow(clippy::panic)]
fn unreachable_registry() -> ! {
    panic!("a fresh registry rejected the controller's metrics")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn quota_gauges_sum_usage_per_item_and_go_with_the_tenant() {
        let m = ControllerMetrics::unregistered();
        let tenant: Tenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "t"},
            "spec": {"resourceQuotas": {"items": [{"hard": {"pods": "10", "requests.cpu": "2"}}]}},
        }))
        .unwrap();
        let used = |pods: &str| [("pods".to_owned(), Quantity(pods.into()))].into();
        let usage: bulkhead_policy::desired::QuotaUsage =
            [(("a".to_owned(), 0), used("3")), (("b".to_owned(), 0), used("4"))].into();
        m.observe_quota(&tenant, &usage);
        assert_eq!(m.quota_used.with_label_values(&["t", "0", "pods"]).get(), 7.0);
        assert_eq!(m.quota_hard.with_label_values(&["t", "0", "pods"]).get(), 10.0);
        assert_eq!(
            m.quota_hard.with_label_values(&["t", "0", "requests.cpu"]).get(),
            2.0
        );
        m.forget_tenant("t");
        assert!(m.quota_used.collect()[0].get_metric().is_empty());
        assert!(m.quota_hard.collect()[0].get_metric().is_empty());
    }
}
