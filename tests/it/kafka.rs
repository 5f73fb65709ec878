//! The Kafka source against a real Kafka-protocol broker: librdkafka's mock cluster, in this
//! test process, on ports of 127.0.0.1 it picks itself. A real rdkafka producer writes simulated
//! learner events (JSON and protobuf, keyed by campaign) and garbage; suivi consumes them, in
//! process or as the real binary. Every test checks suivi's counters against a reference suivi
//! that got the same events once over gRPC: each event counted once, whatever happened between.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message};
use serde_json::Value;
use suivi::config::{DEFAULT_CHAPTER_COUNT, Settings};
use suivi::proto;
use suivi::registry::Registry;
use suivi::simulate::kafka::message;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{
    Suivi, TestApp, enrolments, secret, spawn_app, spawn_app_with_faults, start_app_with, within,
};

/// The default topic, for the tests that run the `suivi` binary. Tests that run suivi in this
/// process use a topic of their own: the metrics are the process's, and the series of
/// `suivi_kafka_messages_total` are per topic.
const TOPIC: &str = "learner-events";
/// How long a test waits for suivi to have consumed what was produced.
pub(crate) const CONSUME_PATIENCE: Duration = Duration::from_secs(90);

pub(crate) type Cluster = MockCluster<'static, DefaultProducerContext>;

/// A mock cluster of `brokers` brokers with `topic` (`partitions` partitions) and its
/// dead-letter topic.
pub(crate) fn cluster(topic: &str, brokers: i32, partitions: i32) -> Cluster {
    let cluster = MockCluster::new(brokers).expect("the mock cluster starts");
    cluster
        .create_topic(topic, partitions, 1)
        .expect("the events topic");
    cluster
        .create_topic(&dead_letter_topic(topic), 1, 1)
        .expect("the dead-letter topic");
    cluster
}

fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

pub(crate) fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("a producer")
}

/// What a test produces: key, payload, and whether it is protobuf.
pub(crate) struct Produced {
    key: String,
    payload: Option<Vec<u8>>,
    protobuf: bool,
}

/// The simulated events as messages, every other one as protobuf.
pub(crate) fn messages(events: &[proto::LearnerEvent]) -> Vec<Produced> {
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let protobuf = index % 2 == 1;
            let (key, payload) = message(event, protobuf);
            Produced {
                key,
                payload: Some(payload),
                protobuf,
            }
        })
        .collect()
}

/// Messages that are not valid events, each with the rejection code suivi must give it.
fn garbage() -> Vec<(Produced, &'static str)> {
    let json = |text: &str| Produced {
        key: "gendarmerie".to_owned(),
        payload: Some(text.as_bytes().to_vec()),
        protobuf: false,
    };
    vec![
        (json("this is not JSON"), "invalid_event"),
        (
            Produced {
                key: "gendarmerie".to_owned(),
                payload: Some(vec![0xff, 0xff, 0xff, 0x01]),
                protobuf: true,
            },
            "invalid_event",
        ),
        (
            json(
                r#"{"event_id":"g3","kind":"enrolled","campaign":"gendarmerie","source":"gendform3","occurred_at":"2021-03-01T10:00:00Z"}"#,
            ),
            "missing_learner_id",
        ),
        (
            json(
                r#"{"event_id":"g4","kind":"chapter_completed","campaign":"gendarmerie","source":"gendform3","learner_id":"x","chapter":99,"occurred_at":"2021-03-01T10:00:00Z"}"#,
            ),
            "chapter_out_of_range",
        ),
        (
            Produced {
                key: "gendarmerie".to_owned(),
                payload: None,
                protobuf: false,
            },
            "invalid_event",
        ),
    ]
}

/// Produces `messages` and waits for every acknowledgement; answers where each went.
pub(crate) async fn produce(
    producer: &FutureProducer,
    topic: &str,
    messages: &[Produced],
) -> Vec<(i32, i64)> {
    let mut placed = Vec::with_capacity(messages.len());
    for chunk in messages.chunks(5000) {
        let deliveries = chunk.iter().map(|produced| {
            let mut record: FutureRecord<'_, str, [u8]> =
                FutureRecord::to(topic).key(&produced.key);
            if let Some(payload) = &produced.payload {
                record = record.payload(payload);
            }
            if produced.protobuf {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: "content-type",
                    value: Some("application/x-protobuf"),
                }));
            }
            producer.send(record, Duration::from_secs(120))
        });
        for delivery in futures::future::join_all(deliveries).await {
            let delivered = delivery.unwrap_or_else(|(error, _)| panic!("produced: {error}"));
            placed.push((delivered.partition, delivered.offset));
        }
    }
    placed
}

