//! Acknowledged publishes kept until the master that took them has shown
//! it kept them.
//!
//! Redis replicates asynchronously: a master can take a publish (the
//! client got its ack, some members their frame), then die or hang before
//! its replica has it, and the promoted replica knows nothing of it
//! (NOTES: "Replication is asynchronous"). So each publish this instance
//! committed is kept here with the replication id of the master that took
//! it, and the next publish into the room says which master it expects. A
//! master that answers with another id has replaced the one that took them:
//! the outbox first publishes the kept messages again (the publish script
//! is idempotent by publish id, so those the new master has are not
//! repeated, and rooms drop a second copy by publish id), then the new one,
//! so no acknowledged message is lost and none overtakes an earlier one of
//! its publisher.
//!
//! When is a message safe? Where masters have replicas (Sentinel,
//! Cluster), once a replica acknowledged an offset past it: every answer
//! of a master carries its replication offset at the start of the call
//! (the *horizon* of every write it took before) and the highest offset a
//! replica acknowledged, so a message is let go when a later answer of the
//! same master shows a replica at or past its horizon. A master that hung
//! and woke up after its replica was promoted has no replica any more, so
//! it can vouch for nothing. Without replicas (a single node) nothing can
//! replace the master but a restart; a message is let go once the same
//! master answered [`SETTLE`] after it. Nothing is kept past [`MAX_AGE`].

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::bus::{Outgoing, Source};
use crate::domain::Id;

/// Without replicas: how long after a message its master must go on
/// answering for the message to count as kept. Also how long a room may be
/// quiet before its master is asked.
pub const SETTLE: Duration = Duration::from_secs(1);

/// The longest a message is kept (longer than any failover takes to be
/// noticed with Redis's default timeouts).
const MAX_AGE: Duration = Duration::from_secs(120);

/// The source of messages a replay could not publish: no master has it,
/// so the next publish is refused as moved and replays them.
const UNREPLAYED: &str = "-";

struct Kept {
    at: Instant,
    message: Outgoing,
    source: String,
    /// An offset of its master at or past the end of this write.
    horizon: Option<i64>,
}

/// See the module doc.
pub struct Acked {
    rooms: Mutex<HashMap<Id, VecDeque<Kept>>>,
    /// Most messages kept, all rooms together (`rooms.outage_buffer`);
    /// past it the oldest go, logged.
    cap: usize,
    /// Masters have replicas that could replace them.
    replicated: bool,
}

impl Acked {
    pub fn new(cap: usize, replicated: bool) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            cap: cap.max(1),
            replicated,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Id, VecDeque<Kept>>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The master the next publish into `room` should find: the one that
    /// took the oldest message kept (any other means a replay is due).
    pub fn expected(&self, room: &Id) -> Option<String> {
        self.lock()
            .get(room)
            .and_then(|kept| kept.front())
            .map(|k| k.source.clone())
    }

    /// `message` was committed by `source` (an empty id: a store that does
    /// not replicate, nothing to keep).
    pub fn record(&self, room: &Id, message: &Outgoing, source: &Source) {
        if source.id.is_empty() {
            return;
        }
        let mut rooms = self.lock();
        let kept = rooms.entry(room.clone()).or_default();
        self.observe_in(kept, source);
        kept.push_back(Kept {
            at: Instant::now(),
            message: message.clone(),
            source: source.id.clone(),
            horizon: None,
        });
        let mut total: usize = rooms.values().map(VecDeque::len).sum();
        while total > self.cap {
            let oldest = rooms
                .iter()
                .filter_map(|(id, kept)| kept.front().map(|k| (k.at, id.clone())))
                .min_by_key(|(at, _)| *at);
            let Some((_, id)) = oldest else { break };
            if let Some(kept) = rooms.get_mut(&id) {
                kept.pop_front();
                if kept.is_empty() {
                    rooms.remove(&id);
                }
            }
            total -= 1;
            tracing::warn!(room = %id, "too many unconfirmed room messages kept (no replica acknowledges?); the oldest let go");
        }
    }

