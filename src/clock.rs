//! Wall-clock time as unix seconds, the unit of every timestamp on the wire.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the unix epoch (0 if the clock is before 1970).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
