//! One chunk on its way in. The body is written to a temp file as it
//! arrives (never held in memory: chunks reach tens of MB), then published
//! under a fresh index. While it is in flight a lease object sits in
//! storage, where a stop on any instance sees it and waits before merging:
//! the lease is written before the recording's state is checked, and a stop
//! changes the state before it looks for leases, so one of the two always
//! sees the other.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::AsyncWriteExt as _;

use super::service::Inner;
use super::storage::ObjectKey;
use super::RecordingError;
use crate::domain::Id;

/// A chunk being received; dropped without [`Upload::commit`] it leaves
/// nothing behind.
pub struct Upload {
    inner: Arc<Inner>,
    record: Id,
    lease: ObjectKey,
    temp: PathBuf,
    file: Option<tokio::fs::File>,
    written: usize,
}

impl Upload {
    /// Opens the temp file; the lease is already stored.
    pub(super) async fn open(
        inner: Arc<Inner>,
        record: Id,
        lease: ObjectKey,
    ) -> Result<Self, RecordingError> {
        let temp = inner
            .incoming
            .join(uuid::Uuid::new_v4().simple().to_string());
        let mut upload = Self {
            inner,
            record,
            lease,
            temp,
            file: None,
            written: 0,
        };
        upload.file = Some(
            tokio::fs::File::create(&upload.temp)
                .await
                .map_err(super::storage::StorageError)?,
        );
        Ok(upload)
    }

    /// Appends bytes; `ChunkTooLarge` past the configured limit.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), RecordingError> {
        let limit = self.inner.settings.max_chunk_bytes;
        if self.written + bytes.len() > limit {
            return Err(RecordingError::ChunkTooLarge(limit));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| RecordingError::Corrupt("upload already finished".into()))?;
        file.write_all(bytes)
            .await
            .map_err(super::storage::StorageError)?;
        self.written += bytes.len();
        Ok(())
    }

    /// Stores the chunk under a fresh index and releases the lease; the
    /// index is only returned once the chunk is durable.
    pub async fn commit(mut self) -> Result<u64, RecordingError> {
        if self.written == 0 {
            return Err(RecordingError::EmptyChunk);
        }
        if let Some(mut file) = self.file.take() {
            file.flush().await.map_err(super::storage::StorageError)?;
        }
        let index = self
            .inner
            .allocator
            .store_chunk(&self.record, &self.temp)
            .await?;
        self.inner.chunk_stored(self.written as u64);
        let _ = self.inner.chunks.delete(&self.lease).await;
        Ok(index)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.file.take();
        let temp = std::mem::take(&mut self.temp);
        let lease = self.lease.clone();
        let chunks = self.inner.chunks.clone();
        // Removing a consumed temp file or a released lease is a no-op.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::fs::remove_file(&temp).await;
                let _ = chunks.delete(&lease).await;
            });
        }
    }
}
