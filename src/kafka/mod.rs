//! The Kafka source: a consumer in a group (`suivi` by default) that reads learner events from
//! its topics, one event per message, and feeds them to the same pipeline as gRPC and HTTP.
//!
//! - **Exact.** Partition positions live in suivi's own journal and checkpoints, with the state
//!   they produced; on assignment each partition starts from there (from its beginning when this
//!   instance has never counted it). Kafka's committed offsets are written only after a
//!   checkpoint, for lag monitoring, never read back. Messages read again after a crash change
//!   no counter (deduplication by event id), and a batch the pipeline refuses is read again, never
//!   skipped (`sources`).
//! - **Dead letters.** A message that cannot be decoded or fails validation goes to the
//!   dead-letter topic (`<topic>.dlq`) with headers saying why (`dead_letter`), before the batch
//!   it belongs to is counted; if that topic cannot be written, consumption pauses and retries.
//! - **Rebalances.** Cooperative-sticky assignment. On revoke, what was read from the revoked
//!   partitions is made durable, then the campaigns they alone fed are released from this
//!   instance and checkpointed, before the partitions are let go: the next owner rebuilds them
//!   from the partitions, so two instances never both count a campaign.
//! - **Backpressure.** A bounded number of batches in flight; when the pipeline is full, the
//!   partitions are paused rather than buffered.
//!
//! The consumer runs on its own thread (`consumer`): librdkafka's poll, rebalance callbacks and
//! the blocking hand-over to the writer all happen there.

mod consumer;
pub mod dead_letter;
pub mod decode;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::Context as _;
use rdkafka::ClientConfig;

use crate::config::{Secret, Settings};
use crate::event::EventParser;
use crate::pipeline::Ingest;

/// What the Kafka source needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group: String,
    /// The dead-letter topic, `{topic}` standing for the message's topic.
    pub dead_letter_topic: String,
    pub batch_events: usize,
    /// More librdkafka properties (security and the like), applied last.
    pub options: BTreeMap<String, Secret>,
}

impl KafkaSettings {
    /// The Kafka settings of `settings`, when Kafka is on.
    pub fn from_settings(settings: &Settings) -> Option<KafkaSettings> {
        let brokers = settings.kafka_brokers.clone()?;
        Some(KafkaSettings {
            brokers,
            topics: settings.kafka_topics(),
            group: settings.kafka_group.trim().to_owned(),
            dead_letter_topic: settings.kafka_dead_letter_topic.trim().to_owned(),
            batch_events: settings.kafka_batch_events,
            options: settings.kafka_options.clone(),
        })
    }

    /// The client configuration shared by the consumer and the dead-letter producer.
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "suivi");
        for (key, value) in &self.options {
            config.set(key, value.expose());
        }
        config
    }
}

/// The running Kafka source.
#[derive(Debug)]
pub struct Kafka {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Kafka {
    /// Subscribes to the topics and starts consuming on a thread of its own. Call once the state
    /// is recovered: assignments ask the writer for the partitions' positions.
    pub fn start(
        settings: KafkaSettings,
        ingest: Ingest,
        parser: Arc<EventParser>,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Kafka> {
        crate::telemetry::register_kafka();
        let client = settings.client_config();
        let dead_letters = dead_letter::DeadLetters::new(&client, &settings.dead_letter_topic)
            .context("cannot create the Kafka dead-letter producer")?;
        let consumer = consumer::create(&settings, client, ingest, parser, runtime, dead_letters)
            .context("cannot create the Kafka consumer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("suivi-kafka".to_owned())
            .spawn(move || consumer::run(&consumer, &stopping))
            .context("cannot start the Kafka consumer thread")?;
        tracing::info!(
            brokers = %settings.brokers,
            topics = ?settings.topics,
            group = %settings.group,
            "consuming from Kafka"
        );
        Ok(Kafka { stop, thread })
    }

    /// Stops consuming: what was read is counted and checkpointed, the checkpoint's offsets are
    /// committed to the group, and the consumer leaves it.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        if tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_or(true, |joined| joined.is_err())
        {
            tracing::error!("the Kafka consumer thread panicked");
        }
    }
}
