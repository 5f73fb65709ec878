//! Reading the downstream store that snapshots went to — the JSON Lines files under
//! `<data_dir>/snapshots/` or PostgreSQL's views (which sum the shards' rows) and history —
//! back into what a report needs, so that reports can be made for any past period by a process
//! that does not hold the live counters.
//! For each campaign (and the totals, `*`): its latest counters, its counters as of the last
//! snapshot taken at or before a given instant, and its daily timeline. It only reads: it never
//! writes to the store nor migrates its schema.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};

use crate::config::Secret;
use crate::day::Day;
use crate::figures::{CampaignCounters, DayCounters};
use crate::snapshot::file::{self, Record};
use crate::snapshot::postgres::{self as pg, COUNTER_COLUMNS};

/// Where reports read from.
#[derive(Debug, Clone)]
pub enum Store {
    /// The file sink's directory of daily JSON Lines files.
    Files(PathBuf),
    /// The PostgreSQL database the sink writes to (a secret URL).
    Postgres(Secret),
}

/// What the store holds about the campaigns a report needs, up to some day.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// When the newest snapshot in the store was taken.
    pub latest_snapshot: Option<DateTime<Utc>>,
    /// By campaign id, the totals (`*`) included.
    pub campaigns: BTreeMap<String, StoredCampaign>,
}

/// One campaign as the store holds it.
#[derive(Debug, Clone, Default)]
pub struct StoredCampaign {
    /// Its newest counters.
    pub latest: Option<Stamped>,
    /// Its counters as of the last snapshot taken at or before the instant asked for.
    pub as_of_end: Option<Stamped>,
    /// What was new each day, up to the day asked for; days with nothing are absent.
    pub timeline: BTreeMap<Day, DayCounters>,
}

/// Counters, and the snapshot they come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    pub taken_at: DateTime<Utc>,
    pub counters: CampaignCounters,
}

