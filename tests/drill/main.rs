//! `rtc-broker drill` against a real Sentinel set and two broker instances:
//! a short drill through `SENTINEL FAILOVER` finds nothing lost (exit 0);
//! one whose trigger deletes every key behind the brokers' backs reports
//! the loss (exit 1), so its "nothing lost" is not vacuous; bad flags,
//! unreachable brokers and a wrong master name exit 2 with one line.
//! The tests run one at a time (each owns its topology).

#[path = "../harness/mod.rs"]
mod harness;

use std::time::Duration;

use serde_json::Value;

use harness::{blocking, SentinelSet};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Drill {
    status: i32,
    report: Value,
    stderr: String,
}

async fn drill(args: &[&str]) -> Drill {
    let out = tokio::process::Command::new(harness::process::BIN)
        .arg("drill")
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("the drill ends in time")
        .expect("run the drill");
    Drill {
        status: out.status.code().unwrap_or(-1),
        report: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A drill against `urls` and the set's sentinels, JSON out, with `extra` flags.
async fn drill_on(set: &SentinelSet, urls: &str, extra: &[&str]) -> Drill {
    let sentinels = set.sentinels_env();
    let mut args = vec![
        "--broker",
        urls,
        "--sentinel",
        &sentinels,
        "--master-name",
        &set.name,
        "--api-key",
        "drill-key",
        "--json",
    ];
    args.extend_from_slice(extra);
    drill(&args).await
}

/// Two brokers on the set, sharing recording folders.
async fn brokers(set: &SentinelSet, dirs: &tempfile::TempDir) -> String {
    let prefix = format!("d{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut pairs: Vec<(&str, String)> = set.broker_env();
    pairs.extend([
        ("REDIS_KEY_PREFIX", prefix),
        ("TEMP_DIR", dirs.path().join("chunks").display().to_string()),
        (
            "STORAGE_LOCAL_PATH",
            dirs.path().join("out").display().to_string(),
        ),
        ("API_KEYS", "drill-key".to_string()),
    ]);
    let env = harness::broker_env(&pairs);
    let a = harness::spawn_broker(&env).await;
    let b = harness::spawn_broker(&env).await;
    format!("{a},{b}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_drill_finds_nothing_lost() {
    let _serial = SERIAL.lock().await;
    let set = blocking(SentinelSet::start).await;
    let dirs = tempfile::tempdir().unwrap();
    let urls = brokers(&set, &dirs).await;
    let page = dirs.path().join("drill.html");
    let page_arg = page.display().to_string();
    let run = drill_on(&set, &urls, &["--duration", "12", "--report", &page_arg]).await;
    let r = &run.report;
    println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
    assert_eq!(run.status, 0, "stderr: {}", run.stderr);
    assert_eq!(r["lost_anything"], false);
    let v = &r["verified"];
    for field in [
        "tokens_acknowledged",
        "sessions_acknowledged",
        "chunks_acknowledged",
        "room_messages_published",
    ] {
        assert!(v[field].as_u64().unwrap_or(0) > 0, "{field}: {v}");
    }
    for field in [
        "tokens_missing",
        "tokens_different",
        "sessions_missing",
        "chunk_indices_duplicated",
        "chunks_missing",
        "websockets_dropped",
    ] {
        assert_eq!(v[field], 0, "{field}: {v}");
    }
    assert!(
        r["promotion_s"].as_f64().is_some(),
        "the sentinels promoted a new master"
    );
    assert_ne!(r["old_master"], r["new_master"]);
    assert_eq!(r["timeline"].as_array().unwrap().len(), 12);
    // The page: self-contained, with the chart and both marks.
    let html = std::fs::read_to_string(&page).expect("the --report page");
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("<svg") && html.contains("</svg>"));
    for label in ["ops/s", "errors/s", "p99 ms", "trigger", "promotion"] {
        assert!(html.contains(label), "{label} missing from the chart");
    }
    for external in ["<script", "src=", "href=", "@import"] {
        assert!(
            !html.contains(external),
            "the page fetches something: {external}"
        );
    }
    let _ = std::fs::copy(&page, "target/drill-report.html");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_reports_writes_lost_behind_its_back() {
    let _serial = SERIAL.lock().await;
    let set = blocking(SentinelSet::start).await;
    let dirs = tempfile::tempdir().unwrap();
    let urls = brokers(&set, &dirs).await;
    // The "failure": every key deleted on the master (and so the replica).
    let flush = format!("redis-cli -p {} FLUSHALL", set.master_port());
    let trigger = [
        "--duration",
        "6",
        "--trigger",
        "kill-cmd",
        "--kill-cmd",
        &flush,
    ];
    let run = drill_on(&set, &urls, &trigger).await;
    assert_eq!(
        run.status, 1,
        "stderr: {}\nreport: {}",
        run.stderr, run.report
    );
    assert_eq!(run.report["lost_anything"], true);
    let v = &run.report["verified"];
    assert!(v["tokens_missing"].as_u64().unwrap() > 0, "{v}");
    assert!(v["sessions_missing"].as_u64().unwrap() > 0, "{v}");
}

/// Brokers, sentinels and master name of a drill.
type Target<'a> = (&'a str, &'a str, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_that_cannot_run_says_why_and_exits_2() {
    let _serial = SERIAL.lock().await;
    let set = blocking(SentinelSet::start).await;
    let dirs = tempfile::tempdir().unwrap();
    let urls = brokers(&set, &dirs).await;
    let sentinels = set.sentinels_env();
    let closed = format!("127.0.0.1:{}", harness::free_port());
    let ok = (urls.as_str(), sentinels.as_str(), set.name.as_str());
    // (brokers, sentinels, master name, more flags): what stderr must say.
    let cases: Vec<(Target, Vec<&str>, &str)> = vec![
        (("http://127.0.0.1:1", ok.1, ok.2), vec![], "unreachable"),
        ((ok.0, &closed, ok.2), vec![], "no sentinel answers"),
        ((ok.0, ok.1, "no-such-master"), vec![], "no master named"),
        (("ftp://x", ok.1, ok.2), vec![], "not an http(s) URL"),
        (ok, vec!["--duration", "1"], "--duration"),
        (ok, vec!["--trigger", "kill-cmd"], "needs --kill-cmd"),
        (
            ok,
            vec!["--report", "/nonexistent/x/drill.html"],
            "no such folder",
        ),
    ];
    let cases = cases.into_iter().map(|((b, s, m), extra, says)| {
        let mut args = vec!["--broker", b, "--sentinel", s, "--master-name", m];
        args.extend(extra);
        (args, says)
    });
    let missing_broker = (vec!["--sentinel", ok.1, "--master-name", ok.2], "--broker");
    for (args, says) in cases.chain([missing_broker]) {
        let run = drill(&args).await;
        assert_eq!(run.status, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
}
