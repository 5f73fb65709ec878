//! `GET /metrics`: the counters of what came in, by transport and reason, in a text format that
//! Prometheus' own checker (`promtool check metrics`) accepts. The recorder is process-global and
//! tests run in parallel, so values are checked to rise by at least what each test did.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Kind, TestApp, event, json_batch, spawn_app, spawn_app_with};

/// Metric samples by series, labels sorted: `name{a="x",b="y"}`.
type Samples = BTreeMap<String, f64>;

fn parse(text: &str) -> Samples {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("a sample line: {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("a numeric sample: {line:?}"));
            (series_key(series), value)
        })
        .collect()
}

/// `name{labels}` with its labels in name order, so that label order does not matter.
fn series_key(series: &str) -> String {
    match series.split_once('{') {
        None => series.to_owned(),
        Some((name, labels)) => {
            let labels = labels.strip_suffix('}').expect("labels end with }");
            let mut labels: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
            labels.sort_unstable();
            format!("{name}{{{}}}", labels.join(","))
        }
    }
}

async fn scrape(app: &TestApp) -> (String, Samples) {
    let response = app.get_response("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "the Prometheus text format: {content_type}"
    );
    let text = response.text().await.expect("a text body");
    let samples = parse(&text);
    (text, samples)
}

#[track_caller]
fn assert_rose(before: &Samples, after: &Samples, series: &str, by: f64) {
    let key = series_key(series);
    let after_value = after
        .get(&key)
        .unwrap_or_else(|| panic!("/metrics has {series}; it has {:#?}", after.keys()));
    let before_value = before.get(&key).copied().unwrap_or(0.0);
    assert!(
        after_value - before_value >= by,
        "{series} rose by {} (from {before_value} to {after_value}), at least {by} expected",
        after_value - before_value
    );
}

