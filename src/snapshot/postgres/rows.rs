//! A snapshot as the PostgreSQL sink writes it: [`CampaignRows`], each campaign's rows — its
//! registry facts and history row (from the sums) and each shard's counts and changed days —
//! written or set aside together (set aside at once when a NUL or a count beyond a bigint shows
//! the server would refuse them); [`SnapshotRows`], campaigns' rows as column arrays written
//! with one statement per table; and [`refuses_the_rows`], which tells the server refusing rows
//! (the sink then halves the group under a savepoint) from a failure.

use std::collections::{BTreeMap, HashSet};

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;

use crate::aggregate::Counts;
use crate::figures::{CampaignCounters, ShardCounts, ShardDay};
use crate::snapshot::{SetAside, Snapshot};

const UPSERT_CAMPAIGNS: &str = "
INSERT INTO suivi.campaigns (campaign, name, registered, target, snapshot_at)
SELECT c.campaign, c.name, c.registered, c.target, $5
FROM unnest($1::text[], $2::text[], $3::bool[], $4::int8[])
    AS c(campaign, name, registered, target)
ON CONFLICT (campaign) DO UPDATE SET
    name = excluded.name, registered = excluded.registered, target = excluded.target,
    snapshot_at = excluded.snapshot_at";

const INSERT_SNAPSHOT_COUNTERS: &str = "
INSERT INTO suivi.snapshot_counters (taken_at, campaign, name, registered, clicks,
    unique_visitors, enrolled, started, chapters_completed, certified, completion_rate, target,
    progress, as_of)
SELECT $14, c.campaign, c.name, c.registered, c.clicks, c.unique_visitors, c.enrolled, c.started,
    c.chapters::bigint[], c.certified, c.completion_rate, c.target, c.progress, c.as_of
FROM unnest($1::text[], $2::text[], $3::bool[], $4::int8[], $5::int8[], $6::int8[], $7::int8[],
    $8::text[], $9::int8[], $10::float8[], $11::int8[], $12::float8[], $13::timestamptz[])
    AS c(campaign, name, registered, clicks, unique_visitors, enrolled, started, chapters,
         certified, completion_rate, target, progress, as_of)
ON CONFLICT (campaign, taken_at) DO NOTHING";

/// A shard's row is replaced only by one at the same or a later position: a lagging instance
/// never takes it backwards.
const UPSERT_SHARD_COUNTERS: &str = "
INSERT INTO suivi.shard_counters (shard, campaign, clicks, unique_visitors, enrolled, started,
    chapters_completed, certified, position, as_of, snapshot_at)
SELECT c.shard, c.campaign, c.clicks, c.unique_visitors, c.enrolled, c.started,
    c.chapters::bigint[], c.certified, c.position, c.as_of, $11
FROM unnest($1::int4[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::text[],
    $8::int8[], $9::int8[], $10::timestamptz[])
    AS c(shard, campaign, clicks, unique_visitors, enrolled, started, chapters, certified,
         position, as_of)
ON CONFLICT (shard, campaign) DO UPDATE SET
    clicks = excluded.clicks, unique_visitors = excluded.unique_visitors,
    enrolled = excluded.enrolled, started = excluded.started,
    chapters_completed = excluded.chapters_completed, certified = excluded.certified,
    position = excluded.position, as_of = excluded.as_of, snapshot_at = excluded.snapshot_at
WHERE excluded.position >= suivi.shard_counters.position";

/// As [`UPSERT_SHARD_COUNTERS`]; a day that emptied is written at zero, so that its position
/// stays to refuse an older value.
const UPSERT_SHARD_DAYS: &str = "
INSERT INTO suivi.shard_days (shard, campaign, day, clicks, enrolled, started, certified,
    position, snapshot_at)
SELECT d.shard, d.campaign, d.day, d.clicks, d.enrolled, d.started, d.certified, d.position, $9
FROM unnest($1::int4[], $2::text[], $3::date[], $4::int8[], $5::int8[], $6::int8[], $7::int8[],
    $8::int8[])
    AS d(shard, campaign, day, clicks, enrolled, started, certified, position)
ON CONFLICT (shard, campaign, day) DO UPDATE SET
    clicks = excluded.clicks, enrolled = excluded.enrolled, started = excluded.started,
    certified = excluded.certified, position = excluded.position,
    snapshot_at = excluded.snapshot_at
WHERE excluded.position >= suivi.shard_days.position";

/// This snapshot holds these shards' whole timelines of these campaigns, and has just stamped
/// every one of their days: a day it did not stamp is no longer in the timeline. Rows at a
/// Kafka position are left alone: only a shard without positions is restated this way.
const DELETE_DAYS_NOT_RESTATED: &str = "
DELETE FROM suivi.shard_days AS d
USING unnest($1::int4[], $2::text[]) AS r(shard, campaign)
WHERE d.shard = r.shard AND d.campaign = r.campaign AND d.snapshot_at < $3 AND d.position <= 0";

/// The position written for a shard's part published without positions (shards within one
/// process): the same for every row, so the latest snapshot's row wins.
const NO_POSITION: i64 = 0;

/// One campaign's part of a snapshot: its sums and each shard's counts and changed days, which
/// are written or set aside together.
pub(super) struct CampaignRows<'a> {
    campaign: &'a str,
    /// The sums: the campaign's registry facts and its history row.
    pub(super) counters: Option<&'a CampaignCounters>,
    pub(super) shard_counts: Vec<&'a ShardCounts>,
    pub(super) shard_days: Vec<&'a ShardDay>,
    /// The shards whose whole timeline of the campaign this is: shards without positions, not
    /// written by this sink yet (see the parent module's doc).
    restated: Vec<usize>,
}

