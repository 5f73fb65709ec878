//! Partner reports, made the way people make them: `suivi report` (the real binary) against the
//! snapshot files and against PostgreSQL, `GET /v1/campaigns/{campaign}/report`, and the
//! half-quarterly writer. Their figures equal the live counters summed over the period's days;
//! the HTML page opens in headless Chromium (Debian's `chromium`, which `scripts/test` installs)
//! and its screenshot shows the charts. A missing Chromium or PostgreSQL fails these tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::DateTime;
use reqwest::StatusCode;
use serde_json::Value;
use suivi::registry::Registry;
use suivi::report::period;
use suivi::simulate::{SendSettings, Simulation, send};

use crate::helpers::{Ev, Kind, PATIENCE, TestApp, event, spawn_app_with};
use crate::postgres::{TestDatabase, programme_events, shared, spawn_app_with_postgres};

const SUIVI: &str = env!("CARGO_BIN_EXE_suivi");

/// Runs `suivi report args…` with no `SUIVI_…` variable of the test's environment; returns
/// stdout, failing the test (with stderr) on a non-zero exit.
fn suivi_report(args: &[&str]) -> String {
    let mut command = Command::new(SUIVI);
    command.arg("report").args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("SUIVI_") {
            command.env_remove(name);
        }
    }
    let output = command.output().expect("suivi report runs");
    assert!(
        output.status.success(),
        "suivi report {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// The sum of each count of `days` (a timeline from the HTTP API), as a report's flow.
fn flow(days: &Value) -> Value {
    let mut sums = [0u64; 4];
    for day in days["days"].as_array().expect("days") {
        for (sum, name) in sums
            .iter_mut()
            .zip(["clicks", "enrolled", "started", "certified"])
        {
            *sum += day[name].as_u64().expect("a count");
        }
    }
    serde_json::json!({"clicks": sums[0], "enrolled": sums[1], "started": sums[2], "certified": sums[3]})
}

/// What a report on `campaign` (`*` for the programme) for 2020-Q4-2 must say, from the live
/// API: new in the period and in the one before, everything up to its end, and the funnel.
async fn expected(app: &TestApp, campaign: &str) -> Value {
    let base = if campaign == "*" {
        "/v1/totals".to_owned()
    } else {
        format!("/v1/campaigns/{campaign}")
    };
    let timeline = |range: &str| format!("{base}/timeline?{range}");
    let (_, in_period) = app.get(&timeline("from=2020-11-16&to=2020-12-31")).await;
    let (_, in_previous) = app.get(&timeline("from=2020-10-01&to=2020-11-15")).await;
    let (_, at_end) = app.get(&timeline("to=2020-12-31")).await;
    let (_, counters) = app.get(&base).await;
    serde_json::json!({
        "in_period": flow(&in_period),
        "in_previous_period": flow(&in_previous),
        "at_period_end": flow(&at_end),
        "unique_visitors": counters["unique_visitors"],
        "chapters_completed": counters["chapters_completed"],
        "certified_now": counters["certified"],
    })
}

/// The same figures, from a report's JSON.
fn reported(figures: &Value) -> Value {
    serde_json::json!({
        "in_period": figures["in_period"],
        "in_previous_period": figures["in_previous_period"],
        "at_period_end": figures["at_period_end"],
        "unique_visitors": figures["funnel"]["unique_visitors"],
        "chapters_completed": figures["funnel"]["chapters_completed"],
        "certified_now": figures["funnel"]["certified"],
    })
}

/// One CSV row's `value` and `programme_value` for `metric`.
fn csv_values(csv: &str, metric: &str) -> (String, String) {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(suivi::report::csv::HEADER));
    let fields: Vec<&str> = lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .find(|fields| fields[4] == metric)
        .unwrap_or_else(|| panic!("no row {metric} in {csv}"));
    (fields[6].to_owned(), fields[7].to_owned())
}

