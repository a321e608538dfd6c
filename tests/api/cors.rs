//! CORS and the WebSocket Origin check answer from one allow-list
//! (SPEC section 9), on the real app.

use serde_json::json;

use crate::helpers::{handshake_status, spawn_app_with, Backend, TestApp};

const ALLOWED: &str = "https://app.example";

async fn with_origin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    origin: &str,
) -> reqwest::Response {
    let mut req = app
        .client
        .request(method.clone(), app.url(path))
        .header("origin", origin);
    if method == reqwest::Method::OPTIONS {
        req = req
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, x-api-key");
    } else if method == reqwest::Method::POST {
        req = req.json(&json!({"session_id": "cors"}));
    }
    req.send().await.expect("request")
}

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn ws_status(app: &TestApp, origin: &str) -> u16 {
    let token = app.issue("cors-room", 60).await["rtc_token"]
        .as_str()
        .unwrap()
        .to_string();
    handshake_status(
        app,
        &format!("/ws/rooms/cors-room?token={token}"),
        Some(origin),
    )
    .await
}

#[tokio::test]
async fn one_list_for_cors_and_websockets() {
    let app = spawn_app_with(
        Backend::Memory,
        &[
            ("BROKER__CORS__ALLOWED_ORIGINS", ALLOWED),
            ("BROKER__CORS__MAX_AGE_SECONDS", "120"),
        ],
    )
    .await;
    let preflight = with_origin(&app, reqwest::Method::OPTIONS, "/api/voice/token", ALLOWED).await;
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        header(&preflight, "access-control-allow-origin").as_deref(),
        Some(ALLOWED)
    );
    assert_eq!(
        header(&preflight, "access-control-max-age").as_deref(),
        Some("120")
    );
    let allowed_headers = header(&preflight, "access-control-allow-headers").unwrap_or_default();
    assert!(allowed_headers.contains("x-api-key") && allowed_headers.contains("authorization"));

    let post = with_origin(&app, reqwest::Method::POST, "/api/voice/token", ALLOWED).await;
    assert_eq!(post.status(), 200);
    assert_eq!(
        header(&post, "access-control-allow-origin").as_deref(),
        Some(ALLOWED)
    );
    assert!(header(&post, "access-control-expose-headers")
        .unwrap_or_default()
        .contains("ratelimit-remaining"));
    assert_eq!(header(&post, "vary").as_deref(), Some("Origin"));

    for method in [
        reqwest::Method::OPTIONS,
        reqwest::Method::POST,
        reqwest::Method::GET,
    ] {
        let res = with_origin(
            &app,
            method.clone(),
            "/api/voice/token",
            "https://evil.example",
        )
        .await;
        assert_eq!(res.status(), 403, "{method}");
        assert!(header(&res, "access-control-allow-origin").is_none());
        let body: serde_json::Value = res.json().await.expect("JSON");
        assert_eq!(body["error"], "origin_forbidden");
    }
    assert_eq!(ws_status(&app, "https://evil.example").await, 403);
    assert_eq!(ws_status(&app, ALLOWED).await, 101);
    // A page of the broker itself (the console) is same-origin.
    let own = app.address.clone();
    assert_eq!(
        with_origin(&app, reqwest::Method::POST, "/api/voice/token", &own)
            .await
            .status(),
        200
    );
    assert_eq!(ws_status(&app, &own).await, 101);
    // No Origin: not a browser; the list does not apply.
    assert_eq!(app.get("/health/live").await.0, 200);
}
