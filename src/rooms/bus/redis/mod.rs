//! The rooms' bus over Redis, in single, cluster and sentinel mode.
//!
//! Commands (publish script, history, presence) go through the
//! [`RedisStore`]'s connection, so they get its deadline, retries and
//! master following. Live delivery uses the instance's subscriber (see
//! `crate::pubsub`), subscribed to exactly the rooms with local members:
//! plain pub/sub on a single node or behind Sentinel, sharded pub/sub
//! (`SPUBLISH`/`SSUBSCRIBE`) in a Cluster.
//!
//! Keys of a room share one hash slot (`room:{<room>}:...`): `meta` (epoch,
//! last id, the master's replication id), `history` (a stream whose entry
//! ids are the message ids, capped at `rooms.history_size`), the three
//! presence keys, `origins` (recent publish ids, for idempotent retries),
//! `ban:<member>` (a kicked member's ban, expiring with it) and the
//! `events` channel, which carries messages, presence events and kicks.

mod scripts;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use serde::Deserialize;
use serde_json::value::RawValue;

use self::scripts::Scripts;
use super::memory::new_epoch;
use super::{Bus, BusEvent, Commit, Delivery, Inbox, Outgoing, Position, PresenceChanges, Source};
use crate::clock::unix_now_ms;
use crate::config::RoomsSettings;
use crate::domain::Id;
use crate::pubsub::{PubSub, Sink};
use crate::rooms::protocol::PresenceKind;
use crate::store::{RedisStore, StoreError, StoreResult};

/// How far a new epoch's ids start above every id seen before: more than
/// any instance can hand out locally during an outage (`rooms.outage_buffer`
/// is capped below it), so no id is ever reused.
pub const EPOCH_JUMP: u64 = 1_000_000;

/// The meta hash (epoch, last id) lives this long after the room's last
/// publish or presence refresh: ids must not restart under live members.
const META_TTL: Duration = Duration::from_secs(24 * 3600);

/// Key and channel names of one room.
struct RoomKeys {
    meta: String,
    history: String,
    presence: String,
    expiry: String,
    members: String,
    origins: String,
    channel: String,
    base: String,
}

/// The names of everything the bus keeps in Redis.
#[derive(Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    fn room(&self, room: &Id) -> RoomKeys {
        let base = format!("{}{ROOM_CHANNELS}{}}}:", self.prefix, room.as_str());
        RoomKeys {
            meta: format!("{base}meta"),
            history: format!("{base}history"),
            presence: format!("{base}presence"),
            expiry: format!("{base}presence:expiry"),
            members: format!("{base}members"),
            origins: format!("{base}origins"),
            channel: format!("{base}events"),
            base,
        }
    }

    /// The room a channel belongs to.
    fn room_of(&self, channel: &[u8]) -> Option<Id> {
        let rest = channel.strip_prefix(self.prefix.as_bytes())?;
        let rest = rest.strip_prefix(ROOM_CHANNELS.as_bytes())?;
        let rest = rest.strip_suffix(b"}:events")?;
        Id::parse(std::str::from_utf8(rest).ok()?).ok()
    }
}

impl RoomKeys {
    fn ban(&self, member: &str) -> String {
        format!("{}ban:{member}", self.base)
    }
}

/// What travels on a room channel: a message (`e`, `i`, ...), a presence
/// event (`p`, `m`) or a kick (`k`).
#[derive(Deserialize)]
struct Wire {
    e: Option<String>,
    i: Option<u64>,
    /// Milliseconds since the epoch when published (history age).
    t: Option<u64>,
    f: Option<String>,
    o: Option<String>,
    d: Option<Box<RawValue>>,
    p: Option<String>,
    m: Option<String>,
    k: Option<String>,
}

/// A decoded channel payload.
enum Decoded {
    Message(Delivery, u64),
    Presence(PresenceKind, String),
    Kick(String),
}

