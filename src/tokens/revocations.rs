//! A local copy of the live revocations, so a token revoked before a Redis
//! outage stays refused during it (the fallback store's memory never saw
//! the revocation marker, which lives only in Redis).
//!
//! Every revocation is also added to one sorted set in Redis (`jti` scored
//! by the unix second it lapses) and published on a channel of the same
//! name, so the other instances add it to their copies within
//! milliseconds; each instance also reads the set back every `SYNC_EVERY`
//! while Redis answers, which covers what pub/sub dropped (a failover, a
//! subscription not yet in place). Revocations made during an outage are
//! kept locally and pushed (and published) at the next sync, so the other
//! instances learn them too. The per-`jti` marker keys stay the authority
//! while Redis answers; this copy only adds refusals, never removes one.
//!
//! Listeners ([`Revocations::listen`]) hear of every jti this copy learns,
//! from any of the three paths, so live sockets opened with a revoked token
//! are closed on every instance, not only refused at their next check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::{Script, Value};

use crate::clock::unix_now;
use crate::pubsub::{PubSub, Sink};
use crate::store::{RedisStore, StoreError};

/// How often the copy is refreshed from Redis: a revocation made this long
/// before an outage is known everywhere during it.
pub const SYNC_EVERY: Duration = Duration::from_secs(2);

/// The set, after the key prefix; one key, so one cluster slot. The
/// channel has the same name (so the same slot for sharded pub/sub).
const SET: &str = "rtc:revocations";

/// KEYS[1] the set; ARGV[1] now, ARGV[2] "1" to read the set back, then
/// jti/lapse pairs to add. Drops lapsed entries and returns the live ones
/// WITHSCORES (none when not asked: a revocation only pushes).
const SYNC: &str = r"
for i = 3, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 'GT', ARGV[i + 1], ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local left = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if left[2] then redis.call('EXPIREAT', KEYS[1], tonumber(left[2]) + 1) end
if ARGV[2] ~= '1' then return {} end
return redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES')
";

/// The instance's revocations. Cheap to clone.
#[derive(Clone)]
pub struct Revocations {
    inner: Arc<Inner>,
}

/// Told the jtis this instance newly learned are revoked. Must not block.
pub type RevocationListener = Arc<dyn Fn(&[String]) + Send + Sync>;

struct Inner {
    listeners: std::sync::RwLock<Vec<RevocationListener>>,
    redis: Option<RedisStore>,
    /// Where revocations are announced: the pub/sub and the full channel.
    announce: Option<(PubSub, String)>,
    script: Script,
    state: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    /// jti → unix second it lapses.
    live: HashMap<String, u64>,
    /// Made here and not yet in the Redis set.
    unsynced: HashMap<String, u64>,
}

impl Revocations {
    /// Starts the sync task when Redis is configured, and subscribes to
    /// the other instances' revocations when pub/sub is; both end with the
    /// last handle.
    pub fn start(redis: Option<RedisStore>, pubsub: Option<PubSub>) -> Self {
        let has_redis = redis.is_some();
        let announce = pubsub.map(|p| {
            let channel = format!("{}{SET}", p.key_prefix());
            (p, channel)
        });
        let revocations = Self {
            inner: Arc::new(Inner {
                listeners: std::sync::RwLock::default(),
                redis,
                announce: announce.clone(),
                script: Script::new(SYNC),
                state: Mutex::default(),
            }),
        };
        if has_redis {
            tokio::spawn(keep_synced(Arc::downgrade(&revocations.inner)));
        }
        if let Some((pubsub, channel)) = announce {
            let sink = Arc::new(Published(Arc::downgrade(&revocations.inner)));
            pubsub.route(SET, sink);
            tokio::spawn(async move { pubsub.want(channel, true).await });
        }
        revocations
    }

