//! Cross-field rules that serde cannot express, checked once at load time
//! so a wrong setting stops start-up with one line naming the key instead
//! of failing a request later. Also the production rules for secrets.

use secrecy::ExposeSecret;

use super::{
    invalid, RedisMode, RunEnv, Settings, SettingsError, TokenSettings, DEVELOPMENT_SECRET,
};

/// Largest verification leeway accepted: it covers clock skew between
/// hosts, not a grace period after expiry.
const MAX_LEEWAY_SECONDS: u64 = 300;

/// Shortest HS256 secret production accepts: RFC 7518 section 3.2 asks for
/// a key at least as long as the SHA-256 output, and a shorter one can be
/// guessed offline from any token the broker has issued.
pub const MIN_TOKEN_SECRET_BYTES: usize = 32;

fn is_weak(secret: &str) -> bool {
    secret.len() < MIN_TOKEN_SECRET_BYTES
}

impl TokenSettings {
    /// The keys (`tokens.secret`, `tokens.previous_secrets`) holding an
    /// HS256 secret shorter than [`MIN_TOKEN_SECRET_BYTES`]: refused in
    /// production, warned about in development. An unset `tokens.secret`
    /// is not listed (development then uses [`DEVELOPMENT_SECRET`]), and
    /// nothing is with an Ed25519 key, which leaves the secrets unused.
    pub fn weak_secret_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if !self.private_key_path.is_empty() {
            return keys;
        }
        let secret = self.secret.expose_secret();
        if !secret.is_empty() && is_weak(secret) {
            keys.push("tokens.secret");
        }
        if self
            .previous_secrets
            .iter()
            .any(|s| is_weak(s.expose_secret()))
        {
            keys.push("tokens.previous_secrets");
        }
        keys
    }
}

impl Settings {
    /// Cross-field rules that serde cannot express.
    pub(super) fn validate(&mut self) -> Result<(), SettingsError> {
        if self.server.server_id.is_empty() {
            self.server.server_id = default_server_id();
        }
        if self.limits.json_body_bytes == 0 {
            return Err(invalid("limits.json_body_bytes", "must be at least 1"));
        }
        if self.limits.json_max_depth == 0 {
            return Err(invalid("limits.json_max_depth", "must be at least 1"));
        }
        self.validate_rooms()?;
        let drain = self.server.drain_seconds;
        if !(0.0..=3600.0).contains(&drain) {
            return Err(invalid("server.drain_seconds", "must be from 0 to 3600"));
        }
        if self.rate_limit.window_seconds == 0 {
            return Err(invalid("rate_limit.window_seconds", "must be at least 1"));
        }
        crate::ratelimit::TrustedProxies::parse(&self.rate_limit.trusted_proxies)
            .map_err(|e| invalid("rate_limit.trusted_proxies", e.to_string()))?;
        self.validate_recordings()?;
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
        let url = r.url.expose_secret();
        if r.enabled && r.mode == RedisMode::Single && !url.is_empty() {
            let ok = url.starts_with("redis://") || url.starts_with("rediss://");
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
            let secret = self.tokens.secret.expose_secret();
            if secret.is_empty() && self.tokens.private_key_path.is_empty() {
                return Err(invalid(
                    "tokens.secret",
                    "production needs TOKEN_SECRET or tokens.private_key_path",
                ));
            }
            if secret == DEVELOPMENT_SECRET {
                return Err(invalid(
                    "tokens.secret",
                    "the development secret is public; production needs a real one",
                ));
            }
            self.refuse_weak_secrets()?;
            if self.auth.api_keys.is_empty() {
                return Err(invalid(
                    "auth.api_keys",
                    "production needs at least one API key (API_KEYS)",
                ));
            }
        }
        Ok(())
    }

