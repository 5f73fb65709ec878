//! Logs and metrics. Every metric suivi exports is named here, with its help text, so this file
//! is the specification of `/metrics`: counters end in `_total`, durations are in seconds, sizes
//! in bytes, ratios are `_ratio` from 0 to 1, and labels have few values (transport, reason,
//! cause, sink, chapter; never a learner, a visitor or an event id). Other modules record
//! through the helpers below and never spell a metric name.
//!
//! Two kinds of metrics live here. Operational ones (ingest, journal, checkpoints, snapshots)
//! go through the process-wide `metrics` recorder as they happen. The business figures (each
//! registered campaign's funnel and the programme's, the readiness gauge) are not recorded at
//! all: `query::metrics::render_figures` writes them from the read model at scrape time, so they are always
//! the published figures of the service being scraped, cost nothing on the write path, and
//! vanish with it. They are the only series with a `campaign` label (and `name`, on
//! `suivi_campaign_info`), and only for *registered* campaigns, at most `max_campaign_metrics`
//! of them (by id order): the registry is the operator's, so the label's values are bounded
//! by configuration, never by what senders write in events. Campaigns left out by the cap are
//! counted in `suivi_campaign_metrics_omitted_campaigns`; unregistered campaigns are in the
//! programme totals and the query API, never in labels.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::aggregate::Holdings;
use crate::config::LogFormat;
use crate::durable::recover::RecoveryReport;
use crate::event::RejectReason;

/// Events received, by transport.
pub const EVENTS_RECEIVED: &str = "suivi_events_received_total";
/// Events counted for the first time, by transport.
pub const EVENTS_ACCEPTED: &str = "suivi_events_accepted_total";
/// Events whose id was seen before, by transport.
pub const EVENTS_DUPLICATE: &str = "suivi_events_duplicate_total";
/// Duplicates whose content differs from the first event with their id, by transport.
pub const EVENTS_CONFLICTING: &str = "suivi_events_conflicting_total";
/// Events rejected, by transport and reason (the rejection code).
pub const EVENTS_REJECTED: &str = "suivi_events_rejected_total";
/// Whole requests refused, by transport and reason (batch_too_large, request_too_large,
/// overloaded, shutting_down, invalid_protobuf, unsupported_media_type, too_many_requests).
pub const REQUESTS_REFUSED: &str = "suivi_ingest_requests_refused_total";
/// Connections closed by suivi before serving them, by transport (the listener: grpc, http) and
/// reason (too_many_connections, handshake_timeout, not_http2, header_read_timeout).
pub const CONNECTIONS_REFUSED: &str = "suivi_connections_refused_total";
/// Connections open, by transport (the listener).
pub const CONNECTIONS_OPEN: &str = "suivi_open_connections";
/// HTTP requests answered 503 because their bound was reached, by reason (the bound's setting:
/// max_concurrent_reports).
pub const REQUESTS_SHED: &str = "suivi_http_requests_shed_total";
/// Events per ingest request, by transport.
pub const BATCH_EVENTS: &str = "suivi_ingest_batch_events";
/// Time to answer an ingest request, by transport.
pub const INGEST_DURATION: &str = "suivi_ingest_request_duration_seconds";
/// Time to answer a query, by transport.
pub const QUERY_DURATION: &str = "suivi_query_request_duration_seconds";
/// Events waiting in the ingest queue.
pub const INGEST_QUEUE_EVENTS: &str = "suivi_ingest_queue_events";
/// Time to write one snapshot, by sink.
pub const SNAPSHOT_DURATION: &str = "suivi_snapshot_duration_seconds";
/// Snapshots written, by sink.
pub const SNAPSHOTS: &str = "suivi_snapshots_total";
/// Snapshots that failed (and will be retried), by sink.
pub const SNAPSHOT_FAILURES: &str = "suivi_snapshot_failures_total";
/// Rows a sink's store refused (a campaign's counters or one of its days), left out of
/// snapshots otherwise written, by sink.
pub const SNAPSHOT_ROWS_SET_ASIDE: &str = "suivi_snapshot_rows_set_aside_total";
/// Bytes appended to the journal.
pub const JOURNAL_BYTES: &str = "suivi_journal_appended_bytes_total";
/// Records (groups) appended to the journal.
pub const JOURNAL_RECORDS: &str = "suivi_journal_records_total";
/// Time to fsync one journal record (under fsync = always).
pub const JOURNAL_FSYNC_DURATION: &str = "suivi_journal_fsync_duration_seconds";
/// Journal appends that failed, by cause (disk_full, unwritable); their groups were refused.
pub const JOURNAL_FAILURES: &str = "suivi_journal_append_failures_total";
/// Bytes of torn journal tail cut off at recovery.
pub const JOURNAL_TORN_BYTES: &str = "suivi_journal_torn_bytes_total";
/// Checkpoints written.
pub const CHECKPOINTS: &str = "suivi_checkpoints_total";
/// Checkpoints that failed.
pub const CHECKPOINT_FAILURES: &str = "suivi_checkpoint_failures_total";
/// Time to encode and write one checkpoint.
pub const CHECKPOINT_DURATION: &str = "suivi_checkpoint_duration_seconds";
/// Size of the last checkpoint written.
pub const CHECKPOINT_BYTES: &str = "suivi_checkpoint_size_bytes";
/// Checkpoints found unusable at recovery.
pub const CHECKPOINTS_REJECTED: &str = "suivi_checkpoints_rejected_total";
/// How long the last recovery took.
pub const RECOVERY_DURATION: &str = "suivi_recovery_duration_seconds";
/// Events replayed from the journal by the last recovery.
pub const RECOVERY_EVENTS: &str = "suivi_recovery_replayed_events";
/// Campaigns held.
pub const CAMPAIGNS: &str = "suivi_campaigns";
/// Distinct learners over the programme.
pub const LEARNERS: &str = "suivi_learners";
/// (campaign, learner) records held.
pub const CAMPAIGN_LEARNERS: &str = "suivi_campaign_learners";
/// Event ids remembered for deduplication.
pub const EVENT_IDS: &str = "suivi_event_ids";

