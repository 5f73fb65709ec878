//! The consumer thread: polls librdkafka, builds batches (valid events, and dead letters),
//! hands them to the writer with the partition ranges they cover, and keeps a few in flight.
//! Rebalance callbacks run inside `poll`, on this same thread, and share the batch state with
//! the loop through [`Context`].
//!
//! A refused batch (journal full, or out of sequence behind one that was) rewinds each of its
//! partitions to where the batch started, so the events are read again; the writer takes a
//! partition's batches only in sequence, so nothing after a refused batch can be counted before
//! it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hashbrown::HashMap;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, ClientContext, Message};
use tokio_util::sync::CancellationToken;

use super::dead_letter::{DeadLetter, DeadLetters};
use super::decode::{self, Encoding};
use super::{KafkaSettings, Signals};
use crate::aggregate::Applied;
use crate::event::{Event, EventParser};
use crate::pipeline::sources::{Partition, Range};
use crate::pipeline::{Answer, KafkaBatch, Outcomes, Queue, Refusal};
use crate::proto::storage::KafkaOffset;
use crate::telemetry::{self, BatchTally, Transport};

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
        .set("queued.max.messages.kbytes", "16384");
    // The operator's options (already in `config`) win over these defaults.
    for (key, value) in defaults.config_map() {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    let context = Context {
        flow: Mutex::new(Flow {
            queue,
            runtime,
            parser,
            dead_letters,
            signals,
            batch_events: settings.batch_events,
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
        let polled = consumer.poll(wait);
        let mut flow = consumer.context().flow.lock();
        match polled {
            Some(Ok(message)) => flow.take(&message),
            Some(Err(error)) => tracing::warn!(error = %error, "Kafka consumer error"),
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

/// Commits the checkpointed positions of the partitions assigned here.
fn commit(consumer: &BaseConsumer<Context>, offsets: &[KafkaOffset], mode: CommitMode) {
    let assigned = match consumer.assignment() {
        Ok(assigned) => assigned,
        Err(error) => {
            tracing::debug!(error = %error, "no assignment to commit");
            return;
        }
    };
    let mut list = TopicPartitionList::new();
    for offset in offsets {
        if offset.next_offset >= 0
            && assigned
                .find_partition(&offset.topic, offset.partition)
                .is_some()
            && list
                .add_partition_offset(
                    &offset.topic,
                    offset.partition,
                    Offset::Offset(offset.next_offset),
                )
                .is_err()
        {
            tracing::debug!(topic = %offset.topic, partition = offset.partition, "cannot list an offset to commit");
        }
    }
    if list.count() == 0 {
        return;
    }
    if let Err(error) = consumer.commit(&list, mode) {
        telemetry::record_kafka_commit_failure();
        tracing::warn!(error = %error, "cannot commit offsets to the consumer group");
    }
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

#[derive(Debug, Clone, Copy)]
struct Pause {
    cause: usize,
    since: Instant,
    until: Instant,
}

/// Pause causes, indexes into `telemetry::PAUSE_CAUSES`.
const BACKPRESSURE: usize = 0;
const STORAGE: usize = 1;
const DEAD_LETTER: usize = 2;

/// Messages read and not yet handed over: the valid events and the dead letters. The aggregate
/// rejects no valid event, so a batch handed over needs no copy of its messages.
#[derive(Debug, Default)]
struct Batch {
    events: Vec<Event>,
    /// For each event, the index in `ranges` of its partition.
    sources: Vec<u32>,
    ranges: Vec<Range>,
    /// Messages read per range.
    counts: Vec<u64>,
    dead_letters: Vec<DeadLetter>,
    started: Option<Instant>,
}

/// A batch handed over, waiting for its answer.
struct InFlight {
    batch: Batch,
    answer: Answer,
}

impl Batch {
    fn messages(&self) -> usize {
        self.events.len() + self.dead_letters.len()
    }

    fn range_of(&mut self, partition: &Partition, from: i64) -> usize {
        if let Some(index) = self
            .ranges
            .iter()
            .position(|range| range.partition == *partition)
        {
            return index;
        }
        self.ranges.push(Range {
            partition: partition.clone(),
            from,
            to: from,
        });
        self.counts.push(0);
        self.ranges.len() - 1
    }
}

impl Flow {
    /// Whether a batch is pending, stalled or in flight: then polls wait less, so that it is
    /// handed over and answered promptly.
    fn busy(&self) -> bool {
        self.pending.messages() > 0 || self.stalled.is_some() || !self.in_flight.is_empty()
    }

    /// Takes one message into the pending batch.
    fn take(&mut self, message: &BorrowedMessage<'_>) {
        let partition = Partition {
            topic: message.topic().to_owned(),
            partition: message.partition(),
        };
        let Some(from) = self.chains.get(&partition).copied() else {
            // Not assigned here (any more): a late message of a revoked partition.
            return;
        };
        let offset = message.offset();
        let content_type = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|header| header.key.eq_ignore_ascii_case("content-type"))
                .and_then(|header| header.value)
        });
        let encoding = Encoding::of(content_type);
        let batch = &mut self.pending;
        batch.started.get_or_insert_with(Instant::now);
        let range = batch.range_of(&partition, from);
        batch.ranges[range].to = offset + 1;
        batch.counts[range] += 1;
        self.chains.insert(partition, offset + 1);
        match decode::event(&self.parser, encoding, message.payload(), Utc::now()) {
            Ok(event) => {
                batch.events.push(event);
                batch.sources.push(u32::try_from(range).unwrap_or(u32::MAX));
            }
            Err(reason) => batch.dead_letters.push(DeadLetter {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset,
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec),
                content_type: content_type.map(<[u8]>::to_vec),
                code: reason.code(),
                message: reason.to_string(),
            }),
        }
    }

    /// After each poll: hand the pending batch over when full or old enough, take answers,
    /// retry what is stalled, and end pauses that are due.
    fn step(&mut self, consumer: &BaseConsumer<Context>) {
        self.settle(consumer, false);
        if let Some(pause) = self.paused
            && Instant::now() >= pause.until
            && self.stalled.is_none()
        {
            self.resume(consumer);
        }
        if let Some(stalled) = self.stalled.take() {
            self.hand_over(consumer, stalled);
            if self.stalled.is_some() {
                return;
            }
            self.resume(consumer);
        }
        if self.paused.is_some() {
            return;
        }
        let full = self.pending.messages() >= self.batch_events;
        let old = self
            .pending
            .started
            .is_some_and(|started| started.elapsed() >= LINGER);
        if full || old {
            let batch = std::mem::take(&mut self.pending);
            self.hand_over(consumer, batch);
        }
    }

    /// Hands everything over and waits for every answer: before a revocation and at shutdown.
    /// A batch refused meanwhile is rewound, to be read again after the callback (a revoked
    /// partition's next owner reads it from its own start anyway).
    fn drain(&mut self, consumer: &BaseConsumer<Context>) {
        loop {
            if let Some(stalled) = self.stalled.take() {
                self.hand_over(consumer, stalled);
            }
            if self.stalled.is_none() && self.pending.messages() > 0 {
                let batch = std::mem::take(&mut self.pending);
                self.hand_over(consumer, batch);
            }
            self.settle(consumer, true);
            // Past the shutdown grace a stalled batch is left to be read again after the restart.
            if self.stopped || self.stalled.is_none() || self.signals.abort.is_cancelled() {
                return;
            }
        }
    }

    /// Writes a batch's dead letters, then queues its events; on failure, rewinds and pauses.
    fn hand_over(&mut self, consumer: &BaseConsumer<Context>, batch: Batch) {
        if batch.ranges.is_empty() {
            return;
        }
        if !batch.dead_letters.is_empty() {
            let Some(sent) = self.abortable(self.dead_letters.send_all(&batch.dead_letters)) else {
                // Past the shutdown grace: the batch is not counted, so it is read again after
                // the restart, dead letters and all.
                self.stopped = true;
                return;
            };
            if let Err(error) = sent {
                telemetry::record_dead_letter_failure();
                tracing::warn!(
                    error = %error,
                    "cannot write to the dead-letter topic; pausing and reading the batch again"
                );
                self.rewind(consumer, &batch.ranges);
                self.pause(consumer, DEAD_LETTER, FAILURE_PAUSE);
                return;
            }
            for letter in &batch.dead_letters {
                telemetry::record_dead_letter(letter.code);
            }
        }
        let kafka = KafkaBatch {
            ranges: batch.ranges.clone(),
            sources: batch.sources.clone(),
        };
        // The dead letters are written: a retry of this batch must not write them again.
        let mut batch = batch;
        batch.dead_letters.clear();
        // The events go; the batch keeps what is needed to answer and to retry.
        match self
            .queue
            .queue_kafka(&self.runtime, &mut batch.events, kafka, ROOM_WAIT)
        {
            Ok(answer) => {
                self.in_flight.push_back(InFlight { batch, answer });
                while self.in_flight.len() > MAX_IN_FLIGHT {
                    self.settle_one(consumer, true);
                }
            }
            Err(Refusal::Overloaded(_)) => {
                // Nothing of it was queued: keep it and pause until the pipeline has room.
                self.stalled = Some(batch);
                self.pause(consumer, BACKPRESSURE, Duration::ZERO);
            }
            Err(Refusal::ShuttingDown) => self.stopped = true,
            Err(refusal) => {
                telemetry::record_kafka_retry(refusal.reason());
                self.rewind(consumer, &batch.ranges);
            }
        }
    }

    /// Takes the answers that came; with `wait`, waits for all of them.
    fn settle(&mut self, consumer: &BaseConsumer<Context>, wait: bool) {
        while !self.in_flight.is_empty() {
            if !self.settle_one(consumer, wait) {
                return;
            }
        }
    }

    /// Takes the oldest batch's answer if it came (or waits for it); says whether it did.
    fn settle_one(&mut self, consumer: &BaseConsumer<Context>, wait: bool) -> bool {
        let (batch, answer) = if wait {
            let Some(InFlight { batch, answer }) = self.in_flight.pop_front() else {
                return false;
            };
            let answer = self.wait_for(answer);
            (batch, answer)
        } else {
            let Some(front) = self.in_flight.front_mut() else {
                return false;
            };
            let answer = match front.answer.try_recv() {
                Ok(answer) => answer,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => return false,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    Err(Refusal::ShuttingDown)
                }
            };
            let Some(InFlight { batch, .. }) = self.in_flight.pop_front() else {
                return false;
            };
            (batch, answer)
        };
        match answer {
            Ok(outcomes) => self.counted(&batch, outcomes),
            Err(Refusal::ShuttingDown) => self.stopped = true,
            Err(refusal) => {
                telemetry::record_kafka_retry(refusal.reason());
                tracing::warn!(%refusal, "Kafka batch refused; reading it again");
                // Every later batch of these partitions will be refused too: take their answers,
                // then rewind each partition to the earliest refused start.
                let mut ranges = batch.ranges.clone();
                while let Some(InFlight { batch, answer }) = self.in_flight.pop_front() {
                    match self.wait_for(answer) {
                        Ok(outcomes) => self.counted(&batch, outcomes),
                        Err(_) => ranges.extend(batch.ranges.iter().cloned()),
                    }
                }
                self.rewind(consumer, &ranges);
                if matches!(refusal, Refusal::DiskFull | Refusal::StorageUnwritable) {
                    self.pause(consumer, STORAGE, FAILURE_PAUSE);
                }
            }
        }
        true
    }

    /// Waits for a batch's answer; past the shutdown grace, no longer (as if shutting down).
    fn wait_for(&self, answer: Answer) -> Result<Outcomes, Refusal> {
        self.abortable(answer)
            .and_then(Result::ok)
            .unwrap_or(Err(Refusal::ShuttingDown))
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

    /// Records a counted batch: every event of it was accepted or a duplicate.
    fn counted(&mut self, batch: &Batch, outcomes: Outcomes) {
        // Dead letters of this batch are counted on their own metric: these are its events.
        let mut tally = BatchTally {
            received: outcomes.len() as u64,
            ..BatchTally::default()
        };
        for outcome in outcomes {
            match outcome {
                Applied::Accepted => tally.accepted += 1,
                Applied::Duplicate { conflict } => {
                    tally.duplicates += 1;
                    tally.conflicts += u64::from(conflict);
                }
            }
        }
        for (range, count) in batch.ranges.iter().zip(&batch.counts) {
            telemetry::record_kafka_messages(
                &range.partition.topic,
                range.partition.partition,
                *count,
            );
        }
        let elapsed = batch
            .started
            .map_or(Duration::ZERO, |started| started.elapsed());
        telemetry::record_batch(Transport::Kafka, tally, &[], elapsed);
    }

    /// Reads `ranges` again: each partition goes back to the earliest start among them, and the
    /// pending batch is dropped (its partitions go back to where it started too).
    fn rewind(&mut self, consumer: &BaseConsumer<Context>, ranges: &[Range]) {
        let pending = std::mem::take(&mut self.pending);
        let stalled = self.stalled.take();
        let mut starts: HashMap<Partition, i64> = HashMap::new();
        let all = ranges
            .iter()
            .chain(&pending.ranges)
            .chain(stalled.iter().flat_map(|batch| &batch.ranges));
        for range in all {
            starts
                .entry(range.partition.clone())
                .and_modify(|start| *start = position_min(*start, range.from))
                .or_insert(range.from);
        }
        for (partition, start) in starts {
            if !self.chains.contains_key(&partition) {
                continue;
            }
            self.chains.insert(partition.clone(), start);
            if let Err(error) = consumer.seek(
                &partition.topic,
                partition.partition,
                Offset::from_raw(start),
                Duration::from_secs(10),
            ) {
                tracing::error!(error = %error, ?partition, start, "cannot seek a partition back");
            }
        }
    }

    /// Pauses every assigned partition for `cause`, at least for `least`.
    fn pause(&mut self, consumer: &BaseConsumer<Context>, cause: usize, least: Duration) {
        let now = Instant::now();
        if self.paused.is_none() {
            if let Ok(assigned) = consumer.assignment()
                && let Err(error) = consumer.pause(&assigned)
            {
                tracing::warn!(error = %error, "cannot pause the Kafka partitions");
            }
            self.paused = Some(Pause {
                cause,
                since: now,
                until: now + least,
            });
        }
    }

    /// Resumes consumption after a pause, and records how long it lasted.
    fn resume(&mut self, consumer: &BaseConsumer<Context>) {
        let Some(pause) = self.paused.take() else {
            return;
        };
        if let Ok(assigned) = consumer.assignment()
            && let Err(error) = consumer.resume(&assigned)
        {
            tracing::warn!(error = %error, "cannot resume the Kafka partitions");
        }
        self.paused_total[pause.cause] += pause.since.elapsed();
        telemetry::record_kafka_paused(
            telemetry::PAUSE_CAUSES[pause.cause],
            self.paused_total[pause.cause],
        );
    }

    fn assign(&mut self, consumer: &BaseConsumer<Context>, list: &TopicPartitionList) {
        let partitions = partitions_of(list);
        let exclusive = !self.assigned_once;
        self.assigned_once = true;
        let positions = match self
            .queue
            .assign(&self.runtime, partitions.clone(), exclusive)
        {
            Ok(positions) => {
                // The writer has released what this instance held and no longer owns: its
                // figures may be served and written from now on.
                self.signals.settled.cancel();
                positions
            }
            Err(refusal) => {
                tracing::error!(%refusal, "cannot take Kafka partitions on");
                self.stopped = true;
                return;
            }
        };
        for (element, (partition, position)) in list
            .elements()
            .iter_mut()
            .zip(partitions.iter().zip(positions))
        {
            if let Err(error) = element.set_offset(Offset::from_raw(position)) {
                tracing::error!(error = %error, ?partition, "cannot set a partition's start");
            }
            self.chains.insert(partition.clone(), position);
        }
        // A pause covers the newly assigned partitions too.
        if self.paused.is_some()
            && let Err(error) = consumer.pause(list)
        {
            tracing::warn!(error = %error, "cannot pause the new partitions");
        }
        telemetry::record_kafka_rebalance("assign", self.chains.len());
        tracing::info!(partitions = ?partitions, "Kafka partitions assigned");
    }

    fn revoke(&mut self, consumer: &BaseConsumer<Context>, list: &TopicPartitionList) {
        let partitions = partitions_of(list);
        // What was read from every partition is counted first (and read again if refused).
        self.drain(consumer);
        for partition in &partitions {
            self.chains.remove(partition);
            telemetry::forget_kafka_lag(&partition.topic, partition.partition);
        }
        if self.closing {
            // Shutting down: the state keeps these partitions, checkpointed with them.
            return;
        }
        match self.queue.release(&self.runtime, partitions.clone()) {
            Ok(release) => tracing::info!(
                partitions = ?partitions,
                released = release.campaigns.len(),
                "Kafka partitions revoked"
            ),
            Err(refusal) => {
                tracing::error!(%refusal, "cannot release revoked Kafka partitions");
                self.stopped = true;
            }
        }
        telemetry::record_kafka_rebalance("revoke", self.chains.len());
    }
}

/// The earlier of two positions, the beginning (a negative logical offset) first.
fn position_min(a: i64, b: i64) -> i64 {
    match (a < 0, b < 0) {
        (true, _) => a,
        (_, true) => b,
        _ => a.min(b),
    }
}

fn partitions_of(list: &TopicPartitionList) -> Vec<Partition> {
    list.elements()
        .iter()
        .map(|element| Partition {
            topic: element.topic().to_owned(),
            partition: element.partition(),
        })
        .collect()
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        for (name, topic) in &statistics.topics {
            for (number, partition) in &topic.partitions {
                if *number < 0 || !partition.desired {
                    continue;
                }
                let read = if partition.app_offset >= 0 {
                    partition.app_offset
                } else {
                    partition.lo_offset
                };
                telemetry::record_kafka_lag(name, *number, partition.hi_offset - read);
            }
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut flow = self.flow.lock();
        match rebalance {
            Rebalance::Assign(list) => flow.assign(consumer, list),
            Rebalance::Revoke(list) => flow.revoke(consumer, list),
            Rebalance::Error(error) => tracing::error!(error = %error, "Kafka rebalance failed"),
        }
    }
}
