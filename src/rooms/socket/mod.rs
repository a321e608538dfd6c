//! The per-socket loop: one task per WebSocket, selecting over the client's
//! frames, the publish in flight, a token refresh being verified, bursts
//! its room could not write at once (the overflow), closes decided
//! elsewhere (a slow reader, a revoked token, a kick, the drain), the
//! token's expiry, the heartbeat and shutdown. Live frames do not pass
//! through here: the room writes them into the socket's channel itself
//! (see `conn`).
//!
//! The loop never waits on Redis: a publish joins the socket's bounded
//! queue (`publishes`) and is acknowledged (`ack` with the client's `ref`)
//! once the outbox committed it; a refresh is verified beside the reading.
//!
//! Limits of section 6 live here: frame size (close 1009), frames per
//! second as the client sent them (`rate`: error frame `rate_limited`,
//! close 1008 at twice the rate), a client that stops reading (close 1008),
//! pings every `ping_interval`, close after `idle_timeout` of silence, the
//! token's expiry (4001), and 1001 when the broker drains or shuts down.
//! Bad frames get an `invalid_frame` error frame and the socket stays open.

mod publishes;
mod rate;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use bytestring::ByteString;
use futures_util::future::LocalBoxFuture;
use tokio::sync::broadcast;
use tokio::time::Sleep;
use tracing::Instrument as _;

use self::publishes::{Publishes, Target};
use self::rate::{Rate, Verdict};
use super::authority::Grant;
use super::conn::{Closing, ConnParts, Link, SLOW_READER_AFTER};
use super::outbox::{PublishError, Published};
use super::protocol::{render, ClientFrame, Ref};
use super::room::{JoinRequest, Resume};
use super::Rooms;
use crate::clock::unix_now_ms;
use crate::domain::Id;
use crate::heartbeat::{Beat, Heartbeat};

/// Who is on the socket and what they may do.
pub struct SocketParams {
    pub room: Id,
    pub grant: Grant,
    pub resume: Option<Resume>,
}

/// How long a close frame may wait for a client that does not read.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long a draining socket waits for its publishes to be committed.
const PUBLISH_FLUSH: Duration = Duration::from_secs(2);

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
    let span =
        tracing::info_span!("ws", room = %params.room, member = %params.grant.member, conn_id);
    let stream = crate::heartbeat::bounded(stream, rooms.limits().max_frame_bytes);
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
    rate: Rate,
    /// Shared with the room and the instance: bursts to send, and closes.
    link: Arc<Link>,
    publishes: Publishes,
    /// A `refresh` token being verified.
    refresh: Option<LocalBoxFuture<'static, Result<Grant, String>>>,
    /// When the token (plus the leeway) runs out.
    expiry: Pin<Box<Sleep>>,
}

/// Why sockets end, for metrics (see `Rooms::close_counts`).
pub const CLOSE_KINDS: [&str; 10] = [
    "client",
    "slow_reader",
    "rate_limit",
    "frame_too_large",
    "token_expired",
    "token_revoked",
    "kicked",
    "going_away",
    "idle",
    "protocol",
];

/// The index in [`CLOSE_KINDS`] of a close the broker sends.
fn close_kind(code: CloseCode, reason: &str) -> usize {
    match code {
        CloseCode::Policy if reason == RATE_LIMIT_EXCEEDED => 2,
        CloseCode::Policy => 1,
        CloseCode::Size => 3,
        CloseCode::Other(4001) => 4,
        CloseCode::Other(4003) => 5,
        CloseCode::Other(4004) => 6,
        CloseCode::Away => 7,
        CloseCode::Normal => 8,
        _ => 9,
    }
}

const RATE_LIMIT_EXCEEDED: &str = "rate limit exceeded";

