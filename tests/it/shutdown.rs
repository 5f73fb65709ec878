//! Stopping and starting again: the real binary stops on SIGTERM with exit code 0 after a final
//! snapshot, and a service restarted on the same data directory still knows every event it
//! acknowledged (the same counters, and the same ids are duplicates).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use suivi::snapshot::file::Record;

use crate::helpers::{
    Kind, PSEUDONYM_KEY, enrolments, event, json_batch, read_snapshot_dir, spawn_app,
};

/// `suivi serve` on ports of 127.0.0.1 it picks itself, with its data under `dir`, once ready:
/// the child, its HTTP address (read from its JSON log), and its log so far and to come.
fn start_binary(dir: &Path) -> (Child, SocketAddr, Arc<Mutex<String>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_suivi"))
        .arg("serve")
        .env("SUIVI_GRPC_ADDR", "127.0.0.1:0")
        .env("SUIVI_HTTP_ADDR", "127.0.0.1:0")
        .env("SUIVI_DATA_DIR", dir.join("data"))
        .env("SUIVI_SNAPSHOT_INTERVAL", "1h")
        .env("SUIVI_PSEUDONYM_KEY", PSEUDONYM_KEY)
        .env("SUIVI_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("SUIVI_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the suivi binary runs");
    let stderr = child.stderr.take().expect("suivi's stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let (ready, http_addr) = mpsc::channel();
    let kept = log.clone();
    // Reads the log to its end, so that suivi never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line)
                && entry["fields"]["message"] == "suivi is ready"
                && let Some(http) = entry["fields"]["http"].as_str()
            {
                let _ = ready.send(http.to_owned());
            }
            let mut kept = kept.lock().expect("the log lock");
            kept.push_str(&line);
            kept.push('\n');
        }
    });
    match http_addr.recv_timeout(Duration::from_secs(20)) {
        Ok(http_addr) => {
            let http_addr = http_addr.parse().expect("the log gives an address");
            (child, http_addr, log)
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "suivi did not log that it is ready: {}",
                log.lock().expect("the log lock")
            );
        }
    }
}

#[tokio::test]
async fn sigterm_stops_suivi_with_a_final_snapshot_and_exit_code_0() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let (mut child, http_addr, log) = start_binary(dir.path());
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

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("suivi can be waited for") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "suivi still runs 20 s after SIGTERM: {}",
                log.lock().expect("the log lock")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        log.lock().expect("the log lock")
    );

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
