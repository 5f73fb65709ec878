//! The single writer between the ingest edges and the aggregate. Edges parse their batches and
//! submit the valid events through [`Queue::submit`]; one thread takes submissions from a
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::aggregate::{Admission, Aggregator, AggregatorSettings, Applied};
use crate::durable::journal::{AppendError, Journal};
use crate::durable::policy::{self, CheckpointPolicy};
use crate::durable::{DurableSettings, RecoveryReport};
use crate::event::Event;
use crate::figures::Figures;
use crate::proto::storage::{EventIdentity, JournalRecord, KafkaOffset, StoredEvent};
pub mod sources;
pub mod state;
mod writer;

use crate::telemetry;
use sources::{Partition, Range, Release, Sources, source_of};

/// Submissions queued at most, whatever their size; the event bound is the one that matters.
const QUEUE_SUBMISSIONS: usize = 4096;
/// Submissions taken together at most, so one group never delays answers for long.
const MAX_GROUP_SUBMISSIONS: usize = 256;

/// How the writer queues, checkpoints and recovers.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub durable: DurableSettings,
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
pub struct Queue {
    sender: mpsc::Sender<Message>,
    room: Arc<Semaphore>,
    capacity: usize,
    queue_timeout: Duration,
    /// The Kafka positions of the last checkpoint written, to commit to the group.
    checkpointed: watch::Receiver<Vec<KafkaOffset>>,
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
    /// A Kafka batch that does not continue from where its partition is (a batch before it was
    /// refused, or the partition is not assigned here): read it again from the position.
    #[error("the Kafka batch does not continue from its partition's position; read it again")]
    OutOfSequence,
}

impl Refusal {
    /// The metric label of this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Overloaded(_) => "overloaded",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::DiskFull => "disk_full",
            Refusal::StorageUnwritable => "storage_unwritable",
            Refusal::OutOfSequence => "out_of_sequence",
        }
    }
}

/// What happened to each event of a submission, in submission order.
pub type Outcomes = Vec<Applied>;

/// The running writer thread.
#[derive(Debug)]
pub struct Writer {
    /// Resolves once the state is recovered (or recovery failed).
    pub recovered: oneshot::Receiver<anyhow::Result<RecoveryReport>>,
    /// Ends after a stop, with the final checkpoint written.
    pub thread: JoinHandle<anyhow::Result<()>>,
}

/// A batch read from Kafka: the range of each partition it covers, and for each event the index
/// in `ranges` of the partition it was read from.
#[derive(Debug, Clone, Default)]
pub struct KafkaBatch {
    pub ranges: Vec<Range>,
    pub sources: Vec<u32>,
}

/// The answer to a queued submission, once it is durable, applied and published (or refused).
pub type Answer = oneshot::Receiver<Result<Outcomes, Refusal>>;

/// What the writer thread is told.
#[derive(Debug)]
enum Message {
    Submit(Submission),
    /// Kafka partitions assigned to this instance: answers the position of each. `exclusive`
    /// on the first assignment after start: partitions held from before and not assigned now
    /// went to another instance meanwhile, and are released first.
    Assign {
        partitions: Vec<Partition>,
        exclusive: bool,
        reply: oneshot::Sender<Vec<i64>>,
    },
    /// Checkpoint now; answers the Kafka positions of the newest checkpoint written.
    Checkpoint {
        reply: oneshot::Sender<Vec<KafkaOffset>>,
    },
    /// Kafka partitions taken away: release the campaigns they alone fed, checkpoint, answer.
    Release {
        partitions: Vec<Partition>,
        reply: oneshot::Sender<Release>,
    },
    /// Time passed: sync or checkpoint if due.
    Tick,
    /// Apply what is queued, checkpoint, then stop.
    Stop,
}

#[derive(Debug)]
struct Submission {
    events: Vec<Event>,
    kafka: Option<KafkaBatch>,
    /// The credential that sent the events over gRPC or HTTP, journaled with them.
    sender: Option<Arc<str>>,
    reply: oneshot::Sender<Result<Outcomes, Refusal>>,
    /// Room in the queue, given back once the submission is answered.
    _room: OwnedSemaphorePermit,
}

