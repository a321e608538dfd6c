//! Configuration: embedded defaults, `config/<RUN_ENV>.toml`, the legacy
//! environment names of the Node deployments, then `BROKER__SECTION__KEY`.
//!
//! Everything is parsed into typed values here, once, so a wrong setting stops
//! start-up with one line naming the key instead of failing a request later.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use config::{Config, ConfigError, Environment, File, FileFormat, Map, Source, Value, ValueKind};
use serde::{Deserialize, Serialize};

/// The embedded defaults: the broker needs no file on disk to run.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// The publicly known HS256 secret used in development when none is set, so
/// several local instances agree on signatures. Production refuses it.
pub const DEVELOPMENT_SECRET: &str = "rtc-broker-development-secret-do-not-use-in-production";

/// Legacy environment names and the keys they set, kept so a team can switch
/// from the Node deployments without renaming anything.
const LEGACY_ENV: &[(&str, &str, bool)] = &[
    ("PORT", "server.port", false),
    ("HOST", "server.host", false),
    ("SERVER_ID", "server.server_id", false),
    ("REDIS_ENABLED", "redis.enabled", false),
    ("REDIS_URL", "redis.url", false),
    ("REDIS_MODE", "redis.mode", false),
    ("REDIS_CLUSTER_NODES", "redis.cluster_nodes", true),
    ("REDIS_SENTINELS", "redis.sentinels", true),
    ("REDIS_SENTINEL_NAME", "redis.sentinel_name", false),
    ("REDIS_PASSWORD", "redis.password", false),
    ("REDIS_DB", "redis.db", false),
    ("REDIS_KEY_PREFIX", "redis.key_prefix", false),
    ("REDIS_TTL", "sessions.default_ttl_seconds", false),
    ("REDIS_CONNECT_TIMEOUT", "redis.connect_timeout_ms", false),
    ("REDIS_COMMAND_TIMEOUT", "redis.command_timeout_ms", false),
    ("TOKEN_SECRET", "tokens.secret", false),
    ("API_KEYS", "auth.api_keys", true),
];

/// Largest verification leeway accepted: it covers clock skew between
/// hosts, not a grace period after expiry.
const MAX_LEEWAY_SECONDS: u64 = 300;

/// Keys whose `BROKER__` environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "redis.cluster_nodes",
    "redis.sentinels",
    "auth.api_keys",
    "tokens.previous_secrets",
    "tokens.public_key_paths",
];

/// A configuration that cannot be served; its `Display` is the one line
/// printed before exiting with status 2.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration error: {0}")]
    Load(#[from] ConfigError),
    #[error("configuration error: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Which deployment profile is running; production is strict about secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunEnv {
    Development,
    Production,
}

impl FromStr for RunEnv {
    type Err = SettingsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "development" => Ok(Self::Development),
            "production" => Ok(Self::Production),
            other => Err(invalid(
                "RUN_ENV",
                format!("unknown environment {other:?}, expected development or production"),
            )),
        }
    }
}

impl RunEnv {
    fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }
}

/// Everything the broker reads from configuration, already validated.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    #[serde(skip_deserializing, default = "default_run_env")]
    pub run_env: RunEnv,
    pub server: ServerSettings,
    pub limits: LimitSettings,
    pub storage: StorageSettings,
    pub redis: RedisSettings,
    pub tokens: TokenSettings,
    pub sessions: SessionSettings,
    pub auth: AuthSettings,
    pub log: LogSettings,
}

fn default_run_env() -> RunEnv {
    RunEnv::Development
}

/// Where and how the HTTP server listens.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub server_id: String,
    pub workers: usize,
    pub shutdown_timeout_seconds: u64,
    pub max_inflight_requests: usize,
    pub overload_wait_ms: u64,
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
    pub url: String,
    pub cluster_nodes: Vec<HostPort>,
    pub sentinels: Vec<HostPort>,
    pub sentinel_name: String,
    pub password: String,
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
                RedisMode::Single => !self.url.is_empty(),
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
    pub secret: String,
    pub previous_secrets: Vec<String>,
    pub private_key_path: String,
    pub public_key_paths: Vec<String>,
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
    pub api_keys: Vec<String>,
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

/// The legacy environment names as a configuration layer of their own, so
/// they sit between the files and the `BROKER__` variables.
#[derive(Debug, Clone)]
struct LegacyEnv(Map<String, Value>);

impl LegacyEnv {
    fn from_env(env: &HashMap<String, String>) -> Self {
        let mut map = Map::new();
        for (name, key, is_list) in LEGACY_ENV {
            let Some(raw) = env.get(*name) else { continue };
            let origin = format!("environment variable {name}");
            let kind = if *is_list {
                ValueKind::Array(
                    split_list(raw)
                        .map(|item| Value::new(Some(&origin), item))
                        .collect(),
                )
            } else {
                ValueKind::String(raw.clone())
            };
            map.insert((*key).to_string(), Value::new(Some(&origin), kind));
        }
        Self(map)
    }
}

