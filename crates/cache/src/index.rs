//! Indexes kept beside a store, fed the same watcher events.

use std::collections::HashMap;
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
}