impl<'a> CampaignRows<'a> {
    /// The snapshot by campaign, less the campaigns PostgreSQL is known to refuse, which are
    /// set aside without a round trip. `reconciled` holds the (shard, campaign) pairs this
    /// sink has restated already.
    pub(super) fn split(
        snapshot: &'a Snapshot,
        reconciled: &HashSet<(usize, String)>,
    ) -> (Vec<CampaignRows<'a>>, Vec<SetAside>) {
        let mut parts: BTreeMap<&str, CampaignRows<'a>> = BTreeMap::new();
        for counters in &snapshot.changes.campaigns {
            parts
                .entry(&counters.campaign)
                .or_insert_with(|| CampaignRows::new(&counters.campaign))
                .counters = Some(counters);
        }
        for counts in &snapshot.shards.counts {
            let part = parts
                .entry(&counts.campaign)
                .or_insert_with(|| CampaignRows::new(&counts.campaign));
            part.shard_counts.push(counts);
            if counts.position.is_none()
                && !reconciled.contains(&(counts.shard, counts.campaign.clone()))
            {
                part.restated.push(counts.shard);
            }
        }
        for day in &snapshot.shards.days {
            parts
                .entry(&day.campaign)
                .or_insert_with(|| CampaignRows::new(&day.campaign))
                .shard_days
                .push(day);
        }
        let mut kept = Vec::with_capacity(parts.len());
        let mut set_aside = Vec::new();
        for part in parts.into_values() {
            match part.refusal() {
                None => kept.push(part),
                Some(reason) => set_aside.push(part.set_aside(reason)),
            }
        }
        (kept, set_aside)
    }

    fn new(campaign: &'a str) -> CampaignRows<'a> {
        CampaignRows {
            campaign,
            counters: None,
            shard_counts: Vec::new(),
            shard_days: Vec::new(),
            restated: Vec::new(),
        }
    }

    /// Why PostgreSQL would refuse these rows, when that can be told before sending them: a
    /// NUL character in a text column (`invalid byte sequence for encoding "UTF8": 0x00`;
    /// every other character a Rust string holds is valid UTF-8, which a UTF-8 database takes),
    /// or a count beyond a bigint. Anything else the server refuses is found by writing.
    fn refusal(&self) -> Option<String> {
        let texts = std::iter::once(self.campaign).chain(self.counters.map(|c| c.name.as_str()));
        if texts.into_iter().any(|text| text.contains('\0')) {
            return Some("a NUL character, which PostgreSQL text cannot hold".to_owned());
        }
        let counts = self
            .counters
            .into_iter()
            .flat_map(|c| {
                [
                    c.clicks,
                    c.unique_visitors,
                    c.enrolled,
                    c.started,
                    c.certified,
                ]
                .into_iter()
                .chain(c.chapters_completed.iter().copied())
                .chain(c.target)
            })
            .chain(
                self.shard_counts
                    .iter()
                    .flat_map(|part| count_values(&part.counts)),
            )
            .chain(self.shard_days.iter().flat_map(|part| {
                let d = &part.counts;
                [d.clicks, d.enrolled, d.started, d.certified]
            }));
        for count in counts {
            if let Err(error) = signed(count) {
                return Some(format!("{error:#}"));
            }
        }
        None
    }

    /// The campaign's rows left out: each shard's counts and days (the rows the views sum).
    pub(super) fn set_aside(&self, reason: String) -> SetAside {
        SetAside {
            campaign: self.campaign.to_owned(),
            rows: (self.shard_counts.len() + self.shard_days.len()) as u64,
            reason,
        }
    }
}

/// Every count of a shard's counts, chapters included.
fn count_values(counts: &Counts) -> impl Iterator<Item = u64> + '_ {
    [
        counts.clicks,
        counts.unique_visitors,
        counts.enrolled,
        counts.started,
        counts.certified,
    ]
    .into_iter()
    .chain(counts.chapters_completed.iter().copied())
}

