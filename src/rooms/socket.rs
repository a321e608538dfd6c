//! The per-socket loop: one task per WebSocket, selecting over the client's
//! frames, bursts its room could not write at once (the overflow), the
//! kick, the heartbeat and shutdown. Live frames do not pass through here:
//! the room writes them into the socket's channel itself (see `conn`).
//!
//! Limits of section 6 live here: frame size (close 1009), frames per
//! second (error frame `rate_limited`, close 1008 at twice the rate), a
//! client that stops reading (its channel and overflow fill, the room kicks
//! it: close 1008), pings every `ping_interval`, close after `idle_timeout` of
//! silence, and 1001 when the broker shuts down. Bad frames get an
//! `invalid_frame` error frame and the socket stays open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use bytestring::ByteString;
use tokio::sync::broadcast;
use tracing::Instrument as _;

use super::conn::{ConnParts, Overflow};
use super::outbox::{PublishError, Published};
use super::protocol::{render, ClientFrame};
use super::room::{JoinRequest, Resume};
use super::Rooms;
use crate::domain::Id;
use crate::heartbeat::{Beat, Heartbeat};

/// Who is on the socket and what they may do.
pub struct SocketParams {
    pub room: Id,
    pub member: String,
    pub can_publish: bool,
    pub resume: Option<Resume>,
}

/// How long a close frame may wait for a client that does not read.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The socket's task, run until it closes; spawned on the worker that
/// upgraded it. Not an `async fn`: its arguments would stay in the future
/// beside the copies `serve` moves them into, for the socket's lifetime.
pub fn run(
    rooms: Rooms,
    session: Session,
    stream: actix_ws::MessageStream,
    params: SocketParams,
) -> impl std::future::Future<Output = ()> {
    let conn_id = rooms.next_conn_id();
    let span = tracing::info_span!("ws", room = %params.room, member = %params.member, conn_id);
    let max = rooms.limits().max_frame_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    Socket::new(rooms, session, params, conn_id)
        .serve(stream)
        .instrument(span)
}

struct Socket {
    rooms: Rooms,
    session: Session,
    params: SocketParams,
    conn_id: u64,
    shutdown: broadcast::Receiver<()>,
    rate: RateWindow,
    /// Shared with the room: bursts to send, and the kick.
    overflow: Arc<Overflow>,
}

/// Why the loop ended, and what to tell the client.
enum End {
    Close(CloseCode, &'static str),
    /// The client went away or closed first.
    Gone,
}

impl Socket {
    fn new(rooms: Rooms, session: Session, params: SocketParams, conn_id: u64) -> Self {
        let rate = RateWindow::new(rooms.limits().messages_per_second);
        Self {
            shutdown: rooms.shutdown_signal(),
            rooms,
            session,
            params,
            conn_id,
            rate,
            overflow: Arc::new(Overflow::default()),
        }
    }

    async fn serve(mut self, mut stream: actix_ws::AggregatedMessageStream) {
        let request = JoinRequest {
            conn_id: self.conn_id,
            conn: ConnParts {
                member: self.params.member.clone(),
                out: Box::new(self.session.clone()),
                overflow: self.overflow.clone(),
            },
            resume: self.params.resume.clone(),
        };
        let room = self.params.room.clone();
        // Boxed, like the publish below: the socket's future lives as long as
        // the connection, and idle connections must be small (the deep
        // futures only exist while they run).
        let end = match Box::pin(self.rooms.hub().join(&room, request)).await {
            None => End::Close(CloseCode::Away, "server shutting down"),
            Some(joined) => {
                tracing::debug!("joined");
                let mut end = None;
                for frame in joined.frames {
                    end = Box::pin(self.send(frame)).await;
                    if end.is_some() {
                        break;
                    }
                }
                match end {
                    Some(end) => end,
                    None => {
                        Box::pin(self.rooms.hub().started(&room, self.conn_id)).await;
                        self.pump(&mut stream).await
                    }
                }
            }
        };
        Box::pin(self.rooms.hub().leave(&room, self.conn_id)).await;
        if let End::Close(code, reason) = end {
            tracing::debug!(?code, reason, "closing");
            let close = self.session.close(Some(CloseReason {
                code,
                description: Some(reason.to_string()),
            }));
            let _ = tokio::time::timeout(CLOSE_WAIT, close).await;
        }
    }

