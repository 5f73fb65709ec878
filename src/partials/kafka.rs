//! The partials topic: [`publish`] sends the outbox, [`read`] applies every shard's records to
//! the figures and looks at the ends of the shards' partitions; [`prepare`] reads the topics'
//! partition count (the number of shards) and creates the partials topic, compacted, when it
//! does not exist yet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::Utc;
use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

use super::{HEARTBEAT, Outbox, PUBLISH_INTERVAL, Record, ShardBoard};
use crate::figures::Figures;
use crate::telemetry;

/// How long a metadata or watermark request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the ends of the shards' partitions are read, for the lag.
const LOOK_INTERVAL: Duration = Duration::from_secs(1);

/// The number of partitions of `topics` (they must all have the same): the number of shards.
/// Creates `partials_topic`, compacted, if it does not exist. Blocks: call before serving.
pub fn prepare(
    config: &ClientConfig,
    topics: &[String],
    partials_topic: &str,
) -> anyhow::Result<usize> {
    let consumer: BaseConsumer = config
        .create()
        .context("cannot create a Kafka client to read the topics' partitions")?;
    let mut counts = Vec::new();
    for topic in topics {
        // A topic created a moment ago may show no partitions yet: asked again for a while.
        let asked = Instant::now();
        let partitions = loop {
            let metadata = consumer
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .with_context(|| {
                    format!("cannot read the partitions of the Kafka topic {topic}")
                })?;
            let partitions = metadata
                .topics()
                .iter()
                .find(|found| found.name() == topic)
                .map_or(0, |found| found.partitions().len());
            if partitions > 0 || asked.elapsed() >= METADATA_TIMEOUT {
                break partitions;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if partitions == 0 {
            bail!(
                "the Kafka topic {topic} has no partitions (does it exist?): with \
                 forward_to_kafka its partitions are the shards, so create it first"
            );
        }
        counts.push((topic.clone(), partitions));
    }
    let shards = counts.first().map_or(0, |(_, partitions)| *partitions);
    if let Some((topic, partitions)) = counts.iter().find(|(_, partitions)| *partitions != shards) {
        bail!(
            "the Kafka topic {topic} has {partitions} partitions and {} has {shards}: with \
             forward_to_kafka every topic's partitions are the same shards",
            counts[0].0
        );
    }
    if shards > crate::config::MAX_SHARDS {
        bail!(
            "the Kafka topics have {shards} partitions: at most {} shards",
            crate::config::MAX_SHARDS
        );
    }
    let exists = consumer
        .fetch_metadata(Some(partials_topic), METADATA_TIMEOUT)
        .is_ok_and(|metadata| {
            metadata
                .topics()
                .iter()
                .any(|found| found.name() == partials_topic && !found.partitions().is_empty())
        });
    if !exists {
        create_partials_topic(config, partials_topic)?;
    }
    Ok(shards)
}

/// Creates the compacted partials topic (one partition) unless it exists.
fn create_partials_topic(config: &ClientConfig, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .context("cannot create a Kafka admin client")?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime to create the partials topic")?;
    let results = runtime
        .block_on(admin.create_topics([&new], &options))
        .with_context(|| format!("cannot create the Kafka topic {topic}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => bail!("cannot create the Kafka topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Sends the outbox to `topic` every [`PUBLISH_INTERVAL`] until `stop`, then once more.
/// Records that could not be sent are put back and sent with the next ones.
pub async fn publish(
    producer: FutureProducer,
    topic: String,
    outbox: Arc<Outbox>,
    figures: Arc<Figures>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(PUBLISH_INTERVAL);
    let mut heartbeat = Instant::now();
    loop {
        let stopping = tokio::select! {
            _ = ticks.tick() => false,
            () = stop.cancelled() => true,
        };
        let beat = stopping || heartbeat.elapsed() >= HEARTBEAT;
        if beat {
            heartbeat = Instant::now();
        }
        let records: Vec<Record> = outbox
            .take(beat, Utc::now())
            .into_iter()
            // A shard caught up by a new owner has older partials than those shown: sending
            // them would only replace, in the compacted topic, the later ones of the same key.
            .filter(|record| !record.superseded(&figures))
            .collect();
        if !records.is_empty() && !send(&producer, &topic, &records).await {
            telemetry::record_partials_failure();
            outbox.put_back(records);
        }
        if stopping {
            return;
        }
    }
}

/// Sends every record and waits for Kafka's acknowledgements; says whether all were taken.
async fn send(producer: &FutureProducer, topic: &str, records: &[Record]) -> bool {
    let encoded: Vec<(String, Vec<u8>)> = records
        .iter()
        .filter_map(|record| Some((record.key(), serde_json::to_vec(record).ok()?)))
        .collect();
    let deliveries = encoded.iter().map(|(key, payload)| {
        producer.send(
            FutureRecord::to(topic)
                .key(key.as_str())
                .payload(payload.as_slice()),
            Duration::from_secs(10),
        )
    });
    let mut sent = true;
    for delivery in join_all(deliveries).await {
        if let Err((error, _)) = delivery {
            tracing::warn!(error = %telemetry::chain(&error), "cannot publish partial counters; retrying");
            sent = false;
        }
    }
    sent
}

/// What [`read`] needs.
pub struct Reader {
    pub consumer: StreamConsumer,
    /// Reads the ends of the events topics' partitions.
    pub watermarks: Arc<BaseConsumer>,
    pub topic: String,
    pub events_topics: Vec<String>,
    pub figures: Arc<Figures>,
    pub board: Arc<ShardBoard>,
    pub outbox: Arc<Outbox>,
    /// Cancelled once everything the topic held at start has been read.
    pub caught_up: CancellationToken,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("topic", &self.topic)
            .field("events_topics", &self.events_topics)
            .finish_non_exhaustive()
    }
}

/// Reads the partials topic from its beginning until `stop`, showing every record in the
/// figures; looks at the ends of the shards' partitions every [`LOOK_INTERVAL`].
pub async fn read(reader: Reader, stop: CancellationToken) -> anyhow::Result<()> {
    let Reader {
        consumer,
        watermarks,
        topic,
        events_topics,
        figures,
        board,
        outbox,
        caught_up,
    } = reader;
    let (partitions, mut ends) = {
        let (consumer, topic) = (watermarks.clone(), topic.clone());
        tokio::task::spawn_blocking(move || partials_ends(&consumer, &topic))
            .await
            .context("the partials topic's ends")??
    };
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(&topic, partition, Offset::Beginning)?;
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("cannot read the Kafka topic {topic}"))?;
    if ends.iter().all(|end| *end <= 0) {
        caught_up.cancel();
    }
    let mut looks = tokio::time::interval(LOOK_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = looks.tick() => {
                let (consumer, topics, shards) = (watermarks.clone(), events_topics.clone(), outbox.owned().len());
                let shard_ends = tokio::task::spawn_blocking(move || shard_ends(&consumer, &topics, shards))
                    .await
                    .unwrap_or_default();
                board.look(&shard_ends, &outbox.owned(), Utc::now());
            }
            received = consumer.recv() => {
                let message = match received {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!(error = %telemetry::chain(&error), "cannot read the partials topic");
                        continue;
                    }
                };
                if let Some(end) = usize::try_from(message.partition()).ok().and_then(|p| ends.get_mut(p))
                    && message.offset() + 1 >= *end
                {
                    *end = 0;
                    if ends.iter().all(|end| *end <= 0) {
                        caught_up.cancel();
                    }
                }
                let Some(record) = message
                    .payload()
                    .and_then(|payload| serde_json::from_slice::<Record>(payload).ok())
                else {
                    tracing::warn!(offset = message.offset(), "a record of the partials topic is not one suivi wrote; ignored");
                    continue;
                };
                if record.campaign.is_none() {
                    board.head(&record);
                }
                record.apply(&figures, Utc::now());
            }
        }
    }
}

/// The partitions of the partials topic, and the end of each.
fn partials_ends(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<(i32, Vec<i64>)> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .with_context(|| format!("cannot read the partitions of the Kafka topic {topic}"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|found| found.name() == topic)
        .map_or(0, |found| found.partitions().len());
    let partitions = i32::try_from(partitions).unwrap_or(0);
    let mut ends = Vec::new();
    for partition in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .with_context(|| format!("cannot read the end of {topic} partition {partition}"))?;
        ends.push(high);
    }
    Ok((partitions, ends))
}

/// The end of each shard's partitions: the sum of the ends of that partition in every topic;
/// `None` where it could not be read.
fn shard_ends(consumer: &BaseConsumer, topics: &[String], shards: usize) -> Vec<Option<i64>> {
    (0..shards)
        .map(|shard| {
            let partition = i32::try_from(shard).ok()?;
            let mut end = 0;
            for topic in topics {
                let (_, high) = consumer
                    .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
                    .ok()?;
                end += high;
            }
            Some(end)
        })
        .collect()
}