#[tokio::test]
async fn report_figures_equal_the_counters_for_the_period_from_files_and_from_postgres() {
    let _server = shared().await;
    let database = TestDatabase::create().await;
    let mut app = spawn_app_with_postgres(&database).await;
    let response = app.ingest(&programme_events("r", 90)).await;
    assert!(response.rejections.is_empty(), "{response:?}");
    let campaign = expected(&app, "gendarmerie").await;
    let programme = expected(&app, "*").await;
    assert_ne!(
        campaign["in_period"]["enrolled"], 0,
        "the period has enrolments: {campaign}"
    );
    assert_ne!(campaign["in_previous_period"]["certified"], 0);
    app.stop().await;

    let data_dir = app
        .data_dir
        .path()
        .to_str()
        .expect("a UTF-8 path")
        .to_owned();
    let url = database.url();
    let stores: [(&str, Vec<&str>); 2] = [
        ("files", vec!["--data-dir", &data_dir]),
        ("postgres", vec!["--postgres-url", &url]),
    ];
    let mut figures_by_store = Vec::new();
    for (store, args) in &stores {
        let run = |format: &str| {
            let mut all = vec![
                "--campaign",
                "gendarmerie",
                "--period",
                "2020-Q4-2",
                "--format",
                format,
            ];
            all.extend(args.iter().copied());
            suivi_report(&all)
        };
        let json: Value = serde_json::from_str(&run("json")).expect("a JSON report");
        assert_eq!(json["source"], *store);
        assert_eq!(json["campaign"], "gendarmerie");
        assert_eq!(json["name"], "Gendarmerie nationale");
        assert_eq!(json["period"]["from"], "2020-11-16");
        assert_eq!(json["previous_period"]["name"], "2020-Q4-1");
        assert_eq!(reported(&json["figures"]), campaign, "{store}");
        assert_eq!(reported(&json["programme"]), programme, "{store}");
        // The only snapshots were taken after the period: the funnel says so.
        assert_eq!(json["figures"]["funnel"]["after_period_end"], true);
        let at_end = &json["figures"]["at_period_end"];
        let rate = at_end["certified"].as_f64().expect("a count")
            / at_end["enrolled"].as_f64().expect("a count");
        assert_eq!(json["figures"]["completion_rate"].as_f64(), Some(rate));
        assert_eq!(json["figures"]["target"], 100_000);

        let csv = run("csv");
        let value = |metric: &str| csv_values(&csv, metric);
        assert_eq!(
            value("enrolled_in_period"),
            (
                campaign["in_period"]["enrolled"].to_string(),
                programme["in_period"]["enrolled"].to_string()
            )
        );
        assert_eq!(
            value("certified_at_period_end").0,
            campaign["at_period_end"]["certified"].to_string()
        );
        assert_eq!(
            value("clicks_in_previous_period").0,
            campaign["in_previous_period"]["clicks"].to_string()
        );
        assert_eq!(
            value("unique_visitors").0,
            campaign["unique_visitors"].to_string()
        );
        assert_eq!(
            value("chapter_12_completed").0,
            campaign["chapters_completed"][11].to_string()
        );
        let change = campaign["in_period"]["started"].as_i64().expect("a count")
            - campaign["in_previous_period"]["started"]
                .as_i64()
                .expect("a count");
        assert_eq!(value("started_change").0, change.to_string());
        // Each sink merges the snapshots that come while it is busy, under the newer one's
        // time, so a campaign's funnel may be as of a later snapshot in one store than in the
        // other: the same counters, not always the same `as_of`. Each is a time the store's
        // newest snapshot is not before.
        let time = |value: &Value| {
            DateTime::parse_from_rfc3339(value.as_str().expect("a time")).expect("RFC 3339")
        };
        let latest = time(&json["latest_snapshot"]);
        let mut figures = [json["figures"].clone(), json["programme"].clone()];
        for figures in &mut figures {
            let as_of = figures["funnel"]
                .as_object_mut()
                .and_then(|funnel| funnel.remove("as_of"))
                .expect("the funnel's time");
            let as_of = time(&as_of);
            assert!(
                as_of <= latest,
                "{store}: funnel as of {as_of}, newest {latest}"
            );
        }
        figures_by_store.push(figures);
    }
    assert_eq!(
        figures_by_store[0], figures_by_store[1],
        "files and PostgreSQL say the same"
    );

    // Every campaign at once, in English.
    let all: Value = serde_json::from_str(&suivi_report(&[
        "--period",
        "2020-10-05..2021-01-25",
        "--format",
        "json",
        "--lang",
        "en",
        "--data-dir",
        &data_dir,
    ]))
    .expect("a JSON list");
    let campaigns: Vec<&str> = all["reports"]
        .as_array()
        .expect("reports")
        .iter()
        .map(|report| report["campaign"].as_str().expect("an id"))
        .collect();
    assert_eq!(campaigns, ["gendarmerie", "la-poste"]);
    let html = suivi_report(&[
        "--campaign",
        "la-poste",
        "--lang",
        "en",
        "--period",
        "2021-Q1-1",
        "--data-dir",
        &data_dir,
    ]);
    assert!(
        html.contains("<html lang=\"en\">") && html.contains("La Poste"),
        "{html}"
    );
}

