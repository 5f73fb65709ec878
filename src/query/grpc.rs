//! `suivi.v1.CounterService` over tonic: campaign counters, totals, timelines, and a stream of
//! counters as they change. Answers come from [`Figures`]; this file only converts them to
//! messages.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono_tz::Tz;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::auth::{self, Caller, Gate, PermissionDenied, Read};
use crate::event::{TOTALS_CAMPAIGN, campaign_id};
use crate::figures::{CampaignCounters, DayCounters, Figures};
use crate::forecast::{self, Forecast, Outlook};
use crate::proto;
use crate::proto::counter_service_server::CounterService;
use crate::query::{Readiness, State, day_bound};
use crate::telemetry::{self, Transport};

/// How often a quiet watch stream checks that its credential still stands.
const CREDENTIAL_RECHECK: Duration = Duration::from_secs(1);

/// Counters sent to one watcher without being read, before it waits.
const WATCH_BUFFER: usize = 64;

/// The gRPC query service.
#[derive(Debug, Clone)]
pub struct CounterApi {
    figures: Arc<Figures>,
    gate: Arc<Gate>,
    watch_interval: Duration,
    /// Forecasts are made as of today in this zone.
    time_zone: Tz,
    shutdown: CancellationToken,
}

impl CounterApi {
    /// Watch streams end when `shutdown` is cancelled.
    pub fn new(
        figures: Arc<Figures>,
        gate: Arc<Gate>,
        watch_interval: Duration,
        time_zone: Tz,
        shutdown: CancellationToken,
    ) -> CounterApi {
        CounterApi {
            figures,
            gate,
            watch_interval,
            time_zone,
            shutdown,
        }
    }

    /// The message of `counters`, with their forecast as of today.
    fn message(&self, counters: CampaignCounters) -> proto::CampaignCounters {
        let today = chrono::Utc::now()
            .with_timezone(&self.time_zone)
            .date_naive();
        let forecast = forecast::of_counters(&self.figures, &counters, today);
        message(counters, forecast)
    }
}

