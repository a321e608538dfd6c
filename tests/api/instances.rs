//! Several broker instances on one Redis behave as one service.

use serde_json::json;

use crate::harness;
use crate::helpers::{spawn_app, Backend};

async fn two_instances_share_tokens_sessions_and_revocations(backend: Backend) {
    let a = spawn_app(backend).await;
    let b = a.sibling().await;

    // A token issued through A is fetched through B.
    let issued = a.issue("shared", 120).await;
    let (status, fetched) = b.get("/api/voice/token/shared").await;
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(fetched["rtc_token"], issued["rtc_token"]);

    // A session created through A and updated through B is read through A.
    let (status, _) = a
        .post_json("/api/sessions", &json!({"session_id": "shared"}))
        .await;
    assert_eq!(status, 201);
    let (status, _) = b
        .post_json("/api/sessions/shared/members", &json!({"member_id": "bob"}))
        .await;
    assert_eq!(status, 201);
    let (status, _) = b
        .patch_json("/api/sessions/shared", &json!({"metadata": {"via": "b"}}))
        .await;
    assert_eq!(status, 200);
    let (_, record) = a.get("/api/sessions/shared").await;
    assert_eq!(record["members"][0]["member_id"], "bob");
    assert_eq!(record["metadata"]["via"], "b");
    // Creating the same session through B conflicts.
    let (status, _) = b
        .post_json("/api/sessions", &json!({"session_id": "shared"}))
        .await;
    assert_eq!(status, 409);

    // A token revoked through A fails verification through B.
    let token = issued["rtc_token"].clone();
    let (status, _) = b
        .post_json("/api/tokens/verify", &json!({"token": token}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(a.delete("/api/voice/token/shared").await.0, 204);
    let (status, body) = b
        .post_json("/api/tokens/verify", &json!({"token": token}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    assert_eq!(b.get("/api/voice/token/shared").await.0, 412);
}

async fn redis_keys_follow_the_contract(backend: Backend) {
    let app = spawn_app(backend).await;
    app.issue("k1", 100).await;
    app.post_json(
        "/api/sessions",
        &json!({"session_id": "k1", "ttl_seconds": 200}),
    )
    .await;
    let keys = app.stored_keys().await;
    let token_key = format!("{}rtc:token:k1", app.prefix);
    let session_key = format!("{}session:{{k1}}", app.prefix);
    assert!(keys.contains(&token_key), "{keys:?}");
    assert!(keys.contains(&session_key), "{keys:?}");
    let token_ttl = app.key_ttl_ms(&token_key).await;
    assert!(
        (95_000..=100_000).contains(&token_ttl),
        "token TTL {token_ttl} ms"
    );
    let session_ttl = app.key_ttl_ms(&session_key).await;
    assert!(
        (195_000..=200_000).contains(&session_ttl),
        "session TTL {session_ttl} ms"
    );
}

async fn health_reports_the_redis_mode(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, health) = app.get("/api/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["storage"], "redis");
    let mode = match backend {
        Backend::Single => "single",
        Backend::Cluster => "cluster",
        _ => "sentinel",
    };
    assert_eq!(health["redis"]["mode"], mode);
    assert_eq!(health["redis"]["connected"], true, "{health}");
    assert!(
        !health["warnings"]
            .as_array()
            .unwrap()
            .contains(&json!("using_in_memory_storage")),
        "{health}"
    );
    let (_, status) = app.get("/api/storage/status").await;
    assert_eq!(status["storage"], "redis");
    assert_eq!(status["mode"], mode);
    match backend {
        Backend::Sentinel => assert!(status["master"].as_str().is_some(), "{status}"),
        Backend::Cluster => {
            // The cluster state is read by the background check.
            assert!(
                crate::helpers::eventually(std::time::Duration::from_secs(5), || async {
                    app.get("/api/storage/status").await.1["cluster_state"] == "ok"
                })
                .await
            );
        }
        _ => {}
    }
    assert_eq!(app.get("/health/ready").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_db_and_prefix_are_honoured() {
    let single =
        tokio::task::spawn_blocking(|| harness::Single::start_with(&["--requirepass", "s3cret"]))
            .await
            .unwrap();
    let url = format!("redis://127.0.0.1:{}", single.node.port);
    let base = |extra: &[(&str, &str)]| {
        let mut pairs = vec![
            ("REDIS_URL", url.clone()),
            ("REDIS_CONNECT_TIMEOUT", "500".to_string()),
        ];
        pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        harness::broker_env(&pairs)
    };
    let client = reqwest::Client::new();

    // Without the password (and no fallback): up, but not connected and not ready.
    let refused = harness::spawn_broker(&base(&[("BROKER__STORAGE__FALLBACK", "false")])).await;
    let res = client
        .get(format!("{refused}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let res = client
        .post(format!("{refused}/api/voice/token"))
        .json(&json!({"session_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);

    // With password, db 3 and a prefix.
    let ok = harness::spawn_broker(&base(&[
        ("REDIS_PASSWORD", "s3cret"),
        ("REDIS_DB", "3"),
        ("REDIS_KEY_PREFIX", "app1:"),
    ]))
    .await;
    let res = client
        .post(format!("{ok}/api/voice/token"))
        .json(&json!({"session_id": "pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let in_db3 = single.node.cli(&["-n", "3", "EXISTS", "app1:rtc:token:pw"]);
    let in_db0 = single.node.cli(&["-n", "0", "EXISTS", "app1:rtc:token:pw"]);
    assert_eq!((in_db3.trim(), in_db0.trim()), ("1", "0"));
}

/// A record this broker cannot read (written by something else) is a 500
/// `internal_error` in JSON, never a panic or a dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_stored_record_is_a_json_internal_error() {
    let app = spawn_app(Backend::Single).await;
    let key = format!("{}session:{{broken}}", app.prefix);
    let node_reply = tokio::task::spawn_blocking(move || {
        harness::shared_single()
            .node
            .cli(&["SET", &key, "not json", "EX", "60"])
    })
    .await
    .unwrap();
    assert_eq!(node_reply.trim(), "OK");
    let (status, body) = app.get("/api/sessions/broken").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (500, Some("internal_error")),
        "{body}"
    );
    let (status, body) = app
        .post_json("/api/sessions/broken/members", &json!({"member_id": "m"}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (500, Some("internal_error")),
        "{body}"
    );
    // The broker keeps serving.
    assert_eq!(app.get("/health/live").await.0, 200);
}

crate::on_every_redis_mode!(
    two_instances_share_tokens_sessions_and_revocations,
    redis_keys_follow_the_contract,
    health_reports_the_redis_mode,
);
