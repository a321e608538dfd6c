//! WebSocket rooms (SPEC section 6) through real sockets: real clients
//! (tokio-tungstenite) against the real app on loopback ports, in memory
//! and on real Redis in single, cluster and sentinel mode, with clients
//! spread over two broker instances.

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

mod auth;
mod authority;
// Shared with tests/rooms_failover, which uses other parts of it.
#[allow(dead_code)]
mod client;
mod delivery;
mod limits;
mod resume;
