//! The Redis store, in single, cluster or sentinel mode.
//!
//! Requests take a clone of the current connection and run one command or
//! script under a deadline (the command timeout): retryable failures
//! (connection drops, `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `READONLY`, ...)
//! are retried with backoff inside that deadline and never become 500s. A
//! supervisor task connects, checks the connection periodically and, in
//! sentinel mode, follows the master (`+switch-master` events, `ROLE`
//! checks), so an idle instance follows a failover by itself.

mod connection;
mod scripts;
mod sentinel;

use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::Rng as _;
use redis::Value;
use tokio::sync::{mpsc, watch, Notify};
use tracing::Instrument as _;

use self::connection::{Conn, Op};
use self::scripts::Scripts;
use self::sentinel::SentinelEvent;
use super::{Key, Migrated, StorageKind, Store, StoreError, StoreResult, StoreStatus};
use crate::clock::unix_now;
use crate::config::{HostPort, RedisMode, RedisSettings};

/// Longest a sentinel failover may keep writes away from the old master
/// before the broker assumes it was aborted and asks the sentinels again.
const FAILOVER_HOLD: Duration = Duration::from_secs(10);

/// What operators see about the connection.
#[derive(Debug, Clone)]
struct Health {
    connected: bool,
    master: Option<HostPort>,
    cluster_state: Option<String>,
    last_error: Option<String>,
    since: u64,
}

struct Shared {
    settings: RedisSettings,
    conn: RwLock<Option<Conn>>,
    health: Mutex<Health>,
    /// Wakes the supervisor early (an error that suggests a failover).
    wake: Arc<Notify>,
    /// Sentinel mode: the master being failed over, and until when writes
    /// stay away from it.
    hold: Mutex<Option<(HostPort, Instant)>>,
    /// Announces every change of `health.connected` (the fallback waits on it).
    connected: watch::Sender<bool>,
    scripts: Scripts,
    /// Latency and errors per command, for `/metrics`.
    latency: Option<prometheus::HistogramVec>,
    errors: Option<prometheus::IntCounterVec>,
}

/// Redis-backed [`Store`]; cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
}

