//! The [`Recordings`] handle: start, chunk, stop, status and download, on
//! the state in the store and the objects in storage. Every state change
//! is a compare-and-swap on the one record, so instances never undo each
//! other's changes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng as _;
use serde::Serialize;
use tokio::sync::broadcast;

use super::allocator::Allocator;
use super::events::{EventBus, LocalEvents, RedisEvents, Subscription};
use super::merger::Merger;
use super::record::{Record, RecordState};
use super::storage::local::LocalDir;
use super::storage::{ByteStream, ObjectKey, ObjectMeta, ObjectStore, StorageError};
use super::upload::Upload;
use super::RecordingError;
use crate::clock::unix_now_ms;
use crate::config::RecordingsSettings;
use crate::domain::Id;
use crate::pubsub::PubSub;
use crate::store::{keys, Store};
use crate::tokens::TokenService;

/// Attempts of one compare-and-swap update before answering 503.
const MAX_UPDATE_ATTEMPTS: u32 = 32;
/// Records remembered for a Redis outage (the fallback cannot read them).
const CACHE_CAPACITY: usize = 10_000;

/// What `POST /api/recordings` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = RecordingStarted)]
pub struct Started {
    pub record_id: Id,
    pub state: RecordState,
    pub upload_token: String,
    pub ws_url: String,
}

/// What `GET /api/recordings/{id}/status` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = RecordingStatus)]
pub struct Status {
    pub record_id: Id,
    pub state: RecordState,
    pub chunks: u64,
    pub bytes: u64,
    pub progress: u8,
    pub duration_s: Option<f64>,
    pub size_bytes: Option<u64>,
    pub download_url: Option<String>,
    pub error: Option<String>,
}

/// Counts for health and metrics (since start).
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct RecordingStats {
    pub chunks_stored: u64,
    pub bytes_stored: u64,
    pub index_collisions_repaired: u64,
    pub merges_ready: u64,
    pub merges_failed: u64,
    pub merge_available: bool,
    /// Recording WebSockets open here.
    pub sockets: usize,
}

pub(super) struct Inner {
    pub store: Arc<dyn Store>,
    tokens: TokenService,
    pub chunks: Arc<dyn ObjectStore>,
    pub outputs: Arc<dyn ObjectStore>,
    pub merger: Result<Merger, String>,
    pub settings: RecordingsSettings,
    /// Chunk bodies being received (on the chunk volume, so a publish is a link).
    pub incoming: PathBuf,
    /// Merge work folders.
    pub work: PathBuf,
    pub events: Arc<dyn EventBus>,
    pub allocator: Allocator,
    cache: Mutex<HashMap<Id, Record>>,
    shutdown: broadcast::Sender<()>,
    chunks_stored: AtomicU64,
    bytes_stored: AtomicU64,
    pub merges_ready: AtomicU64,
    pub merges_failed: AtomicU64,
    /// Recording WebSockets open on this instance.
    pub sockets: std::sync::atomic::AtomicUsize,
    /// Those opened with an upload token, by its jti (revocation closes them).
    pub live: crate::live_tokens::LiveTokens<Arc<tokio::sync::Notify>>,
    next_socket: AtomicU64,
    /// Durations of good merges (stop to ready), for `/metrics`.
    pub merge_seconds: Option<prometheus::Histogram>,
}

/// The recordings of this broker; cheap to clone.
#[derive(Clone)]
pub struct Recordings {
    inner: Arc<Inner>,
}

