//! xAPI ingest, end to end over real HTTP: statements shaped as Moodle's logstore_xapi, Open
//! edX's event-routing-backends and a Ralph pipeline send them (their verbs, activity types,
//! actor forms and context shapes; the data is this file's own), mapped or ignored as the table
//! of `standards::xapi` says, answered as an LRS answers, and checked in the counters
//! (`GET /v1/totals`, `GET /v1/campaigns/...`) and the metrics after each step.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::auth::add;
use crate::helpers::{TestApp, spawn_app_with};

const MOODLE: &str = "https://moodle.gendarmerie.example";
const MOODLE_COURSE: &str = "https://moodle.gendarmerie.example/course/view.php?id=12";
const MOODLE_CHAPTER_1: &str = "https://moodle.gendarmerie.example/mod/scorm/view.php?id=101";
const EDX: &str = "https://courses.fun-mooc.example";
const EDX_COURSE: &str = "https://courses.fun-mooc.example/course/course-v1:Gendarmerie+CYBER+2024";
const EDX_CHAPTER_2: &str = "https://courses.fun-mooc.example/xblock/block-v1:Gendarmerie+CYBER+2024+type@sequential+block@ch2";
const ADL: &str = "http://adlnet.gov/expapi/verbs/";

/// A suivi whose `[xapi]` table maps one Moodle module to chapter 1 and one Open edX sequence
/// to chapter 2 (the course: any activity typed as one).
async fn xapi_app(tweak: impl FnOnce(&mut suivi::config::Settings)) -> TestApp {
    spawn_app_with(|settings| {
        settings
            .xapi
            .chapters
            .insert(MOODLE_CHAPTER_1.to_owned(), 1);
        settings.xapi.chapters.insert(EDX_CHAPTER_2.to_owned(), 2);
        settings.xapi.sources.insert(
            "moodle.gendarmerie.example".to_owned(),
            "gendform3".to_owned(),
        );
        tweak(settings);
    })
    .await
}

/// An xAPI request: `authorization` and `version` (the `X-Experience-API-Version` header) when
/// given. Answers the status, the body (JSON, or a JSON string when it is not) and the headers.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    version: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut request = app.http.request(method, app.url(path));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some(version) = version {
        request = request.header("x-experience-api-version", version);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("suivi answers");
    let (status, headers) = (response.status(), response.headers().clone());
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, headers)
}

/// POSTs statements with version 1.0.3 and no credential; answers status and body.
async fn post(app: &TestApp, statements: &Value) -> (StatusCode, Value) {
    let (status, body, headers) = send(
        app,
        Method::POST,
        "/xAPI/statements",
        None,
        Some("1.0.3"),
        Some(statements),
    )
    .await;
    assert_eq!(
        headers
            .get("x-experience-api-version")
            .and_then(|value| value.to_str().ok()),
        Some("1.0.3"),
        "every answer carries the version"
    );
    (status, body)
}

/// (enrolled, started, chapters 1 and 2 completed, certified) of a counters object.
fn funnel(counters: &Value) -> (u64, u64, u64, u64, u64) {
    let number = |value: &Value| value.as_u64().expect("a count");
    (
        number(&counters["enrolled"]),
        number(&counters["started"]),
        number(&counters["chapters_completed"][0]),
        number(&counters["chapters_completed"][1]),
        number(&counters["certified"]),
    )
}

/// The value of one series in `/metrics`.
async fn metric(app: &TestApp, series: &str) -> f64 {
    let (status, text) = app.get_text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} is exported"))
}

async fn ignored(app: &TestApp, reason: &str) -> f64 {
    metric(
        app,
        &format!("suivi_xapi_statements_ignored_total{{reason=\"{reason}\"}}"),
    )
    .await
}

/// A Moodle learner as logstore_xapi identifies one: name and account (the site, the user id).
fn moodle_actor(user: u32) -> Value {
    json!({
        "objectType": "Agent",
        "name": format!("Gendarme {user}"),
        "account": {"homePage": MOODLE, "name": user.to_string()},
    })
}

/// The Moodle course, typed as logstore_xapi types it.
fn moodle_course(kind: &str) -> Value {
    json!({
        "id": MOODLE_COURSE,
        "objectType": "Activity",
        "definition": {"type": kind, "name": {"fr": "Cybersécurité au quotidien"}},
    })
}

