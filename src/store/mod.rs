//! Storage behind one trait: the in-memory maps now, Redis (single, cluster,
//! sentinel) and the fallback wrapper later. Everything the broker keeps is
//! a string value under a [`Key`] with a TTL, so each backend needs only a
//! handful of atomic operations that map one-to-one onto Redis commands.

pub mod fallback;
pub mod journal;
pub mod keys;
pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

pub use fallback::{FallbackStore, Reconcile};
pub use journal::{DiskJournal, Record};
pub use keys::{Key, KeyKind};
pub use memory::MemoryStore;
pub use redis::RedisStore;

/// The cause kept behind a [`StoreError`] for the log; never shown to clients.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why the store could not serve an operation. Two classes, because they
/// call for opposite reactions: an *outage* (Redis did not answer) is what
/// the memory fallback exists for; a *refusal* (Redis answered with an
/// error) is not, and serving it from memory would split the data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Outage: the backend did not answer (connection refused or dropped,
    /// no master known, a failover in progress).
    #[error("storage unavailable")]
    Unavailable(#[source] Cause),
    /// Outage: the backend took longer than the command timeout.
    #[error("storage command timed out after {0:?}")]
    Timeout(Duration),
    /// Refusal: Redis is at `maxmemory` under `noeviction` and refused a
    /// write. Clients may retry later (503), reads still work.
    #[error("Redis refused the write: out of memory")]
    OutOfMemory(#[source] Cause),
    /// Refusal: Redis answered with another error (`WRONGTYPE`, a script
    /// error) or a reply of the wrong shape. A bug or foreign data (500).
    #[error("Redis rejected the command")]
    Rejected(#[source] Cause),
}

impl StoreError {
    /// An outage with a reason of our own (no Redis error behind it).
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable(reason.into().into())
    }

    /// A refusal with a reason of our own.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::Rejected(reason.into().into())
    }

    /// True when the backend did not answer: the fallback's trigger (SPEC
    /// section 10). Refusals are answered, never served from memory.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Timeout(_))
    }

    /// What a client is told: fixed text, no Redis or sentinel output.
    pub fn public_detail(&self) -> &'static str {
        match self {
            Self::Unavailable(_) | Self::Timeout(_) => {
                "storage is unavailable; retry after the Retry-After delay"
            }
            Self::OutOfMemory(_) => {
                "Redis is out of memory and refused the write; retry after the Retry-After delay"
            }
            Self::Rejected(_) => "internal error; see the broker's log",
        }
    }
}

/// What every store operation returns.
pub type StoreResult<T> = Result<T, StoreError>;

/// The atomic operations every backend provides. Each maps to one Redis
/// command or script on a single key, so it works unchanged in cluster mode.
/// Every value has a TTL: nothing the broker stores lives forever.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `SET key value PX ttl`: writes or replaces the value.
    async fn set(&self, key: &Key, value: &str, ttl: Duration) -> StoreResult<()>;

    /// `SET key value NX PX ttl`: writes only if absent; true when written.
    async fn set_if_absent(&self, key: &Key, value: &str, ttl: Duration) -> StoreResult<bool>;

    /// `GET key`.
    async fn get(&self, key: &Key) -> StoreResult<Option<String>>;

    /// Replaces the value only if it still equals `expected` (an optimistic
    /// update of a record): `Some(new)` writes with a fresh TTL, `None`
    /// deletes. True when the key now holds what the caller asked for: the
    /// swap happened, or (a retry after a dropped connection) the key
    /// already holds `new` / is already gone, so a swap that did apply is
    /// never reported as lost.
    async fn compare_and_swap(
        &self,
        key: &Key,
        expected: &str,
        new: Option<&str>,
        ttl: Duration,
    ) -> StoreResult<bool>;

    /// `DEL key`; true when something was removed.
    async fn delete(&self, key: &Key) -> StoreResult<bool>;

    /// `INCR key`, setting `ttl` when the counter is created; returns the
    /// new value. Applied exactly once even when the connection drops
    /// mid-command and the call is retried. A non-integer value is
    /// [`StoreError::Rejected`], as Redis refuses it.
    async fn increment(&self, key: &Key, ttl: Duration) -> StoreResult<i64>;

    /// Moves a counter up to at least `floor` (an atomic maximum, never
    /// down), setting `ttl` when it creates the counter; returns the value
    /// it holds afterwards.
    async fn advance_to(&self, key: &Key, floor: i64, ttl: Duration) -> StoreResult<i64>;

    /// What health and `/api/storage/status` report about this backend.
    fn status(&self) -> StoreStatus;

    /// False while serving from a fallback that may lack records the real
    /// backend holds: a miss is then not proof of absence, and a write that
    /// needs an existing record must not invent one.
    fn authoritative(&self) -> bool {
        true
    }
}

/// Which kind of storage is serving right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Memory,
    Redis,
}

/// A snapshot of the backend's state for operators.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    pub storage: StorageKind,
    /// `single`, `cluster` or `sentinel`; `None` for the in-memory store.
    pub mode: Option<&'static str>,
    pub connected: bool,
    /// Current master (sentinel mode).
    pub master: Option<String>,
    /// `cluster_state` from `CLUSTER INFO` (cluster mode).
    pub cluster_state: Option<String>,
    /// The last connection or command error while disconnected.
    pub last_error: Option<String>,
    /// Why the broker is serving from memory although Redis is configured.
    pub fallback_reason: Option<String>,
    /// Unix seconds since this state holds.
    pub since: u64,
    /// Entries held in memory (in-memory store only).
    pub entries: Option<usize>,
    /// Outage writes waiting to be replayed into Redis (fallback only).
    pub pending_replay: Option<usize>,
    /// What was replayed into Redis after the last outage.
    pub migrated: Migrated,
    /// Switches and replays since start (fallback only; for metrics).
    pub fallback_totals: FallbackTotals,
}

/// Since start: switches to memory and back, and everything replayed.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FallbackTotals {
    pub to_memory: u64,
    pub to_redis: u64,
    pub replayed: Migrated,
}

impl Migrated {
    /// Adds another replay's counts (not the time).
    pub fn add(&mut self, other: &Migrated) {
        self.tokens += other.tokens;
        self.sessions += other.sessions;
        self.revocations += other.revocations;
        self.counters += other.counters;
        self.recordings += other.recordings;
    }
}

/// Counts of records moved from memory back to Redis after an outage, one
/// per [`KeyKind`].
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct Migrated {
    pub tokens: u64,
    pub sessions: u64,
    pub revocations: u64,
    pub counters: u64,
    pub recordings: u64,
    /// How long the last replay took, from Redis answering to the switch.
    pub replay_ms: u64,
}

impl Migrated {
    /// Counts one replayed record of `kind`.
    pub fn count(&mut self, kind: KeyKind) {
        let field = match kind {
            KeyKind::Token => &mut self.tokens,
            KeyKind::Session => &mut self.sessions,
            KeyKind::Revocation => &mut self.revocations,
            KeyKind::Counter => &mut self.counters,
            KeyKind::Recording => &mut self.recordings,
        };
        *field += 1;
    }
}
