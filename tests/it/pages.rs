//! The pages, in headless Chromium (driven through chromedriver, `helpers::browser`): the
//! partner page's figures equal the API's and follow new events without a reload; a signed link
//! shows its partner only, and stops working when it expires or is altered; keyboard focus
//! reaches every control of both pages, and every text meets WCAG AA contrast; screenshots of both pages from the simulated programme
//! (kept in the target directory for the README), with the forecast's accuracy on it. A
//! missing Chromium or chromedriver fails these tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use suivi::auth::link::{self, LinkKey};
use suivi::figures::DayCounters;
use suivi::forecast;
use suivi::report::Lang;

use crate::auth::add;
use crate::helpers::browser::Browser;
use crate::helpers::{Kind, TestApp, enrolments, event, spawn_app_with};

/// The live stream's updates must show on the open page within this.
const LIVE_WITHIN: Duration = Duration::from_secs(2);

fn number(lang: Lang, value: &Value) -> String {
    lang.number(value.as_u64().expect("a count"))
}

/// Waits until `check` holds, within `limit`; panics saying `what` otherwise.
async fn until<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Certificates for the first `count` learners of `enrolments(prefix, …)`.
fn certificates(prefix: &str, campaign: &str, count: usize) -> Vec<crate::helpers::Ev> {
    (0..count)
        .map(|i| {
            event(&format!("{prefix}-certified-{i}"), Kind::Certified)
                .campaign(campaign)
                .learner(&format!("{prefix}-learner-{i}"))
        })
        .collect()
}