fn decode(payload: &[u8]) -> Option<Decoded> {
    let wire: Wire = serde_json::from_slice(payload).ok()?;
    if let Some(member) = wire.k {
        return Some(Decoded::Kick(member));
    }
    if let (Some(kind), Some(member)) = (wire.p.as_deref(), wire.m) {
        let kind = match kind {
            "join" => PresenceKind::Join,
            "leave" => PresenceKind::Leave,
            _ => return None,
        };
        return Some(Decoded::Presence(kind, member));
    }
    let delivery = Delivery {
        epoch: wire.e?,
        id: wire.i?,
        message: Outgoing {
            from: wire.f?,
            origin: wire.o.unwrap_or_default(),
            data: wire.d?,
        },
    };
    Some(Decoded::Message(delivery, wire.t.unwrap_or(0)))
}

/// How every room channel begins (after the key prefix).
const ROOM_CHANNELS: &str = "room:{";

/// Turns room channel messages into bus events for the rooms' inbox.
struct RoomSink {
    names: Names,
    inbox: Arc<dyn Inbox>,
}

impl Sink for RoomSink {
    fn message(&self, channel: &[u8], payload: &[u8]) {
        let Some(room) = self.names.room_of(channel) else {
            return;
        };
        match decode(payload) {
            Some(Decoded::Message(delivery, _)) => {
                self.inbox.deliver(&room, BusEvent::Message(delivery))
            }
            Some(Decoded::Presence(kind, member)) => {
                self.inbox.deliver(&room, BusEvent::Presence(kind, member))
            }
            Some(Decoded::Kick(member)) => self.inbox.deliver(&room, BusEvent::Kick(member)),
            None => tracing::warn!(room = %room, "undecodable message on a room channel; ignored"),
        }
    }

    fn subscribed(&self, channel: &str) {
        if let Some(room) = self.names.room_of(channel.as_bytes()) {
            self.inbox.deliver(&room, BusEvent::Resync);
        }
    }
}

/// [`Bus`] over Redis; see the module doc.
pub struct RedisBus {
    store: RedisStore,
    scripts: Arc<Scripts>,
    names: Names,
    pubsub: PubSub,
    server_id: String,
    publish_cmd: &'static str,
    history_size: usize,
    history_ttl: Duration,
    presence_ttl: Duration,
}

impl RedisBus {
    /// Routes the room channels of the instance's pub/sub to `inbox`.
    pub fn start(
        store: RedisStore,
        pubsub: PubSub,
        inbox: Arc<dyn Inbox>,
        settings: &RoomsSettings,
        server_id: &str,
    ) -> Self {
        let names = Names {
            prefix: store.settings().key_prefix.clone(),
        };
        pubsub.route(
            ROOM_CHANNELS,
            Arc::new(RoomSink {
                names: names.clone(),
                inbox,
            }),
        );
        Self {
            store,
            scripts: Arc::new(Scripts::new()),
            names,
            publish_cmd: pubsub.publish_cmd(),
            pubsub,
            server_id: server_id.replace('\n', " "),
            history_size: settings.history_size,
            history_ttl: settings.history_ttl(),
            presence_ttl: settings.presence_ttl(),
        }
    }

    fn field(&self, member: &str) -> String {
        format!("{member}\n{}", self.server_id)
    }

    /// Presence entries lapse after half the TTL; rooms refresh them (and
    /// purge lapsed ones) every quarter, so a live instance must miss two
    /// refreshes in a row to lose them, and a dead one's are gone, with a
    /// `leave`, within three quarters of the TTL.
    fn presence_expiry_ms(&self) -> u64 {
        unix_now_ms() + (self.presence_ttl.as_millis() as u64 / 2).max(1)
    }

    fn presence_key_ttl_ms(&self) -> String {
        (self.presence_ttl.as_millis() as u64 * 4)
            .max(1000)
            .to_string()
    }
}

fn ms(d: Duration) -> String {
    (d.as_millis() as u64).max(1).to_string()
}

fn shape(what: &str) -> StoreError {
    StoreError::rejected(format!(
        "unexpected reply shape from a rooms script: {what}"
    ))
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => redis::from_redis_value_ref::<u64>(other).ok(),
    }
}

fn text(v: &Value) -> Option<String> {
    redis::from_redis_value_ref::<String>(v).ok()
}

