//! Noticing that suivi should stop: SIGTERM or SIGINT (Ctrl-C). What happens next (stop
//! intake, drain, final snapshot) is `app`'s business.

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for SIGTERM; only SIGINT stops suivi");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown requested");
}
