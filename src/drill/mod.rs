//! `rtc-broker drill` (SPEC section 8): a failover drill operators run
//! against Sentinel before they trust the broker.
//!
//! It drives steady, bounded load through the given brokers (`load`),
//! triggers `SENTINEL FAILOVER` or a kill command a third of the way in,
//! waits for the sentinels to agree on a new master (`sentinel`), keeps the
//! load going, then verifies every acknowledged write and prints the report
//! (`report`). Exit status: 0 nothing acknowledged was lost, 1 something
//! was, 2 the drill could not run (one line says why).

mod html;
pub mod load;
mod report;
mod sentinel;

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use self::load::{lock, room_gaps, Load, Log};
use self::report::{Report, Verified};
use self::sentinel::Sentinels;
use crate::config::HostPort;

/// Shortest and longest drill.
const MIN_DURATION: u64 = 6;
const MAX_DURATION: u64 = 3600;
/// After the promotion, latencies count as "during" for this long more.
const SETTLE: Duration = Duration::from_secs(2);
/// Room clients keep reading this long after the load stops.
const LINGER: Duration = Duration::from_secs(3);
const ROOM_CLIENTS_PER_BROKER: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Trigger {
    /// `SENTINEL FAILOVER <master-name>`.
    Failover,
    /// Run `--kill-cmd` (e.g. a command that SIGKILLs the master).
    KillCmd,
}

/// `rtc-broker drill` flags.
#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// Broker base URLs, comma-separated (e.g. http://10.0.0.1:8080,http://10.0.0.2:8080).
    #[arg(long, value_delimiter = ',', required = true)]
    pub broker: Vec<String>,
    /// Sentinels, host:port comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub sentinel: Vec<String>,
    /// The master name the sentinels monitor.
    #[arg(long)]
    pub master_name: String,
    /// Seconds of load (the trigger comes at a third).
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    #[arg(long, value_enum, default_value = "failover")]
    pub trigger: Trigger,
    /// With --trigger kill-cmd: run by `sh -c`.
    #[arg(long)]
    pub kill_cmd: Option<String>,
    /// API key for the management calls.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML page with a timeline chart.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<std::path::PathBuf>,
}

/// Runs the drill; the process's exit status.
pub fn run(args: DrillArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return could_not_run(&format!("cannot start a runtime: {e}")),
    };
    match runtime.block_on(drill(args)) {
        Ok((report, json, html)) => {
            if let Some(path) = html {
                let written = html::page(&report)
                    .and_then(|page| std::fs::write(&path, page).map_err(|e| e.to_string()));
                if let Err(e) = written {
                    return could_not_run(&format!(
                        "cannot write the report {}: {e}",
                        path.display()
                    ));
                }
            }
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => return could_not_run(&format!("cannot render the report: {e}")),
                }
            } else {
                report.print();
            }
            ExitCode::from(u8::from(report.lost_anything))
        }
        Err(why) => could_not_run(&why),
    }
}

fn could_not_run(why: &str) -> ExitCode {
    eprintln!("drill could not run: {why}");
    ExitCode::from(2)
}

/// Checked flags.
struct Plan {
    brokers: Vec<String>,
    sentinels: Sentinels,
    duration: Duration,
    trigger: Trigger,
    kill_cmd: Option<String>,
    api_key: Option<String>,
    html: Option<std::path::PathBuf>,
}