impl Source for LegacyEnv {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }
    fn collect(&self) -> Result<Map<String, Value>, ConfigError> {
        Ok(self.0.clone())
    }
}

fn split_list(raw: &str) -> impl Iterator<Item = String> + '_ {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl Settings {
    /// Loads the layered configuration from the process environment.
    pub fn load() -> Result<Self, SettingsError> {
        Self::load_from(&std::env::vars().collect())
    }

    /// Loads the layered configuration from the given environment, so tests
    /// can build settings without touching the process environment.
    pub fn load_from(env: &HashMap<String, String>) -> Result<Self, SettingsError> {
        let run_env: RunEnv = env.get("RUN_ENV").map_or("", String::as_str).parse()?;
        let dir = env
            .get("BROKER_CONFIG_DIR")
            .map_or_else(|| PathBuf::from("config"), PathBuf::from);
        let env_file = dir.join(format!("{}.toml", run_env.as_str()));

        // Only BROKER__ variables: the legacy names are their own layer.
        let broker_env: Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("BROKER__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut environment = Environment::with_prefix("BROKER")
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .try_parsing(true)
            .source(Some(broker_env));
        for key in LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }

        let config = Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .add_source(
                File::from(env_file)
                    .format(FileFormat::Toml)
                    .required(false),
            )
            .add_source(LegacyEnv::from_env(env))
            .add_source(environment)
            .build()?;
        let mut settings: Settings = config.try_deserialize()?;
        settings.run_env = run_env;
        settings.validate()?;
        Ok(settings)
    }

    /// Cross-field rules that serde cannot express.
    fn validate(&mut self) -> Result<(), SettingsError> {
        if self.server.server_id.is_empty() {
            self.server.server_id = default_server_id();
        }
        if self.limits.json_body_bytes == 0 {
            return Err(invalid("limits.json_body_bytes", "must be at least 1"));
        }
        if self.limits.json_max_depth == 0 {
            return Err(invalid("limits.json_max_depth", "must be at least 1"));
        }
        if self.storage.sweep_interval_ms == 0 {
            return Err(invalid("storage.sweep_interval_ms", "must be at least 1"));
        }
        let r = &self.redis;
        if r.enabled && r.mode == RedisMode::Sentinel {
            if r.sentinels.is_empty() {
                return Err(invalid(
                    "redis.sentinels",
                    "sentinel mode needs at least one sentinel (REDIS_SENTINELS)",
                ));
            }
            if r.sentinel_name.is_empty() {
                return Err(invalid(
                    "redis.sentinel_name",
                    "sentinel mode needs the master name (REDIS_SENTINEL_NAME)",
                ));
            }
        }
        if r.enabled && r.mode == RedisMode::Cluster && r.cluster_nodes.is_empty() {
            return Err(invalid(
                "redis.cluster_nodes",
                "cluster mode needs at least one seed node (REDIS_CLUSTER_NODES)",
            ));
        }
        if r.enabled && r.mode == RedisMode::Single && !r.url.is_empty() {
            let ok = r.url.starts_with("redis://") || r.url.starts_with("rediss://");
            if !ok {
                return Err(invalid(
                    "redis.url",
                    "must start with redis:// or rediss:// (REDIS_URL)",
                ));
            }
        }
        if r.connect_timeout_ms == 0 {
            return Err(invalid("redis.connect_timeout_ms", "must be at least 1"));
        }
        if r.command_timeout_ms == 0 {
            return Err(invalid("redis.command_timeout_ms", "must be at least 1"));
        }
        if r.health_check_interval_ms == 0 {
            return Err(invalid(
                "redis.health_check_interval_ms",
                "must be at least 1",
            ));
        }
        validate_ttl_pair(
            "tokens.default_ttl_seconds",
            self.tokens.default_ttl_seconds,
            self.tokens.max_ttl_seconds,
        )?;
        validate_ttl_pair(
            "sessions.default_ttl_seconds",
            self.sessions.default_ttl_seconds,
            self.sessions.max_ttl_seconds,
        )?;
        if self.tokens.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(invalid(
                "tokens.leeway_seconds",
                format!("at most {MAX_LEEWAY_SECONDS} (clock skew, not a grace period)"),
            ));
        }
        if self.sessions.max_members == 0 {
            return Err(invalid("sessions.max_members", "must be at least 1"));
        }
        if self.tokens.issuer.is_empty() {
            return Err(invalid("tokens.issuer", "must not be empty"));
        }
        if self.tokens.audience.is_empty() {
            return Err(invalid("tokens.audience", "must not be empty"));
        }
        if self.run_env == RunEnv::Production {
            if self.tokens.secret.is_empty() && self.tokens.private_key_path.is_empty() {
                return Err(invalid(
                    "tokens.secret",
                    "production needs TOKEN_SECRET or tokens.private_key_path",
                ));
            }
            if self.tokens.secret == DEVELOPMENT_SECRET {
                return Err(invalid(
                    "tokens.secret",
                    "the development secret is public; production needs a real one",
                ));
            }
            if self.auth.api_keys.is_empty() {
                return Err(invalid(
                    "auth.api_keys",
                    "production needs at least one API key (API_KEYS)",
                ));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML with every secret replaced, for
    /// `check-config` and start-up logs.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        let redact = |s: &mut String| {
            if !s.is_empty() {
                *s = "<redacted>".into();
            }
        };
        redact(&mut shown.tokens.secret);
        shown.tokens.previous_secrets.iter_mut().for_each(redact);
        redact(&mut shown.redis.password);
        shown.auth.api_keys.iter_mut().for_each(redact);
        shown.redis.url = redact_url(&shown.redis.url);
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

fn validate_ttl_pair(key: &'static str, default: u64, max: u64) -> Result<(), SettingsError> {
    if default == 0 || default > max {
        return Err(invalid(
            key,
            format!("must be between 1 and the maximum ({max}), got {default}"),
        ));
    }
    Ok(())
}

/// Hides a password in `redis://user:password@host` URLs.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:<redacted>@{host}")
        }
        None => url.to_string(),
    }
}

