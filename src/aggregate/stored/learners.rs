//! The learners' records to and from a checkpoint: read from the columns of format 4, or made
//! from what a checkpoint of an older format kept (each learner in each campaign, in the totals
//! and in the attributions) and checked against it; then counted into the funnels.

use hashbrown::HashMap;

use super::super::chunked::Chunked;
use super::tie_order;
use rayon::prelude::*;

use super::super::learners::{Counted, Full, Named, Record};
use super::super::{Aggregator, Counts, Progress, Slot, Tally};
use crate::day::Day;
use crate::event::{DIRECT_CAMPAIGN, LearnerKey};
use crate::proto::storage::{CampaignState as StoredCampaign, Checkpoint};

/// The progress in row `row` of four columns: days as numbers (0 for not reached), chapters as
/// bits.
fn progress([enrolled, started, certified]: [&[u32]; 3], chapters: &[u32], row: usize) -> Progress {
    Progress {
        enrolled: Day::from_number(enrolled[row]),
        started: Day::from_number(started[row]),
        certified: Day::from_number(certified[row]),
        chapters: chapters[row],
    }
}

/// Learner `row`'s key in a column of three words a key.
fn key(keys: &[u32], row: usize) -> LearnerKey {
    LearnerKey([keys[row * 3], keys[row * 3 + 1], keys[row * 3 + 2]])
}

/// A stored campaign's learner `row`.
fn stored_learner(stored: &StoredCampaign, row: usize) -> (LearnerKey, Progress) {
    (
        key(&stored.learner_keys, row),
        progress(
            [&stored.enrolled, &stored.started, &stored.certified],
            &stored.chapters,
            row,
        ),
    )
}

