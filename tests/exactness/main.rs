//! The storage foundation is exact: Redis refusing a command is answered,
//! not mistaken for an outage; a command whose reply was lost with its
//! connection is not applied twice nor reported as failed; counters never
//! go backwards through a fallback; ending a session survives a failure
//! half-way. Real `redis-server` processes, one per test, and a loopback
//! proxy that cuts connections at the worst moment.

#[path = "../harness/mod.rs"]
mod harness;
mod proxy;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use harness::{blocking, Single};
use proxy::Proxy;
use rtc_broker::config::Settings;
use rtc_broker::domain::Id;
use rtc_broker::migration::DomainReconcile;
use rtc_broker::store::{keys, FallbackStore, MemoryStore, RedisStore, Store, StoreError};

/// Settings for a broker or store on `url`; no periodic PING to get in the
/// way of a proxy waiting for one particular command.
fn env(url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("REDIS_URL", url.to_string()),
        ("REDIS_COMMAND_TIMEOUT", "2000".to_string()),
        ("REDIS_CONNECT_TIMEOUT", "1000".to_string()),
        (
            "BROKER__REDIS__HEALTH_CHECK_INTERVAL_MS",
            "60000".to_string(),
        ),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    harness::broker_env(&pairs)
}

async fn redis_store(url: &str, extra: &[(&str, &str)]) -> RedisStore {
    let vars = env(url, extra).into_iter().collect();
    let settings = Settings::load_from(&vars).expect("settings");
    RedisStore::connect(settings.redis).await
}

struct Broker {
    base: String,
    client: reqwest::Client,
}

impl Broker {
    async fn start(url: &str) -> Self {
        Self {
            base: harness::spawn_broker(&env(url, &[])).await,
            client: reqwest::Client::new(),
        }
    }

    /// Status, `Retry-After` header, JSON body.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, bool, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("broker answers");
        let status = res.status().as_u16();
        let retry_after = res.headers().contains_key("retry-after");
        (status, retry_after, res.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, bool, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (status, _, body) = self.call(Method::GET, path, None).await;
        (status, body)
    }

