use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, Backend};

#[tokio::test]
async fn health_reports_memory_storage() {
    let app = spawn_app(Backend::Memory).await;
    let (status, body) = app.get("/api/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["ok"], true);
    assert_eq!(body["storage"], "memory");
    assert_eq!(body["redis"], serde_json::Value::Null);
    assert!(body["uptime_s"].as_u64().is_some());
    assert!(body["server_id"].as_str().is_some_and(|s| !s.is_empty()));
    let warnings = body["warnings"].as_array().unwrap();
    assert!(
        warnings.contains(&json!("using_in_memory_storage")),
        "{body}"
    );

    assert_eq!(app.get("/health/live").await, (200, json!({"ok": true})));
    assert_eq!(
        app.get("/health/ready").await,
        (200, json!({"ready": true}))
    );

    let (status, s) = app.get("/api/storage/status").await;
    assert_eq!(status, 200);
    assert_eq!(s["storage"], "memory");
    assert_eq!(s["mode"], serde_json::Value::Null);
    assert_eq!(s["connected"], false);
    assert_eq!(s["fallback_reason"], serde_json::Value::Null);
    assert!(s["since"].as_u64().is_some());
    assert_eq!(
        s["migrated"],
        json!({"tokens": 0, "sessions": 0, "revocations": 0, "counters": 0, "recordings": 0, "replay_ms": 0})
    );
}

async fn warnings(app: &crate::helpers::TestApp) -> Vec<serde_json::Value> {
    let (status, body) = app.get("/api/health").await;
    assert_eq!(status, 200, "{body}");
    body["warnings"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_short_token_secret_is_a_health_warning_in_development() {
    let weak = json!("weak_token_secret");
    let app = spawn_app_with(Backend::Memory, &[("TOKEN_SECRET", "abc")]).await;
    let shown = warnings(&app).await;
    assert!(shown.contains(&weak), "{shown:?}");
    assert!(
        !shown.contains(&json!("development_token_secret")),
        "{shown:?}"
    );

    let app = spawn_app_with(
        Backend::Memory,
        &[("BROKER__TOKENS__PREVIOUS_SECRETS", "old-abc")],
    )
    .await;
    assert!(warnings(&app).await.contains(&weak));

    let long = "0123456789abcdef0123456789abcdef";
    let app = spawn_app_with(Backend::Memory, &[("TOKEN_SECRET", long)]).await;
    let shown = warnings(&app).await;
    assert!(!shown.contains(&weak), "{shown:?}");
    assert!(
        !shown.contains(&json!("development_token_secret")),
        "{shown:?}"
    );

    // No secret: the public development secret, a warning of its own.
    let shown = warnings(&spawn_app(Backend::Memory).await).await;
    assert!(
        shown.contains(&json!("development_token_secret")),
        "{shown:?}"
    );
    assert!(!shown.contains(&weak), "{shown:?}");
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let app = spawn_app(Backend::Memory).await;
    let res = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "trace-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-123");
    let res = app.client.get(app.url("/api/nope")).send().await.unwrap();
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    // An unsafe id is replaced, not logged or echoed.
    let res = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "a b\tc")
        .send()
        .await
        .unwrap();
    assert_ne!(res.headers()["x-request-id"], "a b\tc");
}
