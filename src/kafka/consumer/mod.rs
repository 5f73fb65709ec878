//! The consumer thread: polls librdkafka, builds batches (valid events, and dead letters),
//! hands them to the writer with the partition ranges they cover, and keeps a few in flight.
//! Rebalance callbacks run inside `poll`, on this same thread, and share the batch state with
//! the loop through [`Context`].
//!
//! A refused batch (journal full, or out of sequence behind one that was) rewinds each of its
//! partitions to where the batch started, so the events are read again; the writer takes a
//! partition's batches only in sequence, so nothing after a refused batch can be counted before
//! it.
//!
//! This file holds the loop ([`run`]) and the state it shares with the callbacks ([`Flow`]);
//! `batch` builds batches, hands them over and takes their answers; `pause` pauses, resumes
//! and rewinds partitions; `rebalance` is the assign and revoke callbacks; `commit` writes the
//! checkpointed offsets to the group and reads the lag from librdkafka's statistics.
//!
//! **The one lock held across `block_on`.** [`Flow`] sits in a mutex only because librdkafka's
//! callbacks take the context by shared reference; its guard is held while the consumer blocks
//! on the writer (hand-over, answers, assign, release, checkpoint) and on the dead-letter
//! producer. That is safe, and the exception to "no lock is held across `.await`":
//!
//! - the mutex is only ever locked on the consumer thread: by [`run`] between polls, and by the
//!   rebalance callbacks, which librdkafka calls from inside `poll` (or from closing the
//!   consumer, after `run` has returned); so it is never contended;
//! - it is never locked twice: `run` drops the guard before each `poll` and each commit, and no
//!   call made under it (seek, pause, resume, assignment, the writer's queue, the dead-letter
//!   producer, a client of its own) serves librdkafka's callbacks;
//! - what it blocks on cannot wait for it: those futures run on the tokio runtime and the
//!   writer thread, which never reach the consumer or its context; and this thread is not a
//!   runtime worker, so blocking it holds no task up.

mod batch;
mod commit;
mod pause;
mod rebalance;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use parking_lot::Mutex;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use tokio_util::sync::CancellationToken;

use self::batch::{Batch, InFlight};
use self::commit::commit;
use self::pause::Pause;
use super::dead_letter::DeadLetters;
use super::{KafkaSettings, Signals};
use crate::event::EventParser;
use crate::pipeline::Queue;
use crate::pipeline::shards::Sharding;
use crate::pipeline::sources::Partition;

/// How long one poll waits for a message when there is nothing to hand over or to answer.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How long one poll waits when a batch is pending or in flight, so that it goes on promptly.
const POLL_WAIT_BUSY: Duration = Duration::from_millis(2);
/// How long a batch waits for more messages before it is handed over.
const LINGER: Duration = Duration::from_millis(20);
/// Batches handed over and not answered yet, at most.
const MAX_IN_FLIGHT: usize = 4;
/// How long a batch waits for room in the pipeline before the partitions are paused.
const ROOM_WAIT: Duration = Duration::from_millis(500);
/// How long consumption pauses after the journal or the dead-letter topic failed.
const FAILURE_PAUSE: Duration = Duration::from_secs(1);

/// The consumer's context: logging, statistics (lag), and the rebalance callbacks.
pub struct Context {
    flow: Mutex<Flow>,
}

