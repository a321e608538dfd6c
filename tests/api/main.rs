//! HTTP tests against the real app on a random loopback port, over the
//! in-memory store and real Redis in single, cluster and sentinel mode.

#[path = "../harness/mod.rs"]
mod harness;
mod helpers;

mod auth;
mod binary;
mod errors;
mod health;
mod instances;
mod metrics;
mod overload;
mod sessions;
mod tokens;