// Written at scrape time by `query::metrics::render_figures`, from the read model of the service scraped.

/// 1 when suivi has recovered its state and takes traffic (as `/readyz` answers 200), else 0.
pub const READY: &str = "suivi_ready";
/// The programme's distinct link clicks.
pub const PROGRAMME_CLICKS: &str = "suivi_programme_clicks";
/// The programme's distinct visitors who clicked a link.
pub const PROGRAMME_UNIQUE_VISITORS: &str = "suivi_programme_unique_visitors";
/// The programme's distinct learners who enrolled.
pub const PROGRAMME_ENROLLED: &str = "suivi_programme_enrolled_learners";
/// The programme's distinct learners who started the course.
pub const PROGRAMME_STARTED: &str = "suivi_programme_started_learners";
/// The programme's distinct learners who completed each chapter, by `chapter` (1, 2, …).
pub const PROGRAMME_CHAPTER_COMPLETED: &str = "suivi_programme_chapter_completed_learners";
/// The programme's distinct learners who were certified.
pub const PROGRAMME_CERTIFIED: &str = "suivi_programme_certified_learners";
/// How many people the programme means to certify (1% of the population), when registered.
pub const PROGRAMME_TARGET: &str = "suivi_programme_target_learners";
/// Certified over the programme's target, when it has one.
pub const PROGRAMME_PROGRESS: &str = "suivi_programme_progress_ratio";
/// 1 per exported campaign, with its partner's `name`, for joins in dashboards.
pub const CAMPAIGN_INFO: &str = "suivi_campaign_info";
/// Distinct link clicks, by registered `campaign`.
pub const CAMPAIGN_CLICKS: &str = "suivi_campaign_clicks";
/// Distinct visitors who clicked the link, by registered `campaign`.
pub const CAMPAIGN_UNIQUE_VISITORS: &str = "suivi_campaign_unique_visitors";
/// Distinct learners who enrolled, by registered `campaign`.
pub const CAMPAIGN_ENROLLED: &str = "suivi_campaign_enrolled_learners";
/// Distinct learners who started the course, by registered `campaign`.
pub const CAMPAIGN_STARTED: &str = "suivi_campaign_started_learners";
/// Distinct learners who were certified, by registered `campaign`.
pub const CAMPAIGN_CERTIFIED: &str = "suivi_campaign_certified_learners";
/// The number of people the partner committed to train, by registered `campaign` that has one.
pub const CAMPAIGN_TARGET: &str = "suivi_campaign_target_learners";
/// Certified over the partner's target, by registered `campaign` that has one.
pub const CAMPAIGN_PROGRESS: &str = "suivi_campaign_progress_ratio";
/// Registered campaigns left out of the per-campaign series by `max_campaign_metrics`.
pub const CAMPAIGN_METRICS_OMITTED: &str = "suivi_campaign_metrics_omitted_campaigns";

