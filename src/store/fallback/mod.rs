//! Serving from memory while Redis is gone, and moving back when it returns
//! (SPEC section 10).
//!
//! Every operation goes to Redis while it answers. The first one that meets
//! an outage (refused connection, command timeout, no master known)
//! switches the store to memory and is itself served from there; later ones
//! go straight to memory, and every write is queued for replay (a put, or a
//! tombstone for a delete) and, when configured, journaled on disk. An error
//! Redis *answers* with (out of memory, wrong type) is not an outage: it is
//! returned to the caller and the store stays on Redis.
//!
//! The jobs live apart: `mode` (which store serves), `queue` (what awaits
//! replay), `replay` (each kind's conflict rule), `recover` (the task that
//! moves back); this file routes operations and journals them.

mod mode;
mod queue;
mod recover;
mod replay;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, RwLock, RwLockReadGuard};

use self::mode::Mode;
use self::queue::{Change, ReplayQueue};
pub use self::replay::Reconcile;
use super::{
    DiskJournal, Key, MemoryStore, Migrated, Record, RedisStore, StorageKind, Store, StoreError,
    StoreResult, StoreStatus,
};

/// Redis with an in-memory fallback; cheap to clone.
#[derive(Clone)]
pub struct FallbackStore {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisStore,
    memory: MemoryStore,
    reconcile: Arc<dyn Reconcile>,
    /// Write-locked only to switch from memory back to Redis.
    gate: RwLock<()>,
    mode: Mutex<Mode>,
    queue: Mutex<ReplayQueue>,
    /// What the last completed replay moved.
    migrated: Mutex<Migrated>,
    totals: Mutex<crate::store::FallbackTotals>,
    entered_fallback: Arc<Notify>,
    /// The outage's writes on disk, when `storage.journal_path` is set.
    disk: Option<DiskJournal>,
}

/// Where an operation is served: Redis already answered it, or memory must
/// (holding the gate, so the switch back waits for it).
enum Route<'a, T> {
    Served(StoreResult<T>),
    Memory(RwLockReadGuard<'a, ()>),
}

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
        let inner = Arc::new(Inner {
            redis,
            memory,
            reconcile,
            gate: RwLock::new(()),
            mode: Mutex::new(Mode::default()),
            queue: Mutex::new(ReplayQueue::default()),
            migrated: Mutex::new(Migrated::default()),
            totals: Mutex::default(),
            entered_fallback: Arc::new(Notify::new()),
            disk,
        });
        if !earlier.is_empty() {
            let count = earlier.len();
            inner.load(earlier).await;
            tracing::warn!(
                records = count,
                "journal of an earlier run found: replaying it"
            );
            inner.enter_fallback("replaying the journal of an earlier run".into());
        }
        if !inner.redis.is_connected() {
            inner.enter_fallback("Redis not reachable at start-up".into());
        }
        tokio::spawn(recover::recover_forever(
            Arc::downgrade(&inner),
            inner.entered_fallback.clone(),
            connected,
        ));
        Self { inner }
    }

    /// Whether requests are being served from memory right now.
    pub fn in_fallback(&self) -> bool {
        self.inner.lock_mode().is_memory()
    }

    /// Runs `on_redis` unless memory serves; an outage switches to memory
    /// and routes the call there, a refusal is the caller's answer.
    async fn route<T>(&self, on_redis: impl Future<Output = StoreResult<T>>) -> Route<'_, T> {
        let gate = self.inner.gate.read().await;
        if self.inner.lock_mode().is_memory() {
            return Route::Memory(gate);
        }
        match on_redis.await {
            Err(e) if e.is_outage() => {
                self.inner.enter_fallback(crate::error::chain(&e));
                Route::Memory(gate)
            }
            result => Route::Served(result),
        }
    }
}

