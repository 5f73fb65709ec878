//! The writers between the ingest edges and the aggregate. The state is split into shards by
//! learner (`shards`, product.md §6), each owned by one writer thread with its own journal,
//! checkpoints and [`Aggregator`]; every figure is the sum of the shards' partials, which
//! [`Figures`] adds up. Edges parse their batches and submit the valid events through
//! [`Queue::submit`], which gives each event to its shard. A writer takes submissions from its
//! bounded queue in groups and, for each group: admits its events (deduplication, campaign
//! room), appends the admitted ones to its journal as one record and makes it durable (one
//! fsync for the whole group: group commit), applies them to its [`Aggregator`], publishes the
//! changes to [`Figures`], and only then answers. A submission is answered once every shard
//! that got part of it has answered. So an acknowledged event is durable and visible.
//!
//! If a journal cannot be written (a full disk), that shard refuses its groups whole and applies
//! nothing of them, and the submissions they belong to are refused: the senders retry (what
//! other shards took is then a duplicate), and ingestion resumes by itself when the journal can
//! be written again. Queries are not affected.
//!
//! Each thread starts by recovering its shard (checkpoint + journal replay), side by side;
//! submissions wait in the queue meanwhile. It checkpoints its shard every
//! `checkpoint_interval`, or sooner when its journal has grown by `checkpoint_journal_bytes`, and
//! once more when it stops; the checkpoint file is written by a helper thread so ingestion pauses
//! only while the state is encoded.
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
pub mod shards;
pub mod sources;
pub mod state;
mod writer;

use crate::telemetry;
use shards::{CheckpointBoard, Sharding, Shared, UnregisteredRoom};
use sources::{Partition, Range, Release, Sources, source_of};

/// Submissions queued at most, whatever their size; the event bound is the one that matters.
const QUEUE_SUBMISSIONS: usize = 4096;
/// Submissions taken together at most, so one group never delays answers for long.
const MAX_GROUP_SUBMISSIONS: usize = 256;

/// How the writer queues, checkpoints and recovers.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Each shard's journal and checkpoints; there are as many shards as entries.
    pub durable: Vec<DurableSettings>,
    pub aggregator: AggregatorSettings,
    /// The registered campaigns, opened even before their first event.
    pub registered: Vec<String>,
    pub queue_events: usize,
    pub queue_timeout: Duration,
    pub checkpoint_interval: Duration,
    pub checkpoint_journal_bytes: u64,
    pub sharding: Sharding,
    /// With shards that are partitions: where each shard's partials go to be published.
    pub outbox: Option<Arc<crate::partials::Outbox>>,
}

