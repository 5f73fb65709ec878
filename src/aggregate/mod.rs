//! The aggregation core: folds validated events into exact per-campaign funnels and the
//! programme totals. It is synchronous, takes no lock and cannot fail but for want of a
//! campaign slot or of a read: an event is either accepted, a duplicate, or rejected with a
//! reason. Its only IO is reading a remembered id from an id run where a filter in memory says
//! it may be ([`Written`]), through the file the durable side opened ([`RunFile`]). One
//! [`Aggregator`] is owned by one thread (see `pipeline`), which publishes what changed to the
//! read side (`figures`).
//!
//! The counters are a function of the *set* of distinct events: a learner keeps, per stage, the
//! earliest day that reached it (directly or by implication), so events may come in any order,
//! any number of times, and the result is the same.
//!
//! Each learner's state is one record (`learners`), from which its progress in each campaign
//! and in the totals is derived. A learner's progress events that name no campaign count under
//! the learner's campaign — that of its earliest event naming one, ties broken by the smaller
//! event id — and under `direct` while none does; when an earlier named event arrives, that
//! progress moves with its counters and days, and the totals do not move.
//!
//! Campaigns can also be released ([`Aggregator::release`]): forgotten with their event ids, as
//! if their events had never been applied, when the Kafka partition that feeds them goes to
//! another instance.

use std::collections::{BTreeMap, BTreeSet};

use chrono_tz::Tz;
use hashbrown::{HashMap, HashSet};
use serde::{Deserialize, Serialize};

mod admission;
mod campaign;
mod chunked;
pub mod ids;
mod learners;
mod release;
mod remembered;
mod stored;
mod written;

use campaign::{CampaignState, Progress};
use chunked::{Chunked, Hashed};
use learners::{Change, Counted, Funnels, Record};
use remembered::{content_conflicts, remembered, remembered_slot};

pub use admission::Admission;
pub use remembered::SealedIds;
pub use stored::{Frozen, RUN_ORDER_FORMAT, StoredIds};
pub use written::{
    ENTRY_BYTES, Entry, FilterBuilder, OutOfOrder, Run, RunFile, Written, entry_order,
};

use crate::day::Day;
use crate::event::{
    Action, DIRECT_CAMPAIGN, Event, EventId, LearnerKey, TOTALS_CAMPAIGN, UNREGISTERED_CAMPAIGN,
};

/// What the aggregator needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct AggregatorSettings {
    /// Days of the timeline are calendar days in this zone.
    pub time_zone: Tz,
    /// The course's chapters, 1 to `MAX_CHAPTER_COUNT`.
    pub chapter_count: u8,
    /// The most campaigns missing from the registry that get counters of their own; events of
    /// further ones count under [`UNREGISTERED_CAMPAIGN`]. Registered campaigns, [`DIRECT_CAMPAIGN`]
    /// and [`UNREGISTERED_CAMPAIGN`] are always held and do not count against it. With them, at
    /// most [`CAMPAIGN_SLOTS`] (65,536) campaigns are held: each remembered event id keeps its
    /// campaign's slot in 16 bits.
    pub max_unregistered_campaigns: usize,
}

/// The most campaigns an [`Aggregator`] can hold at once, registered, reserved and unregistered
/// together: a campaign's slot is a 16-bit number, kept with each of its remembered event ids.
/// Released campaigns leave their slot to later ones.
pub const CAMPAIGN_SLOTS: usize = 1 << 16;

/// A campaign's place in [`Aggregator`]'s campaigns, stable while the campaign is held.
type Slot = u16;

/// How many events [`Aggregator::warm`] looks up ahead of their [`Aggregator::apply`].
pub const WARM_EVENTS: usize = 16;

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
    /// The event (by source and id) was seen before; `conflict` when the content differs from
    /// the first one.
    Duplicate {
        conflict: bool,
    },
}

/// Why [`Aggregator::apply`] could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    NoCampaignSlot(#[from] NoCampaignSlot),
    /// Whether the event was seen before could not be read from its id run.
    #[error("cannot read a remembered event id from its id run")]
    Unreadable(#[from] std::io::Error),
}

/// An event [`Aggregator::apply`] cannot count: its campaign is not held and every campaign slot
/// is taken. Admission never lets such an event through (nothing valid is refused for lack of a
/// slot); only a journal replayed under a registry grown past the slots can meet it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("campaign {campaign:?} cannot be held: all {CAMPAIGN_SLOTS} campaign slots are taken")]
pub struct NoCampaignSlot {
    pub campaign: String,
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
    /// Campaigns held (released ones are not).
    pub campaigns: usize,
    /// Of those, the campaigns missing from the registry that have counters of their own.
    pub unregistered_campaigns: usize,
    /// Distinct learners over the whole programme.
    pub learners: usize,
    /// (campaign, learner) records, totals excluded.
    pub campaign_learners: usize,
    pub event_ids: usize,
}