#[tokio::test]
async fn metrics_count_events_by_transport_and_reason() {
    let mut app = spawn_app().await;
    let (_, before) = scrape(&app).await;

    let enrol = |id: &str, learner: &str| {
        event(id, Kind::Enrolled)
            .campaign("gendarmerie")
            .learner(learner)
    };
    let response = app
        .ingest(&[
            enrol("mx-1", "u1"),
            enrol("mx-2", "u2"),
            enrol("", "u3"),
            enrol("mx-1", "u1"),
            // The id of mx-2 for another learner: a duplicate that conflicts.
            enrol("mx-2", "u9"),
        ])
        .await;
    assert_eq!((response.accepted, response.duplicates), (2, 2));
    let mut elements = json_batch(&[
        enrol("mx-3", "u3"),
        event("mx-4", Kind::ChapterCompleted)
            .campaign("gendarmerie")
            .learner("u4")
            .chapter(99),
    ]);
    elements.as_array_mut().expect("an array").push(json!(42));
    let (status, answer) = app.post_events(&elements).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["accepted"], json!(1), "{answer}");
    let (status, _) = app.post_raw_events("not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(app.totals_json().await["enrolled"], json!(3));

    let (text, after) = scrape(&app).await;
    for (series, by) in [
        (r#"suivi_events_received_total{transport="grpc"}"#, 5.0),
        (r#"suivi_events_accepted_total{transport="grpc"}"#, 2.0),
        (r#"suivi_events_duplicate_total{transport="grpc"}"#, 2.0),
        (r#"suivi_events_conflicting_total{transport="grpc"}"#, 1.0),
        (
            r#"suivi_events_rejected_total{transport="grpc",reason="missing_event_id"}"#,
            1.0,
        ),
        (r#"suivi_events_received_total{transport="http"}"#, 3.0),
        (r#"suivi_events_accepted_total{transport="http"}"#, 1.0),
        (
            r#"suivi_events_rejected_total{reason="chapter_out_of_range",transport="http"}"#,
            1.0,
        ),
        (
            r#"suivi_events_rejected_total{transport="http",reason="invalid_event"}"#,
            1.0,
        ),
        (
            r#"suivi_ingest_requests_refused_total{transport="http",reason="invalid_body"}"#,
            1.0,
        ),
        (r#"suivi_ingest_batch_events_count{transport="grpc"}"#, 1.0),
        (
            r#"suivi_ingest_request_duration_seconds_count{transport="http"}"#,
            1.0,
        ),
        (
            r#"suivi_query_request_duration_seconds_count{transport="http"}"#,
            1.0,
        ),
    ] {
        assert_rose(&before, &after, series, by);
    }
    for gauge in [
        "suivi_ingest_queue_events",
        "suivi_campaigns",
        "suivi_learners",
        "suivi_campaign_learners",
        "suivi_event_ids",
    ] {
        assert!(
            text.contains(&format!("# TYPE {gauge} gauge")),
            "/metrics describes {gauge}: {text}"
        );
    }
    assert!(
        text.contains("# HELP suivi_events_accepted_total "),
        "{text}"
    );
    // Low-cardinality labels only (style.md): never an id. A campaign (and its partner's name)
    // only on the per-campaign business gauges, bounded by the registry and
    // max_campaign_metrics (telemetry.rs); a Kafka topic and partition, bounded by the topics
    // consumed (they appear here when a Kafka test runs in the same process).
    for series in after.keys().filter(|series| series.starts_with("suivi_")) {
        let Some((family, labels)) = series.split_once('{') else {
            continue;
        };
        for label in labels.trim_end_matches('}').split(',') {
            let name = label.split_once('=').map_or(label, |(name, _)| name);
            let per_campaign = family.starts_with("suivi_campaign_") && name == "campaign"
                || family == "suivi_campaign_info" && name == "name";
            // A credential id, bounded by the credentials file that operators write.
            let per_credential = family == "suivi_credential_events_total" && name == "credential";
            assert!(
                per_campaign
                    || per_credential
                    || [
                        "transport",
                        "kind",
                        "reason",
                        "result",
                        "outcome",
                        "sink",
                        "cause",
                        "chapter",
                        "topic",
                        "partition",
                        // At most 64 shards.
                        "shard",
                        "le",
                        "quantile"
                    ]
                    .contains(&name),
                "{series} has the label {name}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_final_snapshot_is_counted() {
    let before = parse(
        &suivi::telemetry::metrics_handle()
            .expect("the recorder")
            .render(),
    );
    let mut app = spawn_app().await;
    let response = app
        .ingest(&[event("mf-1", Kind::Enrolled).learner("u1")])
        .await;
    assert_eq!(response.accepted, 1);
    app.stop().await;
    // The recorder outlives the service: read it in-process.
    let after = parse(
        &suivi::telemetry::metrics_handle()
            .expect("the recorder")
            .render(),
    );
    assert_rose(
        &before,
        &after,
        r#"suivi_snapshots_total{sink="file"}"#,
        1.0,
    );
    assert_rose(
        &before,
        &after,
        r#"suivi_snapshot_duration_seconds_count{sink="file"}"#,
        1.0,
    );
}

#[tokio::test]
async fn promtool_accepts_the_metrics() {
    let mut app = spawn_app().await;
    // Touch every family: ingest over both transports, rejections, a refusal and a query.
    let response = app
        .ingest(&[
            event("mp-1", Kind::Enrolled).learner("u1"),
            event("", Kind::Enrolled).learner("u1"),
        ])
        .await;
    assert_eq!(response.accepted, 1);
    let (status, _) = app
        .post_events(&json_batch(&[event("mp-2", Kind::LinkClicked)]))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.post_raw_events("{").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.get("/v1/totals").await;
    assert_eq!(status, StatusCode::OK);
    let (text, _) = scrape(&app).await;

    let mut promtool = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed: run scripts/test, which installs it (Debian's prometheus \
             package); this test never passes without it"
        ),
        Err(error) => panic!("cannot run promtool: {error}"),
    };
    promtool
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("promtool reads the metrics");
    let output = promtool.wait_with_output().expect("promtool finishes");
    assert!(
        output.status.success(),
        "promtool check metrics refuses /metrics ({}):\n{}{}\n--- metrics ---\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    app.stop().await;
}

#[tokio::test]
async fn per_campaign_metrics_cover_registered_campaigns_up_to_the_cap() {
    let mut app = spawn_app_with(|settings| settings.max_campaign_metrics = 2).await;
    let response = app
        .ingest(&[
            event("mc-1", Kind::Enrolled)
                .campaign("gendarmerie")
                .learner("u1"),
            event("mc-2", Kind::Enrolled)
                .campaign("not-registered")
                .learner("u2"),
        ])
        .await;
    assert_eq!(response.accepted, 2);
    let (_, campaigns) = app.get("/v1/campaigns").await;
    let mut registered: Vec<&str> = campaigns["campaigns"]
        .as_array()
        .expect("campaigns")
        .iter()
        .filter(|campaign| campaign["registered"] == json!(true))
        .map(|campaign| campaign["campaign"].as_str().expect("an id"))
        .collect();
    registered.sort_unstable();
    assert!(registered.len() > 2, "{registered:?}");

    let (_, samples) = scrape(&app).await;
    // Scrape-time figures are this service's own, so their values are exact.
    let exported: Vec<String> = samples
        .keys()
        .filter_map(|series| series.strip_prefix("suivi_campaign_enrolled_learners{"))
        .map(|labels| labels.trim_end_matches('}').to_owned())
        .collect();
    let expected: Vec<String> = registered[..2]
        .iter()
        .map(|campaign| format!("campaign=\"{campaign}\""))
        .collect();
    assert_eq!(
        exported, expected,
        "the first two registered campaigns, by id"
    );
    #[allow(clippy::cast_precision_loss)] // A few dozen campaigns.
    let omitted = (registered.len() - 2) as f64;
    assert_eq!(
        samples.get("suivi_campaign_metrics_omitted_campaigns"),
        Some(&omitted)
    );
    assert_eq!(
        samples.get("suivi_programme_enrolled_learners"),
        Some(&2.0),
        "the programme counts every campaign, registered or not"
    );
    assert_eq!(samples.get("suivi_ready"), Some(&1.0));
    assert!(
        !samples
            .keys()
            .any(|series| series.contains("not-registered")),
        "no unregistered campaign in a label"
    );
    app.stop().await;
}

/// Every `suivi_…` name the Grafana dashboard and the Prometheus alert rules read.
fn series_the_dashboard_and_alerts_read() -> std::collections::BTreeSet<String> {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut texts = vec![
        std::fs::read_to_string(deploy.join("prometheus/alerts.yml")).expect("the alert rules"),
    ];
    for entry in std::fs::read_dir(deploy.join("grafana/dashboards")).expect("the dashboards") {
        let path = entry.expect("a dashboard").path();
        texts.push(std::fs::read_to_string(&path).expect("a dashboard"));
    }
    let mut names = std::collections::BTreeSet::new();
    for text in &texts {
        for (start, _) in text.match_indices("suivi_") {
            let name: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

/// The names of the samples of a `/metrics` text (`name_bucket`, `name_count`, … for histograms).
fn sample_names(text: &str) -> std::collections::BTreeSet<String> {
    parse(text)
        .into_keys()
        .map(|series| series.split('{').next().unwrap_or_default().to_owned())
        .collect()
}

/// The names the dashboard or alerts read that a fresh `suivi serve` process (metrics are the
/// process's, so not this test binary's) does not export before any traffic, waiting up to
/// `patience` for them (Kafka's partition series come with the first statistics after the
/// assignment).
async fn missing_before_any_traffic(
    env: &[(&str, &str)],
    wanted: impl Fn(&str) -> bool,
    patience: std::time::Duration,
) -> (Vec<String>, String) {
    let data_dir = tempfile::tempdir().expect("a data dir");
    let suivi = crate::helpers::Suivi::start(data_dir.path(), env);
    let mut used: Vec<String> = series_the_dashboard_and_alerts_read()
        .into_iter()
        .filter(|name| wanted(name))
        .collect();
    assert!(used.len() > 30, "the dashboard and alerts read {used:?}");
    // The bounds on connections and requests are series too, whether or not a panel shows them.
    used.extend(
        [
            "suivi_connections_refused_total",
            "suivi_open_connections",
            "suivi_http_requests_shed_total",
        ]
        .map(str::to_owned),
    );
    let deadline = std::time::Instant::now() + patience;
    loop {
        let text = reqwest::get(format!("http://{}/metrics", suivi.http_addr))
            .await
            .expect("GET /metrics answers")
            .text()
            .await
            .expect("a body");
        let exported = sample_names(&text);
        let missing: Vec<String> = used
            .iter()
            .filter(|name| !exported.contains(*name))
            .cloned()
            .collect();
        if missing.is_empty() || std::time::Instant::now() >= deadline {
            return (missing, text);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn every_series_the_dashboard_and_alerts_read_is_exported_at_start() {
    let (missing, text) = missing_before_any_traffic(
        &[],
        |name| !name.starts_with("suivi_kafka_"),
        std::time::Duration::ZERO,
    )
    .await;
    assert!(
        missing.is_empty(),
        "a fresh suivi does not export {missing:#?}:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kafka_every_series_the_dashboard_and_alerts_read_is_exported_before_any_message() {
    let cluster =
        rdkafka::mocking::MockCluster::<rdkafka::producer::DefaultProducerContext>::new(1)
            .expect("the mock cluster starts");
    for topic in ["learner-events", "learner-events.dlq"] {
        cluster.create_topic(topic, 2, 1).expect("a topic");
    }
    let bootstrap = cluster.bootstrap_servers();
    let (missing, text) = missing_before_any_traffic(
        &[("SUIVI_KAFKA_BROKERS", bootstrap.as_str())],
        |_| true,
        std::time::Duration::from_secs(30),
    )
    .await;
    assert!(
        missing.is_empty(),
        "a fresh suivi reading Kafka does not export {missing:#?}:\n{text}"
    );
}

/// Every family `/metrics` exports is a row of `telemetry::spec::METRICS` (one table of name,
/// kind, unit, labels and help), with the `# TYPE` of its kind, the `# HELP` of its row, and no
/// label the row does not name: the recorder's families and the scrape-time gauges alike.
#[tokio::test]
async fn every_exported_family_is_the_one_row_of_the_specification_that_names_it() {
    use suivi::telemetry::spec;

    let mut app = spawn_app().await;
    let response = app
        .ingest(&[event("ms-1", Kind::Enrolled)
            .campaign("gendarmerie")
            .learner("u1")])
        .await;
    assert_eq!(response.accepted, 1);
    let (text, samples) = scrape(&app).await;
    app.stop().await;

    let mut described = 0;
    for line in text.lines().filter(|line| line.starts_with("# ")) {
        let mut words = line.splitn(4, ' ').skip(1);
        let (Some(what), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        if !name.starts_with("suivi_") {
            continue;
        }
        let metric =
            spec::metric(name).unwrap_or_else(|| panic!("{name} is not in the specification"));
        let rest = words.next().unwrap_or_default();
        match what {
            "HELP" => {
                assert_eq!(rest, metric.help, "the help of {name}");
                described += 1;
            }
            "TYPE" => assert_eq!(rest, metric.kind.as_str(), "the type of {name}"),
            _ => {}
        }
    }
    assert!(described > 40, "/metrics describes its families: {text}");
    for series in samples.keys().filter(|series| series.starts_with("suivi_")) {
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let metric = spec::metric(name)
            .or_else(|| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .filter_map(|suffix| spec::metric(name.strip_suffix(suffix)?))
                    .find(|metric| metric.kind == spec::Kind::Histogram)
            })
            .unwrap_or_else(|| panic!("{series} is of no family in the specification"));
        for label in labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
        {
            let label = label.split_once('=').map_or(label, |(label, _)| label);
            assert!(
                metric.labels.contains(&label) || label == "le",
                "{series} has the label {label}, which {} does not specify",
                metric.name
            );
        }
    }
}
