//! Publishing with a bounded outage buffer.
//!
//! A publish goes straight to the bus. When the bus cannot be reached (an
//! outage, a failover in progress) and fallback is on, the message is
//! queued here and a flusher task retries the queue in order until Redis
//! takes it, so every instance gets it once Redis is back. While anything
//! is queued, new publishes queue behind it: a publisher's messages never
//! overtake each other.
//!
//! A short interruption (a failover) is bridged by the queue alone: the
//! messages arrive when it is over, with ids from Redis. Once Redis has
//! been away for `rooms.outage_local_after_ms`, this instance's members get
//! the queued messages of their rooms directly, in queue order, with ids of
//! this instance (see `room`), and Redis later starts a new epoch above
//! them. Past `rooms.outage_buffer` messages a publish is refused, logged
//! and counted, never dropped silently.
//!
//! Every commit also goes through [`Acked`]: what a master took is kept
//! until it has shown it kept it, and published again, before anything
//! newer, when a failover replaced that master (see `acked`). A watch
//! checks quiet rooms, whose last messages no later publish vouches for.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, Notify};

use super::acked::{Acked, SETTLE};
use super::bus::{Bus, Commit, Delivery, Outgoing};
use super::hub::{Hub, Registry};
use crate::domain::Id;
use crate::store::StoreError;

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Redis is unavailable and the outage buffer ({0} messages) is full")]
    BufferFull(usize),
}

/// How a publish was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Redis assigned this id; every member gets it.
    Sent(u64),
    /// Queued for Redis; every member gets it once Redis takes it (this
    /// instance's members sooner in a long outage).
    Buffered,
}

/// A queued message; `local` once this instance's members have it.
struct Entry {
    room: Id,
    message: Outgoing,
    local: bool,
}

struct Inner {
    bus: Arc<dyn Bus>,
    registry: Arc<Registry>,
    hub: Hub,
    queue: Mutex<VecDeque<Entry>>,
    capacity: usize,
    /// Buffer when the bus is unreachable (storage.fallback); else refuse.
    fallback: bool,
    wake: Notify,
    refused: AtomicU64,
    /// Since when publishes meet an outage (cleared when one succeeds).
    down_since: Mutex<Option<tokio::time::Instant>>,
    local_after: Duration,
    /// One local hand-out at a time, so none is delivered twice.
    promoting: tokio::sync::Mutex<()>,
    /// Committed messages their master has not vouched for yet.
    acked: Acked,
    /// One replay at a time: a publish that finds its room's master
    /// replaced waits for the replay of what the old one took.
    replaying: tokio::sync::Mutex<()>,
}

/// Cheap to clone; see the module doc.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

/// What the outbox is built from.
pub struct OutboxParts {
    pub bus: Arc<dyn Bus>,
    pub registry: Arc<Registry>,
    pub hub: Hub,
    pub capacity: usize,
    pub fallback: bool,
    pub local_after: Duration,
}

