//! Live authority over open sockets (SPEC section 6): a token's expiry
//! closes its socket (4001) unless a `refresh` moved it; revoking a token
//! closes every socket opened or refreshed with it (4003) and a kick every
//! socket of the member in the room (4004), on every instance within a
//! second; a ban refuses the member's joins (403 `member_banned`) until it
//! ends.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::client::{issue, open, upgrade, Client, Upgrade};
use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp};

/// What the contract allows between a revocation or kick and the close.
const WITHIN: Duration = Duration::from_secs(1);

fn room_name() -> String {
    format!("auth-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Two instances on the backend's storage; the same one twice in memory.
async fn pair(backend: Backend, extra: &[(&str, &str)]) -> (TestApp, Option<TestApp>) {
    let a = spawn_app_with(backend, extra).await;
    let b = match backend {
        Backend::Memory => None,
        _ => Some(a.sibling().await),
    };
    (a, b)
}

/// Waits for the server's close; the code and how long it took.
async fn closed_within(client: &mut Client, since: Instant) -> (Option<CloseCode>, Duration) {
    let code = client.closed().await;
    (code, since.elapsed())
}

async fn expiry_closes_the_socket_with_4001(backend: Backend) {
    let app = spawn_app_with(backend, &[("BROKER__TOKENS__LEEWAY_SECONDS", "0")]).await;
    let room = room_name();
    let issued = issue(&app, "alice", &room, 2, None).await;
    let mut c = open(&app, &room, &issued.token).await;
    assert_eq!(c.welcome["expires_at"], issued.expires_at, "{}", c.welcome);
    assert_eq!(c.closed().await, Some(CloseCode::from(4001)));
    assert!(
        unix_now() >= issued.expires_at,
        "closed before the token's exp {}",
        issued.expires_at
    );
}

async fn a_refresh_moves_the_expiry(backend: Backend) {
    let app = spawn_app_with(backend, &[("BROKER__TOKENS__LEEWAY_SECONDS", "0")]).await;
    let room = room_name();
    let short = issue(&app, "alice", &room, 2, None).await;
    let mut c = open(&app, &room, &short.token).await;
    let long = issue(&app, "alice", &room, 600, None).await;
    c.send_json(json!({"type": "refresh", "token": long.token}))
        .await;
    let refreshed = c.next_of("refreshed").await;
    assert_eq!(
        refreshed,
        json!({"type": "refreshed", "expires_at": long.expires_at})
    );
    // Past the first token's expiry, the socket is still served.
    c.quiet(Duration::from_secs(3)).await;
    c.publish(json!("still here")).await;
    assert_eq!(c.next_of("message").await["data"], "still here");
}

async fn bad_refreshes_are_refused_and_the_old_expiry_stands(backend: Backend) {
    let app = spawn_app_with(backend, &[("BROKER__TOKENS__LEEWAY_SECONDS", "0")]).await;
    let room = room_name();
    let own = issue(&app, "alice", &room, 8, None).await;
    let mut c = open(&app, &room, &own.token).await;
    let bob = issue(&app, "bob", &room, 600, None).await;
    let elsewhere = issue(&app, "alice", &room_name(), 600, None).await;
    let no_join = issue(&app, "alice", &room, 600, Some(json!({"room_join": false}))).await;
    let revoked = issue(&app, "alice", &room, 600, None).await;
    let (status, _) = app
        .delete(&format!("/api/voice/token/{}", revoked.session_id))
        .await;
    assert_eq!(status, 204);
    let expired = issue(&app, "alice", &room, 1, None).await;
    while unix_now() <= expired.expires_at {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (what, token) in [
        ("another identity", bob.token.as_str()),
        ("another room", elsewhere.token.as_str()),
        ("no join grant", no_join.token.as_str()),
        ("revoked", revoked.token.as_str()),
        ("expired", expired.token.as_str()),
        ("not a JWT", "not.a.jwt"),
    ] {
        c.send_json(json!({"type": "refresh", "token": token}))
            .await;
        let error = c.next_of("error").await;
        assert_eq!(error["error"], "invalid_token", "{what}: {error}");
    }
    c.send_json(json!({"type": "refresh"})).await;
    assert_eq!(c.next_of("error").await["error"], "invalid_frame");
    // None of them moved the expiry: the socket closes with its own token.
    assert_eq!(c.closed().await, Some(CloseCode::from(4001)));
    assert!(unix_now() >= own.expires_at);
}

async fn a_revocation_closes_the_tokens_sockets_on_every_instance(backend: Backend) {
    let (a, b) = pair(backend, &[]).await;
    let b = b.as_ref().unwrap_or(&a);
    let room = room_name();
    let alice = issue(&a, "alice", &room, 600, None).await;
    let mut on_b = open(b, &room, &alice.token).await;
    let mut on_a = open(&a, &room, &alice.token).await;
    let mut bob = open(b, &room, &issue(&a, "bob", &room, 600, None).await.token).await;

    let started = Instant::now();
    let (status, _) = a
        .delete(&format!("/api/voice/token/{}", alice.session_id))
        .await;
    assert_eq!(status, 204);
    let (code, took) = closed_within(&mut on_b, started).await;
    assert_eq!(code, Some(CloseCode::from(4003)));
    assert!(
        took <= WITHIN,
        "closed on the other instance after {took:?}"
    );
    assert_eq!(on_a.closed().await, Some(CloseCode::from(4003)));
    println!("{backend:?}: a revoked token's socket on the other instance closed after {took:?}");

    // A socket refreshed with a token revoked later (POST /api/tokens/revoke).
    let first = issue(&a, "carol", &room, 600, None).await;
    let mut carol = open(b, &room, &first.token).await;
    let second = issue(&a, "carol", &room, 600, None).await;
    carol
        .send_json(json!({"type": "refresh", "token": second.token}))
        .await;
    carol.next_of("refreshed").await;
    let started = Instant::now();
    let (status, body) = a
        .post_json("/api/tokens/revoke", &json!({"token": second.token}))
        .await;
    assert_eq!(status, 204, "{body}");
    let (code, took) = closed_within(&mut carol, started).await;
    assert_eq!(code, Some(CloseCode::from(4003)));
    assert!(took <= WITHIN, "refreshed socket closed after {took:?}");

    // Everyone else is still served.
    bob.publish(json!("bob here")).await;
    assert_eq!(bob.next_of("message").await["data"], "bob here");
}

/// `rtc_room_socket_closes_total{reason}` of an instance.
async fn closes(app: &TestApp, reason: &str) -> f64 {
    let series = format!("rtc_room_socket_closes_total{{reason=\"{reason}\"}} ");
    app.metrics().await.value(&series).unwrap_or(0.0)
}

async fn refused(app: &TestApp, room: &str, token: &str) -> (u16, Value) {
    match upgrade(app, room, &format!("token={token}"), &[]).await {
        Upgrade::Refused(status, body) => (status, body),
        Upgrade::Open(_) => panic!("join of {room} was accepted"),
    }
}

async fn a_kick_closes_the_members_sockets_everywhere_and_a_ban_holds(backend: Backend) {
    let (a, b) = pair(backend, &[]).await;
    let b = b.as_ref().unwrap_or(&a);
    let room = room_name();
    let mut alice_a = open(&a, &room, &issue(&a, "alice", &room, 600, None).await.token).await;
    let mut alice_b = open(b, &room, &issue(&a, "alice", &room, 600, None).await.token).await;
    let mut bob = open(&a, &room, &issue(&a, "bob", &room, 600, None).await.token).await;

    let started = Instant::now();
    let (status, body) = a
        .delete(&format!("/api/rooms/{room}/members/alice?ban_seconds=3"))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["room"], room.as_str());
    assert_eq!(body["member_id"], "alice");
    let until = body["banned_until"].as_u64().expect("banned_until");
    assert!((unix_now() + 2..=unix_now() + 4).contains(&until), "{body}");
    let (code, took) = closed_within(&mut alice_b, started).await;
    assert_eq!(code, Some(CloseCode::from(4004)));
    assert!(
        took <= WITHIN,
        "kicked on the other instance after {took:?}"
    );
    println!("{backend:?}: a kicked member's socket on the other instance closed after {took:?}");
    assert_eq!(alice_a.closed().await, Some(CloseCode::from(4004)));
    assert!(
        closes(&a, "kicked").await >= 1.0,
        "the kick is not counted in /metrics"
    );
    let left = bob.next_of("presence").await;
    assert_eq!(left["event"], "leave", "{left}");
    assert_eq!(left["member_id"], "alice", "{left}");

    // Banned on every instance until the ban ends, then welcome again.
    let fresh = issue(&a, "alice", &room, 600, None).await;
    for app in [&a, b] {
        let (status, body) = refused(app, &room, &fresh.token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("member_banned"))
        );
    }
    while unix_now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    open(b, &room, &fresh.token).await.close().await;

    // Without a ban the member may come straight back.
    let (status, body) = a.delete(&format!("/api/rooms/{room}/members/bob")).await;
    assert_eq!(status, 202, "{body}");
    assert!(body.get("banned_until").is_none(), "{body}");
    assert_eq!(bob.closed().await, Some(CloseCode::from(4004)));
    open(&a, &room, &issue(&a, "bob", &room, 600, None).await.token)
        .await
        .close()
        .await;
}

async fn kicks_with_bad_input_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    for query in [
        "ban_seconds=86401",
        "ban_seconds=x",
        "ban_seconds=-1",
        "ban=5",
    ] {
        let (status, body) = app
            .delete(&format!("/api/rooms/r1/members/alice?{query}"))
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{query}: {body}"
        );
    }
    let (status, body) = app.delete("/api/rooms/r1/members/a..b").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_id")));
    let keyed = spawn_app_with(backend, &[("API_KEYS", "k1")]).await;
    let (status, body) = keyed.delete("/api/rooms/r1/members/alice").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
}

crate::backend_tests!(
    [memory => Memory, single => Single]
    expiry_closes_the_socket_with_4001,
    a_refresh_moves_the_expiry,
    bad_refreshes_are_refused_and_the_old_expiry_stands,
    kicks_with_bad_input_are_refused,
);

crate::on_every_backend!(
    a_revocation_closes_the_tokens_sockets_on_every_instance,
    a_kick_closes_the_members_sockets_everywhere_and_a_ban_holds,
);