/// The simulated programme of `seed` at `scale`.
pub(crate) fn simulated(seed: u64, scale: f64) -> Vec<proto::LearnerEvent> {
    let registry = Registry::load(None).expect("the embedded registry");
    suivi::simulate::generate(&registry, seed, scale, DEFAULT_CHAPTER_COUNT)
}

/// Starts suivi with the test settings as changed by `tweak` (which turns Kafka on), once
/// ready: its first assignment may wait for a rebalance of the whole group.
async fn start_kafka_app(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let app = start_app_with(tweak).await;
    app.wait_until_ready_within(CONSUME_PATIENCE).await;
    app
}

/// Kafka on, from `bootstrap`, `topic`, in group `group`.
fn with_kafka(settings: &mut Settings, bootstrap: &str, topic: &str, group: &str) {
    settings.kafka_brokers = Some(bootstrap.to_owned());
    settings.kafka_topics = topic.to_owned();
    settings.kafka_group = group.to_owned();
    settings.checkpoint_interval = Duration::from_millis(500);
    // Dead letters fail fast when the dead-letter topic is out of reach, and group members notice
    // a join or a leave within a second.
    for (key, value) in [
        ("message.timeout.ms", "2000"),
        ("heartbeat.interval.ms", "300"),
        ("session.timeout.ms", "6000"),
    ] {
        settings.kafka_options.insert(key.to_owned(), secret(value));
    }
}

/// Every campaign's counters and the totals, without the times they changed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Counters {
    pub(crate) campaigns: BTreeMap<String, Value>,
    pub(crate) totals: Value,
}

fn strip(mut counters: Value) -> Value {
    if let Some(object) = counters.as_object_mut() {
        object.remove("as_of");
    }
    counters
}

fn counters_of(list: &Value, totals: Value) -> Counters {
    let campaigns = list["campaigns"]
        .as_array()
        .expect("a campaign list")
        .iter()
        .map(|counters| {
            (
                counters["campaign"].as_str().expect("an id").to_owned(),
                strip(counters.clone()),
            )
        })
        .collect();
    Counters {
        campaigns,
        totals: strip(totals),
    }
}

async fn app_counters(app: &TestApp) -> Counters {
    let (_, list) = app.get("/v1/campaigns").await;
    counters_of(&list, app.totals_json().await)
}

pub(crate) async fn process_counters(suivi: &Suivi) -> Counters {
    counters_of(
        &suivi.get("/v1/campaigns").await,
        suivi.get("/v1/totals").await,
    )
}

/// What a suivi that got `events` once over gRPC counts.
pub(crate) async fn reference(events: &[proto::LearnerEvent]) -> Counters {
    let mut app = spawn_app().await;
    let mut client = app.ingest_client().await;
    for batch in events.chunks(2000) {
        let answer = client
            .ingest(proto::IngestRequest {
                events: batch.to_vec(),
            })
            .await
            .expect("the reference takes the events")
            .into_inner();
        assert!(answer.rejections.is_empty(), "{:?}", answer.rejections);
    }
    let counters = app_counters(&app).await;
    app.stop().await;
    counters
}

/// Whether a campaign's counters hold anything.
fn holds_something(counters: &Value) -> bool {
    counters["clicks"].as_u64() != Some(0) || counters["enrolled"].as_u64() != Some(0)
}

/// The campaigns whose counters differ, for a failure message.
pub(crate) fn differences(got: &Counters, expected: &Counters) -> String {
    let mut lines = Vec::new();
    for (campaign, counters) in &expected.campaigns {
        if got.campaigns.get(campaign) != Some(counters) {
            lines.push(format!(
                "{campaign}: got {:?}, expected {counters}",
                got.campaigns.get(campaign).map(Value::to_string)
            ));
        }
    }
    if got.totals != expected.totals {
        lines.push(format!(
            "totals: got {}, expected {}",
            got.totals, expected.totals
        ));
    }
    lines.truncate(6);
    lines.join("\n")
}