/// Moodle's context: platform, language, its info extension, and contextActivities whose
/// values are an object or an array, both of which Moodle sends.
fn moodle_context(grouping_as_object: bool, parent: Option<Value>) -> Value {
    let site = json!({
        "id": MOODLE,
        "objectType": "Activity",
        "definition": {"type": "http://id.tincanapi.com/activitytype/lms", "name": {"fr": "GendForm"}},
    });
    let mut activities = json!({
        "grouping": if grouping_as_object { site.clone() } else { json!([site]) },
        "category": [{
            "id": "http://moodle.org",
            "objectType": "Activity",
            "definition": {"type": "http://id.tincanapi.com/activitytype/source", "name": {"en": "Moodle"}},
        }],
    });
    if let Some(parent) = parent {
        activities["parent"] = json!([parent]);
    }
    json!({
        "platform": "Moodle",
        "language": "fr",
        "extensions": {"http://lrs.learninglocker.net/define/extensions/info": {"http://moodle.org": "4.1.2", "event_name": "\\core\\event\\x"}},
        "contextActivities": activities,
    })
}

fn moodle_statement(user: u32, verb: &str, object: Value, context: Value, at: &str) -> Value {
    json!({
        "actor": moodle_actor(user),
        "verb": {"id": verb, "display": {"fr": "verbe"}},
        "object": object,
        "timestamp": at,
        "context": context,
    })
}

fn moodle_module(id: &str) -> Value {
    json!({
        "id": id,
        "objectType": "Activity",
        "definition": {"type": "http://adlnet.gov/expapi/activities/module", "name": {"fr": "Module"}},
    })
}

#[tokio::test]
async fn moodle_statements_fill_the_funnel_and_the_rest_is_acknowledged_and_counted_as_ignored() {
    let mut app = xapi_app(|_| {}).await;
    let (verb_before, object_before) = (
        ignored(&app, "unmapped_verb").await,
        ignored(&app, "unmapped_object").await,
    );
    let tincan_course = "http://id.tincanapi.com/activitytype/lms/course";
    let cmi5_course = "https://w3id.org/xapi/cmi5/activitytype/course";
    let badge = |hash: &str| {
        json!({"id": format!("{MOODLE}/badges/badge.php?hash={hash}"),
               "definition": {"type": "http://activitystrea.ms/schema/1.0/badge", "name": {"fr": "Badge"}}})
    };
    let at = "2024-03-04T09:15:00+01:00";
    let statements = json!([
        // user_enrolment_created
        moodle_statement(
            1,
            &format!("{ADL}registered"),
            moodle_course(tincan_course),
            moodle_context(true, None),
            at
        ),
        moodle_statement(
            2,
            &format!("{ADL}registered"),
            moodle_course(tincan_course),
            moodle_context(false, None),
            at
        ),
        // course_module_completion_updated, a mapped chapter and a module with no chapter number
        moodle_statement(
            2,
            &format!("{ADL}completed"),
            moodle_module(MOODLE_CHAPTER_1),
            moodle_context(false, Some(moodle_course(tincan_course))),
            at
        ),
        moodle_statement(
            2,
            &format!("{ADL}completed"),
            moodle_module(&format!("{MOODLE}/mod/page/view.php?id=999")),
            moodle_context(false, Some(moodle_course(tincan_course))),
            at
        ),
        // course_completed
        moodle_statement(
            3,
            &format!("{ADL}completed"),
            moodle_course(tincan_course),
            moodle_context(false, None),
            at
        ),
        // badge_awarded in the course's context, and a site badge
        moodle_statement(
            4,
            "https://w3id.org/xapi/tla/verbs/achieved",
            badge("c0ffee"),
            moodle_context(false, Some(moodle_course(cmi5_course))),
            at
        ),
        moodle_statement(
            5,
            "https://w3id.org/xapi/tla/verbs/achieved",
            badge("5173"),
            moodle_context(false, None),
            at
        ),
        // course_viewed
        moodle_statement(
            1,
            "http://id.tincanapi.com/verb/viewed",
            moodle_course(tincan_course),
            moodle_context(true, None),
            at
        ),
    ]);
    let (status, ids) = post(&app, &statements).await;
    assert_eq!(status, StatusCode::OK, "{ids}");
    let ids = ids.as_array().expect("the ids");
    assert_eq!(ids.len(), 8, "one id per statement, in order");
    for id in ids {
        let id = id.as_str().expect("a string");
        assert_eq!(id.len(), 36, "a UUID: {id}");
        assert_eq!(
            &id[14..15],
            "5",
            "Moodle sends no id: suivi gives a UUID v5: {id}"
        );
    }
    // m1 enrolled; m2 enrolled and completed chapter 1; m3 and m4 certified (all stages).
    assert_eq!(funnel(&app.totals_json().await), (4, 3, 3, 2, 2));
    assert!(ignored(&app, "unmapped_verb").await >= verb_before + 1.0);
    assert!(ignored(&app, "unmapped_object").await >= object_before + 2.0);
    assert!(
        metric(&app, "suivi_events_accepted_total{transport=\"xapi\"}").await >= 5.0,
        "the mapped statements are counted as xapi events"
    );
    // No campaign named, no credential: the events name none.
    assert_eq!(funnel(&app.campaign_json("direct").await).0, 4);
    app.stop().await;
}

