//! Revocations made before a Redis outage stay refused during it, on every
//! instance: by verify, by the room handshake and by upload-token checks
//! (SPEC sections 4 and 9; each instance keeps a local copy of the live
//! revocations, refreshed from Redis every `SYNC_EVERY`).

use std::time::Duration;

use serde_json::json;

use crate::harness::Single;
use crate::helpers::{
    eventually, handshake_status, jwt_part, read, spawn_app, spawn_app_on, wait_connected,
    wait_disconnected, Backend, TestApp,
};

async fn verify(app: &TestApp, token: &str) -> (u16, String) {
    let (status, body) = app
        .post_json("/api/tokens/verify", &json!({ "token": token }))
        .await;
    (status, body["detail"].as_str().unwrap_or("").to_string())
}

async fn upload_chunk(app: &TestApp, record: &str, token: &str) -> (u16, serde_json::Value) {
    let res = app
        .client
        .post(app.url(&format!("/api/recordings/{record}/chunks")))
        .bearer_auth(token)
        .header("content-type", "video/webm")
        .body(vec![0x1a, 0x45, 0xdf, 0xa3, 1, 2, 3])
        .send()
        .await
        .expect("request");
    read(res).await
}

/// Two instances on `redis` that notice it gone (or back) within ~0.5 s.
async fn two_instances_quick_to_notice(redis: &Single) -> (TestApp, TestApp) {
    let env = vec![("REDIS_URL".to_string(), redis.url())];
    let fast = [
        ("BROKER__REDIS__HEALTH_CHECK_INTERVAL_MS", "200"),
        // Generous: a slow command must not pass for an outage here.
        ("REDIS_COMMAND_TIMEOUT", "1000"),
        ("REDIS_CONNECT_TIMEOUT", "300"),
    ];
    let a = spawn_app_on(Backend::Single, env, &fast).await;
    let b = a.sibling().await;
    (a, b)
}

/// A fresh RTC token for `session`, issued by `app`.
async fn rtc_token(app: &TestApp, session: &str) -> String {
    app.issue(session, 300).await["rtc_token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn room_handshake(app: &TestApp, room: &str, token: &str) -> u16 {
    handshake_status(app, &format!("/ws/rooms/{room}?token={token}"), None).await
}

#[tokio::test]
async fn revoked_before_an_outage_stays_refused_during_it_on_every_instance() {
    let mut redis = Single::start();
    let (a, b) = two_instances_quick_to_notice(&redis).await;

    let revoked = rtc_token(&a, "gone").await;
    let kept = rtc_token(&a, "kept").await;
    let (status, started) = a.post_json("/api/recordings", &json!({})).await;
    assert_eq!(status, 201, "{started}");
    let record = started["record_id"].as_str().unwrap().to_string();
    let upload = started["upload_token"].as_str().unwrap().to_string();
    // Controls: all three are good before anything is revoked.
    assert_eq!(verify(&b, &revoked).await.0, 200);
    assert_eq!(room_handshake(&b, "gone", &revoked).await, 101);
    assert_eq!(upload_chunk(&b, &record, &upload).await.0, 201);

    assert_eq!(a.delete("/api/voice/token/gone").await.0, 204);
    let (status, body) = a
        .post_json("/api/tokens/revoke", &json!({ "token": upload }))
        .await;
    assert_eq!(status, 204, "{body}");
    // Once b holds both revocations in its copy, take Redis away.
    learns(&b, 2).await;
    redis.node.kill();
    for app in [&a, &b] {
        wait_disconnected(app).await;
        let (status, detail) = verify(app, &revoked).await;
        assert_eq!((status, detail.as_str()), (401, "token revoked"));
        assert_eq!(verify(app, &kept).await.0, 200, "only the revoked one");
        assert_eq!(room_handshake(app, "gone", &revoked).await, 401);
        let (status, body) = upload_chunk(app, &record, &upload).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token"))
        );
    }
}