/// The sending side of the pipeline, shared by every ingest edge.
#[derive(Debug, Clone)]
pub struct Queue {
    /// Each shard's writer, by shard number.
    shards: Arc<[mpsc::Sender<Message>]>,
    sharding: Sharding,
    room: Arc<Semaphore>,
    capacity: usize,
    queue_timeout: Duration,
    board: Arc<CheckpointBoard>,
    unregistered: Arc<UnregisteredRoom>,
    /// The Kafka positions every shard's newest checkpoint covers, to commit to the group.
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

/// The running writer threads, seen as one.
#[derive(Debug)]
pub struct Writer {
    /// Resolves once every shard is recovered (or a recovery failed).
    pub recovered: oneshot::Receiver<anyhow::Result<RecoveryReport>>,
    /// Ends after a stop, once every shard's final checkpoint is written; or as soon as one
    /// writer ends with an error.
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
    /// Checkpoint now; answers once written.
    Checkpoint {
        reply: oneshot::Sender<()>,
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
        let len = events.len();
        let room = self.room(len, self.queue_timeout).await?;
        let answers = self.send(events, None, sender).await?;
        let answered = gather(len, answers).await;
        drop(room);
        answered
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
            let len = events.len();
            let room = self.room(len.max(1), wait).await?;
            let answers = self.send(std::mem::take(events), Some(batch), None).await?;
            let (reply, answer) = oneshot::channel();
            tokio::spawn(async move {
                let _ = reply.send(gather(len, answers).await);
                drop(room);
            });
            Ok(answer)
        })
    }

    /// Tells the writers that `partitions` are assigned here, and answers their positions (the
    /// least of the shards'); when `exclusive`, partitions held from before and not among them
    /// are released first. Blocks.
    pub fn assign(
        &self,
        runtime: &tokio::runtime::Handle,
        partitions: Vec<Partition>,
        exclusive: bool,
    ) -> Result<Vec<i64>, Refusal> {
        if self.sharding == Sharding::Partition {
            // Each shard is told of its own partitions only, and answers their positions.
            let own = |shard: usize| -> Vec<Partition> {
                partitions
                    .iter()
                    .filter(|partition| self.shard_of(partition) == shard)
                    .cloned()
                    .collect()
            };
            let answers = self.control(runtime, |shard, reply| Message::Assign {
                partitions: own(shard),
                exclusive,
                reply,
            })?;
            let mut positions: Vec<std::vec::IntoIter<i64>> =
                answers.into_iter().map(Vec::into_iter).collect();
            return Ok(partitions
                .iter()
                .map(|partition| {
                    positions[self.shard_of(partition)]
                        .next()
                        .unwrap_or(sources::OFFSET_BEGINNING)
                })
                .collect());
        }
        let answers = self.control(runtime, |_, reply| Message::Assign {
            partitions: partitions.clone(),
            exclusive,
            reply,
        })?;
        Ok(shards::least_positions(answers))
    }

    /// Has every writer checkpoint now, and answers the Kafka positions all the newest
    /// checkpoints cover (to commit to the group at shutdown). Blocks.
    pub fn checkpoint_now(
        &self,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Vec<KafkaOffset>, Refusal> {
        self.control(runtime, |_, reply| Message::Checkpoint { reply })?;
        Ok(self.board.combined())
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// How the state is split.
    pub fn sharding(&self) -> Sharding {
        self.sharding
    }

    /// The shard of a partition, when shards are partitions.
    fn shard_of(&self, partition: &Partition) -> usize {
        usize::try_from(partition.partition).unwrap_or(0) % self.shards.len()
    }

    /// Sends every writer the control message `message` makes of its shard number and a reply
    /// channel, and waits for every answer, in shard order.
    fn control<T>(
        &self,
        runtime: &tokio::runtime::Handle,
        message: impl Fn(usize, oneshot::Sender<T>) -> Message,
    ) -> Result<Vec<T>, Refusal> {
        runtime.block_on(async {
            let mut answers = Vec::with_capacity(self.shards.len());
            for (number, shard) in self.shards.iter().enumerate() {
                let (reply, answer) = oneshot::channel();
                shard
                    .send(message(number, reply))
                    .await
                    .map_err(|_closed| Refusal::ShuttingDown)?;
                answers.push(answer);
            }
            let mut answered = Vec::with_capacity(answers.len());
            for answer in answers {
                answered.push(answer.await.map_err(|_dropped| Refusal::ShuttingDown)?);
            }
            Ok(answered)
        })
    }

    /// Tells the writers that `partitions` are no longer assigned here, and waits until the
    /// campaigns they alone fed are released and every shard is checkpointed. Blocks.
    pub fn release(
        &self,
        runtime: &tokio::runtime::Handle,
        partitions: Vec<Partition>,
    ) -> Result<Release, Refusal> {
        let releases = self.control(runtime, |shard, reply| Message::Release {
            partitions: match self.sharding {
                Sharding::Learner => partitions.clone(),
                Sharding::Partition => partitions
                    .iter()
                    .filter(|partition| self.shard_of(partition) == shard)
                    .cloned()
                    .collect(),
            },
            reply,
        })?;
        Ok(shards::merge_releases(releases))
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

    /// Gives each shard its part of `events`; answers each part's event indices and answer.
    async fn send(
        &self,
        events: Vec<Event>,
        kafka: Option<KafkaBatch>,
        sender: Option<Arc<str>>,
    ) -> Result<Vec<(Vec<usize>, Answer)>, Refusal> {
        let shards = self.shards.len();
        let mut answers = Vec::new();
        for part in shards::split(shards, self.sharding, events, kafka, &self.unregistered) {
            let (reply, answer) = oneshot::channel();
            let submission = Submission {
                events: part.events,
                kafka: part.kafka,
                sender: sender.clone(),
                reply,
            };
            self.shards[part.shard]
                .send(Message::Submit(submission))
                .await
                .map_err(|_closed| Refusal::ShuttingDown)?;
            answers.push((part.indices, answer));
        }
        Ok(answers)
    }

    /// The Kafka positions every shard's newest checkpoint covers: what may be committed to
    /// the group.
    pub fn checkpointed(&self) -> watch::Receiver<Vec<KafkaOffset>> {
        self.checkpointed.clone()
    }

    /// Lets the writers sync or checkpoint when due; skipped by a writer whose queue is full.
    pub fn tick(&self) {
        for shard in self.shards.iter() {
            let _ = shard.try_send(Message::Tick);
        }
    }

    /// Refuses every later submission, and tells the writers to stop once they have answered
    /// those already queued.
    pub async fn close(&self) {
        self.room.close();
        for shard in self.shards.iter() {
            // A writer may be gone already; then there is nothing left to stop.
            let _ = shard.send(Message::Stop).await;
        }
    }
}

/// Waits for every part's answer and puts them back in submission order.
async fn gather(len: usize, answers: Vec<(Vec<usize>, Answer)>) -> Result<Outcomes, Refusal> {
    let mut answered = Vec::with_capacity(answers.len());
    for (indices, answer) in answers {
        answered.push((indices, answer.await.unwrap_or(Err(Refusal::ShuttingDown))));
    }
    shards::merge(len, answered)
}

/// Starts one writer thread per shard: each recovers its shard, then takes submissions until
/// stopped.
pub fn start(
    settings: PipelineSettings,
    figures: Arc<Figures>,
) -> std::io::Result<(Queue, Writer)> {
    let shards = settings.durable.len().max(1);
    let (checkpointed_sender, checkpointed) = watch::channel(Vec::new());
    let board = Arc::new(CheckpointBoard::new(
        shards,
        settings.sharding,
        checkpointed_sender,
    ));
    let mut settings = settings;
    let unregistered = match settings.sharding {
        // The room decides which unregistered campaigns have counters, for every shard at
        // once; a shard's aggregator then never refuses one for lack of room (only for lack
        // of slots).
        Sharding::Learner => {
            let room = UnregisteredRoom::new(
                settings.aggregator.max_unregistered_campaigns,
                &settings.registered,
            );
            settings.aggregator.max_unregistered_campaigns = usize::MAX;
            room
        }
        // A partition's shard decides alone, from its own events, so that its partials are the
        // same whichever instance counts it: the limit is then per shard.
        Sharding::Partition => UnregisteredRoom::new(usize::MAX, &settings.registered),
    };
    let unregistered = Arc::new(unregistered);
    let room = Arc::new(Semaphore::new(settings.queue_events));
    let mut senders = Vec::with_capacity(shards);
    let mut threads = Vec::with_capacity(shards);
    let mut recoveries = Vec::with_capacity(shards);
    for shard in 0..shards {
        // Each writer's channel holds a share of the submissions: the event bound is the one
        // that matters.
        let (sender, receiver) = mpsc::channel((QUEUE_SUBMISSIONS / shards).max(16));
        let (recovered_sender, recovered) = oneshot::channel();
        let shared = Shared {
            shard,
            sharding: settings.sharding,
            outbox: settings.outbox.clone(),
            unregistered: unregistered.clone(),
            board: board.clone(),
        };
        let (settings, figures, room) = (settings.clone(), figures.clone(), room.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("suivi-writer-{shard}"))
                .spawn(move || {
                    writer::run(settings, shared, figures, room, receiver, recovered_sender)
                })?,
        );
        senders.push(sender);
        recoveries.push(recovered);
    }
    let queue = Queue {
        shards: senders.into(),
        sharding: settings.sharding,
        room,
        capacity: settings.queue_events,
        queue_timeout: settings.queue_timeout,
        board,
        unregistered,
        checkpointed,
    };
    let (recovered_sender, recovered) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("suivi-writers".to_owned())
        .spawn(move || writer::supervise(threads, recoveries, recovered_sender))?;
    Ok((queue, Writer { recovered, thread }))
}

#[cfg(test)]
mod tests;
