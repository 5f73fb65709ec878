//! The batches of the consumer thread: [`Batch`], the messages read and not yet handed over,
//! taken one by one (`Flow::take`, a copy of each message); decoding a batch on every core
//! ([`Batch::decode`]: into the valid events and the dead letters, in the order read); handing
//! it over (its dead letters written first, then its events queued to the writers, at most
//! `MAX_IN_FLIGHT` unanswered); and taking the answers (`Flow::settle`), a refused batch
//! rewinding its partitions and every later batch's.

use std::time::{Duration, Instant};

use chrono::Utc;
use rayon::prelude::*;
use rdkafka::Message;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{BorrowedMessage, Headers};

use super::pause::{BACKPRESSURE, DEAD_LETTER, STORAGE};
use super::{Context, FAILURE_PAUSE, Flow, LINGER, MAX_IN_FLIGHT, ROOM_WAIT};
use crate::aggregate::Applied;
use crate::event::{Event, EventParser, Placement, RejectReason};
use crate::kafka::dead_letter::DeadLetter;
use crate::kafka::decode::{self, Encoding};
use crate::kafka::placed::{self, Placed};
use crate::pipeline::sources::{Partition, Range};
use crate::pipeline::{Answer, KafkaBatch, Outcomes, Refusal};
use crate::telemetry::{self, BatchTally, Transport};

/// Messages read and not yet handed over: those not decoded yet, then, once decoded, the valid
/// events and the dead letters. The aggregate rejects no valid event, so a batch handed over
/// needs no copy of its messages.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) undecoded: Vec<Undecoded>,
    pub(super) events: Vec<Event>,
    /// For each event, the index in `ranges` of its partition.
    pub(super) sources: Vec<u32>,
    pub(super) ranges: Vec<Range>,
    /// Messages read per range.
    pub(super) counts: Vec<u64>,
    pub(super) dead_letters: Vec<DeadLetter>,
    /// With shards that are partitions: messages read from another partition than their
    /// learner's, to write to it before the batch is counted.
    pub(super) moves: Vec<Placed>,
    pub(super) started: Option<Instant>,
}

/// A message read, as it came: decoded with the rest of its batch, on every core.
#[derive(Debug)]
pub(super) struct Undecoded {
    /// The index in the batch's `ranges` of its partition.
    range: u32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    /// Put in its partition by suivi (`placed::HEADER_PLACED`).
    placed: bool,
}

/// Messages decoded together by one worker at least: below it, handing work out costs more
/// than it saves.
const MIN_DECODE_CHUNK: usize = 256;

/// A batch handed over, waiting for its answer.
pub(super) struct InFlight {
    pub(super) batch: Batch,
    pub(super) answer: Answer,
}

impl Batch {
    pub(super) fn messages(&self) -> usize {
        self.undecoded.len() + self.events.len() + self.dead_letters.len() + self.moves.len()
    }

    /// Decodes and validates the messages not decoded yet, on rayon's threads (one per core),
    /// into events and dead letters, each in the order read. With shards that are partitions
    /// (`placement`: their number), each event is placed too: what of it belongs to the
    /// partition it was read from is kept, and a message another producer put in the wrong
    /// partition is moved to its learner's (see `kafka::placed`).
    pub(super) fn decode(&mut self, parser: &EventParser, placement: Option<usize>) {
        let now = Utc::now();
        let undecoded = std::mem::take(&mut self.undecoded);
        let decoded: Vec<Result<(Event, Option<Placement>), RejectReason>> = undecoded
            .par_iter()
            .with_min_len(MIN_DECODE_CHUNK)
            .map(|message| {
                let encoding = Encoding::of(message.content_type.as_deref());
                let payload = message.payload.as_deref();
                match placement {
                    None => {
                        decode::event(parser, encoding, payload, now).map(|event| (event, None))
                    }
                    Some(partitions) => decode::placed(parser, encoding, payload, now, partitions)
                        .map(|(event, placement)| (event, Some(placement))),
                }
            })
            .collect();
        for (message, decoded) in undecoded.into_iter().zip(decoded) {
            let partition = &self.ranges[message.range as usize].partition;
            match decoded {
                Ok((event, None)) => {
                    self.events.push(event);
                    self.sources.push(message.range);
                }
                Ok((event, Some(placement))) => {
                    let here = usize::try_from(partition.partition).unwrap_or(usize::MAX);
                    // A message marked placed that does not belong here was not placed by
                    // suivi (or with another partition count): moved too, so that it is
                    // counted somewhere rather than nowhere.
                    let placed_here = placement.partitions().any(|placed| placed == here);
                    if !message.placed || !placed_here {
                        for elsewhere in placement.partitions().filter(|other| *other != here) {
                            self.moves.push(Placed {
                                topic: partition.topic.clone(),
                                partition: i32::try_from(elsewhere).unwrap_or(0),
                                key: message.key.clone(),
                                payload: message.payload.clone(),
                                content_type: message.content_type.clone(),
                            });
                        }
                    }
                    if let Some(part) = placement.part(event, here) {
                        self.events.push(part);
                        self.sources.push(message.range);
                    }
                }
                Err(reason) => {
                    self.dead_letters.push(DeadLetter {
                        topic: partition.topic.clone(),
                        partition: partition.partition,
                        offset: message.offset,
                        key: message.key,
                        payload: message.payload,
                        content_type: message.content_type,
                        code: reason.code(),
                        message: reason.to_string(),
                    });
                }
            }
        }
    }