impl Recordings {
    /// Opens the storage folders and looks for ffmpeg and ffprobe; without
    /// them recording calls answer 503 `merge_unavailable`.
    pub async fn start(
        settings: &RecordingsSettings,
        store: Arc<dyn Store>,
        tokens: TokenService,
        pubsub: Option<PubSub>,
    ) -> std::io::Result<Self> {
        let chunk_root = settings.chunk_path();
        let chunks: Arc<dyn ObjectStore> = Arc::new(LocalDir::open(&chunk_root)?);
        let outputs: Arc<dyn ObjectStore> = Arc::new(LocalDir::open(&settings.output_path())?);
        let (incoming, work) = (chunk_root.join(".incoming"), chunk_root.join(".merge"));
        std::fs::create_dir_all(&incoming)?;
        std::fs::create_dir_all(&work)?;
        let merger = Merger::detect(
            settings.ffmpeg_path.as_ref(),
            settings.ffprobe_path.as_ref(),
            Duration::from_secs_f64(settings.merge_timeout_seconds),
            settings.max_concurrent_merges,
        )
        .await
        .map_err(|e| e.to_string());
        if let Err(reason) = &merger {
            tracing::warn!(%reason, "recordings unavailable: the merge tools are missing");
        }
        let allocator = Allocator {
            store: store.clone(),
            chunks: chunks.clone(),
            counter_ttl: settings.retention(),
            max_chunks: settings.max_chunks,
            repaired: AtomicU64::new(0),
        };
        let inner = Arc::new(Inner {
            store,
            tokens,
            chunks,
            outputs,
            merger,
            settings: settings.clone(),
            incoming,
            work,
            events: match pubsub {
                Some(pubsub) => Arc::new(RedisEvents::new(pubsub)),
                None => Arc::new(LocalEvents::default()),
            },
            allocator,
            cache: Mutex::new(HashMap::new()),
            shutdown: broadcast::channel(1).0,
            chunks_stored: AtomicU64::new(0),
            bytes_stored: AtomicU64::new(0),
            merges_ready: AtomicU64::new(0),
            merges_failed: AtomicU64::new(0),
            sockets: std::sync::atomic::AtomicUsize::new(0),
            live: crate::live_tokens::LiveTokens::default(),
            next_socket: AtomicU64::new(1),
            merge_seconds: merge_histogram(),
        });
        super::janitor::start(inner.clone());
        Ok(Self { inner })
    }

    /// `Err(MergeUnavailable)` when ffmpeg or ffprobe was missing at start-up.
    pub fn available(&self) -> Result<(), RecordingError> {
        match &self.inner.merger {
            Ok(_) => Ok(()),
            Err(reason) => Err(RecordingError::MergeUnavailable(reason.clone())),
        }
    }

    /// Starts a recording and signs its upload token.
    #[tracing::instrument(skip_all)]
    pub async fn create(&self, session_id: Option<Id>) -> Result<Started, RecordingError> {
        self.available()?;
        let record = Record::new(Id::generate(), session_id, unix_now_ms());
        let ttl = Duration::from_secs(self.inner.settings.upload_token_ttl_seconds);
        let upload_token = self.inner.tokens.issue_upload(&record.record_id, ttl)?;
        let value = encode(&record)?;
        let key = keys::recording(&record.record_id);
        if !self
            .inner
            .store
            .set_if_absent(&key, &value, self.inner.settings.retention())
            .await?
        {
            return Err(RecordingError::Contended); // a UUID v4 collision
        }
        self.inner.remember(&record);
        Ok(Started {
            ws_url: self.ws_url(&record.record_id),
            record_id: record.record_id,
            state: record.state,
            upload_token,
        })
    }

    /// Checks an upload token for `record`: 401 when it is not a valid
    /// upload token (an RTC token included), 403 for another recording.
    /// Answers the token's `jti`.
    pub async fn check_upload_token(
        &self,
        token: &str,
        record: &Id,
    ) -> Result<String, RecordingError> {
        let claims = self.inner.tokens.verify_upload(token).await?;
        if claims.rec != record.as_str() {
            return Err(RecordingError::Forbidden);
        }
        Ok(claims.jti)
    }

    /// Closes (4003) the recording sockets opened with one of `jtis`,
    /// which were just revoked.
    pub fn revoked(&self, jtis: &[String]) {
        for closer in self.inner.live.revoked(jtis) {
            closer.notify_one();
        }
    }

    /// Registers a socket opened with the upload token `jti`: the returned
    /// notifier fires when that token is revoked (at once if it already is).
    pub(super) fn watch_token(&self, jti: &str) -> (u64, Arc<tokio::sync::Notify>) {
        let id = self.inner.next_socket.fetch_add(1, Ordering::Relaxed);
        let closer = Arc::new(tokio::sync::Notify::new());
        self.inner.live.add(id, closer.clone(), jti);
        if self.inner.tokens.revocations().is_revoked(jti) {
            closer.notify_one();
        }
        (id, closer)
    }

    pub(super) fn unwatch_token(&self, id: u64) {
        self.inner.live.remove(id);
    }

