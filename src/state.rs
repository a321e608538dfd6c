//! What every handler can reach: the services, the store and the lifecycle.

use std::sync::Arc;

use crate::health::Lifecycle;
use crate::pubsub::PubSub;
use crate::recording::Recordings;
use crate::rooms::Rooms;
use crate::sessions::SessionService;
use crate::store::Store;
use crate::tokens::TokenService;

/// Shared application state, built once by `startup` and cloned into each
/// worker (all fields are handles).
#[derive(Clone)]
pub struct AppState {
    pub tokens: TokenService,
    pub sessions: SessionService,
    pub store: Arc<dyn Store>,
    /// The Redis store inside `store` and the instance's pub/sub, when
    /// Redis is configured (their metrics).
    pub redis: Option<crate::store::RedisStore>,
    pub pubsub: Option<PubSub>,
    pub rooms: Rooms,
    pub recordings: Recordings,
    pub rate_limit: crate::ratelimit::RateLimiter,
    pub lifecycle: Arc<Lifecycle>,
    /// Start-up conditions operators should know about (e.g. the public
    /// development secret), listed in `/api/health`.
    pub warnings: Arc<Vec<&'static str>>,
    /// Limits that request parsers apply beyond the JSON body ones.
    pub limits: FieldLimits,
}

/// Bounds on request fields, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct FieldLimits {
    pub token_max_ttl: u64,
    pub token_default_ttl: u64,
    pub session_max_ttl: u64,
    pub max_chunk_bytes: usize,
    /// How long a chunk body may take to arrive.
    pub upload_timeout: std::time::Duration,
}