/// Whether an error is the server refusing the rows themselves (SQLSTATE class 22, data
/// exception: a character the database's encoding cannot hold, a bad value; or 54000, program
/// limit exceeded: a campaign id too long for a btree index entry), rather than the connection
/// or the server failing, which fails the whole snapshot, to be retried.
pub(super) fn refuses_the_rows(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        code.code().starts_with("22") || *code == SqlState::PROGRAM_LIMIT_EXCEEDED
    })
}

/// One statement of a snapshot that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {statement}")]
pub(super) struct StatementError {
    statement: &'static str,
    #[source]
    pub(super) source: tokio_postgres::Error,
}

/// Names the statement of a failed write.
trait Statement<T> {
    fn statement(self, statement: &'static str) -> Result<T, StatementError>;
}

impl<T> Statement<T> for Result<T, tokio_postgres::Error> {
    fn statement(self, statement: &'static str) -> Result<T, StatementError> {
        self.map_err(|source| StatementError { statement, source })
    }
}

/// Campaigns' rows as column arrays, one statement per table however many rows.
pub(super) struct SnapshotRows {
    counters: CounterColumns,
    shard_counters: ShardCounterColumns,
    shard_days: ShardDayColumns,
    restated_shard: Vec<i32>,
    restated_campaign: Vec<String>,
    /// The (shard, campaign) pairs restated by this write.
    pub(super) restated: Vec<(usize, String)>,
}

/// The sums: the `campaigns` table takes their registry facts, `snapshot_counters` all.
#[derive(Default)]
struct CounterColumns {
    campaign: Vec<String>,
    name: Vec<String>,
    registered: Vec<bool>,
    clicks: Vec<i64>,
    unique_visitors: Vec<i64>,
    enrolled: Vec<i64>,
    started: Vec<i64>,
    /// As array literals (`{1,2,3}`): unnest would flatten a two-dimensional array.
    chapters_completed: Vec<String>,
    certified: Vec<i64>,
    completion_rate: Vec<f64>,
    target: Vec<Option<i64>>,
    progress: Vec<Option<f64>>,
    as_of: Vec<DateTime<Utc>>,
}

#[derive(Default)]
struct ShardCounterColumns {
    shard: Vec<i32>,
    campaign: Vec<String>,
    clicks: Vec<i64>,
    unique_visitors: Vec<i64>,
    enrolled: Vec<i64>,
    started: Vec<i64>,
    /// As [`CounterColumns::chapters_completed`].
    chapters_completed: Vec<String>,
    certified: Vec<i64>,
    position: Vec<i64>,
    as_of: Vec<DateTime<Utc>>,
}

#[derive(Default)]
struct ShardDayColumns {
    shard: Vec<i32>,
    campaign: Vec<String>,
    day: Vec<NaiveDate>,
    clicks: Vec<i64>,
    enrolled: Vec<i64>,
    started: Vec<i64>,
    certified: Vec<i64>,
    position: Vec<i64>,
}

impl SnapshotRows {
    /// The rows of `parts`, whose counts [`CampaignRows::refusal`] found to fit a bigint.
    pub(super) fn new(parts: &[CampaignRows<'_>]) -> SnapshotRows {
        // Checked by `refusal`; a count that did not fit would be refused, not wrapped.
        let signed = |count: u64| i64::try_from(count).unwrap_or(i64::MAX);
        // At most `MAX_SHARDS` (64) shards.
        let shard_number = |shard: usize| i32::try_from(shard).unwrap_or(i32::MAX);
        let chapters = |chapters: &[u64]| {
            let chapters: Vec<String> = chapters.iter().map(u64::to_string).collect();
            format!("{{{}}}", chapters.join(","))
        };
        let mut rows = SnapshotRows {
            counters: CounterColumns::default(),
            shard_counters: ShardCounterColumns::default(),
            shard_days: ShardDayColumns::default(),
            restated_shard: Vec::new(),
            restated_campaign: Vec::new(),
            restated: Vec::new(),
        };
        for part in parts {
            if let Some(campaign) = part.counters {
                let c = &mut rows.counters;
                c.campaign.push(campaign.campaign.clone());
                c.name.push(campaign.name.clone());
                c.registered.push(campaign.registered);
                c.clicks.push(signed(campaign.clicks));
                c.unique_visitors.push(signed(campaign.unique_visitors));
                c.enrolled.push(signed(campaign.enrolled));
                c.started.push(signed(campaign.started));
                c.chapters_completed
                    .push(chapters(&campaign.chapters_completed));
                c.certified.push(signed(campaign.certified));
                c.completion_rate.push(campaign.completion_rate);
                c.target.push(campaign.target.map(signed));
                c.progress.push(campaign.progress);
                c.as_of.push(campaign.as_of);
            }
            for part in &part.shard_counts {
                let c = &mut rows.shard_counters;
                c.shard.push(shard_number(part.shard));
                c.campaign.push(part.campaign.clone());
                c.clicks.push(signed(part.counts.clicks));
                c.unique_visitors.push(signed(part.counts.unique_visitors));
                c.enrolled.push(signed(part.counts.enrolled));
                c.started.push(signed(part.counts.started));
                c.chapters_completed
                    .push(chapters(&part.counts.chapters_completed));
                c.certified.push(signed(part.counts.certified));
                c.position.push(part.position.unwrap_or(NO_POSITION));
                c.as_of.push(part.as_of);
            }
            for part in &part.shard_days {
                let d = &mut rows.shard_days;
                d.shard.push(shard_number(part.shard));
                d.campaign.push(part.campaign.clone());
                d.day.push(part.counts.day.date());
                d.clicks.push(signed(part.counts.clicks));
                d.enrolled.push(signed(part.counts.enrolled));
                d.started.push(signed(part.counts.started));
                d.certified.push(signed(part.counts.certified));
                d.position.push(part.position.unwrap_or(NO_POSITION));
            }
            for shard in &part.restated {
                rows.restated_shard.push(shard_number(*shard));
                rows.restated_campaign.push(part.campaign.to_owned());
                rows.restated.push((*shard, part.campaign.to_owned()));
            }
        }
        rows
    }

    /// Upserts the rows (a shard's only over older positions), adds the history rows and, for
    /// the shards restated for the first time, deletes the days no longer in their timeline.
    pub(super) async fn write(
        &self,
        transaction: &Transaction<'_>,
        taken_at: DateTime<Utc>,
    ) -> Result<(), StatementError> {
        let c = &self.counters;
        transaction
            .execute(
                UPSERT_CAMPAIGNS,
                &[&c.campaign, &c.name, &c.registered, &c.target, &taken_at],
            )
            .await
            .statement("write campaigns")?;
        transaction
            .execute(
                INSERT_SNAPSHOT_COUNTERS,
                &[
                    &c.campaign,
                    &c.name,
                    &c.registered,
                    &c.clicks,
                    &c.unique_visitors,
                    &c.enrolled,
                    &c.started,
                    &c.chapters_completed,
                    &c.certified,
                    &c.completion_rate,
                    &c.target,
                    &c.progress,
                    &c.as_of,
                    &taken_at,
                ],
            )
            .await
            .statement("write snapshot_counters")?;
        let s = &self.shard_counters;
        transaction
            .execute(
                UPSERT_SHARD_COUNTERS,
                &[
                    &s.shard,
                    &s.campaign,
                    &s.clicks,
                    &s.unique_visitors,
                    &s.enrolled,
                    &s.started,
                    &s.chapters_completed,
                    &s.certified,
                    &s.position,
                    &s.as_of,
                    &taken_at,
                ],
            )
            .await
            .statement("write shard_counters")?;
        let d = &self.shard_days;
        transaction
            .execute(
                UPSERT_SHARD_DAYS,
                &[
                    &d.shard,
                    &d.campaign,
                    &d.day,
                    &d.clicks,
                    &d.enrolled,
                    &d.started,
                    &d.certified,
                    &d.position,
                    &taken_at,
                ],
            )
            .await
            .statement("write shard_days")?;
        if !self.restated.is_empty() {
            transaction
                .execute(
                    DELETE_DAYS_NOT_RESTATED,
                    &[&self.restated_shard, &self.restated_campaign, &taken_at],
                )
                .await
                .statement("delete days no longer in the timeline")?;
        }
        Ok(())
    }
}

fn signed(count: u64) -> anyhow::Result<i64> {
    i64::try_from(count).with_context(|| format!("count {count} does not fit a bigint"))
}
