//! Commits and lag: the checkpointed positions written to the consumer group (for lag tools
//! only, never read back), and each partition's lag read from librdkafka's statistics.

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::Context;
use crate::proto::storage::KafkaOffset;
use crate::telemetry;

/// Commits the checkpointed positions of the partitions assigned here.
pub(super) fn commit(consumer: &BaseConsumer<Context>, offsets: &[KafkaOffset], mode: CommitMode) {
    let assigned = match consumer.assignment() {
        Ok(assigned) => assigned,
        Err(error) => {
            tracing::debug!(error = %telemetry::chain(&error), "no assignment to commit");
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
        tracing::warn!(error = %telemetry::chain(&error), "cannot commit offsets to the consumer group");
    }
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
