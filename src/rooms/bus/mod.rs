//! The bus between instances: what a room needs from the outside world.
//!
//! A [`Bus`] assigns message ids and keeps the history (publish, history,
//! position), carries live deliveries and presence events to every instance
//! holding members of the room (subscribe/unsubscribe, then events arrive
//! at the [`Inbox`]), and keeps presence with expiry. [`memory::MemoryBus`]
//! serves one instance with no Redis; [`redis::RedisBus`] spans instances
//! through Redis in every mode. Ordering, deduplication and gap repair are
//! not the bus's business: the room task does them the same way for both.

pub mod memory;
pub mod redis;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::protocol::PresenceKind;
use crate::domain::Id;
use crate::store::StoreResult;

/// A message on its way into a room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outgoing {
    /// Member id of the publisher (`from`).
    #[serde(rename = "f")]
    pub from: String,
    /// Unique per publish: lets an instance recognise its own messages
    /// coming back after it delivered them locally during an outage.
    #[serde(rename = "o")]
    pub origin: String,
    #[serde(rename = "d")]
    pub data: Box<RawValue>,
}

/// A message with its place in the room's sequence.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub epoch: String,
    pub id: u64,
    pub message: Outgoing,
}

/// Where a room's sequence stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: String,
    pub last_id: u64,
}

/// The master that answered, as far as replication goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// Its replication id (empty for a store that does not replicate).
    pub id: String,
    /// Its replication offset when the call began: every write it took
    /// before the call ends at or below it.
    pub offset: i64,
    /// The highest offset a replica has acknowledged (-1: no replica).
    pub acked: i64,
}

/// What a publish came to.
#[derive(Debug)]
pub enum Commit {
    /// Taken: the message's place, and the master that took it.
    Done(Delivery, Source),
    /// Refused, nothing written: the room's master is not the expected one
    /// but this one (a failover replaced it).
    Moved(Source),
}

/// What a bus tells a room.
#[derive(Debug)]
pub enum BusEvent {
    Message(Delivery),
    Presence(PresenceKind, String),
    /// The member was removed from the room: close its sockets here (4004).
    Kick(String),
    /// The subscription is (again) in place: whatever pub/sub dropped while
    /// it was not must be read from history.
    Resync,
}

/// Where bus events for a room go (the rooms registry). Must not block.
pub trait Inbox: Send + Sync + 'static {
    fn deliver(&self, room: &Id, event: BusEvent);
}

/// Rooms' view of the instances' shared state; see the module doc.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Assigns the next id and appends to history, then delivers to every
    /// subscribed instance. `floor` is the highest id this instance has
    /// seen in the room: a sequence found behind it (a failover lost its
    /// tail) starts a new epoch above it instead of reusing ids; so does
    /// `new_epoch` (the first message after an outage: other instances may
    /// have handed out local ids above anything this one saw). With
    /// `expect`, the publish is refused unwritten ([`Commit::Moved`]) when
    /// the room's master is another than that one. A publish whose id was
    /// taken before answers that first id again and publishes nothing.
    async fn publish(
        &self,
        room: &Id,
        message: &Outgoing,
        floor: u64,
        new_epoch: bool,
        expect: Option<&str>,
    ) -> StoreResult<Commit>;

    /// The room's master now (see [`Commit`]).
    async fn source(&self, room: &Id) -> StoreResult<Source>;

    /// Whether a master is expected to have replicas that could replace it
    /// (Sentinel, Cluster): then a message counts as kept once a replica
    /// acknowledged it, else once its master answered a second later.
    fn replicated(&self) -> bool;

    /// The room's epoch and last id (creating the epoch when the room has none).
    async fn position(&self, room: &Id) -> StoreResult<Position>;

    /// History entries with an id above `after`, oldest first, within the
    /// history size and age limits.
    async fn history(&self, room: &Id, after: u64) -> StoreResult<Vec<Delivery>>;

    /// Start receiving the room's events (a `Resync` follows once live).
    async fn subscribe(&self, room: &Id);

    /// Stop receiving them.
    async fn unsubscribe(&self, room: &Id);

    /// Sends a presence event to every instance (not kept in history).
    async fn announce(&self, room: &Id, kind: PresenceKind, member: &str) -> StoreResult<()>;

    /// Records this instance's connections of `member`; true when the
    /// member was not present on any instance before.
    async fn presence_join(&self, room: &Id, member: &str, connections: usize)
        -> StoreResult<bool>;

    /// Drops this instance's entry for `member`; true when the member is
    /// now present on no instance.
    async fn presence_leave(&self, room: &Id, member: &str) -> StoreResult<bool>;

    /// Refreshes this instance's entries (member, connections) and purges
    /// the expired entries of any instance. Returns the members that
    /// appeared anew (re-added after an outage) and those that vanished.
    async fn presence_sync(
        &self,
        room: &Id,
        local: &[(String, usize)],
    ) -> StoreResult<PresenceChanges>;

    /// Members across all instances with their connection counts.
    async fn members(&self, room: &Id) -> StoreResult<Vec<(String, usize)>>;

    /// Removes `member` from `room` on every instance (a `Kick` event for
    /// each), after recording a ban until `banned_until_ms` (unix ms) when
    /// one is given.
    async fn kick(&self, room: &Id, member: &str, banned_until_ms: Option<u64>) -> StoreResult<()>;

    /// Until when (unix ms) `member` is banned from `room`, if it is.
    async fn banned_until(&self, room: &Id, member: &str) -> StoreResult<Option<u64>>;
}

/// What a presence refresh changed.
#[derive(Debug, Default)]
pub struct PresenceChanges {
    pub joined: Vec<String>,
    pub left: Vec<String>,
    /// Every member present on any instance after the refresh, when known.
    pub all: Option<Vec<String>>,
}
