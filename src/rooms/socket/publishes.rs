//! A socket's publishes on their way to the outbox: at most
//! `rooms.max_pending_publishes` wait, one is in flight at a time (so a
//! publisher's messages keep their order), and the read loop only polls the
//! one in flight beside the client's frames: it never waits on Redis.

use std::collections::VecDeque;

use futures_util::future::LocalBoxFuture;
use serde_json::value::RawValue;

use super::super::outbox::{PublishError, Published};
use super::super::protocol::Ref;
use super::super::Rooms;
use crate::domain::Id;

type Outcome = Result<Published, PublishError>;

/// A publish the client sent: its data and the `ref` to answer.
struct Waiting {
    data: Box<RawValue>,
    reference: Option<Ref>,
}

/// The publish in flight and the `ref` to answer it with (boxed: an idle
/// socket holds only the pointer).
type Inflight = Box<(Option<Ref>, LocalBoxFuture<'static, Outcome>)>;

pub struct Publishes {
    waiting: VecDeque<Waiting>,
    inflight: Option<Inflight>,
    max: usize,
}

/// The queue is full: the publish is refused (with its `ref`).
pub struct Full;

impl Publishes {
    pub fn new(max: usize) -> Self {
        Self {
            waiting: VecDeque::new(),
            inflight: None,
            max: max.max(1),
        }
    }

    /// Publishes waiting or in flight.
    pub fn len(&self) -> usize {
        self.waiting.len() + usize::from(self.inflight.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a publish and starts it when none is in flight.
    pub fn push(
        &mut self,
        target: &Target<'_>,
        data: Box<RawValue>,
        reference: Option<Ref>,
    ) -> Result<(), Full> {
        if self.len() >= self.max {
            return Err(Full);
        }
        self.waiting.push_back(Waiting { data, reference });
        self.start_next(target);
        Ok(())
    }

    /// Resolves when the publish in flight is done (never while none is),
    /// then starts the next. Cancel-safe: the publish stays in `self`.
    pub async fn done(&mut self, target: &Target<'_>) -> (Option<Ref>, Outcome) {
        let outcome = match &mut self.inflight {
            Some(inflight) => inflight.1.as_mut().await,
            None => std::future::pending().await,
        };
        let reference = self.inflight.take().and_then(|inflight| inflight.0);
        self.start_next(target);
        (reference, outcome)
    }

    fn start_next(&mut self, target: &Target<'_>) {
        if self.inflight.is_some() {
            return;
        }
        let Some(next) = self.waiting.pop_front() else {
            return;
        };
        let rooms = target.rooms.clone();
        let room = target.room.clone();
        let member = target.member.to_string();
        let publish = Box::pin(async move { rooms.publish(&room, &member, next.data).await });
        self.inflight = Some(Box::new((next.reference, publish)));
    }
}

/// Where a socket publishes.
pub struct Target<'a> {
    pub rooms: &'a Rooms,
    pub room: &'a Id,
    pub member: &'a str,
}
