//! Arbitrary input never breaks suivi: whatever the body, the event fields or the query, every
//! answer is a batch result that accounts for each event (accepted, duplicate or rejected by
//! index), or a 4xx with a JSON error, and the service keeps answering afterwards.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::StatusCode;
use serde_json::{Value, json};
use suivi::event::RejectReason;
use suivi::proto;

use crate::helpers::{TestApp, spawn_app};

const CASES: u32 = 64;

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        // These tests keep no regression files: a failure prints its minimal input.
        failure_persistence: None,
        ..Config::default()
    })
}

/// A service on a multi-threaded runtime of its own, so that plain (synchronous) proptest cases
/// can call it through `block_on`.
fn start() -> (tokio::runtime::Runtime, TestApp) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let app = runtime.block_on(spawn_app());
    (runtime, app)
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A JSON value for one event field: often plausible, sometimes anything at all.
fn field(plausible: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Value> {
    prop_oneof![4 => plausible, 1 => any_json()]
}

fn text(pattern: &'static str) -> impl Strategy<Value = Value> {
    pattern.prop_map(Value::String)
}

/// An object with the event fields, each maybe missing, plausible or arbitrary.
fn event_object() -> impl Strategy<Value = Value> {
    let kind = prop::sample::select(vec![
        "link_clicked",
        "enrolled",
        "course_started",
        "chapter_completed",
        "certified",
        "graduated",
        "",
    ])
    .prop_map(|kind| json!(kind));
    let occurred_at = prop_oneof![
        (1_514_764_800i64..1_900_000_000).prop_map(|seconds| {
            json!(
                chrono::DateTime::from_timestamp(seconds, 0)
                    .expect("in range")
                    .to_rfc3339()
            )
        }),
        text(".{0,32}"),
    ];
    let chapter = prop_oneof![
        (-2i64..40).prop_map(|c| json!(c)),
        any::<i64>().prop_map(|c| json!(c))
    ];
    (
        prop::option::of(field(text("[a-z0-9-]{0,12}|.{0,140}"))),
        prop::option::of(field(kind)),
        prop::option::of(field(text("[A-Za-z -]{0,10}|.{0,70}"))),
        prop::option::of(field(text("[a-z]{0,10}|.{0,70}"))),
        prop::option::of(field(text("[a-z0-9]{0,6}|.{0,140}"))),
        prop::option::of(field(text("[a-z0-9]{0,6}|.{0,140}"))),
        prop::option::of(field(occurred_at)),
        prop::option::of(field(chapter)),
        prop::option::of(any_json()),
    )
        .prop_map(
            |(
                event_id,
                kind,
                campaign,
                source,
                learner_id,
                visitor_id,
                occurred_at,
                chapter,
                extra,
            )| {
                let mut object = serde_json::Map::new();
                for (name, value) in [
                    ("event_id", event_id),
                    ("kind", kind),
                    ("campaign", campaign),
                    ("source", source),
                    ("learner_id", learner_id),
                    ("visitor_id", visitor_id),
                    ("occurred_at", occurred_at),
                    ("chapter", chapter),
                    ("something_else", extra),
                ] {
                    if let Some(value) = value {
                        object.insert(name.to_owned(), value);
                    }
                }
                Value::Object(object)
            },
        )
}

/// A request body, and the number of events it holds when it is a batch.
fn body() -> impl Strategy<Value = (Vec<u8>, Option<usize>)> {
    let batch = prop::collection::vec(prop_oneof![4 => event_object(), 1 => any_json()], 0..8);
    prop_oneof![
        batch.clone().prop_map(|events| {
            let count = events.len();
            (Value::Array(events).to_string().into_bytes(), Some(count))
        }),
        batch.prop_map(|events| {
            let count = events.len();
            (
                json!({ "events": events }).to_string().into_bytes(),
                Some(count),
            )
        }),
        any_json().prop_map(|value| {
            let count = match &value {
                Value::Array(events) => Some(events.len()),
                Value::Object(object) => {
                    object.get("events").and_then(Value::as_array).map(Vec::len)
                }
                _ => None,
            };
            (value.to_string().into_bytes(), count)
        }),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|bytes| (bytes, None)),
    ]
}

/// Checks an ingest answer for a batch of `count` events: every event accounted for once.
fn check_tally(
    accepted: u64,
    duplicates: u64,
    rejections: &[(u64, String)],
    count: usize,
) -> Result<(), TestCaseError> {
    let count = count as u64;
    prop_assert_eq!(accepted + duplicates + rejections.len() as u64, count);
    let indexes: BTreeSet<u64> = rejections.iter().map(|(index, _)| *index).collect();
    prop_assert_eq!(indexes.len(), rejections.len(), "one rejection per event");
    prop_assert!(indexes.iter().all(|index| *index < count));
    for (_, code) in rejections {
        prop_assert!(
            RejectReason::CODES.contains(&code.as_str()),
            "known code {}",
            code
        );
    }
    Ok(())
}

fn check_error(status: StatusCode, body: &Value) -> Result<(), TestCaseError> {
    prop_assert!(status.is_client_error(), "a 4xx, not {} {}", status, body);
    prop_assert!(
        body["code"].is_string() && body["message"].is_string(),
        "{}",
        body
    );
    Ok(())
}

