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

/// What a metadata watch reports.
#[derive(Debug, Clone, Copy)]
pub enum MetadataEvent<'a> {
    /// An object of a (re)list: it existed when the watch (re)started.
    Listed(&'a PartialObjectMeta<DynamicObject>),
    /// The (re)list is complete: what was not listed does not exist.
    ListDone,
    /// An object added or changed after the list.
    Applied(&'a PartialObjectMeta<DynamicObject>),
    /// An object deleted after the list.
    Deleted(&'a PartialObjectMeta<DynamicObject>),
}

/// Watches the metadata of one kind (in `namespace`, or everywhere) until `stop`, calling `on_event`
/// with every object of the initial list (and of each relist after an error), the end of each list,
/// and each change after it. Retries with backoff on errors.
///
/// A watch starts some time after whatever made a caller want it: the list tells what happened in
/// between (a real API server is slow enough for that to matter).
pub fn watch_metadata(
    client: Client,
    resource: ApiResource,
    namespace: Option<String>,
    selector: Option<String>,
    stop: CancellationToken,
    mut on_event: impl FnMut(MetadataEvent<'_>) + Send + 'static,
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
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = stream.next() => next,
            };
            match next {
                None => return,
                Some(Ok(Event::Init)) => {}
                Some(Ok(Event::InitApply(o))) => on_event(MetadataEvent::Listed(&o)),
                Some(Ok(Event::InitDone)) => on_event(MetadataEvent::ListDone),
                Some(Ok(Event::Apply(o))) => on_event(MetadataEvent::Applied(&o)),
                Some(Ok(Event::Delete(o))) => on_event(MetadataEvent::Deleted(&o)),
                Some(Err(error)) => {
                    debug!(%error, kind = %resource.kind, namespace = ?namespace, "watch failed; retrying")
                }
            }
        }
    });
}
