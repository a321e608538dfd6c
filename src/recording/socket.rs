//! The recording's WebSocket (`/ws/recordings/{id}?token=<upload token>`):
//! binary frames are chunks, answered in order with `chunkSaved`; a text
//! frame `{"event":"stop"}` stops the recording; the merge's events
//! (`mergeProgress`, `recordingReady`, `recordingError`) arrive here from
//! whichever instance runs the merge. Pings every 20 s, close after 60 s of
//! silence, 1001 when the broker shuts down; a frame over the chunk limit
//! closes with 1009; a socket opened with an upload token that is revoked
//! closes with 4003 (on every instance: revocations reach them all). Other
//! text gets an error frame and the socket stays.

use std::time::Duration;

use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use serde_json::json;
use tokio::sync::broadcast;
use tracing::Instrument as _;

use super::events::{Heard, Subscription};
use super::{RecordState, RecordingError, RecordingEvent, Recordings};
use crate::domain::Id;
use crate::error::ApiError;
use crate::heartbeat::{Beat, Heartbeat};

const PING_INTERVAL: Duration = Duration::from_secs(20);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The socket's task, run until it closes.
pub fn run(
    recordings: Recordings,
    session: Session,
    stream: actix_ws::MessageStream,
    record: Id,
    jti: Option<String>,
) -> impl std::future::Future<Output = ()> {
    let stream = crate::heartbeat::bounded(stream, recordings.max_chunk_bytes());
    let span = tracing::info_span!("ws_recording", record_id = %record);
    let counted = recordings.socket_opened();
    let watched = jti.map(|jti| recordings.watch_token(&jti));
    let unwatch = recordings.clone();
    let socket = Socket {
        revoked: watched.as_ref().map(|(_, closer)| closer.clone()),
        events: recordings.events(&record),
        shutdown: recordings.shutdown_signal(),
        recordings,
        session,
        record,
        final_sent: false,
    };
    async move {
        socket.serve(stream).await;
        if let Some((id, _)) = watched {
            unwatch.unwatch_token(id);
        }
        drop(counted);
    }
    .instrument(span)
}

struct Socket {
    recordings: Recordings,
    session: Session,
    record: Id,
    events: Subscription,
    shutdown: broadcast::Receiver<()>,
    /// `recordingReady` or `recordingError` went out (at most once).
    final_sent: bool,
    /// Fires when the upload token this socket was opened with is revoked.
    revoked: Option<std::sync::Arc<tokio::sync::Notify>>,
}

/// Why the loop ended.
enum End {
    Close(CloseCode, &'static str),
    Gone,
}

impl Socket {
    async fn serve(mut self, mut stream: actix_ws::AggregatedMessageStream) {
        let end = self.pump(&mut stream).await;
        if let End::Close(code, reason) = end {
            let close = self.session.close(Some(CloseReason {
                code,
                description: Some(reason.to_string()),
            }));
            let _ = tokio::time::timeout(CLOSE_WAIT, close).await;
        }
    }

