//! A recording's state, one JSON value in the store (`rec:{<id>}`) so any
//! instance answers its status; changed only by compare-and-swap.

use serde::{Deserialize, Serialize};

use crate::domain::Id;

/// Where a recording is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    Recording,
    Merging,
    Ready,
    Failed,
}

/// The stored record (SPEC section 7 status, plus what the service needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub record_id: Id,
    pub session_id: Option<Id>,
    pub state: RecordState,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix milliseconds of the last write: the newer write wins a replay.
    pub updated_at_ms: u64,
    /// 0-100 while merging, 100 when ready.
    pub progress: u8,
    /// Counted at the merge; while recording, status counts the stored chunks.
    pub chunks: Option<u64>,
    pub bytes: Option<u64>,
    pub duration_s: Option<f64>,
    pub size_bytes: Option<u64>,
    /// Names the result in storage and in `download_url`; random, so it
    /// cannot be guessed from the record id.
    pub download_key: Option<Id>,
    pub error: Option<String>,
    /// While merging: when the merging instance last said it is alive (unix
    /// ms). A stop finding it stale takes the merge over.
    #[serde(default)]
    pub merge_alive_ms: Option<u64>,
}

impl Record {
    pub fn new(record_id: Id, session_id: Option<Id>, now_ms: u64) -> Self {
        Self {
            record_id,
            session_id,
            state: RecordState::Recording,
            created_at: now_ms / 1000,
            updated_at_ms: now_ms,
            progress: 0,
            chunks: None,
            bytes: None,
            duration_s: None,
            size_bytes: None,
            download_key: None,
            error: None,
            merge_alive_ms: None,
        }
    }

    /// Merging, but the instance doing it has not said it is alive for
    /// `stale_ms` (it died): another may take the merge over.
    pub fn merge_abandoned(&self, now_ms: u64, stale_ms: u64) -> bool {
        self.state == RecordState::Merging
            && self
                .merge_alive_ms
                .is_none_or(|alive| now_ms.saturating_sub(alive) > stale_ms)
    }

    /// True once no chunk may be added.
    pub fn is_stopped(&self) -> bool {
        self.state != RecordState::Recording
    }
}
