//! Every learner's state in one record ([`Record`]), from which its progress in each campaign
//! and in the totals is derived ([`Record::counted`]): one table of learners, where there used to
//! be one per campaign, one for the totals and two for attribution, each holding the learner
//! again. An event of a learner looks its record up once; the funnels are moved by the
//! difference its change makes to what the record counts (`Funnels::shift`).
//!
//! Attribution of events that name no campaign (product.md §3) is read off the record: such an
//! event counts under its learner's campaign — the campaign of the learner's earliest event that
//! names one, ties broken by the smaller event id — and under `direct` while none does. So a
//! record keeps what the learner's events naming no campaign reached (`loose`), and for each
//! campaign its events named, the earliest such event and what they reached there (`own`).
//! The progress counted in a campaign is its own, merged with the loose progress when it is the
//! learner's first; the totals count the merge of everything. Each is an earliest day or an OR
//! over the learner's events, so the result does not depend on their order, and when an earlier
//! named event arrives, the loose progress moves with its counters and days while the totals do
//! not move.

use super::campaign::{CampaignState, Progress};
use super::{Slot, Tally};
use crate::day::Day;
use crate::event::Stage;

/// A campaign a learner's events named: the earliest of those events (when it happened, in
/// microseconds since the epoch, kept as two words so that a record packs at four bytes; and
/// its `Event::tie_order`), the campaign's slot, and what those events reached there (its
/// `Progress`, kept field by field so that the slot fills what would be its padding: 32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Named {
    at: [u32; 2],
    id: [u32; 3],
    chapters: u32,
    days: [Option<Day>; 3],
    pub(super) slot: Slot,
}

/// One learner's whole state. Nearly every learner came through one campaign, or directly, and
/// may follow the course where events name no campaign (a partner's LMS): those three cases are
/// kept inline, in 48 bytes; a learner who named several campaigns is boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Record {
    /// Only events naming no campaign: what they reached.
    Direct(Progress),
    /// Events naming one campaign, and none naming no campaign.
    One(Named),
    /// Events naming one campaign, and what events naming no campaign reached.
    OneLoose(Named, Progress),
    /// Any other case.
    Full(Box<Full>),
}

/// A learner's state in any case: what its events naming no campaign reached, and the
/// campaigns its events named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Full {
    pub(super) loose: Progress,
    pub(super) named: Vec<Named>,
}

/// What a record counts in each campaign where it counts anything, by slot.
pub(super) type Counted = Vec<(Slot, Progress)>;

/// A stage reached on a day, with the bits of every chapter (what certified implies).
pub(super) type Reach = (Stage, Day, u32);

/// What one event does to its learner's record.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change {
    /// An event naming no campaign reached a stage.
    Loose(Reach),
    /// An event named the campaign of `slot`: when it happened and its tie order
    /// (`Event::tie_order`: the attribution's order), and the stage it reached there, if any (a tagged click reaches none).
    Names {
        at: i64,
        id: [u32; 3],
        slot: Slot,
        reach: Option<Reach>,
    },
}

impl Named {
    pub(super) fn new(at: i64, id: [u32; 3], slot: Slot, own: Progress) -> Named {
        let at = at.to_le_bytes();
        Named {
            at: [
                u32::from_le_bytes([at[0], at[1], at[2], at[3]]),
                u32::from_le_bytes([at[4], at[5], at[6], at[7]]),
            ],
            id,
            chapters: own.chapters,
            days: [own.enrolled, own.started, own.certified],
            slot,
        }
    }

    /// What the learner's events naming this campaign reached there.
    pub(super) fn own(&self) -> Progress {
        let [enrolled, started, certified] = self.days;
        Progress {
            enrolled,
            started,
            certified,
            chapters: self.chapters,
        }
    }

    pub(super) fn set_own(&mut self, own: Progress) {
        self.chapters = own.chapters;
        self.days = [own.enrolled, own.started, own.certified];
    }

