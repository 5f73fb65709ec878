//! Watching the threads suivi cannot run without: the writer (joined by a watcher thread, so
//! that its end is noticed at once) and the Kafka consumer (`Kafka::ended`). Their end while
//! suivi runs is a failure that stops the process with an error; `Faults` lets a test cause it.

use anyhow::Context;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::kafka::Kafka;

/// Faults a test can cause in a running suivi, to see how it reacts. Nothing outside the process
/// reaches them: no setting, flag or route.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Makes the writer thread end while suivi runs (as if it had died).
    pub stop_writer: CancellationToken,
    /// Makes the Kafka consumer thread end while suivi runs (as if it had died).
    pub stop_kafka: CancellationToken,
}

/// How a watched thread ended, once it has: what it returned, or its panic.
pub(super) type Joined<T> = oneshot::Receiver<std::thread::Result<T>>;

/// The joined writer thread: how it ended, as the error that stops suivi.
pub(super) type WriterJoin =
    Result<std::thread::Result<anyhow::Result<()>>, oneshot::error::RecvError>;

/// Joins `thread` on a watcher thread of its own and answers how it ended. A plain thread rather
/// than `spawn_blocking`: a blocking task that lasts as long as suivi would keep tokio's paused
/// test clock from advancing.
pub(super) fn watch_thread<T: Send + 'static>(
    name: &str,
    thread: std::thread::JoinHandle<T>,
) -> anyhow::Result<Joined<T>> {
    let (ended, joined) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            // Nobody listens any more once suivi has stopped.
            let _ = ended.send(thread.join());
        })
        .with_context(|| format!("cannot start the {name} thread"))?;
    Ok(joined)
}

/// Resolves when the thread watched by `joined` has ended; never when there is none.
pub(super) async fn thread_end<T>(
    joined: &mut Option<Joined<T>>,
) -> Result<std::thread::Result<T>, oneshot::error::RecvError> {
    match joined {
        Some(joined) => joined.await,
        None => std::future::pending().await,
    }
}

/// Why the writer thread ended while suivi was running.
pub(super) fn writer_ended(joined: WriterJoin) -> anyhow::Error {
    match joined {
        Ok(Ok(Ok(()))) => anyhow::anyhow!("the writer thread ended while suivi was running"),
        Ok(Ok(Err(error))) => error.context("the writer thread failed while suivi was running"),
        Ok(Err(panic)) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            anyhow::anyhow!("the writer thread panicked while suivi was running: {message}")
        }
        Err(_gone) => anyhow::anyhow!("cannot join the writer thread"),
    }
}

/// Resolves when the Kafka consumer thread has ended; never without Kafka.
pub(super) async fn kafka_ended(kafka: Option<&Kafka>) {
    match kafka {
        Some(kafka) => kafka.ended().await,
        None => std::future::pending().await,
    }
}

/// Resolves once the first Kafka assignment is settled; at once without Kafka.
pub(super) async fn kafka_settled(kafka: Option<&Kafka>, caught_up: Option<&CancellationToken>) {
    if let Some(kafka) = kafka {
        kafka.settled().await;
    }
    // With scale-out, the other shards' partials read too: only then are the figures whole.
    if let Some(caught_up) = caught_up {
        caught_up.cancelled().await;
    }
}
