//! Rooms through failovers and outages, with real processes and ordinary
//! clients (see `run`): members on two broker instances publish at exactly
//! the configured rate while Redis goes away in every way the suite knows:
//! in single mode SIGSTOP past the command timeout and a whole outage in
//! memory fallback (SIGKILL, restart empty); behind Sentinel `SENTINEL
//! FAILOVER`, SIGKILL and SIGSTOP of the master; in a Cluster SIGKILL of the
//! master of the room's slot and a slot move. No client socket may close,
//! no publish be refused for the broker's own stall, and every
//! acknowledged publish must reach every member exactly once, each
//! publisher's in order. A SIGKILLed broker's members leave within the
//! presence TTL; SIGTERM closes sockets with 1001. Each test owns its
//! topology; they run one at a time.

#[path = "../rooms/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

mod outages;
mod run;
mod storm;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{blocking, Cluster, RedisProc, SentinelSet, Single};
use run::{spawn_pair, Scenario};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh Cluster, two brokers on it and the members' load started.
async fn cluster_scenario(label: &str) -> (Arc<Mutex<Cluster>>, Scenario) {
    let cluster = Arc::new(Mutex::new(blocking(Cluster::start).await));
    let env = vec![
        ("REDIS_MODE", "cluster".to_string()),
        ("REDIS_CLUSTER_NODES", cluster.lock().unwrap().nodes_env()),
    ];
    let (a, b) = spawn_pair(&env).await;
    let scenario = Scenario::start(&a, &b, label).await;
    (cluster, scenario)
}

/// A fresh Sentinel set, two brokers on it and the members' load started.
async fn sentinel_scenario(label: &str) -> (Arc<Mutex<SentinelSet>>, Scenario) {
    let set = Arc::new(Mutex::new(blocking(SentinelSet::start).await));
    let env = set.lock().unwrap().broker_env();
    let (a, b) = spawn_pair(&env).await;
    let scenario = Scenario::start(&a, &b, label).await;
    (set, scenario)
}

/// A fresh single Redis, two brokers on it and the members' load started.
async fn single_scenario(label: &str) -> (Arc<Mutex<Single>>, Scenario) {
    let redis = Arc::new(Mutex::new(blocking(Single::start).await));
    let env = vec![("REDIS_URL", redis.lock().unwrap().url())];
    let (a, b) = spawn_pair(&env).await;
    let scenario = Scenario::start(&a, &b, label).await;
    (redis, scenario)
}

/// Waits (blocking) for the sentinels to promote another master.
fn promoted(set: &Arc<Mutex<SentinelSet>>, old: u16) -> impl FnOnce() + Send + 'static {
    let set = set.clone();
    move || {
        harness::wait_for_new_master(&set, old);
    }
}

/// Something done to the single node now, and `after` later what ends it.
fn on_the_node(
    redis: &Arc<Mutex<Single>>,
    now: fn(&mut RedisProc),
    after: Duration,
    then: fn(&mut RedisProc),
) -> (
    impl FnOnce() + Send + 'static,
    impl FnOnce() + Send + 'static,
) {
    let (first, second) = (redis.clone(), redis.clone());
    (
        move || now(&mut first.lock().unwrap().node),
        move || {
            std::thread::sleep(after);
            then(&mut second.lock().unwrap().node);
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_redis_sigstop_loses_no_room_message() {
    let _serial = SERIAL.lock().await;
    let (redis, scenario) = single_scenario("single-stop").await;
    // Three times the command timeout, then the same node answers again.
    let (stop, cont) = on_the_node(
        &redis,
        |n| n.pause(),
        Duration::from_secs(3),
        |n| n.resume(),
    );
    scenario
        .through("SIGSTOP of the single Redis for 3 s", stop, cont)
        .await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_fallback_outage_loses_no_room_message() {
    let _serial = SERIAL.lock().await;
    let (redis, scenario) = single_scenario("outage").await;
    // Past `rooms.outage_local_after_ms` (3 s): members on one instance get
    // each other's messages from it; Redis then returns empty.
    let (kill, back) = on_the_node(
        &redis,
        |n| n.kill(),
        Duration::from_secs(5),
        |n| n.restart(),
    );
    scenario
        .through("a 5 s Redis outage in memory fallback", kill, back)
        .await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_loses_no_room_message() {
    let _serial = SERIAL.lock().await;
    let (set, scenario) = sentinel_scenario("sentinel-failover").await;
    let old = set.lock().unwrap().master_port();
    let trigger = {
        let set = set.clone();
        move || {
            let set = set.lock().unwrap();
            set.sentinels[0].cli(&["SENTINEL", "FAILOVER", &set.name]);
        }
    };
    scenario
        .through("SENTINEL FAILOVER", trigger, promoted(&set, old))
        .await;
    drop(set);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_master_sigkill_loses_no_room_message() {
    let _serial = SERIAL.lock().await;
    let (set, scenario) = sentinel_scenario("sentinel-kill").await;
    let old = set.lock().unwrap().master_port();
    let trigger = {
        let set = set.clone();
        move || set.lock().unwrap().node_mut(old).kill()
    };
    scenario
        .through(
            "SIGKILL of the Sentinel master",
            trigger,
            promoted(&set, old),
        )
        .await;
    drop(set);
}

/// The master hangs with its sockets open (longer than the command
/// timeout, until the sentinels promote the replica), then wakes up as a
/// demoted master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_master_sigstop_loses_no_room_message() {
    let _serial = SERIAL.lock().await;
    let (set, scenario) = sentinel_scenario("sentinel-stop").await;
    let old = set.lock().unwrap().master_port();
    let trigger = {
        let set = set.clone();
        move || set.lock().unwrap().node(old).pause()
    };
    let wait = promoted(&set, old);
    let recovered = {
        let set = set.clone();
        move || {
            wait();
            set.lock().unwrap().node(old).resume();
        }
    };
    scenario
        .through("SIGSTOP of the Sentinel master", trigger, recovered)
        .await;
    drop(set);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_sigkill_loses_no_room_message() {
    let _serial = SERIAL.lock().await;
    let (cluster, scenario) = cluster_scenario("cluster-kill").await;
    let tag = format!("{{{}}}", scenario.room);
    let victim = cluster.lock().unwrap().master_index_for(&tag);
    let trigger = {
        let cluster = cluster.clone();
        move || cluster.lock().unwrap().nodes[victim].kill()
    };
    let promoted = {
        let cluster = cluster.clone();
        move || {
            harness::wait_for(
                "a new master for the room's slot",
                Duration::from_secs(30),
                || {
                    cluster
                        .lock()
                        .unwrap()
                        .try_master_index_for(&tag)
                        .is_some_and(|i| i != victim)
                },
            );
        }
    };
    scenario
        .through(
            "SIGKILL of the Cluster master of the room's slot",
            trigger,
            promoted,
        )
        .await;
    drop(cluster);
}

/// The room's slot moves to another master while members publish: the old
/// master tells the subscriber `SUNSUBSCRIBE`, which must follow the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_slot_move_keeps_the_room_whole() {
    let _serial = SERIAL.lock().await;
    let (cluster, scenario) = cluster_scenario("cluster-move").await;
    let tag = format!("{{{}}}", scenario.room);
    let trigger = {
        let cluster = cluster.clone();
        let tag = tag.clone();
        move || {
            let cluster = cluster.lock().unwrap();
            let from = cluster.master_index_for(&tag);
            cluster.move_slot(&tag, cluster.other_master(from));
        }
    };
    scenario
        .through("the room's slot moved to another master", trigger, || {})
        .await;
    drop(cluster);
}
