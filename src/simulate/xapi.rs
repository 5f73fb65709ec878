//! `suivi simulate --xapi URL`: the programme sent as LMSs send it, as xAPI statements to an
//! LRS endpoint (suivi's `/xAPI`). Each learner is an account of its platform
//! (`https://<source>`, whose host is the source); the course and its chapters are the activities
//! of [`COURSE`] and [`chapter_activity`], which the service's `[xapi]` table must map
//! ([`mapping_toml`] prints it). Clicks are not learning records: they are left out.
//!
//! Statements name their campaign with the `urn:suivi:campaign` extension, except on a
//! GendForm3.0-like platform (source `gendform3`), which, like the Gendarmerie's LMS, names it
//! only on the registration (the learner came through the partner's tracking link): its other
//! statements name none and count under the learner's campaign by attribution.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::proto::{EventKind, LearnerEvent};
use crate::simulate::generate::Simulation;
use crate::standards::CAMPAIGN_EXTENSION;

/// The simulated course's activity id.
pub const COURSE: &str = "https://objectif-ia.example/course";
/// The platform whose statements name their campaign on the registration only.
pub const NAMES_CAMPAIGN_ON_REGISTRATION_ONLY: &str = "gendform3";
/// Attempts of one request before giving up (503 and 429 are retried after their Retry-After).
const ATTEMPTS: u32 = 20;

/// The activity id of chapter `chapter`.
pub fn chapter_activity(chapter: u32) -> String {
    format!("{COURSE}/chapter/{chapter}")
}

/// The `[xapi]` settings a service needs to count the simulated statements (`chapters`
/// chapters).
pub fn mapping_toml(chapters: u8) -> String {
    let mut text = format!("[xapi]\ncourse = [\"{COURSE}\"]\n[xapi.chapters]\n");
    for chapter in 1..=u32::from(chapters) {
        text.push_str(&format!("\"{}\" = {chapter}\n", chapter_activity(chapter)));
    }
    text
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct XapiSettings {
    /// The LRS endpoint, e.g. `http://127.0.0.1:8080/xAPI`.
    pub endpoint: String,
    pub token: Option<String>,
    pub ca_cert: Option<std::path::PathBuf>,
    /// Statements per request.
    pub batch_size: usize,
}

/// What was sent.
#[derive(Debug, Clone, Copy)]
pub struct XapiReport {
    pub statements: usize,
    /// Clicks, which are not learning records, left out.
    pub clicks_left_out: usize,
    pub elapsed: Duration,
}

/// The statement an LMS would send for `event`, or `None` for a click.
pub fn statement(event: &LearnerEvent) -> Option<Value> {
    let kind = EventKind::try_from(event.kind).ok()?;
    let course = json!({
        "id": COURSE,
        "objectType": "Activity",
        "definition": {"type": "http://adlnet.gov/expapi/activities/course"},
    });
    let (verb, object) = match kind {
        EventKind::Enrolled => ("http://adlnet.gov/expapi/verbs/registered", course),
        EventKind::CourseStarted => ("http://adlnet.gov/expapi/verbs/launched", course),
        EventKind::ChapterCompleted => (
            "http://adlnet.gov/expapi/verbs/completed",
            json!({
                "id": chapter_activity(event.chapter),
                "objectType": "Activity",
                "definition": {"type": "http://adlnet.gov/expapi/activities/module"},
            }),
        ),
        EventKind::Certified => ("http://adlnet.gov/expapi/verbs/completed", course),
        EventKind::LinkClicked | EventKind::Unspecified => return None,
    };
    let at = event.occurred_at.as_ref().and_then(|at| {
        DateTime::<Utc>::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
    })?;
    let names_campaign = !event.campaign.is_empty()
        && (event.source != NAMES_CAMPAIGN_ON_REGISTRATION_ONLY || kind == EventKind::Enrolled);
    let mut context = json!({"contextActivities": {"parent": [{"id": COURSE}]}});
    if names_campaign {
        context["extensions"] = json!({ CAMPAIGN_EXTENSION: event.campaign });
    }
    Some(json!({
        "id": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, event.event_id.as_bytes()).to_string(),
        "actor": {
            "objectType": "Agent",
            "account": {"homePage": format!("https://{}", event.source), "name": event.learner_id},
        },
        "verb": {"id": verb},
        "object": object,
        "timestamp": at.to_rfc3339(),
        "context": context,
    }))
}

/// Posts every statement of `simulation`, `batch_size` a request, in order; a request answered
/// 503 or 429 is sent again after its `Retry-After`, anything else but 200 stops the run.
pub async fn send(simulation: &Simulation, settings: &XapiSettings) -> anyhow::Result<XapiReport> {
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
    let url = format!("{}/statements", settings.endpoint.trim_end_matches('/'));
    let started = Instant::now();
    let mut statements = Vec::with_capacity(settings.batch_size);
    let mut report = XapiReport {
        statements: 0,
        clicks_left_out: 0,
        elapsed: Duration::ZERO,
    };
    let mut events = simulation.events().peekable();
    while events.peek().is_some() {
        statements.clear();
        for event in events.by_ref() {
            match statement(&event) {
                Some(statement) => statements.push(statement),
                None => report.clicks_left_out += 1,
            }
            if statements.len() == settings.batch_size {
                break;
            }
        }
        if statements.is_empty() {
            continue;
        }
        post(&client, &url, settings.token.as_deref(), &statements).await?;
        report.statements += statements.len();
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Posts one batch until it is taken.
async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    statements: &[Value],
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(statements).context("cannot encode the statements")?;
    for attempt in 1..=ATTEMPTS {
        let mut request = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-experience-api-version", "1.0.3")
            .body(body.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token);
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
    bail!("{url} did not take the statements")
}
