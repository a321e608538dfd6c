use std::time::Duration;

use serde_json::json;

use crate::helpers::{eventually, spawn_app, Backend};

async fn create_get_and_conflict(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, record) = app
        .post_json(
            "/api/sessions",
            &json!({"session_id": "room-1", "ttl_seconds": 600, "metadata": {"topic": "x"}}),
        )
        .await;
    assert_eq!(status, 201, "{record}");
    assert_eq!(record["session_id"], "room-1");
    assert_eq!(record["metadata"], json!({"topic": "x"}));
    assert_eq!(record["members"], json!([]));
    let created = record["created_at"].as_u64().unwrap();
    assert_eq!(record["updated_at"].as_u64(), Some(created));
    assert_eq!(record["expires_at"].as_u64(), Some(created + 600));

    let (status, fetched) = app.get("/api/sessions/room-1").await;
    assert_eq!(status, 200);
    assert_eq!(fetched, record);

    let (status, body) = app
        .post_json("/api/sessions", &json!({"session_id": "room-1"}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("session_exists"))
    );

    let (status, generated) = app.post_json("/api/sessions", &json!({})).await;
    assert_eq!(status, 201);
    let id = generated["session_id"].as_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "generated id is a UUID: {id}"
    );
    let ttl = generated["expires_at"].as_u64().unwrap() - generated["created_at"].as_u64().unwrap();
    assert_eq!(ttl, 3600, "default session TTL");
}

async fn patch_merges_shallowly(backend: Backend) {
    let app = spawn_app(backend).await;
    app.post_json(
        "/api/sessions",
        &json!({"session_id": "p1", "metadata": {"a": 1, "b": {"x": 1}, "c": 3}}),
    )
    .await;
    let (status, record) = app
        .patch_json(
            "/api/sessions/p1",
            &json!({"metadata": {"a": null, "b": {"y": 2}, "d": "new"}}),
        )
        .await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(
        record["metadata"],
        json!({"b": {"y": 2}, "c": 3, "d": "new"})
    );
    let (_, fetched) = app.get("/api/sessions/p1").await;
    assert_eq!(fetched["metadata"], record["metadata"]);
}

async fn members_join_and_leave(backend: Backend) {
    let app = spawn_app(backend).await;
    app.post_json("/api/sessions", &json!({"session_id": "m1"}))
        .await;
    let (status, record) = app
        .post_json(
            "/api/sessions/m1/members",
            &json!({"member_id": "alice", "display_name": "Alice", "role": "host"}),
        )
        .await;
    assert_eq!(status, 201, "{record}");
    let alice = &record["members"][0];
    assert_eq!(alice["member_id"], "alice");
    assert_eq!(alice["display_name"], "Alice");
    assert_eq!(alice["role"], "host");
    assert!(alice["joined_at"].as_u64().is_some());

    let (status, record) = app
        .post_json("/api/sessions/m1/members", &json!({"member_id": "bob"}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(record["members"].as_array().unwrap().len(), 2);

    let (status, body) = app
        .post_json("/api/sessions/m1/members", &json!({"member_id": "bob"}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("member_exists"))
    );

    let (status, record) = app.delete("/api/sessions/m1/members/alice").await;
    assert_eq!(status, 200);
    assert_eq!(record["members"][0]["member_id"], "bob");
    assert_eq!(record["members"].as_array().unwrap().len(), 1);

    let (status, body) = app.delete("/api/sessions/m1/members/alice").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("member_not_found"))
    );
}

async fn concurrent_member_adds_are_all_kept(backend: Backend) {
    let app = std::sync::Arc::new(spawn_app(backend).await);
    app.post_json("/api/sessions", &json!({"session_id": "busy"}))
        .await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let app = app.clone();
        tasks.spawn(async move {
            app.post_json(
                "/api/sessions/busy/members",
                &json!({"member_id": format!("u{i}")}),
            )
            .await
            .0
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 201);
    }
    let (_, record) = app.get("/api/sessions/busy").await;
    assert_eq!(record["members"].as_array().unwrap().len(), 50);
}