    pub(super) fn range_of(&mut self, partition: &Partition, from: i64) -> usize {
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
    /// Takes one message into the pending batch.
    pub(super) fn take(&mut self, message: &BorrowedMessage<'_>) {
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
        let placed = message.headers().is_some_and(|headers| {
            headers
                .iter()
                .any(|header| header.key.eq_ignore_ascii_case(placed::HEADER_PLACED))
        });
        let batch = &mut self.pending;
        batch.started.get_or_insert_with(Instant::now);
        let range = batch.range_of(&partition, from);
        batch.ranges[range].to = offset + 1;
        batch.counts[range] += 1;
        self.chains.insert(partition, offset + 1);
        batch.undecoded.push(Undecoded {
            range: u32::try_from(range).unwrap_or(u32::MAX),
            offset,
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            content_type: content_type.map(<[u8]>::to_vec),
            placed,
        });
    }

    /// After each poll: hand the pending batch over when full or old enough, take answers,
    /// retry what is stalled, and end pauses that are due.
    pub(super) fn step(&mut self, consumer: &BaseConsumer<Context>) {
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
    pub(super) fn drain(&mut self, consumer: &BaseConsumer<Context>) {
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
    pub(super) fn hand_over(&mut self, consumer: &BaseConsumer<Context>, mut batch: Batch) {
        if batch.ranges.is_empty() {
            return;
        }
        batch.decode(&self.parser, self.placement);
        if !batch.dead_letters.is_empty() {
            let sent = self.abortable(self.dead_letters.send_all(&batch.dead_letters));
            if matches!(sent, Some(Err(_))) {
                telemetry::record_dead_letter_failure();
            }
            if !self.written(
                consumer,
                &batch,
                sent,
                "cannot write to the dead-letter topic",
            ) {
                return;
            }
            for letter in &batch.dead_letters {
                telemetry::record_dead_letter(letter.code);
            }
        }
        if !batch.moves.is_empty() {
            let sent = self.abortable(placed::send_all(self.dead_letters.producer(), &batch.moves));
            if !self.written(
                consumer,
                &batch,
                sent,
                "cannot move messages to their learner's partition",
            ) {
                return;
            }
            telemetry::record_kafka_moved(batch.moves.len() as u64);
            // Moved: a retry of this batch must not move them again.
            batch.moves.clear();
        }
        let kafka = KafkaBatch {
            ranges: batch.ranges.clone(),
            sources: batch.sources.clone(),
        };
        // The dead letters are written: a retry of this batch must not write them again.
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

    /// Whether what a batch had to write to Kafka before it is counted (dead letters, moved
    /// messages) was written. If not, the batch is read again after a pause; past the shutdown
    /// grace (`sent` is `None`) it is left to be read again after the restart.
    fn written(
        &mut self,
        consumer: &BaseConsumer<Context>,
        batch: &Batch,
        sent: Option<Result<(), rdkafka::error::KafkaError>>,
        what: &str,
    ) -> bool {
        match sent {
            Some(Ok(())) => true,
            None => {
                self.stopped = true;
                false
            }
            Some(Err(error)) => {
                tracing::warn!(
                    error = %telemetry::chain(&error),
                    "{what}; pausing and reading the batch again"
                );
                self.rewind(consumer, &batch.ranges);
                self.pause(consumer, DEAD_LETTER, FAILURE_PAUSE);
                false
            }
        }
    }

    /// Takes the answers that came; with `wait`, waits for all of them.
    pub(super) fn settle(&mut self, consumer: &BaseConsumer<Context>, wait: bool) {
        while !self.in_flight.is_empty() {
            if !self.settle_one(consumer, wait) {
                return;
            }
        }
    }

    /// Takes the oldest batch's answer if it came (or waits for it); says whether it did.
    pub(super) fn settle_one(&mut self, consumer: &BaseConsumer<Context>, wait: bool) -> bool {
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
    pub(super) fn wait_for(&self, answer: Answer) -> Result<Outcomes, Refusal> {
        self.abortable(answer)
            .and_then(Result::ok)
            .unwrap_or(Err(Refusal::ShuttingDown))
    }

    /// Records a counted batch: every event of it was accepted or a duplicate.
    pub(super) fn counted(&mut self, batch: &Batch, outcomes: Outcomes) {
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
}
