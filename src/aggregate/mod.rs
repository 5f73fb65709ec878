//! The aggregation core: folds validated events into exact per-campaign funnels and the
//! programme totals. It is synchronous, does no IO, takes no lock and cannot fail: an event is
//! either accepted, a duplicate, or rejected with a reason. One [`Aggregator`] is owned by one
//! thread (see `pipeline`), which publishes what changed to the read side (`figures`).
//!
//! The counters are a function of the *set* of distinct events: a learner keeps, per stage, the
//! earliest day that reached it (directly or by implication), so events may come in any order,
//! any number of times, and the result is the same.

use std::collections::BTreeMap;

use chrono_tz::Tz;
use hashbrown::{HashMap, HashSet, HashTable};
use serde::{Deserialize, Serialize};

mod storage;

pub use storage::Admission;

use crate::day::Day;
use crate::event::{
    Action, Event, EventId, LearnerKey, RejectReason, Stage, TOTALS_CAMPAIGN, VisitorKey,
};

/// What the aggregator needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct AggregatorSettings {
    /// Days of the timeline are calendar days in this zone.
    pub time_zone: Tz,
    /// The course's chapters, 1 to `MAX_CHAPTER_COUNT`.
    pub chapter_count: u8,
    /// The most campaigns held; events that would open one more are rejected.
    pub max_campaigns: usize,
}

/// The funnel of one campaign, or of the whole programme.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub clicks: u64,
    pub unique_visitors: u64,
    pub enrolled: u64,
    pub started: u64,
    /// Index i counts the learners who completed chapter i + 1.
    pub chapters_completed: Vec<u64>,
    pub certified: u64,
}

/// What was new on one day: clicks, and learners who first reached a stage that day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounts {
    pub clicks: u64,
    pub enrolled: u64,
    pub started: u64,
    pub certified: u64,
}

/// The outcome of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Accepted,
    /// The event id was seen before; `conflict` when the content differs from the first one.
    Duplicate {
        conflict: bool,
    },
    Rejected(RejectReason),
}

/// A campaign whose counters changed since the last [`Aggregator::drain_changes`]: its counts
/// now, and the current value of every day that changed (all zero when a day emptied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignChange {
    pub campaign: String,
    pub counts: Counts,
    pub days: Vec<(Day, DayCounts)>,
}

/// The sizes of what the aggregator holds, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holdings {
    pub campaigns: usize,
    /// Distinct learners over the whole programme.
    pub learners: usize,
    /// (campaign, learner) records, totals excluded.
    pub campaign_learners: usize,
    pub event_ids: usize,
}

/// Per-campaign funnels and programme totals, deduplicated by event id.
#[derive(Debug)]
pub struct Aggregator {
    settings: AggregatorSettings,
    /// Every accepted event: 96 bits of id fingerprint, then 32 bits of content fingerprint.
    seen: HashTable<[u32; 4]>,
    index: HashMap<String, usize>,
    campaigns: Vec<CampaignState>,
    totals: CampaignState,
    /// Indexes of campaigns changed since the last drain, each once.
    changed: Vec<usize>,
}

/// One campaign's state: every learner's progress, the visitors, the counters and the timeline.
#[derive(Debug)]
struct CampaignState {
    id: String,
    learners: HashMap<LearnerKey, Progress>,
    visitors: HashSet<VisitorKey>,
    counts: Counts,
    timeline: BTreeMap<Day, DayCounts>,
    /// Set by the aggregator when a counter changed since the last drain.
    changed: bool,
    /// Days whose counts changed since the last drain, possibly repeated.
    changed_days: Vec<Day>,
}

/// The timeline of one campaign being edited, with the record of the days edited.
struct DayEdits<'a> {
    timeline: &'a mut BTreeMap<Day, DayCounts>,
    changed_days: &'a mut Vec<Day>,
}

/// Compacts the changed-days record past this length, so that a long replay between two drains
/// keeps it small.
const CHANGED_DAYS_COMPACT_LEN: usize = 4096;

impl DayEdits<'_> {
    fn bump(&mut self, day: Day, column: Column, up: bool) {
        let counts = self.timeline.entry(day).or_default();
        let cell = counts.column(column);
        if up {
            *cell += 1;
        } else {
            // A day is only ever decremented for a learner it was incremented for.
            *cell = cell.saturating_sub(1);
            if *counts == DayCounts::default() {
                self.timeline.remove(&day);
            }
        }
        if self.changed_days.last() != Some(&day) {
            self.changed_days.push(day);
            if self.changed_days.len() > CHANGED_DAYS_COMPACT_LEN {
                self.changed_days.sort_unstable();
                self.changed_days.dedup();
            }
        }
    }
}

