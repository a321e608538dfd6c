//! Recordings through failovers and outages, with real processes: uploaders
//! on two broker instances send distinct chunks (real WebM files) while the
//! Sentinel master is failed over (`SENTINEL FAILOVER`) and SIGKILLed, or
//! all of Redis goes away and comes back (memory fallback on both
//! instances, one shared storage folder). No acknowledged chunk may be lost
//! or overwritten, no index given twice, and the merged file holds every
//! acknowledged chunk. A merge whose instance is SIGKILLed is taken over.
//! Each test owns its topology; they run one at a time.

#[path = "../recordings/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../harness/media.rs"]
mod media;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use client::{rec_app_on, stored_chunks, RecApp, API_KEY};
use harness::{blocking, SentinelSet, Single};
use helpers::Backend;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Length of each test chunk: a real WebM file of its own.
const CHUNK_SECONDS: f64 = 0.2;

/// What one uploader saw acknowledged: index -> (chunk number, digest).
type Acked = BTreeMap<u64, (u64, [u8; 32])>;

/// Uploaders sending distinct copies of `template` until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(Acked, usize)>>,
}

impl Load {
    fn start(apps: &[Arc<RecApp>], record: &str, template: Arc<Vec<u8>>, per_app: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for app in apps {
            for _ in 0..per_app {
                let (app, record, template) = (app.clone(), record.to_string(), template.clone());
                let (stop, next) = (stop.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    let mut acked = Acked::new();
                    let mut failed = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let chunk = media::retag(&template, n);
                        let digest: [u8; 32] = Sha256::digest(&chunk).into();
                        let (status, body) = app.chunk_as(&record, API_KEY, chunk).await;
                        match (status, body["index"].as_u64()) {
                            (201, Some(index)) => {
                                let earlier = acked.insert(index, (n, digest));
                                assert!(earlier.is_none(), "index {index} acknowledged twice");
                            }
                            _ => failed += 1,
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    (acked, failed)
                }));
            }
        }
        Self { stop, tasks }
    }

    /// Stops the uploaders; every acknowledged index across all of them.
    async fn finish(self) -> (Acked, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut all, mut failed) = (Acked::new(), 0);
        for task in self.tasks {
            let (acked, f) = task.await.expect("uploader");
            failed += f;
            for (index, chunk) in acked {
                let earlier = all.insert(index, chunk);
                assert!(
                    earlier.is_none(),
                    "index {index} acknowledged to two uploaders: {earlier:?} and {chunk:?}"
                );
            }
        }
        (all, failed)
    }
}

/// Every acknowledged chunk is stored under its index, byte for byte.
fn assert_all_stored(app: &RecApp, record: &str, acked: &Acked) -> usize {
    let stored: BTreeMap<u64, [u8; 32]> = stored_chunks(&app.chunk_dir(record))
        .into_iter()
        .map(|(i, b)| (i, Sha256::digest(&b).into()))
        .collect();
    for (index, (n, digest)) in acked {
        assert_eq!(
            stored.get(index),
            Some(digest),
            "acknowledged chunk {n} at index {index} is missing or was overwritten"
        );
    }
    stored.len()
}

/// Stops and merges; the result holds every stored chunk (each lasting
/// `CHUNK_SECONDS`).
async fn assert_merge_holds(app: &RecApp, record: &str, stored: usize) {
    let (status, body) = app.stop(record).await;
    assert_eq!(status, 202, "{body}");
    let done = app.finished(record, Duration::from_secs(120)).await;
    assert_eq!(done["state"], "ready", "{done}");
    assert_eq!(done["chunks"], stored as u64);
    let url = done["download_url"].as_str().unwrap();
    let (status, _, bytes) = app.download(url, &[]).await;
    assert_eq!(status, 200);
    let file = app.dirs.path().join("merged.webm");
    std::fs::write(&file, &bytes).unwrap();
    let duration = media::probe_duration(&file);
    let expected = stored as f64 * CHUNK_SECONDS;
    assert!(
        (duration - expected).abs() <= 0.05 * stored as f64 + 0.1,
        "merged {duration:.2} s for {stored} chunks of {CHUNK_SECONDS} s"
    );
    media::decodes_cleanly(&file).expect("the merged file decodes");
}

