//! Ingest over gRPC (`Ingest`, `IngestStream`) and HTTP (`POST /v1/events`): each invalid event
//! of a batch is rejected on its own, by index and code, while the valid ones are counted;
//! duplicates are counted once, whatever the batch, stream or transport; a stream answers each
//! request once, in order.

use reqwest::StatusCode;
use serde_json::{Value, json};
use suivi::proto;

use crate::helpers::{
    Ev, Funnel, Kind, PATIENCE, enrolments, event, json_batch, json_rejection_codes,
    rejection_codes, spawn_app, stream_batch, within,
};

/// A batch of valid and invalid events, each invalid for one reason, all for the Gendarmerie.
fn mixed_batch() -> Vec<Ev> {
    let gendarmerie = |id: &str, kind| event(id, kind).campaign("gendarmerie");
    let in_an_hour = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    vec![
        gendarmerie("m-0", Kind::Enrolled).learner("u1"),
        gendarmerie("", Kind::Enrolled).learner("u9"),
        gendarmerie("m-2", Kind::Unspecified).learner("u9"),
        gendarmerie("m-3", Kind::Enrolled),
        gendarmerie("m-4", Kind::Enrolled)
            .learner("u9")
            .at_instant(in_an_hour),
        gendarmerie("m-5", Kind::ChapterCompleted)
            .learner("u9")
            .chapter(13),
        gendarmerie("m-6", Kind::Enrolled)
            .learner("u9")
            .source(&"s".repeat(65)),
        gendarmerie("m-7", Kind::LinkClicked).visitor("v1"),
        gendarmerie("m-8", Kind::Certified).learner("u2"),
    ]
}

/// The rejections of [`mixed_batch`].
const MIXED_REJECTIONS: [(u32, &str); 6] = [
    (1, "missing_event_id"),
    (2, "invalid_kind"),
    (3, "missing_learner_id"),
    (4, "occurred_at_in_future"),
    (5, "chapter_out_of_range"),
    (6, "field_too_long"),
];

/// The Gendarmerie's counters once [`mixed_batch`] is in: a click by v1, u1 enrolled, u2
/// certified (and so enrolled, started and through every chapter).
fn mixed_funnel() -> Funnel {
    Funnel {
        clicks: 1,
        unique_visitors: 1,
        enrolled: 2,
        started: 1,
        chapters_completed: vec![1; 12],
        certified: 1,
    }
}

fn gendarmerie_json(funnel: &Funnel) -> Value {
    funnel.json("gendarmerie", "Gendarmerie nationale", Some(100_000), true)
}

#[tokio::test]
async fn grpc_ingest_counts_the_valid_events_of_a_batch_and_rejects_the_others_by_index() {
    let mut app = spawn_app().await;
    let mut events: Vec<proto::LearnerEvent> = mixed_batch().iter().map(Ev::proto).collect();
    // An enum number the service does not know.
    events.push(proto::LearnerEvent {
        kind: 99,
        ..event("m-9", Kind::Enrolled)
            .campaign("gendarmerie")
            .learner("u9")
            .proto()
    });
    // No occurred_at at all.
    events.push(proto::LearnerEvent {
        occurred_at: None,
        ..event("m-10", Kind::Enrolled)
            .campaign("gendarmerie")
            .learner("u9")
            .proto()
    });

    let response = app
        .ingest_client()
        .await
        .ingest(proto::IngestRequest { events })
        .await
        .expect("a batch with invalid events is still answered")
        .into_inner();

    assert_eq!(response.accepted, 3);
    assert_eq!(response.duplicates, 0);
    let mut expected = MIXED_REJECTIONS.to_vec();
    expected.extend([(9, "invalid_kind"), (10, "missing_occurred_at")]);
    assert_eq!(rejection_codes(&response.rejections), expected);
    let too_long = &response.rejections[5].message;
    assert!(
        too_long.contains("source") && too_long.contains("64"),
        "the message names the field and its limit: {too_long}"
    );
    let out_of_range = &response.rejections[4].message;
    assert!(
        out_of_range.contains("13") && out_of_range.contains("12"),
        "the message names the chapter and the chapter count: {out_of_range}"
    );

    let counters = app.campaign_json("gendarmerie").await;
    assert_eq!(
        crate::helpers::without_as_of(counters),
        gendarmerie_json(&mixed_funnel())
    );
    let totals = app.totals_json().await;
    assert_eq!(
        totals["enrolled"],
        json!(2),
        "rejected learners are not counted"
    );
    app.stop().await;
}

