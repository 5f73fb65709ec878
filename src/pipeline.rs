//! The single writer between the ingest edges and the aggregate. Edges parse their batches and
//! submit the valid events through [`Ingest::submit`]; one thread takes submissions from a
//! bounded queue in groups and, for each group: admits its events (deduplication, campaign
//! room), appends the admitted ones to the journal as one record and makes it durable (one fsync
//! for the whole group: group commit), applies them to the [`Aggregator`], publishes the changes
//! to [`Figures`], and only then answers. So an acknowledged event is durable and visible.
//!
//! If the journal cannot be written (a full disk), the group is refused whole and nothing of it
//! is applied: the senders retry, and ingestion resumes by itself when the journal can be
//! written again. Queries are not affected.
//!
//! The thread starts by recovering the state (checkpoint + journal replay); submissions wait in
//! the queue meanwhile. It checkpoints the whole state every `checkpoint_interval`, or sooner
//! when the journal has grown by `checkpoint_journal_bytes`, and once more when it stops; the
//! checkpoint file is written by a helper thread so ingestion pauses only while the state is
//! encoded.
//!
//! The queue is bounded in events, not requests: a submission waits for room at most
//! `ingest_queue_timeout` and is then refused as overloaded, so memory stays bounded under any
//! load.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::aggregate::{Admission, Aggregator, AggregatorSettings, Applied};
use crate::checkpoint;
use crate::event::Event;
use crate::figures::Figures;
use crate::journal::{self, AppendError, Journal};
use crate::proto::storage::{JournalRecord, KafkaOffset, StoredEvent};
use crate::recovery::{self, RecoveryReport, Storage};
use crate::telemetry;

/// Submissions queued at most, whatever their size; the event bound is the one that matters.
const QUEUE_SUBMISSIONS: usize = 4096;
/// Submissions taken together at most, so one group never delays answers for long.
const MAX_GROUP_SUBMISSIONS: usize = 256;

/// How the writer queues, checkpoints and recovers.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub storage: Storage,
    pub aggregator: AggregatorSettings,
    /// The registered campaigns, opened even before their first event.
    pub registered: Vec<String>,
    pub queue_events: usize,
    pub queue_timeout: Duration,
    pub checkpoint_interval: Duration,
    pub checkpoint_journal_bytes: u64,
}

/// The sending side of the pipeline, shared by every ingest edge.
#[derive(Debug, Clone)]
pub struct Ingest {
    queue: mpsc::Sender<Message>,
    room: Arc<Semaphore>,
    capacity: usize,
    queue_timeout: Duration,
}

/// Why a whole submission was not processed. Nothing of a refused submission is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("suivi is overloaded: the ingest queue stayed full for {0:?}; retry in a second")]
    Overloaded(Duration),
    #[error(
        "suivi is shutting down and takes no new events; retry against another instance or later"
    )]
    ShuttingDown,
    #[error("the disk holding suivi's journal is full: events cannot be made durable; retry later")]
    DiskFull,
    #[error(
        "suivi's journal cannot be written (see its logs): events cannot be made durable; retry later"
    )]
    StorageUnwritable,
}

/// What happened to each event of a submission, in submission order.
pub type Outcomes = Vec<Applied>;

/// The running writer thread.
#[derive(Debug)]
pub struct Writer {
    /// Resolves once the state is recovered (or recovery failed).
    pub recovered: oneshot::Receiver<Result<RecoveryReport, String>>,
    /// Ends after a stop, with the final checkpoint written.
    pub thread: JoinHandle<anyhow::Result<()>>,
}

/// What the writer thread is told.
#[derive(Debug)]
enum Message {
    Submit(Submission),
    /// Time passed: sync or checkpoint if due.
    Tick,
    /// Apply what is queued, checkpoint, then stop.
    Stop,
}

#[derive(Debug)]
struct Submission {
    events: Vec<Event>,
    reply: oneshot::Sender<Result<Outcomes, Refusal>>,
    /// Room in the queue, given back once the submission is answered.
    _room: OwnedSemaphorePermit,
}

impl Ingest {
    /// Submits `events` and waits until each is durable, applied and published.
    pub async fn submit(&self, events: Vec<Event>) -> Result<Outcomes, Refusal> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Config validation keeps batches at most the queue's capacity, so a permit always exists.
        let wanted = u32::try_from(events.len().min(self.capacity)).unwrap_or(u32::MAX);
        let acquire = self.room.clone().acquire_many_owned(wanted);
        let room = match tokio::time::timeout(self.queue_timeout, acquire).await {
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
        answer.await.map_err(|_dropped| Refusal::ShuttingDown)?
    }