/// `[replication id, offset, acknowledged offset]` of a rooms script.
fn parse_source(parts: &[Value]) -> StoreResult<Source> {
    let signed = |v: &Value| match v {
        Value::Int(n) => Some(*n),
        other => redis::from_redis_value_ref::<i64>(other).ok(),
    };
    match parts {
        [id, offset, acked] => Ok(Source {
            id: text(id).ok_or_else(|| shape("source id"))?,
            offset: signed(offset).ok_or_else(|| shape("source offset"))?,
            acked: signed(acked).ok_or_else(|| shape("source acked"))?,
        }),
        _ => Err(shape("source")),
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(text).collect(),
        _ => Vec::new(),
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(
        &self,
        room: &Id,
        message: &Outgoing,
        floor: u64,
        rotate: bool,
        expect: Option<&str>,
    ) -> StoreResult<Commit> {
        let keys = self.names.room(room);
        let mut body =
            serde_json::to_string(message).map_err(|e| StoreError::rejected(e.to_string()))?;
        // The script prepends `{"e":..,"i":..,"t":..,` to the object's tail.
        body.remove(0);
        let reply = self
            .store
            .script(
                &self.scripts.publish,
                vec![keys.meta, keys.history, keys.channel, keys.origins],
                vec![
                    body,
                    floor.to_string(),
                    new_epoch(),
                    self.history_size.to_string(),
                    ms(self.history_ttl),
                    ms(META_TTL),
                    EPOCH_JUMP.to_string(),
                    self.publish_cmd.to_string(),
                    unix_now_ms().to_string(),
                    message.origin.clone(),
                    if rotate { "1" } else { "0" }.to_string(),
                    expect.unwrap_or_default().to_string(),
                ],
            )
            .await?;
        let Value::Array(parts) = reply else {
            return Err(shape("publish"));
        };
        let [id, epoch, source @ ..] = parts.as_slice() else {
            return Err(shape("publish"));
        };
        let source = parse_source(source)?;
        if matches!(id, Value::Int(-1)) {
            return Ok(Commit::Moved(source));
        }
        let delivery = Delivery {
            id: int(id).ok_or_else(|| shape("publish id"))?,
            epoch: text(epoch).ok_or_else(|| shape("publish epoch"))?,
            message: message.clone(),
        };
        Ok(Commit::Done(delivery, source))
    }

    async fn source(&self, room: &Id) -> StoreResult<Source> {
        let keys = self.names.room(room);
        let reply = self
            .store
            .script(&self.scripts.source, vec![keys.meta], vec![])
            .await?;
        match reply {
            Value::Array(parts) => parse_source(&parts),
            _ => Err(shape("source")),
        }
    }

    fn replicated(&self) -> bool {
        self.store.settings().mode != crate::config::RedisMode::Single
    }

    async fn position(&self, room: &Id) -> StoreResult<Position> {
        let keys = self.names.room(room);
        let reply = self
            .store
            .script(
                &self.scripts.position,
                vec![keys.meta],
                vec![new_epoch(), ms(META_TTL)],
            )
            .await?;
        match reply {
            Value::Array(parts) => match parts.as_slice() {
                [epoch, last] => Ok(Position {
                    epoch: text(epoch).ok_or_else(|| shape("position epoch"))?,
                    last_id: int(last).ok_or_else(|| shape("position id"))?,
                }),
                _ => Err(shape("position")),
            },
            _ => Err(shape("position")),
        }
    }

    async fn history(&self, room: &Id, after: u64) -> StoreResult<Vec<Delivery>> {
        let keys = self.names.room(room);
        let cmd = redis::cmd("XRANGE")
            .arg(&keys.history)
            .arg(format!("{}-0", after.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(self.history_size)
            .clone();
        let reply = self.store.command(cmd).await?;
        let oldest_ms = unix_now_ms().saturating_sub(self.history_ttl.as_millis() as u64);
        let Value::Array(entries) = reply else {
            return Err(shape("XRANGE"));
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let Some(Value::Array(fields)) = parts.get(1) else {
                continue;
            };
            let payload = fields.get(1).and_then(|v| match v {
                Value::BulkString(b) => Some(b.as_slice()),
                _ => None,
            });
            if let Some(Decoded::Message(delivery, t)) = payload.and_then(decode) {
                if t >= oldest_ms && delivery.id > after {
                    out.push(delivery);
                }
            }
        }
        Ok(out)
    }

    async fn subscribe(&self, room: &Id) {
        self.pubsub.want(self.names.room(room).channel, true).await;
    }

    async fn unsubscribe(&self, room: &Id) {
        self.pubsub.want(self.names.room(room).channel, false).await;
    }

    async fn announce(&self, room: &Id, kind: PresenceKind, member: &str) -> StoreResult<()> {
        let keys = self.names.room(room);
        let payload = serde_json::json!({"p": kind.as_str(), "m": member}).to_string();
        self.pubsub.publish(&keys.channel, payload.as_bytes()).await
    }

    async fn presence_join(
        &self,
        room: &Id,
        member: &str,
        connections: usize,
    ) -> StoreResult<bool> {
        let keys = self.names.room(room);
        let reply = self
            .store
            .script(
                &self.scripts.presence_join,
                vec![keys.presence, keys.expiry, keys.members],
                vec![
                    self.field(member),
                    member.to_string(),
                    connections.to_string(),
                    self.presence_expiry_ms().to_string(),
                    self.presence_key_ttl_ms(),
                ],
            )
            .await?;
        Ok(int(&reply) == Some(1))
    }

    async fn presence_leave(&self, room: &Id, member: &str) -> StoreResult<bool> {
        let keys = self.names.room(room);
        let reply = self
            .store
            .script(
                &self.scripts.presence_leave,
                vec![keys.presence, keys.expiry, keys.members],
                vec![self.field(member), member.to_string()],
            )
            .await?;
        Ok(int(&reply) == Some(1))
    }

    async fn presence_sync(
        &self,
        room: &Id,
        local: &[(String, usize)],
    ) -> StoreResult<PresenceChanges> {
        let keys = self.names.room(room);
        let mut args = vec![
            unix_now_ms().to_string(),
            self.presence_expiry_ms().to_string(),
            self.presence_key_ttl_ms(),
            ms(META_TTL),
        ];
        for (member, count) in local {
            args.push(self.field(member));
            args.push(member.clone());
            args.push(count.to_string());
        }
        let reply = self
            .store
            .script(
                &self.scripts.presence_sync,
                vec![keys.presence, keys.expiry, keys.members, keys.meta],
                args,
            )
            .await?;
        match reply {
            Value::Array(parts) if parts.len() == 3 => Ok(PresenceChanges {
                joined: strings(&parts[0]),
                left: strings(&parts[1]),
                all: Some(strings(&parts[2])),
            }),
            _ => Err(shape("presence sync")),
        }
    }

    async fn members(&self, room: &Id) -> StoreResult<Vec<(String, usize)>> {
        let keys = self.names.room(room);
        let reply = self
            .store
            .script(
                &self.scripts.members,
                vec![keys.presence, keys.expiry],
                vec![unix_now_ms().to_string()],
            )
            .await?;
        let flat = strings(&reply);
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for pair in flat.chunks(2) {
            let [field, connections] = pair else { continue };
            let Some((member, _server)) = field.rsplit_once('\n') else {
                continue;
            };
            *counts.entry(member.to_string()).or_default() += connections.parse().unwrap_or(0);
        }
        Ok(counts.into_iter().collect())
    }

    async fn kick(&self, room: &Id, member: &str, banned_until_ms: Option<u64>) -> StoreResult<()> {
        let keys = self.names.room(room);
        if let Some(until) = banned_until_ms {
            let cmd = redis::cmd("SET")
                .arg(keys.ban(member))
                .arg("1")
                .arg("PXAT")
                .arg(until)
                .clone();
            self.store.command(cmd).await?;
        }
        let payload = serde_json::json!({ "k": member }).to_string();
        self.pubsub.publish(&keys.channel, payload.as_bytes()).await
    }

    async fn banned_until(&self, room: &Id, member: &str) -> StoreResult<Option<u64>> {
        let keys = self.names.room(room);
        let cmd = redis::cmd("PTTL").arg(keys.ban(member)).clone();
        let reply = self.store.command(cmd).await?;
        // -2: no such key (not banned); -1 cannot happen (always set with PXAT).
        Ok(match reply {
            Value::Int(left) if left > 0 => Some(unix_now_ms() + left as u64),
            _ => None,
        })
    }
}
