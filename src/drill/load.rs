//! The drill's steady, bounded load: token issue (and fetch from another
//! broker), session writes, chunk uploads into one recording, and room
//! messages between WebSocket clients on different brokers. Every answer is
//! a sample; every acknowledged write is kept for the verification.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Pause between the operations of one worker: a steady load, not a flood.
const PACE: Duration = Duration::from_millis(20);
/// Room clients publish this often.
const ROOM_PACE: Duration = Duration::from_millis(100);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One answered (or failed) operation.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Since the drill started.
    pub at: Duration,
    pub kind: &'static str,
    pub broker: usize,
    pub latency: Duration,
    /// `None` when it succeeded; else the error kind (status code or "network").
    pub error: Option<String>,
    pub write: bool,
}

/// What the load saw and what was acknowledged.
#[derive(Default)]
pub struct Log {
    pub samples: Mutex<Vec<Sample>>,
    /// (session id, token) of every issued token.
    pub tokens: Mutex<Vec<(String, String)>>,
    pub sessions: Mutex<Vec<String>>,
    pub chunks: Mutex<Vec<u64>>,
    /// (client, seq) published; per client what it received: (from client, seq).
    pub published: Mutex<Vec<(usize, u64)>>,
    pub received: Mutex<HashMap<usize, Vec<(usize, u64)>>>,
    pub room_errors: AtomicU64,
    pub sockets_dropped: AtomicU64,
}

/// The running load's shared parts.
#[derive(Clone)]
pub struct Load {
    pub brokers: Arc<Vec<String>>,
    pub api_key: Option<String>,
    pub run: String,
    pub started: Instant,
    pub stop: Arc<AtomicBool>,
    pub log: Arc<Log>,
    pub http: reqwest::Client,
}

