//! Resume with `?since=<id>&epoch=<epoch>`: exactly the missed messages,
//! then live ones; `recovered` tells the truth.

use serde_json::{json, Value};

use crate::client::{join, join_with, Client};
use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp};

fn room_name() -> String {
    format!("resume-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

async fn messages(client: &mut Client, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(client.next_of("message").await);
    }
    out
}

async fn publish(app: &TestApp, room: &str, k: u64) {
    let (status, body) = app
        .post_json(
            &format!("/api/rooms/{room}/publish"),
            &json!({"data": {"k": k}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

/// A client that saw messages 0..3 on one instance, disconnected while 3..8
/// were published, and reconnects through the other instance gets exactly
/// 3..8, in order, then live ones, with `recovered: true`.
async fn resume_replays_exactly_what_was_missed(backend: Backend) {
    let a = spawn_app(backend).await;
    let b = match backend {
        Backend::Memory => None,
        _ => Some(a.sibling().await),
    };
    let b = b.as_ref().unwrap_or(&a);
    let room = room_name();
    let mut watcher = join(b, &room, "watcher").await;
    let mut alice = join(&a, &room, "alice").await;
    for k in 0..3 {
        publish(&a, &room, k).await;
    }
    let seen = messages(&mut alice, 3).await;
    let last = seen[2]["id"].as_u64().unwrap();
    let epoch = alice.welcome["epoch"].as_str().unwrap().to_string();
    alice.close().await;
    for k in 3..8 {
        publish(b, &room, k).await;
    }
    // The watcher has them all: they are published, not just queued.
    assert_eq!(messages(&mut watcher, 8).await.len(), 8);

    let mut back = join_with(b, &room, "alice", &format!("since={last}&epoch={epoch}")).await;
    assert_eq!(back.welcome["recovered"], true, "{}", back.welcome);
    let replayed = messages(&mut back, 5).await;
    let ks: Vec<u64> = replayed
        .iter()
        .map(|m| m["data"]["k"].as_u64().unwrap())
        .collect();
    assert_eq!(ks, [3, 4, 5, 6, 7]);
    let ids: Vec<u64> = replayed.iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (last + 1..=last + 5).collect::<Vec<_>>());
    publish(&a, &room, 8).await;
    let live = back.next_of("message").await;
    assert_eq!(
        (live["data"]["k"].as_u64(), live["id"].as_u64()),
        (Some(8), Some(last + 6))
    );
    back.quiet(std::time::Duration::from_millis(300)).await;

    // Nothing missed: recovered, nothing replayed.
    let now = last + 6;
    let mut again = join_with(&a, &room, "carol", &format!("since={now}&epoch={epoch}")).await;
    assert_eq!(again.welcome["recovered"], true);
    again.quiet(std::time::Duration::from_millis(300)).await;
    // Another epoch: not recovered, nothing replayed.
    let mut stale = join_with(&a, &room, "dave", "since=1&epoch=other").await;
    assert_eq!(stale.welcome["recovered"], false);
    stale.quiet(std::time::Duration::from_millis(300)).await;
}

/// History holds 3 messages: a client that missed 6 is told it did not
/// recover, and gets what history still has.
async fn trimmed_history_is_not_recovered(backend: Backend) {
    let app = spawn_app_with(backend, &[("BROKER__ROOMS__HISTORY_SIZE", "3")]).await;
    let room = room_name();
    let mut alice = join(&app, &room, "alice").await;
    publish(&app, &room, 0).await;
    let first = alice.next_of("message").await;
    let epoch = alice.welcome["epoch"].as_str().unwrap().to_string();
    alice.close().await;
    for k in 1..7 {
        publish(&app, &room, k).await;
    }
    let since = first["id"].as_u64().unwrap();
    let mut back = join_with(
        &app,
        &room,
        "alice",
        &format!("since={since}&epoch={epoch}"),
    )
    .await;
    assert_eq!(back.welcome["recovered"], false, "{}", back.welcome);
    let ks: Vec<u64> = messages(&mut back, 3)
        .await
        .iter()
        .map(|m| m["data"]["k"].as_u64().unwrap())
        .collect();
    assert_eq!(ks, [4, 5, 6]);
}

crate::on_every_backend!(
    resume_replays_exactly_what_was_missed,
    trimmed_history_is_not_recovered,
);
