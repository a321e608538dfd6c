//! Configuration: embedded defaults, `config/<RUN_ENV>.toml`, the legacy
//! environment names of the Node deployments, then `BROKER__SECTION__KEY`.
//!
//! Everything is parsed into typed values here, once, so a wrong setting stops
//! start-up with one line naming the key instead of failing a request later.
//!
//! This file holds [`Settings`], its loading and its rendering for
//! `check-config`; the section structs live in `sections`, the legacy
//! environment layer in `legacy` and the cross-field checks in `validate`.

mod legacy;
mod secret;
mod sections;
mod validate;

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;

use config::{Config, ConfigError, Environment, File, FileFormat, Map};
use serde::{Deserialize, Serialize};

use legacy::LegacyEnv;
pub use sections::{
    AuthSettings, ConsoleSettings, CorsSettings, HostPort, LimitSettings, LogFormat, LogSettings,
    RateLimitSettings, RecordingsSettings, RedisMode, RedisSettings, RoomsSettings, ServerSettings,
    SessionSettings, StorageSettings, TokenSettings,
};
pub use validate::MIN_TOKEN_SECRET_BYTES;

/// The embedded defaults: the broker needs no file on disk to run.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// The production defaults (e.g. the token rate limit), embedded as well so
/// they hold wherever the binary runs; `config/production.toml` on disk is
/// read again after them.
pub const PRODUCTION_TOML: &str = include_str!("../../config/production.toml");

/// The publicly known HS256 secret used in development when none is set, so
/// several local instances agree on signatures. Production refuses it.
pub const DEVELOPMENT_SECRET: &str = "rtc-broker-development-secret-do-not-use-in-production";

/// Keys whose `BROKER__` environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "redis.cluster_nodes",
    "redis.sentinels",
    "auth.api_keys",
    "tokens.previous_secrets",
    "tokens.public_key_paths",
    "cors.allowed_origins",
    "rate_limit.trusted_proxies",
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
    pub rooms: RoomsSettings,
    pub recordings: RecordingsSettings,
    pub cors: CorsSettings,
    pub rate_limit: RateLimitSettings,
    pub console: ConsoleSettings,
    pub log: LogSettings,
}