    /// When the earliest event naming this campaign happened, microseconds since the epoch.
    pub(super) fn at(&self) -> i64 {
        (i64::from(self.at[1]) << 32) | i64::from(self.at[0])
    }

    /// The tie order (`Event::tie_order`) of the earliest event naming this campaign.
    pub(super) fn id(&self) -> [u32; 3] {
        self.id
    }

    /// The order of attribution: earliest first, then the smaller event_id (its tie order).
    fn key(&self) -> (i64, [u32; 3]) {
        (self.at(), self.id)
    }

    /// Notes another event naming this campaign, which reached `reach` if anything.
    fn note(&mut self, at: i64, id: [u32; 3], reach: Option<Reach>) {
        if (at, id) < self.key() {
            *self = Named::new(at, id, self.slot, self.own());
        }
        if let Some((stage, day, all_chapters)) = reach {
            self.set_own(self.own().reached(stage, day, all_chapters));
        }
    }
}

impl Record {
    /// The record of a learner first seen by `change`.
    pub(super) fn new(change: Change) -> Record {
        let mut record = Record::Direct(Progress::default());
        record.change(change);
        record
    }

    /// The record of what events naming no campaign reached (`loose`) and of the campaigns
    /// `named` (rows of one campaign merged, as events naming it would be); `None` when both
    /// are empty.
    pub(super) fn of(loose: Progress, named: impl IntoIterator<Item = Named>) -> Option<Record> {
        let mut named = named.into_iter();
        let Some(first) = named.next() else {
            return (!loose.is_empty()).then_some(Record::Direct(loose));
        };
        let Some(second) = named.next() else {
            return Some(if loose.is_empty() {
                Record::One(first)
            } else {
                Record::OneLoose(first, loose)
            });
        };
        let mut full = Full {
            loose,
            named: Vec::new(),
        };
        for named in [first, second].into_iter().chain(named) {
            full.add(named);
        }
        Record::compact(full)
    }

    /// The record in its most compact form.
    fn compact(full: Full) -> Option<Record> {
        match (full.loose.is_empty(), full.named.as_slice()) {
            (true, []) => None,
            (false, []) => Some(Record::Direct(full.loose)),
            (true, [one]) => Some(Record::One(*one)),
            (false, [one]) => Some(Record::OneLoose(*one, full.loose)),
            _ => Some(Record::Full(Box::new(full))),
        }
    }

    /// The record in the form that holds any case.
    pub(super) fn to_full(&self) -> Full {
        match self {
            Record::Direct(loose) => Full {
                loose: *loose,
                named: Vec::new(),
            },
            Record::One(named) => Full {
                loose: Progress::default(),
                named: vec![*named],
            },
            Record::OneLoose(named, loose) => Full {
                loose: *loose,
                named: vec![*named],
            },
            Record::Full(full) => (**full).clone(),
        }
    }

    /// What its events naming no campaign reached.
    pub(super) fn loose(&self) -> Progress {
        match self {
            Record::Direct(loose) | Record::OneLoose(_, loose) => *loose,
            Record::One(_) => Progress::default(),
            Record::Full(full) => full.loose,
        }
    }

    /// The campaigns its events named.
    pub(super) fn named(&self) -> &[Named] {
        match self {
            Record::Direct(_) => &[],
            Record::One(named) | Record::OneLoose(named, _) => std::slice::from_ref(named),
            Record::Full(full) => &full.named,
        }
    }

