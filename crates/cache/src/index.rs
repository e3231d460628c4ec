//! Indexes kept beside a store, fed the same watcher events.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

use kube::runtime::watcher::Event;

/// An index over objects of kind `K`, updated one object at a time.
///
/// `insert` is called for every added or changed object (the previous version is replaced: implementors
/// remember what each object contributed, see [`Contributions`]); `remove` for every deleted one.
pub trait Index<K>: Default {
    /// Adds `object`, replacing what an earlier version of it contributed.
    fn insert(&mut self, object: &K);
    /// Removes what `object` contributed.
    fn remove(&mut self, object: &K);
    /// How many objects it holds, for a kind kept as its index alone (see
    /// [`crate::kind::KindCache::index_only`]).
    fn objects(&self) -> usize {
        0
    }
    /// For a kind kept as its index alone: the `bulkhead.dev/tenant` label of the version of `object`
    /// held now (what a store would have answered), so subscribers hear which tenant it left.
    fn tenant_label(&self, _object: &K) -> Option<String> {
        None
    }
    /// For a kind kept as its index alone: every object, whole, for subscribers after a relist.
    fn all(&self) -> Vec<std::sync::Arc<K>> {
        Vec::new()
    }
}

/// An index that follows a watch, including relists: during a relist (`Init` .. `InitDone`) queries keep
/// answering from the previous state, and the new state replaces it at once when the list is complete,
/// so objects deleted while the watch was down disappear. This mirrors what kube's `Store` does.
#[derive(Debug, Default)]
pub struct Indexed<I> {
    live: I,
    rebuilding: Option<I>,
}

impl<I> Indexed<I> {
    /// Applies one watcher event.
    pub fn apply<K>(&mut self, event: &Event<K>)
    where
        I: Index<K>,
    {
        match event {
            Event::Apply(object) => self.live.insert(object),
            Event::Delete(object) => self.live.remove(object),
            Event::Init => self.rebuilding = Some(I::default()),
            Event::InitApply(object) => self.rebuilding.get_or_insert_with(I::default).insert(object),
            Event::InitDone => {
                if let Some(rebuilt) = self.rebuilding.take() {
                    self.live = rebuilt;
                }
            }
        }
    }

    /// The current state, for queries.
    pub fn get(&self) -> &I {
        &self.live
    }
}

/// What each object (by key) contributed to an index, so a new version can take the old one's place.
#[derive(Debug)]
pub struct Contributions<O, V> {
    by_object: HashMap<O, Vec<V>>,
}

impl<O, V> Default for Contributions<O, V> {
    fn default() -> Self {
        Contributions {
            by_object: HashMap::new(),
        }
    }
}

impl<O: Eq + Hash, V> Contributions<O, V> {
    /// Records `values` for `object`, returning what it contributed before.
    pub fn replace(&mut self, object: O, values: Vec<V>) -> Vec<V> {
        if values.is_empty() {
            return self.by_object.remove(&object).unwrap_or_default();
        }
        self.by_object.insert(object, values).unwrap_or_default()
    }

    /// Forgets `object`, returning what it contributed.
    pub fn take(&mut self, object: &O) -> Vec<V> {
        self.by_object.remove(object).unwrap_or_default()
    }

    /// How many objects contribute something.
    pub fn len(&self) -> usize {
        self.by_object.len()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.by_object.is_empty()
    }
}

/// A many-to-many map kept from one side: each key (an object) names values (subjects), and the map
/// answers which keys name a value. Setting a key's values replaces what it named before; no empty
/// entries are left behind.
#[derive(Debug)]
pub struct Reverse<K, V> {
    by_value: HashMap<V, BTreeSet<K>>,
    named: Contributions<K, V>,
}

impl<K, V> Default for Reverse<K, V> {
    fn default() -> Self {
        Reverse {
            by_value: HashMap::new(),
            named: Contributions::default(),
        }
    }
}

impl<K: Eq + Hash + Ord + Clone, V: Eq + Hash + Clone> Reverse<K, V> {
    /// `key` now names exactly `values`.
    pub fn set(&mut self, key: K, values: Vec<V>) {
        let previous = self.named.replace(key.clone(), values.clone());
        self.unlink(&key, previous);
        for value in values {
            self.by_value.entry(value).or_default().insert(key.clone());
        }
    }

    /// `key` names nothing any more.
    pub fn remove(&mut self, key: &K) {
        let previous = self.named.take(key);
        self.unlink(key, previous);
    }

    /// The keys naming `value`.
    pub fn get(&self, value: &V) -> Option<&BTreeSet<K>> {
        self.by_value.get(value)
    }

    /// The keys naming any of `values`.
    pub fn any(&self, values: &[V]) -> BTreeSet<K> {
        values
            .iter()
            .filter_map(|v| self.by_value.get(v))
            .flatten()
            .cloned()
            .collect()
    }

    /// Whether nothing is named.
    pub fn is_empty(&self) -> bool {
        self.by_value.is_empty()
    }

    fn unlink(&mut self, key: &K, values: Vec<V>) {
        for value in values {
            if let Some(keys) = self.by_value.get_mut(&value) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_value.remove(&value);
                }
            }
        }
    }
}
