//! The aggregator's stored form: the whole state to and from a checkpoint (columnar protobuf),
//! with the settings a checkpoint cannot be read under otherwise (chapter count, time zone, event
//! identity scheme) checked on restore. Like the rest of `aggregate`, it does no IO.

use std::collections::BTreeMap;

use super::{
    Aggregator, AggregatorSettings, Attributions, CAMPAIGN_SLOTS, CampaignState, DayCounts, Loose,
    Named, Progress, Slot,
};
use crate::day::Day;
use crate::event::{EventId, LearnerKey, TOTALS_CAMPAIGN, VisitorKey};
use crate::proto::storage::{
    CampaignState as StoredCampaign, Checkpoint, EventIdentity, KafkaOffset,
};

/// The checkpoint format this suivi writes, and the newest it reads. Format 1 is the first
/// with a version; a checkpoint without one (0) is of the same layout and is read as format 1.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// The aggregator's state frozen at one moment, to be encoded as a checkpoint, on another
/// thread while the aggregator goes on: its tables are shared with the aggregator copy-on-write
/// (`Chunked`), so taking it costs milliseconds whatever the size, and each chunk is let go as
/// soon as it is encoded.
#[derive(Debug)]
pub struct Frozen(Aggregator);

impl Aggregator {
    /// The state as it is now, for [`Frozen::checkpoint`].
    pub fn freeze(&self) -> Frozen {
        Frozen(self.clone())
    }

    /// The whole state, as of `journal_position`: [`Frozen::checkpoint`] of the state now.
    pub fn checkpoint(&self, journal_position: u64, kafka_offsets: Vec<KafkaOffset>) -> Checkpoint {
        self.freeze().checkpoint(journal_position, kafka_offsets)
    }
}

impl Frozen {
    /// The whole state, as of `journal_position`, with the Kafka offsets it includes. Campaigns
    /// are stored in slot order, a vacant slot as a campaign with an empty id and nothing else,
    /// so that the slots kept in `seen` stay right.
    pub fn checkpoint(self, journal_position: u64, kafka_offsets: Vec<KafkaOffset>) -> Checkpoint {
        let Frozen(aggregator) = self;
        let mut seen = Vec::with_capacity(aggregator.seen.len() * 4);
        for (EventId(id), remembered) in aggregator.seen.into_entries() {
            seen.extend_from_slice(&id);
            seen.push(remembered);
        }
        let mut checkpoint = Checkpoint {
            journal_position,
            seen,
            campaigns: Vec::with_capacity(aggregator.campaigns.len()),
            totals: Some(aggregator.totals.into_stored()),
            kafka_offsets,
            chapter_count: u32::from(aggregator.settings.chapter_count),
            // The writer's to fill: the aggregate does not know where events came from.
            direct_campaigns: Vec::new(),
            time_zone: aggregator.settings.time_zone.name().to_owned(),
            event_identity: EventIdentity::SourceAndEventId.into(),
            format_version: CHECKPOINT_FORMAT,
            ..Checkpoint::default()
        };
        for campaign in aggregator.campaigns {
            checkpoint.campaigns.push(campaign.into_stored());
        }
        store_attributions(aggregator.attributions, &mut checkpoint);
        checkpoint
    }
}

/// Writes the attributions into `checkpoint`'s columns.
fn store_attributions(attributions: Attributions, checkpoint: &mut Checkpoint) {
    let number = |day: Option<Day>| day.map_or(0, Day::number);
    for (LearnerKey(key), set) in attributions.named.into_entries() {
        for named in set.iter() {
            checkpoint.named_learners.extend_from_slice(&key);
            checkpoint.named_at.push(named.at);
            checkpoint.named_ids.extend_from_slice(&named.id);
            checkpoint.named_slots.push(u32::from(named.slot));
        }
    }
    for (LearnerKey(key), loose) in attributions.loose.into_entries() {
        checkpoint.loose_learners.extend_from_slice(&key);
        checkpoint
            .loose_enrolled
            .push(number(loose.reached.enrolled));
        checkpoint.loose_started.push(number(loose.reached.started));
        checkpoint
            .loose_certified
            .push(number(loose.reached.certified));
        checkpoint.loose_chapters.push(loose.reached.chapters);
        checkpoint.own_enrolled.push(number(loose.own.enrolled));
        checkpoint.own_started.push(number(loose.own.started));
        checkpoint.own_certified.push(number(loose.own.certified));
        checkpoint.own_chapters.push(loose.own.chapters);
    }
}

