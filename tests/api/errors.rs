//! Every bad input gets its contract error code as JSON; none is a 500 and
//! none stores anything.

use serde_json::{json, Value};

use crate::helpers::{read, spawn_app, Backend};

const JSON: Option<&str> = Some("application/json");

struct Case {
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(
    method: &'static str,
    path: &str,
    ct: Option<&'static str>,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        method,
        path: path.to_string(),
        content_type: ct,
        body: body.into(),
        status,
        code,
    }
}

fn token_body(v: Value) -> Case {
    case("POST", "/api/voice/token", JSON, v.to_string(), 400, "")
}

fn cases() -> Vec<Case> {
    let long_id = "x".repeat(129);
    let mut c = vec![
        case("POST", "/api/voice/token", JSON, "{", 400, "invalid_json"),
        case(
            "POST",
            "/api/voice/token",
            JSON,
            "{\"session_id\": \"s\",}",
            400,
            "invalid_json",
        ),
        case("POST", "/api/voice/token", JSON, "", 400, "invalid_json"),
        case(
            "POST",
            "/api/voice/token",
            None,
            r#"{"session_id":"s"}"#,
            415,
            "unsupported_media_type",
        ),
        case(
            "POST",
            "/api/voice/token",
            Some("text/plain"),
            r#"{"session_id":"s"}"#,
            415,
            "unsupported_media_type",
        ),
        case(
            "POST",
            "/api/voice/token",
            JSON,
            "[]",
            400,
            "invalid_request",
        ),
        case(
            "POST",
            "/api/voice/token",
            JSON,
            "\"s1\"",
            400,
            "invalid_request",
        ),
        case(
            "POST",
            "/api/voice/token",
            JSON,
            "{}",
            400,
            "missing_session_id",
        ),
        case(
            "POST",
            "/api/voice/token",
            JSON,
            r#"{"session_id":null}"#,
            400,
            "missing_session_id",
        ),
        case(
            "POST",
            "/api/voice/token",
            JSON,
            r#"{"session_id":5}"#,
            400,
            "invalid_request",
        ),
        case(
            "POST",
            "/api/voice/token",
            JSON,
            r#"{"session_id":"s","identity":7}"#,
            400,
            "invalid_request",
        ),
        case(
            "POST",
            "/api/voice/token",
            JSON,
            r#"{"session_id":"s","identity":""}"#,
            400,
            "invalid_request",
        ),
        case(
            "POST",
            "/api/voice/token",
            JSON,
            r#"{"session_id":"s","grants":{"room_join":"yes"}}"#,
            400,
            "invalid_request",
        ),
        case(
            "POST",
            "/api/voice/token",
            JSON,
            r#"{"session_id":"s","grants":{"admin":true}}"#,
            400,
            "invalid_request",
        ),
        case(
            "POST",
            "/api/voice/token",
            JSON,
            r#"{"session_id":"s","grants":[]}"#,
            400,
            "invalid_request",
        ),
        case(
            "POST",
            "/api/voice/token",
            JSON,
            format!("{}{}", "[".repeat(100), "]".repeat(100)),
            400,
            "invalid_json",
        ),
        case(
            "POST",
            "/api/voice/token",
            JSON,
            vec![b' '; 70 * 1024],
            413,
            "payload_too_large",
        ),
        case(
            "POST",
            "/api/voice/token",
            JSON,
            format!(
                r#"{{"session_id":"s","identity":"{}"}}"#,
                "a".repeat(2 * 1024 * 1024)
            ),
            413,
            "payload_too_large",
        ),
        case("GET", "/api/voice/token/a%20b", None, "", 400, "invalid_id"),
        case("GET", "/api/voice/token/a..b", None, "", 400, "invalid_id"),
        case("GET", "/api/voice/token/a%2Fb", None, "", 400, "invalid_id"),
        case(
            "GET",
            &format!("/api/voice/token/{long_id}"),
            None,
            "",
            400,
            "invalid_id",
        ),
        case(
            "GET",
            "/api/voice/token/%C3%A9",
            None,
            "",
            400,
            "invalid_id",
        ),
        case(
            "DELETE",
            "/api/voice/token/a%20b",
            None,
            "",
            400,
            "invalid_id",
        ),
        case(
            "POST",
            "/api/tokens/verify",
            JSON,
            "{}",
            400,
            "missing_token",
        ),
        case(
            "POST",
            "/api/tokens/verify",
            JSON,
            r#"{"token":""}"#,
            400,
            "missing_token",
        ),
        case(
            "POST",
            "/api/tokens/verify",
            JSON,
            r#"{"token":5}"#,
            400,
            "invalid_request",
        ),
        case(
            "POST",
            "/api/tokens/verify",
            JSON,
            r#"{"token":"a.b.c"}"#,
            401,
            "invalid_token",
        ),
        case(
            "POST",
            "/api/tokens/verify",
            None,
            r#"{"token":"a.b.c"}"#,
            415,
            "unsupported_media_type",
        ),
        case(
            "POST",
            "/api/sessions",
            JSON,
            r#"{"session_id":"a/b"}"#,
            400,
            "invalid_id",
        ),
        case(
            "POST",
            "/api/sessions",
            JSON,
            r#"{"session_id":""}"#,
            400,
            "invalid_id",
        ),
        case(
            "POST",
            "/api/sessions",
            JSON,
            r#"{"session_id":7}"#,
            400,
            "invalid_request",
        ),
        case(
            "POST",
            "/api/sessions",
            JSON,
            r#"{"metadata":[1]}"#,
            400,
            "invalid_request",
        ),
        case(
            "POST",
            "/api/sessions",
            JSON,
            r#"{"metadata":"x"}"#,
            400,
            "invalid_request",
        ),
        case("POST", "/api/sessions", JSON, "{", 400, "invalid_json"),
        case(
            "POST",
            "/api/sessions",
            Some("application/x-www-form-urlencoded"),
            "a=b",
            415,
            "unsupported_media_type",
        ),
        case(
            "PATCH",
            "/api/sessions/x",
            JSON,
            "{}",
            400,
            "invalid_request",
        ),
        case(
            "PATCH",
            "/api/sessions/x",
            JSON,
            r#"{"metadata":5}"#,
            400,
            "invalid_request",
        ),
        case(
            "PATCH",
            "/api/sessions/a%20b",
            JSON,
            r#"{"metadata":{}}"#,
            400,
            "invalid_id",
        ),
        case(
            "POST",
            "/api/sessions/x/members",
            JSON,
            "{}",
            400,
            "invalid_request",
        ),
        case(
            "POST",
            "/api/sessions/x/members",
            JSON,
            r#"{"member_id":"a b"}"#,
            400,
            "invalid_id",
        ),
        case(
            "POST",
            "/api/sessions/x/members",
            JSON,
            r#"{"member_id":"a","display_name":5}"#,
            400,
            "invalid_request",
        ),
        case(
            "POST",
            "/api/sessions/x/members",
            JSON,
            format!(
                r#"{{"member_id":"a","display_name":"{}"}}"#,
                "n".repeat(300)
            ),
            400,
            "invalid_request",
        ),
        case(
            "POST",
            "/api/sessions/x/members",
            JSON,
            r#"{"member_id":"a","role":"line\nbreak"}"#,
            400,
            "invalid_request",
        ),
        case(
            "DELETE",
            "/api/sessions/x/members/a..b",
            None,
            "",
            400,
            "invalid_id",
        ),
        case(
            "POST",
            "/api/sessions/a%20b/end",
            None,
            "",
            400,
            "invalid_id",
        ),
        case("GET", "/api/nothing-here", None, "", 404, "not_found"),
        // `/` is the console (tests/console): another method is JSON 405.
        case("POST", "/", None, "", 405, "method_not_allowed"),
        case("GET", "/console/nothing-here", None, "", 404, "not_found"),
        case("GET", "/api/voice/token/a/b", None, "", 404, "not_found"),
        case(
            "PUT",
            "/api/voice/token",
            JSON,
            "{}",
            405,
            "method_not_allowed",
        ),
        case(
            "GET",
            "/api/voice/token",
            None,
            "",
            405,
            "method_not_allowed",
        ),
        case("GET", "/api/sessions", None, "", 405, "method_not_allowed"),
        case("DELETE", "/api/health", None, "", 405, "method_not_allowed"),
        case("POST", "/health/live", None, "", 405, "method_not_allowed"),
    ];
    for (v, code) in [
        (json!({"session_id": "a/b"}), "invalid_id"),
        (json!({"session_id": ".."}), "invalid_id"),
        (json!({"session_id": "."}), "invalid_id"),
        (json!({"session_id": "a b"}), "invalid_id"),
        (json!({"session_id": long_id}), "invalid_id"),
        (json!({"session_id": "ünïcödé"}), "invalid_id"),
        (json!({"session_id": "s", "room": "r/1"}), "invalid_id"),
        (json!({"session_id": "s", "ttl_seconds": 0}), "invalid_ttl"),
        (json!({"session_id": "s", "ttl_seconds": -5}), "invalid_ttl"),
        (
            json!({"session_id": "s", "ttl_seconds": 3601}),
            "invalid_ttl",
        ),
        (
            json!({"session_id": "s", "ttl_seconds": 1.5}),
            "invalid_ttl",
        ),
        (
            json!({"session_id": "s", "ttl_seconds": "60"}),
            "invalid_ttl",
        ),
        (
            json!({"session_id": "s", "ttl_seconds": 1e300}),
            "invalid_ttl",
        ),
    ] {
        let mut t = token_body(v);
        t.code = code;
        c.push(t);
    }
    for (ttl, code) in [
        (json!(0), "invalid_ttl"),
        (json!(86401), "invalid_ttl"),
        (json!(-1), "invalid_ttl"),
        (json!("1"), "invalid_ttl"),
    ] {
        c.push(case(
            "POST",
            "/api/sessions",
            JSON,
            json!({"ttl_seconds": ttl}).to_string(),
            400,
            code,
        ));
    }
    c
}

