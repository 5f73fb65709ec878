//! Admission: what a group of events will do once applied, decided before the group is
//! journaled, so that only events that will be counted are written, each under the campaign it
//! will be counted in (an unregistered campaign with no room is counted under `unregistered`).
//! Like the rest of `aggregate`, it does no IO and changes no state.

use hashbrown::{HashMap, HashSet};

use super::{Aggregator, Applied, CAMPAIGN_SLOTS, content_conflicts};
use crate::event::{Event, UNREGISTERED_CAMPAIGN};

/// What a group admitted so far: the ids and campaigns it will add when applied.
#[derive(Debug, Default)]
pub struct Admission {
    ids: HashMap<[u32; 3], u32>,
    new_campaigns: HashSet<String>,
    /// Events admitted under [`UNREGISTERED_CAMPAIGN`] because their own campaign had no room.
    pub redirected: u64,
}

impl Aggregator {
    /// Decides, without changing the state, what [`Aggregator::apply`] will do with `event` once
    /// the events admitted before it in `group` are applied: a duplicate, or accepted. An event
    /// of a campaign that is not held and for which there is no room (past
    /// `max_unregistered_campaigns`) is accepted under [`UNREGISTERED_CAMPAIGN`]: its campaign is
    /// rewritten here, before it is journaled, so that replay counts it where it was counted.
    /// Only `Accepted` events need to be journaled: applying them in the same order gives
    /// exactly these outcomes. Nothing valid is ever rejected.
    ///
    /// Fails only when an id run cannot be read to tell whether the event was seen before.
    pub fn admit(&self, event: &mut Event, group: &mut Admission) -> std::io::Result<Applied> {
        let id = event.id.0;
        if let Some(content) = group.ids.get(&id) {
            return Ok(Applied::Duplicate {
                conflict: content_conflicts(*content, event.content),
            });
        }
        if let Some(remembered) = self.remembered_word(&event.id)? {
            return Ok(Applied::Duplicate {
                conflict: content_conflicts(remembered, event.content),
            });
        }
        if !self.index.contains_key(event.campaign.as_str())
            && !group.new_campaigns.contains(&event.campaign)
        {
            // Registered and reserved campaigns are always held, so this one is unregistered.
            // Campaigns held count, not slots: released campaigns leave room.
            let has_room = self.unregistered_held() + group.new_campaigns.len()
                < self.settings.max_unregistered_campaigns
                && self.index.len() + group.new_campaigns.len() < CAMPAIGN_SLOTS;
            if has_room {
                group.new_campaigns.insert(event.campaign.clone());
            } else {
                UNREGISTERED_CAMPAIGN.clone_into(&mut event.campaign);
                group.redirected += 1;
            }
        }
        group.ids.insert(id, event.content);
        Ok(Applied::Accepted)
    }
}
