//! A member connection as its room sees it: where its frames go, what it
//! has been sent, and how others close it.
//!
//! The room writes a frame straight into the socket's outgoing channel (the
//! [`Outlet`]: actix-ws's bounded channel of 32 frames in front of the TCP
//! send buffer) without waiting, so a delivery costs no hop through the
//! socket task. A burst that does not fit goes, in order, into the
//! connection's [`Link`] queue, which the socket task drains.
//!
//! A client is taken for one that stopped reading — and closed with 1008 —
//! only when its queue holds more than `rooms.max_queue` frames *and* it
//! has made no progress on it for [`SLOW_READER_AFTER`], or when the queue
//! passes the hard cap (`max_queue` plus the most a catch-up from history
//! delivers at once). A client that reads is never closed for a burst of
//! the broker's own making, such as the catch-up after a failover; one
//! that does not read holds a bounded queue of shared frames. Until the
//! socket has sent its welcome and replay, the room holds that
//! connection's live frames so they cannot overtake the replay.
//!
//! The [`Link`] also carries closes decided elsewhere: the room (a slow
//! reader, a kick), the instance (a revoked token, the drain at shutdown).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_ws::CloseCode;
use bytestring::ByteString;
use futures_util::FutureExt as _;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a client may make no progress on a queue over `max_queue`
/// before it is taken for one that does not read.
pub const SLOW_READER_AFTER: Duration = Duration::from_secs(2);

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

/// Why a connection is closed by someone other than its own socket task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Closing {
    /// It does not read its frames: 1008.
    SlowReader = 1,
    /// A token it was opened or refreshed with was revoked: 4003.
    Revoked = 2,
    /// Its member was removed from the room: 4004.
    Kicked = 3,
    /// The instance drains before it stops: 1001, reconnect elsewhere.
    Drain = 4,
}

impl Closing {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::SlowReader),
            2 => Some(Self::Revoked),
            3 => Some(Self::Kicked),
            4 => Some(Self::Drain),
            _ => None,
        }
    }

    /// The close frame the socket sends.
    pub fn close(self) -> (CloseCode, &'static str) {
        match self {
            Self::SlowReader => (CloseCode::Policy, "client does not read its messages"),
            Self::Revoked => (CloseCode::Other(4003), "token_revoked"),
            Self::Kicked => (CloseCode::Other(4004), "kicked"),
            Self::Drain => (CloseCode::Away, "server draining: reconnect and resume"),
        }
    }
}

/// The queue and since when its front has waited.
#[derive(Default)]
struct Queue {
    frames: VecDeque<ByteString>,
    /// When the queue last became non-empty or the socket last took a
    /// frame off it; `None` while empty.
    since: Option<Instant>,
}

/// What the room, the socket task and the instance share about one
/// connection: frames that did not fit the outlet, oldest first, and
/// whether (and why) it is to be closed.
#[derive(Default)]
pub struct Link {
    queue: Mutex<Queue>,
    ready: Notify,
    closing: AtomicU8,
    close: Notify,
}

impl Link {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until frames are waiting.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// The oldest waiting frame. It stays queued until [`Link::pop`], so
    /// the room keeps queueing behind it while it is being sent.
    pub fn front(&self) -> Option<ByteString> {
        self.lock().frames.front().cloned()
    }

    /// The front frame went out: progress.
    pub fn pop(&self) {
        let mut queue = self.lock();
        queue.frames.pop_front();
        queue.since = (!queue.frames.is_empty()).then(Instant::now);
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// Asks the socket to close (the first reason stands).
    pub fn close(&self, why: Closing) {
        if self
            .closing
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.close.notify_one();
        }
    }

    /// Resolves once someone asked the socket to close, with the reason.
    pub async fn closing(&self) -> Closing {
        loop {
            if let Some(why) = Closing::from_u8(self.closing.load(Ordering::Acquire)) {
                return why;
            }
            self.close.notified().await;
        }
    }
}

pub struct Conn {
    pub member: String,
    out: Box<dyn Outlet>,
    link: Arc<Link>,
    max_queue: usize,
    hard_cap: usize,
    /// The highest message id sent (or held) for this connection.
    pub last_sent: u64,
    /// `Some` until the socket has sent its first frames.
    held: Option<Vec<ByteString>>,
}

/// What the socket hands its room.
pub struct ConnParts {
    pub member: String,
    pub out: Box<dyn Outlet>,
    pub link: Arc<Link>,
}

/// A connection's queue bounds: `max_queue` frames (more only while the
/// client makes progress) and a hard cap above it.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub max_queue: usize,
    /// The most one catch-up from history delivers at once.
    pub burst: usize,
}

impl Conn {
    pub fn new(parts: ConnParts, limits: QueueLimits, last_sent: u64) -> Self {
        Self {
            member: parts.member,
            out: parts.out,
            link: parts.link,
            max_queue: limits.max_queue,
            hard_cap: limits.max_queue.saturating_add(limits.burst),
            last_sent,
            held: Some(Vec::new()),
        }
    }

    /// Sends (or holds) a frame; false when the client does not keep up.
    pub fn send(&mut self, frame: &ByteString) -> bool {
        match &mut self.held {
            Some(held) => {
                held.push(frame.clone());
                held.len() <= self.hard_cap.max(4096)
            }
            None => self.offer(frame.clone()),
        }
    }

    fn offer(&mut self, frame: ByteString) -> bool {
        let mut queue = self.link.lock();
        // Behind frames already waiting, or when the channel is full.
        if queue.frames.is_empty() && self.out.offer(frame.clone()) {
            return true;
        }
        queue.frames.push_back(frame);
        let since = *queue.since.get_or_insert_with(Instant::now);
        self.link.ready.notify_one();
        let len = queue.frames.len();
        len <= self.max_queue || (len <= self.hard_cap && since.elapsed() < SLOW_READER_AFTER)
    }

    /// The socket sent its first frames: release what was held.
    pub fn start(&mut self) -> bool {
        let held = self.held.take().unwrap_or_default();
        held.into_iter().all(|frame| self.offer(frame))
    }

    /// Asks the socket to close.
    pub fn close(&self, why: Closing) {
        self.link.close(why);
    }
}
