//! What the fuzz tests send: JSON values and texts that may be invalid,
//! bodies, ids, request targets and headers for every served route, and
//! WebSocket frames.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as RawFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::wire;

/// The fuzz app's room frame and chunk limit (small, so oversize is cheap).
pub const FRAME_LIMIT: usize = 8192;

#[rustfmt::skip]
pub const FIELDS: &[&str] = &[
    "session_id", "identity", "room", "ttl_seconds", "grants", "metadata", "member_id",
    "display_name", "role", "data", "from", "token", "type", "event", "room_join",
    "can_publish_data", "can_subscribe",
];
#[rustfmt::skip]
pub const ODD_NUMBERS: &[&str] = &[
    "1e400", "-1e400", "18446744073709551616", "-9223372036854775809", "1.5", "-0", "00", "1e",
    "NaN", "Infinity", "0x10", "1_0", "3600", "86401", "4294967296", "1e-400",
];
#[rustfmt::skip]
pub const ODD_IDS: &[&str] = &[
    "..", ".", "...", "a..b", "%2e%2e", "%2E", "%00", "a%00b", "%2F", "a%2Fb", "%5C", "%C3%A9",
    "%C3%28", "%FF", "%zz", "%", "~", "%20", "a%0Ab", "%E2%80%AE", "", "a;b", "*", "null",
];
#[rustfmt::skip]
pub const CONTENT_TYPES: &[&str] = &[
    "application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "+json",
    "application/merge-patch+json", "application/octet-stream", "", "*/*", "application/jsonx",
];

pub fn field() -> impl Strategy<Value = String> {
    prop_oneof![3 => select(FIELDS).prop_map(String::from), 1 => any::<String>()]
}

pub fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::from)),
        any::<String>().prop_map(Value::from),
        select(FIELDS).prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((field(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// JSON text that may be invalid: odd numbers, raw control characters,
/// lone surrogates, deep nesting.
pub fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => json_value().prop_map(|v| v.to_string()),
        2 => select(ODD_NUMBERS).prop_map(String::from),
        1 => "[0-9]{1,400}",
        1 => any::<String>().prop_map(|s| format!("\"{s}\"")),
        1 => Just(r#""\ud800""#.to_string()),
        1 => (1usize..120, any::<bool>()).prop_map(|(n, obj)| deep(n, obj)),
    ]
}

pub fn deep(n: usize, object: bool) -> String {
    if object {
        format!("{}1{}", r#"{"data":"#.repeat(n), "}".repeat(n))
    } else {
        format!("{}{}", "[".repeat(n), "]".repeat(n))
    }
}

/// An object with the routes' field names and any fragment as values.
pub fn object_text() -> impl Strategy<Value = String> {
    vec((field(), fragment()), 0..6).prop_map(|kv| {
        let fields: Vec<String> = kv
            .into_iter()
            .map(|(k, v)| format!("{}:{v}", Value::from(k)))
            .collect();
        format!("{{{}}}", fields.join(","))
    })
}

pub fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => object_text().prop_map(String::into_bytes),
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => fragment().prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..300),
        1 => (object_text(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(t, at, b)| {
            let mut bytes = t.into_bytes();
            let i = at.index(bytes.len());
            bytes[i] = b;
            bytes
        }),
        1 => Just(Vec::new()),
    ]
}

/// Percent-encodes every byte outside the unreserved set.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Ids and tokens of things that exist in the app, so some requests get
/// past the checks.
#[derive(Clone)]
pub struct Known {
    pub ids: Vec<String>,
    pub tokens: Vec<String>,
}

pub fn id(known: &Known) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9_.:-]{1,24}",
        3 => select(known.ids.clone()),
        2 => select(ODD_IDS).prop_map(String::from),
        1 => (129usize..3000).prop_map(|n| "x".repeat(n)),
        1 => any::<String>().prop_map(|s| encode(&s)),
    ]
}

/// A path template with each `{name}` segment replaced by the next id.
pub fn fill(template: &str, ids: &[String]) -> String {
    let mut ids = ids.iter();
    template
        .split('/')
        .map(|seg| match seg.starts_with('{') {
            true => ids.next().map_or("", String::as_str),
            false => seg,
        })
        .collect::<Vec<_>>()
        .join("/")
}

pub fn method() -> impl Strategy<Value = String> {
    let known = select(&["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"][..]);
    prop_oneof![8 => known.prop_map(String::from), 1 => "[A-Z]{1,10}"]
}

