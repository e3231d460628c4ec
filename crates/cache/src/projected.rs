//! The objects Bulkhead creates in tenant namespaces (RoleBindings, ResourceQuotas, LimitRanges,
//! NetworkPolicies), kept as projections instead of whole objects.
//!
//! The controller never reads these objects' contents: it asks whether each one is still as it applied
//! it, which tenant it belongs to, and (for quotas) its limits and usage. So the cache keeps, per
//! object, about a hundred bytes: interned names, the tenant label and owner, a digest of the
//! content, the digest of the configuration Bulkhead last applied (from the [`labels::APPLIED`]
//! annotation) and whether another writer changed it since ([`Owned::touched`]). At 70,000 objects
//! that is a few MiB where whole objects took well over 100 MiB.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bulkhead_api::labels;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::KindStatus;
use crate::kind::LAST_APPLIED;

/// What the cache keeps of one object Bulkhead owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owned {
    /// Its namespace.
    pub namespace: Arc<str>,
    /// Its name.
    pub name: Arc<str>,
    /// Its `bulkhead.dev/tenant` label.
    pub tenant: Option<Arc<str>>,
    /// The Tenant a `bulkhead.dev` ownerReference names.
    pub owner: Option<Arc<str>>,
    /// The digest in its [`labels::APPLIED`] annotation: what Bulkhead last applied to it.
    pub applied: Option<u64>,
    /// A digest of what a writer can change in it (see [`content_digest`]).
    pub content: u64,
    /// Its resourceVersion, when it is a number (as etcd's revisions are).
    pub version: Option<u64>,
    /// Whether someone other than Bulkhead changed it (not its status) since Bulkhead last applied it,
    /// or Bulkhead never applied it: read from its managedFields.
    pub touched: bool,
    /// A ResourceQuota's limits and usage.
    pub quota: Option<Box<QuotaState>>,
}

/// A ResourceQuota's `spec.hard` and `status.used`, packed (a map per quota cost over a kilobyte).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaState {
    hard: Packed,
    used: Option<Packed>,
}

type Packed = Box<[(Box<str>, Box<str>)]>;

fn pack(map: &BTreeMap<String, Quantity>) -> Packed {
    map.iter()
        .map(|(k, v)| (Box::from(k.as_str()), Box::from(v.0.as_str())))
        .collect()
}

fn unpack(packed: &Packed) -> BTreeMap<String, Quantity> {
    packed
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

impl QuotaState {
    /// From `spec.hard` and `status.used` (absent until the quota controller writes it).
    pub fn new(hard: &BTreeMap<String, Quantity>, used: Option<&BTreeMap<String, Quantity>>) -> QuotaState {
        QuotaState {
            hard: pack(hard),
            used: used.map(pack),
        }
    }

    /// `spec.hard`.
    pub fn hard(&self) -> BTreeMap<String, Quantity> {
        unpack(&self.hard)
    }

    /// `status.used`, once the quota controller has written it.
    pub fn used(&self) -> Option<BTreeMap<String, Quantity>> {
        self.used.as_ref().map(unpack)
    }
}

/// A kind the controller owns objects of.
pub trait OwnedKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The quota state, for ResourceQuotas.
    fn quota_state(&self) -> Option<QuotaState> {
        None
    }
}

impl OwnedKind for RoleBinding {}
impl OwnedKind for LimitRange {}
impl OwnedKind for NetworkPolicy {}
impl OwnedKind for ResourceQuota {
    fn quota_state(&self) -> Option<QuotaState> {
        let none = BTreeMap::new();
        Some(QuotaState::new(
            self.spec.as_ref().and_then(|s| s.hard.as_ref()).unwrap_or(&none),
            self.status.as_ref().and_then(|s| s.used.as_ref()),
        ))
    }
}

/// A change, as subscribers hear of it: the tenant the object belongs to now and, if it moved, before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedChange {
    /// The tenant label now (of a deleted object: its last).
    pub tenant: Option<Arc<str>>,
    /// The tenant label before this change, when it differs.
    pub before: Option<Arc<str>>,
    /// The object as it is now, for a change to one object (not a deletion, not a relist): with
    /// [`OwnedChange::usage_changed`], what a subscriber needs to tell the echo of its own write.
    pub object: Option<Arc<Owned>>,
    /// Whether a quota's usage (`status.used`) changed (or, for a deletion, always).
    pub usage_changed: bool,
    /// Whether the object was deleted ([`OwnedChange::object`] is then its last state).
    pub deleted: bool,
}

