//! WebSocket rooms (SPEC section 6).
//!
//! Rooms are not key/value records, so they live beside the `Store`, not in
//! it. The pieces: `protocol` (the frames as types), `socket` (one task per
//! WebSocket), `room` (one task per room with local members: ordering,
//! dedup, catch-up from history, presence), `conn` (a member's outlet,
//! burst overflow and the closes decided elsewhere, shared by its room and
//! socket), `hub` (the registry of room tasks and the inbox the bus
//! delivers into), `outbox` (publishing with the bounded outage buffer),
//! `authority` (the token a socket holds and how a refresh is verified)
//! and `bus` (ids, history, pub/sub, presence and kicks: in memory for one
//! instance, Redis for many). The rest of the broker uses only [`Rooms`].

mod acked;
mod authority;
pub mod bus;
mod conn;
mod hub;
mod outbox;
pub mod protocol;
mod room;
mod socket;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::broadcast;

pub use authority::{Grant, TokenCheck};
pub use outbox::{PublishError, Published};
pub use room::Resume;
pub use socket::{run as run_socket, SocketParams};

use self::bus::{Bus, BusEvent, Inbox as _, Outgoing};
use self::conn::{Closing, Link, QueueLimits};
use self::hub::{Hub, Registry};
use self::outbox::{Outbox, OutboxParts};
use crate::clock::unix_now_ms;
use crate::config::RoomsSettings;
use crate::domain::Id;
use crate::live_tokens::LiveTokens;
use crate::pubsub::PubSub;
use crate::store::{RedisStore, StoreError, StoreResult};

/// Counts for health and the README's operations section.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct RoomStats {
    /// Rooms with members on this instance.
    pub rooms: usize,
    /// WebSocket connections in those rooms.
    pub connections: usize,
    /// Messages waiting for Redis in the outage buffer.
    pub outage_buffered: usize,
    /// Publishes refused because that buffer was full (since start).
    pub outage_refused: u64,
    /// Frames written to local sockets by every room (since start).
    pub fanned_out: u64,
    /// Committed messages kept until their Redis master has shown it kept
    /// them (published again if a failover replaced it).
    pub unsettled: usize,
}

struct Inner {
    hub: Hub,
    outbox: Outbox,
    bus: Arc<dyn Bus>,
    registry: Arc<Registry>,
    settings: RoomsSettings,
    json_max_depth: usize,
    shutdown: broadcast::Sender<()>,
    next_conn: AtomicU64,
    /// Open sockets by token, for revocations and the drain.
    sockets: LiveTokens<Arc<Link>>,
    /// Sockets ended, by why (metrics).
    closes: [AtomicU64; socket::CLOSE_KINDS.len()],
    check: Arc<dyn TokenCheck>,
    draining: AtomicBool,
}

/// Where a room is started from: its settings and the instance's handles.
pub struct RoomsParts<'a> {
    pub settings: &'a RoomsSettings,
    pub json_max_depth: usize,
    /// Buffer publishes Redis cannot take (`storage.fallback`).
    pub fallback: bool,
    /// Over Redis when given, in memory otherwise.
    pub redis: Option<(RedisStore, PubSub)>,
    pub server_id: &'a str,
    /// How refreshes are verified and revocations known.
    pub check: Arc<dyn TokenCheck>,
}

/// The rooms of this instance; cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<Inner>,
}