impl Store {
    /// `postgres` or `files`, as reports name their source.
    pub fn name(&self) -> &'static str {
        match self {
            Store::Files(_) => "files",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Reads `campaigns` (every campaign when `None`): counters as of `end` (the last snapshot
    /// taken at or before it) and the timeline up to `last_day`.
    pub async fn load(
        &self,
        campaigns: Option<&[String]>,
        end: DateTime<Utc>,
        last_day: Day,
    ) -> anyhow::Result<Stored> {
        match self {
            Store::Files(directory) => {
                let directory = directory.clone();
                let campaigns = campaigns.map(<[String]>::to_vec);
                tokio::task::spawn_blocking(move || {
                    load_files(&directory, campaigns.as_deref(), end, last_day)
                })
                .await
                .context("the snapshot file reader failed")?
            }
            Store::Postgres(url) => load_postgres(url, campaigns, end, last_day).await,
        }
    }
}

fn wanted(campaigns: Option<&[String]>, campaign: &str) -> bool {
    campaigns.is_none_or(|campaigns| campaigns.iter().any(|wanted| wanted == campaign))
}

/// Folds every record of every snapshot file, oldest first: the newest value of each campaign
/// and day wins, as the sink meant.
fn load_files(
    directory: &Path,
    campaigns: Option<&[String]>,
    end: DateTime<Utc>,
    last_day: Day,
) -> anyhow::Result<Stored> {
    let entries = std::fs::read_dir(directory)
        .with_context(|| format!("cannot read the snapshot directory {}", directory.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", directory.display()))?
            .path();
        if path
            .extension()
            .is_some_and(|extension| extension == "jsonl")
        {
            paths.push(path);
        }
    }
    // Files are named by day, so name order is time order.
    paths.sort();
    let mut stored = Stored::default();
    for path in &paths {
        for record in file::read(path)? {
            let taken_at = match &record {
                Record::Campaign { taken_at, .. }
                | Record::Totals { taken_at, .. }
                | Record::Day { taken_at, .. } => *taken_at,
            };
            stored.latest_snapshot = stored.latest_snapshot.max(Some(taken_at));
            match record {
                Record::Campaign { counters, .. } | Record::Totals { counters, .. } => {
                    if !wanted(campaigns, &counters.campaign) {
                        continue;
                    }
                    let campaign = stored
                        .campaigns
                        .entry(counters.campaign.clone())
                        .or_default();
                    let stamped = Stamped { taken_at, counters };
                    if taken_at <= end {
                        campaign.as_of_end = Some(stamped.clone());
                    }
                    campaign.latest = Some(stamped);
                }
                Record::Day {
                    campaign, counts, ..
                } => {
                    if !wanted(campaigns, &campaign) || counts.day > last_day {
                        continue;
                    }
                    let timeline = &mut stored.campaigns.entry(campaign).or_default().timeline;
                    if counts.clicks == 0
                        && counts.enrolled == 0
                        && counts.started == 0
                        && counts.certified == 0
                    {
                        timeline.remove(&counts.day);
                    } else {
                        timeline.insert(counts.day, counts);
                    }
                }
            }
        }
    }
    Ok(stored)
}

async fn load_postgres(
    url: &Secret,
    campaigns: Option<&[String]>,
    end: DateTime<Utc>,
    last_day: Day,
) -> anyhow::Result<Stored> {
    let target = crate::config::parse_postgres_url(url)?;
    let mut client = pg::connect(&target).await?;
    // One consistent view of every table, whatever the sink commits meanwhile.
    let transaction = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .context("cannot begin reading the reports' data")?;
    let schema_exists: bool = transaction
        .query_one(
            "SELECT to_regclass('suivi.campaign_counters') IS NOT NULL",
            &[],
        )
        .await
        .context("cannot look for suivi's tables")?
        .get(0);
    anyhow::ensure!(
        schema_exists,
        "the database has no suivi tables: start `suivi serve` with this postgres_url first"
    );
    let all = campaigns.is_none();
    let names: Vec<String> = campaigns.map(<[String]>::to_vec).unwrap_or_default();
    let mut stored = Stored {
        latest_snapshot: transaction
            .query_one("SELECT max(taken_at) FROM suivi.snapshots", &[])
            .await
            .context("cannot read suivi.snapshots")?
            .get(0),
        campaigns: BTreeMap::new(),
    };
    let latest = transaction
        .query(
            &format!(
                "SELECT snapshot_at, {COUNTER_COLUMNS} FROM suivi.campaign_counters \
                 WHERE $1 OR campaign = ANY($2)"
            ),
            &[&all, &names],
        )
        .await
        .context("cannot read suivi.campaign_counters")?;
    for row in latest {
        let counters = pg::counters_from_row(&row)?;
        let campaign = counters.campaign.clone();
        stored.campaigns.entry(campaign).or_default().latest = Some(Stamped {
            taken_at: row.try_get("snapshot_at")?,
            counters,
        });
    }
    let as_of_end = transaction
        .query(
            &format!(
                "SELECT DISTINCT ON (campaign) taken_at, {COUNTER_COLUMNS} \
                 FROM suivi.snapshot_counters \
                 WHERE taken_at <= $3 AND ($1 OR campaign = ANY($2)) \
                 ORDER BY campaign, taken_at DESC"
            ),
            &[&all, &names, &end],
        )
        .await
        .context("cannot read suivi.snapshot_counters")?;
    for row in as_of_end {
        let counters = pg::counters_from_row(&row)?;
        let campaign = counters.campaign.clone();
        stored.campaigns.entry(campaign).or_default().as_of_end = Some(Stamped {
            taken_at: row.try_get("taken_at")?,
            counters,
        });
    }
    let days = transaction
        .query(
            "SELECT campaign, day, clicks, enrolled, started, certified FROM suivi.campaign_days \
             WHERE day <= $3 AND ($1 OR campaign = ANY($2))",
            &[&all, &names, &last_day.date()],
        )
        .await
        .context("cannot read suivi.campaign_days")?;
    for row in days {
        let date: NaiveDate = row.try_get("day")?;
        let day = Day::from_date(date).with_context(|| format!("day {date} out of range"))?;
        let count = |column: &str| -> anyhow::Result<u64> {
            let value: i64 = row.try_get(column)?;
            u64::try_from(value).with_context(|| format!("negative {column} on {date}"))
        };
        let counts = DayCounters {
            day,
            clicks: count("clicks")?,
            enrolled: count("enrolled")?,
            started: count("started")?,
            certified: count("certified")?,
        };
        let campaign: String = row.try_get("campaign")?;
        stored
            .campaigns
            .entry(campaign)
            .or_default()
            .timeline
            .insert(day, counts);
    }
    transaction
        .commit()
        .await
        .context("cannot end reading the reports' data")?;
    Ok(stored)
}
