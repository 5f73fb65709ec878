//! The rebalance callbacks, called by librdkafka from inside `poll` on the consumer thread:
//! assign (the writer answers each partition's position, and the first assignment settles the
//! instance) and revoke (what was read is counted first, then the campaigns the revoked
//! partitions alone fed are released, but not when closing at shutdown).

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{Context, Flow};
use crate::pipeline::sources::Partition;
use crate::telemetry;

impl Flow {
    pub(super) fn assign(&mut self, consumer: &BaseConsumer<Context>, list: &TopicPartitionList) {
        let partitions = partitions_of(list);
        if let Some(shards) = self.placement
            && let Some(beyond) = partitions.iter().find(|partition| {
                usize::try_from(partition.partition).map_or(true, |p| p >= shards)
            })
        {
            // The topic grew: its partitions are no longer the shards the data dir holds.
            tracing::error!(
                partition = ?beyond,
                shards,
                "a Kafka partition past the shards was assigned (partitions were added to the                  topic): suivi stops; start it on an empty data_dir to count with the new                  partition count"
            );
            self.stopped = true;
            return;
        }
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
                tracing::error!(error = %telemetry::chain(&error), ?partition, "cannot set a partition's start");
            }
            self.chains.insert(partition.clone(), position);
        }
        // A pause covers the newly assigned partitions too.
        if self.paused.is_some()
            && let Err(error) = consumer.pause(list)
        {
            tracing::warn!(error = %telemetry::chain(&error), "cannot pause the new partitions");
        }
        telemetry::record_kafka_rebalance("assign", self.chains.len());
        tracing::info!(partitions = ?partitions, "Kafka partitions assigned");
    }

    pub(super) fn revoke(&mut self, consumer: &BaseConsumer<Context>, list: &TopicPartitionList) {
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

pub(super) fn partitions_of(list: &TopicPartitionList) -> Vec<Partition> {
    list.elements()
        .iter()
        .map(|element| Partition {
            topic: element.topic().to_owned(),
            partition: element.partition(),
        })
        .collect()
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Called from inside `poll` on the consumer thread, while `run` holds no guard; held
        // across `block_on` (drain, assign, release): safe, see the parent module's doc.
        let mut flow = self.flow.lock();
        match rebalance {
            Rebalance::Assign(list) => flow.assign(consumer, list),
            Rebalance::Revoke(list) => flow.revoke(consumer, list),
            Rebalance::Error(error) => {
                tracing::error!(error = %telemetry::chain(error), "Kafka rebalance failed");
            }
        }
    }
}
