//! Fixed-window counters: in Redis, so every instance counts into the same
//! window, and in this process while Redis cannot answer.
//!
//! One Lua script on one key per (policy, subject): INCR, set the window's
//! expiry when the INCR created the key, return the count and the time left.
//! A single key is what keeps it atomic and cluster-safe (one hash slot).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{Script, Value};

use crate::store::{RedisStore, StoreError};

/// KEYS[1] the window's counter; ARGV[1] the window in ms. Returns
/// `{count, ms left}`. A key left without an expiry (never by this script)
/// is given one, so a window always ends.
const HIT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {n, left}
";

/// One counted request: the window's count including it, and when the
/// window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub count: u64,
    pub reset_in: Duration,
}

/// Where the counts live.
#[derive(Clone)]
pub struct Counters {
    redis: Option<(RedisStore, Arc<Script>)>,
    local: Arc<Mutex<Local>>,
}

impl Counters {
    pub fn new(redis: Option<RedisStore>) -> Self {
        Self {
            redis: redis.map(|r| (r, Arc::new(Script::new(HIT)))),
            local: Arc::default(),
        }
    }

    /// Counts one request against `name`'s window. Redis when it answers;
    /// otherwise (no Redis, an outage, a refusal) this process's own count.
    pub async fn hit(&self, name: &str, window: Duration) -> Hit {
        if let Some((redis, script)) = &self.redis {
            if redis.is_connected() {
                match redis_hit(redis, script, name, window).await {
                    Ok(hit) => return hit,
                    Err(e) => tracing::warn!(
                        error = %crate::error::chain(&e),
                        "rate limit counted locally: Redis did not answer"
                    ),
                }
            }
        }
        self.local_hit(name, window)
    }

    fn local_hit(&self, name: &str, window: Duration) -> Hit {
        let now = Instant::now();
        // A poisoned lock only means another request panicked mid-update;
        // the counts are still usable.
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        local.hit(name, window, now)
    }
}

async fn redis_hit(
    redis: &RedisStore,
    script: &Script,
    name: &str,
    window: Duration,
) -> Result<Hit, StoreError> {
    let key = format!("{}{}", redis.settings().key_prefix, name);
    let ms = window.as_millis().max(1).to_string();
    let reply = redis.script(script, vec![key], vec![ms]).await?;
    match reply {
        Value::Array(items) => match items.as_slice() {
            [Value::Int(count), Value::Int(left)] => Ok(Hit {
                count: u64::try_from(*count).unwrap_or(0),
                reset_in: Duration::from_millis(u64::try_from(*left).unwrap_or(0)),
            }),
            _ => Err(StoreError::rejected("unexpected rate limit reply")),
        },
        _ => Err(StoreError::rejected("unexpected rate limit reply")),
    }
}

/// This process's windows. Expired ones are dropped whenever the map has
/// doubled since the last sweep, so memory follows the live subjects.
#[derive(Default)]
struct Local {
    windows: HashMap<String, (Instant, u64)>,
    sweep_at: usize,
}

impl Local {
    fn hit(&mut self, name: &str, window: Duration, now: Instant) -> Hit {
        if self.windows.len() >= self.sweep_at.max(1024) {
            self.windows.retain(|_, (ends, _)| *ends > now);
            self.sweep_at = self.windows.len() * 2;
        }
        let entry = self
            .windows
            .entry(name.to_string())
            .or_insert((now + window, 0));
        if entry.0 <= now {
            *entry = (now + window, 0);
        }
        entry.1 += 1;
        Hit {
            count: entry.1,
            reset_in: entry.0 - now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_windows_count_then_restart() {
        let mut local = Local::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        assert_eq!(local.hit("a", w, t0).count, 1);
        assert_eq!(local.hit("a", w, t0 + Duration::from_secs(1)).count, 2);
        let hit = local.hit("b", w, t0);
        assert_eq!((hit.count, hit.reset_in), (1, w));
        let later = local.hit("a", w, t0 + Duration::from_secs(3));
        assert_eq!((later.count, later.reset_in), (3, Duration::from_secs(7)));
        assert_eq!(local.hit("a", w, t0 + w).count, 1);
    }

    #[test]
    fn expired_windows_are_swept() {
        let mut local = Local::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(1);
        for i in 0..1500 {
            local.hit(&format!("k{i}"), w, t0);
        }
        for i in 0..600 {
            local.hit(&format!("late{i}"), w, t0 + Duration::from_secs(5));
        }
        assert_eq!(local.windows.len(), 600);
    }
}
