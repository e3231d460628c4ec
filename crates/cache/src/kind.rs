//! One kind's share of the cache: kube's store, the index beside it, and whether it has synced.

use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::KindStatus;
use crate::index::{Index, Indexed};

/// The annotation `kubectl apply` keeps a whole copy of the object in; never needed, so never cached.
pub(crate) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One kind's store and index, fed by a single watch (or by hand, in tests).
pub struct KindCache<K: Resource<DynamicType = ()> + Clone + 'static, I> {
    shared: Arc<Shared<K, I>>,
}

struct Shared<K: Resource<DynamicType = ()> + Clone + 'static, I> {
    kind: &'static str,
    store: Store<K>,
    writer: Mutex<Writer<K>>,
    index: RwLock<Indexed<I>>,
    /// Whether the store keeps the objects; if not, only the index does (see [`KindCache::index_only`]).
    keep_objects: bool,
    synced: watch::Sender<bool>,
    changes: broadcast::Sender<Change<K>>,
}

/// A change to one object, as the cache tells its subscribers (controllers) about it.
#[derive(Debug)]
pub enum Change<K> {
    /// The object was added or changed (also sent for every object after each full list), with the
    /// `bulkhead.dev/tenant` label of the version the cache held before, if any. Only the label: a
    /// whole previous version would stay alive in the buffer of recent changes long after the store
    /// let it go.
    Applied(Arc<K>, Option<String>),
    /// The object is gone.
    Deleted(Arc<K>),
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied(o, previous) => Change::Applied(o.clone(), previous.clone()),
            Change::Deleted(o) => Change::Deleted(o.clone()),
        }
    }
}

/// How many changes a slow subscriber may fall behind before it is told it lagged, for a kind of a
/// few objects (classes, configurations). Every slot is allocated up front (about 64 bytes each).
const CHANGE_BUFFER: usize = 1_024;

/// The same for the kinds of many objects (Tenants, Namespaces): a relist tells subscribers of every
/// object at once.
const LARGE_CHANGE_BUFFER: usize = 16_384;

impl<K, I> KindCache<K, I>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    I: Index<K> + Send + Sync + 'static,
{
    /// An empty store and index, fed by [`KindCache::apply`] (the watch, or tests and benchmarks).
    pub fn new(kind: &'static str) -> Self {
        Self::build(kind, true, CHANGE_BUFFER)
    }

    /// The same for a kind of many objects, whose subscribers may hear of all of them at once.
    pub fn for_many(kind: &'static str) -> Self {
        Self::build(kind, true, LARGE_CHANGE_BUFFER)
    }

    /// A kind kept as its index alone: the store stays empty, so objects that nothing reads whole
    /// (Ingresses: the webhook reads only which routes serve a host) cost only their index entries.
    pub fn index_only(kind: &'static str) -> Self {
        Self::build(kind, false, CHANGE_BUFFER)
    }

    /// A kind of many objects kept as its index alone, the index holding each object in a compact
    /// form (Namespaces: see [`crate::namespaces`]).
    pub fn index_only_for_many(kind: &'static str) -> Self {
        Self::build(kind, false, LARGE_CHANGE_BUFFER)
    }

    fn build(kind: &'static str, keep_objects: bool, buffer: usize) -> Self {
        let writer = Writer::new(());
        let store = writer.as_reader();
        KindCache {
            shared: Arc::new(Shared {
                kind,
                store,
                writer: Mutex::new(writer),
                index: RwLock::new(Indexed::default()),
                keep_objects,
                synced: watch::Sender::new(false),
                changes: broadcast::Sender::new(buffer),
            }),
        }
    }

    /// Every change from now on. A subscriber that falls behind gets `Lagged` and should resync from
    /// the store.
    pub fn subscribe(&self) -> broadcast::Receiver<Change<K>> {
        self.shared.changes.subscribe()
    }

    /// Applies one watch event to the store and the index, after dropping what is never read
    /// (managedFields and kubectl's last-applied copy), which is most of many objects' size.
    pub fn apply(&self, event: Event<K>) {
        let event = event.modify(|object| {
            object.managed_fields_mut().clear();
            object.annotations_mut().remove(LAST_APPLIED);
        });
        let done = matches!(event, Event::InitDone);
        // Store and index change under one lock so that readers never see one ahead of the other
        // for long; the watch loop is the only writer.
        let previous = match &event {
            Event::Apply(object) if self.shared.keep_objects => self
                .shared
                .store
                .get(&ObjectRef::from_obj(object))
                .and_then(|p| p.labels().get(bulkhead_api::labels::TENANT).cloned()),
            Event::Apply(object) => self.shared.index.read().get().tenant_label(object),
            _ => None,
        };
        let mut writer = self.shared.writer.lock();
        if self.shared.keep_objects {
            writer.apply_watcher_event(&event);
        }
        self.shared.index.write().apply(&event);
        drop(writer);
        // Nobody subscribed is fine. Subscribers get the store's own copy, not one of their own.
        let _ = match event {
            Event::Apply(object) => {
                let stored = self
                    .shared
                    .store
                    .get(&ObjectRef::from_obj(&object))
                    .unwrap_or_else(|| Arc::new(object));
                self.shared.changes.send(Change::Applied(stored, previous))
            }
            Event::Delete(object) => self.shared.changes.send(Change::Deleted(Arc::new(object))),
            Event::InitDone => {
                // A relist may have missed deletions and changes: subscribers hear about everything.
                let all = if self.shared.keep_objects {
                    self.shared.store.state()
                } else {
                    self.shared.index.read().get().all()
                };
                for object in all {
                    let _ = self.shared.changes.send(Change::Applied(object, None));
                }
                Ok(0)
            }
            Event::Init | Event::InitApply(_) => Ok(0),
        };
        if done {
            self.shared.synced.send_replace(true);
        }
    }

