//! Noticing that suivi should stop: SIGTERM or SIGINT (Ctrl-C). What happens next (stop
//! intake, drain, final snapshot) is `app`'s business.

use std::future::Future;

/// Starts listening for SIGTERM and SIGINT at once, so that a signal arriving during start-up
/// is not lost (nor given its default, abrupt, action); the future resolves on the first one.
/// Must be called inside the runtime.
#[cfg(unix)]
pub fn listen() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT received; shutting down"),
        }
    })
}

/// Starts listening for Ctrl-C; the future resolves on the first one.
#[cfg(not(unix))]
pub fn listen() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received; shutting down");
    })
}
