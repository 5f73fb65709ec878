//! The aggregator's stored form: the whole state to and from a checkpoint (columnar protobuf),
//! with the settings a checkpoint cannot be read under otherwise (chapter count, time zone, event
//! identity scheme) checked on restore. Its only IO is reading the runs' ids through their
//! `RunFile` when a checkpoint holds them in itself ([`Frozen::read_written`]).

use std::collections::BTreeMap;

use prost::Message;
use rayon::prelude::*;

use super::chunked::Chunked;
use super::learners::Record;
use super::{
    Aggregator, AggregatorSettings, CAMPAIGN_SLOTS, CampaignState, DayCounts, Entry, Slot, Written,
};
use crate::day::Day;
use crate::event::{EventId, LearnerKey, TOTALS_CAMPAIGN, VisitorKey};
use crate::proto::storage::{
    CampaignState as StoredCampaign, Checkpoint, EventIdentity, IdRun, KafkaOffset,
};

/// The checkpoint format this suivi writes, and the newest it reads. Format 1 is the first
/// with a version; a checkpoint without one (0) is of the same layout and is read as format 1.
/// Format 2 keeps the remembered ids in id runs beside the checkpoint (`id_runs`), which a
/// reader of format 1 would not see. Format 3 keeps them in [`EventId::run_order`], format 2's
/// runs are sorted by id. Format 4 keeps every learner's record once (`learner_keys` and the
/// columns after it) where the formats before kept a learner in each campaign, in the totals
/// and in the attributions; those load (`upgrade`), checked against what they held. Format 5
/// keeps, of the earliest event naming each campaign of a learner, the order that breaks ties
/// of one instant (`Event::tie_order`: the event_id's first bytes, then a word of its
/// fingerprint) where the formats before kept the fingerprint ([`tie_order`]).
pub const CHECKPOINT_FORMAT: u32 = 5;

/// The first format that keeps the learners' records.
const LEARNER_RECORDS_FORMAT: u32 = 4;

/// The first format that keeps the order of events of one instant by their event_id.
const TIE_ORDER_FORMAT: u32 = 5;

/// The tie order of a named campaign's earliest event as a checkpoint of `format` stored it
/// (three words): as it is from format 5 on; before, the id's fingerprint, whose first word
/// orders it among the events of its instant that such a checkpoint held, before any event
/// read since (whose event_id is known). Which of them came first by event_id is not known.
fn tie_order(format: u32, stored: &[u32]) -> [u32; 3] {
    if format >= TIE_ORDER_FORMAT {
        [stored[0], stored[1], stored[2]]
    } else {
        [0, 0, stored[0]]
    }
}

/// The first format whose id runs are in [`EventId::run_order`], so that later runs can be
/// merged with them. The ids of an earlier format's runs load all the same, and the next
/// checkpoint writes them all afresh in one run.
pub const RUN_ORDER_FORMAT: u32 = 3;

mod learners;

/// How many entries of one table a checkpoint part holds: parts are encoded and written one
/// at a time, so this bounds what a checkpoint holds encoded in memory (a few megabytes).
const PART_ENTRIES: usize = 1 << 16;

/// The aggregator's state frozen at one moment, to be encoded as a checkpoint, on another
/// thread while the aggregator goes on: its tables are shared with the aggregator copy-on-write
/// (`Chunked`), so taking it costs milliseconds whatever the size, and each chunk is let go as
/// soon as it is encoded.
#[derive(Debug)]
pub struct Frozen(Aggregator);

/// Where a checkpoint keeps the remembered ids.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredIds {
    /// In the checkpoint itself (`seen`): a parked shard, or a checkpoint of format 1. The
    /// frozen state must hold them all in memory ([`Frozen::read_written`]).
    Inline,
    /// In these id runs, which hold every id remembered, the newest of generation `generation`.
    Runs { runs: Vec<IdRun>, generation: u64 },
}

