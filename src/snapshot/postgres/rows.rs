//! A snapshot as the PostgreSQL sink writes it: [`CampaignRows`], each campaign's counters and
//! changed days, written or set aside together (set aside at once when a NUL or a count beyond a
//! bigint shows the server would refuse them); [`SnapshotRows`], campaigns' rows as column
//! arrays written with one statement per table; and [`refuses_the_rows`], which tells the
//! server refusing rows (the sink then halves the group under a savepoint) from a failure.

use std::collections::{BTreeMap, HashSet};

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;

use crate::figures::{CampaignCounters, DayCounters};
use crate::snapshot::{SetAside, Snapshot};

const UPSERT_COUNTERS: &str = "
INSERT INTO suivi.campaign_counters (campaign, name, registered, clicks, unique_visitors,
    enrolled, started, chapters_completed, certified, completion_rate, target, progress, as_of,
    snapshot_at)
SELECT c.campaign, c.name, c.registered, c.clicks, c.unique_visitors, c.enrolled, c.started,
    c.chapters::bigint[], c.certified, c.completion_rate, c.target, c.progress, c.as_of, $14
FROM unnest($1::text[], $2::text[], $3::bool[], $4::int8[], $5::int8[], $6::int8[], $7::int8[],
    $8::text[], $9::int8[], $10::float8[], $11::int8[], $12::float8[], $13::timestamptz[])
    AS c(campaign, name, registered, clicks, unique_visitors, enrolled, started, chapters,
         certified, completion_rate, target, progress, as_of)
ON CONFLICT (campaign) DO UPDATE SET
    name = excluded.name, registered = excluded.registered, clicks = excluded.clicks,
    unique_visitors = excluded.unique_visitors, enrolled = excluded.enrolled,
    started = excluded.started, chapters_completed = excluded.chapters_completed,
    certified = excluded.certified, completion_rate = excluded.completion_rate,
    target = excluded.target, progress = excluded.progress, as_of = excluded.as_of,
    snapshot_at = excluded.snapshot_at
WHERE suivi.campaign_counters.snapshot_at <= excluded.snapshot_at";

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

const UPSERT_DAYS: &str = "
INSERT INTO suivi.campaign_days (campaign, day, clicks, enrolled, started, certified, snapshot_at)
SELECT d.campaign, d.day, d.clicks, d.enrolled, d.started, d.certified, $7
FROM unnest($1::text[], $2::date[], $3::int8[], $4::int8[], $5::int8[], $6::int8[])
    AS d(campaign, day, clicks, enrolled, started, certified)
ON CONFLICT (campaign, day) DO UPDATE SET
    clicks = excluded.clicks, enrolled = excluded.enrolled, started = excluded.started,
    certified = excluded.certified, snapshot_at = excluded.snapshot_at
WHERE suivi.campaign_days.snapshot_at <= excluded.snapshot_at";

/// One campaign's part of a snapshot: its counters and changed days, which are written or set
/// aside together.
pub(super) struct CampaignRows<'a> {
    campaign: &'a str,
    pub(super) counters: Option<&'a CampaignCounters>,
    pub(super) days: &'a [DayCounters],
    /// Whether this sink has not written the campaign's whole timeline yet.
    first_written: bool,
}

impl<'a> CampaignRows<'a> {
    /// The snapshot by campaign, less the campaigns PostgreSQL is known to refuse, which are
    /// set aside without a round trip.
    pub(super) fn split(
        snapshot: &'a Snapshot,
        reconciled: &HashSet<String>,
    ) -> (Vec<CampaignRows<'a>>, Vec<SetAside>) {
        let mut parts: BTreeMap<&str, CampaignRows<'a>> = BTreeMap::new();
        for counters in &snapshot.changes.campaigns {
            parts
                .entry(&counters.campaign)
                .or_insert_with(|| CampaignRows::new(&counters.campaign))
                .counters = Some(counters);
        }
        for (campaign, days) in &snapshot.changes.days {
            parts
                .entry(campaign)
                .or_insert_with(|| CampaignRows::new(campaign))
                .days = days;
        }
        let mut kept = Vec::with_capacity(parts.len());
        let mut set_aside = Vec::new();
        for mut part in parts.into_values() {
            part.first_written = part.counters.is_some() && !reconciled.contains(part.campaign);
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
            days: &[],
            first_written: false,
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
                self.days
                    .iter()
                    .flat_map(|d| [d.clicks, d.enrolled, d.started, d.certified]),
            );
        for count in counts {
            if let Err(error) = signed(count) {
                return Some(format!("{error:#}"));
            }
        }
        None
    }

