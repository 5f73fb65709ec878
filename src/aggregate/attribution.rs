//! Attribution of events that name no campaign (product.md §3): such an event counts under its
//! learner's campaign — the campaign of the learner's earliest event that names one, ties broken
//! by the smaller event id — and under `direct` while none does. What a learner reached through
//! events naming no campaign (`Loose::reached`) is merged into its progress in that one campaign;
//! when an earlier event naming another campaign arrives, or the campaign is released, it moves,
//! with the counters, chapter counts and timeline days of both campaigns, and the totals do not
//! move. Exact whatever the order: the attributed campaign is a minimum over the learner's events,
//! and a campaign's progress is its own events' merged with the loose ones'.

use super::campaign::Progress;
use super::chunked::Chunked;
use super::{Aggregator, Slot};
use crate::day::Day;
use crate::event::{DIRECT_CAMPAIGN, Event, LearnerKey, Stage};

/// A learner's earliest event naming one campaign: when it happened (microseconds since the
/// epoch), its id fingerprint, and the campaign's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Named {
    pub(super) at: i64,
    pub(super) id: [u32; 3],
    pub(super) slot: Slot,
}

impl Named {
    /// The order of attribution: earliest first, then the smaller event id.
    pub(super) fn key(&self) -> (i64, [u32; 3]) {
        (self.at, self.id)
    }
}

/// The campaigns a learner's events named, each with its earliest such event: almost always
/// one, so it is kept inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NamedSet {
    One(Named),
    Several(Vec<Named>),
}

impl NamedSet {
    /// The campaign the learner is attributed to: the earliest of its named events.
    pub(super) fn first(&self) -> Named {
        match self {
            NamedSet::One(named) => *named,
            NamedSet::Several(all) => all
                .iter()
                .copied()
                .min_by_key(Named::key)
                // `Several` is never left empty: it shrinks to `One` or goes.
                .unwrap_or(Named {
                    at: i64::MAX,
                    id: [u32::MAX; 3],
                    slot: 0,
                }),
        }
    }

    /// Notes an event naming `named.slot`: kept when it is that campaign's earliest.
    pub(super) fn note(&mut self, named: Named) {
        match self {
            NamedSet::One(one) if one.slot == named.slot => {
                if named.key() < one.key() {
                    *one = named;
                }
            }
            NamedSet::One(one) => *self = NamedSet::Several(vec![*one, named]),
            NamedSet::Several(all) => match all.iter_mut().find(|known| known.slot == named.slot) {
                Some(known) => {
                    if named.key() < known.key() {
                        *known = named;
                    }
                }
                None => all.push(named),
            },
        }
    }

    /// Forgets the campaigns `released` says; `None` when none is left.
    pub(super) fn without(self, released: &[bool]) -> Option<NamedSet> {
        let is_released = |named: &Named| {
            released
                .get(usize::from(named.slot))
                .copied()
                .unwrap_or(false)
        };
        match self {
            NamedSet::One(one) => (!is_released(&one)).then_some(NamedSet::One(one)),
            NamedSet::Several(mut all) => {
                all.retain(|named| !is_released(named));
                match all.len() {
                    0 => None,
                    1 => Some(NamedSet::One(all[0])),
                    _ => Some(NamedSet::Several(all)),
                }
            }
        }
    }

    /// Every named campaign.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Named> {
        match self {
            NamedSet::One(one) => std::slice::from_ref(one).iter(),
            NamedSet::Several(all) => all.iter(),
        }
    }
}

/// What a learner's events naming no campaign reached, and the learner's own progress (from
/// events naming it) in the campaign they count under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Loose {
    pub(super) reached: Progress,
    pub(super) own: Progress,
}

/// Every learner's named campaigns, and the loose progress of those that have some.
#[derive(Debug, Default, Clone)]
pub(super) struct Attributions {
    pub(super) named: Chunked<LearnerKey, NamedSet>,
    pub(super) loose: Chunked<LearnerKey, Loose>,
}

impl Attributions {
    /// Notes that an event of `learner` named the campaign of `named.slot`.
    pub(super) fn note(&mut self, learner: LearnerKey, named: Named) {
        match self.named.get_mut(&learner) {
            Some(set) => set.note(named),
            None => {
                self.named.insert(learner, NamedSet::One(named));
            }
        }
    }

    /// The slot `learner`'s loose progress counts under: its first named campaign's, else
    /// `direct`.
    pub(super) fn target(&self, learner: &LearnerKey, direct: Slot) -> Slot {
        self.named
            .get(learner)
            .map_or(direct, |named| named.first().slot)
    }
}

