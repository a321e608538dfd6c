//! Real Redis topologies for the tests: a single node, a Cluster of 3
//! masters + 3 replicas, and a master + replica watched by 3 Sentinels,
//! all `redis-server` processes on loopback ports in temporary directories.
//!
//! Every process is started from one long-lived spawner thread with
//! `PR_SET_PDEATHSIG`, so it dies with the test process even when shared
//! topologies (held in statics, never dropped) outlive every test; topologies
//! owned by a test are killed on drop.

#![allow(dead_code)]

pub mod process;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const INSTALL_HINT: &str = "redis-server and redis-cli are required for these tests: \
install them with `apt-get install redis-server redis-tools` (scripts/test.sh does this)";

/// Fails the test with an install hint when Redis is missing.
pub fn require_redis() {
    for tool in ["redis-server", "redis-cli"] {
        let ok = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{tool} not found. {INSTALL_HINT}");
    }
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns a quiet `redis-server` tied to the test process (see `spawn_tied`).
fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    spawn_tied(cmd).expect("spawn redis-server")
}

/// Spawns `cmd` (stdio as the caller set it) so that it gets SIGKILL when
/// the test process ends, even from a static that is never dropped. The
/// spawn happens on a thread that lives as long as the process: the death
/// signal is tied to the spawning thread, not to the process.
pub fn spawn_tied(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                use std::os::unix::process::CommandExt as _;
                // SAFETY: only async-signal-safe prctl between fork and exec.
                unsafe {
                    cmd.pre_exec(|| {
                        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                            .map_err(std::io::Error::from)
                    });
                }
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    sender
        .lock()
        .unwrap()
        .send((cmd, tx))
        .expect("spawner thread");
    rx.recv().expect("spawner reply")
}

/// A free loopback port whose cluster bus port (+10000) is free too.
pub fn free_port() -> u16 {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let used = USED.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind port 0");
        // Cluster nodes need port + 10000 <= 65535.
        let port = if port > 55_000 {
            20_000 + port % 30_000
        } else {
            port
        };
        let bus_free = TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free && bus_free && used.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `redis-server` process (data node or sentinel).
pub struct RedisProc {
    pub port: u16,
    password: Option<String>,
    child: Option<Child>,
    /// How it was started, for `restart` (data nodes only).
    dir: PathBuf,
    extra: Vec<String>,
}

impl RedisProc {
    fn start(dir: &Path, port: u16, extra: &[&str]) -> Self {
        let password = extra
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| extra.get(i + 1))
            .map(|p| p.to_string());
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(dir)
            .args(extra);
        let proc = Self {
            port,
            password,
            child: Some(spawn(cmd)),
            dir: dir.to_path_buf(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        proc.wait_ping();
        proc
    }

    /// Starts the node again on the same port with the same arguments
    /// (empty: nothing is persisted), after killing it if still running.
    pub fn restart(&mut self) {
        self.resume();
        self.kill();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let fresh = Self::start(&self.dir.clone(), self.port, &extra);
        *self = fresh;
    }

    fn start_sentinel(dir: &Path, port: u16, master_name: &str, master_port: u16) -> Self {
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                 sentinel monitor {master_name} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {master_name} 1000\n\
                 sentinel failover-timeout {master_name} 5000\n\
                 sentinel parallel-syncs {master_name} 1\n",
                dir = dir.display()
            ),
        )
        .expect("write sentinel.conf");
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf).arg("--sentinel");
        let proc = Self {
            port,
            password: None,
            child: Some(spawn(cmd)),
            dir: dir.to_path_buf(),
            extra: Vec::new(),
        };
        proc.wait_ping();
        proc
    }

    fn wait_ping(&self) {
        wait_for(
            &format!("redis on port {}", self.port),
            Duration::from_secs(10),
            || {
                self.try_cli(&["PING"])
                    .is_some_and(|out| out.trim() == "PONG")
            },
        );
    }

    pub fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    /// `redis-cli -p <port> args...`; `None` if the node does not answer.
    pub fn try_cli(&self, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(password) = &self.password {
            cmd.args(["--no-auth-warning", "-a", password]);
        }
        let out = cmd.args(args).stderr(Stdio::null()).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }

    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis on port {} did not answer {args:?}", self.port))
    }

    /// A field of `INFO <section>`.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let text = self.try_cli(&["INFO", section])?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
    }

    /// SIGKILL: the node vanishes without a word.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the node hangs with its sockets open.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        }
    }

    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            kill(pid, Signal::SIGCONT).expect("SIGCONT");
        }
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("rtc-broker-redis-")
        .tempdir()
        .expect("temp dir")
}