/// The `cause` of a journal append that failed on a full disk.
pub const JOURNAL_CAUSE_DISK_FULL: &str = "disk_full";
/// The `cause` of a journal append that failed for any other reason.
pub const JOURNAL_CAUSE_UNWRITABLE: &str = "unwritable";

/// Kafka messages consumed, by topic and partition.
pub const KAFKA_MESSAGES: &str = "suivi_kafka_messages_total";
/// How far each assigned partition's position is behind its end.
pub const KAFKA_LAG: &str = "suivi_kafka_lag_messages";
/// Kafka partitions assigned to this instance.
pub const KAFKA_ASSIGNED: &str = "suivi_kafka_assigned_partitions";
/// Messages sent to the dead-letter topic, by reason (a rejection code).
pub const KAFKA_DEAD_LETTERS: &str = "suivi_kafka_dead_letters_total";
/// Failed attempts to write to the dead-letter topic (the partition is paused and retried).
pub const KAFKA_DEAD_LETTER_FAILURES: &str = "suivi_kafka_dead_letter_failures_total";
/// Consumer group rebalances, by what they did here (assign or revoke).
pub const KAFKA_REBALANCES: &str = "suivi_kafka_rebalances_total";
/// Time consumption was paused (aggregation behind, disk full, dead-letter topic unwritable).
pub const KAFKA_PAUSED_SECONDS: &str = "suivi_kafka_paused_seconds_total";
/// Batches read from Kafka that suivi refused and read again, by reason.
pub const KAFKA_BATCHES_RETRIED: &str = "suivi_kafka_batches_retried_total";
/// Offset commits to the consumer group that failed.
pub const KAFKA_COMMIT_FAILURES: &str = "suivi_kafka_commit_failures_total";
/// Shutdowns that stopped waiting for the Kafka consumer thread after the shutdown grace.
pub const KAFKA_STOP_TIMEOUTS: &str = "suivi_kafka_stop_timeouts_total";
/// Campaigns that became fed by more than one source (partitions, or Kafka and gRPC/HTTP).
pub const CAMPAIGNS_SEVERAL_SOURCES: &str = "suivi_campaigns_with_several_sources_total";
/// Campaigns released to another instance with their Kafka partition.
pub const CAMPAIGNS_RELEASED: &str = "suivi_campaigns_released_total";
/// Events of unregistered campaigns counted under `unregistered`, past max_unregistered_campaigns.
pub const EVENTS_UNREGISTERED: &str = "suivi_events_counted_as_unregistered_total";
/// Campaigns missing from the registry that have counters of their own.
pub const UNREGISTERED_CAMPAIGNS: &str = "suivi_unregistered_campaigns";

/// Where an event came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
    Kafka,
}

impl Transport {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
            Transport::Kafka => "kafka",
        }
    }
}

/// Starts structured logging; the level comes from `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log line that cannot be written (stderr closed) is dropped: the default would report it
    // with eprintln!, which panics on that same closed stderr and takes the service down.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    // A second initialisation (tests start many services in one process) keeps the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Installs the process-wide Prometheus recorder once, and describes every metric.
pub fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    // Built and installed under the lock, once: two services starting at the same time (tests)
    // must not keep the handle of a recorder that lost the race to be installed.
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| install_recorder().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(|error| anyhow::anyhow!("cannot install the metrics recorder: {error}"))
}

/// Builds the Prometheus recorder and installs it as the process-wide one.
fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_owned()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(BATCH_EVENTS.to_owned()),
            &[1.0, 10.0, 100.0, 1_000.0, 5_000.0, 10_000.0],
        )?
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_ok() {
        describe();
        register_failure_series();
    }
    Ok(handle)
}

