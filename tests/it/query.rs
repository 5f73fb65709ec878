//! Every query over gRPC and HTTP: one campaign, the list, the totals and the timelines, with the
//! same numbers and names on both transports, campaign names normalised like events, and the
//! errors for unknown campaigns and invalid days.

use reqwest::StatusCode;
use serde_json::{Value, json};
use suivi::proto;
use tonic::Code;

use crate::helpers::{
    Ev, Funnel, Kind, TestApp, assert_error, counters_json, day_json, event, json_batch, spawn_app,
    without_as_of,
};

const GENDARMERIE: &str = "Gendarmerie nationale";

/// The field names of CampaignCounters in JSON.
const COUNTER_FIELDS: [&str; 13] = [
    "campaign",
    "name",
    "clicks",
    "unique_visitors",
    "enrolled",
    "started",
    "chapters_completed",
    "certified",
    "completion_rate",
    "target",
    "progress",
    "as_of",
    "registered",
];

async fn grpc_campaign(app: &TestApp, campaign: &str) -> Result<Value, tonic::Status> {
    let response = app
        .counter_client()
        .await
        .get_campaign(proto::GetCampaignRequest {
            campaign: campaign.to_owned(),
        })
        .await?;
    Ok(counters_json(
        &response.into_inner().counters.expect("counters"),
    ))
}

async fn grpc_totals(app: &TestApp) -> Value {
    let response = app
        .counter_client()
        .await
        .get_totals(proto::GetTotalsRequest {})
        .await
        .expect("GetTotals succeeds");
    counters_json(&response.into_inner().totals.expect("totals"))
}

async fn grpc_timeline(
    app: &TestApp,
    campaign: &str,
    from: &str,
    to: &str,
) -> Result<Value, tonic::Status> {
    let response = app
        .counter_client()
        .await
        .get_timeline(proto::GetTimelineRequest {
            campaign: campaign.to_owned(),
            from_day: from.to_owned(),
            to_day: to.to_owned(),
        })
        .await?;
    Ok(Value::Array(
        response.into_inner().days.iter().map(day_json).collect(),
    ))
}

async fn http_timeline(app: &TestApp, path: &str) -> Value {
    let (status, body) = app.get(path).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    assert_eq!(
        body.as_object().map(|object| object.len()),
        Some(1),
        "a timeline is {{\"days\": [...]}}: {body}"
    );
    body["days"].clone()
}

fn day(day: &str, clicks: u64, enrolled: u64, started: u64, certified: u64) -> Value {
    json!({"day": day, "clicks": clicks, "enrolled": enrolled, "started": started,
           "certified": certified})
}