type WatchStream =
    Pin<Box<dyn Stream<Item = Result<proto::WatchCampaignsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl CounterService for CounterApi {
    async fn get_campaign(
        &self,
        request: Request<proto::GetCampaignRequest>,
    ) -> Result<Response<proto::GetCampaignResponse>, Status> {
        let started = Instant::now();
        let caller = reader(&request)?;
        let campaign = campaign_id(&request.into_inner().campaign);
        let counters = Some(&campaign)
            .filter(|campaign| caller.may_read(Read::Figures, campaign))
            .and_then(|campaign| self.figures.campaign(campaign))
            .ok_or_else(|| not_found(&campaign))?;
        telemetry::record_query(Transport::Grpc, started.elapsed());
        Ok(Response::new(proto::GetCampaignResponse {
            counters: Some(self.message(counters)),
        }))
    }

    async fn list_campaigns(
        &self,
        request: Request<proto::ListCampaignsRequest>,
    ) -> Result<Response<proto::ListCampaignsResponse>, Status> {
        let started = Instant::now();
        let caller = reader(&request)?;
        let campaigns = self
            .figures
            .campaigns()
            .into_iter()
            .filter(|counters| caller.may_read(Read::Figures, &counters.campaign))
            .map(|counters| self.message(counters))
            .collect();
        telemetry::record_query(Transport::Grpc, started.elapsed());
        Ok(Response::new(proto::ListCampaignsResponse { campaigns }))
    }

    async fn get_totals(
        &self,
        request: Request<proto::GetTotalsRequest>,
    ) -> Result<Response<proto::GetTotalsResponse>, Status> {
        let started = Instant::now();
        let caller = reader(&request)?;
        require_totals(&caller)?;
        let totals = self.message(self.figures.totals());
        telemetry::record_query(Transport::Grpc, started.elapsed());
        Ok(Response::new(proto::GetTotalsResponse {
            totals: Some(totals),
        }))
    }

    async fn get_timeline(
        &self,
        request: Request<proto::GetTimelineRequest>,
    ) -> Result<Response<proto::GetTimelineResponse>, Status> {
        let started = Instant::now();
        let caller = reader(&request)?;
        let request = request.into_inner();
        let from = day_bound(Some(&request.from_day))
            .map_err(|error| Status::invalid_argument(format!("from_day: {error}")))?;
        let to = day_bound(Some(&request.to_day))
            .map_err(|error| Status::invalid_argument(format!("to_day: {error}")))?;
        let campaign = timeline_campaign(&request.campaign);
        if campaign == TOTALS_CAMPAIGN {
            require_totals(&caller)?;
        }
        let days = Some(&campaign)
            .filter(|campaign| caller.may_read(Read::Figures, campaign))
            .and_then(|campaign| self.figures.timeline(campaign, from, to))
            .ok_or_else(|| not_found(&campaign))?;
        telemetry::record_query(Transport::Grpc, started.elapsed());
        Ok(Response::new(proto::GetTimelineResponse {
            days: days.into_iter().map(day_message).collect(),
        }))
    }

    type WatchCampaignsStream = WatchStream;

    async fn watch_campaigns(
        &self,
        request: Request<proto::WatchCampaignsRequest>,
    ) -> Result<Response<Self::WatchCampaignsStream>, Status> {
        let caller = reader(&request)?;
        let wanted: Vec<String> = request
            .into_inner()
            .campaigns
            .iter()
            .map(|campaign| timeline_campaign(campaign))
            .collect();
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(watch(self.clone(), caller, wanted, sender));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// Lets queries through once the caller is let in by its credential (kept in the request for
/// the method) and the state is recovered; until then answers UNAVAILABLE rather than figures
/// still being rebuilt.
#[allow(clippy::result_large_err)] // tonic's interceptor signature.
pub fn admit<T>(
    gate: &Gate,
    readiness: &Readiness,
    mut request: Request<T>,
) -> Result<Request<T>, Status> {
    let caller = auth::grpc::authenticate(gate, request.metadata())?;
    request.extensions_mut().insert(caller);
    match readiness.get() {
        State::Ready => Ok(request),
        life => Err(Status::unavailable(format!(
            "suivi is {} (see gRPC health): its figures are not served meanwhile",
            life.as_str()
        ))),
    }
}

/// Sends each watched campaign's counters now, then again whenever they change, at most once per
/// `watch_interval`; ends when the client goes away or suivi shuts down.
async fn watch(
    api: CounterApi,
    caller: Caller,
    wanted: Vec<String>,
    sender: mpsc::Sender<Result<proto::WatchCampaignsResponse, Status>>,
) {
    let mut changes = api.figures.subscribe();
    let mut sent: HashMap<String, u64> = HashMap::new();
    let mut caller = caller;
    loop {
        // The credential as it stands now: revoked, it ends the stream; changed, it applies.
        caller = match api.gate.current(&caller) {
            Ok(current) => current,
            Err(failure) => {
                let _ = sender.send(Err(auth::grpc::unauthenticated(failure))).await;
                return;
            }
        };
        let campaigns = if wanted.is_empty() {
            api.figures.campaign_ids()
        } else {
            wanted.clone()
        };
        // A campaign out of the caller's reach is watched as one that does not exist: never sent.
        for campaign in campaigns {
            if !caller.may_read(Read::Figures, &campaign) {
                continue;
            }
            let Some(version) = api.figures.campaign_version(&campaign) else {
                continue;
            };
            if sent.get(&campaign) == Some(&version) {
                continue;
            }
            let counters = if campaign == TOTALS_CAMPAIGN {
                Some(api.figures.totals())
            } else {
                api.figures.campaign(&campaign)
            };
            let Some(counters) = counters else { continue };
            let response = proto::WatchCampaignsResponse {
                counters: Some(api.message(counters)),
            };
            if sender.send(Ok(response)).await.is_err() {
                return;
            }
            sent.insert(campaign, version);
        }
        tokio::select! {
            () = api.shutdown.cancelled() => return,
            () = sender.closed() => return,
            changed = changes.changed() => if changed.is_err() { return },
            // Nothing changed: look at the credential again all the same.
            () = tokio::time::sleep(CREDENTIAL_RECHECK) => continue,
        }
        // Throttle: changes arriving meanwhile are sent together after the interval.
        tokio::select! {
            () = api.shutdown.cancelled() => return,
            () = sender.closed() => return,
            () = tokio::time::sleep(api.watch_interval) => {}
        }
    }
}

/// The caller of a query, which needs `figures:read`.
#[allow(clippy::result_large_err)] // tonic's Status.
fn reader<T>(request: &Request<T>) -> Result<Caller, Status> {
    let caller = auth::grpc::caller(request)?;
    caller
        .require_read(Read::Figures)
        .map_err(auth::grpc::denied)?;
    Ok(caller)
}

/// The programme totals need `figures:read` with the totals.
#[allow(clippy::result_large_err)] // tonic's Status.
fn require_totals(caller: &Caller) -> Result<(), Status> {
    if caller.may_read_totals(Read::Figures) {
        return Ok(());
    }
    telemetry::record_auth_failure("permission_denied");
    Err(auth::grpc::denied(PermissionDenied {
        credential: caller.id().to_string(),
        scope: "figures:read of the programme totals",
    }))
}

fn not_found(campaign: &str) -> Status {
    Status::not_found(format!(
        "campaign {campaign:?} is neither registered nor seen"
    ))
}

/// Campaign ids as queries name them; `*` names the totals.
fn timeline_campaign(text: &str) -> String {
    if text.trim() == TOTALS_CAMPAIGN {
        TOTALS_CAMPAIGN.to_owned()
    } else {
        campaign_id(text)
    }
}

fn message(counters: CampaignCounters, forecast: Option<Forecast>) -> proto::CampaignCounters {
    proto::CampaignCounters {
        campaign: counters.campaign,
        name: counters.name,
        clicks: counters.clicks,
        unique_visitors: counters.unique_visitors,
        enrolled: counters.enrolled,
        started: counters.started,
        chapters_completed: counters.chapters_completed,
        certified: counters.certified,
        completion_rate: counters.completion_rate,
        target: counters.target,
        progress: counters.progress,
        as_of: Some(prost_types::Timestamp {
            seconds: counters.as_of.timestamp(),
            nanos: i32::try_from(counters.as_of.timestamp_subsec_nanos()).unwrap_or(0),
        }),
        registered: counters.registered,
        forecast: forecast.map(forecast_message),
    }
}

fn forecast_message(forecast: Forecast) -> proto::Forecast {
    let day = |date: chrono::NaiveDate| date.format("%Y-%m-%d").to_string();
    let (status, date, earliest, latest) = match forecast.outlook {
        Outlook::Reached { on } => (
            proto::ForecastStatus::Reached,
            day(on),
            String::new(),
            String::new(),
        ),
        Outlook::Expected {
            date,
            earliest,
            latest,
        } => (
            proto::ForecastStatus::Expected,
            day(date),
            day(earliest),
            latest.map(day).unwrap_or_default(),
        ),
        Outlook::NotAtCurrentPace => (
            proto::ForecastStatus::NotAtCurrentPace,
            String::new(),
            String::new(),
            String::new(),
        ),
    };
    proto::Forecast {
        as_of: day(forecast.as_of),
        status: status.into(),
        pace_per_week: forecast.pace_per_week,
        date,
        earliest,
        latest,
    }
}

fn day_message(day: DayCounters) -> proto::DayCounters {
    proto::DayCounters {
        day: day.day.to_string(),
        clicks: day.clicks,
        enrolled: day.enrolled,
        started: day.started,
        certified: day.certified,
    }
}