    /// Production: every HS256 secret in use is at least
    /// [`MIN_TOKEN_SECRET_BYTES`] long. The message never shows the secret.
    fn refuse_weak_secrets(&self) -> Result<(), SettingsError> {
        const MIN: usize = MIN_TOKEN_SECRET_BYTES;
        let weak = self.tokens.weak_secret_keys();
        if weak.contains(&"tokens.secret") {
            return Err(invalid(
                "tokens.secret",
                format!(
                    "shorter than {MIN} bytes; production needs an HS256 secret of at least \
                     {MIN} bytes (TOKEN_SECRET, e.g. from `openssl rand -base64 48`)"
                ),
            ));
        }
        if weak.contains(&"tokens.previous_secrets") {
            let entry = self
                .tokens
                .previous_secrets
                .iter()
                .position(|s| is_weak(s.expose_secret()))
                .map_or(0, |i| i + 1);
            return Err(invalid(
                "tokens.previous_secrets",
                format!(
                    "entry {entry} is shorter than {MIN} bytes; production accepts only HS256 \
                     secrets of at least {MIN} bytes"
                ),
            ));
        }
        Ok(())
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

impl Settings {
    /// Room limits must leave rooms usable: nothing may be zero, and the
    /// idle timeout must exceed the ping interval (else idle clients that
    /// answer pings are closed).
    fn validate_rooms(&self) -> Result<(), SettingsError> {
        let r = &self.rooms;
        for (key, value) in [
            ("rooms.history_size", r.history_size as u64),
            ("rooms.history_ttl_seconds", r.history_ttl_seconds),
            ("rooms.presence_ttl_seconds", r.presence_ttl_seconds),
            ("rooms.outage_buffer", r.outage_buffer as u64),
            ("rooms.max_frame_bytes", r.max_frame_bytes as u64),
            (
                "rooms.messages_per_second",
                u64::from(r.messages_per_second),
            ),
            ("rooms.max_members", r.max_members as u64),
            ("rooms.max_queue", r.max_queue as u64),
            (
                "rooms.max_pending_publishes",
                r.max_pending_publishes as u64,
            ),
            ("rooms.ping_interval_seconds", r.ping_interval_seconds),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if r.outage_buffer as u64 >= crate::rooms::bus::redis::EPOCH_JUMP {
            return Err(invalid(
                "rooms.outage_buffer",
                format!("must be below {}", crate::rooms::bus::redis::EPOCH_JUMP),
            ));
        }
        if r.idle_timeout_seconds <= r.ping_interval_seconds {
            return Err(invalid(
                "rooms.idle_timeout_seconds",
                "must be longer than rooms.ping_interval_seconds",
            ));
        }
        if self
            .cors
            .allowed_origins
            .iter()
            .any(|o| o.trim().is_empty())
        {
            return Err(invalid("cors.allowed_origins", "empty origin in the list"));
        }
        Ok(())
    }
}

impl Settings {
    /// Recording limits must leave recordings usable.
    fn validate_recordings(&self) -> Result<(), SettingsError> {
        let r = &self.recordings;
        for (key, value) in [
            (
                "recordings.upload_token_ttl_seconds",
                r.upload_token_ttl_seconds,
            ),
            ("recordings.max_chunk_bytes", r.max_chunk_bytes as u64),
            ("recordings.max_chunks", r.max_chunks),
            (
                "recordings.upload_timeout_seconds",
                r.upload_timeout_seconds,
            ),
            (
                "recordings.max_concurrent_merges",
                r.max_concurrent_merges as u64,
            ),
            ("recordings.retention_hours", r.retention_hours),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if !(r.merge_timeout_seconds.is_finite() && r.merge_timeout_seconds > 0.0) {
            return Err(invalid(
                "recordings.merge_timeout_seconds",
                "must be a positive number of seconds",
            ));
        }
        if r.ffmpeg_path.is_empty() || r.ffprobe_path.is_empty() {
            return Err(invalid("recordings.ffmpeg_path", "must name a program"));
        }
        Ok(())
    }
}