/// An Open edX learner as event-routing-backends identifies one: the LMS root and an anonymous id.
fn edx_actor(user: &str) -> Value {
    json!({"objectType": "Agent", "account": {"homePage": EDX, "name": user}})
}

fn edx_course() -> Value {
    json!({
        "id": EDX_COURSE,
        "objectType": "Activity",
        "definition": {
            "type": "http://adlnet.gov/expapi/activities/course",
            "name": {"en-US": "Cybersécurité"},
            "extensions": {"https://w3id.org/xapi/acrossx/extensions/type": "audit"},
        },
    })
}

fn edx_statement(id: &str, user: &str, verb: &str, object: Value, extra: Value) -> Value {
    let mut statement = json!({
        "id": id,
        "version": "1.0.3",
        "actor": edx_actor(user),
        "verb": {"id": verb, "display": {"en": "did"}},
        "object": object,
        "timestamp": "2024-03-05T10:20:30.123456+00:00",
        "context": {
            "registration": "5d0c2f7e-3f1c-4a53-9c47-9f0c3e2d7b11",
            "contextActivities": {"parent": [edx_course()]},
            "extensions": {
                "https://w3id.org/xapi/openedx/extension/transformer-version": "event-routing-backends@7.0.1",
                "https://w3id.org/xapi/openedx/extensions/session-id": "e4858858f5e0b3b2f4d0a0d2b0c8a9f1",
            },
        },
    });
    for (key, value) in extra.as_object().expect("an object") {
        statement[key] = value.clone();
    }
    statement
}

