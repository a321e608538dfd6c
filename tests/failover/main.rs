//! Failover tests: real Redis processes are killed (SIGKILL), paused
//! (SIGSTOP) or failed over (`SENTINEL FAILOVER`) under a steady stream of
//! writes through real broker instances. Each test owns its topology, and
//! the tests run one at a time so their timing does not interfere.

#[path = "../harness/mod.rs"]
mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use harness::{blocking, Cluster, SentinelSet, Single};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Grace period after a promotion from which every write must succeed.
const SETTLE: Duration = Duration::from_secs(2);

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    let mut extra = vec![
        ("BROKER__REDIS__HEALTH_CHECK_INTERVAL_MS", "500".to_string()),
        ("REDIS_COMMAND_TIMEOUT", "1000".to_string()),
        // These tests measure the Redis path itself (error windows, 503s);
        // the memory fallback is tested in tests/fallback.
        ("BROKER__STORAGE__FALLBACK", "false".to_string()),
    ];
    extra.extend(pairs.iter().cloned());
    harness::broker_env(&extra)
}

/// One write and how it ended.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    /// When the answer (or the failure) came back.
    done: Instant,
    session_id: String,
    ok: bool,
    error: Option<String>,
}

/// Issues tokens through `base`, one request at a time, each for a fresh
/// session id produced by `ids`, until `stop` is set.
fn spawn_writer(
    base: String,
    ids: impl Fn(u64) -> String + Send + 'static,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut samples = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let session_id = ids(n);
            n += 1;
            let at = Instant::now();
            let result = client
                .post(format!("{base}/api/voice/token"))
                .json(&json!({"session_id": session_id, "ttl_seconds": 600}))
                .send()
                .await;
            let (ok, error) = match result {
                Ok(res) if res.status() == 200 => (true, None),
                Ok(res) => (
                    false,
                    Some(format!(
                        "{} {}",
                        res.status(),
                        res.text().await.unwrap_or_default()
                    )),
                ),
                Err(e) => (false, Some(e.to_string())),
            };
            samples.push(Sample {
                at,
                done: Instant::now(),
                session_id,
                ok,
                error,
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        samples
    })
}

/// Failed writes sent at or after `from` and answered before `to` (a write
/// still in flight at `to` may have met whatever happened then).
fn errors_between(samples: &[Sample], from: Instant, to: Instant) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| s.at >= from && s.done < to && !s.ok)
        .collect()
}

/// The first error seen, for the printed report.
fn first_error(samples: &[Sample]) -> &str {
    samples
        .iter()
        .find_map(|s| s.error.as_deref())
        .unwrap_or("none")
}