impl Aggregator {
    /// The slot `slot` names, if it holds a campaign.
    fn held_slot(&self, slot: u32) -> anyhow::Result<Slot> {
        Slot::try_from(slot)
            .ok()
            .filter(|slot| {
                self.campaigns
                    .get(usize::from(*slot))
                    .is_some_and(|campaign| !campaign.id.is_empty())
            })
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "a learner's record names campaign slot {slot}, which holds no campaign"
                )
            })
    }

    /// The records of a checkpoint of format 4 or later, built whole; every slot they name must
    /// be held.
    pub(super) fn read_learners(
        &self,
        checkpoint: &Checkpoint,
    ) -> anyhow::Result<Chunked<LearnerKey, Record>> {
        let learners = checkpoint.learner_named.len();
        anyhow::ensure!(
            checkpoint.learner_keys.len() == learners * 3
                && checkpoint.learner_loose.len() == learners,
            "learner columns of different lengths"
        );
        let named = checkpoint.named_at.len();
        anyhow::ensure!(
            checkpoint.named_ids.len() == named * 3
                && [
                    &checkpoint.named_slots,
                    &checkpoint.named_enrolled,
                    &checkpoint.named_started,
                    &checkpoint.named_certified,
                    &checkpoint.named_chapters,
                ]
                .iter()
                .all(|column| column.len() == named),
            "named campaign columns of different lengths"
        );
        let loose = checkpoint.loose_enrolled.len();
        anyhow::ensure!(
            [
                &checkpoint.loose_started,
                &checkpoint.loose_certified,
                &checkpoint.loose_chapters,
            ]
            .iter()
            .all(|column| column.len() == loose),
            "loose progress columns of different lengths"
        );
        // Where each learner's rows start.
        let mut starts = Vec::with_capacity(learners);
        let (mut named_rows, mut loose_rows) = (0usize, 0usize);
        for (count, has_loose) in checkpoint
            .learner_named
            .iter()
            .zip(&checkpoint.learner_loose)
        {
            anyhow::ensure!(*count != 0 || *has_loose, "a learner's record is empty");
            starts.push((named_rows, loose_rows));
            named_rows = named_rows.saturating_add(usize::try_from(*count)?);
            loose_rows += usize::from(*has_loose);
        }
        anyhow::ensure!(
            named_rows == named && loose_rows == loose,
            "the learners' records count {named_rows} named campaigns and {loose_rows} loose progresses, the columns hold {named} and {loose}"
        );
        let slots = checkpoint
            .named_slots
            .iter()
            .map(|slot| self.held_slot(*slot))
            .collect::<anyhow::Result<Vec<Slot>>>()?;
        let own = [
            checkpoint.named_enrolled.as_slice(),
            &checkpoint.named_started,
            &checkpoint.named_certified,
        ];
        let reached = [
            checkpoint.loose_enrolled.as_slice(),
            &checkpoint.loose_started,
            &checkpoint.loose_certified,
        ];
        let records = Chunked::build(learners, |learner| {
            let (named_start, loose_row) = starts[learner];
            let loose = if checkpoint.learner_loose[learner] {
                progress(reached, &checkpoint.loose_chapters, loose_row)
            } else {
                Progress::default()
            };
            let count = checkpoint.learner_named[learner] as usize;
            let named = (named_start..named_start + count).map(|row| {
                Named::new(
                    checkpoint.named_at[row],
                    tie_order(
                        checkpoint.format_version,
                        &checkpoint.named_ids[row * 3..row * 3 + 3],
                    ),
                    slots[row],
                    progress(own, &checkpoint.named_chapters, row),
                )
            });
            // Not empty: checked above.
            let record = Record::of(loose, named).unwrap_or(Record::Direct(loose));
            (key(&checkpoint.learner_keys, learner), record)
        });
        anyhow::ensure!(
            records.len() == learners,
            "a learner's record is stored twice"
        );
        Ok(records)
    }

    /// The records a checkpoint of a format before 4 makes: a learner's named campaigns from
    /// the attributions, with what it reached in each from the campaign's learners (in its first
    /// campaign, from the attributions' `own` when it has loose progress, since that campaign
    /// kept the two merged); its loose progress from the attributions, or from `direct`'s
    /// learners. A learner in a campaign its attributions do not name (a checkpoint older than
    /// attribution) names it as late as can be. [`Aggregator::check_upgrade`] then checks that
    /// the records count what the checkpoint held.
    pub(super) fn upgrade_learners(
        &self,
        checkpoint: &Checkpoint,
    ) -> anyhow::Result<Chunked<LearnerKey, Record>> {
        let named = checkpoint.named_at.len();
        anyhow::ensure!(
            checkpoint.named_learners.len() == named * 3
                && checkpoint.named_ids.len() == named * 3
                && checkpoint.named_slots.len() == named,
            "attribution columns of different lengths"
        );
        let mut records: HashMap<LearnerKey, Full> = HashMap::new();
        for row in 0..named {
            let slot = self.held_slot(checkpoint.named_slots[row])?;
            let tie = tie_order(
                checkpoint.format_version,
                &checkpoint.named_ids[row * 3..row * 3 + 3],
            );
            records
                .entry(key(&checkpoint.named_learners, row))
                .or_default()
                .add(Named::new(
                    checkpoint.named_at[row],
                    tie,
                    slot,
                    Progress::default(),
                ));
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
        let mut own_in_first = HashMap::new();
        for row in 0..loose {
            let learner = key(&checkpoint.loose_learners, row);
            records.entry(learner).or_default().loose = progress(
                [
                    &checkpoint.loose_enrolled,
                    &checkpoint.loose_started,
                    &checkpoint.loose_certified,
                ],
                &checkpoint.loose_chapters,
                row,
            );
            let own = progress(
                [
                    &checkpoint.own_enrolled,
                    &checkpoint.own_started,
                    &checkpoint.own_certified,
                ],
                &checkpoint.own_chapters,
                row,
            );
            own_in_first.insert(learner, own);
        }
        let direct = self.index.get(DIRECT_CAMPAIGN).copied();
        for (slot, stored) in (0..=Slot::MAX).zip(&checkpoint.campaigns) {
            for row in 0..stored.enrolled.len() {
                let (learner, counted) = stored_learner(stored, row);
                let record = records.entry(learner).or_default();
                if Some(slot) == direct && record.named.is_empty() {
                    record.loose.merge(&counted);
                    continue;
                }
                let first = record.first();
                match record.named.iter_mut().find(|named| named.slot == slot) {
                    Some(named) => {
                        named.set_own(match own_in_first.get(&learner) {
                            Some(own) if first == Some(slot) => *own,
                            _ => counted,
                        });
                    }
                    None => record
                        .named
                        .push(Named::new(i64::MAX, [u32::MAX; 3], slot, counted)),
                }
            }
        }
        let records: Vec<(LearnerKey, Record)> = records
            .into_iter()
            .filter_map(|(learner, full)| Some((learner, Record::of(full.loose, full.named)?)))
            .collect();
        Ok(Chunked::build(records.len(), |index| {
            records[index].clone()
        }))
    }

    /// Counts every learner's record into the funnels (whose learner counters are zero), the
    /// tally and the loose learners, a chunk of records at a time on rayon's threads; returns
    /// how many learners each slot counts.
    pub(super) fn count_learners(&mut self) -> Vec<usize> {
        let direct = self.index.get(DIRECT_CAMPAIGN).copied();
        let chapters = vec![0; usize::from(self.settings.chapter_count)];
        let empty = Counts {
            chapters_completed: chapters,
            ..Counts::default()
        };
        let slots = self.campaigns.len();
        let tallied = self
            .learners
            .par_values()
            .fold(
                || Tallied::new(slots, &empty),
                |mut tallied, record| {
                    tallied.count(record, direct);
                    tallied
                },
            )
            .reduce(|| Tallied::new(slots, &empty), Tallied::merged);
        for (campaign, counts) in self.campaigns.iter_mut().zip(&tallied.campaigns) {
            campaign.counts.add_learners(counts);
        }
        self.totals.counts.add_learners(&tallied.totals);
        self.tally = Tally {
            learners: tallied.learners,
            campaign_learners: tallied.per_slot.iter().sum(),
        };
        self.loose_learners = tallied.loose_learners;
        tallied.per_slot
    }

    /// Checks that the records made from a checkpoint of an older format count, in every
    /// campaign and in the totals, exactly the learners it held (`per_slot`: how many each
    /// slot counts).
    pub(super) fn check_upgrade(
        &self,
        checkpoint: &Checkpoint,
        per_slot: &[usize],
    ) -> anyhow::Result<()> {
        let direct = self.index.get(DIRECT_CAMPAIGN).copied();
        let mut counted = Vec::new();
        let refuse = |campaign: &str| {
            anyhow::anyhow!(
                "the checkpoint, of format {}, holds learners of campaign {campaign:?} whose attribution this suivi cannot tell (it predates attribution): rebuild the state from an empty data_dir",
                checkpoint.format_version
            )
        };
        // Whether `stored` holds `expected` learners, each as `holds` says its record counts.
        let holds_exactly =
            |stored: &StoredCampaign,
             expected: usize,
             holds: &mut dyn FnMut(&Record, Progress) -> bool| {
                stored.enrolled.len() == expected
                    && (0..expected).all(|row| {
                        let (learner, held) = stored_learner(stored, row);
                        self.learners
                            .get(&learner)
                            .is_some_and(|record| holds(record, held))
                    })
            };
        for (slot, stored) in checkpoint.campaigns.iter().enumerate() {
            let expected = per_slot.get(slot).copied().unwrap_or(0);
            let slot = Slot::try_from(slot).map_err(|_| refuse(&stored.campaign))?;
            if !holds_exactly(stored, expected, &mut |record, held| {
                record.counted(direct, &mut counted);
                counted.contains(&(slot, held))
            }) {
                return Err(refuse(&stored.campaign));
            }
        }
        if let Some(totals) = &checkpoint.totals
            && !holds_exactly(totals, self.tally.learners, &mut |record, held| {
                record.counted(direct, &mut counted) == held
            })
        {
            return Err(refuse(&totals.campaign));
        }
        Ok(())
    }
}