/// The learners counted, kept as their records change (counting them would take a pass over
/// all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    /// Learners counted in the totals.
    learners: usize,
    /// (campaign, learner) pairs counted, totals excluded.
    campaign_learners: usize,
}

/// Per-campaign funnels and programme totals, deduplicated by event id.
#[derive(Debug, Clone)]
pub struct Aggregator {
    settings: AggregatorSettings,
    /// Every accepted event of a held campaign is remembered by its id fingerprint, with one
    /// word whose high 16 bits are those of the content fingerprint and whose low 16 bits are
    /// the campaign's slot (see [`remembered`]). Only 16 bits of content are compared to tell a
    /// conflicting reuse of an id from a resend, which only feeds a metric: one conflict in
    /// 65,536 is counted as a plain duplicate. Whether the id is a duplicate is exact (96 bits).
    ///
    /// Here, the ids accepted since the last [`Aggregator::seal`].
    seen: Hashed<EventId, u32>,
    /// The ids sealed for a checkpoint whose runs are not yet [`Aggregator::install`]ed (more
    /// than one table when a checkpoint failed), oldest first.
    sealed: Vec<Hashed<EventId, u32>>,
    /// The ids in the runs of the last checkpoint installed, out of memory.
    written: Written,
    /// The seal whose runs [`Aggregator::install`] takes: none after a release, whose
    /// forgotten ids a checkpoint sealed before it still holds.
    pending_seal: Option<u64>,
    /// The slot of every campaign held.
    index: HashMap<String, Slot>,
    /// The campaigns held whatever happens, in the order they are opened: [`DIRECT_CAMPAIGN`],
    /// [`UNREGISTERED_CAMPAIGN`], then the registered ones in the registry's order. Every other
    /// campaign held is an unregistered one.
    always_held: Vec<String>,
    /// How many of `always_held` are held: all of them, unless slots ran out.
    always_held_count: usize,
    /// Campaigns by slot. A vacant slot (its campaign released) holds an empty state with an
    /// empty id; it stays, so that slot numbers are stable, until a new campaign takes it.
    campaigns: Vec<CampaignState>,
    /// The vacant slots, taken lowest first, so that slots do not depend on restarts.
    vacant: BTreeSet<Slot>,
    totals: CampaignState,
    /// Slots of campaigns changed since the last drain, each once.
    changed: Vec<Slot>,
    /// Every learner's record: what it counts in each campaign and in the totals.
    learners: Chunked<LearnerKey, Record>,
    tally: Tally,
    /// Learners whose events naming no campaign reached something: those the release of
    /// `direct` (under whose slot such events are remembered) has to visit.
    loose_learners: usize,
    /// Room for what one learner counted before and after a change, kept between events.
    counted: (Counted, Counted),
}

impl Aggregator {
    /// An empty aggregator that already holds the `registered` campaigns, [`DIRECT_CAMPAIGN`]
    /// and [`UNREGISTERED_CAMPAIGN`], so that they are never refused for lack of room. Registered
    /// campaigns past the first [`CAMPAIGN_SLOTS`] are not held (configuration refuses such a
    /// registry): their events then count under [`UNREGISTERED_CAMPAIGN`].
    pub fn new(
        settings: AggregatorSettings,
        registered: impl IntoIterator<Item = String>,
    ) -> Aggregator {
        let mut aggregator = Aggregator::empty(settings, registered);
        aggregator.hold_always_held();
        aggregator
    }

    /// An aggregator holding nothing yet, that knows which campaigns it must always hold.
    fn empty(
        settings: AggregatorSettings,
        registered: impl IntoIterator<Item = String>,
    ) -> Aggregator {
        let mut always_held = vec![DIRECT_CAMPAIGN.to_owned(), UNREGISTERED_CAMPAIGN.to_owned()];
        let mut named: HashSet<String> = always_held.iter().cloned().collect();
        for campaign in registered {
            if named.insert(campaign.clone()) {
                always_held.push(campaign);
            }
        }
        Aggregator {
            seen: Chunked::default(),
            sealed: Vec::new(),
            written: Written::default(),
            pending_seal: None,
            index: HashMap::new(),
            always_held,
            always_held_count: 0,
            campaigns: Vec::new(),
            vacant: BTreeSet::new(),
            totals: CampaignState::new(TOTALS_CAMPAIGN.to_owned(), settings.chapter_count),
            changed: Vec::new(),
            learners: Chunked::default(),
            tally: Tally::default(),
            loose_learners: 0,
            counted: (Vec::new(), Vec::new()),
            settings,
        }
    }