fn default_server_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "broker".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let mut env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.entry("BROKER_CONFIG_DIR".into())
            .or_insert_with(|| "/nonexistent".into());
        Settings::load_from(&env)
    }

    #[test]
    fn defaults_serve_in_memory_on_8080() {
        let s = load(&[]).unwrap();
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.server.host, "127.0.0.1");
        assert!(!s.redis.is_configured());
        assert_eq!(s.tokens.issuer, "rtc-broker");
        assert_eq!(s.tokens.audience, "rtc");
        assert_eq!(s.redis.command_timeout_ms, 1000);
    }

    #[test]
    fn broker_env_beats_legacy_env() {
        let s = load(&[("PORT", "7000"), ("BROKER__SERVER__PORT", "9000")]).unwrap();
        assert_eq!(s.server.port, 9000);
        let s = load(&[("PORT", "7000")]).unwrap();
        assert_eq!(s.server.port, 7000);
    }

    #[test]
    fn legacy_lists_and_names_are_read() {
        let s = load(&[
            ("REDIS_MODE", "cluster"),
            ("REDIS_CLUSTER_NODES", "127.0.0.1:7000, 127.0.0.1:7001"),
            ("API_KEYS", "a,b"),
            ("REDIS_TTL", "120"),
        ])
        .unwrap();
        assert_eq!(s.redis.mode, RedisMode::Cluster);
        assert_eq!(s.redis.cluster_nodes.len(), 2);
        assert_eq!(s.redis.cluster_nodes[1].port, 7001);
        assert_eq!(s.auth.api_keys, vec!["a", "b"]);
        assert_eq!(s.sessions.default_ttl_seconds, 120);
        assert!(s.redis.is_configured());
    }

    #[test]
    fn broker_env_lists_are_split() {
        let s = load(&[("BROKER__AUTH__API_KEYS", "k1,k2")]).unwrap();
        assert_eq!(s.auth.api_keys, vec!["k1", "k2"]);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (pairs, needle) in [
            (vec![("REDIS_MODE", "foo")], "redis.mode"),
            (
                vec![("REDIS_MODE", "foo"), ("REDIS_ENABLED", "false")],
                "redis.mode",
            ),
            (vec![("PORT", "abc")], "server.port"),
            (vec![("BROKER__SERVER__PORT", "70000")], "server.port"),
            (
                vec![
                    ("REDIS_MODE", "cluster"),
                    ("REDIS_CLUSTER_NODES", "localhost"),
                ],
                "redis.cluster_nodes",
            ),
            (vec![("REDIS_MODE", "sentinel")], "redis.sentinels"),
            (vec![("RUN_ENV", "staging")], "RUN_ENV"),
            (vec![("REDIS_URL", "http://x")], "redis.url"),
            (vec![("RUN_ENV", "production")], "tokens.secret"),
            (
                vec![("RUN_ENV", "production"), ("TOKEN_SECRET", "s3cret-value")],
                "auth.api_keys",
            ),
            (vec![("BROKER__TOKENS__DEFAULT_TTL_SECONDS", "0")], "tokens"),
            (
                vec![("BROKER__TOKENS__LEEWAY_SECONDS", "3600")],
                "tokens.leeway_seconds",
            ),
        ] {
            let err = load(&pairs).expect_err(needle).to_string();
            assert!(err.contains(needle), "{pairs:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn redaction_hides_every_secret() {
        let s = load(&[
            ("TOKEN_SECRET", "topsecret"),
            ("API_KEYS", "key-one"),
            ("REDIS_URL", "redis://user:hunter2@127.0.0.1:6379"),
            ("REDIS_PASSWORD", "pw-123"),
        ])
        .unwrap();
        let out = s.redacted_toml();
        for secret in ["topsecret", "key-one", "hunter2", "pw-123"] {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
        assert!(out.contains("[redis]") && out.contains("[tokens]"));
    }
}