#[tokio::test]
async fn open_edx_statements_count_and_an_openid_actor_without_a_source_refuses_the_batch() {
    let mut app = xapi_app(|_| {}).await;
    let incomplete_before = ignored(&app, "incomplete").await;
    let chapter = json!({"id": EDX_CHAPTER_2, "objectType": "Activity",
                         "definition": {"type": "http://id.tincanapi.com/activitytype/resource"}});
    let statements = json!([
        // edx.course.enrollment.activated
        edx_statement(
            "0a4a4a0e-7d7b-4c38-a3c5-3e9f9c4f1a01",
            "a1b2",
            &format!("{ADL}registered"),
            edx_course(),
            json!({})
        ),
        // edx.completion.block_completion.changed, on a mapped sequence, then on one unfinished
        edx_statement(
            "0a4a4a0e-7d7b-4c38-a3c5-3e9f9c4f1a02",
            "a1b2",
            &format!("{ADL}progressed"),
            chapter.clone(),
            json!({"result": {"completion": true, "extensions": {"https://w3id.org/xapi/cmi5/result/extensions/progress": 100.0}}})
        ),
        edx_statement(
            "0a4a4a0e-7d7b-4c38-a3c5-3e9f9c4f1a03",
            "c3d4",
            &format!("{ADL}progressed"),
            chapter,
            json!({"result": {"completion": false, "extensions": {"https://w3id.org/xapi/cmi5/result/extensions/progress": 40.0}}})
        ),
        // edx.course.grade.passed.first_time
        edx_statement(
            "0a4a4a0e-7d7b-4c38-a3c5-3e9f9c4f1a04",
            "e5f6",
            &format!("{ADL}passed"),
            edx_course(),
            json!({})
        ),
        // problem_check
        edx_statement(
            "0a4a4a0e-7d7b-4c38-a3c5-3e9f9c4f1a05",
            "a1b2",
            "http://adlnet.gov/expapi/verbs/answered",
            json!({"id": format!("{EDX}/xblock/block-v1:Gendarmerie+CYBER+2024+type@problem+block@q1"),
                             "objectType": "Activity", "definition": {"type": "http://adlnet.gov/expapi/activities/cmi.interaction", "interactionType": "choice"}}),
            json!({"result": {"success": true, "response": "b"}})
        ),
    ]);
    // The lowercase route answers too.
    let (status, ids, _) = send(
        &app,
        Method::POST,
        "/xapi/statements",
        None,
        Some("1.0.3"),
        Some(&statements),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ids}");
    assert_eq!(ids[0], "0a4a4a0e-7d7b-4c38-a3c5-3e9f9c4f1a01");
    assert_eq!(ids[4], "0a4a4a0e-7d7b-4c38-a3c5-3e9f9c4f1a05");
    // a1b2 enrolled and completed chapter 2; e5f6 certified.
    assert_eq!(funnel(&app.totals_json().await), (2, 2, 1, 2, 1));
    assert!(ignored(&app, "incomplete").await >= incomplete_before + 1.0);

    // Older event-routing-backends identify the learner by openid: no LMS host to name the
    // source, and no credential to give one: malformed, and the batch is refused whole.
    let mut openid = edx_statement(
        "0a4a4a0e-7d7b-4c38-a3c5-3e9f9c4f1a06",
        "x",
        &format!("{ADL}registered"),
        edx_course(),
        json!({}),
    );
    openid["actor"] =
        json!({"objectType": "Agent", "openid": "https://openedx.org/users/user-v1/9f0c3e2d"});
    let valid = edx_statement(
        "0a4a4a0e-7d7b-4c38-a3c5-3e9f9c4f1a07",
        "g7h8",
        &format!("{ADL}registered"),
        edx_course(),
        json!({}),
    );
    let (status, body) = post(&app, &json!([valid, openid])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_statement");
    let message = body["message"].as_str().expect("a message");
    assert!(
        message.starts_with("statement 1: ") && message.contains("no source"),
        "{message}"
    );
    assert_eq!(
        funnel(&app.totals_json().await),
        (2, 2, 1, 2, 1),
        "nothing counted"
    );
    app.stop().await;
}

#[tokio::test]
async fn ralph_fed_statements_in_xapi_2_are_taken() {
    let mut app = xapi_app(|_| {}).await;
    let video = json!({
        "id": "4b0d1c8e-8a3e-4bdb-9b6e-1f2d3c4b5a60",
        "actor": edx_actor("r1"),
        "verb": {"id": "https://w3id.org/xapi/video/verbs/played", "display": {"en-US": "played"}},
        "object": {"id": format!("{EDX}/xblock/block-v1:Gendarmerie+CYBER+2024+type@video+block@v1"),
                   "objectType": "Activity",
                   "definition": {"type": "https://w3id.org/xapi/video/activity-type/video"}},
        "result": {"extensions": {"https://w3id.org/xapi/video/extensions/time": 12.5}},
        "context": {"contextActivities": {"category": [{"id": "https://w3id.org/xapi/video", "definition": {"type": "http://adlnet.gov/expapi/activities/profile"}}]},
                    "extensions": {"https://w3id.org/xapi/video/extensions/session-id": "af45a70b-27f3-4a7c-8f0f-1f2d3c4b5a60"}},
        "timestamp": "2024-03-06T08:00:00Z",
        "version": "2.0.0",
    });
    let satisfied = json!({
        "id": "4b0d1c8e-8a3e-4bdb-9b6e-1f2d3c4b5a61",
        "actor": edx_actor("r1"),
        "verb": {"id": "https://w3id.org/xapi/adl/verbs/satisfied", "display": {"en-US": "satisfied"}},
        "object": {"id": EDX_COURSE, "objectType": "Activity",
                   "definition": {"type": "https://w3id.org/xapi/cmi5/activitytype/course"}},
        "timestamp": "2024-03-06T09:00:00Z",
        "version": "2.0.0",
    });
    let (status, ids, headers) = send(
        &app,
        Method::POST,
        "/xAPI/statements",
        None,
        Some("2.0.0"),
        Some(&json!([video, satisfied])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ids}");
    assert_eq!(
        ids,
        json!([
            "4b0d1c8e-8a3e-4bdb-9b6e-1f2d3c4b5a60",
            "4b0d1c8e-8a3e-4bdb-9b6e-1f2d3c4b5a61"
        ])
    );
    assert_eq!(headers["x-experience-api-version"], "2.0.0");
    assert_eq!(funnel(&app.totals_json().await), (1, 1, 1, 1, 1));
    app.stop().await;
}

#[tokio::test]
async fn a_statement_sent_again_is_a_duplicate_with_or_without_its_id() {
    let mut app = xapi_app(|_| {}).await;
    let with_id = edx_statement(
        "7e6b1a52-2f43-4d7e-9a39-0c2b6f1d8e01",
        "d1",
        &format!("{ADL}registered"),
        edx_course(),
        json!({}),
    );
    let without_id = moodle_statement(
        7,
        &format!("{ADL}registered"),
        moodle_course("http://id.tincanapi.com/activitytype/lms/course"),
        moodle_context(true, None),
        "2024-03-04T09:15:00Z",
    );
    let (status, first) = post(&app, &json!([with_id, without_id])).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let duplicates_before = metric(&app, "suivi_events_duplicate_total{transport=\"xapi\"}").await;
    let (status, again) = post(&app, &json!([with_id, without_id])).await;
    assert_eq!(status, StatusCode::OK, "never 409: {again}");
    assert_eq!(first, again, "the same ids, the generated one included");
    // The statement without id, sent alone: the same id.
    let (_, alone) = post(&app, &without_id).await;
    assert_eq!(alone[0], first[1]);
    // PUT of a statement already POSTed: 204, nothing changes.
    let (status, _, _) = send(
        &app,
        Method::PUT,
        "/xAPI/statements?statementId=7e6b1a52-2f43-4d7e-9a39-0c2b6f1d8e01",
        None,
        Some("1.0.3"),
        Some(&with_id),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(funnel(&app.totals_json().await), (2, 0, 0, 0, 0));
    assert!(
        metric(&app, "suivi_events_duplicate_total{transport=\"xapi\"}").await
            >= duplicates_before + 4.0
    );
    // Two statements of one batch with the same id: refused as the spec says.
    let (status, body) = post(&app, &json!([with_id, with_id])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("a message")
            .contains("two statements")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_batch_with_one_malformed_or_refused_statement_is_refused_whole() {
    let mut app = xapi_app(|_| {}).await;
    let refused_before = metric(
        &app,
        "suivi_ingest_requests_refused_total{transport=\"xapi\",reason=\"invalid_statement\"}",
    )
    .await;
    let valid = |user: &str| {
        edx_statement(
            &uuid_for(user),
            user,
            &format!("{ADL}registered"),
            edx_course(),
            json!({}),
        )
    };
    let mut no_verb = valid("b2");
    no_verb.as_object_mut().expect("an object").remove("verb");
    let (status, body) = post(&app, &json!([valid("b1"), no_verb, valid("b3")])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_statement");
    assert!(
        body["message"]
            .as_str()
            .expect("a message")
            .starts_with("statement 1: verb is missing"),
        "{body}"
    );
    // Well-formed xAPI, but suivi's own rules refuse the event: before 2018.
    let mut too_old = valid("b4");
    too_old["timestamp"] = json!("2015-01-01T00:00:00Z");
    let (status, body) = post(&app, &json!([valid("b1"), valid("b3"), too_old])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "occurred_at_too_old");
    assert!(
        body["message"]
            .as_str()
            .expect("a message")
            .starts_with("statement 2: "),
        "{body}"
    );
    // Neither batch left anything counted.
    assert_eq!(funnel(&app.totals_json().await), (0, 0, 0, 0, 0));
    assert!(
        metric(
            &app,
            "suivi_ingest_requests_refused_total{transport=\"xapi\",reason=\"invalid_statement\"}"
        )
        .await
            >= refused_before + 2.0
    );
    // Not statements at all.
    for body in [json!("hello"), json!(12)] {
        let (status, answer) = post(&app, &body).await;
        assert_eq!(
            (status, answer["code"].clone()),
            (StatusCode::BAD_REQUEST, json!("invalid_body"))
        );
    }
    let (status, _, _) = send(
        &app,
        Method::POST,
        "/xAPI/statements",
        None,
        Some("1.0.3"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an empty body");
    app.stop().await;
}

/// A UUID made of a short name, for readable test ids.
fn uuid_for(name: &str) -> String {
    let hex: String = name.bytes().map(|byte| format!("{byte:02x}")).collect();
    format!("00000000-0000-4000-8000-{hex:0>12}")
}

#[tokio::test]
async fn the_version_header_is_required_on_writes_and_answered_everywhere() {
    let mut app = xapi_app(|_| {}).await;
    let statement = edx_statement(
        &uuid_for("v1"),
        "v1",
        &format!("{ADL}registered"),
        edx_course(),
        json!({}),
    );
    for (version, expected) in [
        (None, StatusCode::BAD_REQUEST),
        (Some("0.95"), StatusCode::BAD_REQUEST),
        (Some("1.1.0"), StatusCode::BAD_REQUEST),
        (Some("1.0."), StatusCode::BAD_REQUEST),
        (Some("1.0"), StatusCode::OK),
        (Some("1.0.1"), StatusCode::OK),
        (Some("2.0.0"), StatusCode::OK),
    ] {
        let (status, body, headers) = send(
            &app,
            Method::POST,
            "/xAPI/statements",
            None,
            version,
            Some(&statement),
        )
        .await;
        assert_eq!(status, expected, "{version:?}: {body}");
        if expected == StatusCode::BAD_REQUEST {
            assert_eq!(body["code"], "unsupported_version");
        }
        assert!(
            headers.contains_key("x-experience-api-version"),
            "{version:?}"
        );
    }
    let (status, body, headers) = send(&app, Method::GET, "/xAPI/about", None, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"version": ["1.0.3", "2.0.0"]}));
    assert_eq!(headers["x-experience-api-version"], "2.0.0");
    assert_eq!(
        send(&app, Method::GET, "/xapi/about", None, None, None)
            .await
            .0,
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test]
async fn put_takes_one_statement_by_its_id() {
    let mut app = xapi_app(|_| {}).await;
    let id = "2c8d3b7a-6e1f-4f0a-8b9c-1d2e3f4a5b6c";
    let mut statement = edx_statement(
        id,
        "p1",
        &format!("{ADL}registered"),
        edx_course(),
        json!({}),
    );
    statement.as_object_mut().expect("an object").remove("id");
    let put = |path: String, body: Value| {
        let app = &app;
        async move { send(app, Method::PUT, &path, None, Some("1.0.3"), Some(&body)).await }
    };
    let (status, body, headers) = put(
        format!("/xAPI/statements?statementId={id}"),
        statement.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(headers["x-experience-api-version"], "1.0.3");
    assert_eq!(funnel(&app.totals_json().await).0, 1);
    // The statement's own id must be the statementId.
    let mut other = statement.clone();
    other["id"] = json!("9c8d3b7a-6e1f-4f0a-8b9c-1d2e3f4a5b6c");
    let (status, body, _) = put(format!("/xAPI/statements?statementId={id}"), other).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("a message")
            .contains("is not the statementId")
    );
    let (status, _, _) = put("/xAPI/statements".to_owned(), statement.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no statementId");
    let (status, _, _) = put(
        "/xAPI/statements?statementId=12".to_owned(),
        statement.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "not a UUID");
    let (status, _, _) = put(
        format!("/xAPI/statements?statementId={id}"),
        json!([statement]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an array");
    assert_eq!(funnel(&app.totals_json().await).0, 1);
    app.stop().await;
}

#[tokio::test]
async fn get_statements_says_suivi_is_not_an_lrs() {
    let mut app = xapi_app(|_| {}).await;
    let (status, body, headers) = send(
        &app,
        Method::GET,
        "/xAPI/statements?limit=10",
        None,
        Some("1.0.3"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(body["code"], "not_an_lrs");
    assert!(
        body["message"]
            .as_str()
            .expect("a message")
            .contains("does not store")
    );
    assert_eq!(headers["x-experience-api-version"], "1.0.3");
    app.stop().await;
}

#[tokio::test]
async fn an_lms_credential_gives_the_source_and_campaign_of_what_it_sends() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let file = directory.path().join("credentials.toml");
    let lms = add(
        &file,
        &[
            "moodle-gendarmerie",
            "--write-source",
            "gendform3",
            "--campaign",
            "gendarmerie",
        ],
    );
    let two_lms = add(
        &file,
        &[
            "two-lms",
            "--write-source",
            "gendform3",
            "--write-source",
            "campus-pro",
        ],
    );
    let partner = add(&file, &["partner", "--read", "gendarmerie"]);
    let admin = add(&file, &["root", "--admin"]);
    let mut app = xapi_app(|settings| {
        settings.credentials = Some(file.clone());
        settings.snapshot_interval = Duration::from_millis(50);
    })
    .await;
    let bearer = |token: &str| format!("Bearer {token}");
    let counters = |campaign: &'static str| {
        let app = &app;
        let admin = bearer(&admin);
        async move {
            let (status, body, _) = send(
                app,
                Method::GET,
                &format!("/v1/campaigns/{campaign}"),
                Some(&admin),
                None,
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            funnel(&body)
        }
    };
    // Moodle's logstore_xapi authenticates with HTTP Basic: key and secret, the secret the token.
    // The learners are identified by email here (logstore_xapi's mbox option): the credential
    // gives the source.
    let mut by_mail = moodle_statement(
        21,
        &format!("{ADL}registered"),
        moodle_course("http://id.tincanapi.com/activitytype/lms/course"),
        moodle_context(true, None),
        "2024-03-04T09:15:00Z",
    );
    by_mail["actor"] =
        json!({"objectType": "Agent", "name": "Ada", "mbox": "mailto:ada@gendarmerie.example"});
    let by_account = moodle_statement(
        22,
        &format!("{ADL}registered"),
        moodle_course("http://id.tincanapi.com/activitytype/lms/course"),
        moodle_context(false, None),
        "2024-03-04T09:16:00Z",
    );
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("moodle:{lms}"))
    );
    let (status, body, _) = send(
        &app,
        Method::POST,
        "/xAPI/statements",
        Some(&basic),
        Some("1.0.3"),
        Some(&json!([by_mail, by_account])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        counters("gendarmerie").await.0,
        2,
        "no campaign named: the credential's"
    );

    // A campaign the credential may not send for.
    let mut elsewhere = moodle_statement(
        23,
        &format!("{ADL}registered"),
        moodle_course("http://id.tincanapi.com/activitytype/lms/course"),
        moodle_context(false, None),
        "2024-03-04T09:17:00Z",
    );
    elsewhere["context"]["extensions"][suivi::standards::CAMPAIGN_EXTENSION] = json!("pole-emploi");
    let (status, body, _) = send(
        &app,
        Method::POST,
        "/xAPI/statements",
        Some(&bearer(&lms)),
        Some("1.0.3"),
        Some(&elsewhere),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "campaign_not_allowed");

    // A credential of two sources: the source is the LMS host, renamed by [xapi.sources].
    let (status, body, _) = send(
        &app,
        Method::POST,
        "/xAPI/statements",
        Some(&bearer(&two_lms)),
        Some("1.0.3"),
        Some(&moodle_statement(
            24,
            &format!("{ADL}registered"),
            moodle_course("http://id.tincanapi.com/activitytype/lms/course"),
            moodle_context(false, None),
            "2024-03-04T09:18:00Z",
        )),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "moodle.gendarmerie.example is gendform3: {body}"
    );
    // Another LMS's statement: its host is a source the credential does not name.
    let (status, body, _) = send(
        &app,
        Method::POST,
        "/xAPI/statements",
        Some(&bearer(&two_lms)),
        Some("1.0.3"),
        Some(&json!([edx_statement(
            &uuid_for("s1"),
            "s1",
            &format!("{ADL}registered"),
            edx_course(),
            json!({})
        ),])),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "source_not_allowed");
    assert!(
        body["message"]
            .as_str()
            .expect("a message")
            .starts_with("statement 0: "),
        "{body}"
    );

    // No token; a token without events:write.
    let (status, body, headers) = send(
        &app,
        Method::POST,
        "/xAPI/statements",
        None,
        Some("1.0.3"),
        Some(&by_account),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        headers.contains_key("x-experience-api-version"),
        "the refusal carries the version too"
    );
    let (status, body, _) = send(
        &app,
        Method::POST,
        "/xAPI/statements",
        Some(&bearer(&partner)),
        Some("1.0.3"),
        Some(&by_account),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::FORBIDDEN, json!("permission_denied"))
    );
    // About stays open.
    assert_eq!(
        send(&app, Method::GET, "/xAPI/about", None, None, None)
            .await
            .0,
        StatusCode::OK
    );

    // The direct campaign got the two-source credential's statement, and nothing else moved.
    assert_eq!(counters("gendarmerie").await.0, 2);
    assert_eq!(counters("direct").await.0, 1);
    app.stop().await;
}

/// The Gendarmerie's LMS sends statements naming no campaign; its learners enrolled through the
/// Gendarmerie's tracking link (an event naming the campaign, with the same learner identity).
/// Their progress fills the Gendarmerie's funnel, whichever arrives first, and a learner who
/// never followed a link stays `direct`.
#[tokio::test]
async fn statements_naming_no_campaign_count_under_the_learners_campaign() {
    let mut app = xapi_app(|_| {}).await;
    let completed = format!("{ADL}completed");
    // User 7 completes chapter 1 and the course before its tagged enrolment arrives.
    let early = json!([
        moodle_statement(
            7,
            &completed,
            moodle_module(MOODLE_CHAPTER_1),
            moodle_context(
                true,
                Some(moodle_course(
                    "http://id.tincanapi.com/activitytype/lms/course"
                ))
            ),
            "2021-01-10T09:00:00Z"
        ),
        moodle_statement(
            7,
            &completed,
            moodle_course("http://id.tincanapi.com/activitytype/lms/course"),
            moodle_context(false, None),
            "2021-01-12T09:00:00Z"
        ),
        moodle_statement(
            8,
            &format!("{ADL}registered"),
            moodle_course("http://id.tincanapi.com/activitytype/lms/course"),
            moodle_context(false, None),
            "2021-01-05T09:00:00Z"
        ),
    ]);
    let (status, body) = post(&app, &early).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let direct = app.campaign_json("direct").await;
    assert_eq!(
        direct["enrolled"], 2,
        "both learners count as direct first: {direct}"
    );
    // The tagged enrolment of user 7: the same learner (source and learner id) as the statements.
    let enrolment = json!([{
        "event_id": "link-7", "kind": "enrolled", "campaign": "gendarmerie", "source": "gendform3",
        "learner_id": format!("account:7@{MOODLE}"), "occurred_at": "2021-01-03T08:00:00Z",
    }]);
    let (status, body) = app.post_events(&enrolment).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{body}"
    );
    let gendarmerie = app.campaign_json("gendarmerie").await;
    assert_eq!(gendarmerie["enrolled"], 1, "{gendarmerie}");
    assert_eq!(gendarmerie["certified"], 1, "{gendarmerie}");
    assert_eq!(gendarmerie["chapters_completed"][0], 1, "{gendarmerie}");
    let direct = app.campaign_json("direct").await;
    assert_eq!(
        (direct["enrolled"].as_u64(), direct["certified"].as_u64()),
        (Some(1), Some(0)),
        "{direct}"
    );
    let totals = app.totals_json().await;
    assert_eq!(
        (totals["enrolled"].as_u64(), totals["certified"].as_u64()),
        (Some(2), Some(1)),
        "{totals}"
    );
    app.stop().await;
}

/// `suivi simulate --xapi` and `--caliper` send the programme as LMSs do — the Gendarmerie's
/// GendForm3.0-like platform naming no campaign in its statements, its learners' tagged clicks
/// (posted to /v1/events) naming it — and every campaign, clicks and visitors included, comes
/// out as the same programme sent over gRPC gives it.
#[tokio::test]
async fn the_programme_sent_as_xapi_statements_or_caliper_events_gives_the_figures_sent_over_grpc()
{
    let mapped = |settings: &mut suivi::config::Settings| {
        settings.xapi.course = vec![suivi::simulate::xapi::COURSE.to_owned()];
        for chapter in 1..=u32::from(settings.chapter_count) {
            settings.xapi.chapters.insert(
                suivi::simulate::xapi::chapter_activity(chapter),
                u8::try_from(chapter).expect("few chapters"),
            );
        }
    };
    // The xAPI run goes through credentials, the token sent as HTTP Basic's password, as
    // Moodle sends it.
    let directory = tempfile::tempdir().expect("a temporary directory");
    let credentials = directory.path().join("credentials.toml");
    let token = add(&credentials, &["platform", "--admin"]);
    let mut over_grpc = spawn_app_with(|_| {}).await;
    let mut over_xapi = spawn_app_with(|settings| {
        mapped(settings);
        settings.credentials = Some(credentials.clone());
    })
    .await;
    let mut over_caliper = spawn_app_with(mapped).await;
    let simulate = |target: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_suivi"))
                .args(["simulate", "--scale", "0.003", "--seed", "11"])
                .args(target)
                .env_remove("SUIVI_TOKEN")
                .output()
                .expect("suivi simulate runs")
        })
    };
    for target in [
        vec![
            "--grpc".to_owned(),
            format!("http://{}", over_grpc.grpc_addr),
        ],
        vec![
            "--xapi".to_owned(),
            format!("http://{}/xAPI", over_xapi.http_addr),
            "--token".to_owned(),
            token.clone(),
            "--basic-user".to_owned(),
            "moodle".to_owned(),
        ],
        vec![
            "--caliper".to_owned(),
            format!("http://{}/caliper", over_caliper.http_addr),
        ],
    ] {
        let output = simulate(target).await.expect("the thread ends");
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let funnels = |campaigns: &Value| -> Vec<(String, Value)> {
        campaigns["campaigns"]
            .as_array()
            .expect("campaigns")
            .iter()
            .map(|counters| {
                (
                    counters["campaign"].as_str().expect("an id").to_owned(),
                    json!([
                        counters["clicks"],
                        counters["unique_visitors"],
                        counters["enrolled"],
                        counters["started"],
                        counters["chapters_completed"],
                        counters["certified"]
                    ]),
                )
            })
            .collect()
    };
    let totals = |totals: &Value| {
        json!([
            totals["clicks"],
            totals["unique_visitors"],
            totals["enrolled"],
            totals["started"],
            totals["chapters_completed"],
            totals["certified"]
        ])
    };
    let (_, grpc_campaigns) = over_grpc.get("/v1/campaigns").await;
    let expected = funnels(&grpc_campaigns);
    // The Gendarmerie's learners are on the GendForm3.0-like platform, whose statements name
    // no campaign: only their tagged clicks do.
    assert!(
        expected
            .iter()
            .any(|(campaign, funnel)| campaign == "gendarmerie" && funnel[2] != 0),
        "{expected:?}"
    );
    let expected_totals = totals(&over_grpc.totals_json().await);
    for (app, authorization) in [
        (&over_xapi, Some(format!("Bearer {token}"))),
        (&over_caliper, None),
    ] {
        let get = |path: &str| {
            let mut request = app.http.get(app.url(path));
            if let Some(authorization) = &authorization {
                request = request.header("authorization", authorization);
            }
            async move {
                request
                    .send()
                    .await
                    .expect("suivi answers")
                    .json::<Value>()
                    .await
                    .expect("JSON")
            }
        };
        assert_eq!(funnels(&get("/v1/campaigns").await), expected);
        assert_eq!(totals(&get("/v1/totals").await), expected_totals);
    }
    over_grpc.stop().await;
    over_xapi.stop().await;
    over_caliper.stop().await;
}