impl Aggregator {
    /// The state as it is now, for [`Frozen::parts`].
    pub fn freeze(&self) -> Frozen {
        Frozen(self.clone())
    }

    /// The whole state, as of `journal_position`, as one message, the ids in it:
    /// [`Frozen::checkpoint`] of the state now. Reads the ids of the runs.
    pub fn checkpoint(
        &self,
        journal_position: u64,
        kafka_offsets: Vec<KafkaOffset>,
    ) -> std::io::Result<Checkpoint> {
        Ok(self
            .freeze()
            .read_written()?
            .checkpoint(journal_position, kafka_offsets))
    }
}

impl Frozen {
    /// The frozen state with the ids of its runs read into memory (those not released), so
    /// that a checkpoint can hold them in itself ([`StoredIds::Inline`]).
    pub fn read_written(mut self) -> std::io::Result<Frozen> {
        let entries: Vec<Entry> = self.0.written.entries().collect::<std::io::Result<_>>()?;
        if !entries.is_empty() {
            self.0.sealed.push(Chunked::build(entries.len(), |index| {
                let [a, b, c, word] = entries[index];
                (EventId([a, b, c]), word)
            }));
        }
        self.0.written = Written::default();
        Ok(self)
    }

    /// The whole state, as of `journal_position`, with the Kafka offsets it includes, as parts
    /// whose encodings, concatenated, are the encoding of the checkpoint
    /// (`durable::checkpoint::write_parts`): first the settings it was taken under; then the
    /// campaigns in slot order, one a part, a vacant slot as a campaign with an empty id and
    /// nothing else, so that the slots kept in `seen` stay right; then the totals, the
    /// remembered ids where `ids` says (the runs are named in the first part) and the
    /// learners' records, [`PART_ENTRIES`] entries a part. Each part is made when asked for, and
    /// each chunk of the tables let go once read.
    pub fn parts(
        self,
        journal_position: u64,
        kafka_offsets: Vec<KafkaOffset>,
        ids: StoredIds,
    ) -> impl Iterator<Item = Checkpoint> {
        let Frozen(Aggregator {
            settings,
            seen,
            sealed,
            written,
            campaigns,
            totals,
            learners,
            ..
        }) = self;
        let head = Checkpoint {
            journal_position,
            kafka_offsets,
            chapter_count: u32::from(settings.chapter_count),
            // `direct_campaigns` is the writer's to add: the aggregate does not know where
            // events came from.
            time_zone: settings.time_zone.name().to_owned(),
            event_identity: EventIdentity::SourceAndEventId.into(),
            format_version: CHECKPOINT_FORMAT,
            ..Checkpoint::default()
        };
        let (head, seen) = match ids {
            StoredIds::Inline => {
                debug_assert!(written.is_empty(), "the runs' ids are read first");
                (head, Some(std::iter::once(seen).chain(sealed)))
            }
            StoredIds::Runs { runs, generation } => (
                Checkpoint {
                    id_runs: runs,
                    id_generation: generation,
                    ..head
                },
                None,
            ),
        };
        let campaigns = campaigns.into_iter().map(|campaign| Checkpoint {
            campaigns: vec![campaign.into_stored()],
            ..Checkpoint::default()
        });
        let totals = totals
            .into_stored_parts(PART_ENTRIES)
            .map(|part| Checkpoint {
                totals: Some(part),
                ..Checkpoint::default()
            });
        let seen = batches(
            seen.into_iter().flatten().flat_map(Chunked::into_entries),
            PART_ENTRIES,
        )
        .map(|entries| {
            let mut seen = Vec::with_capacity(entries.len() * 4);
            for (EventId(id), remembered) in entries {
                seen.extend_from_slice(&id);
                seen.push(remembered);
            }
            Checkpoint {
                seen,
                ..Checkpoint::default()
            }
        });
        let learners = batches(learners.into_entries(), PART_ENTRIES).map(store_learners);
        std::iter::once(head)
            .chain(campaigns)
            .chain(totals)
            .chain(seen)
            .chain(learners)
    }