    async fn issue(&self, session_id: &str) -> String {
        let (status, _, body) = self
            .post(
                "/api/voice/token",
                json!({"session_id": session_id, "ttl_seconds": 600}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["rtc_token"].as_str().unwrap().to_string()
    }

    async fn storage(&self) -> Value {
        self.get("/api/storage/status").await.1
    }
}

/// A fallback store over `redis` that notices a paused Redis within 300 ms.
async fn fallback_over(redis: &Single) -> FallbackStore {
    let extra = [
        ("REDIS_COMMAND_TIMEOUT", "300"),
        ("REDIS_CONNECT_TIMEOUT", "300"),
    ];
    let inner = redis_store(&redis.url(), &extra).await;
    let memory = MemoryStore::new(Duration::from_millis(100));
    let reconcile = Arc::new(DomainReconcile { leeway_seconds: 0 });
    FallbackStore::new(inner, memory, reconcile, None).await
}

/// Waits (20 s at most, else fails with `why`) for the replay to finish.
async fn wait_back_on_redis(store: &FallbackStore, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.in_fallback() {
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A refusal's `detail` is the broker's own text, never Redis's.
fn assert_no_redis_text(body: &Value) {
    let detail = body["detail"].as_str().unwrap_or_default();
    for raw in ["OOM", "maxmemory", "WRONGTYPE", "script", "ERR "] {
        assert!(!detail.contains(raw), "raw Redis text in detail: {body}");
    }
}

fn set_out_of_memory(redis: &Single, full: bool) {
    redis
        .node
        .cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let limit = if full { "1" } else { "0" };
    redis.node.cli(&["CONFIG", "SET", "maxmemory", limit]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory_is_a_503_not_a_fallback() {
    let redis = blocking(Single::start).await;
    let broker = Broker::start(&redis.url()).await;
    let before = broker.issue("oom-before").await;
    set_out_of_memory(&redis, true);

    for (path, body) in [
        ("/api/voice/token", json!({"session_id": "oom-during"})),
        ("/api/sessions", json!({"session_id": "oom-session"})),
    ] {
        let (status, retry_after, body) = broker.post(path, body).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(retry_after, "{path}: no Retry-After");
        assert_eq!(body["error"], "storage_unavailable", "{path}");
        assert_no_redis_text(&body);
    }
    // Reads are still served from Redis, and nothing went to memory.
    let (status, body) = broker.get("/api/voice/token/oom-before").await;
    assert_eq!(
        (status, body["rtc_token"].as_str()),
        (200, Some(before.as_str()))
    );
    let storage = broker.storage().await;
    assert_eq!(storage["storage"], "redis", "{storage}");
    assert_eq!(broker.get("/api/voice/token/oom-during").await.0, 412);

    set_out_of_memory(&redis, false);
    broker.issue("oom-after").await;
    assert_eq!(
        redis.node.cli(&["EXISTS", "rtc:token:oom-after"]).trim(),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_type_under_a_key_is_a_500_not_a_fallback() {
    let redis = blocking(Single::start).await;
    let broker = Broker::start(&redis.url()).await;
    broker.issue("healthy").await;
    redis.node.cli(&["LPUSH", "rtc:token:listed", "x"]);
    redis.node.cli(&["LPUSH", "session:{listed}", "x"]);

    let (status, body) = broker.get("/api/voice/token/listed").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"], "internal_error");
    assert_no_redis_text(&body);
    let (status, _, body) = broker
        .call(
            Method::PATCH,
            "/api/sessions/listed",
            Some(json!({"metadata": {}})),
        )
        .await;
    assert_eq!(status, 500, "{body}");
    assert_no_redis_text(&body);

    let storage = broker.storage().await;
    assert_eq!(storage["storage"], "redis", "{storage}");
    assert_eq!(broker.get("/api/voice/token/healthy").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_increment_whose_reply_is_lost_applies_once() {
    let redis = blocking(Single::start).await;
    let proxy = Proxy::start(redis.node.port).await;
    let store = redis_store(&proxy.url(), &[]).await;
    let counter = keys::recording_chunk_index(&Id::parse("cut-incr").unwrap());
    let ttl = Duration::from_secs(600);
    let mut seen = Vec::new();
    for round in 0..20 {
        if round % 2 == 1 {
            proxy.cut_after("EVALSHA");
        }
        seen.push(store.increment(&counter, ttl).await.expect("increment"));
    }
    assert_eq!(proxy.cuts(), 10, "the proxy cut the connection mid-command");
    assert_eq!(seen, (1..=20).collect::<Vec<i64>>(), "no gap, no repeat");
    let stored = redis.node.cli(&["GET", "recording:cut-incr:chunk_index"]);
    assert_eq!(stored.trim(), "20");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_whose_reply_is_lost_is_reported_as_done() {
    let redis = blocking(Single::start).await;
    let proxy = Proxy::start(redis.node.port).await;
    let store = redis_store(&proxy.url(), &[]).await;
    let key = keys::token(&Id::parse("cut-cas").unwrap());
    let ttl = Duration::from_secs(600);
    store.set(&key, "v0", ttl).await.unwrap();
    assert!(store
        .compare_and_swap(&key, "v0", Some("v1"), ttl)
        .await
        .unwrap());
    proxy.cut_after("EVALSHA");
    let swapped = store.compare_and_swap(&key, "v1", Some("v2"), ttl).await;
    assert_eq!(proxy.cuts(), 1);
    assert!(
        swapped.expect("swap answered"),
        "an applied swap reported as lost"
    );
    assert_eq!(store.get(&key).await.unwrap().as_deref(), Some("v2"));
    // A swap that really lost still says so.
    assert!(!store
        .compare_and_swap(&key, "v1", Some("v3"), ttl)
        .await
        .unwrap());

    // Through the API: adding a member whose write was cut is a 201, not
    // a 409 against its own write.
    let broker = Broker::start(&proxy.url()).await;
    let (status, _, body) = broker
        .post("/api/sessions", json!({"session_id": "cut"}))
        .await;
    assert_eq!(status, 201, "{body}");
    proxy.cut_after("EVALSHA");
    let (status, _, body) = broker
        .post("/api/sessions/cut/members", json!({"member_id": "m1"}))
        .await;
    assert_eq!(proxy.cuts(), 2);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["members"].as_array().map(Vec::len), Some(1), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_replay_as_the_maximum_of_memory_and_redis() {
    let redis = Arc::new(blocking(Single::start).await);
    let store = fallback_over(&redis).await;
    let ttl = Duration::from_secs(600);
    let key = |id: &str| keys::recording_chunk_index(&Id::parse(id).unwrap());
    let (ahead, behind, fresh) = (key("redis-ahead"), key("redis-behind"), key("fresh"));
    for _ in 0..10 {
        store.increment(&ahead, ttl).await.unwrap();
    }
    for _ in 0..2 {
        store.increment(&behind, ttl).await.unwrap();
    }

    redis.node.pause();
    // The first call meets the hung Redis and is served from memory.
    assert_eq!(store.increment(&ahead, ttl).await.unwrap(), 1);
    assert!(store.in_fallback());
    for _ in 0..5 {
        store.increment(&behind, ttl).await.unwrap();
    }
    for _ in 0..3 {
        store.increment(&fresh, ttl).await.unwrap();
    }
    redis.node.resume();

    wait_back_on_redis(&store, "never migrated back").await;
    let value = |name: &str| -> i64 { redis.node.cli(&["GET", name]).trim().parse().unwrap() };
    // 10, or 11: the increment that timed out on the paused Redis was
    // still in its socket and ran when it resumed. Never memory's 1.
    let ahead_now = value("recording:redis-ahead:chunk_index");
    assert!(
        (10..=11).contains(&ahead_now),
        "went backwards: {ahead_now}"
    );
    assert_eq!(value("recording:redis-behind:chunk_index"), 5);
    assert_eq!(value("recording:fresh:chunk_index"), 3);
    assert_eq!(store.status().migrated.counters, 3);
    assert_eq!(store.increment(&ahead, ttl).await.unwrap(), ahead_now + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_session_again_after_a_failed_revoke_leaves_no_live_token() {
    let redis = blocking(Single::start).await;
    let broker = Broker::start(&redis.url()).await;
    let (status, _, _) = broker
        .post("/api/sessions", json!({"session_id": "end-me"}))
        .await;
    assert_eq!(status, 201);
    let token = broker.issue("end-me").await;

    // Redis now refuses writes: the revocation cannot be stored.
    set_out_of_memory(&redis, true);
    let (status, _, body) = broker.post("/api/sessions/end-me/end", json!({})).await;
    assert_eq!(status, 503, "{body}");
    set_out_of_memory(&redis, false);

    let (status, _, body) = broker.post("/api/sessions/end-me/end", json!({})).await;
    assert_eq!(status, 200, "the retry must finish the job: {body}");
    assert_eq!(broker.get("/api/voice/token/end-me").await.0, 412);
    assert_eq!(broker.get("/api/sessions/end-me").await.0, 404);
    let (status, _, body) = broker
        .post("/api/tokens/verify", json!({"token": token}))
        .await;
    assert_eq!(
        status, 401,
        "the ended session's token must be revoked: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_counter_is_an_error_in_redis_and_in_memory_alike() {
    let redis = blocking(Single::start).await;
    let store = redis_store(&redis.url(), &[]).await;
    let key = keys::recording_chunk_index(&Id::parse("text").unwrap());
    redis
        .node
        .cli(&["SET", "recording:text:chunk_index", "abc"]);
    let err = store
        .increment(&key, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(_)), "{err:?}");
    let err = store
        .advance_to(&key, 5, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(_)), "{err:?}");
    assert_eq!(
        redis
            .node
            .cli(&["GET", "recording:text:chunk_index"])
            .trim(),
        "abc"
    );
    assert!(store.is_connected(), "a refusal is not a lost connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_write_redis_refuses_is_skipped_not_pinning_the_fallback() {
    let redis = Arc::new(blocking(Single::start).await);
    let store = fallback_over(&redis).await;
    let ttl = Duration::from_secs(600);
    let (listed, plain) = (
        keys::token(&Id::parse("listed").unwrap()),
        keys::token(&Id::parse("plain").unwrap()),
    );
    // Foreign data of another type sits under one of our keys.
    redis.node.cli(&["LPUSH", "rtc:token:listed", "x"]);

    redis.node.pause();
    store.set(&plain, "p", ttl).await.unwrap();
    assert!(store.in_fallback());
    store.set(&listed, "l", ttl).await.unwrap();
    redis.node.resume();

    wait_back_on_redis(&store, "a refused key pinned the fallback").await;
    assert_eq!(redis.node.cli(&["GET", "rtc:token:plain"]).trim(), "p");
    assert_eq!(redis.node.cli(&["TYPE", "rtc:token:listed"]).trim(), "list");
}