    /// Lets the writer sync or checkpoint when due; skipped when the queue is full.
    pub fn tick(&self) {
        let _ = self.queue.try_send(Message::Tick);
    }

    /// Refuses every later submission, and tells the writer to stop once it has answered those
    /// already queued.
    pub async fn close(&self) {
        self.room.close();
        // The writer may be gone already; then there is nothing left to stop.
        let _ = self.queue.send(Message::Stop).await;
    }
}

/// Starts the writer thread: it recovers the state, then takes submissions until stopped.
pub fn start(
    settings: PipelineSettings,
    figures: Arc<Figures>,
) -> std::io::Result<(Ingest, Writer)> {
    let (queue, receiver) = mpsc::channel(QUEUE_SUBMISSIONS);
    let ingest = Ingest {
        queue,
        room: Arc::new(Semaphore::new(settings.queue_events)),
        capacity: settings.queue_events,
        queue_timeout: settings.queue_timeout,
    };
    let room = ingest.room.clone();
    let (recovered_sender, recovered) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("suivi-writer".to_owned())
        .spawn(move || {
            let recovered = recovery::recover(
                &settings.storage,
                settings.aggregator.clone(),
                settings.registered.clone(),
            );
            let recovered = match recovered {
                Ok(recovered) => recovered,
                Err(error) => {
                    let _ = recovered_sender.send(Err(format!("{error:#}")));
                    return Err(error.context("recovery failed"));
                }
            };
            let mut writer = WriterState {
                room,
                capacity: settings.queue_events,
                aggregator: recovered.aggregator,
                journal: recovered.journal,
                kafka_offsets: recovered.kafka_offsets,
                figures,
                storage: settings.storage,
                checkpoint_interval: settings.checkpoint_interval,
                checkpoint_journal_bytes: settings.checkpoint_journal_bytes,
                last_checkpoint: Instant::now(),
                journal_bytes_since_checkpoint: 0,
                checkpointing: None,
            };
            writer.publish();
            telemetry::record_recovery(&recovered.report);
            let _ = recovered_sender.send(Ok(recovered.report));
            writer.run(receiver)
        })?;
    Ok((ingest, Writer { recovered, thread }))
}

struct WriterState {
    /// The queue's room, to report how full it is once a group is answered.
    room: Arc<Semaphore>,
    capacity: usize,
    aggregator: Aggregator,
    journal: Journal,
    kafka_offsets: Vec<KafkaOffset>,
    figures: Arc<Figures>,
    storage: Storage,
    checkpoint_interval: Duration,
    checkpoint_journal_bytes: u64,
    last_checkpoint: Instant,
    journal_bytes_since_checkpoint: u64,
    /// The checkpoint being written by its helper thread, if any.
    checkpointing: Option<JoinHandle<()>>,
}

