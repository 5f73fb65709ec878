//! `POST /caliper`, end to end: envelopes shaped as Open edX's event-routing-backends sends them
//! (one event per envelope, the learner an anonymous user id, enrolment and course completion as
//! an `Activated` or `Completed` `Membership` named by the course's URL) and other Caliper 1.1/1.2
//! events, counted as the mapping table says and checked through `GET /v1/campaigns/...`;
//! ignored items in `suivi_caliper_events_ignored_total`; malformed envelopes, wrong media types
//! and credentials refused whole.

use reqwest::StatusCode;
use serde_json::{Value, json};
use suivi::standards::caliper::DATA_VERSIONS;
use suivi::standards::{CALIPER_CAMPAIGN_EXTENSION, Mapping};

use crate::auth::add;
use crate::helpers::{TestApp, spawn_app_with};

const LMS: &str = "https://courses.gendform3.example";
const COURSE_KEY: &str = "course-v1:Gendarmerie+Cyber101+2024";

fn course_url() -> String {
    format!("{LMS}/courses/{COURSE_KEY}/")
}

fn chapter_url(block: &str) -> String {
    format!("{LMS}/xblock/block-v1:Gendarmerie+Cyber101+2024+type@chapter+block@{block}")
}

/// The `[xapi]` table of these tests: chapter 2 mapped, the LMS host named `gendform3`.
fn mapping() -> Mapping {
    Mapping {
        chapters: [(chapter_url("c2"), 2)].into(),
        sources: [(
            "courses.gendform3.example".to_owned(),
            "gendform3".to_owned(),
        )]
        .into(),
        ..Mapping::default()
    }
}

async fn caliper_app() -> TestApp {
    spawn_app_with(|settings| settings.xapi = mapping()).await
}

/// An envelope as event-routing-backends wraps each event.
fn envelope(data: Vec<Value>) -> Value {
    json!({
        "sensor": LMS,
        "sendTime": "2024-03-04T09:30:00.125Z",
        "dataVersion": DATA_VERSIONS[1],
        "data": data,
    })
}

/// A Caliper event of `learner`, with a `urn:uuid:` id made from `n`.
fn event(n: u32, learner: u32, kind: &str, action: &str, object: Value) -> Value {
    json!({
        "@context": DATA_VERSIONS[1],
        "id": format!("urn:uuid:7d1e2c3b-0000-4000-8000-{n:012}"),
        "type": kind,
        "action": action,
        "actor": {"id": format!("0c9a8b7e-1f2d-4c3b-9a8e-{learner:012}"), "type": "Person"},
        "object": object,
        "eventTime": "2024-03-04T09:29:58.917Z",
    })
}

/// Open edX's course Membership object (enrolment, course completion).
fn membership() -> Value {
    json!({
        "id": course_url(),
        "type": "Membership",
        "extensions": {"course_id": COURSE_KEY, "mode": "audit"},
    })
}

fn course_offering() -> Value {
    json!({"id": course_url(), "type": "CourseOffering", "name": "Cyber 101"})
}

/// A GradeEvent on an Attempt of the course, scored `given` out of `max`.
fn course_grade(n: u32, learner: u32, given: f64, max: f64) -> Value {
    let mut graded = event(
        n,
        learner,
        "GradeEvent",
        "Graded",
        json!({
            "id": format!("urn:uuid:5e4d3c2b-0000-4000-8000-{n:012}"),
            "type": "Attempt",
            "assignee": {"id": format!("0c9a8b7e-1f2d-4c3b-9a8e-{learner:012}"), "type": "Person"},
            "assignable": course_offering(),
            "count": 1,
        }),
    );
    graded["generated"] = json!({
        "id": format!("urn:uuid:5e4d3c2b-1111-4000-8000-{n:012}"),
        "type": "Score",
        "scoreGiven": given,
        "maxScore": max,
    });
    graded
}