#[tokio::test]
async fn registered_campaigns_are_answered_with_zero_counters_before_any_event() {
    let mut app = spawn_app().await;
    let zero = Funnel::zero(12).json("gendarmerie", GENDARMERIE, Some(100_000), true);

    assert_eq!(
        grpc_campaign(&app, "gendarmerie").await.expect("found"),
        zero
    );
    assert_eq!(
        grpc_campaign(&app, " Gendarmerie ").await.expect("found"),
        zero
    );
    let (status, body) = app.get("/v1/campaigns/gendarmerie").await;
    assert_eq!(status, StatusCode::OK);
    let mut keys: Vec<&str> = body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    // A campaign with a target has its forecast too.
    let mut expected_keys: Vec<&str> = COUNTER_FIELDS.into_iter().chain(["forecast"]).collect();
    expected_keys.sort_unstable();
    assert_eq!(keys, expected_keys, "snake_case names, nothing more");
    assert!(
        body["target"].is_u64() && body["clicks"].is_u64(),
        "numbers: {body}"
    );
    assert!(
        body["completion_rate"].is_f64() && body["progress"].is_f64(),
        "{body}"
    );
    assert_eq!(without_as_of(body), zero);
    assert_eq!(without_as_of(app.campaign_json("GENDARMERIE").await), zero);

    // Unknown campaigns; `direct` too, until an event comes without a campaign.
    for campaign in ["no-such-campaign", "direct"] {
        let status = grpc_campaign(&app, campaign)
            .await
            .expect_err("an unknown campaign");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        let answer = app.get(&format!("/v1/campaigns/{campaign}")).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "campaign_not_found");
    }
    // The totals are not a campaign.
    let status = grpc_campaign(&app, "*")
        .await
        .expect_err("* is no campaign");
    assert_eq!(status.code(), Code::NotFound);

    // The list holds every registered campaign, by id, and not the totals.
    let list = app
        .counter_client()
        .await
        .list_campaigns(proto::ListCampaignsRequest {})
        .await
        .expect("ListCampaigns succeeds")
        .into_inner()
        .campaigns;
    assert_eq!(list.len(), 78);
    assert!(
        list.iter()
            .all(|counters| counters.registered && counters.enrolled == 0)
    );
    let ids: Vec<&str> = list.iter().map(|c| c.campaign.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "campaigns come by id");
    assert!(ids.contains(&"gendarmerie") && ids.contains(&"pole-emploi"));
    let (status, body) = app.get("/v1/campaigns").await;
    assert_eq!(status, StatusCode::OK);
    let http_list = body["campaigns"].as_array().expect("a campaigns array");
    assert_eq!(http_list.len(), 78);
    for (grpc, http) in list.iter().zip(http_list) {
        assert_eq!(counters_json(grpc), without_as_of(http.clone()));
    }

    let totals = Funnel::zero(12).json("*", "Objectif IA", Some(670_000), false);
    assert_eq!(grpc_totals(&app).await, totals);
    assert_eq!(without_as_of(app.totals_json().await), totals);
    app.stop().await;
}

/// Events of three campaigns, over four days, in an order where later stages and later days
/// often come first. In Paris time:
/// - Gendarmerie (source gendform3): v1 clicks twice on 10-05 and someone once on 10-06;
///   u1 enrols on 10-05 and is certified on 10-08; u2 is certified on 10-06 (at 00:30, which is
///   still 10-05 in UTC); u3 completes chapter 3 on 10-08 after enrolling on 10-06.
/// - Partner X, unregistered, sent as " Partner-X ": gendform3's u1 (already counted in the
///   Gendarmerie) and openclassrooms' u1 (another learner) enrol on 10-07.
/// - Direct (no campaign): v1 clicks on 10-07.
fn programme() -> Vec<Ev> {
    let gendarmerie = |id: &str, kind| event(id, kind).campaign("gendarmerie").source("gendform3");
    vec![
        gendarmerie("q-a2", Kind::Certified)
            .learner("u1")
            .day("2020-10-08"),
        gendarmerie("q-d1", Kind::ChapterCompleted)
            .learner("u3")
            .chapter(3)
            .day("2020-10-08"),
        gendarmerie("q-c3", Kind::LinkClicked).day("2020-10-06"),
        event("q-x2", Kind::Enrolled)
            .campaign(" Partner-X ")
            .learner("u1")
            .day("2020-10-07"),
        gendarmerie("q-b1", Kind::Certified)
            .learner("u2")
            .at("2020-10-05T22:30:00Z"),
        gendarmerie("q-c1", Kind::LinkClicked)
            .visitor("v1")
            .at("2020-10-05T08:00:00Z"),
        event("q-direct", Kind::LinkClicked)
            .visitor("v1")
            .day("2020-10-07"),
        gendarmerie("q-a1", Kind::Enrolled)
            .learner("u1")
            .day("2020-10-05"),
        gendarmerie("q-c2", Kind::LinkClicked)
            .visitor("v1")
            .at("2020-10-05T09:00:00Z"),
        event("q-x1", Kind::Enrolled)
            .campaign("PARTNER-X")
            .source("gendform3")
            .learner("u1")
            .day("2020-10-07"),
        gendarmerie("q-d2", Kind::Enrolled)
            .learner("u3")
            .day("2020-10-06"),
    ]
}

