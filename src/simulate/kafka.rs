//! `suivi simulate --kafka`: the simulated programme produced into a Kafka topic instead of sent
//! over gRPC, one event per message, keyed by learner with Kafka's default partitioner
//! (murmur2, product.md §6: a learner's events share a partition, which is the shard that
//! counts them with `forward_to_kafka`; a click by its visitor, as `Placement` places it), as
//! JSON with the HTTP field names or, with `--protobuf`, as `LearnerEvent` with the content type
//! `application/x-protobuf`. Every message is acknowledged by the brokers (acks=all) before it
//! returns.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::Simulation;
use crate::proto::{self, LearnerEvent};

/// Where and how to produce a simulation.
#[derive(Debug, Clone)]
pub struct ProduceSettings {
    pub brokers: String,
    pub topic: String,
    pub protobuf: bool,
}

/// What was produced.
#[derive(Debug, Clone, Copy)]
pub struct ProduceReport {
    pub events: u64,
    pub elapsed: Duration,
}

/// Messages awaiting their acknowledgement at once, at most.
const IN_FLIGHT: usize = 50_000;

/// Produces every event of `simulation` to `settings.topic` and waits for every acknowledgement.
pub async fn produce(
    simulation: &Simulation,
    settings: &ProduceSettings,
) -> anyhow::Result<ProduceReport> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "suivi-simulate")
        .set("acks", "all")
        // The Java client's partitioner, which suivi's placement follows.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "120000")
        .create()
        .context("cannot create the Kafka producer")?;
    let started = Instant::now();
    let events = simulation
        .events()
        .map(|event| message(&event, settings.protobuf));
    let mut acknowledged = futures::stream::iter(events)
        .map(|(key, payload)| {
            let producer = &producer;
            let topic = settings.topic.as_str();
            let protobuf = settings.protobuf;
            async move {
                let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic)
                    .key(key.as_str())
                    .payload(payload.as_slice());
                if protobuf {
                    record = record.headers(OwnedHeaders::new().insert(Header {
                        key: "content-type",
                        value: Some("application/x-protobuf"),
                    }));
                }
                producer
                    .send(record, Duration::from_secs(60))
                    .await
                    .map_err(|(error, _message)| error)
            }
        })
        .buffer_unordered(IN_FLIGHT);
    let mut produced = 0u64;
    let mut last_report = Instant::now();
    while let Some(delivery) = acknowledged.next().await {
        delivery.with_context(|| format!("cannot produce to {}", settings.topic))?;
        produced += 1;
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!("produced {produced} events");
        }
    }
    Ok(ProduceReport {
        events: produced,
        elapsed: started.elapsed(),
    })
}

/// One event's key and payload: the key is what suivi places it by (`event::Placement`): the
/// visitor of a click that has one, else the learner, else the event id.
pub fn message(event: &LearnerEvent, protobuf: bool) -> (String, Vec<u8>) {
    let click = event.kind == proto::EventKind::LinkClicked as i32;
    let key = if click && !event.visitor_id.is_empty() {
        event.visitor_id.clone()
    } else if !event.learner_id.is_empty() {
        event.learner_id.clone()
    } else {
        event.event_id.clone()
    };
    if protobuf {
        return (key, event.encode_to_vec());
    }
    (key, json(event).to_string().into_bytes())
}

/// The event as JSON with the HTTP field names.
pub(super) fn json(event: &LearnerEvent) -> serde_json::Value {
    let kind = match proto::EventKind::try_from(event.kind) {
        Ok(proto::EventKind::LinkClicked) => "link_clicked",
        Ok(proto::EventKind::Enrolled) => "enrolled",
        Ok(proto::EventKind::CourseStarted) => "course_started",
        Ok(proto::EventKind::ChapterCompleted) => "chapter_completed",
        Ok(proto::EventKind::Certified) => "certified",
        Ok(proto::EventKind::Unspecified) | Err(_) => "",
    };
    let occurred_at = event
        .occurred_at
        .as_ref()
        .and_then(|at| {
            chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap_or(0))
        })
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let mut object = serde_json::json!({
        "event_id": event.event_id,
        "kind": kind,
        "campaign": event.campaign,
        "source": event.source,
        "occurred_at": occurred_at,
    });
    if !event.learner_id.is_empty() {
        object["learner_id"] = event.learner_id.clone().into();
    }
    if !event.visitor_id.is_empty() {
        object["visitor_id"] = event.visitor_id.clone().into();
    }
    if event.chapter != 0 {
        object["chapter"] = event.chapter.into();
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventParser, JsonEvent, Placement, RawEvent};

    #[test]
    fn the_json_message_and_the_protobuf_message_parse_to_the_same_event() {
        let registry = crate::registry::Registry::load(None).expect("the embedded registry");
        let simulation = Simulation::new(&registry, 3, 0.001, 12);
        let parser = EventParser::new(12, [1; 32]);
        let now = chrono::Utc::now();
        for event in simulation.events().take(500) {
            let (key, payload) = message(&event, false);
            let text = String::from_utf8(payload).expect("UTF-8 JSON");
            let json = JsonEvent::decode(&text).expect("a JSON event");
            let from_json = parser.parse(&json.raw(), now).expect("a valid event");
            let from_protobuf = parser
                .parse(&RawEvent::from(&event), now)
                .expect("a valid event");
            assert_eq!(from_json, from_protobuf, "{text}");
            // Keyed as suivi places it.
            let raw = RawEvent::from(&event);
            assert_eq!(key, Placement::key(&from_protobuf, &raw), "{text}");
        }
    }
}