    pub(super) fn set_aside(&self, reason: String) -> SetAside {
        SetAside {
            campaign: self.campaign.to_owned(),
            rows: u64::from(self.counters.is_some()) + self.days.len() as u64,
            reason,
        }
    }
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
    days: DayColumns,
    emptied_campaign: Vec<String>,
    emptied_day: Vec<NaiveDate>,
    /// Campaigns written for the first time by this sink.
    pub(super) first_written: Vec<String>,
}

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
struct DayColumns {
    campaign: Vec<String>,
    day: Vec<NaiveDate>,
    clicks: Vec<i64>,
    enrolled: Vec<i64>,
    started: Vec<i64>,
    certified: Vec<i64>,
}

impl SnapshotRows {
    /// The rows of `parts`, whose counts [`CampaignRows::refusal`] found to fit a bigint.
    pub(super) fn new(parts: &[CampaignRows<'_>]) -> SnapshotRows {
        // Checked by `refusal`; a count that did not fit would be refused, not wrapped.
        let signed = |count: u64| i64::try_from(count).unwrap_or(i64::MAX);
        let mut counters = CounterColumns::default();
        let mut first_written = Vec::new();
        let mut days = DayColumns::default();
        let mut emptied_campaign = Vec::new();
        let mut emptied_day = Vec::new();
        for part in parts {
            if let Some(campaign) = part.counters {
                let c = &mut counters;
                c.campaign.push(campaign.campaign.clone());
                c.name.push(campaign.name.clone());
                c.registered.push(campaign.registered);
                c.clicks.push(signed(campaign.clicks));
                c.unique_visitors.push(signed(campaign.unique_visitors));
                c.enrolled.push(signed(campaign.enrolled));
                c.started.push(signed(campaign.started));
                let chapters: Vec<String> = campaign
                    .chapters_completed
                    .iter()
                    .map(u64::to_string)
                    .collect();
                c.chapters_completed
                    .push(format!("{{{}}}", chapters.join(",")));
                c.certified.push(signed(campaign.certified));
                c.completion_rate.push(campaign.completion_rate);
                c.target.push(campaign.target.map(signed));
                c.progress.push(campaign.progress);
                c.as_of.push(campaign.as_of);
                if part.first_written {
                    first_written.push(campaign.campaign.clone());
                }
            }
            for day in part.days {
                if day.clicks == 0 && day.enrolled == 0 && day.started == 0 && day.certified == 0 {
                    emptied_campaign.push(part.campaign.to_owned());
                    emptied_day.push(day.day.date());
                    continue;
                }
                days.campaign.push(part.campaign.to_owned());
                days.day.push(day.day.date());
                days.clicks.push(signed(day.clicks));
                days.enrolled.push(signed(day.enrolled));
                days.started.push(signed(day.started));
                days.certified.push(signed(day.certified));
            }
        }
        SnapshotRows {
            counters,
            days,
            emptied_campaign,
            emptied_day,
            first_written,
        }
    }

    /// Upserts the rows, deletes the emptied days and, for campaigns written whole for the first
    /// time, the days no longer in their timeline.
    pub(super) async fn write(
        &self,
        transaction: &Transaction<'_>,
        taken_at: DateTime<Utc>,
    ) -> Result<(), StatementError> {
        let c = &self.counters;
        let counters: [&(dyn tokio_postgres::types::ToSql + Sync); 14] = [
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
        ];
        transaction
            .execute(UPSERT_COUNTERS, &counters)
            .await
            .statement("write campaign_counters")?;
        transaction
            .execute(INSERT_SNAPSHOT_COUNTERS, &counters)
            .await
            .statement("write snapshot_counters")?;
        let d = &self.days;
        transaction
            .execute(
                UPSERT_DAYS,
                &[
                    &d.campaign,
                    &d.day,
                    &d.clicks,
                    &d.enrolled,
                    &d.started,
                    &d.certified,
                    &taken_at,
                ],
            )
            .await
            .statement("write campaign_days")?;
        transaction
            .execute(
                "DELETE FROM suivi.campaign_days AS d \
                 USING unnest($1::text[], $2::date[]) AS e(campaign, day) \
                 WHERE d.campaign = e.campaign AND d.day = e.day AND d.snapshot_at <= $3",
                &[&self.emptied_campaign, &self.emptied_day, &taken_at],
            )
            .await
            .statement("delete emptied days")?;
        if !self.first_written.is_empty() {
            // This snapshot holds these campaigns' whole timelines and has just stamped every
            // one of their days: a day it did not stamp is no longer in the timeline.
            transaction
                .execute(
                    "DELETE FROM suivi.campaign_days \
                     WHERE campaign = ANY($1::text[]) AND snapshot_at < $2",
                    &[&self.first_written, &taken_at],
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
