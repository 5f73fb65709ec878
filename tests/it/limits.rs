//! Requests refused whole: over `max_batch_events`, over `max_request_bytes`, or not a JSON
//! batch at all. The refusal names the limit, and nothing of a refused request is counted.

use reqwest::StatusCode;
use serde_json::json;
use tonic::Code;

use crate::helpers::{
    assert_error, enrolments, json_batch, proto_batch, spawn_app, spawn_app_with, stream_batch,
};

#[tokio::test]
async fn a_batch_over_max_batch_events_is_refused_whole() {
    let mut app = spawn_app_with(|settings| settings.max_batch_events = 5).await;
    let mut client = app.ingest_client().await;

    let status = client
        .ingest(proto_batch(&enrolments("grpc", "gendarmerie", 6)))
        .await
        .expect_err("6 events are over the limit of 5");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("max_batch_events") && status.message().contains('5'),
        "the refusal names the limit: {}",
        status.message()
    );

    let answer = app
        .post_events(&json_batch(&enrolments("http", "gendarmerie", 6)))
        .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large");
    let message = answer.1["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("max_batch_events") && message.contains('5'),
        "{message}"
    );
    // Elements count whether or not they are events.
    let answer = app
        .post_events(&json!({"events": [1, 2, 3, 4, 5, 6]}))
        .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large");

    // On a stream, the refusal ends the stream after the answers to the requests before it.
    let mut responses = client
        .ingest_stream(tokio_stream::iter([
            stream_batch(&enrolments("stream-ok", "gendarmerie", 2)),
            stream_batch(&enrolments("stream", "gendarmerie", 6)),
        ]))
        .await
        .expect("IngestStream opens")
        .into_inner();
    let first = responses
        .message()
        .await
        .expect("the first request is answered")
        .expect("an answer");
    assert_eq!(first.accepted, 2);
    let refused = responses
        .message()
        .await
        .expect_err("the second request is refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    let totals = app.totals_json().await;
    assert_eq!(
        totals["enrolled"],
        json!(2),
        "nothing of a refused batch is counted"
    );

    // The limit itself is allowed.
    let response = app.ingest(&enrolments("grpc-5", "gendarmerie", 5)).await;
    assert_eq!(response.accepted, 5);
    let (status, answer) = app
        .post_events(&json_batch(&enrolments("http-5", "gendarmerie", 5)))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], json!(5));
    assert_eq!(app.totals_json().await["enrolled"], json!(12));
    app.stop().await;
}

#[tokio::test]
async fn a_request_over_max_request_bytes_is_refused_whole() {
    const LIMIT: usize = 4096;
    let mut app = spawn_app_with(|settings| settings.max_request_bytes = LIMIT).await;
    // About 100 bytes per event: 100 events are well over the limit, in protobuf and in JSON.
    let big = enrolments(
        "a-rather-long-event-id-to-fill-the-request",
        "gendarmerie",
        100,
    );

    // Over the limit but within what tonic decodes: suivi refuses it, naming the setting.
    let over = enrolments(
        "a-rather-long-event-id-to-fill-the-request",
        "gendarmerie",
        45,
    );
    let over_bytes = prost::Message::encoded_len(&proto_batch(&over));
    assert!(
        over_bytes > LIMIT && over_bytes < 2 * LIMIT,
        "{over_bytes} bytes"
    );
    let status = app
        .ingest_client()
        .await
        .ingest(proto_batch(&over))
        .await
        .expect_err("the message is over max_request_bytes");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains(&LIMIT.to_string())
            && status.message().contains("max_request_bytes"),
        "the refusal names the limit: {}",
        status.message()
    );
    // Far over it, tonic refuses the message before decoding it (OUT_OF_RANGE), still naming a
    // limit, so a huge message never reaches memory whole.
    let status = app
        .ingest_client()
        .await
        .ingest(proto_batch(&big))
        .await
        .expect_err("the message is far over max_request_bytes");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    let body = json_batch(&big).to_string();
    assert!(body.len() > LIMIT);
    let answer = app.post_raw_events(body).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large");
    let message = answer.1["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&LIMIT.to_string()) && message.contains("max_request_bytes"),
        "{message}"
    );

    assert_eq!(
        app.totals_json().await["enrolled"],
        json!(0),
        "nothing of a refused request is counted"
    );

    // Requests under the limit still go through, on the same service.
    let small = enrolments("small", "gendarmerie", 3);
    assert_eq!(app.ingest(&small[..2]).await.accepted, 2);
    let (status, answer) = app.post_events(&json_batch(&small[2..])).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], json!(1));
    assert_eq!(app.totals_json().await["enrolled"], json!(3));
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_a_json_batch_is_refused_with_invalid_body() {
    let mut app = spawn_app().await;
    for body in [
        "not json",
        "42",
        "\"enrolled\"",
        "null",
        "",
        "{\"events\": 3}",
        "{\"event_id\": \"e-1\", \"kind\": \"enrolled\"}",
        "[{\"event_id\": \"e-1\", \"kind\": \"enrolled\",",
        "[] trailing",
    ] {
        let answer = app.post_raw_events(body).await;
        assert_eq!(
            answer.0,
            StatusCode::BAD_REQUEST,
            "body {body:?}: {}",
            answer.1
        );
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_body");
    }

    // An empty batch is a batch.
    let (status, answer) = app.post_raw_events("[]").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer,
        json!({"accepted": 0, "duplicates": 0, "rejections": []})
    );
    let (status, answer) = app.post_raw_events(" {\"events\": []} ").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["accepted"], json!(0));

    let totals = app.totals_json().await;
    assert_eq!(totals["enrolled"], json!(0));
    assert_eq!(totals["clicks"], json!(0));
    app.stop().await;
}
