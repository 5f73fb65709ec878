//! One campaign's state, or the programme's: the visitors, the counters and the timeline, moved
//! by the clicks and by the change of each learner's `Progress` there (each stage dated by the
//! earliest event that reached it, directly or by implication, and the chapters completed),
//! which the learners' records give (`learners`). Like the rest of `aggregate`, it does no IO
//! and cannot fail.

use std::collections::BTreeMap;

use super::chunked::{Chunked, Hashed};
use super::{CampaignChange, Counts, DayCounts};
use crate::day::Day;
use crate::event::{Stage, VisitorKey};

/// One campaign's state: the visitors, the counters and the timeline.
#[derive(Debug, Clone)]
pub(super) struct CampaignState {
    /// The campaign id; empty for a vacant slot (the direct campaign's id is `direct`).
    pub(super) id: String,
    pub(super) visitors: Hashed<VisitorKey, ()>,
    pub(super) counts: Counts,
    pub(super) timeline: BTreeMap<Day, DayCounts>,
    /// Set by the aggregator when a counter changed since the last drain.
    pub(super) changed: bool,
    /// Days whose counts changed since the last drain, possibly repeated.
    pub(super) changed_days: Vec<Day>,
}

/// The timeline of one campaign being edited, with the record of the days edited.
pub(super) struct DayEdits<'a> {
    timeline: &'a mut BTreeMap<Day, DayCounts>,
    changed_days: &'a mut Vec<Day>,
}

/// Compacts the changed-days record past this length, so that a long replay between two drains
/// keeps it small.
pub(super) const CHANGED_DAYS_COMPACT_LEN: usize = 4096;

