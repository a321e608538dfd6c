//! Every refusal of SPEC section 7 with its status and code, and nothing
//! stored by a refused request.

use serde_json::{json, Value};

use crate::client::{rec_app, stored_chunks, RecApp, API_KEY};
use crate::helpers::{self, Backend};

fn code(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("<none>")
}

/// Everything under the app's storage folders, for "nothing touched".
fn tree(app: &RecApp) -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            out.push(entry.path().display().to_string());
            if entry.path().is_dir() {
                walk(&entry.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(app.dirs.path(), &mut out);
    out.sort();
    out
}

async fn raw(app: &RecApp, method: &str, path: &str, bearer: Option<&str>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app.app.client.request(method, app.app.url(path));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    helpers::read(req.body(vec![1u8, 2, 3]).send().await.unwrap()).await
}

/// A request written by hand on a socket: HTTP clients normalise `..`
/// and `%2e%2e` segments away, attackers do not.
async fn by_hand(app: &RecApp, method: &str, path: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = app.app.address.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {API_KEY}\r\n\
         Content-Length: 3\r\nConnection: close\r\n\r\nabc"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_is_refused_and_touches_nothing() {
    let app = rec_app(Backend::Memory, &[]).await;
    let before = tree(&app);
    for bad in [
        "..",
        "..%2F..%2Fetc",
        "%2e%2e%2f%2e%2e%2fetc",
        "%2e%2e",
        "%2Fetc%2Fpasswd",
        "a%00b",
        "..%5C..%5Cwindows",
        "a%5Cb",
        "a..b",
        "with%20space",
    ] {
        for path in [
            format!("/api/recordings/{bad}/chunks"),
            format!("/api/recordings/{bad}/stop"),
            format!("/api/recordings/{bad}/status"),
        ] {
            let method = if path.ends_with("status") {
                "GET"
            } else {
                "POST"
            };
            let (status, body) = by_hand(&app, method, &path).await;
            assert_eq!((status, code(&body)), (400, "invalid_id"), "{path}: {body}");
        }
        let (status, body) = by_hand(&app, "GET", &format!("/recordings/download/{bad}")).await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_id"),
            "download {bad}: {body}"
        );
    }
    assert_eq!(
        tree(&app),
        before,
        "a refused request leaves storage as it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_refusals_have_their_codes() {
    let app = rec_app(
        Backend::Memory,
        &[("BROKER__RECORDINGS__MAX_CHUNK_BYTES", "1000")],
    )
    .await;
    let started = app.start().await;
    let record = started["record_id"].as_str().unwrap().to_string();

    let (status, body) = app.chunk_as(&record, API_KEY, Vec::new()).await;
    assert_eq!((status, code(&body)), (400, "empty_chunk"), "{body}");
    let (status, body) = app.chunk_as(&record, API_KEY, vec![7u8; 1001]).await;
    assert_eq!((status, code(&body)), (413, "chunk_too_large"), "{body}");
    // Without a content-length (streamed), the limit holds too.
    let stream = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![1u8; 400]))),
    );
    let res = app
        .app
        .client
        .post(app.app.url(&format!("/api/recordings/{record}/chunks")))
        .bearer_auth(API_KEY)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let (status, body) = helpers::read(res).await;
    assert_eq!((status, code(&body)), (413, "chunk_too_large"), "{body}");
    assert!(stored_chunks(&app.chunk_dir(&record)).is_empty());
    assert_eq!(
        app.chunk(&record, vec![1u8; 1000]).await,
        0,
        "refusals take no index"
    );

    let (status, _) = app.stop(&record).await;
    assert_eq!(status, 202);
    let (status, body) = app.chunk_as(&record, API_KEY, vec![1]).await;
    assert_eq!(
        (status, code(&body)),
        (409, "recording_not_active"),
        "{body}"
    );

    for (method, path) in [
        ("POST", "/api/recordings/nope/chunks"),
        ("POST", "/api/recordings/nope/stop"),
        ("GET", "/api/recordings/nope/status"),
        ("GET", "/recordings/download/nope"),
    ] {
        let (status, body) = raw(&app, method, path, Some(API_KEY)).await;
        assert_eq!(
            (status, code(&body)),
            (404, "recording_not_found"),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked() {
    let app = rec_app(Backend::Memory, &[]).await;
    let first = app.start().await;
    let second = app.start().await;
    let record = first["record_id"].as_str().unwrap();
    let other_token = second["upload_token"].as_str().unwrap();

    // Start is a management call.
    let res = app
        .app
        .client
        .post(app.app.url("/api/recordings"))
        .send()
        .await
        .unwrap();
    let (status, body) = helpers::read(res).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));

    let chunks = format!("/api/recordings/{record}/chunks");
    let (status, body) = raw(&app, "POST", &chunks, None).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");
    let (status, body) = raw(&app, "POST", &chunks, Some("wrong-key")).await;
    assert_eq!((status, code(&body)), (401, "invalid_token"), "{body}");
    let (status, body) = raw(&app, "POST", &chunks, Some(other_token)).await;
    assert_eq!(
        (status, code(&body)),
        (403, "recording_forbidden"),
        "{body}"
    );
    for path in ["stop", "status"] {
        let method = if path == "stop" { "POST" } else { "GET" };
        let url = format!("/api/recordings/{record}/{path}");
        let (status, _) = raw(&app, method, &url, Some(other_token)).await;
        assert_eq!(status, 403, "{path} with another recording's token");
    }

    // An RTC token is not an upload token, and the other way round.
    let (status, rtc) = helpers::read(
        app.app
            .client
            .post(app.app.url("/api/voice/token"))
            .header("x-api-key", API_KEY)
            .json(&json!({"session_id": record}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{rtc}");
    let rtc = rtc["rtc_token"].as_str().unwrap();
    let (status, body) = raw(&app, "POST", &chunks, Some(rtc)).await;
    assert_eq!((status, code(&body)), (401, "invalid_token"), "{body}");
    let upload = first["upload_token"].as_str().unwrap();
    let (status, body) = app
        .app
        .post_json("/api/tokens/verify", &json!({"token": upload}))
        .await;
    assert_eq!((status, code(&body)), (401, "invalid_token"), "{body}");
    assert!(stored_chunks(&app.chunk_dir(record)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_ffmpeg_makes_recordings_unavailable_and_the_rest_runs() {
    let app = rec_app(
        Backend::Memory,
        &[("BROKER__RECORDINGS__FFMPEG_PATH", "/nonexistent/ffmpeg")],
    )
    .await;
    let res = app
        .app
        .client
        .post(app.app.url("/api/recordings"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    let (status, body) = helpers::read(res).await;
    assert_eq!((status, code(&body)), (503, "merge_unavailable"), "{body}");
    let (status, body) = raw(&app, "POST", "/api/recordings/r1/chunks", Some(API_KEY)).await;
    assert_eq!((status, code(&body)), (503, "merge_unavailable"), "{body}");
    let (_, health) = app.app.get("/api/health").await;
    assert!(
        health["warnings"]
            .as_array()
            .unwrap()
            .contains(&json!("merge_unavailable")),
        "{health}"
    );
    assert_eq!(health["recordings"]["merge_available"], false);
    let (status, _) = helpers::read(
        app.app
            .client
            .post(app.app.url("/api/voice/token"))
            .header("x-api-key", API_KEY)
            .json(&json!({"session_id": "s1"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "tokens still work");
}

/// `too_many_chunks` (409) past `recordings.max_chunks`; nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_past_the_limit_are_refused() {
    let app = rec_app(Backend::Memory, &[("BROKER__RECORDINGS__MAX_CHUNKS", "2")]).await;
    let record = app.start().await["record_id"].as_str().unwrap().to_string();
    assert_eq!(app.chunk(&record, vec![1]).await, 0);
    assert_eq!(app.chunk(&record, vec![2]).await, 1);
    let (status, body) = app.chunk_as(&record, API_KEY, vec![3]).await;
    assert_eq!((status, code(&body)), (409, "too_many_chunks"), "{body}");
    assert_eq!(stored_chunks(&app.chunk_dir(&record)).len(), 2);
}

/// A chunk body that does not arrive within `upload_timeout_seconds` is
/// answered 408 `upload_timeout`, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_chunk_body_times_out() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = rec_app(
        Backend::Memory,
        &[("BROKER__RECORDINGS__UPLOAD_TIMEOUT_SECONDS", "1")],
    )
    .await;
    let record = app.start().await["record_id"].as_str().unwrap().to_string();
    let addr = app.app.address.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/recordings/{record}/chunks HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {API_KEY}\r\n\
         Content-Length: 1000\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&[7u8; 10]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut answer))
        .await
        .expect("an answer within the timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("upload_timeout"), "{answer}");
    assert!(stored_chunks(&app.chunk_dir(&record)).is_empty());
}

/// The upload token lives `recordings.upload_token_ttl_seconds`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_token_lives_its_configured_lifetime() {
    let app = rec_app(Backend::Memory, &[]).await;
    let token = app.start().await["upload_token"]
        .as_str()
        .unwrap()
        .to_string();
    let claims = helpers::jwt_part(&token, 1);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        14_400
    );
    assert_eq!(claims["use"], "upload");
    let app = rec_app(
        Backend::Memory,
        &[("BROKER__RECORDINGS__UPLOAD_TOKEN_TTL_SECONDS", "60")],
    )
    .await;
    let token = app.start().await["upload_token"]
        .as_str()
        .unwrap()
        .to_string();
    let claims = helpers::jwt_part(&token, 1);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
}
