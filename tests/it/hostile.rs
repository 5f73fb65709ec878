//! The edges under hostile input and load: a body that does not say it is JSON, malformed or
//! oversized protobuf, idle and slow connections, more connections or expensive requests than the
//! bounds allow, and older reflection clients. Each is refused early, with the client's error, a
//! named limit and a metric, while normal requests still work.

use reqwest::StatusCode;
use serde_json::json;
use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

use crate::helpers::{assert_error, enrolments, json_batch, spawn_app};

#[tokio::test]
async fn post_events_requires_a_json_content_type() {
    let mut app = spawn_app().await;
    let body = json_batch(&enrolments("ct", "gendarmerie", 2)).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
    ] {
        let mut request = app.http.post(app.url("/v1/events")).body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("an answer");
        let status = response.status();
        let answer = response.json().await.expect("a JSON answer");
        assert_error(
            &(status, answer),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
    }
    assert_eq!(
        app.totals_json().await["enrolled"],
        json!(0),
        "nothing refused is counted"
    );

    for content_type in ["application/json", "Application/JSON; charset=utf-8"] {
        let response = app
            .http
            .post(app.url("/v1/events"))
            .header("content-type", content_type)
            .body(json_batch(&enrolments(content_type, "gendarmerie", 2)).to_string())
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), StatusCode::OK, "{content_type}");
    }
    assert_eq!(app.totals_json().await["enrolled"], json!(4));
    app.stop().await;
}

#[tokio::test]
async fn reflection_v1alpha_lists_the_services() {
    let mut app = spawn_app().await;
    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha reflection answers")
        .into_inner();
    let listed = responses
        .message()
        .await
        .expect("a list")
        .expect("an answer")
        .message_response;
    let Some(MessageResponse::ListServicesResponse(listed)) = listed else {
        panic!("a list of services: {listed:?}");
    };
    let names: Vec<String> = listed.service.into_iter().map(|s| s.name).collect();
    for service in [
        "grpc.health.v1.Health",
        "suivi.v1.CounterService",
        "suivi.v1.IngestService",
    ] {
        assert!(
            names.iter().any(|name| name == service),
            "{service} in {names:?}"
        );
    }
    app.stop().await;
}