fn describe() {
    describe_counter!(
        EVENTS_RECEIVED,
        Unit::Count,
        "Learner events received, by transport."
    );
    describe_counter!(
        EVENTS_ACCEPTED,
        Unit::Count,
        "Events counted for the first time, by transport."
    );
    describe_counter!(
        EVENTS_DUPLICATE,
        Unit::Count,
        "Events whose event_id was already seen, by transport."
    );
    describe_counter!(
        EVENTS_CONFLICTING,
        Unit::Count,
        "Duplicate events whose content differs from the first with their id, by transport."
    );
    describe_counter!(
        EVENTS_REJECTED,
        Unit::Count,
        "Events rejected, by transport and reason."
    );
    describe_counter!(
        REQUESTS_REFUSED,
        Unit::Count,
        "Ingest requests refused whole, by transport and reason."
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        Unit::Count,
        "Connections closed before being served, by transport (listener) and reason."
    );
    describe_gauge!(
        CONNECTIONS_OPEN,
        Unit::Count,
        "Connections open, by listener."
    );
    describe_counter!(
        REQUESTS_SHED,
        Unit::Count,
        "HTTP requests answered 503 because their bound was reached, by reason (the bound's setting)."
    );
    describe_histogram!(
        BATCH_EVENTS,
        Unit::Count,
        "Events per ingest request, by transport."
    );
    describe_histogram!(
        INGEST_DURATION,
        Unit::Seconds,
        "Time to answer an ingest request, by transport."
    );
    describe_histogram!(
        QUERY_DURATION,
        Unit::Seconds,
        "Time to answer a query, by transport."
    );
    describe_gauge!(
        INGEST_QUEUE_EVENTS,
        Unit::Count,
        "Events waiting in the ingest queue."
    );
    describe_histogram!(
        SNAPSHOT_DURATION,
        Unit::Seconds,
        "Time to write one snapshot, by sink."
    );
    describe_counter!(SNAPSHOTS, Unit::Count, "Snapshots written, by sink.");
    describe_counter!(
        SNAPSHOT_FAILURES,
        Unit::Count,
        "Snapshots that failed and will be retried, by sink."
    );
    describe_counter!(
        SNAPSHOT_ROWS_SET_ASIDE,
        Unit::Count,
        "Rows a sink's store refused, left out of snapshots otherwise written, by sink."
    );
    describe_counter!(JOURNAL_BYTES, Unit::Bytes, "Bytes appended to the journal.");
    describe_counter!(
        JOURNAL_RECORDS,
        Unit::Count,
        "Records (groups of batches) appended to the journal."
    );
    describe_histogram!(
        JOURNAL_FSYNC_DURATION,
        Unit::Seconds,
        "Time to fsync one journal record, with fsync = always."
    );
    describe_counter!(
        JOURNAL_FAILURES,
        Unit::Count,
        "Journal appends that failed, by cause; their groups were refused."
    );
    describe_counter!(
        JOURNAL_TORN_BYTES,
        Unit::Bytes,
        "Bytes of torn journal tail cut off at recovery."
    );
    describe_counter!(CHECKPOINTS, Unit::Count, "Checkpoints written.");
    describe_counter!(CHECKPOINT_FAILURES, Unit::Count, "Checkpoints that failed.");
    describe_histogram!(
        CHECKPOINT_DURATION,
        Unit::Seconds,
        "Time to encode and write one checkpoint."
    );
    describe_gauge!(
        CHECKPOINT_BYTES,
        Unit::Bytes,
        "Size of the last checkpoint written."
    );
    describe_counter!(
        CHECKPOINTS_REJECTED,
        Unit::Count,
        "Checkpoints found unusable at recovery."
    );
    describe_gauge!(
        RECOVERY_DURATION,
        Unit::Seconds,
        "How long the last recovery took."
    );
    describe_gauge!(
        RECOVERY_EVENTS,
        Unit::Count,
        "Events replayed from the journal by the last recovery."
    );
    describe_gauge!(CAMPAIGNS, Unit::Count, "Campaigns held.");
    describe_counter!(
        KAFKA_MESSAGES,
        Unit::Count,
        "Kafka messages consumed, by topic and partition."
    );
    describe_gauge!(
        KAFKA_LAG,
        Unit::Count,
        "Messages between each assigned partition's position and its end."
    );
    describe_gauge!(
        KAFKA_ASSIGNED,
        Unit::Count,
        "Kafka partitions assigned to this instance."
    );
    describe_counter!(
        KAFKA_DEAD_LETTERS,
        Unit::Count,
        "Kafka messages sent to the dead-letter topic, by reason."
    );
    describe_counter!(
        KAFKA_DEAD_LETTER_FAILURES,
        Unit::Count,
        "Failed writes to the dead-letter topic (retried, never dropped)."
    );
    describe_counter!(
        KAFKA_REBALANCES,
        Unit::Count,
        "Consumer group rebalances, by kind (assign, revoke)."
    );
    describe_counter!(
        KAFKA_PAUSED_SECONDS,
        Unit::Seconds,
        "Time Kafka consumption was paused, by cause."
    );
    describe_counter!(
        KAFKA_BATCHES_RETRIED,
        Unit::Count,
        "Kafka batches refused and read again, by reason."
    );
    describe_counter!(
        KAFKA_COMMIT_FAILURES,
        Unit::Count,
        "Failed offset commits to the consumer group."
    );
    describe_counter!(
        KAFKA_STOP_TIMEOUTS,
        Unit::Count,
        "Shutdowns that left the Kafka consumer behind: it had not stopped within the shutdown grace."
    );
    describe_counter!(
        CAMPAIGNS_SEVERAL_SOURCES,
        Unit::Count,
        "Campaigns that became fed by more than one Kafka partition, or by Kafka and gRPC/HTTP."
    );
    describe_counter!(
        CAMPAIGNS_RELEASED,
        Unit::Count,
        "Campaigns released to another instance with their Kafka partition."
    );
    describe_counter!(
        EVENTS_UNREGISTERED,
        Unit::Count,
        "Events of campaigns missing from the registry counted under the campaign unregistered, because max_unregistered_campaigns of them already have counters of their own."
    );
    describe_gauge!(
        UNREGISTERED_CAMPAIGNS,
        Unit::Count,
        "Campaigns missing from the registry that have counters of their own (at most max_unregistered_campaigns)."
    );
    describe_gauge!(
        LEARNERS,
        Unit::Count,
        "Distinct learners over the programme."
    );
    describe_gauge!(
        CAMPAIGN_LEARNERS,
        Unit::Count,
        "(campaign, learner) records held."
    );
    describe_gauge!(
        EVENT_IDS,
        Unit::Count,
        "Event ids remembered for deduplication."
    );
}

