//! The recording side of telemetry: the `record_*` helpers other modules call with the causes
//! they observed (given as values: this file imports no stage above it but the plain types it
//! reads), and the registration at zero of every series the service can have, so that each one
//! exists from the start. Metric names and the label values registered at zero come from
//! `spec.rs`; nothing here spells a metric name.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use super::Transport;
use super::spec::*;
use crate::aggregate::Holdings;
use crate::durable::recover::RecoveryReport;
use crate::event::RejectReason;

/// Every series exists from the start, at zero for each label value it can have: a panel over
/// a series that appears only with its first event shows "No data", and a `rate()` alert over
/// it misses that first event. Histograms registered without a sample export their `_count`
/// and `_sum` at zero. (Per-sink series: [`register_sink`]; Kafka's: [`register_kafka`].)
pub(super) fn register_failure_series() {
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
    counter!(TLS_RELOADS).increment(0);
    counter!(TLS_RELOAD_FAILURES).increment(0);
    // Registered: the handle itself is not needed.
    let _ = histogram!(CHECKPOINT_DURATION);
    // Registered: the handle itself is not needed.
    let _ = histogram!(CHECKPOINT_PAUSE);
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
    for cause in AUTH_FAILURE_CAUSES {
        counter!(AUTH_FAILURES, "cause" => cause).increment(0);
    }
    for outcome in ["ok", "failed"] {
        counter!(CREDENTIALS_RELOADS, "outcome" => outcome).increment(0);
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
    for reason in XAPI_IGNORED_REASONS {
        counter!(XAPI_IGNORED, "reason" => reason).increment(0);
    }
    for reason in CALIPER_IGNORED_REASONS {
        counter!(CALIPER_EVENTS_IGNORED, "reason" => reason).increment(0);
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
    // Kafka and Caliper have no query API; registering their query series would show a panel
    // that never moves.
    if transport != Transport::Kafka.as_str() && transport != Transport::Caliper.as_str() {
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
    for kind in REBALANCE_KINDS {
        counter!(KAFKA_REBALANCES, "kind" => kind).increment(0);
    }
    for cause in PAUSE_CAUSES {
        counter!(KAFKA_PAUSED_SECONDS, "cause" => cause).increment(0);
    }
    gauge!(KAFKA_ASSIGNED).set(0.0);
}

/// Makes the series of scale-out over Kafka exist at zero (`forward_to_kafka`), those of each
/// of the `shards` shards included.
pub fn register_partials(shards: usize) {
    counter!(KAFKA_MOVED).increment(0);
    counter!(PARTIALS_FAILURES).increment(0);
    counter!(SHARDS_RESTORED).increment(0);
    for (transport, _) in REQUEST_REFUSALS {
        counter!(REQUESTS_REFUSED, "transport" => transport.as_str(), "reason" => "kafka_unavailable")
            .increment(0);
    }
    for shard in 0..shards {
        record_shard(shard, false, None, None);
    }
}

/// Records what is known here of one shard: whether it is counted here, how many of its
/// events its newest partials leave out, and how old they are.
#[allow(clippy::cast_precision_loss)] // Lags stay far below 2^52.
pub fn record_shard(shard: usize, owned: bool, lag: Option<i64>, age: Option<Duration>) {
    let shard = shard.to_string();
    gauge!(SHARD_OWNED, "shard" => shard.clone()).set(if owned { 1.0 } else { 0.0 });
    gauge!(SHARD_LAG, "shard" => shard.clone()).set(lag.unwrap_or(0).max(0) as f64);
    gauge!(SHARD_AGE, "shard" => shard).set(age.map_or(0.0, |age| age.as_secs_f64()));
}

/// Records messages moved to their learner's partition.
pub fn record_kafka_moved(messages: u64) {
    counter!(KAFKA_MOVED).increment(messages);
}

/// Records a shard restored from its parked state.
pub fn record_shard_restored() {
    counter!(SHARDS_RESTORED).increment(1);
}

/// Records a failed write to the partials topic.
pub fn record_partials_failure() {
    counter!(PARTIALS_FAILURES).increment(1);
}

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

/// Records a request refused for its credential (`cause`: one of [`AUTH_FAILURE_CAUSES`]).
pub fn record_auth_failure(cause: &'static str) {
    counter!(AUTH_FAILURES, "cause" => cause).increment(1);
}

/// Records how many credentials are in force.
pub fn record_credentials(active: usize) {
    #[allow(clippy::cast_precision_loss)] // A few hundred credentials at most.
    gauge!(CREDENTIALS).set(active as f64);
}

/// Records a reload of the credentials file.
pub fn record_credentials_reload(ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    counter!(CREDENTIALS_RELOADS, "outcome" => outcome).increment(1);
}

/// Registers a credential's event series at zero, so that its rates exist before it sends.
pub fn register_credential(credential: &str) {
    for outcome in CREDENTIAL_OUTCOMES {
        counter!(CREDENTIAL_EVENTS, "credential" => credential.to_owned(), "outcome" => outcome)
            .increment(0);
    }
}

/// Records what became of `events` sent with `credential` (`outcome`: one of
/// [`CREDENTIAL_OUTCOMES`]).
pub fn record_credential_events(credential: &str, outcome: &'static str, events: u64) {
    if events > 0 {
        counter!(CREDENTIAL_EVENTS, "credential" => credential.to_owned(), "outcome" => outcome)
            .increment(events);
    }
}

/// Records a connection closed before it was served.
pub fn record_connection_refused(listener: &'static str, reason: &'static str) {
    counter!(CONNECTIONS_REFUSED, "transport" => listener, "reason" => reason).increment(1);
}

/// Records a connection opened (`1.0`) or closed (`-1.0`).
pub fn record_connection_open(listener: &'static str, change: f64) {
    gauge!(CONNECTIONS_OPEN, "transport" => listener).increment(change);
}

/// Records a change of the TLS files, loaded (`true`) or not.
pub fn record_tls_reload(loaded: bool) {
    counter!(if loaded {
        TLS_RELOADS
    } else {
        TLS_RELOAD_FAILURES
    })
    .increment(1);
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

/// Records what the aggregator of `shard` holds, with `campaigns` held by some shard and the
/// `unregistered` ones among them (the process's, as every shard sees them), and of its ids
/// those in id runs and the bytes of their filters. The learners, their records and the ids
/// are by shard: each is in one shard only, so their sums are the process's.
#[allow(clippy::cast_precision_loss)] // Sizes stay far below 2^52.
pub fn record_holdings(
    shard: usize,
    holdings: Holdings,
    (campaigns, unregistered): (usize, usize),
    (ids_in_runs, filter_bytes): (usize, usize),
) {
    gauge!(CAMPAIGNS).set(campaigns as f64);
    gauge!(UNREGISTERED_CAMPAIGNS).set(unregistered as f64);
    let shard = shard.to_string();
    gauge!(LEARNERS, "shard" => shard.clone()).set(holdings.learners as f64);
    gauge!(CAMPAIGN_LEARNERS, "shard" => shard.clone()).set(holdings.campaign_learners as f64);
    gauge!(EVENT_IDS, "shard" => shard.clone()).set(holdings.event_ids as f64);
    gauge!(EVENT_IDS_IN_RUNS, "shard" => shard.clone()).set(ids_in_runs as f64);
    gauge!(EVENT_ID_FILTER_BYTES, "shard" => shard).set(filter_bytes as f64);
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

/// Records how long a checkpoint stopped the writer.
pub fn record_checkpoint_pause(paused: Duration) {
    histogram!(CHECKPOINT_PAUSE).record(paused.as_secs_f64());
}

/// Records what the recovery of `shard` did.
#[allow(clippy::cast_precision_loss)] // Replayed events stay far below 2^52.
pub fn record_recovery(shard: usize, report: &RecoveryReport) {
    let shard = shard.to_string();
    gauge!(RECOVERY_DURATION, "shard" => shard.clone()).set(report.duration.as_secs_f64());
    gauge!(RECOVERY_EVENTS, "shard" => shard).set(report.events_replayed as f64);
    counter!(JOURNAL_TORN_BYTES).increment(report.torn_bytes);
    counter!(CHECKPOINTS_REJECTED).increment(report.checkpoints_rejected.len() as u64);
}

/// Records xAPI statements acknowledged and not counted, for `reason`
/// (one of `XAPI_IGNORED_REASONS`).
pub fn record_xapi_ignored(reason: &'static str, statements: u64) {
    counter!(XAPI_IGNORED, "reason" => reason).increment(statements);
}

/// Records Caliper envelope items acknowledged but not counted (`reason`: one of
/// [`CALIPER_IGNORED_REASONS`]).
pub fn record_caliper_ignored(reason: &'static str, items: u64) {
    counter!(CALIPER_EVENTS_IGNORED, "reason" => reason).increment(items);
}
