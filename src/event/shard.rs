//! Where an event belongs when the state is split by learner (product.md §6): [`Event::shard`]
//! and [`Event::route`], which the pipeline splits submissions by.

use super::{Action, Event, LearnerKey, VisitorKey};

impl Event {
    /// The shard, of `shards`, whose state this event belongs to (product.md §6): its
    /// visitor's for a click that has one, else its learner's (a progress event's, or a tagged
    /// click's), else its own id's. Every copy of an event carries the same learner and visitor,
    /// so it reaches the same shard, and a learner or visitor lives in one shard only: every
    /// figure is the sum of the shards'. The keys are keyed hashes already, so their first word
    /// is uniform.
    pub fn shard(&self, shards: usize) -> usize {
        let word = match self.action {
            Action::Click {
                visitor: Some(VisitorKey(key)),
                ..
            }
            | Action::Click {
                learner: Some(LearnerKey(key)),
                visitor: None,
            }
            | Action::Progress {
                learner: LearnerKey(key),
                ..
            }
            | Action::Names {
                learner: LearnerKey(key),
            } => key[0],
            Action::Click {
                visitor: None,
                learner: None,
            } => self.id.0[0],
        };
        word as usize % shards.max(1)
    }

    /// Where this event goes among `shards` shards: its shard ([`Event::shard`]) with the
    /// event, and, for a tagged click whose learner lives in another shard than its visitor,
    /// that shard with what the click tells the learner's ([`Action::Names`]); the click then
    /// goes to its visitor's shard without its learner. Either way the event is counted once.
    pub fn route(self, shards: usize) -> (usize, Event, Option<(usize, Event)>) {
        let shard = self.shard(shards);
        let Action::Click {
            visitor: Some(visitor),
            learner: Some(learner),
        } = self.action
        else {
            return (shard, self, None);
        };
        let learner_shard = learner.0[0] as usize % shards.max(1);
        if learner_shard == shard {
            return (shard, self, None);
        }
        let names = Event {
            action: Action::Names { learner },
            ..self.clone()
        };
        let click = Event {
            action: Action::Click {
                visitor: Some(visitor),
                learner: None,
            },
            ..self
        };
        (shard, click, Some((learner_shard, names)))
    }
}