impl DayEdits<'_> {
    pub(super) fn bump(&mut self, day: Day, column: Column, up: bool) {
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

/// How far one learner went in one campaign, each stage dated by the earliest event reaching it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Progress {
    pub(super) enrolled: Option<Day>,
    pub(super) started: Option<Day>,
    pub(super) certified: Option<Day>,
    /// Bit i set when chapter i + 1 is completed.
    pub(super) chapters: u32,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Column {
    Clicks,
    Enrolled,
    Started,
    Certified,
}

impl CampaignState {
    pub(super) fn new(id: String, chapter_count: u8) -> CampaignState {
        CampaignState {
            id,
            visitors: Chunked::default(),
            counts: Counts {
                chapters_completed: vec![0; usize::from(chapter_count)],
                ..Counts::default()
            },
            timeline: BTreeMap::new(),
            changed: false,
            changed_days: Vec::new(),
        }
    }

    /// The state of a vacant slot: no id, nothing held.
    pub(super) fn vacant() -> CampaignState {
        CampaignState {
            id: String::new(),
            visitors: Chunked::default(),
            counts: Counts::default(),
            timeline: BTreeMap::new(),
            changed: false,
            changed_days: Vec::new(),
        }
    }

    /// Whether an accepted event left anything: a learner, a visitor or a click.
    pub(super) fn holds_something(&self) -> bool {
        self.counts.enrolled != 0 || !self.visitors.is_empty() || self.counts.clicks != 0
    }

    /// Counts a click: its visitor, if it has one, among the campaign's unique visitors.
    pub(super) fn click(&mut self, visitor: Option<VisitorKey>, day: Day) {
        self.counts.clicks += 1;
        self.bump(day, Column::Clicks, true);
        if let Some(visitor) = visitor
            && self.visitors.add(visitor)
        {
            self.counts.unique_visitors += 1;
        }
    }

    /// Moves the counters, chapter counts and timeline days from one learner's progress `old`
    /// to `new` (either empty when the learner is not counted here); says whether anything
    /// changed.
    pub(super) fn shift(&mut self, old: Progress, new: Progress) -> bool {
        if old == new {
            return false;
        }
        let CampaignState {
            counts,
            timeline,
            changed_days,
            ..
        } = self;
        let mut days = DayEdits {
            timeline,
            changed_days,
        };
        for (before, after, column) in [
            (old.enrolled, new.enrolled, Column::Enrolled),
            (old.started, new.started, Column::Started),
            (old.certified, new.certified, Column::Certified),
        ] {
            if before != after {
                if let Some(day) = before {
                    *counts.column(column) -= 1;
                    days.bump(day, column, false);
                }
                if let Some(day) = after {
                    *counts.column(column) += 1;
                    days.bump(day, column, true);
                }
            }
        }
        let moved = old.chapters ^ new.chapters;
        if moved != 0 {
            for (bit, count) in counts.chapters_completed.iter_mut().enumerate() {
                if moved & (1 << bit) != 0 {
                    if new.chapters & (1 << bit) != 0 {
                        *count += 1;
                    } else {
                        *count -= 1;
                    }
                }
            }
        }
        true
    }

    pub(super) fn bump(&mut self, day: Day, column: Column, up: bool) {
        DayEdits {
            timeline: &mut self.timeline,
            changed_days: &mut self.changed_days,
        }
        .bump(day, column, up);
    }

    pub(super) fn take_change(&mut self) -> CampaignChange {
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

impl Progress {
    /// Whether nothing is reached (every stage implies enrolled).
    pub(super) fn is_empty(&self) -> bool {
        self.enrolled.is_none() && self.chapters == 0
    }

    /// This progress with `stage` reached on `day`, with every stage it implies: what
    /// an event reaching it does to a learner's record.
    pub(super) fn reached(mut self, stage: Stage, day: Day, all_chapters: u32) -> Progress {
        let earliest = |slot: Option<Day>| Some(slot.map_or(day, |earlier| earlier.min(day)));
        self.enrolled = earliest(self.enrolled);
        if stage != Stage::Enrolled {
            self.started = earliest(self.started);
        }
        self.chapters |= match stage {
            Stage::ChapterCompleted(chapter) => 1u32 << (chapter - 1),
            Stage::Certified => all_chapters,
            Stage::Enrolled | Stage::Started => 0,
        };
        if stage == Stage::Certified {
            self.certified = earliest(self.certified);
        }
        self
    }

    /// The merge of two progresses, as [`Progress::merge`].
    pub(super) fn merged(mut self, other: &Progress) -> Progress {
        self.merge(other);
        self
    }

    /// Adds what `other` reached: each stage at the earlier day of the two, chapters of both.
    pub(super) fn merge(&mut self, other: &Progress) {
        let earliest = |a: Option<Day>, b: Option<Day>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.enrolled = earliest(self.enrolled, other.enrolled);
        self.started = earliest(self.started, other.started);
        self.certified = earliest(self.certified, other.certified);
        self.chapters |= other.chapters;
    }
}

impl Counts {
    /// Adds the learners `other` counts (not its clicks nor its visitors).
    pub(super) fn add_learners(&mut self, other: &Counts) {
        self.enrolled += other.enrolled;
        self.started += other.started;
        self.certified += other.certified;
        for (count, other) in self
            .chapters_completed
            .iter_mut()
            .zip(&other.chapters_completed)
        {
            *count += other;
        }
    }

    /// Adds one learner's progress to the counts.
    pub(super) fn count_learner(&mut self, progress: &Progress) {
        self.enrolled += u64::from(progress.enrolled.is_some());
        self.started += u64::from(progress.started.is_some());
        self.certified += u64::from(progress.certified.is_some());
        for (bit, count) in self.chapters_completed.iter_mut().enumerate() {
            *count += u64::from(progress.chapters & (1 << bit) != 0);
        }
    }

    pub(super) fn column(&mut self, column: Column) -> &mut u64 {
        match column {
            Column::Clicks => &mut self.clicks,
            Column::Enrolled => &mut self.enrolled,
            Column::Started => &mut self.started,
            Column::Certified => &mut self.certified,
        }
    }
}

impl DayCounts {
    pub(super) fn column(&mut self, column: Column) -> &mut u64 {
        match column {
            Column::Clicks => &mut self.clicks,
            Column::Enrolled => &mut self.enrolled,
            Column::Started => &mut self.started,
            Column::Certified => &mut self.certified,
        }
    }
}
