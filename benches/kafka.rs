//! Kafka consume + aggregate, against librdkafka alone reading the same topic in the same run.
//!
//! A mock Kafka cluster (librdkafka's, in this process) holds a topic pre-filled with the
//! simulated programme (`simulate::generate`), one event per message as `suivi simulate --kafka`
//! writes them (JSON by default, protobuf with `SUIVI_BENCH_KAFKA_PROTOBUF=1`), keyed by
//! campaign. Then, round after round, alternating:
//!
//! - **bare**: a plain rdkafka `BaseConsumer`, every partition assigned from its beginning, reads
//!   every message and touches its payload, nothing more: what librdkafka alone reads from this
//!   topic on this machine;
//! - **suivi**: the real service (`app::bind` + `run`, in this process) with Kafka on, in a fresh
//!   group and a fresh data directory on the real disk (`fsync = always`), consumes the topic:
//!   every message decoded, validated, journaled, fsynced, aggregated and published. Its time
//!   runs from its first message counted (`suivi_kafka_messages_total` read from `/metrics`
//!   every 10 ms) to the last.
//!
//! Both times leave out the group join. The figure to quote is the ratio of the two rates in the
//! same round; the rates themselves move with the machine's load.
//!
//! ```text
//! cargo bench --bench kafka
//! SUIVI_BENCH_KAFKA_SCALE=0.2 SUIVI_BENCH_KAFKA_ROUNDS=5 cargo bench --bench kafka
//! ```
//!
//! `SUIVI_BENCH_KAFKA_SCALE` (default 0.67, about a million events), `SUIVI_BENCH_KAFKA_PARTITIONS`
//! (default 4), `SUIVI_BENCH_KAFKA_ROUNDS` (default 3), `SUIVI_BENCH_DIR` (default `target/tmp`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use tokio_util::sync::CancellationToken;

use suivi::config::{DEFAULT_CHAPTER_COUNT, Settings};
use suivi::registry::Registry;
use suivi::simulate::kafka::message;

const TOPIC: &str = "learner-events";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|value| {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{name} is not a valid value"))
        })
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; this is not a criterion benchmark, there is nothing to filter.
    let scale: f64 = env_or("SUIVI_BENCH_KAFKA_SCALE", 0.67);
    let partitions: i32 = env_or("SUIVI_BENCH_KAFKA_PARTITIONS", 4);
    let rounds: usize = env_or("SUIVI_BENCH_KAFKA_ROUNDS", 3);
    let protobuf = std::env::var_os("SUIVI_BENCH_KAFKA_PROTOBUF").is_some();
    let base = std::env::var_os("SUIVI_BENCH_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    std::fs::create_dir_all(&base).expect("the benchmark directory");

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let cluster = MockCluster::new(1).expect("the mock cluster");
    cluster
        .create_topic(TOPIC, partitions, 1)
        .expect("the topic");
    cluster
        .create_topic(&format!("{TOPIC}.dlq"), 1, 1)
        .expect("the dead-letter topic");
    let bootstrap = cluster.bootstrap_servers();

    let registry = Registry::load(None).expect("the embedded registry");
    let events = suivi::simulate::generate(&registry, 42, scale, DEFAULT_CHAPTER_COUNT);
    let total = events.len();
    let started = Instant::now();
    let bytes = runtime.block_on(fill(&bootstrap, &events, protobuf));
    println!(
        "topic {TOPIC}: {total} events as {} ({:.0} bytes each on average), {partitions} partitions; \
         produced in {:.1} s",
        if protobuf { "protobuf" } else { "JSON" },
        bytes as f64 / total as f64,
        started.elapsed().as_secs_f64()
    );
    drop(events);

    let mut bare_rates = Vec::new();
    let mut suivi_rates = Vec::new();
    for round in 0..rounds {
        let bare = bare_read(&bootstrap, &format!("bare-{round}"), partitions, total);
        // The metrics are this process's: the rounds before counted `total` messages each.
        let counted = runtime.block_on(suivi_consume(
            &bootstrap,
            &format!("suivi-{round}"),
            (round * total, total),
            &base,
        ));
        let (bare_rate, suivi_rate) = (rate(total, bare), rate(total, counted));
        println!(
            "round {}: bare rdkafka {:>9.0} events/s ({:.2} s); suivi consume + aggregate {:>9.0} \
             events/s ({:.2} s); ratio {:.2}",
            round + 1,
            bare_rate,
            bare.as_secs_f64(),
            suivi_rate,
            counted.as_secs_f64(),
            suivi_rate / bare_rate
        );
        bare_rates.push(bare_rate);
        suivi_rates.push(suivi_rate);
    }
    let ratios: Vec<f64> = suivi_rates
        .iter()
        .zip(&bare_rates)
        .map(|(suivi, bare)| suivi / bare)
        .collect();
    println!(
        "median of {rounds}: bare {:.0} events/s, suivi {:.0} events/s, ratio {:.2}",
        median(&bare_rates),
        median(&suivi_rates),
        median(&ratios)
    );
}

