//! A real WebSocket client for the rooms protocol (tokio-tungstenite over
//! a real socket), and the token it needs.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::TestApp;

/// Anything with a broker's base URL (`http://127.0.0.1:PORT`).
pub trait Broker {
    fn base_url(&self) -> &str;
}

impl Broker for TestApp {
    fn base_url(&self) -> &str {
        &self.address
    }
}

impl Broker for String {
    fn base_url(&self) -> &str {
        self
    }
}

/// How long a test waits for one frame before calling it missing.
pub const FRAME_WAIT: Duration = Duration::from_secs(10);

/// Issues a token for `identity` in `room` with the given grants.
pub async fn token(app: &impl Broker, identity: &str, room: &str, grants: Option<Value>) -> String {
    issue(app, identity, room, 600, grants).await.token
}

/// An issued RTC token with its session and expiry.
pub struct Issued {
    pub token: String,
    pub session_id: String,
    pub expires_at: u64,
}

/// Issues a token of `ttl` seconds for `identity` in `room`.
pub async fn issue(
    app: &impl Broker,
    identity: &str,
    room: &str,
    ttl: u64,
    grants: Option<Value>,
) -> Issued {
    let session_id = format!("s-{}", uuid::Uuid::new_v4().simple());
    let mut body = json!({
        "session_id": session_id,
        "identity": identity,
        "room": room,
        "ttl_seconds": ttl,
    });
    if let Some(grants) = grants {
        body["grants"] = grants;
    }
    let res = reqwest::Client::new()
        .post(format!("{}/api/voice/token", app.base_url()))
        .json(&body)
        .send()
        .await
        .expect("token request");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("token JSON");
    Issued {
        token: body["rtc_token"].as_str().expect("rtc_token").to_string(),
        session_id,
        expires_at: body["expires_at"].as_u64().expect("expires_at"),
    }
}

/// Opens the room with an already issued token; panics if refused.
pub async fn open(app: &impl Broker, room: &str, token: &str) -> Client {
    match upgrade(app, room, &format!("token={token}"), &[]).await {
        Upgrade::Open(client) => *client,
        Upgrade::Refused(status, body) => panic!("join refused: {status} {body}"),
    }
}

/// What an upgrade attempt ended in.
pub enum Upgrade {
    Open(Box<Client>),
    /// Refused before the upgrade: status and JSON body.
    Refused(u16, Value),
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
}

/// Opens `/ws/rooms/{room}` with `?query` and extra headers.
pub async fn upgrade(
    app: &impl Broker,
    room: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Upgrade {
    let url = format!(
        "{}/ws/rooms/{room}{}{query}",
        app.base_url().replacen("http", "ws", 1),
        if query.is_empty() { "" } else { "?" }
    );
    match tokio_tungstenite::connect_async(crate::harness::ws_request(&url, headers)).await {
        Ok((ws, _)) => {
            let mut client = Client {
                ws,
                welcome: Value::Null,
            };
            let welcome = client.next_json().await;
            assert_eq!(welcome["type"], "welcome", "first frame: {welcome}");
            client.welcome = welcome;
            Upgrade::Open(Box::new(client))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().clone().unwrap_or_default();
            let body: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| panic!("non-JSON refusal {status}: {body:?}"));
            assert!(
                body["error"].is_string() && body["detail"].is_string(),
                "{body}"
            );
            Upgrade::Refused(status, body)
        }
        Err(e) => panic!("WebSocket connect failed: {e}"),
    }
}

/// Joins `room` as `identity` (token in the query); panics if refused.
pub async fn join(app: &impl Broker, room: &str, identity: &str) -> Client {
    join_with(app, room, identity, "").await
}

/// Joins with extra query parameters (`since=..&epoch=..`).
pub async fn join_with(app: &impl Broker, room: &str, identity: &str, extra: &str) -> Client {
    let token = token(app, identity, room, None).await;
    let mut query = format!("token={token}");
    if !extra.is_empty() {
        query.push('&');
        query.push_str(extra);
    }
    match upgrade(app, room, &query, &[]).await {
        Upgrade::Open(client) => *client,
        Upgrade::Refused(status, body) => panic!("join refused: {status} {body}"),
    }
}

impl Client {
    pub async fn send_json(&mut self, frame: Value) {
        self.send(Message::text(frame.to_string())).await;
    }

    pub async fn send(&mut self, message: Message) {
        self.ws.send(message).await.expect("send frame");
    }

    pub async fn publish(&mut self, data: Value) {
        self.send_json(json!({"type": "publish", "data": data}))
            .await;
    }

    /// Publishes with a `ref`, to be answered by an ack or an error frame.
    pub async fn publish_ref(&mut self, data: Value, reference: Value) {
        self.send_json(json!({"type": "publish", "data": data, "ref": reference}))
            .await;
    }

    /// The next text frame as JSON (pings are answered by the library).
    pub async fn next_json(&mut self) -> Value {
        match self.next_event(FRAME_WAIT).await {
            Event::Frame(v) => v,
            Event::Closed(code) => panic!("socket closed ({code:?}) while a frame was expected"),
            Event::Silent => panic!("no frame within {FRAME_WAIT:?}"),
        }
    }

    /// The next frame of `kind`, skipping others (e.g. presence).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next_json().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// The next text frame or close within `wait` (control frames skipped).
    pub async fn next_event(&mut self, wait: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Event::Silent,
                Ok(None) => return Event::Closed(None),
                Ok(Some(Err(_))) => return Event::Closed(None),
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Event::Frame(serde_json::from_str(&text).expect("JSON frame"))
                }
                Ok(Some(Ok(Message::Close(frame)))) => return Event::Closed(frame.map(|f| f.code)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Waits for the server to close the socket; the close code.
    pub async fn closed(&mut self) -> Option<CloseCode> {
        loop {
            match self.next_event(FRAME_WAIT).await {
                Event::Frame(_) => continue,
                Event::Closed(code) => return code,
                Event::Silent => panic!("socket still open after {FRAME_WAIT:?}"),
            }
        }
    }

    /// Asserts nothing arrives for `wait`.
    pub async fn quiet(&mut self, wait: Duration) {
        match self.next_event(wait).await {
            Event::Silent => {}
            Event::Frame(f) => panic!("unexpected frame {f}"),
            Event::Closed(c) => panic!("unexpected close {c:?}"),
        }
    }

    /// The raw socket, for tests that read and write at once.
    pub fn into_ws(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

pub enum Event {
    Frame(Value),
    Closed(Option<CloseCode>),
    Silent,
}
