//! Denials become Kubernetes Events on the Tenant, rate-limited so a client retrying in a loop cannot
//! flood the API server: at most [`BURST`] per tenant per [`WINDOW`], the rest are counted and dropped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bulkhead_api::Tenant;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use bulkhead_cache::Cache;

/// Events per tenant per window.
pub const BURST: u32 = 5;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Denials waiting to be recorded; beyond it they are dropped (the webhook never waits on Events).
const QUEUE: usize = 1024;

/// Per-tenant fixed-window limiter; pure, with the clock passed in.
#[derive(Debug, Default)]
pub struct Limiter {
    windows: HashMap<String, (Instant, u32)>,
}

impl Limiter {
    /// Whether one more Event for `tenant` may be sent at `now`.
    pub fn allow(&mut self, tenant: &str, now: Instant) -> bool {
        if self.windows.len() > 10_000 {
            self.windows
                .retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = self.windows.entry(tenant.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        if entry.1 < BURST {
            entry.1 += 1;
            true
        } else {
            false
        }
    }
}

/// Where handlers drop denials; cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct Denials {
    tx: Option<mpsc::Sender<(String, &'static str, String)>>,
}

impl Denials {
    /// A sink that records nothing (tests, `bulkhead check`).
    pub fn discard() -> Denials {
        Denials { tx: None }
    }

    /// Queues a denial by `tenant`'s rules; `reason` is the Event's reason (one per check family, so
    /// that Kubernetes folds repeats of one kind of denial, not every denial, into one series).
    pub fn record(&self, tenant: &str, reason: &'static str, message: &str) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send((tenant.to_owned(), reason, message.to_owned()));
        }
    }

    /// Starts the recorder task: Events are published with Bulkhead's own credentials.
    pub fn start(client: Client, cache: Cache, shutdown: CancellationToken) -> Denials {
        let (tx, mut rx) = mpsc::channel::<(String, &'static str, String)>(QUEUE);
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: "bulkhead-webhook".into(),
                instance: None,
            },
        );
        tokio::spawn(async move {
            let mut limiter = Limiter::default();
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = rx.recv() => next,
                };
                let Some((tenant, reason, message)) = next else {
                    return;
                };
                if !limiter.allow(&tenant, Instant::now()) {
                    continue;
                }
                let Some(object) = cache.tenant(&tenant) else {
                    continue;
                };
                let event = Event {
                    type_: EventType::Warning,
                    reason: reason.into(),
                    note: Some(message.chars().take(1000).collect()),
                    action: "Admission".into(),
                    secondary: None,
                };
                let reference = Tenant::object_ref(&object, &());
                if let Err(error) = recorder.publish(&event, &reference).await {
                    debug!(%error, "cannot record a denial Event");
                }
            }
        });
        Denials { tx: Some(tx) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_of_denials_yields_a_burst_per_window_per_tenant() {
        let mut limiter = Limiter::default();
        let t0 = Instant::now();
        let sent = (0..100).filter(|_| limiter.allow("solar", t0)).count();
        assert_eq!(sent, BURST as usize);
        assert!(limiter.allow("wind", t0), "tenants have separate budgets");
        assert!(!limiter.allow("solar", t0 + WINDOW / 2));
        assert!(limiter.allow("solar", t0 + WINDOW));
    }
}