    /// The store (read-only).
    pub fn store(&self) -> &Store<K> {
        &self.shared.store
    }

    /// Runs a query against the index.
    pub fn read_index<R>(&self, query: impl FnOnce(&I) -> R) -> R {
        query(self.shared.index.read().get())
    }

    /// Whether the first full list has been received, and how many objects are held.
    pub fn status(&self) -> KindStatus {
        KindStatus {
            kind: self.shared.kind,
            synced: *self.shared.synced.borrow(),
            objects: if self.shared.keep_objects {
                self.shared.store.len()
            } else {
                self.shared.index.read().get().objects()
            },
        }
    }

    /// Waits for the first full list.
    pub async fn wait_synced(&self) {
        let mut synced = self.shared.synced.subscribe();
        // Only fails if the sender is dropped, which cannot happen while `self` holds it.
        let _ = synced.wait_for(|s| *s).await;
    }

    pub(crate) fn spawn_watch(&self, api: Api<K>, config: watcher::Config, shutdown: CancellationToken) {
        let this = KindCache {
            shared: self.shared.clone(),
        };
        spawn_watch(self.shared.kind, api, config, shutdown, move |event| {
            this.apply(event)
        });
    }
}

/// Runs one watch until `shutdown`, handing every event to `apply` and retrying with backoff on errors
/// (each is logged).
pub(crate) fn spawn_watch<K>(
    kind: &'static str,
    api: Api<K>,
    config: watcher::Config,
    shutdown: CancellationToken,
    apply: impl Fn(Event<K>) + Send + 'static,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    tokio::spawn(
        async move {
            let stream = watcher::watcher(api, config).default_backoff();
            let mut stream = std::pin::pin!(stream);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = stream.next() => match next {
                        Some(Ok(event)) => apply(event),
                        Some(Err(error)) => warn!(%error, "watch failed; retrying with backoff"),
                        None => break,
                    },
                }
            }
            debug!("watch stopped");
        }
        .instrument(info_span!("watch", kind)),
    );
}

/// Re-exported so callers can name store lookups without depending on kube-runtime directly.
pub use reflector::ObjectRef;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespaces::NamespaceIndex;
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use kube::api::ObjectMeta;

    #[test]
    fn managed_fields_and_last_applied_are_not_cached_and_sync_is_reported() {
        // Namespaces as the cache keeps them: compact copies in the index alone.
        let cache: KindCache<Namespace, NamespaceIndex> = KindCache::index_only_for_many("Namespace");
        assert!(!cache.status().synced);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some("a".into()),
                managed_fields: Some(vec![ManagedFieldsEntry {
                    manager: Some("kubectl".into()),
                    ..Default::default()
                }]),
                annotations: Some(
                    [
                        (LAST_APPLIED.to_owned(), "{...}".to_owned()),
                        ("keep".to_owned(), "me".to_owned()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(ns));
        assert!(!cache.status().synced);
        cache.apply(Event::InitDone);
        let status = cache.status();
        assert!(status.synced);
        assert_eq!(status.objects, 1);
        assert!(cache.store().is_empty(), "no whole copies");
        let stored = cache.read_index(|index| index.get("a")).unwrap();
        assert_eq!(stored.metadata.managed_fields.as_deref().unwrap_or_default(), []);
        assert_eq!(stored.annotations().len(), 1);
        assert_eq!(stored.annotations()["keep"], "me");
    }

    #[test]
    fn subscribers_hear_of_changes_deletions_and_everything_after_a_relist() {
        for cache in [
            KindCache::new("Namespace"),
            KindCache::index_only_for_many("Namespace"),
        ] {
            heard_of_everything(&cache);
            heard_which_tenant_a_namespace_left(&cache);
        }
    }

    fn ns(name: &str, tenant: Option<&str>) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: tenant.map(|t| [(bulkhead_api::labels::TENANT.to_owned(), t.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn heard_which_tenant_a_namespace_left(cache: &KindCache<Namespace, NamespaceIndex>) {
        let mut changes = cache.subscribe();
        cache.apply(Event::Apply(ns("moving", Some("solar"))));
        cache.apply(Event::Apply(ns("moving", Some("wind"))));
        cache.apply(Event::Apply(ns("moving", None)));
        let mut seen = Vec::new();
        while let Ok(Change::Applied(o, before)) = changes.try_recv() {
            seen.push((o.labels().get(bulkhead_api::labels::TENANT).cloned(), before));
        }
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            seen,
            [(s("solar"), None), (s("wind"), s("solar")), (None, s("wind"))]
        );
        let stored = cache
            .read_index(|index| index.get("moving"))
            .or_else(|| cache.store().get(&ObjectRef::new("moving")))
            .unwrap();
        assert_eq!(stored.labels().get(bulkhead_api::labels::TENANT), None);
    }

    fn heard_of_everything(cache: &KindCache<Namespace, NamespaceIndex>) {
        let mut changes = cache.subscribe();
        let ns = |name: &str| ns(name, None);
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(ns("a")));
        cache.apply(Event::InitApply(ns("b")));
        cache.apply(Event::InitDone);
        cache.apply(Event::Apply(ns("c")));
        cache.apply(Event::Delete(ns("a")));
        let mut seen = Vec::new();
        while let Ok(change) = changes.try_recv() {
            seen.push(match change {
                Change::Applied(o, _) => format!("applied {}", o.name_any()),
                Change::Deleted(o) => format!("deleted {}", o.name_any()),
            });
        }
        seen[..2].sort();
        assert_eq!(seen, ["applied a", "applied b", "applied c", "deleted a"]);
    }
}
