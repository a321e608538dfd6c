//! Slow and oversized clients: hundreds of connections dribbling a request
//! head are cut off after `server.client_request_timeout_ms` (408 or EOF)
//! while normal requests on fresh connections are answered promptly; a
//! body slower than `server.body_timeout_ms` gets 408 `request_timeout`; a
//! head over 128 KiB or with more than 96 headers gets 431; these answers
//! of the HTTP layer, and its 400 for a garbled request, carry the JSON
//! error body; the broker stays healthy throughout. Loopback only, every
//! loop bounded.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, Backend, TestApp};
use crate::wire::{self, RawResponse};

const DRIBBLERS: usize = 300;
/// How long the dribblers keep reconnecting (and the normal requests run).
const WINDOW: Duration = Duration::from_secs(4);
const BYTE_EVERY: Duration = Duration::from_millis(500);
/// `client_request_timeout_ms` and `body_timeout_ms` of the test app.
const TIMEOUT_MS: &str = "1000";
/// A dribbling connection must be cut off within this of opening: the
/// timeout, plus actix's clock (it ticks every 500 ms) and scheduling.
const CUT_OFF: Duration = Duration::from_secs(4);
/// Bound on each normal request during the attack (measured: a few ms).
const PROMPT: Duration = Duration::from_secs(3);

async fn slow_app() -> TestApp {
    spawn_app_with(
        Backend::Memory,
        &[
            ("BROKER__SERVER__CLIENT_REQUEST_TIMEOUT_MS", TIMEOUT_MS),
            ("BROKER__SERVER__BODY_TIMEOUT_MS", TIMEOUT_MS),
        ],
    )
    .await
}

/// One slowloris client: until `until`, opens a connection, sends part of
/// a head and then one header byte every [`BYTE_EVERY`]; for each
/// connection, how long it lived and how it ended.
async fn dribble(addr: String, until: Instant) -> Vec<(Duration, String)> {
    let mut ends = Vec::new();
    while Instant::now() < until {
        let opened = Instant::now();
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let head = b"GET /health/live HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ";
        stream.write_all(head).await.expect("first bytes");
        let mut tick = tokio::time::interval_at((opened + BYTE_EVERY).into(), BYTE_EVERY);
        let give_up = tokio::time::sleep_until((opened + CUT_OFF * 2).into());
        tokio::pin!(give_up);
        let mut buf = [0u8; 512];
        let end = loop {
            tokio::select! {
                read = stream.read(&mut buf) => break match read {
                    Ok(0) => "EOF".to_string(),
                    Ok(n) => String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string(),
                    Err(e) => format!("reset ({e})"),
                },
                _ = tick.tick() => {
                    if let Err(e) = stream.write_all(b"a").await {
                        break format!("write refused ({e})");
                    }
                }
                _ = &mut give_up => break "still open".to_string(),
            }
        };
        ends.push((opened.elapsed(), end));
    }
    ends
}

/// One request on a fresh connection, timed; asserts a 200.
async fn timed(addr: &str, method: &str, path: &str, body: &str) -> Duration {
    let headers = [("content-type".to_string(), "application/json".to_string())];
    let request = wire::request(method, path, &headers, body.as_bytes(), false);
    let started = Instant::now();
    let response = wire::exchange(addr, &request, PROMPT * 3)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert_eq!(response.status, 200, "{method} {path}: {}", response.text());
    started.elapsed()
}