fn template() -> Arc<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    Arc::new(media::tagged_webm(dir.path(), CHUNK_SECONDS))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_and_master_kill_lose_no_chunk() {
    let _serial = SERIAL.lock().await;
    let set = Arc::new(Mutex::new(blocking(SentinelSet::start).await));
    let (env, name) = {
        let s = set.lock().unwrap();
        let env = s
            .broker_env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        (env, s.name.clone())
    };
    let a = Arc::new(rec_app_on(Backend::Sentinel, Some(env), &[]).await);
    let b = Arc::new(a.sibling().await);
    let record = a.start().await["record_id"].as_str().unwrap().to_string();
    let load = Load::start(&[a.clone(), b.clone()], &record, template(), 2);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let first = set.lock().unwrap().master_port();
    let reply = set.lock().unwrap().sentinels[0].cli(&["SENTINEL", "FAILOVER", &name]);
    assert!(reply.contains("OK"), "SENTINEL FAILOVER: {reply}");
    let triggered = Instant::now();
    let second = {
        let set = set.clone();
        blocking(move || harness::wait_for_new_master(&set, first)).await
    };
    println!(
        "SENTINEL FAILOVER: {first} -> {second} in {:?}",
        triggered.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let set = set.clone();
        blocking(move || set.lock().unwrap().wait_replicas_synced()).await;
    }

    let killed = Instant::now();
    set.lock().unwrap().node_mut(second).kill();
    let third = {
        let set = set.clone();
        blocking(move || harness::wait_for_new_master(&set, second)).await
    };
    println!(
        "SIGKILL of {second}: {third} promoted in {:?}",
        killed.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (acked, failed) = load.finish().await;
    println!(
        "{} chunks acknowledged, {failed} uploads refused",
        acked.len()
    );
    assert!(acked.len() > 100, "too little load: {}", acked.len());
    let stored = assert_all_stored(&a, &record, &acked);
    let (_, health) = a.app.get("/api/health").await;
    let (_, health_b) = b.app.get("/api/health").await;
    println!(
        "index collisions repaired: {} + {}",
        health["recordings"]["index_collisions_repaired"],
        health_b["recordings"]["index_collisions_repaired"]
    );
    assert_merge_holds(&a, &record, stored).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_fallback_on_two_instances_overwrites_nothing() {
    let _serial = SERIAL.lock().await;
    // AOF (fsync every second): the restart keeps the recording, and may
    // lose the last increments, which the repair must absorb.
    let redis = blocking(|| Single::start_with(&["--appendonly", "yes"])).await;
    let port = redis.node.port;
    let env = vec![("REDIS_URL".to_string(), redis.url())];
    let extra = [("BROKER__REDIS__HEALTH_CHECK_INTERVAL_MS", "200")];
    let a = Arc::new(rec_app_on(Backend::Single, Some(env), &extra).await);
    let b = Arc::new(a.sibling().await);
    let record = a.start().await["record_id"].as_str().unwrap().to_string();
    // Both instances know the recording before the outage.
    for app in [&a, &b] {
        let (status, _) = app.status(&record).await;
        assert_eq!(status, 200);
    }
    let load = Load::start(&[a.clone(), b.clone()], &record, template(), 2);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut redis = redis;
    redis.node.kill();
    let outage = Instant::now();
    let in_memory = |app: Arc<RecApp>| async move {
        helpers::eventually(Duration::from_secs(10), || {
            let app = app.clone();
            async move { app.app.get("/api/storage/status").await.1["storage"] == "memory" }
        })
        .await
    };
    assert!(
        in_memory(a.clone()).await && in_memory(b.clone()).await,
        "both in fallback"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    redis.node.restart();
    let back = |app: Arc<RecApp>| async move {
        helpers::eventually(Duration::from_secs(20), || {
            let app = app.clone();
            async move { app.app.get("/api/storage/status").await.1["storage"] == "redis" }
        })
        .await
    };
    assert!(
        back(a.clone()).await && back(b.clone()).await,
        "both back on Redis"
    );
    println!("outage and replay took {:?}", outage.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, failed) = load.finish().await;
    println!(
        "{} chunks acknowledged, {failed} uploads refused",
        acked.len()
    );
    let stored = assert_all_stored(&a, &record, &acked);
    let highest = *acked.keys().max().expect("chunks");
    let counter = format!("{}recording:{record}:chunk_index", a.app.prefix);
    let value: u64 = redis
        .node
        .cli(&["GET", &counter])
        .trim()
        .parse()
        .expect("counter");
    assert!(
        value > highest,
        "after the replay the counter ({value}) is past every stored index ({highest})"
    );
    let (_, health_a) = a.app.get("/api/health").await;
    let (_, health_b) = b.app.get("/api/health").await;
    let repaired = health_a["recordings"]["index_collisions_repaired"]
        .as_u64()
        .unwrap()
        + health_b["recordings"]["index_collisions_repaired"]
            .as_u64()
            .unwrap();
    assert!(
        repaired > 0,
        "the outage made the two memory counters collide"
    );
    println!("index collisions repaired: {repaired}; redis port {port}");
    assert_merge_holds(&a, &record, stored).await;
}

/// The instance running a merge is SIGKILLed mid-merge (held by an upload
/// in flight): the recording stays `merging` while the dead one may still
/// be alive, then the other instance adopts the merge by itself, with no
/// client call (its watch finds the keepalive stale), and finishes it with
/// every chunk. Clients only poll the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_abandoned_by_a_killed_instance_is_taken_over() {
    use tokio::io::AsyncWriteExt as _;
    let _serial = SERIAL.lock().await;
    let redis = blocking(Single::start).await;
    let dirs = Arc::new(tempfile::tempdir().unwrap());
    let (chunks, out) = (
        dirs.path().join("chunks").display().to_string(),
        dirs.path().join("out").display().to_string(),
    );
    let prefix = format!("m{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let url = redis.url();
    let shared = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("TEMP_DIR", chunks.as_str()),
        ("STORAGE_LOCAL_PATH", out.as_str()),
        ("API_KEYS", API_KEY),
        // A dead instance's upload lease is ignored after 1 + 5 s.
        ("BROKER__RECORDINGS__UPLOAD_TIMEOUT_SECONDS", "1"),
    ];
    let cwd = tempfile::tempdir().unwrap();
    let mut env = vec![("PORT", "0")];
    env.extend_from_slice(&shared);
    let mut doomed = harness::process::start(&env, cwd.path());
    let b = client::rec_app_in(dirs.clone(), Backend::Single, Some(Vec::new()), &shared).await;
    // The doomed instance as a RecApp-like client: same calls, its port.
    let doomed_base = format!("http://127.0.0.1:{}", doomed.port);
    let http = reqwest::Client::new();
    let started: serde_json::Value = http
        .post(format!("{doomed_base}/api/recordings"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let record = started["record_id"].as_str().unwrap().to_string();
    let template = template();
    for n in 0..3 {
        let (status, body) = b
            .chunk_as(&record, API_KEY, media::retag(&template, n))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    // An upload to the doomed instance that never finishes: its lease holds
    // the doomed instance's merge.
    let mut dribble = tokio::net::TcpStream::connect(("127.0.0.1", doomed.port))
        .await
        .unwrap();
    let head = format!(
        "POST /api/recordings/{record}/chunks HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n\
         Content-Length: 100000\r\n\r\n"
    );
    dribble.write_all(head.as_bytes()).await.unwrap();
    dribble.write_all(&template[..100]).await.unwrap();
    // The upload's lease is stored before its body is read.
    let leases = dirs.path().join("chunks").join(format!("{record}.uploads"));
    let leased = helpers::eventually(Duration::from_secs(10), || async {
        std::fs::read_dir(&leases).is_ok_and(|mut d| d.next().is_some())
    })
    .await;
    assert!(leased, "the dribbling upload never took its lease");
    let res = http
        .post(format!("{doomed_base}/api/recordings/{record}/stop"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    doomed.child.kill().unwrap();
    let killed = Instant::now();
    drop(dribble);

    // Soon after, the merge still counts as alive: a stop changes nothing.
    let (status, body) = b.stop(&record).await;
    assert_eq!((status, &body["state"]), (202, &"merging".into()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.status(&record).await.1["state"], "merging");
    // Once it is stale, b adopts it: nobody calls stop again.
    let deadline = Instant::now() + Duration::from_secs(40);
    let done = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (_, now) = b.status(&record).await;
        if now["state"] == "ready" || now["state"] == "failed" {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the merge was never adopted: {now}"
        );
    };
    assert_eq!(done["state"], "ready", "{done}");
    assert_eq!(done["chunks"], 3);
    println!(
        "merge adopted and finished {:?} after the SIGKILL",
        killed.elapsed()
    );
}
