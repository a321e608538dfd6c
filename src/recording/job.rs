//! Background work: the merge of a stopped recording, and its claim.
//!
//! A merge waits until no upload is in flight on any instance (their leases
//! are gone, or older than an upload may take), takes the chunks in index
//! order, has the merger build the result in a work folder, stores it under
//! a random download key, and only then marks the record `ready` and drops
//! the chunks. Progress goes to the recording's sockets as it happens and
//! into the record about once a second.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::events::RecordingEvent;
use super::merger::MergeError;
use super::record::{Record, RecordState};
use super::service::Inner;
use super::storage::{ObjectKey, ObjectMeta};
use super::RecordingError;
use crate::domain::Id;

const LEASE_POLL: Duration = Duration::from_millis(50);
/// A lease older than the upload timeout plus this is left by a dead instance.
pub(super) const LEASE_GRACE: Duration = Duration::from_secs(5);
const PROGRESS_STORE_EVERY: Duration = Duration::from_secs(1);
/// How often a merging instance says it is alive in the record...
const MERGE_KEEPALIVE: Duration = Duration::from_secs(2);
/// ...and after how long without that another instance takes it over.
pub(super) const MERGE_STALE_MS: u64 = 10_000;
/// How long a finished merge keeps trying to record its outcome (a Redis
/// failover may be in progress).
const OUTCOME_RETRY_FOR: Duration = Duration::from_secs(60);

/// What a good merge produced.
struct Done {
    download_key: Id,
    duration_s: f64,
    size_bytes: u64,
    chunks: u64,
    bytes: u64,
    stored: Vec<ObjectMeta>,
}

/// Marks the recording `merging` and starts its merge on this instance,
/// when `stopping` a recording that still takes chunks, or when the
/// instance running its merge stopped saying it is alive (it died). The
/// compare-and-swap lets one claimant win. Returns the record as it
/// stands, and whether this call claimed it.
pub(super) async fn claim(
    inner: &Arc<Inner>,
    id: &Id,
    stopping: bool,
) -> Result<(Record, bool), RecordingError> {
    let mut claimed = false;
    let updated = inner
        .update(id, |r| {
            let now = crate::clock::unix_now_ms();
            let abandoned = r.merge_abandoned(now, MERGE_STALE_MS);
            claimed = (stopping && !r.is_stopped()) || abandoned;
            if abandoned {
                tracing::warn!(record_id = %id, "merge abandoned by its instance; taking it over");
            }
            if claimed {
                r.state = RecordState::Merging;
                r.progress = 0;
                r.merge_alive_ms = Some(now);
            }
            claimed
        })
        .await?;
    if claimed {
        tokio::spawn(merge(inner.clone(), id.clone()));
    }
    Ok((updated, claimed))
}

/// Merges a stopped recording and records the outcome.
#[tracing::instrument(skip_all, fields(record_id = %id))]
pub(super) async fn merge(inner: Arc<Inner>, id: Id) {
    let started = Instant::now();
    let keepalive = tokio::spawn(keep_alive(inner.clone(), id.clone()));
    let built = build(&inner, &id).await;
    keepalive.abort();
    match built {
        Ok(done) => finish_ready(&inner, &id, done, started).await,
        Err(error) => finish_failed(&inner, &id, error).await,
    }
}

