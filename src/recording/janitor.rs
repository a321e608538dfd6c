//! Housekeeping every instance does for the whole fleet, since chunks and
//! results live on storage they share:
//!
//! - the retention sweep (finished recordings and abandoned chunks older
//!   than `recordings.retention_hours`; their state in the store expires by
//!   its TTL), at start-up and then periodically;
//! - leftovers of a crash: chunk bodies an instance was receiving
//!   (`.incoming`) and merge work folders (`.merge`) that nothing has
//!   touched for longer than an upload or a merge may take, plus a grace
//!   for clocks of hosts sharing the volume;
//! - merges abandoned by a dead instance: every [`ADOPT_EVERY`], the
//!   record of each recording with chunks is read (a `ready` or `failed`
//!   one only once), and one found
//!   `merging` without a keepalive for [`MERGE_STALE_MS`] is claimed and
//!   merged here, so its clients get their file without retrying the stop.
//!   Skipped while the store serves from a fallback: the keepalives of the
//!   other instances cannot be seen then.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use super::job::{claim, LEASE_GRACE, MERGE_STALE_MS};
use super::record::RecordState;
use super::service::Inner;
use super::storage::{ObjectKey, ObjectMeta, StorageError};
use super::RecordingError;
use crate::domain::Id;

/// How often each instance looks for abandoned merges.
pub(super) const ADOPT_EVERY: Duration = Duration::from_secs(5);

/// Added to the upload and merge timeouts before a leftover counts as one.
const LEFTOVER_GRACE: Duration = Duration::from_secs(3600);

/// Starts the sweep and the abandoned-merge watch; both end with the
/// recordings' last handle.
pub(super) fn start(inner: Arc<Inner>) {
    let every =
        (inner.settings.retention() / 24).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    every_while_alive(Arc::downgrade(&inner), every, |inner| async move {
        if let Err(e) = sweep(&inner).await {
            tracing::warn!(error = %crate::error::chain(&e), "recording retention sweep failed");
        }
    });
    let settled = Arc::new(Mutex::new(HashSet::new()));
    every_while_alive(Arc::downgrade(&inner), ADOPT_EVERY, move |inner| {
        let settled = settled.clone();
        async move {
            if let Err(e) = adopt_abandoned(&inner, &settled).await {
                tracing::warn!(error = %crate::error::chain(&e), "abandoned merge watch failed");
            }
        }
    });
}

/// Runs `pass` at once and then every `every`, while `inner` lives.
fn every_while_alive<F, Fut>(weak: Weak<Inner>, every: Duration, pass: F)
where
    F: Fn(Arc<Inner>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            pass(inner).await;
        }
    });
}

fn older_than(modified: SystemTime, age: Duration) -> bool {
    SystemTime::now()
        .duration_since(modified)
        .is_ok_and(|elapsed| elapsed > age)
}

/// One pass of the retention sweep, leftovers included.
pub(super) async fn sweep(inner: &Inner) -> Result<(), StorageError> {
    let retention = inner.settings.retention();
    let expired = |m: &ObjectMeta| older_than(m.modified, retention);
    for output in inner.outputs.list(&ObjectKey::root()).await? {
        if expired(&output) {
            inner.outputs.delete(&output.key).await?;
        }
    }
    for prefix in inner.chunks.prefixes().await? {
        let objects = inner.chunks.list(&prefix).await?;
        if !objects.is_empty() && objects.iter().all(expired) {
            for object in &objects {
                inner.chunks.delete(&object.key).await?;
            }
        }
    }
    let upload = Duration::from_secs(inner.settings.upload_timeout_seconds) + LEASE_GRACE;
    let merge = Duration::from_secs_f64(inner.settings.merge_timeout_seconds.max(0.0));
    remove_leftovers(&inner.incoming, upload + LEFTOVER_GRACE).await?;
    remove_leftovers(&inner.work, merge + LEFTOVER_GRACE).await?;
    Ok(())
}

/// Removes the entries of `dir` (files, or folders with what they hold)
/// that nothing has modified for longer than `age`.
async fn remove_leftovers(dir: &Path, age: Duration) -> Result<(), StorageError> {
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        let Some(modified) = last_touched(&path).await else {
            continue; // gone meanwhile
        };
        if !older_than(modified, age) {
            continue;
        }
        tracing::info!(path = %path.display(), "removing a leftover of a crashed upload or merge");
        let removed = match entry.file_type().await {
            Ok(t) if t.is_dir() => tokio::fs::remove_dir_all(&path).await,
            _ => tokio::fs::remove_file(&path).await,
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// The newest modification time of a file, or of a folder and the entries
/// directly in it (a merge writes its files there).
async fn last_touched(path: &Path) -> Option<SystemTime> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    let mut newest = meta.modified().ok()?;
    if meta.is_dir() {
        let mut entries = tokio::fs::read_dir(path).await.ok()?;
        while let Ok(Some(entry)) = entries.next_entry().await {
            if let Some(m) = entry.metadata().await.ok().and_then(|m| m.modified().ok()) {
                newest = newest.max(m);
            }
        }
    }
    Some(newest)
}

/// Claims the merges their instances abandoned. Each recording with chunks
/// is read (one store read; a merging record carries its keepalive), except
/// those in `settled`: found `ready`, `failed` (a failed merge keeps its
/// chunks until the retention) or without a record, none of which can
/// become a merge again.
pub(super) async fn adopt_abandoned(
    inner: &Arc<Inner>,
    settled: &Mutex<HashSet<Id>>,
) -> Result<(), RecordingError> {
    // Without the merge tools here, another instance had better adopt it.
    if !inner.store.authoritative() || inner.merger.is_err() {
        return Ok(());
    }
    let now = crate::clock::unix_now_ms();
    let mut present = HashSet::new();
    for prefix in inner.chunks.prefixes().await? {
        let Some(id) = prefix.chunks_record() else {
            continue;
        };
        present.insert(id.clone());
        if lock(settled).contains(&id) {
            continue;
        }
        let record = match inner.read(&id).await {
            Ok((_, record)) => record,
            Err(RecordingError::NotFound) => {
                lock(settled).insert(id);
                continue;
            }
            Err(e) => return Err(e),
        };
        if matches!(record.state, RecordState::Ready | RecordState::Failed) {
            lock(settled).insert(id);
        } else if record.merge_abandoned(now, MERGE_STALE_MS) {
            claim(inner, &id, false).await?;
        }
    }
    lock(settled).retain(|id| present.contains(id));
    Ok(())
}

fn lock(settled: &Mutex<HashSet<Id>>) -> std::sync::MutexGuard<'_, HashSet<Id>> {
    settled.lock().unwrap_or_else(|p| p.into_inner())
}
