//! Property tests with a fixed seed and fixed case counts (a run is
//! bounded and reproducible; a failure prints its shrunk input):
//! - HTTP: random methods, paths (ids with `..`, `%00`, bad escapes, very
//!   long ones), query strings, headers and bodies (deep, wrongly typed,
//!   huge numbers, control characters, invalid UTF-8) on every route of one
//!   running app: never a 5xx but 503, every error is contract JSON, and
//!   the app still answers /health/live.
//! - WebSocket: random text, binary, non-UTF-8 and oversized frames on a
//!   room socket and a recording socket: each frame gets a protocol frame
//!   (errors as contract errors) or a close with 1007 (not UTF-8) or 1009
//!   (too large), and the app stays healthy.
//! - The decoders behind them, through the crate's API: no panic, a typed
//!   error.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use rtc_broker::domain::{Id, Ttl};
use rtc_broker::error::ApiError;
use rtc_broker::extract::{parse_json, JsonLimits};
use rtc_broker::rooms::protocol::ClientFrame;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::harness;
use crate::helpers::{spawn_app_with, Backend, TestApp};
use crate::wire::{self, is_snake_case, Ws};

mod inputs;

use inputs::{body, fragment, frame, json_value, object_text, request, Frame, Known, Request};
use inputs::{FRAME_LIMIT, ODD_IDS, ODD_NUMBERS};

const SEED: [u8; 32] = *b"rtc-broker fuzz: a fixed seed.!!";
/// Cases per property.
const CASES: u32 = 256;
/// Cases of the HTTP property (cheap: one request each).
const HTTP_CASES: u32 = 1024;

/// Runs `test` on `cases` inputs drawn from `strategy` with the fixed seed;
/// panics with the shrunk failing input.
fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

fn fail(why: String) -> TestCaseError {
    TestCaseError::fail(why)
}

// ---- The app ----

/// One app on the memory store with small frame and chunk limits, no rate
/// limit on room frames, and folders of its own. Default timeouts: a
/// request the broker left waiting for a body would fail the case.
async fn fuzz_app(dirs: &tempfile::TempDir) -> TestApp {
    let chunks = dirs.path().join("chunks").display().to_string();
    let out = dirs.path().join("out").display().to_string();
    let limit = FRAME_LIMIT.to_string();
    spawn_app_with(
        Backend::Memory,
        &[
            ("BROKER__ROOMS__MESSAGES_PER_SECOND", "100000"),
            ("BROKER__ROOMS__MAX_FRAME_BYTES", &limit),
            ("BROKER__RECORDINGS__MAX_CHUNK_BYTES", &limit),
            ("TEMP_DIR", &chunks),
            ("STORAGE_LOCAL_PATH", &out),
        ],
    )
    .await
}

/// A recording: its id and upload token.
async fn start_recording(app: &TestApp) -> (String, String) {
    let (status, started) = app.post_json("/api/recordings", &json!({})).await;
    assert_eq!(status, 201, "{started}");
    let field = |name: &str| started[name].as_str().expect(name).to_string();
    (field("record_id"), field("upload_token"))
}

async fn assert_healthy(app: &TestApp) {
    let (status, body) = app.get("/health/live").await;
    assert_eq!((status, body), (200, json!({"ok": true})), "after the fuzz");
}

