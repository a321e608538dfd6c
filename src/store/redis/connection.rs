//! Connections to Redis for each mode, behind one enum so the store runs a
//! command the same way whatever the deployment.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, RedisResult,
    Script, Value,
};

use redis::io::tcp::TcpSettings;
use secrecy::ExposeSecret;

use crate::config::{HostPort, RedisSettings};

/// One operation: a plain command or a Lua script on keys (always a single
/// key in practice, so it routes to one slot in cluster mode).
pub enum Op<'a> {
    Cmd(Cmd),
    Script {
        script: &'a Script,
        keys: Vec<String>,
        args: Vec<String>,
    },
}

impl Op<'_> {
    /// The command name, for the per-operation tracing span.
    pub fn name(&self) -> String {
        match self {
            Op::Cmd(cmd) => match cmd.args_iter().next() {
                Some(redis::Arg::Simple(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
                _ => "?".to_string(),
            },
            Op::Script { .. } => "EVALSHA".to_string(),
        }
    }
}

async fn exec<C: ConnectionLike + Send>(conn: &mut C, op: &Op<'_>) -> RedisResult<Value> {
    match op {
        Op::Cmd(cmd) => cmd.query_async(conn).await,
        Op::Script { script, keys, args } => {
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
            for arg in args {
                invocation.arg(arg);
            }
            invocation.invoke_async(conn).await
        }
    }
}

/// A usable connection; cloning is cheap (all variants are handles).
#[derive(Clone)]
pub enum Conn {
    /// One multiplexed connection that reconnects by itself (single mode,
    /// and the current master in sentinel mode).
    Manager(ConnectionManager),
    /// A bb8 pool of multiplexed connections (single mode with `pool_size`).
    Pool(bb8::Pool<bb8_redis::RedisConnectionManager>),
    /// The async cluster client: follows MOVED/ASK and slot changes.
    Cluster(ClusterConnection),
}

impl Conn {
    /// Runs one operation on this connection.
    pub async fn run(&self, op: &Op<'_>) -> RedisResult<Value> {
        match self {
            Self::Manager(conn) => exec(&mut conn.clone(), op).await,
            Self::Cluster(conn) => exec(&mut conn.clone(), op).await,
            Self::Pool(pool) => {
                let mut conn = pool.get().await.map_err(|e| match e {
                    bb8::RunError::User(e) => e,
                    bb8::RunError::TimedOut => redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "timed out waiting for a pooled connection",
                    )),
                })?;
                exec(&mut *conn, op).await
            }
        }
    }
}

/// Small commands must not wait for Nagle's algorithm (redis-rs leaves it on).
fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

/// Connection info for one node, with the configured password and db.
pub fn node_info(settings: &RedisSettings, node: &HostPort) -> RedisResult<ConnectionInfo> {
    let mut redis = RedisConnectionInfo::default().set_db(settings.db);
    let password = settings.password.expose_secret();
    if !password.is_empty() {
        redis = redis.set_password(password);
    }
    Ok(ConnectionAddr::Tcp(node.host.clone(), node.port)
        .into_connection_info()?
        .set_redis_settings(redis)
        .set_tcp_settings(tcp_settings()))
}

/// Connection info from the single-mode URL, with password/db overrides.
pub fn url_info(settings: &RedisSettings) -> RedisResult<ConnectionInfo> {
    let info = settings.url.expose_secret().into_connection_info()?;
    let mut redis = info.redis_settings().clone();
    let password = settings.password.expose_secret();
    if !password.is_empty() {
        redis = redis.set_password(password);
    }
    if settings.db != 0 {
        redis = redis.set_db(settings.db);
    }
    Ok(info
        .set_redis_settings(redis)
        .set_tcp_settings(tcp_settings()))
}

fn manager_config(settings: &RedisSettings) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout()))
        .set_response_timeout(Some(settings.command_timeout()))
        // Reconnect attempts: 50 ms doubling to 2 s; the store's own
        // deadline bounds every request anyway.
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(3)
}

/// A self-reconnecting multiplexed connection to one node.
pub async fn connect_node(info: ConnectionInfo, settings: &RedisSettings) -> RedisResult<Conn> {
    let client = redis::Client::open(info)?;
    let manager = ConnectionManager::new_with_config(client, manager_config(settings)).await?;
    Ok(Conn::Manager(manager))
}

/// Single mode: a multiplexed connection, or a pool when configured.
pub async fn connect_single(settings: &RedisSettings) -> RedisResult<Conn> {
    let info = url_info(settings)?;
    if settings.pool_size == 0 {
        return connect_node(info, settings).await;
    }
    let manager = bb8_redis::RedisConnectionManager::new(info)?;
    let pool = bb8::Pool::builder()
        .max_size(settings.pool_size)
        .connection_timeout(settings.connect_timeout())
        .build(manager)
        .await?;
    Ok(Conn::Pool(pool))
}

/// Cluster mode: the async cluster client over the seed nodes. Its own
/// retries cover MOVED/ASK/TRYAGAIN/CLUSTERDOWN; the store's deadline bounds them.
pub async fn connect_cluster(settings: &RedisSettings) -> RedisResult<Conn> {
    let nodes = settings
        .cluster_nodes
        .iter()
        .map(|n| node_info(settings, n))
        .collect::<RedisResult<Vec<_>>>()?;
    let mut builder = ClusterClientBuilder::new(nodes)
        .connection_timeout(settings.connect_timeout())
        .response_timeout(settings.command_timeout())
        .retries(8)
        .min_retry_wait(10)
        .max_retry_wait(200)
        .tcp_settings(tcp_settings());
    let password = settings.password.expose_secret();
    if !password.is_empty() {
        builder = builder.password(password);
    }
    let client = builder.build()?;
    Ok(Conn::Cluster(client.get_async_connection().await?))
}
