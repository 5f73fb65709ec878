//! Scale-out's partials topic (`forward_to_kafka`): how soon after the last event every
//! instance's figures reflect it, with events arriving at a steady rate.
//!
//! Two `suivi serve` processes (the binary this bench is built with) share a topic of six
//! partitions on an outside Kafka-protocol broker. The bench produces the simulated programme
//! into it at `SUIVI_BENCH_PARTIALS_RATE` events/s (default 100,000) for
//! `SUIVI_BENCH_PARTIALS_SECONDS` (default 5), keyed by learner as `suivi simulate --kafka`
//! keys them, and notes the end of each partition from the deliveries. From the last
//! acknowledgement it polls each instance's `/v1/shards` every 5 ms until every shard's
//! partials, as that instance has read them, reflect the whole of its partition (a shard's head
//! is written after its records, so its position vouches for its figures): that time is the
//! convergence. Each burst is measured the same way, `SUIVI_BENCH_PARTIALS_BURSTS` (default 3).
//!
//! ```text
//! SUIVI_BENCH_KAFKA_BROKERS=127.0.0.1:19092 cargo bench --bench partials
//! ```
//!
//! The instances, the broker, the producer and the bench share the machine's cores.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use suivi::config::DEFAULT_CHAPTER_COUNT;
use suivi::registry::Registry;
use suivi::simulate::Simulation;
use suivi::simulate::kafka::message;

const PARTITIONS: i32 = 6;

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

/// A running instance: its process and HTTP address.
struct Instance {
    child: Child,
    http: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `suivi serve` in scale-out mode on `topic`, once ready.
fn start(brokers: &str, topic: &str, data_dir: &std::path::Path) -> Instance {
    let mut command = Command::new(env!("CARGO_BIN_EXE_suivi"));
    // The bench's own SUIVI_BENCH_… variables are no settings of suivi's.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SUIVI_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .arg("serve")
        .env("SUIVI_GRPC_ADDR", "127.0.0.1:0")
        .env("SUIVI_HTTP_ADDR", "127.0.0.1:0")
        .env("SUIVI_DATA_DIR", data_dir)
        .env("SUIVI_KAFKA_BROKERS", brokers)
        .env("SUIVI_KAFKA_TOPICS", topic)
        .env("SUIVI_KAFKA_GROUP", format!("{topic}-group"))
        .env("SUIVI_FORWARD_TO_KAFKA", "true")
        .env("SUIVI_PSEUDONYM_KEY", "11".repeat(32))
        .env("SUIVI_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the suivi binary runs");
    let stderr = child.stderr.take().expect("suivi's stderr");
    let (ready, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if line.contains("\"ERROR\"") || !line.starts_with('{') {
                eprintln!("suivi: {line}");
            }
            let Ok(record) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if record["fields"]["message"] == "suivi is ready" {
                let _ = ready.send(record["fields"]["http"].as_str().unwrap_or("").to_owned());
            }
        }
    });
    let http = address
        .recv_timeout(Duration::from_secs(120))
        .expect("suivi is ready within two minutes");
    Instance { child, http }
}

