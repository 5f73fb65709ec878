//! The dead-letter topic: a message that is not a valid event is written there, as it came (key,
//! payload, content type), with headers saying why and where it came from. A batch goes on only
//! once its dead letters are acknowledged by Kafka; if they cannot be written the consumer pauses
//! and reads the batch again, so nothing is dropped (a retry may write a dead letter twice: the
//! origin headers tell the copies apart).

use std::time::Duration;

use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Header: the rejection code (`invalid_event`, `missing_learner_id`, ...).
pub const HEADER_CODE: &str = "suivi-error-code";
/// Header: the rejection message, for a person.
pub const HEADER_MESSAGE: &str = "suivi-error-message";
/// Header: the topic the message was read from.
pub const HEADER_TOPIC: &str = "suivi-original-topic";
/// Header: the partition it was read from.
pub const HEADER_PARTITION: &str = "suivi-original-partition";
/// Header: its offset there.
pub const HEADER_OFFSET: &str = "suivi-original-offset";
/// Header: its content type, when it had one.
pub const HEADER_CONTENT_TYPE: &str = "content-type";

/// One message to dead-letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub content_type: Option<Vec<u8>>,
    pub code: &'static str,
    pub message: String,
}

/// The producer of dead letters.
pub struct DeadLetters {
    producer: FutureProducer,
    /// The dead-letter topic name, `{topic}` standing for the original topic.
    topic_template: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic_template", &self.topic_template)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// A producer with `config` (brokers and client settings) writing to `topic_template`.
    pub fn new(config: &ClientConfig, topic_template: &str) -> Result<DeadLetters, KafkaError> {
        let mut config = config.clone();
        config
            .set("acks", "all")
            // A delivery that cannot be made fails in this time, and the batch is retried.
            .set("message.timeout.ms", "10000")
            .set("linger.ms", "5");
        Ok(DeadLetters {
            producer: config.create()?,
            topic_template: topic_template.to_owned(),
        })
    }

    /// The producer, also used to move messages to their learner's partition.
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// The dead-letter topic of `topic`.
    pub fn topic_of(&self, topic: &str) -> String {
        self.topic_template.replace("{topic}", topic)
    }

    /// Writes every letter and waits until Kafka acknowledged them all; the first error if not.
    pub async fn send_all(&self, letters: &[DeadLetter]) -> Result<(), KafkaError> {
        let topics: Vec<String> = letters
            .iter()
            .map(|letter| self.topic_of(&letter.topic))
            .collect();
        let deliveries = letters.iter().zip(&topics).map(|(letter, topic)| {
            let partition = letter.partition.to_string();
            let offset = letter.offset.to_string();
            let mut headers = OwnedHeaders::new()
                .insert(Header {
                    key: HEADER_CODE,
                    value: Some(letter.code),
                })
                .insert(Header {
                    key: HEADER_MESSAGE,
                    value: Some(&letter.message),
                })
                .insert(Header {
                    key: HEADER_TOPIC,
                    value: Some(&letter.topic),
                })
                .insert(Header {
                    key: HEADER_PARTITION,
                    value: Some(&partition),
                })
                .insert(Header {
                    key: HEADER_OFFSET,
                    value: Some(&offset),
                });
            if let Some(content_type) = &letter.content_type {
                headers = headers.insert(Header {
                    key: HEADER_CONTENT_TYPE,
                    value: Some(content_type),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
            if let Some(key) = &letter.key {
                record = record.key(key.as_slice());
            }
            if let Some(payload) = &letter.payload {
                record = record.payload(payload.as_slice());
            }
            self.producer.send(record, Duration::from_secs(10))
        });
        for delivery in join_all(deliveries).await {
            delivery.map_err(|(error, _message)| error)?;
        }
        Ok(())
    }
}
