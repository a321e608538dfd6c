//! Serving from memory while Redis is gone, and moving back when it returns
//! (SPEC section 10).
//!
//! Every operation goes to Redis while it answers. The first one that meets
//! a failure (refused connection, command timeout, no master known) switches
//! the store to fallback and is itself served from memory; later ones go
//! straight to memory, and every write is journaled (a put, or a tombstone
//! for a delete). When Redis answers again the journal is replayed with the
//! remaining TTLs, newest write winning, then the store serves from Redis
//! and drops the memory copies. A final replay pass runs under the write
//! lock, so no write lands in memory between the last pass and the switch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt as _;
use rand::Rng as _;
use tokio::sync::{watch, Notify, RwLock};

use super::{
    DiskJournal, Key, KeyKind, MemoryStore, Migrated, Record, RedisStore, StorageKind, Store,
    StoreError, StoreResult, StoreStatus,
};
use crate::clock::unix_now;

/// Domain rules for replay conflicts, supplied by the layer that knows what
/// the values mean (tokens, sessions).
pub trait Reconcile: Send + Sync + 'static {
    /// When `value` was written (unix ms), to let the newer write win;
    /// `None` when the value carries no time (the outage write then wins).
    fn written_at_ms(&self, key: &Key, value: &str) -> Option<u64>;

    /// Writes that must accompany removing `value` (e.g. revoking the `jti`
    /// of a token deleted during the outage): key, value, TTL.
    fn on_delete(&self, key: &Key, value: &str) -> Vec<(Key, String, Duration)>;
}

/// A write made during the outage, waiting to be replayed.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// The value is in the memory store (it may expire there first).
    Put,
    /// Deleted at this time (unix ms); wins over anything older.
    Delete { at_ms: u64 },
}

#[derive(Debug, Default)]
struct Journal {
    changes: HashMap<String, (Change, u64)>,
    next_seq: u64,
}

#[derive(Debug, Clone)]
struct Outage {
    reason: String,
    since: u64,
}

/// Redis with an in-memory fallback; cheap to clone.
#[derive(Clone)]
pub struct FallbackStore {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisStore,
    memory: MemoryStore,
    reconcile: Arc<dyn Reconcile>,
    /// Write-locked only to switch between Redis and memory.
    gate: RwLock<()>,
    in_fallback: AtomicBool,
    outage: Mutex<Option<Outage>>,
    journal: Mutex<Journal>,
    migrated: Mutex<Migrated>,
    /// What this outage's replay attempts have moved so far.
    moved: Mutex<Migrated>,
    entered_fallback: Arc<Notify>,
    /// The outage's writes on disk, when `storage.journal_path` is set.
    disk: Option<DiskJournal>,
}

/// How often a long outage's replay queue is pruned of expired puts.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// Keys replayed at once: enough to hide Redis round trips, few enough not
/// to crowd out live traffic.
const REPLAY_CONCURRENCY: usize = 32;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl FallbackStore {
    /// Wraps a connected (or not yet connected) Redis store. If Redis is
    /// not reachable now, or an earlier run left writes in the disk
    /// journal, the store starts in fallback and migrates once Redis answers.
    pub async fn new(
        redis: RedisStore,
        memory: MemoryStore,
        reconcile: Arc<dyn Reconcile>,
        disk: Option<(DiskJournal, Vec<Record>)>,
    ) -> Self {
        let connected = redis.watch_connected();
        let (disk, earlier) = match disk {
            Some((journal, records)) => (Some(journal), records),
            None => (None, Vec::new()),
        };
        let store = Self {
            inner: Arc::new(Inner {
                redis,
                memory,
                reconcile,
                gate: RwLock::new(()),
                in_fallback: AtomicBool::new(false),
                outage: Mutex::new(None),
                journal: Mutex::new(Journal::default()),
                migrated: Mutex::new(Migrated::default()),
                moved: Mutex::new(Migrated::default()),
                entered_fallback: Arc::new(Notify::new()),
                disk,
            }),
        };
        if !earlier.is_empty() {
            let count = earlier.len();
            store.inner.load(earlier).await;
            tracing::warn!(
                records = count,
                "journal of an earlier run found: replaying it"
            );
            store
                .inner
                .enter_fallback("replaying the journal of an earlier run".into());
        }
        if !store.inner.redis.is_connected() {
            store
                .inner
                .enter_fallback("Redis not reachable at start-up".into());
        }
        tokio::spawn(recover_forever(
            Arc::downgrade(&store.inner),
            store.inner.entered_fallback.clone(),
            connected,
        ));
        store
    }

    /// Whether requests are being served from memory right now.
    pub fn in_fallback(&self) -> bool {
        self.inner.in_fallback.load(Ordering::SeqCst)
    }
}

