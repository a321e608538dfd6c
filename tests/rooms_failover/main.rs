//! Rooms through failovers and outages, with real processes: clients on two
//! broker instances publish continuously while the Redis master is failed
//! over (`SENTINEL FAILOVER`), SIGKILLed (Sentinel, and in a Cluster the
//! master of the room's slot), or all of Redis goes away and comes back.
//! No client socket may close, and every message published must reach every
//! member exactly once, each publisher's in order. A SIGKILLed broker's
//! members leave within the presence TTL; SIGTERM closes sockets with 1001.
//! Each test owns its topology; they run one at a time.

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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{blocking, Cluster, SentinelSet};
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
    let waited = {
        let set = set.clone();
        move || harness::wait_for_new_master(&set, old)
    };
    scenario.through("SENTINEL FAILOVER", trigger, waited).await;
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
    let waited = {
        let set = set.clone();
        move || harness::wait_for_new_master(&set, old)
    };
    scenario
        .through("SIGKILL of the Sentinel master", trigger, waited)
        .await;
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
    let waited = {
        let cluster = cluster.clone();
        move || {
            let started = Instant::now();
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
            started
        }
    };
    scenario
        .through(
            "SIGKILL of the Cluster master of the room's slot",
            trigger,
            move || {
                waited();
                0
            },
        )
        .await;
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
        .through("the room's slot moved to another master", trigger, || 0)
        .await;
}
