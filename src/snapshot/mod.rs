//! Snapshots to downstream reporting: every `snapshot_interval`, and once more at shutdown, what
//! changed in [`Figures`] since the last snapshot (the counters of each changed campaign, the
//! totals, and the changed days of each timeline; and the same per shard, with the position
//! each shard's part reflects) goes to every configured sink. Sinks are a
//! closed set ([`Sink`]): JSON Lines files and PostgreSQL, each written by a task of its own, so
//! one sink's outage or slowness never delays another. A sink that fails keeps its snapshot pending, merged with
//! later changes, and is retried with exponential backoff (one interval, then two, four, … up to
//! `snapshot_retry_max`), so nothing is skipped and it catches up by itself; the failure shows in
//! metrics, logs and [`SinkHealth`] (the `sinks` of `/readyz`). Ingestion never waits for a sink.
//!
//! The contract every sink relies on: a snapshot holds the newest value of everything it names,
//! and the first snapshot a sink is given for a campaign in a process holds that campaign's
//! whole timeline (the figures are rebuilt from the checkpoint and the journal at start, and
//! pending changes are only ever merged, never dropped), so a sink may treat that first write as
//! a full restatement of the campaign.
//!
//! A row a sink's store refuses (PostgreSQL text cannot hold a NUL character, for one) must not
//! stop that sink for every other campaign, for good: the sink sets the campaign's rows aside,
//! writes the rest and says what it left out ([`Written`]); the loop logs each one, naming the
//! campaign (escaped), and counts them in `suivi_snapshot_rows_set_aside_total{sink}`. A campaign
//! set aside is tried again with its next change, and by every new process.

pub mod file;
pub mod postgres;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::day::Day;
use crate::figures::{
    CampaignCounters, Changes, DayCounters, Figures, ShardChanges, ShardCounts, ShardDay,
};
use crate::telemetry;

/// One snapshot: what changed, as of when it was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    /// The sums, as queries answer them (the file sink, and PostgreSQL's history).
    pub changes: Changes,
    /// Each shard's part (PostgreSQL's rows keyed by shard). Taken just after `changes`: a
    /// change published between the two takes is in the next snapshot of the other.
    pub shards: ShardChanges,
}

/// A place snapshots go.
#[derive(Debug)]
pub enum Sink {
    File(file::FileSink),
    Postgres(Box<postgres::PostgresSink>),
}

/// What a sink wrote of a snapshot: all of it but the campaigns it set aside.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Written {
    pub set_aside: Vec<SetAside>,
}

/// A campaign whose rows a sink's store refused, left out of a snapshot otherwise written.
#[derive(Debug, Clone, PartialEq)]
pub struct SetAside {
    pub campaign: String,
    /// The rows left out: the campaign's counters and each of its changed days (in PostgreSQL,
    /// each shard's).
    pub rows: u64,
    /// Why the store refused them.
    pub reason: String,
}

/// When snapshots are taken and failed ones retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// How often changes are taken and written.
    pub interval: Duration,
    /// The longest wait between two attempts on a failing sink (never shorter than `interval`).
    pub retry_max: Duration,
}

/// How each sink is doing, for `/readyz` and operators: shared between [`run`] and the readiness
/// route.
#[derive(Debug, Default)]
pub struct SinkHealth {
    sinks: Mutex<BTreeMap<&'static str, SinkStatus>>,
}

/// One sink's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkStatus {
    /// When the first of the current run of failed attempts started; `None` while it works.
    pub failing_since: Option<DateTime<Utc>>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// The last error, as logged.
    pub last_error: Option<String>,
    /// When a snapshot was last written to it.
    pub last_written: Option<DateTime<Utc>>,
}

impl Sink {
    /// The sink's metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Sink::File(_) => "file",
            Sink::Postgres(_) => "postgres",
        }
    }

    /// Writes one snapshot, all of it but the rows its store refuses, or (on error) none of it,
    /// and gives the sink back. The file sink's blocking IO runs on a blocking thread; `Err`
    /// means that thread panicked and the sink is lost.
    async fn write(
        self,
        snapshot: Arc<Snapshot>,
    ) -> Result<(Sink, anyhow::Result<Written>), tokio::task::JoinError> {
        match self {
            Sink::File(mut sink) => {
                tokio::task::spawn_blocking(move || {
                    // JSON escapes every character a campaign can hold, so the file sink
                    // never refuses a row.
                    let written = sink.write(&snapshot).map(|()| Written::default());
                    (Sink::File(sink), written)
                })
                .await
            }
            Sink::Postgres(mut sink) => {
                let written = sink.write(&snapshot).await;
                Ok((Sink::Postgres(sink), written))
            }
        }
    }
}

