//! The edges under hostile input and load: a body that does not say it is JSON, malformed or
//! oversized protobuf, idle and slow connections, more connections or expensive requests than the
//! bounds allow, and older reflection clients. Each is refused early, with the client's error, a
//! named limit and a metric, while normal requests still work.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use prost::Message;
use prost::bytes::{Buf, BufMut};
use reqwest::StatusCode;
use serde_json::json;
use tonic::Code;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    PATIENCE, Suivi, TestApp, assert_error, enrolments, json_batch, proto_batch, spawn_app,
    spawn_app_with, stream_batch,
};

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

/// Sends and receives gRPC messages as raw bytes, whatever they hold.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Calls `Ingest` with `message` as its raw protobuf body.
async fn raw_ingest(channel: Channel, message: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    grpc.ready().await.expect("the channel is ready");
    grpc.unary(
        tonic::Request::new(message),
        tonic::codegen::http::uri::PathAndQuery::from_static("/suivi.v1.IngestService/Ingest"),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Calls `IngestStream` with `messages` as raw protobuf bodies: the answers before the stream
/// ended, and how it ended.
async fn raw_ingest_stream(
    channel: Channel,
    messages: Vec<Vec<u8>>,
) -> (
    Vec<suivi::proto::IngestStreamResponse>,
    Result<(), tonic::Status>,
) {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    grpc.ready().await.expect("the channel is ready");
    let mut responses = match grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(messages)),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/suivi.v1.IngestService/IngestStream",
            ),
            RawCodec,
        )
        .await
    {
        Ok(responses) => responses.into_inner(),
        Err(status) => return (Vec::new(), Err(status)),
    };
    let mut answers = Vec::new();
    loop {
        match responses.message().await {
            Ok(Some(bytes)) => answers.push(
                suivi::proto::IngestStreamResponse::decode(bytes.as_slice()).expect("an answer"),
            ),
            Ok(None) => return (answers, Ok(())),
            Err(status) => return (answers, Err(status)),
        }
    }
}

/// Malformed ingest requests: truncated, garbage, an event that is not a LearnerEvent, a string
/// that is not UTF-8.
fn malformed_messages() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("a length past the end", vec![0x0a, 0x05, 0x01]),
        ("garbage", vec![0xff; 20]),
        ("a truncated event", vec![0x0a, 0x02, 0x0a, 0x7f]),
        (
            "an event id that is not UTF-8",
            vec![0x0a, 0x03, 0x0a, 0x01, 0xff],
        ),
        ("a group", vec![0x0b, 0x0c]),
    ]
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument_not_internal() {
    let mut app = spawn_app().await;
    for (what, message) in malformed_messages() {
        let status = raw_ingest(app.channel().await, message)
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(status.message().contains("protobuf"), "{what}: {status:?}");
    }

    for (what, message) in malformed_messages() {
        let valid = stream_batch(&enrolments(what, "gendarmerie", 2)).encode_to_vec();
        let (answers, end) = raw_ingest_stream(app.channel().await, vec![valid, message]).await;
        assert_eq!(
            answers.len(),
            1,
            "{what}: the valid request before is answered"
        );
        assert_eq!(answers[0].accepted, 2, "{what}");
        let status = end.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    assert_eq!(app.totals_json().await["enrolled"], json!(10));

    // A well-formed request still goes through the same decoder.
    let answer = raw_ingest(
        app.channel().await,
        proto_batch(&enrolments("after", "gendarmerie", 3)).encode_to_vec(),
    )
    .await
    .expect("a valid request is answered");
    let answer = suivi::proto::IngestResponse::decode(answer.as_slice()).expect("an answer");
    assert_eq!(answer.accepted, 3);
    app.stop().await;
}

/// The peak resident memory of process `pid` so far, in bytes (VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line");
    kib * 1024
}

async fn channel_to(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect()
        .await
        .expect("connects to the gRPC API")
}

