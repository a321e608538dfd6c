//! Recording benchmark (`bench/recordings.sh`, issue #9).
//!
//! Starts the release binary on a loopback port (`--env KEY=VALUE` passes
//! settings, e.g. REDIS_URL) and measures:
//!
//! - chunk upload throughput over HTTP (`--concurrency` uploaders into one
//!   recording) and over the recording WebSocket (`--concurrency` sockets,
//!   each into its own recording, one chunk in flight per socket): MB/s,
//!   p50 and p99 per chunk;
//! - with `--merge`, the merge time (stop -> `ready` in the status, polled
//!   every 10 ms) of 10, 100 and 1,000 chunks of both kinds (independent
//!   1-second files; one continuous stream cut into 1-second pieces), next
//!   to `cat` of the same bytes into one file, the physical floor.
//!
//! Test media come from ffmpeg's lavfi sources (VP8 + Opus, 320x240).
//! Bounded: loopback only, at most 16 uploaders, 4,000 chunks of at most
//! 16 MiB per phase, 1,000 chunks per merge.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "broker.rs"]
mod broker;

use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    broker: broker::BrokerArgs,
    /// Chunk size for the upload phases, KiB (capped at 16 MiB).
    #[arg(long, default_value_t = 256)]
    chunk_kib: usize,
    /// Chunks per upload phase (capped at 4,000).
    #[arg(long, default_value_t = 800)]
    chunks: usize,
    /// Uploaders (HTTP) or sockets (WebSocket) at once (capped at 16).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Also measure merges (10, 100, 1,000 chunks of both kinds).
    #[arg(long)]
    merge: bool,
    /// Largest merge measured (10, 100 or 1000).
    #[arg(long, default_value_t = 1000)]
    merge_max: usize,
    /// Folder for test media and the `cat` floor.
    #[arg(long, default_value = "target/bench-recordings")]
    work: PathBuf,
}

const API_KEY: &str = "bench-key";

struct Bench {
    base: String,
    client: reqwest::Client,
}

impl Bench {
    async fn start_recording(&self) -> (String, String) {
        let res = self
            .client
            .post(format!("{}/api/recordings", self.base))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .expect("start");
        let body: Value = res.json().await.expect("start JSON");
        let id = body["record_id"].as_str().expect("record_id").to_string();
        let token = body["upload_token"]
            .as_str()
            .expect("upload_token")
            .to_string();
        (id, token)
    }

    async fn upload(&self, record: &str, bytes: Vec<u8>) -> Duration {
        let at = Instant::now();
        let res = self
            .client
            .post(format!("{}/api/recordings/{record}/chunks", self.base))
            .header("x-api-key", API_KEY)
            .body(bytes)
            .send()
            .await
            .expect("chunk");
        assert_eq!(
            res.status().as_u16(),
            201,
            "{}",
            res.text().await.unwrap_or_default()
        );
        at.elapsed()
    }

    async fn status(&self, record: &str) -> Value {
        let res = self
            .client
            .get(format!("{}/api/recordings/{record}/status", self.base))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .expect("status");
        res.json().await.expect("status JSON")
    }