/// Why a whole ingest request is refused, by transport: the edges' own reasons, then the
/// pipeline's (`pipeline::Refusal::reason`).
const REQUEST_REFUSALS: [(Transport, &[&str]); 2] = [
    (Transport::Grpc, &["batch_too_large", "request_too_large"]),
    (
        Transport::Http,
        &["batch_too_large", "request_too_large", "invalid_body"],
    ),
];

/// Every `pipeline::Refusal::reason`: the pipeline's refusals of a whole submission (a test of
/// the pipeline keeps the two in step).
pub const PIPELINE_REFUSALS: [&str; 5] = [
    "overloaded",
    "shutting_down",
    "disk_full",
    "storage_unwritable",
    "out_of_sequence",
];

/// Why each listener closes a connection before serving it (`listener::accept`, `serve_http`).
pub const CONNECTION_REFUSALS: [(&str, [&str; 3]); 2] = [
    (
        "grpc",
        ["too_many_connections", "handshake_timeout", "not_http2"],
    ),
    (
        "http",
        [
            "too_many_connections",
            "handshake_timeout",
            "header_read_timeout",
        ],
    ),
];

/// The settings whose bound sheds requests (`http::Bound`), the reasons of
/// [`REQUESTS_SHED`].
pub const SHEDDING_BOUNDS: [&str; 2] = ["max_concurrent_ingest_requests", "max_concurrent_reports"];