impl OwnedChange {
    fn of_tenant(tenant: Arc<str>) -> OwnedChange {
        OwnedChange {
            tenant: Some(tenant),
            before: None,
            object: None,
            usage_changed: false,
            deleted: false,
        }
    }
}

/// One copy of each name in use: the same namespace and tenant names recur in every object.
#[derive(Debug, Default)]
pub struct Interner {
    names: Mutex<HashSet<Arc<str>>>,
}

impl Interner {
    /// The shared copy of `name`.
    pub fn get(&self, name: &str) -> Arc<str> {
        let mut names = self.names.lock();
        if let Some(found) = names.get(name) {
            return found.clone();
        }
        let shared: Arc<str> = Arc::from(name);
        names.insert(shared.clone());
        shared
    }

    /// Forgets names nothing holds any more.
    pub fn prune(&self) {
        self.names.lock().retain(|n| Arc::strong_count(n) > 1);
    }
}

/// FNV-1a over a value's canonical JSON (object keys sorted).
pub fn digest(value: &Value) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in value.to_string().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Puts the digest of `patch` (a configuration to apply) in its [`labels::APPLIED`] annotation, the
/// form [`project`] reads back, and returns it.
pub fn stamp_applied(patch: &mut Value) -> u64 {
    let config = digest(patch);
    patch["metadata"]["annotations"][labels::APPLIED] = Value::String(format!("{config:016x}"));
    config
}

/// The digest an object's [`labels::APPLIED`] annotation carries.
pub fn applied_digest(meta: &ObjectMeta) -> Option<u64> {
    meta.annotations
        .as_ref()?
        .get(labels::APPLIED)
        .and_then(|d| u64::from_str_radix(d, 16).ok())
}

/// A resourceVersion as a number, when it is one (as etcd's revisions are).
pub fn version(resource_version: Option<&str>) -> Option<u64> {
    resource_version.and_then(|v| v.parse().ok())
}

/// The digest of what a writer can change in an object: everything but its status and the metadata
/// the API server keeps (uid, resourceVersion, managedFields, timestamps), Bulkhead's own
/// [`labels::APPLIED`] annotation and kubectl's last-applied copy. Two versions with the same digest
/// differ in nothing Bulkhead applies.
pub fn content_digest<K: Serialize + Resource>(object: &K) -> u64 {
    let Ok(mut value) = serde_json::to_value(object) else {
        return 0;
    };
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.retain(|k, _| matches!(k.as_str(), "labels" | "annotations" | "ownerReferences"));
            if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
                annotations.remove(labels::APPLIED);
                annotations.remove(LAST_APPLIED);
                if annotations.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    digest(&value)
}

/// Whether another writer changed the object (not its status) since Bulkhead's last apply, or
/// Bulkhead never applied it. A change the same second as Bulkhead's apply counts as after it.
pub fn touched(meta: &ObjectMeta) -> bool {
    let entries = meta.managed_fields.as_deref().unwrap_or_default();
    let main = |e: &&k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry| {
        e.subresource.as_deref().unwrap_or_default().is_empty()
    };
    let ours = entries
        .iter()
        .filter(main)
        .filter(|e| {
            e.manager.as_deref() == Some(labels::FIELD_MANAGER) && e.operation.as_deref() == Some("Apply")
        })
        .filter_map(|e| e.time.as_ref().map(|t| t.0))
        .max();
    let Some(ours) = ours else {
        return true;
    };
    entries
        .iter()
        .filter(main)
        .filter(|e| e.manager.as_deref() != Some(labels::FIELD_MANAGER))
        .any(|e| e.time.as_ref().is_none_or(|t| t.0 >= ours))
}

/// The projection of one object.
pub fn project<K: OwnedKind>(object: &K, names: &Interner) -> Owned {
    let meta = object.meta();
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.kind == "Tenant" && r.api_version.starts_with("bulkhead.dev/"));
    Owned {
        namespace: names.get(meta.namespace.as_deref().unwrap_or_default()),
        name: names.get(meta.name.as_deref().unwrap_or_default()),
        tenant: object.labels().get(labels::TENANT).map(|t| names.get(t)),
        owner: owner.map(|r| names.get(&r.name)),
        applied: applied_digest(meta),
        content: content_digest(object),
        version: version(meta.resource_version.as_deref()),
        touched: touched(meta),
        quota: object.quota_state().map(Box::new),
    }
}