impl SinkHealth {
    /// Each sink's state in a few words: `ok`, or `failing since <time> (<n> attempts): <error>`.
    pub fn describe(&self) -> BTreeMap<&'static str, String> {
        self.sinks
            .lock()
            .iter()
            .map(|(name, status)| {
                let text = match status.failing_since {
                    None => "ok".to_owned(),
                    Some(since) => format!(
                        "failing since {} ({} attempts): {}",
                        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        status.failures,
                        status.last_error.as_deref().unwrap_or_default()
                    ),
                };
                (*name, text)
            })
            .collect()
    }

    /// The state of the sink named `name`, if there is one.
    pub fn status(&self, name: &str) -> Option<SinkStatus> {
        self.sinks.lock().get(name).cloned()
    }

    fn register(&self, name: &'static str) {
        self.sinks.lock().entry(name).or_default();
    }

    fn written(&self, name: &'static str, at: DateTime<Utc>) {
        let mut sinks = self.sinks.lock();
        let status = sinks.entry(name).or_default();
        *status = SinkStatus {
            last_written: Some(at),
            ..SinkStatus::default()
        };
    }

    fn failed(&self, name: &'static str, at: DateTime<Utc>, error: &str) {
        let mut sinks = self.sinks.lock();
        let status = sinks.entry(name).or_default();
        status.failing_since.get_or_insert(at);
        status.failures += 1;
        status.last_error = Some(error.to_owned());
    }

    fn lost(&self, name: &'static str) {
        let mut sinks = self.sinks.lock();
        let status = sinks.entry(name).or_default();
        status.failing_since.get_or_insert_with(Utc::now);
        status.last_error = Some("the sink panicked; no more snapshots go to it".to_owned());
    }
}

/// Where the snapshot loop leaves each sink's changes: merged while the sink is busy or backing
/// off, so it holds at most one value per campaign and day.
#[derive(Debug, Default)]
struct Mailbox {
    snapshot: Mutex<Option<Snapshot>>,
    wake: Notify,
}

impl Mailbox {
    fn put(&self, snapshot: Snapshot) {
        let mut held = self.snapshot.lock();
        *held = Some(match held.take() {
            Some(older) => merge_snapshots(older, snapshot),
            None => snapshot,
        });
        drop(held);
        self.wake.notify_one();
    }

    fn take(&self) -> Option<Snapshot> {
        self.snapshot.lock().take()
    }
}

/// `newer` over `older`, as of the newer one's time.
fn merge_snapshots(older: Snapshot, newer: Snapshot) -> Snapshot {
    Snapshot {
        taken_at: newer.taken_at,
        changes: merge(older.changes, newer.changes),
        shards: merge_shards(older.shards, newer.shards),
    }
}

/// Takes the changes every `schedule.interval` until `shutdown`, and hands them to each sink's
/// own task; at shutdown takes them once more, lets every sink make a final attempt (backoff or
/// not) and returns when all are done.
pub async fn run(
    figures: Arc<Figures>,
    sinks: Vec<Sink>,
    schedule: Schedule,
    health: Arc<SinkHealth>,
    shutdown: CancellationToken,
) {
    let last_call = CancellationToken::new();
    let mut mailboxes = Vec::with_capacity(sinks.len());
    let mut tasks = Vec::with_capacity(sinks.len());
    for sink in sinks {
        health.register(sink.name());
        let mailbox = Arc::new(Mailbox::default());
        mailboxes.push(Arc::clone(&mailbox));
        tasks.push(tokio::spawn(write_loop(
            sink,
            mailbox,
            schedule,
            Arc::clone(&health),
            last_call.clone(),
        )));
    }
    let interval = schedule.interval;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = ticks.tick() => false,
            () = shutdown.cancelled() => true,
        };
        let changes = figures.take_changes();
        let shards = figures.take_shard_changes();
        if !changes.campaigns.is_empty() || !shards.counts.is_empty() || !shards.days.is_empty() {
            let snapshot = Snapshot {
                // To the microsecond, as PostgreSQL keeps it, so every sink holds the same time.
                taken_at: Utc::now().trunc_subsecs(6),
                changes,
                shards,
            };
            for mailbox in &mailboxes {
                mailbox.put(snapshot.clone());
            }
        }
        if last {
            last_call.cancel();
            for task in tasks {
                if let Err(error) = task.await {
                    tracing::error!(error = %telemetry::chain(&error), "a snapshot sink's task failed");
                }
            }
            return;
        }
    }
}

