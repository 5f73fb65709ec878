//! Snapshots to downstream reporting: every `snapshot_interval`, and once more at shutdown, what
//! changed in [`Figures`] since the last snapshot (the counters of each changed campaign, the
//! totals, and the changed days of each timeline) goes to every configured sink. A sink that
//! fails keeps its snapshot pending, merged with later changes, and is retried at the next tick,
//! so nothing is skipped; the failure shows in metrics and logs. Sinks are a closed set
//! ([`Sink`]); the file sink is the first, PostgreSQL and Kafka come later.

pub mod file;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::day::Day;
use crate::figures::{CampaignCounters, Changes, DayCounters, Figures};
use crate::telemetry;

/// One snapshot: what changed, as of when it was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    pub changes: Changes,
}

/// A place snapshots go.
#[derive(Debug)]
pub enum Sink {
    File(file::FileSink),
}

impl Sink {
    /// The sink's metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Sink::File(_) => "file",
        }
    }

    /// Writes one snapshot, all of it or (on error) none of it.
    fn write(&mut self, snapshot: &Snapshot) -> anyhow::Result<()> {
        match self {
            Sink::File(sink) => sink.write(snapshot),
        }
    }
}

struct PendingSink {
    sink: Sink,
    /// Changes not yet written to this sink, oldest merged with newest.
    pending: Option<Changes>,
}

/// Writes snapshots every `interval` until `shutdown`, then writes a final one and returns.
pub async fn run(
    figures: Arc<Figures>,
    sinks: Vec<Sink>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut sinks: Vec<PendingSink> = sinks
        .into_iter()
        .map(|sink| PendingSink {
            sink,
            pending: None,
        })
        .collect();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = ticks.tick() => false,
            () = shutdown.cancelled() => true,
        };
        sinks = flush(&figures, sinks).await;
        if last {
            return;
        }
    }
}

/// Takes the figures' changes and writes them to every sink, off the async threads.
async fn flush(figures: &Figures, mut sinks: Vec<PendingSink>) -> Vec<PendingSink> {
    let changes = figures.take_changes();
    let taken_at = Utc::now();
    if !changes.campaigns.is_empty() {
        for sink in &mut sinks {
            sink.pending = Some(match sink.pending.take() {
                Some(older) => merge(older, changes.clone()),
                None => changes.clone(),
            });
        }
    }
    let written = tokio::task::spawn_blocking(move || {
        for pending in &mut sinks {
            let Some(changes) = pending.pending.take() else {
                continue;
            };
            let snapshot = Snapshot { taken_at, changes };
            let started = Instant::now();
            match pending.sink.write(&snapshot) {
                Ok(()) => telemetry::record_snapshot(pending.sink.name(), started.elapsed(), true),
                Err(error) => {
                    telemetry::record_snapshot(pending.sink.name(), started.elapsed(), false);
                    tracing::warn!(
                        sink = pending.sink.name(),
                        error = format!("{error:#}"),
                        "snapshot failed; retrying at the next interval"
                    );
                    pending.pending = Some(snapshot.changes);
                }
            }
        }
        sinks
    })
    .await;
    match written {
        Ok(sinks) => sinks,
        Err(error) => {
            // Only a panic in a sink gets here; the sinks are lost with it, so stop snapshots
            // loudly rather than pretend.
            tracing::error!(error = %error, "snapshot task failed; no more snapshots will be written");
            Vec::new()
        }
    }
}

/// Merges `newer` changes over `older` ones: the newest value of each campaign and day wins.
fn merge(older: Changes, newer: Changes) -> Changes {
    let mut campaigns: BTreeMap<String, CampaignCounters> = older
        .campaigns
        .into_iter()
        .map(|counters| (counters.campaign.clone(), counters))
        .collect();
    for counters in newer.campaigns {
        campaigns.insert(counters.campaign.clone(), counters);
    }
    let mut days: BTreeMap<String, BTreeMap<Day, DayCounters>> = BTreeMap::new();
    for (campaign, changed) in older.days.into_iter().chain(newer.days) {
        let entry = days.entry(campaign).or_default();
        for day in changed {
            entry.insert(day.day, day);
        }
    }
    Changes {
        campaigns: campaigns.into_values().collect(),
        days: days
            .into_iter()
            .map(|(campaign, days)| (campaign, days.into_values().collect()))
            .collect(),
    }
}
