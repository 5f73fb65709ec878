//! Releasing campaigns (a Kafka rebalance): forgetting them with their event ids as if their
//! events had never been applied. Every learner's record loses what the released campaigns'
//! events named (and, with `direct`, what events naming no campaign reached), the funnels of the
//! campaigns left and of the totals move by the difference, and the totals lose the released
//! campaigns' clicks and visitors.

use super::learners::Funnels;
use super::remembered::remembered_slot;
use super::{Aggregator, CampaignState, DayCounts, Progress, Slot};
use crate::event::{DIRECT_CAMPAIGN, EventId};

impl Aggregator {
    /// Forgets every held campaign of `campaigns` exactly as if none of its events had ever been
    /// applied, and returns those released, in the order given (campaigns not held are ignored):
    /// the campaign is no longer held, its event ids are forgotten (the same events are accepted
    /// again later, and then reopen it from zero), its unpublished changes are dropped, and the
    /// totals lose what its events counted there: each learner's record is taken without it
    /// (moving the totals, and the campaigns left, by the difference) and its clicks and
    /// visitors leave the totals'. Unless the released campaigns held nothing,
    /// the totals are then marked changed, with every day whose value changed, so that a reader
    /// applying [`Aggregator::drain_changes`] keeps the right timeline. For a Kafka rebalance:
    /// the partition's new owner rebuilds these campaigns from its beginning.
    ///
    /// It takes time in proportion to everything held (all remembered ids in memory, every
    /// learner), unless the released campaigns held nothing.
    pub fn release(&mut self, campaigns: &[String]) -> Vec<String> {
        let direct = self.index.get(DIRECT_CAMPAIGN).copied();
        let mut released = Vec::new();
        let mut released_states = Vec::new();
        // By slot: whether it was released now.
        let mut is_released = vec![false; self.campaigns.len()];
        let mut held_anything = false;
        for campaign in campaigns {
            let Some(slot) = self.index.remove(campaign.as_str()) else {
                continue;
            };
            let state = std::mem::replace(
                &mut self.campaigns[usize::from(slot)],
                CampaignState::vacant(),
            );
            // Events naming no campaign are remembered under direct's slot, wherever they count.
            held_anything |= state.holds_something()
                || (campaign == DIRECT_CAMPAIGN && self.loose_learners != 0);
            released_states.push(state);
            is_released[usize::from(slot)] = true;
            self.vacant.insert(slot);
            released.push(campaign.clone());
        }
        if released.is_empty() {
            return released;
        }
        self.changed.retain(|slot| !is_released[usize::from(*slot)]);
        // Every accepted event left a click or a learner in its campaign, and a slot's ids go
        // when it is vacated: a campaign that held nothing has no remembered id, and took no
        // part in the totals.
        if held_anything {
            self.release_learners(direct, &is_released);
            self.release_clicks(&released_states);
            let kept = |_: &EventId, remembered: &mut u32| {
                // A slot past the campaigns cannot be released; keep the entry rather than panic.
                !is_released
                    .get(usize::from(remembered_slot(*remembered)))
                    .copied()
                    .unwrap_or(false)
            };
            self.seen.retain(kept);
            for sealed in &mut self.sealed {
                sealed.retain(kept);
            }
            // Ids in runs stay there, read as absent, until the runs are written afresh; a
            // checkpoint sealed before now holds them, and its runs are not taken.
            self.written.release(&is_released);
            self.pending_seal = None;
        }
        // Registered and reserved campaigns are held again at once, empty: they are always
        // held, whoever counts their events.
        self.hold_always_held();
        released
    }

    /// Every learner's record as if the released campaigns' events had never been applied
    /// (and, with `direct` released, the events naming no campaign, remembered under its slot):
    /// the funnels of the campaigns left and of the totals move by what each record counted
    /// before and counts now. A learner whose first campaign went is attributed to the next (or
    /// `direct`), taking its loose progress there. `direct` is the slot `direct` had before.
    fn release_learners(&mut self, direct: Option<Slot>, is_released: &[bool]) {
        let released = |slot: Slot| is_released.get(usize::from(slot)).copied().unwrap_or(false);
        let direct_released = direct.is_some_and(released);
        let direct_after = direct.filter(|slot| !released(*slot));
        let Aggregator {
            learners,
            campaigns,
            totals,
            changed,
            tally,
            loose_learners,
            counted: (before, after),
            ..
        } = self;
        let mut funnels = Funnels {
            campaigns,
            totals,
            changed,
            tally,
        };
        learners.retain(|_, record| {
            let total_before = record.counted(direct, before);
            let kept = record.without(is_released, direct_released);
            let total_after = match &kept {
                Some(kept) => kept.counted(direct_after, after),
                None => {
                    after.clear();
                    Progress::default()
                }
            };
            // The released campaigns' funnels went with them, and their learners.
            before.retain(|(slot, _)| {
                let gone = released(*slot);
                funnels.tally.campaign_learners -= usize::from(gone);
                !gone
            });
            funnels.shift((before, total_before), (after, total_after));
            if !record.loose().is_empty()
                && kept.as_ref().is_none_or(|kept| kept.loose().is_empty())
            {
                *loose_learners -= 1;
            }
            match kept {
                Some(kept) => {
                    *record = kept;
                    true
                }
                None => false,
            }
        });
    }

    /// Takes the released campaigns' clicks out of the totals (the learners' records took
    /// their learners out), and counts the totals' unique visitors again, over the campaigns
    /// left, when a released one had some. Marks the totals changed, with every day changed.
    fn release_clicks(&mut self, released: &[CampaignState]) {
        let totals = &mut self.totals;
        totals.changed = true;
        for state in released {
            totals.counts.clicks -= state.counts.clicks;
            for (day, counts) in &state.timeline {
                if counts.clicks == 0 {
                    continue;
                }
                if let Some(total) = totals.timeline.get_mut(day) {
                    total.clicks -= counts.clicks;
                    if *total == DayCounts::default() {
                        totals.timeline.remove(day);
                    }
                }
                totals.changed_days.push(*day);
            }
        }
        if released.iter().any(|state| !state.visitors.is_empty()) {
            // Cleared, not replaced: the table keeps its room.
            totals.visitors.clear();
            for campaign in &self.campaigns {
                for visitor in campaign.visitors.keys() {
                    totals.visitors.add(*visitor);
                }
            }
            totals.counts.unique_visitors = totals.visitors.len() as u64;
        }
    }
}