/// A single Redis node.
pub struct Single {
    pub node: RedisProc,
    _dir: tempfile::TempDir,
}

impl Single {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A node with extra `redis-server` arguments (e.g. `--requirepass`).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_on(free_port(), extra)
    }

    /// A node on a given port (e.g. one a broker was told about before
    /// Redis existed).
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        require_redis();
        let dir = temp_dir();
        let node = RedisProc::start(dir.path(), port, extra);
        Self { node, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.node.port)
    }
}

/// A Redis Cluster of 3 masters, each with one replica.
pub struct Cluster {
    pub nodes: Vec<RedisProc>,
    dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Self {
        require_redis();
        let dir = temp_dir();
        let nodes: Vec<RedisProc> = (0..6)
            .map(|_| {
                let port = free_port();
                RedisProc::start(
                    dir.path(),
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &format!("nodes-{port}.conf"),
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-replica-validity-factor",
                        "0",
                        // A dead master's slots must not take the others down.
                        "--cluster-require-full-coverage",
                        "no",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes, dir };
        cluster.wait_healthy();
        cluster
    }

    /// Every live node reports `cluster_state:ok` and every replica is in sync.
    pub fn wait_healthy(&self) {
        wait_for("cluster state ok", Duration::from_secs(30), || {
            self.live().all(|n| {
                n.try_cli(&["CLUSTER", "INFO"])
                    .is_some_and(|t| t.contains("cluster_state:ok"))
            })
        });
        wait_for("cluster replicas in sync", Duration::from_secs(30), || {
            self.live()
                .all(|n| match n.info_field("replication", "role").as_deref() {
                    Some("slave") => {
                        n.info_field("replication", "master_link_status").as_deref() == Some("up")
                    }
                    Some("master") => true,
                    _ => false,
                })
        });
    }

    fn live(&self) -> impl Iterator<Item = &RedisProc> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// `host:port,...` for REDIS_CLUSTER_NODES.
    pub fn nodes_env(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Index (into `nodes`) of the master serving `key`'s slot right now.
    pub fn master_index_for(&self, key: &str) -> usize {
        self.try_master_index_for(key)
            .unwrap_or_else(|| panic!("no live master serves the slot of {key}"))
    }

    /// Like `master_index_for`, `None` while no live master serves the slot.
    pub fn try_master_index_for(&self, key: &str) -> Option<usize> {
        let any = self.live().next().expect("a live node");
        let slot: u16 = any
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("slot");
        let nodes = any.cli(&["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                match (lo.parse::<u16>(), hi.parse::<u16>()) {
                    (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                let port: u16 = fields[1]
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .expect("node port");
                return self.nodes.iter().position(|n| n.port == port);
            }
        }
        None
    }

    /// Moves the slot of `key` from its master to the master at `to` (an
    /// index into `nodes`), keys included, as `redis-cli --cluster reshard`
    /// does: IMPORTING / MIGRATING, MIGRATE in batches, then SETSLOT NODE
    /// on every master.
    pub fn move_slot(&self, key: &str, to: usize) {
        let from = self.master_index_for(key);
        assert_ne!(from, to, "the slot is already there");
        let slot = self.nodes[from]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .to_string();
        let id = |i: usize| self.nodes[i].cli(&["CLUSTER", "MYID"]).trim().to_string();
        let (src, dst) = (id(from), id(to));
        self.nodes[to].cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src]);
        self.nodes[from].cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst]);
        let port = self.nodes[to].port.to_string();
        loop {
            let listed = self.nodes[from].cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            let keys: Vec<&str> = listed
                .lines()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            self.nodes[from].cli(&args);
        }
        for node in self.live() {
            if node.info_field("replication", "role").as_deref() == Some("master") {
                node.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &dst]);
            }
        }
    }

    /// Index of a live master other than `not`.
    pub fn other_master(&self, not: usize) -> usize {
        (0..self.nodes.len())
            .find(|&i| {
                i != not
                    && self.nodes[i].child.is_some()
                    && self.nodes[i].info_field("replication", "role").as_deref() == Some("master")
            })
            .expect("another live master")
    }

    /// Keys starting with `prefix` on every master.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.live()
            .filter(|n| n.info_field("replication", "role").as_deref() == Some("master"))
            .flat_map(|n| keys(n, prefix))
            .collect()
    }

    /// PTTL of a key, following the cluster's redirects.
    pub fn pttl(&self, key: &str) -> i64 {
        let node = self.live().next().expect("a live node");
        node.cli(&["-c", "PTTL", key]).trim().parse().expect("PTTL")
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// A master, one replica, and three Sentinels watching them.
pub struct SentinelSet {
    pub nodes: Vec<RedisProc>,
    pub sentinels: Vec<RedisProc>,
    pub name: String,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    pub fn start() -> Self {
        require_redis();
        let dir = temp_dir();
        let name = "mymaster".to_string();
        let master = RedisProc::start(dir.path(), free_port(), &[]);
        let replica = RedisProc::start(
            dir.path(),
            free_port(),
            &["--replicaof", "127.0.0.1", &master.port.to_string()],
        );
        wait_for("replica in sync", Duration::from_secs(20), || {
            replica
                .info_field("replication", "master_link_status")
                .as_deref()
                == Some("up")
        });
        let sentinels: Vec<RedisProc> = (0..3)
            .map(|_| RedisProc::start_sentinel(dir.path(), free_port(), &name, master.port))
            .collect();
        let set = Self {
            nodes: vec![master, replica],
            sentinels,
            name,
            _dir: dir,
        };
        set.wait_ready();
        set
    }

    /// Every sentinel knows the replica and the two other sentinels, so a
    /// failover can be authorised.
    pub fn wait_ready(&self) {
        wait_for(
            "sentinels discover each other and the replica",
            Duration::from_secs(30),
            || {
                self.sentinels.iter().all(|s| {
                    let info = s.try_cli(&["INFO", "sentinel"]).unwrap_or_default();
                    info.contains("status=ok")
                        && info.contains("slaves=1")
                        && info.contains("sentinels=3")
                })
            },
        );
    }

    /// The broker settings that point at this set.
    pub fn broker_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("REDIS_MODE", "sentinel".into()),
            ("REDIS_SENTINELS", self.sentinels_env()),
            ("REDIS_SENTINEL_NAME", self.name.clone()),
        ]
    }

    /// `host:port,...` for REDIS_SENTINELS.
    pub fn sentinels_env(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The master's port according to the first sentinel that answers.
    pub fn master_port(&self) -> u16 {
        for s in &self.sentinels {
            if let Some(out) = s.try_cli(&["SENTINEL", "get-master-addr-by-name", &self.name]) {
                if let Some(port) = out.lines().nth(1).and_then(|p| p.trim().parse().ok()) {
                    return port;
                }
            }
        }
        panic!("no sentinel names a master");
    }

    /// Waits until every live data node other than the master replicates
    /// from it and is in sync (a demoted master is reconfigured by the
    /// sentinels only after several seconds; killing the new master before
    /// that loses everything written since the switch).
    pub fn wait_replicas_synced(&self) {
        let master = self.master_port();
        wait_for(
            "replicas in sync with the new master",
            Duration::from_secs(40),
            || {
                self.nodes
                    .iter()
                    .filter(|n| n.port != master && n.child.is_some())
                    .all(|n| {
                        n.info_field("replication", "master_port").as_deref()
                            == Some(&master.to_string())
                            && n.info_field("replication", "master_link_status").as_deref()
                                == Some("up")
                    })
            },
        );
    }

    /// SIGKILLs every data node (the sentinels stay up).
    pub fn kill_data_nodes(&mut self) {
        self.nodes.iter_mut().for_each(RedisProc::kill);
    }

    /// Restarts the data nodes, empty, master first, and waits until the
    /// replica is in sync again.
    pub fn restart_data_nodes(&mut self) {
        let master = self.master_port();
        self.node_mut(master).restart();
        for node in self.nodes.iter_mut().filter(|n| n.port != master) {
            node.restart();
        }
        self.wait_replicas_synced();
    }

    pub fn node(&self, port: u16) -> &RedisProc {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("known node")
    }

    pub fn node_mut(&mut self, port: u16) -> &mut RedisProc {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("known node")
    }

    pub fn keys(&self, prefix: &str) -> Vec<String> {
        keys(self.node(self.master_port()), prefix)
    }

    pub fn pttl(&self, key: &str) -> i64 {
        pttl(self.node(self.master_port()), key)
    }
}

