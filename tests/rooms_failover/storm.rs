//! A rolling deploy as room clients see it: 2,000 clients in 40 rooms on
//! instance A (the real binary), a back end publishing into every room
//! through instance B, and SIGTERM to A. A answers readiness 503, refuses
//! upgrades, and closes its sockets with 1001 spread over
//! `server.drain_seconds`; every client reconnects to B with
//! `since`/`epoch`, is welcomed with `recovered: true`, and ends with every
//! message of its room exactly once, in order. Printed: how long until all
//! were back, and the peak connects per second B took.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::client::issue;
use crate::harness::process::start;
use crate::harness::{blocking, Single};
use crate::run::broker_env;
use crate::SERIAL;

const CLIENTS: usize = 2_000;
const ROOMS: usize = 40;
/// One message a second per room, from the back end.
const PUBLISH_EVERY: Duration = Duration::from_millis(1000 / ROOMS as u64);
const DRAIN_SECONDS: u64 = 5;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What one client lived through.
#[derive(Default)]
struct Outcome {
    room: usize,
    /// The `k` of every message, in arrival order.
    got: Vec<u64>,
    /// When A closed it, with which code, and when B welcomed it back.
    closed_at: Option<Instant>,
    close_code: Option<CloseCode>,
    back_at: Option<Instant>,
    recovered: Option<bool>,
    failure: Option<String>,
}

fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        soft >= 3 * CLIENTS as u64,
        "the storm needs {} open files; the limit is {soft}",
        3 * CLIENTS
    );
}

async fn connect(base: &str, room: &str, query: &str) -> Result<(Ws, Value), String> {
    let url = format!("{}/ws/rooms/{room}?{query}", base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let welcome: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                return Ok((ws, welcome));
            }
            Ok(Some(Ok(_))) => continue,
            other => return Err(format!("no welcome: {other:?}")),
        }
    }
}

