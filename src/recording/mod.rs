//! Recordings (SPEC section 7): clients upload media chunks, every instance
//! hands out indices from one Redis counter, and a stop merges the chunks
//! into one seekable WebM with ffmpeg.
//!
//! The pieces: `record` (the state kept in the store, so any instance
//! answers a status), `storage` (chunks and results behind an object-store
//! trait, a local directory for now), `allocator` (the index: `INCR`, an
//! exclusive create as the fence, and repair when the counter went
//! backwards), `upload` (one chunk on its way in, with the lease a stop
//! waits for), `merger` (ffmpeg/ffprobe as child processes), `job` (the
//! background merge), `janitor` (retention, leftovers of crashed uploads
//! and merges, merges abandoned by a dead instance), `events` (progress and results for the recording's
//! WebSocket), `socket` (that WebSocket: chunks in, events out) and `service` (the [`Recordings`] handle the routes use).
//! Recordings reach the rest of the broker only through the [`Store`] and
//! [`TokenService`] handles.
//!
//! [`Store`]: crate::store::Store
//! [`TokenService`]: crate::tokens::TokenService

mod allocator;
pub mod events;
mod janitor;
mod job;
pub mod merger;
mod record;
mod service;
mod socket;
pub mod storage;
mod upload;

pub use events::RecordingEvent;
pub use record::{Record, RecordState};
pub use service::{RecordingStats, Recordings, Started, Status};
pub use socket::run as run_socket;
pub use upload::Upload;

use crate::store::StoreError;
use crate::tokens::TokenError;
use storage::StorageError;

/// Why a recording call failed; mapped to statuses and codes in `error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("no such recording")]
    NotFound,
    #[error("the recording is stopped; it takes no more chunks")]
    NotActive,
    #[error("the chunk is empty")]
    EmptyChunk,
    #[error("the chunk exceeds the limit of {0} bytes")]
    ChunkTooLarge(usize),
    #[error("the recording has reached its limit of {0} chunks")]
    TooManyChunks(u64),
    #[error("the chunk did not arrive within {0} seconds")]
    UploadTimeout(u64),
    #[error("this upload token is for another recording")]
    Forbidden,
    /// ffmpeg or ffprobe was missing at start-up.
    #[error("recording is unavailable: {0}")]
    MergeUnavailable(String),
    /// Serving from the fallback, and the recording is only in Redis.
    #[error("this recording may exist only in Redis, which is unreachable; retry when it returns")]
    OnlyInRedis,
    /// Too many concurrent writers on one record, or indices kept colliding.
    #[error("the recording is being updated concurrently, retry")]
    Contended,
    #[error("stored recording record is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Token(#[from] TokenError),
}