async fn bad_input_gets_contract_errors_and_stores_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = app.stored_entries().await;
    let mut failures = Vec::new();
    for c in cases() {
        let method = reqwest::Method::from_bytes(c.method.as_bytes()).unwrap();
        let mut req = app
            .client
            .request(method, app.url(&c.path))
            .body(c.body.clone());
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        let res = match req.send().await {
            Ok(res) => res,
            Err(e) => {
                failures.push(format!("{} {}: connection error {e}", c.method, c.path));
                continue;
            }
        };
        let (status, body) = read(res).await;
        if status != c.status || body["error"] != c.code {
            failures.push(format!(
                "{} {} (body {:.60}): expected {} {}, got {status} {body}",
                c.method,
                c.path,
                String::from_utf8_lossy(&c.body),
                c.status,
                c.code
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        app.stored_entries().await,
        before,
        "a refused request stored something"
    );
}

#[tokio::test]
async fn oversized_body_gets_413_json_over_a_fresh_connection_too() {
    // A raw socket: the client must read the 413 JSON, not a reset.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(Backend::Memory).await;
    let addr = app.address.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = vec![b'x'; 1024 * 1024];
    let head = format!(
        "POST /api/sessions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains(r#""error":"payload_too_large""#), "{text}");
}

#[tokio::test]
async fn dot_dot_paths_sent_verbatim_are_invalid_ids() {
    // HTTP clients resolve `..` before sending; a raw socket sends it as is.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(Backend::Memory).await;
    let addr = app.address.trim_start_matches("http://").to_string();
    for path in [
        "/api/voice/token/..",
        "/api/voice/token/%2E%2E",
        "/api/sessions/%2e%2e",
        "/api/sessions/../members",
    ] {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8_lossy(&response);
        let ok = text.starts_with("HTTP/1.1 400") && text.contains(r#""error":"invalid_id""#)
            || text.starts_with("HTTP/1.1 405") && text.contains("method_not_allowed");
        assert!(ok, "{path}: {text}");
    }
}

crate::on_every_backend!(bad_input_gets_contract_errors_and_stores_nothing,);

/// Mutated and random bodies (seeded, so a failure reproduces) on every
/// endpoint that reads one: never a 500, never a non-JSON error, and the
/// broker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_bodies_never_cause_a_500() {
    use rand::{Rng, SeedableRng};
    let app = spawn_app(Backend::Memory).await;
    app.post_json("/api/sessions", &serde_json::json!({"session_id": "fz"}))
        .await;
    let seeds: [(&str, &str, &str); 5] = [
        (
            "POST",
            "/api/voice/token",
            r#"{"session_id":"s1","identity":"alice","room":"r1","ttl_seconds":60,"grants":{"can_publish":false}}"#,
        ),
        (
            "POST",
            "/api/tokens/verify",
            r#"{"token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"}"#,
        ),
        (
            "POST",
            "/api/sessions",
            r#"{"session_id":"x1","ttl_seconds":30,"metadata":{"a":[1,2,{"b":null}]}}"#,
        ),
        (
            "PATCH",
            "/api/sessions/fz",
            r#"{"metadata":{"k":"v","n":null}}"#,
        ),
        (
            "POST",
            "/api/sessions/fz/members",
            r#"{"member_id":"m1","display_name":"M","role":"host"}"#,
        ),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut failures = Vec::new();
    for round in 0..300 {
        for (method, path, seed) in seeds {
            let mut body = seed.as_bytes().to_vec();
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..=body.len());
                match rng.random_range(0..4) {
                    0 if at < body.len() => body[at] = rng.random(),
                    1 if at < body.len() => {
                        body.remove(at);
                    }
                    2 => body.insert(at, b"{}[]\":,\\0-9e.nul"[rng.random_range(0..16)]),
                    _ => body.truncate(at),
                }
            }
            let content_type = if round % 10 == 0 {
                "text/plain"
            } else {
                "application/json"
            };
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let res = app
                .client
                .request(method, app.url(path))
                .header("content-type", content_type)
                .body(body.clone())
                .send()
                .await
                .expect("broker answers");
            let (status, json) = read(res).await;
            if status >= 500 || (status >= 400 && !json["error"].is_string()) {
                failures.push(format!(
                    "{path} {:?} -> {status} {json}",
                    String::from_utf8_lossy(&body)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} bad answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(app.get("/health/live").await.0, 200);
}
