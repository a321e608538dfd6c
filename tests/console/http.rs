//! The console over plain HTTP: security headers, content types and
//! caching on every file; `console.enabled = false` (and production's
//! default) turns every console route into the contract's 404.

use crate::helpers::{read, spawn_app_with, Backend, TestApp};

const JS: &str = "text/javascript; charset=utf-8";
const FILES: &[(&str, &str)] = &[
    ("/", "text/html; charset=utf-8"),
    ("/console/console.js", JS),
    ("/console/room.js", JS),
    ("/console/recording.js", JS),
    ("/console/clock.js", JS),
    ("/console/common.js", JS),
    ("/console/console.css", "text/css; charset=utf-8"),
    ("/console/favicon.svg", "image/svg+xml"),
];

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
    object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn assert_security_headers(path: &str, response: &reqwest::Response) {
    assert_eq!(header(response, "content-security-policy"), CSP, "{path}");
    assert_eq!(
        header(response, "x-content-type-options"),
        "nosniff",
        "{path}"
    );
    assert_eq!(header(response, "referrer-policy"), "no-referrer", "{path}");
}

#[tokio::test]
async fn every_console_file_has_its_type_the_csp_and_a_validator() {
    let app = spawn_app_with(Backend::Memory, &[]).await;
    for (path, content_type) in FILES {
        let response = app.client.get(app.url(path)).send().await.expect("GET");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(&response, "content-type"), *content_type, "{path}");
        assert_eq!(header(&response, "cache-control"), "no-cache", "{path}");
        assert_security_headers(path, &response);
        let etag = header(&response, "etag");
        assert!(etag.starts_with('"') && etag.len() > 2, "{path}: {etag:?}");
        assert!(!response.bytes().await.expect("body").is_empty(), "{path}");
        let again = app.client.get(app.url(path)).header("if-none-match", &etag);
        let again = again.send().await.expect("conditional GET");
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(header(&again, "etag"), etag, "{path}");
    }
    let page = app.client.get(app.url("/")).send().await.expect("GET /");
    let html = page.text().await.expect("the page");
    for linked in ["/console/console.js", "/console/console.css"] {
        assert!(html.contains(linked), "{linked} not linked from the page");
    }
    assert!(html.contains(r#"<script type="module" src="/console/console.js">"#));
}

async fn assert_console_off(app: &TestApp) {
    for (path, _) in FILES {
        let response = app.client.get(app.url(path)).send().await.expect("GET");
        assert_security_headers(path, &response);
        let (status, body) = read(response).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"], "not_found", "{path}: {body}");
    }
    // The rest of the broker serves as usual.
    let (status, _) = app.get("/health/live").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn console_enabled_false_answers_not_found() {
    let app = spawn_app_with(Backend::Memory, &[("BROKER__CONSOLE__ENABLED", "false")]).await;
    assert_console_off(&app).await;
}

#[tokio::test]
async fn production_has_no_console_unless_switched_on() {
    let production = [
        ("RUN_ENV", "production"),
        ("TOKEN_SECRET", "console-test-secret-0123456789abcdef"),
        ("API_KEYS", "console-test-key"),
    ];
    let app = spawn_app_with(Backend::Memory, &production).await;
    assert_console_off(&app).await;
    let mut on = production.to_vec();
    on.push(("BROKER__CONSOLE__ENABLED", "true"));
    let app = spawn_app_with(Backend::Memory, &on).await;
    let response = app.client.get(app.url("/")).send().await.expect("GET /");
    assert_eq!(response.status(), 200);
}