impl WriterState {
    fn run(&mut self, mut queue: mpsc::Receiver<Message>) -> anyhow::Result<()> {
        let mut group = Vec::with_capacity(MAX_GROUP_SUBMISSIONS);
        let mut stopping = false;
        while !stopping {
            match queue.blocking_recv() {
                Some(Message::Submit(first)) => group.push(first),
                Some(Message::Tick) => {}
                Some(Message::Stop) | None => stopping = true,
            }
            while group.len() < MAX_GROUP_SUBMISSIONS || stopping {
                match queue.try_recv() {
                    Ok(Message::Submit(next)) => group.push(next),
                    Ok(Message::Tick) => {}
                    Ok(Message::Stop) => stopping = true,
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.commit(&mut group);
                // The answered submissions gave their room back.
                telemetry::record_queue(self.capacity - self.room.available_permits());
            }
            if let Err(error) = self.journal.sync_if_due() {
                tracing::error!(error = %error, "journal sync failed");
            }
            if self.checkpoint_due() {
                self.checkpoint(false);
            }
        }
        self.journal
            .sync()
            .context("cannot sync the journal at shutdown")?;
        self.checkpoint(true);
        Ok(())
    }

    /// Makes a group durable, applies it, publishes it and answers it.
    fn commit(&mut self, group: &mut Vec<Submission>) {
        let mut admission = Admission::default();
        let decisions: Vec<Outcomes> = group
            .iter()
            .map(|submission| {
                submission
                    .events
                    .iter()
                    .map(|event| self.aggregator.admit(event, &mut admission))
                    .collect()
            })
            .collect();
        let admitted: Vec<&Event> = group
            .iter()
            .zip(&decisions)
            .flat_map(|(submission, outcomes)| {
                submission
                    .events
                    .iter()
                    .zip(outcomes)
                    .filter(|(_, outcome)| **outcome == Applied::Accepted)
                    .map(|(event, _)| event)
            })
            .collect();
        if !admitted.is_empty() {
            let record = JournalRecord {
                events: admitted
                    .iter()
                    .map(|event| StoredEvent::from(*event))
                    .collect(),
            };
            match self.journal.append(&record) {
                Ok(appended) => {
                    self.journal_bytes_since_checkpoint += appended.bytes;
                    telemetry::record_journal_append(appended.bytes, appended.fsync);
                }
                Err(error) => {
                    let refusal = match error {
                        AppendError::DiskFull(_) => Refusal::DiskFull,
                        AppendError::Unwritable(_) => Refusal::StorageUnwritable,
                    };
                    tracing::error!(
                        error = format!("{:#}", anyhow::Error::new(error)),
                        "journal append failed; refusing the group"
                    );
                    telemetry::record_journal_failure(refusal);
                    for submission in group.drain(..) {
                        let _ = submission.reply.send(Err(refusal));
                    }
                    return;
                }
            }
            for event in admitted {
                // Admission said accepted, and applying in the same order agrees.
                self.aggregator.apply(event);
            }
        }
        self.publish();
        for (submission, outcomes) in group.drain(..).zip(decisions) {
            // A client that went away no longer needs its answer; its events are counted.
            let _ = submission.reply.send(Ok(outcomes));
        }
    }

    fn publish(&mut self) {
        self.figures
            .publish(self.aggregator.drain_changes(), Utc::now());
        telemetry::record_holdings(self.aggregator.holdings());
    }

    fn checkpoint_due(&mut self) -> bool {
        if self
            .checkpointing
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
        {
            return false;
        }
        self.journal_bytes_since_checkpoint > 0
            && (self.last_checkpoint.elapsed() >= self.checkpoint_interval
                || self.journal_bytes_since_checkpoint >= self.checkpoint_journal_bytes)
    }

    /// Encodes the state at a fresh segment boundary and writes it, on a helper thread unless
    /// `wait`. A failed checkpoint only delays the removal of journal segments.
    fn checkpoint(&mut self, wait: bool) {
        if let Some(previous) = self.checkpointing.take() {
            let _ = previous.join();
        }
        let position = match self.journal.rotate() {
            Ok(position) => position,
            Err(error) => {
                tracing::warn!(error = %error, "cannot start a journal segment; checkpoint postponed");
                telemetry::record_checkpoint(Duration::ZERO, 0, false);
                return;
            }
        };
        let started = Instant::now();
        let state = self
            .aggregator
            .checkpoint(position, self.kafka_offsets.clone());
        let encode_time = started.elapsed();
        self.last_checkpoint = Instant::now();
        self.journal_bytes_since_checkpoint = 0;
        let storage = self.storage.clone();
        let write = move || {
            let started = Instant::now();
            let written =
                checkpoint::write(&storage.checkpoint_dir, &state).and_then(|(path, bytes)| {
                    let oldest_kept = checkpoint::prune(&storage.checkpoint_dir)?;
                    let removed = match oldest_kept {
                        Some(position) => {
                            journal::remove_segments_before(&storage.journal_dir, position)?
                        }
                        None => 0,
                    };
                    Ok((path, bytes, removed))
                });
            let elapsed = encode_time + started.elapsed();
            match written {
                Ok((path, bytes, removed)) => {
                    telemetry::record_checkpoint(elapsed, bytes, true);
                    tracing::info!(
                        checkpoint = %path.display(),
                        bytes,
                        journal_position = position,
                        segments_removed = removed,
                        seconds = elapsed.as_secs_f64(),
                        "checkpoint written"
                    );
                }
                Err(error) => {
                    telemetry::record_checkpoint(elapsed, 0, false);
                    tracing::error!(
                        error = format!("{error:#}"),
                        "checkpoint failed; the journal is kept until one succeeds"
                    );
                }
            }
        };
        if wait {
            write();
        } else {
            match std::thread::Builder::new()
                .name("suivi-checkpoint".to_owned())
                .spawn(write)
            {
                Ok(thread) => self.checkpointing = Some(thread),
                Err(error) => tracing::error!(error = %error, "cannot start the checkpoint thread"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