/// A revocation made during an outage (so only in the local copy and the
/// journal) is pushed into the Redis set once Redis is back, so another
/// instance learns it: that instance refuses the token during the next
/// outage, when nothing but its own copy can answer. The marker key the
/// journal replays does not help there (the fallback memory never sees it).
#[tokio::test]
async fn revoked_during_an_outage_reaches_the_other_instances_after_it() {
    let mut redis = Single::start();
    let (a, b) = two_instances_quick_to_notice(&redis).await;
    let token = rtc_token(&a, "late").await;
    let jti = jwt_part(&token, 1)["jti"].as_str().unwrap().to_string();

    redis.node.kill();
    wait_disconnected(&a).await;
    let (status, body) = a
        .post_json("/api/tokens/revoke", &json!({ "token": token }))
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(verify(&a, &token).await, (401, "token revoked".into()));

    redis.node.restart();
    wait_connected(&a).await;
    wait_connected(&b).await;
    let set = format!("{}rtc:revocations", a.prefix);
    assert!(
        eventually(rtc_broker::tokens::SYNC_EVERY * 3, || async {
            !redis.node.cli(&["ZSCORE", &set, &jti]).trim().is_empty()
        })
        .await,
        "the outage's revocation never reached the set"
    );
    // Once b holds it (from the set or the channel), Redis goes again.
    learns(&b, 1).await;
    redis.node.kill();
    wait_disconnected(&b).await;
    assert_eq!(verify(&b, &token).await, (401, "token revoked".into()));
    let other = rtc_token(&b, "other").await;
    assert_eq!(verify(&b, &other).await.0, 200, "only the revoked one");
}

/// How many revocations the app's local copy holds (`/metrics`).
async fn known(app: &TestApp) -> u64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("rtc_revocations_known "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no rtc_revocations_known in {text}"))
}

/// Waits until `app`'s copy holds `count` revocations (a sync or a
/// message may take a reconnect's backoff first).
async fn learns(app: &TestApp, count: u64) {
    assert!(
        eventually(rtc_broker::tokens::SYNC_EVERY * 5, || async {
            known(app).await == count
        })
        .await,
        "the copy never held {count} revocations"
    );
}

/// A revocation reaches the other instance's copy over pub/sub within
/// milliseconds, not at its next sync (every 2 s): five in a row, spaced
/// unevenly, are each in b's copy within 400 ms. Were they left to the
/// sync, each would make it with a chance of about 1 in 5.
async fn a_revocation_reaches_the_other_instance_at_once(backend: Backend) {
    let a = spawn_app(backend).await;
    let b = a.sibling().await;
    // b's subscription is in place once a first revocation reached it.
    a.issue("prime", 300).await;
    assert_eq!(a.delete("/api/voice/token/prime").await.0, 204);
    learns(&b, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..5u64 {
        let session = format!("fast{i}");
        let token = rtc_token(&a, &session).await;
        assert_eq!(
            a.delete(&format!("/api/voice/token/{session}")).await.0,
            204
        );
        let learned = eventually(Duration::from_millis(400), || async {
            known(&b).await == i + 2
        })
        .await;
        assert!(learned, "revocation {i} not on b within 400 ms");
        assert_eq!(verify(&b, &token).await, (401, "token revoked".into()));
        tokio::time::sleep(Duration::from_millis(170 + 90 * i)).await;
    }
}

crate::on_every_redis_mode!(a_revocation_reaches_the_other_instance_at_once);

#[tokio::test]
async fn revoking_a_presented_token_needs_one_of_ours() {
    let redis = Single::start();
    let env = vec![("REDIS_URL".to_string(), redis.url())];
    let app = spawn_app_on(Backend::Single, env, &[]).await;
    for (body, code) in [
        (json!({}), "missing_token"),
        (json!({ "token": "not.a.jwt" }), "invalid_token"),
    ] {
        let (_, answer) = app.post_json("/api/tokens/revoke", &body).await;
        assert_eq!(answer["error"], code, "{body}");
    }
    let token = app.issue("s", 60).await["rtc_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = app
        .post_json("/api/tokens/revoke", &json!({ "token": token }))
        .await;
    assert_eq!(status, 204);
    assert_eq!(verify(&app, &token).await, (401, "token revoked".into()));
    // The marker in Redis lapses with the token (plus leeway).
    let keys = crate::harness::keys(&redis.node, &app.prefix);
    let marker = keys
        .iter()
        .find(|k| k.contains("rtc:revoked:"))
        .expect("revocation marker in Redis");
    let ttl = redis.node.cli(&["PTTL", marker]);
    let ttl: i64 = ttl.trim().parse().unwrap();
    assert!((55_000..=66_000).contains(&ttl), "marker TTL {ttl}");
}
