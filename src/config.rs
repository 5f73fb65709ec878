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
/// The most shards: the shards holding an unregistered campaign are kept as the bits of a word.
pub const MAX_SHARDS: usize = 64;
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

/// The default events per second of a credential.
pub const DEFAULT_CREDENTIAL_EVENTS_PER_SECOND: u32 = 5000;
/// The default new unregistered campaigns a credential may open per day.
pub const DEFAULT_CREDENTIAL_NEW_CAMPAIGNS_PER_DAY: u32 = 20;

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
/// The default compacted topic of the shards' partial counters.
pub const DEFAULT_KAFKA_PARTIALS_TOPIC: &str = "{topic}.partials";
/// The default most messages in one batch read from Kafka.
pub const DEFAULT_KAFKA_BATCH_EVENTS: usize = 5000;

/// Defines every setting once: its doc, type, default and flag. From that one list come
/// [`Settings`] (the TOML keys and `SUIVI_…` variables, through serde), its `Default`, and
/// [`SettingsFlags`] (the `--…` flags, whose help is the doc with the variable and the default
/// appended, from [`flag_help`]).
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $(#[serde($($serde:tt)*)])?
        $name:ident: $ty:ty = $default:expr;
        $(flag $flag_ty:ty $(, $arg:ident $(= $value:expr)?)*; $(unset $unset:literal;)?)?
    )*) => {
        /// Every setting of `suivi serve`. Each is a TOML key, a `SUIVI_<KEY>` environment
        /// variable and (but `kafka_options` and `xapi`, file only) a `--<key>` flag.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $(
                $(#[doc = $doc])+
                $(#[serde($($serde)*)])?
                pub $name: $ty,
            )*
        }

        impl Default for Settings {
            fn default() -> Settings {
                Settings {
                    $($name: $default,)*
                }
            }
        }

        /// The doc of setting `name`, line by line.
        fn setting_doc(name: &str) -> &'static [&'static str] {
            $(
                if name == stringify!($name) {
                    return &[$($doc),+];
                }
            )*
            &[]
        }

        /// The flags of `suivi serve`: each overrides the file and the environment.
        #[derive(Debug, Clone, Default, Serialize, clap::Args)]
        pub struct SettingsFlags {
            /// A TOML file of settings (keys as below, snake_case) [env: SUIVI_CONFIG]
            #[arg(long, value_name = "FILE")]
            #[serde(skip)]
            pub config: Option<PathBuf>,
            $($(
                #[arg(
                    long,
                    $($arg $(= $value)?,)*
                    help = flag_help(stringify!($name), [$($unset)?].first().copied())
                )]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $name: Option<$flag_ty>,
            )?)*
        }
    };
}

