//! The in-memory store: serves when no Redis is configured, and (later) as
//! the fallback while Redis is down.
//!
//! One `std::sync::Mutex` guards a map plus a min-heap of deadlines. The lock
//! is never held across an `.await` (every operation is synchronous inside),
//! and a background sweeper pops due deadlines so expired entries really
//! leave memory instead of waiting for a read that may never come.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Key, Migrated, StorageKind, Store, StoreError, StoreResult, StoreStatus};
use crate::clock::unix_now;

#[derive(Debug)]
struct Entry {
    value: String,
    expires_at: Instant,
    /// Distinguishes this write from earlier ones in the deadline heap.
    seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Entry>,
    deadlines: BinaryHeap<Reverse<(Instant, u64, String)>>,
    next_seq: u64,
}

impl Inner {
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.map.get(key).is_some_and(|e| e.expires_at <= now) {
            self.map.remove(key);
        }
        self.map.get_mut(key)
    }

    fn put(&mut self, key: &str, value: String, ttl: Duration, now: Instant) {
        let expires_at = now + ttl;
        self.next_seq += 1;
        let seq = self.next_seq;
        self.map.insert(
            key.to_string(),
            Entry {
                value,
                expires_at,
                seq,
            },
        );
        self.deadlines
            .push(Reverse((expires_at, seq, key.to_string())));
        // Rewrites leave stale deadlines behind; rebuild before they pile up.
        if self.deadlines.len() > 2 * self.map.len() + 1024 {
            self.deadlines = self
                .map
                .iter()
                .map(|(k, e)| Reverse((e.expires_at, e.seq, k.clone())))
                .collect();
        }
    }

    /// Removes every entry whose deadline has passed; returns how many.
    fn sweep(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        while let Some(Reverse((deadline, seq, _))) = self.deadlines.peek() {
            if *deadline > now {
                break;
            }
            let seq = *seq;
            let Some(Reverse((_, _, key))) = self.deadlines.pop() else {
                break;
            };
            if self.map.get(&key).is_some_and(|e| e.seq == seq) {
                self.map.remove(&key);
                removed += 1;
            }
        }
        removed
    }
}

/// Thread-safe TTL map; cheap to clone (all clones share the data).
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    since: u64,
}