type Key = (Arc<str>, Arc<str>);

#[derive(Default)]
struct Objects {
    by_namespace: HashMap<Arc<str>, HashMap<Arc<str>, Arc<Owned>>>,
    by_tenant: HashMap<Arc<str>, BTreeSet<Key>>,
    len: usize,
}

impl Objects {
    /// Puts `object` in, returning the stored copy and the version it replaced.
    fn insert(&mut self, object: Owned) -> (Arc<Owned>, Option<Arc<Owned>>) {
        let object = Arc::new(object);
        let previous = self
            .by_namespace
            .entry(object.namespace.clone())
            .or_default()
            .insert(object.name.clone(), object.clone());
        match &previous {
            Some(p) => self.unlink(p),
            None => self.len += 1,
        }
        if let Some(t) = &object.tenant {
            self.by_tenant
                .entry(t.clone())
                .or_default()
                .insert((object.namespace.clone(), object.name.clone()));
        }
        (object, previous)
    }

    fn remove(&mut self, namespace: &str, name: &str) -> Option<Arc<Owned>> {
        let names = self.by_namespace.get_mut(namespace)?;
        let removed = names.remove(name)?;
        if names.is_empty() {
            self.by_namespace.remove(namespace);
        }
        self.len -= 1;
        self.unlink(&removed);
        Some(removed)
    }

    fn unlink(&mut self, object: &Owned) {
        if let Some(t) = &object.tenant
            && let Some(set) = self.by_tenant.get_mut(t)
        {
            set.remove(&(object.namespace.clone(), object.name.clone()));
            if set.is_empty() {
                self.by_tenant.remove(t);
            }
        }
    }
}

struct State {
    live: Objects,
    rebuilding: Option<Objects>,
}

/// One owned kind's projections, fed by a single watch (or by hand, in tests).
pub struct OwnedCache<K> {
    shared: Arc<Shared>,
    kind: PhantomData<fn() -> K>,
}

struct Shared {
    kind: &'static str,
    names: Arc<Interner>,
    state: RwLock<State>,
    synced: watch::Sender<bool>,
    changes: broadcast::Sender<OwnedChange>,
    /// The newest resourceVersion any event or list brought.
    latest: AtomicU64,
}

/// How many changes a slow subscriber may fall behind before it is told it lagged (every slot is
/// allocated up front; a relist sends one change per tenant).
const CHANGE_BUFFER: usize = 4_096;

impl<K: OwnedKind> OwnedCache<K> {
    /// An empty cache, fed by [`OwnedCache::apply`] (the watch, or tests and benchmarks).
    pub fn new(kind: &'static str, names: Arc<Interner>) -> Self {
        OwnedCache {
            shared: Arc::new(Shared {
                kind,
                names,
                state: RwLock::new(State {
                    live: Objects::default(),
                    rebuilding: None,
                }),
                synced: watch::Sender::new(false),
                changes: broadcast::Sender::new(CHANGE_BUFFER),
                latest: AtomicU64::new(0),
            }),
            kind: PhantomData,
        }
    }

