//! Everything refused before the upgrade, with the right status and code.

use serde_json::json;

use crate::client::{token, upgrade, Upgrade};
use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp};

async fn refused(
    app: &TestApp,
    room: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    match upgrade(app, room, query, headers).await {
        Upgrade::Refused(status, body) => (status, body["error"].as_str().unwrap().to_string()),
        Upgrade::Open(_) => panic!("upgrade to {room}?{query} was accepted"),
    }
}

async fn opens(app: &TestApp, room: &str, query: &str, headers: &[(&str, &str)]) {
    match upgrade(app, room, query, headers).await {
        Upgrade::Open(client) => client.close().await,
        Upgrade::Refused(status, body) => panic!("refused {status} {body}"),
    }
}

async fn bad_tokens_are_refused_before_the_upgrade(backend: Backend) {
    let app = spawn_app_with(backend, &[("BROKER__TOKENS__LEEWAY_SECONDS", "0")]).await;
    let good = token(&app, "alice", "r1", None).await;

    assert_eq!(
        refused(&app, "r1", "", &[]).await,
        (401, "invalid_token".into())
    );
    assert_eq!(
        refused(&app, "r1", "token=", &[]).await,
        (401, "invalid_token".into())
    );
    assert_eq!(
        refused(&app, "r1", "token=not.a.jwt", &[]).await,
        (401, "invalid_token".into())
    );
    // Tampered: another signature.
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}x", parts[2]);
    parts[2] = &forged;
    let tampered = parts.join(".");
    assert_eq!(
        refused(&app, "r1", &format!("token={tampered}"), &[]).await,
        (401, "invalid_token".into())
    );
    // Another room's token; a token without the join grant.
    assert_eq!(
        refused(&app, "r2", &format!("token={good}"), &[]).await,
        (403, "room_forbidden".into())
    );
    let no_join = token(&app, "alice", "r1", Some(json!({"room_join": false}))).await;
    assert_eq!(
        refused(&app, "r1", &format!("token={no_join}"), &[]).await,
        (403, "room_forbidden".into())
    );
    // An invalid room id.
    assert_eq!(
        refused(&app, "bad..room", &format!("token={good}"), &[]).await,
        (400, "invalid_id".into())
    );
    // A bad resume position.
    assert_eq!(
        refused(&app, "r1", &format!("token={good}&since=x"), &[]).await,
        (400, "invalid_request".into())
    );

    // The good token works, in the query and in the header.
    opens(&app, "r1", &format!("token={good}"), &[]).await;
    let bearer = format!("Bearer {good}");
    opens(&app, "r1", "", &[("authorization", &bearer)]).await;

    // Revoked: its session's token deleted.
    let (status, issued) = app
        .post_json(
            "/api/voice/token",
            &json!({"session_id": "rev", "identity": "eve", "room": "r1"}),
        )
        .await;
    assert_eq!(status, 200);
    let revoked = issued["rtc_token"].as_str().unwrap().to_string();
    opens(&app, "r1", &format!("token={revoked}"), &[]).await;
    let (status, _) = app.delete("/api/voice/token/rev").await;
    assert_eq!(status, 204);
    assert_eq!(
        refused(&app, "r1", &format!("token={revoked}"), &[]).await,
        (401, "invalid_token".into())
    );

    // Expired.
    let (_, short) = app
        .post_json(
            "/api/voice/token",
            &json!({"session_id": "exp", "room": "r1", "ttl_seconds": 1}),
        )
        .await;
    let short = short["rtc_token"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        refused(&app, "r1", &format!("token={short}"), &[]).await,
        (401, "invalid_token".into())
    );
}

/// With an allow-list, an Origin outside it is refused; one inside it and
/// a client with no Origin at all (not a browser) are let in.
async fn origins_outside_the_list_are_refused(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("BROKER__CORS__ALLOWED_ORIGINS", "https://app.example.com")],
    )
    .await;
    let t = token(&app, "alice", "r1", None).await;
    let query = format!("token={t}");
    assert_eq!(
        refused(
            &app,
            "r1",
            &query,
            &[("origin", "https://evil.example.com")]
        )
        .await,
        (403, "origin_forbidden".into())
    );
    opens(&app, "r1", &query, &[("origin", "https://app.example.com")]).await;
    opens(&app, "r1", &query, &[]).await;
}

