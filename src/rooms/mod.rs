//! WebSocket rooms (SPEC section 6).
//!
//! Rooms are not key/value records, so they live beside the `Store`, not in
//! it. The pieces: `protocol` (the frames as types), `socket` (one task per
//! WebSocket), `room` (one task per room with local members: ordering,
//! dedup, catch-up from history, presence), `conn` (a member's outlet,
//! burst overflow and kick, shared by its room and socket), `hub` (the registry of room
//! tasks and the inbox the bus delivers into), `outbox` (publishing with
//! the bounded outage buffer) and `bus` (ids, history, pub/sub and presence:
//! in memory for one instance, Redis for many). The rest of the broker uses
//! only [`Rooms`].

pub mod bus;
mod conn;
mod hub;
mod outbox;
pub mod protocol;
mod room;
mod socket;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::broadcast;

pub use outbox::{PublishError, Published};
pub use room::Resume;
pub use socket::{run as run_socket, SocketParams};

use self::bus::{Bus, Outgoing};
use self::hub::{Hub, Registry};
use self::outbox::{Outbox, OutboxParts};
use crate::config::RoomsSettings;
use crate::domain::Id;
use crate::pubsub::PubSub;
use crate::store::{RedisStore, StoreResult};

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
}

/// The rooms of this instance; cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<Inner>,
}

impl Rooms {
    /// Starts the rooms on the current Tokio runtime: over Redis when a
    /// store and the instance's pub/sub are given (single, cluster or
    /// sentinel, following its master), in memory otherwise. `fallback`:
    /// buffer publishes Redis cannot take.
    pub fn start(
        settings: &RoomsSettings,
        json_max_depth: usize,
        fallback: bool,
        redis: Option<(RedisStore, PubSub)>,
        server_id: &str,
    ) -> Self {
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
            settings.max_queue,
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
        let (outage_buffered, outage_refused) = self.inner.outbox.stats();
        RoomStats {
            rooms,
            connections,
            outage_buffered,
            outage_refused,
            fanned_out: self.inner.registry.fanned_out.load(Ordering::Relaxed),
        }
    }

    /// Closes every socket with 1001 and stops the room tasks.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(());
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
}
