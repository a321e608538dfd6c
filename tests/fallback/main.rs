//! Fallback to memory while Redis is gone, and migration back when it
//! returns (SPEC section 10), with real Redis processes killed, paused and
//! restarted. Each test owns its topology; they run one at a time.

#[path = "../harness/mod.rs"]
mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use harness::{blocking, RedisProc, SentinelSet, Single};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    let mut extra = vec![
        ("BROKER__REDIS__HEALTH_CHECK_INTERVAL_MS", "200".to_string()),
        ("REDIS_COMMAND_TIMEOUT", "500".to_string()),
        ("REDIS_CONNECT_TIMEOUT", "500".to_string()),
    ];
    extra.extend(pairs.iter().cloned());
    harness::broker_env(&extra)
}

/// A broker under test and a client for it.
struct Broker {
    base: String,
    client: reqwest::Client,
}

impl Broker {
    async fn start(env: &[(String, String)]) -> Self {
        Self {
            base: harness::spawn_broker(env).await,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("broker answers");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn issue(&self, session_id: &str, ttl: u64) -> String {
        let (status, body) = self
            .post(
                "/api/voice/token",
                json!({"session_id": session_id, "ttl_seconds": ttl}),
            )
            .await;
        assert_eq!(status, 200, "issue {session_id}: {body}");
        body["rtc_token"].as_str().unwrap().to_string()
    }

    /// Asserts the call is refused with 503 `storage_unavailable` and a
    /// `Retry-After` header.
    async fn assert_storage_unavailable(&self, method: reqwest::Method, path: &str, body: Value) {
        let res = self
            .client
            .request(method, format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("broker answers");
        assert_eq!(res.status(), 503, "{path}");
        assert!(res.headers().contains_key("retry-after"), "{path}");
        let body: Value = res.json().await.expect("JSON error");
        assert_eq!(body["error"], "storage_unavailable", "{path}");
    }

    async fn storage(&self) -> Value {
        self.get("/api/storage/status").await.1
    }

    /// Waits until the broker serves from Redis again (replay finished) and
    /// is connected: an instance that met no outage itself never left
    /// Redis, but may not have reconnected yet.
    async fn wait_back_on_redis(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.storage().await;
            if status["storage"] == "redis" && status["connected"] == true {
                return status;
            }
            assert!(Instant::now() < deadline, "never migrated back: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Where the data lives, for checks with a plain Redis client.
trait DataNode: Send + 'static {
    fn master(&self) -> &RedisProc;
    fn stop(&mut self);
    fn restart(&mut self);
}

impl DataNode for Single {
    fn master(&self) -> &RedisProc {
        &self.node
    }
    fn stop(&mut self) {
        self.node.kill();
    }
    fn restart(&mut self) {
        self.node.restart();
    }
}

impl DataNode for SentinelSet {
    fn master(&self) -> &RedisProc {
        self.node(self.master_port())
    }
    fn stop(&mut self) {
        self.kill_data_nodes();
    }
    fn restart(&mut self) {
        self.restart_data_nodes();
    }
}

/// Redis stopped -> writes acknowledged from memory -> Redis restarted
/// empty -> the writes are in Redis with their remaining TTLs, expired
/// ones are not, and a second instance reads them.
async fn outage_writes_reach_redis_after_restart<T: DataNode>(
    topology: T,
    env: Vec<(String, String)>,
) {
    let topology = Arc::new(std::sync::Mutex::new(topology));
    let a = Broker::start(&env).await;
    let b = Broker::start(&env).await;
    assert_eq!(a.storage().await["storage"], "redis");
    let (status, _) = a.post("/api/sessions", json!({"session_id": "pre"})).await;
    assert_eq!(status, 201);

    {
        let t = topology.clone();
        blocking(move || t.lock().unwrap().stop()).await;
    }
    // The first write meets the dead Redis and is still acknowledged.
    let token = a.issue("t1", 60).await;
    let status = a.storage().await;
    assert_eq!(status["storage"], "memory", "{status}");
    assert!(status["fallback_reason"].is_string(), "{status}");
    assert_eq!(status["pending_replay"], 1, "{status}");
    let (status, _) = a
        .post(
            "/api/sessions",
            json!({"session_id": "s1", "ttl_seconds": 120, "metadata": {"k": "v"}}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = a
        .post("/api/sessions/s1/members", json!({"member_id": "m1"}))
        .await;
    assert_eq!(status, 201);
    a.issue("short", 1).await;
    // A write that needs a record only Redis holds is refused, not invented.
    a.assert_storage_unavailable(
        reqwest::Method::PATCH,
        "/api/sessions/pre",
        json!({"metadata": {"x": 1}}),
    )
    .await;
    let (_, health) = a.get("/api/health").await;
    assert_eq!(health["storage"], "memory");
    assert!(health["warnings"]
        .as_array()
        .unwrap()
        .contains(&json!("using_in_memory_storage")));
    // Let the short token expire in memory before Redis returns.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.get("/api/voice/token/short").await.0, 412);

    {
        let t = topology.clone();
        blocking(move || t.lock().unwrap().restart()).await;
    }
    let status = a.wait_back_on_redis().await;
    assert_eq!(status["migrated"]["tokens"], 1, "{status}");
    assert_eq!(status["migrated"]["sessions"], 1, "{status}");

    // Checked with a plain Redis client.
    let (stored, ttl, session, short) = {
        let t = topology.clone();
        blocking(move || {
            let t = t.lock().unwrap();
            let m = t.master();
            (
                m.cli(&["GET", "rtc:token:t1"]).trim().to_string(),
                m.cli(&["PTTL", "rtc:token:t1"])
                    .trim()
                    .parse::<i64>()
                    .unwrap(),
                m.cli(&["GET", "session:{s1}"]).trim().to_string(),
                m.cli(&["EXISTS", "rtc:token:short"]).trim().to_string(),
            )
        })
        .await
    };
    assert_eq!(stored, token);
    assert!(
        (45_000..=60_000).contains(&ttl),
        "remaining TTL kept, got {ttl} ms"
    );
    let record: Value = serde_json::from_str(&session).expect("session JSON in Redis");
    assert_eq!(record["members"][0]["member_id"], "m1");
    assert_eq!(short, "0", "an expired entry was replayed");

    // The second instance reads what the first acknowledged during the
    // outage, once it is back on Redis itself (until then it serves from
    // its own memory, which never held t1).
    b.wait_back_on_redis().await;
    let (status, body) = b.get("/api/voice/token/t1").await;
    assert_eq!(
        (status, body["rtc_token"].as_str()),
        (200, Some(token.as_str()))
    );
    let (status, body) = b.get("/api/sessions/s1").await;
    assert_eq!(status, 200);
    assert_eq!(body["metadata"], json!({"k": "v"}));
    // And the memory copies are gone from the first.
    assert_eq!(a.storage().await["entries"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_outage_is_served_from_memory_and_replayed() {
    let _serial = SERIAL.lock().await;
    let single = blocking(Single::start).await;
    let env = env(&[("REDIS_URL", single.url())]);
    outage_writes_reach_redis_after_restart(single, env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_outage_is_served_from_memory_and_replayed() {
    let _serial = SERIAL.lock().await;
    let set = blocking(SentinelSet::start).await;
    let env = env(&set.broker_env());
    outage_writes_reach_redis_after_restart(set, env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_newest_write_wins_and_deletes_stick() {
    let _serial = SERIAL.lock().await;
    let single = blocking(Single::start).await;
    let env = env(&[("REDIS_URL", single.url())]);
    let a = Broker::start(&env).await;
    let b = Broker::start(&env).await;
    let doomed = a.issue("gone", 300).await;
    let (status, _) = a.post("/api/tokens/verify", json!({"token": doomed})).await;
    assert_eq!(status, 200);

    // A hung Redis keeps its data: the pre-outage token is still in it.
    single.node.pause();
    let started = Instant::now();
    let (status, _) = a
        .post(
            "/api/sessions",
            json!({"session_id": "c1", "metadata": {"writer": "a"}}),
        )
        .await;
    assert_eq!(status, 201);
    println!(
        "first write against a hung Redis answered from memory in {:?}",
        started.elapsed()
    );
    assert_eq!(
        a.send(reqwest::Method::DELETE, "/api/voice/token/gone", None)
            .await
            .0,
        204
    );
    // B writes the same session later (its own fallback, its own memory).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = b
        .post(
            "/api/sessions",
            json!({"session_id": "c1", "metadata": {"writer": "b"}}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(b.storage().await["storage"], "memory");

    single.node.resume();
    a.wait_back_on_redis().await;
    b.wait_back_on_redis().await;
    let record: Value = serde_json::from_str(single.node.cli(&["GET", "session:{c1}"]).trim())
        .expect("session in Redis");
    assert_eq!(
        record["metadata"]["writer"], "b",
        "the newer write must win: {record}"
    );
    assert_eq!(
        single.node.cli(&["EXISTS", "rtc:token:gone"]).trim(),
        "0",
        "deleted token came back"
    );
    let (status, body) = b.post("/api/tokens/verify", json!({"token": doomed})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token")),
        "revocation replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_in_fallback_and_migrates_when_redis_appears() {
    let _serial = SERIAL.lock().await;
    let port = harness::free_port();
    let env = env(&[("REDIS_URL", format!("redis://127.0.0.1:{port}"))]);
    let broker = Broker::start(&env).await;
    let status = broker.storage().await;
    assert_eq!(status["storage"], "memory", "{status}");
    let (_, ready) = broker.get("/health/ready").await;
    assert_eq!(ready["ready"], true, "serving from memory is ready");
    let token = broker.issue("early", 120).await;

    let single = blocking(move || Single::start_on(port, &[])).await;
    broker.wait_back_on_redis().await;
    assert_eq!(single.node.cli(&["GET", "rtc:token:early"]).trim(), token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_is_answered_from_memory_within_the_command_timeout() {
    let _serial = SERIAL.lock().await;
    let single = blocking(Single::start).await;
    let env = env(&[("REDIS_URL", single.url())]);
    let broker = Broker::start(&env).await;
    broker.issue("warm", 60).await;

    single.node.pause();
    let started = Instant::now();
    let token = broker.issue("during", 60).await;
    let first = started.elapsed();
    // Command timeout 500 ms; the margin is for a loaded machine.
    assert!(
        first < Duration::from_millis(2000),
        "first request took {first:?}"
    );
    let started = Instant::now();
    broker.issue("later", 60).await;
    println!(
        "hung Redis: first request served from memory after {first:?}, the next in {:?}",
        started.elapsed()
    );

    single.node.resume();
    broker.wait_back_on_redis().await;
    assert_eq!(single.node.cli(&["GET", "rtc:token:during"]).trim(), token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fallback_writes_get_503_and_the_broker_is_not_ready() {
    let _serial = SERIAL.lock().await;
    let mut single = blocking(Single::start).await;
    let env = env(&[
        ("REDIS_URL", single.url()),
        ("BROKER__STORAGE__FALLBACK", "false".into()),
    ]);
    let broker = Broker::start(&env).await;
    broker.issue("ok", 60).await;
    single.node.kill();
    broker
        .assert_storage_unavailable(
            reqwest::Method::POST,
            "/api/voice/token",
            json!({"session_id": "x"}),
        )
        .await;
    let (status, ready) = broker.get("/health/ready").await;
    assert_eq!(
        (status, ready["ready"].as_bool()),
        (503, Some(false)),
        "{ready}"
    );
    assert_eq!(broker.storage().await["storage"], "redis");

    // Keep the restarted node alive until the end of the test.
    let _single = blocking(move || {
        single.node.restart();
        single
    })
    .await;
    let recovered = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if broker.get("/health/ready").await.0 == 200 {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(recovered, "not ready again after Redis returned");
}

/// Issues `n` tokens (`<prefix><i>`) from 16 concurrent clients; returns
/// each session id with the token the broker acknowledged.
async fn issue_many(broker: &Arc<Broker>, prefix: &'static str, n: usize) -> Vec<(String, String)> {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let broker = broker.clone();
        tasks.spawn(async move {
            let mut issued = Vec::new();
            for i in (worker..n).step_by(16) {
                let id = format!("{prefix}{i}");
                issued.push((id.clone(), broker.issue(&id, 600).await));
            }
            issued
        });
    }
    let mut issued = Vec::new();
    while let Some(part) = tasks.join_next().await {
        issued.extend(part.expect("writer task"));
    }
    assert_eq!(issued.len(), n);
    issued
}

/// Checks with a plain Redis client that every acknowledged token is
/// stored with exactly the acknowledged value.
async fn assert_all_stored(single: Single, issued: Vec<(String, String)>) {
    blocking(move || {
        for chunk in issued.chunks(500) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|(id, _)| format!("rtc:token:{id}"))
                .collect();
            let mut args = vec!["MGET"];
            args.extend(keys.iter().map(String::as_str));
            let stored: Vec<String> = single
                .node
                .cli(&args)
                .lines()
                .map(|l| l.trim().to_string())
                .collect();
            assert_eq!(stored.len(), chunk.len());
            for ((id, token), stored) in chunk.iter().zip(&stored) {
                assert_eq!(stored, token, "token {id} differs after the replay");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_replay_repeated_leaves_the_same_data() {
    let _serial = SERIAL.lock().await;
    let mut single = blocking(Single::start).await;
    let env = env(&[("REDIS_URL", single.url())]);
    let broker = Arc::new(Broker::start(&env).await);
    single.node.kill();

    // Enough outage writes that the replay takes a while.
    const N: usize = 4000;
    let issued = issue_many(&broker, "r", N).await;
    assert_eq!(issued.len(), N);

    // Restart Redis and hang it as soon as the replay has written something.
    let partial = blocking(move || {
        single.node.restart();
        let mut seen = 0;
        harness::wait_for("replay to start", Duration::from_secs(20), || {
            seen = single.node.cli(&["DBSIZE"]).trim().parse().unwrap_or(0);
            seen > 0
        });
        single.node.pause();
        (single, seen)
    })
    .await;
    // The count seen just before the pause bounds how far the first
    // replay got (a paused Redis cannot be asked).
    let (single, stored_at_pause) = partial;
    assert!(
        stored_at_pause < N,
        "the replay finished before it could be interrupted"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        broker.storage().await["storage"],
        "memory",
        "replay cannot have finished"
    );
    single.node.resume();
    let status = broker.wait_back_on_redis().await;
    println!(
        "repeated replay: {} tokens in {} ms",
        status["migrated"]["tokens"], status["migrated"]["replay_ms"]
    );

    // Every acknowledged token is in Redis exactly once, with its value.
    let dbsize: usize = single.node.cli(&["DBSIZE"]).trim().parse().unwrap();
    assert_eq!(dbsize, N, "nothing else was written");
    assert_all_stored(single, issued).await;
    println!("interrupted replay: {stored_at_pause} of {N} keys written before the pause; all {N} correct after the repeat");
}

/// With a disk journal, an instance killed mid-replay replays again when it
/// starts, and the result is the same as an uninterrupted replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_mid_replay_replays_its_journal_after_restart() {
    let _serial = SERIAL.lock().await;
    let mut single = blocking(Single::start).await;
    let workdir = tempfile::tempdir().unwrap();
    let journal = workdir.path().join("journal.jsonl");
    let url = single.url();
    let journal_env = journal.to_str().unwrap().to_string();
    let env: Vec<(&str, &str)> = vec![
        ("PORT", "0"),
        ("REDIS_URL", &url),
        ("REDIS_COMMAND_TIMEOUT", "300"),
        ("REDIS_CONNECT_TIMEOUT", "300"),
        ("BROKER__STORAGE__JOURNAL_PATH", &journal_env),
        ("RUST_LOG", "info"),
    ];
    single.node.kill();
    let first = harness::process::start(&env, workdir.path());
    let broker = Arc::new(Broker {
        base: format!("http://127.0.0.1:{}", first.port),
        client: reqwest::Client::new(),
    });

    const N: usize = 4000;
    let issued = issue_many(&broker, "k", N).await;

    // Redis returns; the instance is SIGKILLed as soon as the replay began.
    let (single, at_kill) = blocking(move || {
        single.node.restart();
        let mut seen = 0;
        harness::wait_for("replay to start", Duration::from_secs(20), || {
            seen = single.node.cli(&["DBSIZE"]).trim().parse().unwrap_or(0);
            seen > 0
        });
        drop(first); // SIGKILL (the process handle kills on drop)
        (single, seen)
    })
    .await;
    let after_kill: usize = single.node.cli(&["DBSIZE"]).trim().parse().unwrap();
    assert!(
        after_kill < N,
        "the replay finished before the kill ({after_kill} keys)"
    );

    // The restarted instance finds the journal and finishes the job.
    let second = harness::process::start(&env, workdir.path());
    let broker = Broker {
        base: format!("http://127.0.0.1:{}", second.port),
        client: reqwest::Client::new(),
    };
    broker.wait_back_on_redis().await;
    let journal_left = std::fs::metadata(&journal).unwrap().len();
    assert_eq!(journal_left, 0, "journal emptied after the replay");

    assert_all_stored(single, issued).await;
    println!(
        "killed mid-replay: {at_kill} of {N} keys in Redis at the kill ({after_kill} after); \
         the restarted instance replayed the journal, all {N} correct"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_waits_at_most_the_connect_timeout_when_no_sentinel_answers() {
    let _serial = SERIAL.lock().await;
    let dead: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", harness::free_port()))
        .collect();
    let env = env(&[
        ("REDIS_MODE", "sentinel".into()),
        ("REDIS_SENTINELS", dead.join(",")),
        ("REDIS_SENTINEL_NAME", "mymaster".into()),
    ]);
    let started = Instant::now();
    let broker = Broker::start(&env).await;
    let took = started.elapsed();
    // Connect timeout 500 ms; the margin is for a loaded machine.
    assert!(took < Duration::from_millis(2500), "start-up took {took:?}");
    let status = broker.storage().await;
    assert_eq!(status["storage"], "memory", "{status}");
    assert_eq!(status["mode"], "sentinel");
    broker.issue("served", 30).await;
}

/// A sentinel failover with the fallback on: the broker stops writing to
/// the old master when the promotion starts, serves from memory until the
/// new master is known, and replays there. No client sees an error and the
/// writes Redis would have dropped (acknowledged by the old master after the
/// promotion) are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_with_fallback_loses_nothing_and_fails_nothing() {
    let _serial = SERIAL.lock().await;
    let set = Arc::new(std::sync::Mutex::new(blocking(SentinelSet::start).await));
    let (mut pairs, name) = {
        let s = set.lock().unwrap();
        (s.broker_env(), s.name.clone())
    };
    pairs.push(("REDIS_COMMAND_TIMEOUT", "1000".into()));
    let env = env(&pairs);
    let broker = Arc::new(Broker::start(&env).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (broker, stop) = (broker.clone(), stop.clone());
        tokio::spawn(async move {
            let mut results = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("f{n}");
                n += 1;
                let (status, body) = broker
                    .post(
                        "/api/voice/token",
                        json!({"session_id": id, "ttl_seconds": 600}),
                    )
                    .await;
                results.push((id, status, body["rtc_token"].as_str().map(str::to_string)));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            results
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let old = set.lock().unwrap().master_port();
    let reply = set.lock().unwrap().sentinels[0].cli(&["SENTINEL", "FAILOVER", &name]);
    assert!(reply.contains("OK"), "{reply}");
    let new = {
        let set = set.clone();
        blocking(move || harness::wait_for_new_master(&set, old)).await
    };
    // Back on Redis means on the promoted master, not still on the old one.
    let deadline = Instant::now() + Duration::from_secs(20);
    while broker.storage().await["master"] != format!("127.0.0.1:{new}") {
        assert!(
            Instant::now() < deadline,
            "the broker never followed the promotion to {new}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = broker.wait_back_on_redis().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results = writer.await.unwrap();

    let failed: Vec<_> = results
        .iter()
        .filter(|(_, status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "clients saw errors during the failover: {failed:?}"
    );
    let mut lost = Vec::new();
    for (id, _, token) in &results {
        let (status, body) = broker.get(&format!("/api/voice/token/{id}")).await;
        if status != 200 || body["rtc_token"].as_str() != token.as_deref() {
            lost.push(id.clone());
        }
    }
    println!(
        "sentinel failover with fallback: {} writes, 0 errors, {} lost; master {old} -> {new}; \
         {} tokens replayed in {} ms",
        results.len(),
        lost.len(),
        status["migrated"]["tokens"],
        status["migrated"]["replay_ms"]
    );
    // At most a write already on its way to the old master at the very
    // instant the promotion began can still be dropped by Redis.
    assert!(lost.len() <= 1, "acknowledged writes lost: {lost:?}");
}