/// One sink's life: waits for changes, writes them, and on failure keeps them (merged with
/// whatever comes next) and retries after a backoff, until the last call.
async fn write_loop(
    mut sink: Sink,
    mailbox: Arc<Mailbox>,
    schedule: Schedule,
    health: Arc<SinkHealth>,
    last_call: CancellationToken,
) {
    let name = sink.name();
    // A snapshot that failed to be written, merged with whatever came since. Retried alone, it
    // keeps its time, so a retry after a commit whose answer was lost changes nothing.
    let mut pending: Option<Snapshot> = None;
    let mut failures: u32 = 0;
    loop {
        let mut last = last_call.is_cancelled();
        if !last {
            if pending.is_some() {
                // Backing off: retry after the delay, with whatever came meanwhile.
                let delay = backoff(schedule, failures);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = last_call.cancelled() => last = true,
                }
            } else {
                tokio::select! {
                    () = mailbox.wake.notified() => {}
                    () = last_call.cancelled() => last = true,
                }
            }
        }
        if let Some(newer) = mailbox.take() {
            pending = Some(match pending.take() {
                Some(older) => merge_snapshots(older, newer),
                None => newer,
            });
        }
        if let Some(snapshot) = pending.take() {
            let snapshot = Arc::new(snapshot);
            let started = Instant::now();
            let written = match sink.write(Arc::clone(&snapshot)).await {
                Ok((returned, written)) => {
                    sink = returned;
                    written
                }
                Err(error) => {
                    // Only a panic in a sink gets here; the sink is lost with it, so stop
                    // writing to it loudly rather than pretend.
                    tracing::error!(sink = name, error = %telemetry::chain(&error), "snapshot sink failed; no more snapshots will be written to it");
                    health.lost(name);
                    return;
                }
            };
            telemetry::record_snapshot(name, started.elapsed(), written.is_ok());
            match written {
                Ok(written) => {
                    for set_aside in &written.set_aside {
                        tracing::error!(
                            sink = name,
                            campaign = %escaped(&set_aside.campaign),
                            rows = set_aside.rows,
                            error = set_aside.reason.as_str(),
                            "the sink's store refused a campaign's rows; they were set aside and the rest of the snapshot written"
                        );
                        telemetry::record_rows_set_aside(name, set_aside.rows);
                    }
                    if failures > 0 {
                        tracing::info!(
                            sink = name,
                            failed_attempts = failures,
                            "snapshot sink recovered; pending changes written"
                        );
                    }
                    failures = 0;
                    health.written(name, snapshot.taken_at);
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let error = format!("{error:#}");
                    tracing::warn!(
                        sink = name,
                        error = error.as_str(),
                        failed_attempts = failures,
                        retry_in = ?backoff(schedule, failures),
                        "snapshot failed; its changes stay pending and are retried"
                    );
                    health.failed(name, Utc::now(), &error);
                    // The write is over, so this is the only reference left.
                    pending =
                        Some(Arc::try_unwrap(snapshot).unwrap_or_else(|shared| (*shared).clone()));
                }
            }
        }
        if last {
            if pending.is_some() {
                // Not lost: the next start rebuilds the figures from the journal and writes
                // them whole to every sink.
                tracing::warn!(
                    sink = name,
                    "the final snapshot could not be written; the next start writes it in full"
                );
            }
            return;
        }
    }
}

