//! The way back to Redis: a background task waits for an outage, then for
//! Redis to answer, then replays; a replay cut short by Redis failing again
//! is retried with capped, jittered backoff.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio::sync::{watch, Notify};

use super::Inner;
use crate::store::{Migrated, StoreResult};

/// How often a long outage's replay queue is pruned of expired puts.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

impl Inner {
    /// One attempt to move back: a replay pass while requests still go to
    /// memory, then a final pass with the gate held (so no write lands in
    /// memory between the last pass and the switch), then the switch.
    pub(super) async fn try_recover(&self) -> StoreResult<()> {
        let started = Instant::now();
        let mut moved = self.moved_so_far();
        let first = self.replay(&mut moved).await;
        self.keep_moved(moved);
        first?;
        let _exclusive = self.gate.write().await;
        let last = self.replay(&mut moved).await;
        self.keep_moved(moved);
        last?;
        self.memory.clear();
        self.lock_queue().clear();
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
        let outage = self.lock_mode().leave();
        {
            let mut totals = self.lock_totals();
            totals.to_redis += u64::from(outage.is_some());
            totals.replayed.add(&migrated);
        }
        tracing::warn!(
            tokens = migrated.tokens,
            sessions = migrated.sessions,
            revocations = migrated.revocations,
            counters = migrated.counters,
            replay_ms = migrated.replay_ms,
            outage_since = outage.map(|o| o.since),
            "Redis is back: replayed the outage's writes, serving from Redis again"
        );
        Ok(())
    }

    fn moved_so_far(&self) -> Migrated {
        self.lock_mode()
            .outage()
            .map(|o| o.moved)
            .unwrap_or_default()
    }

    fn keep_moved(&self, moved: Migrated) {
        if let Some(outage) = self.lock_mode().outage_mut() {
            outage.moved = moved;
        }
    }
}

/// The background task that waits for an outage, then for Redis, then
/// replays; retried with capped jittered backoff if Redis fails again.
pub(super) async fn recover_forever(
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
        if !strong.lock_mode().is_memory() {
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
                tracing::debug!(error = %crate::error::chain(&e), "replay interrupted; staying on memory");
                drop(strong);
                let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
                tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}
