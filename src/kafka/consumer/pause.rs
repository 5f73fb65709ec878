//! Pauses and rewinds of the consumer thread: every assigned partition is paused when the
//! pipeline has no room (backpressure) or after the journal or the dead-letter topic failed,
//! and each pause's length is recorded by cause; a rewind seeks partitions back to the earliest
//! start of the batches that were refused, so their messages are read again.

use std::time::{Duration, Instant};

use hashbrown::HashMap;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::Offset;

use super::{Context, Flow};
use crate::pipeline::sources::{Partition, Range};
use crate::telemetry;

#[derive(Debug, Clone, Copy)]
pub(super) struct Pause {
    pub(super) cause: usize,
    pub(super) since: Instant,
    pub(super) until: Instant,
}

/// Pause causes, indexes into `telemetry::PAUSE_CAUSES`.
pub(super) const BACKPRESSURE: usize = 0;
pub(super) const STORAGE: usize = 1;
pub(super) const DEAD_LETTER: usize = 2;

impl Flow {
    /// Reads `ranges` again: each partition goes back to the earliest start among them, and the
    /// pending batch is dropped (its partitions go back to where it started too).
    pub(super) fn rewind(&mut self, consumer: &BaseConsumer<Context>, ranges: &[Range]) {
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
                tracing::error!(error = %telemetry::chain(&error), ?partition, start, "cannot seek a partition back");
            }
        }
    }

    /// Pauses every assigned partition for `cause`, at least for `least`.
    pub(super) fn pause(
        &mut self,
        consumer: &BaseConsumer<Context>,
        cause: usize,
        least: Duration,
    ) {
        let now = Instant::now();
        if self.paused.is_none() {
            if let Ok(assigned) = consumer.assignment()
                && let Err(error) = consumer.pause(&assigned)
            {
                tracing::warn!(error = %telemetry::chain(&error), "cannot pause the Kafka partitions");
            }
            self.paused = Some(Pause {
                cause,
                since: now,
                until: now + least,
            });
        }
    }

    /// Resumes consumption after a pause, and records how long it lasted.
    pub(super) fn resume(&mut self, consumer: &BaseConsumer<Context>) {
        let Some(pause) = self.paused.take() else {
            return;
        };
        if let Ok(assigned) = consumer.assignment()
            && let Err(error) = consumer.resume(&assigned)
        {
            tracing::warn!(error = %telemetry::chain(&error), "cannot resume the Kafka partitions");
        }
        self.paused_total[pause.cause] += pause.since.elapsed();
        telemetry::record_kafka_paused(
            telemetry::PAUSE_CAUSES[pause.cause],
            self.paused_total[pause.cause],
        );
    }
}

/// The earlier of two positions, the beginning (a negative logical offset) first.
pub(super) fn position_min(a: i64, b: i64) -> i64 {
    match (a < 0, b < 0) {
        (true, _) => a,
        (_, true) => b,
        _ => a.min(b),
    }
}
