//! Liveness and readiness state shared by the health endpoints, start-up and
//! shutdown.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

/// Why the broker is not ready; `None` when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    Starting,
    ShuttingDown,
}

impl NotReady {
    /// The `reason` field of a 503 from `/health/ready`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const SHUTTING_DOWN: u8 = 2;

/// Process-wide lifecycle: when it started, who it is, whether it serves.
#[derive(Debug)]
pub struct Lifecycle {
    started: Instant,
    server_id: String,
    state: AtomicU8,
}

impl Lifecycle {
    /// Starts in `starting`; `mark_ready` once the listener serves.
    pub fn new(server_id: String) -> Self {
        Self {
            started: Instant::now(),
            server_id,
            state: AtomicU8::new(STARTING),
        }
    }

    /// The instance name shown in health and logs.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// Whole seconds since start, for `/api/health`.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Called once the server accepts requests; a no-op after shutdown began.
    pub fn mark_ready(&self) {
        let _ = self
            .state
            .compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Called on SIGTERM: load balancers stop routing here while in-flight
    /// requests finish.
    pub fn mark_shutting_down(&self) {
        self.state.store(SHUTTING_DOWN, Ordering::SeqCst);
    }

    /// Why `/health/ready` must answer 503, if it must.
    pub fn not_ready(&self) -> Option<NotReady> {
        match self.state.load(Ordering::SeqCst) {
            READY => None,
            STARTING => Some(NotReady::Starting),
            _ => Some(NotReady::ShuttingDown),
        }
    }
}
