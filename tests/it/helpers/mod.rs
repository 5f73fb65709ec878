//! The harness every integration test shares: [`spawn_app`] starts the real service in-process on
//! 127.0.0.1:0 with its own data directory, and [`TestApp`] talks to it only through real clients
//! (tonic for gRPC, reqwest for HTTP). [`event`] builds learner events that can be sent over
//! either transport. Waits that guard against a hung service use the wall clock, never tokio's,
//! so they keep their meaning in tests that pause tokio's clock. Tests that run the real binary
//! (a kill -9, an exit code, memory, a deployment's environment) use [`Suivi`] from `binary`:
//! one harness for every test of the process.

mod binary;
pub mod browser;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use suivi::app::Faults;
use suivi::config::{Secret, Settings};
use suivi::proto;
use suivi::proto::counter_service_client::CounterServiceClient;
use suivi::proto::ingest_service_client::IngestServiceClient;
use suivi::snapshot::file::Record;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub use binary::Suivi;

pub use suivi::proto::EventKind as Kind;

/// The pseudonymisation key of every test service, so no test depends on a generated one.
pub const PSEUDONYM_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// How long a test waits for something the service should do promptly, in wall-clock time.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A running suivi. Every test ends with [`TestApp::stop`], which checks that suivi stops cleanly
/// before its data dir is removed.
#[derive(Debug)]
pub struct TestApp {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub data_dir: TempDir,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    running: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Starts suivi with the test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts suivi with the test settings as changed by `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("a temporary data dir");
    spawn_app_in(data_dir, tweak).await
}

/// Starts suivi with the test settings as changed by `tweak`, without waiting until it is
/// ready.
pub async fn start_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("a temporary data dir");
    start_app_in(data_dir, tweak).await.0
}

/// Starts suivi with the test settings as changed by `tweak`, once ready, with the faults the
/// test may cause in it.
pub async fn spawn_app_with_faults(tweak: impl FnOnce(&mut Settings)) -> (TestApp, Faults) {
    let data_dir = tempfile::tempdir().expect("a temporary data dir");
    let (app, faults) = start_app_in(data_dir, tweak).await;
    app.wait_until_ready().await;
    (app, faults)
}

/// Starts suivi on `data_dir`, which may hold the state of an earlier run.
async fn spawn_app_in(data_dir: TempDir, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let (app, _faults) = start_app_in(data_dir, tweak).await;
    app.wait_until_ready().await;
    app
}

/// Starts suivi on `data_dir` without waiting until it is ready.
async fn start_app_in(data_dir: TempDir, tweak: impl FnOnce(&mut Settings)) -> (TestApp, Faults) {
    let mut settings = test_settings(data_dir.path());
    tweak(&mut settings);
    let settings = settings.validated().expect("the test settings are valid");
    let app = suivi::app::bind(settings).await.expect("suivi binds");
    let faults = app.faults();
    let grpc_addr = app.grpc_addr();
    let http_addr = app.http_addr();
    assert_ne!(grpc_addr.port(), 0, "grpc_addr() gives the bound port");
    assert_ne!(http_addr.port(), 0, "http_addr() gives the bound port");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run(shutdown.clone().cancelled_owned()));
    let app = TestApp {
        grpc_addr,
        http_addr,
        data_dir,
        http: reqwest::Client::new(),
        shutdown,
        running: Some(running),
    };
    (app, faults)
}

/// The settings of a test service: both APIs on free ports of 127.0.0.1, data in `data_dir`,
/// a fixed pseudonymisation key, and a snapshot interval long enough never to fire on its own.
pub fn test_settings(data_dir: &Path) -> Settings {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    Settings {
        grpc_addr: loopback,
        http_addr: loopback,
        data_dir: data_dir.to_path_buf(),
        pseudonym_key: Some(secret(PSEUDONYM_KEY)),
        snapshot_interval: Duration::from_secs(3600),
        shutdown_grace: Duration::from_secs(5),
        ..Settings::default()
    }
}

/// A [`Secret`] holding `text`. `Secret` has no public constructor; it deserializes from a string.
pub fn secret(text: &str) -> Secret {
    serde_json::from_value(json!(text)).expect("a Secret deserializes from a JSON string")
}

impl TestApp {
    /// A gRPC channel to the service.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("a valid URI")
            .connect()
            .await
            .expect("connects to the gRPC API")
    }

    pub async fn ingest_client(&self) -> IngestServiceClient<Channel> {
        IngestServiceClient::new(self.channel().await)
    }

    pub async fn counter_client(&self) -> CounterServiceClient<Channel> {
        CounterServiceClient::new(self.channel().await)
    }

    /// Sends `events` in one gRPC `Ingest` request, which must succeed.
    pub async fn ingest(&self, events: &[Ev]) -> proto::IngestResponse {
        self.ingest_client()
            .await
            .ingest(proto_batch(events))
            .await
            .expect("Ingest succeeds")
            .into_inner()
    }

    /// Sends `events` in one gRPC `Ingest` request with the bearer `token`, which must succeed.
    pub async fn ingest_as(&self, token: &str, events: &[Ev]) -> proto::IngestResponse {
        let mut request = tonic::Request::new(proto_batch(events));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("a metadata value"),
        );
        self.ingest_client()
            .await
            .ingest(request)
            .await
            .expect("Ingest succeeds")
            .into_inner()
    }

    /// Posts `body` as JSON to `/v1/events`.
    pub async fn post_events(&self, body: &Value) -> (StatusCode, Value) {
        self.post_raw_events(body.to_string()).await
    }

    /// Posts `body`, whatever it is, to `/v1/events`; the answer must be JSON.
    pub async fn post_raw_events(&self, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url("/v1/events"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST /v1/events gets an answer");
        json_answer(response).await
    }

    /// GETs `path`; the answer must be JSON.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        json_answer(self.get_response(path).await).await
    }

    /// GETs `path` and returns the answer's body as text.
    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let response = self.get_response(path).await;
        let status = response.status();
        let text = response.text().await.expect("a text body");
        (status, text)
    }

    pub async fn get_response(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path} gets an answer: {error}"))
    }

    /// The counters of `campaign` as `GET /v1/campaigns/{campaign}` answers them, which must be 200.
    pub async fn campaign_json(&self, campaign: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/campaigns/{campaign}")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "GET /v1/campaigns/{campaign}: {body}"
        );
        body
    }

    /// The programme totals as `GET /v1/totals` answers them.
    pub async fn totals_json(&self) -> Value {
        let (status, body) = self.get("/v1/totals").await;
        assert_eq!(status, StatusCode::OK, "GET /v1/totals: {body}");
        body
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    /// Where the file sink writes its snapshots.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.data_dir.path().join("snapshots")
    }

    /// Every record of every snapshot file, oldest file first.
    pub fn snapshot_records(&self) -> Vec<Record> {
        read_snapshot_dir(&self.snapshot_dir())
    }

    /// Shuts suivi down and checks that it stopped cleanly.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        let running = self.running.take().expect("stop() is called once");
        let result = within(PATIENCE, running)
            .await
            .expect("suivi stops within the test's patience")
            .expect("the run task does not panic");
        if let Err(error) = result {
            panic!("suivi stopped with an error: {error:#}");
        }
    }

    /// Stops suivi (unless it is stopped already) and starts it again, with the test settings,
    /// on the same data directory.
    pub async fn restart(self) -> TestApp {
        self.restart_with(|_| {}).await
    }

    /// Stops suivi (unless it is stopped already) and starts it again on the same data
    /// directory, with the test settings as changed by `tweak`.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        if self.running.is_some() {
            self.stop().await;
        }
        let placeholder = tempfile::tempdir().expect("a temporary dir");
        let data_dir = std::mem::replace(&mut self.data_dir, placeholder);
        spawn_app_in(data_dir, tweak).await
    }

    /// Stops suivi (unless it is stopped already) and starts it again on the same data
    /// directory, with the test settings as changed by `tweak`, without waiting until it is
    /// ready.
    pub async fn restart_unready_with(mut self, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        if self.running.is_some() {
            self.stop().await;
        }
        let placeholder = tempfile::tempdir().expect("a temporary dir");
        let data_dir = std::mem::replace(&mut self.data_dir, placeholder);
        start_app_in(data_dir, tweak).await.0
    }

    /// Waits until suivi ends on its own (not asked to stop), and answers how.
    pub async fn ended(&mut self) -> anyhow::Result<()> {
        let running = self.running.take().expect("suivi runs");
        within(PATIENCE, running)
            .await
            .expect("suivi ends within the test's patience")
            .expect("the run task does not panic")
    }

    pub async fn wait_until_ready(&self) {
        self.wait_until_ready_within(PATIENCE).await;
    }

    /// Waits until `/readyz` says ready, at most `patience`.
    pub async fn wait_until_ready_within(&self, patience: Duration) {
        let deadline = std::time::Instant::now() + patience;
        loop {
            if let Ok(response) = self.http.get(self.url("/readyz")).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "suivi is not ready after {patience:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Dropped while running, suivi may still write to its data dir while the dir is removed,
        // and leave files behind: every test stops its service.
        if self.running.is_some() && !std::thread::panicking() {
            panic!("a test must stop() its TestApp before the end");
        }
    }
}

async fn json_answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("the answer ({status}) is not JSON ({error}): {text:?}"));
    (status, body)
}

/// Runs `future` for at most `limit` of wall-clock time (a paused tokio clock does not shorten
/// or stretch it); `None` when it did not finish in time.
pub async fn within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let (expired, expiry) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        let _ = expired.send(());
    });
    tokio::select! {
        output = future => Some(output),
        _ = expiry => None,
    }
}

/// Every record of every `.jsonl` file in `dir`, files in name (that is, day) order.
pub fn read_snapshot_dir(dir: &Path) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable snapshot dir").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|file| suivi::snapshot::file::read(file).expect("a readable snapshot file"))
        .collect()
}

/// A snapshot record as JSON, without the times that change from run to run (`taken_at`,
/// `as_of`), for comparison with an expected value.
pub fn record_json(record: &Record) -> Value {
    let mut value = serde_json::to_value(record).expect("a record serializes");
    let object = value.as_object_mut().expect("a record is an object");
    assert!(
        object.remove("taken_at").is_some_and(|at| at.is_string()),
        "every record has a taken_at"
    );
    object.remove("as_of");
    value
}

/// Removes what depends on when counters are asked for from a CampaignCounters JSON object:
/// `as_of`, after checking it is an RFC 3339 time, and the `forecast` (made as of today) of a
/// campaign with a target, after checking it says it was made today or yesterday.
pub fn without_as_of(mut counters: Value) -> Value {
    let object = counters
        .as_object_mut()
        .unwrap_or_else(|| panic!("counters are a JSON object"));
    let as_of = object.remove("as_of").expect("counters have as_of");
    let as_of = as_of.as_str().expect("as_of is a string");
    DateTime::parse_from_rfc3339(as_of).expect("as_of is RFC 3339");
    if let Some(forecast) = object.remove("forecast") {
        assert!(!object["target"].is_null(), "a forecast only with a target");
        let made: NaiveDate = forecast["as_of"]
            .as_str()
            .and_then(|day| day.parse().ok())
            .unwrap_or_else(|| panic!("a forecast says when it was made: {forecast}"));
        assert!(
            (made - Utc::now().date_naive()).num_days().abs() <= 1,
            "{forecast}"
        );
        assert!(forecast["status"].is_string(), "{forecast}");
    }
    counters
}

/// A gRPC CampaignCounters message in the shape of the HTTP JSON, without `as_of`, so that both
/// transports are compared to one expected value.
pub fn counters_json(counters: &proto::CampaignCounters) -> Value {
    assert!(counters.as_of.is_some(), "counters carry as_of");
    json!({
        "campaign": counters.campaign,
        "name": counters.name,
        "clicks": counters.clicks,
        "unique_visitors": counters.unique_visitors,
        "enrolled": counters.enrolled,
        "started": counters.started,
        "chapters_completed": counters.chapters_completed,
        "certified": counters.certified,
        "completion_rate": counters.completion_rate,
        "target": counters.target,
        "progress": counters.progress,
        "registered": counters.registered,
    })
}

/// A gRPC DayCounters message in the shape of the HTTP JSON.
pub fn day_json(day: &proto::DayCounters) -> Value {
    json!({
        "day": day.day,
        "clicks": day.clicks,
        "enrolled": day.enrolled,
        "started": day.started,
        "certified": day.certified,
    })
}

/// The expected JSON of one campaign's counters (without `as_of`).
#[derive(Debug, Clone)]
pub struct Funnel {
    pub clicks: u64,
    pub unique_visitors: u64,
    pub enrolled: u64,
    pub started: u64,
    pub chapters_completed: Vec<u64>,
    pub certified: u64,
}

impl Funnel {
    /// Nothing counted, in a course of `chapter_count` chapters.
    pub fn zero(chapter_count: usize) -> Funnel {
        Funnel {
            clicks: 0,
            unique_visitors: 0,
            enrolled: 0,
            started: 0,
            chapters_completed: vec![0; chapter_count],
            certified: 0,
        }
    }

    /// The counters JSON of campaign `campaign` named `name`, with `target` when registered.
    #[allow(clippy::cast_precision_loss)] // Test counts are tiny.
    pub fn json(&self, campaign: &str, name: &str, target: Option<u64>, registered: bool) -> Value {
        let completion_rate = if self.enrolled == 0 {
            0.0
        } else {
            self.certified as f64 / self.enrolled as f64
        };
        json!({
            "campaign": campaign,
            "name": name,
            "clicks": self.clicks,
            "unique_visitors": self.unique_visitors,
            "enrolled": self.enrolled,
            "started": self.started,
            "chapters_completed": self.chapters_completed,
            "certified": self.certified,
            "completion_rate": completion_rate,
            "target": target,
            "progress": target.map(|target| self.certified as f64 / target as f64),
            "registered": registered,
        })
    }
}

/// A learner event under construction, sendable over gRPC ([`Ev::proto`]) and HTTP ([`Ev::json`]).
#[derive(Debug, Clone)]
pub struct Ev {
    pub event_id: String,
    pub kind: Kind,
    pub campaign: String,
    pub source: String,
    pub learner_id: String,
    pub visitor_id: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub chapter: u32,
}

/// An event `id` of `kind`, from the course platform, on 2020-10-06 at 10:00 UTC, without a
/// campaign or learner.
pub fn event(id: &str, kind: Kind) -> Ev {
    Ev {
        event_id: id.to_owned(),
        kind,
        campaign: String::new(),
        source: "openclassrooms".to_owned(),
        learner_id: String::new(),
        visitor_id: String::new(),
        occurred_at: Some(instant("2020-10-06T10:00:00Z")),
        chapter: 0,
    }
}

/// Events `prefix-0`… enrolling learners `prefix-learner-0`… in `campaign`.
pub fn enrolments(prefix: &str, campaign: &str, count: usize) -> Vec<Ev> {
    (0..count)
        .map(|i| {
            event(&format!("{prefix}-{i}"), Kind::Enrolled)
                .campaign(campaign)
                .learner(&format!("{prefix}-learner-{i}"))
        })
        .collect()
}

/// An RFC 3339 instant.
pub fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|error| panic!("{text:?} is RFC 3339: {error}"))
        .to_utc()
}

impl Ev {
    pub fn campaign(mut self, campaign: &str) -> Ev {
        campaign.clone_into(&mut self.campaign);
        self
    }

    pub fn source(mut self, source: &str) -> Ev {
        source.clone_into(&mut self.source);
        self
    }

    pub fn learner(mut self, learner_id: &str) -> Ev {
        learner_id.clone_into(&mut self.learner_id);
        self
    }

    pub fn visitor(mut self, visitor_id: &str) -> Ev {
        visitor_id.clone_into(&mut self.visitor_id);
        self
    }

    /// Occurred at `text`, RFC 3339.
    pub fn at(self, text: &str) -> Ev {
        self.at_instant(instant(text))
    }

    pub fn at_instant(mut self, occurred_at: DateTime<Utc>) -> Ev {
        self.occurred_at = Some(occurred_at);
        self
    }

    /// Occurred at 10:00 UTC on `day` (YYYY-MM-DD): the same day in Paris.
    pub fn day(self, day: &str) -> Ev {
        let date: NaiveDate = day.parse().expect("a YYYY-MM-DD day");
        let at = date
            .and_hms_opt(10, 0, 0)
            .expect("10:00 is a time")
            .and_utc();
        self.at_instant(at)
    }

    pub fn chapter(mut self, chapter: u32) -> Ev {
        self.chapter = chapter;
        self
    }

    pub fn proto(&self) -> proto::LearnerEvent {
        proto::LearnerEvent {
            event_id: self.event_id.clone(),
            kind: self.kind as i32,
            campaign: self.campaign.clone(),
            source: self.source.clone(),
            learner_id: self.learner_id.clone(),
            visitor_id: self.visitor_id.clone(),
            occurred_at: self.occurred_at.map(|at| prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: i32::try_from(at.timestamp_subsec_nanos()).expect("nanos fit"),
            }),
            chapter: self.chapter,
        }
    }

    /// The event as a JSON object with the HTTP field names; empty fields are left out.
    pub fn json(&self) -> Value {
        let mut object = serde_json::Map::new();
        let mut text = |name: &str, value: &str| {
            if !value.is_empty() {
                object.insert(name.to_owned(), json!(value));
            }
        };
        text("event_id", &self.event_id);
        text("kind", kind_name(self.kind));
        text("campaign", &self.campaign);
        text("source", &self.source);
        text("learner_id", &self.learner_id);
        text("visitor_id", &self.visitor_id);
        if let Some(at) = self.occurred_at {
            object.insert("occurred_at".to_owned(), json!(at.to_rfc3339()));
        }
        if self.chapter != 0 {
            object.insert("chapter".to_owned(), json!(self.chapter));
        }
        Value::Object(object)
    }
}

/// The JSON name of `kind`; empty for the unspecified kind.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Unspecified => "",
        Kind::LinkClicked => "link_clicked",
        Kind::Enrolled => "enrolled",
        Kind::CourseStarted => "course_started",
        Kind::ChapterCompleted => "chapter_completed",
        Kind::Certified => "certified",
    }
}

pub fn proto_batch(events: &[Ev]) -> proto::IngestRequest {
    proto::IngestRequest {
        events: events.iter().map(Ev::proto).collect(),
    }
}

pub fn stream_batch(events: &[Ev]) -> proto::IngestStreamRequest {
    proto::IngestStreamRequest {
        events: events.iter().map(Ev::proto).collect(),
    }
}

pub fn json_batch(events: &[Ev]) -> Value {
    Value::Array(events.iter().map(Ev::json).collect())
}

/// The (index, code) of each rejection, and a check that each has a message a person can act on.
pub fn rejection_codes(rejections: &[proto::Rejection]) -> Vec<(u32, &str)> {
    for rejection in rejections {
        assert!(
            !rejection.message.is_empty(),
            "rejection {rejection:?} has a message"
        );
    }
    rejections
        .iter()
        .map(|rejection| (rejection.index, rejection.code.as_str()))
        .collect()
}

/// The same for an HTTP answer's `rejections`.
pub fn json_rejection_codes(answer: &Value) -> Vec<(u64, String)> {
    answer["rejections"]
        .as_array()
        .unwrap_or_else(|| panic!("the answer has rejections: {answer}"))
        .iter()
        .map(|rejection| {
            let message = rejection["message"].as_str().expect("a message string");
            assert!(!message.is_empty(), "rejection {rejection} has a message");
            (
                rejection["index"].as_u64().expect("a numeric index"),
                rejection["code"]
                    .as_str()
                    .expect("a code string")
                    .to_owned(),
            )
        })
        .collect()
}

/// Checks that an HTTP answer is the error `code`, with a message.
#[track_caller]
pub fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str) {
    let (actual_status, body) = answer;
    assert_eq!(*actual_status, status, "{body}");
    assert_eq!(body["code"], json!(code), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "the error has a message: {body}"
    );
    assert_eq!(
        body.as_object().map(serde_json::Map::len),
        Some(2),
        "errors are exactly {{code, message}}: {body}"
    );
}