fn gendarmerie_funnel() -> Funnel {
    let mut chapters = vec![2; 12];
    chapters[2] = 3;
    Funnel {
        clicks: 3,
        unique_visitors: 1,
        enrolled: 3,
        started: 3,
        chapters_completed: chapters,
        certified: 2,
    }
}

fn gendarmerie_days() -> Vec<Value> {
    vec![
        day("2020-10-05", 2, 1, 0, 0),
        day("2020-10-06", 1, 2, 1, 1),
        day("2020-10-08", 0, 0, 2, 1),
    ]
}

fn totals_days() -> Vec<Value> {
    vec![
        day("2020-10-05", 2, 1, 0, 0),
        day("2020-10-06", 1, 2, 1, 1),
        day("2020-10-07", 1, 1, 0, 0),
        day("2020-10-08", 0, 0, 2, 1),
    ]
}

/// A service holding [`programme`], sent half over gRPC and half over HTTP.
async fn app_with_programme() -> TestApp {
    let app = spawn_app().await;
    let events = programme();
    let (grpc, http) = events.split_at(events.len() / 2);
    let response = app.ingest(grpc).await;
    assert_eq!(response.accepted as usize, grpc.len(), "{response:?}");
    let (status, answer) = app.post_events(&json_batch(http)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["accepted"], json!(http.len()), "{answer}");
    app
}

#[tokio::test]
async fn campaigns_and_totals_are_the_same_over_grpc_and_http() {
    let mut app = app_with_programme().await;

    let gendarmerie = gendarmerie_funnel().json("gendarmerie", GENDARMERIE, Some(100_000), true);
    for name in ["gendarmerie", "GENDARMERIE", "  Gendarmerie"] {
        assert_eq!(grpc_campaign(&app, name).await.expect("found"), gendarmerie);
    }
    assert_eq!(
        without_as_of(app.campaign_json("GENDARMERIE").await),
        gendarmerie
    );
    let body = app.campaign_json("gendarmerie").await;
    assert_eq!(body["completion_rate"].as_f64(), Some(2.0 / 3.0));
    assert_eq!(body["progress"].as_f64(), Some(2.0 / 100_000.0));

    // An unregistered campaign, as soon as it is seen: no name, no target, no progress.
    let partner = Funnel {
        enrolled: 2,
        ..Funnel::zero(12)
    }
    .json("partner-x", "", None, false);
    assert_eq!(
        grpc_campaign(&app, "Partner-X").await.expect("seen"),
        partner
    );
    let body = app.campaign_json("partner-x").await;
    assert!(
        body["target"].is_null() && body["progress"].is_null(),
        "{body}"
    );
    assert_eq!(without_as_of(body), partner);

    let direct = Funnel {
        clicks: 1,
        unique_visitors: 1,
        ..Funnel::zero(12)
    }
    .json("direct", "", None, false);
    assert_eq!(grpc_campaign(&app, "direct").await.expect("seen"), direct);
    assert_eq!(without_as_of(app.campaign_json("direct").await), direct);

    // Totals count distinct learners and visitors over every campaign: gendform3's u1 once,
    // openclassrooms' u1 besides; v1 once.
    let mut chapters = vec![2; 12];
    chapters[2] = 3;
    let totals = Funnel {
        clicks: 4,
        unique_visitors: 1,
        enrolled: 4,
        started: 3,
        chapters_completed: chapters,
        certified: 2,
    }
    .json("*", "Objectif IA", Some(670_000), false);
    assert_eq!(grpc_totals(&app).await, totals);
    let body = app.totals_json().await;
    assert_eq!(body["completion_rate"].as_f64(), Some(0.5));
    assert_eq!(without_as_of(body), totals);

    // The list: every registered campaign and every seen one, with the same counters.
    let list = app
        .counter_client()
        .await
        .list_campaigns(proto::ListCampaignsRequest {})
        .await
        .expect("ListCampaigns succeeds")
        .into_inner()
        .campaigns;
    assert_eq!(list.len(), 80);
    let (status, body) = app.get("/v1/campaigns").await;
    assert_eq!(status, StatusCode::OK);
    let http_list: Vec<Value> = body["campaigns"]
        .as_array()
        .expect("a campaigns array")
        .iter()
        .cloned()
        .map(without_as_of)
        .collect();
    let grpc_list: Vec<Value> = list.iter().map(counters_json).collect();
    assert_eq!(grpc_list, http_list);
    for expected in [&gendarmerie, &partner, &direct] {
        assert!(grpc_list.contains(expected), "the list has {expected}");
    }
    assert_eq!(
        grpc_list
            .iter()
            .filter(|counters| counters["registered"] == json!(true))
            .count(),
        78
    );
    app.stop().await;
}