#[tokio::test]
async fn http_ingest_counts_the_valid_events_of_a_batch_and_rejects_the_others_by_index() {
    // Both body forms: a bare array, and an object with `events`.
    for wrap in [false, true] {
        let mut app = spawn_app().await;
        let mut elements = json_batch(&mixed_batch())
            .as_array()
            .cloned()
            .expect("an array");
        elements.extend([
            // Not an object at all.
            json!(42),
            // A kind with no such name.
            json!({"event_id": "m-10", "kind": "graduated", "campaign": "gendarmerie",
                   "source": "openclassrooms", "learner_id": "u9",
                   "occurred_at": "2020-10-06T10:00:00Z"}),
            // A field of the wrong JSON type.
            json!({"event_id": "m-11", "kind": "chapter_completed", "campaign": "gendarmerie",
                   "source": "openclassrooms", "learner_id": "u9", "chapter": "three",
                   "occurred_at": "2020-10-06T10:00:00Z"}),
            // A time that is not RFC 3339.
            json!({"event_id": "m-12", "kind": "enrolled", "campaign": "gendarmerie",
                   "source": "openclassrooms", "learner_id": "u9",
                   "occurred_at": "06/10/2020"}),
            // Before 2018.
            json!({"event_id": "m-13", "kind": "enrolled", "campaign": "gendarmerie",
                   "source": "openclassrooms", "learner_id": "u9",
                   "occurred_at": "2017-12-31T23:59:59Z"}),
            // No source.
            json!({"event_id": "m-14", "kind": "enrolled", "campaign": "gendarmerie",
                   "learner_id": "u9", "occurred_at": "2020-10-06T10:00:00Z"}),
            // chapter_completed without a chapter.
            json!({"event_id": "m-15", "kind": "chapter_completed", "campaign": "gendarmerie",
                   "source": "openclassrooms", "learner_id": "u9",
                   "occurred_at": "2020-10-06T10:00:00Z"}),
        ]);
        let body = if wrap {
            json!({ "events": elements })
        } else {
            Value::Array(elements)
        };

        let (status, answer) = app.post_events(&body).await;

        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["accepted"], json!(3), "{answer}");
        assert_eq!(answer["duplicates"], json!(0), "{answer}");
        let mut expected: Vec<(u64, String)> = MIXED_REJECTIONS
            .iter()
            .map(|(index, code)| (u64::from(*index), (*code).to_owned()))
            .collect();
        for (index, code) in [
            (9, "invalid_event"),
            (10, "invalid_kind"),
            (11, "invalid_event"),
            (12, "invalid_occurred_at"),
            (13, "occurred_at_too_old"),
            (14, "missing_source"),
            (15, "missing_chapter"),
        ] {
            expected.push((index, code.to_owned()));
        }
        assert_eq!(json_rejection_codes(&answer), expected, "wrapped: {wrap}");
        let keys: Vec<&String> = answer.as_object().expect("an object").keys().collect();
        assert_eq!(keys, ["accepted", "duplicates", "rejections"]);

        let counters = app.campaign_json("gendarmerie").await;
        assert_eq!(
            crate::helpers::without_as_of(counters),
            gendarmerie_json(&mixed_funnel()),
            "wrapped: {wrap}"
        );
        assert_eq!(app.totals_json().await["enrolled"], json!(2));
        app.stop().await;
    }
}