/// What a share of the learners' records counts: [`Aggregator::count_learners`]' partial sums.
struct Tallied {
    campaigns: Vec<Counts>,
    per_slot: Vec<usize>,
    totals: Counts,
    learners: usize,
    loose_learners: usize,
    counted: Counted,
}

impl Tallied {
    fn new(slots: usize, empty: &Counts) -> Tallied {
        Tallied {
            campaigns: vec![empty.clone(); slots],
            per_slot: vec![0; slots],
            totals: empty.clone(),
            learners: 0,
            loose_learners: 0,
            counted: Counted::new(),
        }
    }

    fn count(&mut self, record: &Record, direct: Option<Slot>) {
        let total = record.counted(direct, &mut self.counted);
        for (slot, progress) in &self.counted {
            self.campaigns[usize::from(*slot)].count_learner(progress);
            self.per_slot[usize::from(*slot)] += 1;
        }
        if !total.is_empty() {
            self.totals.count_learner(&total);
            self.learners += 1;
        }
        self.loose_learners += usize::from(!record.loose().is_empty());
    }

    fn merged(mut self, other: Tallied) -> Tallied {
        for (counts, other) in self.campaigns.iter_mut().zip(&other.campaigns) {
            counts.add_learners(other);
        }
        for (count, other) in self.per_slot.iter_mut().zip(&other.per_slot) {
            *count += other;
        }
        self.totals.add_learners(&other.totals);
        self.learners += other.learners;
        self.loose_learners += other.loose_learners;
        self
    }
}