/// Why the loop ended, and what to tell the client.
enum End {
    Close(CloseCode, &'static str),
    /// Close once the publishes read so far are committed and answered.
    Flush(CloseCode, &'static str),
    /// The client went away or closed first.
    Gone,
}

impl Socket {
    fn new(rooms: Rooms, session: Session, params: SocketParams, conn_id: u64) -> Self {
        let limits = rooms.limits();
        let expiry = Box::pin(tokio::time::sleep_until(
            rooms.expiry_deadline(params.grant.expires_at),
        ));
        Self {
            rate: Rate::new(limits.messages_per_second),
            publishes: Publishes::new(limits.max_pending_publishes),
            shutdown: rooms.shutdown_signal(),
            rooms,
            session,
            params,
            conn_id,
            link: Arc::new(Link::default()),
            refresh: None,
            expiry,
        }
    }

    async fn serve(mut self, mut stream: actix_ws::AggregatedMessageStream) {
        let request = JoinRequest {
            conn_id: self.conn_id,
            conn: ConnParts {
                member: self.params.grant.member.clone(),
                out: Box::new(self.session.clone()),
                link: self.link.clone(),
            },
            resume: self.params.resume.clone(),
            expires_at: self.params.grant.expires_at,
        };
        let room = self.params.room.clone();
        self.rooms
            .sockets()
            .add(self.conn_id, self.link.clone(), &self.params.grant.jti);
        self.rooms
            .recheck_revoked(&self.params.grant.jti, &self.link);
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
        let end = match end {
            End::Flush(code, reason) => {
                Box::pin(self.flush()).await;
                End::Close(code, reason)
            }
            end => end,
        };
        Box::pin(self.rooms.hub().leave(&room, self.conn_id)).await;
        self.rooms.sockets().remove(self.conn_id);
        match &end {
            End::Close(code, reason) => self.rooms.count_close(close_kind(*code, reason)),
            _ => self.rooms.count_close(0),
        }
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
        let link = self.link.clone();
        let limits = self.rooms.limits();
        let mut heartbeat = Heartbeat::new(
            Duration::from_secs(limits.ping_interval_seconds),
            Duration::from_secs(limits.idle_timeout_seconds),
        );
        loop {
            let target = Target {
                rooms: &self.rooms,
                room: &self.params.room,
                member: &self.params.grant.member,
            };
            tokio::select! {
                biased;
                _ = self.shutdown.recv() => return End::Flush(CloseCode::Away, "server shutting down"),
                why = link.closing() => return closing_end(why),
                _ = &mut self.expiry => return End::Close(CloseCode::Other(4001), "token_expired"),
                _ = link.ready() => {
                    if let Some(end) = Box::pin(self.drain(&link)).await {
                        return end;
                    }
                }
                (reference, outcome) = self.publishes.done(&target) => {
                    // Boxed, like the others: it would widen the idle future.
                    if let Some(end) = Box::pin(self.answer(reference, outcome)).await {
                        return end;
                    }
                }
                grant = poll_refresh(&mut self.refresh) => {
                    if let Some(end) = Box::pin(self.refreshed(grant)).await {
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
                    let Self { session, link: l, .. } = self;
                    if let Some(end) = Box::pin(guarded(l, session.ping(b""))).await {
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
                let Self { session, link, .. } = self;
                return guarded(link, session.pong(&bytes)).await;
            }
            AggregatedMessage::Pong(_) => return None,
            AggregatedMessage::Close(_) => return Some(End::Gone),
            AggregatedMessage::Binary(_) => None,
            AggregatedMessage::Text(text) => Some(text),
        };
        let frame = text.map(|text| ClientFrame::parse(&text, self.rooms.json_max_depth()));
        let reference = match &frame {
            Some(Ok(frame)) => frame.reference().cloned(),
            _ => None,
        };
        match self.rate.hit() {
            Verdict::Ok => {}
            Verdict::Over => {
                let detail = "too many frames per second; slow down";
                return self.error("rate_limited", detail, reference.as_ref()).await;
            }
            Verdict::Abusive => return Some(End::Close(CloseCode::Policy, RATE_LIMIT_EXCEEDED)),
        }
        match frame {
            Some(Ok(frame)) => self.on_frame(frame).await,
            Some(Err(e)) => self.error("invalid_frame", &e.0, None).await,
            None => {
                let detail = "binary frames are not part of this protocol";
                self.error("invalid_frame", detail, None).await
            }
        }
    }

    async fn on_frame(&mut self, frame: ClientFrame) -> Option<End> {
        match frame {
            ClientFrame::Ping => self.send(render::pong()).await,
            ClientFrame::Publish { reference, .. } if !self.params.grant.can_publish => {
                let detail = "this token's grants do not allow publishing data";
                self.error("publish_forbidden", detail, reference.as_ref())
                    .await
            }
            ClientFrame::Publish { data, reference } => {
                let target = Target {
                    rooms: &self.rooms,
                    room: &self.params.room,
                    member: &self.params.grant.member,
                };
                let refused = reference.clone();
                if self.publishes.push(&target, data, reference).is_err() {
                    let detail = "too many publishes waiting for storage on this connection; \
                                  retry after the acks";
                    return self
                        .error("storage_unavailable", detail, refused.as_ref())
                        .await;
                }
                None
            }
            ClientFrame::Refresh(token) => {
                let check = self.rooms.token_check();
                self.refresh = Some(Box::pin(async move { check.verify(&token).await }));
                None
            }
        }
    }

    /// Answers a publish the outbox is done with.
    async fn answer(
        &mut self,
        reference: Option<Ref>,
        outcome: Result<Published, PublishError>,
    ) -> Option<End> {
        let (code, detail) = match outcome {
            Ok(published) => {
                let reference = reference?;
                let id = match published {
                    Published::Sent(id) => Some(id),
                    Published::Buffered => None,
                };
                return self.send(render::ack(&reference, id)).await;
            }
            Err(PublishError::BufferFull(_)) => (
                "storage_unavailable",
                "Redis is unavailable and the outage buffer is full; retry later".to_string(),
            ),
            Err(PublishError::Store(e)) => {
                tracing::warn!(error = %crate::error::chain(&e), "room publish refused");
                ("storage_unavailable", e.public_detail().to_string())
            }
        };
        self.error(code, &detail, reference.as_ref()).await
    }

    /// A refresh token was verified (or not).
    async fn refreshed(&mut self, grant: Result<Grant, String>) -> Option<End> {
        let fresh = match grant.and_then(|g| {
            self.params
                .grant
                .refreshable_by(&g)
                .map(|()| g)
                .map_err(str::to_string)
        }) {
            Ok(fresh) => fresh,
            Err(detail) => return self.error("invalid_token", &detail, None).await,
        };
        self.rooms.sockets().add_jti(self.conn_id, &fresh.jti);
        self.rooms.recheck_revoked(&fresh.jti, &self.link);
        let deadline = self.rooms.expiry_deadline(fresh.expires_at);
        self.expiry.as_mut().reset(deadline);
        let expires_at = fresh.expires_at;
        self.params.grant = Grant {
            jti: fresh.jti,
            expires_at,
            can_publish: fresh.can_publish,
            ..self.params.grant.clone()
        };
        tracing::debug!(expires_at, "token refreshed");
        self.send(render::refreshed(expires_at)).await
    }

    /// Waits (a bounded time) for the publishes read so far and answers them.
    async fn flush(&mut self) {
        let deadline = tokio::time::Instant::now() + PUBLISH_FLUSH;
        while !self.publishes.is_empty() {
            let target = Target {
                rooms: &self.rooms,
                room: &self.params.room,
                member: &self.params.grant.member,
            };
            let done = tokio::time::timeout_at(deadline, self.publishes.done(&target)).await;
            let Ok((reference, outcome)) = done else {
                tracing::warn!(
                    left = self.publishes.len(),
                    "closing with publishes not yet committed (never acknowledged)"
                );
                return;
            };
            if self.answer(reference, outcome).await.is_some() {
                return;
            }
        }
    }

    async fn error(&mut self, code: &str, detail: &str, reference: Option<&Ref>) -> Option<End> {
        self.send(render::error(code, detail, reference)).await
    }

    /// Sends, in order, a burst the socket's channel did not hold. A send
    /// that makes no progress for [`SLOW_READER_AFTER`] while the queue is
    /// over `rooms.max_queue` is a client that does not read.
    async fn drain(&mut self, link: &Link) -> Option<End> {
        let max_queue = self.rooms.limits().max_queue;
        while let Some(frame) = link.front() {
            loop {
                let send = guarded(link, self.session.text(frame.clone()));
                match tokio::time::timeout(SLOW_READER_AFTER, send).await {
                    Ok(Some(end)) => return Some(end),
                    Ok(None) => break,
                    Err(_) if link.len() > max_queue => {
                        tracing::info!(queued = link.len(), "client does not read its frames");
                        return Some(closing_end(Closing::SlowReader));
                    }
                    // Slow, but the queue is within bounds: keep waiting.
                    Err(_) => {}
                }
            }
            link.pop();
        }
        None
    }

    /// Sends one frame of the socket's own (welcome, replay, pong, error).
    async fn send(&mut self, frame: ByteString) -> Option<End> {
        let Self { session, link, .. } = self;
        guarded(link, session.text(frame)).await
    }
}

fn closing_end(why: Closing) -> End {
    let (code, reason) = why.close();
    match why {
        Closing::Drain => End::Flush(code, reason),
        _ => End::Close(code, reason),
    }
}

async fn poll_refresh(
    refresh: &mut Option<LocalBoxFuture<'static, Result<Grant, String>>>,
) -> Result<Grant, String> {
    let grant = match refresh {
        Some(verify) => verify.as_mut().await,
        None => std::future::pending().await,
    };
    *refresh = None;
    grant
}

/// Waits for a send unless the socket is closed meanwhile (a client that
/// does not read would block the send forever).
async fn guarded(
    link: &Link,
    send: impl std::future::Future<Output = Result<(), actix_ws::Closed>>,
) -> Option<End> {
    tokio::select! {
        sent = send => sent.err().map(|_| End::Gone),
        why = link.closing() => Some(closing_end(why)),
    }
}

/// The instant a token of `exp` (unix seconds) plus `leeway` runs out.
pub fn deadline(exp: u64, leeway: u64) -> tokio::time::Instant {
    let until_ms = exp.saturating_add(leeway).saturating_mul(1000);
    let left = Duration::from_millis(until_ms.saturating_sub(unix_now_ms()));
    tokio::time::Instant::now() + left
}
