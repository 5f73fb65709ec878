//! Configuration: one typed [`Settings`] struct, loaded once from a TOML file, `SUIVI_…`
//! environment variables and command-line flags, in rising priority, and validated before
//! anything binds. A wrong value stops suivi with a message that names the setting. Secrets
//! (the pseudonymisation key, the PostgreSQL URL) never reach Debug output or logs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono_tz::Tz;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::event::MAX_CHAPTER_COUNT;

/// The default gRPC listen address.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
/// The default HTTP listen address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// The default data directory, relative to where suivi runs.
pub const DEFAULT_DATA_DIR: &str = "./suivi-data";
/// The default time zone of timeline days.
pub const DEFAULT_TIME_ZONE: &str = "Europe/Paris";
/// The default number of chapters of the course.
pub const DEFAULT_CHAPTER_COUNT: u8 = 12;
/// The default most events in one ingest request.
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 10_000;
/// The default most bytes in one ingest request (gRPC message or HTTP body).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// The default most campaigns missing from the registry that get counters of their own.
pub const DEFAULT_MAX_UNREGISTERED_CAMPAIGNS: usize = 1_000;
/// The default most events accepted for processing but not yet answered.
pub const DEFAULT_INGEST_QUEUE_EVENTS: usize = 200_000;
/// The default wait for room in the ingest queue before answering "overloaded".
pub const DEFAULT_INGEST_QUEUE_TIMEOUT: Duration = Duration::from_secs(2);
/// The default interval between snapshots.
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(10);
/// The default time given to in-flight work at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// The default interval between fsyncs under `fsync = "interval"`.
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_millis(200);
/// The default interval between checkpoints.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// The default journal growth that triggers a checkpoint before the interval.
pub const DEFAULT_CHECKPOINT_JOURNAL_BYTES: u64 = 1024 * 1024 * 1024;
/// How long opening a connection may take when the URL does not say (`connect_timeout`).
pub const DEFAULT_POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default most campaigns whose business figures are exported as metrics.
pub const DEFAULT_MAX_CAMPAIGN_METRICS: usize = 200;
/// The default least time between two pushes of one campaign to a watcher.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// The default longest wait between two attempts on a failing snapshot sink.
pub const DEFAULT_SNAPSHOT_RETRY_MAX: Duration = Duration::from_secs(60);
/// The default most connections open at once on each listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// The default time a new connection has to send its HTTP/2 preface or its request headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default interval between HTTP/2 keep-alive pings.
pub const DEFAULT_HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// The default wait for a keep-alive ping's answer before the connection is closed.
pub const DEFAULT_HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default most report requests answered at once.
pub const DEFAULT_MAX_CONCURRENT_REPORTS: usize = 4;
/// The default most ingest requests (gRPC calls and streams, HTTP posts) in flight at once.
pub const DEFAULT_MAX_CONCURRENT_INGEST_REQUESTS: usize = 64;

/// The most campaigns one instance can hold, registered, unregistered, `direct` and
/// `unregistered` together (the aggregate numbers them in 16 bits).
pub const MAX_CAMPAIGNS: usize = crate::aggregate::CAMPAIGN_SLOTS;
/// The largest `ingest_queue_events`: a group of queued events is journaled as one record, and
/// the journal refuses records over 1 GiB (a stored event is at most about 200 bytes).
pub const MAX_INGEST_QUEUE_EVENTS: usize = 2_000_000;
/// The default topic learner events are consumed from.
pub const DEFAULT_KAFKA_TOPIC: &str = "learner-events";
/// The default consumer group.
pub const DEFAULT_KAFKA_GROUP: &str = "suivi";
/// The default dead-letter topic, `{topic}` standing for the topic of the message.
pub const DEFAULT_KAFKA_DEAD_LETTER_TOPIC: &str = "{topic}.dlq";
/// The default most messages in one batch read from Kafka.
pub const DEFAULT_KAFKA_BATCH_EVENTS: usize = 5000;