    async fn pump(&mut self, stream: &mut actix_ws::AggregatedMessageStream) -> End {
        // A merge that ended before this socket subscribed.
        if let Some(end) = self.catch_up().await {
            return end;
        }
        let mut heartbeat = Heartbeat::new(PING_INTERVAL, IDLE_TIMEOUT);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.recv() => return End::Close(CloseCode::Away, "server shutting down"),
                _ = revoked(&self.revoked) => return End::Close(CloseCode::Other(4003), "token_revoked"),
                heard = self.events.rx.recv() => {
                    let end = match heard {
                        Ok(Heard::Event(event)) => self.send_event(event).await,
                        // Events were missed: the state has the result.
                        Ok(Heard::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            self.catch_up().await
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            self.events = self.recordings.events(&self.record);
                            None
                        }
                    };
                    if let Some(end) = end {
                        return end;
                    }
                }
                message = stream.recv() => {
                    heartbeat.heard();
                    if let Some(end) = Box::pin(self.on_client(message)).await {
                        return end;
                    }
                }
                beat = heartbeat.due() => match beat {
                    Beat::Idle => return End::Close(CloseCode::Normal, "idle timeout"),
                    Beat::Ping => {
                        if self.session.ping(b"").await.is_err() {
                            return End::Gone;
                        }
                    }
                },
            }
        }
    }

    async fn on_client(
        &mut self,
        message: Option<Result<AggregatedMessage, ProtocolError>>,
    ) -> Option<End> {
        match message {
            None | Some(Ok(AggregatedMessage::Close(_))) => Some(End::Gone),
            Some(Err(ProtocolError::Overflow)) => {
                let limit = self.recordings.max_chunk_bytes();
                let _ = self
                    .error(&RecordingError::ChunkTooLarge(limit).into())
                    .await;
                Some(End::Close(CloseCode::Size, "chunk too large"))
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "WebSocket protocol error");
                let (code, reason) = crate::heartbeat::protocol_close(&e);
                Some(End::Close(code, reason))
            }
            Some(Ok(AggregatedMessage::Ping(bytes))) => {
                self.session.pong(&bytes).await.err().map(|_| End::Gone)
            }
            Some(Ok(AggregatedMessage::Pong(_))) => None,
            Some(Ok(AggregatedMessage::Binary(bytes))) => self.on_chunk(&bytes).await,
            Some(Ok(AggregatedMessage::Text(text))) => self.on_text(&text).await,
        }
    }

    /// Stores one chunk; `chunkSaved` with its index, or an error frame.
    async fn on_chunk(&mut self, bytes: &[u8]) -> Option<End> {
        let stored = async {
            let mut upload = self.recordings.begin_upload(&self.record).await?;
            upload.write(bytes).await?;
            upload.commit().await
        }
        .await;
        match stored {
            Ok(index) => {
                let saved =
                    json!({"event": "chunkSaved", "record_id": self.record, "index": index});
                self.send(&saved).await
            }
            Err(e) => self.error(&e.into()).await,
        }
    }

    async fn on_text(&mut self, text: &str) -> Option<End> {
        #[derive(serde::Deserialize)]
        struct Command {
            event: String,
        }
        match serde_json::from_str::<Command>(text) {
            Ok(c) if c.event == "stop" => match self.recordings.stop(&self.record).await {
                Ok(state) => {
                    let stopped =
                        json!({"event": "stopped", "record_id": self.record, "state": state});
                    self.send(&stopped).await
                }
                Err(e) => self.error(&e.into()).await,
            },
            _ => {
                let error = ApiError::InvalidRequest(
                    "text frames must be {\"event\":\"stop\"}; chunks are binary frames".into(),
                );
                self.error_code("invalid_frame", &error.detail()).await
            }
        }
    }

    /// Sends the result if the recording has one and it was not sent yet.
    async fn catch_up(&mut self) -> Option<End> {
        let status = self.recordings.status(&self.record).await.ok()?;
        let record_id = self.record.clone();
        let event = match status.state {
            RecordState::Ready => RecordingEvent::Ready {
                record_id,
                download_url: status.download_url?,
                duration_s: status.duration_s.unwrap_or_default(),
                size_bytes: status.size_bytes.unwrap_or_default(),
            },
            RecordState::Failed => RecordingEvent::Error {
                record_id,
                error: status.error.unwrap_or_default(),
            },
            RecordState::Recording | RecordState::Merging => return None,
        };
        self.send_event(event).await
    }

    async fn send_event(&mut self, event: RecordingEvent) -> Option<End> {
        let terminal = !matches!(event, RecordingEvent::MergeProgress { .. });
        // Nothing after the result (a late progress, or the result twice:
        // once heard, once caught up).
        if self.final_sent {
            return None;
        }
        self.final_sent = terminal;
        self.send(&json!(event)).await
    }

    async fn error(&mut self, error: &ApiError) -> Option<End> {
        self.error_code(error.code(), &error.detail()).await
    }

    async fn error_code(&mut self, code: &str, detail: &str) -> Option<End> {
        let frame =
            json!({"event": "error", "record_id": self.record, "error": code, "detail": detail});
        self.send(&frame).await
    }

    async fn send(&mut self, frame: &serde_json::Value) -> Option<End> {
        self.session
            .text(frame.to_string())
            .await
            .err()
            .map(|_| End::Gone)
    }
}

/// Resolves when the socket's upload token is revoked (never without one).
async fn revoked(closer: &Option<std::sync::Arc<tokio::sync::Notify>>) {
    match closer {
        Some(closer) => closer.notified().await,
        None => std::future::pending().await,
    }
}
