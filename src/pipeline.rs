//! The single writer between the ingest edges and the aggregate. Edges parse their batches and
//! submit the valid events through [`Ingest::submit`]; one thread takes submissions from a
//! bounded queue in groups, applies each to the [`Aggregator`], publishes the changes to
//! [`Figures`] and only then answers, so an acknowledged event is visible to queries.
//!
//! The queue is bounded in events, not requests: a submission waits for room at most
//! `ingest_queue_timeout` and is then refused as overloaded, so memory stays bounded under any
//! load. The group is the unit a journal will make durable with one fsync, between taking the
//! group and applying it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::aggregate::{Aggregator, Applied};
use crate::event::Event;
use crate::figures::Figures;
use crate::telemetry;

/// Submissions queued at most, whatever their size; the event bound is the one that matters.
const QUEUE_SUBMISSIONS: usize = 4096;
/// Submissions applied together at most, so one group never delays answers for long.
const MAX_GROUP_SUBMISSIONS: usize = 256;

/// The sending side of the pipeline, shared by every ingest edge.
#[derive(Debug, Clone)]
pub struct Ingest {
    queue: mpsc::Sender<Message>,
    room: Arc<Semaphore>,
    capacity: usize,
    queue_timeout: Duration,
}

/// Why a whole submission was not processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("suivi is overloaded: the ingest queue stayed full for {0:?}; retry in a second")]
    Overloaded(Duration),
    #[error(
        "suivi is shutting down and takes no new events; retry against another instance or later"
    )]
    ShuttingDown,
}

/// What happened to each event of a submission, in submission order.
pub type Outcomes = Vec<Applied>;

/// What the writer thread is told.
#[derive(Debug)]
enum Message {
    Submit(Submission),
    /// Apply what is queued, then stop.
    Stop,
}

#[derive(Debug)]
struct Submission {
    events: Vec<Event>,
    reply: oneshot::Sender<Outcomes>,
    /// Room in the queue, given back once the submission is answered.
    _room: OwnedSemaphorePermit,
}

impl Ingest {
    /// Submits `events` and waits until each is applied and published.
    pub async fn submit(&self, events: Vec<Event>) -> Result<Outcomes, Refusal> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Config validation keeps batches at most the queue's capacity, so a permit always exists.
        let wanted = u32::try_from(events.len().min(self.capacity)).unwrap_or(u32::MAX);
        let room = match tokio::time::timeout(
            self.queue_timeout,
            self.room.clone().acquire_many_owned(wanted),
        )
        .await
        {
            Ok(Ok(room)) => room,
            Ok(Err(_closed)) => return Err(Refusal::ShuttingDown),
            Err(_elapsed) => return Err(Refusal::Overloaded(self.queue_timeout)),
        };
        telemetry::record_queue(self.capacity - self.room.available_permits());
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            events,
            reply,
            _room: room,
        };
        self.queue
            .send(Message::Submit(submission))
            .await
            .map_err(|_closed| Refusal::ShuttingDown)?;
        answer.await.map_err(|_dropped| Refusal::ShuttingDown)
    }

    /// Refuses every later submission, and tells the writer to stop once it has answered those
    /// already queued.
    pub async fn close(&self) {
        self.room.close();
        // The writer may be gone already; then there is nothing left to stop.
        let _ = self.queue.send(Message::Stop).await;
    }
}

/// Starts the writer thread. It runs until every [`Ingest`] handle is dropped and the queue is
/// drained, then returns the aggregator.
pub fn start(
    aggregator: Aggregator,
    figures: Arc<Figures>,
    queue_events: usize,
    queue_timeout: Duration,
) -> std::io::Result<(Ingest, std::thread::JoinHandle<Aggregator>)> {
    let (queue, receiver) = mpsc::channel(QUEUE_SUBMISSIONS);
    let ingest = Ingest {
        queue,
        room: Arc::new(Semaphore::new(queue_events)),
        capacity: queue_events,
        queue_timeout,
    };
    let writer = std::thread::Builder::new()
        .name("suivi-aggregate".to_owned())
        .spawn(move || run(aggregator, &figures, receiver))?;
    Ok((ingest, writer))
}

fn run(
    mut aggregator: Aggregator,
    figures: &Figures,
    mut queue: mpsc::Receiver<Message>,
) -> Aggregator {
    let mut group = Vec::with_capacity(MAX_GROUP_SUBMISSIONS);
    let mut stopping = false;
    while !stopping {
        match queue.blocking_recv() {
            Some(Message::Submit(first)) => group.push(first),
            Some(Message::Stop) | None => stopping = true,
        }
        while group.len() < MAX_GROUP_SUBMISSIONS || stopping {
            match queue.try_recv() {
                Ok(Message::Submit(next)) => group.push(next),
                Ok(Message::Stop) => stopping = true,
                Err(_) => break,
            }
        }
        let outcomes: Vec<Outcomes> = group
            .iter()
            .map(|submission| {
                submission
                    .events
                    .iter()
                    .map(|event| aggregator.apply(event))
                    .collect()
            })
            .collect();
        figures.publish(aggregator.drain_changes(), Utc::now());
        telemetry::record_holdings(aggregator.holdings());
        for (submission, outcomes) in group.drain(..).zip(outcomes) {
            // A client that went away no longer needs its answer; its events are counted.
            let _ = submission.reply.send(outcomes);
        }
    }
    aggregator
}