/// Every setting of `suivi serve`. Each is a TOML key, a `SUIVI_<KEY>` environment variable
/// and a `--<key>` flag.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// Where the HTTP API (JSON, /metrics, /healthz, /readyz) listens.
    pub http_addr: SocketAddr,
    /// Where suivi keeps its key, snapshots and (later) journal.
    pub data_dir: PathBuf,
    /// The campaign registry file; the embedded one when unset.
    pub campaigns: Option<PathBuf>,
    /// The IANA time zone in which timeline days are counted.
    pub time_zone: String,
    /// The number of chapters of the course (1 to 32).
    pub chapter_count: u8,
    /// The most events in one ingest request.
    pub max_batch_events: usize,
    /// The most bytes in one ingest request.
    pub max_request_bytes: usize,
    /// The most campaigns missing from the registry that get counters of their own; events of
    /// further ones count under the campaign `unregistered`. Registered campaigns, `direct` and
    /// `unregistered` are always counted.
    pub max_unregistered_campaigns: usize,
    /// The most events in the ingest queue (accepted for processing, not yet answered).
    pub ingest_queue_events: usize,
    /// How long a request waits for room in the ingest queue before being told to retry.
    #[serde(with = "humantime_serde")]
    pub ingest_queue_timeout: Duration,
    /// How often changed counters are written to the snapshot sinks.
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    /// The longest wait between two attempts on a failing snapshot sink (the backoff doubles
    /// from `snapshot_interval` up to this).
    #[serde(with = "humantime_serde")]
    pub snapshot_retry_max: Duration,
    /// The PostgreSQL database snapshots also go to (and reports are read from), as a URL such
    /// as `postgres://user:password@host:5432/database`; PostgreSQL is off when unset. A secret.
    pub postgres_url: Option<Secret>,
    /// Kafka's bootstrap servers (`host:port,host:port`); Kafka is off when unset.
    pub kafka_brokers: Option<String>,
    /// The topics learner events are consumed from, comma-separated.
    pub kafka_topics: String,
    /// The consumer group.
    pub kafka_group: String,
    /// Where a message that is not a valid event goes; `{topic}` is its topic.
    pub kafka_dead_letter_topic: String,
    /// The most messages read into one batch for the aggregate.
    pub kafka_batch_events: usize,
    /// More librdkafka client properties for the consumer and the dead-letter producer, such as
    /// `security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`,
    /// `ssl.ca.location`. Secrets: never logged.
    pub kafka_options: BTreeMap<String, Secret>,
    /// Where every campaign's report is written at the end of each half-quarter; off when unset.
    pub reports_dir: Option<PathBuf>,
    /// The language of scheduled reports: `fr` or `en`.
    pub report_lang: Lang,
    /// How long shutdown waits for in-flight work before giving up.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// The least time between two pushes of one campaign to a WatchCampaigns client.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
    /// The most connections open at once on each listener (gRPC, HTTP); one more is closed at
    /// once.
    pub max_connections: usize,
    /// How long a new connection has to send its HTTP/2 preface (gRPC) or its first bytes (HTTP),
    /// and an HTTP/1 request its headers, before it is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// The interval between keep-alive pings on an HTTP/2 connection (both listeners).
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    /// How long a keep-alive ping may go unanswered before the connection is closed.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,
    /// The most report requests (`/v1/reports`, `/v1/campaigns/{campaign}/report`) answered at
    /// once; more are answered 503 with Retry-After.
    pub max_concurrent_reports: usize,
    /// The most ingest requests in flight at once: gRPC `Ingest` calls and `IngestStream`
    /// streams, and HTTP `POST /v1/events`, together. Each may buffer up to twice
    /// `max_request_bytes`; more are refused (UNAVAILABLE / 503) before their body is read.
    pub max_concurrent_ingest_requests: usize,
    /// The pseudonymisation key, 64 hex digits; generated once and kept in the data dir when
    /// unset.
    pub pseudonym_key: Option<Secret>,
    /// When journal appends are forced to disk: `always` (before every acknowledgement) or
    /// `interval` (every `fsync_interval`; a crash may lose what was acknowledged meanwhile).
    pub fsync: Fsync,
    /// The interval between fsyncs under `fsync = "interval"`.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// How often the whole state is checkpointed (and the journal before it removed).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Journal growth (bytes) that triggers a checkpoint before the interval.
    pub checkpoint_journal_bytes: u64,
    /// The size at which a journal segment is closed and a new one started.
    pub journal_segment_bytes: u64,
    /// The most registered campaigns whose figures (clicks, enrolled, started, certified) are
    /// exported as per-campaign metrics; the label's cardinality stays bounded.
    pub max_campaign_metrics: usize,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
}

