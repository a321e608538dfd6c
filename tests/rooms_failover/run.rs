//! A room workload of ordinary clients across two brokers, and its
//! verdict.
//!
//! Members publish at exactly the configured rate on a fixed schedule
//! (`MissedTickBehavior::Burst`: a tick the client itself was late for is
//! sent at once, as a timer-driven client does; nothing paces itself
//! around the broker's stalls), every publish with a `ref`, while reading
//! everything. One more client stays quiet until the trigger and then
//! sends a legitimate burst: one second's worth of publishes at once.
//!
//! The verdict: no socket closed; every publish answered (an ack, or an
//! error frame with its `ref` for one truly refused); every acknowledged
//! publish delivered to every member exactly once, each publisher's in
//! order; no other error frame. It prints the longest pause in fan-out.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::client::join;
use crate::harness::{self, blocking};

/// Publishes per second of every publisher: exactly the configured limit.
pub const RATE: u32 = 25;
/// Members per broker instance (each publishes at `RATE`).
const PER_INSTANCE: usize = 2;
/// Steady load before the trigger, and after the promotion.
const BEFORE: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(4);
/// How long members may take to receive the last messages.
const DRAIN: Duration = Duration::from_secs(6);

/// Settings of the test brokers (fallback on: the outage buffer is part of
/// what is tested).
pub fn broker_env(pairs: &[(&str, String)], prefix: &str) -> Vec<(String, String)> {
    let mut extra = vec![
        ("BROKER__REDIS__HEALTH_CHECK_INTERVAL_MS", "500".to_string()),
        ("REDIS_COMMAND_TIMEOUT", "1000".to_string()),
        ("REDIS_KEY_PREFIX", prefix.to_string()),
        ("BROKER__ROOMS__MESSAGES_PER_SECOND", RATE.to_string()),
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
    /// How many publishes it sent (`k` = 0..sent).
    pub sent: u64,
    /// k -> the ack's id (`None`: held in the outage buffer).
    pub acked: BTreeMap<u64, Option<u64>>,
    /// k -> the code of the error frame that refused it.
    pub refused: BTreeMap<u64, String>,
    /// (publisher, k, id, when).
    pub received: Vec<(String, u64, u64, Instant)>,
    /// Error frames without a `ref`, or of another code.
    pub stray_errors: Vec<Value>,
    pub closed: Option<String>,
}

/// How a member publishes.
#[derive(Clone, Copy)]
enum Pace {
    /// `RATE` a second on a fixed schedule, from the start.
    Steady,
    /// Nothing until the trigger, then `RATE` publishes at once.
    Burst,
}

pub struct Scenario {
    pub room: String,
    publishing: Arc<AtomicBool>,
    running: Arc<AtomicBool>,
    trigger: Arc<Notify>,
    members: Vec<tokio::task::JoinHandle<Report>>,
}

impl Scenario {
    /// Joins the members (half on each instance, the burster on `a`) and
    /// starts their load.
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
        let trigger = Arc::new(Notify::new());
        let mut members = Vec::new();
        let mut roster: Vec<(&String, String, Pace)> = (0..PER_INSTANCE * 2)
            .map(|i| {
                (
                    if i % 2 == 0 { a } else { b },
                    format!("m{i}"),
                    Pace::Steady,
                )
            })
            .collect();
        roster.push((a, "burst".to_string(), Pace::Burst));
        for (app, name, pace) in roster {
            let client = join(app, &room, &name).await;
            let member = Member {
                name,
                pace,
                publishing: publishing.clone(),
                running: running.clone(),
                trigger: trigger.clone(),
            };
            members.push(tokio::spawn(member.run(client.into_ws())));
        }
        publishing.store(true, Ordering::Relaxed);
        Self {
            room,
            publishing,
            running,
            trigger,
            members,
        }
    }

    /// Runs the load through `trigger`, waits for `recovered` (the
    /// promotion, or the end of an outage), keeps going, then checks every
    /// member's report.
    pub async fn through(
        self,
        what: &str,
        trigger: impl FnOnce() + Send + 'static,
        recovered: impl FnOnce() + Send + 'static,
    ) {
        tokio::time::sleep(BEFORE).await;
        let triggered = Instant::now();
        self.trigger.notify_one();
        blocking(trigger).await;
        blocking(recovered).await;
        let recovery = triggered.elapsed();
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
        verify(what, recovery, triggered, &done);
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Member {
    name: String,
    pace: Pace,
    publishing: Arc<AtomicBool>,
    running: Arc<AtomicBool>,
    trigger: Arc<Notify>,
}

impl Member {
    /// Publishes by its pace while `publishing`, reads always, until
    /// `running` is cleared and half a quiet second passed.
    async fn run(self, mut ws: Ws) -> Report {
        let mut report = Report {
            name: self.name.clone(),
            sent: 0,
            acked: BTreeMap::new(),
            refused: BTreeMap::new(),
            received: Vec::new(),
            stray_errors: Vec::new(),
            closed: None,
        };
        // A fixed schedule: the default `Burst` sends a tick the client
        // was late for at once.
        let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
        let mut last_heard = Instant::now();
        let mut burst_due = matches!(self.pace, Pace::Burst);
        loop {
            tokio::select! {
                _ = self.trigger.notified(), if burst_due => {
                    burst_due = false;
                    for _ in 0..RATE {
                        if let Err(e) = self.publish(&mut ws, &mut report).await {
                            report.closed = Some(e);
                            return report;
                        }
                    }
                }
                _ = tick.tick() => {
                    let steady = matches!(self.pace, Pace::Steady);
                    if steady && self.publishing.load(Ordering::Relaxed) && self.running.load(Ordering::Relaxed) {
                        if let Err(e) = self.publish(&mut ws, &mut report).await {
                            report.closed = Some(e);
                            return report;
                        }
                    } else if !self.running.load(Ordering::Relaxed)
                        && last_heard.elapsed() > Duration::from_millis(500)
                    {
                        return report;
                    }
                }
                frame = ws.next() => {
                    last_heard = Instant::now();
                    if let Err(closed) = read(frame, &mut report) {
                        report.closed = Some(closed);
                        return report;
                    }
                }
            }
        }
    }

    async fn publish(&self, ws: &mut Ws, report: &mut Report) -> Result<(), String> {
        let k = report.sent;
        let frame = json!({"type": "publish", "data": {"p": self.name, "k": k}, "ref": k});
        ws.send(Message::text(frame.to_string()))
            .await
            .map_err(|e| format!("send failed: {e}"))?;
        report.sent += 1;
        Ok(())
    }
}

type Frame = Option<Result<Message, tokio_tungstenite::tungstenite::Error>>;

/// Files one frame in the report; `Err` when the socket ended.
fn read(frame: Frame, report: &mut Report) -> Result<(), String> {
    let text = match frame {
        Some(Ok(Message::Text(text))) => text,
        Some(Ok(Message::Close(frame))) => return Err(format!("closed by the server: {frame:?}")),
        Some(Ok(_)) => return Ok(()),
        Some(Err(e)) => return Err(format!("socket error: {e}")),
        None => return Err("socket ended".into()),
    };
    let v: Value = serde_json::from_str(&text).expect("JSON frame");
    match v["type"].as_str() {
        Some("message") => report.received.push((
            v["data"]["p"].as_str().unwrap_or("?").to_string(),
            v["data"]["k"].as_u64().unwrap_or(u64::MAX),
            v["id"].as_u64().unwrap_or(0),
            Instant::now(),
        )),
        Some("ack") => match v["ref"].as_u64() {
            Some(k) => {
                report.acked.insert(k, v["id"].as_u64());
            }
            None => report.stray_errors.push(v),
        },
        Some("error") => match (v["ref"].as_u64(), v["error"].as_str()) {
            (Some(k), Some("storage_unavailable")) => {
                report.refused.insert(k, "storage_unavailable".into());
            }
            _ => report.stray_errors.push(v),
        },
        _ => {}
    }
    Ok(())
}

fn verify(what: &str, recovery: Duration, triggered: Instant, reports: &[Report]) {
    // Every publish was answered, and nothing refused but for storage.
    let mut expected: HashMap<&str, Vec<u64>> = HashMap::new();
    let (mut acked, mut buffered, mut refused) = (0, 0, 0);
    for r in reports {
        assert!(
            r.closed.is_none(),
            "{}: {}",
            r.name,
            r.closed.as_deref().unwrap_or("")
        );
        assert!(
            r.stray_errors.is_empty(),
            "{}: error frames not refusing a publish: {:?}",
            r.name,
            r.stray_errors
        );
        for k in 0..r.sent {
            assert!(
                r.acked.contains_key(&k) || r.refused.contains_key(&k),
                "{}: publish {k} of {} never answered",
                r.name,
                r.sent
            );
        }
        acked += r.acked.len();
        buffered += r.acked.values().filter(|id| id.is_none()).count();
        refused += r.refused.len();
        expected.insert(&r.name, r.acked.keys().copied().collect());
    }
    let mut longest_gap = Duration::ZERO;
    for r in reports {
        let mut got: HashMap<&str, Vec<u64>> = HashMap::new();
        let mut last_id = 0;
        for (p, k, id, _) in &r.received {
            assert!(*id > last_id, "{}: id {id} after {last_id}", r.name);
            last_id = *id;
            got.entry(p.as_str()).or_default().push(*k);
        }
        for (p, want) in &expected {
            let had = got.get(p).cloned().unwrap_or_default();
            if &had != want {
                let missing: Vec<_> = want.iter().filter(|k| !had.contains(k)).collect();
                let at = had.iter().zip(want.iter()).position(|(h, w)| h != w);
                let around = |v: &Vec<u64>| {
                    let from = at.unwrap_or(0).saturating_sub(3);
                    v.iter().skip(from).take(8).copied().collect::<Vec<_>>()
                };
                let ids: Vec<_> = r
                    .received
                    .iter()
                    .filter(|(q, ..)| q == p)
                    .skip(at.unwrap_or(0).saturating_sub(3))
                    .take(8)
                    .map(|(_, k, id, _)| (*k, *id))
                    .collect();
                panic!(
                    "{}: from {p} received {} of {} acknowledged publishes (missing {:?}; \
                     in order and once each expected); first difference at {at:?}: \
                     got {:?}, wanted {:?}; (k, id) there: {ids:?}",
                    r.name,
                    had.len(),
                    want.len(),
                    &missing[..missing.len().min(20)],
                    around(&had),
                    around(want),
                );
            }
        }
        // The longest pause in deliveries around the trigger.
        for pair in r.received.windows(2) {
            if pair[1].3 > triggered {
                longest_gap = longest_gap.max(pair[1].3 - pair[0].3);
            }
        }
    }
    let sent: u64 = reports.iter().map(|r| r.sent).sum();
    println!(
        "{what}: recovered after {recovery:?}; {sent} publishes by {} publishers at {RATE}/s \
         (and a burst of {RATE}), {acked} acknowledged ({buffered} via the outage buffer), \
         {refused} refused; each delivered to all {} members exactly once, in order; no socket \
         closed; fan-out paused for at most {longest_gap:?}",
        reports.len(),
        reports.len()
    );
}
