//! The objects CustomQuotas count, for the controller: one watch per kind a quota names (kinds are
//! known only at run time), each object kept as a [`Projection`] (its labels and what the quotas'
//! paths find in it), not whole. A Pod counted by its CPU requests costs its name, labels and a few
//! strings.
//!
//! When the paths a kind is read at change (a quota is added or edited), its watch starts again and
//! lists every object anew; a kind no quota names any more is no longer watched.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bulkhead_policy::custom_quota::{Gvk, JsonPath, Projection};
use futures::StreamExt;
use kube::api::{Api, DynamicObject, GroupVersionKind};
use kube::core::ApiResource;
use kube::discovery::Scope;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use kube::{Client, ResourceExt};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// One object of a counted kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Counted {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// Its labels and what the paths find.
    pub projection: Projection,
}

/// How a counted kind is watched.
#[derive(Clone, Debug, PartialEq)]
pub enum KindState {
    /// Watched; `synced` once the first list is in.
    Watched {
        /// The resource (plural) the kind is served as.
        resource: String,
        /// Whether the first list is in.
        synced: bool,
        /// The last error of the watch (a 403 says what RBAC is missing), cleared by the next list.
        error: Option<String>,
    },
    /// Not watched, and why (not served, cluster-scoped).
    Unavailable(String),
}

struct KindWatch {
    paths: Vec<JsonPath>,
    resource: Option<ApiResource>,
    unavailable: Option<String>,
    objects: Arc<RwLock<HashMap<String, Counted>>>,
    synced: Arc<AtomicBool>,
    error: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
}

/// The counted kinds' objects.
#[derive(Clone, Default)]
pub struct QuotaSources {
    kinds: Arc<Mutex<BTreeMap<Gvk, KindWatch>>>,
    changed: Arc<Notify>,
    /// The uids of objects seen deleted lately (their reservations can go).
    deleted: Arc<Mutex<HashMap<String, std::time::Instant>>>,
}

/// How long a deletion is remembered: longer than a reservation lives.
const DELETED_MEMORY: std::time::Duration = std::time::Duration::from_secs(180);

impl QuotaSources {
    /// Woken after each change to a counted object (and after each list).
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// Watches exactly the kinds in `wanted`, each read at its paths: starts the new ones (asking
    /// discovery what each is served as), starts again those whose paths changed, stops the rest.
    pub async fn ensure(
        &self,
        client: &Client,
        wanted: &BTreeMap<Gvk, Vec<JsonPath>>,
        stop: &CancellationToken,
    ) {
        let stale: Vec<Gvk> = {
            let mut kinds = self.kinds.lock();
            kinds.retain(|gvk, watch| {
                let keep = wanted.get(gvk).is_some_and(|p| *p == watch.paths);
                if !keep {
                    watch.stop.cancel();
                }
                keep
            });
            wanted
                .keys()
                .filter(|g| !kinds.contains_key(*g))
                .cloned()
                .collect()
        };
        for gvk in stale {
            let paths = wanted[&gvk].clone();
            let found = kube::discovery::pinned_kind(
                client,
                &GroupVersionKind::gvk(&gvk.group, &gvk.version, &gvk.kind),
            )
            .await;
            let (resource, unavailable) = match found {
                Ok((resource, caps)) if caps.scope == Scope::Namespaced => (Some(resource), None),
                Ok(_) => (
                    None,
                    Some(format!(
                        "{} is cluster-scoped; quotas count namespaced kinds",
                        gvk.kind
                    )),
                ),
                Err(e) => (
                    None,
                    Some(format!("{} {} is not served: {e}", gvk.api_version(), gvk.kind)),
                ),
            };
            let watch = KindWatch {
                paths,
                resource,
                unavailable,
                objects: Arc::default(),
                synced: Arc::default(),
                error: Arc::default(),
                stop: stop.child_token(),
            };
            if let Some(resource) = &watch.resource {
                self.spawn(client.clone(), resource.clone(), &watch);
            }
            self.kinds.lock().insert(gvk, watch);
        }
        self.changed.notify_one();
    }

