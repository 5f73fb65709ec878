//! The specification of `/metrics`: every metric suivi exports, defined once in [`METRICS`] by
//! its name, kind, unit, labels and help text, and the label values the series are registered
//! with at zero. The `pub const` names other modules record through are generated from the same
//! rows, so a name cannot exist without its help, and the help shown by `/metrics` (`describe`
//! for the recorded metrics, `query::metrics` for the scrape-time gauges) is the one written here.
//! This file records nothing and imports no stage.

use metrics::Unit;

/// What a metric is, as the Prometheus `# TYPE` line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Who writes a metric's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The process-wide `metrics` recorder, as things happen (through `telemetry::record_*`).
    Recorded,
    /// `query::metrics::render_figures`, from the read model of the service scraped, at scrape
    /// time; the recorder never sees these.
    AtScrape,
}

/// One metric family of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// `None` for a ratio from 0 to 1, which `metrics::Unit` has no word for.
    pub unit: Option<Unit>,
    /// Every label its series can carry (besides the exporter's own `le` and `quantile`).
    pub labels: &'static [&'static str],
    pub help: &'static str,
    pub written: Written,
}

/// The metric of `name`, if suivi exports one.
pub fn metric(name: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|metric| metric.name == name)
}

/// The help text of `name` (empty for a name that is not in [`METRICS`], which the metrics
/// tests rule out for every family exported).
pub fn help(name: &str) -> &'static str {
    metric(name).map_or("", |metric| metric.help)
}

const COUNT: Option<Unit> = Some(Unit::Count);
const SECONDS: Option<Unit> = Some(Unit::Seconds);
const BYTES: Option<Unit> = Some(Unit::Bytes);
const RATIO: Option<Unit> = None;

/// Defines each metric's `pub const` name (documented by its help text) and its row of
/// [`METRICS`], from one line each.
macro_rules! specify {
    ($(
        $written:ident {
            $($constant:ident: $kind:ident $name:literal, $unit:expr, [$($label:literal),*], $help:literal;)*
        }
    )*) => {
        $($(
            #[doc = $help]
            pub const $constant: &str = $name;
        )*)*

        /// Every metric suivi exports.
        pub const METRICS: &[Metric] = &[$($(
            Metric {
                name: $constant,
                kind: Kind::$kind,
                unit: $unit,
                labels: &[$($label),*],
                help: $help,
                written: Written::$written,
            },
        )*)*];
    };
}

