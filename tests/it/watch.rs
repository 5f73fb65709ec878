//! `WatchCampaigns`: the current counters first, then again whenever they change, for the
//! campaigns asked for (named like events, `*` for the totals) and no others.

use std::time::Duration;

use suivi::proto;

use crate::helpers::{Kind, PATIENCE, event, spawn_app_with, within};

async fn next(
    stream: &mut tonic::Streaming<proto::WatchCampaignsResponse>,
) -> proto::CampaignCounters {
    within(PATIENCE, stream.message())
        .await
        .expect("the watch pushes in time")
        .expect("the watch does not fail")
        .expect("the watch goes on")
        .counters
        .expect("a push carries counters")
}

#[tokio::test]
async fn watch_pushes_the_current_counters_then_each_change() {
    let mut app =
        spawn_app_with(|settings| settings.watch_interval = Duration::from_millis(20)).await;
    let mut stream = app
        .counter_client()
        .await
        .watch_campaigns(proto::WatchCampaignsRequest {
            campaigns: vec![" GENDARMERIE".to_owned(), "*".to_owned()],
        })
        .await
        .expect("WatchCampaigns opens")
        .into_inner();

    let first = next(&mut stream).await;
    assert_eq!(
        (first.campaign.as_str(), first.name.as_str(), first.enrolled),
        ("gendarmerie", "Gendarmerie nationale", 0)
    );
    assert!(first.registered);
    let totals = next(&mut stream).await;
    assert_eq!((totals.campaign.as_str(), totals.enrolled), ("*", 0));

    // A change to another campaign is not pushed: the next push is the totals'.
    let response = app
        .ingest(&[event("w-1", Kind::Enrolled)
            .campaign("la-poste")
            .learner("u1")])
        .await;
    assert_eq!(response.accepted, 1);
    let totals = next(&mut stream).await;
    assert_eq!((totals.campaign.as_str(), totals.enrolled), ("*", 1));

    let response = app
        .ingest(&[
            event("w-2", Kind::Enrolled)
                .campaign("gendarmerie")
                .learner("u2"),
            event("w-3", Kind::Certified)
                .campaign("gendarmerie")
                .learner("u3"),
        ])
        .await;
    assert_eq!(response.accepted, 2);
    let changed = next(&mut stream).await;
    assert_eq!(changed.campaign, "gendarmerie");
    assert_eq!(
        (changed.enrolled, changed.started, changed.certified),
        (2, 1, 1)
    );
    assert!((changed.completion_rate - 0.5).abs() < f64::EPSILON);
    let totals = next(&mut stream).await;
    assert_eq!((totals.campaign.as_str(), totals.enrolled), ("*", 3));

    // A duplicate changes nothing, so it is not pushed; the next change is.
    let response = app
        .ingest(&[event("w-2", Kind::Enrolled)
            .campaign("gendarmerie")
            .learner("u2")])
        .await;
    assert_eq!(response.duplicates, 1);
    let response = app
        .ingest(&[event("w-4", Kind::LinkClicked).campaign("gendarmerie")])
        .await;
    assert_eq!(response.accepted, 1);
    let changed = next(&mut stream).await;
    assert_eq!(
        (changed.campaign.as_str(), changed.clicks, changed.enrolled),
        ("gendarmerie", 1, 2)
    );
    app.stop().await;
}

#[tokio::test]
async fn watching_nothing_in_particular_watches_every_campaign() {
    let mut app =
        spawn_app_with(|settings| settings.watch_interval = Duration::from_millis(20)).await;
    let mut stream = app
        .counter_client()
        .await
        .watch_campaigns(proto::WatchCampaignsRequest { campaigns: vec![] })
        .await
        .expect("WatchCampaigns opens")
        .into_inner();

    let mut first: Vec<String> = Vec::new();
    for _ in 0..78 {
        first.push(next(&mut stream).await.campaign);
    }
    first.sort();
    first.dedup();
    assert_eq!(first.len(), 78, "each registered campaign once");
    assert!(!first.contains(&"*".to_owned()));

    let response = app
        .ingest(&[event("w-1", Kind::Enrolled)
            .campaign("New-Partner")
            .learner("u1")])
        .await;
    assert_eq!(response.accepted, 1);
    let pushed = next(&mut stream).await;
    assert_eq!(
        (pushed.campaign.as_str(), pushed.enrolled, pushed.registered),
        ("new-partner", 1, false)
    );
    app.stop().await;
}
