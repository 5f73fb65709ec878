//! Liveness and readiness over HTTP (`/healthz`, `/readyz`), the standard gRPC health service,
//! and gRPC server reflection, so that load balancers and grpcurl work.

use std::time::Duration;

use prost::Message;
use reqwest::StatusCode;
use serde_json::json;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::helpers::{PATIENCE, enrolments, spawn_app, spawn_app_with_faults};

#[tokio::test]
async fn healthz_and_readyz_answer_once_started() {
    let mut app = spawn_app().await;
    assert_eq!(
        app.get("/healthz").await,
        (StatusCode::OK, json!({"status": "alive"}))
    );
    assert_eq!(
        app.get("/readyz").await,
        (
            StatusCode::OK,
            json!({"status": "ready", "sinks": {"file": "ok"}})
        )
    );
    let (status, _) = app.get_text("/no-such-route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn the_grpc_health_service_says_each_service_is_serving() {
    let mut app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    for service in ["", "suivi.v1.IngestService", "suivi.v1.CounterService"] {
        // Readiness is reported just before the health statuses: give them a moment.
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .map(|response| response.into_inner().status);
            if status.as_ref().ok() == Some(&(ServingStatus::Serving as i32)) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{service:?} is not SERVING: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "suivi.v1.NoSuchService".to_owned(),
        })
        .await
        .expect_err("an unknown service");
    assert_eq!(unknown.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn reflection_lists_and_describes_the_services() {
    let mut app = spawn_app().await;
    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("suivi.v1.IngestService".to_owned()),
    ]
    .map(|request| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    });
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("reflection answers")
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
    let mut names: Vec<String> = listed.service.into_iter().map(|s| s.name).collect();
    names.sort();
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

    let described = responses
        .message()
        .await
        .expect("a description")
        .expect("an answer")
        .message_response;
    let Some(MessageResponse::FileDescriptorResponse(files)) = described else {
        panic!("file descriptors: {described:?}");
    };
    let files: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("decodes"))
        .collect();
    let ingest = files
        .iter()
        .flat_map(|file| &file.service)
        .find(|service| service.name() == "IngestService")
        .unwrap_or_else(|| panic!("IngestService is described: {files:?}"));
    let methods: Vec<(&str, bool, bool)> = ingest
        .method
        .iter()
        .map(|method| {
            (
                method.name(),
                method.client_streaming(),
                method.server_streaming(),
            )
        })
        .collect();
    assert_eq!(
        methods,
        [("Ingest", false, false), ("IngestStream", true, true)]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_writer_thread_that_ends_makes_suivi_unready_at_once_and_run_fail() {
    let (mut app, faults) = spawn_app_with_faults(|_| {}).await;
    let answer = app
        .ingest(&enrolments("before-the-fault", "gendarmerie", 3))
        .await;
    assert_eq!(answer.accepted, 3);
    assert_eq!(app.get("/readyz").await.0, StatusCode::OK);

    // The writer goes away while suivi runs: a zombie would take nothing in and still say ready.
    faults.stop_writer.cancel();
    // Not ready at once: /readyz says "failed" until the listener closes a moment later, and
    // gRPC health never says SERVING again.
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut health = HealthClient::new(app.channel().await);
    loop {
        let readyz = match app.http.get(app.url("/readyz")).send().await {
            Ok(response) => Some((
                response.status(),
                response
                    .json::<serde_json::Value>()
                    .await
                    .unwrap_or_default(),
            )),
            // The servers are closed: no probe can find it ready either.
            Err(_) => None,
        };
        let serving = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|response| response.into_inner().status);
        match readyz {
            Some((StatusCode::OK, _)) => {}
            Some((status, body)) => {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
                assert_eq!(body["status"], json!("failed"), "{body}");
                assert_ne!(serving.ok(), Some(ServingStatus::Serving as i32));
                break;
            }
            None => break,
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz still says ready after the writer ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // suivi stops by itself, with an error naming the thread, for its orchestrator to restart
    // it (main exits non-zero on an error from run).
    let ended = app.ended().await;
    let error = ended.expect_err("run ends with an error");
    assert!(
        format!("{error:#}").contains("writer thread"),
        "the error names the writer thread: {error:#}"
    );

    // Restarted, it recovers what it acknowledged.
    let mut app = app.restart().await;
    assert_eq!(app.campaign_json("gendarmerie").await["enrolled"], json!(3));
    app.stop().await;
}
