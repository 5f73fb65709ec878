//! Snapshots to JSON Lines files under `<data_dir>/snapshots/`: what changed, written when the
//! snapshot interval elapses (tested with tokio's paused clock, never with sleeps), and once more
//! at shutdown with the latest counters. Learner ids never reach the files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use suivi::aggregate::{Aggregator, AggregatorSettings, Applied};
use suivi::event::{EventParser, RawEvent};
use suivi::figures::Figures;
use suivi::registry::Registry;
use suivi::snapshot::file::{FileSink, Record};
use suivi::snapshot::{self, Sink};
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    Ev, Funnel, Kind, PATIENCE, event, read_snapshot_dir, record_json, spawn_app_with, within,
};

fn counters_record(kind: &str, counters: Value) -> Value {
    let mut record = counters;
    record
        .as_object_mut()
        .expect("counters are an object")
        .insert("type".to_owned(), json!(kind));
    record
}

fn totals_record(funnel: &Funnel) -> Value {
    counters_record(
        "totals",
        funnel.json("*", "Objectif IA", Some(670_000), false),
    )
}

fn gendarmerie_record(funnel: &Funnel) -> Value {
    counters_record(
        "campaign",
        funnel.json("gendarmerie", "Gendarmerie nationale", Some(100_000), true),
    )
}

fn la_poste_record(funnel: &Funnel) -> Value {
    counters_record("campaign", funnel.json("la-poste", "La Poste", None, true))
}

fn day_record(campaign: &str, day: &str, counts: [u64; 4]) -> Value {
    let [clicks, enrolled, started, certified] = counts;
    json!({"type": "day", "campaign": campaign, "day": day, "clicks": clicks,
           "enrolled": enrolled, "started": started, "certified": certified})
}

/// The newest value of each campaign, totals and day record (records as [`record_json`] gives
/// them): what a reader of the files keeps.
fn latest(records: impl IntoIterator<Item = Value>) -> BTreeMap<String, Value> {
    records
        .into_iter()
        .map(|record| {
            let key = match record["type"].as_str() {
                Some("day") => format!("day {} {}", record["campaign"], record["day"]),
                kind => format!("{} {}", kind.unwrap_or_default(), record["campaign"]),
            };
            (key, record)
        })
        .collect()
}

/// Gendarmerie: v1 clicks and u1 enrols on 10-05. La Poste: u2 is certified on 10-06.
fn first_events() -> Vec<Ev> {
    vec![
        event("s-1", Kind::LinkClicked)
            .campaign("gendarmerie")
            .visitor("visitor-in-clear")
            .day("2020-10-05"),
        event("s-2", Kind::Enrolled)
            .campaign("gendarmerie")
            .learner("learner-in-clear")
            .day("2020-10-05"),
        event("s-3", Kind::Certified)
            .campaign("la-poste")
            .learner("u2")
            .day("2020-10-06"),
    ]
}

fn first_gendarmerie() -> Funnel {
    Funnel {
        clicks: 1,
        unique_visitors: 1,
        enrolled: 1,
        ..Funnel::zero(12)
    }
}

fn first_la_poste() -> Funnel {
    Funnel {
        enrolled: 1,
        started: 1,
        chapters_completed: vec![1; 12],
        certified: 1,
        ..Funnel::zero(12)
    }
}

fn first_totals() -> Funnel {
    Funnel {
        clicks: 1,
        unique_visitors: 1,
        ..first_la_poste()
    }
}

