//! The recording WebSocket: chunks as binary frames, stop as a text frame,
//! the merge's events, whichever instance runs the merge.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::{read, rec_app, stored_chunks, RecApp};
use crate::helpers::Backend;
use crate::media;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const FRAME_WAIT: Duration = Duration::from_secs(60);

/// Opens the recording's socket; Err(status) when refused before the upgrade.
async fn open(app: &RecApp, record: &str, query: &str) -> Result<Ws, u16> {
    let url = format!(
        "{}/ws/recordings/{record}{query}",
        app.app.address.replacen("http", "ws", 1)
    );
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("connect: {e}"),
    }
}

/// A fresh recording and its socket, opened with the upload token.
async fn recording_socket(app: &RecApp) -> (String, Ws) {
    let started = app.start().await;
    let record = started["record_id"].as_str().unwrap().to_string();
    let token = started["upload_token"].as_str().unwrap();
    let ws = open(app, &record, &format!("?token={token}"))
        .await
        .expect("open");
    (record, ws)
}

/// The next text frame as JSON (pings are answered by the library).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(FRAME_WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
            Message::Close(close) => panic!("closed: {close:?}"),
            _ => continue,
        }
    }
}

/// Reads events until `recordingReady` or `recordingError`; returns the
/// progress values seen and the final event.
async fn until_done(ws: &mut Ws) -> (Vec<u64>, Value) {
    let mut progress = Vec::new();
    loop {
        let event = next_json(ws).await;
        match event["event"].as_str() {
            Some("mergeProgress") => progress.push(event["progress"].as_u64().unwrap()),
            Some("recordingReady" | "recordingError") => return (progress, event),
            _ => panic!("unexpected frame {event}"),
        }
    }
}