impl Inner {
    fn lock_journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_outage(&self) -> MutexGuard<'_, Option<Outage>> {
        self.outage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Switches to memory; logs once per outage. Needs no exclusive gate:
    /// a call still finishing on Redis meanwhile is harmless (Redis took
    /// it); only the switch back must exclude memory writes.
    fn enter_fallback(&self, reason: String) {
        if self.in_fallback.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::warn!(reason = %reason, "Redis unavailable: serving from memory until it returns");
        *self.lock_outage() = Some(Outage {
            reason,
            since: unix_now(),
        });
        self.entered_fallback.notify_one();
    }

    /// Records a fallback write for replay, on disk first when configured.
    fn journal(&self, key: &Key, change: Change) -> StoreResult<()> {
        if let Some(disk) = &self.disk {
            let record = match change {
                Change::Put => self
                    .memory
                    .entry(key)
                    .map(|(value, remaining)| Record::Put {
                        key: key.as_str().to_string(),
                        value,
                        expires_at_ms: now_ms() + remaining.as_millis() as u64,
                    }),
                Change::Delete { at_ms } => Some(Record::Delete {
                    key: key.as_str().to_string(),
                    at_ms,
                }),
            };
            if let Some(record) = record {
                disk.append(&record).map_err(|e| {
                    tracing::error!(error = %e, path = %disk.path().display(), "cannot write the fallback journal");
                    StoreError::Unavailable(format!("fallback journal not writable: {e}"))
                })?;
            }
        }
        self.queue(key, change);
        Ok(())
    }

    /// Forgets queued puts whose value already expired in memory, so a long
    /// outage does not keep a journal entry for every key ever written.
    /// (Tombstones stay: they matter until replayed.)
    fn prune_expired(&self) {
        let mut journal = self.lock_journal();
        journal.changes.retain(|name, (change, _)| match change {
            Change::Put => self.memory.entry(&Key::from_stored(name.clone())).is_some(),
            Change::Delete { .. } => true,
        });
    }

    /// Queues a change for the next replay.
    fn queue(&self, key: &Key, change: Change) {
        let mut journal = self.lock_journal();
        journal.next_seq += 1;
        let seq = journal.next_seq;
        journal
            .changes
            .insert(key.as_str().to_string(), (change, seq));
    }

    /// Puts an earlier run's journal back into memory and the replay queue
    /// (later records override earlier ones, as they did when written).
    async fn load(&self, records: Vec<Record>) {
        let now = now_ms();
        for record in records {
            match record {
                Record::Put {
                    key,
                    value,
                    expires_at_ms,
                } => {
                    let key = Key::from_stored(key);
                    if expires_at_ms > now {
                        let ttl = Duration::from_millis(expires_at_ms - now);
                        let _ = self.memory.set(&key, &value, ttl).await;
                        self.queue(&key, Change::Put);
                    }
                }
                Record::Delete { key, at_ms } => {
                    let key = Key::from_stored(key);
                    let _ = self.memory.delete(&key).await;
                    self.queue(&key, Change::Delete { at_ms });
                }
            }
        }
    }

    /// Replays every journaled change into Redis, `REPLAY_CONCURRENCY` keys
    /// at a time (keys are independent); stops at the first Redis failure,
    /// leaving what was not replayed in the journal. Counts what moved into
    /// `moved` (kept across interrupted attempts of one outage).
    async fn replay(&self, moved: &mut Migrated) -> StoreResult<()> {
        let pending: Vec<(String, Change, u64)> = self
            .lock_journal()
            .changes
            .iter()
            .map(|(k, (c, seq))| (k.clone(), *c, *seq))
            .collect();
        let mut results = futures_util::stream::iter(pending)
            .map(|(name, change, seq)| async move {
                let key = Key::from_stored(name);
                let moved = match change {
                    Change::Put => self.replay_put(&key).await?,
                    Change::Delete { at_ms } => {
                        self.replay_delete(&key, at_ms).await?;
                        false
                    }
                };
                Ok::<_, StoreError>((key, seq, moved))
            })
            .buffer_unordered(REPLAY_CONCURRENCY);
        while let Some(result) = results.next().await {
            let (key, seq, was_moved) = result?;
            if was_moved {
                match key.kind() {
                    KeyKind::Token => moved.tokens += 1,
                    KeyKind::Session => moved.sessions += 1,
                    KeyKind::Revocation | KeyKind::Other => {}
                }
            }
            let mut journal = self.lock_journal();
            // Only forget it if nothing newer was journaled meanwhile.
            if journal
                .changes
                .get(key.as_str())
                .is_some_and(|(_, s)| *s == seq)
            {
                journal.changes.remove(key.as_str());
            }
        }
        Ok(())
    }