#[tokio::test]
async fn timelines_give_what_was_new_each_day_between_two_days_included() {
    let mut app = app_with_programme().await;
    let all = gendarmerie_days();

    for (from, to, expected) in [
        ("2020-10-05", "2020-10-08", all.clone()),
        ("", "", all.clone()),
        ("2020-10-06", "2020-10-08", all[1..].to_vec()),
        ("2020-10-06", "2020-10-06", all[1..2].to_vec()),
        ("2020-10-07", "2020-10-07", vec![]),
        ("", "2020-10-05", all[..1].to_vec()),
        ("2020-10-09", "", vec![]),
        ("2020-10-08", "2020-10-05", vec![]),
    ] {
        let grpc = grpc_timeline(&app, "Gendarmerie", from, to)
            .await
            .expect("GetTimeline succeeds");
        assert_eq!(
            grpc,
            Value::Array(expected.clone()),
            "gRPC from {from:?} to {to:?}"
        );
        let mut query = Vec::new();
        if !from.is_empty() {
            query.push(format!("from={from}"));
        }
        if !to.is_empty() {
            query.push(format!("to={to}"));
        }
        let path = format!("/v1/campaigns/GENDARMERIE/timeline?{}", query.join("&"));
        assert_eq!(
            http_timeline(&app, &path).await,
            Value::Array(expected),
            "{path}"
        );
    }
    let body = http_timeline(&app, "/v1/campaigns/gendarmerie/timeline").await;
    assert_eq!(body, Value::Array(all.clone()));
    assert!(body[0]["clicks"].is_u64() && body[0]["day"].is_string());

    let totals = Value::Array(totals_days());
    assert_eq!(
        grpc_timeline(&app, "*", "", "").await.expect("totals"),
        totals
    );
    assert_eq!(http_timeline(&app, "/v1/totals/timeline").await, totals);
    assert_eq!(
        http_timeline(&app, "/v1/campaigns/partner-x/timeline?from=2020-10-07").await,
        json!([day("2020-10-07", 0, 2, 0, 0)])
    );

    // A registered campaign with no event has an empty timeline; an unknown one has none.
    assert_eq!(
        grpc_timeline(&app, "pole-emploi", "", "")
            .await
            .expect("registered"),
        json!([])
    );
    let status = grpc_timeline(&app, "no-such-campaign", "", "")
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let answer = app.get("/v1/campaigns/no-such-campaign/timeline").await;
    assert_error(&answer, StatusCode::NOT_FOUND, "campaign_not_found");
    app.stop().await;
}

#[tokio::test]
async fn a_timeline_bound_that_is_not_a_day_is_refused() {
    let mut app = app_with_programme().await;
    for (from, to, field) in [
        ("2020-13-01", "", "from_day"),
        ("", "yesterday", "to_day"),
        ("2017-11-30", "", "from_day"),
    ] {
        let status = grpc_timeline(&app, "gendarmerie", from, to)
            .await
            .expect_err("an invalid day");
        assert_eq!(status.code(), Code::InvalidArgument, "{from:?} {to:?}");
        assert!(status.message().contains(field), "{}", status.message());

        let path = format!("/v1/campaigns/gendarmerie/timeline?from={from}&to={to}");
        let answer = app.get(&path).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_day");
        let answer = app
            .get(&format!("/v1/totals/timeline?from={from}&to={to}"))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_day");
    }
    app.stop().await;
}