specify! {
    Recorded {
        EVENTS_RECEIVED: Counter "suivi_events_received_total", COUNT, ["transport"],
            "Learner events received, by transport.";
        EVENTS_ACCEPTED: Counter "suivi_events_accepted_total", COUNT, ["transport"],
            "Events counted for the first time, by transport.";
        EVENTS_DUPLICATE: Counter "suivi_events_duplicate_total", COUNT, ["transport"],
            "Events whose event_id was already seen, by transport.";
        EVENTS_CONFLICTING: Counter "suivi_events_conflicting_total", COUNT, ["transport"],
            "Duplicate events whose content differs from the first with their id, by transport.";
        EVENTS_REJECTED: Counter "suivi_events_rejected_total", COUNT, ["transport", "reason"],
            "Events rejected, by transport and reason.";
        REQUESTS_REFUSED: Counter "suivi_ingest_requests_refused_total", COUNT,
            ["transport", "reason"],
            "Ingest requests refused whole, by transport and reason.";
        CONNECTIONS_REFUSED: Counter "suivi_connections_refused_total", COUNT,
            ["transport", "reason"],
            "Connections closed before being served, by transport (listener) and reason.";
        CONNECTIONS_OPEN: Gauge "suivi_open_connections", COUNT, ["transport"],
            "Connections open, by listener.";
        TLS_RELOADS: Counter "suivi_tls_reloads_total", COUNT, [],
            "Changes of the TLS files (tls_cert, tls_key, tls_client_ca) loaded and used for new connections.";
        TLS_RELOAD_FAILURES: Counter "suivi_tls_reload_failures_total", COUNT, [],
            "Changes of the TLS files that could not be loaded; the previous certificate stayed in use.";
        REQUESTS_SHED: Counter "suivi_http_requests_shed_total", COUNT, ["reason"],
            "HTTP requests answered 503 because their bound was reached, by reason (the bound's setting).";
        BATCH_EVENTS: Histogram "suivi_ingest_batch_events", COUNT, ["transport"],
            "Events per ingest request, by transport.";
        INGEST_DURATION: Histogram "suivi_ingest_request_duration_seconds", SECONDS,
            ["transport"],
            "Time to answer an ingest request, by transport.";
        QUERY_DURATION: Histogram "suivi_query_request_duration_seconds", SECONDS, ["transport"],
            "Time to answer a query, by transport.";
        INGEST_QUEUE_EVENTS: Gauge "suivi_ingest_queue_events", COUNT, [],
            "Events waiting in the ingest queue.";
        SNAPSHOT_DURATION: Histogram "suivi_snapshot_duration_seconds", SECONDS, ["sink"],
            "Time to write one snapshot, by sink.";
        SNAPSHOTS: Counter "suivi_snapshots_total", COUNT, ["sink"],
            "Snapshots written, by sink.";
        SNAPSHOT_FAILURES: Counter "suivi_snapshot_failures_total", COUNT, ["sink"],
            "Snapshots that failed and will be retried, by sink.";
        SNAPSHOT_ROWS_SET_ASIDE: Counter "suivi_snapshot_rows_set_aside_total", COUNT, ["sink"],
            "Rows a sink's store refused, left out of snapshots otherwise written, by sink.";
        JOURNAL_BYTES: Counter "suivi_journal_appended_bytes_total", BYTES, [],
            "Bytes appended to the journal.";
        JOURNAL_RECORDS: Counter "suivi_journal_records_total", COUNT, [],
            "Records (groups of batches) appended to the journal.";
        JOURNAL_FSYNC_DURATION: Histogram "suivi_journal_fsync_duration_seconds", SECONDS, [],
            "Time to fsync one journal record, with fsync = always.";
        JOURNAL_FAILURES: Counter "suivi_journal_append_failures_total", COUNT, ["cause"],
            "Journal appends that failed, by cause; their groups were refused.";
        JOURNAL_TORN_BYTES: Counter "suivi_journal_torn_bytes_total", BYTES, [],
            "Bytes of torn journal tail cut off at recovery.";
        CHECKPOINTS: Counter "suivi_checkpoints_total", COUNT, [],
            "Checkpoints written.";
        CHECKPOINT_FAILURES: Counter "suivi_checkpoint_failures_total", COUNT, [],
            "Checkpoints that failed.";
        CHECKPOINT_DURATION: Histogram "suivi_checkpoint_duration_seconds", SECONDS, [],
            "Time to encode and write one checkpoint.";
        CHECKPOINT_PAUSE: Histogram "suivi_checkpoint_pause_seconds", SECONDS, [],
            "How long a checkpoint stopped ingestion: its journal segment started and the state frozen; the encoding and writing go on beside.";
        CHECKPOINT_BYTES: Gauge "suivi_checkpoint_size_bytes", BYTES, [],
            "Size of the last checkpoint written.";
        CHECKPOINTS_REJECTED: Counter "suivi_checkpoints_rejected_total", COUNT, [],
            "Checkpoints found unusable at recovery.";
        RECOVERY_DURATION: Gauge "suivi_recovery_duration_seconds", SECONDS, ["shard"],
            "How long the last recovery of each shard took (the shards recover side by side).";
        RECOVERY_EVENTS: Gauge "suivi_recovery_replayed_events", COUNT, ["shard"],
            "Events replayed from each shard's journal by its last recovery.";
        CAMPAIGNS: Gauge "suivi_campaigns", COUNT, [],
            "Campaigns held.";
        LEARNERS: Gauge "suivi_learners", COUNT, ["shard"],
            "Distinct learners held, by shard (a learner is in one shard: their sum is the programme's).";
        CAMPAIGN_LEARNERS: Gauge "suivi_campaign_learners", COUNT, ["shard"],
            "(campaign, learner) records held, by shard.";
        EVENT_IDS: Gauge "suivi_event_ids", COUNT, ["shard"],
            "Event ids remembered for deduplication, by shard.";
        EVENT_IDS_IN_RUNS: Gauge "suivi_event_ids_in_runs", COUNT, ["shard"],
            "Of the event ids remembered, those in id runs on disk, looked up through a filter in memory, by shard.";
        EVENT_ID_FILTER_BYTES: Gauge "suivi_event_id_filter_bytes", BYTES, ["shard"],
            "Memory the filters of the id runs hold, by shard.";
        KAFKA_MESSAGES: Counter "suivi_kafka_messages_total", COUNT, ["topic", "partition"],
            "Kafka messages consumed, by topic and partition.";
        KAFKA_LAG: Gauge "suivi_kafka_lag_messages", COUNT, ["topic", "partition"],
            "Messages between each assigned partition's position and its end.";
        KAFKA_ASSIGNED: Gauge "suivi_kafka_assigned_partitions", COUNT, [],
            "Kafka partitions assigned to this instance.";
        KAFKA_DEAD_LETTERS: Counter "suivi_kafka_dead_letters_total", COUNT, ["reason"],
            "Kafka messages sent to the dead-letter topic, by reason.";
        KAFKA_DEAD_LETTER_FAILURES: Counter "suivi_kafka_dead_letter_failures_total", COUNT, [],
            "Failed writes to the dead-letter topic (retried, never dropped).";
        KAFKA_REBALANCES: Counter "suivi_kafka_rebalances_total", COUNT, ["kind"],
            "Consumer group rebalances, by kind (assign, revoke).";
        KAFKA_PAUSED_SECONDS: Counter "suivi_kafka_paused_seconds_total", SECONDS, ["cause"],
            "Time Kafka consumption was paused, by cause.";
        KAFKA_BATCHES_RETRIED: Counter "suivi_kafka_batches_retried_total", COUNT, ["reason"],
            "Kafka batches refused and read again, by reason.";
        KAFKA_MOVED: Counter "suivi_kafka_moved_messages_total", COUNT, [],
            "Kafka messages read from another partition than their learner's and written to it (forward_to_kafka).";
        SHARD_OWNED: Gauge "suivi_shard_owned", COUNT, ["shard"],
            "1 for each shard (Kafka partition) this instance counts, 0 for the others (forward_to_kafka).";
        SHARD_LAG: Gauge "suivi_shard_lag", COUNT, ["shard"],
            "Events in each shard's partitions that the partials read here do not reflect yet (forward_to_kafka).";
        SHARD_AGE: Gauge "suivi_shard_age_seconds", SECONDS, ["shard"],
            "Seconds since each shard's owner made the newest of its partials read here (forward_to_kafka).";
        SHARDS_RESTORED: Counter "suivi_shards_restored_total", COUNT, [],
            "Shards restored from the state parked when their partitions last went from here (forward_to_kafka).";
        PARTIALS_FAILURES: Counter "suivi_partials_publish_failures_total", COUNT, [],
            "Failed writes of partial counters to the partials topic (retried).";
        KAFKA_COMMIT_FAILURES: Counter "suivi_kafka_commit_failures_total", COUNT, [],
            "Failed offset commits to the consumer group.";
        KAFKA_STOP_TIMEOUTS: Counter "suivi_kafka_stop_timeouts_total", COUNT, [],
            "Shutdowns that left the Kafka consumer behind: it had not stopped within the shutdown grace.";
        CAMPAIGNS_SEVERAL_SOURCES: Counter "suivi_campaigns_with_several_sources_total", COUNT, [],
            "Campaigns that became fed by more than one Kafka partition, or by Kafka and gRPC/HTTP.";
        CAMPAIGNS_RELEASED: Counter "suivi_campaigns_released_total", COUNT, [],
            "Campaigns released to another instance with their Kafka partition.";
        EVENTS_UNREGISTERED: Counter "suivi_events_counted_as_unregistered_total", COUNT, [],
            "Events of campaigns missing from the registry counted under the campaign unregistered, because max_unregistered_campaigns of them already have counters of their own.";
        UNREGISTERED_CAMPAIGNS: Gauge "suivi_unregistered_campaigns", COUNT, [],
            "Campaigns missing from the registry that have counters of their own (at most max_unregistered_campaigns).";
        AUTH_FAILURES: Counter "suivi_auth_failures_total", COUNT, ["cause"],
            "Requests refused for their credential: no token, a malformed header, an unknown or revoked token, or a scope the credential does not grant.";
        CREDENTIALS: Gauge "suivi_credentials", COUNT, [],
            "Credentials in force (not revoked) from the credentials file.";
        CREDENTIALS_RELOADS: Counter "suivi_credentials_reloads_total", COUNT, ["outcome"],
            "Reloads of the credentials file, by outcome (ok, or failed: the credentials in force stayed).";
        CREDENTIAL_EVENTS: Counter "suivi_credential_events_total", COUNT, ["credential", "outcome"],
            "Events sent over gRPC and HTTP by credential: accepted, duplicate, rejected, or rate_limited (refused with their batch).";
        XAPI_IGNORED: Counter "suivi_xapi_statements_ignored_total", COUNT, ["reason"],
            "xAPI statements acknowledged and not counted, by reason: voided (voiding statements are not applied), not_a_learner (a group), unmapped_verb, unmapped_object, incomplete (progressed without completion).";
        CALIPER_EVENTS_IGNORED: Counter "suivi_caliper_events_ignored_total", COUNT, ["reason"],
            "Caliper envelope items acknowledged but not counted, by reason: an action or object the mapping does not count, a course grade not passing or without a score, an entity.";
    }

    // The business figures: only registered campaigns carry a `campaign` label (and `name`, on
    // suivi_campaign_info), at most max_campaign_metrics of them, so the registry and the
    // configuration bound the label's values, never what senders write in events.
    AtScrape {
        READY: Gauge "suivi_ready", COUNT, [],
            "1 when suivi has recovered its state and takes traffic, else 0.";
        PROGRAMME_CLICKS: Gauge "suivi_programme_clicks", COUNT, [],
            "The programme's distinct link clicks.";
        PROGRAMME_UNIQUE_VISITORS: Gauge "suivi_programme_unique_visitors", COUNT, [],
            "The programme's distinct visitors who clicked a link.";
        PROGRAMME_ENROLLED: Gauge "suivi_programme_enrolled_learners", COUNT, [],
            "The programme's distinct learners who enrolled.";
        PROGRAMME_STARTED: Gauge "suivi_programme_started_learners", COUNT, [],
            "The programme's distinct learners who started the course.";
        PROGRAMME_CHAPTER_COMPLETED: Gauge "suivi_programme_chapter_completed_learners", COUNT,
            ["chapter"],
            "The programme's distinct learners who completed each chapter.";
        PROGRAMME_CERTIFIED: Gauge "suivi_programme_certified_learners", COUNT, [],
            "The programme's distinct learners who were certified.";
        PROGRAMME_TARGET: Gauge "suivi_programme_target_learners", COUNT, [],
            "How many people the programme means to certify.";
        PROGRAMME_PROGRESS: Gauge "suivi_programme_progress_ratio", RATIO, [],
            "The programme's certified learners over its target.";
        CAMPAIGN_INFO: Gauge "suivi_campaign_info", COUNT, ["campaign", "name"],
            "1 per exported campaign, with its partner's name.";
        CAMPAIGN_CLICKS: Gauge "suivi_campaign_clicks", COUNT, ["campaign"],
            "Distinct link clicks, by registered campaign.";
        CAMPAIGN_UNIQUE_VISITORS: Gauge "suivi_campaign_unique_visitors", COUNT, ["campaign"],
            "Distinct visitors who clicked the link, by registered campaign.";
        CAMPAIGN_ENROLLED: Gauge "suivi_campaign_enrolled_learners", COUNT, ["campaign"],
            "Distinct learners who enrolled, by registered campaign.";
        CAMPAIGN_STARTED: Gauge "suivi_campaign_started_learners", COUNT, ["campaign"],
            "Distinct learners who started the course, by registered campaign.";
        CAMPAIGN_CERTIFIED: Gauge "suivi_campaign_certified_learners", COUNT, ["campaign"],
            "Distinct learners who were certified, by registered campaign.";
        CAMPAIGN_TARGET: Gauge "suivi_campaign_target_learners", COUNT, ["campaign"],
            "People the partner committed to train, by registered campaign with a target.";
        CAMPAIGN_PROGRESS: Gauge "suivi_campaign_progress_ratio", RATIO, ["campaign"],
            "Certified learners over the partner's target, by registered campaign with a target.";
        CAMPAIGN_METRICS_OMITTED: Gauge "suivi_campaign_metrics_omitted_campaigns", COUNT, [],
            "Registered campaigns left out of the per-campaign series by max_campaign_metrics.";
    }
}

