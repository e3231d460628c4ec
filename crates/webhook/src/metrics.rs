//! The webhook's metrics.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Request counts and latency, labelled by check (bounded: nine checks, four operations).
#[derive(Clone)]
pub struct AdmissionMetrics {
    /// `bulkhead_admission_requests_total{webhook,operation,allowed}`.
    pub requests: IntCounterVec,
    /// `bulkhead_admission_duration_seconds{webhook}`: decode to encode.
    pub duration: HistogramVec,
    /// `bulkhead_rule_audits_total{webhook}`: values an `audit` namespace rule matched (admitted).
    pub rule_audits: IntCounterVec,
}

impl AdmissionMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &Registry) -> prometheus::Result<AdmissionMetrics> {
        let m = AdmissionMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "bulkhead_admission_requests_total",
                    "Admission requests answered, by webhook, operation and whether allowed.",
                ),
                &["webhook", "operation", "allowed"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "bulkhead_admission_duration_seconds",
                    "Time to answer an admission request, by webhook.",
                )
                .buckets(vec![
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.01, 0.05,
                ]),
                &["webhook"],
            )?,
            rule_audits: IntCounterVec::new(
                Opts::new(
                    "bulkhead_rule_audits_total",
                    "Values an audit rule of a Tenant's spec.rules matched (admitted and reported), by webhook.",
                ),
                &["webhook"],
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.rule_audits.clone()))?;
        Ok(m)
    }
}
