//! The HTTP query routes (`/v1/campaigns…`, `/v1/totals…`) and the operational ones
//! (`/metrics`, `/healthz`, `/readyz`). JSON names and numbers are those of the gRPC messages.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{NaiveDate, Utc};
use chrono_tz::Tz;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::http::denied;
use crate::auth::{Caller, Gate, PermissionDenied, Read};
use crate::event::{TOTALS_CAMPAIGN, campaign_id};
use crate::figures::{CampaignCounters, DayCounters, Figures};
use crate::forecast::{self, Forecast};
use crate::http::ApiError;
use crate::query::{Readiness, State as Life, day_bound};
use crate::snapshot::SinkHealth;
use crate::telemetry::{self, Transport};

/// What the query routes read.
#[derive(Debug, Clone)]
pub struct QueryState {
    pub figures: Arc<Figures>,
    pub metrics: PrometheusHandle,
    pub readiness: Arc<Readiness>,
    /// How each snapshot sink is doing, shown by `/readyz`.
    pub sinks: Arc<SinkHealth>,
    /// The most registered campaigns exported as per-campaign series on `/metrics`.
    pub max_campaign_metrics: usize,
    /// Forecasts are made as of today in this zone.
    pub time_zone: Tz,
    /// With `forward_to_kafka`: what is known here of each shard, for `/v1/shards`.
    pub shards: Option<Arc<crate::partials::ShardBoard>>,
}

/// A campaign's counters as the JSON routes answer them: the figures' fields, and the forecast
/// to its target (absent without a target), made as of today.
#[derive(Debug, Clone, Serialize)]
pub struct CountersWithForecast {
    #[serde(flatten)]
    pub counters: CampaignCounters,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
}

impl QueryState {
    /// Today, in the programme's time zone.
    pub fn today(&self) -> NaiveDate {
        Utc::now().with_timezone(&self.time_zone).date_naive()
    }

    /// `counters` with their forecast as of today.
    pub fn with_forecast(&self, counters: CampaignCounters) -> CountersWithForecast {
        let forecast = forecast::of_counters(&self.figures, &counters, self.today());
        CountersWithForecast { counters, forecast }
    }
}

/// The query routes, for callers let in by `auth::http::authenticate`: each answers only what
/// the caller's `figures:read` grant reaches, and a campaign out of its reach as one that does
/// not exist. Queries answer 503 until the state is recovered, rather than figures that are
/// still being rebuilt.
pub fn routes(state: QueryState) -> Router {
    Router::new()
        .route("/v1/campaigns", get(list_campaigns))
        .route("/v1/campaigns/{campaign}", get(get_campaign))
        .route("/v1/campaigns/{campaign}/timeline", get(campaign_timeline))
        .route("/v1/totals", get(get_totals))
        .route("/v1/totals/timeline", get(totals_timeline))
        .route("/v1/shards", get(list_shards))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_ready))
        .with_state(state)
}

/// `/metrics` (guarded by `metrics_token` when set), `/healthz` and `/readyz`.
pub fn operational_routes(state: QueryState, gate: Arc<Gate>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            gate,
            crate::auth::http::require_metrics_token,
        ))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn require_ready(State(state): State<QueryState>, request: Request, next: Next) -> Response {
    match state.readiness.get() {
        Life::Ready => next.run(request).await,
        life => ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                format!(
                    "suivi is {} (see /readyz): its figures are not served meanwhile",
                    life.as_str()
                ),
            )
        }
        .into_response(),
    }
}

#[derive(Serialize)]
struct CampaignList {
    campaigns: Vec<CountersWithForecast>,
}

#[derive(Serialize)]
struct Timeline {
    days: Vec<DayCounters>,
}

#[derive(Deserialize)]
struct DayRange {
    from: Option<String>,
    to: Option<String>,
}