impl Rooms {
    /// Starts the rooms on the current Tokio runtime: over Redis when a
    /// store and the instance's pub/sub are given (single, cluster or
    /// sentinel, following its master), in memory otherwise.
    pub fn start(parts: RoomsParts<'_>) -> Self {
        let RoomsParts {
            settings,
            json_max_depth,
            fallback,
            redis,
            server_id,
            check,
        } = parts;
        let registry = Arc::new(Registry::default());
        let (shutdown, _) = broadcast::channel(1);
        let bus: Arc<dyn Bus> = match redis {
            Some((store, pubsub)) => Arc::new(bus::redis::RedisBus::start(
                store,
                pubsub,
                registry.clone(),
                settings,
                server_id,
            )),
            None => Arc::new(bus::memory::MemoryBus::new(
                registry.clone(),
                settings.history_size,
                settings.history_ttl(),
            )),
        };
        // See `RedisBus::presence_expiry_ms`.
        let presence_interval = (settings.presence_ttl() / 4).max(Duration::from_millis(100));
        let hub = Hub::new(
            registry.clone(),
            bus.clone(),
            shutdown.clone(),
            presence_interval,
            QueueLimits {
                max_queue: settings.max_queue,
                burst: settings.history_size,
            },
        );
        let outbox = Outbox::start(
            OutboxParts {
                bus: bus.clone(),
                registry: registry.clone(),
                hub: hub.clone(),
                capacity: settings.outage_buffer,
                fallback,
                local_after: Duration::from_millis(settings.outage_local_after_ms),
            },
            shutdown.subscribe(),
        );
        Self {
            inner: Arc::new(Inner {
                hub,
                outbox,
                bus,
                registry,
                settings: settings.clone(),
                json_max_depth,
                shutdown,
                next_conn: AtomicU64::new(1),
                sockets: LiveTokens::default(),
                closes: Default::default(),
                check,
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// Publishes `data` from `from` into `room`.
    pub async fn publish(
        &self,
        room: &Id,
        from: &str,
        data: Box<RawValue>,
    ) -> Result<Published, PublishError> {
        let message = Outgoing {
            from: from.to_string(),
            origin: uuid::Uuid::new_v4().simple().to_string(),
            data,
        };
        self.inner.outbox.publish(room, message).await
    }

    /// Members across all instances with their connection counts.
    pub async fn members(&self, room: &Id) -> StoreResult<Vec<(String, usize)>> {
        self.inner.bus.members(room).await
    }

    /// True when `member` would be one member too many in `room`. Another
    /// connection of a present member is always let in. When presence
    /// cannot be read the join is allowed (rooms keep working in an outage).
    pub async fn is_full(&self, room: &Id, member: &str) -> bool {
        match self.members(room).await {
            Ok(members) => {
                members.len() >= self.inner.settings.max_members
                    && !members.iter().any(|(m, _)| m == member)
            }
            Err(_) => false,
        }
    }

    pub fn stats(&self) -> RoomStats {
        let (rooms, connections) = self.inner.registry.counts();
        let (outage_buffered, outage_refused, unsettled) = self.inner.outbox.stats();
        RoomStats {
            rooms,
            connections,
            outage_buffered,
            outage_refused,
            fanned_out: self.inner.registry.fanned_out.load(Ordering::Relaxed),
            unsettled,
        }
    }

    /// Closes every socket with 1001 and stops the room tasks.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(());
    }

    /// Closes (4003) this instance's sockets opened or refreshed with one
    /// of `jtis`, which were just revoked.
    pub fn revoked(&self, jtis: &[String]) {
        let hit = self.inner.sockets.revoked(jtis);
        for link in &hit {
            link.close(Closing::Revoked);
        }
        let closed = hit.len();
        if closed > 0 {
            tracing::info!(closed, "room sockets of a revoked token closed");
        }
    }

    /// Removes `member` from `room` on every instance (its sockets close
    /// with 4004), banned from joining again for `ban` when given; answers
    /// until when (unix seconds). Sockets here close even when Redis cannot
    /// carry the kick to the others (then the error says so).
    pub async fn kick(
        &self,
        room: &Id,
        member: &str,
        ban: Option<Duration>,
    ) -> Result<Option<u64>, StoreError> {
        self.inner
            .registry
            .deliver(room, BusEvent::Kick(member.to_string()));
        let until_ms = ban.map(|b| unix_now_ms().saturating_add(b.as_millis() as u64));
        self.inner.bus.kick(room, member, until_ms).await?;
        Ok(until_ms.map(|ms| ms.div_ceil(1000)))
    }

    /// Until when (unix seconds) `member` is banned from `room`. When that
    /// cannot be read the join is allowed (rooms keep working in an outage).
    pub async fn banned_until(&self, room: &Id, member: &str) -> Option<u64> {
        match self.inner.bus.banned_until(room, member).await {
            Ok(until) => until.map(|ms| ms.div_ceil(1000)),
            Err(e) => {
                tracing::debug!(room = %room, error = %e, "ban unreadable; join allowed");
                None
            }
        }
    }

    /// Room sockets ended since start, by why: `client` (it closed or went
    /// away) or the broker's close (`slow_reader`, `rate_limit`,
    /// `frame_too_large`, `token_expired`, `token_revoked`, `kicked`,
    /// `going_away`, `idle`, `protocol`).
    pub fn close_counts(&self) -> Vec<(&'static str, u64)> {
        socket::CLOSE_KINDS
            .iter()
            .zip(&self.inner.closes)
            .map(|(kind, n)| (*kind, n.load(Ordering::Relaxed)))
            .collect()
    }

    fn count_close(&self, kind: usize) {
        if let Some(n) = self.inner.closes.get(kind) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// True once the drain has begun: upgrades are refused.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Refuses new upgrades, then closes every room socket with 1001, spread
    /// evenly over `window`, and waits (a little past it) for them to go.
    pub async fn drain(&self, window: Duration) {
        self.inner.draining.store(true, Ordering::Release);
        let links = self.inner.sockets.links();
        let started = tokio::time::Instant::now();
        let n = links.len().max(1) as u32;
        tracing::info!(sockets = links.len(), ?window, "draining room sockets");
        for (i, link) in links.iter().enumerate() {
            tokio::time::sleep_until(started + window * i as u32 / n).await;
            link.close(Closing::Drain);
        }
        // Any that slipped in meanwhile.
        for link in self.inner.sockets.links() {
            link.close(Closing::Drain);
        }
        let patience = started + window + Duration::from_secs(3);
        while !self.inner.sockets.is_empty() && tokio::time::Instant::now() < patience {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    fn limits(&self) -> &RoomsSettings {
        &self.inner.settings
    }

    fn json_max_depth(&self) -> usize {
        self.inner.json_max_depth
    }

    fn shutdown_signal(&self) -> broadcast::Receiver<()> {
        self.inner.shutdown.subscribe()
    }

    fn next_conn_id(&self) -> u64 {
        self.inner.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn sockets(&self) -> &LiveTokens<Arc<Link>> {
        &self.inner.sockets
    }

    fn token_check(&self) -> Arc<dyn TokenCheck> {
        self.inner.check.clone()
    }

    /// When a socket whose token has this `exp` must close (4001).
    fn expiry_deadline(&self, exp: u64) -> tokio::time::Instant {
        socket::deadline(exp, self.inner.check.leeway_seconds())
    }

    /// Closes the socket at once when `jti` was revoked before it was
    /// registered (a revocation racing the upgrade or the refresh).
    fn recheck_revoked(&self, jti: &str, link: &Link) {
        if self.inner.check.is_revoked(jti) {
            link.close(Closing::Revoked);
        }
    }
}
