//! Pipelining burst against the broker (`bench/pipeline.sh`, issue #7
//! item 9).
//!
//! Starts the release binary on a loopback port (any `--env KEY=VALUE` is
//! passed to it, e.g. to point it at Redis), then opens `--connections`
//! TCP connections that each write `--requests` pipelined
//! `GET /api/voice/token/<id>` requests at once (HTTP/1.1 pipelining: all
//! written before any response is read) and read every response. Meanwhile
//! a probe client sends one normal request every 100 ms (a token fetch,
//! then `/health/live`) on a keep-alive connection of its own and times it,
//! and the broker's resident memory is sampled from `/proc/<pid>/status`.
//!
//! Prints the broker's RSS before, at its peak and a few seconds after the
//! connections closed, the probe latencies, and how the pipelined requests
//! were answered (200/412, 503 `overloaded`, anything else, never). Bounded:
//! loopback only, at most 1,000 connections × 10,000 requests, and every
//! connection is abandoned after `--timeout-seconds`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "broker.rs"]
mod broker;

use broker::Broker;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    broker: broker::BrokerArgs,
    /// Pipelining connections (capped at 1,000).
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Pipelined requests per connection (capped at 10,000).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Give up on a connection's remaining responses after this long.
    #[arg(long, default_value_t = 60)]
    timeout_seconds: u64,
    /// Seconds to wait after the burst before reading the RSS "after".
    #[arg(long, default_value_t = 5)]
    settle_seconds: u64,
}

fn start_broker(args: &Args) -> (Broker, u16) {
    let (broker, port, lines) = broker::start(args.broker.broker_bin.as_ref(), &args.broker.env);
    // Keep the log flowing (and visible: warnings only) so the broker never
    // blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("broker: {line}");
        }
    });
    (broker, port)
}

/// `VmRSS` and `VmHWM` of a process in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// How one connection's pipelined requests were answered.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    /// 200 (a token) or 412 `no_rtc_token`: served.
    served: u64,
    /// 503 `overloaded` with `Retry-After`: shed.
    shed: u64,
    /// Any other answer (including a 503 without the contract's body).
    other: u64,
    /// Never answered (connection closed or reset first, or timed out).
    unanswered: u64,
    /// Connections that ended with a partial response or a reset.
    broken: u64,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.served += o.served;
        self.shed += o.shed;
        self.other += o.other;
        self.unanswered += o.unanswered;
        self.broken += o.broken;
    }
}

/// One parsed response: status, Retry-After present, body.
struct Parsed {
    status: u16,
    retry_after: bool,
    body: Vec<u8>,
}

/// Takes one complete response off the front of `buf`, if there is one.
fn parse_response(buf: &mut Vec<u8>) -> Option<Parsed> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    let mut retry_after = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name == "content-length" {
            length = value.trim().parse().unwrap_or(0);
        } else if name == "retry-after" {
            retry_after = true;
        }
    }
    let total = head_end + 4 + length;
    if buf.len() < total {
        return None;
    }
    let body = buf[head_end + 4..total].to_vec();
    buf.drain(..total);
    Some(Parsed {
        status,
        retry_after,
        body,
    })
}

fn classify(r: &Parsed, tally: &mut Tally) {
    let overloaded = r.status == 503
        && r.retry_after
        && serde_json::from_slice::<serde_json::Value>(&r.body)
            .is_ok_and(|v| v["error"] == "overloaded" && v["detail"].is_string());
    if r.status == 200 || r.status == 412 {
        tally.served += 1;
    } else if overloaded {
        tally.shed += 1;
    } else {
        tally.other += 1;
    }
}

/// One connection: write every request at once, read every response.
async fn pipeline(port: u16, conn: usize, requests: usize, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        tally.unanswered = requests as u64;
        tally.broken = 1;
        return tally;
    };
    let (mut rd, mut wr) = stream.into_split();
    let one = format!("GET /api/voice/token/pipe-{conn} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
    let all = one.repeat(requests).into_bytes();
    // Written from a task of its own: the broker reads only as fast as it
    // answers, so the write blocks while responses must be read here.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&all).await;
        wr
    });
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut answered = 0usize;
    while answered < requests {
        let read = tokio::time::timeout_at(deadline.into(), rd.read(&mut chunk)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                while let Some(r) = parse_response(&mut buf) {
                    classify(&r, &mut tally);
                    answered += 1;
                }
            }
            Ok(Ok(_)) | Ok(Err(_)) => {
                tally.broken = 1;
                break;
            }
            Err(_) => break, // timed out
        }
    }
    tally.unanswered = (requests - answered) as u64;
    writer.abort();
    tally
}