#[tokio::test]
async fn duplicates_are_counted_once_across_batches_streams_and_transports() {
    let mut app = spawn_app().await;
    let enrol = |id: &str, learner: &str| {
        event(id, Kind::Enrolled)
            .campaign("gendarmerie")
            .learner(learner)
    };

    // Across batches.
    let first = app.ingest(&[enrol("d-1", "u1"), enrol("d-2", "u2")]).await;
    assert_eq!((first.accepted, first.duplicates), (2, 0));
    let second = app.ingest(&[enrol("d-2", "u2"), enrol("d-3", "u3")]).await;
    assert_eq!((second.accepted, second.duplicates), (1, 1));
    assert!(second.rejections.is_empty());

    // Within one batch.
    let twice = app.ingest(&[enrol("d-4", "u4"), enrol("d-4", "u4")]).await;
    assert_eq!((twice.accepted, twice.duplicates), (1, 1));

    // An id reused for other content is still a duplicate, and changes nothing.
    let reused = app
        .ingest(&[event("d-1", Kind::Certified)
            .campaign("gendarmerie")
            .learner("u1")])
        .await;
    assert_eq!((reused.accepted, reused.duplicates), (0, 1));

    // Across streams.
    let mut client = app.ingest_client().await;
    let answers = |requests: Vec<proto::IngestStreamRequest>| {
        let mut client = client.clone();
        async move {
            let mut responses = client
                .ingest_stream(tokio_stream::iter(requests))
                .await
                .expect("IngestStream opens")
                .into_inner();
            let mut answers = Vec::new();
            while let Some(response) = responses.message().await.expect("a stream answer") {
                answers.push((response.accepted, response.duplicates));
            }
            answers
        }
    };
    assert_eq!(
        answers(vec![stream_batch(&[enrol("d-5", "u5")])]).await,
        [(1, 0)]
    );
    assert_eq!(
        answers(vec![
            stream_batch(&[enrol("d-5", "u5"), enrol("d-6", "u6")]),
            stream_batch(&[enrol("d-1", "u1")]),
        ])
        .await,
        [(1, 1), (0, 1)]
    );

    // Across transports: gRPC then HTTP, and HTTP then gRPC.
    let grpc = app.ingest(&[enrol("d-7", "u7")]).await;
    assert_eq!((grpc.accepted, grpc.duplicates), (1, 0));
    let (status, http) = app.post_events(&json_batch(&[enrol("d-7", "u7")])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&http["accepted"], &http["duplicates"]),
        (&json!(0), &json!(1)),
        "{http}"
    );
    let (status, http) = app.post_events(&json_batch(&[enrol("d-8", "u8")])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(http["accepted"], json!(1), "{http}");
    let grpc = client
        .ingest(crate::helpers::proto_batch(&[enrol("d-8", "u8")]))
        .await
        .expect("Ingest succeeds")
        .into_inner();
    assert_eq!((grpc.accepted, grpc.duplicates), (0, 1));

    let funnel = Funnel {
        enrolled: 8,
        ..Funnel::zero(12)
    };
    let counters = app.campaign_json("gendarmerie").await;
    assert_eq!(
        crate::helpers::without_as_of(counters),
        gendarmerie_json(&funnel)
    );
    assert_eq!(app.totals_json().await["enrolled"], json!(8));
    app.stop().await;
}

#[tokio::test]
async fn ingest_stream_answers_each_request_once_in_order() {
    let mut app = spawn_app().await;
    let mut client = app.ingest_client().await;
    let batches = [
        enrolments("s0", "gendarmerie", 3),
        // One new event, and one seen in the first request.
        vec![
            enrolments("s1", "gendarmerie", 1).remove(0),
            enrolments("s0", "gendarmerie", 1).remove(0),
        ],
        // Four new events and one invalid one.
        {
            let mut batch = enrolments("s2", "gendarmerie", 4);
            batch.push(event("", Kind::Enrolled).learner("u"));
            batch
        },
        enrolments("s3", "la-poste", 2),
    ];
    // Every request is sent before any answer is read, so the service has them all at once.
    let requests: Vec<proto::IngestStreamRequest> =
        batches.iter().map(|batch| stream_batch(batch)).collect();

    let mut responses = client
        .ingest_stream(tokio_stream::iter(requests))
        .await
        .expect("IngestStream opens")
        .into_inner();
    let mut answers = Vec::new();
    while let Some(response) = within(PATIENCE, responses.message())
        .await
        .expect("the stream answers in time")
        .expect("a stream answer, not an error")
    {
        answers.push((
            response.accepted,
            response.duplicates,
            rejection_codes(&response.rejections)
                .into_iter()
                .map(|(index, code)| (index, code.to_owned()))
                .collect::<Vec<_>>(),
        ));
    }

    assert_eq!(
        answers,
        [
            (3, 0, vec![]),
            (1, 1, vec![]),
            (4, 0, vec![(4, "missing_event_id".to_owned())]),
            (2, 0, vec![]),
        ]
    );
    assert_eq!(app.campaign_json("gendarmerie").await["enrolled"], json!(8));
    assert_eq!(app.campaign_json("la-poste").await["enrolled"], json!(2));
    app.stop().await;
}

