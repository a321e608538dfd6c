//! Every management call (SPEC section 9), on an app with API keys: no
//! credential, a wrong `Authorization: Bearer` and a wrong `X-API-Key` are
//! refused with 401 and a contract error, and nothing is stored; the right
//! key, in either header, passes.

use serde_json::{json, Value};

use crate::helpers::{read, spawn_app_with, Backend, TestApp};
use crate::wire;

const KEY_ONE: &str = "mgmt-key-one";
const KEY_TWO: &str = "mgmt-key-two";

enum Body {
    None,
    /// JSON text, with the path's placeholders.
    Json(&'static str),
    Bytes(&'static [u8]),
}

/// One management route. Placeholders: `{s}` a session with member
/// `{member}` and a live token `{tok}`, `{new}` an id nothing uses,
/// `{room}` a room nobody published in, `{rec}` a recording that is
/// recording.
struct Route {
    method: &'static str,
    path: &'static str,
    body: Body,
    /// A call (method, path, JSON body) whose answer a refused call leaves
    /// as it was.
    observe: (&'static str, &'static str, Option<&'static str>),
    /// Status with the right key, and a check of that answer.
    ok: u16,
    ok_body: fn(&Value) -> bool,
    /// The code for a wrong Bearer credential: the recording calls that
    /// also take an upload token read it as one (`invalid_token`, see
    /// tests/recordings/errors.rs); the others say `unauthorized`.
    wrong_bearer: &'static str,
    websocket: bool,
}

fn any(_: &Value) -> bool {
    true
}

/// The first message published in the room: no refused publish got in.
fn first_message(body: &Value) -> bool {
    body["id"] == 1
}

/// A kick's answer names the member.
fn kicked(body: &Value) -> bool {
    body["member_id"].is_string() && body["room"].is_string()
}

const RECORDING_TOKEN_OR_KEY: &str = "invalid_token";
const KEY_ONLY: &str = "unauthorized";

/// Every handler with a `Management` extractor or `authorize()` in
/// src/routes/*.rs.
const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/api/voice/token",
        body: Body::Json(r#"{"session_id":"{new}"}"#),
        observe: ("GET", "/api/voice/token/{new}", None),
        ok: 200,
        ok_body: any,
        wrong_bearer: KEY_ONLY,
        websocket: false,
    },
    Route {
        method: "DELETE",
        path: "/api/voice/token/{s}",
        body: Body::None,
        observe: ("GET", "/api/voice/token/{s}", None),
        ok: 204,
        ok_body: any,
        wrong_bearer: KEY_ONLY,
        websocket: false,
    },
    Route {
        method: "POST",
        path: "/api/tokens/revoke",
        body: Body::Json(r#"{"token":"{tok}"}"#),
        observe: ("POST", "/api/tokens/verify", Some(r#"{"token":"{tok}"}"#)),
        ok: 204,
        ok_body: any,
        wrong_bearer: KEY_ONLY,
        websocket: false,
    },
    Route {
        method: "POST",
        path: "/api/sessions",
        body: Body::Json(r#"{"session_id":"{new}","metadata":{"k":"v"}}"#),
        observe: ("GET", "/api/sessions/{new}", None),
        ok: 201,
        ok_body: any,
        wrong_bearer: KEY_ONLY,
        websocket: false,
    },
    Route {
        method: "PATCH",
        path: "/api/sessions/{s}",
        body: Body::Json(r#"{"metadata":{"k":"changed"}}"#),
        observe: ("GET", "/api/sessions/{s}", None),
        ok: 200,
        ok_body: any,
        wrong_bearer: KEY_ONLY,
        websocket: false,
    },
    Route {
        method: "POST",
        path: "/api/sessions/{s}/members",
        body: Body::Json(r#"{"member_id":"bob","role":"guest"}"#),
        observe: ("GET", "/api/sessions/{s}", None),
        ok: 201,
        ok_body: any,
        wrong_bearer: KEY_ONLY,
        websocket: false,
    },
    Route {
        method: "DELETE",
        path: "/api/sessions/{s}/members/{member}",
        body: Body::None,
        observe: ("GET", "/api/sessions/{s}", None),
        ok: 200,
        ok_body: any,
        wrong_bearer: KEY_ONLY,
        websocket: false,
    },
    Route {
        method: "POST",
        path: "/api/sessions/{s}/end",
        body: Body::None,
        observe: ("GET", "/api/sessions/{s}", None),
        ok: 200,
        ok_body: any,
        wrong_bearer: KEY_ONLY,
        websocket: false,
    },
    Route {
        method: "POST",
        path: "/api/rooms/{room}/publish",
        body: Body::Json(r#"{"data":{"n":1},"from":"ops"}"#),
        observe: ("GET", "/api/rooms/{room}/members", None),
        ok: 202,
        ok_body: first_message,
        wrong_bearer: KEY_ONLY,
        websocket: false,
    },
    Route {
        method: "DELETE",
        path: "/api/rooms/{room}/members/{member}",
        body: Body::None,
        observe: ("GET", "/api/rooms/{room}/members", None),
        ok: 202,
        ok_body: kicked,
        wrong_bearer: KEY_ONLY,
        websocket: false,
    },
    Route {
        method: "POST",
        path: "/api/recordings",
        body: Body::Json(r#"{"session_id":"{new}"}"#),
        observe: ("GET", "/api/storage/status", None),
        ok: 201,
        ok_body: any,
        wrong_bearer: KEY_ONLY,
        websocket: false,
    },
    Route {
        method: "POST",
        path: "/api/recordings/{rec}/chunks",
        body: Body::Bytes(b"not really webm, but bytes"),
        observe: ("GET", "/api/recordings/{rec}/status", None),
        ok: 201,
        ok_body: any,
        wrong_bearer: RECORDING_TOKEN_OR_KEY,
        websocket: false,
    },
    Route {
        method: "POST",
        path: "/api/recordings/{rec}/stop",
        body: Body::None,
        observe: ("GET", "/api/recordings/{rec}/status", None),
        ok: 202,
        ok_body: any,
        wrong_bearer: RECORDING_TOKEN_OR_KEY,
        websocket: false,
    },
    Route {
        method: "GET",
        path: "/api/recordings/{rec}/status",
        body: Body::None,
        observe: ("GET", "/api/recordings/{rec}/status", None),
        ok: 200,
        ok_body: any,
        wrong_bearer: RECORDING_TOKEN_OR_KEY,
        websocket: false,
    },
    Route {
        method: "GET",
        path: "/ws/recordings/{rec}",
        body: Body::None,
        observe: ("GET", "/api/recordings/{rec}/status", None),
        ok: 101,
        ok_body: any,
        wrong_bearer: RECORDING_TOKEN_OR_KEY,
        websocket: true,
    },
];

/// The ids a route's placeholders stand for, fresh for each call.
struct Fixture {
    session: String,
    token: String,
    new: String,
    room: String,
    record: String,
}

const GOOD: Option<(&str, &str)> = Some(("x-api-key", KEY_ONE));
const MEMBER: &str = "alice";

impl Fixture {
    async fn make(app: &TestApp, n: usize) -> Self {
        let session = format!("mgmt-s{n}");
        let mut token = Value::Null;
        for (path, body) in [
            ("/api/sessions".to_string(), json!({"session_id": session})),
            (
                format!("/api/sessions/{session}/members"),
                json!({"member_id": MEMBER}),
            ),
            (
                "/api/voice/token".to_string(),
                json!({"session_id": session}),
            ),
        ] {
            let (status, body) = send(app, "POST", &path, GOOD, Some(body)).await;
            assert!(status < 300, "fixture {path}: {status} {body}");
            token = body["rtc_token"].clone();
        }
        let (status, started) = send(
            app,
            "POST",
            "/api/recordings",
            GOOD,
            Some(json!({"session_id": session})),
        )
        .await;
        assert_eq!(status, 201, "fixture recording: {started}");
        Self {
            record: started["record_id"]
                .as_str()
                .expect("record_id")
                .to_string(),
            token: token.as_str().expect("rtc_token").to_string(),
            new: format!("mgmt-new{n}"),
            room: format!("mgmt-room{n}"),
            session,
        }
    }

    fn fill(&self, template: &str) -> String {
        template
            .replace("{s}", &self.session)
            .replace("{member}", MEMBER)
            .replace("{tok}", &self.token)
            .replace("{new}", &self.new)
            .replace("{room}", &self.room)
            .replace("{rec}", &self.record)
    }
}

/// A request with an optional credential header.
fn request(
    app: &TestApp,
    method: &str,
    path: &str,
    credential: Option<(&str, &str)>,
) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let req = app.client.request(method, app.url(path));
    match credential {
        Some((name, value)) => req.header(name, value),
        None => req,
    }
}

/// A JSON call with an optional credential header.
async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    credential: Option<(&str, &str)>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = request(app, method, path, credential);
    if let Some(body) = body {
        req = req.json(&body);
    }
    read(req.send().await.expect("request")).await
}

/// The route's call on fixture `f` with `credential`.
async fn call(
    app: &TestApp,
    route: &Route,
    f: &Fixture,
    credential: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut req = request(app, route.method, &f.fill(route.path), credential);
    if route.websocket {
        req = req.header("connection", "upgrade");
        for (name, value) in wire::WS_HANDSHAKE {
            req = req.header(name, value);
        }
    }
    req = match route.body {
        Body::None => req,
        Body::Json(text) => req
            .header("content-type", "application/json")
            .body(f.fill(text)),
        Body::Bytes(bytes) => req.body(bytes),
    };
    read(req.send().await.expect("request")).await
}

/// What a refused call must leave unchanged: the route's observed call
/// and the number of stored entries (memory) or keys (Redis).
async fn snapshot(app: &TestApp, route: &Route, f: &Fixture) -> ((u16, Value), usize) {
    let (method, path, body) = route.observe;
    let body = body.map(|b| serde_json::from_str(&f.fill(b)).expect("observe body"));
    (
        send(app, method, &f.fill(path), GOOD, body).await,
        app.stored_entries().await,
    )
}

async fn every_management_route_needs_the_key(backend: Backend) {
    let dirs = tempfile::tempdir().expect("tempdir");
    let (chunks, out) = (dirs.path().join("chunks"), dirs.path().join("out"));
    let keys = format!("{KEY_ONE},{KEY_TWO}");
    let app = spawn_app_with(
        backend,
        &[
            ("API_KEYS", keys.as_str()),
            ("TEMP_DIR", chunks.to_str().unwrap()),
            ("STORAGE_LOCAL_PATH", out.to_str().unwrap()),
        ],
    )
    .await;
    let wrong_bearer = Some(("authorization", "Bearer wrong-key"));
    let refusals = [
        ("no credential", None),
        ("a wrong Bearer key", wrong_bearer),
        ("a wrong X-API-Key", Some(("x-api-key", "wrong-key"))),
    ];
    let bearer = format!("Bearer {KEY_ONE}");
    let right = [("authorization", bearer.as_str()), ("x-api-key", KEY_TWO)];
    let mut n = 0;
    for route in ROUTES {
        for (name, value) in right {
            n += 1;
            let f = Fixture::make(&app, n).await;
            let what = format!("{} {}", route.method, f.fill(route.path));
            let before = snapshot(&app, route, &f).await;
            for (refusal, credential) in refusals {
                let (status, body) = call(&app, route, &f, credential).await;
                let code = if credential == wrong_bearer {
                    route.wrong_bearer
                } else {
                    "unauthorized"
                };
                assert_eq!(
                    (status, body["error"].as_str()),
                    (401, Some(code)),
                    "{what} with {refusal}: {body}"
                );
            }
            let after = snapshot(&app, route, &f).await;
            assert_eq!(before, after, "{what}: a refused call changed something");
            let (status, body) = call(&app, route, &f, Some((name, value))).await;
            assert_eq!(status, route.ok, "{what} with the right {name}: {body}");
            assert!(
                (route.ok_body)(&body),
                "{what} with the right {name}: {body}"
            );
        }
    }
}

crate::backend_tests!([memory => Memory, single => Single] every_management_route_needs_the_key);

/// The routes that take no API key (reads, verification, the sockets that
/// take a token, operations, the console's files).
const OPEN: &[(&str, &str)] = &[
    ("GET", "/api/health"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/api/storage/status"),
    ("GET", "/metrics"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/voice/token/{}"),
    ("POST", "/api/tokens/verify"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/api/sessions/{}"),
    ("GET", "/ws/rooms/{}"),
    ("GET", "/api/rooms/{}/members"),
    ("GET", "/recordings/download/{}"),
    ("HEAD", "/recordings/download/{}"),
    ("GET", "/"),
    ("GET", "/console/console.js"),
    ("GET", "/console/room.js"),
    ("GET", "/console/recording.js"),
    ("GET", "/console/clock.js"),
    ("GET", "/console/common.js"),
    ("GET", "/console/console.css"),
    ("GET", "/console/favicon.svg"),
];

/// A path template with every `{name}` as `{}`.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { "{}" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// A route added to the broker is tested above or listed as open here.
#[test]
fn every_served_route_is_in_the_table_or_known_to_be_open() {
    use std::collections::BTreeSet;
    let served: BTreeSet<(String, String)> = rtc_broker::routes::served_routes()
        .into_iter()
        .map(|(method, path)| (method.to_string(), shape(&path)))
        .collect();
    let tested = ROUTES
        .iter()
        .map(|r| (r.method, r.path))
        .chain(OPEN.iter().copied());
    let listed: BTreeSet<(String, String)> =
        tested.map(|(m, p)| (m.to_string(), shape(p))).collect();
    assert_eq!(
        served, listed,
        "classify each new route as management or open"
    );
}