async fn record_over_the_socket(backend: Backend) {
    let app = rec_app(backend, &[]).await;
    let media_dir = tempfile::tempdir().unwrap();
    let source = media::continuous_webm(media_dir.path(), 4.0);
    let expected = media::probe_duration(&source);
    let pieces = media::cut_at_offsets(&source, 5);
    let (record, mut ws) = recording_socket(&app).await;
    let record = record.as_str();
    for (i, piece) in pieces.iter().enumerate() {
        ws.send(Message::Binary(piece.clone().into()))
            .await
            .unwrap();
        let saved = next_json(&mut ws).await;
        assert_eq!(saved["event"], "chunkSaved", "{saved}");
        assert_eq!(saved["record_id"], record);
        assert_eq!(saved["index"], i as u64);
    }
    ws.send(Message::Text(r#"{"event":"stop"}"#.into()))
        .await
        .unwrap();
    let stopped = next_json(&mut ws).await;
    assert_eq!(
        (&stopped["event"], &stopped["state"]),
        (&"stopped".into(), &"merging".into())
    );
    let (progress, done) = until_done(&mut ws).await;
    assert_eq!(done["event"], "recordingReady", "{done}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert!(progress.iter().all(|p| *p <= 100));
    let url = done["download_url"].as_str().unwrap();
    let (status, _, bytes) = app.download(url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(done["size_bytes"], bytes.len() as u64);
    let file = media_dir.path().join("out.webm");
    std::fs::write(&file, &bytes).unwrap();
    let duration = media::probe_duration(&file);
    assert!(
        (duration - expected).abs() <= 0.1,
        "{duration} vs {expected}"
    );
    assert!((done["duration_s"].as_f64().unwrap() - duration).abs() < 0.01);
    media::decodes_cleanly(&file).unwrap();
}

crate::backend_tests!([memory => Memory, single => Single] record_over_the_socket);

/// The merge runs on the instance that took the stop; the events reach the
/// socket on the other one through Redis.
async fn events_cross_instances(backend: Backend) {
    let first = rec_app(backend, &[]).await;
    let second = first.sibling().await;
    let media_dir = tempfile::tempdir().unwrap();
    let files = media::independent_webms(media_dir.path(), 2, 1.0);
    let started = first.start().await;
    let record = started["record_id"].as_str().unwrap();
    let token = started["upload_token"].as_str().unwrap();
    let mut ws = open(&second, record, &format!("?token={token}"))
        .await
        .expect("open");
    for file in &files {
        first.chunk(record, read(file)).await;
    }
    // Let the subscription settle before the events it must carry.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = first.stop(record).await;
    assert_eq!(status, 202);
    let (_, done) = until_done(&mut ws).await;
    assert_eq!(done["event"], "recordingReady", "{done}");
    assert_eq!(done["record_id"], record);
    let (_, status) = second.status(record).await;
    assert_eq!(status["download_url"], done["download_url"]);
}

crate::on_every_redis_mode!(events_cross_instances);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_refusals_and_bad_frames() {
    let app = rec_app(
        Backend::Memory,
        &[("BROKER__RECORDINGS__MAX_CHUNK_BYTES", "2000")],
    )
    .await;
    let first = app.start().await;
    let other = app.start().await;
    let record = first["record_id"].as_str().unwrap();
    let token = first["upload_token"].as_str().unwrap();
    assert_eq!(
        open(&app, record, "").await.err(),
        Some(401),
        "no credential"
    );
    let other_token = other["upload_token"].as_str().unwrap();
    assert_eq!(
        open(&app, record, &format!("?token={other_token}"))
            .await
            .err(),
        Some(403)
    );
    assert_eq!(
        open(&app, "unknown", &format!("?token={token}"))
            .await
            .err(),
        Some(403),
        "the token names another recording"
    );
    assert_eq!(open(&app, "a%2F..", "").await.err(), Some(400));

    let mut ws = open(&app, record, &format!("?token={token}"))
        .await
        .expect("open");
    ws.send(Message::Text("not json".into())).await.unwrap();
    let error = next_json(&mut ws).await;
    assert_eq!(
        (&error["event"], &error["error"]),
        (&"error".into(), &"invalid_frame".into())
    );
    ws.send(Message::Binary(Vec::new().into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["error"], "empty_chunk");
    ws.send(Message::Binary(vec![1u8; 10].into()))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut ws).await["index"],
        0,
        "the socket is still served"
    );
    ws.send(Message::Binary(vec![1u8; 2001].into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["error"], "chunk_too_large");
    let close = tokio::time::timeout(FRAME_WAIT, ws.next()).await.unwrap();
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected close 1009, got {other:?}"),
    }
    assert_eq!(stored_chunks(&app.chunk_dir(record)).len(), 1);
}

/// A stop with no chunks: the socket hears `recordingError` `no_chunks`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_merge_reaches_the_socket() {
    let app = rec_app(Backend::Memory, &[]).await;
    let (record, mut ws) = recording_socket(&app).await;
    let record = record.as_str();
    ws.send(Message::Text(r#"{"event":"stop"}"#.into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["event"], "stopped");
    let (_, done) = until_done(&mut ws).await;
    assert_eq!(done["event"], "recordingError", "{done}");
    assert_eq!(
        (&done["record_id"], &done["error"]),
        (&record.into(), &"no_chunks".into())
    );
}

/// Revoking the upload token (`POST /api/tokens/revoke`) closes the
/// recording sockets opened with it on every instance (4003) within a
/// second; a socket opened with the API key is not affected.
async fn a_revoked_upload_token_closes_its_sockets(backend: Backend) {
    let app = rec_app(backend, &[]).await;
    let other = match backend {
        Backend::Memory => None,
        _ => Some(app.sibling().await),
    };
    let started = app.start().await;
    let record = started["record_id"].as_str().unwrap().to_string();
    let token = started["upload_token"].as_str().unwrap().to_string();
    let there = other.as_ref().unwrap_or(&app);
    let mut ws = open(there, &record, &format!("?token={token}"))
        .await
        .expect("open");
    let t = std::time::Instant::now();
    let res = app
        .app
        .client
        .post(app.app.url("/api/tokens/revoke"))
        .header("x-api-key", crate::client::API_KEY)
        .json(&serde_json::json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let close = tokio::time::timeout(FRAME_WAIT, ws.next()).await.unwrap();
    let took = t.elapsed();
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::from(4003)),
        other => panic!("expected close 4003, got {other:?}"),
    }
    assert!(took <= Duration::from_secs(1), "closed after {took:?}");
    // The revoked token opens nothing any more.
    assert_eq!(
        open(there, &record, &format!("?token={token}")).await.err(),
        Some(401)
    );
}

crate::backend_tests!(
    [memory => Memory, single => Single]
    a_revoked_upload_token_closes_its_sockets,
);
