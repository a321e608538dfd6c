//! A steady room workload across two brokers and its verdict: members that
//! publish on a timer while reading everything, then a check that nothing
//! was lost, duplicated, reordered or closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::client::join;
use crate::harness::{self, blocking};

/// Members per broker instance.
const PER_INSTANCE: usize = 2;
/// Each member publishes this often (well under the rate limit).
const PUBLISH_EVERY: Duration = Duration::from_millis(50);
/// Steady load before the trigger, and after the promotion.
const BEFORE: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(4);
/// How long members may take to receive the last messages.
const DRAIN: Duration = Duration::from_secs(5);

/// Settings of the test brokers (fallback on: the outage buffer is part of
/// what is tested).
pub fn broker_env(pairs: &[(&str, String)], prefix: &str) -> Vec<(String, String)> {
    let mut extra = vec![
        ("BROKER__REDIS__HEALTH_CHECK_INTERVAL_MS", "500".to_string()),
        ("REDIS_COMMAND_TIMEOUT", "1000".to_string()),
        ("REDIS_KEY_PREFIX", prefix.to_string()),
    ];
    extra.extend(pairs.iter().cloned());
    harness::broker_env(&extra)
}

/// Two broker instances on the same Redis and key prefix.
pub async fn spawn_pair(pairs: &[(&str, String)]) -> (String, String) {
    let prefix = format!("f{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let env = broker_env(pairs, &prefix);
    (
        harness::spawn_broker(&env).await,
        harness::spawn_broker(&env).await,
    )
}

/// What one member saw.
pub struct Report {
    pub name: String,
    /// The `k` of every publish it sent.
    pub sent: u64,
    /// (publisher, k, id, when).
    pub received: Vec<(String, u64, u64, Instant)>,
    pub errors: Vec<Value>,
    pub closed: Option<String>,
}

pub struct Scenario {
    pub room: String,
    publishing: Arc<AtomicBool>,
    running: Arc<AtomicBool>,
    members: Vec<tokio::task::JoinHandle<Report>>,
}

impl Scenario {
    /// Joins the members (half on each instance) and starts their load.
    pub async fn start(a: &String, b: &String, label: &str) -> Self {
        // RUST_LOG=rtc_broker=debug shows what the brokers did.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let room = format!(
            "{label}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        // Nobody publishes before everyone has joined.
        let publishing = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicBool::new(true));
        let mut members = Vec::new();
        for i in 0..PER_INSTANCE * 2 {
            let app = if i % 2 == 0 { a } else { b };
            let name = format!("m{i}");
            let client = join(app, &room, &name).await;
            members.push(tokio::spawn(member(
                client.into_ws(),
                name,
                publishing.clone(),
                running.clone(),
            )));
        }
        publishing.store(true, Ordering::Relaxed);
        Self {
            room,
            publishing,
            running,
            members,
        }
    }

    /// Runs the load through `trigger`, waits for `promoted`, keeps going,
    /// then checks every member's report.
    pub async fn through(
        self,
        what: &str,
        trigger: impl FnOnce() + Send + 'static,
        promoted: impl FnOnce() -> u16 + Send + 'static,
    ) {
        tokio::time::sleep(BEFORE).await;
        let triggered = Instant::now();
        blocking(trigger).await;
        blocking(promoted).await;
        let promotion = triggered.elapsed();
        tokio::time::sleep(AFTER).await;
        self.publishing.store(false, Ordering::Relaxed);
        // Members keep reading through the drain; whatever has not arrived
        // by its end counts as lost.
        tokio::time::sleep(DRAIN).await;
        self.running.store(false, Ordering::Relaxed);
        let mut done = Vec::new();
        for handle in self.members {
            done.push(handle.await.expect("member task"));
        }
        verify(what, promotion, triggered, &done);
    }
}

/// Publishes every `PUBLISH_EVERY` while `publishing`, reads always, until
/// `running` is cleared and a quiet second passed.
async fn member(
    mut ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    name: String,
    publishing: Arc<AtomicBool>,
    running: Arc<AtomicBool>,
) -> Report {
    let mut report = Report {
        name: name.clone(),
        sent: 0,
        received: Vec::new(),
        errors: Vec::new(),
        closed: None,
    };
    // After a stall, go on at the pace instead of catching up in a burst
    // (which the room's rate limit would answer with `rate_limited`).
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if publishing.load(Ordering::Relaxed) && running.load(Ordering::Relaxed) {
                    let frame = json!({"type": "publish", "data": {"p": name, "k": report.sent}});
                    if ws.send(Message::text(frame.to_string())).await.is_err() {
                        report.closed = Some("send failed".into());
                        return report;
                    }
                    report.sent += 1;
                } else if !running.load(Ordering::Relaxed) && last_heard.elapsed() > Duration::from_millis(500) {
                    return report;
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    last_heard = Instant::now();
                    let v: Value = serde_json::from_str(&text).expect("JSON frame");
                    match v["type"].as_str() {
                        Some("message") => report.received.push((
                            v["data"]["p"].as_str().unwrap_or("?").to_string(),
                            v["data"]["k"].as_u64().unwrap_or(u64::MAX),
                            v["id"].as_u64().unwrap_or(0),
                            Instant::now(),
                        )),
                        Some("error") => report.errors.push(v),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    report.closed = Some(format!("closed by the server: {frame:?}"));
                    return report;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    report.closed = Some(format!("socket error: {e}"));
                    return report;
                }
                None => {
                    report.closed = Some("socket ended".into());
                    return report;
                }
            },
        }
    }
}

fn verify(what: &str, promotion: Duration, triggered: Instant, reports: &[Report]) {
    let sent: HashMap<&str, u64> = reports.iter().map(|r| (r.name.as_str(), r.sent)).collect();
    let total: u64 = sent.values().sum();
    let mut longest_gap = Duration::ZERO;
    for r in reports {
        assert!(
            r.closed.is_none(),
            "{}: {}",
            r.name,
            r.closed.as_deref().unwrap_or("")
        );
        assert!(
            r.errors.is_empty(),
            "{}: error frames {:?}",
            r.name,
            r.errors
        );
        let mut next: HashMap<&str, u64> = HashMap::new();
        let mut last_id = 0;
        for (p, k, id, _) in &r.received {
            assert!(*id > last_id, "{}: id {id} after {last_id}", r.name);
            last_id = *id;
            let expected = next.entry(p.as_str()).or_default();
            if k != expected {
                let around: Vec<_> = r
                    .received
                    .iter()
                    .filter(|(q, ..)| q == p)
                    .map(|(_, k, id, _)| (*k, *id))
                    .skip_while(|(kk, _)| kk + 3 < *expected)
                    .take(6)
                    .collect();
                panic!(
                    "{}: from {p}, got k={k}, expected k={expected}; (k, id) around: {around:?}",
                    r.name
                );
            }
            *expected += 1;
        }
        for (p, n) in &sent {
            let got = next.get(p).copied().unwrap_or(0);
            assert_eq!(
                got, *n,
                "{}: received {got} of the {n} messages {p} sent",
                r.name
            );
        }
        // The longest pause in deliveries around the trigger.
        for pair in r.received.windows(2) {
            if pair[1].3 > triggered {
                longest_gap = longest_gap.max(pair[1].3 - pair[0].3);
            }
        }
    }
    println!(
        "{what}: promotion after {promotion:?}; {total} messages x {} members delivered exactly \
         once, in order, no socket closed; fan-out interrupted for at most {longest_gap:?}",
        reports.len()
    );
}