/// Posts `body` to `/caliper` as `content_type`, with `token` if any.
async fn post(
    app: &TestApp,
    body: &Value,
    content_type: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = app
        .http
        .post(app.url("/caliper"))
        .header("content-type", content_type)
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST /caliper gets an answer");
    let status = response.status();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

async fn send(app: &TestApp, data: Vec<Value>) -> (StatusCode, Value) {
    post(app, &envelope(data), "application/json", None).await
}

/// The funnel of `campaign`: enrolled, started, chapter 2, certified.
async fn funnel(app: &TestApp, campaign: &str) -> [u64; 4] {
    let counters = app.campaign_json(campaign).await;
    let number = |value: &Value| value.as_u64().unwrap_or_else(|| panic!("{counters}"));
    [
        number(&counters["enrolled"]),
        number(&counters["started"]),
        number(&counters["chapters_completed"][1]),
        number(&counters["certified"]),
    ]
}

/// Checks that the programme has no learner and that `direct` was never seen.
async fn assert_nothing_counted(app: &TestApp) {
    let totals = app.totals_json().await;
    assert_eq!(totals["enrolled"], 0, "{totals}");
    let (status, body) = app.get("/v1/campaigns/direct").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// The value of one series of `/metrics`.
async fn metric(app: &TestApp, series: &str) -> f64 {
    let (status, text) = app.get_text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("/metrics has {series}"))
}

fn ignored(reason: &str) -> String {
    format!("suivi_caliper_events_ignored_total{{reason=\"{reason}\"}} ")
}

#[tokio::test]
async fn open_edx_envelopes_fill_the_funnel_as_the_table_says() {
    let mut app = caliper_app().await;
    // Open edX sends one event per envelope.
    let sent = [
        event(1, 1, "Event", "Activated", membership()),
        event(2, 2, "Event", "Started", course_offering()),
        event(
            3,
            3,
            "Event",
            "Completed",
            json!({"id": chapter_url("c2"), "type": "DigitalResourceCollection"}),
        ),
        event(4, 4, "Event", "Completed", membership()),
        course_grade(5, 5, 20.0, 20.0),
    ];
    for event in sent {
        let (status, body) = send(&app, vec![event]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            json!({"accepted": 1, "duplicates": 0, "ignored": 0}),
            "{body}"
        );
    }
    // Stages imply the earlier ones: learners 2 to 5 started, 3 to 5 completed chapter 2.
    assert_eq!(funnel(&app, "direct").await, [5, 4, 3, 2]);
    app.stop().await;
}

#[tokio::test]
async fn what_the_table_does_not_count_is_ignored_and_counted() {
    let mut app = caliper_app().await;
    let before = [
        metric(&app, &ignored("grade_not_passing")).await,
        metric(&app, &ignored("unmapped_action")).await,
        metric(&app, &ignored("unmapped_object")).await,
        metric(&app, &ignored("entity")).await,
    ];
    let navigation = event(
        11,
        1,
        "NavigationEvent",
        "NavigatedTo",
        json!({"id": "block-v1:Gendarmerie+Cyber101+2024+type@sequential+block@s1", "type": "WebPage"}),
    );
    let unmapped_chapter = event(
        12,
        1,
        "Event",
        "Completed",
        json!({"id": chapter_url("c9"), "type": "DigitalResourceCollection"}),
    );
    let (status, body) = send(
        &app,
        vec![
            course_grade(10, 1, 12.0, 20.0),
            navigation,
            unmapped_chapter,
            course_offering(),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"accepted": 0, "duplicates": 0, "ignored": 4}));
    assert_nothing_counted(&app).await;
    let after = [
        metric(&app, &ignored("grade_not_passing")).await,
        metric(&app, &ignored("unmapped_action")).await,
        metric(&app, &ignored("unmapped_object")).await,
        metric(&app, &ignored("entity")).await,
    ];
    for (before, after) in before.iter().zip(after) {
        assert!(
            after > *before,
            "ignored items counted: {before} -> {after}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_re_sent_event_is_a_duplicate() {
    let mut app = caliper_app().await;
    let enrolment = event(21, 1, "Event", "Activated", membership());
    let (status, first) = send(&app, vec![enrolment.clone()]).await;
    assert_eq!((status, &first["accepted"]), (StatusCode::OK, &json!(1)));
    let (status, again) = send(&app, vec![enrolment]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, json!({"accepted": 0, "duplicates": 1, "ignored": 0}));
    assert_eq!(funnel(&app, "direct").await, [1, 0, 0, 0]);
    app.stop().await;
}

#[tokio::test]
async fn an_event_naming_its_campaign_counts_under_it() {
    let mut app = caliper_app().await;
    let mut enrolment = event(31, 1, "Event", "Activated", membership());
    enrolment["extensions"] = json!({CALIPER_CAMPAIGN_EXTENSION: "Gendarmerie"});
    let (status, body) = send(&app, vec![enrolment]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(funnel(&app, "gendarmerie").await, [1, 0, 0, 0]);
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_envelope_is_refused_whole_and_nothing_is_counted() {
    let mut app = caliper_app().await;
    let valid = event(41, 1, "Event", "Activated", membership());
    // An event the table maps, but with no eventTime: the whole envelope is refused.
    let mut undated = event(42, 2, "Event", "Started", course_offering());
    undated
        .as_object_mut()
        .expect("an object")
        .remove("eventTime");
    let (status, body) = send(&app, vec![valid.clone(), undated]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "missing_occurred_at", "{body}");
    let message = body["message"].as_str().expect("a message");
    assert!(message.starts_with("data[1]: "), "{message}");
    // Not an envelope at all.
    let (status, body) = post(
        &app,
        &json!({"data": [valid.clone()]}),
        "application/json",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_envelope");
    assert!(
        body["message"]
            .as_str()
            .expect("a message")
            .contains("sensor"),
        "{body}"
    );
    // An event without a urn:uuid: id.
    let mut bad_id = valid.clone();
    bad_id["id"] = json!("42");
    let (status, body) = send(&app, vec![bad_id]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_envelope");
    assert_nothing_counted(&app).await;
    // The valid event alone is taken: it was not counted before.
    let (status, body) = send(&app, vec![valid]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["accepted"], 1, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused_with_415() {
    let mut app = caliper_app().await;
    let body = envelope(vec![event(51, 1, "Event", "Activated", membership())]);
    let (status, answer) = post(&app, &body, "text/plain", None).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{answer}");
    let (status, answer) = post(&app, &body, "application/ld+json; charset=utf-8", None).await;
    assert_eq!(status, StatusCode::OK, "JSON-LD is JSON: {answer}");
    assert_eq!(funnel(&app, "direct").await, [1, 0, 0, 0]);
    app.stop().await;
}

#[tokio::test]
async fn with_credentials_an_lms_credential_names_the_source_and_campaign() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let file = directory.path().join("credentials.toml");
    let lms = add(
        &file,
        &[
            "gendform3",
            "--write-source",
            "gendform3",
            "--campaign",
            "gendarmerie",
        ],
    );
    let reader = add(&file, &["partner-a", "--read", "gendarmerie"]);
    let admin = add(&file, &["root", "--admin"]);
    let mut app = spawn_app_with(|settings| {
        settings.credentials = Some(file.clone());
        // The sensor's host is not renamed here: the credential's only source applies.
        settings.xapi = Mapping::default();
    })
    .await;
    let enrolment = event(61, 1, "Event", "Activated", membership());
    let body = envelope(vec![enrolment.clone()]);
    let (status, answer) = post(&app, &body, "application/json", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let (status, answer) = post(&app, &body, "application/json", Some(&reader)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    // Events naming no campaign count under the credential's one.
    let (status, answer) = post(&app, &body, "application/json", Some(&lms)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    let mut started = event(62, 1, "Event", "Started", course_offering());
    started["extensions"] = json!({CALIPER_CAMPAIGN_EXTENSION: "pole-emploi"});
    let (status, answer) = post(
        &app,
        &envelope(vec![
            event(63, 2, "Event", "Activated", membership()),
            started,
        ]),
        "application/json",
        Some(&lms),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["code"], "campaign_not_allowed", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .expect("a message")
            .starts_with("data[1]: "),
        "{answer}"
    );
    let counters: Value = app
        .http
        .get(app.url("/v1/campaigns/gendarmerie"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("JSON counters");
    assert_eq!(
        counters["enrolled"], 1,
        "only the first envelope: {counters}"
    );
    assert_eq!(counters["started"], 0, "{counters}");
    app.stop().await;
}
