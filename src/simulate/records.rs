//! Sending the programme as learning records (`--xapi`, `--caliper`): the simulation's events in
//! order, a batch at a time, each batch's progress events encoded into request bodies by the
//! standard's module and posted to its endpoint with the token. Clicks are no learning records:
//! they go, as the tracking links' redirector sends them, to suivi's `/v1/events` (`clicks`),
//! before the batch's records; every one must be taken. A request answered 503 or 429 is sent
//! again after its `Retry-After`; anything else but a success stops the run.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::proto::{EventKind, LearnerEvent};
use crate::simulate::generate::Simulation;
use crate::simulate::kafka;

/// A learning-record standard, as the simulator speaks it.
#[derive(Debug, Clone, Copy)]
pub struct Standard {
    /// Encodes a batch of progress events into the request bodies that carry them.
    pub encode: fn(&[&LearnerEvent]) -> Vec<Value>,
    /// The learner id suivi reads from the records of (source, learner id): a tagged click
    /// carries it, so that it names the same learner as the records.
    pub learner_id: fn(&str, &str) -> String,
}

/// Attempts of one request before giving up.
const ATTEMPTS: u32 = 20;

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct RecordSettings {
    /// The URL requests are posted to (`…/xAPI/statements`, `…/caliper`).
    pub url: String,
    /// Headers every request carries besides the token (the xAPI version).
    pub headers: Vec<(&'static str, &'static str)>,
    pub token: Option<String>,
    /// Send the token as HTTP Basic's password with this user name (as Moodle does, and as an
    /// LRS such as Ralph wants) rather than as a bearer token.
    pub basic_user: Option<String>,
    pub ca_cert: Option<std::path::PathBuf>,
    /// Events per batch.
    pub batch_size: usize,
    /// Where clicks are posted (suivi's `…/v1/events`); `None` leaves them out.
    pub clicks: Option<String>,
}

/// What was sent.
#[derive(Debug, Clone, Copy)]
pub struct RecordReport {
    /// Events sent as records.
    pub records: usize,
    /// Clicks posted to `/v1/events`, and those left out.
    pub clicks: usize,
    pub clicks_left_out: usize,
    pub requests: usize,
    pub elapsed: Duration,
}

/// Posts every event of `simulation` as the request bodies `encode` makes of each batch.
pub async fn send(
    simulation: &Simulation,
    settings: &RecordSettings,
    standard: Standard,
) -> anyhow::Result<RecordReport> {
    let mut client = reqwest::Client::builder();
    if let Some(path) = &settings.ca_cert {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
        client = client.add_root_certificate(
            reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("invalid CA certificate {}", path.display()))?,
        );
    }
    let client = client.build().context("cannot set up the HTTP client")?;
    let started = Instant::now();
    let mut report = RecordReport {
        records: 0,
        clicks: 0,
        clicks_left_out: 0,
        requests: 0,
        elapsed: Duration::ZERO,
    };
    let events: Vec<LearnerEvent> = simulation.events().collect();
    for batch in events.chunks(settings.batch_size.max(1)) {
        let (clicks, records): (Vec<&LearnerEvent>, Vec<&LearnerEvent>) = batch
            .iter()
            .partition(|event| event.kind == i32::from(EventKind::LinkClicked));
        match &settings.clicks {
            Some(url) if !clicks.is_empty() => {
                let clicks: Vec<Value> = clicks
                    .iter()
                    .map(|&click| {
                        let mut json = kafka::json(click);
                        if !click.learner_id.is_empty() {
                            json["learner_id"] =
                                (standard.learner_id)(&click.source, &click.learner_id).into();
                        }
                        json
                    })
                    .collect();
                let body = json!({ "events": clicks });
                let answer = post(&client, settings, url, &body).await?;
                let rejections = answer["rejections"].as_array().map_or(0, Vec::len);
                if rejections > 0 {
                    bail!("{url} rejected {rejections} clicks: {answer}");
                }
                report.clicks += clicks.len();
                report.requests += 1;
            }
            _ => report.clicks_left_out += clicks.len(),
        }
        report.records += records.len();
        for body in (standard.encode)(&records) {
            post(&client, settings, &settings.url, &body).await?;
            report.requests += 1;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Posts one body to `url` until it is taken; gives the answer's JSON (`null` when it has
/// none).
async fn post(
    client: &reqwest::Client,
    settings: &RecordSettings,
    url: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let body = serde_json::to_vec(body).context("cannot encode a request")?;
    for attempt in 1..=ATTEMPTS {
        let mut request = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone());
        for (name, value) in &settings.headers {
            request = request.header(*name, *value);
        }
        match (&settings.token, &settings.basic_user) {
            (Some(token), Some(user)) => request = request.basic_auth(user, Some(token)),
            (Some(token), None) => request = request.bearer_auth(token),
            (None, _) => {}
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        if status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        let text = response.text().await.unwrap_or_default();
        let retryable = status == reqwest::StatusCode::SERVICE_UNAVAILABLE
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        if !retryable || attempt == ATTEMPTS {
            let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
                " (give a token with --token or SUIVI_TOKEN)"
            } else {
                ""
            };
            bail!("{url} answered {status}: {text}{hint}");
        }
        tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1))).await;
    }
    bail!("{url} did not take the records")
}
