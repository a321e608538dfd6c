//! Load generator for the broker's benchmark (`bench/run.sh`).
//!
//! Starts the release binary on a loopback port (any `--env KEY=VALUE` is
//! passed to it, e.g. to point it at Redis), then drives each operation
//! with `--concurrency` client tasks for `--seconds` seconds and prints
//! requests/s and p50/p99 latency per operation. Bounded in time and
//! loopback-only by construction.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "broker.rs"]
mod broker;

use broker::Broker;
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    broker: broker::BrokerArgs,
    /// Seconds per operation (capped at 120).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Distinct session ids used.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
}

fn start_broker(args: &Args) -> (Broker, u16) {
    let (broker, port, lines) = broker::start(args.broker.broker_bin.as_ref(), &args.broker.env);
    // Keep draining the log so the broker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (broker, port)
}

#[derive(Clone, Copy)]
enum Op {
    Issue,
    Fetch,
}

impl Op {
    fn short(self) -> &'static str {
        match self {
            Op::Issue => "issue",
            Op::Fetch => "fetch",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Op::Issue => "token issue (POST /api/voice/token)",
            Op::Fetch => "token fetch (GET /api/voice/token/{id})",
        }
    }
}

struct Outcome {
    latencies_us: Vec<u64>,
    errors: u64,
}

async fn drive(
    op: Op,
    base: Arc<String>,
    client: reqwest::Client,
    task: usize,
    sessions: usize,
    until: Instant,
) -> Outcome {
    let mut out = Outcome {
        latencies_us: Vec::new(),
        errors: 0,
    };
    let mut n = task;
    while Instant::now() < until {
        let sid = format!("bench-{}", n % sessions);
        n += 7919;
        let started = Instant::now();
        let result = match op {
            Op::Issue => {
                client
                    .post(format!("{base}/api/voice/token"))
                    .json(&json!({"session_id": sid, "identity": "bench", "ttl_seconds": 600}))
                    .send()
                    .await
            }
            Op::Fetch => {
                client
                    .get(format!("{base}/api/voice/token/{sid}"))
                    .send()
                    .await
            }
        };
        let ok = match result {
            Ok(res) => res.status().is_success() && res.bytes().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            out.latencies_us.push(started.elapsed().as_micros() as u64);
        } else {
            out.errors += 1;
        }
    }
    out
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let seconds = args.seconds.clamp(1, 120);
    let (_broker, port) = start_broker(&args);
    let base = Arc::new(format!("http://127.0.0.1:{port}"));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .expect("client");

    // Seed every session so fetches hit live tokens.
    for i in 0..args.sessions {
        let res = client
            .post(format!("{base}/api/voice/token"))
            .json(&json!({"session_id": format!("bench-{i}"), "ttl_seconds": 600}))
            .send()
            .await
            .expect("seed request");
        assert!(
            res.status().is_success(),
            "seeding failed: {}",
            res.status()
        );
    }

    println!(
        "rtc-broker benchmark [{}]: {} client tasks, {} s per operation, loopback",
        args.broker.label, args.concurrency, seconds
    );
    println!(
        "{:<42} {:>10} {:>9} {:>9} {:>8}",
        "operation", "req/s", "p50 ms", "p99 ms", "errors"
    );
    for op in [Op::Issue, Op::Fetch] {
        let started = Instant::now();
        let until = started + Duration::from_secs(seconds);
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..args.concurrency {
            tasks.spawn(drive(
                op,
                base.clone(),
                client.clone(),
                task,
                args.sessions,
                until,
            ));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        while let Some(done) = tasks.join_next().await {
            let done = done.expect("load task");
            all.extend(done.latencies_us);
            errors += done.errors;
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.sort_unstable();
        let (rps, p50, p99) = (
            all.len() as f64 / elapsed,
            percentile(&all, 0.50),
            percentile(&all, 0.99),
        );
        println!(
            "{:<42} {:>10.0} {:>9.2} {:>9.2} {:>8}",
            op.name(),
            rps,
            p50,
            p99,
            errors
        );
        // One machine-readable line per result, collated by bench/run.sh.
        println!(
            "RESULT\t{}\t{}\t{rps:.0}\t{p50:.2}\t{p99:.2}\t{errors}",
            args.broker.label,
            op.short()
        );
    }
}