    /// Puts the memory value into Redis unless Redis holds a newer one.
    /// Idempotent: replaying the same value again changes nothing.
    async fn replay_put(&self, key: &Key) -> StoreResult<bool> {
        let Some((value, remaining)) = self.memory.entry(key) else {
            return Ok(false); // expired during the outage: not replayed
        };
        let ours = self.reconcile.written_at_ms(key, &value);
        for _ in 0..16 {
            let written = match self.redis.get(key).await? {
                None => self.redis.set_if_absent(key, &value, remaining).await?,
                Some(current) if current == value => return Ok(true),
                Some(current) => {
                    let theirs = self.reconcile.written_at_ms(key, &current);
                    if let (Some(theirs), Some(ours)) = (theirs, ours) {
                        if theirs > ours {
                            return Ok(false); // Redis has a newer write
                        }
                    }
                    self.redis
                        .compare_and_swap(key, &current, Some(&value), remaining)
                        .await?
                }
            };
            if written {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Applies a tombstone: removes the Redis value unless it is newer.
    async fn replay_delete(&self, key: &Key, at_ms: u64) -> StoreResult<()> {
        for _ in 0..16 {
            let Some(current) = self.redis.get(key).await? else {
                return Ok(());
            };
            if self
                .reconcile
                .written_at_ms(key, &current)
                .is_some_and(|t| t > at_ms)
            {
                return Ok(());
            }
            for (extra, value, ttl) in self.reconcile.on_delete(key, &current) {
                self.redis.set(&extra, &value, ttl).await?;
            }
            if self
                .redis
                .compare_and_swap(key, &current, None, Duration::from_secs(1))
                .await?
            {
                return Ok(());
            }
        }
        Ok(())
    }

    /// One attempt to move back: a replay pass while requests still go to
    /// memory, then a final pass with the gate held, then the switch.
    async fn try_recover(&self) -> StoreResult<()> {
        let started = Instant::now();
        let mut moved = *self.lock_moved();
        let first = self.replay(&mut moved).await;
        *self.lock_moved() = moved;
        first?;
        let _exclusive = self.gate.write().await;
        let last = self.replay(&mut moved).await;
        *self.lock_moved() = moved;
        last?;
        self.memory.clear();
        self.lock_journal().changes.clear();
        if let Some(disk) = &self.disk {
            if let Err(e) = disk.clear() {
                // Harmless: the next start replays it again, idempotently.
                tracing::error!(error = %e, "cannot empty the fallback journal");
            }
        }
        let migrated = Migrated {
            replay_ms: started.elapsed().as_millis() as u64,
            ..moved
        };
        *self.migrated.lock().unwrap_or_else(|p| p.into_inner()) = migrated;
        *self.lock_moved() = Migrated::default();
        let outage = self.lock_outage().take();
        self.in_fallback.store(false, Ordering::SeqCst);
        tracing::warn!(
            tokens = migrated.tokens,
            sessions = migrated.sessions,
            replay_ms = migrated.replay_ms,
            outage_since = outage.map(|o| o.since),
            "Redis is back: replayed the outage's writes, serving from Redis again"
        );
        Ok(())
    }

    fn lock_moved(&self) -> MutexGuard<'_, Migrated> {
        self.moved.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The background task that waits for an outage, then for Redis, then
/// replays; retried with capped jittered backoff if Redis fails again.
async fn recover_forever(
    inner: Weak<Inner>,
    entered_fallback: Arc<Notify>,
    mut connected: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut last_prune = Instant::now();
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if !strong.in_fallback.load(Ordering::SeqCst) {
            drop(strong);
            // Re-checked on a timer too, so the task ends with the store.
            let _ = tokio::time::timeout(Duration::from_secs(5), entered_fallback.notified()).await;
            continue;
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            strong.prune_expired();
            last_prune = Instant::now();
        }
        drop(strong);
        if !*connected.borrow_and_update() {
            let _ = tokio::time::timeout(Duration::from_secs(2), connected.changed()).await;
            continue;
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        match strong.try_recover().await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => {
                tracing::debug!(error = %e, "replay interrupted; staying on memory");
                drop(strong);
                let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
                tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Runs `$redis_op` on Redis unless in fallback; on failure switches to
/// fallback. Evaluates to `Some(result)` when Redis served the call.
macro_rules! via_redis {
    ($self:ident, $redis_op:expr) => {{
        let gate = $self.inner.gate.read().await;
        if $self.inner.in_fallback.load(Ordering::SeqCst) {
            (None, gate)
        } else {
            match $redis_op.await {
                Ok(value) => (Some(value), gate),
                Err(e) => {
                    $self.inner.enter_fallback(e.to_string());
                    (None, gate)
                }
            }
        }
    }};
}

#[async_trait]
impl Store for FallbackStore {
    async fn set(&self, key: &Key, value: &str, ttl: Duration) -> StoreResult<()> {
        let (served, _gate) = via_redis!(self, self.inner.redis.set(key, value, ttl));
        if let Some(v) = served {
            return Ok(v);
        }
        self.inner.memory.set(key, value, ttl).await?;
        self.inner.journal(key, Change::Put)
    }

    async fn set_if_absent(&self, key: &Key, value: &str, ttl: Duration) -> StoreResult<bool> {
        let (served, _gate) = via_redis!(self, self.inner.redis.set_if_absent(key, value, ttl));
        if let Some(v) = served {
            return Ok(v);
        }
        let written = self.inner.memory.set_if_absent(key, value, ttl).await?;
        if written {
            self.inner.journal(key, Change::Put)?;
        }
        Ok(written)
    }

    async fn get(&self, key: &Key) -> StoreResult<Option<String>> {
        let (served, _gate) = via_redis!(self, self.inner.redis.get(key));
        match served {
            Some(v) => Ok(v),
            None => self.inner.memory.get(key).await,
        }
    }

    async fn compare_and_swap(
        &self,
        key: &Key,
        expected: &str,
        new: Option<&str>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let (served, _gate) = via_redis!(
            self,
            self.inner.redis.compare_and_swap(key, expected, new, ttl)
        );
        if let Some(v) = served {
            return Ok(v);
        }
        let swapped = self
            .inner
            .memory
            .compare_and_swap(key, expected, new, ttl)
            .await?;
        if swapped {
            let change = match new {
                Some(_) => Change::Put,
                None => Change::Delete { at_ms: now_ms() },
            };
            self.inner.journal(key, change)?;
        }
        Ok(swapped)
    }

    async fn delete(&self, key: &Key) -> StoreResult<bool> {
        let (served, _gate) = via_redis!(self, self.inner.redis.delete(key));
        if let Some(v) = served {
            return Ok(v);
        }
        let deleted = self.inner.memory.delete(key).await?;
        // A tombstone even when memory had nothing: Redis may hold it.
        self.inner
            .journal(key, Change::Delete { at_ms: now_ms() })?;
        Ok(deleted)
    }

    async fn increment(&self, key: &Key, ttl: Duration) -> StoreResult<i64> {
        let (served, _gate) = via_redis!(self, self.inner.redis.increment(key, ttl));
        if let Some(v) = served {
            return Ok(v);
        }
        let value = self.inner.memory.increment(key, ttl).await?;
        self.inner.journal(key, Change::Put)?;
        Ok(value)
    }

    fn status(&self) -> StoreStatus {
        let mut status = self.inner.redis.status();
        status.migrated = *self
            .inner
            .migrated
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(outage) = self.inner.lock_outage().clone() {
            status.storage = StorageKind::Memory;
            status.fallback_reason = Some(outage.reason);
            status.since = outage.since;
            status.entries = Some(self.inner.memory.len());
            status.pending_replay = Some(self.inner.lock_journal().changes.len());
        }
        status
    }

    fn authoritative(&self) -> bool {
        !self.in_fallback()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::domain::Id;
    use crate::store::keys;

    struct NoTimes;
    impl Reconcile for NoTimes {
        fn written_at_ms(&self, _: &Key, _: &str) -> Option<u64> {
            None
        }
        fn on_delete(&self, _: &Key, _: &str) -> Vec<(Key, String, Duration)> {
            Vec::new()
        }
    }

    /// A fallback store whose Redis is a closed loopback port.
    async fn unreachable() -> FallbackStore {
        let env = [
            ("REDIS_URL", "redis://127.0.0.1:1"),
            ("REDIS_CONNECT_TIMEOUT", "100"),
            ("BROKER_CONFIG_DIR", "/nonexistent"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let settings = Settings::load_from(&env).unwrap();
        let redis = RedisStore::connect(settings.redis).await;
        let memory = MemoryStore::new(Duration::from_secs(60));
        FallbackStore::new(redis, memory, Arc::new(NoTimes), None).await
    }

    #[tokio::test]
    async fn expired_puts_leave_the_replay_queue_but_deletes_stay() {
        let store = unreachable().await;
        assert!(store.in_fallback());
        let short = keys::token(&Id::parse("short").unwrap());
        let long = keys::token(&Id::parse("long").unwrap());
        let gone = keys::token(&Id::parse("gone").unwrap());
        store
            .set(&short, "v", Duration::from_millis(20))
            .await
            .unwrap();
        store
            .set(&long, "v", Duration::from_secs(60))
            .await
            .unwrap();
        store.delete(&gone).await.unwrap();
        assert_eq!(store.status().pending_replay, Some(3));
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.inner.prune_expired();
        assert_eq!(store.status().pending_replay, Some(2));
        assert_eq!(store.status().storage, StorageKind::Memory);
    }
}