impl RedisStore {
    /// Creates the store and starts its supervisor; waits up to the connect
    /// timeout for the first connection. If Redis cannot be reached the
    /// store is returned anyway, unconnected, and keeps trying in the
    /// background (requests fail fast with `storage_unavailable` meanwhile).
    pub async fn connect(settings: RedisSettings) -> Self {
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            settings: settings.clone(),
            conn: RwLock::new(None),
            health: Mutex::new(Health {
                connected: false,
                master: None,
                cluster_state: None,
                last_error: Some("not connected yet".into()),
                since: unix_now(),
            }),
            wake: wake.clone(),
            hold: Mutex::new(None),
            connected: watch::Sender::new(false),
            scripts: Scripts::new(),
            latency: crate::metrics::histogram_vec(
                "rtc_redis_command_duration_seconds",
                "Redis command latency (retries within the deadline included), by command.",
                &["op"],
                crate::metrics::LATENCY_BUCKETS,
            ),
            errors: crate::metrics::counter_vec(
                "rtc_redis_command_errors_total",
                "Redis commands that failed, by command and kind (outage: no answer; refused: an error reply).",
                &["op", "kind"],
            ),
        });
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        if settings.mode == RedisMode::Sentinel {
            sentinel::spawn_listeners(&settings, event_tx);
        }
        let store = Self { shared };
        // Keep trying (a sentinel set can need a moment to name a master),
        // but never wait longer than the connect timeout in all.
        let first_connection = async {
            loop {
                store.shared.check(None).await;
                if store.is_connected() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let _ = tokio::time::timeout(settings.connect_timeout(), first_connection).await;
        if store.is_connected() {
            tracing::info!(mode = settings.mode.as_str(), "connected to Redis");
        } else {
            tracing::warn!(
                mode = settings.mode.as_str(),
                error = store.last_error().as_deref().unwrap_or("unknown"),
                "Redis not reachable at start-up; retrying in the background"
            );
        }
        tokio::spawn(supervise(Arc::downgrade(&store.shared), wake, event_rx));
        store
    }

    /// Whether the last command or check succeeded.
    pub fn is_connected(&self) -> bool {
        self.shared.lock_health().connected
    }

    /// Follows the connection state (true once Redis answers again).
    pub fn watch_connected(&self) -> watch::Receiver<bool> {
        self.shared.connected.subscribe()
    }

    /// Runs one command under the command timeout with the store's
    /// retries and failover following, for wings whose data is not
    /// key/value records (rooms). Keys in `cmd` must carry the key prefix.
    pub async fn command(&self, cmd: redis::Cmd) -> StoreResult<Value> {
        self.run(Op::Cmd(cmd)).await
    }

    /// Runs a Lua script like [`RedisStore::command`]; keys already prefixed.
    pub async fn script(
        &self,
        script: &redis::Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> StoreResult<Value> {
        self.run(Op::Script { script, keys, args }).await
    }

    /// The settings the store was built with (mode, prefix, timeouts).
    pub fn settings(&self) -> &RedisSettings {
        &self.shared.settings
    }

    /// The master currently followed (sentinel mode).
    pub fn master(&self) -> Option<HostPort> {
        self.shared.lock_health().master.clone()
    }

    /// How to reach a node of this deployment outside the store's own
    /// connections (the rooms' subscriber): `None` is the single-mode URL.
    pub fn connection_info(
        &self,
        node: Option<&HostPort>,
    ) -> redis::RedisResult<redis::ConnectionInfo> {
        match node {
            Some(node) => connection::node_info(&self.shared.settings, node),
            None => connection::url_info(&self.shared.settings),
        }
    }

    fn last_error(&self) -> Option<String> {
        self.shared.lock_health().last_error.clone()
    }

    fn full_key(&self, key: &Key) -> String {
        format!("{}{}", self.shared.settings.key_prefix, key.as_str())
    }

    /// Runs one operation inside a `redis` span (command and mode), so each
    /// request's log shows the Redis calls it made and how they ended.
    async fn run(&self, op: Op<'_>) -> StoreResult<Value> {
        let span = tracing::debug_span!(
            "redis",
            op = %op.name(),
            mode = self.shared.settings.mode.as_str()
        );
        let name = op.name();
        let started = std::time::Instant::now();
        let result = self.shared.run(&op).instrument(span.clone()).await;
        let elapsed = started.elapsed().as_secs_f64();
        crate::metrics::observe(&self.shared.latency, &[&name], elapsed);
        if let Err(e) = &result {
            let kind = if e.is_outage() { "outage" } else { "refused" };
            crate::metrics::inc(&self.shared.errors, &[&name, kind]);
            span.in_scope(|| tracing::debug!(error = %e, "Redis operation failed"));
        }
        result
    }

    /// The command latency and error families, for `/metrics`.
    pub fn metric_families(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::core::Collector;
        crate::metrics::collect(&[
            self.shared.latency.as_ref().map(|c| c as &dyn Collector),
            self.shared.errors.as_ref().map(|c| c as &dyn Collector),
        ])
    }
}

impl Shared {
    fn lock_health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current(&self) -> Option<Conn> {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, conn: Option<Conn>) {
        *self.conn.write().unwrap_or_else(|p| p.into_inner()) = conn;
    }

    fn mark_up(&self) {
        let mut health = self.lock_health();
        if !health.connected {
            health.connected = true;
            health.last_error = None;
            health.since = unix_now();
            tracing::info!(mode = self.settings.mode.as_str(), "Redis connection is up");
            self.connected.send_replace(true);
        }
    }

    fn mark_down(&self, error: &str) {
        let mut health = self.lock_health();
        if health.connected {
            health.since = unix_now();
            tracing::warn!(
                mode = self.settings.mode.as_str(),
                error,
                "Redis connection lost"
            );
            self.connected.send_replace(false);
        }
        health.connected = false;
        health.last_error = Some(error.to_string());
    }

    /// Runs an operation under the command timeout, retrying transient
    /// failures with backoff inside that deadline. Every operation is
    /// idempotent (see `scripts`), so a retry after a dropped connection
    /// cannot apply a command twice. What Redis answered with an error is
    /// returned as a refusal at once; only silence counts as an outage.
    async fn run(&self, op: &Op<'_>) -> StoreResult<Value> {
        let timeout = self.settings.command_timeout();
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            let Some(conn) = self.current() else {
                let reason = self.lock_health().last_error.clone();
                return Err(StoreError::unavailable(
                    reason.unwrap_or_else(|| "not connected".into()),
                ));
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let error = match tokio::time::timeout(remaining, conn.run(op)).await {
                Ok(Ok(value)) => {
                    self.mark_up();
                    return Ok(value);
                }
                Err(_) => {
                    self.mark_down("command timed out");
                    self.wake.notify_one();
                    return Err(StoreError::Timeout(timeout));
                }
                Ok(Err(e)) => e,
            };
            if is_auth_failure(&error) {
                // Redis answers, but not to us: as good as no Redis at all.
                self.mark_down(&error.to_string());
                return Err(StoreError::Unavailable(Box::new(error)));
            }
            if !is_transient(&error) {
                // Redis answered: the connection is fine, the command is not.
                self.mark_up();
                return Err(refusal(error));
            }
            // A drop, READONLY or LOADING may mean a failover: let the
            // supervisor re-resolve now rather than at its next tick.
            self.wake.notify_one();
            if Instant::now() + backoff >= deadline {
                self.mark_down(&error.to_string());
                return Err(StoreError::Unavailable(Box::new(error)));
            }
            tracing::debug!(error = %error, "transient Redis error; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// One supervision step: connect if needed, check the connection, and in
    /// sentinel mode make sure it points at the current master.
    async fn check(&self, announced: Option<HostPort>) {
        match self.settings.mode {
            RedisMode::Single | RedisMode::Cluster => self.check_direct().await,
            RedisMode::Sentinel => self.check_sentinel(announced).await,
        }
    }

    async fn check_direct(&self) {
        if self.current().is_none() {
            let connecting = match self.settings.mode {
                RedisMode::Cluster => connection::connect_cluster(&self.settings).await,
                _ => connection::connect_single(&self.settings).await,
            };
            match connecting {
                Ok(conn) => self.replace(Some(conn)),
                Err(e) => return self.mark_down(&e.to_string()),
            }
        }
        if self.settings.mode == RedisMode::Cluster {
            let info = self
                .run(&Op::Cmd(redis::cmd("CLUSTER").arg("INFO").clone()))
                .await
                .and_then(string_or_nil);
            if let Ok(Some(text)) = info {
                let state = text
                    .lines()
                    .find_map(|l| l.strip_prefix("cluster_state:"))
                    .map(|s| s.trim().to_string());
                self.lock_health().cluster_state = state;
            }
        } else {
            let _ = self.run(&Op::Cmd(redis::cmd("PING"))).await;
        }
    }

    /// A failover is promoting a replica: stop writing to the old master at
    /// once (it would acknowledge writes the new master never sees) until
    /// the new master is known or `FAILOVER_HOLD` passes (an aborted
    /// failover). Meanwhile calls fail fast, so the fallback serves them.
    fn hold_writes(&self) {
        let Some(old) = self.lock_health().master.clone() else {
            return;
        };
        *self.lock_hold() = Some((old.clone(), Instant::now() + FAILOVER_HOLD));
        self.replace(None);
        tracing::warn!(master = %old, "sentinel failover started: no more writes to the old master");
        self.mark_down("failover in progress: waiting for the new master");
    }

    fn lock_hold(&self) -> std::sync::MutexGuard<'_, Option<(HostPort, Instant)>> {
        self.hold.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The master writes are held away from, while the hold lasts.
    fn held_master(&self) -> Option<HostPort> {
        let mut hold = self.lock_hold();
        match hold.as_ref() {
            Some((old, until)) if Instant::now() < *until => Some(old.clone()),
            Some(_) => {
                *hold = None;
                None
            }
            None => None,
        }
    }

    async fn check_sentinel(&self, announced: Option<HostPort>) {
        let current = self.lock_health().master.clone();
        let candidate = match announced {
            Some(master) => master,
            None => match sentinel::ask_sentinels(&self.settings).await {
                Ok(master) => master,
                Err(e) => return self.mark_down(&e),
            },
        };
        if self.held_master().as_ref() == Some(&candidate) {
            // The sentinels still name the master being replaced.
            return self.mark_down("failover in progress: waiting for the new master");
        }
        if current.as_ref() == Some(&candidate) && self.current().is_some() {
            // Same master as before: is it still one (a demoted master keeps
            // its connections open and says nothing)?
            match sentinel::role_of(&self.settings, &candidate).await {
                Ok(role) if role == "master" => {
                    let _ = self.run(&Op::Cmd(redis::cmd("PING"))).await;
                }
                Ok(role) => self.mark_down(&format!("{candidate} is now a {role}")),
                Err(e) => self.mark_down(&e),
            }
            return;
        }
        match sentinel::role_of(&self.settings, &candidate).await {
            Ok(role) if role == "master" => {}
            Ok(role) => return self.mark_down(&format!("{candidate} is a {role}, not master")),
            Err(e) => return self.mark_down(&format!("{candidate}: {e}")),
        }
        let info = match connection::node_info(&self.settings, &candidate) {
            Ok(info) => info,
            Err(e) => return self.mark_down(&e.to_string()),
        };
        match connection::connect_node(info, &self.settings).await {
            Ok(conn) => {
                self.replace(Some(conn));
                *self.lock_hold() = None;
                let old = self.lock_health().master.replace(candidate.clone());
                match old {
                    Some(old) => tracing::warn!(
                        old_master = %old,
                        new_master = %candidate,
                        "Redis master changed; following the new master"
                    ),
                    None => tracing::info!(master = %candidate, "Redis master resolved"),
                }
                self.mark_up();
            }
            Err(e) => self.mark_down(&e.to_string()),
        }
    }
}

/// Errors worth retrying within the deadline: the connection or the
/// cluster/replication state is in flux, the command itself is fine.
fn is_transient(e: &redis::RedisError) -> bool {
    use redis::RetryMethod as R;
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        return true;
    }
    // A script running too long blocks the server for everyone: wait.
    e.code() == Some("BUSY") || !matches!(e.retry_method(), R::NoRetry)
}

/// A wrong or missing password: a configuration problem that leaves the
/// store unable to serve anything, so it counts as unavailable.
fn is_auth_failure(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
}

/// What an error reply from Redis means for the caller.
fn refusal(e: redis::RedisError) -> StoreError {
    if e.code() == Some("OOM") {
        StoreError::OutOfMemory(Box::new(e))
    } else {
        StoreError::Rejected(Box::new(e))
    }
}

/// The background task: checks every `health_check_interval` while
/// connected, retries with capped jittered backoff while not, and reacts
/// at once to sentinel failover events and error wake-ups.
async fn supervise(
    shared: Weak<Shared>,
    wake: Arc<Notify>,
    mut events: mpsc::UnboundedReceiver<SentinelEvent>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut announced = None;
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        strong.check(announced.take()).await;
        let connected = strong.lock_health().connected;
        let interval = strong.settings.health_check_interval();
        drop(strong);
        let pause = if connected {
            backoff = Duration::from_millis(50);
            interval
        } else {
            let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
            let pause = backoff + Duration::from_millis(jitter);
            backoff = (backoff * 2).min(Duration::from_secs(2));
            pause.min(Duration::from_secs(2))
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = wake.notified() => {}
            Some(event) = events.recv() => match event {
                SentinelEvent::Switched(master) => announced = Some(master),
                SentinelEvent::Promoting => {
                    if let Some(strong) = shared.upgrade() {
                        strong.hold_writes();
                    }
                }
            },
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn set(&self, key: &Key, value: &str, ttl: Duration) -> StoreResult<()> {
        let cmd = redis::cmd("SET")
            .arg(self.full_key(key))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms(ttl))
            .clone();
        self.run(Op::Cmd(cmd)).await.map(|_| ())
    }

    async fn set_if_absent(&self, key: &Key, value: &str, ttl: Duration) -> StoreResult<bool> {
        let cmd = redis::cmd("SET")
            .arg(self.full_key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(ttl))
            .clone();
        Ok(!matches!(self.run(Op::Cmd(cmd)).await?, Value::Nil))
    }

    async fn get(&self, key: &Key) -> StoreResult<Option<String>> {
        let cmd = redis::cmd("GET").arg(self.full_key(key)).clone();
        string_or_nil(self.run(Op::Cmd(cmd)).await?)
    }

    async fn compare_and_swap(
        &self,
        key: &Key,
        expected: &str,
        new: Option<&str>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let op = Op::Script {
            script: &self.shared.scripts.cas,
            keys: vec![self.full_key(key)],
            args: vec![
                expected.to_string(),
                if new.is_some() { "1" } else { "0" }.to_string(),
                new.unwrap_or_default().to_string(),
                ttl_ms(ttl).to_string(),
            ],
        };
        Ok(integer(self.run(op).await?)? == 1)
    }

    async fn delete(&self, key: &Key) -> StoreResult<bool> {
        let cmd = redis::cmd("DEL").arg(self.full_key(key)).clone();
        Ok(integer(self.run(Op::Cmd(cmd)).await?)? > 0)
    }

    async fn increment(&self, key: &Key, ttl: Duration) -> StoreResult<i64> {
        let counter = self.full_key(key);
        let ids = scripts::increment_ids_key(&counter);
        // One id for every attempt of this one call, retries included.
        let id = uuid::Uuid::new_v4().simple().to_string();
        let op = Op::Script {
            script: &self.shared.scripts.incr,
            keys: vec![counter, ids],
            args: vec![
                ttl_ms(ttl).to_string(),
                id,
                scripts::INCR_IDS_KEPT.to_string(),
                scripts::INCR_IDS_TTL_MS.to_string(),
            ],
        };
        integer(self.run(op).await?)
    }

    async fn advance_to(&self, key: &Key, floor: i64, ttl: Duration) -> StoreResult<i64> {
        let op = Op::Script {
            script: &self.shared.scripts.advance,
            keys: vec![self.full_key(key)],
            args: vec![floor.to_string(), ttl_ms(ttl).to_string()],
        };
        integer(self.run(op).await?)
    }

    fn status(&self) -> StoreStatus {
        let health = self.shared.lock_health().clone();
        StoreStatus {
            storage: StorageKind::Redis,
            mode: Some(self.shared.settings.mode.as_str()),
            connected: health.connected,
            master: health.master.map(|m| m.to_string()),
            cluster_state: health.cluster_state,
            fallback_reason: None,
            last_error: health.last_error,
            since: health.since,
            entries: None,
            pending_replay: None,
            migrated: Migrated::default(),
            fallback_totals: Default::default(),
        }
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

fn string_or_nil(value: Value) -> StoreResult<Option<String>> {
    match value {
        Value::Nil => Ok(None),
        other => redis::from_redis_value::<String>(other)
            .map(Some)
            .map_err(|e| StoreError::Rejected(Box::new(e))),
    }
}

fn integer(value: Value) -> StoreResult<i64> {
    redis::from_redis_value::<i64>(value).map_err(|e| StoreError::Rejected(Box::new(e)))
}