settings! {
    /// Where the gRPC API listens.
    grpc_addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 50051));
        flag String, value_name = "ADDR";
    /// Where the HTTP API (JSON, /metrics, /healthz, /readyz) listens.
    http_addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080));
        flag String, value_name = "ADDR";
    /// Where suivi keeps its key, journal, checkpoints and snapshots.
    data_dir: PathBuf = PathBuf::from(DEFAULT_DATA_DIR);
        flag PathBuf, value_name = "DIR";
    /// The campaign registry file; the embedded one when unset.
    campaigns: Option<PathBuf> = None;
        flag PathBuf, value_name = "FILE"; unset "the embedded Objectif IA registry";
    /// The IANA time zone in which timeline days are counted.
    time_zone: String = DEFAULT_TIME_ZONE.to_owned();
        flag String, value_name = "ZONE";
    /// The number of chapters of the course (1 to 32).
    chapter_count: u8 = DEFAULT_CHAPTER_COUNT;
        flag u8, value_name = "N";
    /// The most events in one ingest request.
    max_batch_events: usize = DEFAULT_MAX_BATCH_EVENTS;
        flag usize, value_name = "N";
    /// The most bytes in one ingest request.
    max_request_bytes: usize = DEFAULT_MAX_REQUEST_BYTES;
        flag usize, value_name = "BYTES";
    /// The most campaigns missing from the registry that get counters of their own; events of
    /// further ones count under the campaign `unregistered`. Registered campaigns, `direct` and
    /// `unregistered` are always counted.
    max_unregistered_campaigns: usize = DEFAULT_MAX_UNREGISTERED_CAMPAIGNS;
        flag usize, value_name = "N";
    /// How many shards the state is split into by learner, each with its own writer thread,
    /// journal and checkpoints (at most 64). 0: as many as the data directory holds, or, for a
    /// new one, as many as there are cores. A data directory keeps its number of shards.
    shards: usize = 0;
        flag usize, value_name = "N";
    /// The most events in the ingest queue (accepted for processing, not yet answered).
    ingest_queue_events: usize = DEFAULT_INGEST_QUEUE_EVENTS;
        flag usize, value_name = "N";
    /// How long a request waits for room in the ingest queue before being told to retry.
    #[serde(with = "humantime_serde")]
    ingest_queue_timeout: Duration = DEFAULT_INGEST_QUEUE_TIMEOUT;
        flag String, value_name = "DURATION";
    /// How often changed counters are written to the snapshot sinks.
    #[serde(with = "humantime_serde")]
    snapshot_interval: Duration = DEFAULT_SNAPSHOT_INTERVAL;
        flag String, value_name = "DURATION";
    /// The longest wait between two attempts on a failing snapshot sink (the backoff doubles
    /// from `snapshot_interval` up to this).
    #[serde(with = "humantime_serde")]
    snapshot_retry_max: Duration = DEFAULT_SNAPSHOT_RETRY_MAX;
        flag String, value_name = "DURATION";
    /// The PostgreSQL database snapshots also go to (and reports are read from), as a URL such
    /// as `postgres://user:password@host:5432/database` (or libpq's `key=value` form);
    /// PostgreSQL is off when unset. A secret. TLS follows libpq's `sslmode` parameter:
    /// `disable` (plain), `prefer` (the default: TLS when the server offers it, else plain; the
    /// certificate is not checked), `require` (TLS or no connection; the certificate is not
    /// checked, unless `sslrootcert` is given: then as `verify-ca`), `verify-ca` (TLS, the
    /// server's certificate chain must lead to a CA in `sslrootcert`, a PEM file, or, without
    /// it, to one of the system's trusted roots), `verify-full` (`verify-ca`, and the
    /// certificate must name the host the URL gives). `sslrootcert=system` takes the system's
    /// roots and, as in libpq, implies `verify-full`. `allow` is not supported.
    postgres_url: Option<Secret> = None;
        flag String, value_name = "URL"; unset "off";
    /// Kafka's bootstrap servers (`host:port,host:port`); Kafka is off when unset.
    kafka_brokers: Option<String> = None;
        flag String, value_name = "HOSTS"; unset "off";
    /// The topics learner events are consumed from, comma-separated.
    kafka_topics: String = DEFAULT_KAFKA_TOPIC.to_owned();
        flag String, value_name = "TOPICS";
    /// The consumer group.
    kafka_group: String = DEFAULT_KAFKA_GROUP.to_owned();
        flag String, value_name = "GROUP";
    /// Where a message that is not a valid event goes; `{topic}` is its topic.
    kafka_dead_letter_topic: String = DEFAULT_KAFKA_DEAD_LETTER_TOPIC.to_owned();
        flag String, value_name = "TOPIC";
    /// The most messages read into one batch for the aggregate.
    kafka_batch_events: usize = DEFAULT_KAFKA_BATCH_EVENTS;
        flag usize, value_name = "N";
    /// Scale-out over Kafka (product.md §6): every partition of the topics is a shard of the
    /// state, counted by the one instance of the consumer group it is assigned to and
    /// checkpointed with its offset; gRPC, HTTP, xAPI and Caliper ingest is produced into the
    /// first topic, to the partition of its learner, and answered once the broker has
    /// acknowledged it; each instance publishes its shards' partial counters to
    /// `kafka_partials_topic` and reads every shard's from there, so that any instance answers
    /// the exact programme-wide figures. The topics must all have as many partitions (at most
    /// 64). Needs `kafka_brokers`.
    forward_to_kafka: bool = false;
        flag bool, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL";
    /// The compacted topic of the shards' partial counters, with `forward_to_kafka`; `{topic}`
    /// is the first of `kafka_topics`.
    kafka_partials_topic: String = DEFAULT_KAFKA_PARTIALS_TOPIC.to_owned();
        flag String, value_name = "TOPIC";
    /// This instance's fixed name in the consumer group (librdkafka's `group.instance.id`:
    /// static membership, so that a restart within the session timeout moves no partition),
    /// such as the pod's name; empty: none.
    kafka_instance_id: String = String::new();
        flag String, value_name = "NAME";
    /// More librdkafka client properties for the consumer and the dead-letter producer, such as
    /// `security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`,
    /// `ssl.ca.location`. Secrets: never logged.
    kafka_options: BTreeMap<String, Secret> = BTreeMap::new();
    /// How xAPI statements and Caliper events map onto learner events (file only, `[xapi]`):
    /// `course` (the course's activity ids; empty: any activity typed as a course),
    /// `[xapi.chapters]` (chapter activity ids and their numbers), `[xapi.sources]` (LMS hosts
    /// renamed to sources).
    xapi: crate::standards::Mapping = crate::standards::Mapping::default();
    /// Where every campaign's report is written at the end of each half-quarter; off when unset.
    reports_dir: Option<PathBuf> = None;
        flag PathBuf, value_name = "DIR"; unset "off";
    /// The language of scheduled reports: `fr` or `en`.
    report_lang: Lang = Lang::Fr;
        flag Lang, value_enum;
    /// How long shutdown waits for in-flight work before giving up.
    #[serde(with = "humantime_serde")]
    shutdown_grace: Duration = DEFAULT_SHUTDOWN_GRACE;
        flag String, value_name = "DURATION";
    /// The least time between two pushes of one campaign to a WatchCampaigns client.
    #[serde(with = "humantime_serde")]
    watch_interval: Duration = DEFAULT_WATCH_INTERVAL;
        flag String, value_name = "DURATION";
    /// The most connections open at once on each listener (gRPC, HTTP); one more is closed at
    /// once.
    max_connections: usize = DEFAULT_MAX_CONNECTIONS;
        flag usize, value_name = "N";
    /// How long a new connection has to finish its TLS handshake (with TLS on) and send its
    /// HTTP/2 preface (gRPC) or its first bytes (HTTP), and an HTTP/1 request its headers, before
    /// it is closed.
    #[serde(with = "humantime_serde")]
    header_read_timeout: Duration = DEFAULT_HEADER_READ_TIMEOUT;
        flag String, value_name = "DURATION";
    /// The interval between keep-alive pings on an HTTP/2 connection (both listeners).
    #[serde(with = "humantime_serde")]
    http2_keepalive_interval: Duration = DEFAULT_HTTP2_KEEPALIVE_INTERVAL;
        flag String, value_name = "DURATION";
    /// How long a keep-alive ping may go unanswered before the connection is closed.
    #[serde(with = "humantime_serde")]
    http2_keepalive_timeout: Duration = DEFAULT_HTTP2_KEEPALIVE_TIMEOUT;
        flag String, value_name = "DURATION";
    /// The most report requests (`/v1/reports`, `/v1/campaigns/{campaign}/report`) answered at
    /// once; more are answered 503 with Retry-After.
    max_concurrent_reports: usize = DEFAULT_MAX_CONCURRENT_REPORTS;
        flag usize, value_name = "N";
    /// The most ingest requests in flight at once: gRPC `Ingest` calls and `IngestStream`
    /// streams, and HTTP `POST /v1/events`, together. Each may buffer up to twice
    /// `max_request_bytes`; more are refused (UNAVAILABLE / 503) before their body is read.
    max_concurrent_ingest_requests: usize = DEFAULT_MAX_CONCURRENT_INGEST_REQUESTS;
        flag usize, value_name = "N";
    /// The certificate chain both listeners serve TLS with (PEM, leaf first); with `tls_key`,
    /// TLS is on, else off. Reloaded when the file changes.
    tls_cert: Option<PathBuf> = None;
        flag PathBuf, value_name = "FILE"; unset "off (plain text)";
    /// The private key of `tls_cert` (PEM: PKCS#8, PKCS#1 or SEC1). Reloaded when the file
    /// changes.
    tls_key: Option<PathBuf> = None;
        flag PathBuf, value_name = "FILE"; unset "off (plain text)";
    /// The CAs (PEM bundle) that must have signed a client's certificate: when set, every client
    /// of both listeners must present one. Needs `tls_cert` and `tls_key`.
    tls_client_ca: Option<PathBuf> = None;
        flag PathBuf, value_name = "FILE"; unset "off (no client certificate asked)";
    /// The pseudonymisation key, 64 hex digits; generated once and kept in the data dir when
    /// unset.
    pseudonym_key: Option<Secret> = None;
        flag String, value_name = "HEX"; unset "generated once and kept in the data dir";
    /// The credentials file (made with `suivi credentials add`): every request but health,
    /// readiness and gRPC reflection then needs a bearer token with the scopes for it. It is
    /// read again when it changes and on SIGHUP. Unset: access is open (loopback only, unless
    /// `allow_anonymous`).
    credentials: Option<PathBuf> = None;
        flag PathBuf, value_name = "FILE"; unset "open access";
    /// Serve without credentials on an address other than loopback: anyone who reaches the
    /// ports may then send events for any campaign and read every partner's figures.
    allow_anonymous: bool = false;
        flag bool, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL";
    /// The bearer token `/metrics` requires (Prometheus's `authorization` credentials); open
    /// when unset. A secret.
    metrics_token: Option<Secret> = None;
        flag String, value_name = "TOKEN"; unset "open";
    /// Events per second each credential may send (a token bucket holding at least one batch),
    /// unless its entry in the credentials file says otherwise; 0 for no limit.
    credential_events_per_second: u32 = DEFAULT_CREDENTIAL_EVENTS_PER_SECOND;
        flag u32, value_name = "N";
    /// New unregistered campaigns each credential's events may open per day (UTC), unless its
    /// entry says otherwise; events opening more are rejected with `campaign_quota_exceeded`.
    credential_new_campaigns_per_day: u32 = DEFAULT_CREDENTIAL_NEW_CAMPAIGNS_PER_DAY;
        flag u32, value_name = "N";
    /// When journal appends are forced to disk: `always` (before every acknowledgement) or
    /// `interval` (every `fsync_interval`; a crash may lose what was acknowledged meanwhile).
    fsync: Fsync = Fsync::Always;
        flag Fsync, value_enum;
    /// The interval between fsyncs under `fsync = "interval"`.
    #[serde(with = "humantime_serde")]
    fsync_interval: Duration = DEFAULT_FSYNC_INTERVAL;
        flag String, value_name = "DURATION";
    /// How often the whole state is checkpointed (and the journal before it removed).
    #[serde(with = "humantime_serde")]
    checkpoint_interval: Duration = DEFAULT_CHECKPOINT_INTERVAL;
        flag String, value_name = "DURATION";
    /// Journal growth (bytes) that triggers a checkpoint before the interval.
    checkpoint_journal_bytes: u64 = DEFAULT_CHECKPOINT_JOURNAL_BYTES;
        flag u64, value_name = "BYTES";
    /// The size at which a journal segment is closed and a new one started.
    journal_segment_bytes: u64 = crate::durable::journal::DEFAULT_SEGMENT_BYTES;
        flag u64, value_name = "BYTES";
    /// The most registered campaigns whose figures (clicks, enrolled, started, certified) are
    /// exported as per-campaign metrics; the label's cardinality stays bounded.
    max_campaign_metrics: usize = DEFAULT_MAX_CAMPAIGN_METRICS;
        flag usize, value_name = "N";
    /// Log format: `text` or `json`.
    log_format: LogFormat = LogFormat::Text;
        flag LogFormat, value_enum;
}