impl Aggregator {
    /// Counts a learner's progress event (`reach`: its stage, day and the course's chapters)
    /// under the campaign it names, in slot `slot`; or, naming none (`slot` is then `direct`'s),
    /// under the learner's attributed campaign.
    pub(super) fn attribute(
        &mut self,
        event: &Event,
        slot: Slot,
        learner: LearnerKey,
        reach: (Stage, Day, u32),
    ) {
        let (stage, day, all_chapters) = reach;
        if event.campaign == DIRECT_CAMPAIGN {
            let target = self.attributions.target(&learner, slot);
            let own = self.learner_in(target, &learner);
            let loose = self
                .attributions
                .loose
                .get_or_insert_with(learner, || Loose {
                    reached: Progress::default(),
                    own,
                });
            loose.reached = loose.reached.reached(stage, day, all_chapters);
            self.reach(target, learner, reach);
            return;
        }
        self.name_campaign(event, slot, learner, Some(reach));
    }

    /// Notes that `event`, one of `learner`'s, names the campaign of `slot`, and counts the
    /// stage it reaches there, if any (a tagged click reaches none). An event naming a campaign
    /// earlier than the learner's first one moves the learner's loose progress there.
    pub(super) fn name_campaign(
        &mut self,
        event: &Event,
        slot: Slot,
        learner: LearnerKey,
        reach: Option<(Stage, Day, u32)>,
    ) {
        let named = Named {
            at: event.occurred_at.timestamp_micros(),
            id: event.id.0,
            slot,
        };
        let before = self.attributions.named.get(&learner).map(NamedSet::first);
        self.attributions.note(learner, named);
        let Some(mut loose) = self.attributions.loose.get(&learner).copied() else {
            if let Some(reach) = reach {
                self.reach(slot, learner, reach);
            }
            return;
        };
        // Loose progress exists: it counts under the first named campaign, else `direct`.
        let old_target = before
            .map(|first| first.slot)
            .or_else(|| self.index.get(DIRECT_CAMPAIGN).copied());
        let new_target = self.attributions.target(&learner, slot);
        if Some(new_target) == old_target {
            if let Some(reach @ (stage, day, all_chapters)) = reach {
                if slot == new_target {
                    loose.own = loose.own.reached(stage, day, all_chapters);
                    self.attributions.loose.insert(learner, loose);
                }
                self.reach(slot, learner, reach);
            }
            return;
        }
        // This event names a campaign earlier than the learner's first: the loose progress moves
        // here from where it counted, which keeps only its own. Not the target before, the
        // campaign of `slot` holds the learner's own progress alone.
        let mut own = self.learner_in(slot, &learner);
        if let Some((stage, day, all_chapters)) = reach {
            own = own.reached(stage, day, all_chapters);
        }
        if let Some(old_target) = old_target {
            self.set_learner(old_target, learner, loose.own);
        }
        loose.own = own;
        self.attributions.loose.insert(learner, loose);
        self.set_learner(slot, learner, own.merged(&loose.reached));
    }

    /// Attributions after a release, as if the released campaigns' events had never been
    /// applied: their named entries go, learners whose first campaign went are attributed to
    /// the next (or `direct`), taking their loose progress there; and with `direct` released,
    /// the events naming no campaign (remembered under its slot) go, and their loose progress
    /// leaves the campaigns it counted under.
    pub(super) fn release_attributions(&mut self, is_released: &[bool]) {
        let released = |slot: Slot| is_released.get(usize::from(slot)).copied().unwrap_or(false);
        let direct = self.index.get(DIRECT_CAMPAIGN).copied();
        if direct.is_none() {
            for (learner, loose) in self.attributions.loose.drain() {
                if let Some(first) = self.attributions.named.get(&learner).map(NamedSet::first)
                    && !released(first.slot)
                {
                    self.set_learner(first.slot, learner, loose.own);
                }
            }
        }
        for (learner, set) in self.attributions.named.drain() {
            let first = set.first().slot;
            let kept = set.without(is_released);
            let new_first = kept.as_ref().map(|kept| kept.first().slot);
            if let Some(kept) = kept {
                self.attributions.named.insert(learner, kept);
            }
            if !released(first) {
                continue;
            }
            // The learner's first campaign went, with the loose progress counted there.
            let (Some(mut loose), Some(target)) = (
                self.attributions.loose.get(&learner).copied(),
                new_first.or(direct),
            ) else {
                continue;
            };
            loose.own = self.learner_in(target, &learner);
            self.attributions.loose.insert(learner, loose);
            self.set_learner(target, learner, loose.own.merged(&loose.reached));
        }
    }
}