/// A campaign id fit for a log line whatever it holds: at most [`LOGGED_CAMPAIGN_CHARS`]
/// characters, control and invisible ones escaped (`\0`, `\u{202e}`).
pub fn escaped(campaign: &str) -> String {
    let mut text: String = campaign
        .chars()
        .take(LOGGED_CAMPAIGN_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if campaign.chars().nth(LOGGED_CAMPAIGN_CHARS).is_some() {
        text.push('…');
    }
    text
}

/// How much of a campaign id a log line quotes.
const LOGGED_CAMPAIGN_CHARS: usize = 100;

/// The wait after the `failures`-th failed attempt in a row: the interval, doubled after each
/// further failure, at most `retry_max` (and never less than the interval).
fn backoff(schedule: Schedule, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    schedule
        .interval
        .saturating_mul(1 << doublings)
        .min(schedule.retry_max.max(schedule.interval))
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

/// Merges `newer` shard changes over `older` ones: the newest value of each (shard, campaign)
/// and (shard, campaign, day) wins (the figures never take a shard's part backwards, so the
/// newest taken is the latest position).
fn merge_shards(older: ShardChanges, newer: ShardChanges) -> ShardChanges {
    let mut counts: BTreeMap<(usize, String), ShardCounts> = BTreeMap::new();
    for part in older.counts.into_iter().chain(newer.counts) {
        counts.insert((part.shard, part.campaign.clone()), part);
    }
    let mut days: BTreeMap<(usize, String, Day), ShardDay> = BTreeMap::new();
    for part in older.days.into_iter().chain(newer.days) {
        days.insert((part.shard, part.campaign.clone(), part.counts.day), part);
    }
    ShardChanges {
        counts: counts.into_values().collect(),
        days: days.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let schedule = Schedule {
            interval: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
        };
        let delays: Vec<u64> = (1..=6)
            .map(|failures| backoff(schedule, failures).as_secs())
            .collect();
        assert_eq!(delays, [10, 20, 40, 60, 60, 60]);
        let short = Schedule {
            interval: Duration::from_secs(10),
            retry_max: Duration::from_secs(1),
        };
        assert_eq!(backoff(short, 5), Duration::from_secs(10));
        assert_eq!(backoff(schedule, u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn merged_shard_changes_keep_the_newest_of_each_shard_campaign_and_day() {
        let part = |shard: usize, enrolled: u64, position: i64| {
            let counts = crate::aggregate::Counts {
                enrolled,
                ..crate::aggregate::Counts::default()
            };
            let day = DayCounters {
                day: "2020-10-05".parse().expect("a day"),
                clicks: 0,
                enrolled,
                started: 0,
                certified: 0,
            };
            (
                ShardCounts {
                    shard,
                    campaign: "gendarmerie".to_owned(),
                    counts,
                    position: Some(position),
                    as_of: Utc::now(),
                },
                ShardDay {
                    shard,
                    campaign: "gendarmerie".to_owned(),
                    counts: day,
                    position: Some(position),
                },
            )
        };
        let changes = |parts: Vec<(ShardCounts, ShardDay)>| {
            let (counts, days) = parts.into_iter().unzip();
            ShardChanges { counts, days }
        };
        let older = changes(vec![part(0, 1, 10), part(1, 5, 10)]);
        let newer = changes(vec![part(1, 7, 12)]);
        let merged = merge_shards(older, newer);
        let enrolled: Vec<(usize, u64, Option<i64>)> = merged
            .counts
            .iter()
            .map(|part| (part.shard, part.counts.enrolled, part.position))
            .collect();
        assert_eq!(enrolled, [(0, 1, Some(10)), (1, 7, Some(12))]);
        let days: Vec<(usize, u64)> = merged
            .days
            .iter()
            .map(|part| (part.shard, part.counts.enrolled))
            .collect();
        assert_eq!(days, [(0, 1), (1, 7)]);
    }

    #[test]
    fn a_campaign_is_logged_escaped_and_short() {
        assert_eq!(escaped("evil\u{0}x\u{202e}"), "evil\\0x\\u{202e}");
        assert_eq!(escaped("plain-campaign"), "plain-campaign");
        let long = "a".repeat(500);
        assert_eq!(escaped(&long).chars().count(), LOGGED_CAMPAIGN_CHARS + 1);
    }
}
