//! The read side: the figures operators query, watch and snapshot. The pipeline publishes each
//! group of changes from the aggregator here after applying it and before acknowledging it, so a
//! client that was told an event was accepted reads it back. Readers never touch the aggregator;
//! they take a short read lock on one campaign, so queries stay fast at full ingest.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::aggregate::{CampaignChange, Counts, DayCounts};
use crate::day::Day;
use crate::event::TOTALS_CAMPAIGN;
use crate::registry::Registry;

mod shards;

pub use self::shards::{ShardChanges, ShardCounts, ShardDay};

/// One campaign's funnel as clients see it (HTTP JSON, gRPC, snapshots).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignCounters {
    pub campaign: String,
    /// The partner's name; empty for an unregistered campaign.
    pub name: String,
    pub clicks: u64,
    pub unique_visitors: u64,
    pub enrolled: u64,
    pub started: u64,
    pub chapters_completed: Vec<u64>,
    pub certified: u64,
    /// certified / enrolled; 0 when nobody enrolled.
    pub completion_rate: f64,
    pub target: Option<u64>,
    /// certified / target, when there is a target.
    pub progress: Option<f64>,
    /// When these counters last changed (for a campaign never seen: when suivi started).
    pub as_of: DateTime<Utc>,
    pub registered: bool,
}

/// What was new on one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounters {
    pub day: Day,
    pub clicks: u64,
    pub enrolled: u64,
    pub started: u64,
    pub certified: u64,
}

/// What changed since the last snapshot: the counters of changed campaigns and the totals, and
/// the current value of each changed day per campaign.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub campaigns: Vec<CampaignCounters>,
    /// Per campaign ([`TOTALS_CAMPAIGN`] included), the changed days; a day whose counts are all
    /// zero has emptied.
    pub days: Vec<(String, Vec<DayCounters>)>,
}

/// The published figures of every campaign and of the totals.
#[derive(Debug)]
pub struct Figures {
    campaigns: DashMap<String, Published>,
    chapter_count: u8,
    /// Bumped after every publish; watchers wait on it.
    version: watch::Sender<u64>,
}

#[derive(Debug)]
struct Published {
    info: Option<Arc<Info>>,
    /// The sum of the shards' partials.
    counts: Counts,
    timeline: BTreeMap<Day, DayCounts>,
    /// Each shard's own counts and timeline, by shard number: a learner (or visitor) lives in
    /// one shard, so every figure is the sum of the shards'.
    partials: Vec<Partial>,
    as_of: DateTime<Utc>,
    /// The figures version at which this campaign last changed.
    version: u64,
    snapshot_due: bool,
    snapshot_days: BTreeSet<Day>,
}

/// One shard's part of a campaign's figures.
#[derive(Debug)]
struct Partial {
    counts: Counts,
    timeline: BTreeMap<Day, DayCounts>,
    /// With shards that are Kafka partitions, the positions the counts and each day reflect
    /// ([`Figures::publish_at`]).
    position: i64,
    day_positions: BTreeMap<Day, i64>,
    /// When this partial last changed here.
    as_of: DateTime<Utc>,
    /// Whether the counts, and which days, changed since [`Figures::take_shard_changes`].
    counts_due: bool,
    days_due: BTreeSet<Day>,
}

impl Default for Partial {
    fn default() -> Partial {
        Partial {
            counts: Counts::default(),
            timeline: BTreeMap::new(),
            // Below every Kafka position: without positions, it stays there.
            position: i64::MIN,
            day_positions: BTreeMap::new(),
            as_of: DateTime::<Utc>::MIN_UTC,
            counts_due: false,
            days_due: BTreeSet::new(),
        }
    }
}

#[derive(Debug)]
struct Info {
    name: String,
    target: Option<u64>,
}

impl Figures {
    /// Figures holding every registered campaign, and the totals, at zero as of `now`.
    pub fn new(registry: &Registry, chapter_count: u8, now: DateTime<Utc>) -> Figures {
        let figures = Figures {
            campaigns: DashMap::new(),
            chapter_count,
            version: watch::channel(0).0,
        };
        let totals = Info {
            name: registry.programme.name.clone(),
            target: registry.programme.target,
        };
        figures
            .campaigns
            .insert(TOTALS_CAMPAIGN.to_owned(), figures.empty(Some(totals), now));
        for campaign in &registry.campaigns {
            let info = Info {
                name: campaign.name.clone(),
                target: campaign.target,
            };
            figures
                .campaigns
                .insert(campaign.id.clone(), figures.empty(Some(info), now));
        }
        figures
    }

