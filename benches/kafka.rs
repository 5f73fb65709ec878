//! Kafka consume + aggregate, against librdkafka alone reading the same topic in the same run.
//!
//! A Kafka broker holds a topic pre-filled with the simulated programme, produced by `suivi
//! simulate --kafka`'s own code (`simulate::kafka::produce`): one event per message (JSON by
//! default, protobuf with `SUIVI_BENCH_KAFKA_PROTOBUF=1`), keyed by learner. Then, round after
//! round, alternating:
//!
//! - **bare**: a plain rdkafka `BaseConsumer`, every partition assigned from its beginning, reads
//!   every message and touches its payload, nothing more: what librdkafka alone reads from this
//!   topic on this machine;
//! - **suivi**: the real service (`app::bind` + `run`, in this process) with Kafka on, in a fresh
//!   group and a fresh data directory on the real disk (`fsync = always`), consumes the topic:
//!   every message decoded, validated, journaled, fsynced, aggregated and published. Its time
//!   runs from its first message counted (`suivi_kafka_messages_total` read from `/metrics`
//!   every 2 ms at the start and near the end, every 100 ms in between) to the last.
//!
//! Both times leave out the group join. The figure to quote is the ratio of the two rates in the
//! same round; the rates themselves move with the machine's load.
//!
//! ```text
//! cargo bench --bench kafka
//! SUIVI_BENCH_KAFKA_SCALE=0.2 SUIVI_BENCH_KAFKA_ROUNDS=5 cargo bench --bench kafka
//! ```
//!
//! `SUIVI_BENCH_KAFKA_BROKERS` names an outside broker (else librdkafka's mock cluster, in this
//! process, which only suits small runs: `SUIVI_BENCH_KAFKA_SCALE=0.02`),
//! `SUIVI_BENCH_KAFKA_SCALE` (default 0.67, about a million events), `SUIVI_BENCH_KAFKA_PARTITIONS`
//! (default 4), `SUIVI_BENCH_KAFKA_ROUNDS` (default 3), `SUIVI_BENCH_DIR` (default `target/tmp`),
//! `SUIVI_BENCH_KAFKA_FORWARD=1` (scale-out: each partition a shard, partials published).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Message};
use tokio_util::sync::CancellationToken;

use suivi::config::{DEFAULT_CHAPTER_COUNT, Settings};
use suivi::registry::Registry;
use suivi::simulate::Simulation;
use suivi::simulate::kafka::{ProduceSettings, message, produce};

