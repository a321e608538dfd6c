//! The Lua scripts behind the store operations that are more than one
//! command, written so that running one twice has the effect of running it
//! once. The store retries an operation when the connection drops, and the
//! cluster client retries by itself; a retried command may already have
//! applied, so each script recognises its own earlier run:
//!
//! - compare-and-swap answers 1 when the key already holds the new value
//!   (or is already gone, for a delete), so an applied swap is never
//!   reported as lost;
//! - increment carries an operation id and keeps the last ids it served,
//!   with their results, in a list beside the counter (same cluster slot),
//!   so a repeated id gets its first result instead of a second increment;
//! - advance-to is a maximum, idempotent by nature.

use redis::Script;

/// Replaces a value only if it still equals the expected one.
/// KEYS[1]; ARGV: expected, "1" to set / "0" to delete, new value, ttl ms.
const CAS: &str = r"
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  if ARGV[2] == '1' and current == ARGV[3] then return 1 end
  if ARGV[2] == '0' and not current then return 1 end
  return 0
end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('DEL', KEYS[1])
end
return 1
";

/// INCR that sets the TTL when it creates the counter and applies each
/// operation id once. KEYS[1] counter, KEYS[2] recent ids;
/// ARGV: ttl ms, operation id, ids kept, ms the ids are kept.
const INCR: &str = r"
local recent = redis.call('LRANGE', KEYS[2], 0, -1)
local mark = ARGV[2] .. '='
for _, entry in ipairs(recent) do
  if string.sub(entry, 1, #mark) == mark then
    return tonumber(string.sub(entry, #mark + 1))
  end
end
local value = redis.call('INCR', KEYS[1])
if value == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
redis.call('LPUSH', KEYS[2], mark .. value)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return value
";

/// Moves a counter up to at least a floor, never down. KEYS[1];
/// ARGV: floor, ttl ms (used when the counter is created).
const ADVANCE: &str = r"
local current = redis.call('GET', KEYS[1])
local floor = tonumber(ARGV[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return floor
end
local value = tonumber(current)
if not value or string.find(current, '^-?%d+$') == nil then
  return redis.error_reply('ERR value is not an integer or out of range')
end
if floor > value then
  redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
  return floor
end
return value
";

/// How many recent increment ids a counter remembers: far more than can
/// be in flight on one counter during one retry window.
pub const INCR_IDS_KEPT: u32 = 256;

/// How long a counter remembers its recent increment ids: longer than any
/// retry of one operation (bounded by the command timeout).
pub const INCR_IDS_TTL_MS: u64 = 120_000;

/// The loaded scripts (hashes computed once).
pub struct Scripts {
    pub cas: Script,
    pub incr: Script,
    pub advance: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            cas: Script::new(CAS),
            incr: Script::new(INCR),
            advance: Script::new(ADVANCE),
        }
    }
}

/// The name of the key that remembers `counter`'s recent increment ids. It
/// hashes to the counter's cluster slot: the counter's own hash tag when it
/// has one, otherwise the whole counter name as the tag (the slot of a
/// name without a tag is the slot of that name).
pub fn increment_ids_key(counter: &str) -> String {
    if has_hash_tag(counter) {
        format!("{counter}:incr-ids")
    } else {
        format!("{{{counter}}}:incr-ids")
    }
}

/// Redis's rule: the part between the first `{` and the next `}`, when
/// not empty, is what the slot is computed from.
fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::{Route, SlotAddr};

    fn slot(key: &str) -> Route {
        Route::with_key(key, SlotAddr::Master)
    }

    #[test]
    fn increment_ids_live_in_the_counters_slot() {
        for counter in [
            "recording:r1:chunk_index",
            "prod:recording:r1:chunk_index",
            "session:{s1}:count",
            "{app}:recording:x:chunk_index",
        ] {
            assert_eq!(
                slot(counter),
                slot(&increment_ids_key(counter)),
                "{counter}"
            );
        }
    }
}
