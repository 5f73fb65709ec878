//! Messages suivi itself puts in the partition of their learner, when the partitions are the
//! shards (`forward_to_kafka`, product.md §6): what the front produces for gRPC, HTTP, xAPI and
//! Caliper ingest ([`Forwarder`]), and a message another producer put in the wrong partition,
//! which the consumer moves to the right one before counting the rest of its batch. Each is
//! marked with the header `suivi-placed`: its reader counts the part of it that belongs to its
//! partition and leaves the rest, which suivi wrote to the other partition itself.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::event::{Event, Placement, RawEvent};

/// Header: the message was put in its partition by suivi.
pub const HEADER_PLACED: &str = "suivi-placed";
/// The content type of the protobuf `LearnerEvent`s suivi produces.
const PROTOBUF: &str = "application/x-protobuf";
/// How long a delivery may take before it fails (the sender is told to retry).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// One message to put in a given partition.
#[derive(Debug, Clone)]
pub struct Placed {
    pub topic: String,
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub content_type: Option<Vec<u8>>,
}

/// A producer that waits for every in-sync replica. A message a retry writes twice is a
/// duplicate where it is counted (deduplication by source and event id), so the producer needs
/// no idempotence, which not every Kafka-protocol broker offers.
pub fn producer(config: &ClientConfig) -> Result<FutureProducer, KafkaError> {
    let mut config = config.clone();
    config
        .set("acks", "all")
        .set("message.timeout.ms", "10000")
        .set("linger.ms", "2");
    config.create()
}

/// Writes every message, marked as placed, and waits until Kafka acknowledged them all; the
/// first error if not.
pub async fn send_all(producer: &FutureProducer, messages: &[Placed]) -> Result<(), KafkaError> {
    let deliveries = messages.iter().map(|message| {
        let mut headers = OwnedHeaders::new().insert(Header {
            key: HEADER_PLACED,
            value: Some("1"),
        });
        if let Some(content_type) = &message.content_type {
            headers = headers.insert(Header {
                key: "content-type",
                value: Some(content_type),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&message.topic)
            .partition(message.partition)
            .headers(headers);
        if let Some(key) = &message.key {
            record = record.key(key.as_slice());
        }
        if let Some(payload) = &message.payload {
            record = record.payload(payload.as_slice());
        }
        producer.send(record, DELIVERY_TIMEOUT)
    });
    for delivery in join_all(deliveries).await {
        delivery.map_err(|(error, _message)| error)?;
    }
    Ok(())
}

/// The front of scale-out: events taken over gRPC, HTTP, xAPI or Caliper go into the topic,
/// each to the partition of its learner, as protobuf `LearnerEvent`s.
#[derive(Clone)]
pub struct Forwarder {
    producer: Arc<FutureProducer>,
    topic: String,
    partitions: usize,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A forwarder into `topic`, which has `partitions` partitions.
    pub fn new(
        config: &ClientConfig,
        topic: String,
        partitions: usize,
    ) -> Result<Forwarder, KafkaError> {
        Ok(Forwarder {
            producer: Arc::new(producer(config)?),
            topic,
            partitions,
        })
    }

    /// Writes each valid event (`events[i]` parsed from `raw[i]`) to its partition (and a
    /// tagged click also to its learner's), and waits until Kafka acknowledged every one.
    pub async fn forward(&self, raw: &[RawEvent<'_>], events: &[Event]) -> Result<(), KafkaError> {
        let mut messages = Vec::with_capacity(events.len());
        for (raw, event) in raw.iter().zip(events) {
            // A parsed event's kind and time were read, so it has a protobuf form.
            let Some(wire) = raw.to_proto() else {
                continue;
            };
            let payload = wire.encode_to_vec();
            let key = Placement::key(event, raw).as_bytes().to_vec();
            for partition in Placement::of(event, raw, self.partitions).partitions() {
                messages.push(Placed {
                    topic: self.topic.clone(),
                    partition: i32::try_from(partition).unwrap_or(0),
                    key: Some(key.clone()),
                    payload: Some(payload.clone()),
                    content_type: Some(PROTOBUF.as_bytes().to_vec()),
                });
            }
        }
        send_all(&self.producer, &messages).await
    }
}
