//! Namespaces whose objects are all as their tenant wants, so a reconcile of a tenant of hundreds of
//! namespaces compares only the ones something happened to: a namespace created, labelled or
//! relabelled, one of its objects changed or deleted by someone else, the tenant's spec changed.
//!
//! A namespace is settled by the reconcile that applied (or found current) everything in it, under a
//! digest of what its desired objects are made from (the tenant's name, uid and spec, the namespace's
//! name and labels). It stops being settled when any change the controller hears of concerns it (not
//! the echoes of its own writes), when those inputs change, after a relist of an owned kind, and after
//! [`crate::reconcile::RESYNC`], so the periodic resync still compares everything. Tenants with
//! tenant-scope quotas are never skipped: their namespaces share a budget by usage.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The settled namespaces, and when each was last dirtied.
#[derive(Debug, Default)]
pub struct Settled {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped by every change; a reconcile settles a namespace only if nothing dirtied it after the
    /// reconcile read it.
    sequence: u64,
    /// Settled namespaces: the inputs digest and when.
    done: HashMap<String, (u64, Instant)>,
    /// The sequence of the last change to each namespace not yet settled again.
    dirtied: HashMap<String, u64>,
    /// The sequence of the last [`Settled::clear`].
    cleared: u64,
}

impl Settled {
    /// Where the change sequence stands: taken before a reconcile reads the cache.
    pub fn mark(&self) -> u64 {
        self.state.lock().sequence
    }

    /// Something changed in `namespace`: it is compared at its tenant's next reconcile.
    pub fn dirty(&self, namespace: &str) {
        let mut state = self.state.lock();
        state.sequence += 1;
        let sequence = state.sequence;
        state.done.remove(namespace);
        state.dirtied.insert(namespace.to_owned(), sequence);
    }

    /// `namespace` is gone.
    pub fn forget(&self, namespace: &str) {
        let mut state = self.state.lock();
        state.sequence += 1;
        state.done.remove(namespace);
        state.dirtied.remove(namespace);
    }

    /// Changes may have been missed (a relist): nothing is settled.
    pub fn clear(&self) {
        let mut state = self.state.lock();
        state.sequence += 1;
        state.cleared = state.sequence;
        state.done.clear();
        state.dirtied.clear();
    }

    /// Whether `namespace` was settled under `inputs` less than `within` ago.
    pub fn is_settled(&self, namespace: &str, inputs: u64, within: Duration) -> bool {
        self.state
            .lock()
            .done
            .get(namespace)
            .is_some_and(|(settled, at)| *settled == inputs && at.elapsed() < within)
    }

    /// Settles `namespace` under `inputs`, unless it was dirtied (or everything cleared) after `mark`.
    pub fn settle(&self, namespace: &str, inputs: u64, mark: u64) {
        let mut state = self.state.lock();
        if state.cleared > mark || state.dirtied.get(namespace).is_some_and(|d| *d > mark) {
            return;
        }
        state.dirtied.remove(namespace);
        state.done.insert(namespace.to_owned(), (inputs, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(600);

    #[test]
    fn a_namespace_is_settled_until_something_concerns_it() {
        let settled = Settled::default();
        let mark = settled.mark();
        settled.settle("a", 1, mark);
        settled.settle("b", 1, mark);
        assert!(settled.is_settled("a", 1, LONG));
        assert!(!settled.is_settled("a", 2, LONG), "other inputs: compared again");
        assert!(
            !settled.is_settled("a", 1, Duration::ZERO),
            "the resync compares everything"
        );
        settled.dirty("a");
        assert!(!settled.is_settled("a", 1, LONG));
        assert!(settled.is_settled("b", 1, LONG));
        settled.clear();
        assert!(!settled.is_settled("b", 1, LONG));
    }

    #[test]
    fn a_change_during_the_reconcile_keeps_the_namespace_unsettled() {
        let settled = Settled::default();
        let mark = settled.mark();
        // The reconcile read the cache; then someone edits an object in "a".
        settled.dirty("a");
        settled.settle("a", 1, mark);
        settled.settle("b", 1, mark);
        assert!(!settled.is_settled("a", 1, LONG));
        assert!(settled.is_settled("b", 1, LONG));
        // The next reconcile, after the change, settles it.
        let mark = settled.mark();
        settled.settle("a", 1, mark);
        assert!(settled.is_settled("a", 1, LONG));
        // A relist during a reconcile settles nothing that reconcile saw.
        let mark = settled.mark();
        settled.clear();
        settled.settle("c", 1, mark);
        assert!(!settled.is_settled("c", 1, LONG));
        settled.forget("a");
        assert!(!settled.is_settled("a", 1, LONG));
    }
}