/// Waits until `read` gives `expected`, or fails saying what differs.
pub(crate) async fn until_counted<F, Fut>(mut read: F, expected: &Counters, what: &str)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Counters>,
{
    let deadline = Instant::now() + CONSUME_PATIENCE;
    loop {
        let got = read().await;
        if got == *expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the counters are not those of the events produced after {CONSUME_PATIENCE:?}:\n{}",
            differences(&got, expected)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `condition` holds of the totals, or fails.
async fn until_totals(app: &TestApp, what: &str, condition: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + CONSUME_PATIENCE;
    loop {
        let totals = app.totals_json().await;
        if condition(&totals) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: totals {totals}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One dead letter: its headers and payload.
#[derive(Debug)]
struct Letter {
    headers: BTreeMap<String, String>,
    payload: Option<Vec<u8>>,
}

/// Every message of the dead-letter topic, read until it has `at_least` or patience runs out.
fn dead_letters(bootstrap: &str, topic: &str, at_least: usize) -> Vec<Letter> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "dead-letter-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&dead_letter_topic(topic), 0, Offset::Beginning)
        .expect("a partition");
    consumer.assign(&assignment).expect("assigned");
    let mut letters = Vec::new();
    let deadline = Instant::now() + CONSUME_PATIENCE;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|header| {
                                (
                                    header.key.to_owned(),
                                    String::from_utf8_lossy(header.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                letters.push(Letter {
                    headers,
                    payload: message.payload().map(<[u8]>::to_vec),
                });
                quiet_since = Instant::now();
            }
            Some(Err(error)) => panic!("reading the dead-letter topic: {error}"),
            None if letters.len() >= at_least && quiet_since.elapsed() > Duration::from_secs(2) => {
                break;
            }
            None => {}
        }
    }
    letters
}

/// The group's committed offsets for the events topic's partitions.
fn committed(bootstrap: &str, topic: &str, group: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("a consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("the committed offsets");
    (0..partitions)
        .map(|partition| {
            committed
                .find_partition(topic, partition)
                .and_then(|element| element.offset().to_raw())
                .unwrap_or(-1)
        })
        .collect()
}

/// The high watermark of each partition of the events topic.
fn ends(bootstrap: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("a consumer");
    (0..partitions)
        .map(|partition| {
            consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .expect("the watermarks")
                .1
        })
        .collect()
}

async fn metric_text(app: &TestApp) -> String {
    app.get_text("/metrics").await.1
}

/// The value of the series `series` (name and labels, as exported), or 0.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().expect("a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_protobuf_and_garbage_are_counted_exactly_and_dead_lettered() {
    let topic = "learner-events-json-protobuf-garbage";
    let cluster = cluster(topic, 1, 4);
    let bootstrap = cluster.bootstrap_servers();
    let events = simulated(11, 0.003);
    let expected = reference(&events).await;
    let producer = producer(&bootstrap);

    let mut produced = messages(&events);
    // Sent twice: the second copies are duplicates and change nothing.
    produced.extend(messages(&events[..500]));
    let (garbage, codes): (Vec<Produced>, Vec<&str>) = garbage().into_iter().unzip();
    let half = produced.len() / 2;
    produce(&producer, topic, &produced[..half]).await;
    let garbage_placed = produce(&producer, topic, &garbage).await;
    produce(&producer, topic, &produced[half..]).await;

    let mut app =
        start_kafka_app(|settings| with_kafka(settings, &bootstrap, topic, "suivi")).await;
    until_counted(
        || app_counters(&app),
        &expected,
        "JSON and protobuf over Kafka",
    )
    .await;

    let letters = dead_letters(&bootstrap, topic, garbage.len());
    assert_eq!(letters.len(), garbage.len(), "{letters:?}");
    let by_offset: BTreeMap<(String, String), &Letter> = letters
        .iter()
        .map(|letter| {
            (
                (
                    letter.headers["suivi-original-partition"].clone(),
                    letter.headers["suivi-original-offset"].clone(),
                ),
                letter,
            )
        })
        .collect();
    for ((produced, code), (partition, offset)) in garbage.iter().zip(&codes).zip(&garbage_placed) {
        let letter = by_offset
            .get(&(partition.to_string(), offset.to_string()))
            .unwrap_or_else(|| panic!("no dead letter for {partition}/{offset}: {letters:?}"));
        assert_eq!(letter.headers["suivi-error-code"], *code, "{letter:?}");
        assert!(!letter.headers["suivi-error-message"].is_empty());
        assert_eq!(letter.headers["suivi-original-topic"], topic);
        assert_eq!(letter.payload, produced.payload, "the message as it came");
        if produced.protobuf {
            assert_eq!(letter.headers["content-type"], "application/x-protobuf");
        }
    }

    // The metrics are the test process's, shared with the tests running beside this one: the
    // series of this test's topic are its own, the others can only be seen to rise.
    let text = metric_text(&app).await;
    for reason in [
        "invalid_event",
        "missing_learner_id",
        "chapter_out_of_range",
    ] {
        let series = format!(r#"suivi_kafka_dead_letters_total{{reason="{reason}"}}"#);
        assert!(metric(&text, &series) >= 1.0, "{series}: {text}");
    }
    let consumed = |text: &str| -> f64 {
        (0..4)
            .map(|partition| {
                metric(
                    text,
                    &format!(
                        r#"suivi_kafka_messages_total{{topic="{topic}",partition="{partition}"}}"#
                    ),
                )
            })
            .sum()
    };
    assert_eq!(consumed(&text), (produced.len() + garbage.len()) as f64);
    // Stopped, suivi checkpoints and commits the end of every partition to its group.
    app.stop().await;
    assert_eq!(
        committed(&bootstrap, topic, "suivi", 4),
        ends(&bootstrap, topic, 4)
    );

    // Restarted, it resumes from its checkpoint: nothing is read again, nothing dead-lettered twice.
    let mut app = app
        .restart_unready_with(|settings| with_kafka(settings, &bootstrap, topic, "suivi"))
        .await;
    app.wait_until_ready_within(CONSUME_PATIENCE).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(app_counters(&app).await, expected);
    let text = metric_text(&app).await;
    assert_eq!(
        consumed(&text),
        (produced.len() + garbage.len()) as f64,
        "no message read again"
    );
    assert_eq!(
        dead_letters(&bootstrap, topic, garbage.len()).len(),
        garbage.len()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_injected_errors_and_an_unwritable_dead_letter_topic_lose_nothing() {
    let topic = "learner-events-faults";
    let cluster = cluster(topic, 1, 3);
    let bootstrap = cluster.bootstrap_servers();
    let events = simulated(12, 0.003);
    let expected = reference(&events).await;
    let producer = producer(&bootstrap);
    let produced = messages(&events);
    let (first, rest) = produced.split_at(produced.len() / 3);
    let (second, third) = rest.split_at(rest.len() / 2);
    produce(&producer, topic, first).await;

    let mut app =
        start_kafka_app(|settings| with_kafka(settings, &bootstrap, topic, "suivi")).await;
    until_totals(&app, "the first third is being counted", |totals| {
        totals["enrolled"].as_u64() > Some(0)
    })
    .await;

    // The broker goes down mid-stream and comes back; meanwhile the producer retries.
    cluster.broker_down(1).expect("the broker goes down");
    let producing = {
        let producer = producer.clone();
        let second: Vec<Produced> = second
            .iter()
            .map(|p| Produced {
                key: p.key.clone(),
                payload: p.payload.clone(),
                protobuf: p.protobuf,
            })
            .collect();
        tokio::spawn(async move { produce(&producer, topic, &second).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.broker_up(1).expect("the broker comes back");
    within(CONSUME_PATIENCE, producing)
        .await
        .expect("the second third is produced once the broker is back")
        .expect("the producing task");

    // Fetches and commits fail now and then.
    cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        ],
    );
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 3],
    );

    // The dead-letter topic has no leader: dead letters cannot be written for a while.
    cluster
        .partition_leader(&dead_letter_topic(topic), 0, None)
        .expect("the dead-letter partition loses its leader");
    let (garbage, _codes): (Vec<Produced>, Vec<&str>) = garbage().into_iter().unzip();
    let garbage_placed = produce(&producer, topic, &garbage).await;
    produce(&producer, topic, third).await;
    let deadline = Instant::now() + CONSUME_PATIENCE;
    while metric(
        &metric_text(&app).await,
        "suivi_kafka_dead_letter_failures_total",
    ) == 0.0
    {
        assert!(Instant::now() < deadline, "no dead-letter failure seen");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Meanwhile a partition with garbage waits: not everything is counted yet.
    assert_ne!(app_counters(&app).await, expected);
    cluster
        .partition_leader(&dead_letter_topic(topic), 0, Some(1))
        .expect("the dead-letter partition has a leader again");

    until_counted(|| app_counters(&app), &expected, "after the faults").await;
    let letters = dead_letters(&bootstrap, topic, garbage.len());
    let origins: BTreeSet<(String, String)> = letters
        .iter()
        .map(|letter| {
            (
                letter.headers["suivi-original-partition"].clone(),
                letter.headers["suivi-original-offset"].clone(),
            )
        })
        .collect();
    let expected_origins: BTreeSet<(String, String)> = garbage_placed
        .iter()
        .map(|(partition, offset)| (partition.to_string(), offset.to_string()))
        .collect();
    assert_eq!(
        origins, expected_origins,
        "every garbage message dead-lettered"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suivi_killed_with_sigkill_mid_topic_resumes_and_counts_each_event_once() {
    let cluster = cluster(TOPIC, 1, 4);
    let bootstrap = cluster.bootstrap_servers();
    let events = simulated(13, 0.02);
    let expected = reference(&events).await;
    produce(&producer(&bootstrap), TOPIC, &messages(&events)).await;

    let data_dir = tempfile::tempdir().expect("a data dir");
    // A killed member holds its partitions until its session times out: make that short.
    let config_dir = tempfile::tempdir().expect("a config dir");
    let config = config_dir.path().join("suivi.toml");
    std::fs::write(
        &config,
        "[kafka_options]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
    )
    .expect("the config file");
    let config = config.to_str().expect("a UTF-8 path");
    let env = [
        ("SUIVI_CONFIG", config),
        ("SUIVI_KAFKA_BROKERS", bootstrap.as_str()),
        ("SUIVI_CHECKPOINT_INTERVAL", "300ms"),
        ("SUIVI_KAFKA_BATCH_EVENTS", "500"),
    ];
    let total = events.len() as u64;
    for round in 0..3 {
        let suivi = Suivi::start(data_dir.path(), &env);
        // Killed once it has counted some, but not all, of the events.
        let deadline = Instant::now() + CONSUME_PATIENCE;
        loop {
            let counted =
                metric_of_process(&suivi, r#"suivi_events_received_total{transport="kafka"}"#)
                    .await;
            if counted > 0.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: nothing consumed: {}",
                suivi.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(50 * round)).await;
        // A fast round may have read the whole topic: a later one would then wait for
        // events that never come, so the kills end with it.
        let finished = process_counters(&suivi).await == expected;
        let log = suivi.kill();
        assert!(!log.contains("panicked"), "{log}");
        if finished {
            assert!(round > 0, "the first round was killed mid-topic");
            break;
        }
    }
    let suivi = Suivi::start(data_dir.path(), &env);
    until_counted(
        || process_counters(&suivi),
        &expected,
        "after three SIGKILLs",
    )
    .await;
    let accepted =
        metric_of_process(&suivi, r#"suivi_events_accepted_total{transport="kafka"}"#).await;
    assert!(
        accepted < total as f64,
        "the restart resumed, it did not start over"
    );
    let status = suivi.terminate().await;
    assert!(status.success(), "{status}");
}

pub(crate) async fn metric_of_process(suivi: &Suivi, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", suivi.http_addr))
        .await
        .expect("GET /metrics answers")
        .text()
        .await
        .expect("a body");
    metric(&text, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_joins_and_leaves_and_the_combined_counters_stay_exact() {
    let topic = "learner-events-two-instances";
    let cluster = cluster(topic, 1, 6);
    let bootstrap = cluster.bootstrap_servers();
    let events = simulated(14, 0.004);
    let expected = reference(&events).await;
    let producer = producer(&bootstrap);
    // Without forward_to_kafka, instances split the programme by campaign: messages keyed so.
    let mut produced = messages(&events);
    for (message, event) in produced.iter_mut().zip(&events) {
        message.key = suivi::event::campaign_id(&event.campaign);
    }
    let (first, second) = produced.split_at(produced.len() / 2);
    produce(&producer, topic, first).await;

    let mut one =
        start_kafka_app(|settings| with_kafka(settings, &bootstrap, topic, "suivi")).await;
    until_totals(&one, "the first instance counts", |totals| {
        totals["enrolled"].as_u64() > Some(0)
    })
    .await;
    let mut two =
        start_kafka_app(|settings| with_kafka(settings, &bootstrap, topic, "suivi")).await;
    produce(&producer, topic, second).await;

    // Each campaign is counted by one instance only, and exactly.
    let deadline = Instant::now() + CONSUME_PATIENCE;
    loop {
        let (a, b) = (app_counters(&one).await, app_counters(&two).await);
        let mut combined = BTreeMap::new();
        let mut twice = Vec::new();
        for (campaign, expected_counters) in &expected.campaigns {
            let in_a = a.campaigns.get(campaign).filter(|c| holds_something(c));
            let in_b = b.campaigns.get(campaign).filter(|c| holds_something(c));
            if in_a.is_some() && in_b.is_some() {
                twice.push(campaign.clone());
            }
            let counters = in_a.or(in_b).unwrap_or(expected_counters);
            combined.insert(campaign.clone(), counters.clone());
        }
        // Both instances hold campaigns: the partitions were split.
        let split =
            a.campaigns.values().any(holds_something) && b.campaigns.values().any(holds_something);
        let got = Counters {
            campaigns: combined,
            totals: expected.totals.clone(),
        };
        if split && twice.is_empty() && got == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "two instances: split {split}, counted twice {twice:?}:\n{}",
            differences(&got, &expected)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The second leaves: the first takes its partitions back and counts everything alone.
    two.stop().await;
    until_counted(
        || app_counters(&one),
        &expected,
        "after the second instance left",
    )
    .await;
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suivi_serve_counts_a_topic_filled_by_suivi_simulate_kafka_to_the_plan() {
    // The mock broker keeps at most 5 MB per partition: a small programme, spread over 4.
    let cluster = cluster(TOPIC, 1, 4);
    let bootstrap = cluster.bootstrap_servers();
    let (seed, scale) = (21, 0.01);
    for protobuf in [false, true] {
        // Twice the same programme, once as JSON and once as protobuf: all the second are
        // duplicates.
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_suivi"));
        command.args([
            "simulate",
            "--kafka",
            &bootstrap,
            "--seed",
            &seed.to_string(),
            "--scale",
            &scale.to_string(),
        ]);
        if protobuf {
            command.arg("--protobuf");
        }
        let output = command.output().expect("suivi simulate runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "suivi simulate --kafka: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("every one acknowledged"), "{stdout}");
    }

    let data_dir = tempfile::tempdir().expect("a data dir");
    let suivi = Suivi::start(
        data_dir.path(),
        &[("SUIVI_KAFKA_BROKERS", bootstrap.as_str())],
    );
    let registry = Registry::load(None).expect("the embedded registry");
    let plan = suivi::simulate::Plan::new(&registry, seed, scale);
    let gendarmerie = plan
        .campaign("gendarmerie")
        .expect("the Gendarmerie is planned");
    let expected = (
        plan.started,
        plan.certified,
        gendarmerie.enrolled,
        gendarmerie.certified,
    );
    let deadline = Instant::now() + CONSUME_PATIENCE;
    loop {
        let totals = suivi.get("/v1/totals").await;
        let campaign = suivi.get("/v1/campaigns/gendarmerie").await;
        let got = (
            totals["started"].as_u64().unwrap_or(0),
            totals["certified"].as_u64().unwrap_or(0),
            campaign["enrolled"].as_u64().unwrap_or(0),
            campaign["certified"].as_u64().unwrap_or(0),
        );
        if got == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "got (started, certified, gendarmerie enrolled, gendarmerie certified) {got:?}, \
             planned {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every event came twice: once read, the second copies were all duplicates.
    let events = suivi::simulate::Simulation::new(&registry, seed, scale, DEFAULT_CHAPTER_COUNT)
        .num_events() as f64;
    loop {
        let accepted =
            metric_of_process(&suivi, r#"suivi_events_accepted_total{transport="kafka"}"#).await;
        let duplicates =
            metric_of_process(&suivi, r#"suivi_events_duplicate_total{transport="kafka"}"#).await;
        if accepted + duplicates >= 2.0 * events {
            assert_eq!((accepted, duplicates), (events, events));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{accepted} accepted and {duplicates} duplicates of twice {events} events"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let totals = suivi.get("/v1/totals").await;
    assert_eq!(
        (totals["started"].as_u64(), totals["certified"].as_u64()),
        (Some(plan.started), Some(plan.certified))
    );
    let status = suivi.terminate().await;
    assert!(status.success(), "{status}");
}

/// `count` enrolments in `campaign` as JSON messages keyed by the campaign.
fn enrolment_messages(prefix: &str, campaign: &str, count: usize) -> Vec<Produced> {
    enrolments(prefix, campaign, count)
        .iter()
        .map(|event| Produced {
            key: campaign.to_owned(),
            payload: Some(event.json().to_string().into_bytes()),
            protobuf: false,
        })
        .collect()
}

/// The enrolled count of `campaign` as `app` answers it, once it answers 200.
async fn until_enrolled(app: &TestApp, campaign: &str, enrolled: u64) {
    let deadline = Instant::now() + CONSUME_PATIENCE;
    loop {
        let (status, body) = app.get(&format!("/v1/campaigns/{campaign}")).await;
        if status == reqwest::StatusCode::OK && body["enrolled"].as_u64() == Some(enrolled) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{campaign}: {status} {body}, expected {enrolled} enrolled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_whose_partition_moved_never_serves_nor_snapshots_its_campaigns() {
    let topic = "learner-events-moved-while-down";
    let group = "suivi-moved-while-down";
    let campaign = "moved-while-down";
    let cluster = cluster(topic, 1, 1);
    let bootstrap = cluster.bootstrap_servers();
    produce(
        &producer(&bootstrap),
        topic,
        &enrolment_messages("moved", campaign, 20),
    )
    .await;

    // The first instance counts the partition, then stops: its state holds the campaign.
    let one = start_kafka_app(|settings| with_kafka(settings, &bootstrap, topic, group)).await;
    until_enrolled(&one, campaign, 20).await;
    let mut one = one;
    one.stop().await;

    // Meanwhile a second instance takes the partition over and counts it.
    let mut two = start_kafka_app(|settings| with_kafka(settings, &bootstrap, topic, group)).await;
    until_enrolled(&two, campaign, 20).await;

    // The first comes back while the second holds the partition. Until its first assignment is
    // settled it is not ready: no figure of the campaign it no longer owns is served, and no
    // snapshot (every 50 ms here) restates it downstream.
    let restarted_at = chrono::Utc::now();
    let mut one = one
        .restart_unready_with(|settings| {
            with_kafka(settings, &bootstrap, topic, group);
            settings.snapshot_interval = Duration::from_millis(50);
        })
        .await;
    let mut health = HealthClient::new(one.channel().await);
    let mut waited_for_kafka = false;
    let deadline = Instant::now() + CONSUME_PATIENCE;
    loop {
        // Health first: suivi says ready before it says SERVING, so SERVING here means ready
        // below.
        let serving = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("gRPC health answers")
            .into_inner()
            .status;
        let (ready, readyz) = one.get("/readyz").await;
        let (status, body) = one.get(&format!("/v1/campaigns/{campaign}")).await;
        assert_ne!(
            status,
            reqwest::StatusCode::OK,
            "the restarted instance serves a campaign it no longer owns: {body} (readyz {readyz})"
        );
        if ready == reqwest::StatusCode::OK {
            assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "{body}");
            break;
        }
        if readyz["status"] == "waiting_for_kafka" {
            waited_for_kafka = true;
            assert_eq!(serving, ServingStatus::NotServing as i32, "{readyz}");
            // Not ready: queries answer not_ready (or, ready a moment later, not found).
            assert!(
                body["code"] == "not_ready" || body["code"] == "campaign_not_found",
                "{body}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "not ready after {CONSUME_PATIENCE:?}: {readyz}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        waited_for_kafka,
        "/readyz said waiting_for_kafka before the assignment"
    );
    // Ready, it never shows the campaign, through several snapshots.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        one.get(&format!("/v1/campaigns/{campaign}")).await.0,
        reqwest::StatusCode::NOT_FOUND
    );
    let listed = one.get("/v1/campaigns").await.1;
    assert!(
        !listed.to_string().contains(campaign),
        "listed after release: {listed}"
    );
    one.stop().await;
    let restated: Vec<Value> = one
        .snapshot_records()
        .iter()
        .map(|record| serde_json::to_value(record).expect("a record serializes"))
        .filter(|record| {
            record["campaign"] == campaign
                && record["taken_at"]
                    .as_str()
                    .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                    .is_some_and(|at| at >= restarted_at)
        })
        .collect();
    assert!(
        restated.is_empty(),
        "the restarted instance snapshotted a campaign it no longer owns: {restated:?}"
    );

    // The owner still counts it, whole.
    until_enrolled(&two, campaign, 20).await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_an_unwritable_dead_letter_topic_ends_within_the_grace() {
    let topic = "learner-events-dead-letters-unwritable-at-shutdown";
    let cluster = cluster(topic, 1, 1);
    let bootstrap = cluster.bootstrap_servers();
    let producer = producer(&bootstrap);
    produce(
        &producer,
        topic,
        &enrolment_messages("before", "gendarmerie", 5),
    )
    .await;

    let grace = Duration::from_secs(2);
    let mut app = start_kafka_app(|settings| {
        with_kafka(settings, &bootstrap, topic, "suivi");
        // librdkafka's default: a dead letter that cannot be written waits five minutes.
        settings
            .kafka_options
            .insert("message.timeout.ms".to_owned(), secret("300000"));
        settings.shutdown_grace = grace;
    })
    .await;
    until_enrolled(&app, "gendarmerie", 5).await;

    // The dead-letter topic loses its leader and every produce request fails; then garbage
    // comes, and its batch waits for the dead-letter topic.
    cluster
        .partition_leader(&dead_letter_topic(topic), 0, None)
        .expect("the dead-letter partition loses its leader");
    let (garbage, _codes): (Vec<Produced>, Vec<&str>) = garbage().into_iter().unzip();
    produce(&producer, topic, &garbage).await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 1000],
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let asked = Instant::now();
    app.stop().await;
    let took = asked.elapsed();
    assert!(
        took < grace + Duration::from_secs(2),
        "stopped {took:?} after being asked, with a shutdown grace of {grace:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_broker_answering_suivi_counts_grpc_events_but_stays_unready() {
    // Nothing listens on port 1: the consumer never joins its group.
    let grace = Duration::from_secs(2);
    let mut app = start_app_with(|settings| {
        with_kafka(
            settings,
            "127.0.0.1:1",
            "learner-events-no-broker",
            "suivi-no-broker",
        );
        settings.shutdown_grace = grace;
    })
    .await;
    // Events sent over gRPC meanwhile are taken, durably: only figures wait for Kafka.
    let answer = app.ingest(&enrolments("no-broker", "gendarmerie", 4)).await;
    assert_eq!(answer.accepted, 4, "{answer:?}");
    // The writer answers once it has recovered; the service says it waits for Kafka a moment
    // later, once the consumer is started.
    let left_starting = within(CONSUME_PATIENCE, async {
        while app.get("/readyz").await.1["status"] == "starting" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(left_starting.is_some(), "/readyz still says starting");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        let (ready, readyz) = app.get("/readyz").await;
        assert_eq!(ready, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{readyz}");
        assert_eq!(readyz["status"], "waiting_for_kafka", "{readyz}");
        let (status, body) = app.get("/v1/campaigns/gendarmerie").await;
        assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["code"], "not_ready", "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let asked = Instant::now();
    app.stop().await;
    assert!(
        asked.elapsed() < grace + Duration::from_secs(2),
        "stopped {:?} after being asked",
        asked.elapsed()
    );
    // Restarted without Kafka, it has them.
    let mut app = app.restart().await;
    assert_eq!(app.campaign_json("gendarmerie").await["enrolled"], 4);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_consumer_thread_that_ends_makes_suivi_unready_at_once_and_run_fail() {
    let topic = "learner-events-consumer-ends";
    let cluster = cluster(topic, 1, 1);
    let bootstrap = cluster.bootstrap_servers();
    produce(
        &producer(&bootstrap),
        topic,
        &enrolment_messages("consumer-ends", "gendarmerie", 3),
    )
    .await;
    let (mut app, faults) =
        spawn_app_with_faults(|settings| with_kafka(settings, &bootstrap, topic, "suivi")).await;
    until_enrolled(&app, "gendarmerie", 3).await;

    // The consumer goes away while suivi runs: nothing more would be read, and a zombie would
    // still say ready.
    faults.stop_kafka.cancel();
    let deadline = Instant::now() + CONSUME_PATIENCE;
    loop {
        match app.http.get(app.url("/readyz")).send().await {
            Ok(response) if response.status() == reqwest::StatusCode::OK => {}
            Ok(response) => {
                assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
                let body: Value = response.json().await.expect("JSON");
                assert_eq!(body["status"], "failed", "{body}");
                break;
            }
            // The servers are closed already: not ready either.
            Err(_) => break,
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still says ready after the consumer ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let error = app.ended().await.expect_err("run ends with an error");
    assert!(
        format!("{error:#}").contains("Kafka consumer thread"),
        "the error names the consumer: {error:#}"
    );
}