async fn unknown_session_is_404_on_every_call(backend: Backend) {
    let app = spawn_app(backend).await;
    let (s1, b1) = app.get("/api/sessions/ghost").await;
    let (s2, b2) = app
        .patch_json("/api/sessions/ghost", &json!({"metadata": {}}))
        .await;
    let (s3, b3) = app
        .post_json("/api/sessions/ghost/members", &json!({"member_id": "a"}))
        .await;
    let (s4, b4) = app.delete("/api/sessions/ghost/members/a").await;
    let (s5, b5) = app
        .send(reqwest::Method::POST, "/api/sessions/ghost/end", None)
        .await;
    for (status, body) in [(s1, b1), (s2, b2), (s3, b3), (s4, b4), (s5, b5)] {
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("session_not_found"))
        );
    }
}

async fn end_removes_record_and_token(backend: Backend) {
    let app = spawn_app(backend).await;
    app.post_json("/api/sessions", &json!({"session_id": "e1"}))
        .await;
    let token = app.issue("e1", 60).await["rtc_token"]
        .as_str()
        .unwrap()
        .to_string();
    // No body at all: calls that take no input accept an empty body.
    let (status, body) = app
        .send(reqwest::Method::POST, "/api/sessions/e1/end", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"summary": "ended"}));
    assert_eq!(app.get("/api/sessions/e1").await.0, 404);
    assert_eq!(app.get("/api/voice/token/e1").await.0, 412);
    let (status, _) = app
        .post_json("/api/tokens/verify", &json!({"token": token}))
        .await;
    assert_eq!(status, 401, "the ended session's token is revoked");
}

async fn session_expires_and_leaves_storage(backend: Backend) {
    let app = spawn_app(backend).await;
    let baseline = app.stored_entries().await;
    app.post_json(
        "/api/sessions",
        &json!({"session_id": "t1", "ttl_seconds": 2}),
    )
    .await;
    assert_eq!(app.get("/api/sessions/t1").await.0, 200);
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.get("/api/sessions/t1").await.0 == 404
        })
        .await,
        "session outlived its 2 s TTL"
    );
    for i in 0..200 {
        app.post_json(
            "/api/sessions",
            &json!({"session_id": format!("bulk{i}"), "ttl_seconds": 3}),
        )
        .await;
        app.issue(&format!("bulk{i}"), 3).await;
    }
    assert!(app.stored_entries().await > baseline, "entries are counted");
    // Nothing reads these keys again: only the sweeper can free them.
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.stored_entries().await <= baseline
        })
        .await,
        "expired sessions and tokens still stored"
    );
}

async fn every_write_slides_the_ttl(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, record) = app
        .post_json(
            "/api/sessions",
            &json!({"session_id": "slide", "ttl_seconds": 5}),
        )
        .await;
    let first_expiry = record["expires_at"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    // Written 2 s before the TTL runs out...
    let (status, record) = app
        .post_json("/api/sessions/slide/members", &json!({"member_id": "late"}))
        .await;
    assert_eq!(status, 201, "{record}");
    assert!(record["expires_at"].as_u64().unwrap() > first_expiry);
    // ...it lives on past the original expiry.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, record) = app.get("/api/sessions/slide").await;
    assert_eq!(status, 200, "session died at its original expiry");
    assert_eq!(record["members"][0]["member_id"], "late");
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.get("/api/sessions/slide").await.0 == 404
        })
        .await,
        "session never expired after the last write"
    );
}

#[tokio::test]
async fn a_full_session_refuses_more_members() {
    let app =
        crate::helpers::spawn_app_with(Backend::Memory, &[("BROKER__SESSIONS__MAX_MEMBERS", "2")])
            .await;
    app.post_json("/api/sessions", &json!({"session_id": "small"}))
        .await;
    for m in ["a", "b"] {
        let (status, _) = app
            .post_json("/api/sessions/small/members", &json!({"member_id": m}))
            .await;
        assert_eq!(status, 201);
    }
    let (status, body) = app
        .post_json("/api/sessions/small/members", &json!({"member_id": "c"}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("session_full"))
    );
    let (_, record) = app.get("/api/sessions/small").await;
    assert_eq!(record["members"].as_array().unwrap().len(), 2);
}

crate::on_every_backend!(
    create_get_and_conflict,
    patch_merges_shallowly,
    members_join_and_leave,
    concurrent_member_adds_are_all_kept,
    unknown_session_is_404_on_every_call,
    end_removes_record_and_token,
    session_expires_and_leaves_storage,
    every_write_slides_the_ttl,
);
