//! A whole-Redis outage with fallback, a SIGKILLed broker, and SIGTERM.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::client::{join, Client, Event};
use crate::harness::process::start;
use crate::harness::{blocking, Cluster, SentinelSet, Single};
use crate::run::broker_env;
use crate::SERIAL;

async fn message_data(client: &mut Client) -> serde_json::Value {
    client.next_of("message").await["data"].clone()
}

/// Redis goes away for good: members on one instance keep talking; what
/// they said reaches the other instance when Redis is back, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_keep_talking_through_an_outage_and_the_rest_follows() {
    let _serial = SERIAL.lock().await;
    let mut redis = blocking(Single::start).await;
    let prefix = format!("o{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let env = broker_env(
        &[
            ("REDIS_URL", redis.url()),
            ("REDIS_COMMAND_TIMEOUT", "300".into()),
            ("BROKER__ROOMS__OUTAGE_LOCAL_AFTER_MS", "200".into()),
            // No presence refresh during the test: after Redis returns
            // empty it would announce the members again (a `join` frame
            // the quiet checks below would take for a stray message).
            ("BROKER__ROOMS__PRESENCE_TTL_SECONDS", "600".into()),
        ],
        &prefix,
    );
    let a = crate::harness::spawn_broker(&env).await;
    let b = crate::harness::spawn_broker(&env).await;
    let mut alice = join(&a, "outage", "alice").await;
    let mut carol = join(&a, "outage", "carol").await;
    let mut bob = join(&b, "outage", "bob").await;
    alice.publish(json!("before")).await;
    for c in [&mut alice, &mut carol, &mut bob] {
        assert_eq!(message_data(c).await, "before");
    }

    let port = redis.node.port;
    blocking(move || {
        redis.node.kill();
        redis
    })
    .await;
    let down = Instant::now();
    // The first publish finds Redis gone; once the outage is long enough
    // the members on A get A's messages from A itself.
    alice.publish(json!({"a": 1})).await;
    alice.publish(json!({"a": 2})).await;
    assert_eq!(message_data(&mut carol).await, json!({"a": 1}));
    assert_eq!(message_data(&mut carol).await, json!({"a": 2}));
    assert_eq!(message_data(&mut alice).await, json!({"a": 1}));
    assert_eq!(message_data(&mut alice).await, json!({"a": 2}));
    bob.publish(json!({"b": 1})).await;
    assert_eq!(message_data(&mut bob).await, json!({"b": 1}));
    println!(
        "local delivery during the outage after {:?}",
        down.elapsed()
    );
    // Across instances nothing arrives while Redis is away.
    carol.quiet(Duration::from_millis(500)).await;
    let health = reqwest::get(format!("{a}/api/health"))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(health["rooms"]["outage_buffered"], 2, "{health}");

    // Redis returns (empty): each side gets the other's messages, once.
    let _redis = blocking(move || Single::start_on(port, &[])).await;
    assert_eq!(message_data(&mut bob).await, json!({"a": 1}));
    assert_eq!(message_data(&mut bob).await, json!({"a": 2}));
    for c in [&mut alice, &mut carol] {
        assert_eq!(message_data(c).await, json!({"b": 1}));
    }
    // And the room goes on as one.
    bob.publish(json!("after")).await;
    for c in [&mut alice, &mut carol, &mut bob] {
        assert_eq!(message_data(c).await, "after");
        c.quiet(Duration::from_millis(300)).await;
    }
}