/// Reads until the socket closes (then `Some(code)`) or `done` is set and
/// it was quiet for a while (then `None`). `last` follows the ids.
async fn read(
    ws: &mut Ws,
    out: &mut Outcome,
    last: &mut u64,
    done: &AtomicBool,
) -> Option<CloseCode> {
    loop {
        let frame = match tokio::time::timeout(Duration::from_millis(1500), ws.next()).await {
            Err(_) if done.load(Ordering::Relaxed) => return None,
            Err(_) => continue,
            Ok(frame) => frame,
        };
        match frame {
            Some(Ok(Message::Text(text))) => {
                let v: Value = serde_json::from_str(&text).expect("JSON frame");
                if v["type"] == "message" {
                    let id = v["id"].as_u64().unwrap_or(0);
                    if id <= *last {
                        out.failure = Some(format!("id {id} after {last}"));
                    }
                    *last = id;
                    out.got.push(v["data"]["k"].as_u64().unwrap_or(u64::MAX));
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Some(frame.map_or(CloseCode::Status, |f| f.code))
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Some(CloseCode::Abnormal),
        }
    }
}

/// One client: on A until A closes it, then on B, resuming.
async fn client(
    a: String,
    b: String,
    room: usize,
    token: String,
    done: Arc<AtomicBool>,
) -> Outcome {
    let mut out = Outcome {
        room,
        ..Outcome::default()
    };
    let name = format!("storm-{room}");
    let (mut ws, welcome) = match connect(&a, &name, &format!("token={token}")).await {
        Ok(joined) => joined,
        Err(e) => {
            out.failure = Some(e);
            return out;
        }
    };
    let epoch = welcome["epoch"].as_str().unwrap_or_default().to_string();
    let mut last = welcome["last_id"].as_u64().unwrap_or(0);
    let Some(code) = read(&mut ws, &mut out, &mut last, &done).await else {
        out.failure = Some("never closed by A".into());
        return out;
    };
    out.closed_at = Some(Instant::now());
    out.close_code = Some(code);
    let query = format!("token={token}&since={last}&epoch={epoch}");
    let (mut ws, welcome) = match connect(&b, &name, &query).await {
        Ok(joined) => joined,
        Err(e) => {
            out.failure = Some(format!("reconnect to B: {e}"));
            return out;
        }
    };
    out.back_at = Some(Instant::now());
    out.recovered = welcome["recovered"].as_bool();
    if let Some(code) = read(&mut ws, &mut out, &mut last, &done).await {
        out.failure = Some(format!("B closed it: {code:?}"));
    }
    out
}

/// Publishes round-robin into every room through B until `stop`; the `k`s
/// each room was sent (answered 202).
async fn publisher(b: String, stop: Arc<AtomicBool>) -> Vec<Vec<u64>> {
    let http = reqwest::Client::new();
    let mut sent = vec![Vec::new(); ROOMS];
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let room = (n % ROOMS as u64) as usize;
        let k = n / ROOMS as u64;
        let res = http
            .post(format!("{b}/api/rooms/storm-{room}/publish"))
            .json(&json!({"data": {"k": k}}))
            .send()
            .await
            .expect("publish");
        assert_eq!(res.status(), 202, "back-end publish refused");
        sent[room].push(k);
        n += 1;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_after_sigterm_misses_nothing() {
    let _serial = SERIAL.lock().await;
    raise_open_files();
    let redis = blocking(Single::start).await;
    let prefix = format!("s{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let url = redis.url();
    let drain = DRAIN_SECONDS.to_string();
    let dir = tempfile::tempdir().unwrap();
    let a_env = [
        ("PORT", "0"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("BROKER__SERVER__DRAIN_SECONDS", drain.as_str()),
    ];
    let mut a_proc = start(&a_env, dir.path());
    let a = format!("http://127.0.0.1:{}", a_proc.port);
    let b = crate::harness::spawn_broker(&broker_env(&[("REDIS_URL", url.clone())], &prefix)).await;

    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let room = i % ROOMS;
        let token = issue(&b, &format!("c{i}"), &format!("storm-{room}"), 600, None)
            .await
            .token;
        clients.push(tokio::spawn(client(
            a.clone(),
            b.clone(),
            room,
            token,
            done.clone(),
        )));
        if i % 100 == 99 {
            // Let the joins so far finish before the next hundred.
            wait_for_connections(&a, i + 1).await;
        }
    }
    wait_for_connections(&a, CLIENTS).await;
    println!("{CLIENTS} clients on A after {:?}", started.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(publisher(b.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = nix::unistd::Pid::from_raw(a_proc.child.id() as i32);
    let term = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    // Readiness answers 503 at once, before the sockets go.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = reqwest::get(format!("{a}/health/ready")).await.unwrap();
    assert_eq!(ready.status(), 503, "A still ready while draining");
    let status = blocking(move || {
        let status = a_proc.wait_exit(Duration::from_secs(DRAIN_SECONDS + 20));
        (status, a_proc)
    })
    .await;
    assert!(
        status.0.is_some_and(|s| s.success()),
        "A's exit: {:?}",
        status.0
    );
    // Publishing goes on a while after everyone is back, then stops.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = publishing.await.expect("publisher");
    done.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::with_capacity(CLIENTS);
    for c in clients {
        outcomes.push(c.await.expect("client task"));
    }
    verify(&outcomes, &sent, term);
}

/// Waits until A counts `n` room connections (its health's rooms stats).
async fn wait_for_connections(app: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health: Value = reqwest::get(format!("{app}/api/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["rooms"]["connections"].as_u64() >= Some(n as u64) {
            return;
        }
        assert!(Instant::now() < deadline, "only {health} after 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn verify(outcomes: &[Outcome], sent: &[Vec<u64>], term: Instant) {
    let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
    let (mut first_close, mut last_close, mut last_back) =
        (None::<Duration>, Duration::ZERO, Duration::ZERO);
    for (i, o) in outcomes.iter().enumerate() {
        assert!(o.failure.is_none(), "client {i}: {:?}", o.failure);
        assert_eq!(
            o.close_code,
            Some(CloseCode::Away),
            "client {i} closed by A with"
        );
        assert_eq!(
            o.recovered,
            Some(true),
            "client {i} resumed without recovery"
        );
        assert_eq!(
            o.got, sent[o.room],
            "client {i} (room {}): not every message once, in order",
            o.room
        );
        let (Some(closed), Some(back)) = (o.closed_at, o.back_at) else {
            panic!("client {i} never came back");
        };
        let closed = closed - term;
        first_close = Some(first_close.map_or(closed, |f| f.min(closed)));
        last_close = last_close.max(closed);
        last_back = last_back.max(back - term);
        *per_second.entry((back - term).as_secs()).or_default() += 1;
    }
    let first_close = first_close.unwrap_or_default();
    let spread = last_close - first_close;
    assert!(
        spread >= Duration::from_secs(DRAIN_SECONDS) / 2,
        "closes not spread over the drain: {first_close:?} to {last_close:?}"
    );
    let peak = per_second.values().max().copied().unwrap_or(0);
    let messages: usize = sent.iter().map(Vec::len).sum();
    println!(
        "SIGTERM of A with {CLIENTS} clients in {ROOMS} rooms: closes from {first_close:?} to \
         {last_close:?} after the signal, all back on B {last_back:?} after it, every one \
         recovered; peak {peak} connects/s on B (per second: {per_second:?}); {messages} \
         messages, each received once in order by every member of its room"
    );
}
