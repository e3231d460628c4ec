//! The process's Prometheus registry. Gauges that mirror state (cache sizes, readiness, leadership)
//! are read from their source at scrape time, so they can never go stale.

use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::admin::RoleState;
use bulkhead_cache::Cache;

/// Bulkhead's metrics.
pub struct Metrics {
    registry: Registry,
    cache_objects: IntGaugeVec,
    cache_synced: IntGaugeVec,
    role_up: IntGaugeVec,
    leader: IntGauge,
    api_requests: IntCounterVec,
    tasks: IntGauge,
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
        let api_requests = IntCounterVec::new(
            Opts::new(
                "bulkhead_api_requests_total",
                "Requests this process's shared client sent to the API server, by verb and resource.",
            ),
            &["verb", "resource"],
        )?;
        let tasks = IntGauge::new(
            "bulkhead_tokio_alive_tasks",
            "Tasks alive on the process's runtime (every watch, connection and reconcile is one): a number that only grows is a leak.",
        )?;
        registry.register(Box::new(build))?;
        registry.register(Box::new(api_requests.clone()))?;
        registry.register(Box::new(tasks.clone()))?;
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
            api_requests,
            tasks,
        })
    }

    /// Counts one request of the shared client (see [`request_labels`]).
    pub fn count_request(&self, method: &http::Method, uri: &http::Uri) {
        let (verb, resource) = request_labels(method, uri);
        self.api_requests.with_label_values(&[verb, &resource]).inc();
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
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.tasks
                .set(i64::try_from(runtime.metrics().num_alive_tasks()).unwrap_or(i64::MAX));
        }
        let mut out = Vec::new();
        // Encoding into a Vec only fails on a metric with invalid names, which registration rejects.
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(%error, "could not encode metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A request's verb (`GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `DELETE`) and resource (`pods`,
/// `tenants/status`; `other` for discovery and the like), read off its path as the API server routes it.
pub fn request_labels(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let watch = uri.query().is_some_and(|q| {
        q.split('&').any(|p| {
            matches!(
                p,
                "watch=true" | "watch=1" | "watch=True" | "watch=t" | "watch=T" | "watch=TRUE"
            )
        })
    });
    let verb = match *method {
        http::Method::GET if watch => "WATCH",
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        _ => "OTHER",
    };
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[][..],
    };
    let rest = match rest {
        ["namespaces", _ns, kind, more @ ..] => std::iter::once(*kind)
            .chain(more.iter().copied())
            .collect::<Vec<_>>(),
        other => other.to_vec(),
    };
    let resource = match rest.as_slice() {
        [] => "other".to_owned(),
        [kind] | [kind, _] => (*kind).to_owned(),
        [kind, _, sub, ..] => format!("{kind}/{sub}"),
    };
    // A GET of a collection is a list, as the API server counts it: what a relist shows up as.
    let verb = if verb == "GET" && rest.len() == 1 {
        "LIST"
    } else {
        verb
    };
    (verb, resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_labelled_by_verb_and_resource_as_routed() {
        let label = |m: http::Method, u: &str| {
            let (verb, resource) = request_labels(&m, &u.parse().unwrap());
            format!("{verb} {resource}")
        };
        assert_eq!(label(http::Method::GET, "/api/v1/namespaces"), "LIST namespaces");
        assert_eq!(label(http::Method::GET, "/api/v1/namespaces/a"), "GET namespaces");
        assert_eq!(
            label(
                http::Method::GET,
                "/apis/rbac.authorization.k8s.io/v1/namespaces/a/rolebindings"
            ),
            "LIST rolebindings"
        );
        assert_eq!(
            label(http::Method::PATCH, "/api/v1/namespaces/a"),
            "PATCH namespaces"
        );
        assert_eq!(
            label(
                http::Method::PATCH,
                "/apis/rbac.authorization.k8s.io/v1/namespaces/a/rolebindings/b"
            ),
            "PATCH rolebindings"
        );
        assert_eq!(
            label(
                http::Method::PATCH,
                "/apis/bulkhead.dev/v1alpha1/tenants/t/status"
            ),
            "PATCH tenants/status"
        );
        assert_eq!(
            label(
                http::Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/d/leases?watch=true&x=1"
            ),
            "WATCH leases"
        );
        assert_eq!(label(http::Method::GET, "/api/v1/pods?watch=false"), "LIST pods");
        assert_eq!(label(http::Method::GET, "/apis"), "GET other");
        assert_eq!(label(http::Method::GET, "/version"), "GET other");
    }
}
