//! Rate limits (SPEC section 9): one window shared by every instance on a
//! Redis, local windows while Redis is stopped, the 429 and its headers,
//! and `X-Forwarded-For` only from trusted proxies.

use serde_json::{json, Value};

use crate::harness::Single;
use crate::helpers::{read, spawn_app_on, spawn_app_with, wait_disconnected, Backend, TestApp};

/// What a token request was answered, with its rate limit headers.
struct Answer {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

async fn issue(app: &TestApp, session: &str, forwarded_for: Option<&str>) -> Answer {
    let mut req = app
        .client
        .post(app.url("/api/voice/token"))
        .json(&json!({ "session_id": session }));
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    let res = req.send().await.expect("request");
    let headers = res.headers().clone();
    let (status, body) = read(res).await;
    Answer {
        status,
        body,
        headers,
    }
}

/// Asserts a 429 with every header right for a limit of `limit` per 60 s.
fn assert_limited(answer: &Answer, limit: u64) {
    assert_eq!(answer.status, 429, "{}", answer.body);
    assert_eq!(answer.body["error"], "rate_limited");
    let retry: u64 = answer
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(answer.header("ratelimit-limit"), Some(limit.to_string()));
    assert_eq!(answer.header("ratelimit-remaining"), Some("0".into()));
    assert_eq!(answer.header("ratelimit-reset"), Some(retry.to_string()));
    assert_eq!(
        answer.header("ratelimit-policy"),
        Some(format!("{limit};w=60"))
    );
}

/// Issues on `apps` in turn until `limit` passed, checking the remaining
/// count goes down by one each time whichever instance answers.
async fn use_up(apps: &[&TestApp], limit: u64, tag: &str) {
    for i in 0..limit {
        let app = apps[i as usize % apps.len()];
        let answer = issue(app, &format!("{tag}{i}"), None).await;
        assert_eq!(answer.status, 200, "request {i}: {}", answer.body);
        assert_eq!(
            answer.header("ratelimit-remaining"),
            Some((limit - 1 - i).to_string()),
            "request {i}"
        );
    }
}

const LIMIT: &str = "6";

fn limited_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("BROKER__RATE_LIMIT__TOKENS_PER_WINDOW", LIMIT),
        ("BROKER__RATE_LIMIT__WINDOW_SECONDS", "60"),
        ("BROKER__REDIS__HEALTH_CHECK_INTERVAL_MS", "200"),
        // Generous: a slow command must not pass for an outage here.
        ("REDIS_COMMAND_TIMEOUT", "1000"),
        ("REDIS_CONNECT_TIMEOUT", "300"),
    ]
}

#[tokio::test]
async fn two_instances_share_one_window_and_fall_back_to_local_ones() {
    let mut redis = Single::start();
    let env = vec![("REDIS_URL".to_string(), redis.url())];
    let a = spawn_app_on(Backend::Single, env, &limited_env()).await;
    let b = a.sibling().await;

    // The sum across instances is limited: 6 alternating, then both refuse.
    use_up(&[&a, &b], 6, "shared").await;
    assert_limited(&issue(&a, "over-a", None).await, 6);
    assert_limited(&issue(&b, "over-b", None).await, 6);
    let window = redis
        .node
        .cli(&["--scan", "--pattern", &format!("{}ratelimit:*", a.prefix)]);
    let key = window.lines().next().expect("the window's key in Redis");
    let ttl: i64 = redis.node.cli(&["PTTL", key]).trim().parse().unwrap();
    assert!((1..=60_000).contains(&ttl), "window TTL {ttl}");

    // Redis stopped: each instance limits on its own count.
    redis.node.kill();
    for app in [&a, &b] {
        wait_disconnected(app).await;
    }
    use_up(&[&a], 6, "local-a").await;
    assert_limited(&issue(&a, "local-over", None).await, 6);
    use_up(&[&b], 6, "local-b").await;
    assert_limited(&issue(&b, "local-over", None).await, 6);
    let metrics = a.client.get(a.url("/metrics")).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("rtc_rate_limited_total{policy=\"tokens_per_ip\"} 2"),
        "one refusal per phase on a:\n{text}"
    );
}

#[tokio::test]
async fn forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let mut env = limited_env();
    env.push(("BROKER__RATE_LIMIT__TOKENS_PER_WINDOW", "2"));
    let direct = spawn_app_with(Backend::Memory, &env).await;
    // Not trusted: every request is the peer's, whatever the header says.
    for ip in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(issue(&direct, "d", Some(ip)).await.status, 200);
    }
    assert_limited(&issue(&direct, "d", Some("198.51.100.3")).await, 2);

    env.push((
        "BROKER__RATE_LIMIT__TRUSTED_PROXIES",
        "127.0.0.1,10.0.0.0/8",
    ));
    let proxied = spawn_app_with(Backend::Memory, &env).await;
    for _ in 0..2 {
        assert_eq!(issue(&proxied, "p", Some("198.51.100.1")).await.status, 200);
    }
    assert_limited(&issue(&proxied, "p", Some("198.51.100.1")).await, 2);
    // Another client behind the same proxy has its own window; a trusted
    // hop on the right is skipped, a spoofed entry on the left is not used.
    let hops = "203.0.113.9, 198.51.100.2, 10.1.2.3";
    assert_eq!(issue(&proxied, "p", Some(hops)).await.status, 200);
    let answer = issue(&proxied, "p", Some("198.51.100.2")).await;
    assert_eq!(answer.header("ratelimit-remaining"), Some("0".into()));
}

#[tokio::test]
async fn session_writes_are_limited_per_session() {
    let env = [
        ("BROKER__RATE_LIMIT__SESSION_WRITES_PER_WINDOW", "3"),
        ("BROKER__RATE_LIMIT__WINDOW_SECONDS", "60"),
    ];
    let app = spawn_app_with(Backend::Memory, &env).await;
    let (status, _) = app
        .post_json("/api/sessions", &json!({"session_id": "busy"}))
        .await;
    assert_eq!(status, 201);
    let patch = json!({"metadata": {"k": 1}});
    for _ in 0..2 {
        assert_eq!(app.patch_json("/api/sessions/busy", &patch).await.0, 200);
    }
    let (status, body) = app.patch_json("/api/sessions/busy", &patch).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited"))
    );
    // A token for the session counts too; other sessions are not limited.
    assert_limited(&issue(&app, "busy", None).await, 3);
    assert_eq!(issue(&app, "calm", None).await.status, 200);
    let (status, _) = app
        .post_json("/api/sessions", &json!({"session_id": "calm2"}))
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn a_cluster_counts_one_window_for_two_instances() {
    // The window is one key (one slot), so the script runs on a Cluster.
    let a = spawn_app_with(Backend::Cluster, &limited_env()).await;
    let b = a.sibling().await;
    use_up(&[&a, &b], 6, "cluster").await;
    assert_limited(&issue(&a, "cluster-over", None).await, 6);
    assert_limited(&issue(&b, "cluster-over", None).await, 6);
}