    /// Whether `jti` is known revoked (and not yet lapsed).
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.inner
            .lock()
            .live
            .get(jti)
            .is_some_and(|&until| until >= unix_now())
    }

    /// Notes a revocation made here, then tries to add it to the set at
    /// once (a push, not a read of the whole set); if that fails, the next
    /// sync does.
    pub async fn add(&self, jti: &str, until: u64) {
        let new = {
            let mut known = self.inner.lock();
            let now = unix_now();
            known.live.retain(|_, lapses| *lapses >= now);
            known.unsynced.insert(jti.to_string(), until);
            known.merge([(jti.to_string(), until)])
        };
        self.inner.tell(&new);
        if let Err(e) = self.inner.sync(false).await {
            tracing::debug!(error = %e, "revocation kept locally until the next sync");
        }
    }

    /// Calls `listener` with every jti this instance learns is revoked
    /// (made here, published by another instance, or read at a sync).
    pub fn listen(&self, listener: RevocationListener) {
        self.inner
            .listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(listener);
    }

    /// How many revocations are known locally (for tests and health).
    pub fn len(&self) -> usize {
        self.inner.lock().live.len()
    }

    /// True when none is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the set now (tests use this instead of waiting for a sync).
    pub async fn sync_now(&self) -> Result<(), StoreError> {
        self.inner.sync(true).await
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the listeners about newly learned revocations.
    fn tell(&self, new: &[String]) {
        if new.is_empty() {
            return;
        }
        let listeners = self.listeners.read().unwrap_or_else(|p| p.into_inner());
        for listener in listeners.iter() {
            listener(new);
        }
    }

    /// Pushes the unsynced revocations, and with `read` merges the set's
    /// live entries into the copy.
    async fn sync(&self, read: bool) -> Result<(), StoreError> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let now = unix_now();
        let pushed: Vec<(String, u64)> = self
            .lock()
            .unsynced
            .iter()
            .map(|(j, u)| (j.clone(), *u))
            .collect();
        let mut args = vec![now.to_string(), if read { "1" } else { "0" }.to_string()];
        for (jti, until) in &pushed {
            args.push(jti.clone());
            args.push(until.to_string());
        }
        let key = format!("{}{SET}", redis.settings().key_prefix);
        let reply = redis.script(&self.script, vec![key], args).await?;
        let remote = parse_scores(reply)?;
        let new = {
            let mut known = self.lock();
            for (jti, until) in &pushed {
                if known.unsynced.get(jti) == Some(until) {
                    known.unsynced.remove(jti);
                }
            }
            known.live.retain(|_, until| *until >= now);
            known.merge(remote)
        };
        self.tell(&new);
        self.publish(&pushed).await;
        Ok(())
    }

    /// Tells the other instances at once; one that misses it reads the set
    /// at its next sync.
    async fn publish(&self, pushed: &[(String, u64)]) {
        let Some((pubsub, channel)) = self.announce.as_ref().filter(|_| !pushed.is_empty()) else {
            return;
        };
        let payload = serde_json::to_vec(pushed).unwrap_or_default();
        if let Err(e) = pubsub.publish(channel, &payload).await {
            tracing::debug!(error = %e, "revocation not published; the others read it at their sync");
        }
    }
}

impl Known {
    /// Adds revocations (the later lapse wins); the jtis not known before.
    fn merge(&mut self, revoked: impl IntoIterator<Item = (String, u64)>) -> Vec<String> {
        let now = unix_now();
        let mut new = Vec::new();
        for (jti, until) in revoked {
            match self.live.get_mut(&jti) {
                Some(known) => *known = (*known).max(until),
                None => {
                    if until >= now {
                        new.push(jti.clone());
                    }
                    self.live.insert(jti, until);
                }
            }
        }
        new
    }
}

/// The channel's messages: `[[jti, lapses], ...]` from another instance
/// (or this one, which changes nothing).
struct Published(Weak<Inner>);

impl Sink for Published {
    fn message(&self, _channel: &[u8], payload: &[u8]) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        match serde_json::from_slice::<Vec<(String, u64)>>(payload) {
            Ok(revoked) => {
                let new = inner.lock().merge(revoked);
                inner.tell(&new);
            }
            Err(e) => tracing::warn!(error = %e, "unreadable revocation message ignored"),
        }
    }

    fn subscribed(&self, _channel: &str) {
        // What was published meanwhile is in the set: the next sync reads it.
    }
}

/// `[member, score, member, score, ...]` as strings.
fn parse_scores(reply: Value) -> Result<Vec<(String, u64)>, StoreError> {
    let bad = || StoreError::rejected("unexpected revocation set reply");
    let Value::Array(items) = reply else {
        return Err(bad());
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::Double(d) => Some(d.to_string()),
        _ => None,
    };
    items
        .chunks(2)
        .map(|pair| match pair {
            [member, score] => {
                let member = text(member).ok_or_else(bad)?;
                let score = text(score)
                    .and_then(|s| s.parse::<f64>().ok())
                    .ok_or_else(bad)?;
                Ok((member, score.max(0.0) as u64))
            }
            _ => Err(bad()),
        })
        .collect()
}

async fn keep_synced(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(SYNC_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let connected = inner.redis.as_ref().is_some_and(RedisStore::is_connected);
        if connected {
            if let Err(e) = inner.sync(true).await {
                tracing::debug!(error = %e, "revocation sync failed; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_revocations_lapse() {
        let revocations = Revocations::start(None, None);
        revocations.add("a", unix_now() + 60).await;
        revocations.add("old", unix_now() - 1).await;
        assert!(revocations.is_revoked("a"));
        assert!(!revocations.is_revoked("old"));
        assert!(!revocations.is_revoked("b"));
    }

    #[tokio::test]
    async fn listeners_hear_each_new_revocation_once() {
        let revocations = Revocations::start(None, None);
        let heard = Arc::new(Mutex::new(Vec::new()));
        let sink = heard.clone();
        revocations.listen(Arc::new(move |jtis: &[String]| {
            sink.lock().unwrap().extend(jtis.iter().cloned())
        }));
        revocations.add("a", unix_now() + 60).await;
        revocations.add("a", unix_now() + 90).await;
        revocations.add("b", unix_now() + 60).await;
        assert_eq!(
            *heard.lock().unwrap(),
            vec!["a".to_string(), "b".to_string()]
        );
    }

    #[test]
    fn scores_parse_from_bulk_strings() {
        let reply = Value::Array(vec![
            Value::BulkString(b"j1".to_vec()),
            Value::BulkString(b"1700000000".to_vec()),
        ]);
        assert_eq!(
            parse_scores(reply).unwrap(),
            vec![("j1".to_string(), 1_700_000_000)]
        );
        assert!(parse_scores(Value::Array(vec![Value::Nil])).is_err());
    }
}