    /// Admits one chunk of `record`: the recording must exist and be
    /// recording. The caller writes the body into the [`Upload`] and commits.
    #[tracing::instrument(skip_all, fields(record_id = %record))]
    pub async fn begin_upload(&self, record: &Id) -> Result<Upload, RecordingError> {
        self.available()?;
        let lease = ObjectKey::lease(record, &Id::generate());
        self.inner.chunks.put_bytes(&lease, b"").await?;
        // One state read, after the lease: a stop that changed the state
        // before it is seen here, and one after it sees the lease. A refusal
        // (unknown, stopped) takes the lease and its folder away again.
        if let Err(e) = self.inner.admit(record).await {
            let _ = self.inner.chunks.delete(&lease).await;
            return Err(e);
        }
        Upload::open(self.inner.clone(), record.clone(), lease).await
    }

    /// Stops the recording and starts its merge in the background; a
    /// repeated stop answers the current state, and takes over a merge
    /// whose instance stopped saying it is alive (it died mid-merge).
    #[tracing::instrument(skip_all, fields(record_id = %record))]
    pub async fn stop(&self, record: &Id) -> Result<RecordState, RecordingError> {
        self.available()?;
        let (updated, _) = super::job::claim(&self.inner, record, true).await?;
        Ok(updated.state)
    }

    /// The recording's status, from whichever instance.
    pub async fn status(&self, record: &Id) -> Result<Status, RecordingError> {
        let r = self.inner.read(record).await?.1;
        let (chunks, bytes) = match (r.chunks, r.bytes) {
            (Some(c), Some(b)) => (c, b),
            _ => self.inner.stored_totals(record).await?,
        };
        Ok(Status {
            download_url: r.download_key.as_ref().map(|k| self.inner.download_url(k)),
            record_id: r.record_id,
            state: r.state,
            chunks,
            bytes,
            progress: r.progress,
            duration_s: r.duration_s,
            size_bytes: r.size_bytes,
            error: r.error,
        })
    }

    /// A finished recording by its download key.
    pub async fn download(&self, key: &Id) -> Result<ObjectMeta, RecordingError> {
        self.inner
            .outputs
            .stat(&ObjectKey::output(key))
            .await?
            .ok_or(RecordingError::NotFound)
    }

    /// `len` bytes of a finished recording from `offset`.
    pub async fn read(
        &self,
        meta: &ObjectMeta,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, StorageError> {
        self.inner.outputs.read_range(&meta.key, offset, len).await
    }

    /// The recording's events from now on (for its WebSocket).
    pub fn events(&self, record: &Id) -> Subscription {
        self.inner.events.subscribe(record)
    }

    /// Fails with `NotFound` (or `OnlyInRedis` in an outage) for an unknown recording.
    pub async fn ensure_exists(&self, record: &Id) -> Result<Record, RecordingError> {
        Ok(self.inner.read(record).await?.1)
    }

    /// Closes the recording sockets (1001); merges already running finish.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(());
    }

    pub(super) fn shutdown_signal(&self) -> broadcast::Receiver<()> {
        self.inner.shutdown.subscribe()
    }

    pub(super) fn max_chunk_bytes(&self) -> usize {
        self.inner.settings.max_chunk_bytes
    }

    pub fn stats(&self) -> RecordingStats {
        let i = &self.inner;
        RecordingStats {
            chunks_stored: i.chunks_stored.load(Ordering::Relaxed),
            bytes_stored: i.bytes_stored.load(Ordering::Relaxed),
            index_collisions_repaired: i.allocator.repaired.load(Ordering::Relaxed),
            merges_ready: i.merges_ready.load(Ordering::Relaxed),
            merges_failed: i.merges_failed.load(Ordering::Relaxed),
            merge_available: i.merger.is_ok(),
            sockets: i.sockets.load(Ordering::Relaxed),
        }
    }

    /// The merge duration histogram, for `/metrics`.
    pub fn metric_families(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::core::Collector;
        crate::metrics::collect(&[self
            .inner
            .merge_seconds
            .as_ref()
            .map(|c| c as &dyn Collector)])
    }

    /// Counts an open recording socket until the guard drops.
    pub(super) fn socket_opened(&self) -> SocketGuard {
        self.inner.sockets.fetch_add(1, Ordering::Relaxed);
        SocketGuard(self.inner.clone())
    }

