//! Scale-out over Kafka (`forward_to_kafka`, product.md §6) against librdkafka's mock cluster:
//! several `suivi serve` processes in one consumer group, each partition of the topic a shard
//! counted by one of them, every one answering the programme-wide figures from the partials
//! topic. Events come over Kafka (from a producer that does not place them by learner, so
//! suivi moves them) and over gRPC to one instance (which forwards them), for the same
//! campaigns and learners. They all snapshot to one PostgreSQL database (the machine's, as in
//! `postgres`), whose views then hold the reference's figures exactly.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use suivi::proto;
use suivi::proto::counter_service_client::CounterServiceClient;

use crate::helpers::{Suivi, spawn_app};
use crate::kafka::{
    CONSUME_PATIENCE, Counters, cluster, messages, metric_of_process, process_counters, produce,
    producer, reference, simulated, until_counted,
};
use crate::postgres::{self, FiguresJson, TestDatabase, postgres_difference};

/// The environment of an instance of the group on `bootstrap`'s `topic`, its Kafka options in
/// `config` (a short session: a killed member's partitions move within seconds).
fn scale_out_env<'a>(
    bootstrap: &'a str,
    topic: &'a str,
    config: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("SUIVI_CONFIG", config),
        ("SUIVI_KAFKA_BROKERS", bootstrap),
        ("SUIVI_KAFKA_TOPICS", topic),
        ("SUIVI_FORWARD_TO_KAFKA", "true"),
        ("SUIVI_CHECKPOINT_INTERVAL", "300ms"),
        ("SUIVI_KAFKA_BATCH_EVENTS", "500"),
    ]
}

/// A settings file with Kafka options for quick group changes, and `more` options (lines of
/// the `[kafka_options]` table).
fn kafka_config(dir: &Path, more: &str) -> String {
    let config = dir.join("suivi.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka_options]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"300\"\n{more}"
        ),
    )
    .expect("the config file");
    config.to_str().expect("a UTF-8 path").to_owned()
}

/// Sends `events` to `suivi` over gRPC; each batch is answered once Kafka has it.
async fn send_over_grpc(suivi: &Suivi, events: &[proto::LearnerEvent]) {
    let mut client = suivi.ingest_client().await;
    for batch in events.chunks(1000) {
        let answer = client
            .ingest(proto::IngestRequest {
                events: batch.to_vec(),
            })
            .await
            .expect("the front takes the events")
            .into_inner();
        assert!(answer.rejections.is_empty(), "{:?}", answer.rejections);
        assert_eq!(answer.accepted as usize, batch.len());
    }
}

/// What a suivi that got `events` once over gRPC answers: every campaign's counters and
/// timeline, and the totals', as PostgreSQL's views should hold them.
async fn reference_figures(events: &[proto::LearnerEvent]) -> FiguresJson {
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
    let figures = postgres::live(&app).await;
    app.stop().await;
    figures
}

/// Waits until PostgreSQL's views hold `expected`, or fails saying how they differ.
async fn until_postgres_holds(client: &tokio_postgres::Client, expected: &FiguresJson, what: &str) {
    eventually(Duration::from_millis(200), || async move {
        match postgres_difference(client, expected).await {
            None => Ok(()),
            Some(difference) => Err(format!(
                "{what}: PostgreSQL's views do not hold the reference's figures after {CONSUME_PATIENCE:?}: {difference}"
            )),
        }
    })
    .await;
}