/// A method and request target: mostly a served route (its own method,
/// sometimes another) with random ids and query, sometimes any path.
pub fn target(known: &Known) -> impl Strategy<Value = (String, String)> {
    let served: Vec<(String, String)> = rtc_broker::routes::served_routes()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path))
        .collect();
    let value = prop_oneof![id(known), "[0-9]{1,30}", select(known.tokens.clone())];
    let query = vec(
        (select(&["token", "since", "epoch", "x", ""][..]), value),
        0..4,
    );
    let other = proptest::option::weighted(0.25, method());
    let route = (select(served), other, vec(id(known), 2), query).prop_map(
        |((method, template), other, ids, query)| {
            let mut path = fill(&template, &ids);
            let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            (other.unwrap_or(method), path)
        },
    );
    // Any path of URI characters: a request target outside them is not
    // HTTP, and actix answers it 400 without a body before any route runs.
    prop_oneof![8 => route, 1 => (method(), "/[A-Za-z0-9._~!$&'()*+,;=:@/?%-]{0,80}")]
}

pub fn header(known: &Known) -> impl Strategy<Value = (String, String)> {
    let text = |n: usize| proptest::string::string_regex(&format!("[ -~]{{0,{n}}}")).unwrap();
    let bearer = select(known.tokens.clone()).prop_map(|t| format!("Bearer {t}"));
    let named = |name: &'static str, value: BoxedStrategy<String>| {
        value.prop_map(move |v| (name.to_string(), v))
    };
    prop_oneof![
        3 => named("content-type", select(CONTENT_TYPES).prop_map(String::from).boxed()),
        1 => named("content-type", text(40).boxed()),
        1 => named("authorization", prop_oneof![bearer, text(40)].boxed()),
        1 => named("x-api-key", text(40).boxed()),
        1 => named("x-request-id", text(80).boxed()),
        1 => named("origin", select(&["http://evil.example", "null", ""][..]).prop_map(String::from).boxed()),
        1 => named("range", text(30).boxed()),
        1 => named("if-range", text(30).boxed()),
        1 => named("content-encoding", select(&["gzip", "br", "identity", "x"][..]).prop_map(String::from).boxed()),
        1 => named("expect", Just("100-continue".to_string()).boxed()),
        1 => ("x-[a-z0-9-]{1,20}", text(60)),
    ]
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub websocket: bool,
    pub chunked: bool,
    pub body: Vec<u8>,
}

pub fn request(known: &Known) -> impl Strategy<Value = Request> {
    let parts = (
        target(known),
        vec(header(known), 0..6),
        0u8..8,
        0u8..8,
        body(),
    );
    parts.prop_map(
        |((method, target), headers, websocket, chunked, body)| Request {
            method,
            target,
            headers,
            websocket: websocket == 0,
            chunked: chunked == 0,
            body,
        },
    )
}

impl Request {
    pub fn bytes(&self) -> Vec<u8> {
        let mut headers = self.headers.clone();
        if self.websocket {
            for (name, value) in wire::WS_HANDSHAKE {
                headers.push((name.to_string(), value.to_string()));
            }
        }
        wire::request(
            &self.method,
            &self.target,
            &headers,
            &self.body,
            self.chunked,
        )
    }
}

#[derive(Debug, Clone)]
pub enum Frame {
    Text(String),
    Json(Value),
    Publish(Value),
    Ping,
    Stop,
    Binary(Vec<u8>),
    NotUtf8(Vec<u8>),
    Oversize { text: bool },
}

pub fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        2 => any::<String>().prop_map(Frame::Text),
        2 => json_value().prop_map(Frame::Json),
        2 => json_value().prop_map(Frame::Publish),
        1 => Just(Frame::Ping),
        1 => Just(Frame::Stop),
        2 => vec(any::<u8>(), 0..512).prop_map(Frame::Binary),
        // 0xFF never occurs in UTF-8.
        1 => vec(any::<u8>(), 0..64).prop_map(|mut b| { b.push(0xFF); Frame::NotUtf8(b) }),
        1 => any::<bool>().prop_map(|text| Frame::Oversize { text }),
    ]
}

impl Frame {
    pub fn message(&self) -> Message {
        match self {
            Frame::Text(s) => Message::text(s.clone()),
            Frame::Json(v) => Message::text(v.to_string()),
            Frame::Publish(v) => Message::text(json!({"type": "publish", "data": v}).to_string()),
            Frame::Ping => Message::text(r#"{"type":"ping"}"#),
            Frame::Stop => Message::text(r#"{"event":"stop"}"#),
            Frame::Binary(b) => Message::binary(b.clone()),
            Frame::NotUtf8(b) => {
                Message::Frame(RawFrame::message(b.clone(), OpCode::Data(Data::Text), true))
            }
            Frame::Oversize { text: true } => Message::text("x".repeat(FRAME_LIMIT + 1)),
            Frame::Oversize { text: false } => Message::binary(vec![7u8; FRAME_LIMIT + 1]),
        }
    }
}
