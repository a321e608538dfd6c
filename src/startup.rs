//! Builds the application from settings: keys, store, services, HTTP server.
//! Tests build it the same way on port 0 and talk to it over real sockets.

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use crate::auth::ApiKeys;
use crate::config::{Settings, SettingsError, MIN_TOKEN_SECRET_BYTES};
use crate::cors;
use crate::domain::Ttl;
use crate::extract::JsonLimits;
use crate::health::Lifecycle;
use crate::migration::DomainReconcile;
use crate::origins::AllowedOrigins;
use crate::overload::{self, InflightLimit};
use crate::pubsub::PubSub;
use crate::ratelimit::RateLimiter;
use crate::recording::Recordings;
use crate::rooms::{Rooms, RoomsParts};
use crate::routes;
use crate::sessions::SessionService;
use crate::state::{AppState, FieldLimits};
use crate::store::{DiskJournal, FallbackStore, MemoryStore, RedisStore, Store};
use crate::telemetry;
use crate::tokens::{KeyError, Revocations, SigningKeys, TokenService};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("cannot open the fallback journal {path}: {source}")]
    Journal {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the recording folders ({path}): {source}")]
    Recordings {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

impl StartupError {
    /// True for errors caused by configuration (exit status 2).
    pub fn is_configuration(&self) -> bool {
        matches!(self, Self::Settings(_) | Self::Keys(_))
    }
}

/// A bound, not yet running broker.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
    pubsub: Option<PubSub>,
    drain: Duration,
}

impl Application {
    /// Binds the listener and assembles the app. Must run inside a Tokio
    /// runtime (the memory store starts its sweeper there).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let keys = Arc::new(SigningKeys::from_settings(&settings.tokens)?);
        let mut warnings = Vec::new();
        if keys.uses_development_secret() {
            tracing::warn!(
                "no token secret configured: signing with the public development secret"
            );
            warnings.push("development_token_secret");
        }
        // Production refuses these at load time (Settings validation).
        let weak = settings.tokens.weak_secret_keys();
        if !weak.is_empty() {
            tracing::warn!(
                keys = ?weak,
                "HS256 token secret shorter than {MIN_TOKEN_SECRET_BYTES} bytes: it can be \
                 guessed offline from any issued token; production refuses to start with it"
            );
            warnings.push("weak_token_secret");
        }
        let (store, redis) = build_store(&settings).await?;
        // One subscriber per instance, shared by rooms and recordings.
        let pubsub = redis.clone().map(PubSub::start);

        let limits = FieldLimits {
            token_max_ttl: settings.tokens.max_ttl_seconds,
            token_default_ttl: settings.tokens.default_ttl_seconds,
            session_max_ttl: settings.sessions.max_ttl_seconds,
            max_chunk_bytes: settings.recordings.max_chunk_bytes,
            upload_timeout: Duration::from_secs(settings.recordings.upload_timeout_seconds),
        };
        let session_ttl = Ttl::new(
            settings.sessions.default_ttl_seconds,
            settings.sessions.max_ttl_seconds,
        )
        .map_err(|e| SettingsError::Invalid {
            key: "sessions.default_ttl_seconds",
            reason: e.to_string(),
        })?;
        let revocations = Revocations::start(redis.clone(), pubsub.clone());
        let tokens = TokenService::new(keys, store.clone(), revocations, &settings.tokens);
        let rooms = Rooms::start(RoomsParts {
            settings: &settings.rooms,
            json_max_depth: settings.limits.json_max_depth,
            fallback: settings.storage.fallback,
            redis: redis.clone().zip(pubsub.clone()),
            server_id: &settings.server.server_id,
            check: Arc::new(routes::RoomTokens {
                tokens: tokens.clone(),
                leeway_seconds: settings.tokens.leeway_seconds,
            }),
        });
        // A revocation learned by any path closes the live sockets of that
        // token on this instance.
        let revoked_rooms = rooms.clone();
        tokens
            .revocations()
            .listen(Arc::new(move |jtis: &[String]| revoked_rooms.revoked(jtis)));
        let recordings = Recordings::start(
            &settings.recordings,
            store.clone(),
            tokens.clone(),
            pubsub.clone(),
        )
        .await
        .map_err(|source| StartupError::Recordings {
            path: settings.recordings.chunk_path().display().to_string(),
            source,
        })?;
        let revoked_recordings = recordings.clone();
        tokens
            .revocations()
            .listen(Arc::new(move |jtis: &[String]| {
                revoked_recordings.revoked(jtis)
            }));
        if recordings.available().is_err() {
            warnings.push("merge_unavailable");
        }
        let rate_limit = RateLimiter::new(&settings.rate_limit, redis.clone()).map_err(|e| {
            SettingsError::Invalid {
                key: "rate_limit.trusted_proxies",
                reason: e.to_string(),
            }
        })?;
        let state = AppState {
            tokens,
            sessions: SessionService::new(
                store.clone(),
                session_ttl,
                settings.limits.json_body_bytes,
                settings.sessions.max_members,
            ),
            store,
            redis,
            pubsub: pubsub.clone(),
            rooms,
            recordings,
            rate_limit,
            lifecycle: Arc::new(Lifecycle::new(settings.server.server_id.clone())),
            warnings: Arc::new(warnings),
            limits,
        };

        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&addr).map_err(|source| StartupError::Bind {
            addr: addr.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: addr.clone(),
                source,
            })?
            .port();
        let server = http_server(&settings, state.clone(), listener)
            .map_err(|source| StartupError::Bind { addr, source })?;
        tracing::info!(
            host = %settings.server.host,
            port,
            server_id = %settings.server.server_id,
            "rtc-broker listening"
        );
        Ok(Self {
            port,
            server,
            state,
            pubsub,
            drain: Duration::from_secs_f64(settings.server.drain_seconds),
        })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state, for tests and embedding.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight
    /// requests finish (up to the configured timeout) and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = &'static str>,
    ) -> std::io::Result<()> {
        let handle = self.server.handle();
        let lifecycle = self.state.lifecycle.clone();
        let mut server = tokio::spawn(self.server);
        lifecycle.mark_ready();
        tokio::select! {
            result = &mut server => return result.map_err(std::io::Error::other)?,
            signal = shutdown => {
                tracing::info!(signal, "shutting down: draining in-flight requests");
                lifecycle.mark_shutting_down();
                // Readiness answers 503 from here on; room sockets close
                // (1001) spread over the drain window, so their clients
                // reconnect elsewhere a few at a time. WebSockets would hold
                // the graceful stop until its timeout: close them first.
                self.state.rooms.drain(self.drain).await;
                self.state.rooms.shutdown();
                self.state.recordings.shutdown();
                handle.stop(true).await;
            }
        }
        let result = server.await.map_err(std::io::Error::other)?;
        if let Some(pubsub) = &self.pubsub {
            pubsub.shutdown();
        }
        let pending = self.state.store.status().pending_replay.unwrap_or(0);
        if pending > 0 {
            tracing::warn!(
                pending,
                "shutting down during a Redis outage: these writes are not in Redis; \
                 they are replayed at the next start if storage.journal_path is set, \
                 otherwise they are lost"
            );
        }
        tracing::info!("shutdown complete");
        result
    }
}