fn rate(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Produces every event, keyed by campaign; answers the payload bytes.
async fn fill(bootstrap: &str, events: &[suivi::proto::LearnerEvent], protobuf: bool) -> usize {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("a producer");
    let mut bytes = 0;
    let mut deliveries = futures::stream::iter(events.iter().map(|event| message(event, protobuf)))
        .map(|(key, payload)| {
            let producer = &producer;
            async move {
                let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(TOPIC)
                    .key(key.as_str())
                    .payload(payload.as_slice());
                if protobuf {
                    record = record.headers(OwnedHeaders::new().insert(Header {
                        key: "content-type",
                        value: Some("application/x-protobuf"),
                    }));
                }
                let delivered = producer.send(record, Duration::from_secs(60)).await;
                delivered.map(|_| payload.len())
            }
        })
        .buffer_unordered(50_000);
    while let Some(delivery) = deliveries.next().await {
        bytes += delivery.unwrap_or_else(|(error, _)| panic!("cannot fill the topic: {error}"));
    }
    bytes
}

/// A bare consumer reading the whole topic (every partition assigned from its beginning): the
/// time from its first message to its last.
fn bare_read(bootstrap: &str, group: &str, partitions: i32, total: usize) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", "16384")
        .create()
        .expect("a consumer");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(TOPIC, partition, rdkafka::Offset::Beginning)
            .expect("a partition");
    }
    consumer.assign(&assignment).expect("assigned");
    let mut read = 0;
    let mut checksum = 0u64;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while read < total {
        assert!(
            Instant::now() < deadline,
            "the bare consumer read {read} of {total}"
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("a message");
            first.get_or_insert_with(Instant::now);
            checksum =
                checksum.wrapping_add(message.payload().map_or(0, |p| p[p.len() / 2]) as u64);
            read += 1;
        }
    }
    let elapsed = first.map_or(Duration::ZERO, |first| first.elapsed());
    std::hint::black_box(checksum);
    elapsed
}

/// suivi consuming the whole topic: the time from its first message counted to its last.
async fn suivi_consume(
    bootstrap: &str,
    group: &str,
    (before, total): (usize, usize),
    base: &std::path::Path,
) -> Duration {
    let data_dir = tempfile::Builder::new()
        .prefix("kafka-bench-")
        .tempdir_in(base)
        .expect("a data dir");
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let settings = Settings {
        grpc_addr: loopback,
        http_addr: loopback,
        data_dir: data_dir.path().to_path_buf(),
        kafka_brokers: Some(bootstrap.to_owned()),
        kafka_group: group.to_owned(),
        ..Settings::default()
    };
    let app = suivi::app::bind(settings).await.expect("suivi binds");
    let metrics_url = format!("http://{}/metrics", app.http_addr());
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run(stop.clone().cancelled_owned()));
    let client = reqwest::Client::new();
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let counted = consumed(&client, &metrics_url).await.saturating_sub(before);
        if counted > 0 {
            first.get_or_insert_with(Instant::now);
        }
        if counted >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "suivi counted {counted} of {total}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = first.map_or(Duration::ZERO, |first| first.elapsed());
    stop.cancel();
    running
        .await
        .expect("the run task")
        .expect("suivi stops cleanly");
    elapsed
}

/// The messages suivi counted, over every partition, since this process started.
async fn consumed(client: &reqwest::Client, url: &str) -> usize {
    let Ok(response) = client.get(url).send().await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with("suivi_kafka_messages_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}