/// Dates a stage by the earliest day that reached it, keeping counters and timeline in step.
fn first_reached(
    slot: &mut Option<Day>,
    day: Day,
    column: Column,
    counts: &mut Counts,
    days: &mut DayEdits<'_>,
) -> bool {
    match *slot {
        None => {
            *counts.column(column) += 1;
            days.bump(day, column, true);
        }
        Some(earlier) if day < earlier => {
            days.bump(earlier, column, false);
            days.bump(day, column, true);
        }
        Some(_) => return false,
    }
    *slot = Some(day);
    true
}

/// How far one learner went in one campaign, each stage dated by the earliest event reaching it.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    enrolled: Option<Day>,
    started: Option<Day>,
    certified: Option<Day>,
    /// Bit i set when chapter i + 1 is completed.
    chapters: u32,
}

#[derive(Debug, Clone, Copy)]
enum Column {
    Clicks,
    Enrolled,
    Started,
    Certified,
}

impl Aggregator {
    /// An empty aggregator that already holds the `registered` campaigns, so that they are never
    /// refused for lack of room.
    pub fn new(
        settings: AggregatorSettings,
        registered: impl IntoIterator<Item = String>,
    ) -> Aggregator {
        let chapter_count = settings.chapter_count;
        let mut aggregator = Aggregator {
            seen: HashTable::new(),
            index: HashMap::new(),
            campaigns: Vec::new(),
            totals: CampaignState::new(TOTALS_CAMPAIGN.to_owned(), chapter_count),
            changed: Vec::new(),
            settings,
        };
        for campaign in registered {
            aggregator.open_campaign(campaign);
        }
        aggregator
    }

    /// Folds one event in.
    pub fn apply(&mut self, event: &Event) -> Applied {
        let hash = seen_hash(&event.id.0);
        if let Some(seen) = self.seen.find(hash, |seen| seen[..3] == event.id.0) {
            return Applied::Duplicate {
                conflict: seen[3] != event.content,
            };
        }
        let index = match self.index.get(event.campaign.as_str()) {
            Some(index) => *index,
            None if self.campaigns.len() >= self.settings.max_campaigns => {
                return Applied::Rejected(RejectReason::TooManyCampaigns {
                    campaign: event.campaign.clone(),
                    limit: self.settings.max_campaigns,
                });
            }
            None => self.open_campaign(event.campaign.clone()),
        };
        let EventId([a, b, c]) = event.id;
        self.seen
            .insert_unique(hash, [a, b, c, event.content], |seen| {
                seen_hash(&[seen[0], seen[1], seen[2]])
            });
        let day = Day::of(event.occurred_at, self.settings.time_zone);
        let all_chapters = all_chapters(self.settings.chapter_count);
        let campaign = &mut self.campaigns[index];
        if campaign.apply(event.action, day, all_chapters) && !campaign.changed {
            campaign.changed = true;
            self.changed.push(index);
        }
        if self.totals.apply(event.action, day, all_chapters) {
            self.totals.changed = true;
        }
        Applied::Accepted
    }

    /// Takes what changed since the last call: each changed campaign once, then the totals.
    pub fn drain_changes(&mut self) -> Vec<CampaignChange> {
        let mut changes: Vec<CampaignChange> = self
            .changed
            .drain(..)
            .map(|index| self.campaigns[index].take_change())
            .collect();
        if self.totals.changed {
            changes.push(self.totals.take_change());
        }
        changes
    }

    /// The sizes of what is held.
    pub fn holdings(&self) -> Holdings {
        Holdings {
            campaigns: self.campaigns.len(),
            learners: self.totals.learners.len(),
            campaign_learners: self.campaigns.iter().map(|c| c.learners.len()).sum(),
            event_ids: self.seen.len(),
        }
    }

    /// The counters and timeline of `campaign` ([`TOTALS_CAMPAIGN`] for the totals).
    pub fn campaign(&self, campaign: &str) -> Option<(&Counts, &BTreeMap<Day, DayCounts>)> {
        let state = if campaign == TOTALS_CAMPAIGN {
            &self.totals
        } else {
            &self.campaigns[*self.index.get(campaign)?]
        };
        Some((&state.counts, &state.timeline))
    }

    /// The ids of every campaign held, in the order they were opened.
    pub fn campaign_ids(&self) -> impl Iterator<Item = &str> {
        self.campaigns.iter().map(|c| c.id.as_str())
    }

