//! `POST /caliper`: a Caliper 1.1/1.2 sensor's envelope, mapped by `standards::caliper` and
//! ingested as one batch. An envelope is all or nothing: every mapped event is parsed and checked
//! against the sender's credential before any is submitted, and one that fails refuses the whole
//! envelope (400, or 403 for a source or campaign the credential may not send), naming its index
//! in `data` and the reason. Items the mapping does not count are acknowledged and counted in
//! `suivi_caliper_events_ignored_total`. The answer is 200 with `{accepted, duplicates, ignored}`
//! (sensors look only at the status); 415 for a body that is not `application/json` or
//! `application/ld+json`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde::Serialize;

use crate::auth::Caller;
use crate::event::RejectReason;
use crate::http::ApiError;
use crate::ingest::Intake;
use crate::ingest::http::{api_error, json_body};
use crate::standards::Mapping;
use crate::standards::caliper::{self, Defaults, Item};
use crate::telemetry::{self, Transport};

/// The Caliper route, limited to `max_request_bytes` per body, mapping by `mapping` (`[xapi]`).
pub fn routes(intake: Arc<Intake>, mapping: Mapping, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/caliper", post(post_envelope))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(CaliperState {
            intake,
            mapping: Arc::new(mapping),
            max_request_bytes,
        })
}

#[derive(Debug, Clone)]
struct CaliperState {
    intake: Arc<Intake>,
    mapping: Arc<Mapping>,
    max_request_bytes: usize,
}

/// The answer to an envelope taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CaliperResponse {
    /// Events counted for the first time.
    pub accepted: u32,
    /// Events already counted (the same `id` from the same source).
    pub duplicates: u32,
    /// Items acknowledged but not counted (see `suivi_caliper_events_ignored_total`).
    pub ignored: u32,
}

async fn post_envelope(
    State(state): State<CaliperState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CaliperResponse>, ApiError> {
    caller.require_write().map_err(crate::auth::http::denied)?;
    let body = json_body(
        Transport::Caliper,
        &headers,
        body,
        state.max_request_bytes,
        &["application/json", "application/ld+json"],
    )?;
    let defaults = Defaults {
        source: caller.only_source(),
        campaign: caller.only_campaign(),
    };
    let items = caliper::read(&body, &state.mapping, defaults).map_err(|malformed| {
        telemetry::record_refused(Transport::Caliper, "invalid_envelope", 0);
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_envelope", malformed.0)
    })?;
    let mut events = Vec::new();
    let mut ignored: BTreeMap<&'static str, u64> = BTreeMap::new();
    for item in &items {
        match item {
            Item::Mapped(event) => events.push(event),
            Item::Ignored(why) => *ignored.entry(why.reason()).or_default() += 1,
        }
    }
    state
        .intake
        .check_batch(Transport::Caliper, &caller, events.len())
        .map_err(api_error)?;
    // All or nothing: every event must pass before any is submitted.
    let now = Utc::now();
    for event in &events {
        if let Err(reason) = state.intake.admit(&caller, &event.raw(), now) {
            telemetry::record_refused(Transport::Caliper, "event_rejected", events.len());
            return Err(refused_event(event.index, &reason));
        }
    }
    let result = state
        .intake
        .ingest_batch(
            Transport::Caliper,
            &caller,
            events.iter().map(|event| Ok(event.raw())),
        )
        .await
        .map_err(api_error)?;
    for rejection in &result.rejections {
        // The same checks passed a moment ago; only the clock or a quota moving on between them
        // can reject an event here, and the metrics count it.
        tracing::warn!(
            index = rejection.index,
            code = rejection.code,
            "a Caliper event checked before its envelope was submitted was rejected"
        );
    }
    for (reason, items) in &ignored {
        telemetry::record_caliper_ignored(reason, *items);
    }
    Ok(Json(CaliperResponse {
        accepted: result.accepted,
        duplicates: result.duplicates,
        // Envelopes are limited to far fewer than 2^32 items.
        ignored: u32::try_from(ignored.values().sum::<u64>()).unwrap_or(u32::MAX),
    }))
}

/// The refusal of an envelope for its event at `index` in `data`.
fn refused_event(index: usize, reason: &RejectReason) -> ApiError {
    let status = match reason {
        RejectReason::SourceNotAllowed { .. }
        | RejectReason::CampaignNotAllowed { .. }
        | RejectReason::CampaignQuotaExceeded { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(
        status,
        reason.code(),
        format!("data[{index}]: {reason}; the envelope was not taken"),
    )
}