    /// Makes `changes`, the new partials of shard `shard`, visible to readers as of `now` (each
    /// figure becomes the sum of the shards' partials), and wakes watchers.
    pub fn publish(&self, shard: usize, changes: Vec<CampaignChange>, now: DateTime<Utc>) {
        self.update(
            shard,
            None,
            changes
                .into_iter()
                .map(|change| (change.campaign, Some(change.counts), change.days)),
            now,
        );
    }

    /// Makes a shard's partials as of its Kafka `position` visible, each part (a campaign's
    /// counts, one of its days) only if no later position of it is shown already: a shard's
    /// partials at a position are the same whoever made them (its owner, a former owner, or the
    /// partials topic), so the latest one is right and an older one is ignored. `counts` of
    /// `None` leaves a campaign's counts as they are (a day alone came).
    pub fn publish_at(
        &self,
        shard: usize,
        position: i64,
        parts: impl IntoIterator<Item = (String, Option<Counts>, Vec<(Day, DayCounts)>)>,
        now: DateTime<Utc>,
    ) {
        self.update(shard, Some(position), parts, now);
    }

    fn update(
        &self,
        shard: usize,
        position: Option<i64>,
        parts: impl IntoIterator<Item = (String, Option<Counts>, Vec<(Day, DayCounts)>)>,
        now: DateTime<Utc>,
    ) {
        let version = *self.version.borrow() + 1;
        let mut changed = false;
        // Whether a part at `at` may replace one shown at `shown` (always without positions).
        let newer = |shown: i64| position.is_none_or(|at| at >= shown);
        for (campaign, counts, days) in parts {
            let mut published = self
                .campaigns
                .entry(campaign)
                .or_insert_with(|| self.empty(None, now));
            let published = &mut *published;
            if published.partials.len() <= shard {
                published.partials.resize_with(shard + 1, Partial::default);
            }
            let partial = &mut published.partials[shard];
            let mut touched = false;
            if let Some(counts) = counts
                && newer(partial.position)
            {
                replace_counts(&mut published.counts, &partial.counts, &counts);
                partial.counts = counts;
                partial.position = position.unwrap_or(partial.position);
                partial.counts_due = true;
                touched = true;
            }
            for (day, counts) in days {
                let shown = partial.day_positions.get(&day).copied().unwrap_or(i64::MIN);
                if !newer(shown) {
                    continue;
                }
                if let Some(position) = position {
                    partial.day_positions.insert(day, position);
                }
                let old = partial.timeline.get(&day).copied().unwrap_or_default();
                set_day(&mut partial.timeline, day, counts);
                let mut sum = published.timeline.get(&day).copied().unwrap_or_default();
                for (total, (before, after)) in day_columns(&mut sum)
                    .into_iter()
                    .zip(day_values(&old).into_iter().zip(day_values(&counts)))
                {
                    *total = *total - before + after;
                }
                set_day(&mut published.timeline, day, sum);
                published.snapshot_days.insert(day);
                partial.days_due.insert(day);
                touched = true;
            }
            if touched {
                partial.as_of = now;
                published.as_of = now;
                published.version = version;
                published.snapshot_due = true;
                changed = true;
            }
        }
        if changed {
            self.version.send_replace(version);
        }
    }

