//! The per-instance hub: a registry of the room tasks with local members,
//! started on the first join and retired after the last leave, and the
//! [`Inbox`] through which the bus hands each room its events.
//!
//! The registry lock guards only the map; a room's events go into its own
//! bounded queue with `try_send`. A full queue never blocks the bus: the
//! room is flagged and reads what it missed from history instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, Notify};

use super::bus::{Bus, BusEvent, Inbox, Outgoing};
use super::conn::QueueLimits;
use super::room::{Cmd, JoinRequest, Joined, RoomParts, RoomTask};
use crate::domain::Id;

/// Room command queue: joins, leaves and local deliveries.
const CMD_QUEUE: usize = 256;
/// Room event queue (bus deliveries); past it the room catches up from history.
const EVENT_QUEUE: usize = 4096;

/// What a room task and the rest of the instance share about it.
#[derive(Default)]
pub struct RoomShared {
    /// Events were dropped because the room's queue was full.
    pub overflowed: AtomicBool,
    pub wake: Notify,
    /// The highest id delivered here (the publish floor).
    pub last_seen: AtomicU64,
    pub connections: AtomicUsize,
}

#[derive(Clone)]
struct RoomHandle {
    cmds: mpsc::Sender<Cmd>,
    events: mpsc::Sender<BusEvent>,
    shared: Arc<RoomShared>,
}

/// The rooms with local members.
#[derive(Default)]
pub struct Registry {
    rooms: Mutex<HashMap<Id, RoomHandle>>,
    /// Frames written to local sockets by every room since start.
    pub fanned_out: Arc<AtomicU64>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Id, RoomHandle>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, room: &Id) -> Option<RoomHandle> {
        self.lock().get(room).cloned()
    }

    /// Removes an idle room's entry unless a command is already waiting
    /// for it; true when the room task should end. Closing the queue under
    /// the lock means no join can slip in unseen.
    pub fn retire(&self, room: &Id, cmds: &mut mpsc::Receiver<Cmd>) -> bool {
        let mut rooms = self.lock();
        if !cmds.is_empty() {
            return false;
        }
        rooms.remove(room);
        cmds.close();
        true
    }

    /// The highest id this instance delivered in `room` (0 if none).
    pub fn last_seen(&self, room: &Id) -> u64 {
        self.get(room)
            .map_or(0, |h| h.shared.last_seen.load(Ordering::Acquire))
    }

    /// Rooms with local members and their connections.
    pub fn counts(&self) -> (usize, usize) {
        let rooms = self.lock();
        let connections = rooms
            .values()
            .map(|h| h.shared.connections.load(Ordering::Acquire))
            .sum();
        (rooms.len(), connections)
    }
}

impl Inbox for Registry {
    fn deliver(&self, room: &Id, event: BusEvent) {
        let Some(handle) = self.get(room) else {
            return;
        };
        if handle.events.try_send(event).is_err() {
            handle.shared.overflowed.store(true, Ordering::Release);
            handle.shared.wake.notify_one();
        }
    }
}

/// Starts room tasks and talks to them; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    registry: Arc<Registry>,
    bus: Arc<dyn Bus>,
    shutdown: broadcast::Sender<()>,
    presence_interval: Duration,
    queue: QueueLimits,
    runtime: tokio::runtime::Handle,
}

impl Hub {
    /// Must be called inside the Tokio runtime the room tasks will run on.
    pub fn new(
        registry: Arc<Registry>,
        bus: Arc<dyn Bus>,
        shutdown: broadcast::Sender<()>,
        presence_interval: Duration,
        queue: QueueLimits,
    ) -> Self {
        Self {
            registry,
            bus,
            shutdown,
            presence_interval,
            queue,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    fn room(&self, room: &Id) -> RoomHandle {
        let mut rooms = self.registry.lock();
        if let Some(handle) = rooms.get(room) {
            return handle.clone();
        }
        let (cmd_tx, cmds) = mpsc::channel(CMD_QUEUE);
        let (event_tx, events) = mpsc::channel(EVENT_QUEUE);
        let handle = RoomHandle {
            cmds: cmd_tx,
            events: event_tx,
            shared: Arc::new(RoomShared::default()),
        };
        rooms.insert(room.clone(), handle.clone());
        let parts = RoomParts {
            id: room.clone(),
            bus: self.bus.clone(),
            registry: self.registry.clone(),
            shared: handle.shared.clone(),
            cmds,
            events,
            shutdown: self.shutdown.subscribe(),
            presence_interval: self.presence_interval,
            queue: self.queue,
        };
        self.runtime.spawn(RoomTask::run(parts));
        handle
    }

    /// Registers a socket in its room; returns the frames to send first.
    /// `None` only when the broker is shutting down.
    pub async fn join(&self, room: &Id, mut request: JoinRequest) -> Option<Joined> {
        // A room retiring at this very moment hands the request back; the
        // next attempt starts a fresh room task.
        for _ in 0..8 {
            let handle = self.room(room);
            let (tx, rx) = oneshot::channel();
            request = match handle.cmds.send(Cmd::Join(request, tx)).await {
                Err(mpsc::error::SendError(Cmd::Join(request, _))) => request,
                Err(_) => return None,
                Ok(()) => match rx.await {
                    Ok(Ok(joined)) => return Some(joined),
                    Ok(Err(request)) => request,
                    Err(_) => return None,
                },
            };
        }
        tracing::warn!(room = %room, "could not join a room task (it kept retiring)");
        None
    }

    /// The socket sent its first frames: the room may write to it now.
    pub async fn started(&self, room: &Id, conn_id: u64) {
        if let Some(handle) = self.registry.get(room) {
            let _ = handle.cmds.send(Cmd::Started(conn_id)).await;
        }
    }

    /// Removes a socket from its room.
    pub async fn leave(&self, room: &Id, conn_id: u64) {
        if let Some(handle) = self.registry.get(room) {
            let _ = handle.cmds.send(Cmd::Leave(conn_id)).await;
        }
    }

    /// Delivers a message to this instance's members only, with a local id;
    /// `None` when the room has no local members or hears from Redis again.
    pub async fn deliver_locally(
        &self,
        room: &Id,
        message: Outgoing,
        outage_since: tokio::time::Instant,
    ) -> Option<u64> {
        let handle = self.registry.get(room)?;
        let (tx, rx) = oneshot::channel();
        handle
            .cmds
            .send(Cmd::Local(message, outage_since, tx))
            .await
            .ok()?;
        rx.await.ok().flatten()
    }
}