/// The records of one snapshot of [`first_events`], in file order: campaigns by id (the totals'
/// `*` first), then each campaign's changed days.
fn first_snapshot() -> Vec<Value> {
    vec![
        totals_record(&Funnel {
            enrolled: 2,
            ..first_totals()
        }),
        gendarmerie_record(&first_gendarmerie()),
        la_poste_record(&first_la_poste()),
        day_record("*", "2020-10-05", [1, 1, 0, 0]),
        day_record("*", "2020-10-06", [0, 1, 1, 1]),
        day_record("gendarmerie", "2020-10-05", [1, 1, 0, 0]),
        day_record("la-poste", "2020-10-06", [0, 1, 1, 1]),
    ]
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_of_what_changed_is_written_when_the_interval_elapses() {
    let interval = Duration::from_secs(3600);
    let mut app = spawn_app_with(|settings| settings.snapshot_interval = interval).await;
    let response = app.ingest(&first_events()).await;
    assert_eq!(response.accepted, 3, "{response:?}");

    // Only the paused clock moves an hour here; in wall-clock time the test takes milliseconds.
    // With real sockets the paused clock also jumps ahead whenever the runtime waits for them, so
    // this test shows that a snapshot follows the interval, not that none comes before it: the
    // snapshot task's own test below checks that, on a clock that only moves when told.
    tokio::time::advance(interval).await;

    let expected = latest(first_snapshot());
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let seen = latest(app.snapshot_records().iter().map(record_json));
        if seen == expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot with every change after the interval; the files hold {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn shutdown_writes_a_final_snapshot_with_the_latest_counters() {
    let mut app =
        spawn_app_with(|settings| settings.snapshot_interval = Duration::from_secs(24 * 3600))
            .await;
    assert_eq!(app.ingest(&first_events()).await.accepted, 3);
    // u2 turns out to have been certified on 10-04: every stage moves there and 10-06 empties.
    let earlier = event("s-4", Kind::Certified)
        .campaign("la-poste")
        .learner("u2")
        .day("2020-10-04");
    assert_eq!(app.ingest(&[earlier]).await.accepted, 1);
    assert!(
        app.snapshot_records().is_empty(),
        "no snapshot before the interval or the shutdown"
    );

    app.stop().await;

    let records = app.snapshot_records();
    let taken_at: Vec<_> = records
        .iter()
        .map(|record| match record {
            Record::Campaign { taken_at, .. }
            | Record::Totals { taken_at, .. }
            | Record::Day { taken_at, .. } => *taken_at,
        })
        .collect();
    assert!(
        taken_at.windows(2).all(|pair| pair[0] == pair[1]),
        "one snapshot: {taken_at:?}"
    );
    let records: Vec<Value> = records.iter().map(record_json).collect();
    assert_eq!(
        records,
        vec![
            totals_record(&Funnel {
                enrolled: 2,
                ..first_totals()
            }),
            gendarmerie_record(&first_gendarmerie()),
            la_poste_record(&first_la_poste()),
            day_record("*", "2020-10-04", [0, 1, 1, 1]),
            day_record("*", "2020-10-05", [1, 1, 0, 0]),
            day_record("*", "2020-10-06", [0, 0, 0, 0]),
            day_record("gendarmerie", "2020-10-05", [1, 1, 0, 0]),
            day_record("la-poste", "2020-10-04", [0, 1, 1, 1]),
            day_record("la-poste", "2020-10-06", [0, 0, 0, 0]),
        ]
    );

    for file in std::fs::read_dir(app.snapshot_dir()).expect("a snapshot dir") {
        let text = std::fs::read_to_string(file.expect("an entry").path()).expect("readable");
        assert!(
            !text.contains("in-clear"),
            "learner and visitor ids never reach snapshots: {text}"
        );
    }
}

/// The snapshot task on its own, with figures fed directly, so that the paused clock alone
/// decides when it writes: nothing before the interval, what changed when it elapses, nothing
/// when nothing changed, and the rest when told to stop.
#[tokio::test(start_paused = true)]
async fn the_snapshot_task_writes_each_interval_only_what_changed_and_a_final_snapshot() {
    let data_dir = tempfile::tempdir().expect("a temporary dir");
    let snapshot_dir = data_dir.path().join("snapshots");
    let registry = Registry::load(None).expect("the embedded registry");
    let figures = Arc::new(Figures::new(&registry, 12, Utc::now()));
    let mut aggregator = Aggregator::new(
        AggregatorSettings {
            time_zone: chrono_tz::Europe::Paris,
            chapter_count: 12,
            max_unregistered_campaigns: 1000,
        },
        registry
            .campaigns
            .iter()
            .map(|campaign| campaign.id.clone()),
    );
    let parser = EventParser::new(12, [7; 32]);
    let mut apply = |events: &[Ev]| {
        for event in events {
            let message = event.proto();
            let parsed = parser
                .parse(&RawEvent::from(&message), Utc::now())
                .expect("a valid event");
            assert_eq!(
                aggregator.apply(&parsed).expect("a campaign slot"),
                Applied::Accepted
            );
        }
        figures.publish(0, aggregator.drain_changes(), Utc::now());
    };
    let interval = Duration::from_secs(60);
    let sink = FileSink::new(&snapshot_dir, chrono_tz::Europe::Paris).expect("a file sink");
    let stop = CancellationToken::new();
    let running = tokio::spawn(snapshot::run(
        figures.clone(),
        vec![Sink::File(sink)],
        snapshot::Schedule {
            interval,
            retry_max: interval,
        },
        Arc::default(),
        stop.clone(),
    ));
    let records = || read_snapshot_dir(&snapshot_dir);
    let wait_for = |count: usize| {
        let records = &records;
        async move {
            let deadline = std::time::Instant::now() + PATIENCE;
            loop {
                let now = records();
                if now.len() >= count {
                    return now;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{count} records expected, {} written",
                    now.len()
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };

    apply(&first_events());
    settle().await;
    tokio::time::advance(interval - Duration::from_millis(1)).await;
    settle().await;
    assert!(
        records().is_empty(),
        "nothing is written before the interval"
    );

    tokio::time::advance(Duration::from_millis(1)).await;
    let first = first_snapshot();
    let written = wait_for(first.len()).await;
    assert_eq!(written.iter().map(record_json).collect::<Vec<_>>(), first);

    // Only La Poste changes: its records and the totals', nothing of the Gendarmerie.
    apply(&[event("s-5", Kind::Enrolled)
        .campaign("la-poste")
        .learner("u5")
        .day("2020-10-06")]);
    tokio::time::advance(interval).await;
    let second = vec![
        totals_record(&Funnel {
            enrolled: 3,
            ..first_totals()
        }),
        la_poste_record(&Funnel {
            enrolled: 2,
            ..first_la_poste()
        }),
        day_record("*", "2020-10-06", [0, 2, 1, 1]),
        day_record("la-poste", "2020-10-06", [0, 2, 1, 1]),
    ];
    let written = wait_for(first.len() + second.len()).await;
    assert_eq!(
        written[first.len()..]
            .iter()
            .map(record_json)
            .collect::<Vec<_>>(),
        second
    );

    // Nothing changes: nothing is written.
    tokio::time::advance(interval).await;
    settle().await;
    assert_eq!(records().len(), first.len() + second.len());

    // A change short of the interval is written when the task is told to stop.
    apply(&[event("s-6", Kind::Certified)
        .campaign("gendarmerie")
        .learner("learner-in-clear")
        .day("2020-10-07")]);
    tokio::time::advance(interval / 2).await;
    stop.cancel();
    within(PATIENCE, running)
        .await
        .expect("the snapshot task stops once told")
        .expect("the snapshot task does not panic");
    let last = vec![
        totals_record(&Funnel {
            enrolled: 3,
            started: 2,
            chapters_completed: vec![2; 12],
            certified: 2,
            ..first_totals()
        }),
        gendarmerie_record(&Funnel {
            started: 1,
            chapters_completed: vec![1; 12],
            certified: 1,
            ..first_gendarmerie()
        }),
        day_record("*", "2020-10-07", [0, 0, 1, 1]),
        day_record("gendarmerie", "2020-10-07", [0, 0, 1, 1]),
    ];
    let written = records();
    assert_eq!(
        written[first.len() + second.len()..]
            .iter()
            .map(record_json)
            .collect::<Vec<_>>(),
        last
    );
}

/// Lets every task that can run, run (the paused clock does not move meanwhile), and gives a
/// snapshot write already started on a blocking thread the time to finish.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}