async fn build(inner: &Arc<Inner>, id: &Id) -> Result<Done, Failure> {
    wait_for_uploads(inner, id).await?;
    let stored: Vec<ObjectMeta> = inner
        .chunks
        .list(&ObjectKey::chunks_of(id))
        .await?
        .into_iter()
        .filter(|m| m.key.chunk_index().is_some())
        .collect();
    if stored.is_empty() {
        return Err(Failure::Merge(MergeError::NoChunks));
    }
    let merger = inner
        .merger
        .as_ref()
        .map_err(|reason| Failure::Unavailable(reason.clone()))?;
    let work = WorkDir::create(inner.work.join(uuid::Uuid::new_v4().simple().to_string())).await?;
    let mut files = Vec::with_capacity(stored.len());
    for (i, meta) in stored.iter().enumerate() {
        let dest = work.0.join(format!("{i:010}.webm"));
        inner.chunks.fetch_to(&meta.key, &dest).await?;
        files.push(dest);
    }
    let (progress_tx, progress_rx) = watch::channel(0u8);
    let reporter = tokio::spawn(report_progress(inner.clone(), id.clone(), progress_rx));
    let report = move |p: u8| {
        let _ = progress_tx.send(p);
    };
    let merged = merger.merge(&files, &work.0, &report).await;
    reporter.abort();
    let merged = merged.map_err(Failure::Merge)?;
    let download_key = Id::parse(&uuid::Uuid::new_v4().simple().to_string())
        .map_err(|_| Failure::Internal("download key".into()))?;
    inner
        .outputs
        .put(&ObjectKey::output(&download_key), &merged.path)
        .await?;
    Ok(Done {
        download_key,
        duration_s: merged.duration_s,
        size_bytes: merged.size_bytes,
        chunks: stored.len() as u64,
        bytes: stored.iter().map(|m| m.size).sum(),
        stored,
    })
}

/// Says in the record, every [`MERGE_KEEPALIVE`], that this instance is
/// still merging.
async fn keep_alive(inner: Arc<Inner>, id: Id) {
    let mut tick = tokio::time::interval(MERGE_KEEPALIVE);
    tick.tick().await;
    loop {
        tick.tick().await;
        let _ = inner
            .update(&id, |r| {
                let merging = r.state == RecordState::Merging;
                if merging {
                    r.merge_alive_ms = Some(crate::clock::unix_now_ms());
                }
                merging
            })
            .await;
    }
}

/// Waits until no upload of the recording is in flight anywhere.
async fn wait_for_uploads(inner: &Inner, id: &Id) -> Result<(), Failure> {
    let stale_after = Duration::from_secs(inner.settings.upload_timeout_seconds) + LEASE_GRACE;
    let deadline = Instant::now() + stale_after;
    loop {
        let leases = inner.chunks.list(&ObjectKey::leases_of(id)).await?;
        let now = SystemTime::now();
        let live = leases.iter().any(|l| {
            now.duration_since(l.modified)
                .map_or(true, |age| age < stale_after)
        });
        if !live || Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(LEASE_POLL).await;
    }
}

/// Forwards progress to the sockets at once and to the record about once
/// a second (so a status on another instance moves too).
async fn report_progress(inner: Arc<Inner>, id: Id, mut rx: watch::Receiver<u8>) {
    let mut stored_at = Instant::now();
    while rx.changed().await.is_ok() {
        let progress = *rx.borrow_and_update();
        inner.events.publish(
            &id,
            RecordingEvent::MergeProgress {
                record_id: id.clone(),
                progress,
            },
        );
        if stored_at.elapsed() >= PROGRESS_STORE_EVERY {
            stored_at = Instant::now();
            let _ = inner
                .update(&id, |r| {
                    let moved = r.state == RecordState::Merging && r.progress < progress;
                    if moved {
                        r.progress = progress;
                    }
                    moved
                })
                .await;
        }
    }
}