async fn list_campaigns(
    State(state): State<QueryState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<CampaignList>, ApiError> {
    let started = Instant::now();
    caller.require_read(Read::Figures).map_err(denied)?;
    let mut campaigns = state.figures.campaigns();
    campaigns.retain(|counters| caller.may_read(Read::Figures, &counters.campaign));
    let campaigns = campaigns
        .into_iter()
        .map(|counters| state.with_forecast(counters))
        .collect();
    telemetry::record_query(Transport::Http, started.elapsed());
    Ok(Json(CampaignList { campaigns }))
}

async fn get_campaign(
    State(state): State<QueryState>,
    Extension(caller): Extension<Caller>,
    Path(campaign): Path<String>,
) -> Result<Json<CountersWithForecast>, ApiError> {
    let started = Instant::now();
    caller.require_read(Read::Figures).map_err(denied)?;
    let campaign = campaign_id(&campaign);
    let counters = Some(&campaign)
        .filter(|campaign| caller.may_read(Read::Figures, campaign))
        .and_then(|campaign| state.figures.campaign(campaign))
        .ok_or_else(|| not_found(&campaign))?;
    telemetry::record_query(Transport::Http, started.elapsed());
    Ok(Json(state.with_forecast(counters)))
}

async fn get_totals(
    State(state): State<QueryState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<CountersWithForecast>, ApiError> {
    let started = Instant::now();
    require_totals(&caller)?;
    let totals = state.with_forecast(state.figures.totals());
    telemetry::record_query(Transport::Http, started.elapsed());
    Ok(Json(totals))
}

/// The shards' freshness (`forward_to_kafka`): for each shard, who counts it, how far, as of
/// when, and how many of its events the figures do not reflect yet. Without scale-out, no
/// shard is listed: the figures are this instance's own and current.
#[derive(Debug, Serialize)]
struct ShardList {
    scale_out: bool,
    shards: Vec<crate::partials::ShardStatus>,
}

async fn list_shards(
    State(state): State<QueryState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ShardList>, ApiError> {
    require_totals(&caller)?;
    Ok(Json(ShardList {
        scale_out: state.shards.is_some(),
        shards: state
            .shards
            .as_ref()
            .map(|board| board.statuses())
            .unwrap_or_default(),
    }))
}

async fn campaign_timeline(
    State(state): State<QueryState>,
    Extension(caller): Extension<Caller>,
    Path(campaign): Path<String>,
    Query(range): Query<DayRange>,
) -> Result<Json<Timeline>, ApiError> {
    caller.require_read(Read::Figures).map_err(denied)?;
    let campaign = campaign_id(&campaign);
    if !caller.may_read(Read::Figures, &campaign) {
        return Err(not_found(&campaign));
    }
    timeline(&state, &campaign, &range)
}

async fn totals_timeline(
    State(state): State<QueryState>,
    Extension(caller): Extension<Caller>,
    Query(range): Query<DayRange>,
) -> Result<Json<Timeline>, ApiError> {
    require_totals(&caller)?;
    timeline(&state, TOTALS_CAMPAIGN, &range)
}

/// The programme totals need `figures:read` with the totals.
fn require_totals(caller: &Caller) -> Result<(), ApiError> {
    caller.require_read(Read::Figures).map_err(denied)?;
    if caller.may_read_totals(Read::Figures) {
        Ok(())
    } else {
        telemetry::record_auth_failure("permission_denied");
        Err(denied(PermissionDenied {
            credential: caller.id().to_string(),
            scope: "figures:read of the programme totals",
        }))
    }
}

fn timeline(
    state: &QueryState,
    campaign: &str,
    range: &DayRange,
) -> Result<Json<Timeline>, ApiError> {
    let started = Instant::now();
    let invalid = |error: crate::day::InvalidDay| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_day", error.to_string())
    };
    let from = day_bound(range.from.as_deref()).map_err(invalid)?;
    let to = day_bound(range.to.as_deref()).map_err(invalid)?;
    let days = state
        .figures
        .timeline(campaign, from, to)
        .ok_or_else(|| not_found(campaign))?;
    telemetry::record_query(Transport::Http, started.elapsed());
    Ok(Json(Timeline { days }))
}

fn not_found(campaign: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "campaign_not_found",
        format!("campaign {campaign:?} is neither registered nor seen"),
    )
}

/// The recorded metrics, then the figures of this service read at scrape time (see
/// `query::metrics::render_figures`).
async fn metrics(State(state): State<QueryState>) -> impl IntoResponse {
    let mut text = state.metrics.render();
    super::metrics::render_figures(
        &mut text,
        &state.figures,
        state.readiness.get() == Life::Ready,
        state.max_campaign_metrics,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "alive" }))
}

async fn readyz(State(state): State<QueryState>) -> (StatusCode, Json<serde_json::Value>) {
    let life = state.readiness.get();
    let status = if life == Life::Ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // A failing sink does not make suivi unready: ingestion does not depend on it.
    let sinks = state.sinks.describe();
    if sinks.is_empty() {
        return (status, Json(json!({ "status": life.as_str() })));
    }
    (
        status,
        Json(json!({ "status": life.as_str(), "sinks": sinks })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::State as Life;
    use crate::registry::Registry;

    /// While the state is being recovered the figures are incomplete: queries must say so
    /// instead of answering zeros, and `/healthz` must still answer.
    #[tokio::test]
    async fn queries_wait_for_the_state_to_be_recovered() {
        let registry = Registry::load(None).expect("the embedded registry parses");
        let readiness = Arc::new(Readiness::default());
        let state = QueryState {
            figures: Arc::new(Figures::new(&registry, 12, chrono::Utc::now())),
            metrics: telemetry::metrics_handle().expect("the recorder installs"),
            readiness: readiness.clone(),
            sinks: Arc::new(SinkHealth::default()),
            max_campaign_metrics: 10,
            time_zone: chrono_tz::Europe::Paris,
            shards: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let address = listener.local_addr().expect("a bound address");
        let gate = Arc::new(crate::auth::Gate::open(None));
        let app = routes(state.clone())
            .route_layer(axum::middleware::from_fn_with_state(
                gate.clone(),
                crate::auth::http::authenticate,
            ))
            .merge(operational_routes(state, gate));
        let server = tokio::spawn(axum::serve(listener, app).into_future());
        let get = |path: &'static str| async move {
            let response = reqwest::get(format!("http://{address}{path}"))
                .await
                .expect("the route answers");
            let status = response.status();
            let body: serde_json::Value = response.json().await.expect("a JSON body");
            (status, body)
        };

        let (status, body) = get("/v1/totals").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["code"], "not_ready");
        assert_eq!(
            get("/v1/campaigns/gendarmerie").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get("/healthz").await.0, StatusCode::OK);
        assert_eq!(get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);

        readiness.set(Life::Ready);
        let (status, body) = get("/v1/totals").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["campaign"], "*");
        assert_eq!(get("/readyz").await.0, StatusCode::OK);
        server.abort();
    }
}
