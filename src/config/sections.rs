//! The section structs of the configuration, one per `[section]` of
//! `config/default.toml`, and the small value types they hold.
//!
//! Kept apart from loading and validation so a new setting is a one-line
//! change here (plus its default and, if needed, a check in `validate.rs`).

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::secret;

/// Where and how the HTTP server listens.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub server_id: String,
    pub workers: usize,
    pub shutdown_timeout_seconds: u64,
    /// SIGTERM: room sockets are closed (1001) spread over this many seconds.
    pub drain_seconds: f64,
    pub max_inflight_requests: usize,
    pub overload_wait_ms: u64,
    /// Slow headers: the request head must arrive within this (else 408).
    pub client_request_timeout_ms: u64,
    /// How long a closing connection may take to be shut down.
    pub client_disconnect_timeout_ms: u64,
    /// Slow bodies: a JSON body must arrive within this (else 408).
    pub body_timeout_ms: u64,
}

/// Request size limits that protect the broker from oversized input.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LimitSettings {
    pub json_body_bytes: usize,
    pub json_max_depth: usize,
}

/// Behaviour of the storage layer independent of the backend.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StorageSettings {
    pub fallback: bool,
    pub sweep_interval_ms: u64,
    pub journal_path: String,
}

/// How Redis is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", rename_all = "lowercase")]
pub enum RedisMode {
    Single,
    Cluster,
    Sentinel,
}

impl TryFrom<String> for RedisMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "single" => Ok(Self::Single),
            "cluster" => Ok(Self::Cluster),
            "sentinel" => Ok(Self::Sentinel),
            other => Err(format!(
                "unknown Redis mode {other:?}, expected single, cluster or sentinel"
            )),
        }
    }
}

impl RedisMode {
    /// The name used in configuration, health and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Cluster => "cluster",
            Self::Sentinel => "sentinel",
        }
    }
}

/// A `host:port` pair from a node or sentinel list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl TryFrom<String> for HostPort {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let bad = || format!("{s:?} is not host:port");
        let (host, port) = s.trim().rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl From<HostPort> for String {
    fn from(h: HostPort) -> String {
        h.to_string()
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Redis connection settings for all three modes.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RedisSettings {
    pub enabled: bool,
    pub mode: RedisMode,
    /// May carry a password (`redis://user:pw@host`): shown with it hidden.
    #[serde(serialize_with = "secret::redact_url")]
    pub url: SecretString,
    pub cluster_nodes: Vec<HostPort>,
    pub sentinels: Vec<HostPort>,
    pub sentinel_name: String,
    #[serde(serialize_with = "secret::redact")]
    pub password: SecretString,
    pub db: i64,
    pub key_prefix: String,
    pub connect_timeout_ms: u64,
    pub command_timeout_ms: u64,
    pub pool_size: u32,
    pub health_check_interval_ms: u64,
}

impl RedisSettings {
    /// Whether a Redis connection is configured and not switched off; when
    /// false the in-memory store serves.
    pub fn is_configured(&self) -> bool {
        self.enabled
            && match self.mode {
                RedisMode::Single => !self.url.expose_secret().is_empty(),
                RedisMode::Cluster => !self.cluster_nodes.is_empty(),
                RedisMode::Sentinel => !self.sentinels.is_empty(),
            }
    }

    /// Upper bound for one Redis command, so a hung server never hangs a request.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    /// Upper bound for establishing a connection.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Period of the background connection check.
    pub fn health_check_interval(&self) -> Duration {
        Duration::from_millis(self.health_check_interval_ms)
    }
}

/// Token signing and verification.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TokenSettings {
    #[serde(serialize_with = "secret::redact")]
    pub secret: SecretString,
    #[serde(serialize_with = "secret::redact_each")]
    pub previous_secrets: Vec<SecretString>,
    pub private_key_path: String,
    pub public_key_paths: Vec<String>,
    /// Unix seconds after which previous keys no longer verify and leave
    /// the JWKS; 0 = until removed from the configuration.
    pub previous_keys_valid_until: u64,
    pub issuer: String,
    pub audience: String,
    pub default_ttl_seconds: u64,
    pub max_ttl_seconds: u64,
    pub leeway_seconds: u64,
}

/// Session record lifetimes.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SessionSettings {
    pub default_ttl_seconds: u64,
    pub max_ttl_seconds: u64,
    pub max_members: usize,
}