    /// Stop -> ready, polled every 10 ms; and the status at the end.
    async fn merge(&self, record: &str) -> (Duration, Value) {
        let at = Instant::now();
        let res = self
            .client
            .post(format!("{}/api/recordings/{record}/stop", self.base))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .expect("stop");
        assert_eq!(res.status().as_u16(), 202);
        loop {
            let status = self.status(record).await;
            match status["state"].as_str() {
                Some("ready") => return (at.elapsed(), status),
                Some("failed") => panic!("merge failed: {status}"),
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
            assert!(
                at.elapsed() < Duration::from_secs(600),
                "merge took over 10 minutes"
            );
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(label: &str, transport: &str, bytes: usize, elapsed: Duration, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "| {label} | {transport} | {} | {:.0} | {:.1} | {:.2} | {:.2} |",
        lat.len(),
        bytes as f64 / 1024.0,
        bytes as f64 * lat.len() as f64 / elapsed.as_secs_f64() / 1e6,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    );
}

async fn upload_http(bench: &std::sync::Arc<Bench>, args: &Args, label: &str) {
    let (record, _) = bench.start_recording().await;
    let size = args.chunk_kib.min(16 * 1024) * 1024;
    let total = args.chunks.min(4000);
    let workers = args.concurrency.clamp(1, 16);
    let at = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (bench, record) = (bench.clone(), record.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for n in (w..total).step_by(workers) {
                lat.push(bench.upload(&record, vec![(n % 251) as u8; size]).await);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("uploader"));
    }
    report(label, "HTTP", size, at.elapsed(), lat);
}

async fn upload_ws(bench: &std::sync::Arc<Bench>, args: &Args, label: &str) {
    let size = args.chunk_kib.min(16 * 1024) * 1024;
    let total = args.chunks.min(4000);
    let workers = args.concurrency.clamp(1, 16);
    let mut sockets = Vec::new();
    for _ in 0..workers {
        let (record, token) = bench.start_recording().await;
        let url = format!(
            "{}/ws/recordings/{record}?token={token}",
            bench.base.replacen("http", "ws", 1)
        );
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
        sockets.push(ws);
    }
    let at = Instant::now();
    let mut tasks = Vec::new();
    for (w, mut ws) in sockets.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for n in (w..total).step_by(workers) {
                let sent = Instant::now();
                ws.send(Message::Binary(vec![(n % 251) as u8; size].into()))
                    .await
                    .expect("send");
                loop {
                    match ws.next().await.expect("open").expect("frame") {
                        Message::Text(t) => {
                            let v: Value = serde_json::from_str(&t).expect("JSON");
                            assert_eq!(v["event"], "chunkSaved", "{v}");
                            break;
                        }
                        _ => continue,
                    }
                }
                lat.push(sent.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("socket"));
    }
    report(label, "WebSocket", size, at.elapsed(), lat);
}

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error"])
        .args(args)
        .output()
        .expect("ffmpeg (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn encode(seconds: usize, out: &Path, extra: &[&str]) {
    let t = seconds.to_string();
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440",
        "-t",
        &t,
        "-c:v",
        "libvpx",
        "-b:v",
        "500k",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-g",
        "25",
        "-c:a",
        "libopus",
    ];
    args.extend_from_slice(extra);
    let out = out.display().to_string();
    args.extend(["-y", &out]);
    ffmpeg(&args);
}

/// The chunks of one merge: `count` independent 1-second files, or one
/// `count`-second stream cut into `count` pieces at byte offsets.
fn chunks(work: &Path, kind: &str, count: usize) -> Vec<Vec<u8>> {
    if kind == "independent" {
        let file = work.join("one-second.webm");
        if !file.exists() {
            encode(1, &file, &["-f", "webm"]);
        }
        let bytes = std::fs::read(&file).expect("media");
        return vec![bytes; count];
    }
    let file = work.join(format!("stream-{count}.webm"));
    if !file.exists() {
        encode(
            count,
            &file,
            &["-f", "webm", "-live", "1", "-cluster_time_limit", "1000"],
        );
    }
    let bytes = std::fs::read(&file).expect("media");
    let step = bytes.len().div_ceil(count);
    bytes.chunks(step).map(<[u8]>::to_vec).collect()
}

/// `cat` of the chunk files into one file: reading and writing the bytes
/// once, the floor under any merge.
fn cat_floor(work: &Path, pieces: &[Vec<u8>]) -> Duration {
    let dir = work.join("cat");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cat dir");
    let files: Vec<String> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let f = dir.join(format!("{i:06}.webm"));
            std::fs::write(&f, p).expect("chunk file");
            f.display().to_string()
        })
        .collect();
    let out = std::fs::File::create(dir.join("out.webm")).expect("out");
    let at = Instant::now();
    let status = Command::new("cat")
        .args(&files)
        .stdout(out)
        .status()
        .expect("cat");
    assert!(status.success());
    let elapsed = at.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}

async fn merges(bench: &Bench, args: &Args) {
    println!();
    println!("| chunks | kind | MB | merge s | per chunk ms | cat s | merge / cat | duration s |");
    println!("|---|---|---|---|---|---|---|---|");
    for count in [10, 100, 1000]
        .into_iter()
        .filter(|c| *c <= args.merge_max.min(1000))
    {
        for kind in ["independent", "stream"] {
            let pieces = chunks(&args.work, kind, count);
            let bytes: usize = pieces.iter().map(Vec::len).sum();
            let (record, _) = bench.start_recording().await;
            for piece in &pieces {
                bench.upload(&record, piece.clone()).await;
            }
            let (merge, status) = bench.merge(&record).await;
            let cat = cat_floor(&args.work, &pieces);
            println!(
                "| {count} | {kind} | {:.1} | {:.2} | {:.2} | {:.3} | {:.0}x | {:.1} |",
                bytes as f64 / 1e6,
                merge.as_secs_f64(),
                merge.as_secs_f64() * 1000.0 / count as f64,
                cat.as_secs_f64(),
                merge.as_secs_f64() / cat.as_secs_f64().max(1e-6),
                status["duration_s"].as_f64().unwrap_or_default(),
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work).expect("work dir");
    let dirs = tempfile::tempdir_in(&args.work).expect("broker dirs");
    let mut env = args.broker.env.clone();
    env.push(format!("TEMP_DIR={}", dirs.path().join("chunks").display()));
    env.push(format!(
        "STORAGE_LOCAL_PATH={}",
        dirs.path().join("out").display()
    ));
    env.push(format!("API_KEYS={API_KEY}"));
    env.push("BROKER_CONFIG_DIR=/nonexistent".into());
    let (_broker, port, lines) = broker::start(args.broker.broker_bin.as_ref(), &env);
    // The broker's log: errors are shown (a failed upload says why there).
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("ERROR") {
                eprintln!("broker: {line}");
            }
        }
    });
    let bench = std::sync::Arc::new(Bench {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(32)
            .build()
            .expect("client"),
    });
    println!("| backend | transport | chunks | KiB each | MB/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    upload_http(&bench, &args, &args.broker.label).await;
    upload_ws(&bench, &args, &args.broker.label).await;
    if args.merge {
        merges(&bench, &args).await;
    }
}
