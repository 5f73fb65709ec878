//! Attribution of events that name no campaign (product.md §3): such an event counts under its
//! learner's campaign — the campaign of the learner's earliest event that names one, ties broken
//! by the smaller event id — and under `direct` while none does. What a learner reached through
//! events naming no campaign (`Loose::reached`) is merged into its progress in that one campaign;
//! when an earlier event naming another campaign arrives, or the campaign is released, it moves,
//! with the counters, chapter counts and timeline days of both campaigns, and the totals do not
//! move. Exact whatever the order: the attributed campaign is a minimum over the learner's events,
//! and a campaign's progress is its own events' merged with the loose ones'.

use hashbrown::HashMap;

use super::Slot;
use super::campaign::Progress;
use crate::event::LearnerKey;

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
#[derive(Debug, Default)]
pub(super) struct Attributions {
    pub(super) named: HashMap<LearnerKey, NamedSet>,
    pub(super) loose: HashMap<LearnerKey, Loose>,
}

impl Attributions {
    /// The slot `learner`'s loose progress counts under: its first named campaign's, else
    /// `direct`.
    pub(super) fn target(&self, learner: &LearnerKey, direct: Slot) -> Slot {
        self.named
            .get(learner)
            .map_or(direct, |named| named.first().slot)
    }
}