/// The log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// The journal's fsync policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    Always,
    Interval,
}

/// A secret string: shown as `[redacted]` in Debug output.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            campaigns: None,
            time_zone: DEFAULT_TIME_ZONE.to_owned(),
            chapter_count: DEFAULT_CHAPTER_COUNT,
            max_batch_events: DEFAULT_MAX_BATCH_EVENTS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_unregistered_campaigns: DEFAULT_MAX_UNREGISTERED_CAMPAIGNS,
            ingest_queue_events: DEFAULT_INGEST_QUEUE_EVENTS,
            ingest_queue_timeout: DEFAULT_INGEST_QUEUE_TIMEOUT,
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
            snapshot_retry_max: DEFAULT_SNAPSHOT_RETRY_MAX,
            postgres_url: None,
            kafka_brokers: None,
            kafka_topics: DEFAULT_KAFKA_TOPIC.to_owned(),
            kafka_group: DEFAULT_KAFKA_GROUP.to_owned(),
            kafka_dead_letter_topic: DEFAULT_KAFKA_DEAD_LETTER_TOPIC.to_owned(),
            kafka_batch_events: DEFAULT_KAFKA_BATCH_EVENTS,
            kafka_options: BTreeMap::new(),
            reports_dir: None,
            report_lang: Lang::Fr,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            watch_interval: DEFAULT_WATCH_INTERVAL,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            http2_keepalive_interval: DEFAULT_HTTP2_KEEPALIVE_INTERVAL,
            http2_keepalive_timeout: DEFAULT_HTTP2_KEEPALIVE_TIMEOUT,
            max_concurrent_reports: DEFAULT_MAX_CONCURRENT_REPORTS,
            max_concurrent_ingest_requests: DEFAULT_MAX_CONCURRENT_INGEST_REQUESTS,
            pseudonym_key: None,
            fsync: Fsync::Always,
            fsync_interval: DEFAULT_FSYNC_INTERVAL,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            checkpoint_journal_bytes: DEFAULT_CHECKPOINT_JOURNAL_BYTES,
            journal_segment_bytes: crate::durable::journal::DEFAULT_SEGMENT_BYTES,
            max_campaign_metrics: DEFAULT_MAX_CAMPAIGN_METRICS,
            log_format: LogFormat::Text,
        }
    }
}