/// A room at its member limit refuses a new member (403 room_full) but not
/// another connection of a present one.
async fn full_rooms_refuse_new_members(backend: Backend) {
    let app = spawn_app_with(backend, &[("BROKER__ROOMS__MAX_MEMBERS", "1")]).await;
    let alice = token(&app, "alice", "small", None).await;
    let bob = token(&app, "bob", "small", None).await;
    let first = match upgrade(&app, "small", &format!("token={alice}"), &[]).await {
        Upgrade::Open(c) => *c,
        Upgrade::Refused(s, b) => panic!("{s} {b}"),
    };
    assert_eq!(
        refused(&app, "small", &format!("token={bob}"), &[]).await,
        (403, "room_full".into())
    );
    opens(&app, "small", &format!("token={alice}"), &[]).await;
    first.close().await;
}

/// A token without `can_publish_data` joins and reads but cannot publish.
async fn publishing_needs_the_grant(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = token(
        &app,
        "viewer",
        "r1",
        Some(json!({"can_publish_data": false})),
    )
    .await;
    let mut viewer = match upgrade(&app, "r1", &format!("token={t}"), &[]).await {
        Upgrade::Open(c) => *c,
        Upgrade::Refused(s, b) => panic!("{s} {b}"),
    };
    viewer.publish(json!("hello")).await;
    let error = viewer.next_of("error").await;
    assert_eq!(error["error"], "publish_forbidden", "{error}");
    // Management publishes still reach the viewer.
    let (status, _) = app
        .post_json("/api/rooms/r1/publish", &json!({"data": 1}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(viewer.next_of("message").await["data"], 1);
}

crate::backend_tests!(
    [memory => Memory, single => Single]
    bad_tokens_are_refused_before_the_upgrade,
    origins_outside_the_list_are_refused,
    full_rooms_refuse_new_members,
    publishing_needs_the_grant,
);

/// The back-end publish is a management call: refused without the API key
/// when keys are configured; bad bodies get the contract's codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_publish_needs_the_key_and_a_valid_body() {
    let app = spawn_app_with(Backend::Memory, &[("API_KEYS", "room-key")]).await;
    let url = app.url("/api/rooms/r1/publish");
    let post = |key: Option<&'static str>, body: serde_json::Value| {
        let mut req = app.client.post(url.clone()).json(&body);
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        req.send()
    };
    let code = |res: (u16, serde_json::Value)| (res.0, res.1["error"].as_str().map(str::to_string));
    let read = crate::helpers::read;
    assert_eq!(
        code(read(post(None, json!({"data": 1})).await.unwrap()).await),
        (401, Some("unauthorized".into()))
    );
    assert_eq!(
        code(read(post(Some("nope"), json!({"data": 1})).await.unwrap()).await),
        (401, Some("unauthorized".into()))
    );
    let (status, body) = read(post(Some("room-key"), json!({"data": 1})).await.unwrap()).await;
    assert_eq!((status, body["id"].as_u64()), (202, Some(1)), "{body}");
    for (bad, expected) in [
        (json!({}), "invalid_request"),
        (json!({"data": 1, "from": ""}), "invalid_request"),
        (json!({"data": 1, "from": 7}), "invalid_request"),
    ] {
        assert_eq!(
            code(read(post(Some("room-key"), bad.clone()).await.unwrap()).await),
            (400, Some(expected.into())),
            "{bad}"
        );
    }
    let bad_room = app
        .client
        .post(app.url("/api/rooms/a..b/publish"))
        .header("x-api-key", "room-key")
        .json(&json!({"data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(code(read(bad_room).await), (400, Some("invalid_id".into())));
}