fn default_run_env() -> RunEnv {
    RunEnv::Development
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

        let production = match run_env {
            RunEnv::Production => PRODUCTION_TOML,
            RunEnv::Development => "",
        };
        let config = Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .add_source(File::from_str(production, FileFormat::Toml))
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

    /// The effective configuration as TOML, for `check-config`. Secrets
    /// are `SecretString`s that serialize as `<redacted>` (see `secret`), so
    /// there is no list of fields to hide here.
    pub fn redacted_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::{ExposeSecret, SecretString};

    use super::*;

    fn exposed(secrets: &[SecretString]) -> Vec<&str> {
        secrets.iter().map(|s| s.expose_secret()).collect()
    }

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
        assert_eq!(exposed(&s.auth.api_keys), vec!["a", "b"]);
        assert_eq!(s.sessions.default_ttl_seconds, 120);
        assert!(s.redis.is_configured());
    }

    #[test]
    fn broker_env_lists_are_split() {
        let s = load(&[("BROKER__AUTH__API_KEYS", "k1,k2")]).unwrap();
        assert_eq!(exposed(&s.auth.api_keys), vec!["k1", "k2"]);
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
                vec![
                    ("RUN_ENV", "production"),
                    ("TOKEN_SECRET", PRODUCTION_SECRET),
                ],
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

    /// A token secret long enough for production (32 bytes).
    const PRODUCTION_SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn production_refuses_a_token_secret_under_32_bytes() {
        let secret_31 = &PRODUCTION_SECRET[1..];
        for (pairs, key) in [
            (vec![("TOKEN_SECRET", "abc")], "tokens.secret"),
            (vec![("TOKEN_SECRET", secret_31)], "tokens.secret"),
            (
                vec![("BROKER__TOKENS__SECRET", "short-broker-secret")],
                "tokens.secret",
            ),
            (
                vec![
                    ("TOKEN_SECRET", PRODUCTION_SECRET),
                    (
                        "BROKER__TOKENS__PREVIOUS_SECRETS",
                        "fedcba9876543210fedcba9876543210,old-abc",
                    ),
                ],
                "tokens.previous_secrets",
            ),
        ] {
            let mut env = vec![("RUN_ENV", "production"), ("API_KEYS", "k")];
            env.extend(pairs);
            let err = load(&env).expect_err(key).to_string();
            assert!(err.contains(key), "{env:?}: {err}");
            assert!(err.contains("32 bytes"), "{env:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
            for (_, value) in &env[2..] {
                for part in value.split(',') {
                    assert!(!err.contains(part), "secret in the message: {err}");
                }
            }
        }
        let err = load(&[
            ("RUN_ENV", "production"),
            ("API_KEYS", "k"),
            ("TOKEN_SECRET", PRODUCTION_SECRET),
            (
                "BROKER__TOKENS__PREVIOUS_SECRETS",
                "fedcba9876543210fedcba9876543210,old-abc",
            ),
        ])
        .expect_err("short previous secret")
        .to_string();
        assert!(err.contains("entry 2"), "{err}");
    }

    #[test]
    fn production_accepts_32_byte_secrets() {
        let s = load(&[
            ("RUN_ENV", "production"),
            ("API_KEYS", "k"),
            ("TOKEN_SECRET", PRODUCTION_SECRET),
            (
                "BROKER__TOKENS__PREVIOUS_SECRETS",
                "fedcba9876543210fedcba9876543210",
            ),
        ])
        .unwrap();
        assert_eq!(s.run_env, RunEnv::Production);
        assert!(s.tokens.weak_secret_keys().is_empty());
    }

    #[test]
    fn production_limits_token_issuance_like_the_node_deployments() {
        let production = [
            ("RUN_ENV", "production"),
            ("API_KEYS", "k"),
            ("TOKEN_SECRET", PRODUCTION_SECRET),
        ];
        let s = load(&production).unwrap();
        assert_eq!(
            (s.rate_limit.tokens_per_window, s.rate_limit.window_seconds),
            (20, 900)
        );
        assert_eq!(load(&[]).unwrap().rate_limit.tokens_per_window, 0);
        let mut off = production.to_vec();
        off.push(("BROKER__RATE_LIMIT__TOKENS_PER_WINDOW", "0"));
        assert_eq!(load(&off).unwrap().rate_limit.tokens_per_window, 0);
        let err = load(&[("BROKER__RATE_LIMIT__TRUSTED_PROXIES", "10.0.0.0/8,proxy")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("rate_limit.trusted_proxies"), "{err}");
    }

    #[test]
    fn the_console_is_on_in_development_and_off_in_production() {
        assert!(load(&[]).unwrap().console.enabled);
        let off = load(&[("BROKER__CONSOLE__ENABLED", "false")]).unwrap();
        assert!(!off.console.enabled);
        let production = [
            ("RUN_ENV", "production"),
            ("API_KEYS", "k"),
            ("TOKEN_SECRET", PRODUCTION_SECRET),
        ];
        assert!(!load(&production).unwrap().console.enabled);
        let mut on = production.to_vec();
        on.push(("BROKER__CONSOLE__ENABLED", "true"));
        assert!(load(&on).unwrap().console.enabled);
    }

    #[test]
    fn a_short_secret_unused_by_an_ed25519_key_is_not_refused() {
        let s = load(&[
            ("RUN_ENV", "production"),
            ("API_KEYS", "k"),
            ("TOKEN_SECRET", "abc"),
            (
                "BROKER__TOKENS__PRIVATE_KEY_PATH",
                "/etc/rtc-broker/ed25519.pem",
            ),
        ])
        .unwrap();
        assert!(s.tokens.weak_secret_keys().is_empty());
    }

    #[test]
    fn development_keeps_a_short_secret_and_reports_it() {
        let s = load(&[("TOKEN_SECRET", "abc")]).unwrap();
        assert_eq!(s.tokens.weak_secret_keys(), vec!["tokens.secret"]);
        let s = load(&[("BROKER__TOKENS__PREVIOUS_SECRETS", "old")]).unwrap();
        assert_eq!(s.tokens.weak_secret_keys(), vec!["tokens.previous_secrets"]);
        // No secret at all: the development secret, warned about separately.
        assert!(load(&[]).unwrap().tokens.weak_secret_keys().is_empty());
        assert!(DEVELOPMENT_SECRET.len() >= MIN_TOKEN_SECRET_BYTES);
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

    /// Every kind of secret, each with a value found nowhere else.
    const SECRETS: &[(&str, &str)] = &[
        ("TOKEN_SECRET", "token-secret-6f1d2c"),
        ("API_KEYS", "api-key-one-9a8b,api-key-two-7c6d"),
        ("REDIS_PASSWORD", "redis-password-5e4f"),
        (
            "BROKER__TOKENS__PREVIOUS_SECRETS",
            "old-secret-3a2b,older-secret-1c0d",
        ),
        (
            "REDIS_URL",
            "redis://user:url-password-2b3c@127.0.0.1:6379/0",
        ),
    ];
    const SECRET_VALUES: &[&str] = &[
        "token-secret-6f1d2c",
        "api-key-one-9a8b",
        "api-key-two-7c6d",
        "redis-password-5e4f",
        "old-secret-3a2b",
        "older-secret-1c0d",
        "url-password-2b3c",
    ];

    #[test]
    fn debug_output_shows_no_secret() {
        let s = load(SECRETS).unwrap();
        // The secrets were read...
        assert_eq!(s.tokens.secret.expose_secret(), "token-secret-6f1d2c");
        assert_eq!(exposed(&s.tokens.previous_secrets).len(), 2);
        assert_eq!(exposed(&s.auth.api_keys).len(), 2);
        // ...and no Debug rendering shows them.
        for shown in [
            format!("{s:?}"),
            format!("{s:#?}"),
            format!("{:?}", s.tokens),
            format!("{:?}", s.redis),
            format!("{:?}", s.auth),
        ] {
            for secret in SECRET_VALUES {
                assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
            }
        }
    }

    #[test]
    fn check_config_output_shows_no_secret() {
        let s = load(SECRETS).unwrap();
        let out = s.redacted_toml();
        for secret in SECRET_VALUES {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
        // Still useful: which secrets are set, and where Redis is.
        assert!(out.contains("secret = \"<redacted>\""), "{out}");
        assert!(out.contains("password = \"<redacted>\""), "{out}");
        assert!(
            out.contains("url = \"redis://user:<redacted>@127.0.0.1:6379/0\""),
            "{out}"
        );
        assert!(
            out.contains("api_keys = [\"<redacted>\", \"<redacted>\"]"),
            "{out}"
        );
        assert!(
            out.contains("previous_secrets = [\"<redacted>\", \"<redacted>\"]"),
            "{out}"
        );
    }

    #[test]
    fn check_config_shows_unset_secrets_as_empty() {
        let out = load(&[]).unwrap().redacted_toml();
        assert!(out.contains("secret = \"\""), "{out}");
        assert!(out.contains("password = \"\""), "{out}");
        assert!(out.contains("url = \"\""), "{out}");
        assert!(out.contains("api_keys = []"), "{out}");
        assert!(!out.contains("<redacted>"), "{out}");
    }

    #[test]
    fn a_password_only_url_is_redacted_too() {
        let out = load(&[("REDIS_URL", "redis://:only-pass-8d7e@10.0.0.1:6380")])
            .unwrap()
            .redacted_toml();
        assert!(!out.contains("only-pass-8d7e"), "{out}");
        assert!(
            out.contains("url = \"redis://:<redacted>@10.0.0.1:6380\""),
            "{out}"
        );
    }
}
