//! The xAPI edge, so that an LMS (Moodle's logstore_xapi, Open edX's event-routing-backends, a
//! Ralph pipeline) points its LRS endpoint at `http://HOST:PORT/xAPI` and its learners' progress
//! is counted. `POST /xAPI/statements` (one statement or an array) answers 200 with the
//! statements' ids in order, those suivi gave included; `PUT /xAPI/statements?statementId=`
//! answers 204; a statement already seen is a duplicate that changes nothing (never 409). A
//! batch is taken whole or refused whole, as the xAPI spec says: 400 naming the first malformed
//! statement (or one suivi's rules refuse, such as `occurred_at_too_old`), 403 for one the
//! credential may not send (`source_not_allowed`, `campaign_not_allowed`), with nothing counted.
//! Statements the mapping does not count are acknowledged and counted in
//! `suivi_xapi_statements_ignored_total` (see `standards::xapi` for the table).
//!
//! `X-Experience-API-Version` (1.0.x or 2.0.x) is required on `POST` and `PUT` (400 otherwise)
//! and answered on every `/xAPI` response ([`version_header`]). `GET /xAPI/about` is open;
//! `GET /xAPI/statements` answers 501 `not_an_lrs`: suivi counts statements and does not keep
//! them. The same routes answer under `/xapi`.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::Caller;
use crate::event::{RawEvent, RejectReason};
use crate::http::ApiError;
use crate::ingest::{Intake, WholeRefusal};
use crate::standards::Mapping;
use crate::standards::xapi::{Ignored, Outcome, Reading, interpret};
use crate::telemetry::{self, Transport};

/// The header every xAPI request and answer carries.
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("x-experience-api-version");
/// The xAPI versions suivi answers to, as `GET /xAPI/about` lists them.
pub const VERSIONS: [&str; 2] = ["1.0.3", "2.0.0"];

/// The statement routes (behind the credential and ingest bound layers the caller adds), limited
/// to `max_request_bytes` per body.
pub fn routes(intake: Arc<Intake>, mapping: Arc<Mapping>, max_request_bytes: usize) -> Router {
    let statements = get(get_statements).post(post_statements).put(put_statement);
    Router::new()
        .route("/xAPI/statements", statements.clone())
        .route("/xapi/statements", statements)
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(XapiState {
            intake,
            mapping,
            max_request_bytes,
        })
}

/// `GET /xAPI/about`, open to anyone as in an LRS.
pub fn open_routes() -> Router {
    Router::new()
        .route("/xAPI/about", get(about))
        .route("/xapi/about", get(about))
}

/// Middleware for the whole HTTP router: every answer under `/xAPI` (or `/xapi`), refusals by
/// the credential and bound layers included, carries `X-Experience-API-Version`: `1.0.3` to a
/// 1.0 client, else `2.0.0`.
pub async fn version_header(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let is_xapi = path.starts_with("/xAPI/") || path.starts_with("/xapi/");
    let one_zero = request
        .headers()
        .get(&VERSION_HEADER)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|version| version.trim().starts_with("1.0"));
    let mut response = next.run(request).await;
    if is_xapi {
        let version = if one_zero { VERSIONS[0] } else { VERSIONS[1] };
        response
            .headers_mut()
            .insert(VERSION_HEADER, HeaderValue::from_static(version));
    }
    response
}

#[derive(Debug, Clone)]
struct XapiState {
    intake: Arc<Intake>,
    mapping: Arc<Mapping>,
    max_request_bytes: usize,
}

async fn about() -> Json<Value> {
    Json(json!({ "version": VERSIONS }))
}

async fn get_statements() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_an_lrs",
        "suivi counts xAPI statements and does not store them: it is not a Learning Record \
         Store, and no statement can be read back from it. Send the statements to an LRS as \
         well to keep them.",
    )
}

async fn post_statements(
    State(state): State<XapiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<String>>, ApiError> {
    check_version(&headers)?;
    caller.require_write().map_err(crate::auth::http::denied)?;
    let body = state.body(body)?;
    let statements = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(statements)) => statements,
        Ok(statement @ Value::Object(_)) => vec![statement],
        Ok(_) => {
            return Err(invalid_body(
                "the body must be one statement (a JSON object) or an array of statements",
            ));
        }
        Err(error) => return Err(invalid_body(format!("the body is not valid JSON: {error}"))),
    };
    state.take(&caller, &statements).await.map(Json)
}

async fn put_statement(
    State(state): State<XapiState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    check_version(&headers)?;
    caller.require_write().map_err(crate::auth::http::denied)?;
    let statement_id = query
        .as_deref()
        .and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "statementId")
                .map(|(_, value)| value.into_owned())
        })
        .ok_or_else(|| invalid_body("PUT needs the statement's id: ?statementId=<UUID>"))?;
    let id = Uuid::try_parse(&statement_id)
        .map_err(|_| invalid_body(format!("statementId {statement_id:?} is not a UUID")))?;
    let body = state.body(body)?;
    let mut statement = match serde_json::from_slice::<Value>(&body) {
        Ok(statement @ Value::Object(_)) => statement,
        Ok(_) => return Err(invalid_body("PUT takes one statement, a JSON object")),
        Err(error) => return Err(invalid_body(format!("the body is not valid JSON: {error}"))),
    };
    if let Value::Object(fields) = &mut statement {
        match fields.get("id") {
            None | Some(Value::Null) => {
                fields.insert("id".to_owned(), Value::String(id.hyphenated().to_string()));
            }
            Some(Value::String(own)) if Uuid::try_parse(own).ok() == Some(id) => {}
            Some(own) => {
                return Err(invalid_statement(
                    0,
                    format!("the statement's id {own} is not the statementId {statement_id:?}"),
                    1,
                ));
            }
        }
    }
    state.take(&caller, &[statement]).await?;
    Ok(StatusCode::NO_CONTENT)
}

