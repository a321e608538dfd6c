//! The bus of a single instance with no Redis: ids, history and presence in
//! this process. Deliveries go to the inbox under the room's lock, so they
//! arrive in id order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Bus, BusEvent, Commit, Delivery, Inbox, Outgoing, Position, PresenceChanges, Source};
use crate::clock::unix_now_ms;
use crate::domain::Id;
use crate::rooms::protocol::PresenceKind;
use crate::store::StoreResult;

struct MemRoom {
    epoch: String,
    last_id: u64,
    history: VecDeque<(Instant, Delivery)>,
    members: HashMap<String, usize>,
    /// Banned members and until when (unix ms).
    bans: HashMap<String, u64>,
    touched: Instant,
}

impl MemRoom {
    fn new() -> Self {
        Self {
            epoch: new_epoch(),
            last_id: 0,
            history: VecDeque::new(),
            members: HashMap::new(),
            bans: HashMap::new(),
            touched: Instant::now(),
        }
    }
}

/// A fresh random epoch name.
pub fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// In-process [`Bus`].
pub struct MemoryBus {
    rooms: Mutex<HashMap<Id, MemRoom>>,
    inbox: Arc<dyn Inbox>,
    history_size: usize,
    history_ttl: Duration,
}

impl MemoryBus {
    pub fn new(inbox: Arc<dyn Inbox>, history_size: usize, history_ttl: Duration) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            inbox,
            history_size,
            history_ttl,
        }
    }

    fn with_room<T>(&self, room: &Id, f: impl FnOnce(&mut MemRoom) -> T) -> T {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        self.forget_idle(&mut rooms);
        let entry = rooms.entry(room.clone()).or_insert_with(MemRoom::new);
        entry.touched = Instant::now();
        f(entry)
    }

    /// Drops rooms with no members whose history has expired, so a room
    /// name used once does not stay in memory forever.
    fn forget_idle(&self, rooms: &mut HashMap<Id, MemRoom>) {
        if rooms.len() < 1024 {
            return;
        }
        let ttl = self.history_ttl;
        let now = unix_now_ms();
        rooms.retain(|_, r| {
            r.bans.retain(|_, until| *until > now);
            !r.members.is_empty() || !r.bans.is_empty() || r.touched.elapsed() < ttl
        });
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(
        &self,
        room: &Id,
        message: &Outgoing,
        _floor: u64,
        _new_epoch: bool,
        _expect: Option<&str>,
    ) -> StoreResult<Commit> {
        let (size, ttl) = (self.history_size, self.history_ttl);
        let delivery = self.with_room(room, |r| {
            r.last_id += 1;
            let delivery = Delivery {
                epoch: r.epoch.clone(),
                id: r.last_id,
                message: message.clone(),
            };
            r.history.push_back((Instant::now(), delivery.clone()));
            while r.history.len() > size
                || r.history.front().is_some_and(|(t, _)| t.elapsed() > ttl)
            {
                r.history.pop_front();
            }
            // Under the lock: deliveries reach the room in id order.
            self.inbox
                .deliver(room, BusEvent::Message(delivery.clone()));
            delivery
        });
        // Nothing replicates: nothing to keep for a failover.
        Ok(Commit::Done(delivery, Source::default()))
    }

    async fn source(&self, _room: &Id) -> StoreResult<Source> {
        Ok(Source::default())
    }

    fn replicated(&self) -> bool {
        false
    }

    async fn position(&self, room: &Id) -> StoreResult<Position> {
        Ok(self.with_room(room, |r| Position {
            epoch: r.epoch.clone(),
            last_id: r.last_id,
        }))
    }

    async fn history(&self, room: &Id, after: u64) -> StoreResult<Vec<Delivery>> {
        let ttl = self.history_ttl;
        Ok(self.with_room(room, |r| {
            r.history
                .iter()
                .filter(|(t, d)| d.id > after && t.elapsed() <= ttl)
                .map(|(_, d)| d.clone())
                .collect()
        }))
    }

    async fn subscribe(&self, _room: &Id) {}

    async fn unsubscribe(&self, _room: &Id) {}

    async fn announce(&self, room: &Id, kind: PresenceKind, member: &str) -> StoreResult<()> {
        self.inbox
            .deliver(room, BusEvent::Presence(kind, member.to_string()));
        Ok(())
    }

    async fn presence_join(
        &self,
        room: &Id,
        member: &str,
        connections: usize,
    ) -> StoreResult<bool> {
        Ok(self.with_room(room, |r| {
            r.members.insert(member.to_string(), connections).is_none()
        }))
    }

    async fn presence_leave(&self, room: &Id, member: &str) -> StoreResult<bool> {
        Ok(self.with_room(room, |r| r.members.remove(member).is_some()))
    }

    async fn presence_sync(
        &self,
        room: &Id,
        local: &[(String, usize)],
    ) -> StoreResult<PresenceChanges> {
        let all = self.with_room(room, |r| {
            for (member, count) in local {
                r.members.insert(member.clone(), *count);
            }
            r.members.keys().cloned().collect()
        });
        Ok(PresenceChanges {
            all: Some(all),
            ..PresenceChanges::default()
        })
    }

    async fn members(&self, room: &Id) -> StoreResult<Vec<(String, usize)>> {
        Ok(self.with_room(room, |r| {
            let mut members: Vec<(String, usize)> =
                r.members.iter().map(|(m, c)| (m.clone(), *c)).collect();
            members.sort();
            members
        }))
    }

    async fn kick(&self, room: &Id, member: &str, banned_until_ms: Option<u64>) -> StoreResult<()> {
        if let Some(until) = banned_until_ms {
            self.with_room(room, |r| r.bans.insert(member.to_string(), until));
        }
        self.inbox.deliver(room, BusEvent::Kick(member.to_string()));
        Ok(())
    }

    async fn banned_until(&self, room: &Id, member: &str) -> StoreResult<Option<u64>> {
        let now = unix_now_ms();
        Ok(self.with_room(room, |r| {
            r.bans.get(member).copied().filter(|until| *until > now)
        }))
    }
}