#[tokio::test]
async fn grpc_decoding_is_bounded_before_allocation() {
    const MAX_RSS: u64 = 200 * 1024 * 1024;
    const AT_ONCE: usize = 4;
    let dir = tempfile::tempdir().expect("a temporary dir");
    // The default limits: max_request_bytes 8 MiB, max_batch_events 10,000.
    let suivi = Suivi::start(dir.path(), &[]);
    let grpc_addr = suivi.grpc_addr;
    let before = peak_rss(suivi.id());

    // 8 million empty events, 16 MB: over max_request_bytes, under tonic's own limit.
    let over_bytes = [0x0a_u8, 0x00].repeat(8_000_000);
    // 4 million empty events, 8 MB: within max_request_bytes, 400 times max_batch_events.
    let over_events = [0x0a_u8, 0x00].repeat(4_000_000);
    for (message, code, limit) in [
        (&over_bytes, Code::ResourceExhausted, "max_request_bytes"),
        (&over_events, Code::InvalidArgument, "max_batch_events"),
    ] {
        let mut calls = Vec::new();
        for _ in 0..AT_ONCE {
            let channel = channel_to(grpc_addr).await;
            calls.push(tokio::spawn(raw_ingest(channel, message.clone())));
        }
        let channel = channel_to(grpc_addr).await;
        let message = message.clone();
        calls.push(tokio::spawn(async move {
            raw_ingest_stream(channel, vec![message])
                .await
                .1
                .map(|()| Vec::new())
        }));
        for call in calls {
            let status = call.await.expect("the call ran").expect_err("refused");
            assert_eq!(status.code(), code, "{status:?}");
            assert!(status.message().contains(limit), "{status:?}");
        }
    }
    let peak = peak_rss(suivi.id());
    println!(
        "peak RSS {} MB, {} MB before",
        peak / 1_000_000,
        before / 1_000_000
    );
    let log = suivi.kill();
    assert!(
        peak < MAX_RSS,
        "suivi peaked at {} MB (from {} MB) decoding refused requests: {log}",
        peak / 1_000_000,
        before / 1_000_000,
    );
}

/// Whether the server closes `stream` (end of file or reset) within `patience`, reading and
/// dropping whatever it sends meanwhile but never answering.
async fn closed_within(stream: &mut TcpStream, patience: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(patience, stream.read_to_end(&mut sink))
        .await
        .is_ok()
}

/// `count` connections to `addr`, each having sent `opening`.
async fn connections(addr: SocketAddr, count: usize, opening: &[u8]) -> Vec<TcpStream> {
    let mut streams = Vec::new();
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        stream.write_all(opening).await.expect("sends its opening");
        streams.push(stream);
    }
    streams
}

/// Checks that the metric line that starts with `series` (name and labels) is at least `least`.
async fn assert_metric_at_least(app: &TestApp, series: &str, least: f64) {
    let (status, text) = app.get_text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let value: Option<f64> = text
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok());
    let family = series.split('{').next().unwrap_or(series);
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with(family))
        .collect();
    assert!(
        value.is_some_and(|value| value >= least),
        "{series} at least {least}: {lines:#?}"
    );
}

