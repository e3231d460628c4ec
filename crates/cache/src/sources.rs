//! Watches on kinds known only at run time (the sources of replication), as change signals.
//!
//! Only metadata is watched (`PartialObjectMeta`), and nothing is stored: a subscriber is told
//! that something in (kind, namespace) changed and reads what it needs itself.

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::core::ApiResource;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Watches one kind in one namespace (optionally by label selector) until `stop`, sending `key` on
/// `changes` for every change after the initial list. Retries with backoff on errors.
pub fn watch_changes<T: Clone + Send + 'static>(
    client: Client,
    resource: ApiResource,
    namespace: String,
    selector: Option<String>,
    key: T,
    changes: broadcast::Sender<T>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        // Metadata only: the API server sends no object bodies.
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::namespaced_with(client, &namespace, &resource);
        let mut config = watcher::Config::default();
        if let Some(s) = &selector {
            config = config.labels(s);
        }
        let mut stream = watch(api, config).default_backoff().boxed();
        let mut listed = false;
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = stream.next() => next,
            };
            match next {
                None => return,
                Some(Ok(Event::InitDone)) => listed = true,
                Some(Ok(Event::Apply(_) | Event::Delete(_))) if listed => {
                    // Nobody listening right now is fine.
                    let _ = changes.send(key.clone());
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    debug!(%error, kind = %resource.kind, %namespace, "source watch failed; retrying")
                }
            }
        }
    });
}