#[tokio::test]
async fn ingest_stream_answers_each_request_before_the_next_is_sent() {
    let mut app = spawn_app().await;
    let mut client = app.ingest_client().await;
    let (requests, request_stream) = tokio::sync::mpsc::channel(1);
    let mut responses = client
        .ingest_stream(tokio_stream::wrappers::ReceiverStream::new(request_stream))
        .await
        .expect("IngestStream opens")
        .into_inner();

    // A client may wait for each answer before sending more: the stream must not wait for its end.
    for round in 1..=3usize {
        let batch = enrolments(&format!("r{round}"), "gendarmerie", round);
        requests
            .send(stream_batch(&batch))
            .await
            .expect("the stream takes a request");
        let response = within(PATIENCE, responses.message())
            .await
            .expect("an answer before the stream ends")
            .expect("not an error")
            .expect("one answer per request");
        assert_eq!(response.accepted, u32::try_from(round).expect("small"));
        assert_eq!(
            app.campaign_json("gendarmerie").await["enrolled"],
            json!((1..=round).sum::<usize>()),
            "an answered event is visible to queries"
        );
    }
    drop(requests);
    let end = within(PATIENCE, responses.message())
        .await
        .expect("the stream ends in time")
        .expect("the stream ends cleanly");
    assert!(end.is_none(), "no answer without a request: {end:?}");
    app.stop().await;
}

#[tokio::test]
async fn two_links_at_the_same_instant_attribute_by_the_smaller_event_id_over_http() {
    // Alice enrols through two partners' links at the same instant, then follows the course
    // where no campaign is named: she counts under the campaign of the smaller event_id,
    // whichever order the events come in, one batch or two.
    let enrol = |event_id: &str, campaign: &str| {
        json!({"event_id": event_id, "kind": "enrolled", "campaign": campaign,
               "source": "openclassrooms", "learner_id": "alice",
               "occurred_at": "2020-10-06T10:00:00.250Z"})
    };
    let started = json!({"event_id": "s-1", "kind": "course_started",
                         "source": "openclassrooms", "learner_id": "alice",
                         "occurred_at": "2020-10-07T10:00:00Z"});
    let first = enrol("enrol-b", "gendarmerie");
    let second = enrol("enrol-a", "pole-emploi");
    for batches in [
        vec![json!([first.clone(), second.clone(), started.clone()])],
        vec![
            json!([started.clone(), second.clone()]),
            json!([first.clone()]),
        ],
    ] {
        let mut app = spawn_app().await;
        for batch in &batches {
            let (status, answer) = app.post_events(batch).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            assert_eq!(answer["rejections"], json!([]), "{answer}");
        }
        let winner = app.campaign_json("pole-emploi").await;
        assert_eq!(
            (&winner["enrolled"], &winner["started"]),
            (&json!(1), &json!(1)),
            "{winner}"
        );
        let other = app.campaign_json("gendarmerie").await;
        assert_eq!(
            (&other["enrolled"], &other["started"]),
            (&json!(1), &json!(0)),
            "{other}"
        );
        let totals = app.totals_json().await;
        assert_eq!(
            (&totals["enrolled"], &totals["started"]),
            (&json!(1), &json!(1)),
            "{totals}"
        );
        app.stop().await;
    }
}
