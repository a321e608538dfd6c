//! Section 6 limits: bad frames, frame size, rate, slow readers, idle
//! connections. Whatever one client does, everyone else keeps being served.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{join, Event};
use crate::helpers::{spawn_app_with, Backend};

async fn bad_frames_get_error_frames_and_the_socket_stays_open(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    let mut c = join(&app, "frames", "alice").await;
    for bad in [
        Message::text("not json"),
        Message::text(r#"{"type":"dance"}"#),
        Message::text(r#"{"type":"publish"}"#),
        Message::text("[1,2]"),
        Message::binary(vec![1u8, 2, 3]),
    ] {
        c.send(bad).await;
        let error = c.next_of("error").await;
        assert_eq!(error["error"], "invalid_frame", "{error}");
        assert!(error["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    c.send_json(json!({"type": "ping"})).await;
    assert_eq!(c.next_of("pong").await["type"], "pong");
    c.publish(json!("still here")).await;
    assert_eq!(c.next_of("message").await["data"], "still here");
}

async fn oversized_frames_close_with_1009(backend: Backend) {
    let app = spawn_app_with(backend, &[("BROKER__ROOMS__MAX_FRAME_BYTES", "1024")]).await;
    let mut other = join(&app, "big", "bob").await;
    let mut c = join(&app, "big", "alice").await;
    c.publish(json!("x".repeat(2000))).await;
    assert_eq!(c.closed().await, Some(CloseCode::Size));
    // A frame just under the limit is fine for the others.
    other.publish(json!("y".repeat(900))).await;
    assert_eq!(other.next_of("message").await["from"], "bob");
}

async fn a_flood_is_refused_then_closed_with_1008(backend: Backend) {
    let app = spawn_app_with(backend, &[("BROKER__ROOMS__MESSAGES_PER_SECOND", "5")]).await;
    let mut other = join(&app, "flood", "bob").await;
    let mut c = join(&app, "flood", "alice").await;
    for _ in 0..5 {
        c.send_json(json!({"type": "ping"})).await;
    }
    // The sixth frame in a second is over the rate; a refused publish names its ref.
    c.send_json(json!({"type": "publish", "data": 1, "ref": "over"}))
        .await;
    let error = c.next_of("error").await;
    assert_eq!(error["error"], "rate_limited", "{error}");
    assert_eq!(error["ref"], "over", "{error}");
    for _ in 0..10 {
        c.send_json(json!({"type": "ping"})).await;
    }
    assert_eq!(c.closed().await, Some(CloseCode::Policy));
    other.publish(json!("fine")).await;
    assert_eq!(other.next_of("message").await["data"], "fine");
}

/// A client that never reads is closed (1008) once its queue is over
/// `max_queue` and it made no progress for two seconds; a reading member of
/// the same room gets every message, in order, meanwhile.
///
/// On loopback the kernel holds up to `tcp_rmem` (32 MiB here) + `tcp_wmem`
/// (4 MiB) of a connection's unread data before the broker's own queue
/// fills, so the stuck client is sent more than that: 1,000 frames of 60 KB.
async fn a_client_that_never_reads_is_dropped(backend: Backend) {
    let app = spawn_app_with(backend, &[("BROKER__ROOMS__MAX_QUEUE", "4")]).await;
    let mut stuck = join(&app, "slow", "stuck").await;
    let mut reader = join(&app, "slow", "reader").await;
    let blob = "z".repeat(60_000);
    const N: usize = 1_000;
    let read_all = async {
        for k in 0..N {
            let m = reader.next_of("message").await;
            assert_eq!(m["data"]["k"], k);
        }
    };
    let publish_all = async {
        for k in 0..N {
            let (status, body) = app
                .post_json(
                    "/api/rooms/slow/publish",
                    &json!({"data": {"k": k, "blob": blob}}),
                )
                .await;
            assert_eq!(status, 202, "{body}");
        }
    };
    tokio::join!(read_all, publish_all);
    // Now read the stuck one: what was buffered, then the end.
    let mut got = 0;
    loop {
        match stuck.next_event(Duration::from_secs(10)).await {
            Event::Frame(_) => got += 1,
            Event::Closed(_) => break,
            Event::Silent => panic!("the client that never read is still open ({got} frames)"),
        }
    }
    assert!(
        got < N,
        "it was sent everything ({got}), so it was never dropped"
    );
    let (_, health) = app.get("/api/health").await;
    assert_eq!(health["rooms"]["connections"], 1, "{health}");
}

/// Pings every second, closes after two silent seconds: a client that
/// answers pings (reads) stays, one that does not is closed.
async fn idle_connections_are_closed(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("BROKER__ROOMS__PING_INTERVAL_SECONDS", "1"),
            ("BROKER__ROOMS__IDLE_TIMEOUT_SECONDS", "2"),
        ],
    )
    .await;
    let mut lively = join(&app, "idle-a", "lively").await;
    let mut silent = join(&app, "idle-b", "silent").await;
    // Reading answers the pings.
    lively.quiet(Duration::from_secs(4)).await;
    // The silent one was closed meanwhile, as idle.
    assert_eq!(silent.closed().await, Some(CloseCode::Normal));
    lively.send_json(json!({"type": "ping"})).await;
    assert_eq!(lively.next_of("pong").await["type"], "pong");
}

crate::backend_tests!(
    [memory => Memory, single => Single]
    bad_frames_get_error_frames_and_the_socket_stays_open,
    oversized_frames_close_with_1009,
    a_flood_is_refused_then_closed_with_1008,
    a_client_that_never_reads_is_dropped,
    idle_connections_are_closed,
);
