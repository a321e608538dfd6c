//! One task per room with local members: it owns the room's connections,
//! its place in the sequence (epoch and last id delivered here) and its
//! local presence, and is the only writer of all three, so ordering needs
//! no locks.
//!
//! Every delivery, live or from history, goes through [`RoomTask::deliver`]:
//! an id at or below the last one delivered here is a duplicate and is
//! dropped; a jump in the sequence means pub/sub dropped something (a
//! reconnect, a failover) and the room reads what it missed from history
//! before going on. Each connection also remembers the last id it was sent,
//! so a resumed client never sees an id twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

mod members;

use bytestring::ByteString;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::bus::{Bus, BusEvent, Delivery, Outgoing};
use super::conn::{Closing, Conn, ConnParts, QueueLimits};

use super::hub::{Registry, RoomShared};
use super::protocol::render;
use crate::domain::Id;

/// A client asking to resume: the last id it saw and the epoch it was in.
#[derive(Debug, Clone)]
pub struct Resume {
    pub since: u64,
    pub epoch: String,
}

/// A socket joining a room.
pub struct JoinRequest {
    pub conn_id: u64,
    /// Who joins and where the room writes its frames.
    pub conn: ConnParts,
    pub resume: Option<Resume>,
    /// The token's `exp`, for the welcome.
    pub expires_at: u64,
}

/// What a joined socket sends itself, before anything the room writes: the
/// welcome, then what a resume replays (possibly more than its channel holds).
pub struct Joined {
    pub frames: Vec<ByteString>,
}

/// Commands a room task takes.
pub enum Cmd {
    /// Answered `Err(request)` when the room is retiring (the caller retries).
    Join(JoinRequest, oneshot::Sender<Result<Joined, JoinRequest>>),
    Leave(u64),
    /// The socket sent its `Joined` frames; live frames may flow now.
    Started(u64),
    /// Deliver to local members with an id of this instance (Redis cannot
    /// take the message now, since the instant given); answers the id
    /// given, or `None` when the room has heard from Redis since then (the
    /// message then arrives through it).
    Local(Outgoing, tokio::time::Instant, oneshot::Sender<Option<u64>>),
}

/// The channels and handles a room task runs with.
pub struct RoomParts {
    pub id: Id,
    pub bus: Arc<dyn Bus>,
    pub registry: Arc<Registry>,
    pub shared: Arc<RoomShared>,
    pub cmds: mpsc::Receiver<Cmd>,
    pub events: mpsc::Receiver<BusEvent>,
    pub shutdown: broadcast::Receiver<()>,
    pub presence_interval: std::time::Duration,
    pub queue: QueueLimits,
}

pub struct RoomTask {
    id: Id,
    bus: Arc<dyn Bus>,
    shared: Arc<RoomShared>,
    epoch: Option<String>,
    last: Option<u64>,
    conns: HashMap<u64, Conn>,
    /// Local connections per member.
    members: HashMap<String, usize>,
    /// Messages delivered here during an outage, not yet seen back from Redis.
    local_origins: HashSet<String>,
    /// The last messages delivered, by publish id: a publish retried after
    /// a failover lost its first run's record is still delivered once.
    recent: Recent,
    repair: Option<Repair>,
    /// Connections kicked for not reading, to be removed.
    slow: Vec<u64>,
    /// The last connection left (the room may retire).
    emptied: bool,
    /// Members present on any instance, as this room last knew them
    /// (`None` before the first join read them).
    view: Option<HashSet<String>>,
    queue: QueueLimits,
    /// Local ids handed out since Redis was last heard from: (first, last).
    /// Redis ids after an outage start above them (the publish floor).
    local_ids: Option<(u64, u64)>,
    /// When a delivery from Redis last arrived. Once Redis is heard from
    /// after an outage began, no more local ids are handed out for that
    /// outage: Redis ids are being assigned again, and a local id could
    /// name a message Redis gives the same id.
    heard_at: Option<tokio::time::Instant>,
    /// The instance's count of frames fanned out (metrics).
    fanned_out: Arc<std::sync::atomic::AtomicU64>,
}

/// Deliveries held back, in arrival order, while the room cannot read the
/// history that comes before them (Redis away mid-failover): delivering
/// them first would skip the gap for good.
struct Repair {
    pending: VecDeque<Delivery>,
    started: tokio::time::Instant,
    retry_at: tokio::time::Instant,
    backoff: Duration,
}

/// Most deliveries held during a repair, and the longest it may take;
/// past either the room delivers what it has and logs the gap.
const REPAIR_MAX_PENDING: usize = 10_000;
const REPAIR_GIVE_UP: Duration = Duration::from_secs(30);