impl Inner {
    fn lock_queue(&self) -> MutexGuard<'_, ReplayQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_totals(&self) -> MutexGuard<'_, crate::store::FallbackTotals> {
        self.totals.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_mode(&self) -> MutexGuard<'_, Mode> {
        self.mode.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Switches to memory; logs once per outage. Needs no exclusive gate:
    /// a call still finishing on Redis meanwhile is harmless (Redis took
    /// it); only the switch back must exclude memory writes.
    fn enter_fallback(&self, reason: String) {
        if self.lock_mode().enter(reason.clone()) {
            self.lock_totals().to_memory += 1;
            tracing::warn!(reason = %reason, "Redis unavailable: serving from memory until it returns");
            self.entered_fallback.notify_one();
        }
    }

    /// Records a memory write for replay, on disk first when configured.
    fn journal(&self, key: &Key, change: Change) -> StoreResult<()> {
        if let Some(disk) = &self.disk {
            if let Some(record) = self.record(key, change) {
                disk.append(&record).map_err(|e| {
                    tracing::error!(error = %e, path = %disk.path().display(), "cannot write the fallback journal");
                    StoreError::Unavailable(Box::new(e))
                })?;
            }
        }
        self.lock_queue().push(key, change);
        Ok(())
    }

    /// The disk form of a change; `None` for a put already expired.
    fn record(&self, key: &Key, change: Change) -> Option<Record> {
        let (name, kind) = (key.as_str().to_string(), Some(key.kind()));
        match change {
            Change::Put => self
                .memory
                .entry(key)
                .map(|(value, remaining)| Record::Put {
                    key: name,
                    kind,
                    value,
                    expires_at_ms: now_ms() + remaining.as_millis() as u64,
                }),
            Change::Delete { at_ms } => Some(Record::Delete {
                key: name,
                kind,
                at_ms,
            }),
        }
    }

    /// Forgets queued puts whose value already expired in memory, so a long
    /// outage does not keep an entry for every key ever written.
    fn prune_expired(&self) {
        self.lock_queue()
            .retain_live(|key| self.memory.entry(key).is_some());
    }

    /// Puts an earlier run's journal back into memory and the replay queue
    /// (later records override earlier ones, as they did when written).
    async fn load(&self, records: Vec<Record>) {
        let now = now_ms();
        for record in records {
            let Some(key) = record.key() else {
                tracing::error!(?record, "journal record of no known kind: skipped");
                continue;
            };
            match record {
                Record::Put {
                    value,
                    expires_at_ms,
                    ..
                } if expires_at_ms > now => {
                    let ttl = Duration::from_millis(expires_at_ms - now);
                    let _ = self.memory.set(&key, &value, ttl).await;
                    self.lock_queue().push(&key, Change::Put);
                }
                Record::Put { .. } => {} // expired while the broker was down
                Record::Delete { at_ms, .. } => {
                    let _ = self.memory.delete(&key).await;
                    self.lock_queue().push(&key, Change::Delete { at_ms });
                }
            }
        }
    }
}

#[async_trait]
impl Store for FallbackStore {
    async fn set(&self, key: &Key, value: &str, ttl: Duration) -> StoreResult<()> {
        match self.route(self.inner.redis.set(key, value, ttl)).await {
            Route::Served(result) => result,
            Route::Memory(_gate) => {
                self.inner.memory.set(key, value, ttl).await?;
                self.inner.journal(key, Change::Put)
            }
        }
    }

    async fn set_if_absent(&self, key: &Key, value: &str, ttl: Duration) -> StoreResult<bool> {
        let redis = self.inner.redis.set_if_absent(key, value, ttl);
        match self.route(redis).await {
            Route::Served(result) => result,
            Route::Memory(_gate) => {
                let written = self.inner.memory.set_if_absent(key, value, ttl).await?;
                if written {
                    self.inner.journal(key, Change::Put)?;
                }
                Ok(written)
            }
        }
    }

    async fn get(&self, key: &Key) -> StoreResult<Option<String>> {
        match self.route(self.inner.redis.get(key)).await {
            Route::Served(result) => result,
            Route::Memory(_gate) => self.inner.memory.get(key).await,
        }
    }

    async fn compare_and_swap(
        &self,
        key: &Key,
        expected: &str,
        new: Option<&str>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let redis = self.inner.redis.compare_and_swap(key, expected, new, ttl);
        match self.route(redis).await {
            Route::Served(result) => result,
            Route::Memory(_gate) => {
                let memory = &self.inner.memory;
                let swapped = memory.compare_and_swap(key, expected, new, ttl).await?;
                if swapped {
                    let change = match new {
                        Some(_) => Change::Put,
                        None => Change::Delete { at_ms: now_ms() },
                    };
                    self.inner.journal(key, change)?;
                }
                Ok(swapped)
            }
        }
    }

    async fn delete(&self, key: &Key) -> StoreResult<bool> {
        match self.route(self.inner.redis.delete(key)).await {
            Route::Served(result) => result,
            Route::Memory(_gate) => {
                let deleted = self.inner.memory.delete(key).await?;
                // A tombstone even when memory had nothing: Redis may hold it.
                self.inner
                    .journal(key, Change::Delete { at_ms: now_ms() })?;
                Ok(deleted)
            }
        }
    }

    async fn increment(&self, key: &Key, ttl: Duration) -> StoreResult<i64> {
        match self.route(self.inner.redis.increment(key, ttl)).await {
            Route::Served(result) => result,
            Route::Memory(_gate) => {
                let value = self.inner.memory.increment(key, ttl).await?;
                self.inner.journal(key, Change::Put)?;
                Ok(value)
            }
        }
    }

    async fn advance_to(&self, key: &Key, floor: i64, ttl: Duration) -> StoreResult<i64> {
        match self
            .route(self.inner.redis.advance_to(key, floor, ttl))
            .await
        {
            Route::Served(result) => result,
            Route::Memory(_gate) => {
                let value = self.inner.memory.advance_to(key, floor, ttl).await?;
                self.inner.journal(key, Change::Put)?;
                Ok(value)
            }
        }
    }

    fn status(&self) -> StoreStatus {
        let mut status = self.inner.redis.status();
        status.fallback_totals = *self.inner.lock_totals();
        status.migrated = *self
            .inner
            .migrated
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(outage) = self.inner.lock_mode().outage() {
            status.storage = StorageKind::Memory;
            status.fallback_reason = Some(outage.reason.clone());
            status.since = outage.since;
            status.entries = Some(self.inner.memory.len());
            status.pending_replay = Some(self.inner.lock_queue().len());
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