/// Keys starting with `prefix` on one node.
pub fn keys(node: &RedisProc, prefix: &str) -> Vec<String> {
    node.cli(&["--scan", "--pattern", &format!("{prefix}*")])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// PTTL of a key on one node.
pub fn pttl(node: &RedisProc, key: &str) -> i64 {
    node.cli(&["PTTL", key]).trim().parse().expect("PTTL")
}

/// Topologies shared by all tests of one test binary (started on first use).
pub fn shared_single() -> &'static Single {
    static S: OnceLock<Single> = OnceLock::new();
    S.get_or_init(Single::start)
}

pub fn shared_cluster() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(Cluster::start)
}

pub fn shared_sentinel() -> &'static SentinelSet {
    static S: OnceLock<SentinelSet> = OnceLock::new();
    S.get_or_init(SentinelSet::start)
}

/// The environment of a test broker: random port, two workers, no config
/// files from the working directory, then `extra`.
pub fn broker_env(extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("BROKER__SERVER__PORT", "0"),
        ("BROKER__SERVER__WORKERS", "2"),
        ("BROKER_CONFIG_DIR", "/nonexistent"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

/// Builds the real app from `env` (as if it were the process environment)
/// and serves it on a random loopback port; returns its base URL.
pub async fn spawn_broker(env: &[(String, String)]) -> String {
    let mut vars: std::collections::HashMap<String, String> = env.iter().cloned().collect();
    // Recording folders of this test binary's own, unless the test chose
    // them: not the OS temp dir every run and binary would share.
    let own = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("brokers-{}", std::process::id()));
    for (var, leaf) in [("TEMP_DIR", "chunks"), ("STORAGE_LOCAL_PATH", "recordings")] {
        vars.entry(var.to_string())
            .or_insert_with(|| own.join(leaf).display().to_string());
    }
    let settings = rtc_broker::config::Settings::load_from(&vars).expect("test settings must load");
    let app = rtc_broker::startup::Application::build(settings)
        .await
        .expect("test app must build");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    address
}

/// Waits (blocking) until the sentinels name a master other than `old`.
pub fn wait_for_new_master(set: &Mutex<SentinelSet>, old: u16) -> u16 {
    let mut port = old;
    wait_for("sentinel promotion", Duration::from_secs(40), || {
        port = set.lock().unwrap().master_port();
        port != old
    });
    port
}

/// Runs blocking harness work off the runtime that drives the brokers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// A WebSocket handshake request for `url` with extra headers.
pub fn ws_request(
    url: &str,
    headers: &[(&str, &str)],
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = url.into_client_request().expect("ws request");
    for (name, value) in headers {
        request.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    request
}