#[test]
fn arbitrary_http_bodies_get_a_batch_result_or_a_json_error() {
    let (runtime, mut app) = start();
    runner()
        .run(&body(), |(body, count)| {
            let (status, answer) = runtime.block_on(app.post_raw_events(body.clone()));
            if status != StatusCode::OK {
                return check_error(status, &answer);
            }
            let count = count.unwrap_or_else(|| {
                panic!(
                    "{} is not a batch, yet answered {answer}",
                    String::from_utf8_lossy(&body)
                )
            });
            let rejections: Vec<(u64, String)> = answer["rejections"]
                .as_array()
                .expect("rejections")
                .iter()
                .map(|r| {
                    (
                        r["index"].as_u64().expect("index"),
                        r["code"].as_str().expect("code").to_owned(),
                    )
                })
                .collect();
            check_tally(
                answer["accepted"].as_u64().expect("accepted"),
                answer["duplicates"].as_u64().expect("duplicates"),
                &rejections,
                count,
            )
        })
        .expect("every body is answered properly");
    let (status, _) = runtime.block_on(app.get("/healthz"));
    assert_eq!(status, StatusCode::OK, "suivi still answers");
    runtime.block_on(app.stop());
}

fn any_event() -> impl Strategy<Value = proto::LearnerEvent> {
    let occurred_at = prop::option::of(prop_oneof![
        (1_514_764_800i64..1_900_000_000, 0i32..1_000_000_000)
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
        (any::<i64>(), any::<i32>())
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    ]);
    (
        "[a-z0-9-]{0,12}|.{0,140}",
        prop_oneof![4 => 0i32..6, 1 => any::<i32>()],
        "[A-Za-z -]{0,10}|.{0,70}",
        "[a-z]{0,10}|.{0,70}",
        "[a-z0-9]{0,6}|.{0,140}",
        "[a-z0-9]{0,6}|.{0,140}",
        occurred_at,
        prop_oneof![4 => 0u32..40, 1 => any::<u32>()],
    )
        .prop_map(
            |(event_id, kind, campaign, source, learner_id, visitor_id, occurred_at, chapter)| {
                proto::LearnerEvent {
                    event_id,
                    kind,
                    campaign,
                    source,
                    learner_id,
                    visitor_id,
                    occurred_at,
                    chapter,
                }
            },
        )
}

#[test]
fn arbitrary_grpc_events_are_each_accounted_for() {
    let (runtime, mut app) = start();
    let client = runtime.block_on(app.ingest_client());
    runner()
        .run(&prop::collection::vec(any_event(), 0..8), |events| {
            let count = events.len();
            let mut client = client.clone();
            let response = runtime
                .block_on(client.ingest(proto::IngestRequest { events }))
                .map_err(|status| TestCaseError::fail(format!("Ingest failed: {status:?}")))?
                .into_inner();
            let rejections: Vec<(u64, String)> = response
                .rejections
                .iter()
                .map(|r| (u64::from(r.index), r.code.clone()))
                .collect();
            check_tally(
                u64::from(response.accepted),
                u64::from(response.duplicates),
                &rejections,
                count,
            )
        })
        .expect("every batch is answered properly");
    let (status, _) = runtime.block_on(app.get("/readyz"));
    assert_eq!(status, StatusCode::OK, "suivi is still ready");
    runtime.block_on(app.stop());
}

#[test]
fn arbitrary_queries_get_counters_or_a_json_error() {
    let (runtime, mut app) = start();
    let day = prop_oneof![
        Just(None),
        (0u32..400_000).prop_map(|n| Some(format!(
            "{}-{:02}-{:02}",
            2000 + n % 250,
            n % 14,
            n % 33
        ))),
        ".{0,12}".prop_map(Some),
    ];
    let campaign = ".{1,70}".prop_filter("a path segment", |c| c != "." && c != "..");
    runner()
        .run(&(campaign, day.clone(), day), |(campaign, from, to)| {
            let mut url = reqwest::Url::parse(&app.url("/")).expect("a URL");
            url.path_segments_mut()
                .expect("a base URL")
                .clear()
                .extend(["v1", "campaigns", &campaign, "timeline"]);
            {
                let mut query = url.query_pairs_mut();
                if let Some(from) = &from {
                    query.append_pair("from", from);
                }
                if let Some(to) = &to {
                    query.append_pair("to", to);
                }
            }
            let (status, body) = runtime.block_on(async {
                let response = app.http.get(url.clone()).send().await.expect("an answer");
                let status = response.status();
                let text = response.text().await.expect("a body");
                (
                    status,
                    serde_json::from_str::<Value>(&text).unwrap_or(json!({"not_json": text})),
                )
            });
            if status == StatusCode::OK {
                prop_assert!(body["days"].is_array(), "{} {}", url, body);
                Ok(())
            } else {
                check_error(status, &body)
            }
        })
        .expect("every query is answered properly");
    let (status, _) = runtime.block_on(app.get("/healthz"));
    assert_eq!(status, StatusCode::OK, "suivi still answers");
    runtime.block_on(app.stop());
}