impl XapiState {
    /// The request's body, or the answer to one too large or unreadable.
    fn body(&self, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
        body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                telemetry::record_refused(Transport::Xapi, "request_too_large", 0);
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request_too_large",
                    format!(
                        "the request body is over the limit of {} bytes (max_request_bytes)",
                        self.max_request_bytes
                    ),
                )
            } else {
                invalid_body(rejection.body_text())
            }
        })
    }

    /// Reads, maps and counts a batch of statements, all or nothing; answers their ids.
    async fn take(&self, caller: &Caller, statements: &[Value]) -> Result<Vec<String>, ApiError> {
        let count = statements.len();
        if count > self.intake.max_batch_events {
            telemetry::record_refused(Transport::Xapi, "batch_too_large", count);
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                format!(
                    "the batch has {count} statements, over the limit of {} per request \
                     (max_batch_events)",
                    self.intake.max_batch_events
                ),
            ));
        }
        let reading = Reading {
            mapping: &self.mapping,
            only_source: caller.only_source(),
            only_campaign: caller.only_campaign(),
            now: Utc::now(),
        };
        let mut ids = Vec::with_capacity(count);
        let mut own_ids = HashSet::new();
        let mut mapped = Vec::new();
        let mut ignored = [0u64; Ignored::ALL.len()];
        for (index, statement) in statements.iter().enumerate() {
            let interpreted = interpret(statement, &reading)
                .map_err(|malformed| invalid_statement(index, malformed.0, count))?;
            if interpreted.own_id && !own_ids.insert(interpreted.id) {
                return Err(invalid_statement(
                    index,
                    format!(
                        "id {} is given to two statements of the batch",
                        interpreted.id
                    ),
                    count,
                ));
            }
            ids.push(interpreted.id.hyphenated().to_string());
            match interpreted.outcome {
                Outcome::Event(event) => mapped.push((index, event)),
                Outcome::Ignored(reason) => {
                    if let Some(slot) = Ignored::ALL.iter().position(|each| *each == reason) {
                        ignored[slot] += 1;
                    }
                }
            }
        }
        if !mapped.is_empty() {
            self.intake
                .check_batch(Transport::Xapi, caller, mapped.len())
                .map_err(super::http::api_error)?;
            let raw_events: Vec<RawEvent<'_>> =
                mapped.iter().map(|(_, event)| event.raw()).collect();
            match self
                .intake
                .ingest_whole(Transport::Xapi, caller, &raw_events)
                .await
            {
                Ok(_) => {}
                Err(WholeRefusal::Invalid { index, reason }) => {
                    let statement = mapped.get(index).map_or(index, |(statement, _)| *statement);
                    return Err(refused_statement(statement, &reason, count));
                }
                Err(WholeRefusal::Batch(refusal)) => return Err(super::http::api_error(refusal)),
            }
        }
        for (reason, statements) in Ignored::ALL.iter().zip(ignored) {
            if statements > 0 {
                telemetry::record_xapi_ignored(reason.as_str(), statements);
            }
        }
        Ok(ids)
    }
}

/// Refuses a request without `X-Experience-API-Version` 1.0.x or 2.0.x.
fn check_version(headers: &HeaderMap) -> Result<(), ApiError> {
    let version = headers
        .get(&VERSION_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim);
    let supported = version.is_some_and(|version| {
        ["1.0", "2.0"].iter().any(|major| {
            version == *major
                || version.strip_prefix(major).is_some_and(|rest| {
                    rest.strip_prefix('.').is_some_and(|patch| {
                        !patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit())
                    })
                })
        })
    });
    if supported {
        return Ok(());
    }
    telemetry::record_refused(Transport::Xapi, "unsupported_version", 0);
    let message = match version {
        None => "send the header X-Experience-API-Version: 1.0.3 or 2.0.0".to_owned(),
        Some(version) => format!(
            "X-Experience-API-Version {version:?} is not supported: suivi takes 1.0.x and 2.0.x"
        ),
    };
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "unsupported_version",
        message,
    ))
}

/// 400 `invalid_body`: the body is not statements.
fn invalid_body(message: impl Into<String>) -> ApiError {
    telemetry::record_refused(Transport::Xapi, "invalid_body", 0);
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message)
}

/// 400 `invalid_statement`: the statement at `index` is malformed; the batch of `count` is
/// refused whole.
fn invalid_statement(index: usize, message: String, count: usize) -> ApiError {
    telemetry::record_refused(Transport::Xapi, "invalid_statement", count);
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_statement",
        format!("statement {index}: {message}; the batch was refused whole, nothing was counted"),
    )
}

/// The statement at `index` maps onto an event suivi's rules refuse: 403 when the credential
/// may not send it, else 400; the batch of `count` is refused whole.
fn refused_statement(index: usize, reason: &RejectReason, count: usize) -> ApiError {
    telemetry::record_refused(Transport::Xapi, "invalid_statement", count);
    let status = match reason {
        RejectReason::SourceNotAllowed { .. } | RejectReason::CampaignNotAllowed { .. } => {
            StatusCode::FORBIDDEN
        }
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(
        status,
        reason.code(),
        format!("statement {index}: {reason}; the batch was refused whole, nothing was counted"),
    )
}