/// A normal client still gets answers over both listeners.
async fn still_serves(app: &TestApp) {
    let answer = app
        .ingest_client()
        .await
        .ingest(proto_batch(&enrolments("normal", "gendarmerie", 1)))
        .await
        .expect("a normal gRPC request is answered")
        .into_inner();
    assert_eq!(answer.accepted + answer.duplicates, 1, "{answer:?}");
    let (status, _) = app.get("/v1/totals").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed_after_the_header_read_timeout() {
    let mut app = spawn_app_with(|settings| {
        settings.header_read_timeout = Duration::from_millis(300);
        settings.http2_keepalive_interval = Duration::from_millis(300);
        settings.http2_keepalive_timeout = Duration::from_millis(300);
    })
    .await;
    let half_preface = &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..12];
    // The preface and an empty SETTINGS frame: an HTTP/2 client that then never answers a ping.
    let mut deaf_client = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    deaf_client.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let mut held = Vec::new();
    for (what, addr, opening) in [
        ("http, silent", app.http_addr, &b""[..]),
        (
            "http, slowloris",
            app.http_addr,
            &b"GET /v1/totals HTTP/1.1\r\nHost: x\r\n"[..],
        ),
        ("http, half a preface", app.http_addr, half_preface),
        ("http, deaf HTTP/2", app.http_addr, &deaf_client[..]),
        ("grpc, silent", app.grpc_addr, &b""[..]),
        ("grpc, half a preface", app.grpc_addr, half_preface),
        ("grpc, deaf HTTP/2", app.grpc_addr, &deaf_client[..]),
        (
            "grpc, HTTP/1",
            app.grpc_addr,
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        ),
    ] {
        held.push((what, connections(addr, 20, opening).await));
    }
    still_serves(&app).await;
    for (what, streams) in &mut held {
        for stream in streams.iter_mut() {
            assert!(
                closed_within(stream, Duration::from_secs(5)).await,
                "{what}: the connection is closed"
            );
        }
    }
    still_serves(&app).await;
    for series in [
        r#"suivi_connections_refused_total{transport="http",reason="handshake_timeout"}"#,
        r#"suivi_connections_refused_total{transport="http",reason="header_read_timeout"}"#,
        r#"suivi_connections_refused_total{transport="grpc",reason="handshake_timeout"}"#,
        r#"suivi_connections_refused_total{transport="grpc",reason="not_http2"}"#,
    ] {
        assert_metric_at_least(&app, series, 20.0).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn connections_over_max_connections_are_closed_while_others_work() {
    const MAX: usize = 8;
    let mut app = spawn_app_with(|settings| settings.max_connections = MAX).await;
    for addr in [app.http_addr, app.grpc_addr] {
        // The bound is per listener: fill it with connections that say nothing.
        let mut idle = connections(addr, MAX, b"").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut over = connections(addr, 3, b"").await;
        for stream in &mut over {
            assert!(
                closed_within(stream, Duration::from_secs(5)).await,
                "{addr}: a connection over max_connections is closed at once"
            );
        }
        // A place freed is a place for a normal client.
        idle.pop();
        let started = std::time::Instant::now();
        let served = loop {
            let works = if addr == app.http_addr {
                reqwest::get(app.url("/v1/totals")).await.is_ok()
            } else {
                let channel = Channel::from_shared(format!("http://{addr}"))
                    .expect("a valid URI")
                    .connect()
                    .await;
                match channel {
                    Ok(channel) => raw_ingest(
                        channel,
                        proto_batch(&enrolments("placed", "gendarmerie", 1)).encode_to_vec(),
                    )
                    .await
                    .is_ok(),
                    Err(_) => false,
                }
            };
            if works || started.elapsed() > PATIENCE {
                break works;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            served,
            "{addr}: a normal client is served in the freed place"
        );
        drop(idle);
    }
    for listener in ["http", "grpc"] {
        let series = format!(
            r#"suivi_connections_refused_total{{transport="{listener}",reason="too_many_connections"}}"#
        );
        assert_metric_at_least(&app, &series, 3.0).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn concurrent_reports_over_the_bound_are_shed_with_503_and_totals_stay_served() {
    let mut app = spawn_app_with(|settings| {
        settings.max_concurrent_reports = 1;
        settings.snapshot_interval = Duration::from_millis(100);
    })
    .await;
    app.ingest(&enrolments("report", "gendarmerie", 50)).await;
    let url = app.url("/v1/reports?period=2020-Q4-2&format=json");
    let started = std::time::Instant::now();
    while app
        .get_response("/v1/reports?period=2020-Q4-2&format=json")
        .await
        .status()
        != StatusCode::OK
    {
        assert!(started.elapsed() < PATIENCE, "a snapshot is written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut shed = 0;
    for _ in 0..50 {
        let wave: Vec<_> = (0..16)
            .map(|_| {
                let request = app.http.get(&url).send();
                tokio::spawn(async move {
                    let response = request.await.expect("an answer");
                    let status = response.status();
                    let retry_after = response.headers().get("retry-after").cloned();
                    let body: serde_json::Value = if status == StatusCode::OK {
                        json!(null)
                    } else {
                        response.json().await.expect("a JSON error")
                    };
                    (status, retry_after, body)
                })
            })
            .collect();
        let (status, _) = app.get("/v1/totals").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "totals are not bounded with reports"
        );
        for answer in wave {
            let (status, retry_after, body) = answer.await.expect("the request ran");
            if status == StatusCode::OK {
                continue;
            }
            assert_error(
                &(status, body),
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
            );
            assert!(retry_after.is_some(), "a shed request says when to retry");
            shed += 1;
        }
        if shed > 0 {
            break;
        }
    }
    assert!(shed > 0, "16 reports at once over a bound of 1 shed some");
    assert_metric_at_least(
        &app,
        r#"suivi_http_requests_shed_total{reason="max_concurrent_reports"}"#,
        1.0,
    )
    .await;
    app.stop().await;
}

#[test]
fn the_connection_and_request_bounds_are_settings_checked_before_serving() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let help = Command::new(env!("CARGO_BIN_EXE_suivi"))
        .args(["serve", "--help"])
        .output()
        .expect("suivi serve --help runs");
    let help = String::from_utf8_lossy(&help.stdout);
    for setting in [
        "max_connections",
        "header_read_timeout",
        "http2_keepalive_interval",
        "http2_keepalive_timeout",
        "max_concurrent_reports",
        "max_concurrent_ingest_requests",
    ] {
        let flag = format!("--{}", setting.replace('_', "-"));
        let env = format!("SUIVI_{}", setting.to_uppercase());
        assert!(
            help.contains(&flag) && help.contains(&env),
            "serve --help names {flag} and {env}: {help}"
        );
    }
    for (args, env, named) in [
        (
            vec![],
            vec![("SUIVI_MAX_CONNECTIONS", "0")],
            "max_connections",
        ),
        (
            vec!["--max-concurrent-reports", "0"],
            vec![],
            "max_concurrent_reports",
        ),
        (
            vec![],
            vec![("SUIVI_HEADER_READ_TIMEOUT", "0s")],
            "header_read_timeout",
        ),
        (
            vec!["--http2-keepalive-interval", "0s"],
            vec![],
            "http2_keepalive_interval",
        ),
        (
            vec![],
            vec![("SUIVI_HTTP2_KEEPALIVE_TIMEOUT", "0s")],
            "http2_keepalive_timeout",
        ),
        (
            vec!["--max-concurrent-ingest-requests", "0"],
            vec![],
            "max_concurrent_ingest_requests",
        ),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_suivi"))
            .arg("serve")
            .args(&args)
            .env("SUIVI_GRPC_ADDR", "127.0.0.1:0")
            .env("SUIVI_HTTP_ADDR", "127.0.0.1:0")
            .env("SUIVI_DATA_DIR", dir.path().join("data"))
            .env_remove("SUIVI_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the suivi binary runs");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("suivi can be waited for").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("suivi {args:?} {env:?} kept running: it should have refused {named}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().expect("suivi's output");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_ne!(output.status.code(), Some(0), "{named}: {stderr}");
        assert!(
            stderr.contains(named),
            "the refusal names {named}: {stderr}"
        );
    }
}

#[tokio::test]
async fn ingest_requests_over_the_bound_are_refused_before_their_bodies_are_read() {
    let mut app = spawn_app_with(|settings| settings.max_concurrent_ingest_requests = 2).await;
    // Two streams, each answered once and kept open: they hold both places.
    let mut open = Vec::new();
    for stream in 0..2 {
        let (sender, requests) = tokio::sync::mpsc::channel(1);
        sender
            .send(stream_batch(&enrolments(
                &format!("held-{stream}"),
                "gendarmerie",
                1,
            )))
            .await
            .expect("the request stream is open");
        let mut responses = app
            .ingest_client()
            .await
            .ingest_stream(tokio_stream::wrappers::ReceiverStream::new(requests))
            .await
            .expect("IngestStream opens")
            .into_inner();
        let answer = responses
            .message()
            .await
            .expect("an answer")
            .expect("an answer");
        assert_eq!(answer.accepted, 1);
        open.push((sender, responses));
    }

    let status = app
        .ingest_client()
        .await
        .ingest(proto_batch(&enrolments("third", "gendarmerie", 1)))
        .await
        .expect_err("a third request is over the bound");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("max_concurrent_ingest_requests"),
        "{status:?}"
    );
    let response = app
        .http
        .post(app.url("/v1/events"))
        .header("content-type", "application/json")
        .body(json_batch(&enrolments("third-http", "gendarmerie", 1)).to_string())
        .send()
        .await
        .expect("an answer");
    let retry_after = response.headers().get("retry-after").cloned();
    let answer = (response.status(), response.json().await.expect("JSON"));
    assert_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert!(retry_after.is_some(), "a refused post says when to retry");
    // Queries are not ingest requests.
    assert_eq!(app.totals_json().await["enrolled"], json!(2));

    // A stream that ends gives its place back.
    let (sender, mut responses) = open.pop().expect("a held stream");
    drop(sender);
    assert!(
        responses
            .message()
            .await
            .expect("the stream ends")
            .is_none()
    );
    let answer = app.ingest(&enrolments("after", "gendarmerie", 1)).await;
    assert_eq!(answer.accepted, 1);
    assert_metric_at_least(
        &app,
        r#"suivi_ingest_requests_refused_total{transport="grpc",reason="too_many_requests"}"#,
        1.0,
    )
    .await;
    assert_metric_at_least(
        &app,
        r#"suivi_http_requests_shed_total{reason="max_concurrent_ingest_requests"}"#,
        1.0,
    )
    .await;
    drop(open);
    app.stop().await;
}