fn judge(req: &Request, res: &wire::RawResponse) -> Result<(), TestCaseError> {
    let status = res.status;
    if !(101..600).contains(&status) || (status >= 500 && status != 503) {
        return Err(fail(format!("status {status}: {}", res.text())));
    }
    if status >= 400 && req.method != "HEAD" {
        if let Some(why) = wire::contract_violation(res) {
            return Err(fail(format!("{status}: {why}: {}", res.text())));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_of_any_shape_get_contract_answers() {
    let dirs = tempfile::tempdir().unwrap();
    let app = fuzz_app(&dirs).await;
    let rtc = app.issue("fz-room", 600).await["rtc_token"]
        .as_str()
        .unwrap()
        .to_string();
    app.post_json("/api/sessions", &json!({"session_id": "fz-room"}))
        .await;
    app.post_json(
        "/api/sessions/fz-room/members",
        &json!({"member_id": "fz-m"}),
    )
    .await;
    let (record, upload) = start_recording(&app).await;
    let known = Known {
        ids: vec!["fz-room".into(), "fz-m".into(), record],
        tokens: vec![rtc, upload, "eyJhbGciOiJub25lIn0.e30.".into()],
    };
    let addr = wire::host(&app.address);
    let rt = tokio::runtime::Handle::current();
    let statuses = harness::blocking(move || {
        let seen = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
        check(HTTP_CASES, request(&known), |req| {
            let res = rt
                .block_on(wire::exchange(&addr, &req.bytes(), Duration::from_secs(10)))
                .map_err(fail)?;
            *seen.lock().unwrap().entry(res.status).or_default() += 1;
            judge(&req, &res)
        });
        seen.into_inner().unwrap()
    })
    .await;
    println!("answers by status: {statuses:?}");
    assert_healthy(&app).await;
}

// ---- WebSockets ----

#[derive(Debug, Clone, Copy, PartialEq)]
enum Socket {
    Room,
    Recording,
}

impl Socket {
    /// The field naming a frame's kind, and the kinds that come by
    /// themselves rather than in answer to a frame.
    fn protocol(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Socket::Room => ("type", &["welcome", "presence"]),
            Socket::Recording => (
                "event",
                &["mergeProgress", "recordingReady", "recordingError"],
            ),
        }
    }

    /// What `frame` must get: one of these answers, or (then after any of
    /// them) a close with this code.
    fn expects(self, frame: &Frame) -> (&'static [&'static str], Option<u16>) {
        match (self, frame) {
            (_, Frame::NotUtf8(_)) => (&[], Some(1007)),
            (Socket::Room, Frame::Oversize { .. }) => (&[], Some(1009)),
            (Socket::Recording, Frame::Oversize { .. }) => (&["error"], Some(1009)),
            (Socket::Room, Frame::Publish(_)) => (&["message", "error"], None),
            (Socket::Room, Frame::Ping) => (&["pong"], None),
            (Socket::Room, _) => (&["error", "pong", "message"], None),
            (Socket::Recording, Frame::Binary(_)) => (&["chunkSaved", "error"], None),
            (Socket::Recording, _) => (&["error", "stopped"], None),
        }
    }
}

enum Heard {
    Frame(Value),
    Closed(u16),
}

async fn hear(ws: &mut Ws) -> Result<Heard, TestCaseError> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .map_err(|_| fail("no answer within 5 s".into()))?;
        match next {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text)
                    .map(Heard::Frame)
                    .map_err(|_| fail(format!("non-JSON frame {text}")))
            }
            Some(Ok(Message::Close(frame))) => {
                return Ok(Heard::Closed(frame.map_or(1005, |f| f.code.into())))
            }
            Some(Ok(Message::Binary(b))) => return Err(fail(format!("binary frame {b:?}"))),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(fail(format!("socket failed: {e}"))),
            None => return Err(fail("socket ended without a close frame".into())),
        }
    }
}

