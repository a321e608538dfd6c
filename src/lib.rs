//! rtc-broker: short-lived RTC tokens, session records, WebSocket rooms and
//! recordings, on Redis (single, cluster, sentinel) or in memory.
//!
//! Module map: `config` (layered settings), `startup` (builds the app),
//! `routes` (HTTP, one module per resource), `tokens`, `sessions`, `store`
//! (storage trait, backends incl. the Redis fallback, key names),
//! `migration` (replay rules after an outage), `domain` (validated ids and TTLs),
//! `extract` (request parsing), `auth` (API keys), `error` (errors to HTTP),
//! `drill` (the failover drill), `health` (lifecycle), `metrics` (Prometheus exposition), `heartbeat` (WebSocket pings and idle close), `live_tokens` (open sockets by token, for revocations), `telemetry` (logs, request spans), `overload` (load
//! shedding), `shutdown`, `rooms` (WebSocket rooms and their bus between
//! instances), `recording` (chunk uploads, indices, merges, downloads),
//! `pubsub` (the Redis subscriber the wings share), `origins` (the allowed
//! browser origins), `cors` (the HTTP side of that list), `ratelimit` (limits per client IP and per session),
//! `console` (the web console's embedded page and assets).

pub mod auth;
pub mod clock;
pub mod config;
pub mod console;
pub mod cors;
pub mod domain;
pub mod drill;
pub mod error;
pub mod extract;
pub mod health;
pub mod heartbeat;
pub mod live_tokens;
pub mod metrics;
pub mod migration;
pub mod origins;
pub mod overload;
pub mod pubsub;
pub mod ratelimit;
pub mod recording;
pub mod rooms;
pub mod routes;
pub mod sessions;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tokens;
