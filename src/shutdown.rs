//! Waiting for the signal that starts a graceful shutdown.

/// Resolves on the first SIGTERM or SIGINT, naming it.
pub async fn signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can only be killed; keep serving.
        tracing::error!("cannot install signal handlers; graceful shutdown unavailable");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