/// A broker killed with SIGKILL says nothing; its members vanish from the
/// others' presence (with `leave`) within the presence TTL, in every Redis
/// mode. `redis` is the topology's environment for the brokers.
async fn a_killed_brokers_members_leave(label: &str, redis: Vec<(&'static str, String)>) {
    let prefix = format!("k{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut pairs = redis.clone();
    pairs.push(("BROKER__ROOMS__PRESENCE_TTL_SECONDS", "4".to_string()));
    let a = crate::harness::spawn_broker(&broker_env(&pairs, &prefix)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut doomed_env: Vec<(&str, &str)> = vec![
        ("PORT", "0"),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("BROKER__ROOMS__PRESENCE_TTL_SECONDS", "4"),
    ];
    doomed_env.extend(redis.iter().map(|(k, v)| (*k, v.as_str())));
    let mut doomed = start(&doomed_env, dir.path());
    let b = format!("http://127.0.0.1:{}", doomed.port);

    let room = format!("kill-{label}");
    let mut alice = join(&a, &room, "alice").await;
    let bob = join(&b, &room, "bob").await;
    let joined = alice.next_of("presence").await;
    assert_eq!(joined["event"], "join");
    let members = |app: String, room: String| async move {
        let v: serde_json::Value = reqwest::get(format!("{app}/api/rooms/{room}/members"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["members"].as_array().unwrap().len()
    };
    assert_eq!(members(a.clone(), room.clone()).await, 2);

    doomed.child.kill().unwrap();
    let killed = Instant::now();
    let left = alice.next_of("presence").await;
    let after = killed.elapsed();
    assert_eq!(
        left,
        json!({"type": "presence", "event": "leave", "member_id": "bob"})
    );
    assert!(after <= Duration::from_secs(4), "leave after {after:?}");
    assert_eq!(members(a.clone(), room).await, 1);
    println!("{label}: a SIGKILLed broker's member left after {after:?} (presence TTL 4 s)");
    drop(bob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_brokers_members_leave_single() {
    let _serial = SERIAL.lock().await;
    let redis = blocking(Single::start).await;
    a_killed_brokers_members_leave("single", vec![("REDIS_URL", redis.url())]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_brokers_members_leave_sentinel() {
    let _serial = SERIAL.lock().await;
    let set = blocking(SentinelSet::start).await;
    a_killed_brokers_members_leave("sentinel", set.broker_env()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_brokers_members_leave_cluster() {
    let _serial = SERIAL.lock().await;
    let cluster = blocking(Cluster::start).await;
    let env = vec![
        ("REDIS_MODE", "cluster".to_string()),
        ("REDIS_CLUSTER_NODES", cluster.nodes_env()),
    ];
    a_killed_brokers_members_leave("cluster", env).await;
}

/// SIGTERM: readiness answers 503 and upgrades are refused at once; the
/// sockets are closed with 1001 spread over `server.drain_seconds` (two
/// sockets over 4 s: one at once, one 2 s later); the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_sockets_with_1001_over_the_window() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start(
        &[("PORT", "0"), ("BROKER__SERVER__DRAIN_SECONDS", "4")],
        dir.path(),
    );
    let base = format!("http://127.0.0.1:{}", broker.port);
    let mut first = join(&base, "bye", "alice").await;
    let mut second = join(&base, "bye", "bob").await;
    let late = crate::client::token(&base, "carol", "bye", None).await;
    let pid = nix::unistd::Pid::from_raw(broker.child.id() as i32);
    let signalled = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut closes = Vec::new();
    for client in [&mut first, &mut second] {
        match client.next_event(Duration::from_secs(10)).await {
            Event::Closed(code) => assert_eq!(code, Some(CloseCode::Away)),
            Event::Frame(f) if f["type"] == "presence" => {
                assert_eq!(client.closed().await, Some(CloseCode::Away))
            }
            Event::Frame(f) => panic!("frame instead of a close: {f}"),
            Event::Silent => panic!("no close within 10 s"),
        }
        closes.push(signalled.elapsed());
        if closes.len() == 1 {
            // Draining: not ready, and no new sockets.
            let ready = reqwest::get(format!("{base}/health/ready")).await.unwrap();
            assert_eq!(ready.status(), 503);
            match crate::client::upgrade(&base, "bye", &format!("token={late}"), &[]).await {
                crate::client::Upgrade::Refused(status, body) => {
                    assert_eq!(
                        (status, body["error"].as_str()),
                        (503, Some("shutting_down"))
                    )
                }
                crate::client::Upgrade::Open(_) => panic!("an upgrade was taken while draining"),
            }
        }
    }
    let spread = closes[1] - closes[0];
    assert!(
        spread >= Duration::from_millis(1500),
        "closes not spread over the window: {closes:?}"
    );
    let status = blocking(move || broker.wait_exit(Duration::from_secs(10))).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    println!("SIGTERM: the two sockets closed {closes:?} after the signal (window 4 s)");
}

/// The outage buffer is bounded and never silent: while Redis is away a
/// management publish answers 202 `{"id": null, "buffered": true}`; once the
/// buffer is full a WebSocket publish gets an error frame, a management one
/// 503 `storage_unavailable` with `Retry-After`, and health counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outage_buffer_refuses_and_counts() {
    let _serial = SERIAL.lock().await;
    let mut redis = blocking(Single::start).await;
    let prefix = format!("b{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let env = broker_env(
        &[
            ("REDIS_URL", redis.url()),
            ("REDIS_COMMAND_TIMEOUT", "300".into()),
            ("BROKER__ROOMS__OUTAGE_BUFFER", "2".into()),
        ],
        &prefix,
    );
    let a = crate::harness::spawn_broker(&env).await;
    let mut alice = join(&a, "full", "alice").await;
    blocking(move || {
        redis.node.kill();
        redis
    })
    .await;
    let http = reqwest::Client::new();
    let publish = || {
        http.post(format!("{a}/api/rooms/full/publish"))
            .json(&json!({"data": "x"}))
            .send()
    };
    let res = publish().await.unwrap();
    assert_eq!(res.status(), 202);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body, json!({"id": null, "buffered": true}));
    alice.publish(json!("second")).await;
    alice.publish(json!("third")).await;
    let error = alice.next_of("error").await;
    assert_eq!(error["error"], "storage_unavailable", "{error}");
    let res = publish().await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "storage_unavailable", "{body}");
    let health: serde_json::Value = reqwest::get(format!("{a}/api/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["rooms"]["outage_buffered"], 2, "{health}");
    assert_eq!(health["rooms"]["outage_refused"], 2, "{health}");
}