    /// Forgets shard `shard`'s part of `campaigns`, released to another instance with their
    /// Kafka partition. A campaign no shard holds any more goes back to zero when registered
    /// and goes away otherwise. None is snapshotted from here again until it changes here, so
    /// this instance never overwrites downstream what the new owner writes.
    pub fn remove(&self, shard: usize, campaigns: &[String], now: DateTime<Utc>) {
        if campaigns.is_empty() {
            return;
        }
        let version = *self.version.borrow() + 1;
        for campaign in campaigns {
            let Some(mut entry) = self.campaigns.get_mut(campaign.as_str()) else {
                continue;
            };
            let published = &mut *entry;
            if let Some(partial) = published.partials.get_mut(shard) {
                let partial = std::mem::take(partial);
                let empty = Counts {
                    chapters_completed: vec![0; partial.counts.chapters_completed.len()],
                    ..Counts::default()
                };
                replace_counts(&mut published.counts, &partial.counts, &empty);
                for (day, old) in partial.timeline {
                    let mut sum = published.timeline.get(&day).copied().unwrap_or_default();
                    for (total, before) in day_columns(&mut sum).into_iter().zip(day_values(&old)) {
                        *total -= before;
                    }
                    set_day(&mut published.timeline, day, sum);
                }
            }
            published.version = version;
            // Every figure is dated in the timeline (clicks, and stages implied by chapters), so
            // a shard with no day holds nothing of the campaign.
            if published
                .partials
                .iter()
                .all(|partial| partial.timeline.is_empty())
            {
                drop(entry);
                let registered = match self.campaigns.get_mut(campaign.as_str()) {
                    Some(mut published) if published.info.is_some() => {
                        let info = published.info.take();
                        *published = Published {
                            info,
                            version,
                            ..self.empty(None, now)
                        };
                        true
                    }
                    _ => false,
                };
                if !registered {
                    self.campaigns.remove(campaign.as_str());
                }
            }
        }
        self.version.send_replace(version);
    }

    /// The position of the partial shown for a campaign's counts (`day` `None`) or one of its
    /// days in `shard` ([`Figures::publish_at`]); `None` when none is.
    pub fn shown_position(&self, shard: usize, campaign: &str, day: Option<Day>) -> Option<i64> {
        let published = self.campaigns.get(campaign)?;
        let partial = published.partials.get(shard)?;
        match day {
            None => Some(partial.position),
            Some(day) => partial.day_positions.get(&day).copied(),
        }
    }

    /// The counters of `campaign`, if it is registered or was ever seen.
    pub fn campaign(&self, campaign: &str) -> Option<CampaignCounters> {
        if campaign == TOTALS_CAMPAIGN {
            return None;
        }
        self.campaigns
            .get(campaign)
            .map(|published| counters(campaign, &published))
    }

    /// The counters of every campaign, by id.
    pub fn campaigns(&self) -> Vec<CampaignCounters> {
        let mut all: Vec<CampaignCounters> = self
            .campaigns
            .iter()
            .filter(|entry| entry.key() != TOTALS_CAMPAIGN)
            .map(|entry| counters(entry.key(), entry.value()))
            .collect();
        all.sort_by(|a, b| a.campaign.cmp(&b.campaign));
        all
    }

    /// The programme totals: distinct learners over every campaign.
    pub fn totals(&self) -> CampaignCounters {
        self.campaigns
            .get(TOTALS_CAMPAIGN)
            .map(|published| counters(TOTALS_CAMPAIGN, &published))
            .unwrap_or_else(|| counters(TOTALS_CAMPAIGN, &self.empty(None, Utc::now())))
    }

    /// The days of `campaign` (or of the totals) from `from` to `to`, both included, leaving
    /// out days with nothing new; `None` for an unknown campaign.
    pub fn timeline(
        &self,
        campaign: &str,
        from: Option<Day>,
        to: Option<Day>,
    ) -> Option<Vec<DayCounters>> {
        let published = self.campaigns.get(campaign)?;
        let range = (
            from.map_or(Bound::Unbounded, Bound::Included),
            to.map_or(Bound::Unbounded, Bound::Included),
        );
        if matches!((from, to), (Some(from), Some(to)) if from > to) {
            return Some(Vec::new());
        }
        Some(
            published
                .timeline
                .range(range)
                .map(|(day, counts)| day_counters(*day, counts))
                .collect(),
        )
    }

    /// The version of the figures at which `campaign` last changed.
    pub fn campaign_version(&self, campaign: &str) -> Option<u64> {
        self.campaigns
            .get(campaign)
            .map(|published| published.version)
    }

    /// The ids of every campaign, totals excluded.
    pub fn campaign_ids(&self) -> Vec<String> {
        self.campaigns
            .iter()
            .map(|entry| entry.key().clone())
            .filter(|id| id != TOTALS_CAMPAIGN)
            .collect()
    }

