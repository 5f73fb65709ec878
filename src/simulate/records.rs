//! Sending the programme as learning records (`--xapi`, `--caliper`): the simulation's events in
//! order, a batch at a time, each batch encoded into request bodies by the standard's module and
//! posted to its endpoint with the token. A request answered 503 or 429 is sent again after its
//! `Retry-After`; anything else but a success stops the run.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::proto::{EventKind, LearnerEvent};
use crate::simulate::generate::Simulation;

/// Encodes a batch of events into the request bodies that carry them.
pub type Encode = fn(&[LearnerEvent]) -> Vec<Value>;

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
}

/// What was sent.
#[derive(Debug, Clone, Copy)]
pub struct RecordReport {
    /// Events sent as records (clicks are not learning records).
    pub records: usize,
    pub clicks_left_out: usize,
    pub requests: usize,
    pub elapsed: Duration,
}

/// Posts every event of `simulation` as the request bodies `encode` makes of each batch.
pub async fn send(
    simulation: &Simulation,
    settings: &RecordSettings,
    encode: Encode,
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
        clicks_left_out: 0,
        requests: 0,
        elapsed: Duration::ZERO,
    };
    let events: Vec<LearnerEvent> = simulation.events().collect();
    for batch in events.chunks(settings.batch_size.max(1)) {
        let clicks = batch
            .iter()
            .filter(|event| event.kind == i32::from(EventKind::LinkClicked))
            .count();
        report.clicks_left_out += clicks;
        report.records += batch.len() - clicks;
        for body in encode(batch) {
            post(&client, settings, &body).await?;
            report.requests += 1;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Posts one body until it is taken.
async fn post(
    client: &reqwest::Client,
    settings: &RecordSettings,
    body: &Value,
) -> anyhow::Result<()> {
    let url = &settings.url;
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
            return Ok(());
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
