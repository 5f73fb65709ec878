//! Logs and metrics. The metrics are specified in `spec.rs`, one table of every family with
//! its name, kind, unit, labels and help (the specification of `/metrics`): counters end in
//! `_total`, durations are in seconds, sizes in bytes, ratios are `_ratio` from 0 to 1, and
//! labels have few values (transport, reason, cause, sink, chapter; never a learner, a visitor
//! or an event id). Other modules record through the helpers of `record.rs` and never spell a
//! metric name. This file starts logging and installs the recorder, describing each metric
//! from the table.
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

mod record;
pub mod spec;

use std::sync::OnceLock;

use metrics::{KeyName, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::LogFormat;

pub use record::*;
pub use spec::*;

/// Where an event came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
    Kafka,
    /// xAPI statements (`POST`/`PUT /xAPI/statements`).
    Xapi,
    /// `POST /caliper`.
    Caliper,
}

impl Transport {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
            Transport::Kafka => "kafka",
            Transport::Xapi => "xapi",
            Transport::Caliper => "caliper",
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
        record::register_failure_series();
    }
    Ok(handle)
}

/// Gives the recorder the unit and help of every metric it records, from [`METRICS`].
fn describe() {
    metrics::with_recorder(|recorder| {
        for metric in METRICS
            .iter()
            .filter(|metric| metric.written == Written::Recorded)
        {
            let name = KeyName::from_const_str(metric.name);
            let help = SharedString::const_str(metric.help);
            match metric.kind {
                Kind::Counter => recorder.describe_counter(name, metric.unit, help),
                Kind::Gauge => recorder.describe_gauge(name, metric.unit, help),
                Kind::Histogram => recorder.describe_histogram(name, metric.unit, help),
            }
        }
    });
}

/// An error and its causes, `outer: cause: …`: how every log line writes an error, under the key
/// `error` (`tracing::warn!(error = %telemetry::chain(&error), "…")`; for an `anyhow::Error`,
/// `chain(error.as_ref())`).
pub fn chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> Chain<'a> {
    Chain(error)
}

/// See [`chain`].
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_logged_with_its_causes() {
        let cause = std::io::Error::other("disk full");
        assert_eq!(chain(&cause).to_string(), "disk full");
        let error = anyhow::Error::new(cause).context("cannot append to the journal");
        assert_eq!(
            chain(error.as_ref()).to_string(),
            "cannot append to the journal: disk full"
        );
        assert_eq!(chain(error.as_ref()).to_string(), format!("{error:#}"));
    }
}