    /// A receiver that sees the figures' version change after each publish.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Takes what changed since the last call, for a snapshot.
    pub fn take_changes(&self) -> Changes {
        let mut changes = Changes::default();
        for mut entry in self.campaigns.iter_mut() {
            if !entry.snapshot_due {
                continue;
            }
            entry.snapshot_due = false;
            let days = std::mem::take(&mut entry.snapshot_days);
            let published = entry.value();
            let day_counters = days
                .into_iter()
                .map(|day| {
                    day_counters(
                        day,
                        &published.timeline.get(&day).copied().unwrap_or_default(),
                    )
                })
                .collect();
            changes.campaigns.push(counters(entry.key(), published));
            changes.days.push((entry.key().clone(), day_counters));
        }
        changes
            .campaigns
            .sort_by(|a, b| a.campaign.cmp(&b.campaign));
        changes.days.sort_by(|a, b| a.0.cmp(&b.0));
        changes
    }

    fn empty(&self, info: Option<Info>, now: DateTime<Utc>) -> Published {
        Published {
            info: info.map(Arc::new),
            counts: Counts {
                chapters_completed: vec![0; usize::from(self.chapter_count)],
                ..Counts::default()
            },
            timeline: BTreeMap::new(),
            partials: Vec::new(),
            as_of: now,
            version: 0,
            snapshot_due: false,
            snapshot_days: BTreeSet::new(),
        }
    }
}

fn counters(campaign: &str, published: &Published) -> CampaignCounters {
    let counts = &published.counts;
    let target = published.info.as_ref().and_then(|info| info.target);
    CampaignCounters {
        campaign: campaign.to_owned(),
        name: published
            .info
            .as_ref()
            .map(|info| info.name.clone())
            .unwrap_or_default(),
        clicks: counts.clicks,
        unique_visitors: counts.unique_visitors,
        enrolled: counts.enrolled,
        started: counts.started,
        chapters_completed: counts.chapters_completed.clone(),
        certified: counts.certified,
        completion_rate: ratio(counts.certified, counts.enrolled).unwrap_or(0.0),
        target,
        progress: target.and_then(|target| ratio(counts.certified, target)),
        as_of: published.as_of,
        registered: published.info.is_some() && campaign != TOTALS_CAMPAIGN,
    }
}

/// Replaces, in the sum `total`, the partial `before` by `after`.
fn replace_counts(total: &mut Counts, before: &Counts, after: &Counts) {
    for (total, (before, after)) in [
        (&mut total.clicks, (before.clicks, after.clicks)),
        (
            &mut total.unique_visitors,
            (before.unique_visitors, after.unique_visitors),
        ),
        (&mut total.enrolled, (before.enrolled, after.enrolled)),
        (&mut total.started, (before.started, after.started)),
        (&mut total.certified, (before.certified, after.certified)),
    ] {
        *total = *total - before + after;
    }
    let chapters = total
        .chapters_completed
        .len()
        .max(after.chapters_completed.len());
    total.chapters_completed.resize(chapters, 0);
    for (index, total) in total.chapters_completed.iter_mut().enumerate() {
        let before = before.chapters_completed.get(index).copied().unwrap_or(0);
        let after = after.chapters_completed.get(index).copied().unwrap_or(0);
        *total = *total - before + after;
    }
}

/// The columns of a day, to add to or take from.
fn day_columns(day: &mut DayCounts) -> [&mut u64; 4] {
    [
        &mut day.clicks,
        &mut day.enrolled,
        &mut day.started,
        &mut day.certified,
    ]
}

/// The values of a day's columns, in [`day_columns`]' order.
fn day_values(day: &DayCounts) -> [u64; 4] {
    [day.clicks, day.enrolled, day.started, day.certified]
}

/// Sets a day of a timeline; a day with nothing new is left out.
fn set_day(timeline: &mut BTreeMap<Day, DayCounts>, day: Day, counts: DayCounts) {
    if counts == DayCounts::default() {
        timeline.remove(&day);
    } else {
        timeline.insert(day, counts);
    }
}

fn day_counters(day: Day, counts: &DayCounts) -> DayCounters {
    DayCounters {
        day,
        clicks: counts.clicks,
        enrolled: counts.enrolled,
        started: counts.started,
        certified: counts.certified,
    }
}

#[allow(clippy::cast_precision_loss)] // Counts stay far below 2^52.
fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}