    async fn pump(&mut self, stream: &mut actix_ws::AggregatedMessageStream) -> End {
        let overflow = self.overflow.clone();
        let limits = self.rooms.limits();
        let mut heartbeat = Heartbeat::new(
            Duration::from_secs(limits.ping_interval_seconds),
            Duration::from_secs(limits.idle_timeout_seconds),
        );
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.recv() => return End::Close(CloseCode::Away, "server shutting down"),
                _ = overflow.kicked() => return kicked_end(),
                _ = overflow.ready() => {
                    if let Some(end) = Box::pin(self.drain(&overflow)).await {
                        return end;
                    }
                }
                message = stream.recv() => {
                    heartbeat.heard();
                    // Boxed: the handling futures are deep, and the loop's
                    // own future lives as long as the (mostly idle) socket.
                    if let Some(end) = Box::pin(self.on_client(message)).await {
                        return end;
                    }
                }
                beat = heartbeat.due() => {
                    let Beat::Ping = beat else {
                        return End::Close(CloseCode::Normal, "idle timeout");
                    };
                    let Self { session, overflow: o, .. } = self;
                    if let Some(end) = Box::pin(guarded(o, session.ping(b""))).await {
                        return end;
                    }
                }
            }
        }
    }

    async fn on_client(
        &mut self,
        message: Option<Result<AggregatedMessage, ProtocolError>>,
    ) -> Option<End> {
        let message = match message {
            None | Some(Ok(AggregatedMessage::Close(_))) => return Some(End::Gone),
            Some(Err(ProtocolError::Overflow)) => {
                return Some(End::Close(CloseCode::Size, "frame too large"))
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "WebSocket protocol error");
                let (code, reason) = crate::heartbeat::protocol_close(&e);
                return Some(End::Close(code, reason));
            }
            Some(Ok(message)) => message,
        };
        let text = match message {
            AggregatedMessage::Ping(bytes) => {
                let Self {
                    session, overflow, ..
                } = self;
                return guarded(overflow, session.pong(&bytes)).await;
            }
            AggregatedMessage::Pong(_) => return None,
            AggregatedMessage::Close(_) => return Some(End::Gone),
            AggregatedMessage::Binary(_) => None,
            AggregatedMessage::Text(text) => Some(text),
        };
        match self.rate.hit() {
            Rate::Ok => {}
            Rate::Over => {
                return self
                    .error("rate_limited", "too many frames per second; slow down")
                    .await
            }
            Rate::Abusive => return Some(End::Close(CloseCode::Policy, "rate limit exceeded")),
        }
        match text {
            Some(text) => self.on_text(text).await,
            None => {
                self.error(
                    "invalid_frame",
                    "binary frames are not part of this protocol",
                )
                .await
            }
        }
    }

    async fn on_text(&mut self, text: ByteString) -> Option<End> {
        let depth = self.rooms.json_max_depth();
        match ClientFrame::parse(&text, depth) {
            Err(e) => self.error("invalid_frame", &e.0).await,
            Ok(ClientFrame::Ping) => self.send(render::pong()).await,
            Ok(ClientFrame::Publish(_)) if !self.params.can_publish => {
                self.error(
                    "publish_forbidden",
                    "this token's grants do not allow publishing data",
                )
                .await
            }
            Ok(ClientFrame::Publish(data)) => {
                let result = Box::pin(self.rooms.publish(
                    &self.params.room,
                    &self.params.member,
                    data,
                ))
                .await;
                match result {
                    Ok(Published::Sent(_) | Published::Buffered) => None,
                    Err(PublishError::BufferFull(_)) => {
                        self.error(
                            "storage_unavailable",
                            "Redis is unavailable and the outage buffer is full; retry later",
                        )
                        .await
                    }
                    Err(PublishError::Store(e)) => {
                        tracing::warn!(error = %crate::error::chain(&e), "room publish refused");
                        self.error("storage_unavailable", e.public_detail()).await
                    }
                }
            }
        }
    }

    async fn error(&mut self, code: &str, detail: &str) -> Option<End> {
        self.send(render::error(code, detail)).await
    }

    /// Sends, in order, a burst the socket's channel did not hold.
    async fn drain(&mut self, overflow: &Overflow) -> Option<End> {
        while let Some(frame) = overflow.front() {
            if let Some(end) = self.send(frame).await {
                return Some(end);
            }
            overflow.pop();
        }
        None
    }

    /// Sends one frame of the socket's own (welcome, replay, pong, error).
    async fn send(&mut self, frame: ByteString) -> Option<End> {
        let Self {
            session, overflow, ..
        } = self;
        guarded(overflow, session.text(frame)).await
    }
}

fn kicked_end() -> End {
    End::Close(CloseCode::Policy, "client does not read its messages")
}

/// Waits for a send unless the room drops the socket meanwhile (a client
/// that does not read would block the send forever).
async fn guarded(
    overflow: &Overflow,
    send: impl std::future::Future<Output = Result<(), actix_ws::Closed>>,
) -> Option<End> {
    tokio::select! {
        sent = send => sent.err().map(|_| End::Gone),
        _ = overflow.kicked() => Some(kicked_end()),
    }
}

/// A fixed one-second window of frame counts.
struct RateWindow {
    limit: u32,
    started: Instant,
    count: u32,
}

enum Rate {
    Ok,
    /// Over the limit: refuse this frame.
    Over,
    /// Twice the limit: close the socket.
    Abusive,
}

impl RateWindow {
    fn new(limit: u32) -> Self {
        Self {
            limit,
            started: Instant::now(),
            count: 0,
        }
    }

    fn hit(&mut self) -> Rate {
        if self.started.elapsed() >= Duration::from_secs(1) {
            self.started = Instant::now();
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count <= self.limit {
            Rate::Ok
        } else if self.count <= self.limit.saturating_mul(2) {
            Rate::Over
        } else {
            Rate::Abusive
        }
    }
}
