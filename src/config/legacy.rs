//! The legacy environment names of the Node deployments (`PORT`,
//! `REDIS_URL`, `TOKEN_SECRET`, ...) as a configuration layer of their own.
//!
//! They are honoured so a team can switch without renaming anything, and sit
//! between the files and the `BROKER__` variables, which still win.

use std::collections::HashMap;

use config::{ConfigError, Map, Source, Value, ValueKind};

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
    ("STORAGE_LOCAL_PATH", "recordings.output_dir", false),
    ("TEMP_DIR", "recordings.chunk_dir", false),
    ("CLEANUP_CHUNKS", "recordings.cleanup_chunks", false),
    ("API_BASE_URL", "recordings.api_base_url", false),
];

/// The legacy environment names as a configuration layer of their own, so
/// they sit between the files and the `BROKER__` variables.
#[derive(Debug, Clone)]
pub(super) struct LegacyEnv(Map<String, Value>);

impl LegacyEnv {
    pub(super) fn from_env(env: &HashMap<String, String>) -> Self {
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
