//! HTTP tests against the real app on a random loopback port, over the
//! in-memory store and real Redis in single, cluster and sentinel mode.

#[path = "../harness/mod.rs"]
mod harness;
mod helpers;
mod wire;

mod auth;
mod binary;
mod cors;
mod errors;
mod fuzz;
mod health;
mod instances;
mod keys;
mod management;
mod metrics;
mod openapi;
mod overload;
mod ratelimit;
mod revocation;
mod secrets;
mod sessions;
mod slowloris;
mod tokens;
