//! Credentials, end to end: tokens made by the real `suivi credentials` command, a running suivi
//! reading that file, and every HTTP route and gRPC method asked by every kind of caller — none,
//! an unknown token, partner A, partner B, an LMS, an operator, an admin. A partner never sees
//! another's figure, not even whether its campaign exists.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use suivi::proto;
use suivi::proto::counter_service_client::CounterServiceClient;
use suivi::proto::ingest_service_client::IngestServiceClient;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::helpers::{Ev, Kind, PATIENCE, TestApp, event, proto_batch, spawn_app_with, within};

/// Runs `suivi credentials --file FILE ARGS…`, which must succeed, and returns what it printed.
fn credentials(file: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_suivi"))
        .arg("credentials")
        .arg("--file")
        .arg(file)
        .args(args)
        .output()
        .expect("suivi credentials runs");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "suivi credentials {args:?} failed: {printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    printed
}

/// Adds a credential and returns its token, the last line `add` prints.
pub(crate) fn add(file: &Path, args: &[&str]) -> String {
    let printed = credentials(file, &[&["add"], args].concat());
    let token = printed.lines().last().expect("add prints the token").trim();
    assert!(token.starts_with("suivi_"), "{printed}");
    token.to_owned()
}

/// The callers of the matrix, by name, with their tokens (none for anonymous).
struct Callers {
    partner_a: String,
    partner_b: String,
    lms: String,
    operator: String,
    admin: String,
}

impl Callers {
    fn make(file: &Path) -> Callers {
        Callers {
            partner_a: add(file, &["partner-a", "--read", "gendarmerie"]),
            partner_b: add(file, &["partner-b", "--read", "pole-emploi"]),
            lms: add(
                file,
                &[
                    "gendform3",
                    "--write-source",
                    "GendForm3",
                    "--campaign",
                    "gendarmerie",
                ],
            ),
            operator: add(file, &["grafana", "--operator"]),
            admin: add(file, &["root", "--admin"]),
        }
    }

    /// Every caller of the matrix: its name and its Authorization header, if any.
    fn all(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("anonymous", None),
            ("unknown", Some("Bearer suivi_0123456789abcdef".to_owned())),
            ("partner_a", Some(format!("Bearer {}", self.partner_a))),
            ("partner_b", Some(format!("Bearer {}", self.partner_b))),
            ("lms", Some(format!("Bearer {}", self.lms))),
            ("operator", Some(format!("Bearer {}", self.operator))),
            ("admin", Some(format!("Bearer {}", self.admin))),
        ]
    }
}

/// A suivi reading a credentials file made by the CLI, with snapshots every 50 ms.
async fn guarded_app() -> (TestApp, Callers, tempfile::TempDir) {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let file = directory.path().join("credentials.toml");
    let callers = Callers::make(&file);
    let app = spawn_app_with(|settings| {
        settings.credentials = Some(file.clone());
        settings.snapshot_interval = Duration::from_millis(50);
        settings.watch_interval = Duration::from_millis(20);
    })
    .await;
    (app, callers, directory)
}

/// Sends a request with `authorization`; answers the status and the body as JSON (or as a JSON
/// string when it is not JSON).
async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut request = app.http.request(method, app.url(path));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
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

/// Events of both partners, sent by the admin: two enrolments for gendarmerie, three for pole-emploi.
fn both_partners() -> Vec<Ev> {
    let mut events = Vec::new();
    for (campaign, count) in [("gendarmerie", 2), ("pole-emploi", 3)] {
        for i in 0..count {
            events.push(
                event(&format!("{campaign}-{i}"), Kind::Enrolled)
                    .source("gendform3")
                    .campaign(campaign)
                    .learner(&format!("{campaign}-learner-{i}")),
            );
        }
    }
    events
}

async fn channel(app: &TestApp) -> Channel {
    app.channel().await
}