async fn finish_ready(inner: &Inner, id: &Id, done: Done, started: Instant) {
    let outcome = retry_update(inner, id, |r| {
        // Another instance that took the merge over may have finished first.
        if r.state != RecordState::Merging {
            return false;
        }
        r.state = RecordState::Ready;
        r.progress = 100;
        r.chunks = Some(done.chunks);
        r.bytes = Some(done.bytes);
        r.duration_s = Some(done.duration_s);
        r.size_bytes = Some(done.size_bytes);
        r.download_key = Some(done.download_key.clone());
        r.error = None;
        r.merge_alive_ms = None;
        true
    })
    .await;
    let record = match outcome {
        Ok(record) => record,
        Err(e) => {
            tracing::error!(error = %crate::error::chain(&e), "merge done but its outcome could not be stored");
            inner.merges_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    if record.download_key.as_ref() != Some(&done.download_key) {
        tracing::info!("the recording was finished by another instance; dropping this result");
        let _ = inner
            .outputs
            .delete(&ObjectKey::output(&done.download_key))
            .await;
        return;
    }
    inner.merges_ready.fetch_add(1, Ordering::Relaxed);
    if let Some(histogram) = &inner.merge_seconds {
        histogram.observe(started.elapsed().as_secs_f64());
    }
    tracing::info!(
        chunks = done.chunks,
        bytes = done.bytes,
        duration_s = done.duration_s,
        merge_ms = started.elapsed().as_millis() as u64,
        "recording ready"
    );
    inner.events.publish(
        id,
        RecordingEvent::Ready {
            record_id: id.clone(),
            download_url: inner.download_url(&done.download_key),
            duration_s: done.duration_s,
            size_bytes: done.size_bytes,
        },
    );
    if inner.settings.cleanup_chunks {
        for meta in &done.stored {
            if let Err(e) = inner.chunks.delete(&meta.key).await {
                tracing::warn!(key = meta.key.as_str(), error = %e, "could not remove a merged chunk");
            }
        }
    }
}

async fn finish_failed(inner: &Inner, id: &Id, failure: Failure) {
    let code = failure.code();
    tracing::warn!(code, error = %failure.detail(), "recording merge failed");
    inner.merges_failed.fetch_add(1, Ordering::Relaxed);
    let outcome = retry_update(inner, id, |r| {
        if r.state != RecordState::Merging {
            return false;
        }
        r.state = RecordState::Failed;
        r.error = Some(code.to_string());
        r.merge_alive_ms = None;
        true
    })
    .await;
    // Not when another instance's merge finished it meanwhile.
    if outcome.is_ok_and(|r| r.state == RecordState::Failed) {
        inner.events.publish(
            id,
            RecordingEvent::Error {
                record_id: id.clone(),
                error: code.to_string(),
            },
        );
    }
}

/// An update that outlasts a Redis failover.
async fn retry_update(
    inner: &Inner,
    id: &Id,
    change: impl FnMut(&mut super::Record) -> bool + Clone,
) -> Result<super::Record, RecordingError> {
    let until = Instant::now() + OUTCOME_RETRY_FOR;
    loop {
        match inner.update(id, change.clone()).await {
            Ok(record) => return Ok(record),
            Err(e) if Instant::now() < until && retryable(&e) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn retryable(e: &RecordingError) -> bool {
    match e {
        RecordingError::Store(e) => e.is_outage(),
        RecordingError::Contended | RecordingError::OnlyInRedis => true,
        _ => false,
    }
}

/// Why a merge did not produce a recording.
#[derive(Debug)]
enum Failure {
    Merge(MergeError),
    Storage(super::storage::StorageError),
    Unavailable(String),
    Internal(String),
}

impl From<super::storage::StorageError> for Failure {
    fn from(e: super::storage::StorageError) -> Self {
        Self::Storage(e)
    }
}

impl Failure {
    /// The `error` of the status and of `recordingError`.
    fn code(&self) -> &'static str {
        match self {
            Self::Merge(MergeError::NoChunks) => "no_chunks",
            Self::Merge(MergeError::NotWebm) => "invalid_media",
            Self::Merge(MergeError::Timeout(_)) => "merge_timeout",
            Self::Merge(_) => "merge_failed",
            Self::Storage(_) | Self::Internal(_) => "storage_error",
            Self::Unavailable(_) => "merge_unavailable",
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Merge(e) => e.to_string(),
            Self::Storage(e) => crate::error::chain(e),
            Self::Unavailable(s) | Self::Internal(s) => s.clone(),
        }
    }
}

/// A merge's folder, removed with everything in it when the merge ends.
struct WorkDir(PathBuf);

impl WorkDir {
    async fn create(path: PathBuf) -> Result<Self, Failure> {
        tokio::fs::create_dir_all(&path)
            .await
            .map_err(|e| Failure::Storage(e.into()))?;
        Ok(Self(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