    /// Folds one event's change in.
    pub(super) fn change(&mut self, change: Change) {
        match (&mut *self, change) {
            (
                Record::Direct(loose) | Record::OneLoose(_, loose),
                Change::Loose((stage, day, all_chapters)),
            ) => {
                *loose = loose.reached(stage, day, all_chapters);
            }
            (Record::One(named), Change::Loose((stage, day, all_chapters))) => {
                let loose = Progress::default().reached(stage, day, all_chapters);
                *self = Record::OneLoose(*named, loose);
            }
            (
                Record::One(named) | Record::OneLoose(named, _),
                Change::Names {
                    at,
                    id,
                    slot,
                    reach,
                },
            ) if named.slot == slot => {
                named.note(at, id, reach);
            }
            (
                Record::Direct(loose),
                Change::Names {
                    at,
                    id,
                    slot,
                    reach,
                },
            ) => {
                let mut named = Named::new(at, id, slot, Progress::default());
                named.note(at, id, reach);
                *self = if loose.is_empty() {
                    Record::One(named)
                } else {
                    Record::OneLoose(named, *loose)
                };
            }
            (Record::Full(full), change) => full.change(change),
            (_, change) => {
                let mut full = self.to_full();
                full.change(change);
                *self = Record::Full(Box::new(full));
            }
        }
    }

    /// The record without the campaigns `released` says (by slot) and, with `loose_released`,
    /// without what its events naming no campaign reached; `None` when nothing is left.
    pub(super) fn without(&self, released: &[bool], loose_released: bool) -> Option<Record> {
        let is_released = |named: &Named| {
            released
                .get(usize::from(named.slot))
                .copied()
                .unwrap_or(false)
        };
        let mut full = self.to_full();
        full.named.retain(|named| !is_released(named));
        if loose_released {
            full.loose = Progress::default();
        }
        Record::compact(full)
    }

    /// Puts in `counted` the progress the record counts in each campaign where it counts any
    /// (`direct` is where loose progress counts while no campaign is named; none when it is not
    /// held), and returns what it counts in the totals.
    pub(super) fn counted(&self, direct: Option<Slot>, counted: &mut Counted) -> Progress {
        counted.clear();
        match self {
            Record::Direct(loose) => {
                if let Some(direct) = direct {
                    counted.push((direct, *loose));
                }
                *loose
            }
            Record::One(named) => {
                let own = named.own();
                if !own.is_empty() {
                    counted.push((named.slot, own));
                }
                own
            }
            // The loose progress counts under the one campaign named.
            Record::OneLoose(named, loose) => {
                let progress = named.own().merged(loose);
                counted.push((named.slot, progress));
                progress
            }
            Record::Full(full) => full.counted(direct, counted),
        }
    }
}

impl Full {
    fn change(&mut self, change: Change) {
        match change {
            Change::Loose((stage, day, all_chapters)) => {
                self.loose = self.loose.reached(stage, day, all_chapters);
            }
            Change::Names {
                at,
                id,
                slot,
                reach,
            } => match self.named.iter_mut().find(|named| named.slot == slot) {
                Some(named) => named.note(at, id, reach),
                None => {
                    let mut named = Named::new(at, id, slot, Progress::default());
                    named.note(at, id, reach);
                    self.named.push(named);
                }
            },
        }
    }

    /// Adds a campaign named, merged with the same campaign's if it is there.
    pub(super) fn add(&mut self, named: Named) {
        match self.named.iter_mut().find(|known| known.slot == named.slot) {
            Some(known) => {
                known.note(named.at(), named.id, None);
                known.set_own(known.own().merged(&named.own()));
            }
            None => self.named.push(named),
        }
    }

    /// The campaign loose progress counts under: the earliest named, by [`Named::key`].
    pub(super) fn first(&self) -> Option<Slot> {
        self.named
            .iter()
            .min_by_key(|named| named.key())
            .map(|named| named.slot)
    }

    fn counted(&self, direct: Option<Slot>, counted: &mut Counted) -> Progress {
        let mut totals = self.loose;
        let first = self.first();
        for named in &self.named {
            let own = named.own();
            totals.merge(&own);
            let progress = if Some(named.slot) == first {
                own.merged(&self.loose)
            } else {
                own
            };
            if !progress.is_empty() {
                counted.push((named.slot, progress));
            }
        }
        if first.is_none()
            && !self.loose.is_empty()
            && let Some(direct) = direct
        {
            counted.push((direct, self.loose));
        }
        totals
    }
}