impl Load {
    fn request(
        &self,
        method: reqwest::Method,
        broker: usize,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.brokers[broker]))
            .timeout(REQUEST_TIMEOUT);
        if let Some(key) = &self.api_key {
            req = req.header("x-api-key", key);
        }
        req
    }

    /// Sends, records the sample, returns the JSON body of a success.
    async fn call(
        &self,
        kind: &'static str,
        write: bool,
        broker: usize,
        req: reqwest::RequestBuilder,
        expect: u16,
    ) -> Option<Value> {
        let sent = Instant::now();
        let result = req.send().await;
        let (error, body) = match result {
            Ok(res) if res.status().as_u16() == expect => (None, res.json().await.ok()),
            Ok(res) => (Some(res.status().as_u16().to_string()), None),
            Err(_) => (Some("network".to_string()), None),
        };
        let sample = Sample {
            at: sent.duration_since(self.started),
            kind,
            broker,
            latency: sent.elapsed(),
            error,
            write,
        };
        let ok = sample.error.is_none();
        lock(&self.log.samples).push(sample);
        if ok {
            body.or(Some(Value::Null))
        } else {
            None
        }
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    fn broker_for(&self, n: u64) -> usize {
        (n % self.brokers.len() as u64) as usize
    }

    /// Issues tokens (one broker) and fetches them (the next one).
    pub async fn tokens(self, worker: usize) {
        let mut n = 0u64;
        while self.running() {
            let sid = format!("drill-{}-t{worker}-{n}", self.run);
            let broker = self.broker_for(n);
            let body = json!({"session_id": sid, "ttl_seconds": 900});
            let req = self
                .request(reqwest::Method::POST, broker, "/api/voice/token")
                .json(&body);
            if let Some(answer) = self.call("token_issue", true, broker, req, 200).await {
                if let Some(token) = answer["rtc_token"].as_str() {
                    lock(&self.log.tokens).push((sid.clone(), token.to_string()));
                    let other = self.broker_for(n + 1);
                    let path = format!("/api/voice/token/{sid}");
                    let req = self.request(reqwest::Method::GET, other, &path);
                    self.call("token_fetch", false, other, req, 200).await;
                }
            }
            n += 1;
            tokio::time::sleep(PACE).await;
        }
    }

    /// Creates sessions.
    pub async fn sessions(self, worker: usize) {
        let mut n = 0u64;
        while self.running() {
            let sid = format!("drill-{}-s{worker}-{n}", self.run);
            let broker = self.broker_for(n);
            let body = json!({"session_id": sid, "ttl_seconds": 900, "metadata": {"n": n}});
            let req = self
                .request(reqwest::Method::POST, broker, "/api/sessions")
                .json(&body);
            if self
                .call("session_write", true, broker, req, 201)
                .await
                .is_some()
            {
                lock(&self.log.sessions).push(sid);
            }
            n += 1;
            tokio::time::sleep(PACE).await;
        }
    }

    /// Uploads chunks into `record`, alternating brokers.
    pub async fn chunks(self, record: String) {
        let mut n = 0u64;
        while self.running() {
            let broker = self.broker_for(n);
            let bytes = format!("drill {} chunk {n}", self.run).into_bytes();
            let path = format!("/api/recordings/{record}/chunks");
            let req = self
                .request(reqwest::Method::POST, broker, &path)
                .body(bytes);
            if let Some(answer) = self.call("chunk_upload", true, broker, req, 201).await {
                if let Some(index) = answer["index"].as_u64() {
                    lock(&self.log.chunks).push(index);
                }
            }
            n += 1;
            tokio::time::sleep(PACE).await;
        }
    }

    /// One room client on `broker`: publishes until stopped, records what
    /// it receives until `linger` after that.
    pub async fn room_client(self, client: usize, broker: usize, room: String, linger: Duration) {
        let Some(token) = self.room_token(client, broker, &room).await else {
            self.log.sockets_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let url = format!(
            "{}/ws/rooms/{room}?token={token}",
            self.brokers[broker].replacen("http", "ws", 1)
        );
        let Ok((ws, _)) = tokio_tungstenite::connect_async(url).await else {
            self.log.sockets_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (mut tx, mut rx) = ws.split();
        let mut seq = 0u64;
        let mut publish = tokio::time::interval(ROOM_PACE);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if deadline.is_none() && !self.running() {
                deadline = Some(tokio::time::Instant::now() + linger);
            }
            let until = deadline.unwrap_or_else(|| tokio::time::Instant::now() + ROOM_PACE * 10);
            tokio::select! {
                _ = publish.tick(), if deadline.is_none() => {
                    let frame = json!({"type": "publish", "data": {"c": client, "s": seq}});
                    if tx.send(Message::Text(frame.to_string().into())).await.is_err() {
                        self.log.sockets_dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    lock(&self.log.published).push((client, seq));
                    seq += 1;
                }
                frame = rx.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_room_frame(client, &text),
                    Some(Ok(_)) => {}
                    _ => {
                        self.log.sockets_dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                },
                _ = tokio::time::sleep_until(until), if deadline.is_some() => {
                    let _ = tx.send(Message::Close(None)).await;
                    return;
                }
            }
        }
    }

    fn on_room_frame(&self, client: usize, text: &str) {
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            return;
        };
        match frame["type"].as_str() {
            Some("message") => {
                let (Some(c), Some(s)) = (frame["data"]["c"].as_u64(), frame["data"]["s"].as_u64())
                else {
                    return;
                };
                lock(&self.log.received)
                    .entry(client)
                    .or_default()
                    .push((c as usize, s));
            }
            Some("error") => {
                self.log.room_errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    async fn room_token(&self, client: usize, broker: usize, room: &str) -> Option<String> {
        let body = json!({
            "session_id": format!("drill-{}-room-{client}", self.run),
            "identity": format!("drill-client-{client}"),
            "room": room,
            "ttl_seconds": 3600,
        });
        let res = self
            .request(reqwest::Method::POST, broker, "/api/voice/token")
            .json(&body)
            .send()
            .await
            .ok()?;
        let answer: Value = res.json().await.ok()?;
        answer["rtc_token"].as_str().map(str::to_string)
    }

    /// Starts the recording the chunk worker uploads into.
    pub async fn start_recording(&self) -> Result<String, String> {
        let res = self
            .request(reqwest::Method::POST, 0, "/api/recordings")
            .send()
            .await
            .map_err(|e| format!("cannot start a recording: {e}"))?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        body["record_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("cannot start a recording: {status} {body}"))
    }
}

/// Room messages some member did not receive, and duplicates, over every
/// member: (missing, duplicated).
pub fn room_gaps(
    published: &[(usize, u64)],
    received: &HashMap<usize, Vec<(usize, u64)>>,
    members: usize,
) -> (u64, u64) {
    let (mut missing, mut duplicated) = (0u64, 0u64);
    for member in 0..members {
        let got = received.get(&member).map(Vec::as_slice).unwrap_or(&[]);
        let mut seen = HashSet::with_capacity(got.len());
        for message in got {
            if !seen.insert(*message) {
                duplicated += 1;
            }
        }
        missing += published.iter().filter(|m| !seen.contains(m)).count() as u64;
    }
    (missing, duplicated)
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_count_per_member() {
        let published = vec![(0, 0), (0, 1), (1, 0)];
        let mut received = HashMap::new();
        received.insert(0, vec![(0, 0), (0, 1), (1, 0)]);
        received.insert(1, vec![(0, 0), (1, 0), (1, 0)]);
        assert_eq!(room_gaps(&published, &received, 2), (1, 1));
        assert_eq!(room_gaps(&published, &received, 3), (4, 1));
    }
}
