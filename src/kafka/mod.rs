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
//! - **Settled before served.** [`Kafka::settled`] resolves once the first assignment is known
//!   to the writer and what this instance held before and no longer owns is released; the
//!   service is not ready, and writes no snapshot, until then.
//! - **Bounded shutdown.** [`Kafka::stop`] waits for the consumer at most the shutdown grace;
//!   every wait and retry of the consumer gives up at stop or, past the grace, at once (what
//!   was read and not counted is read again after the restart).
//!
//! The consumer runs on its own thread (`consumer`): librdkafka's poll, rebalance callbacks and
//! the blocking hand-over to the writer all happen there. Its end is signalled
//! ([`Kafka::ended`]) so the service can treat it as fatal.

mod consumer;
pub mod dead_letter;
pub mod decode;
pub mod placed;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

use crate::config::{Secret, Settings};
use crate::event::EventParser;
use crate::pipeline::Queue;

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
    /// The consumer's `group.instance.id` (static membership); empty: none.
    pub instance_id: String,
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
            instance_id: settings.kafka_instance_id.trim().to_owned(),
        })
    }

    /// The client configuration shared by the consumer and the producers.
    pub fn client_config(&self) -> ClientConfig {
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
    signals: Signals,
    thread: JoinHandle<()>,
}

/// What the service and the consumer thread tell each other.
#[derive(Debug, Clone, Default)]
struct Signals {
    /// Set by [`Kafka::stop`]: stop consuming, count what was read, checkpoint, commit, leave.
    stop: CancellationToken,
    /// Set when the shutdown grace is over: give up any wait (a dead letter that cannot be
    /// written, a broker that does not answer) and end; what was not counted is read again
    /// after the restart.
    abort: CancellationToken,
    /// Set once the first assignment is settled: partitions held from before and not assigned
    /// now are released.
    settled: CancellationToken,
    /// Set when the consumer thread ends, however it ends (a panic included).
    ended: CancellationToken,
}

/// Cancels `ended` when dropped: at the end of the consumer thread, unwinding or not.
struct EndGuard(CancellationToken);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Kafka {
    /// Subscribes to the topics and starts consuming on a thread of its own. Call once the state
    /// is recovered: assignments ask the writer for the partitions' positions. Cancelling `stop`
    /// stops the consumer as [`Kafka::stop`] does, without waiting for it.
    pub fn start(
        settings: KafkaSettings,
        queue: Queue,
        parser: Arc<EventParser>,
        runtime: tokio::runtime::Handle,
        stop: CancellationToken,
    ) -> anyhow::Result<Kafka> {
        crate::telemetry::register_kafka();
        let client = settings.client_config();
        let dead_letters = dead_letter::DeadLetters::new(&client, &settings.dead_letter_topic)
            .context("cannot create the Kafka dead-letter producer")?;
        let signals = Signals {
            stop,
            ..Signals::default()
        };
        let consumer = consumer::create(
            &settings,
            client,
            queue,
            parser,
            runtime,
            dead_letters,
            signals.clone(),
        )
        .context("cannot create the Kafka consumer")?;
        let thread_signals = signals.clone();
        let thread = std::thread::Builder::new()
            .name("suivi-kafka".to_owned())
            .spawn(move || {
                // Declared first, dropped last: the thread counts as ended once the consumer
                // is closed too (closing leaves the group and may wait for the broker).
                let _ended = EndGuard(thread_signals.ended.clone());
                let consumer = consumer;
                consumer::run(&consumer, &thread_signals.stop);
            })
            .context("cannot start the Kafka consumer thread")?;
        tracing::info!(
            brokers = %settings.brokers,
            topics = ?settings.topics,
            group = %settings.group,
            "consuming from Kafka"
        );
        Ok(Kafka { signals, thread })
    }

    /// Resolves once the first partition assignment is settled: the writer knows the partitions
    /// assigned here and has released those it held from before and that went elsewhere. Never
    /// resolves while no broker answers.
    pub async fn settled(&self) {
        self.signals.settled.cancelled().await;
    }

    /// Resolves when the consumer thread has ended. While the service runs that is fatal: no
    /// more events are read.
    pub async fn ended(&self) {
        self.signals.ended.cancelled().await;
    }

    /// Stops consuming: what was read is counted and checkpointed, the checkpoint's offsets are
    /// committed to the group, and the consumer leaves it. Waits for that at most `grace`; then
    /// tells the thread to give up whatever it waits for, logs and counts it, and returns
    /// without it (what it had read and not counted is read again after the restart).
    pub async fn stop(self, grace: Duration) {
        self.signals.stop.cancel();
        let ended = self.signals.ended.clone();
        if tokio::time::timeout(grace, ended.cancelled())
            .await
            .is_err()
        {
            self.signals.abort.cancel();
            crate::telemetry::record_kafka_stop_timeout();
            tracing::error!(
                grace = ?grace,
                "the Kafka consumer did not stop within the shutdown grace; going on without it"
            );
            return;
        }
        // The thread has ended (its guard ran last): joining it does not block for long.
        let thread = self.thread;
        if tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_or(true, |joined| joined.is_err())
        {
            tracing::error!("the Kafka consumer thread panicked");
        }
    }
}