/// The help of the flag of setting `name`: its doc, then its variable and its default (what
/// `Settings::default()` holds, or `unset` for a setting that is off unless set).
fn flag_help(name: &str, unset: Option<&str>) -> String {
    let doc = setting_doc(name)
        .iter()
        .map(|line| line.trim())
        .collect::<Vec<_>>()
        .join(" ");
    let default = serde_json::to_value(Settings::default())
        .ok()
        .and_then(|defaults| defaults.get(name).cloned());
    let default = match default {
        Some(serde_json::Value::String(text)) => text,
        Some(serde_json::Value::Null) | None => unset.unwrap_or("off").to_owned(),
        Some(value) => value.to_string(),
    };
    format!(
        "{doc} [env: SUIVI_{}] [default: {default}]",
        name.to_uppercase()
    )
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

/// The environment variables that are not settings but are read by suivi all the same.
const ENV_NOT_SETTINGS: [&str; 1] = ["config"];

impl Settings {
    /// Loads the settings from the file named by `--config` or `SUIVI_CONFIG` (if any), the
    /// `SUIVI_…` environment, and `flags`, in rising priority, and validates them.
    pub fn load(flags: &SettingsFlags) -> anyhow::Result<Valid> {
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
        settings.validated()
    }

    /// These settings, once checked: what `app::bind` takes, so that they are checked once.
    pub fn validated(self) -> anyhow::Result<Valid> {
        self.validate()?;
        Ok(Valid(self))
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.time_zone()?;
        if self.credentials.is_none() && !self.allow_anonymous {
            for (name, address) in [("grpc_addr", self.grpc_addr), ("http_addr", self.http_addr)] {
                if !address.ip().is_loopback() {
                    bail!(
                        "{name} {address} is not a loopback address, and no credentials file is set \
                         (credentials, SUIVI_CREDENTIALS): anyone who reaches it could send events for \
                         any campaign and read every partner's figures. Create credentials with \
                         `suivi credentials add`, or set allow_anonymous (--allow-anonymous) to serve \
                         open all the same"
                    );
                }
            }
        }
        if self.shards > MAX_SHARDS {
            bail!("invalid shards {}: at most {MAX_SHARDS}", self.shards);
        }
        if !(1..=MAX_CHAPTER_COUNT).contains(&self.chapter_count) {
            bail!(
                "invalid chapter_count {}: a course has 1 to {MAX_CHAPTER_COUNT} chapters",
                self.chapter_count
            );
        }
        self.xapi
            .check(self.chapter_count)
            .map_err(|message| anyhow::anyhow!("invalid {message}"))?;
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
            if self.forward_to_kafka {
                let partials = self.kafka_partials_topic();
                if partials.is_empty() || self.kafka_topics().contains(&partials) {
                    bail!(
                        "invalid kafka_partials_topic {:?}: it must name a topic of its own",
                        self.kafka_partials_topic
                    );
                }
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
        if self.forward_to_kafka && self.kafka_brokers.is_none() {
            bail!("invalid forward_to_kafka: it needs kafka_brokers");
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
            let target = parse_postgres_url(url)?;
            if let Some(path) = &target.root_cert
                && let Err(error) = std::fs::metadata(path)
            {
                bail!(
                    "invalid postgres_url: its sslrootcert {} cannot be read: {error}",
                    path.display()
                );
            }
        }
        if let Some(files) = self.tls_files()? {
            crate::tls::Tls::load(files)?;
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

    /// The compacted topic of the shards' partials (`forward_to_kafka`).
    pub fn kafka_partials_topic(&self) -> String {
        let first = self.kafka_topics().into_iter().next().unwrap_or_default();
        self.kafka_partials_topic.trim().replace("{topic}", &first)
    }

    /// The dead-letter topic of `topic`.
    pub fn kafka_dead_letter_topic(&self, topic: &str) -> String {
        self.kafka_dead_letter_topic
            .trim()
            .replace("{topic}", topic)
    }

    /// The TLS files of both listeners; none when TLS is off.
    pub fn tls_files(&self) -> anyhow::Result<Option<crate::tls::TlsFiles>> {
        crate::tls::TlsFiles::from_settings(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_client_ca.as_deref(),
        )
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

/// Settings that passed [`Settings::validate`] (made by [`Settings::validated`] and
/// [`Settings::load`] only): read like [`Settings`].
#[derive(Debug, Clone)]
pub struct Valid(Settings);

impl std::ops::Deref for Valid {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.0
    }
}

mod postgres;

pub use postgres::{PostgresTarget, RootCerts, TlsMode, parse_postgres_url};

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
    fn a_missing_sslrootcert_is_refused_before_anything_binds() {
        let settings = Settings {
            postgres_url: Some(Secret::new(
                "postgres://suivi:hunter2@db/r?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            )),
            ..Settings::default()
        };
        let error = format!("{:#}", settings.validate().expect_err("a missing CA"));
        assert!(error.contains("sslrootcert /nonexistent/ca.pem"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let target = parse_postgres_url(&Secret::new("postgres://suivi:hunter2@db/r"))
            .expect("the URL parses");
        assert!(!format!("{target:?}").contains("hunter2"));
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