/// Every series exists from the start, at zero for each label value it can have: a panel over
/// a series that appears only with its first event shows "No data", and a `rate()` alert over
/// it misses that first event. Histograms registered without a sample export their `_count`
/// and `_sum` at zero. (Per-sink series: [`register_sink`]; Kafka's: [`register_kafka`].)
fn register_failure_series() {
    for cause in [JOURNAL_CAUSE_DISK_FULL, JOURNAL_CAUSE_UNWRITABLE] {
        counter!(JOURNAL_FAILURES, "cause" => cause).increment(0);
    }
    counter!(CHECKPOINTS).increment(0);
    counter!(CHECKPOINT_FAILURES).increment(0);
    counter!(CAMPAIGNS_SEVERAL_SOURCES).increment(0);
    counter!(CAMPAIGNS_RELEASED).increment(0);
    counter!(CHECKPOINTS_REJECTED).increment(0);
    counter!(JOURNAL_BYTES).increment(0);
    counter!(JOURNAL_RECORDS).increment(0);
    counter!(JOURNAL_TORN_BYTES).increment(0);
    // Registered: the handle itself is not needed.
    let _ = histogram!(CHECKPOINT_DURATION);
    // Registered: the handle itself is not needed.
    let _ = histogram!(JOURNAL_FSYNC_DURATION);
    gauge!(CHECKPOINT_BYTES).set(0.0);
    gauge!(INGEST_QUEUE_EVENTS).set(0.0);
    for (listener, reasons) in CONNECTION_REFUSALS {
        for reason in reasons {
            counter!(CONNECTIONS_REFUSED, "transport" => listener, "reason" => reason).increment(0);
        }
        gauge!(CONNECTIONS_OPEN, "transport" => listener).increment(0.0);
    }
    for bound in SHEDDING_BOUNDS {
        counter!(REQUESTS_SHED, "reason" => bound).increment(0);
    }
    for (transport, edge_refusals) in REQUEST_REFUSALS {
        register_transport(transport);
        for reason in edge_refusals.iter().chain(&PIPELINE_REFUSALS[..4]) {
            counter!(REQUESTS_REFUSED, "transport" => transport.as_str(), "reason" => *reason)
                .increment(0);
        }
    }
}

/// The series of events that came in over `transport`, at zero.
fn register_transport(transport: Transport) {
    let transport = transport.as_str();
    for name in [
        EVENTS_RECEIVED,
        EVENTS_ACCEPTED,
        EVENTS_DUPLICATE,
        EVENTS_CONFLICTING,
    ] {
        counter!(name, "transport" => transport).increment(0);
    }
    for reason in RejectReason::CODES {
        counter!(EVENTS_REJECTED, "transport" => transport, "reason" => reason).increment(0);
    }
    // Registered: the handle itself is not needed.
    let _ = histogram!(BATCH_EVENTS, "transport" => transport);
    // Registered: the handle itself is not needed.
    let _ = histogram!(INGEST_DURATION, "transport" => transport);
    // Kafka has no query API; registering its query series would show a panel that never moves.
    if transport != Transport::Kafka.as_str() {
        // Registered: the handle itself is not needed.
        let _ = histogram!(QUERY_DURATION, "transport" => transport);
    }
}

/// Makes the Kafka series exist at zero once Kafka is on (those of each partition, from its
/// first lag reading: see [`record_kafka_lag`]).
pub fn register_kafka() {
    register_transport(Transport::Kafka);
    for reason in RejectReason::CODES {
        counter!(KAFKA_DEAD_LETTERS, "reason" => reason).increment(0);
    }
    for reason in PIPELINE_REFUSALS {
        counter!(KAFKA_BATCHES_RETRIED, "reason" => reason).increment(0);
    }
    counter!(KAFKA_DEAD_LETTER_FAILURES).increment(0);
    counter!(KAFKA_COMMIT_FAILURES).increment(0);
    counter!(KAFKA_STOP_TIMEOUTS).increment(0);
    for kind in ["assign", "revoke"] {
        counter!(KAFKA_REBALANCES, "kind" => kind).increment(0);
    }
    for cause in PAUSE_CAUSES {
        counter!(KAFKA_PAUSED_SECONDS, "cause" => cause).increment(0);
    }
    gauge!(KAFKA_ASSIGNED).set(0.0);
}

/// Why Kafka consumption pauses: the aggregate is behind, the journal cannot be written, or the
/// dead-letter topic cannot be written.
pub const PAUSE_CAUSES: [&str; 3] = ["backpressure", "storage", "dead_letter"];

/// Records the messages consumed from one partition.
pub fn record_kafka_messages(topic: &str, partition: i32, messages: u64) {
    counter!(KAFKA_MESSAGES, "topic" => topic.to_owned(), "partition" => partition.to_string())
        .increment(messages);
}

/// Records the lag of one assigned partition.
#[allow(clippy::cast_precision_loss)] // Lags stay far below 2^52.
pub fn record_kafka_lag(topic: &str, partition: i32, lag: i64) {
    let labels = [
        ("topic", topic.to_owned()),
        ("partition", partition.to_string()),
    ];
    gauge!(KAFKA_LAG, &labels).set(lag.max(0) as f64);
    // A partition's message count exists, at zero, from when it is known here (the first lag
    // reading after its assignment), not from its first message.
    counter!(KAFKA_MESSAGES, &labels).increment(0);
}

