//! `POST /v1/events`: a JSON array of events, or `{"events": [...]}`, answered with the same
//! accepted / duplicates / rejections as gRPC. Each element is decoded on its own, so one
//! malformed event is rejected with `invalid_event` and the rest of the batch goes on. A body
//! must say it is `application/json`: a web page can then only post it cross-origin after a CORS
//! preflight, which suivi never grants.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::auth::Caller;
use crate::auth::quota::retry_after_seconds;
use crate::event::JsonEvent;
use crate::http::ApiError;
use crate::ingest::{BatchRefusal, BatchResult, Intake};
use crate::pipeline::Refusal;
use crate::telemetry::{self, Transport};

/// The ingest routes, limited to `max_request_bytes` per body.
pub fn routes(intake: Arc<Intake>, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/v1/events", post(post_events))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(IngestState {
            intake,
            max_request_bytes,
        })
}

#[derive(Debug, Clone)]
struct IngestState {
    intake: Arc<Intake>,
    max_request_bytes: usize,
}

#[derive(Deserialize)]
struct Wrapped<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

async fn post_events(
    State(state): State<IngestState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchResult>, ApiError> {
    caller.require_write().map_err(crate::auth::http::denied)?;
    let body = json_body(
        Transport::Http,
        &headers,
        body,
        state.max_request_bytes,
        &["application/json"],
    )?;
    let elements = decode_elements(&body)?;
    state
        .intake
        .check_batch(Transport::Http, &caller, elements.len())
        .map_err(api_error)?;
    let events: Vec<_> = elements
        .iter()
        .map(|element| JsonEvent::decode(element.get()))
        .collect();
    let raw_events = events
        .iter()
        .map(|event| event.as_ref().map(JsonEvent::raw).map_err(Clone::clone));
    state
        .intake
        .ingest_batch(Transport::Http, &caller, raw_events)
        .await
        .map(Json)
        .map_err(api_error)
}

/// The body of an ingest request over `transport`, refused (and counted) with 415
/// `unsupported_media_type` unless its Content-Type is one of `media` (parameters such as
/// `charset` allowed), and with 413 `request_too_large` over `max_request_bytes`.
pub(super) fn json_body(
    transport: Transport,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    max_request_bytes: usize,
    media: &[&str],
) -> Result<Bytes, ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::trim);
    if !essence.is_some_and(|essence| {
        media
            .iter()
            .any(|accepted| essence.eq_ignore_ascii_case(accepted))
    }) {
        telemetry::record_refused(transport, "unsupported_media_type", 0);
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "the body must be sent with Content-Type: {}",
                media.join(" or ")
            ),
        ));
    }
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            telemetry::record_refused(transport, "request_too_large", 0);
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!(
                    "the request body is over the limit of {max_request_bytes} bytes (max_request_bytes)"
                ),
            )
        } else {
            ApiError::new(rejection.status(), "invalid_body", rejection.body_text())
        }
    })
}

/// Splits the body into its event elements, each still undecoded.
fn decode_elements(body: &[u8]) -> Result<Vec<&RawValue>, ApiError> {
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    let decoded = match first {
        Some(b'[') => serde_json::from_slice::<Vec<&RawValue>>(body),
        Some(b'{') => serde_json::from_slice::<Wrapped<'_>>(body).map(|wrapped| wrapped.events),
        _ => {
            return Err(invalid_body(
                "the body must be a JSON array of events or an object {\"events\": [...]}",
            ));
        }
    };
    decoded.map_err(|error| invalid_body(format!("the body is not valid JSON: {error}")))
}

fn invalid_body(message: impl Into<String>) -> ApiError {
    telemetry::record_refused(Transport::Http, "invalid_body", 0);
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message)
}

/// The HTTP answer to a batch refused whole.
pub(super) fn api_error(refusal: BatchRefusal) -> ApiError {
    let message = refusal.to_string();
    match refusal {
        BatchRefusal::TooManyEvents { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", message)
        }
        BatchRefusal::RateLimited(limited) => ApiError {
            retry_after: Some(retry_after_seconds(limited.retry_after)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        },
        BatchRefusal::Pipeline(Refusal::Overloaded(_)) => ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
        },
        BatchRefusal::Unforwarded(_) => ApiError {
            retry_after: Some(5),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "kafka_unavailable",
                message,
            )
        },
        BatchRefusal::Pipeline(Refusal::ShuttingDown) => ApiError {
            retry_after: Some(5),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
        },
        BatchRefusal::Pipeline(Refusal::DiskFull) => ApiError {
            retry_after: Some(10),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "disk_full", message)
        },
        BatchRefusal::Pipeline(Refusal::StorageUnwritable) => ApiError {
            retry_after: Some(10),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unwritable",
                message,
            )
        },
        // Only Kafka batches are sequenced.
        BatchRefusal::Pipeline(Refusal::OutOfSequence) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
        }
    }
}
