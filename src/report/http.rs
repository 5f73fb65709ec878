//! The report routes: `GET /v1/campaigns/{campaign}/report` (one partner) and `GET /v1/reports`
//! (every campaign), with `?period=2021-Q1-1` or `?from=YYYY-MM-DD&to=YYYY-MM-DD` (default: the
//! last half-quarter that has ended), `format=html|csv|json` (default html) and `lang=fr|en`
//! (default fr). They read the downstream store, like `suivi report`, never the live counters:
//! a report is as of the latest snapshot.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use chrono_tz::Tz;
use serde::Deserialize;

use crate::auth::http::denied;
use crate::auth::{Caller, Read};
use crate::event::campaign_id;
use crate::http::ApiError;
use crate::report::period::{self, Period};
use crate::report::store::Store;
use crate::report::{Allowed, Format, Lang, Programme, ReportError, make, render};

/// What the report routes read.
#[derive(Debug, Clone)]
pub struct ReportState {
    pub store: Arc<Store>,
    pub time_zone: Tz,
}

/// The report routes.
pub fn routes(state: ReportState) -> Router {
    Router::new()
        .route("/v1/campaigns/{campaign}/report", get(campaign_report))
        .route("/v1/reports", get(all_reports))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct ReportQuery {
    period: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
    lang: Option<String>,
}

async fn campaign_report(
    State(state): State<ReportState>,
    Extension(caller): Extension<Caller>,
    Path(campaign): Path<String>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    report(&state, &caller, Some(campaign_id(&campaign)), &query).await
}

async fn all_reports(
    State(state): State<ReportState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    report(&state, &caller, None, &query).await
}

async fn report(
    state: &ReportState,
    caller: &Caller,
    campaign: Option<String>,
    query: &ReportQuery,
) -> Result<Response, ApiError> {
    caller.require_read(Read::Reports).map_err(denied)?;
    let bad =
        |code: &'static str, message: String| ApiError::new(StatusCode::BAD_REQUEST, code, message);
    let format = match query.format.as_deref() {
        None => Format::Html,
        Some(text) => Format::parse(text).ok_or_else(|| {
            bad(
                "invalid_format",
                format!("{text:?} is not a report format: html, csv or json"),
            )
        })?,
    };
    let lang = match query.lang.as_deref() {
        None => Lang::Fr,
        Some(text) => text
            .parse::<Lang>()
            .map_err(|message| bad("invalid_lang", message))?,
    };
    let period = match (
        non_empty(query.period.as_deref()),
        non_empty(query.from.as_deref()),
        non_empty(query.to.as_deref()),
    ) {
        (Some(period), None, None) => Period::parse(period),
        (None, Some(from), Some(to)) => period::parse_date(from)
            .and_then(|from| Ok((from, period::parse_date(to)?)))
            .and_then(|(from, to)| Period::range(from, to)),
        (None, None, None) => {
            let today = Utc::now().with_timezone(&state.time_zone).date_naive();
            Ok(period::last_completed(today).period())
        }
        _ => Err(anyhow::anyhow!(
            "give either period (e.g. 2021-Q1-1) or both from and to (YYYY-MM-DD)"
        )),
    }
    .map_err(|error| bad("invalid_period", format!("{error:#}")))?;
    // A campaign out of the caller's reach is answered as one the store does not hold, and the
    // programme's figures are shown only to a caller granted the totals.
    let allowed = caller
        .campaigns(Read::Reports)
        .map_or(Allowed::All, Allowed::Only);
    let programme = if caller.may_read_totals(Read::Reports) {
        Programme::Included
    } else {
        Programme::LeftOut
    };
    let made = make(
        &state.store,
        campaign.as_deref(),
        allowed,
        programme,
        &period,
        state.time_zone,
    );
    let reports = made.await.map_err(|error| match error {
        ReportError::CampaignNotFound { .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            "campaign_not_found",
            error.to_string(),
        ),
        ReportError::Empty(_) | ReportError::Store(_) => {
            tracing::warn!(error = %crate::telemetry::chain(&error), "cannot make a report");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                error.to_string(),
            )
        }
    })?;
    let body = render(&reports, format, lang, campaign.is_some()).map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{error:#}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

/// A query parameter, unless it is empty (`?period=` is no period).
fn non_empty(text: Option<&str>) -> Option<&str> {
    text.filter(|text| !text.trim().is_empty())
}
