//! The proxy's Prometheus metrics.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Request counts, latency, TokenReview cache use and open watches.
#[derive(Clone)]
pub struct ProxyMetrics {
    pub(crate) requests: IntCounterVec,
    pub(crate) duration: HistogramVec,
    pub(crate) token_cache: IntCounterVec,
    pub(crate) open_watches: IntGauge,
    /// Requests the proxy sent to the API server (as the caller or as Bulkhead).
    pub upstream: IntCounter,
}

impl ProxyMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &Registry) -> prometheus::Result<ProxyMetrics> {
        let m = ProxyMetrics::unregistered()?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.token_cache.clone()))?;
        registry.register(Box::new(m.open_watches.clone()))?;
        registry.register(Box::new(m.upstream.clone()))?;
        Ok(m)
    }

    /// The metrics, registered nowhere (tests, benchmarks).
    pub fn unregistered() -> prometheus::Result<ProxyMetrics> {
        Ok(ProxyMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "bulkhead_proxy_requests_total",
                    "Requests answered by the proxy, by route class (filtered, passthrough, upgrade, \
                     rejected) and HTTP status code.",
                ),
                &["route", "code"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "bulkhead_proxy_request_duration_seconds",
                    "Time until the response headers were sent, by route class.",
                )
                .buckets(vec![
                    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ]),
                &["route"],
            )?,
            token_cache: IntCounterVec::new(
                Opts::new(
                    "bulkhead_proxy_token_cache_total",
                    "Bearer token lookups, by result: hit (answered from the cache) or miss (a TokenReview).",
                ),
                &["result"],
            )?,
            open_watches: IntGauge::new(
                "bulkhead_proxy_open_watches",
                "Watches the proxy is serving right now.",
            )?,
            upstream: IntCounter::new(
                "bulkhead_proxy_upstream_requests_total",
                "Requests the proxy sent to the API server, as the caller or as Bulkhead.",
            )?,
        })
    }
}

/// Counts an open watch for as long as it lives.
pub(crate) struct WatchGuard(IntGauge);

impl WatchGuard {
    pub(crate) fn new(gauge: &IntGauge) -> WatchGuard {
        gauge.inc();
        WatchGuard(gauge.clone())
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