    /// Every change from now on. A subscriber that falls behind gets `Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<OwnedChange> {
        self.shared.changes.subscribe()
    }

    /// The newest resourceVersion the cache has seen of this kind (0 before any): etcd's revisions
    /// are one sequence and a watch delivers them in order, so an object written at a version up to
    /// this one is in the cache, or was deleted since.
    pub fn latest_version(&self) -> u64 {
        self.shared.latest.load(Ordering::Relaxed)
    }

    fn saw(&self, version: Option<u64>) {
        self.shared
            .latest
            .fetch_max(version.unwrap_or(0), Ordering::Relaxed);
    }

    /// The projection of one object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Owned>> {
        let state = self.shared.state.read();
        state.live.by_namespace.get(namespace)?.get(name).cloned()
    }

    /// The objects labelled for `tenant`, as (namespace, name).
    pub fn of_tenant(&self, tenant: &str) -> Vec<(Arc<str>, Arc<str>)> {
        let state = self.shared.state.read();
        state
            .live
            .by_tenant
            .get(tenant)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Applies one watch event (a relist replaces everything at once when it completes).
    pub fn apply(&self, event: Event<K>) {
        let names = &self.shared.names;
        let mut sent = Vec::new();
        {
            let mut state = self.shared.state.write();
            match event {
                Event::Apply(object) => {
                    let object = project(&object, names);
                    let tenant = object.tenant.clone();
                    let (object, previous) = state.live.insert(object);
                    let used = |o: &Owned| o.quota.as_ref().and_then(|q| q.used.clone());
                    let usage_changed = previous.as_deref().and_then(used) != used(&object);
                    let before = previous
                        .and_then(|p| p.tenant.clone())
                        .filter(|b| Some(b) != tenant.as_ref());
                    self.saw(object.version);
                    sent.push(OwnedChange {
                        tenant,
                        before,
                        object: Some(object),
                        usage_changed,
                        deleted: false,
                    });
                }
                Event::Delete(object) => {
                    let ns = object.namespace().unwrap_or_default();
                    self.saw(version(object.meta().resource_version.as_deref()));
                    if let Some(gone) = state.live.remove(&ns, &object.name_any()) {
                        sent.push(OwnedChange {
                            tenant: gone.tenant.clone(),
                            before: None,
                            object: Some(gone),
                            usage_changed: true,
                            deleted: true,
                        });
                    }
                }
                Event::Init => state.rebuilding = Some(Objects::default()),
                Event::InitApply(object) => {
                    let object = project(&object, names);
                    self.saw(object.version);
                    state
                        .rebuilding
                        .get_or_insert_with(Objects::default)
                        .insert(object);
                }
                Event::InitDone => {
                    let rebuilt = state.rebuilding.take().unwrap_or_default();
                    // A relist may have missed deletions and changes: every tenant that had or has
                    // objects hears of it, once.
                    let tenants: BTreeSet<Arc<str>> = state
                        .live
                        .by_tenant
                        .keys()
                        .chain(rebuilt.by_tenant.keys())
                        .cloned()
                        .collect();
                    state.live = rebuilt;
                    sent.extend(tenants.into_iter().map(OwnedChange::of_tenant));
                    drop(state);
                    names.prune();
                    self.shared.synced.send_replace(true);
                }
            }
        }
        for change in sent {
            // Nobody subscribed is fine.
            let _ = self.shared.changes.send(change);
        }
    }

    /// Whether the first full list has been received, and how many objects are held.
    pub fn status(&self) -> KindStatus {
        KindStatus {
            kind: self.shared.kind,
            synced: *self.shared.synced.borrow(),
            objects: self.shared.state.read().live.len,
        }
    }

    /// Waits for the first full list.
    pub async fn wait_synced(&self) {
        let mut synced = self.shared.synced.subscribe();
        let _ = synced.wait_for(|s| *s).await;
    }

    pub(crate) fn spawn_watch(&self, api: Api<K>, config: watcher::Config, shutdown: CancellationToken) {
        let this = OwnedCache::<K> {
            shared: self.shared.clone(),
            kind: PhantomData,
        };
        crate::kind::spawn_watch(self.shared.kind, api, config, shutdown, move |event| {
            this.apply(event)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference, Time};
    use k8s_openapi::jiff::Timestamp;

    fn entry(manager: &str, operation: &str, subresource: Option<&str>, second: i64) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            subresource: subresource.map(Into::into),
            time: Some(Time(Timestamp::from_second(second).unwrap())),
            ..Default::default()
        }
    }

    fn quota(ns: &str, name: &str, tenant: Option<&str>, pods: &str) -> ResourceQuota {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "labels": tenant.map(|t| serde_json::json!({labels::TENANT: t})),
                "annotations": {labels::APPLIED: "ff"}, "uid": "u", "resourceVersion": "1",
                "ownerReferences": [{"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "name": "solar", "uid": "t"}]},
            "spec": {"hard": {"pods": pods}},
            "status": {"used": {"pods": "1"}},
        }))
        .unwrap()
    }

    #[test]
    fn the_projection_keeps_what_the_controller_reads() {
        let names = Interner::default();
        let mut q = quota("a", "q", Some("solar"), "5");
        q.metadata.managed_fields = Some(vec![entry("bulkhead", "Apply", None, 10)]);
        let owned = project(&q, &names);
        assert_eq!(&*owned.namespace, "a");
        assert_eq!(owned.tenant.as_deref(), Some("solar"));
        assert_eq!(owned.owner.as_deref(), Some("solar"));
        assert_eq!(owned.applied, Some(0xff));
        assert!(!owned.touched);
        let state = owned.quota.unwrap();
        assert_eq!(state.hard()["pods"].0, "5");
        assert_eq!(state.used().unwrap()["pods"].0, "1");
        // Interned: one copy of "solar" for the label and the owner.
        assert!(Arc::ptr_eq(
            owned.tenant.as_ref().unwrap(),
            owned.owner.as_ref().unwrap()
        ));
    }

    #[test]
    fn the_content_digest_follows_what_writers_change_and_nothing_else() {
        let base = quota("a", "q", Some("solar"), "5");
        let mut server_side = base.clone();
        server_side.metadata.resource_version = Some("99".into());
        server_side.metadata.uid = Some("other".into());
        server_side.status = None;
        server_side.metadata.managed_fields = Some(vec![entry("x", "Update", None, 1)]);
        server_side
            .annotations_mut()
            .insert(labels::APPLIED.into(), "01".into());
        assert_eq!(content_digest(&base), content_digest(&server_side));
        let mut raised = base.clone();
        raised
            .spec
            .as_mut()
            .unwrap()
            .hard
            .as_mut()
            .unwrap()
            .insert("pods".into(), Quantity("6".into()));
        assert_ne!(content_digest(&base), content_digest(&raised));
        let mut relabelled = base.clone();
        relabelled.labels_mut().insert("x".into(), "y".into());
        assert_ne!(content_digest(&base), content_digest(&relabelled));
        let mut reowned = base.clone();
        reowned.metadata.owner_references = Some(vec![OwnerReference::default()]);
        assert_ne!(content_digest(&base), content_digest(&reowned));
    }

    #[test]
    fn touched_means_another_writer_since_bulkheads_last_apply() {
        let meta = |entries: Vec<ManagedFieldsEntry>| ObjectMeta {
            managed_fields: Some(entries),
            ..Default::default()
        };
        assert!(touched(&meta(vec![])), "never applied by Bulkhead");
        assert!(!touched(&meta(vec![entry("bulkhead", "Apply", None, 10)])));
        // The quota controller writes the status subresource: not a change of what Bulkhead applies.
        assert!(!touched(&meta(vec![
            entry("bulkhead", "Apply", None, 10),
            entry("kube-controller-manager", "Update", Some("status"), 20),
        ])));
        assert!(touched(&meta(vec![
            entry("bulkhead", "Apply", None, 10),
            entry("kubectl-edit", "Update", None, 20),
        ])));
        assert!(
            touched(&meta(vec![
                entry("bulkhead", "Apply", None, 10),
                entry("kubectl-edit", "Update", None, 10),
            ])),
            "the same second counts as after"
        );
        assert!(
            !touched(&meta(vec![
                entry("kubectl-edit", "Update", None, 5),
                entry("bulkhead", "Apply", None, 10),
            ])),
            "Bulkhead applied again since"
        );
    }

    #[test]
    fn objects_are_found_by_key_and_tenant_and_relists_replace_everything() {
        let cache: OwnedCache<ResourceQuota> = OwnedCache::new("ResourceQuota", Arc::default());
        let mut changes = cache.subscribe();
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(quota("a", "q", Some("solar"), "1")));
        cache.apply(Event::InitApply(quota("b", "q", Some("solar"), "1")));
        assert!(!cache.status().synced);
        assert!(cache.get("a", "q").is_none(), "not before the list is complete");
        cache.apply(Event::InitDone);
        assert_eq!(cache.status().objects, 2);
        assert!(cache.status().synced);
        let mut of = cache.of_tenant("solar");
        of.sort();
        assert_eq!(of.len(), 2);
        // Moved to another tenant: both hear of it.
        cache.apply(Event::Apply(quota("a", "q", Some("wind"), "1")));
        assert_eq!(cache.of_tenant("solar").len(), 1);
        assert_eq!(cache.of_tenant("wind").len(), 1);
        cache.apply(Event::Delete(quota("b", "q", Some("solar"), "1")));
        assert!(cache.of_tenant("solar").is_empty());
        assert_eq!(cache.status().objects, 1);
        // A relist without "a" drops it.
        cache.apply(Event::Init);
        cache.apply(Event::InitDone);
        assert_eq!(cache.status().objects, 0);
        assert!(cache.get("a", "q").is_none());
        let mut seen = Vec::new();
        while let Ok(c) = changes.try_recv() {
            seen.push((
                c.tenant.as_deref().map(str::to_owned),
                c.before.as_deref().map(str::to_owned),
            ));
        }
        let s = |t: &str| Some(t.to_owned());
        assert_eq!(
            seen,
            [
                (s("solar"), None),
                (s("wind"), s("solar")),
                (s("solar"), None),
                (s("wind"), None),
            ]
        );
    }
}