/// The flags of `suivi serve`: each overrides the file and the environment.
#[derive(Debug, Clone, Default, Serialize, clap::Args)]
pub struct SettingsFlags {
    /// A TOML file of settings (keys as below, snake_case) [env: SUIVI_CONFIG]
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where the gRPC API listens [env: SUIVI_GRPC_ADDR] [default: 127.0.0.1:50051]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<String>,
    /// Where the HTTP API listens [env: SUIVI_HTTP_ADDR] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<String>,
    /// Where suivi keeps its data [env: SUIVI_DATA_DIR] [default: ./suivi-data]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The campaign registry, a TOML file like config/campaigns.toml [env: SUIVI_CAMPAIGNS]
    /// [default: the embedded Objectif IA registry]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaigns: Option<PathBuf>,
    /// The time zone of timeline days [env: SUIVI_TIME_ZONE] [default: Europe/Paris]
    #[arg(long, value_name = "ZONE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The course's chapter count, 1 to 32 [env: SUIVI_CHAPTER_COUNT] [default: 12]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chapter_count: Option<u8>,
    /// The most events in one request [env: SUIVI_MAX_BATCH_EVENTS] [default: 10000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_events: Option<usize>,
    /// The most bytes in one request [env: SUIVI_MAX_REQUEST_BYTES] [default: 8388608]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<usize>,
    /// The most unregistered campaigns counted on their own; more count under `unregistered`
    /// [env: SUIVI_MAX_UNREGISTERED_CAMPAIGNS] [default: 1000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unregistered_campaigns: Option<usize>,
    /// The most events queued for processing [env: SUIVI_INGEST_QUEUE_EVENTS] [default: 200000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_queue_events: Option<usize>,
    /// How long a request waits for queue room before "retry later"
    /// [env: SUIVI_INGEST_QUEUE_TIMEOUT] [default: 2s]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_queue_timeout: Option<String>,
    /// How often changed counters are snapshotted [env: SUIVI_SNAPSHOT_INTERVAL] [default: 10s]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_interval: Option<String>,
    /// The longest wait between two attempts on a failing snapshot sink
    /// [env: SUIVI_SNAPSHOT_RETRY_MAX] [default: 60s]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_retry_max: Option<String>,
    /// PostgreSQL to write snapshots to and read reports from, e.g.
    /// postgres://user:password@host:5432/db [env: SUIVI_POSTGRES_URL] [default: off]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres_url: Option<String>,
    /// Kafka bootstrap servers, host:port,host:port [env: SUIVI_KAFKA_BROKERS] [default: off]
    #[arg(long, value_name = "HOSTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_brokers: Option<String>,
    /// Topics consumed, comma-separated [env: SUIVI_KAFKA_TOPICS] [default: learner-events]
    #[arg(long, value_name = "TOPICS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_topics: Option<String>,
    /// The Kafka consumer group [env: SUIVI_KAFKA_GROUP] [default: suivi]
    #[arg(long, value_name = "GROUP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_group: Option<String>,
    /// Where invalid messages go, {topic} being their topic [env: SUIVI_KAFKA_DEAD_LETTER_TOPIC]
    /// [default: {topic}.dlq]
    #[arg(long, value_name = "TOPIC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_dead_letter_topic: Option<String>,
    /// The most messages in one batch read from Kafka [env: SUIVI_KAFKA_BATCH_EVENTS]
    /// [default: 5000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_batch_events: Option<usize>,
    /// Where every campaign's report is written at the end of each half-quarter
    /// [env: SUIVI_REPORTS_DIR] [default: off]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reports_dir: Option<PathBuf>,
    /// The language of scheduled reports [env: SUIVI_REPORT_LANG] [default: fr]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_lang: Option<Lang>,
    /// How long shutdown waits for in-flight work [env: SUIVI_SHUTDOWN_GRACE] [default: 20s]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<String>,
    /// The least time between two pushes of a campaign to a watcher
    /// [env: SUIVI_WATCH_INTERVAL] [default: 250ms]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_interval: Option<String>,
    /// The most connections open at once on each listener [env: SUIVI_MAX_CONNECTIONS]
    /// [default: 4096]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// How long a new connection has to send its HTTP/2 preface or request headers
    /// [env: SUIVI_HEADER_READ_TIMEOUT] [default: 10s]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_read_timeout: Option<String>,
    /// The interval between HTTP/2 keep-alive pings [env: SUIVI_HTTP2_KEEPALIVE_INTERVAL]
    /// [default: 30s]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_keepalive_interval: Option<String>,
    /// How long a keep-alive ping may go unanswered [env: SUIVI_HTTP2_KEEPALIVE_TIMEOUT]
    /// [default: 10s]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_keepalive_timeout: Option<String>,
    /// The most report requests answered at once [env: SUIVI_MAX_CONCURRENT_REPORTS]
    /// [default: 4]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_reports: Option<usize>,
    /// The most ingest requests (gRPC calls and streams, HTTP posts) in flight at once
    /// [env: SUIVI_MAX_CONCURRENT_INGEST_REQUESTS] [default: 64]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_ingest_requests: Option<usize>,
    /// The pseudonymisation key, 64 hex digits [env: SUIVI_PSEUDONYM_KEY] [default: generated
    /// once and kept in the data dir]
    #[arg(long, value_name = "HEX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudonym_key: Option<String>,
    /// When the journal is forced to disk: always (before each acknowledgement) or interval
    /// [env: SUIVI_FSYNC] [default: always]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync: Option<Fsync>,
    /// The interval between fsyncs under --fsync interval [env: SUIVI_FSYNC_INTERVAL]
    /// [default: 200ms]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync_interval: Option<String>,
    /// How often the state is checkpointed [env: SUIVI_CHECKPOINT_INTERVAL] [default: 60s]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<String>,
    /// Journal growth that triggers an early checkpoint [env: SUIVI_CHECKPOINT_JOURNAL_BYTES]
    /// [default: 1073741824]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_journal_bytes: Option<u64>,
    /// The size of a journal segment [env: SUIVI_JOURNAL_SEGMENT_BYTES] [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_segment_bytes: Option<u64>,
    /// The most registered campaigns exported as per-campaign metrics
    /// [env: SUIVI_MAX_CAMPAIGN_METRICS] [default: 200]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_campaign_metrics: Option<usize>,
    /// Log format [env: SUIVI_LOG_FORMAT] [default: text]; the level comes from RUST_LOG
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// The environment variables that are not settings but are read by suivi all the same.
const ENV_NOT_SETTINGS: [&str; 1] = ["config"];

impl Settings {
    /// Loads the settings from the file named by `--config` or `SUIVI_CONFIG` (if any), the
    /// `SUIVI_…` environment, and `flags`, in rising priority, and validates them.
    pub fn load(flags: &SettingsFlags) -> anyhow::Result<Settings> {
        let file = flags
            .config
            .clone()
            .or_else(|| std::env::var_os("SUIVI_CONFIG").map(PathBuf::from));
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = &file {
            if !file.is_file() {
                bail!(
                    "config file {} (--config / SUIVI_CONFIG) does not exist",
                    file.display()
                );
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let settings: Settings = figment
            .merge(Env::prefixed("SUIVI_").ignore(&ENV_NOT_SETTINGS))
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|error| anyhow::anyhow!(describe(error)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.time_zone()?;
        if !(1..=MAX_CHAPTER_COUNT).contains(&self.chapter_count) {
            bail!(
                "invalid chapter_count {}: a course has 1 to {MAX_CHAPTER_COUNT} chapters",
                self.chapter_count
            );
        }
        for (name, value) in [
            ("max_batch_events", self.max_batch_events),
            ("max_request_bytes", self.max_request_bytes),
            ("ingest_queue_events", self.ingest_queue_events),
            ("kafka_batch_events", self.kafka_batch_events),
            ("max_connections", self.max_connections),
            ("max_concurrent_reports", self.max_concurrent_reports),
            (
                "max_concurrent_ingest_requests",
                self.max_concurrent_ingest_requests,
            ),
        ] {
            if value == 0 {
                bail!("invalid {name} 0: it must be at least 1");
            }
        }
        if self.journal_segment_bytes < 4096 {
            bail!(
                "invalid journal_segment_bytes {}: a segment must hold at least 4096 bytes",
                self.journal_segment_bytes
            );
        }
        // Room for the reserved campaigns `direct` and `unregistered` (the registry's own
        // campaigns are checked against what is left once it is loaded).
        if self.max_unregistered_campaigns > MAX_CAMPAIGNS - 2 {
            bail!(
                "invalid max_unregistered_campaigns {}: suivi holds at most {MAX_CAMPAIGNS} campaigns in all",
                self.max_unregistered_campaigns
            );
        }
        if self.ingest_queue_events > MAX_INGEST_QUEUE_EVENTS {
            bail!(
                "invalid ingest_queue_events {}: at most {MAX_INGEST_QUEUE_EVENTS} (a queued group is journaled as one record of at most 1 GiB)",
                self.ingest_queue_events
            );
        }
        if self.kafka_brokers.is_some() {
            if self.kafka_topics().is_empty() {
                bail!(
                    "invalid kafka_topics {:?}: name at least one topic",
                    self.kafka_topics
                );
            }
            if self.kafka_group.trim().is_empty() {
                bail!("invalid kafka_group: it must not be empty");
            }
            if self.kafka_dead_letter_topic.trim().is_empty() {
                bail!("invalid kafka_dead_letter_topic: it must not be empty");
            }
            for topic in self.kafka_topics() {
                if self.kafka_dead_letter_topic(&topic) == topic {
                    bail!(
                        "invalid kafka_dead_letter_topic {:?}: dead letters of {topic} would go back to {topic}",
                        self.kafka_dead_letter_topic
                    );
                }
            }
        }
        if self.ingest_queue_events < self.max_batch_events.max(self.kafka_batch_events) {
            bail!(
                "invalid ingest_queue_events {}: it must hold at least one full batch (max_batch_events {}, kafka_batch_events {})",
                self.ingest_queue_events,
                self.max_batch_events,
                self.kafka_batch_events
            );
        }
        for (name, value) in [
            ("snapshot_interval", self.snapshot_interval),
            ("snapshot_retry_max", self.snapshot_retry_max),
            ("watch_interval", self.watch_interval),
            ("header_read_timeout", self.header_read_timeout),
            ("http2_keepalive_interval", self.http2_keepalive_interval),
            ("http2_keepalive_timeout", self.http2_keepalive_timeout),
            ("fsync_interval", self.fsync_interval),
            ("checkpoint_interval", self.checkpoint_interval),
        ] {
            if value.is_zero() {
                bail!("invalid {name} 0s: it must be positive");
            }
        }
        if self.grpc_addr == self.http_addr && self.grpc_addr.port() != 0 {
            bail!(
                "grpc_addr and http_addr are both {}: give them different ports",
                self.grpc_addr
            );
        }
        self.pseudonym_key()?;
        if let Some(url) = &self.postgres_url {
            parse_postgres_url(url)?;
        }
        if let Some(directory) = &self.reports_dir
            && directory.exists()
            && !directory.is_dir()
        {
            bail!(
                "invalid reports_dir {}: it is not a directory",
                directory.display()
            );
        }
        Ok(())
    }

    /// The time zone of timeline days.
    pub fn time_zone(&self) -> anyhow::Result<Tz> {
        self.time_zone.parse().map_err(|_| {
            anyhow::anyhow!(
                "invalid time_zone {:?}: expected an IANA zone name such as Europe/Paris",
                self.time_zone
            )
        })
    }

    /// The configured pseudonymisation key, if any.
    pub fn pseudonym_key(&self) -> anyhow::Result<Option<[u8; 32]>> {
        self.pseudonym_key
            .as_ref()
            .map(|key| parse_key(key.expose()).context("invalid pseudonym_key"))
            .transpose()
    }

    /// The journal's fsync policy.
    pub fn fsync_policy(&self) -> crate::durable::journal::FsyncPolicy {
        match self.fsync {
            Fsync::Always => crate::durable::journal::FsyncPolicy::Always,
            Fsync::Interval => crate::durable::journal::FsyncPolicy::Interval(self.fsync_interval),
        }
    }

    /// The Kafka topics consumed.
    pub fn kafka_topics(&self) -> Vec<String> {
        self.kafka_topics
            .split(',')
            .map(str::trim)
            .filter(|topic| !topic.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The dead-letter topic of `topic`.
    pub fn kafka_dead_letter_topic(&self, topic: &str) -> String {
        self.kafka_dead_letter_topic
            .trim()
            .replace("{topic}", topic)
    }

    /// The campaign registry path, if one is configured.
    pub fn campaigns_path(&self) -> Option<&Path> {
        self.campaigns.as_deref()
    }
}

/// Parses a key of 64 hex digits.
pub fn parse_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("expected 64 hex digits");
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).context("expected hex digits")?;
    }
    Ok(key)
}

/// Names the setting, and where its value came from, in a figment error.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|error| {
            let key = error.path.join(".");
            let source = error
                .metadata
                .as_ref()
                .map(|metadata| match metadata.name.as_ref() {
                    name if name.contains("environment") => {
                        format!(" (from environment variable SUIVI_{})", key.to_uppercase())
                    }
                    name if name.contains("TOML") => {
                        let file = metadata
                            .source
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default();
                        format!(" (from config file {file})")
                    }
                    _ => format!(" (from flag --{})", key.replace('_', "-")),
                })
                .unwrap_or_default();
            if key.is_empty() {
                format!("invalid configuration: {}", error.kind)
            } else {
                format!("invalid setting {key}{source}: {}", error.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The language of a report (`report_lang`); `report::lang` holds its words and formats.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    Fr,
    En,
}

/// Parses a PostgreSQL URL (`postgres://user@host:port/database?…`) or key=value string, adding
/// suivi's connect timeout and application name when it sets none. Errors never repeat the URL.
pub fn parse_postgres_url(url: &Secret) -> anyhow::Result<tokio_postgres::Config> {
    let mut config = <tokio_postgres::Config as std::str::FromStr>::from_str(url.expose())
        .map_err(|error| {
            anyhow::anyhow!(
                "invalid postgres_url: {}",
                redact(&error.to_string(), url.expose())
            )
        })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_POSTGRES_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("suivi");
    }
    Ok(config)
}

fn redact(text: &str, secret: &str) -> String {
    let mut redacted = text.replace(secret, "[redacted]");
    if let Some(password) = url_password(secret)
        && !password.is_empty()
    {
        redacted = redacted.replace(password, "[redacted]");
    }
    redacted
}

fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let credentials = rest.split_once('@')?.0;
    Some(credentials.split_once(':')?.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_gives_the_defaults() {
        let text = include_str!("../config/suivi.example.toml");
        let example: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string(text))
            .extract()
            .expect("the example file parses");
        assert_eq!(
            serde_json::to_value(&example).expect("settings serialize"),
            serde_json::to_value(Settings::default()).expect("settings serialize")
        );
    }

    #[test]
    fn kafka_settings_are_checked_and_kafka_options_are_secrets() {
        let mut settings = Settings {
            kafka_brokers: Some("127.0.0.1:9092".to_owned()),
            kafka_topics: " learner-events, partner-events ,".to_owned(),
            ..Settings::default()
        };
        settings
            .kafka_options
            .insert("sasl.password".to_owned(), Secret::new("hunter2"));
        settings.validate().expect("valid settings");
        assert_eq!(
            settings.kafka_topics(),
            vec!["learner-events".to_owned(), "partner-events".to_owned()]
        );
        assert_eq!(
            settings.kafka_dead_letter_topic("partner-events"),
            "partner-events.dlq"
        );
        assert!(!format!("{settings:?}").contains("hunter2"));
        for (broken, message) in [
            (
                Settings {
                    kafka_topics: " , ".to_owned(),
                    ..settings.clone()
                },
                "invalid kafka_topics",
            ),
            (
                Settings {
                    kafka_dead_letter_topic: "{topic}".to_owned(),
                    ..settings.clone()
                },
                "would go back to learner-events",
            ),
            (
                Settings {
                    max_unregistered_campaigns: MAX_CAMPAIGNS - 1,
                    ..settings.clone()
                },
                "invalid max_unregistered_campaigns",
            ),
            (
                Settings {
                    ingest_queue_events: MAX_INGEST_QUEUE_EVENTS + 1,
                    ..settings.clone()
                },
                "invalid ingest_queue_events",
            ),
        ] {
            let error = broken.validate().expect_err("invalid settings").to_string();
            assert!(error.contains(message), "{error}");
        }
    }

    #[test]
    fn a_bad_postgres_url_is_refused_without_repeating_it() {
        for url in [
            "postgres://suivi:hunter2@db:notaport/suivi",
            "host=db password=hunter2 port=x",
        ] {
            let error = format!(
                "{:#}",
                parse_postgres_url(&Secret::new(url)).expect_err("an invalid URL")
            );
            assert!(error.starts_with("invalid postgres_url"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn a_good_postgres_url_gets_a_connect_timeout_and_a_name() {
        let config = parse_postgres_url(&Secret::new("postgres://suivi:hunter2@db:5433/reports"))
            .expect("a URL");
        assert_eq!(
            config.get_connect_timeout(),
            Some(&DEFAULT_POSTGRES_CONNECT_TIMEOUT)
        );
        assert_eq!(config.get_application_name(), Some("suivi"));
    }

    #[test]
    fn the_postgres_url_is_a_secret() {
        let settings = Settings {
            postgres_url: Some(Secret::new("postgres://suivi:hunter2@db:5432/suivi")),
            ..Settings::default()
        };
        settings.validate().expect("valid settings");
        assert!(!format!("{settings:?}").contains("hunter2"));
        let invalid = Settings {
            postgres_url: Some(Secret::new("postgres://suivi:hunter2@db:port/suivi")),
            ..Settings::default()
        };
        let error = format!("{:#}", invalid.validate().expect_err("an invalid URL"));
        assert!(error.contains("invalid postgres_url"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
