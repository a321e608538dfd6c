//! The writes made during an outage that still have to reach Redis: one
//! entry per key (the latest change wins), each with a sequence number so
//! a replay only forgets an entry nothing newer has replaced meanwhile.

use std::collections::HashMap;

use crate::store::Key;

/// A write made during the outage, waiting to be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The value is in the memory store (it may expire there first).
    Put,
    /// Deleted at this time (unix ms); wins over anything older.
    Delete { at_ms: u64 },
}

/// One pending change as a replay pass sees it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub key: Key,
    pub change: Change,
    pub seq: u64,
}

#[derive(Debug, Default)]
pub struct ReplayQueue {
    changes: HashMap<Key, (Change, u64)>,
    next_seq: u64,
}

impl ReplayQueue {
    /// Queues a change, replacing an older one for the same key.
    pub fn push(&mut self, key: &Key, change: Change) {
        self.next_seq += 1;
        self.changes.insert(key.clone(), (change, self.next_seq));
    }

    /// A snapshot for one replay pass.
    pub fn pending(&self) -> Vec<Pending> {
        self.changes
            .iter()
            .map(|(key, (change, seq))| Pending {
                key: key.clone(),
                change: *change,
                seq: *seq,
            })
            .collect()
    }

    /// Forgets a replayed change, unless a newer one was queued meanwhile.
    pub fn forget(&mut self, replayed: &Pending) {
        if self
            .changes
            .get(&replayed.key)
            .is_some_and(|(_, seq)| *seq == replayed.seq)
        {
            self.changes.remove(&replayed.key);
        }
    }

    /// Drops the puts `still_live` says are gone (expired in memory before
    /// Redis returned: nothing to replay). Tombstones stay until replayed.
    pub fn retain_live(&mut self, still_live: impl Fn(&Key) -> bool) {
        self.changes.retain(|key, (change, _)| match change {
            Change::Put => still_live(key),
            Change::Delete { .. } => true,
        });
    }

    pub fn clear(&mut self) {
        self.changes.clear();
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Id;
    use crate::store::keys;

    #[test]
    fn a_change_queued_during_replay_is_not_forgotten() {
        let key = keys::token(&Id::parse("a").unwrap());
        let mut queue = ReplayQueue::default();
        queue.push(&key, Change::Put);
        let snapshot = queue.pending();
        queue.push(&key, Change::Delete { at_ms: 5 });
        queue.forget(&snapshot[0]);
        assert_eq!(queue.len(), 1);
        let newer = queue.pending();
        assert_eq!(newer[0].change, Change::Delete { at_ms: 5 });
        queue.forget(&newer[0]);
        assert_eq!(queue.len(), 0);
    }
}