async fn live_updates(browser: &Browser) -> u64 {
    browser
        .run(
            "return Number(document.body.dataset.liveUpdates || 0);",
            json!([]),
        )
        .await
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn the_partner_page_shows_the_api_figures_and_follows_new_events_without_a_reload() {
    let mut app =
        spawn_app_with(|settings| settings.watch_interval = Duration::from_millis(100)).await;
    app.ingest(&enrolments("a", "gendarmerie", 1_300)).await;
    app.ingest(&certificates("a", "gendarmerie", 1_120)).await;
    let browser = Browser::start(1200, 1600).await;

    for lang in [Lang::Fr, Lang::En] {
        browser
            .open(&app.url(&format!("/partners/gendarmerie?lang={lang}")))
            .await;
        let api = app.campaign_json("gendarmerie").await;
        assert_eq!(
            browser.text("enrolled").await.as_deref(),
            Some(number(lang, &api["enrolled"]).as_str())
        );
        assert_eq!(
            browser.text("certified").await.as_deref(),
            Some(number(lang, &api["certified"]).as_str())
        );
        assert_eq!(
            browser.text("progress").await.as_deref(),
            Some(
                lang.percent(api["progress"].as_f64().expect("a target"))
                    .as_str()
            )
        );
        let completion = lang.percent(api["completion_rate"].as_f64().expect("a rate"));
        assert!(
            browser
                .text("certified-detail")
                .await
                .is_some_and(|text| text.contains(&completion)),
            "{completion}"
        );
        let lang_attribute = browser
            .run("return document.documentElement.lang;", json!([]))
            .await;
        assert_eq!(lang_attribute, json!(lang.to_string()));
    }
    // The French formats, as a French reader expects them.
    browser.open(&app.url("/partners/gendarmerie")).await;
    assert_eq!(
        browser.text("enrolled").await.as_deref(),
        Some("1\u{202f}300")
    );
    assert!(
        browser
            .text("certified-detail")
            .await
            .is_some_and(|text| text.contains("86,2\u{202f}%")),
        "{:?}",
        browser.text("certified-detail").await
    );
    // No request leaves suivi: every resource the page loaded is its own.
    let foreign = browser
        .run(
            "return performance.getEntriesByType('resource').map(e => e.name)\
             .filter(n => !n.startsWith(location.origin));",
            json!([]),
        )
        .await;
    assert_eq!(foreign, json!([]));

    // Live: once the stream has sent the page its slots, new events show without a reload.
    until(
        Duration::from_secs(10),
        "the live stream connects",
        || async { live_updates(&browser).await >= 1 },
    )
    .await;
    browser.run("window.notReloaded = true;", json!([])).await;
    app.ingest(&enrolments("b", "gendarmerie", 200)).await;
    let expected = Lang::Fr.number(1_500);
    let took = until(LIVE_WITHIN, "the new enrolments show", || async {
        browser.text("enrolled").await.as_deref() == Some(expected.as_str())
    })
    .await;
    assert_eq!(
        browser
            .run("return window.notReloaded === true;", json!([]))
            .await,
        json!(true),
        "the page was not reloaded"
    );
    let api = app.campaign_json("gendarmerie").await;
    assert_eq!(
        browser.text("enrolled").await,
        Some(number(Lang::Fr, &api["enrolled"]))
    );
    eprintln!("the open page showed new events {took:?} after they were accepted");

    // The same on the programme page, whose rows name campaigns by the hex of their id.
    browser.open(&app.url("/")).await;
    let row = "c67656e6461726d65726965-enrolled";
    assert_eq!(browser.text(row).await, Some(expected.clone()));
    until(
        Duration::from_secs(10),
        "the live stream connects",
        || async { live_updates(&browser).await >= 1 },
    )
    .await;
    app.ingest(&enrolments("c", "gendarmerie", 10)).await;
    let expected = Lang::Fr.number(1_510);
    until(LIVE_WITHIN, "the programme page follows", || async {
        browser.text(row).await.as_deref() == Some(expected.as_str())
    })
    .await;
    assert_eq!(
        browser.text("totals-enrolled").await,
        Some(number(Lang::Fr, &app.totals_json().await["enrolled"]))
    );
    browser.close().await;
    app.stop().await;
}

/// Runs `suivi credentials --file FILE link ARGS…` and answers the address it printed.
fn make_link(file: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_suivi"))
        .args(["credentials", "--file"])
        .arg(file)
        .arg("link")
        .args(args)
        .output()
        .expect("suivi credentials link runs");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    printed
        .lines()
        .last()
        .expect("link prints the address")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_partner_link_shows_that_partner_only_and_stops_working_when_it_expires() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let file = directory.path().join("credentials.toml");
    let operator = add(&file, &["ops", "--operator"]);
    let writer = add(&file, &["writer", "--write-source", "openclassrooms"]);
    let mut app = spawn_app_with(|settings| {
        settings.credentials = Some(file.clone());
        settings.watch_interval = Duration::from_millis(100);
        // Snapshots soon, for the reports the page links to.
        settings.snapshot_interval = Duration::from_millis(50);
    })
    .await;
    let authorised = |path: &str| app.http.get(app.url(path)).bearer_auth(&operator).send();
    let status = authorised("/v1/totals").await.expect("answers").status();
    assert_eq!(status, StatusCode::OK);
    app.ingest_as(&writer, &enrolments("a", "gendarmerie", 30))
        .await;
    app.ingest_as(&writer, &enrolments("b", "la-poste", 7))
        .await;

    // Without anything, a page asks for a credential (HTTP Basic, the token as password).
    let response = app.get_response("/partners/gendarmerie").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response
            .headers()
            .get("www-authenticate")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("Basic")),
        "{:?}",
        response.headers()
    );
    let basic = app
        .http
        .get(app.url("/partners/la-poste"))
        .basic_auth("operator", Some(&operator))
        .send()
        .await
        .expect("answers");
    assert_eq!(basic.status(), StatusCode::OK);
    // A credential that reads no figures (an LMS's) is refused the pages, as the JSON routes
    // refuse it.
    for path in ["/", "/partners/gendarmerie"] {
        let refused = app
            .http
            .get(app.url(path))
            .basic_auth("lms", Some(&writer))
            .send()
            .await
            .expect("answers");
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{path}");
    }

    // A link printed by `suivi credentials link` (made before the key existed: the running
    // suivi reads the new key file within a second).
    let address = make_link(
        &file,
        &[
            "--campaign",
            "Gendarmerie",
            "--days",
            "90",
            "--base-url",
            &app.url("/"),
        ],
    );
    assert!(
        address.starts_with(&app.url("/partners/gendarmerie?key=link1.")),
        "{address}"
    );
    let key = address.split("key=").nth(1).expect("a key").to_owned();
    let browser = Browser::start(1200, 1600).await;
    let mut shown = false;
    for _ in 0..40 {
        browser.open(&address).await;
        if browser.text("enrolled").await.as_deref() == Some("30") {
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shown, "the link shows the partner's page");
    // Its links carry the key on, and the programme page shows that partner's row only.
    browser.open(&app.url(&format!("/?key={key}"))).await;
    let rows = browser
        .run(
            "return [...document.querySelectorAll('tbody th a')].map(a => a.textContent);",
            json!([]),
        )
        .await;
    assert_eq!(rows, json!(["Gendarmerie nationale"]));
    // The partner page's reports of past periods download with the link's key.
    browser.open(&address).await;
    let downloads = browser
        .run(
            "return [...document.querySelectorAll('ul.reports a')].map(a => a.href);",
            json!([]),
        )
        .await;
    let downloads: Vec<String> = serde_json::from_value(downloads).expect("addresses");
    assert_eq!(
        downloads.len(),
        2,
        "one period (the events' 2020-Q4-1), HTML and CSV"
    );
    for download in &downloads {
        assert!(download.contains("period=2020-Q4-1"), "{download}");
        let response = app.http.get(download).send().await.expect("answers");
        let status = response.status();
        let body = response.text().await.expect("a body");
        assert_eq!(status, StatusCode::OK, "{download}: {body}");
        assert!(body.contains("gendarmerie"), "{download}: {body}");
        assert!(!body.contains("la-poste"), "{download}: {body}");
    }
    assert_eq!(browser.text("totals-enrolled").await, None);
    // Another partner's page is the page of a campaign that does not exist.
    let other = app.get_text(&format!("/partners/la-poste?key={key}")).await;
    let missing = app
        .get_text(&format!("/partners/no-such-campaign?key={key}"))
        .await;
    assert_eq!(other.0, StatusCode::NOT_FOUND);
    assert_eq!(other, missing);
    // It grants what a partner read credential grants, on the JSON routes too.
    let (status, body) = app
        .get(&format!("/v1/campaigns/gendarmerie?key={key}"))
        .await;
    assert_eq!(
        (status, body["enrolled"].clone()),
        (StatusCode::OK, json!(30))
    );
    assert_eq!(
        app.get(&format!("/v1/totals?key={key}")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get(&format!("/v1/campaigns/la-poste?key={key}"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Altered, it is refused and says so.
    let mut altered = key.clone();
    altered.replace_range(key.len() - 3.., "AAA");
    let (status, page) = app
        .get_text(&format!("/partners/gendarmerie?key={altered}"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("n’est pas valide"), "{page}");
    let (_, page) = app
        .get_text(&format!("/partners/gendarmerie?lang=en&key={altered}"))
        .await;
    assert!(page.contains("not valid"), "{page}");

    // A link about to expire: it works, its open page ends its live stream at expiry, and
    // then it is refused, saying it expired.
    let key_file = link::key_path(&file);
    let short = LinkKey::read(&key_file)
        .expect("the key reads")
        .expect("link made the key")
        .sign("gendarmerie", Utc::now() + chrono::Duration::seconds(3))
        .expect("signed");
    browser
        .open(&app.url(&format!("/partners/gendarmerie?key={short}")))
        .await;
    assert_eq!(browser.text("enrolled").await.as_deref(), Some("30"));
    until(
        Duration::from_secs(8),
        "the open page says its access ended",
        || async {
            browser
                .text("live-status")
                .await
                .is_some_and(|text| text.contains("pris fin"))
        },
    )
    .await;
    let (status, page) = app
        .get_text(&format!("/partners/gendarmerie?key={short}"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("Ce lien a expiré le"), "{page}");
    let (_, page) = app
        .get_text(&format!("/partners/gendarmerie?lang=en&key={short}"))
        .await;
    assert!(page.contains("This link expired on"), "{page}");
    // The JSON routes say it too, to a program.
    let (status, body) = app
        .get(&format!("/v1/campaigns/gendarmerie?key={short}"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| message.contains("expired")),
        "{body}"
    );
    browser.close().await;
    app.stop().await;
}

/// Presses Tab until focus comes back round; answers every element focus reached (by a path
/// that names it) and every element that should be reachable.
async fn tab_through(browser: &Browser) -> (BTreeSet<String>, BTreeSet<String>) {
    const DESCRIBE: &str = "const describe = (e) => { if (!e || e === document.body) return null; \
        const parts = []; for (let n = e; n && n !== document.body; n = n.parentElement) { \
        parts.unshift(n.tagName + ':' + [...n.parentElement.children].indexOf(n)); } \
        return parts.join('/'); };";
    let focusable = browser
        .run(
            &format!(
                "{DESCRIBE} return [...document.querySelectorAll('a[href], button, input, select, \
                 [tabindex]:not([tabindex=\"-1\"])')].map(describe);"
            ),
            json!([]),
        )
        .await;
    let focusable: BTreeSet<String> = focusable
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|value| value.as_str().map(str::to_owned))
        .collect();
    let mut reached = BTreeSet::new();
    for _ in 0..(focusable.len() * 2 + 10) {
        browser.tab().await;
        let active = browser
            .run(
                &format!("{DESCRIBE} return describe(document.activeElement);"),
                json!([]),
            )
            .await;
        if let Some(active) = active.as_str() {
            if !reached.insert(active.to_owned()) {
                break;
            }
        }
    }
    (reached, focusable)
}

/// Every text of the page whose contrast with its background is below WCAG AA (4.5:1, 3:1 for
/// large text); SVG text is measured against the white the charts are drawn on.
const LOW_CONTRAST: &str = r#"
const parse = (c) => { const m = /rgba?\(([^)]+)\)/.exec(c || ''); if (!m) return null;
  const p = m[1].split(',').map(Number); return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 }; };
const luminance = ({ r, g, b }) => { const f = (v) => { v /= 255;
  return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
const background = (e) => { for (let n = e; n; n = n.parentElement) {
  const c = parse(getComputedStyle(n).backgroundColor); if (c && c.a > 0) return c; }
  return { r: 255, g: 255, b: 255, a: 1 }; };
const failures = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const text = walker.currentNode; if (!text.textContent.trim()) continue;
  const e = text.parentElement; const style = getComputedStyle(e);
  const inSvg = e.closest('svg') !== null;
  const fg = parse(inSvg ? style.fill : style.color); if (!fg) continue;
  const bg = inSvg ? { r: 255, g: 255, b: 255 } : background(e);
  const [l1, l2] = [luminance(fg), luminance(bg)];
  const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
  const size = parseFloat(style.fontSize); const bold = parseInt(style.fontWeight, 10) >= 700;
  const large = size >= 24 || (bold && size >= 18.66);
  if (ratio < (large ? 3 : 4.5)) failures.push(`${e.tagName} "${text.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
}
return failures;
"#;

#[tokio::test]
async fn keyboard_focus_reaches_every_control_and_every_text_meets_aa_contrast_on_both_pages() {
    let mut app = spawn_app_with(|_| {}).await;
    app.ingest(&enrolments("a", "gendarmerie", 20)).await;
    app.ingest(&certificates("a", "gendarmerie", 5)).await;
    app.ingest(&enrolments("b", "la-poste", 3)).await;
    let browser = Browser::start(1200, 1600).await;
    for path in [
        "/",
        "/partners/gendarmerie",
        "/?lang=en&sort=partner&dir=asc",
    ] {
        browser.open(&app.url(path)).await;
        let (reached, focusable) = tab_through(&browser).await;
        assert!(focusable.len() > 3, "{path}: {focusable:?}");
        let missed: Vec<&String> = focusable.difference(&reached).collect();
        assert!(missed.is_empty(), "{path}: focus never reached {missed:?}");
        let low = browser.run(LOW_CONTRAST, json!([])).await;
        assert_eq!(low, json!([]), "{path}: text below WCAG AA contrast");
        // The first Tab reaches the skip link, which leads to the content.
        browser.open(&app.url(path)).await;
        browser.tab().await;
        let first = browser
            .run(
                "return document.activeElement.getAttribute('href');",
                json!([]),
            )
            .await;
        assert_eq!(first, json!("#content"), "{path}");
    }
    // Sorting is a link: the partner column sorted A→Z puts Gendarmerie before La Poste.
    browser.open(&app.url("/?sort=partner&dir=asc")).await;
    let rows = browser
        .run(
            "return [...document.querySelectorAll('tbody th a')].map(a => a.textContent);",
            json!([]),
        )
        .await;
    let rows: Vec<String> = serde_json::from_value(rows).expect("names");
    let position = |name: &str| rows.iter().position(|row| row == name);
    assert!(
        position("Gendarmerie nationale") < position("La Poste"),
        "{rows:?}"
    );
    browser.close().await;
    app.stop().await;
}

/// The simulated programme's days of certificates for `campaign`, from the API.
async fn timeline(app: &TestApp, path: &str) -> Vec<DayCounters> {
    let (status, body) = app.get(path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    serde_json::from_value(body["days"].clone()).expect("days")
}

/// How the forecast made at `half_way` fares against what happened up to `last_day`: the count
/// at `last_day` at the forecast's pace against the real one.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // Counts far below 2^52; a rounded, non-negative projection.
fn accuracy(
    name: &str,
    days: &[DayCounters],
    target: u64,
    half_way: NaiveDate,
    last_day: NaiveDate,
) -> String {
    let before: Vec<DayCounters> = days
        .iter()
        .copied()
        .filter(|day| day.day.date() < half_way)
        .collect();
    let certified_then: u64 = before.iter().map(|day| day.certified).sum();
    let certified_at_end: u64 = days
        .iter()
        .filter(|day| day.day.date() <= last_day)
        .map(|day| day.certified)
        .sum();
    let made =
        forecast::forecast(&before, certified_then, Some(target), half_way).expect("a target");
    let remaining_days = (last_day - half_way).num_days() + 1;
    let at_pace =
        certified_then + (made.pace_per_week / 7.0 * remaining_days as f64).round() as u64;
    let error = (at_pace as f64 - certified_at_end as f64) / certified_at_end.max(1) as f64;
    format!(
        "| {name} | {} | {} | {:.0}/week | {:?} | {last_day}: {} | {} ({:+.0}%) |",
        Lang::En.number(target),
        Lang::En.number(certified_then),
        made.pace_per_week,
        made.outlook,
        Lang::En.number(certified_at_end),
        Lang::En.number(at_pace),
        error * 100.0
    )
}

#[tokio::test]
async fn screenshots_of_both_pages_from_the_simulated_programme_and_the_forecast_accuracy() {
    let mut app = spawn_app_with(|_| {}).await;
    let yesterday = Utc::now().date_naive() - Days::new(1);
    let grpc = format!("http://{}", app.grpc_addr);
    let end_on = yesterday.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_suivi"))
            .args(["simulate", "--grpc", &grpc, "--scale", "1", "--seed", "1"])
            .args(["--end-on", &end_on])
            .env_remove("SUIVI_TOKEN")
            .output()
            .expect("suivi simulate runs")
    })
    .await
    .expect("the thread ends");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let gendarmerie = app.campaign_json("gendarmerie").await;
    assert_eq!(gendarmerie["certified"], json!(56_000));
    // The forecast the API gives is the one the method gives on the API's timeline.
    let days = timeline(&app, "/v1/campaigns/gendarmerie/timeline").await;
    let today = Utc::now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .date_naive();
    let expected = forecast::forecast(&days, 56_000, Some(100_000), today).expect("a target");
    assert_eq!(
        gendarmerie["forecast"],
        serde_json::to_value(expected).expect("serialises")
    );
    // And gRPC says the same.
    let message = app
        .counter_client()
        .await
        .get_campaign(suivi::proto::GetCampaignRequest {
            campaign: "gendarmerie".to_owned(),
        })
        .await
        .expect("GetCampaign answers")
        .into_inner()
        .counters
        .and_then(|counters| counters.forecast)
        .expect("a forecast over gRPC");
    assert_eq!(
        (
            json!(message.as_of),
            json!(message.pace_per_week),
            json!(message.date)
        ),
        (
            gendarmerie["forecast"]["as_of"].clone(),
            gendarmerie["forecast"]["pace_per_week"].clone(),
            gendarmerie["forecast"]["date"].clone()
        )
    );
    assert_eq!(
        message.status(),
        suivi::proto::ForecastStatus::Expected,
        "{gendarmerie}"
    );

    let browser = Browser::start(1200, 1600).await;
    let directory = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for (path, name) in [
        ("/partners/gendarmerie", "pages-gendarmerie.png"),
        ("/", "pages-programme.png"),
    ] {
        browser.open(&app.url(path)).await;
        until(
            Duration::from_secs(10),
            "the live stream connects",
            || async { live_updates(&browser).await >= 1 },
        )
        .await;
        let png = browser.screenshot().await;
        assert!(png.starts_with(b"\x89PNG"), "{path}: a PNG");
        assert!(png.len() > 50_000, "{path}: a page with content");
        std::fs::write(directory.join(name), png).expect("the screenshot is kept");
    }
    // A phone: the partner page fits its width (nothing wider than the screen but the tables'
    // own scrolling regions).
    browser.resize(390, 844).await;
    browser.open(&app.url("/partners/gendarmerie")).await;
    let fits = browser
        .run(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            json!([]),
        )
        .await;
    assert_eq!(fits, json!(true), "the page fits a phone's width");
    browser.close().await;

    // The forecast made at the programme's half-way date against what then happened.
    let programme = timeline(&app, "/v1/totals/timeline").await;
    let first = programme.first().expect("days").day.date();
    let last = programme.last().expect("days").day.date();
    let half_way = first + Days::new(u64::try_from((last - first).num_days() / 2).unwrap_or(0));
    let tech_for_good = timeline(&app, "/v1/campaigns/tech-for-good-education/timeline").await;
    let lines = [
        accuracy(
            "Gendarmerie",
            &days,
            100_000,
            half_way,
            days.last().expect("days").day.date(),
        ),
        accuracy(
            "Tech for Good — education",
            &tech_for_good,
            50_000,
            half_way,
            last,
        ),
        accuracy("Programme", &programme, 670_000, half_way, last),
    ];
    eprintln!(
        "forecast made on {half_way} (half-way between {first} and {last}):\n\
         | target | target | certified then | pace | forecast | certified at the end | at the forecast pace |\n{}",
        lines.join("\n")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_hostile_campaign_id_is_shown_as_text_and_its_page_is_reachable() {
    let mut app = spawn_app_with(|_| {}).await;
    let hostile = "<img src=x onerror=alert(1)> \"/?#&key=";
    let answer = app.ingest(&enrolments("h", hostile, 2)).await;
    assert_eq!(answer.accepted, 2, "{answer:?}");
    let (status, page) = app.get_text("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("<img"), "markup from an id reached the page");
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{page}"
    );
    // The row links to the campaign's page, which names it, escaped, with its figures.
    let link = page
        .split("href=\"")
        .map(|rest| rest.split('"').next().unwrap_or_default())
        .find(|href| href.starts_with("/partners/%3Cimg"))
        .expect("a link to the hostile campaign's page")
        .replace("&amp;", "&");
    let (status, partner) = app.get_text(&link).await;
    assert_eq!(status, StatusCode::OK, "{link}");
    assert!(!partner.contains("<img"), "{partner}");
    assert!(partner.contains("id=\"enrolled\">2<"), "{partner}");
    app.stop().await;
}
