//! Chunk indices that never collide, across instances and failovers.
//!
//! The index comes from `INCR recording:<id>:chunk_index` (first chunk 0),
//! shared by every instance. Redis alone cannot promise uniqueness: a
//! failover can drop the last increments (replication is asynchronous) and
//! a memory fallback counts from zero. So the storage is the fence: a chunk
//! is published with an exclusive create, and a name that already exists
//! means the counter went backwards. Then the counter is moved past the
//! highest stored index with an atomic maximum (never a blind `SET`, which
//! could move it back again under a concurrent writer) and the chunk is
//! stored under a fresh index. An acknowledged chunk is never replaced.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::storage::{ObjectKey, ObjectStore};
use super::RecordingError;
use crate::domain::Id;
use crate::store::{keys, Store};

/// Collisions one chunk may meet before the upload gives up (503): each
/// repair moves the counter past every stored index, so more than a few in
/// a row means another writer keeps racing us, not a stale counter.
const MAX_ATTEMPTS: usize = 16;

/// Hands out indices and publishes chunks under them.
pub(super) struct Allocator {
    pub store: Arc<dyn Store>,
    pub chunks: Arc<dyn ObjectStore>,
    pub counter_ttl: Duration,
    pub max_chunks: u64,
    /// Collisions detected and repaired (for metrics and health).
    pub repaired: AtomicU64,
}

impl Allocator {
    /// Stores the file at `body` as the recording's next chunk; returns its
    /// index. The file is consumed on success.
    pub async fn store_chunk(&self, record: &Id, body: &Path) -> Result<u64, RecordingError> {
        let counter = keys::recording_chunk_index(record);
        for _ in 0..MAX_ATTEMPTS {
            let next = self.store.increment(&counter, self.counter_ttl).await?;
            let index = u64::try_from(next - 1).map_err(|_| {
                RecordingError::Corrupt(format!("chunk counter {counter} holds {next}"))
            })?;
            if index >= self.max_chunks {
                return Err(RecordingError::TooManyChunks(self.max_chunks));
            }
            if self
                .chunks
                .put_new(&ObjectKey::chunk(record, index), body)
                .await?
            {
                return Ok(index);
            }
            self.repair(record, index).await?;
        }
        Err(RecordingError::Contended)
    }

    /// `index` was taken: the counter is behind the stored chunks. Moves it
    /// past the highest one.
    async fn repair(&self, record: &Id, taken: u64) -> Result<(), RecordingError> {
        let highest = self.highest_stored(record).await?.max(taken);
        let floor = i64::try_from(highest + 1).unwrap_or(i64::MAX);
        let counter = keys::recording_chunk_index(record);
        let now = self
            .store
            .advance_to(&counter, floor, self.counter_ttl)
            .await?;
        self.repaired.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            record_id = %record,
            taken,
            highest,
            counter = now,
            "chunk index already stored: the counter went backwards (failover or fallback); \
             moved it past the highest stored index"
        );
        Ok(())
    }

    /// The highest index stored for the recording (0 when none).
    async fn highest_stored(&self, record: &Id) -> Result<u64, RecordingError> {
        let listed = self.chunks.list(&ObjectKey::chunks_of(record)).await?;
        Ok(listed
            .iter()
            .filter_map(|m| m.key.chunk_index())
            .max()
            .unwrap_or(0))
    }
}