    /// The whole state as one message, the ids in it: what [`Frozen::parts`] gives, read back
    /// as a checkpoint file is.
    pub fn checkpoint(self, journal_position: u64, kafka_offsets: Vec<KafkaOffset>) -> Checkpoint {
        let mut encoded = Vec::new();
        for part in self.parts(journal_position, kafka_offsets, StoredIds::Inline) {
            part.encode_raw(&mut encoded);
        }
        // Parts encoded by prost decode: a failure would be a bug in prost.
        Checkpoint::decode(encoded.as_slice()).expect("the parts' encodings decode as one")
    }
}

/// `items`, `size` at a time.
fn batches<T>(mut items: impl Iterator<Item = T>, size: usize) -> impl Iterator<Item = Vec<T>> {
    std::iter::from_fn(move || {
        let batch: Vec<T> = items.by_ref().take(size).collect();
        (!batch.is_empty()).then_some(batch)
    })
}

fn day_number(day: Option<Day>) -> u32 {
    day.map_or(0, Day::number)
}

/// A part of the learners' columns.
fn store_learners(entries: Vec<(LearnerKey, Record)>) -> Checkpoint {
    let mut part = Checkpoint::default();
    for (LearnerKey(key), record) in entries {
        part.learner_keys.extend_from_slice(&key);
        let named = record.named();
        part.learner_named
            .push(u32::try_from(named.len()).unwrap_or(u32::MAX));
        for named in named {
            part.named_at.push(named.at());
            part.named_ids.extend_from_slice(&named.id());
            part.named_slots.push(u32::from(named.slot));
            let own = named.own();
            part.named_enrolled.push(day_number(own.enrolled));
            part.named_started.push(day_number(own.started));
            part.named_certified.push(day_number(own.certified));
            part.named_chapters.push(own.chapters);
        }
        let loose = record.loose();
        part.learner_loose.push(!loose.is_empty());
        if !loose.is_empty() {
            part.loose_enrolled.push(day_number(loose.enrolled));
            part.loose_started.push(day_number(loose.started));
            part.loose_certified.push(day_number(loose.certified));
            part.loose_chapters.push(loose.chapters);
        }
    }
    part
}