/// The funnels one learner's change moves: every campaign's (by slot), the totals', and the
/// tally of learners held.
pub(super) struct Funnels<'a> {
    pub(super) campaigns: &'a mut [CampaignState],
    pub(super) totals: &'a mut CampaignState,
    /// Slots of campaigns changed since the last drain, each once.
    pub(super) changed: &'a mut Vec<Slot>,
    pub(super) tally: &'a mut Tally,
}

impl Funnels<'_> {
    /// Moves the funnels from what a learner's record counted (`before`, in the campaigns, and
    /// `total_before` in the totals) to what it counts now.
    pub(super) fn shift(
        &mut self,
        (before, total_before): (&[(Slot, Progress)], Progress),
        (after, total_after): (&[(Slot, Progress)], Progress),
    ) {
        let progress_in = |counted: &[(Slot, Progress)], slot: Slot| {
            counted
                .iter()
                .find(|(counted_slot, _)| *counted_slot == slot)
                .map_or(Progress::default(), |(_, progress)| *progress)
        };
        for &(slot, old) in before {
            self.shift_campaign(slot, old, progress_in(after, slot));
        }
        for &(slot, new) in after {
            if !before.iter().any(|(counted_slot, _)| *counted_slot == slot) {
                self.shift_campaign(slot, Progress::default(), new);
            }
        }
        if self.totals.shift(total_before, total_after) {
            self.totals.changed = true;
            self.tally.learners += usize::from(total_before.is_empty());
            self.tally.learners -= usize::from(total_after.is_empty());
        }
    }

    fn shift_campaign(&mut self, slot: Slot, old: Progress, new: Progress) {
        let campaign = &mut self.campaigns[usize::from(slot)];
        if campaign.shift(old, new) {
            if !campaign.changed {
                campaign.changed = true;
                self.changed.push(slot);
            }
            self.tally.campaign_learners += usize::from(old.is_empty());
            self.tally.campaign_learners -= usize::from(new.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LearnerKey;

    /// The size BENCHMARKS.md's layout estimate and ARCHITECTURE.md count on: a record of the
    /// common cases inline, in 48 bytes, 64 with its key in a table (the box aligns it at 8).
    #[test]
    fn a_record_takes_forty_eight_bytes_and_sixty_four_with_its_key() {
        assert_eq!(std::mem::size_of::<Named>(), 32);
        assert_eq!(std::mem::size_of::<Record>(), 48);
        assert_eq!(std::mem::size_of::<(LearnerKey, Record)>(), 64);
    }

    /// A learner who came through a partner's link and follows the course on the partner's
    /// LMS, whose events name no campaign, stays inline; only a second campaign boxes it.
    #[test]
    fn a_learner_of_one_campaign_and_an_lms_is_held_inline() {
        let day = Day::from_number(100).expect("a day");
        let names = |slot, at| Change::Names {
            at,
            id: [1, 2, 3],
            slot,
            reach: Some((Stage::Enrolled, day, 0b111)),
        };
        let mut record = Record::new(names(4, 10));
        assert!(matches!(record, Record::One(_)));
        record.change(Change::Loose((Stage::ChapterCompleted(1), day, 0b111)));
        assert!(matches!(record, Record::OneLoose(_, _)));
        record.change(names(4, 5));
        assert!(matches!(record, Record::OneLoose(_, _)));
        let mut counted = Vec::new();
        let total = record.counted(Some(0), &mut counted);
        assert_eq!(counted, [(4, total)]);
        assert_eq!(total.chapters, 0b001);
        record.change(names(7, 1));
        assert!(matches!(record, Record::Full(_)));
        // The earlier link now takes the loose progress; the first keeps its own.
        let total = record.counted(Some(0), &mut counted);
        assert_eq!(total.chapters, 0b001);
        assert!(
            counted.contains(&(
                7,
                Progress::default()
                    .reached(Stage::Enrolled, day, 0b111)
                    .merged(&Progress::default().reached(Stage::ChapterCompleted(1), day, 0b111))
            ))
        );
        assert!(counted.contains(&(4, Progress::default().reached(Stage::Enrolled, day, 0b111))));
    }
}
