//! The WebSocket heartbeat the wings share (rooms, recordings): a ping
//! every interval, and the socket closed once the peer has been silent for
//! the idle timeout (a pong, or any frame, counts as heard); and the close
//! code for a frame the codec refused.

use std::time::{Duration, Instant};

/// What the heartbeat asks for when it is due.
pub enum Beat {
    /// Send a ping.
    Ping,
    /// Nothing heard for the idle timeout: close the socket.
    Idle,
}

pub struct Heartbeat {
    ping: tokio::time::Interval,
    last_heard: Instant,
    idle: Duration,
}

impl Heartbeat {
    /// The first ping is one interval away.
    pub fn new(every: Duration, idle: Duration) -> Self {
        let mut ping = tokio::time::interval(every);
        ping.reset();
        Self {
            ping,
            last_heard: Instant::now(),
            idle,
        }
    }

    /// The peer sent something.
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// Waits until the next beat.
    pub async fn due(&mut self) -> Beat {
        self.ping.tick().await;
        if self.last_heard.elapsed() >= self.idle {
            Beat::Idle
        } else {
            Beat::Ping
        }
    }
}

/// A socket's frames with continuations joined, both bounded by `max`
/// bytes (over it the stream reports `ProtocolError::Overflow`: close 1009).
pub fn bounded(stream: actix_ws::MessageStream, max: usize) -> actix_ws::AggregatedMessageStream {
    stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max)
}

/// The close for a frame the WebSocket codec refused: 1007 for a text
/// frame that is not UTF-8 (RFC 6455 section 7.4.1; actix-ws reports it as
/// an `InvalidData` I/O error), 1002 for anything else.
pub fn protocol_close(error: &actix_ws::ProtocolError) -> (actix_ws::CloseCode, &'static str) {
    match error {
        actix_ws::ProtocolError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            (actix_ws::CloseCode::Invalid, "text frame is not UTF-8")
        }
        _ => (actix_ws::CloseCode::Protocol, "protocol error"),
    }
}
