//! Watches on kinds known only at run time (replication's sources and copies), as change signals.
//!
//! Only metadata is watched (`PartialObjectMeta`), and nothing is stored: the caller is told what
//! changed after the initial list and reads what it needs itself.

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::core::ApiResource;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Watches the metadata of one kind (in `namespace`, or everywhere) until `stop`, calling `on_change`
/// with each object added, changed (`false`) or deleted (`true`) after the initial list. Retries with
/// backoff on errors.
pub fn watch_metadata(
    client: Client,
    resource: ApiResource,
    namespace: Option<String>,
    selector: Option<String>,
    stop: CancellationToken,
    mut on_change: impl FnMut(&PartialObjectMeta<DynamicObject>, bool) + Send + 'static,
) {
    tokio::spawn(async move {
        let api: Api<PartialObjectMeta<DynamicObject>> = match &namespace {
            Some(ns) => Api::namespaced_with(client, ns, &resource),
            None => Api::all_with(client, &resource),
        };
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
                Some(Ok(Event::Apply(o))) if listed => on_change(&o, false),
                Some(Ok(Event::Delete(o))) if listed => on_change(&o, true),
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    debug!(%error, kind = %resource.kind, namespace = ?namespace, "watch failed; retrying")
                }
            }
        }
    });
}