/// The topic's name; with an outside broker, the process id is added so runs never mix.
const TOPIC: &str = "learner-events-bench";

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
    // An outside broker (SUIVI_BENCH_KAFKA_BROKERS), or librdkafka's mock cluster in this
    // process; the mock keeps at most 5 MB per partition and returns one message set per
    // partition per fetch, so it only suits small runs.
    let outside = std::env::var("SUIVI_BENCH_KAFKA_BROKERS").ok();
    let topic = match outside {
        Some(_) => format!("{TOPIC}-{}", std::process::id()),
        None => TOPIC.to_owned(),
    };
    let mock = match &outside {
        Some(_) => None,
        None => Some(MockCluster::new(1).expect("the mock cluster")),
    };
    let bootstrap = match (&outside, &mock) {
        (Some(brokers), _) => brokers.clone(),
        (None, Some(mock)) => mock.bootstrap_servers(),
        (None, None) => unreachable!("a mock cluster when there is no outside broker"),
    };
    runtime.block_on(create_topics(&bootstrap, &topic, partitions, mock.as_ref()));
    println!(
        "broker: {}",
        if outside.is_some() {
            bootstrap.as_str()
        } else {
            "librdkafka's mock cluster"
        }
    );
    let registry = Registry::load(None).expect("the embedded registry");
    let simulation = Simulation::new(&registry, 42, scale, DEFAULT_CHAPTER_COUNT);
    let total = simulation.num_events();
    let sample: Vec<usize> = simulation
        .events()
        .take(10_000)
        .map(|event| message(&event, protobuf).1.len())
        .collect();
    let produced = runtime
        .block_on(produce(
            &simulation,
            &ProduceSettings {
                brokers: bootstrap.clone(),
                topic: topic.clone(),
                protobuf,
            },
        ))
        .expect("the topic is filled");
    println!(
        "topic {topic}: {total} events as {} ({:.0} bytes each on average), {partitions} partitions; \
         produced in {:.1} s",
        if protobuf { "protobuf" } else { "JSON" },
        sample.iter().sum::<usize>() as f64 / sample.len().max(1) as f64,
        produced.elapsed.as_secs_f64()
    );
    drop(simulation);

    let mut bare_rates = Vec::new();
    let mut suivi_rates = Vec::new();
    for round in 0..rounds {
        let bare = bare_read(&bootstrap, &topic, partitions, total);
        let counted = runtime.block_on(suivi_consume(
            &bootstrap,
            &topic,
            &format!("suivi-{}-{round}", std::process::id()),
            total,
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

/// Creates the topic and its dead-letter topic: on the mock directly, else with the admin API.
async fn create_topics(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    mock: Option<&MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
) {
    let dead_letters = format!("{topic}.dlq");
    if let Some(mock) = mock {
        mock.create_topic(topic, partitions, 1).expect("the topic");
        mock.create_topic(&dead_letters, 1, 1)
            .expect("the dead-letter topic");
        return;
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("an admin client");
    let topics = [
        NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(&dead_letters, 1, TopicReplication::Fixed(1)),
    ];
    for created in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .expect("the broker answers CreateTopics")
    {
        created.unwrap_or_else(|(name, error)| panic!("cannot create {name}: {error}"));
    }
}

fn rate(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// A bare consumer reading the whole topic (every partition assigned from its beginning): the
/// time from its first message to its last.
fn bare_read(bootstrap: &str, topic: &str, partitions: i32, total: usize) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bare")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", "16384")
        .create()
        .expect("a consumer");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
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
    topic: &str,
    group: &str,
    total: usize,
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
        kafka_topics: topic.to_owned(),
        kafka_group: group.to_owned(),
        // SUIVI_BENCH_KAFKA_SHARDS: the service's shards (default: one per core).
        shards: std::env::var("SUIVI_BENCH_KAFKA_SHARDS")
            .ok()
            .map_or(0, |shards| {
                shards
                    .parse()
                    .expect("SUIVI_BENCH_KAFKA_SHARDS is a number")
            }),
        // SUIVI_BENCH_KAFKA_FORWARD=1: scale-out mode, each partition a shard.
        forward_to_kafka: std::env::var_os("SUIVI_BENCH_KAFKA_FORWARD").is_some(),
        kafka_options: std::env::var("SUIVI_BENCH_KAFKA_OPTIONS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(key, value)| (key.to_owned(), suivi::config::Secret::new(value)))
            .collect(),
        ..Settings::default()
    };
    let app = suivi::app::bind(settings.validated().expect("valid settings"))
        .await
        .expect("suivi binds");
    let metrics_url = format!("http://{}/metrics", app.http_addr());
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run(stop.clone().cancelled_owned()));
    let client = reqwest::Client::new();
    // The metrics are this process's: what the rounds before counted, read before this
    // instance joins its group. Not `round * total`: in scale-out mode a round also reads the
    // messages suivi moved to their learner's partition.
    let before = loop {
        if let Ok(response) = client.get(&metrics_url).send().await
            && response.status().is_success()
        {
            break consumed(&client, &metrics_url).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
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
        // Rendering /metrics costs a few milliseconds of a core: scraped every 10 ms it took
        // a core from the run it measures. Often at the start and near the end, where the
        // instants are taken; seldom in between.
        let pause = if counted == 0 || counted * 10 >= total * 9 {
            Duration::from_millis(2)
        } else {
            Duration::from_millis(100)
        };
        tokio::time::sleep(pause).await;
    }
    let elapsed = first.map_or(Duration::ZERO, |first| first.elapsed());
    if let Ok(response) = client.get(&metrics_url).send().await {
        let text = response.text().await.unwrap_or_default();
        for line in text.lines().filter(|line| {
            line.starts_with("suivi_journal_records_total")
                || line.starts_with("suivi_journal_fsync_duration_seconds_sum")
                || line.starts_with("suivi_journal_fsync_duration_seconds_count")
                || line.starts_with("suivi_ingest_batch_events_sum{transport=\"kafka\"")
                || line.starts_with("suivi_ingest_batch_events_count{transport=\"kafka\"")
                || line.starts_with("suivi_kafka_paused_seconds_total")
                || line.starts_with("suivi_kafka_batches_retried_total")
                || line.starts_with("suivi_ingest_request_duration_seconds_sum{transport=\"kafka\"")
        }) {
            println!("  {line}");
        }
    }
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