fn plan(args: DrillArgs) -> Result<(Plan, bool), String> {
    let brokers: Vec<String> = args
        .broker
        .iter()
        .map(|b| b.trim().trim_end_matches('/').to_string())
        .collect();
    if let Some(bad) = brokers
        .iter()
        .find(|b| !b.starts_with("http://") && !b.starts_with("https://"))
    {
        return Err(format!("--broker {bad:?} is not an http(s) URL"));
    }
    let addrs = args
        .sentinel
        .iter()
        .map(|s| HostPort::try_from(s.clone()).map_err(|e| format!("--sentinel: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if !(MIN_DURATION..=MAX_DURATION).contains(&args.duration) {
        return Err(format!(
            "--duration must be {MIN_DURATION} to {MAX_DURATION} seconds"
        ));
    }
    if args.trigger == Trigger::KillCmd && args.kill_cmd.as_deref().is_none_or(str::is_empty) {
        return Err("--trigger kill-cmd needs --kill-cmd".into());
    }
    if let Some(path) = &args.report {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            return Err(format!("--report {}: no such folder", path.display()));
        }
    }
    let plan = Plan {
        brokers,
        sentinels: Sentinels {
            addrs,
            name: args.master_name,
        },
        duration: Duration::from_secs(args.duration),
        trigger: args.trigger,
        kill_cmd: args.kill_cmd,
        api_key: args.api_key,
        html: args.report,
    };
    Ok((plan, args.json))
}

/// The report, whether to print it as JSON, and where to write the page.
type Outcome = (Report, bool, Option<std::path::PathBuf>);

async fn drill(args: DrillArgs) -> Result<Outcome, String> {
    let (plan, json) = plan(args)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .build()
        .map_err(|e| e.to_string())?;
    for broker in &plan.brokers {
        let live = http
            .get(format!("{broker}/health/live"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if !live.is_ok_and(|r| r.status().is_success()) {
            return Err(format!("broker {broker} unreachable (GET /health/live)"));
        }
    }
    let old_master = plan
        .sentinels
        .agreed_master()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the sentinels disagree on the current master")?;
    let load = Load {
        brokers: Arc::new(plan.brokers.clone()),
        api_key: plan.api_key.clone(),
        run: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
        started: Instant::now(),
        stop: Arc::new(AtomicBool::new(false)),
        log: Arc::new(Log::default()),
        http,
    };
    let record = match load.start_recording().await {
        Ok(record) => Some(record),
        Err(why) => {
            eprintln!("drill: no chunk uploads: {why}");
            None
        }
    };
    let workers = spawn_workers(&load, record.clone());
    let progress = std::io::stdout()
        .is_terminal()
        .then(|| spawn_progress(&load, &plan));

    // The trigger, a third of the way in.
    let triggered_at = plan.duration / 3;
    tokio::time::sleep_until(tokio::time::Instant::from_std(load.started + triggered_at)).await;
    let triggered = Instant::now();
    trigger(&plan).await?;
    let end = load.started + plan.duration;
    let mut new_master = None;
    while Instant::now() < end {
        if let Ok(Some(master)) = plan.sentinels.agreed_master().await {
            if master != old_master {
                new_master = Some((master, triggered.elapsed()));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
    load.stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    let verified = verify(&load, record.as_deref()).await;
    let samples = lock(&load.log.samples).clone();
    let promoted = new_master.as_ref().map(|(_, after)| triggered_at + *after);
    let settled = promoted.unwrap_or(plan.duration) + SETTLE;
    let report = Report {
        duration_s: plan.duration.as_secs_f64(),
        trigger: match plan.trigger {
            Trigger::Failover => "SENTINEL FAILOVER".into(),
            Trigger::KillCmd => "kill command".into(),
        },
        triggered_at_s: triggered_at.as_secs_f64(),
        promotion_s: new_master.as_ref().map(|(_, after)| after.as_secs_f64()),
        old_master: Some(old_master.to_string()),
        new_master: new_master.as_ref().map(|(m, _)| m.to_string()),
        operations: samples.len() as u64,
        errors: samples.iter().filter(|s| s.error.is_some()).count() as u64,
        errors_by_kind: report::errors_by_kind(&samples),
        write_failure_windows: report::windows(&samples, &plan.brokers, triggered_at),
        latency_ms: report::phases(&samples, triggered_at, settled),
        timeline: report::timeline(&samples, plan.duration.as_secs()),
        lost_anything: verified.lost(),
        verified,
    };
    Ok((report, json, plan.html))
}

fn spawn_workers(load: &Load, record: Option<String>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut workers = vec![
        tokio::spawn(load.clone().tokens(0)),
        tokio::spawn(load.clone().tokens(1)),
        tokio::spawn(load.clone().sessions(0)),
    ];
    if let Some(record) = record {
        workers.push(tokio::spawn(load.clone().chunks(record)));
    }
    let room = format!("drill-{}", load.run);
    for broker in 0..load.brokers.len() {
        for k in 0..ROOM_CLIENTS_PER_BROKER {
            let client = broker * ROOM_CLIENTS_PER_BROKER + k;
            let task = load
                .clone()
                .room_client(client, broker, room.clone(), LINGER);
            workers.push(tokio::spawn(task));
        }
    }
    workers
}

/// A progress line on stderr, once a second (only when stdout is a terminal).
fn spawn_progress(load: &Load, plan: &Plan) -> tokio::task::JoinHandle<()> {
    let (load, total) = (load.clone(), plan.duration.as_secs());
    let sentinels = Sentinels {
        addrs: plan.sentinels.addrs.clone(),
        name: plan.sentinels.name.clone(),
    };
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (ops, errors) = {
                let samples = lock(&load.log.samples);
                (
                    samples.len(),
                    samples.iter().filter(|s| s.error.is_some()).count(),
                )
            };
            let master = match sentinels.agreed_master().await {
                Ok(Some(m)) => m.to_string(),
                Ok(None) => "(sentinels disagree)".into(),
                Err(_) => "(no sentinel answers)".into(),
            };
            let elapsed = load.started.elapsed().as_secs().min(total);
            eprint!("\r[{elapsed:>4}/{total} s] ops {ops}  errors {errors}  master {master}    ");
        }
    })
}

async fn trigger(plan: &Plan) -> Result<(), String> {
    match plan.trigger {
        Trigger::Failover => plan.sentinels.failover().await.map_err(|e| e.to_string()),
        Trigger::KillCmd => {
            let cmd = plan.kill_cmd.as_deref().unwrap_or_default();
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                // Its output goes to stderr: stdout is the report (--json).
                .stdout(std::process::Stdio::from(std::io::stderr()))
                .kill_on_drop(true)
                .status();
            match tokio::time::timeout(Duration::from_secs(30), status).await {
                Ok(Ok(s)) if s.success() => Ok(()),
                Ok(Ok(s)) => Err(format!("--kill-cmd exited with {s}")),
                Ok(Err(e)) => Err(format!("--kill-cmd cannot run: {e}")),
                Err(_) => Err("--kill-cmd ran longer than 30 s".into()),
            }
        }
    }
}

/// Reads back every acknowledged write.
async fn verify(load: &Load, record: Option<&str>) -> Verified {
    let tokens = lock(&load.log.tokens).clone();
    let sessions = lock(&load.log.sessions).clone();
    let chunks = lock(&load.log.chunks).clone();
    let mut v = Verified {
        tokens_acknowledged: tokens.len() as u64,
        sessions_acknowledged: sessions.len() as u64,
        chunks_acknowledged: chunks.len() as u64,
        ..Verified::default()
    };
    let get = |path: String| {
        let load = load.clone();
        async move {
            let res = load
                .http
                .get(format!("{}{path}", load.brokers[0]))
                .header("x-api-key", load.api_key.clone().unwrap_or_default())
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .ok()?;
            let status = res.status().as_u16();
            Some((
                status,
                res.json::<serde_json::Value>().await.unwrap_or_default(),
            ))
        }
    };
    let mut fetched =
        futures_util::stream::iter(tokens.into_iter().map(|(sid, token)| async move {
            (get(format!("/api/voice/token/{sid}")).await, token)
        }))
        .buffer_unordered(16);
    while let Some((answer, token)) = fetched.next().await {
        match answer {
            Some((200, body)) if body["rtc_token"] == token.as_str() => {}
            Some((200, _)) => v.tokens_different += 1,
            _ => v.tokens_missing += 1,
        }
    }
    let mut read = futures_util::stream::iter(
        sessions
            .into_iter()
            .map(|sid| async move { get(format!("/api/sessions/{sid}")).await }),
    )
    .buffer_unordered(16);
    while let Some(answer) = read.next().await {
        if !matches!(answer, Some((200, _))) {
            v.sessions_missing += 1;
        }
    }
    let unique: std::collections::HashSet<u64> = chunks.iter().copied().collect();
    v.chunk_indices_duplicated = (chunks.len() - unique.len()) as u64;
    if let Some(record) = record {
        let stored = match get(format!("/api/recordings/{record}/status")).await {
            Some((200, body)) => body["chunks"].as_u64().unwrap_or(0),
            _ => 0,
        };
        v.chunks_missing = (unique.len() as u64).saturating_sub(stored);
    }
    let published = lock(&load.log.published).clone();
    let received = lock(&load.log.received).clone();
    let members = load.brokers.len() * ROOM_CLIENTS_PER_BROKER;
    let (missing, duplicated) = room_gaps(&published, &received, members);
    v.room_messages_published = published.len() as u64;
    v.room_members = members as u64;
    v.room_messages_missing = missing;
    v.room_messages_duplicated = duplicated;
    v.room_publishes_refused = load.log.room_errors.load(Ordering::Relaxed);
    v.websockets_dropped = load.log.sockets_dropped.load(Ordering::Relaxed);
    v
}