/// Forgets the lag series of a partition no longer assigned here.
pub fn forget_kafka_lag(topic: &str, partition: i32) {
    gauge!(KAFKA_LAG, "topic" => topic.to_owned(), "partition" => partition.to_string()).set(0.0);
}

/// Records the partitions assigned here after a rebalance of `kind` (assign or revoke).
#[allow(clippy::cast_precision_loss)] // Partition counts are small.
pub fn record_kafka_rebalance(kind: &'static str, assigned: usize) {
    counter!(KAFKA_REBALANCES, "kind" => kind).increment(1);
    gauge!(KAFKA_ASSIGNED).set(assigned as f64);
}

/// Records one message sent to the dead-letter topic.
pub fn record_dead_letter(reason: &'static str) {
    counter!(KAFKA_DEAD_LETTERS, "reason" => reason).increment(1);
}

/// Records a failed write to the dead-letter topic.
pub fn record_dead_letter_failure() {
    counter!(KAFKA_DEAD_LETTER_FAILURES).increment(1);
}

/// Records the whole time Kafka consumption was paused for `cause` (one of [`PAUSE_CAUSES`]).
pub fn record_kafka_paused(cause: &'static str, total: Duration) {
    counter!(KAFKA_PAUSED_SECONDS, "cause" => cause).absolute(total.as_secs());
}

/// Records a Kafka batch refused and read again.
pub fn record_kafka_retry(reason: &'static str) {
    counter!(KAFKA_BATCHES_RETRIED, "reason" => reason).increment(1);
}

/// Records a failed offset commit.
pub fn record_kafka_commit_failure() {
    counter!(KAFKA_COMMIT_FAILURES).increment(1);
}

/// Records a shutdown that stopped waiting for the Kafka consumer thread.
pub fn record_kafka_stop_timeout() {
    counter!(KAFKA_STOP_TIMEOUTS).increment(1);
}

/// Records a campaign that gained a second source.
pub fn record_campaign_with_several_sources() {
    counter!(CAMPAIGNS_SEVERAL_SOURCES).increment(1);
}

/// Records campaigns released to another instance.
pub fn record_campaigns_released(campaigns: usize) {
    counter!(CAMPAIGNS_RELEASED).increment(campaigns as u64);
}

/// Records events counted under `unregistered` for lack of room for their own campaign.
pub fn record_events_redirected_to_unregistered(events: u64) {
    counter!(EVENTS_UNREGISTERED).increment(events);
}

/// Makes the snapshot counters of `sink` exist at zero before its first snapshot, for the same
/// reason as the failure counters.
pub fn register_sink(sink: &'static str) {
    counter!(SNAPSHOTS, "sink" => sink).increment(0);
    counter!(SNAPSHOT_FAILURES, "sink" => sink).increment(0);
    counter!(SNAPSHOT_ROWS_SET_ASIDE, "sink" => sink).increment(0);
    // Registered: the handle itself is not needed.
    let _ = histogram!(SNAPSHOT_DURATION, "sink" => sink);
}

/// The tally of one ingest request.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchTally {
    pub received: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub conflicts: u64,
}

/// Records one ingest request: its size, outcome and duration.
pub fn record_batch(
    transport: Transport,
    tally: BatchTally,
    rejected: &[RejectReason],
    elapsed: Duration,
) {
    let transport = transport.as_str();
    counter!(EVENTS_RECEIVED, "transport" => transport).increment(tally.received);
    counter!(EVENTS_ACCEPTED, "transport" => transport).increment(tally.accepted);
    counter!(EVENTS_DUPLICATE, "transport" => transport).increment(tally.duplicates);
    counter!(EVENTS_CONFLICTING, "transport" => transport).increment(tally.conflicts);
    for reason in rejected {
        counter!(EVENTS_REJECTED, "transport" => transport, "reason" => reason.code()).increment(1);
    }
    #[allow(clippy::cast_precision_loss)] // A batch holds at most a few million events.
    histogram!(BATCH_EVENTS, "transport" => transport).record(tally.received as f64);
    histogram!(INGEST_DURATION, "transport" => transport).record(elapsed.as_secs_f64());
}

/// Records a request refused whole, with the events it carried.
pub fn record_refused(transport: Transport, reason: &'static str, events: usize) {
    let transport = transport.as_str();
    counter!(REQUESTS_REFUSED, "transport" => transport, "reason" => reason).increment(1);
    counter!(EVENTS_RECEIVED, "transport" => transport).increment(events as u64);
}

