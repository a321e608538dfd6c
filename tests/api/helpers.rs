use std::collections::HashMap;
use std::time::{Duration, Instant};

use rtc_broker::config::Settings;
use rtc_broker::startup::Application;
use serde_json::Value;

/// A running broker and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
}

/// The app with defaults (in-memory store, no API keys).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// The app with extra environment settings (legacy or `BROKER__` names).
pub async fn spawn_app_with(env: &[(&str, &str)]) -> TestApp {
    let mut vars: HashMap<String, String> = [
        ("BROKER__SERVER__PORT", "0"),
        ("BROKER__SERVER__WORKERS", "2"),
        ("BROKER_CONFIG_DIR", "/nonexistent"),
        ("BROKER__STORAGE__SWEEP_INTERVAL_MS", "100"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in env {
        vars.insert(k.to_string(), v.to_string());
    }
    let settings = Settings::load_from(&vars).expect("test settings must load");
    let app = Application::build(settings)
        .await
        .expect("test app must build");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    TestApp {
        address,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("http client"),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Sends a request (with a JSON body when given); returns status and
    /// parsed body (Null when empty).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(body) = body {
            req = req.json(body);
        }
        read(req.send().await.expect("request")).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    pub async fn issue(&self, session_id: &str, ttl: u64) -> Value {
        let (status, body) = self
            .post_json(
                "/api/voice/token",
                &serde_json::json!({"session_id": session_id, "ttl_seconds": ttl}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Entries held by the in-memory store.
    pub async fn memory_entries(&self) -> u64 {
        let (_, status) = self.get("/api/storage/status").await;
        status["entries"]
            .as_u64()
            .expect("entries in storage status")
    }
}

/// Status and JSON body; asserts that any error answer is contract JSON.
pub async fn read(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = res.bytes().await.expect("body");
    if bytes.is_empty() {
        return (status, Value::Null);
    }
    assert!(
        content_type.starts_with("application/json"),
        "status {status}: non-JSON body ({content_type}): {}",
        String::from_utf8_lossy(&bytes)
    );
    let body: Value = serde_json::from_slice(&bytes).expect("JSON body");
    if status >= 400 {
        assert!(body["error"].is_string(), "error code missing: {body}");
        assert!(body["detail"].is_string(), "error detail missing: {body}");
    }
    (status, body)
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Decodes a JWT part (header or claims) without verification.
pub fn jwt_part(token: &str, index: usize) -> Value {
    use base64::Engine as _;
    let part = token.split('.').nth(index).expect("JWT part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON part")
}