struct Probe {
    fetch_ms: Vec<f64>,
    health_ms: Vec<f64>,
    failures: u64,
}

async fn probe(port: u16, stop: Arc<AtomicBool>) -> Probe {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut out = Probe {
        fetch_ms: Vec::new(),
        health_ms: Vec::new(),
        failures: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        for (path, into) in [
            ("/api/voice/token/probe", &mut out.fetch_ms),
            ("/health/live", &mut out.health_ms),
        ] {
            let started = Instant::now();
            let res = client
                .get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .await;
            let ok = match res {
                Ok(res) => {
                    let status = res.status().as_u16();
                    res.bytes().await.is_ok() && matches!(status, 200 | 412 | 503)
                }
                Err(_) => false,
            };
            if ok {
                into.push(started.elapsed().as_secs_f64() * 1000.0);
            } else {
                out.failures += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let connections = args.connections.clamp(1, 1000);
    let requests = args.requests.clamp(1, 10_000);
    let (broker, port) = start_broker(&args);
    let pid = broker.0.id();

    // Warm up (one request per path) and let start-up settle.
    let client = reqwest::Client::new();
    for path in ["/api/voice/token/warm", "/health/live"] {
        let _ = client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, _) = rss_kib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).0);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };
    let prober = tokio::spawn(probe(port, stop.clone()));

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_seconds.clamp(1, 300));
    let mut tasks = tokio::task::JoinSet::new();
    for conn in 0..connections {
        tasks.spawn(pipeline(port, conn, requests, deadline));
    }
    let mut tally = Tally::default();
    while let Some(done) = tasks.join_next().await {
        tally.add(done.expect("connection task"));
    }
    let burst_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.await.expect("sampler");
    let probe = prober.await.expect("probe");

    // Every pipelining connection is closed now; watch the RSS come down.
    let mut trajectory = Vec::new();
    for _ in 0..args.settle_seconds.clamp(1, 60) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        trajectory.push(format!("{:.0}", mib(rss_kib(pid).0)));
    }
    let (after, hwm) = rss_kib(pid);
    let peak = peak.max(hwm);

    let total = (connections * requests) as f64;
    let mut fetch = probe.fetch_ms.clone();
    let mut health = probe.health_ms.clone();
    fetch.sort_by(f64::total_cmp);
    health.sort_by(f64::total_cmp);
    let max = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
    println!(
        "rtc-broker pipelining burst [{}]: {connections} connections x {requests} pipelined GET /api/voice/token/<id>, loopback",
        args.broker.label
    );
    println!(
        "  burst took {burst_s:.1} s ({:.0} responses/s)",
        (tally.served + tally.shed + tally.other) as f64 / burst_s
    );
    println!(
        "  RSS: before {:.0} MiB, peak {:.0} MiB, after {} s {:.0} MiB (per second: {})",
        mib(before),
        mib(peak),
        trajectory.len(),
        mib(after),
        trajectory.join(" ")
    );
    println!(
        "  probe token fetch ({} samples): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        fetch.len(),
        percentile(&fetch, 0.5),
        percentile(&fetch, 0.99),
        max(&fetch)
    );
    println!(
        "  probe /health/live ({} samples): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; probe failures {}",
        health.len(),
        percentile(&health, 0.5),
        percentile(&health, 0.99),
        max(&health),
        probe.failures
    );
    println!(
        "  pipelined answers: {} served (200/412), {} shed (503 overloaded, {:.1} %), {} other, {} unanswered; {} connections broken",
        tally.served,
        tally.shed,
        tally.shed as f64 * 100.0 / total,
        tally.other,
        tally.unanswered,
        tally.broken
    );
    // One machine-readable line, collated by bench/pipeline.sh.
    println!(
        "RESULT\t{}\t{:.0}\t{:.0}\t{:.0}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{}\t{}\t{}",
        args.broker.label,
        mib(before),
        mib(peak),
        mib(after),
        percentile(&fetch, 0.5),
        percentile(&fetch, 0.99),
        max(&fetch),
        tally.shed as f64 * 100.0 / total,
        tally.other,
        tally.unanswered,
        tally.broken
    );
}