fn with_token<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(authorization) = authorization {
        let value: MetadataValue<_> = authorization.parse().expect("a metadata value");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[tokio::test]
async fn every_route_and_method_answers_each_caller_by_its_grants() {
    let (mut app, callers, directory) = guarded_app().await;
    let admin = format!("Bearer {}", callers.admin);
    let (status, body, _) = send(
        &app,
        reqwest::Method::POST,
        "/v1/events",
        Some(&admin),
        Some(&Value::Array(
            both_partners().iter().map(Ev::json).collect(),
        )),
    )
    .await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (StatusCode::OK, Some(5))
    );
    // Reports read the snapshots: wait until one holds the events.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body, _) = send(
            &app,
            reqwest::Method::GET,
            "/v1/campaigns/pole-emploi/report?from=2020-10-01&to=2020-10-31&format=json",
            Some(&admin),
            None,
        )
        .await;
        if status == StatusCode::OK && body["figures"]["in_period"]["enrolled"] == json!(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot holds the events: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What each caller gets from each route: the status, by caller in the order of `all()`:
    // anonymous, unknown, partner A (gendarmerie), partner B (pole-emploi), LMS, operator, admin.
    let lms_event = json!([event("m-1", Kind::Enrolled)
        .source("gendform3")
        .campaign("gendarmerie")
        .learner("m-learner")
        .json()]);
    let report = "?from=2020-10-01&to=2020-10-31&format=json";
    let routes: Vec<(reqwest::Method, String, Option<&Value>, [u16; 7])> = vec![
        (
            reqwest::Method::POST,
            "/v1/events".into(),
            Some(&lms_event),
            [401, 401, 403, 403, 200, 403, 200],
        ),
        (
            reqwest::Method::GET,
            "/v1/campaigns".into(),
            None,
            [401, 401, 200, 200, 403, 200, 200],
        ),
        (
            reqwest::Method::GET,
            "/v1/campaigns/gendarmerie".into(),
            None,
            [401, 401, 200, 404, 403, 200, 200],
        ),
        (
            reqwest::Method::GET,
            "/v1/campaigns/pole-emploi".into(),
            None,
            [401, 401, 404, 200, 403, 200, 200],
        ),
        (
            reqwest::Method::GET,
            "/v1/campaigns/gendarmerie/timeline".into(),
            None,
            [401, 401, 200, 404, 403, 200, 200],
        ),
        (
            reqwest::Method::GET,
            "/v1/totals".into(),
            None,
            [401, 401, 403, 403, 403, 200, 200],
        ),
        (
            reqwest::Method::GET,
            "/v1/totals/timeline".into(),
            None,
            [401, 401, 403, 403, 403, 200, 200],
        ),
        (
            reqwest::Method::GET,
            format!("/v1/campaigns/gendarmerie/report{report}"),
            None,
            [401, 401, 200, 404, 403, 200, 200],
        ),
        (
            reqwest::Method::GET,
            format!("/v1/reports{report}"),
            None,
            [401, 401, 200, 200, 403, 200, 200],
        ),
        (reqwest::Method::GET, "/metrics".into(), None, [200; 7]),
        (reqwest::Method::GET, "/healthz".into(), None, [200; 7]),
        (reqwest::Method::GET, "/readyz".into(), None, [200; 7]),
    ];
    for (method, path, body, expected) in &routes {
        for ((caller, authorization), expected) in callers.all().iter().zip(expected) {
            let (status, answer, headers) =
                send(&app, method.clone(), path, authorization.as_deref(), *body).await;
            assert_eq!(
                status.as_u16(),
                *expected,
                "{method} {path} as {caller}: {answer}"
            );
            match status {
                StatusCode::UNAUTHORIZED => {
                    assert_eq!(answer["code"], "unauthenticated", "{answer}");
                    assert_eq!(headers["www-authenticate"], "Bearer realm=\"suivi\"");
                }
                StatusCode::FORBIDDEN => assert_eq!(answer["code"], "permission_denied"),
                _ => {}
            }
            // Nothing partner B's reaches partner A, and the other way round.
            let text = answer.to_string();
            if *caller == "partner_a" && !path.starts_with("/metrics") {
                assert!(
                    !text.contains("\"pole-emploi\"") || status == 404,
                    "{path}: {text}"
                );
                assert!(!text.contains("Pôle emploi"), "{path}: {text}");
            }
            if *caller == "partner_b" && !path.starts_with("/metrics") {
                assert!(!text.contains("Gendarmerie"), "{path}: {text}");
            }
        }
    }

    // A partner learns nothing of a campaign out of its reach: the answer is the one for a
    // campaign that does not exist, word for word but for the name.
    let partner_a = format!("Bearer {}", callers.partner_a);
    for (hidden, missing) in [
        ("/v1/campaigns/pole-emploi", "/v1/campaigns/no-such-partner"),
        (
            "/v1/campaigns/pole-emploi/timeline",
            "/v1/campaigns/no-such-partner/timeline",
        ),
        (
            &format!("/v1/campaigns/pole-emploi/report{report}"),
            &format!("/v1/campaigns/no-such-partner/report{report}"),
        ),
    ] {
        let (status, hidden, _) =
            send(&app, reqwest::Method::GET, hidden, Some(&partner_a), None).await;
        let (missing_status, missing, _) =
            send(&app, reqwest::Method::GET, missing, Some(&partner_a), None).await;
        assert_eq!(
            (status, missing_status),
            (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
        );
        assert_eq!(
            hidden.to_string().replace("pole-emploi", "X"),
            missing.to_string().replace("no-such-partner", "X")
        );
    }
    // The lists hold the partner's own campaign only.
    let (_, list, _) = send(
        &app,
        reqwest::Method::GET,
        "/v1/campaigns",
        Some(&partner_a),
        None,
    )
    .await;
    let listed: Vec<&str> = list["campaigns"]
        .as_array()
        .expect("campaigns")
        .iter()
        .map(|counters| counters["campaign"].as_str().expect("an id"))
        .collect();
    assert_eq!(listed, ["gendarmerie"]);
    let (_, reports, _) = send(
        &app,
        reqwest::Method::GET,
        &format!("/v1/reports{report}"),
        Some(&partner_a),
        None,
    )
    .await;
    let reported: Vec<&str> = reports["reports"]
        .as_array()
        .expect("reports")
        .iter()
        .map(|report| report["campaign"].as_str().expect("an id"))
        .collect();
    assert_eq!(reported, ["gendarmerie"]);
    // Without the totals, a partner's report holds no programme figure; with them it does.
    assert!(
        reports["reports"][0].get("programme").is_none(),
        "{reports}"
    );
    let with_totals = add(
        &directory.path().join("credentials.toml"),
        &["partner-a-totals", "--read", "gendarmerie", "--with-totals"],
    );
    let deadline = Instant::now() + PATIENCE;
    let report = loop {
        let (status, report, _) = send(
            &app,
            reqwest::Method::GET,
            &format!("/v1/campaigns/gendarmerie/report{report}"),
            Some(&format!("Bearer {with_totals}")),
            None,
        )
        .await;
        if status == StatusCode::OK {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "the new credential is not let in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        report["programme"]["in_period"]["enrolled"].as_u64() >= Some(5),
        "{report}"
    );

    grpc_matrix(&app, &callers).await;
    app.stop().await;
}

/// The gRPC half of the matrix: the status code each caller gets from each method.
async fn grpc_matrix(app: &TestApp, callers: &Callers) {
    let channel = channel(app).await;
    for (caller, authorization) in callers.all() {
        let authorization = authorization.as_deref();
        let mut ingest = IngestServiceClient::new(channel.clone());
        let mut counters = CounterServiceClient::new(channel.clone());
        let code = |result: Result<(), tonic::Status>| result.err().map_or(Code::Ok, |s| s.code());
        let batch = proto_batch(&[event(&format!("g-{caller}"), Kind::Enrolled)
            .source("gendform3")
            .campaign("gendarmerie")
            .learner("g-learner")]);
        let ingested = code(
            ingest
                .ingest(with_token(batch, authorization))
                .await
                .map(|_| ()),
        );
        let get_a = code(
            counters
                .get_campaign(with_token(
                    proto::GetCampaignRequest {
                        campaign: "gendarmerie".into(),
                    },
                    authorization,
                ))
                .await
                .map(|_| ()),
        );
        let get_b = code(
            counters
                .get_campaign(with_token(
                    proto::GetCampaignRequest {
                        campaign: "pole-emploi".into(),
                    },
                    authorization,
                ))
                .await
                .map(|_| ()),
        );
        let totals = code(
            counters
                .get_totals(with_token(proto::GetTotalsRequest {}, authorization))
                .await
                .map(|_| ()),
        );
        let timeline = code(
            counters
                .get_timeline(with_token(
                    proto::GetTimelineRequest {
                        campaign: "gendarmerie".into(),
                        ..Default::default()
                    },
                    authorization,
                ))
                .await
                .map(|_| ()),
        );
        let list = counters
            .list_campaigns(with_token(proto::ListCampaignsRequest {}, authorization))
            .await;
        let listed: Option<Vec<String>> = list.as_ref().ok().map(|list| {
            list.get_ref()
                .campaigns
                .iter()
                .map(|counters| counters.campaign.clone())
                .collect()
        });
        let list_code = list.err().map_or(Code::Ok, |status| status.code());
        use Code::{NotFound, Ok, PermissionDenied, Unauthenticated};
        let expected = match caller {
            "anonymous" | "unknown" => [Unauthenticated; 6],
            "partner_a" => [PermissionDenied, Ok, NotFound, PermissionDenied, Ok, Ok],
            "partner_b" => [
                PermissionDenied,
                NotFound,
                Ok,
                PermissionDenied,
                NotFound,
                Ok,
            ],
            "lms" => [
                Ok,
                PermissionDenied,
                PermissionDenied,
                PermissionDenied,
                PermissionDenied,
                PermissionDenied,
            ],
            _ if caller == "operator" => [PermissionDenied, Ok, Ok, Ok, Ok, Ok],
            _ => [Ok; 6],
        };
        assert_eq!(
            [ingested, get_a, get_b, totals, timeline, list_code],
            expected,
            "gRPC as {caller}: Ingest, GetCampaign(gendarmerie), GetCampaign(pole-emploi), GetTotals, GetTimeline, ListCampaigns"
        );
        match caller {
            "partner_a" => assert_eq!(listed, Some(vec!["gendarmerie".to_owned()])),
            "partner_b" => assert_eq!(listed, Some(vec!["pole-emploi".to_owned()])),
            _ => {}
        }
        // Health and reflection stay open to everyone.
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let served = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health answers without a token");
        assert_eq!(served.get_ref().status, 1, "SERVING");
    }
}

#[tokio::test]
async fn a_watch_stream_carries_only_the_partners_campaigns() {
    let (mut app, callers, _directory) = guarded_app().await;
    let partner_a = format!("Bearer {}", callers.partner_a);
    let mut counters = CounterServiceClient::new(channel(&app).await);
    // Asking for every campaign, and for B's and the totals by name, gives A's only.
    let mut streams = Vec::new();
    for wanted in [
        vec![],
        vec![
            "pole-emploi".to_owned(),
            "*".to_owned(),
            "gendarmerie".to_owned(),
        ],
    ] {
        let stream = counters
            .watch_campaigns(with_token(
                proto::WatchCampaignsRequest { campaigns: wanted },
                Some(&partner_a),
            ))
            .await
            .expect("A may watch")
            .into_inner();
        streams.push(stream);
    }
    app.ingest_as(&callers.admin, &both_partners()).await;
    app.ingest_as(
        &callers.admin,
        &[event("late-pole-emploi", Kind::Enrolled)
            .source("gendform3")
            .campaign("pole-emploi")
            .learner("late")],
    )
    .await;
    for mut stream in streams {
        let mut seen = Vec::new();
        // Everything pushed within a second: the current counters, then the changes.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Some(Ok(Some(message)))) = tokio::time::timeout_at(deadline, stream.message())
            .await
            .map(Some)
        {
            let counters = message.counters.expect("counters");
            seen.push((counters.campaign, counters.enrolled));
        }
        assert!(!seen.is_empty(), "A's campaign is pushed");
        assert!(
            seen.iter().all(|(campaign, _)| campaign == "gendarmerie"),
            "{seen:?}"
        );
        assert_eq!(seen.last(), Some(&("gendarmerie".to_owned(), 2)));
    }
    // Without figures:read, no watch at all.
    let refused = counters
        .watch_campaigns(with_token(
            proto::WatchCampaignsRequest::default(),
            Some(&format!("Bearer {}", callers.lms)),
        ))
        .await
        .expect_err("the LMS may not read");
    assert_eq!(refused.code(), Code::PermissionDenied);
    app.stop().await;
}

#[tokio::test]
async fn an_lms_sending_another_sources_events_has_those_rejected_one_by_one() {
    let (mut app, callers, _directory) = guarded_app().await;
    let events = vec![
        event("s-1", Kind::Enrolled)
            .source("gendform3")
            .campaign("gendarmerie")
            .learner("l1"),
        event("s-2", Kind::Enrolled)
            .source("openclassrooms")
            .campaign("gendarmerie")
            .learner("l2"),
        event("s-3", Kind::Enrolled)
            .source("GendForm3")
            .campaign("pole-emploi")
            .learner("l3"),
        event("s-4", Kind::Certified)
            .source(" gendform3 ")
            .campaign("GENDARMERIE")
            .learner("l1"),
    ];
    // Over gRPC…
    let answer = app.ingest_as(&callers.lms, &events).await;
    assert_eq!(answer.accepted, 2);
    let codes: Vec<(u32, &str)> = answer
        .rejections
        .iter()
        .map(|rejection| (rejection.index, rejection.code.as_str()))
        .collect();
    assert_eq!(
        codes,
        [(1, "source_not_allowed"), (2, "campaign_not_allowed")]
    );
    assert!(answer.rejections[0].message.contains("gendform3"));
    // …and over HTTP, the same.
    let renamed: Vec<Value> = events
        .iter()
        .map(|event| {
            let mut json = event.json();
            json["event_id"] = json!(format!("http-{}", json["event_id"].as_str().unwrap()));
            json["learner_id"] = json!(format!("http-{}", json["learner_id"].as_str().unwrap()));
            json
        })
        .collect();
    let (status, body, _) = send(
        &app,
        reqwest::Method::POST,
        "/v1/events",
        Some(&format!("Bearer {}", callers.lms)),
        Some(&Value::Array(renamed)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejections"][0]["code"], "source_not_allowed");
    assert_eq!(body["rejections"][1]["code"], "campaign_not_allowed");
    let (_, counters, _) = send(
        &app,
        reqwest::Method::GET,
        "/v1/campaigns/gendarmerie",
        Some(&format!("Bearer {}", callers.operator)),
        None,
    )
    .await;
    assert_eq!(
        (
            counters["enrolled"].as_u64(),
            counters["certified"].as_u64()
        ),
        (Some(2), Some(2))
    );
    let (_, metrics, _) = send(&app, reqwest::Method::GET, "/metrics", None, None).await;
    let metrics = metrics.as_str().expect("text");
    assert!(
        metrics.contains(
            "suivi_credential_events_total{credential=\"gendform3\",outcome=\"rejected\"} 4"
        ),
        "{}",
        metrics
            .lines()
            .filter(|line| line.contains("credential_events"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_token_stops_within_a_second_while_others_keep_streaming() {
    let (mut app, callers, directory) = guarded_app().await;
    let file = directory.path().join("credentials.toml");
    // The admin's stream is open before the file changes, and stays open after.
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", callers.admin)
            .parse()
            .expect("metadata"),
    );
    let mut ingest = IngestServiceClient::new(channel(&app).await);
    let batch = |id: &str| proto::IngestStreamRequest {
        events: proto_batch(&[event(id, Kind::Enrolled).campaign("apec").learner(id)]).events,
    };
    sender
        .send(batch("stream-1"))
        .await
        .expect("the stream takes a batch");
    let mut answers = ingest
        .ingest_stream(request)
        .await
        .expect("the stream opens")
        .into_inner();
    assert_eq!(
        answers
            .message()
            .await
            .expect("an answer")
            .expect("one")
            .accepted,
        1
    );

    let operator = format!("Bearer {}", callers.operator);
    let (status, _, _) = send(
        &app,
        reqwest::Method::GET,
        "/v1/totals",
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The operator's own watch stream is open when its credential is revoked.
    let mut watched = CounterServiceClient::new(channel(&app).await)
        .watch_campaigns(with_token(
            proto::WatchCampaignsRequest {
                campaigns: vec!["apec".to_owned()],
            },
            Some(&operator),
        ))
        .await
        .expect("the operator may watch")
        .into_inner();
    assert!(watched.message().await.expect("a push").is_some());
    assert!(credentials(&file, &["revoke", "grafana"]).contains("revoked grafana"));
    let revoked_at = Instant::now();
    loop {
        let (status, body, _) = send(
            &app,
            reqwest::Method::GET,
            "/v1/totals",
            Some(&operator),
            None,
        )
        .await;
        if status == StatusCode::UNAUTHORIZED {
            assert!(
                body["message"].as_str().unwrap().contains("revoked"),
                "{body}"
            );
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "the revoked token still works"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A new credential works as soon as it is there; the open stream goes on.
    let newcomer = add(&file, &["grafana-2", "--operator"]);
    let deadline = Instant::now() + Duration::from_secs(1);
    while send(
        &app,
        reqwest::Method::GET,
        "/v1/totals",
        Some(&format!("Bearer {newcomer}")),
        None,
    )
    .await
    .0 != StatusCode::OK
    {
        assert!(Instant::now() < deadline, "the new token does not work");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The revoked credential's stream ends, even with nothing to push.
    let ended = within(Duration::from_secs(3), async {
        loop {
            match watched.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the revoked credential's watch ends within seconds");
    assert_eq!(
        ended.expect_err("it ends with an error").code(),
        Code::Unauthenticated
    );
    sender
        .send(batch("stream-2"))
        .await
        .expect("the stream takes a batch");
    assert_eq!(
        answers
            .message()
            .await
            .expect("an answer")
            .expect("one")
            .accepted,
        1
    );
    let listed = credentials(&file, &["list"]);
    assert!(
        listed.contains("grafana scopes=figures:read,reports:read campaigns=all totals"),
        "{listed}"
    );
    assert!(listed.contains("REVOKED="), "{listed}");
    assert!(
        !listed.contains(&callers.admin)
            && !std::fs::read_to_string(&file)
                .unwrap()
                .contains(&callers.admin)
    );
    drop(sender);
    app.stop().await;
}

#[tokio::test]
async fn a_senders_rate_and_new_campaign_quota_are_enforced_and_recovered_from() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let file = directory.path().join("credentials.toml");
    let lms = add(
        &file,
        &[
            "lms",
            "--write-source",
            "moodle",
            "--events-per-second",
            "10",
            "--new-campaigns-per-day",
            "1",
        ],
    );
    let mut app = spawn_app_with(|settings| {
        settings.credentials = Some(file.clone());
        settings.max_batch_events = 10;
    })
    .await;
    let authorization = format!("Bearer {lms}");
    let events = |prefix: &str, campaign: &str, count: usize| -> Value {
        Value::Array(
            (0..count)
                .map(|i| {
                    event(&format!("{prefix}-{i}"), Kind::Enrolled)
                        .source("moodle")
                        .campaign(campaign)
                        .learner(&format!("{prefix}-{i}"))
                        .json()
                })
                .collect(),
        )
    };
    // The bucket holds one batch (10 events); the next is over the rate.
    let post = |body: Value| {
        let (app, authorization) = (&app, authorization.clone());
        async move {
            send(
                app,
                reqwest::Method::POST,
                "/v1/events",
                Some(&authorization),
                Some(&body),
            )
            .await
        }
    };
    let (status, body, _) = post(events("r1", "gendarmerie", 10)).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (StatusCode::OK, Some(10))
    );
    let (status, body, headers) = post(events("r2", "gendarmerie", 10)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], "rate_limited");
    let wait: u64 = headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&wait), "{wait}");
    let mut ingest = IngestServiceClient::new(channel(&app).await);
    let refused = ingest
        .ingest(with_token(
            proto_batch(&[event("r3", Kind::Enrolled).source("moodle").learner("r3")]),
            Some(&authorization),
        ))
        .await
        .expect_err("still over the rate");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    // After the wait, the sender is let in again: nothing of the refused batch was counted.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, body, _) = post(events("r2", "gendarmerie", 10)).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (StatusCode::OK, Some(10)),
        "{body}"
    );

    // One new campaign a day: the second is rejected, a registered one is not new.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut mixed = events("q1", "new-partner-1", 1);
    let mixed_events = mixed.as_array_mut().unwrap();
    mixed_events.extend(events("q2", "new-partner-2", 1).as_array().unwrap().clone());
    mixed_events.extend(events("q3", "new-partner-1", 1).as_array().unwrap().clone());
    mixed_events.extend(events("q4", "pole-emploi", 1).as_array().unwrap().clone());
    let (status, body, _) = post(mixed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 3, "{body}");
    assert_eq!(body["rejections"][0]["index"], 1);
    assert_eq!(body["rejections"][0]["code"], "campaign_quota_exceeded");
    // Raising the quota in the file lets it through, without a restart.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("new_campaigns_per_day = 1", "new_campaigns_per_day = 5"),
    )
    .unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, body, _) = post(events("q5", "new-partner-2", 1)).await;
        if body["accepted"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the raised quota is not applied: {body}"
        );
    }
    app.stop().await;
}

#[test]
fn open_access_off_loopback_is_refused_at_start_unless_asked_for() {
    let data_dir = tempfile::tempdir().expect("a data dir");
    let run = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_suivi"));
        command
            .args([
                "serve",
                "--grpc-addr",
                "0.0.0.0:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(extra)
            .env_remove("SUIVI_CREDENTIALS");
        command
    };
    let output = run(&[]).output().expect("suivi runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("grpc_addr") && stderr.contains("allow_anonymous"),
        "{stderr}"
    );
    let mut settings = crate::helpers::test_settings(data_dir.path());
    settings.http_addr = "0.0.0.0:0".parse().unwrap();
    assert!(settings.clone().validated().is_err());
    settings.allow_anonymous = true;
    assert!(settings.validated().is_ok());
    // A credentials file that does not parse stops suivi before it binds, naming the file.
    let broken = data_dir.path().join("credentials.toml");
    std::fs::write(&broken, "[[credential]]\nid = 3\n").unwrap();
    let output = run(&["--credentials", broken.to_str().unwrap()])
        .output()
        .expect("suivi runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("credentials.toml"));
}

#[tokio::test]
async fn metrics_need_the_metrics_token_when_one_is_set() {
    let mut app = spawn_app_with(|settings| {
        settings.metrics_token = Some(crate::helpers::secret("scrape-token"));
    })
    .await;
    let (status, _, headers) = send(&app, reqwest::Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key("www-authenticate"));
    let (status, _, _) = send(
        &app,
        reqwest::Method::GET,
        "/metrics",
        Some("Bearer nope"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, text, _) = send(
        &app,
        reqwest::Method::GET,
        "/metrics",
        Some("Bearer scrape-token"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.as_str()
            .unwrap()
            .contains("suivi_auth_failures_total{cause=\"unknown_token\"}")
    );
    // Everything else stays open without a credentials file.
    assert_eq!(app.get("/v1/totals").await.0, StatusCode::OK);
    within(PATIENCE, app.stop()).await.expect("stops");
}

#[tokio::test]
async fn suivi_simulate_sends_with_a_token_and_says_what_is_missing_without_one() {
    let (mut app, callers, directory) = guarded_app().await;
    let simulator = add(
        &directory.path().join("credentials.toml"),
        &["simulator", "--admin"],
    );
    let grpc = format!("http://{}", app.grpc_addr);
    // Run on a blocking thread: the service answering it runs on this test's runtime.
    let simulate = |token: Option<String>| {
        let grpc = grpc.clone();
        tokio::task::spawn_blocking(move || {
            let mut command = Command::new(env!("CARGO_BIN_EXE_suivi"));
            command
                .args([
                    "simulate", "--grpc", &grpc, "--scale", "0.002", "--seed", "7",
                ])
                .env_remove("SUIVI_TOKEN");
            if let Some(token) = token {
                command.env("SUIVI_TOKEN", token);
            }
            command.output().expect("suivi simulate runs")
        })
    };
    let refused = simulate(None).await.expect("the thread ends");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("Unauthenticated") && stderr.contains("--token"),
        "{stderr}"
    );
    // The file is read again within a second of the change.
    let deadline = Instant::now() + PATIENCE;
    let bearer = format!("Bearer {simulator}");
    while send(
        &app,
        reqwest::Method::GET,
        "/v1/totals",
        Some(&bearer),
        None,
    )
    .await
    .0 != StatusCode::OK
    {
        assert!(
            Instant::now() < deadline,
            "the new credential is not let in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = simulate(Some(simulator))
        .await
        .expect("suivi simulate runs");
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert!(
        sent.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let (_, totals, _) = send(
        &app,
        reqwest::Method::GET,
        "/v1/totals",
        Some(&format!("Bearer {}", callers.operator)),
        None,
    )
    .await;
    assert!(totals["enrolled"].as_u64() > Some(0), "{totals}");
    assert!(stdout.contains(" 0 rejected"), "{stdout}");
    app.stop().await;
}

#[tokio::test]
async fn suivi_report_from_a_server_gives_what_the_token_may_read() {
    let (mut app, callers, _directory) = guarded_app().await;
    app.ingest_as(&callers.admin, &both_partners()).await;
    let server = format!("http://{}", app.http_addr);
    let output = tempfile::tempdir().expect("a temporary directory");
    let report = |token: Option<String>, extra: Vec<String>| {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            let mut command = Command::new(env!("CARGO_BIN_EXE_suivi"));
            command
                .args([
                    "report",
                    "--server",
                    &server,
                    "--from",
                    "2020-10-01",
                    "--to",
                    "2020-10-31",
                ])
                .args(extra)
                .env_remove("SUIVI_TOKEN");
            if let Some(token) = token {
                command.env("SUIVI_TOKEN", token);
            }
            command.output().expect("suivi report runs")
        })
    };
    let refused = report(None, vec![]).await.expect("the thread ends");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("--token"),
        "{stderr}"
    );
    // The snapshots land every 50 ms: the partner's report shows its two enrolments.
    let deadline = Instant::now() + PATIENCE;
    let json = loop {
        let made = report(
            Some(callers.partner_a.clone()),
            vec!["--format".into(), "json".into()],
        )
        .await
        .expect("the thread ends");
        let json: Value = serde_json::from_slice(&made.stdout).unwrap_or(Value::Null);
        if made.status.success() && json["reports"][0]["figures"]["in_period"]["enrolled"] == 2 {
            break json;
        }
        assert!(Instant::now() < deadline, "no report: {json}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(json["reports"].as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(json["reports"][0]["campaign"], "gendarmerie");
    assert!(json["reports"][0].get("programme").is_none(), "{json}");
    let written = report(
        Some(callers.partner_a.clone()),
        vec![
            "--format".into(),
            "csv".into(),
            "--output-dir".into(),
            output.path().display().to_string(),
        ],
    )
    .await
    .expect("the thread ends");
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let files: Vec<String> = std::fs::read_dir(output.path())
        .expect("the directory")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(files, ["gendarmerie.csv"]);
    app.stop().await;
}

#[tokio::test]
async fn no_token_or_secret_reaches_the_log() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let file = directory.path().join("credentials.toml");
    let token = add(&file, &["root", "--admin"]);
    let revoked = add(&file, &["old", "--operator"]);
    let metrics_token = "metrics-secret-0f3c9a";
    let data_dir = tempfile::tempdir().expect("a data dir");
    let suivi = crate::helpers::Suivi::start(
        data_dir.path(),
        &[
            ("SUIVI_CREDENTIALS", file.to_str().expect("a UTF-8 path")),
            ("SUIVI_METRICS_TOKEN", metrics_token),
            ("RUST_LOG", "debug"),
        ],
    );
    let url = |path: &str| format!("http://{}{path}", suivi.http_addr);
    let wrong = "suivi_not-a-token-4b1d";
    for authorization in [
        format!("Bearer {token}"),
        format!("Bearer {wrong}"),
        format!("Basic {token}"),
        format!("Bearer {revoked}"),
    ] {
        for path in ["/v1/totals", "/metrics"] {
            let _ = suivi
                .http
                .get(url(path))
                .header("authorization", &authorization)
                .send()
                .await
                .expect("suivi answers");
        }
    }
    let _ = suivi
        .http
        .get(url("/metrics"))
        .bearer_auth(metrics_token)
        .send()
        .await;
    credentials(&file, &["revoke", "old"]);
    // A broken file is logged as an error: its text must not carry a hash either.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let text = std::fs::read_to_string(&file).expect("the file");
    std::fs::write(&file, format!("{text}\n[[credential]]\nid = ")).expect("written");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let log = suivi.log();
    assert!(log.contains("credentials file not reloaded"), "{log}");
    let hashes: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("hash = \"blake3:"))
        .map(|hash| &hash[..16])
        .collect();
    for secret in [
        token.as_str(),
        &token[6..],
        revoked.as_str(),
        wrong,
        metrics_token,
    ]
    .into_iter()
    .chain(hashes)
    {
        assert!(!log.contains(secret), "{secret} is in the log");
    }
    suivi.terminate().await;
}