fn error_window(samples: &[Sample]) -> Duration {
    let errors: Vec<Instant> = samples.iter().filter(|s| !s.ok).map(|s| s.at).collect();
    match (errors.first(), errors.last()) {
        (Some(first), Some(last)) => *last - *first,
        _ => Duration::ZERO,
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    match client.get(url).send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            (status, res.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Whether the broker at `base` names `127.0.0.1:{master}` as its master
/// within `within`.
async fn follows(client: &reqwest::Client, base: &str, master: u16, within: Duration) -> bool {
    eventually(within, || async {
        get_json(client, &format!("{base}/api/storage/status"))
            .await
            .1["master"]
            == format!("127.0.0.1:{master}")
    })
    .await
}

/// Polls an async condition every 50 ms; true if it held within `timeout`.
async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Waits (off the runtime) until the sentinels name a master other than `old`.
async fn wait_for_new_master(set: &Arc<std::sync::Mutex<SentinelSet>>, old: u16) -> u16 {
    let set = set.clone();
    blocking(move || harness::wait_for_new_master(&set, old)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_and_master_kill_are_followed_without_restart() {
    let _serial = SERIAL.lock().await;
    let set = Arc::new(std::sync::Mutex::new(blocking(SentinelSet::start).await));
    let (pairs, name) = {
        let s = set.lock().unwrap();
        (s.broker_env(), s.name.clone())
    };
    let env = env(&pairs);
    let a = harness::spawn_broker(&env).await;
    // B gets no request at all during the switches.
    let b = harness::spawn_broker(&env).await;
    let client = reqwest::Client::new();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(a.clone(), |n| format!("w{n}"), stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1. A coordinated failover.
    let first_master = set.lock().unwrap().master_port();
    let triggered = Instant::now();
    let reply = {
        let s = set.lock().unwrap();
        s.sentinels[0].cli(&["SENTINEL", "FAILOVER", &name])
    };
    assert!(reply.contains("OK"), "SENTINEL FAILOVER: {reply}");
    let second_master = wait_for_new_master(&set, first_master).await;
    let promoted1 = Instant::now();
    let b_followed = follows(&client, &b, second_master, Duration::from_secs(5)).await;
    assert!(
        b_followed,
        "idle instance B did not follow the failover by itself"
    );
    let b_follow_time = promoted1.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let set = set.clone();
        blocking(move || set.lock().unwrap().wait_replicas_synced()).await;
    }
    let synced = promoted1.elapsed();

    // 2. SIGKILL of the new master.
    let killed = Instant::now();
    {
        let mut s = set.lock().unwrap();
        s.node_mut(second_master).kill();
    }
    let third_master = wait_for_new_master(&set, second_master).await;
    let promoted2 = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let samples = writer.await.unwrap();

    let phase1: Vec<Sample> = samples.iter().filter(|s| s.at < killed).cloned().collect();
    let phase2: Vec<Sample> = samples.iter().filter(|s| s.at >= killed).cloned().collect();
    println!(
        "sentinel failover: {} writes; SENTINEL FAILOVER promoted {} -> {} in {:?}, \
         write error window {:?} ({} errors); idle instance followed {:?} after promotion; \
         old master in sync as replica after {:?}",
        samples.len(),
        first_master,
        second_master,
        promoted1 - triggered,
        error_window(&phase1),
        phase1.iter().filter(|s| !s.ok).count(),
        b_follow_time,
        synced,
    );
    println!(
        "sentinel master SIGKILL: promoted {} -> {} in {:?}, write error window {:?} ({} errors, \
         first: {})",
        second_master,
        third_master,
        promoted2 - killed,
        error_window(&phase2),
        phase2.iter().filter(|s| !s.ok).count(),
        first_error(&phase2),
    );
    let late1 = errors_between(&samples, promoted1 + SETTLE, killed);
    let offsets: Vec<Duration> = late1.iter().map(|s| s.at - promoted1).collect();
    assert!(
        late1.is_empty(),
        "writes failed >2 s after the failover (at {offsets:?} after the promotion; the demoted \
         master was in sync {synced:?} after it): {late1:?}"
    );
    let late2 = errors_between(&samples, promoted2 + SETTLE, Instant::now());
    assert!(
        late2.is_empty(),
        "writes failed >2 s after the promotion: {late2:?}"
    );

    // Writes acknowledged after the last promotion are all readable, and B
    // serves them too (it followed both switches with no traffic).
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.ok && s.at >= promoted2)
        .collect();
    assert!(!after.is_empty(), "no writes after the last promotion");
    // B had no traffic: it follows the second switch by itself, in time.
    let b_followed_again = follows(&client, &b, third_master, Duration::from_secs(10)).await;
    assert!(
        b_followed_again,
        "idle instance B did not follow the SIGKILL"
    );
    for s in &after {
        let (status, _) = get_json(&client, &format!("{b}/api/voice/token/{}", s.session_id)).await;
        assert_eq!(
            status, 200,
            "token {} acknowledged after promotion is missing",
            s.session_id
        );
    }
    let (_, status) = get_json(&client, &format!("{b}/api/storage/status")).await;
    assert_eq!(
        status["master"],
        format!("127.0.0.1:{third_master}"),
        "{status}"
    );
    // Replication is asynchronous: writes the old master acknowledged
    // between the replica's promotion and the clients' switch are lost, and
    // so may be those a killed master acknowledged within the replication
    // lag before its death (Redis's own semantics; 500 ms is a generous
    // bound for that lag on loopback). Outside those windows nothing may be lost.
    let replication_lag = Duration::from_millis(500);
    let in_switch_window = |s: &Sample| {
        (s.at >= triggered && s.at < promoted1 + SETTLE)
            || (s.done >= killed - replication_lag && s.at < promoted2 + SETTLE)
    };
    let (mut lost_in_window, mut lost_outside) = (0, Vec::new());
    let acknowledged: Vec<&Sample> = samples.iter().filter(|s| s.ok).collect();
    for s in &acknowledged {
        let url = format!("{a}/api/voice/token/{}", s.session_id);
        if get_json(&client, &url).await.0 != 200 {
            if in_switch_window(s) {
                lost_in_window += 1;
            } else {
                lost_outside.push(s.session_id.clone());
            }
        }
    }
    println!(
        "sentinel: {} acknowledged tokens; {} lost inside the switch windows (async replication), \
         {} outside",
        acknowledged.len(),
        lost_in_window,
        lost_outside.len()
    );
    assert!(
        lost_outside.is_empty(),
        "acknowledged outside any switch window, then lost: {lost_outside:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_kill_only_affects_its_own_slots() {
    let _serial = SERIAL.lock().await;
    let cluster = Arc::new(std::sync::Mutex::new(blocking(Cluster::start).await));
    let prefix = "f:";
    let env = env(&[
        ("REDIS_MODE", "cluster".into()),
        ("REDIS_CLUSTER_NODES", cluster.lock().unwrap().nodes_env()),
        ("REDIS_KEY_PREFIX", prefix.into()),
    ]);
    let broker = harness::spawn_broker(&env).await;

    // Session ids whose token keys live on the doomed master, and on others.
    let (victim, target_ids, other_ids) = {
        let c = cluster.lock().unwrap();
        let victim = c.master_index_for(&format!("{prefix}rtc:token:target0"));
        let (mut target, mut other) = (Vec::new(), Vec::new());
        for i in 0..200 {
            let id = format!("id{i}");
            if c.master_index_for(&format!("{prefix}rtc:token:{id}")) == victim {
                target.push(id);
            } else {
                other.push(id);
            }
        }
        (victim, target, other)
    };
    assert!(!target_ids.is_empty() && other_ids.len() >= 2);

    let stop = Arc::new(AtomicBool::new(false));
    let target_writer = {
        let ids = target_ids.clone();
        spawn_writer(
            broker.clone(),
            move |n| ids[n as usize % ids.len()].clone(),
            stop.clone(),
        )
    };
    let other_writer = {
        let ids = other_ids.clone();
        spawn_writer(
            broker.clone(),
            move |n| ids[n as usize % ids.len()].clone(),
            stop.clone(),
        )
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    let killed = Instant::now();
    let victim_port = {
        let mut c = cluster.lock().unwrap();
        c.nodes[victim].kill();
        c.nodes[victim].port
    };
    let probe_key = format!("{prefix}rtc:token:{}", target_ids[0]);
    let promoted = {
        let cluster = cluster.clone();
        blocking(move || {
            harness::wait_for("replica promotion", Duration::from_secs(40), || {
                let c = cluster.lock().unwrap();
                c.try_master_index_for(&probe_key)
                    .is_some_and(|i| i != victim)
            });
            Instant::now()
        })
        .await
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let target = target_writer.await.unwrap();
    let other = other_writer.await.unwrap();

    println!(
        "cluster master {victim_port} SIGKILL: replica promoted in {:?}; its slots' write error \
         window {:?} ({} errors of {} writes, first: {}); other slots: {} errors of {} writes",
        promoted - killed,
        error_window(&target),
        target.iter().filter(|s| !s.ok).count(),
        target.len(),
        first_error(&target),
        other.iter().filter(|s| !s.ok).count(),
        other.len(),
    );
    let other_errors: Vec<&Sample> = other.iter().filter(|s| !s.ok).collect();
    assert!(
        other_errors.is_empty(),
        "writes to other slots failed: {other_errors:?}"
    );
    let late = errors_between(&target, promoted + SETTLE, Instant::now());
    assert!(
        late.is_empty(),
        "writes to the failed slot still fail >2 s after promotion: {late:?}"
    );
    assert!(target.iter().any(|s| s.ok && s.at >= promoted + SETTLE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_master_gets_an_error_within_the_command_timeout_not_a_hang() {
    let _serial = SERIAL.lock().await;
    let single = blocking(Single::start).await;
    let env = env(&[
        ("REDIS_URL", single.url()),
        ("REDIS_COMMAND_TIMEOUT", "500".into()),
    ]);
    let broker = harness::spawn_broker(&env).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let issue = |sid: &str| {
        client
            .post(format!("{broker}/api/voice/token"))
            .json(&json!({"session_id": sid}))
            .send()
    };
    assert_eq!(issue("before").await.unwrap().status(), 200);

    single.node.pause();
    let mut slowest = Duration::ZERO;
    for i in 0..3 {
        let started = Instant::now();
        let res = issue(&format!("hung{i}"))
            .await
            .expect("an answer, not a hang");
        let elapsed = started.elapsed();
        slowest = slowest.max(elapsed);
        assert_eq!(res.status(), 503);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "storage_unavailable");
        // Bounded by the 500 ms command timeout; the margin is for a loaded CI box.
        assert!(
            elapsed < Duration::from_millis(2500),
            "request took {elapsed:?}"
        );
    }
    let (status, _) = get_json(&client, &format!("{broker}/health/live")).await;
    assert_eq!(status, 200, "liveness must not hang with Redis");
    println!("hung master: writes answered 503 in at most {slowest:?} (command timeout 500 ms)");

    single.node.resume();
    let recovered = eventually(Duration::from_secs(10), || async {
        issue("after").await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(recovered, "no recovery after SIGCONT");
    let (status, body) = get_json(&client, &format!("{broker}/api/voice/token/after")).await;
    assert_eq!(status, 200, "{body}");
}
