//! A member connection as its room sees it: where its frames go and what it
//! has been sent.
//!
//! The room writes a frame straight into the socket's outgoing channel (the
//! [`Outlet`]: actix-ws's bounded channel of 32 frames in front of the TCP
//! send buffer) without waiting, so a delivery costs no hop through the
//! socket task. A burst that does not fit goes, in order, into the
//! connection's [`Overflow`], which the socket task drains; once that holds
//! `rooms.max_queue` frames the client is taken for one that stopped
//! reading and dropped (the socket closes with 1008). Until the socket has
//! sent its welcome and replay, the room holds that connection's live
//! frames so they cannot overtake the replay.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytestring::ByteString;
use futures_util::FutureExt as _;
use tokio::sync::Notify;

/// Where a connection's frames go. `false`: no room right now (or gone).
pub trait Outlet: Send + Sync {
    fn offer(&mut self, frame: ByteString) -> bool;
}

impl Outlet for actix_ws::Session {
    fn offer(&mut self, frame: ByteString) -> bool {
        // Ready at once when the channel has room; dropping the pending
        // send otherwise leaves the channel untouched.
        matches!(self.text(frame).now_or_never(), Some(Ok(())))
    }
}

/// What the room and the socket task share about one connection: frames
/// that did not fit the outlet, oldest first, and whether the room dropped
/// the connection for not reading.
#[derive(Default)]
pub struct Overflow {
    queue: Mutex<VecDeque<ByteString>>,
    ready: Notify,
    kicked: AtomicBool,
    kick: Notify,
}

impl Overflow {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<ByteString>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until frames are waiting.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// The oldest waiting frame. It stays queued until [`Overflow::pop`], so
    /// the room keeps queueing behind it while it is being sent.
    pub fn front(&self) -> Option<ByteString> {
        self.lock().front().cloned()
    }

    pub fn pop(&self) {
        self.lock().pop_front();
    }

    /// Resolves once the room has dropped the connection for not reading.
    pub async fn kicked(&self) {
        while !self.kicked.load(Ordering::Acquire) {
            self.kick.notified().await;
        }
    }
}

pub struct Conn {
    pub member: String,
    out: Box<dyn Outlet>,
    overflow: Arc<Overflow>,
    max_queue: usize,
    /// The highest message id sent (or held) for this connection.
    pub last_sent: u64,
    /// `Some` until the socket has sent its first frames.
    held: Option<Vec<ByteString>>,
}

/// What the socket hands its room.
pub struct ConnParts {
    pub member: String,
    pub out: Box<dyn Outlet>,
    pub overflow: Arc<Overflow>,
}

impl Conn {
    pub fn new(parts: ConnParts, max_queue: usize, last_sent: u64) -> Self {
        Self {
            member: parts.member,
            out: parts.out,
            overflow: parts.overflow,
            max_queue,
            last_sent,
            held: Some(Vec::new()),
        }
    }

    /// Sends (or holds) a frame; false when the client does not keep up.
    pub fn send(&mut self, frame: &ByteString) -> bool {
        match &mut self.held {
            Some(held) => {
                held.push(frame.clone());
                held.len() <= self.max_queue.max(4096)
            }
            None => self.offer(frame.clone()),
        }
    }

    fn offer(&mut self, frame: ByteString) -> bool {
        let mut queue = self.overflow.lock();
        // Behind frames already waiting, or when the channel is full.
        if !queue.is_empty() || !self.out.offer(frame.clone()) {
            queue.push_back(frame);
            self.overflow.ready.notify_one();
            return queue.len() <= self.max_queue;
        }
        true
    }

    /// The socket sent its first frames: release what was held.
    pub fn start(&mut self) -> bool {
        let held = self.held.take().unwrap_or_default();
        held.into_iter().all(|frame| self.offer(frame))
    }

    /// Tells the socket it is dropped for not reading.
    pub fn kick(&mut self) {
        self.overflow.kicked.store(true, Ordering::Release);
        self.overflow.kick.notify_one();
    }
}
