//! No sender can erase or block another, and nothing acknowledged is lost when the settings of a
//! restart leave less room than the run that acknowledged it (issue "nothing acknowledged is
//! lost": event identity, campaign and source text, unregistered campaigns, recovery under a
//! grown registry, the time zone of a checkpoint). Through the real service: in-process for what
//! senders see, the real binary where a kill -9 or a refused start is the point.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Kind, PATIENCE, Suivi, event, json_batch, spawn_app, spawn_app_with};

#[tokio::test]
async fn an_event_id_is_an_event_only_within_its_source() {
    let mut app = spawn_app().await;
    // A sender that posts the Gendarmerie LMS's next id first does not erase the real event.
    let squatter = event("lms-0001", Kind::Enrolled)
        .campaign("gendarmerie")
        .source("somebody-else")
        .learner("nobody");
    let (status, answer) = app.post_events(&json_batch(&[squatter])).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let real = event("lms-0001", Kind::Certified)
        .campaign("gendarmerie")
        .source("gendform3")
        .learner("lea");
    let answer = app.ingest(std::slice::from_ref(&real)).await;
    assert_eq!((answer.accepted, answer.duplicates), (1, 0), "{answer:?}");
    // Within its source an id still names one event, however the source is spelled.
    let resent = real.clone().source(" GendForm3 ");
    let answer = app.ingest(&[resent]).await;
    assert_eq!((answer.accepted, answer.duplicates), (0, 1), "{answer:?}");
    // Two honest LMSs that both number their events 1, 2, 3 both count.
    let numbered = |source: &str, learner: &str| {
        (1..=3)
            .map(|number| {
                event(&number.to_string(), Kind::Enrolled)
                    .campaign("la-poste")
                    .source(source)
                    .learner(&format!("{learner}-{number}"))
            })
            .collect::<Vec<_>>()
    };
    for (source, learner) in [("moodle-a", "a"), ("moodle-b", "b")] {
        let answer = app.ingest(&numbered(source, learner)).await;
        assert_eq!((answer.accepted, answer.duplicates), (3, 0), "{answer:?}");
    }

    let gendarmerie = app.campaign_json("gendarmerie").await;
    assert_eq!(gendarmerie["enrolled"], 2, "{gendarmerie}");
    assert_eq!(gendarmerie["certified"], 1, "{gendarmerie}");
    assert_eq!(app.campaign_json("la-poste").await["enrolled"], 6);
    app.stop().await;
}

