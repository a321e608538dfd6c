use serde_json::json;

use crate::helpers::{read, spawn_app_with, Backend};

#[tokio::test]
async fn management_calls_need_an_api_key_when_configured() {
    let app = spawn_app_with(Backend::Memory, &[("API_KEYS", "key-one,key-two")]).await;
    let body = json!({"session_id": "guarded"});
    let send = |auth: Option<(&'static str, String)>| {
        let mut req = app.client.post(app.url("/api/voice/token")).json(&body);
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        req.send()
    };
    for auth in [
        None,
        Some(("authorization", "Bearer wrong".to_string())),
        Some(("authorization", "Bearer key-one-x".to_string())),
        Some(("x-api-key", "key-on".to_string())),
        Some(("authorization", "key-one".to_string())),
    ] {
        let (status, body) = read(send(auth.clone()).await.unwrap()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "{auth:?}"
        );
    }
    assert_eq!(
        app.get("/api/voice/token/guarded").await.0,
        412,
        "refused call stored nothing"
    );

    for auth in [
        ("authorization", "Bearer key-one".to_string()),
        ("x-api-key", "key-two".to_string()),
    ] {
        let (status, _) = read(send(Some(auth)).await.unwrap()).await;
        assert_eq!(status, 200);
    }
    // Reads and verification stay open (front ends and media servers).
    let (status, token) = app.get("/api/voice/token/guarded").await;
    assert_eq!(status, 200);
    let (status, _) = app
        .post_json("/api/tokens/verify", &json!({"token": token["rtc_token"]}))
        .await;
    assert_eq!(status, 200);
    // Session writes are management calls too.
    let (status, _) = app.post_json("/api/sessions", &json!({})).await;
    assert_eq!(status, 401);
    let (status, _) = app.delete("/api/voice/token/guarded").await;
    assert_eq!(status, 401);
}