#[tokio::test]
async fn the_report_route_answers_each_format_and_says_what_is_wrong() {
    let mut app =
        spawn_app_with(|settings| settings.snapshot_interval = Duration::from_millis(50)).await;
    app.ingest(&programme_events("h", 30)).await;
    let campaign = expected(&app, "gendarmerie").await;
    let path = "/v1/campaigns/gendarmerie/report?period=2020-Q4-2";
    // The route reads the snapshot files: wait for the snapshot to land.
    let deadline = Instant::now() + PATIENCE;
    let json = loop {
        let (status, json) = app.get(&format!("{path}&format=json")).await;
        if status == StatusCode::OK && reported(&json["figures"]) == campaign {
            break json;
        }
        assert!(
            Instant::now() < deadline,
            "the report does not show the counters: {json}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(json["source"], "files");

    let response = app.get_response(path).await;
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let html = response.text().await.expect("a page");
    assert!(html.contains("<html lang=\"fr\">") && html.contains("Gendarmerie nationale"));
    assert_eq!(html.matches("<svg").count(), 2);
    let response = app
        .get_response(&format!("{path}&format=csv&lang=en"))
        .await;
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let csv = response.text().await.expect("a CSV");
    assert_eq!(
        csv_values(&csv, "enrolled_in_period").0,
        campaign["in_period"]["enrolled"].to_string()
    );
    assert!(csv.contains("Enrolled (period)"), "{csv}");
    let (status, range) = app
        .get("/v1/campaigns/gendarmerie/report?from=2020-11-16&to=2020-12-31&format=json")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(range["figures"]["in_period"], json["figures"]["in_period"]);
    let (status, all) = app.get("/v1/reports?period=2020-Q4-2&format=json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["reports"].as_array().map(Vec::len), Some(2));

    for (query, status, code) in [
        (
            "/v1/campaigns/nobody/report?period=2020-Q4-2",
            404,
            "campaign_not_found",
        ),
        (
            "/v1/campaigns/gendarmerie/report?period=2020-Q9-1",
            400,
            "invalid_period",
        ),
        (
            "/v1/campaigns/gendarmerie/report?from=2020-11-16",
            400,
            "invalid_period",
        ),
        (
            "/v1/campaigns/gendarmerie/report?from=2021-01-01&to=2020-01-01",
            400,
            "invalid_period",
        ),
        (
            "/v1/campaigns/gendarmerie/report?format=pdf",
            400,
            "invalid_format",
        ),
        (
            "/v1/campaigns/gendarmerie/report?lang=de",
            400,
            "invalid_lang",
        ),
    ] {
        let (answer, body) = app.get(query).await;
        assert_eq!(
            (answer.as_u16(), body["code"].as_str()),
            (status, Some(code)),
            "{query}: {body}"
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_shows_its_charts_in_headless_chromium() {
    let mut app = spawn_app_with(|_| {}).await;
    let registry = Registry::load(None).expect("the embedded registry");
    let simulation = Arc::new(Simulation::new(&registry, 3, 0.02, 12));
    let sent = send(
        simulation,
        &SendSettings {
            grpc: format!("http://{}", app.grpc_addr),
            streams: 2,
            batch_size: 1000,
            token: None,
            ca_cert: None,
        },
    )
    .await
    .expect("the simulation is sent");
    assert_eq!(sent.rejected, 0);
    app.stop().await;

    let directory = tempfile::tempdir().expect("a temporary dir");
    let page = directory.path().join("report-gendarmerie.html");
    let data_dir = app.data_dir.path().to_str().expect("a UTF-8 path");
    suivi_report(&[
        "--campaign",
        "gendarmerie",
        "--from",
        "2020-10-05",
        "--to",
        "2021-01-25",
        "--data-dir",
        data_dir,
        "--output",
        page.to_str().expect("a UTF-8 path"),
    ]);
    let html = std::fs::read_to_string(&page).expect("the page");
    assert!(
        html.contains(&suivi::report::Lang::Fr.number(1_300)),
        "6,500 × 0.02 enrolled"
    );

    let screenshot = directory.path().join("report.png");
    screenshot_of(&page, &screenshot, directory.path());
    let picture = decode(&screenshot);
    assert_eq!((picture.width, picture.height), (1200, 1600));
    let count = |colour: [u8; 3]| {
        picture
            .pixels
            .iter()
            .filter(|pixel| pixel.iter().zip(colour).all(|(a, b)| a.abs_diff(b) <= 12))
            .count()
    };
    let enrolled = count([0x1d, 0x4e, 0xd8]);
    let certified = count([0x04, 0x78, 0x57]);
    assert!(
        enrolled > 300,
        "the enrolments line and bar show ({enrolled} pixels)"
    );
    assert!(
        certified > 300,
        "the certificates line shows ({certified} pixels)"
    );
    let colours: std::collections::HashSet<[u8; 3]> = picture.pixels.iter().copied().collect();
    assert!(
        colours.len() > 50,
        "a page, not a blank ({} colours)",
        colours.len()
    );
    // Kept for a look: target/report-screenshot.png.
    let kept = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let _ = std::fs::copy(&screenshot, kept);
}

/// Takes a 1200×1600 screenshot of `page` with headless Chromium, within a minute.
fn screenshot_of(page: &Path, screenshot: &Path, scratch: &Path) {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|name| Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()))
        .unwrap_or_else(|| {
            panic!("headless Chromium is missing: ./scripts/test installs it (apt-get install -y chromium)")
        });
    let profile = scratch.join("chromium-profile");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg("--window-size=1200,1600")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("chromium runs") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not take the screenshot within a minute");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(
        status.success() && screenshot.is_file(),
        "chromium failed ({status}): {stderr}"
    );
}

struct Picture {
    width: u32,
    height: u32,
    pixels: Vec<[u8; 3]>,
}

fn decode(path: &Path) -> Picture {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("the PNG"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buffer = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut buffer).expect("a frame");
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let pixels = buffer[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|pixel| [pixel[0], pixel[1], pixel[2]])
        .collect();
    Picture {
        width: info.width,
        height: info.height,
        pixels,
    }
}

#[tokio::test]
async fn scheduled_reports_are_written_for_the_half_quarter_that_ended() {
    let reports = tempfile::tempdir().expect("a temporary dir");
    let directory = reports.path().to_path_buf();
    let mut app = spawn_app_with(move |settings| {
        settings.reports_dir = Some(directory);
        settings.snapshot_interval = Duration::from_millis(400);
    })
    .await;
    // One enrolment on the first day of the half-quarter that ended last.
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .date_naive();
    let due = period::last_completed(today);
    let first_day = due.first_day().format("%Y-%m-%d").to_string();
    app.ingest(&[event("sched-1", Kind::Enrolled)
        .campaign("gendarmerie")
        .learner("sched-learner")
        .day(&first_day)])
        .await;

    let folder = reports.path().join(due.to_string());
    let deadline = Instant::now() + PATIENCE;
    while !folder.is_dir() {
        assert!(
            Instant::now() < deadline,
            "no reports in {}",
            folder.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for file in [
        "gendarmerie.html",
        "gendarmerie.csv",
        "gendarmerie.json",
        "_all.csv",
        "_all.json",
    ] {
        assert!(
            folder.join(file).is_file(),
            "{file} in {}",
            folder.display()
        );
    }
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(folder.join("gendarmerie.json")).expect("the report"),
    )
    .expect("JSON");
    assert_eq!(json["period"]["name"], due.to_string());
    assert_eq!(json["figures"]["in_period"]["enrolled"], 1);
    let html = std::fs::read_to_string(folder.join("gendarmerie.html")).expect("the page");
    assert!(html.contains("<html lang=\"fr\">"));
    assert!(!reports.path().join(format!(".{due}.partial")).exists());
    app.stop().await;
}

/// Campaign ids a sender chose to attack the people who open the CSV in a spreadsheet, or to
/// take another campaign's file: every cell that starts like a formula starts with `'` in the
/// route's CSV and in the scheduled files, and each campaign has its own file next to the
/// all-campaigns export.
#[tokio::test]
async fn report_csv_neutralises_formulas_and_every_campaign_gets_a_file_of_its_own() {
    let reports = tempfile::tempdir().expect("a temporary dir");
    let directory = reports.path().to_path_buf();
    let mut app = spawn_app_with(move |settings| {
        settings.reports_dir = Some(directory);
        settings.snapshot_interval = Duration::from_millis(400);
    })
    .await;
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .date_naive();
    let due = period::last_completed(today);
    let first_day = due.first_day().format("%Y-%m-%d").to_string();
    let formulas = [
        "=hyperlink(\"http://evil.example/\",\"x\")",
        "+1+1",
        "-2+3",
        "@sum(1+1)",
    ];
    let colliding = ["a/b", "a?b", "a_b", "all"];
    let campaigns: Vec<&str> = formulas.iter().chain(&colliding).copied().collect();
    let events: Vec<Ev> = campaigns
        .iter()
        .enumerate()
        .map(|(index, campaign)| {
            event(&format!("hostile-{index}"), Kind::Enrolled)
                .campaign(campaign)
                .learner(&format!("hostile-learner-{index}"))
                .day(&first_day)
        })
        .collect();
    app.ingest(&events).await;

    let folder = reports.path().join(due.to_string());
    let deadline = Instant::now() + PATIENCE;
    while !folder.is_dir() {
        assert!(
            Instant::now() < deadline,
            "no reports in {}",
            folder.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut files: Vec<String> = std::fs::read_dir(&folder)
        .expect("the folder")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .into_string()
                .expect("a UTF-8 name")
        })
        .filter(|name| name.ends_with(".csv"))
        .collect();
    files.sort();
    for file in ["a%2Fb.csv", "a%3Fb.csv", "a_b.csv", "all.csv", "_all.csv"] {
        assert!(files.iter().any(|name| name == file), "{file} in {files:?}");
    }
    assert_eq!(
        files.len(),
        campaigns.len() + 1,
        "a file per campaign, and the export of all: {files:?}"
    );
    let all = std::fs::read_to_string(folder.join("_all.csv")).expect("the export");
    let route = loop {
        let response = app
            .get_response(&format!("/v1/reports?period={due}&format=csv"))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.expect("a CSV");
        // One request, so one snapshot: every campaign or none.
        if text.contains("a_b,") {
            break text;
        }
        assert!(Instant::now() < deadline, "not every campaign in {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for csv in [&all, &route] {
        let first_cells: Vec<&str> = csv
            .lines()
            .skip(1)
            .map(|line| line.split(',').next().expect("a first cell"))
            .collect();
        for cell in &first_cells {
            assert!(
                !cell
                    .trim_start_matches('"')
                    .starts_with(['=', '+', '-', '@']),
                "a cell a spreadsheet reads as a formula: {cell:?} in {csv}"
            );
        }
        for formula in formulas {
            let neutralised = format!("'{formula}");
            assert!(
                csv.contains(&neutralised) || csv.contains(&neutralised.replace('"', "\"\"")),
                "{neutralised} in {csv}"
            );
        }
    }
    let one = std::fs::read_to_string(folder.join("-2%2B3.csv")).expect("the campaign's file");
    assert!(
        one.lines().skip(1).all(|line| line.starts_with("'-2+3,")),
        "{one}"
    );
    app.stop().await;
}