/// Publish ids of the last [`Recent::CAP`] deliveries.
#[derive(Default)]
struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Recent {
    const CAP: usize = 1024;

    /// Records `origin`; false when it was already there.
    fn insert(&mut self, origin: &str) -> bool {
        if origin.is_empty() {
            return true;
        }
        if !self.set.insert(origin.to_string()) {
            return false;
        }
        self.order.push_back(origin.to_string());
        if self.order.len() > Self::CAP {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

impl RoomTask {
    /// Runs the room until its last member leaves or the broker shuts down.
    pub async fn run(parts: RoomParts) {
        let RoomParts {
            id,
            bus,
            registry,
            shared,
            mut cmds,
            mut events,
            mut shutdown,
            presence_interval,
            queue,
        } = parts;
        let mut room = RoomTask {
            fanned_out: registry.fanned_out.clone(),
            id: id.clone(),
            bus: bus.clone(),
            shared: shared.clone(),
            epoch: None,
            last: None,
            conns: HashMap::new(),
            members: HashMap::new(),
            local_origins: HashSet::new(),
            recent: Recent::default(),
            repair: None,
            queue,
            slow: Vec::new(),
            emptied: false,
            view: None,
            local_ids: None,
            heard_at: None,
        };
        bus.subscribe(&id).await;
        room.refresh_position().await;
        let mut tick = tokio::time::interval(presence_interval);
        tick.reset();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.recv() => break,
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => room.on_cmd(cmd).await,
                    None => break,
                },
                event = events.recv() => match event {
                    Some(event) => room.on_event(event).await,
                    None => break,
                },
                _ = shared.wake.notified() => {}
                _ = tick.tick() => room.sync_presence().await,
                _ = tokio::time::sleep_until(room.repair_at()), if room.repair.is_some() => {
                    room.retry_repair().await;
                }
            }
            room.reap().await;
            if shared.overflowed.swap(false, Ordering::AcqRel) {
                tracing::debug!(room = %id, "room event queue overflowed; reading history");
                room.catch_up_or_repair().await;
            }
            // Only a room that had members and lost the last one retires: a
            // fresh room waits for the join it was started for.
            if room.emptied && room.conns.is_empty() && registry.retire(&id, &mut cmds) {
                break;
            }
        }
        bus.unsubscribe(&id).await;
        // Joins that raced the retirement go back to their senders.
        while let Ok(cmd) = cmds.try_recv() {
            if let Cmd::Join(request, reply) = cmd {
                let _ = reply.send(Err(request));
            }
        }
    }

    async fn refresh_position(&mut self) {
        match self.bus.position(&self.id).await {
            Ok(position) => {
                self.epoch = Some(position.epoch);
                let last = self.last.unwrap_or(0).max(position.last_id);
                self.set_last(last);
            }
            Err(e) => tracing::debug!(room = %self.id, error = %e, "room position unavailable"),
        }
    }

    fn set_last(&mut self, id: u64) {
        self.last = Some(id);
        self.shared.last_seen.store(id, Ordering::Release);
    }

    async fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Join(request, reply) => {
                let conn_id = request.conn_id;
                let joined = self.join(request).await;
                if reply.send(Ok(joined)).is_err() {
                    // The socket went away while joining.
                    self.remove(conn_id).await;
                }
            }
            Cmd::Leave(conn_id) => self.remove(conn_id).await,
            Cmd::Started(conn_id) => {
                if self.conns.get_mut(&conn_id).is_some_and(|c| !c.start()) {
                    self.drop_slow(vec![conn_id]);
                }
            }
            Cmd::Local(message, outage_since, reply) => {
                if self.heard_at.is_some_and(|at| at >= outage_since) {
                    let _ = reply.send(None);
                    return;
                }
                let id = self.last.unwrap_or(0) + 1;
                let first = self.local_ids.map_or(id, |(first, _)| first);
                self.local_ids = Some((first, id));
                self.local_origins.insert(message.origin.clone());
                self.recent.insert(&message.origin);
                let frame = render::message(self.id.as_str(), &message.from, &message.data, id);
                self.set_last(id);
                self.fan_out(id, &frame);
                let _ = reply.send(Some(id));
            }
        }
    }

    async fn on_event(&mut self, event: BusEvent) {
        match event {
            BusEvent::Message(delivery) => {
                if let Some(repair) = &mut self.repair {
                    repair.pending.push_back(delivery);
                    return;
                }
                if let Some(last) = self.last {
                    if delivery.id <= last {
                        self.local_origins.remove(&delivery.message.origin);
                        return;
                    }
                    // Something between was dropped (or the epoch moved on):
                    // history fills the hole, and must vouch for this
                    // delivery before it goes out (see `backed`).
                    if delivery.id != last + 1
                        && (!self.catch_up().await || !self.backed(&delivery))
                    {
                        self.start_repair(Some(delivery));
                        return;
                    }
                }
                self.deliver(delivery).await;
            }
            BusEvent::Presence(kind, member) => self.presence_frame(kind, &member),
            BusEvent::Kick(member) => {
                for conn in self.conns.values().filter(|c| c.member == member) {
                    conn.close(Closing::Kicked);
                }
            }
            BusEvent::Resync => match self.last {
                Some(_) => self.catch_up_or_repair().await,
                None => self.refresh_position().await,
            },
        }
    }

    async fn catch_up_or_repair(&mut self) {
        if self.repair.is_none() && !self.catch_up().await {
            self.start_repair(None);
        }
    }

    fn start_repair(&mut self, first: Option<Delivery>) {
        let now = tokio::time::Instant::now();
        let backoff = Duration::from_millis(50);
        self.repair = Some(Repair {
            pending: first.into_iter().collect(),
            started: now,
            retry_at: now + backoff,
            backoff,
        });
    }

    fn repair_at(&self) -> tokio::time::Instant {
        self.repair
            .as_ref()
            .map_or_else(tokio::time::Instant::now, |r| r.retry_at)
    }

    /// Tries the history again; on success (or after giving up) delivers
    /// what was held back, in order.
    async fn retry_repair(&mut self) {
        let caught_up = self.catch_up().await;
        let Some(mut repair) = self.repair.take() else {
            return;
        };
        if caught_up {
            // What history now covers was delivered from it; what continues
            // the sequence goes out; the rest waits for history to vouch.
            while let Some(next) = repair.pending.front() {
                if !self.backed(next) {
                    break;
                }
                if let Some(delivery) = repair.pending.pop_front() {
                    self.deliver(delivery).await;
                }
            }
            if repair.pending.is_empty() {
                return;
            }
        }
        let patience =
            repair.started.elapsed() < REPAIR_GIVE_UP && repair.pending.len() < REPAIR_MAX_PENDING;
        if patience {
            repair.backoff = (repair.backoff * 2).min(Duration::from_secs(1));
            repair.retry_at = tokio::time::Instant::now() + repair.backoff;
            self.repair = Some(repair);
            return;
        }
        tracing::warn!(room = %self.id, held = repair.pending.len(), "room history did not vouch for held messages in time: delivering what arrived, a gap may remain");
        for delivery in repair.pending {
            self.deliver(delivery).await;
        }
    }

    /// Whether history, just read, has caught up to `delivery` (or it
    /// continues the sequence). A live delivery past a hole that the room's
    /// history does not reach is not from the room's current master: an old
    /// master that woke up after a failover runs the commands it was sent
    /// before it hung and publishes them, and delivering such a message
    /// would put it before messages the new master holds. It waits until
    /// history passes it (it then goes as a duplicate) or the repair gives up.
    fn backed(&self, delivery: &Delivery) -> bool {
        self.last.is_none_or(|last| last + 1 >= delivery.id)
    }

    /// Delivers what history holds past the last id delivered here; false
    /// when history could not be read.
    async fn catch_up(&mut self) -> bool {
        let Some(last) = self.last else {
            return true;
        };
        match self.bus.history(&self.id, last).await {
            Ok(missed) => {
                if !missed.is_empty() {
                    tracing::debug!(room = %self.id, after = last, count = missed.len(), "caught up from history");
                }
                for delivery in missed {
                    self.deliver(delivery).await;
                }
                true
            }
            Err(e) => {
                tracing::debug!(room = %self.id, error = %e, "cannot read room history yet");
                false
            }
        }
    }

    async fn deliver(&mut self, delivery: Delivery) {
        self.heard_at = Some(tokio::time::Instant::now());
        if let Some((first, last_local)) = self.local_ids {
            if delivery.id > last_local {
                // Redis ids are past the local ones: the outage is over here.
                self.local_ids = None;
            } else if delivery.id >= first {
                // Redis is back, but this id was given out locally too (an
                // instance that never lost Redis published meanwhile).
                tracing::warn!(room = %self.id, id = delivery.id, "message id already used locally during an outage; not delivered here");
                return;
            }
        }
        if self.last.is_some_and(|last| delivery.id <= last) {
            return;
        }
        self.set_last(delivery.id);
        self.epoch = Some(delivery.epoch);
        let origin = &delivery.message.origin;
        if self.local_origins.remove(origin) || !self.recent.insert(origin) {
            // Already delivered here: with a local id during an outage, or
            // a retried publish that Redis took twice.
            return;
        }
        let m = &delivery.message;
        let frame = render::message(self.id.as_str(), &m.from, &m.data, delivery.id);
        self.fan_out(delivery.id, &frame);
    }

    /// Sends `frame` to every connection that has not seen `id`; drops the
    /// ones that do not keep up (they stopped reading).
    fn fan_out(&mut self, id: u64, frame: &ByteString) {
        let mut slow = Vec::new();
        let mut sent = 0;
        for (conn_id, conn) in &mut self.conns {
            if id <= conn.last_sent {
                continue;
            }
            conn.last_sent = id;
            sent += 1;
            if !conn.send(frame) {
                slow.push(*conn_id);
            }
        }
        self.fanned_out
            .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
        self.drop_slow(slow);
    }

    /// Kicks connections that do not keep up; [`RoomTask::reap`] removes
    /// them once the current event is handled.
    fn drop_slow(&mut self, slow: Vec<u64>) {
        for conn_id in slow {
            if let Some(conn) = self.conns.get_mut(&conn_id) {
                conn.close(Closing::SlowReader);
                tracing::info!(room = %self.id, conn_id, "client does not read its frames: closing it");
                self.slow.push(conn_id);
            }
        }
    }

    /// Removes the kicked connections (their leaves may kick more).
    async fn reap(&mut self) {
        while let Some(conn_id) = self.slow.pop() {
            self.remove(conn_id).await;
        }
    }
}