/// Records a connection closed before it was served.
pub fn record_connection_refused(listener: &'static str, reason: &'static str) {
    counter!(CONNECTIONS_REFUSED, "transport" => listener, "reason" => reason).increment(1);
}

/// Records a connection opened (`1.0`) or closed (`-1.0`).
pub fn record_connection_open(listener: &'static str, change: f64) {
    gauge!(CONNECTIONS_OPEN, "transport" => listener).increment(change);
}

/// Records an HTTP request shed by `bound`.
pub fn record_request_shed(bound: &'static str) {
    counter!(REQUESTS_SHED, "reason" => bound).increment(1);
}

/// Records the time to answer one query.
pub fn record_query(transport: Transport, elapsed: Duration) {
    histogram!(QUERY_DURATION, "transport" => transport.as_str()).record(elapsed.as_secs_f64());
}

/// Records the events waiting in the ingest queue.
#[allow(clippy::cast_precision_loss)] // The queue is bounded far below 2^52.
pub fn record_queue(events: usize) {
    gauge!(INGEST_QUEUE_EVENTS).set(events as f64);
}

/// Records what the aggregator holds.
#[allow(clippy::cast_precision_loss)] // Sizes stay far below 2^52.
pub fn record_holdings(holdings: Holdings) {
    gauge!(CAMPAIGNS).set(holdings.campaigns as f64);
    gauge!(UNREGISTERED_CAMPAIGNS).set(holdings.unregistered_campaigns as f64);
    gauge!(LEARNERS).set(holdings.learners as f64);
    gauge!(CAMPAIGN_LEARNERS).set(holdings.campaign_learners as f64);
    gauge!(EVENT_IDS).set(holdings.event_ids as f64);
}

/// Records one snapshot written to `sink`, or failed.
pub fn record_snapshot(sink: &'static str, elapsed: Duration, ok: bool) {
    histogram!(SNAPSHOT_DURATION, "sink" => sink).record(elapsed.as_secs_f64());
    if ok {
        counter!(SNAPSHOTS, "sink" => sink).increment(1);
    } else {
        counter!(SNAPSHOT_FAILURES, "sink" => sink).increment(1);
    }
}

/// Records rows a sink's store refused and the sink set aside.
pub fn record_rows_set_aside(sink: &'static str, rows: u64) {
    counter!(SNAPSHOT_ROWS_SET_ASIDE, "sink" => sink).increment(rows);
}

/// Records one journal append and the time its fsync took (zero when it did not sync).
pub fn record_journal_append(bytes: u64, fsync: Duration) {
    counter!(JOURNAL_BYTES).increment(bytes);
    counter!(JOURNAL_RECORDS).increment(1);
    if !fsync.is_zero() {
        histogram!(JOURNAL_FSYNC_DURATION).record(fsync.as_secs_f64());
    }
}

/// Records a failed journal append, by the refusal it caused.
pub fn record_journal_failure(disk_full: bool) {
    let cause = if disk_full {
        JOURNAL_CAUSE_DISK_FULL
    } else {
        JOURNAL_CAUSE_UNWRITABLE
    };
    counter!(JOURNAL_FAILURES, "cause" => cause).increment(1);
}

/// Records one checkpoint, written or failed.
#[allow(clippy::cast_precision_loss)] // Checkpoints stay far below 2^52 bytes.
pub fn record_checkpoint(elapsed: Duration, bytes: u64, ok: bool) {
    histogram!(CHECKPOINT_DURATION).record(elapsed.as_secs_f64());
    if ok {
        counter!(CHECKPOINTS).increment(1);
        gauge!(CHECKPOINT_BYTES).set(bytes as f64);
    } else {
        counter!(CHECKPOINT_FAILURES).increment(1);
    }
}

/// Records what recovery did.
#[allow(clippy::cast_precision_loss)] // Replayed events stay far below 2^52.
pub fn record_recovery(report: &RecoveryReport) {
    gauge!(RECOVERY_DURATION).set(report.duration.as_secs_f64());
    gauge!(RECOVERY_EVENTS).set(report.events_replayed as f64);
    counter!(JOURNAL_TORN_BYTES).increment(report.torn_bytes);
    counter!(CHECKPOINTS_REJECTED).increment(report.checkpoints_rejected.len() as u64);
}