fn main() {
    let brokers = std::env::var("SUIVI_BENCH_KAFKA_BROKERS")
        .expect("SUIVI_BENCH_KAFKA_BROKERS names a Kafka-protocol broker (tansu, say)");
    let rate: u64 = env_or("SUIVI_BENCH_PARTIALS_RATE", 100_000);
    let seconds: u64 = env_or("SUIVI_BENCH_PARTIALS_SECONDS", 5);
    let bursts: usize = env_or("SUIVI_BENCH_PARTIALS_BURSTS", 3);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let topic = format!("partials-bench-{}", std::process::id());
    runtime.block_on(create_topics(&brokers, &topic));
    let dirs: Vec<tempfile::TempDir> = (0..2)
        .map(|_| tempfile::tempdir().expect("a data dir"))
        .collect();
    let instances: Vec<Instance> = dirs
        .iter()
        .map(|dir| start(&brokers, &topic, dir.path()))
        .collect();
    println!("two instances ready on {topic} ({PARTITIONS} partitions)");

    let registry = Registry::load(None).expect("the embedded registry");
    let per_burst = usize::try_from(rate * seconds).expect("a count");
    // A programme large enough for every burst.
    let tenth = Simulation::new(&registry, 5, 0.1, DEFAULT_CHAPTER_COUNT).num_events() as f64;
    let scale = 0.1 * 1.1 * (per_burst * bursts) as f64 / tenth;
    let simulation = Simulation::new(&registry, 5, scale, DEFAULT_CHAPTER_COUNT);
    let mut events = simulation.events();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("a producer");
    let client = reqwest::Client::new();
    let mut ends = vec![0i64; PARTITIONS as usize];
    for burst in 0..bursts {
        let batch: Vec<(String, Vec<u8>)> = events
            .by_ref()
            .take(per_burst)
            .map(|event| message(&event, true))
            .collect();
        let started = Instant::now();
        let delivered = runtime.block_on(produce_paced(&producer, &topic, &batch, rate));
        let produced_in = started.elapsed();
        let last = Instant::now();
        for (partition, offset) in delivered {
            let end = &mut ends[partition as usize];
            *end = (*end).max(offset + 1);
        }
        let mut converged = Vec::new();
        for instance in &instances {
            converged.push(runtime.block_on(until_current(&client, &instance.http, &ends, last)));
        }
        println!(
            "burst {}: {} events in {:.2} s ({:.0} events/s); every shard's partials reflect the \
             last event after {} on the instances",
            burst + 1,
            batch.len(),
            produced_in.as_secs_f64(),
            batch.len() as f64 / produced_in.as_secs_f64(),
            converged
                .iter()
                .map(|elapsed| format!("{} ms", elapsed.as_millis()))
                .collect::<Vec<_>>()
                .join(" and ")
        );
    }
}

/// Creates the topic and its compacted partials topic.
async fn create_topics(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("an admin client");
    let partials = format!("{topic}.partials");
    let topics = [
        NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1)),
        NewTopic::new(&partials, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact"),
    ];
    for created in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .expect("the broker answers CreateTopics")
    {
        created.unwrap_or_else(|(name, error)| panic!("cannot create {name}: {error}"));
    }
}

/// Produces `messages` at `rate` a second, in slices of 10 ms; answers where each went.
async fn produce_paced(
    producer: &FutureProducer,
    topic: &str,
    messages: &[(String, Vec<u8>)],
    rate: u64,
) -> Vec<(i32, i64)> {
    let slice = usize::try_from(rate / 100).unwrap_or(1).max(1);
    let started = tokio::time::Instant::now();
    let mut delivered = Vec::with_capacity(messages.len());
    let mut pending = futures::stream::FuturesUnordered::new();
    for (index, chunk) in messages.chunks(slice).enumerate() {
        tokio::time::sleep_until(started + Duration::from_millis(10 * index as u64)).await;
        for (key, payload) in chunk {
            let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic)
                .key(key.as_str())
                .payload(payload.as_slice())
                .headers(OwnedHeaders::new().insert(Header {
                    key: "content-type",
                    value: Some("application/x-protobuf"),
                }));
            pending.push(producer.send(record, Duration::from_secs(60)));
        }
        // Take the acknowledgements that came, without waiting.
        while let Some(Some(done)) = futures::FutureExt::now_or_never(pending.next()) {
            let done = done.unwrap_or_else(|(error, _)| panic!("produced: {error}"));
            delivered.push((done.partition, done.offset));
        }
    }
    while let Some(done) = pending.next().await {
        let done = done.unwrap_or_else(|(error, _)| panic!("produced: {error}"));
        delivered.push((done.partition, done.offset));
    }
    delivered
}

/// Polls `/v1/shards` until every shard's position reaches its partition's end; answers the
/// time since `since`.
async fn until_current(
    client: &reqwest::Client,
    http: &str,
    ends: &[i64],
    since: Instant,
) -> Duration {
    let deadline = since + Duration::from_secs(120);
    loop {
        let listed: Value = match client.get(format!("http://{http}/v1/shards")).send().await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        let current = listed["shards"].as_array().is_some_and(|shards| {
            shards.len() == ends.len()
                && shards.iter().all(|status| {
                    let shard = status["shard"].as_u64().unwrap_or(0) as usize;
                    status["position"].as_i64().unwrap_or(0) >= ends[shard]
                })
        });
        if current {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "not current after two minutes: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