impl Queue {
    /// Submits `events`, sent by the credential `sender`, and waits until each is durable,
    /// applied and published.
    pub async fn submit(
        &self,
        events: Vec<Event>,
        sender: Option<Arc<str>>,
    ) -> Result<Outcomes, Refusal> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let room = self.room(events.len(), self.queue_timeout).await?;
        let answer = self.send(events, None, sender, room).await?;
        answer.await.map_err(|_dropped| Refusal::ShuttingDown)?
    }

    /// Queues a batch read from Kafka once there is room for it, waiting at most `wait`; the
    /// answer comes once it is durable. `events` are taken only once there is room: refused as
    /// overloaded, the caller still has them. For the Kafka consumer's own thread: this blocks.
    pub fn queue_kafka(
        &self,
        runtime: &tokio::runtime::Handle,
        events: &mut Vec<Event>,
        batch: KafkaBatch,
        wait: Duration,
    ) -> Result<Answer, Refusal> {
        runtime.block_on(async {
            let room = self.room(events.len().max(1), wait).await?;
            self.send(std::mem::take(events), Some(batch), None, room)
                .await
        })
    }

    /// Tells the writer that `partitions` are assigned here, and answers their positions; when
    /// `exclusive`, partitions held from before and not among them are released first. Blocks.
    pub fn assign(
        &self,
        runtime: &tokio::runtime::Handle,
        partitions: Vec<Partition>,
        exclusive: bool,
    ) -> Result<Vec<i64>, Refusal> {
        let (reply, answer) = oneshot::channel();
        self.control(
            runtime,
            Message::Assign {
                partitions,
                exclusive,
                reply,
            },
            answer,
        )
    }

    /// Has the writer checkpoint now, and answers the Kafka positions of the newest checkpoint
    /// written (to commit to the group at shutdown). Blocks.
    pub fn checkpoint_now(
        &self,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Vec<KafkaOffset>, Refusal> {
        let (reply, answer) = oneshot::channel();
        self.control(runtime, Message::Checkpoint { reply }, answer)
    }

    fn control<T>(
        &self,
        runtime: &tokio::runtime::Handle,
        message: Message,
        answer: oneshot::Receiver<T>,
    ) -> Result<T, Refusal> {
        runtime.block_on(async {
            self.sender
                .send(message)
                .await
                .map_err(|_closed| Refusal::ShuttingDown)?;
            answer.await.map_err(|_dropped| Refusal::ShuttingDown)
        })
    }

    /// Tells the writer that `partitions` are no longer assigned here, and waits until the
    /// campaigns they alone fed are released and the state is checkpointed. Blocks.
    pub fn release(
        &self,
        runtime: &tokio::runtime::Handle,
        partitions: Vec<Partition>,
    ) -> Result<Release, Refusal> {
        let (reply, answer) = oneshot::channel();
        self.control(runtime, Message::Release { partitions, reply }, answer)
    }

    /// Waits at most `wait` for room for `events` events in the queue.
    async fn room(&self, events: usize, wait: Duration) -> Result<OwnedSemaphorePermit, Refusal> {
        // Config validation keeps batches at most the queue's capacity, so a permit always exists.
        let wanted = u32::try_from(events.min(self.capacity)).unwrap_or(u32::MAX);
        let acquire = self.room.clone().acquire_many_owned(wanted);
        let room = match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(room)) => room,
            Ok(Err(_closed)) => return Err(Refusal::ShuttingDown),
            Err(_elapsed) => return Err(Refusal::Overloaded(wait)),
        };
        telemetry::record_queue(self.capacity - self.room.available_permits());
        Ok(room)
    }

    async fn send(
        &self,
        events: Vec<Event>,
        kafka: Option<KafkaBatch>,
        sender: Option<Arc<str>>,
        room: OwnedSemaphorePermit,
    ) -> Result<Answer, Refusal> {
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            events,
            kafka,
            sender,
            reply,
            _room: room,
        };
        self.sender
            .send(Message::Submit(submission))
            .await
            .map_err(|_closed| Refusal::ShuttingDown)?;
        Ok(answer)
    }

    /// The Kafka positions of the newest checkpoint written: what may be committed to the group.
    pub fn checkpointed(&self) -> watch::Receiver<Vec<KafkaOffset>> {
        self.checkpointed.clone()
    }

    /// Lets the writer sync or checkpoint when due; skipped when the queue is full.
    pub fn tick(&self) {
        let _ = self.sender.try_send(Message::Tick);
    }

    /// Refuses every later submission, and tells the writer to stop once it has answered those
    /// already queued.
    pub async fn close(&self) {
        self.room.close();
        // The writer may be gone already; then there is nothing left to stop.
        let _ = self.sender.send(Message::Stop).await;
    }
}

/// Starts the writer thread: it recovers the state, then takes submissions until stopped.
pub fn start(
    settings: PipelineSettings,
    figures: Arc<Figures>,
) -> std::io::Result<(Queue, Writer)> {
    let (sender, receiver) = mpsc::channel(QUEUE_SUBMISSIONS);
    let (checkpointed_sender, checkpointed) = watch::channel(Vec::new());
    let queue = Queue {
        sender,
        room: Arc::new(Semaphore::new(settings.queue_events)),
        capacity: settings.queue_events,
        queue_timeout: settings.queue_timeout,
        checkpointed,
    };
    let room = queue.room.clone();
    let (recovered_sender, recovered) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("suivi-writer".to_owned())
        .spawn(move || {
            writer::run(
                settings,
                figures,
                room,
                receiver,
                checkpointed_sender,
                recovered_sender,
            )
        })?;
    Ok((queue, Writer { recovered, thread }))
}

#[cfg(test)]
mod tests;
