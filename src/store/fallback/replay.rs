//! Moving the outage's writes into Redis, each kind by its own rule:
//! records (tokens, sessions, revocations) by "the newer write wins",
//! tombstones by "a delete wins over anything older", counters by the
//! maximum of memory and Redis (a counter never goes backwards). Every step
//! is idempotent, so a replay cut short and repeated gives the same result.

use std::time::Duration;

use futures_util::StreamExt as _;

use super::queue::Change;
use super::Inner;
use crate::store::{Key, KeyKind, Migrated, Store, StoreError, StoreResult};

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

/// Keys replayed at once: enough to hide Redis round trips, few enough not
/// to crowd out live traffic.
const REPLAY_CONCURRENCY: usize = 32;

/// Attempts at one key when other writers keep changing it in Redis.
const CONTENDED_ATTEMPTS: usize = 16;

impl Inner {
    /// Replays every queued change into Redis, `REPLAY_CONCURRENCY` keys at
    /// a time (keys are independent); stops at the first Redis failure,
    /// leaving what was not replayed queued. Counts what moved into `moved`.
    pub(super) async fn replay(&self, moved: &mut Migrated) -> StoreResult<()> {
        let pending = self.lock_queue().pending();
        let mut results = futures_util::stream::iter(pending)
            .map(|item| async move {
                let outcome = match item.change {
                    Change::Put => self.replay_put(&item.key).await,
                    Change::Delete { at_ms } => {
                        self.replay_delete(&item.key, at_ms).await.map(|()| false)
                    }
                };
                (item, outcome)
            })
            .buffer_unordered(REPLAY_CONCURRENCY);
        while let Some((item, outcome)) = results.next().await {
            match outcome {
                Ok(was_moved) => {
                    if was_moved {
                        moved.count(item.key.kind());
                    }
                }
                // Redis is gone again or full: try the whole pass later.
                Err(e) if !matches!(e, StoreError::Rejected(_)) => return Err(e),
                // Redis refuses this one key (e.g. foreign data of another
                // type under it): retrying cannot help, and it must not
                // keep the instance in fallback forever.
                Err(e) => tracing::error!(
                    key = %item.key,
                    error = %crate::error::chain(&e),
                    "Redis refuses this outage write; it is not replayed"
                ),
            }
            self.lock_queue().forget(&item);
        }
        Ok(())
    }

    /// Puts the memory value into Redis by its kind's rule; true when Redis
    /// now holds it.
    async fn replay_put(&self, key: &Key) -> StoreResult<bool> {
        let Some((value, remaining)) = self.memory.entry(key) else {
            return Ok(false); // expired during the outage: not replayed
        };
        match key.kind() {
            KeyKind::Counter => self.replay_counter(key, &value, remaining).await,
            KeyKind::Token | KeyKind::Session | KeyKind::Revocation | KeyKind::Recording => {
                self.replay_record(key, &value, remaining).await
            }
        }
    }

    /// A counter takes the maximum of memory and Redis: the outage's value
    /// must not move Redis's counter back, nor Redis's hide the outage's.
    async fn replay_counter(&self, key: &Key, value: &str, ttl: Duration) -> StoreResult<bool> {
        let Ok(ours) = value.parse::<i64>() else {
            tracing::error!(key = %key, "not replaying a counter that is not an integer");
            return Ok(false);
        };
        self.redis.advance_to(key, ours, ttl).await?;
        Ok(true)
    }

    /// Writes the record unless Redis holds a newer one.
    async fn replay_record(&self, key: &Key, value: &str, ttl: Duration) -> StoreResult<bool> {
        let ours = self.reconcile.written_at_ms(key, value);
        for _ in 0..CONTENDED_ATTEMPTS {
            let written = match self.redis.get(key).await? {
                None => self.redis.set_if_absent(key, value, ttl).await?,
                Some(current) if current == value => return Ok(true),
                Some(current) => {
                    let theirs = self.reconcile.written_at_ms(key, &current);
                    if let (Some(theirs), Some(ours)) = (theirs, ours) {
                        if theirs > ours {
                            return Ok(false); // Redis has a newer write
                        }
                    }
                    self.redis
                        .compare_and_swap(key, &current, Some(value), ttl)
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
        for _ in 0..CONTENDED_ATTEMPTS {
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
}