    /// Opens, in order, every campaign that must always be held and is not (as far as slots go).
    fn hold_always_held(&mut self) {
        let mut held = 0;
        for position in 0..self.always_held.len() {
            let campaign = &self.always_held[position];
            if self.index.contains_key(campaign.as_str())
                || self.open_campaign(campaign.clone()).is_some()
            {
                held += 1;
            }
        }
        self.always_held_count = held;
    }

    /// Looks up, without changing anything, what applying `events` will look up first: each
    /// one's remembered id and its learner's record (or its visitor, for a click). The
    /// lookups of one event do not wait for another's, so the processor makes them side by
    /// side, where [`Aggregator::apply`], one event after the other, waits for each miss of
    /// the cache in turn: applying a few events just looked up finds them in the cache.
    /// [`WARM_EVENTS`] at a time suits the processor's window.
    pub fn warm<'e>(&self, events: impl IntoIterator<Item = &'e Event>) {
        for event in events {
            std::hint::black_box(self.seen.get(&event.id));
            std::hint::black_box(self.written.may_hold(&event.id));
            let learner = match event.action {
                Action::Progress { learner, .. } | Action::Names { learner } => Some(learner),
                Action::Click { learner, visitor } => {
                    if let (Some(visitor), Some(slot)) =
                        (visitor, self.index.get(event.campaign.as_str()))
                    {
                        std::hint::black_box(
                            self.campaigns[usize::from(*slot)].visitors.get(&visitor),
                        );
                    }
                    learner
                }
            };
            if let Some(learner) = learner {
                std::hint::black_box(self.learners.get(&learner));
            }
        }
    }

    /// Folds one event in, under the campaign it names, opening that campaign when it is not
    /// held yet. No limit is consulted here: what to hold is decided by [`Aggregator::admit`]
    /// before an event is journaled, and replaying the journal must count every event it holds
    /// whatever the settings of this start. Only when all [`CAMPAIGN_SLOTS`] are taken can an
    /// event not be counted, which replay reports as a fatal error.
    pub fn apply(&mut self, event: &Event) -> Result<Applied, ApplyError> {
        if let Some(remembered) = self.remembered_word(&event.id)? {
            return Ok(Applied::Duplicate {
                conflict: content_conflicts(remembered, event.content),
            });
        }
        self.apply_admitted(event)?;
        Ok(Applied::Accepted)
    }

    /// Folds in an event [`Aggregator::admit`] accepted in the group now applied, as
    /// [`Aggregator::apply`] does, without looking its id up again: admission did, in this same
    /// state, and the ids it accepts in a group are distinct. (An id in a run costs a probe of
    /// every run's filter.)
    pub fn apply_admitted(&mut self, event: &Event) -> Result<(), NoCampaignSlot> {
        debug_assert!(
            matches!(self.remembered_word(&event.id), Ok(None)),
            "admission accepted an id already remembered"
        );
        let slot = match self.index.get(event.campaign.as_str()) {
            Some(slot) => *slot,
            None => {
                let Some(slot) = self.open_campaign(event.campaign.clone()) else {
                    return Err(NoCampaignSlot {
                        campaign: event.campaign.clone(),
                    });
                };
                slot
            }
        };
        self.seen.insert(event.id, remembered(event.content, slot));
        let day = Day::of(event.occurred_at, self.settings.time_zone);
        let all_chapters = all_chapters(self.settings.chapter_count);
        let names = |reach| Change::Names {
            at: event.occurred_at.timestamp_micros(),
            id: event.tie_order(),
            slot,
            reach,
        };
        match event.action {
            Action::Progress { learner, stage } => {
                let reach = (stage, day, all_chapters);
                // An event naming no campaign (`direct`) counts where its learner's do.
                let change = if event.campaign == DIRECT_CAMPAIGN {
                    Change::Loose(reach)
                } else {
                    names(Some(reach))
                };
                self.change_learner(learner, change);
            }
            Action::Click { learner, visitor } => {
                self.campaigns[usize::from(slot)].click(visitor, day);
                self.mark_changed(slot);
                self.totals.click(visitor, day);
                self.totals.changed = true;
                // A tagged click names its learner's campaign, as the learner's events do.
                if let Some(learner) = learner
                    && event.campaign != DIRECT_CAMPAIGN
                {
                    self.change_learner(learner, names(None));
                }
            }
            Action::Names { learner } => {
                if event.campaign != DIRECT_CAMPAIGN {
                    self.change_learner(learner, names(None));
                }
            }
        }
        Ok(())
    }

    /// Folds `change` into `learner`'s record and moves the funnels by what that changes.
    fn change_learner(&mut self, learner: LearnerKey, change: Change) {
        let direct = self.index.get(DIRECT_CAMPAIGN).copied();
        let (before, after) = &mut self.counted;
        let (total_before, total_after) = match self.learners.get_mut(&learner) {
            Some(record) => {
                let loose_before = record.loose().is_empty();
                let total_before = record.counted(direct, before);
                record.change(change);
                if loose_before && !record.loose().is_empty() {
                    self.loose_learners += 1;
                }
                (total_before, record.counted(direct, after))
            }
            None => {
                before.clear();
                let record = Record::new(change);
                if !record.loose().is_empty() {
                    self.loose_learners += 1;
                }
                let total_after = record.counted(direct, after);
                self.learners.insert(learner, record);
                (Progress::default(), total_after)
            }
        };
        Funnels {
            campaigns: &mut self.campaigns,
            totals: &mut self.totals,
            changed: &mut self.changed,
            tally: &mut self.tally,
        }
        .shift((before, total_before), (after, total_after));
    }

    /// Notes that the campaign of `slot` changed since the last drain.
    fn mark_changed(&mut self, slot: Slot) {
        let campaign = &mut self.campaigns[usize::from(slot)];
        if !campaign.changed {
            campaign.changed = true;
            self.changed.push(slot);
        }
    }

    /// Takes what changed since the last call: each changed campaign once, then the totals.
    pub fn drain_changes(&mut self) -> Vec<CampaignChange> {
        let mut changes: Vec<CampaignChange> = self
            .changed
            .drain(..)
            .map(|slot| self.campaigns[usize::from(slot)].take_change())
            .collect();
        if self.totals.changed {
            changes.push(self.totals.take_change());
        }
        changes
    }

    /// The sizes of what is held.
    pub fn holdings(&self) -> Holdings {
        Holdings {
            campaigns: self.index.len(),
            unregistered_campaigns: self.unregistered_held(),
            learners: self.tally.learners,
            campaign_learners: self.tally.campaign_learners,
            event_ids: self.seen.len()
                + self.sealed.iter().map(Hashed::len).sum::<usize>()
                + self.written.len(),
        }
    }

    /// The counters and timeline of `campaign` ([`TOTALS_CAMPAIGN`] for the totals).
    pub fn campaign(&self, campaign: &str) -> Option<(&Counts, &BTreeMap<Day, DayCounts>)> {
        let state = if campaign == TOTALS_CAMPAIGN {
            &self.totals
        } else {
            &self.campaigns[usize::from(*self.index.get(campaign)?)]
        };
        Some((&state.counts, &state.timeline))
    }

    /// The ids of every campaign held, in slot order: the order they were opened, except that a
    /// campaign opened after a release takes the lowest slot the release left vacant.
    pub fn campaign_ids(&self) -> impl Iterator<Item = &str> {
        self.campaigns
            .iter()
            .map(|c| c.id.as_str())
            .filter(|id| !id.is_empty())
    }

    /// The campaigns held that are neither registered nor reserved.
    /// The campaigns held that are missing from the registry and have counters of their own.
    pub fn unregistered_campaigns(&self) -> Vec<String> {
        let always: HashSet<&str> = self.always_held.iter().map(String::as_str).collect();
        self.index
            .keys()
            .filter(|campaign| !always.contains(campaign.as_str()))
            .cloned()
            .collect()
    }

    fn unregistered_held(&self) -> usize {
        self.index.len() - self.always_held_count
    }

    /// Holds `campaign` from now, in the lowest vacant slot or a new one; `None`, holding
    /// nothing, when all [`CAMPAIGN_SLOTS`] are taken.
    fn open_campaign(&mut self, campaign: String) -> Option<Slot> {
        let state = CampaignState::new(campaign.clone(), self.settings.chapter_count);
        let slot = match self.vacant.pop_first() {
            Some(slot) => {
                self.campaigns[usize::from(slot)] = state;
                slot
            }
            None => {
                let slot = Slot::try_from(self.campaigns.len()).ok()?;
                self.campaigns.push(state);
                slot
            }
        };
        self.index.insert(campaign, slot);
        Some(slot)
    }
}

fn all_chapters(chapter_count: u8) -> u32 {
    u32::MAX >> (32 - u32::from(chapter_count.clamp(1, 32)))
}

#[cfg(test)]
mod tests;
