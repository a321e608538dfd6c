//! The real binary at `RUST_LOG=debug` with every kind of secret
//! configured (token secret, previous secret, API keys, a Redis password in
//! the URL and in REDIS_PASSWORD), driven with traffic that carries them
//! (both key headers, issued tokens, `?token=` on both WebSockets, a token
//! to verify, refused calls, a Redis outage), then stopped with SIGTERM:
//! no secret is in any log line (stdout or stderr), nor in any answer
//! except the one that hands that token out.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{self, process};
use crate::wire::{self, Ws};

const TOKEN_SECRET: &str = "tokSECRET-4f1d9a7c2e8b6053a1d4c7e9b2f58a3d";
const PREVIOUS_SECRET: &str = "prevSECRET-8c3e1b7a9d2f4065b8e1a3c7d9f2b4e6";
const KEY_ONE: &str = "apiKEYone-6d2a9f4c1e";
const KEY_TWO: &str = "apiKEYtwo-3b8e5c7a0d";
/// The Redis server's password (REDIS_PASSWORD wins over the URL's).
const REDIS_PASSWORD: &str = "redisPASS-7e4c2a9f1b";
const URL_PASSWORD: &str = "urlPASS-5a1c8e3f9d";
/// `?token=` and verify values that are not tokens at all.
const BOGUS_TOKEN: &str = "bogusTOKEN-2f7b9c1d4e";

/// Everything the broker answered, and which secrets that answer may hold.
#[derive(Default)]
struct Answers(Vec<(String, String, Vec<String>)>);

impl Answers {
    fn note(&mut self, what: &str, text: String, allowed: &[&str]) {
        let allowed = allowed.iter().map(|s| s.to_string()).collect();
        self.0.push((what.to_string(), text, allowed));
    }
}

/// The driver: an HTTP client, the broker's base URL, what it answered.
struct Driver {
    base: String,
    client: reqwest::Client,
    answers: Answers,
}

impl Driver {
    /// A call with extra headers; notes the whole answer (head and body).
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
        allowed: &[&str],
    ) -> (u16, Value) {
        let mut req = self.client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.base),
        );
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("broker answers");
        let status = res.status().as_u16();
        let head = format!("{:?}", res.headers());
        let text = res.text().await.expect("body");
        self.answers.note(
            &format!("{method} {path}"),
            format!("{head}\n{text}"),
            allowed,
        );
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Opens a WebSocket; notes a refusal's body.
    async fn ws(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
        wire::ws_open(&self.base, path, headers)
            .await
            .map_err(|(status, body)| {
                self.answers.note(&format!("WS {path}"), body, &[]);
                status
            })
    }

    /// The next text frame (noted), skipping control frames.
    async fn frame(&mut self, ws: &mut Ws, what: &str) -> Value {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
            match next
                .expect("a frame in time")
                .expect("open")
                .expect("frame")
            {
                Message::Text(text) => {
                    self.answers.note(what, text.to_string(), &[]);
                    return serde_json::from_str(&text).expect("JSON frame");
                }
                Message::Close(frame) => panic!("{what}: closed {frame:?}"),
                _ => continue,
            }
        }
    }
}