    fn ws_url(&self, record: &Id) -> String {
        let base = self.inner.settings.api_base_url.trim_end_matches('/');
        let base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_string()
        };
        format!("{base}/ws/recordings/{record}")
    }
}

impl Inner {
    pub fn chunk_stored(&self, bytes: u64) {
        self.chunks_stored.fetch_add(1, Ordering::Relaxed);
        self.bytes_stored.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn download_url(&self, key: &Id) -> String {
        let base = self.settings.api_base_url.trim_end_matches('/');
        format!("{base}/recordings/download/{key}")
    }

    /// The recording exists and takes chunks.
    async fn admit(&self, record: &Id) -> Result<(), RecordingError> {
        if self.read(record).await?.1.is_stopped() {
            return Err(RecordingError::NotActive);
        }
        Ok(())
    }

    /// Chunks and bytes in storage right now.
    pub async fn stored_totals(&self, record: &Id) -> Result<(u64, u64), RecordingError> {
        let listed = self.chunks.list(&ObjectKey::chunks_of(record)).await?;
        let chunks = listed.iter().filter(|m| m.key.chunk_index().is_some());
        Ok(chunks.fold((0, 0), |(n, b), m| (n + 1, b + m.size)))
    }

    /// The stored value (when the store has it) and the record. In a Redis
    /// outage a record only Redis holds comes from this instance's cache.
    pub async fn read(&self, id: &Id) -> Result<(Option<String>, Record), RecordingError> {
        match self.store.get(&keys::recording(id)).await? {
            Some(raw) => {
                let record = decode(&raw)?;
                self.remember(&record);
                Ok((Some(raw), record))
            }
            None if !self.store.authoritative() => self
                .cache()
                .get(id)
                .cloned()
                .map(|r| (None, r))
                .ok_or(RecordingError::OnlyInRedis),
            None => Err(RecordingError::NotFound),
        }
    }

    /// Read-modify-write by compare-and-swap; `change` returns false to
    /// leave the record as it is.
    pub async fn update(
        &self,
        id: &Id,
        mut change: impl FnMut(&mut Record) -> bool,
    ) -> Result<Record, RecordingError> {
        let key = keys::recording(id);
        let ttl = self.settings.retention();
        for attempt in 0..MAX_UPDATE_ATTEMPTS {
            if attempt > 0 {
                let pause = rand::rng().random_range(0..=2u64.pow(attempt.min(5)));
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let (raw, mut record) = self.read(id).await?;
            if !change(&mut record) {
                return Ok(record);
            }
            record.updated_at_ms = unix_now_ms().max(record.updated_at_ms + 1);
            let value = encode(&record)?;
            let written = match &raw {
                Some(raw) => {
                    self.store
                        .compare_and_swap(&key, raw, Some(&value), ttl)
                        .await?
                }
                // Known only from the cache (outage): memory takes it, and
                // the replay lets this newer write win.
                None => self.store.set_if_absent(&key, &value, ttl).await?,
            };
            if written {
                self.remember(&record);
                return Ok(record);
            }
        }
        Err(RecordingError::Contended)
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<Id, Record>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, record: &Record) {
        let mut cache = self.cache();
        if cache.len() >= CACHE_CAPACITY && !cache.contains_key(&record.record_id) {
            if let Some(old) = cache.keys().next().cloned() {
                cache.remove(&old);
            }
        }
        cache.insert(record.record_id.clone(), record.clone());
    }
}

/// Keeps a recording socket counted while it lives.
pub(super) struct SocketGuard(Arc<Inner>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0.sockets.fetch_sub(1, Ordering::Relaxed);
    }
}

fn merge_histogram() -> Option<prometheus::Histogram> {
    crate::metrics::histogram(
        "rtc_recording_merge_duration_seconds",
        "Good merges, from the stop (or takeover) to ready.",
        &[
            0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
        ],
    )
}

fn encode(record: &Record) -> Result<String, RecordingError> {
    serde_json::to_string(record).map_err(|e| RecordingError::Corrupt(e.to_string()))
}

fn decode(raw: &str) -> Result<Record, RecordingError> {
    serde_json::from_str(raw).map_err(|e| RecordingError::Corrupt(e.to_string()))
}