impl Outbox {
    /// Starts the flusher on the current runtime; it ends at shutdown.
    pub fn start(parts: OutboxParts, shutdown: broadcast::Receiver<()>) -> Self {
        let replicated = parts.bus.replicated();
        let inner = Arc::new(Inner {
            bus: parts.bus,
            registry: parts.registry,
            hub: parts.hub,
            queue: Mutex::new(VecDeque::new()),
            capacity: parts.capacity,
            fallback: parts.fallback,
            wake: Notify::new(),
            refused: AtomicU64::new(0),
            down_since: Mutex::new(None),
            local_after: parts.local_after,
            promoting: tokio::sync::Mutex::new(()),
            acked: Acked::new(parts.capacity, replicated),
            replaying: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(settle_quiet_rooms(
            Arc::downgrade(&inner),
            shutdown.resubscribe(),
        ));
        tokio::spawn(flush(inner.clone(), shutdown));
        Self { inner }
    }

    /// Messages waiting for Redis, publishes refused for a full buffer, and
    /// committed messages their master has not vouched for yet.
    pub fn stats(&self) -> (usize, u64, usize) {
        (
            self.inner.lock().len(),
            self.inner.refused.load(Ordering::Relaxed),
            self.inner.acked.len(),
        )
    }

    pub async fn publish(&self, room: &Id, message: Outgoing) -> Result<Published, PublishError> {
        let inner = &self.inner;
        if inner.lock().is_empty() {
            match inner.commit(room, &message, false).await {
                Ok(delivery) => return Ok(Published::Sent(delivery.id)),
                Err(e) if e.is_outage() && inner.fallback => {
                    tracing::warn!(room = %room, error = %e, "room publish cannot reach Redis; buffering");
                    inner.mark_down();
                }
                Err(e) => return Err(e.into()),
            }
        }
        {
            let mut queue = inner.lock();
            if queue.len() >= inner.capacity {
                inner.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(room = %room, capacity = inner.capacity, "room outage buffer full: publish refused");
                return Err(PublishError::BufferFull(inner.capacity));
            }
            queue.push_back(Entry {
                room: room.clone(),
                message,
                local: false,
            });
        }
        inner.wake.notify_one();
        inner.promote().await;
        Ok(Published::Buffered)
    }
}

impl Inner {
    /// Publishes `message` into `room` on the bus, first publishing again
    /// what a replaced master took (see the module doc).
    async fn commit(
        &self,
        room: &Id,
        message: &Outgoing,
        rotate: bool,
    ) -> Result<Delivery, StoreError> {
        // A replay moves the room to the new master; a second refusal in a
        // row is another failover meanwhile.
        for _ in 0..3 {
            let expect = self.acked.expected(room);
            let floor = self.registry.last_seen(room);
            let published = self
                .bus
                .publish(room, message, floor, rotate, expect.as_deref())
                .await?;
            match published {
                Commit::Done(delivery, source) => {
                    self.acked.record(room, message, &source);
                    return Ok(delivery);
                }
                Commit::Moved(source) => {
                    tracing::debug!(room = %room, source = %source.id, "room master replaced");
                    self.replay(room).await?
                }
            }
        }
        Err(StoreError::unavailable(
            "the room's Redis master kept changing; retry later",
        ))
    }

    /// Publishes again, oldest first, what the masters before `source`
    /// took in `room` and may not have passed on.
    async fn replay(&self, room: &Id) -> Result<(), StoreError> {
        let _one = self.replaying.lock().await;
        let mut kept = self.acked.take(room).into_iter();
        let count = kept.len();
        if count > 0 {
            tracing::warn!(room = %room, count, "the room's Redis master changed: publishing again what the old one took");
        }
        while let Some(message) = kept.next() {
            let floor = self.registry.last_seen(room);
            let failed = match self.bus.publish(room, &message, floor, false, None).await {
                Ok(Commit::Done(_, new)) => {
                    self.acked.record(room, &message, &new);
                    continue;
                }
                Ok(Commit::Moved(_)) => {
                    StoreError::unavailable("the room's master moved mid-replay")
                }
                Err(e) => e,
            };
            let mut rest = vec![message];
            rest.extend(kept);
            self.acked.put_back(room, rest);
            return Err(failed);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn down(&self) -> std::sync::MutexGuard<'_, Option<tokio::time::Instant>> {
        self.down_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark_down(&self) {
        self.down().get_or_insert_with(tokio::time::Instant::now);
    }

    /// After `local_after` of outage, hands every queued message this
    /// instance's members do not have yet to their room, oldest first.
    async fn promote(&self) {
        let Some(since) = *self.down() else {
            return;
        };
        if since.elapsed() < self.local_after {
            return;
        }
        let _one_at_a_time = self.promoting.lock().await;
        let pending: Vec<(Id, Outgoing)> = self
            .lock()
            .iter()
            .filter(|e| !e.local)
            .map(|e| (e.room.clone(), e.message.clone()))
            .collect();
        for (room, message) in pending {
            let origin = message.origin.clone();
            // `None`: no local members, or Redis is heard from again; either
            // way there is nothing to hand out.
            let _ = self.hub.deliver_locally(&room, message, since).await;
            if let Some(entry) = self.lock().iter_mut().find(|e| e.message.origin == origin) {
                entry.local = true;
            }
        }
    }
}

/// Publishes the queue front to back, waiting with capped backoff while
/// Redis is away.
async fn flush(inner: Arc<Inner>, mut shutdown: broadcast::Receiver<()>) {
    let mut backoff = Duration::from_millis(50);
    // Rooms whose first message of this drain went out: that one starts a
    // new epoch above any id an instance handed out locally.
    let mut rotated: HashSet<Id> = HashSet::new();
    loop {
        let front = inner
            .lock()
            .front()
            .map(|e| (e.room.clone(), e.message.clone()));
        let Some((room, message)) = front else {
            rotated.clear();
            tokio::select! {
                _ = inner.wake.notified() => continue,
                _ = shutdown.recv() => return,
            }
        };
        // The floor includes the local ids given out during the outage, so
        // Redis moves the room's sequence past them.
        let rotate = !rotated.contains(&room);
        match inner.commit(&room, &message, rotate).await {
            Ok(_) => {
                rotated.insert(room.clone());
                *inner.down() = None;
                backoff = Duration::from_millis(50);
                let mut queue = inner.lock();
                queue.pop_front();
                if queue.is_empty() {
                    tracing::info!("room outage buffer drained into Redis");
                }
            }
            Err(e) if e.is_outage() => {
                inner.mark_down();
                inner.promote().await;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.recv() => {
                        let left = inner.lock().len();
                        tracing::warn!(left, "shutting down with room messages Redis never took");
                        return;
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                inner.lock().pop_front();
                inner.refused.fetch_add(1, Ordering::Relaxed);
                tracing::error!(room = %room, error = %crate::error::chain(&e), "Redis refused a buffered room message; dropped");
            }
        }
    }
}

/// Every half [`SETTLE`], asks the master of each room whose kept messages
/// no later publish settled whether it is still the one that took them
/// (and how far its replicas are); if not, publishes them again.
async fn settle_quiet_rooms(inner: std::sync::Weak<Inner>, mut shutdown: broadcast::Receiver<()>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SETTLE / 2) => {}
            _ = shutdown.recv() => return,
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        for (room, source) in inner.acked.quiet() {
            match inner.bus.source(&room).await {
                Ok(now) if now.id == source => inner.acked.observe(&room, &now),
                Ok(_) => {
                    if let Err(e) = inner.replay(&room).await {
                        tracing::debug!(room = %room, error = %e, "replay after a failover postponed");
                    }
                }
                Err(e) => {
                    tracing::debug!(room = %room, error = %e, "room master not reachable yet")
                }
            }
        }
    }
}