impl Aggregator {
    /// Reads the attributions of `checkpoint` back; every slot they name must be held.
    fn restore_attributions(&mut self, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        let named = checkpoint.named_at.len();
        anyhow::ensure!(
            checkpoint.named_learners.len() == named * 3
                && checkpoint.named_ids.len() == named * 3
                && checkpoint.named_slots.len() == named,
            "attribution columns of different lengths"
        );
        for index in 0..named {
            let slot = Slot::try_from(checkpoint.named_slots[index])
                .ok()
                .filter(|slot| {
                    self.campaigns
                        .get(usize::from(*slot))
                        .is_some_and(|campaign| !campaign.id.is_empty())
                })
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "an attribution names campaign slot {}, which holds no campaign",
                        checkpoint.named_slots[index]
                    )
                })?;
            let words = &checkpoint.named_learners[index * 3..index * 3 + 3];
            let ids = &checkpoint.named_ids[index * 3..index * 3 + 3];
            let named = Named {
                at: checkpoint.named_at[index],
                id: [ids[0], ids[1], ids[2]],
                slot,
            };
            let learner = LearnerKey([words[0], words[1], words[2]]);
            self.attributions.note(learner, named);
        }
        let loose = checkpoint.loose_enrolled.len();
        let columns = [
            &checkpoint.loose_started,
            &checkpoint.loose_certified,
            &checkpoint.loose_chapters,
            &checkpoint.own_enrolled,
            &checkpoint.own_started,
            &checkpoint.own_certified,
            &checkpoint.own_chapters,
        ];
        anyhow::ensure!(
            checkpoint.loose_learners.len() == loose * 3
                && columns.iter().all(|column| column.len() == loose),
            "loose progress columns of different lengths"
        );
        let day = |number: u32| Day::from_number(number);
        for index in 0..loose {
            let words = &checkpoint.loose_learners[index * 3..index * 3 + 3];
            self.attributions.loose.insert(
                LearnerKey([words[0], words[1], words[2]]),
                Loose {
                    reached: Progress {
                        enrolled: day(checkpoint.loose_enrolled[index]),
                        started: day(checkpoint.loose_started[index]),
                        certified: day(checkpoint.loose_certified[index]),
                        chapters: checkpoint.loose_chapters[index],
                    },
                    own: Progress {
                        enrolled: day(checkpoint.own_enrolled[index]),
                        started: day(checkpoint.own_started[index]),
                        certified: day(checkpoint.own_certified[index]),
                        chapters: checkpoint.own_chapters[index],
                    },
                },
            );
        }
        Ok(())
    }

    /// Rebuilds an aggregator from `checkpoint`, each campaign in its slot and vacant slots
    /// vacant, then holds the `registered` and reserved campaigns it lacks (in the lowest vacant
    /// slots, as [`Aggregator::new`] does). Every campaign that holds something (a learner, a visitor or a
    /// click) and the totals are marked changed, so the next [`Aggregator::drain_changes`]
    /// publishes the whole state without zeros for the campaigns never fed.
    pub fn restore(
        settings: AggregatorSettings,
        registered: impl IntoIterator<Item = String>,
        checkpoint: &Checkpoint,
    ) -> anyhow::Result<Aggregator> {
        anyhow::ensure!(
            checkpoint.format_version <= CHECKPOINT_FORMAT,
            "the checkpoint is of format {}, written by a newer suivi; this one reads formats up to {CHECKPOINT_FORMAT}: run the newer suivi again (or rebuild the state from an empty data_dir)",
            checkpoint.format_version
        );
        anyhow::ensure!(
            checkpoint.chapter_count == u32::from(settings.chapter_count),
            "the checkpoint was taken with chapter_count {}, not {}: chapters cannot be renumbered",
            checkpoint.chapter_count,
            settings.chapter_count
        );
        // Days are computed in the time zone: a checkpoint's days are not re-dated. An older
        // checkpoint did not record its zone, and is taken as it is.
        anyhow::ensure!(
            checkpoint.time_zone.is_empty() || checkpoint.time_zone == settings.time_zone.name(),
            "the checkpoint was taken with time_zone {}, not {}: its timeline days cannot be re-dated; set time_zone back to {} (or rebuild the state from an empty data_dir)",
            checkpoint.time_zone,
            settings.time_zone.name(),
            checkpoint.time_zone
        );
        anyhow::ensure!(
            checkpoint.event_identity == i32::from(EventIdentity::SourceAndEventId),
            "the checkpoint was written by an older suivi, which identified events by event_id alone, not by (source, event_id): its remembered ids cannot be converted; rebuild the state from an empty data_dir"
        );
        anyhow::ensure!(
            checkpoint.campaigns.len() <= CAMPAIGN_SLOTS,
            "the checkpoint has {} campaign slots, more than the {CAMPAIGN_SLOTS} possible",
            checkpoint.campaigns.len()
        );
        let chapter_count = settings.chapter_count;
        let mut aggregator = Aggregator::empty(settings, registered);
        aggregator.seen.reserve(checkpoint.seen.len() / 4);
        for words in checkpoint.seen.chunks_exact(4) {
            aggregator
                .seen
                .insert(EventId([words[0], words[1], words[2]]), words[3]);
        }
        for (slot, stored) in (0..=Slot::MAX).zip(&checkpoint.campaigns) {
            if stored.campaign.is_empty() {
                // No campaign has an empty id (no campaign given means `direct`): a vacant slot.
                anyhow::ensure!(
                    *stored == StoredCampaign::default(),
                    "vacant campaign slot {slot} holds something"
                );
                aggregator.campaigns.push(CampaignState::vacant());
                aggregator.vacant.insert(slot);
                continue;
            }
            let mut campaign = CampaignState::restore(stored, chapter_count)?;
            anyhow::ensure!(
                aggregator
                    .index
                    .insert(stored.campaign.clone(), slot)
                    .is_none(),
                "campaign {:?} is stored twice",
                stored.campaign
            );
            if campaign.holds_something() {
                campaign.changed = true;
                aggregator.changed.push(slot);
            }
            aggregator.campaigns.push(campaign);
        }
        aggregator.restore_attributions(checkpoint)?;
        aggregator.hold_always_held();
        if let Some(totals) = &checkpoint.totals {
            aggregator.totals = CampaignState::restore(totals, chapter_count)?;
            aggregator.totals.id = TOTALS_CAMPAIGN.to_owned();
            aggregator.totals.changed = true;
        }
        Ok(aggregator)
    }
}