    fn open_campaign(&mut self, campaign: String) -> usize {
        let index = self.campaigns.len();
        self.index.insert(campaign.clone(), index);
        self.campaigns
            .push(CampaignState::new(campaign, self.settings.chapter_count));
        index
    }
}

impl CampaignState {
    fn new(id: String, chapter_count: u8) -> CampaignState {
        CampaignState {
            id,
            learners: HashMap::new(),
            visitors: HashSet::new(),
            counts: Counts {
                chapters_completed: vec![0; usize::from(chapter_count)],
                ..Counts::default()
            },
            timeline: BTreeMap::new(),
            changed: false,
            changed_days: Vec::new(),
        }
    }

    /// Folds one new event in; says whether any counter changed.
    fn apply(&mut self, action: Action, day: Day, all_chapters: u32) -> bool {
        match action {
            Action::Click { visitor } => {
                self.counts.clicks += 1;
                self.bump(day, Column::Clicks, true);
                if let Some(visitor) = visitor
                    && self.visitors.insert(visitor)
                {
                    self.counts.unique_visitors += 1;
                }
                true
            }
            Action::Progress { learner, stage } => self.reach(learner, stage, day, all_chapters),
        }
    }

    /// Moves `learner` to `stage` on `day`, with every stage it implies.
    fn reach(&mut self, learner: LearnerKey, stage: Stage, day: Day, all_chapters: u32) -> bool {
        let CampaignState {
            learners,
            counts,
            timeline,
            changed_days,
            ..
        } = self;
        let mut days = DayEdits {
            timeline,
            changed_days,
        };
        // A new learner always changes (it enrolls), so the entry never stays empty.
        let progress = learners.entry(learner).or_default();
        let mut changed = first_reached(
            &mut progress.enrolled,
            day,
            Column::Enrolled,
            counts,
            &mut days,
        );
        if stage != Stage::Enrolled {
            changed |= first_reached(
                &mut progress.started,
                day,
                Column::Started,
                counts,
                &mut days,
            );
        }
        let chapters = match stage {
            Stage::ChapterCompleted(chapter) => 1u32 << (chapter - 1),
            Stage::Certified => all_chapters,
            Stage::Enrolled | Stage::Started => 0,
        };
        let new_chapters = chapters & !progress.chapters;
        if new_chapters != 0 {
            progress.chapters |= new_chapters;
            for (bit, count) in counts.chapters_completed.iter_mut().enumerate() {
                if new_chapters & (1 << bit) != 0 {
                    *count += 1;
                }
            }
            changed = true;
        }
        if stage == Stage::Certified {
            changed |= first_reached(
                &mut progress.certified,
                day,
                Column::Certified,
                counts,
                &mut days,
            );
        }
        changed
    }

    fn bump(&mut self, day: Day, column: Column, up: bool) {
        DayEdits {
            timeline: &mut self.timeline,
            changed_days: &mut self.changed_days,
        }
        .bump(day, column, up);
    }

    fn take_change(&mut self) -> CampaignChange {
        self.changed = false;
        let mut changed_days = std::mem::take(&mut self.changed_days);
        changed_days.sort_unstable();
        changed_days.dedup();
        let days = changed_days
            .into_iter()
            .map(|day| (day, self.timeline.get(&day).copied().unwrap_or_default()))
            .collect();
        CampaignChange {
            campaign: self.id.clone(),
            counts: self.counts.clone(),
            days,
        }
    }
}

impl Counts {
    fn column(&mut self, column: Column) -> &mut u64 {
        match column {
            Column::Clicks => &mut self.clicks,
            Column::Enrolled => &mut self.enrolled,
            Column::Started => &mut self.started,
            Column::Certified => &mut self.certified,
        }
    }
}

impl DayCounts {
    fn column(&mut self, column: Column) -> &mut u64 {
        match column {
            Column::Clicks => &mut self.clicks,
            Column::Enrolled => &mut self.enrolled,
            Column::Started => &mut self.started,
            Column::Certified => &mut self.certified,
        }
    }
}

/// The fingerprint is already uniformly distributed: its first 64 bits are the hash.
fn seen_hash(id: &[u32; 3]) -> u64 {
    u64::from(id[0]) | (u64::from(id[1]) << 32)
}

fn all_chapters(chapter_count: u8) -> u32 {
    u32::MAX >> (32 - u32::from(chapter_count.clamp(1, 32)))
}

#[cfg(test)]
mod tests;
