use std::time::{Duration, Instant};

use crate::harness;
use serde_json::Value;

/// Where the broker under test keeps its data. The Redis topologies are
/// real processes shared by all tests of this binary; each app gets its own
/// key prefix so tests never see each other's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Single,
    Cluster,
    Sentinel,
}

impl Backend {
    pub fn env(self) -> Vec<(String, String)> {
        let pairs: Vec<(&str, String)> = match self {
            Backend::Memory => vec![],
            Backend::Single => vec![("REDIS_URL", harness::shared_single().url())],
            Backend::Cluster => vec![
                ("REDIS_MODE", "cluster".into()),
                ("REDIS_CLUSTER_NODES", harness::shared_cluster().nodes_env()),
            ],
            Backend::Sentinel => harness::shared_sentinel().broker_env(),
        };
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

/// The Prometheus text of one scrape (used by tests/rooms and
/// tests/recordings, which include this file).
#[allow(dead_code)]
pub struct Metrics(pub String);

#[allow(dead_code)]
impl Metrics {
    pub fn value(&self, series: &str) -> Option<f64> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
    }
}

/// A running broker and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub backend: Backend,
    /// Key prefix of this app's data in Redis.
    pub prefix: String,
    env: Vec<(String, String)>,
}

/// The app with defaults on the given backend (no API keys).
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// The app with extra environment settings (legacy or `BROKER__` names).
pub async fn spawn_app_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    spawn_app_on(backend, backend.env(), extra).await
}

/// The app on a Redis topology of the test's own (`redis_env` says where;
/// `backend` names its kind), with extra settings.
pub async fn spawn_app_on(
    backend: Backend,
    redis_env: Vec<(String, String)>,
    extra: &[(&str, &str)],
) -> TestApp {
    let prefix = format!("t{}:", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut env = harness::broker_env(&[
        ("BROKER__STORAGE__SWEEP_INTERVAL_MS", "100".into()),
        ("REDIS_KEY_PREFIX", prefix.clone()),
    ]);
    env.extend(redis_env);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    start(backend, prefix, env).await
}

async fn start(backend: Backend, prefix: String, env: Vec<(String, String)>) -> TestApp {
    let address = harness::spawn_broker(&env).await;
    TestApp {
        address,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("http client"),
        backend,
        prefix,
        env,
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

    /// A scrape of `/metrics`: the value of one series (name and labels,
    /// exactly as printed) by [`Metrics::value`].
    #[allow(dead_code)]
    pub async fn metrics(&self) -> Metrics {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics text");
        Metrics(text)
    }

    /// A second broker instance on the same storage (same Redis, same
    /// key prefix), as behind a load balancer.
    pub async fn sibling(&self) -> TestApp {
        assert_ne!(self.backend, Backend::Memory, "memory is per instance");
        start(self.backend, self.prefix.clone(), self.env.clone()).await
    }

    /// Entries this app holds: the memory store's size, or this app's keys
    /// in Redis.
    pub async fn stored_entries(&self) -> usize {
        if self.backend == Backend::Memory {
            let (_, status) = self.get("/api/storage/status").await;
            return status["entries"]
                .as_u64()
                .expect("entries in storage status") as usize;
        }
        self.stored_keys().await.len()
    }

    /// This app's keys in Redis (full names, prefix included).
    pub async fn stored_keys(&self) -> Vec<String> {
        let (backend, prefix) = (self.backend, self.prefix.clone());
        tokio::task::spawn_blocking(move || match backend {
            Backend::Memory => panic!("the in-memory store has no Redis keys"),
            Backend::Single => harness::keys(&harness::shared_single().node, &prefix),
            Backend::Cluster => harness::shared_cluster().keys(&prefix),
            Backend::Sentinel => harness::shared_sentinel().keys(&prefix),
        })
        .await
        .expect("list keys")
    }

    /// Remaining TTL of a Redis key in milliseconds.
    pub async fn key_ttl_ms(&self, key: &str) -> i64 {
        let (backend, key) = (self.backend, key.to_string());
        tokio::task::spawn_blocking(move || match backend {
            Backend::Memory => panic!("the in-memory store has no Redis keys"),
            Backend::Single => harness::pttl(&harness::shared_single().node, &key),
            Backend::Cluster => harness::shared_cluster().pttl(&key),
            Backend::Sentinel => harness::shared_sentinel().pttl(&key),
        })
        .await
        .expect("PTTL")
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

/// Generates, for each named `async fn(Backend)`, a module with one test
/// per listed backend (`test_name => Backend variant`).
#[macro_export]
macro_rules! backend_tests {
    ($backends:tt $($name:ident),* $(,)?) => {
        $( $crate::backend_test_module!($name $backends); )*
    };
}

#[macro_export]
macro_rules! backend_test_module {
    ($name:ident [$($test:ident => $backend:ident),*]) => {
        mod $name {
            use $crate::helpers::Backend;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() { super::$name(Backend::$backend).await }
            )*
        }
    };
}

/// One test per backend: memory, single, cluster, sentinel.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        $crate::backend_tests!(
            [memory => Memory, single => Single, cluster => Cluster, sentinel => Sentinel]
            $($name),*
        );
    };
}

/// One test per Redis mode: single, cluster, sentinel.
#[macro_export]
macro_rules! on_every_redis_mode {
    ($($name:ident),* $(,)?) => {
        $crate::backend_tests!(
            [single => Single, cluster => Cluster, sentinel => Sentinel]
            $($name),*
        );
    };
}

/// Waits until the app reports its Redis connection lost (after a test
/// stopped the server); the next store call then serves from memory.
pub async fn wait_disconnected(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, status) = app.get("/api/storage/status").await;
        if status["connected"] == false {
            return;
        }
        assert!(Instant::now() < deadline, "still connected: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the app reports its Redis connection back (after a test
/// restarted the server) and its outage writes replayed (an instance that
/// met no outage itself never left Redis, so both are checked).
pub async fn wait_connected(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, status) = app.get("/api/storage/status").await;
        if status["storage"] == "redis" && status["connected"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "still not on Redis: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status a WebSocket handshake on `path` gets (101 when accepted),
/// with an `Origin` header when given.
pub async fn handshake_status(app: &TestApp, path: &str, origin: Option<&str>) -> u16 {
    let mut req = app
        .client
        .get(app.url(path))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    req.send().await.expect("handshake").status().as_u16()
}
