//! Stopping and starting again: the real binary stops on SIGTERM with exit code 0 after a final
//! snapshot, and a service restarted on the same data directory still knows every event it
//! acknowledged (the same counters, and the same ids are duplicates).

use reqwest::StatusCode;
use serde_json::json;
use suivi::snapshot::file::Record;

use crate::helpers::{Kind, Suivi, enrolments, event, json_batch, read_snapshot_dir, spawn_app};

#[tokio::test]
async fn sigterm_stops_suivi_with_a_final_snapshot_and_exit_code_0() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let data_dir = dir.path().join("data");
    let suivi = Suivi::start(&data_dir, &[]);
    let http_addr = suivi.http_addr;
    let events = json_batch(&enrolments("term", "gendarmerie", 3));
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{http_addr}/v1/events"))
        .json(&events)
        .send()
        .await
        .expect("suivi answers")
        .json()
        .await
        .expect("a JSON answer");
    assert_eq!(answer["accepted"], json!(3), "{answer}");

    let log = suivi.log();
    let status = suivi.terminate().await;
    assert_eq!(status.code(), Some(0), "{log}");

    let records = read_snapshot_dir(&dir.path().join("data").join("snapshots"));
    let totals = records
        .iter()
        .find_map(|record| match record {
            Record::Totals { counters, .. } => Some(counters),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a final snapshot with the totals: {records:?}"));
    assert_eq!(totals.enrolled, 3);
}

#[tokio::test]
async fn a_restarted_service_still_knows_every_acknowledged_event() {
    let app = spawn_app().await;
    let first = enrolments("restart", "gendarmerie", 4);
    assert_eq!(app.ingest(&first).await.accepted, 4);
    let click = event("restart-click", Kind::LinkClicked)
        .campaign("Partner-Y")
        .visitor("v1");
    let (status, answer) = app
        .post_events(&json_batch(std::slice::from_ref(&click)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["accepted"], json!(1));
    let before = (
        app.campaign_json("gendarmerie").await,
        app.campaign_json("partner-y").await,
        app.totals_json().await,
    );

    let mut app = app.restart().await;

    let after = (
        app.campaign_json("gendarmerie").await,
        app.campaign_json("partner-y").await,
        app.totals_json().await,
    );
    let counters = |value: &serde_json::Value| {
        let mut value = value.clone();
        value.as_object_mut().expect("an object").remove("as_of");
        value
    };
    assert_eq!(counters(&after.0), counters(&before.0));
    assert_eq!(counters(&after.1), counters(&before.1));
    assert_eq!(counters(&after.2), counters(&before.2));
    let again = app.ingest(&first).await;
    assert_eq!(
        (again.accepted, again.duplicates),
        (0, 4),
        "ids seen before the restart are duplicates"
    );
    let (_, answer) = app.post_events(&json_batch(&[click])).await;
    assert_eq!(answer["duplicates"], json!(1), "{answer}");
    assert_eq!(app.totals_json().await["enrolled"], json!(4));
    app.stop().await;
}
