//! One campaign's state, or the programme's: every learner's `Progress` (each stage dated by the
//! earliest event that reached it, directly or by implication, and the chapters completed), the
//! visitors, the counters and the timeline, kept in step by `reach` and `first_reached`. Like
//! the rest of `aggregate`, it does no IO and cannot fail.

use std::collections::BTreeMap;

use super::chunked::Chunked;
use super::{CampaignChange, Counts, DayCounts};
use crate::day::Day;
use crate::event::{Action, LearnerKey, Stage, VisitorKey};

/// One campaign's state: every learner's progress, the visitors, the counters and the timeline.
#[derive(Debug, Clone)]
pub(super) struct CampaignState {
    /// The campaign id; empty for a vacant slot (the direct campaign's id is `direct`).
    pub(super) id: String,
    pub(super) learners: Chunked<LearnerKey, Progress>,
    pub(super) visitors: Chunked<VisitorKey, ()>,
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

/// Dates a stage by the earliest day that reached it, keeping counters and timeline in step.
pub(super) fn first_reached(
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
            learners: Chunked::default(),
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
            learners: Chunked::default(),
            visitors: Chunked::default(),
            counts: Counts::default(),
            timeline: BTreeMap::new(),
            changed: false,
            changed_days: Vec::new(),
        }
    }

    /// Whether an accepted event left anything: a learner, a visitor or a click.
    pub(super) fn holds_something(&self) -> bool {
        !self.learners.is_empty() || !self.visitors.is_empty() || self.counts.clicks != 0
    }

    /// Folds one new event in; says whether any counter changed.
    pub(super) fn apply(&mut self, action: Action, day: Day, all_chapters: u32) -> bool {
        match action {
            Action::Click { visitor, .. } => {
                self.counts.clicks += 1;
                self.bump(day, Column::Clicks, true);
                if let Some(visitor) = visitor
                    && self.visitors.add(visitor)
                {
                    self.counts.unique_visitors += 1;
                }
                true
            }
            Action::Progress { learner, stage } => self.reach(learner, stage, day, all_chapters),
            // Counted where its click is; here it only names a campaign (see `attribution`).
            Action::Names { .. } => false,
        }
    }

    /// Moves `learner` to `stage` on `day`, with every stage it implies.
    pub(super) fn reach(
        &mut self,
        learner: LearnerKey,
        stage: Stage,
        day: Day,
        all_chapters: u32,
    ) -> bool {
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
        let progress = learners.get_or_insert_with(learner, Progress::default);
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

    /// Sets `learner`'s record to `progress` (none when empty), moving the counters, chapter
    /// counts and timeline days from what it was; says whether anything changed.
    pub(super) fn set_learner(&mut self, learner: LearnerKey, progress: Progress) -> bool {
        let old = self.learners.get(&learner).copied().unwrap_or_default();
        if old == progress {
            return false;
        }
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
        for (before, after, column) in [
            (old.enrolled, progress.enrolled, Column::Enrolled),
            (old.started, progress.started, Column::Started),
            (old.certified, progress.certified, Column::Certified),
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
        for (bit, count) in counts.chapters_completed.iter_mut().enumerate() {
            match (
                old.chapters & (1 << bit) != 0,
                progress.chapters & (1 << bit) != 0,
            ) {
                (true, false) => *count -= 1,
                (false, true) => *count += 1,
                _ => {}
            }
        }
        if progress.is_empty() {
            learners.remove(&learner);
        } else {
            learners.insert(learner, progress);
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
    /// [`CampaignState::reach`] does to a learner's record.
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
