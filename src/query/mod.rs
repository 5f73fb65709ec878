//! The query side: operators' questions answered from [`Figures`](crate::figures::Figures) over
//! gRPC (`grpc`) and HTTP (`http`), and the service's own state (ready or not). Queries never
//! reach the aggregator and never wait for ingestion.

pub mod grpc;
pub mod http;
pub mod metrics;

use std::sync::atomic::{AtomicU8, Ordering};

use crate::day::{Day, InvalidDay};

/// Where the service is in its life, for `/readyz` and gRPC health.
#[derive(Debug, Default)]
pub struct Readiness(AtomicU8);

/// The states of [`Readiness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Recovering state; not taking traffic yet.
    Starting,
    /// State recovered, Kafka on: waiting for the first partition assignment to be settled
    /// (partitions that moved to another instance meanwhile released), so that no figure this
    /// instance no longer owns is served or written.
    WaitingForKafka,
    Ready,
    /// Shutting down; taking no new work.
    Stopping,
    /// A thread the service cannot run without (the writer, the Kafka consumer) ended: the
    /// process is exiting with an error, to be restarted.
    Failed,
}

impl Readiness {
    pub fn set(&self, state: State) {
        let value = match state {
            State::Starting => 0,
            State::Ready => 1,
            State::Stopping => 2,
            State::WaitingForKafka => 3,
            State::Failed => 4,
        };
        self.0.store(value, Ordering::Release);
    }

    pub fn get(&self) -> State {
        match self.0.load(Ordering::Acquire) {
            0 => State::Starting,
            1 => State::Ready,
            2 => State::Stopping,
            3 => State::WaitingForKafka,
            _ => State::Failed,
        }
    }
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::WaitingForKafka => "waiting_for_kafka",
            State::Ready => "ready",
            State::Stopping => "stopping",
            State::Failed => "failed",
        }
    }
}

/// Parses an optional day bound; empty means unbounded.
pub fn day_bound(text: Option<&str>) -> Result<Option<Day>, InvalidDay> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some),
    }
}