impl MemoryStore {
    /// Creates the store and starts its sweeper on the current Tokio runtime.
    /// The sweeper stops by itself once the last clone is dropped.
    pub fn new(sweep_interval: Duration) -> Self {
        let store = Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            since: unix_now(),
        };
        let weak = Arc::downgrade(&store.inner);
        tokio::spawn(sweep_forever(weak, sweep_interval));
        store
    }

    /// Entries currently held, expired-but-unswept ones included: what the
    /// store really occupies.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// True when nothing is held (expired-but-unswept entries count as held).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A live entry's value and remaining lifetime (for replay into Redis).
    pub fn entry(&self, key: &Key) -> Option<(String, Duration)> {
        let now = Instant::now();
        self.lock()
            .live(key.as_str(), now)
            .map(|e| (e.value.clone(), e.expires_at.saturating_duration_since(now)))
    }

    /// Drops everything (after a replay moved it to Redis).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.deadlines.clear();
    }

    /// Applies `next` to a counter (0 when absent), creating it with `ttl`;
    /// a value that is not an integer is refused, as Redis refuses it.
    fn update_counter(
        &self,
        key: &Key,
        ttl: Duration,
        next: impl FnOnce(i64) -> i64,
    ) -> StoreResult<i64> {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.live(key.as_str(), now) {
            Some(entry) => {
                let current = entry.value.parse::<i64>().map_err(|_| {
                    StoreError::rejected(format!("{key} holds a value that is not an integer"))
                })?;
                let value = next(current);
                entry.value = value.to_string();
                Ok(value)
            }
            None => {
                let value = next(0);
                inner.put(key.as_str(), value.to_string(), ttl, now);
                Ok(value)
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written entry
        // (each operation is one map call), so a poisoned lock is still sound.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn sweep_forever(inner: Weak<Mutex<Inner>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let removed = {
            let mut guard = inner.lock().unwrap_or_else(|p| p.into_inner());
            guard.sweep(Instant::now())
        };
        if removed > 0 {
            tracing::trace!(removed, "swept expired entries");
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn set(&self, key: &Key, value: &str, ttl: Duration) -> StoreResult<()> {
        let now = Instant::now();
        self.lock().put(key.as_str(), value.to_string(), ttl, now);
        Ok(())
    }

    async fn set_if_absent(&self, key: &Key, value: &str, ttl: Duration) -> StoreResult<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.live(key.as_str(), now).is_some() {
            return Ok(false);
        }
        inner.put(key.as_str(), value.to_string(), ttl, now);
        Ok(true)
    }

    async fn get(&self, key: &Key) -> StoreResult<Option<String>> {
        let now = Instant::now();
        Ok(self.lock().live(key.as_str(), now).map(|e| e.value.clone()))
    }

    async fn compare_and_swap(
        &self,
        key: &Key,
        expected: &str,
        new: Option<&str>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        let current = inner.live(key.as_str(), now).map(|e| e.value.as_str());
        if current != Some(expected) {
            // Already what the caller asked for: same answer as Redis gives.
            return Ok(current == new);
        }
        match new {
            Some(value) => inner.put(key.as_str(), value.to_string(), ttl, now),
            None => {
                inner.map.remove(key.as_str());
            }
        }
        Ok(true)
    }

    async fn delete(&self, key: &Key) -> StoreResult<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        let live = inner.live(key.as_str(), now).is_some();
        inner.map.remove(key.as_str());
        Ok(live)
    }

    async fn increment(&self, key: &Key, ttl: Duration) -> StoreResult<i64> {
        self.update_counter(key, ttl, |n| n.saturating_add(1))
    }

    async fn advance_to(&self, key: &Key, floor: i64, ttl: Duration) -> StoreResult<i64> {
        self.update_counter(key, ttl, |n| n.max(floor))
    }

    fn status(&self) -> StoreStatus {
        StoreStatus {
            storage: StorageKind::Memory,
            mode: None,
            connected: false,
            master: None,
            cluster_state: None,
            last_error: None,
            fallback_reason: None,
            since: self.since,
            entries: Some(self.len()),
            pending_replay: None,
            migrated: Migrated::default(),
            fallback_totals: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Id;
    use crate::store::keys;

    fn key(s: &str) -> Key {
        keys::token(&Id::parse(s).unwrap())
    }

    #[tokio::test]
    async fn set_get_take_and_cas() {
        let store = MemoryStore::new(Duration::from_secs(60));
        let k = key("a");
        let ttl = Duration::from_secs(60);
        assert!(store.get(&k).await.unwrap().is_none());
        store.set(&k, "1", ttl).await.unwrap();
        assert!(!store.set_if_absent(&k, "2", ttl).await.unwrap());
        assert!(!store
            .compare_and_swap(&k, "x", Some("3"), ttl)
            .await
            .unwrap());
        assert!(store
            .compare_and_swap(&k, "1", Some("3"), ttl)
            .await
            .unwrap());
        assert_eq!(store.get(&k).await.unwrap().as_deref(), Some("3"));
        assert!(store.delete(&k).await.unwrap());
        assert!(!store.delete(&k).await.unwrap());
        assert_eq!(store.increment(&k, ttl).await.unwrap(), 1);
        assert_eq!(store.increment(&k, ttl).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_swap_already_applied_reports_true_like_redis() {
        let store = MemoryStore::new(Duration::from_secs(60));
        let k = key("cas");
        let ttl = Duration::from_secs(60);
        store.set(&k, "new", ttl).await.unwrap();
        assert!(store
            .compare_and_swap(&k, "old", Some("new"), ttl)
            .await
            .unwrap());
        assert!(!store
            .compare_and_swap(&k, "old", Some("other"), ttl)
            .await
            .unwrap());
        store.delete(&k).await.unwrap();
        assert!(store.compare_and_swap(&k, "old", None, ttl).await.unwrap());
    }

    #[tokio::test]
    async fn counters_only_advance_and_refuse_non_integers() {
        let store = MemoryStore::new(Duration::from_secs(60));
        let ttl = Duration::from_secs(60);
        let c = keys::recording_chunk_index(&Id::parse("rec").unwrap());
        assert_eq!(store.advance_to(&c, 5, ttl).await.unwrap(), 5);
        assert_eq!(store.advance_to(&c, 3, ttl).await.unwrap(), 5);
        assert_eq!(store.increment(&c, ttl).await.unwrap(), 6);
        let t = key("text");
        store.set(&t, "abc", ttl).await.unwrap();
        let err = store.increment(&t, ttl).await.unwrap_err();
        assert!(matches!(err, StoreError::Rejected(_)), "{err:?}");
        assert!(!err.is_outage());
        assert!(store.advance_to(&t, 1, ttl).await.is_err());
        assert_eq!(store.get(&t).await.unwrap().as_deref(), Some("abc"));
    }

    #[tokio::test]
    async fn sweeper_frees_expired_entries_without_reads() {
        let store = MemoryStore::new(Duration::from_millis(10));
        for i in 0..100 {
            let k = key(&format!("k{i}"));
            store.set(&k, "v", Duration::from_millis(30)).await.unwrap();
        }
        store
            .set(&key("keep"), "v", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(store.len(), 101);
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.len() > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn stale_deadlines_do_not_remove_rewritten_entries() {
        let mut inner = Inner::default();
        let t0 = Instant::now();
        inner.put("k", "old".into(), Duration::from_secs(1), t0);
        inner.put("k", "new".into(), Duration::from_secs(10), t0);
        assert_eq!(inner.sweep(t0 + Duration::from_secs(2)), 0);
        assert_eq!(inner.map["k"].value, "new");
        assert_eq!(inner.sweep(t0 + Duration::from_secs(11)), 1);
        assert!(inner.map.is_empty());
    }

    #[test]
    fn deadline_heap_stays_bounded_under_rewrites() {
        let mut inner = Inner::default();
        let t0 = Instant::now();
        for _ in 0..10_000 {
            inner.put("k", "v".into(), Duration::from_secs(60), t0);
        }
        assert!(inner.deadlines.len() <= 1026);
    }
}