/// The store, and the Redis store inside it (for the rooms' bus) when
/// Redis is configured.
async fn build_store(
    settings: &Settings,
) -> Result<(Arc<dyn Store>, Option<RedisStore>), StartupError> {
    let memory = || MemoryStore::new(Duration::from_millis(settings.storage.sweep_interval_ms));
    if !settings.redis.is_configured() {
        tracing::info!(storage = "memory", "using in-memory storage");
        return Ok((Arc::new(memory()), None));
    }
    tracing::info!(
        storage = "redis",
        mode = settings.redis.mode.as_str(),
        fallback = settings.storage.fallback,
        "using Redis storage"
    );
    let redis = RedisStore::connect(settings.redis.clone()).await;
    if !settings.storage.fallback {
        return Ok((Arc::new(redis.clone()), Some(redis)));
    }
    let reconcile = DomainReconcile {
        leeway_seconds: settings.tokens.leeway_seconds,
    };
    let journal =
        match settings.storage.journal_path.as_str() {
            "" => None,
            path => Some(DiskJournal::open(Path::new(path)).map_err(|source| {
                StartupError::Journal {
                    path: path.to_string(),
                    source,
                }
            })?),
        };
    let store = FallbackStore::new(redis.clone(), memory(), Arc::new(reconcile), journal).await;
    Ok((Arc::new(store), Some(redis)))
}

fn http_server(
    settings: &Settings,
    state: AppState,
    listener: TcpListener,
) -> std::io::Result<Server> {
    let state = web::Data::new(state);
    let json_limits = JsonLimits {
        max_bytes: settings.limits.json_body_bytes,
        max_depth: settings.limits.json_max_depth,
        timeout: Duration::from_millis(settings.server.body_timeout_ms),
    };
    let api_keys = ApiKeys::new(&settings.auth.api_keys);
    let origins = web::Data::new(AllowedOrigins::new(
        &settings.cors.allowed_origins,
        settings.run_env,
    ));
    let max_age = cors::PreflightMaxAge(settings.cors.max_age_seconds);
    // One limit for the instance, not one per worker.
    let inflight = InflightLimit::new(
        settings.server.max_inflight_requests,
        Duration::from_millis(settings.server.overload_wait_ms),
    );
    let http_metrics = crate::metrics::HttpMetrics::default();
    let console = crate::console::Console::from(&settings.console);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(json_limits)
            .app_data(api_keys.clone())
            .app_data(origins.clone())
            .app_data(max_age)
            .app_data(inflight.clone())
            .app_data(http_metrics.clone())
            .app_data(console)
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
            .wrap(routes::json_method_not_allowed())
            .wrap(from_fn(routes::refuse_stray_upgrade))
            .wrap(from_fn(cors::cors))
            .wrap(from_fn(telemetry::trace_request))
            // Outermost: a shed request costs no span and no log line.
            .wrap(from_fn(overload::shed_overload))
    })
    // Small WebSocket frames and responses go out at once, not after the
    // peer's delayed ACK (Nagle's algorithm is on by default in actix).
    .tcp_nodelay(true)
    // Slowloris: a head that has not arrived in time is answered 408 and
    // its connection closed.
    .client_request_timeout(Duration::from_millis(
        settings.server.client_request_timeout_ms,
    ))
    .client_disconnect_timeout(Duration::from_millis(
        settings.server.client_disconnect_timeout_ms,
    ))
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(settings.server.shutdown_timeout_seconds);
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    Ok(server.run())
}