impl Aggregator {
    /// Rebuilds an aggregator from `checkpoint`, each campaign in its slot and vacant slots
    /// vacant, then holds the `registered` and reserved campaigns it lacks (in the lowest vacant
    /// slots, as [`Aggregator::new`] does). The counters of the campaigns and of the totals are
    /// counted from the learners' records (those of a checkpoint of an older format are made
    /// from what it kept, and checked against it); their timelines, clicks and visitors are
    /// read. Every campaign that holds something (a learner, a visitor or a
    /// click) and the totals are marked changed, so the next [`Aggregator::drain_changes`]
    /// publishes the whole state without zeros for the campaigns never fed.
    ///
    /// The ids are those of the checkpoint itself and of `runs` (each run's words, four an
    /// entry: runs of an older format, kept in memory until the next checkpoint writes them
    /// in run order), and `written`'s (runs in run order, looked up through their filters).
    pub fn restore(
        settings: AggregatorSettings,
        registered: impl IntoIterator<Item = String>,
        checkpoint: &Checkpoint,
        runs: &[Vec<u32>],
        written: Written,
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
        // The tables are built whole, the remembered ids beside the campaigns, each campaign
        // on a core of its own.
        let (seen, campaigns) = rayon::join(
            || {
                // The ids of `seen`, then of each run: entry `index` is in the source whose
                // first entry is the last at or before it.
                let sources: Vec<&[u32]> = std::iter::once(checkpoint.seen.as_slice())
                    .chain(runs.iter().map(Vec::as_slice))
                    .collect();
                let mut starts = Vec::with_capacity(sources.len());
                let mut len = 0;
                for source in &sources {
                    starts.push(len);
                    len += source.len() / 4;
                }
                Chunked::build(len, |index| {
                    let source = starts.partition_point(|start| *start <= index) - 1;
                    let at = (index - starts[source]) * 4;
                    let words = &sources[source][at..at + 4];
                    (EventId([words[0], words[1], words[2]]), words[3])
                })
            },
            || {
                checkpoint
                    .campaigns
                    .par_iter()
                    .map(|stored| {
                        // No campaign has an empty id (no campaign given means `direct`): a
                        // vacant slot.
                        (!stored.campaign.is_empty())
                            .then(|| CampaignState::restore(stored, chapter_count))
                            .transpose()
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            },
        );
        aggregator.seen = seen;
        aggregator.written = written;
        for ((slot, stored), campaign) in (0..=Slot::MAX).zip(&checkpoint.campaigns).zip(campaigns?)
        {
            let Some(campaign) = campaign else {
                anyhow::ensure!(
                    *stored == StoredCampaign::default(),
                    "vacant campaign slot {slot} holds something"
                );
                aggregator.campaigns.push(CampaignState::vacant());
                aggregator.vacant.insert(slot);
                continue;
            };
            anyhow::ensure!(
                aggregator
                    .index
                    .insert(stored.campaign.clone(), slot)
                    .is_none(),
                "campaign {:?} is stored twice",
                stored.campaign
            );
            aggregator.campaigns.push(campaign);
        }
        let upgraded = if checkpoint.format_version >= LEARNER_RECORDS_FORMAT {
            aggregator.learners = aggregator.read_learners(checkpoint)?;
            false
        } else {
            aggregator.learners = aggregator.upgrade_learners(checkpoint)?;
            true
        };
        aggregator.hold_always_held();
        if let Some(totals) = &checkpoint.totals {
            aggregator.totals = CampaignState::restore(totals, chapter_count)?;
            aggregator.totals.id = TOTALS_CAMPAIGN.to_owned();
        }
        aggregator.totals.changed = true;
        let counted = aggregator.count_learners();
        if upgraded {
            aggregator.check_upgrade(checkpoint, &counted)?;
        }
        for (slot, campaign) in (0..=Slot::MAX).zip(&mut aggregator.campaigns) {
            if campaign.holds_something() {
                campaign.changed = true;
                aggregator.changed.push(slot);
            }
        }
        Ok(aggregator)
    }
}

impl CampaignState {
    /// The stored form, as one message.
    fn into_stored(self) -> StoredCampaign {
        let mut parts = self.into_stored_parts(usize::MAX);
        let mut stored = parts.next().unwrap_or_default();
        for part in parts {
            stored.visitor_keys.extend(part.visitor_keys);
        }
        stored
    }

    /// The stored form in parts that merge into it (see [`Frozen::parts`]): the first with the
    /// id, clicks and timeline, then the visitors, `part_entries` a part, each chunk of the
    /// table let go once read. (The learners are the records'.)
    fn into_stored_parts(self, part_entries: usize) -> impl Iterator<Item = StoredCampaign> {
        let CampaignState {
            id,
            visitors,
            counts,
            timeline,
            ..
        } = self;
        let mut head = StoredCampaign {
            campaign: id,
            clicks: counts.clicks,
            ..StoredCampaign::default()
        };
        for (day, counts) in &timeline {
            head.days.push(day.number());
            head.day_clicks.push(counts.clicks);
            head.day_enrolled.push(counts.enrolled);
            head.day_started.push(counts.started);
            head.day_certified.push(counts.certified);
        }
        let visitors = batches(visitors.into_entries(), part_entries).map(|entries| {
            let mut part = StoredCampaign::default();
            for (VisitorKey(key), ()) in entries {
                part.visitor_keys.extend_from_slice(&key);
            }
            part
        });
        std::iter::once(head).chain(visitors)
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
        let visitors = &stored.visitor_keys;
        campaign.visitors = Chunked::build(visitors.len() / 3, |index| {
            let key = &visitors[index * 3..index * 3 + 3];
            (VisitorKey([key[0], key[1], key[2]]), ())
        });
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