impl CampaignState {
    /// The stored form, each chunk of the tables let go once read.
    fn into_stored(self) -> StoredCampaign {
        let learners = self.learners.len();
        let mut stored = StoredCampaign {
            campaign: self.id.clone(),
            learner_keys: Vec::with_capacity(learners * 3),
            enrolled: Vec::with_capacity(learners),
            started: Vec::with_capacity(learners),
            certified: Vec::with_capacity(learners),
            chapters: Vec::with_capacity(learners),
            visitor_keys: Vec::with_capacity(self.visitors.len() * 3),
            clicks: self.counts.clicks,
            ..StoredCampaign::default()
        };
        let number = |day: Option<Day>| day.map_or(0, Day::number);
        for (LearnerKey(key), progress) in self.learners.into_entries() {
            stored.learner_keys.extend_from_slice(&key);
            stored.enrolled.push(number(progress.enrolled));
            stored.started.push(number(progress.started));
            stored.certified.push(number(progress.certified));
            stored.chapters.push(progress.chapters);
        }
        for (VisitorKey(key), ()) in self.visitors.into_entries() {
            stored.visitor_keys.extend_from_slice(&key);
        }
        for (day, counts) in &self.timeline {
            stored.days.push(day.number());
            stored.day_clicks.push(counts.clicks);
            stored.day_enrolled.push(counts.enrolled);
            stored.day_started.push(counts.started);
            stored.day_certified.push(counts.certified);
        }
        stored
    }

    fn restore(stored: &StoredCampaign, chapter_count: u8) -> anyhow::Result<CampaignState> {
        let learners = stored.enrolled.len();
        anyhow::ensure!(
            stored.learner_keys.len() == learners * 3
                && stored.started.len() == learners
                && stored.certified.len() == learners
                && stored.chapters.len() == learners
                && stored.visitor_keys.len() % 3 == 0,
            "campaign {:?}: learner columns of different lengths",
            stored.campaign
        );
        let days = stored.days.len();
        anyhow::ensure!(
            stored.day_clicks.len() == days
                && stored.day_enrolled.len() == days
                && stored.day_started.len() == days
                && stored.day_certified.len() == days,
            "campaign {:?}: timeline columns of different lengths",
            stored.campaign
        );
        let mut campaign = CampaignState::new(stored.campaign.clone(), chapter_count);
        campaign.counts.clicks = stored.clicks;
        campaign.learners.reserve(learners);
        let day = |number: u32| Day::from_number(number);
        for (index, key) in stored.learner_keys.chunks_exact(3).enumerate() {
            let progress = Progress {
                enrolled: day(stored.enrolled[index]),
                started: day(stored.started[index]),
                certified: day(stored.certified[index]),
                chapters: stored.chapters[index],
            };
            campaign.counts.count_learner(&progress);
            campaign
                .learners
                .insert(LearnerKey([key[0], key[1], key[2]]), progress);
        }
        campaign.visitors.reserve(stored.visitor_keys.len() / 3);
        for key in stored.visitor_keys.chunks_exact(3) {
            campaign.visitors.add(VisitorKey([key[0], key[1], key[2]]));
        }
        campaign.counts.unique_visitors = campaign.visitors.len() as u64;
        let mut timeline = BTreeMap::new();
        for index in 0..days {
            let day = Day::from_number(stored.days[index]).ok_or_else(|| {
                anyhow::anyhow!(
                    "campaign {:?}: day number 0 in the timeline",
                    stored.campaign
                )
            })?;
            timeline.insert(
                day,
                DayCounts {
                    clicks: stored.day_clicks[index],
                    enrolled: stored.day_enrolled[index],
                    started: stored.day_started[index],
                    certified: stored.day_certified[index],
                },
            );
        }
        campaign.changed_days = timeline.keys().copied().collect();
        campaign.timeline = timeline;
        Ok(campaign)
    }
}