/// Asks `check` every `every` until it answers `Ok`, and answers that; fails with its last
/// `Err` once [`CONSUME_PATIENCE`] is over.
async fn eventually<T, F, Fut>(every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + CONSUME_PATIENCE;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(why) => assert!(Instant::now() < deadline, "{why}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Checks that `suivi`'s gRPC `GetTotals` and `GetCampaign` of every campaign give the counts of
/// `expected` (the reference's, as HTTP JSON).
async fn grpc_equals_reference(suivi: &Suivi, expected: &Counters) {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", suivi.grpc_addr))
        .expect("a valid URI")
        .connect()
        .await
        .expect("connects to suivi's gRPC API");
    let mut counters = CounterServiceClient::new(channel);
    let counts = |counters: &proto::CampaignCounters| {
        json!({
            "clicks": counters.clicks,
            "unique_visitors": counters.unique_visitors,
            "enrolled": counters.enrolled,
            "started": counters.started,
            "chapters_completed": counters.chapters_completed,
            "certified": counters.certified,
        })
    };
    let of_json = |counters: &Value| {
        json!({
            "clicks": counters["clicks"],
            "unique_visitors": counters["unique_visitors"],
            "enrolled": counters["enrolled"],
            "started": counters["started"],
            "chapters_completed": counters["chapters_completed"],
            "certified": counters["certified"],
        })
    };
    let totals = counters
        .get_totals(proto::GetTotalsRequest {})
        .await
        .expect("GetTotals answers")
        .into_inner()
        .totals
        .expect("the totals");
    assert_eq!(counts(&totals), of_json(&expected.totals), "GetTotals");
    for (campaign, reference) in &expected.campaigns {
        let got = counters
            .get_campaign(proto::GetCampaignRequest {
                campaign: campaign.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("GetCampaign {campaign}: {status}"))
            .into_inner()
            .counters
            .expect("the counters");
        assert_eq!(counts(&got), of_json(reference), "GetCampaign {campaign}");
    }
}

/// `/v1/shards` of `suivi` once every shard's partials reflect the whole of its partitions.
async fn until_shards_current(suivi: &Suivi, shards: usize) -> Vec<Value> {
    eventually(Duration::from_millis(200), || async move {
        let listed = suivi.get("/v1/shards").await;
        let statuses = listed["shards"].as_array().cloned().unwrap_or_default();
        let current = statuses.len() == shards
            && statuses
                .iter()
                .all(|status| status["lag"] == 0 && status["end"].as_i64() > Some(0));
        if current {
            Ok(statuses)
        } else {
            Err(format!("the shards are not current: {listed}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_one_added_each_answer_the_exact_programme() {
    let topic = "learner-events-scale-out";
    let partitions = 6;
    let cluster = cluster(topic, 1, partitions);
    cluster
        .create_topic(&format!("{topic}.partials"), 1, 1)
        .expect("the partials topic");
    let bootstrap = cluster.bootstrap_servers();
    let events = simulated(31, 0.005);
    let expected = reference(&events).await;
    let expected_tables = reference_figures(&events).await;
    let _server = postgres::shared().await;
    let database = TestDatabase::create().await;
    let url = database.url();
    // Half over Kafka and half over gRPC, interleaved: a learner's events come both ways.
    let (over_kafka, over_grpc): (Vec<_>, Vec<_>) = events
        .iter()
        .cloned()
        .enumerate()
        .partition(|(index, _)| index % 2 == 0);
    let over_kafka: Vec<proto::LearnerEvent> = over_kafka.into_iter().map(|(_, e)| e).collect();
    let over_grpc: Vec<proto::LearnerEvent> = over_grpc.into_iter().map(|(_, e)| e).collect();
    let to_kafka = messages(&over_kafka);
    let (kafka_first, kafka_rest) = to_kafka.split_at(to_kafka.len() / 2);
    let (grpc_first, grpc_rest) = over_grpc.split_at(over_grpc.len() / 2);

    let config_dir = tempfile::tempdir().expect("a config dir");
    let config = kafka_config(config_dir.path(), "");
    let mut env = scale_out_env(&bootstrap, topic, &config);
    // Every instance snapshots every shard's rows to the one database, often.
    env.extend([
        ("SUIVI_POSTGRES_URL", url.as_str()),
        ("SUIVI_SNAPSHOT_INTERVAL", "200ms"),
        ("SUIVI_SNAPSHOT_RETRY_MAX", "1s"),
    ]);
    let dirs: Vec<tempfile::TempDir> = (0..4)
        .map(|_| tempfile::tempdir().expect("a data dir"))
        .collect();
    let one = Suivi::start(dirs[0].path(), &env);
    let two = Suivi::start(dirs[1].path(), &env);
    let three = Suivi::start(dirs[2].path(), &env);

    // The producer's own partitioner places messages by another hash than suivi's: suivi moves
    // those to their learner's partition.
    let producer = producer(&bootstrap);
    produce(&producer, topic, kafka_first).await;
    send_over_grpc(&one, grpc_first).await;
    // Killed mid-stream, once it has counted something.
    let second = &two;
    eventually(Duration::from_millis(20), || async move {
        let counted =
            metric_of_process(second, r#"suivi_events_received_total{transport="kafka"}"#).await;
        if counted > 0.0 {
            Ok(())
        } else {
            Err(format!(
                "the second instance counts nothing: {}",
                second.log()
            ))
        }
    })
    .await;
    let log = two.kill();
    assert!(!log.contains("panicked"), "{log}");
    produce(&producer, topic, kafka_rest).await;
    send_over_grpc(&three, grpc_rest).await;
    let four = Suivi::start(dirs[3].path(), &env);

    for (name, suivi) in [("one", &one), ("three", &three), ("four", &four)] {
        until_counted(
            || process_counters(suivi),
            &expected,
            &format!("instance {name}, after one was killed and one added"),
        )
        .await;
    }
    // Over gRPC too: every instance's GetTotals and GetCampaign of every campaign.
    for suivi in [&one, &three, &four] {
        grpc_equals_reference(suivi, &expected).await;
    }
    // Every shard is current and counted by a live instance; none is counted twice.
    let statuses = until_shards_current(&one, partitions as usize).await;
    let mut owned = vec![0; partitions as usize];
    for suivi in [&one, &three, &four] {
        let listed = suivi.get("/v1/shards").await;
        for status in listed["shards"].as_array().expect("shards") {
            if status["owned_here"] == true {
                owned[status["shard"].as_u64().expect("a number") as usize] += 1;
            }
        }
    }
    assert_eq!(owned, vec![1; partitions as usize], "{statuses:?}");
    let mut moved = 0.0;
    for suivi in [&one, &three, &four] {
        moved += metric_of_process(suivi, "suivi_kafka_moved_messages_total").await;
    }
    assert!(
        moved > 0.0,
        "messages outside their learner's partition were moved"
    );
    // The views sum the rows of every shard, each at the latest position any instance wrote
    // (the killed one's included): the reference's figures, exactly.
    let client = database.client().await;
    until_postgres_holds(&client, &expected_tables, "while the instances run").await;
    let shards: i64 = client
        .query_one(
            "SELECT count(DISTINCT shard) FROM suivi.shard_counters",
            &[],
        )
        .await
        .expect("the shard rows")
        .get(0);
    assert_eq!(shards, i64::from(partitions), "a row per shard");
    for suivi in [one, three, four] {
        let status = suivi.terminate().await;
        assert!(status.success(), "{status}");
    }
    // Their final snapshots take nothing back.
    assert_eq!(postgres_difference(&client, &expected_tables).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_back_at_its_former_owner_resumes_from_its_parked_state() {
    let topic = "learner-events-parked";
    let partitions = 6;
    let cluster = cluster(topic, 1, partitions);
    cluster
        .create_topic(&format!("{topic}.partials"), 1, 1)
        .expect("the partials topic");
    let bootstrap = cluster.bootstrap_servers();
    let events = simulated(32, 0.004);
    let expected = reference(&events).await;
    let produced = messages(&events);
    let (first, second) = produced.split_at(produced.len() / 2);
    // Eager rebalances (range): every partition goes back at once when the second leaves.
    let config_dir = tempfile::tempdir().expect("a config dir");
    let config = kafka_config(
        config_dir.path(),
        "\"partition.assignment.strategy\" = \"range\"\n",
    );
    let env = scale_out_env(&bootstrap, topic, &config);
    let (dir_one, dir_two) = (
        tempfile::tempdir().expect("a data dir"),
        tempfile::tempdir().expect("a data dir"),
    );
    let producer = producer(&bootstrap);
    produce(&producer, topic, first).await;
    let one = Suivi::start(dir_one.path(), &env);
    until_shards_owned(&one, partitions as usize).await;
    // A second instance takes some of the partitions over, counts, and leaves.
    let two = Suivi::start(dir_two.path(), &env);
    until_shards_owned(&two, 1).await;
    produce(&producer, topic, second).await;
    until_counted(|| process_counters(&two), &expected, "the second instance").await;
    let status = two.terminate().await;
    assert!(status.success(), "{status}");
    // The first takes them back from where it left them, not from their beginning: each event
    // is accepted here at most once (a rebuilt shard would accept its events again).
    until_counted(
        || process_counters(&one),
        &expected,
        "after the second left",
    )
    .await;
    let restored = metric_of_process(&one, "suivi_shards_restored_total").await;
    assert!(
        restored >= 1.0,
        "no shard was restored: {}\n{}",
        one.get("/v1/shards").await,
        one.log()
    );
    let accepted =
        metric_of_process(&one, r#"suivi_events_accepted_total{transport="kafka"}"#).await;
    assert!(
        accepted <= events.len() as f64,
        "{accepted} events accepted here, of {}",
        events.len()
    );
    let status = one.terminate().await;
    assert!(status.success(), "{status}");
}

/// Waits until `suivi` counts at least `shards` shards.
async fn until_shards_owned(suivi: &Suivi, shards: usize) {
    eventually(Duration::from_millis(100), || async move {
        let listed = suivi.get("/v1/shards").await;
        let owned = listed["shards"].as_array().map_or(0, |all| {
            all.iter()
                .filter(|status| status["owned_here"] == true)
                .count()
        });
        if owned >= shards {
            Ok(())
        } else {
            Err(format!("owns {owned} shards, not {shards}: {listed}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_marked_placed_in_the_wrong_partition_is_moved_and_counted() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::FutureRecord;

    let topic = "learner-events-marked";
    let cluster = cluster(topic, 1, 6);
    cluster
        .create_topic(&format!("{topic}.partials"), 1, 1)
        .expect("the partials topic");
    let bootstrap = cluster.bootstrap_servers();
    let config_dir = tempfile::tempdir().expect("a config dir");
    let config = kafka_config(config_dir.path(), "");
    let env = scale_out_env(&bootstrap, topic, &config);
    let dir = tempfile::tempdir().expect("a data dir");
    let suivi = Suivi::start(dir.path(), &env);
    // Every message in partition 0 and marked as placed by suivi, which it was not: those of
    // learners of other partitions must still count, once.
    let producer = producer(&bootstrap);
    let count = 60;
    for event in crate::helpers::enrolments("marked", "gendarmerie", count) {
        let payload = event.json().to_string();
        let record: FutureRecord<'_, str, str> = FutureRecord::to(topic)
            .partition(0)
            .key("anything")
            .payload(payload.as_str())
            .headers(OwnedHeaders::new().insert(Header {
                key: "suivi-placed",
                value: Some("1"),
            }));
        producer
            .send(record, Duration::from_secs(30))
            .await
            .unwrap_or_else(|(error, _)| panic!("produced: {error}"));
    }
    let counting = &suivi;
    eventually(Duration::from_millis(100), || async move {
        let enrolled = counting.get("/v1/campaigns/gendarmerie").await["enrolled"]
            .as_u64()
            .unwrap_or(0);
        if enrolled == count as u64 {
            Ok(())
        } else {
            Err(format!("{enrolled} of {count} enrolments counted"))
        }
    })
    .await;
    assert!(metric_of_process(&suivi, "suivi_kafka_moved_messages_total").await > 0.0);
    let status = suivi.terminate().await;
    assert!(status.success(), "{status}");
}