/// The token with one character of its signature changed.
fn tampered(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let at = chars.len() - 10;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// Issues a token for `session` (room `sec-r1`) and fetches it again; both
/// answers may hold it.
async fn issue(d: &mut Driver, auth: &[(&str, &str)], session: &str) -> String {
    let body = json!({"session_id": session, "identity": "alice", "room": "sec-r1"});
    let (status, _) = d
        .call("POST", "/api/voice/token", auth, Some(body), &[])
        .await;
    assert_eq!(status, 200);
    let path = format!("/api/voice/token/{session}");
    let (_, fetched) = d.call("GET", &path, &[], None, &[]).await;
    let token = fetched["rtc_token"]
        .as_str()
        .expect("rtc_token")
        .to_string();
    let last = d.answers.0.len();
    for answer in &mut d.answers.0[last - 2..] {
        answer.2.push(token.clone());
    }
    token
}

#[test]
fn no_secret_reaches_a_log_line_or_an_answer() {
    let mut redis = harness::Single::start_with(&["--requirepass", REDIS_PASSWORD]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis://:{URL_PASSWORD}@127.0.0.1:{}", redis.node.port);
    let keys = format!("{KEY_ONE},{KEY_TWO}");
    let chunks = dir.path().join("chunks").display().to_string();
    let outputs = dir.path().join("out").display().to_string();
    let mut broker = process::start(
        &[
            ("PORT", "0"),
            ("BROKER__SERVER__WORKERS", "2"),
            ("RUST_LOG", "debug"),
            ("TOKEN_SECRET", TOKEN_SECRET),
            ("BROKER__TOKENS__PREVIOUS_SECRETS", PREVIOUS_SECRET),
            ("API_KEYS", &keys),
            ("REDIS_URL", &url),
            ("REDIS_PASSWORD", REDIS_PASSWORD),
            ("BROKER__REDIS__HEALTH_CHECK_INTERVAL_MS", "200"),
            ("TEMP_DIR", &chunks),
            ("STORAGE_LOCAL_PATH", &outputs),
        ],
        dir.path(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut driver = Driver {
        base: format!("http://127.0.0.1:{}", broker.port),
        client: reqwest::Client::new(),
        answers: Answers::default(),
    };
    let issued = rt.block_on(drive(&mut driver, &mut redis));
    kill(Pid::from_raw(broker.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = broker.wait_exit(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", broker.log());

    let log = broker.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l.contains("DEBUG")),
        "RUST_LOG=debug took effect"
    );
    assert!(log.iter().any(|l| l.contains("shutdown complete")));
    let mut secrets: Vec<String> = [
        TOKEN_SECRET,
        PREVIOUS_SECRET,
        KEY_ONE,
        KEY_TWO,
        REDIS_PASSWORD,
        URL_PASSWORD,
        BOGUS_TOKEN,
    ]
    .map(String::from)
    .to_vec();
    for token in &issued {
        secrets.push(token.clone());
        secrets.push(token.rsplit('.').next().unwrap().to_string());
    }
    let mut leaks = Vec::new();
    for secret in &secrets {
        leaks.extend(
            log.iter()
                .filter(|line| line.contains(secret.as_str()))
                .map(|line| format!("log: {line}")),
        );
        for (what, text, allowed) in &driver.answers.0 {
            let own = allowed.iter().any(|a| a.contains(secret.as_str()));
            if !own && text.contains(secret.as_str()) {
                leaks.push(format!("answer to {what}: {text}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    println!(
        "{} log lines and {} answers checked for {} secrets",
        log.len(),
        driver.answers.0.len(),
        secrets.len()
    );
}

/// The traffic; returns every token handed out (and the ones sent bad).
async fn drive(d: &mut Driver, redis: &mut harness::Single) -> Vec<String> {
    let bearer_one = format!("Bearer {KEY_ONE}");
    let by_bearer = [("authorization", bearer_one.as_str())];
    let by_header = [("x-api-key", KEY_TWO)];
    let mut tokens = Vec::new();
    let one = issue(d, &by_bearer, "sec-s1").await;
    let two = issue(d, &by_header, "sec-s2").await;
    tokens.extend([one.clone(), two.clone(), tampered(&one)]);

    // Secrets in query strings and bodies of plain HTTP calls.
    let path = format!("/api/voice/token/sec-s1?token={two}&api_key={KEY_ONE}");
    d.call("GET", &path, &[], None, &[&one]).await;
    for (token, expected) in [(one.as_str(), 200), (&tokens[2], 401), (BOGUS_TOKEN, 401)] {
        let body = json!({"token": token});
        let (status, _) = d
            .call("POST", "/api/tokens/verify", &[], Some(body), &[])
            .await;
        assert_eq!(status, expected, "verify");
    }
    // Refused management calls.
    let wrong = [("authorization", "Bearer wrong-key")];
    let body = json!({"session_id": "sec-x"});
    let (status, _) = d
        .call("POST", "/api/voice/token", &wrong, Some(body), &[])
        .await;
    assert_eq!(status, 401);
    let bad = json!({"session_id": "../x"});
    let (status, _) = d
        .call("POST", "/api/sessions", &by_bearer, Some(bad), &[])
        .await;
    assert_eq!(status, 400);
    let body = json!({"session_id": "sec-s1", "metadata": {"k": "v"}});
    let (status, _) = d
        .call("POST", "/api/sessions", &by_header, Some(body), &[])
        .await;
    assert_eq!(status, 201);

    // Rooms: a token in the query and in the header, good and bad.
    let mut ws = d
        .ws(&format!("/ws/rooms/sec-r1?token={one}"), &[])
        .await
        .expect("room socket");
    assert_eq!(d.frame(&mut ws, "room welcome").await["type"], "welcome");
    let publish = json!({"type": "publish", "data": {"text": "hi"}}).to_string();
    ws.send(Message::text(publish)).await.unwrap();
    assert_eq!(d.frame(&mut ws, "room message").await["type"], "message");
    let bearer_two = format!("Bearer {two}");
    let mut ws_two = d
        .ws("/ws/rooms/sec-r1", &[("authorization", &bearer_two)])
        .await
        .expect("room socket by header");
    assert_eq!(
        d.frame(&mut ws_two, "room welcome").await["type"],
        "welcome"
    );
    for (path, expected) in [
        (format!("/ws/rooms/sec-r1?token={BOGUS_TOKEN}"), 401),
        (format!("/ws/rooms/sec-r1?token={}", tokens[2]), 401),
        (format!("/ws/rooms/other?token={one}"), 403),
    ] {
        assert_eq!(d.ws(&path, &[]).await.err(), Some(expected), "{path}");
    }

    // Recordings: the upload token over HTTP and in the socket's query.
    let (status, started) = d
        .call("POST", "/api/recordings", &by_bearer, Some(json!({})), &[])
        .await;
    assert_eq!(status, 201, "{started}");
    let upload = started["upload_token"].as_str().unwrap().to_string();
    d.answers.0.last_mut().unwrap().2.push(upload.clone());
    tokens.push(upload.clone());
    let record = started["record_id"].as_str().unwrap().to_string();
    let res = d
        .client
        .post(format!("{}/api/recordings/{record}/chunks", d.base))
        .bearer_auth(&upload)
        .body(b"chunk bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let mut rec = d
        .ws(&format!("/ws/recordings/{record}?token={upload}"), &[])
        .await
        .expect("recording socket");
    rec.send(Message::binary(b"more bytes".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        d.frame(&mut rec, "chunk saved").await["event"],
        "chunkSaved"
    );
    for token in [BOGUS_TOKEN, &one] {
        let path = format!("/ws/recordings/{record}?token={token}");
        assert_eq!(d.ws(&path, &[]).await.err(), Some(401), "{path}");
    }
    let path = format!("/api/recordings/{record}/status");
    assert_eq!(d.call("GET", &path, &by_header, None, &[]).await.0, 200);

    // A revoked token, and the operations endpoints.
    let (status, _) = d
        .call("DELETE", "/api/voice/token/sec-s1", &by_bearer, None, &[])
        .await;
    assert_eq!(status, 204);
    let body = json!({"token": one});
    let (status, _) = d
        .call("POST", "/api/tokens/verify", &[], Some(body), &[])
        .await;
    assert_eq!(status, 401, "revoked");
    for path in [
        "/api/health",
        "/api/storage/status",
        "/metrics",
        "/health/ready",
    ] {
        d.call("GET", path, &[], None, &[]).await;
    }

    // Redis goes away: reconnect errors are logged; traffic goes on.
    redis.node.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let three = issue(d, &by_bearer, "sec-s3").await;
    let body = json!({"token": three});
    d.call("POST", "/api/tokens/verify", &[], Some(body), &[])
        .await;
    d.call("GET", "/api/health", &[], None, &[]).await;
    tokens.push(three);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for socket in [&mut ws, &mut ws_two, &mut rec] {
        let _ = socket.close(None).await;
    }
    tokens
}