// The label values every series is registered with at zero (`record::register_*`).

/// The `cause` of a journal append that failed on a full disk.
pub const JOURNAL_CAUSE_DISK_FULL: &str = "disk_full";
/// The `cause` of a journal append that failed for any other reason.
pub const JOURNAL_CAUSE_UNWRITABLE: &str = "unwritable";

/// Why a whole ingest request is refused, by transport: the edges' own reasons, then the
/// pipeline's (`pipeline::Refusal::reason`).
pub(super) const REQUEST_REFUSALS: [(super::Transport, &[&str]); 4] = [
    (
        super::Transport::Grpc,
        &["batch_too_large", "request_too_large", "rate_limited"],
    ),
    (
        super::Transport::Http,
        &[
            "batch_too_large",
            "request_too_large",
            "invalid_body",
            "rate_limited",
        ],
    ),
    (
        super::Transport::Xapi,
        &[
            "batch_too_large",
            "request_too_large",
            "invalid_body",
            "invalid_statement",
            "unsupported_version",
            "rate_limited",
        ],
    ),
    (
        super::Transport::Caliper,
        &[
            "batch_too_large",
            "request_too_large",
            "unsupported_media_type",
            "invalid_envelope",
            "event_rejected",
            "rate_limited",
        ],
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
/// `tls_handshake_failed`: with TLS on, a handshake that failed (plain text, no or a wrong client
/// certificate).
pub const CONNECTION_REFUSALS: [(&str, [&str; 4]); 2] = [
    (
        "grpc",
        [
            "too_many_connections",
            "handshake_timeout",
            "tls_handshake_failed",
            "not_http2",
        ],
    ),
    (
        "http",
        [
            "too_many_connections",
            "handshake_timeout",
            "tls_handshake_failed",
            "header_read_timeout",
        ],
    ),
];

/// The settings whose bound sheds requests (`http::Bound`), the reasons of
/// [`REQUESTS_SHED`].
/// The `cause` of an authentication or permission failure.
pub const AUTH_FAILURE_CAUSES: [&str; 7] = [
    "missing_token",
    "malformed_token",
    "unknown_token",
    "revoked_token",
    "permission_denied",
    "invalid_link",
    "expired_link",
];

/// The `outcome` of events sent with a credential.
pub const CREDENTIAL_OUTCOMES: [&str; 4] = ["accepted", "duplicate", "rejected", "rate_limited"];

pub const SHEDDING_BOUNDS: [&str; 2] = ["max_concurrent_ingest_requests", "max_concurrent_reports"];

/// Why Kafka consumption pauses: the aggregate is behind, the journal cannot be written, or the
/// dead-letter topic cannot be written.
pub const PAUSE_CAUSES: [&str; 3] = ["backpressure", "storage", "dead_letter"];

/// Why an xAPI statement is acknowledged and not counted (`standards::xapi::Ignored`).
pub const XAPI_IGNORED_REASONS: [&str; 5] = [
    "voided",
    "not_a_learner",
    "unmapped_verb",
    "unmapped_object",
    "incomplete",
];

/// The `kind` of a consumer group rebalance.
pub const REBALANCE_KINDS: [&str; 2] = ["assign", "revoke"];

/// Why a Caliper envelope item is ignored (`standards::caliper::Ignored::reason`; a test of
/// that module keeps the two in step).
pub const CALIPER_IGNORED_REASONS: [&str; 5] = [
    "unmapped_action",
    "unmapped_object",
    "grade_not_passing",
    "grade_without_score",
    "entity",
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_metric_is_specified_once_and_named_by_the_conventions() {
        let mut names = BTreeSet::new();
        for metric in METRICS {
            assert!(names.insert(metric.name), "{} twice", metric.name);
            assert!(metric.name.starts_with("suivi_"), "{}", metric.name);
            assert_eq!(
                metric.name.ends_with("_total"),
                metric.kind == Kind::Counter,
                "counters, and only they, end in _total: {}",
                metric.name
            );
            let base = metric.name.trim_end_matches("_total");
            match metric.unit {
                Some(Unit::Seconds) => assert!(base.ends_with("_seconds"), "{}", metric.name),
                Some(Unit::Bytes) => assert!(base.ends_with("_bytes"), "{}", metric.name),
                None => assert!(base.ends_with("_ratio"), "{}", metric.name),
                Some(_) => assert!(
                    !base.ends_with("_seconds") && !base.ends_with("_bytes"),
                    "{}",
                    metric.name
                ),
            }
            assert!(
                metric.help.ends_with('.') && !metric.help.contains('\n'),
                "{}: one sentence of help",
                metric.name
            );
            assert!(
                metric.written == Written::Recorded || metric.kind == Kind::Gauge,
                "the scrape-time metrics are gauges: {}",
                metric.name
            );
            // Never an id: the labels are few-valued (style.md).
            for label in metric.labels {
                assert!(
                    [
                        "transport",
                        "reason",
                        "cause",
                        "sink",
                        "kind",
                        "topic",
                        "partition",
                        // At most 64: the partitions of the topics with forward_to_kafka.
                        "shard",
                        "chapter",
                        "campaign",
                        "name",
                        "outcome",
                        // Bounded by the credentials file, which operators write.
                        "credential"
                    ]
                    .contains(label),
                    "{} has the label {label}",
                    metric.name
                );
                assert!(
                    !["campaign", "name"].contains(label) || metric.written == Written::AtScrape,
                    "only the business gauges carry a campaign: {}",
                    metric.name
                );
            }
        }
    }

    #[test]
    fn the_generated_names_are_the_rows_of_the_table() {
        assert_eq!(EVENTS_RECEIVED, "suivi_events_received_total");
        assert_eq!(
            metric(KAFKA_BATCHES_RETRIED).map(|metric| (metric.kind, metric.labels)),
            Some((Kind::Counter, &["reason"][..]))
        );
        assert_eq!(
            help(READY),
            "1 when suivi has recovered its state and takes traffic, else 0."
        );
        assert_eq!(help("suivi_not_a_metric"), "");
    }
}