/// Sends `frames` on a fresh socket of `kind`; checks every answer.
async fn ws_case(
    app: &TestApp,
    kind: Socket,
    rtc: &str,
    frames: Vec<Frame>,
) -> Result<(), TestCaseError> {
    let path = match kind {
        Socket::Room => format!("/ws/rooms/fz-room?token={rtc}"),
        Socket::Recording => {
            let (record, upload) = start_recording(app).await;
            format!("/ws/recordings/{record}?token={upload}")
        }
    };
    let mut ws = wire::ws_open(&app.address, &path, &[])
        .await
        .map_err(|e| fail(format!("upgrade refused: {e:?}")))?;
    let (key, unprompted) = kind.protocol();
    for frame in frames {
        let (answers, close) = kind.expects(&frame);
        // A refused send means the server closed: `hear` gets the code.
        let _ = ws.send(frame.message()).await;
        loop {
            let value = match hear(&mut ws).await? {
                Heard::Closed(code) if Some(code) == close => return Ok(()),
                Heard::Closed(code) => return Err(fail(format!("closed {code} after {frame:?}"))),
                Heard::Frame(value) => value,
            };
            let name = value[key].as_str().unwrap_or_default();
            let is_error = name == "error";
            if is_error
                && !(value["error"].as_str().is_some_and(is_snake_case)
                    && value["detail"].is_string())
            {
                return Err(fail(format!("error frame off contract: {value}")));
            }
            if unprompted.contains(&name) {
                continue;
            }
            if !answers.contains(&name) {
                return Err(fail(format!("{value} in answer to {frame:?}")));
            }
            if let (Frame::Publish(data), "message") = (&frame, name) {
                // Compared as parsed from the same text (serde_json's float
                // parsing may be 1 ULP off the value it printed).
                let sent: Value = serde_json::from_str(&data.to_string()).unwrap();
                prop_assert_eq!(&value["data"], &sent);
            }
            if close.is_none() {
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames_of_any_shape_get_protocol_answers_or_proper_closes() {
    let dirs = tempfile::tempdir().unwrap();
    let app = std::sync::Arc::new(fuzz_app(&dirs).await);
    let rtc = app.issue("fz-room", 600).await["rtc_token"]
        .as_str()
        .unwrap()
        .to_string();
    let rt = tokio::runtime::Handle::current();
    let (shared, token) = (app.clone(), rtc.clone());
    harness::blocking(move || {
        for kind in [Socket::Room, Socket::Recording] {
            check(CASES, vec(frame(), 1..10), |frames| {
                rt.block_on(ws_case(&shared, kind, &token, frames))
            });
        }
    })
    .await;
    assert_healthy(&app).await;
    let mut ws = wire::ws_open(&app.address, &format!("/ws/rooms/fz-room?token={rtc}"), &[])
        .await
        .expect("a room socket after the fuzz");
    match hear(&mut ws).await {
        Ok(Heard::Frame(welcome)) => assert_eq!(welcome["type"], "welcome"),
        _ => panic!("no welcome after the fuzz"),
    }
}

// ---- Decoders ----

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The nesting depth of a JSON text as serde reads it: unlike [`depth`] of
/// a `Value`, it sees every entry (a duplicate key's earlier value too).
struct TextDepth(usize);

impl<'de> serde::Deserialize<'de> for TextDepth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess};
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TextDepth;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<TextDepth, E> {
                Ok(TextDepth(0))
            }
            fn visit_i64<E>(self, _: i64) -> Result<TextDepth, E> {
                Ok(TextDepth(0))
            }
            fn visit_u64<E>(self, _: u64) -> Result<TextDepth, E> {
                Ok(TextDepth(0))
            }
            fn visit_f64<E>(self, _: f64) -> Result<TextDepth, E> {
                Ok(TextDepth(0))
            }
            fn visit_str<E>(self, _: &str) -> Result<TextDepth, E> {
                Ok(TextDepth(0))
            }
            fn visit_unit<E>(self) -> Result<TextDepth, E> {
                Ok(TextDepth(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextDepth, A::Error> {
                let mut max = 0;
                while let Some(TextDepth(d)) = seq.next_element()? {
                    max = max.max(d);
                }
                Ok(TextDepth(max + 1))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextDepth, A::Error> {
                let mut max = 0;
                while let Some((IgnoredAny, TextDepth(d))) = map.next_entry()? {
                    max = max.max(d);
                }
                Ok(TextDepth(max + 1))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[test]
fn client_frames_parse_or_are_refused_with_a_reason() {
    let frame_like = (
        select(&["publish", "ping", "subscribe", ""][..]),
        proptest::option::of(json_value()),
    )
        .prop_map(|(kind, data)| match data {
            Some(data) => json!({"type": kind, "data": data}).to_string(),
            None => json!({"type": kind}).to_string(),
        });
    let text = prop_oneof![frame_like, any::<String>(), fragment(), object_text()];
    check(CASES, (text, 0usize..40), |(text, max_depth)| {
        let parsed = serde_json::from_str::<Value>(&text).ok();
        match ClientFrame::parse(&text, max_depth) {
            Err(e) => prop_assert!(!e.0.is_empty(), "an empty reason for {:?}", text),
            Ok(frame) => {
                let v = parsed.ok_or_else(|| fail(format!("accepted non-JSON {text:?}")))?;
                prop_assert!(depth(&v) <= max_depth);
                let kind = if matches!(frame, ClientFrame::Ping) {
                    "ping"
                } else {
                    "publish"
                };
                prop_assert_eq!(v["type"].as_str(), Some(kind));
            }
        }
        Ok(())
    });
}

#[test]
fn json_bodies_parse_exactly_when_valid_and_shallow_else_a_typed_error() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Shaped {
        session_id: Option<String>,
        ttl_seconds: Option<u64>,
        metadata: Option<serde_json::Map<String, Value>>,
    }
    check(CASES, (body(), 0usize..40), |(bytes, max_depth)| {
        let limits = JsonLimits {
            max_depth,
            ..JsonLimits::default()
        };
        let valid = serde_json::from_slice::<TextDepth>(&bytes).is_ok_and(|d| d.0 <= max_depth);
        match parse_json::<Value>(&bytes, limits) {
            Ok(_) => prop_assert!(valid),
            Err(ApiError::InvalidJson(_)) => prop_assert!(!valid),
            Err(other) => return Err(fail(format!("{other:?}"))),
        }
        match parse_json::<Shaped>(&bytes, limits) {
            Ok(_) | Err(ApiError::InvalidJson(_) | ApiError::InvalidRequest(_)) => Ok(()),
            Err(other) => Err(fail(format!("{other:?}"))),
        }
    });
}

#[test]
fn ids_are_exactly_the_spec_alphabet_without_dot_dot() {
    let text = prop_oneof![
        "[A-Za-z0-9_.:-]{0,140}",
        any::<String>(),
        select(ODD_IDS).prop_map(String::from),
    ];
    check(CASES, text, |s| {
        let alphabet = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
        let expected = alphabet && (1..=128).contains(&s.len()) && s != "." && !s.contains("..");
        match Id::parse(&s) {
            Ok(id) => {
                prop_assert!(expected, "accepted {:?}", s);
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert_eq!(serde_json::to_value(&id).unwrap(), Value::from(s.clone()));
            }
            Err(e) => prop_assert!(!expected && !e.to_string().is_empty(), "refused {:?}", s),
        }
        Ok(())
    });
}

#[test]
fn ttls_are_integers_from_one_to_the_maximum() {
    let number = prop_oneof![
        any::<u64>().prop_map(Value::from),
        (0u64..5000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        select(ODD_NUMBERS).prop_filter_map("JSON", |n| serde_json::from_str(n).ok()),
        json_value(),
    ];
    check(CASES, (number, 1u64..5000), |(value, max)| {
        let expected = value.as_u64().filter(|n| (1..=max).contains(n));
        match Ttl::from_json(&value, max) {
            Ok(ttl) => prop_assert_eq!(Some(ttl.secs()), expected),
            Err(e) => {
                prop_assert_eq!(expected, None);
                prop_assert_eq!(e.max, max);
            }
        }
        Ok(())
    });
}