    /// `source` answered for `room` (still its master): lets go of what it
    /// has shown it kept.
    pub fn observe(&self, room: &Id, source: &Source) {
        let mut rooms = self.lock();
        if let Some(kept) = rooms.get_mut(room) {
            self.observe_in(kept, source);
            if kept.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// Kept messages are in commit order, so horizons go to the newest
    /// ones (those since this master's previous answer) and settling takes
    /// from the front: both touch only what changes, not the whole window.
    fn observe_in(&self, kept: &mut VecDeque<Kept>, source: &Source) {
        for k in kept.iter_mut().rev() {
            if k.horizon.is_some() {
                break;
            }
            if k.source == source.id {
                k.horizon = Some(source.offset);
            }
        }
        let now = Instant::now();
        while let Some(front) = kept.front() {
            let age = now.duration_since(front.at);
            let settled = front.source == source.id
                && if self.replicated {
                    front.horizon.is_some_and(|h| source.acked >= h)
                } else {
                    age >= SETTLE
                };
            if !settled && age < MAX_AGE {
                break;
            }
            if !settled {
                tracing::warn!("a room message unconfirmed for {MAX_AGE:?} let go");
            }
            kept.pop_front();
        }
    }

    /// Takes every kept message of `room`, oldest first, to publish again.
    pub fn take(&self, room: &Id) -> Vec<Outgoing> {
        self.lock()
            .remove(room)
            .map(|kept| kept.into_iter().map(|k| k.message).collect())
            .unwrap_or_default()
    }

    /// Puts back, in front, what a replay could not publish; the next
    /// publish into the room (or the quiet-room check) replays them again.
    pub fn put_back(&self, room: &Id, messages: Vec<Outgoing>) {
        let at = Instant::now();
        let mut rooms = self.lock();
        let kept = rooms.entry(room.clone()).or_default();
        for message in messages.into_iter().rev() {
            kept.push_front(Kept {
                at,
                message,
                source: UNREPLAYED.to_string(),
                horizon: None,
            });
        }
    }

    /// Rooms whose newest kept message is older than half of [`SETTLE`],
    /// with the master of the oldest: their masters are asked, as no
    /// publish is.
    pub fn quiet(&self) -> Vec<(Id, String)> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter_map(|(room, kept)| Some((room, kept.front()?, kept.back()?)))
            .filter(|(_, _, newest)| now.duration_since(newest.at) >= SETTLE / 2)
            .map(|(room, oldest, _)| (room.clone(), oldest.source.clone()))
            .collect()
    }

    /// Messages kept, all rooms.
    pub fn len(&self) -> usize {
        self.lock().values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn message(n: u32) -> Outgoing {
        Outgoing {
            from: "a".into(),
            origin: format!("o{n}"),
            data: RawValue::from_string(n.to_string()).unwrap(),
        }
    }

    fn source(id: &str, offset: i64, acked: i64) -> Source {
        Source {
            id: id.into(),
            offset,
            acked,
        }
    }

    fn origins(acked: &Acked, room: &Id) -> Vec<String> {
        acked.take(room).into_iter().map(|m| m.origin).collect()
    }

    #[test]
    fn with_replicas_a_message_goes_once_a_replica_passed_it() {
        let acked = Acked::new(100, true);
        let room = Id::parse("r").unwrap();
        acked.record(&room, &message(1), &source("m1", 100, 90));
        acked.record(&room, &message(2), &source("m1", 150, 100));
        assert_eq!(acked.expected(&room).as_deref(), Some("m1"));
        assert_eq!(
            acked.len(),
            2,
            "the first ends at or below 150; a replica is at 100"
        );
        acked.observe(&room, &source("m1", 200, 160));
        assert_eq!(acked.len(), 1, "a replica passed the first's horizon");
        // A master with no replica (one that woke up after a failover)
        // vouches for nothing, however long it answers.
        acked.observe(&room, &source("m1", 300, -1));
        assert_eq!(origins(&acked, &room), vec!["o2"]);
        assert_eq!(acked.expected(&room), None);
    }

    #[tokio::test(start_paused = true)]
    async fn without_replicas_a_message_goes_a_second_later() {
        let acked = Acked::new(100, false);
        let room = Id::parse("r").unwrap();
        acked.record(&room, &message(1), &source("m1", 0, -1));
        assert!(acked.quiet().is_empty());
        tokio::time::advance(SETTLE).await;
        assert_eq!(acked.quiet(), vec![(room.clone(), "m1".to_string())]);
        acked.record(&room, &message(2), &source("m1", 0, -1));
        assert_eq!(origins(&acked, &room), vec!["o2"]);
    }

    #[test]
    fn the_cap_holds_for_all_rooms_together() {
        let acked = Acked::new(3, true);
        let (a, b) = (Id::parse("a").unwrap(), Id::parse("b").unwrap());
        for n in 0..3 {
            acked.record(&a, &message(n), &source("m", 0, -1));
        }
        acked.record(&b, &message(9), &source("m", 0, -1));
        assert_eq!(acked.len(), 3);
        assert_eq!(origins(&acked, &a), vec!["o1", "o2"]);
        assert_eq!(origins(&acked, &b), vec!["o9"]);
    }

    #[test]
    fn another_masters_answers_settle_nothing_and_stores_that_do_not_replicate_keep_nothing() {
        let acked = Acked::new(100, true);
        let room = Id::parse("r").unwrap();
        acked.record(&room, &message(1), &source("old", 10, 5));
        acked.observe(&room, &source("new", 50, 1000));
        assert_eq!(acked.len(), 1);
        assert_eq!(
            acked.expected(&room).as_deref(),
            Some("old"),
            "a replay is due"
        );
        acked.record(&room, &message(3), &Source::default());
        assert_eq!(origins(&acked, &room), vec!["o1"]);
    }

    #[test]
    fn what_a_replay_could_not_publish_makes_the_next_publish_replay() {
        let acked = Acked::new(100, true);
        let room = Id::parse("r").unwrap();
        acked.put_back(&room, vec![message(1)]);
        acked.record(&room, &message(2), &source("new", 10, 0));
        assert_eq!(acked.expected(&room).as_deref(), Some(UNREPLAYED));
        assert_eq!(acked.quiet().len(), 0, "the newest is fresh");
        assert_eq!(origins(&acked, &room), vec!["o1", "o2"]);
    }
}