/// Who may call management endpoints.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AuthSettings {
    #[serde(serialize_with = "secret::redact_each")]
    pub api_keys: Vec<SecretString>,
}

/// WebSocket rooms (SPEC section 6).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RoomsSettings {
    pub history_size: usize,
    pub history_ttl_seconds: u64,
    pub presence_ttl_seconds: u64,
    pub outage_buffer: usize,
    pub outage_local_after_ms: u64,
    pub max_frame_bytes: usize,
    pub messages_per_second: u32,
    pub max_queue: usize,
    pub max_pending_publishes: usize,
    pub max_members: usize,
    pub ping_interval_seconds: u64,
    pub idle_timeout_seconds: u64,
}

impl RoomsSettings {
    /// How long a room's history entries stay readable.
    pub fn history_ttl(&self) -> Duration {
        Duration::from_secs(self.history_ttl_seconds)
    }

    /// How long a member stays listed after its instance stopped refreshing it.
    pub fn presence_ttl(&self) -> Duration {
        Duration::from_secs(self.presence_ttl_seconds)
    }
}

/// Recordings (SPEC section 7): where chunks and results live, limits, and
/// the merge tools.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RecordingsSettings {
    /// Chunks while recording (legacy `TEMP_DIR`); empty = the OS temp dir.
    pub chunk_dir: String,
    /// Finished recordings (legacy `STORAGE_LOCAL_PATH`); empty = the OS temp dir.
    pub output_dir: String,
    /// Remove the chunks after a good merge (legacy `CLEANUP_CHUNKS`).
    pub cleanup_chunks: bool,
    /// Prefix of download and WebSocket URLs (legacy `API_BASE_URL`).
    pub api_base_url: String,
    pub upload_token_ttl_seconds: u64,
    pub max_chunk_bytes: usize,
    pub max_chunks: u64,
    pub upload_timeout_seconds: u64,
    pub max_concurrent_merges: usize,
    /// Fractions allowed (tests use a few milliseconds).
    pub merge_timeout_seconds: f64,
    pub retention_hours: u64,
    pub ffmpeg_path: String,
    pub ffprobe_path: String,
}

impl RecordingsSettings {
    /// How long a recording, its chunks, counter and result are kept.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_hours.saturating_mul(3600))
    }

    /// The chunk directory, the OS temp dir's `rtc-broker/chunks` when unset.
    pub fn chunk_path(&self) -> std::path::PathBuf {
        dir_or_temp(&self.chunk_dir, "chunks")
    }

    /// The output directory, the OS temp dir's `rtc-broker/recordings` when unset.
    pub fn output_path(&self) -> std::path::PathBuf {
        dir_or_temp(&self.output_dir, "recordings")
    }
}

fn dir_or_temp(dir: &str, leaf: &str) -> std::path::PathBuf {
    if dir.is_empty() {
        std::env::temp_dir().join("rtc-broker").join(leaf)
    } else {
        std::path::PathBuf::from(dir)
    }
}

/// Which browser origins may call the broker: the HTTP CORS layer and the
/// WebSocket `Origin` check (one list for both).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CorsSettings {
    pub allowed_origins: Vec<String>,
    pub max_age_seconds: u64,
}

/// Rate limits (SPEC section 9), counted in Redis across instances.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RateLimitSettings {
    /// Token issuances per client IP per window; 0 = off.
    pub tokens_per_window: u64,
    /// Management writes per session id per window (token issuance and
    /// session writes); 0 = off.
    pub session_writes_per_window: u64,
    pub window_seconds: u64,
    /// Peers (IPs or CIDRs) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<String>,
}

/// The web console at `GET /` (SPEC section 11): on in development, off in
/// production (`config/production.toml`), where a broker serves apps rather
/// than people trying it out.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ConsoleSettings {
    pub enabled: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Pretty,
}

/// Logging settings; `RUST_LOG` still overrides the level.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}
