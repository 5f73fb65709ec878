//! Logs and metrics. Every metric suivi exports is named here, with its help text, so this file
//! is the specification of `/metrics`: counters end in `_total`, durations are in seconds, labels
//! have few values (transport, result, reason, sink; never a learner, an event id or a
//! campaign). Other modules record through the helpers below and never spell a metric name.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::aggregate::Holdings;
use crate::config::LogFormat;
use crate::event::RejectReason;
use crate::pipeline::Refusal;
use crate::recovery::RecoveryReport;

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
/// overloaded, shutting_down).
pub const REQUESTS_REFUSED: &str = "suivi_ingest_requests_refused_total";
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

/// Where an event came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

impl Transport {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// Starts structured logging; the level comes from `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests start many services in one process) keeps the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Installs the process-wide Prometheus recorder once, and describes every metric.
pub fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
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
    }
    Ok(HANDLE.get_or_init(|| handle).clone())
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

/// Records one journal append and the time its fsync took (zero when it did not sync).
pub fn record_journal_append(bytes: u64, fsync: Duration) {
    counter!(JOURNAL_BYTES).increment(bytes);
    counter!(JOURNAL_RECORDS).increment(1);
    if !fsync.is_zero() {
        histogram!(JOURNAL_FSYNC_DURATION).record(fsync.as_secs_f64());
    }
}

/// Records a failed journal append, by the refusal it caused.
pub fn record_journal_failure(refusal: Refusal) {
    let cause = match refusal {
        Refusal::DiskFull => "disk_full",
        _ => "unwritable",
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