#[tokio::test]
async fn control_and_bidi_characters_in_campaign_or_source_are_refused_alone() {
    let mut app = spawn_app().await;
    let good = event("good-1", Kind::Enrolled)
        .campaign("gendarmerie")
        .learner("lea");
    let batch = [
        event("evil-1", Kind::Enrolled).campaign("evil\u{0}x"),
        good.clone(),
        event("evil-2", Kind::Enrolled).campaign("gendarmerie\u{202E}eil"),
        event("evil-3", Kind::Enrolled).source("lms\r\nx"),
    ];
    let answer = app.ingest(&batch).await;
    assert_eq!(answer.accepted, 1, "{answer:?}");
    let codes: Vec<(u32, &str)> = answer
        .rejections
        .iter()
        .map(|rejection| (rejection.index, rejection.code.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            (0, "invalid_campaign"),
            (2, "invalid_campaign"),
            (3, "invalid_source")
        ]
    );
    // The same over HTTP, and the message says which character and where.
    let (status, answer) = app
        .post_events(&json_batch(&[
            event("evil-4", Kind::Enrolled).campaign("evil\u{0}x")
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["rejections"][0]["code"], "invalid_campaign");
    let message = answer["rejections"][0]["message"].as_str().unwrap();
    assert!(message.contains("'\\0' at byte 4"), "{message}");
    let (_, campaigns) = app.get("/v1/campaigns").await;
    assert!(
        !campaigns.to_string().contains("evil"),
        "no such campaign exists: {campaigns}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_flood_of_unregistered_campaigns_blocks_no_registered_campaign_nor_direct() {
    // The attack seen: eleven small anonymous requests naming thousands of made-up campaigns,
    // with the default settings.
    let mut app = spawn_app().await;
    for request in 0..11 {
        let flood: Vec<_> = (0..1000)
            .map(|number| {
                event(&format!("flood-{request}-{number}"), Kind::LinkClicked)
                    .campaign(&format!("junk-{request}-{number}"))
            })
            .collect();
        let answer = app.ingest(&flood).await;
        assert_eq!(answer.accepted, 1000, "nothing valid is refused");
        assert!(answer.rejections.is_empty(), "{:?}", answer.rejections);
    }
    // A registered partner, direct traffic and a new unregistered campaign are still counted.
    let answer = app
        .ingest(&[
            event("partner-1", Kind::Enrolled)
                .campaign("pole-emploi")
                .learner("a"),
            event("direct-1", Kind::Enrolled).campaign("").learner("b"),
            event("late-1", Kind::Enrolled)
                .campaign("a-partner-not-yet-registered")
                .learner("c"),
        ])
        .await;
    assert_eq!(answer.accepted, 3, "{answer:?}");
    assert_eq!(app.campaign_json("pole-emploi").await["enrolled"], 1);
    assert_eq!(app.campaign_json("direct").await["enrolled"], 1);
    // Past max_unregistered_campaigns (1000), the rest counts under `unregistered`.
    let unregistered = app.campaign_json("unregistered").await;
    assert_eq!(unregistered["clicks"], 10_000, "{unregistered}");
    assert_eq!(unregistered["enrolled"], 1, "{unregistered}");
    let (status, _) = app.get("/v1/campaigns/junk-10-999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let totals = app.totals_json().await;
    assert_eq!(totals["clicks"], 11_000, "the totals count everything");
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(
        metric(&metrics, "suivi_events_counted_as_unregistered_total") >= 10_001.0,
        "{metrics}"
    );
    // (The gauge suivi_unregistered_campaigns is the process's, set by every test's service.)
    assert!(
        metrics.contains("suivi_unregistered_campaigns "),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_partner_registered_after_a_flood_is_counted_on_its_own() {
    let registry = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(registry.path(), registry_text(&["gendarmerie"])).unwrap();
    let registry_path = registry.path().to_owned();
    let app = spawn_app_with(|settings| {
        settings.campaigns = Some(registry_path.clone());
        settings.max_unregistered_campaigns = 2;
    })
    .await;
    let flood: Vec<_> = (0..5)
        .map(|number| {
            event(&format!("flood-{number}"), Kind::Enrolled)
                .campaign(&format!("junk-{number}"))
                .learner(&format!("learner-{number}"))
        })
        .collect();
    assert_eq!(app.ingest(&flood).await.accepted, 5);
    std::fs::write(registry.path(), registry_text(&["gendarmerie", "cnam"])).unwrap();
    let mut app = app.restart().await;
    let answer = app
        .ingest(&[event("cnam-1", Kind::Enrolled)
            .campaign("cnam")
            .learner("lea")])
        .await;
    assert_eq!(answer.accepted, 1);
    assert_eq!(app.campaign_json("cnam").await["enrolled"], 1);
    assert_eq!(app.campaign_json("unregistered").await["enrolled"], 3);
    assert_eq!(app.campaign_json("junk-0").await["enrolled"], 1);
    app.stop().await;
}

#[tokio::test]
async fn replay_counts_every_journaled_event_under_narrower_settings_after_kill_9() {
    // Acknowledged under room for two unregistered campaigns, with no checkpoint since; the
    // restart has room for none and one more registered partner. Replay must count everything
    // where it was counted, and not re-decide admission.
    let data_dir = tempfile::tempdir().unwrap();
    let registry = data_dir.path().join("campaigns.toml");
    std::fs::write(&registry, registry_text(&["gendarmerie"])).unwrap();
    let registry_env = registry.to_str().unwrap();
    let wide = [
        ("SUIVI_CAMPAIGNS", registry_env),
        ("SUIVI_MAX_UNREGISTERED_CAMPAIGNS", "2"),
        ("SUIVI_CHECKPOINT_INTERVAL", "1h"),
    ];
    let suivi = Suivi::start(data_dir.path(), &wide);
    let events: Vec<_> = ["apec", "cnam", "inria", "gendarmerie", ""]
        .iter()
        .enumerate()
        .map(|(number, campaign)| {
            event(&format!("e-{number}"), Kind::Enrolled)
                .campaign(campaign)
                .learner(&format!("learner-{number}"))
        })
        .collect();
    let answer = post(&suivi, &json_batch(&events)).await;
    assert_eq!(answer["accepted"], 5, "{answer}");
    let before = counters(&suivi).await;
    suivi.kill();

    std::fs::write(&registry, registry_text(&["gendarmerie", "la-poste"])).unwrap();
    let narrow = [
        ("SUIVI_CAMPAIGNS", registry_env),
        ("SUIVI_MAX_UNREGISTERED_CAMPAIGNS", "0"),
        ("SUIVI_CHECKPOINT_INTERVAL", "1h"),
    ];
    let suivi = Suivi::start(data_dir.path(), &narrow);
    let after = counters(&suivi).await;
    assert_eq!(after, before);
    assert_eq!(
        before,
        json!({"apec": 1, "cnam": 1, "direct": 1, "gendarmerie": 1, "unregistered": 1, "*": 5})
    );
    // From now on the narrower settings hold: a new unregistered campaign counts under
    // `unregistered`, a known one still on its own.
    let answer = post(
        &suivi,
        &json_batch(&[
            event("e-5", Kind::Enrolled).campaign("cnam").learner("l-5"),
            event("e-6", Kind::Enrolled).campaign("ofb").learner("l-6"),
        ]),
    )
    .await;
    assert_eq!(answer["accepted"], 2, "{answer}");
    let now = counters(&suivi).await;
    assert_eq!(now["cnam"], 2);
    assert_eq!(now["unregistered"], 2);
    suivi.kill();
}

#[tokio::test]
async fn a_checkpoint_taken_in_another_time_zone_stops_the_start_with_a_clear_message() {
    let data_dir = tempfile::tempdir().unwrap();
    let suivi = Suivi::start(data_dir.path(), &[]);
    let answer = post(
        &suivi,
        &json_batch(&[event("e-1", Kind::Enrolled)
            .campaign("gendarmerie")
            .learner("lea")]),
    )
    .await;
    assert_eq!(answer["accepted"], 1, "{answer}");
    // A graceful stop writes a checkpoint, dated in Europe/Paris.
    assert!(suivi.terminate().await.success());

    let (success, log) = run_serve(data_dir.path(), &[("SUIVI_TIME_ZONE", "America/New_York")]);
    assert!(!success, "suivi must not start: {log}");
    assert!(
        log.contains("time_zone Europe/Paris, not America/New_York"),
        "the message names both zones: {log}"
    );
    // Back in its own zone, it starts and has lost nothing.
    let suivi = Suivi::start(data_dir.path(), &[]);
    assert_eq!(counters(&suivi).await["gendarmerie"], 1);
    suivi.kill();
}

#[tokio::test]
async fn a_huge_bad_value_is_quoted_back_by_a_short_prefix() {
    let mut app = spawn_app().await;
    let huge = "k".repeat(5_400_000);
    let mut bad_kind = event("e-1", Kind::Enrolled).learner("lea").json();
    bad_kind["kind"] = json!(huge);
    let mut bad_time = event("e-2", Kind::Enrolled).learner("lea").json();
    bad_time["occurred_at"] = json!(huge);
    let (status, answer) = app.post_events(&json!([bad_kind])).await;
    assert_eq!(status, StatusCode::OK, "{}", &answer.to_string()[..200]);
    let (_, answer_time) = app.post_events(&json!([bad_time])).await;
    for answer in [answer, answer_time] {
        let text = answer.to_string();
        // It was 21.6 MB: the value, escaped by Debug formatting.
        assert!(text.len() < 1024, "{} bytes: {}", text.len(), &text[..300]);
        assert!(text.contains("5400000 bytes in all"), "{text}");
    }
    app.stop().await;
}

/// A registry of `campaigns`, in the shape of config/campaigns.toml.
fn registry_text(campaigns: &[&str]) -> String {
    campaigns
        .iter()
        .map(|campaign| format!("[[campaign]]\nid = \"{campaign}\"\nname = \"{campaign}\"\n\n"))
        .collect()
}

async fn post(suivi: &Suivi, body: &Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/events", suivi.http_addr))
        .json(body)
        .send()
        .await
        .expect("suivi answers");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("a JSON answer")
}

/// Every campaign's `enrolled`, and the totals' under `*`.
async fn counters(suivi: &Suivi) -> Value {
    let mut counters = serde_json::Map::new();
    for campaign in suivi.get("/v1/campaigns").await["campaigns"]
        .as_array()
        .unwrap()
    {
        if campaign["enrolled"] != 0 {
            counters.insert(
                campaign["campaign"].as_str().unwrap().to_owned(),
                campaign["enrolled"].clone(),
            );
        }
    }
    counters.insert(
        "*".to_owned(),
        suivi.get("/v1/totals").await["enrolled"].clone(),
    );
    Value::Object(counters)
}

/// Runs `suivi serve` on `data_dir` until it ends by itself (within [`PATIENCE`]); answers
/// whether it succeeded and what it logged.
fn run_serve(data_dir: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_suivi"))
        .arg("serve")
        .env("SUIVI_GRPC_ADDR", "127.0.0.1:0")
        .env("SUIVI_HTTP_ADDR", "127.0.0.1:0")
        .env("SUIVI_DATA_DIR", data_dir)
        .env("SUIVI_PSEUDONYM_KEY", crate::helpers::PSEUDONYM_KEY)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the suivi binary runs");
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().expect("suivi can be waited for").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("suivi kept running, though it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("suivi's output");
    let log = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    (output.status.success(), log)
}

/// The value of an unlabelled series in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}