async fn assert_healthy(app: &TestApp) {
    let (status, body) = app.get("/health/live").await;
    assert_eq!((status, body), (200, serde_json::json!({"ok": true})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dribbling_heads_are_cut_off_while_normal_requests_are_served() {
    // Both ends of every connection live in this process.
    wire::raise_fd_limit(4 * DRIBBLERS as u64 + 1024);
    let app = slow_app().await;
    let addr = wire::host(&app.address);
    let until = Instant::now() + WINDOW;
    let dribblers: Vec<_> = (0..DRIBBLERS)
        .map(|_| tokio::spawn(dribble(addr.clone(), until)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut slowest = Duration::ZERO;
    for i in 0..70 {
        let took = if i % 7 < 2 {
            let body = format!(r#"{{"session_id":"normal-{i}"}}"#);
            timed(&addr, "POST", "/api/voice/token", &body).await
        } else {
            timed(&addr, "GET", "/health/live", "").await
        };
        assert!(took < PROMPT, "request {i} took {took:?} during the attack");
        slowest = slowest.max(took);
        tokio::time::sleep(Duration::from_millis(35)).await;
    }

    let mut connections = 0;
    let mut longest = Duration::ZERO;
    for task in dribblers {
        for (lived, end) in task.await.expect("dribbler") {
            connections += 1;
            longest = longest.max(lived);
            let cut = end == "EOF"
                || end.starts_with("HTTP/1.1 408")
                || end.starts_with("reset")
                || end.starts_with("write refused");
            assert!(cut && lived <= CUT_OFF, "a dribbler lived {lived:?}: {end}");
        }
    }
    assert!(connections >= DRIBBLERS, "{connections} connections");
    println!(
        "{connections} dribbling connections, each cut off within {longest:?}; \
         slowest of 70 normal requests: {slowest:?}"
    );
    assert_healthy(&app).await;
}

/// Writes `head`, then `body` one byte every 200 ms, until an answer is
/// complete (or 10 s); the answer and when it came.
async fn dribble_body(addr: &str, head: &str, body: &[u8]) -> (RawResponse, Duration) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    let started = Instant::now();
    let mut bytes = body.iter();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(started.elapsed() < Duration::from_secs(10), "no answer");
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(n) if n > 0 => received.extend_from_slice(&buf[..n]),
                other => panic!("connection ended without an answer: {other:?}"),
            },
            _ = tick.tick() => {
                if let Some(byte) = bytes.next() {
                    stream.write_all(&[*byte]).await.expect("body byte");
                }
            }
        }
        if let Some(response) = wire::parse(&received).filter(RawResponse::is_complete) {
            return (response, started.elapsed());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_body_slower_than_the_body_timeout_gets_408() {
    let app = slow_app().await;
    let body = br#"{"session_id":"slow-body","identity":"alice","room":"r1"}"#;
    let head = format!(
        "POST /api/voice/token HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let (response, after) = dribble_body(&wire::host(&app.address), &head, body).await;
    assert_eq!(response.status, 408, "{}", response.text());
    assert_eq!(wire::contract_violation(&response), None);
    assert_eq!(response.json().unwrap()["error"], "request_timeout");
    // The whole body would take ~11 s; the answer comes at the timeout.
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(3)).contains(&after),
        "answered after {after:?}"
    );
    println!("slow body answered 408 after {after:?}");
    assert_eq!(app.get("/api/voice/token/slow-body").await.0, 412);
    assert_healthy(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_and_the_broker_stays_healthy() {
    let app = slow_app().await;
    let addr = wire::host(&app.address);
    let big_value = vec![("x-big".to_string(), "a".repeat(130 * 1024))];
    let many: Vec<(String, String)> = (0..100)
        .map(|i| (format!("x-h{i}"), "v".to_string()))
        .collect();
    for (what, headers) in [("a 130 KiB head", big_value), ("100 headers", many)] {
        let request = wire::request("GET", "/health/live", &headers, b"", false);
        let response = wire::exchange(&addr, &request, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(response.status, 431, "{what}: {}", response.head);
        assert_contract(&response, "headers_too_large");
        assert_healthy(&app).await;
        let took = timed(
            &addr,
            "POST",
            "/api/voice/token",
            r#"{"session_id":"after"}"#,
        )
        .await;
        assert!(took < PROMPT, "{what}: then a token took {took:?}");
    }
}

/// The answers the HTTP layer gives before any route sees the request
/// (the vendored dispatcher's `contract_error`) keep the error contract:
/// the JSON body, a code listed in `ERROR_CODES` with that status.
fn assert_contract(response: &RawResponse, code: &str) {
    if let Some(why) = wire::contract_violation(response) {
        panic!("{}: {why}: {}", response.status, response.text());
    }
    assert_eq!(
        response.json().unwrap()["error"],
        code,
        "{}",
        response.text()
    );
    let listed = rtc_broker::error::ERROR_CODES
        .iter()
        .any(|(c, s)| *c == code && s.as_u16() == response.status);
    assert!(listed, "{code} {} is not in ERROR_CODES", response.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_before_routing_keep_the_error_contract() {
    let app = slow_app().await;
    let addr = wire::host(&app.address);
    for garbled in [
        &b"GET /health/live HTTP/9.9\r\n\r\n"[..],
        b"GET /health/live HTTP/1.1\r\nbad header\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"POST /api/voice/token HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
    ] {
        let response = wire::exchange(&addr, garbled, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(garbled)));
        assert_eq!(
            response.status,
            400,
            "{:?}",
            String::from_utf8_lossy(garbled)
        );
        assert_contract(&response, "invalid_request");
    }
    // A head that stops arriving: 408 with its body, then the close.
    let started = Instant::now();
    let response = wire::exchange(
        &addr,
        b"GET /health/live HTTP/1.1\r\nhost: x\r\n",
        CUT_OFF * 2,
    )
    .await
    .expect("an answer to a stalled head");
    assert_eq!(response.status, 408, "{}", response.head);
    assert_contract(&response, "request_timeout");
    println!("a stalled head got its 408 after {:?}", started.elapsed());
    assert_healthy(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_outside_the_ws_routes_is_refused_at_once() {
    let app = spawn_app_with(Backend::Memory, &[]).await;
    let addr = wire::host(&app.address);
    let upgrade = vec![
        ("upgrade".to_string(), "websocket".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let body = br#"{"session_id":"stray"}"#;
    let request = wire::request("POST", "/api/voice/token", &upgrade, body, false);
    let started = Instant::now();
    // Without the refusal actix reads the body to the end of the connection
    // and the answer comes only at the body timeout (15 s by default).
    let response = wire::exchange(&addr, &request, Duration::from_secs(5))
        .await
        .expect("answered before the body timeout");
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(response.json().unwrap()["error"], "invalid_request");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    assert_eq!(
        app.get("/api/voice/token/stray").await.0,
        412,
        "nothing issued"
    );
}