    fn spawn(&self, client: Client, resource: ApiResource, watch_state: &KindWatch) {
        let objects = watch_state.objects.clone();
        let synced = watch_state.synced.clone();
        let error = watch_state.error.clone();
        let stop = watch_state.stop.clone();
        let paths = watch_state.paths.clone();
        let changed = self.changed.clone();
        let deleted = self.deleted.clone();
        let forget = move |uids: Vec<String>| {
            let mut deleted = deleted.lock();
            let now = std::time::Instant::now();
            deleted.retain(|_, at| now.duration_since(*at) < DELETED_MEMORY);
            for uid in uids {
                deleted.insert(uid, now);
            }
        };
        tokio::spawn(async move {
            let api: Api<DynamicObject> = Api::all_with(client, &resource);
            let mut stream = watch(api, watcher::Config::default()).default_backoff().boxed();
            let mut listing: HashMap<String, Counted> = HashMap::new();
            let counted = |o: &DynamicObject| -> Option<Counted> {
                let value = serde_json::to_value(o).ok()?;
                Some(Counted {
                    namespace: o.namespace().unwrap_or_default(),
                    name: o.name_any(),
                    uid: o.uid()?,
                    projection: Projection::of(&value, &paths),
                })
            };
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    next = stream.next() => next,
                };
                match next {
                    None => return,
                    Some(Ok(Event::Init)) => listing.clear(),
                    Some(Ok(Event::InitApply(o))) => {
                        if let Some(c) = counted(&o) {
                            listing.insert(c.uid.clone(), c);
                        }
                    }
                    Some(Ok(Event::InitDone)) => {
                        let listed = std::mem::take(&mut listing);
                        // What a relist no longer has was deleted meanwhile.
                        let gone: Vec<String> = objects
                            .read()
                            .keys()
                            .filter(|uid| !listed.contains_key(*uid))
                            .cloned()
                            .collect();
                        forget(gone);
                        *objects.write() = listed;
                        synced.store(true, Ordering::Release);
                        *error.lock() = None;
                        changed.notify_one();
                    }
                    Some(Ok(Event::Apply(o))) => {
                        if let Some(c) = counted(&o) {
                            objects.write().insert(c.uid.clone(), c);
                            changed.notify_one();
                        }
                    }
                    Some(Ok(Event::Delete(o))) => {
                        if let Some(uid) = o.uid() {
                            objects.write().remove(&uid);
                            forget(vec![uid]);
                            changed.notify_one();
                        }
                    }
                    Some(Err(e)) => {
                        let message = e.to_string();
                        debug!(error = %message, kind = %resource.kind, "counted kind's watch failed; retrying");
                        let first = error.lock().replace(message.clone()).is_none();
                        if first {
                            warn!(error = %message, kind = %resource.kind, "cannot watch a kind CustomQuotas count");
                            changed.notify_one();
                        }
                    }
                }
            }
        });
    }

    /// Whether an object with this uid was seen deleted (in the last few minutes).
    pub fn was_deleted(&self, uid: &str) -> bool {
        self.deleted.lock().contains_key(uid)
    }

    /// How `gvk` is watched, `None` if it is not asked for.
    pub fn state(&self, gvk: &Gvk) -> Option<KindState> {
        let kinds = self.kinds.lock();
        let watch = kinds.get(gvk)?;
        Some(match (&watch.resource, &watch.unavailable) {
            (Some(resource), _) => KindState::Watched {
                resource: resource.plural.clone(),
                synced: watch.synced.load(Ordering::Acquire),
                error: watch.error.lock().clone(),
            },
            (None, reason) => KindState::Unavailable(reason.clone().unwrap_or_default()),
        })
    }

    /// The objects of `gvk` in the namespaces `selects` accepts, by namespace and name.
    pub fn objects(&self, gvk: &Gvk, selects: impl Fn(&str) -> bool) -> Vec<Counted> {
        let objects = {
            let kinds = self.kinds.lock();
            match kinds.get(gvk) {
                Some(w) => w.objects.clone(),
                None => return Vec::new(),
            }
        };
        let mut out: Vec<Counted> = objects
            .read()
            .values()
            .filter(|c| selects(&c.namespace))
            .cloned()
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// Feeds an object by hand (tests): as if the watch of `gvk`, read at `paths`, had seen it.
    pub fn insert_for_test(&self, gvk: &Gvk, paths: &[JsonPath], resource: &str, counted: Counted) {
        let mut kinds = self.kinds.lock();
        let watch = kinds.entry(gvk.clone()).or_insert_with(|| KindWatch {
            paths: paths.to_vec(),
            resource: Some(ApiResource {
                group: gvk.group.clone(),
                version: gvk.version.clone(),
                api_version: gvk.api_version(),
                kind: gvk.kind.clone(),
                plural: resource.to_owned(),
            }),
            unavailable: None,
            objects: Arc::default(),
            synced: Arc::new(AtomicBool::new(true)),
            error: Arc::default(),
            stop: CancellationToken::new(),
        });
        watch.objects.write().insert(counted.uid.clone(), counted);
    }
}