/// Builds the consumer and subscribes it.
pub fn create(
    settings: &KafkaSettings,
    mut config: ClientConfig,
    queue: Queue,
    parser: Arc<EventParser>,
    runtime: tokio::runtime::Handle,
    dead_letters: DeadLetters,
    signals: Signals,
) -> Result<BaseConsumer<Context>, KafkaError> {
    let mut defaults = ClientConfig::new();
    defaults
        .set("group.id", &settings.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("statistics.interval.ms", "5000")
        .set("queued.max.messages.kbytes", "16384")
        // librdkafka postpones a partition's next fetch by this much once its local queue is
        // over the thresholds above (1 s by default). suivi takes messages in bursts — a batch,
        // then the hand-over — so the queue is often over them for a moment, and the default
        // held consumption to ~120,000 events/s against a broker serving 1.3 M (BENCHMARKS.md).
        .set("fetch.queue.backoff.ms", "5");
    if !settings.instance_id.is_empty() {
        // Static membership: a restart within the session timeout keeps the partitions here.
        defaults.set("group.instance.id", &settings.instance_id);
    }
    // The operator's options (already in `config`) win over these defaults.
    for (key, value) in defaults.config_map() {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    let placement = (queue.sharding() == Sharding::Partition).then(|| queue.shards());
    let context = Context {
        flow: Mutex::new(Flow {
            queue,
            runtime,
            parser,
            dead_letters,
            signals,
            batch_events: settings.batch_events,
            placement,
            chains: HashMap::new(),
            pending: Batch::default(),
            stalled: None,
            in_flight: VecDeque::new(),
            paused: None,
            paused_total: [Duration::ZERO; 3],
            assigned_once: false,
            closing: false,
            stopped: false,
        }),
    };
    let consumer: BaseConsumer<Context> = config.create_with_context(context)?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Consumes until `stop`, then counts and checkpoints what was read, commits, and leaves.
pub fn run(consumer: &BaseConsumer<Context>, stop: &CancellationToken) {
    let mut checkpointed = consumer.context().flow.lock().queue.checkpointed();
    let mut wait = POLL_WAIT;
    while !stop.is_cancelled() {
        // No guard is held across `poll`: the rebalance callbacks it runs lock the flow.
        let polled = consumer.poll(wait);
        // Held across `block_on` (the hand-over): safe, see the module's doc.
        let mut flow = consumer.context().flow.lock();
        match polled {
            Some(Ok(message)) => flow.take(&message),
            Some(Err(error)) => {
                tracing::warn!(error = %crate::telemetry::chain(&error), "Kafka consumer error")
            }
            None => {}
        }
        flow.step(consumer);
        if flow.stopped {
            break;
        }
        wait = if flow.busy() {
            POLL_WAIT_BUSY
        } else {
            POLL_WAIT
        };
        drop(flow);
        if checkpointed.has_changed().unwrap_or(false) {
            let offsets = checkpointed.borrow_and_update().clone();
            commit(consumer, &offsets, CommitMode::Async);
        }
    }
    let mut flow = consumer.context().flow.lock();
    flow.drain(consumer);
    let offsets = flow.queue.checkpoint_now(&flow.runtime);
    flow.closing = true;
    drop(flow);
    match offsets {
        Ok(offsets) => commit(consumer, &offsets, CommitMode::Sync),
        Err(refusal) => tracing::warn!(%refusal, "no final checkpoint; offsets not committed"),
    }
    tracing::info!("Kafka consumer stopped");
}

/// Batches being built, handed over, or waiting; partition chains; pauses.
struct Flow {
    queue: Queue,
    runtime: tokio::runtime::Handle,
    parser: Arc<EventParser>,
    dead_letters: DeadLetters,
    /// Stop, abort, and the first assignment's settlement.
    signals: Signals,
    batch_events: usize,
    /// With shards that are partitions, their number: events are placed by learner.
    placement: Option<usize>,
    /// For each assigned partition, the offset its next batch continues from.
    chains: HashMap<Partition, i64>,
    pending: Batch,
    /// A batch that found no room in the pipeline, retried while the partitions are paused.
    stalled: Option<Batch>,
    in_flight: VecDeque<InFlight>,
    /// Why and since when every assigned partition is paused, and until when at least.
    paused: Option<Pause>,
    /// Paused time so far, by cause (as `telemetry::PAUSE_CAUSES`).
    paused_total: [Duration; 3],
    /// Whether the first assignment since start was handled.
    assigned_once: bool,
    /// Set at shutdown: the revocation that closing the consumer causes releases nothing.
    closing: bool,
    /// The pipeline is shutting down: stop consuming.
    stopped: bool,
}

impl Flow {
    /// Whether a batch is pending, stalled or in flight: then polls wait less, so that it is
    /// handed over and answered promptly.
    fn busy(&self) -> bool {
        self.pending.messages() > 0 || self.stalled.is_some() || !self.in_flight.is_empty()
    }

    /// Runs `future` to its end on this thread, unless the shutdown grace is over first (`None`).
    fn abortable<F: std::future::Future>(&self, future: F) -> Option<F::Output> {
        self.runtime.block_on(async {
            tokio::select! {
                output = future => Some(output),
                () = self.signals.abort.cancelled() => None,
            }
        })
    }
}
