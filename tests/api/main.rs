//! HTTP tests against the real app on a random loopback port.

mod helpers;

mod auth;
mod binary;
mod errors;
mod health;
mod sessions;
mod tokens;
