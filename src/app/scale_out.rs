//! Scale-out over Kafka (`forward_to_kafka`, product.md §6), wired: the topics' partitions
//! are the shards; the front forwards what gRPC and HTTP take to the topic; the writers'
//! partials go out through the [`Outbox`], and every shard's come back from the partials
//! topic into the figures.

use std::sync::Arc;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, StreamConsumer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::figures::Figures;
use crate::kafka::KafkaSettings;
use crate::kafka::placed::{self, Forwarder};
use crate::partials::kafka::{self as partials_kafka, Reader};
use crate::partials::{Outbox, ShardBoard};

/// What scale-out adds to a running suivi.
pub(super) struct ScaleOut {
    pub shards: usize,
    pub outbox: Arc<Outbox>,
    pub forwarder: Forwarder,
    pub board: Arc<ShardBoard>,
    kafka: KafkaSettings,
    partials_topic: String,
    /// Cancelled once the partials the topic held at start are read.
    caught_up: CancellationToken,
}

impl ScaleOut {
    /// With `forward_to_kafka`: reads the number of shards from the topics and creates the
    /// partials topic if needed (a broker must answer). `None` otherwise.
    pub async fn prepare(settings: &Settings) -> anyhow::Result<Option<ScaleOut>> {
        if !settings.forward_to_kafka {
            return Ok(None);
        }
        let kafka = KafkaSettings::from_settings(settings)
            .context("forward_to_kafka needs kafka_brokers")?;
        let partials_topic = settings.kafka_partials_topic();
        let shards = {
            let (config, topics, partials) = (
                kafka.client_config(),
                kafka.topics.clone(),
                partials_topic.clone(),
            );
            tokio::task::spawn_blocking(move || {
                partials_kafka::prepare(&config, &topics, &partials)
            })
            .await
            .context("the Kafka topics' partitions")??
        };
        if settings.shards != 0 && settings.shards != shards {
            anyhow::bail!(
                "shards = {} but the Kafka topics have {shards} partitions: with forward_to_kafka \
                 the partitions are the shards; set shards = 0",
                settings.shards
            );
        }
        let instance = if kafka.instance_id.is_empty() {
            format!("suivi-{}", std::process::id())
        } else {
            kafka.instance_id.clone()
        };
        let first = kafka.topics.first().cloned().unwrap_or_default();
        let forwarder = Forwarder::new(&kafka.client_config(), first, shards)
            .context("cannot create the Kafka producer ingest is forwarded by")?;
        crate::telemetry::register_partials(shards);
        tracing::info!(shards, partials = %partials_topic, instance = %instance, "scale-out over Kafka: each partition is a shard");
        Ok(Some(ScaleOut {
            shards,
            outbox: Arc::new(Outbox::new(shards, instance)),
            forwarder,
            board: Arc::new(ShardBoard::new(shards)),
            kafka,
            partials_topic,
            caught_up: CancellationToken::new(),
        }))
    }

    /// Starts publishing this instance's partials and reading every shard's, until `stop`.
    pub fn start(
        &self,
        figures: &Arc<Figures>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Vec<JoinHandle<()>>> {
        let config = self.kafka.client_config();
        let producer = placed::producer(&config)
            .context("cannot create the producer of the partials topic")?;
        let mut reading = config.clone();
        reading
            .set("group.id", format!("{}-partials", self.kafka.group))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let consumer: StreamConsumer = reading
            .create()
            .context("cannot create the reader of the partials topic")?;
        let watermarks: BaseConsumer = config
            .create()
            .context("cannot create a Kafka client to read the partitions' ends")?;
        let publisher = tokio::spawn(partials_kafka::publish(
            producer,
            self.partials_topic.clone(),
            self.outbox.clone(),
            figures.clone(),
            stop.clone(),
        ));
        let reader = Reader {
            consumer,
            watermarks: Arc::new(watermarks),
            topic: self.partials_topic.clone(),
            events_topics: self.kafka.topics.clone(),
            figures: figures.clone(),
            board: self.board.clone(),
            outbox: self.outbox.clone(),
            caught_up: self.caught_up.clone(),
        };
        let stop = stop.clone();
        let reader = tokio::spawn(async move {
            if let Err(error) = partials_kafka::read(reader, stop).await {
                tracing::error!(error = %crate::telemetry::chain(error.as_ref()), "cannot read the partials topic");
            }
        });
        Ok(vec![publisher, reader])
    }

    /// A token cancelled once the partials the topic held at start are read.
    pub fn caught_up(&self) -> CancellationToken {
        self.caught_up.clone()
    }
}
