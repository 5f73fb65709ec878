//! The state split by learner (product.md §6): what the shards' writer threads share, and how
//! work is split among them and their answers put back together.
//!
//! - [`split`]: a submission's events go each to its shard ([`Event::route`]: a tagged click
//!   whose learner lives in another shard than its visitor also tells that shard the campaign
//!   it names); a Kafka batch's
//!   partition ranges go to every shard, events or not, so that every shard's partition
//!   positions move together and the instance's position of a partition is the least of them.
//! - [`UnregisteredRoom`]: which campaigns missing from the registry have counters of their own
//!   is decided once for the process, so that a campaign is never counted on its own in one
//!   shard and under `unregistered` in another.
//! - [`CheckpointBoard`]: the Kafka positions that every shard's newest checkpoint covers, the
//!   only ones that may be committed to the consumer group.
//! - [`layout`]: how many shards a data directory holds; shard 0 keeps the directories of a
//!   suivi without shards, so that an older data directory is a one-shard one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, bail};
use hashbrown::{HashMap, HashSet};
use tokio::sync::watch;

use super::{KafkaBatch, Outcomes, Refusal, sources::Release};
use crate::aggregate::Applied;
use crate::durable::RecoveryReport;
use crate::event::{DIRECT_CAMPAIGN, Event, UNREGISTERED_CAMPAIGN};
use crate::proto::storage::KafkaOffset;
use crate::telemetry;

/// The file of a data directory that says how many shards it holds.
const SHARDS_FILE: &str = "shards";

/// How the state is split into shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharding {
    /// By a keyed hash of the learner ([`Event::route`]), in one process.
    Learner,
    /// Each partition of the Kafka topics is a shard (`forward_to_kafka`): a Kafka event is
    /// counted in the shard of the partition it was read from, which the consumer has checked
    /// is its learner's, and a shard's partitions are this instance's only while assigned here.
    Partition,
}

/// One shard's part of a submission: the events, each with its index in the submission, and
/// the Kafka batch they were read in (every range, and each event's range).
#[derive(Debug, Default)]
pub(super) struct Part {
    pub(super) shard: usize,
    pub(super) indices: Vec<usize>,
    pub(super) events: Vec<Event>,
    pub(super) kafka: Option<KafkaBatch>,
}

/// Splits `events` among `shards` shards, each under the campaign `room` admits it to (an
/// unregistered campaign with no room is counted under `unregistered`). Without Kafka, only the
/// shards that get events get a part; with Kafka, every shard does, with every range.
pub(super) fn split(
    shards: usize,
    sharding: Sharding,
    mut events: Vec<Event>,
    kafka: Option<KafkaBatch>,
    room: &UnregisteredRoom,
) -> Vec<Part> {
    if let (Sharding::Partition, Some(batch)) = (sharding, &kafka) {
        return split_by_partition(shards, events, batch);
    }
    if shards == 1 {
        for event in &mut events {
            room.admit(event, 0);
        }
        return vec![Part {
            shard: 0,
            indices: (0..events.len()).collect(),
            events,
            kafka,
        }];
    }
    let mut parts: Vec<Part> = (0..shards)
        .map(|shard| Part {
            shard,
            kafka: kafka.as_ref().map(|batch| KafkaBatch {
                ranges: batch.ranges.clone(),
                sources: Vec::new(),
            }),
            ..Part::default()
        })
        .collect();
    let len = events.len();
    for (index, event) in events.into_iter().enumerate() {
        let (shard, mut event, mut names) = event.route(shards);
        room.admit(&mut event, shard);
        if let Some((names_shard, names)) = &mut names {
            names.campaign.clone_from(&event.campaign);
            room.admit(names, *names_shard);
        }
        // What a tagged click tells its learner's shard is no event of the submission: its
        // index is past the end, and its outcome is left out (the click's is the event's).
        for (shard, event, index) in
            std::iter::once((shard, event, index)).chain(names.map(|(s, e)| (s, e, len + index)))
        {
            let part = &mut parts[shard];
            if let (Some(part_batch), Some(batch)) = (&mut part.kafka, &kafka) {
                part_batch
                    .sources
                    .push(batch.sources.get(index % len).copied().unwrap_or(0));
            }
            part.indices.push(index);
            part.events.push(event);
        }
    }
    if kafka.is_none() {
        parts.retain(|part| !part.events.is_empty());
    }
    parts
}

/// Splits a Kafka batch among shards that are partitions: each range, and each event read
/// from it, goes to the shard of its partition number. A partition past the shards (the topic
/// grew) is refused at assignment, so never read here.
fn split_by_partition(shards: usize, events: Vec<Event>, batch: &KafkaBatch) -> Vec<Part> {
    let shard_of = |range: usize| {
        batch.ranges.get(range).map_or(0, |range| {
            usize::try_from(range.partition.partition).unwrap_or(0) % shards
        })
    };
    let mut parts: Vec<Option<Part>> = (0..shards).map(|_| None).collect();
    fn part(parts: &mut [Option<Part>], shard: usize) -> &mut Part {
        parts[shard].get_or_insert_with(|| Part {
            shard,
            kafka: Some(KafkaBatch::default()),
            ..Part::default()
        })
    }
    for (index, range) in batch.ranges.iter().enumerate() {
        let part = part(&mut parts, shard_of(index));
        if let Some(kafka) = &mut part.kafka {
            kafka.ranges.push(range.clone());
        }
    }
    for (index, event) in events.into_iter().enumerate() {
        let range = batch.sources.get(index).copied().unwrap_or(0) as usize;
        let part = part(&mut parts, shard_of(range));
        if let Some(kafka) = &mut part.kafka {
            // The event's range among the part's own ranges.
            let own = kafka
                .ranges
                .iter()
                .position(|own| own.partition == batch.ranges[range].partition)
                .unwrap_or(0);
            kafka.sources.push(u32::try_from(own).unwrap_or(0));
        }
        part.indices.push(index);
        part.events.push(event);
    }
    parts.into_iter().flatten().collect()
}

/// Puts the parts' outcomes back in submission order; the first refusal refuses the whole
/// submission (the parts taken are counted; sending it again is safe: they are duplicates).
pub(super) fn merge(
    len: usize,
    answers: Vec<(Vec<usize>, Result<Outcomes, Refusal>)>,
) -> Result<Outcomes, Refusal> {
    let mut answers = answers;
    if answers.len() == 1 {
        // One part holds every event, in order.
        return answers.pop().map_or(Ok(Vec::new()), |(_, answer)| answer);
    }
    let mut outcomes = vec![Applied::Accepted; len];
    for (indices, answer) in answers {
        for (index, outcome) in indices.into_iter().zip(answer?) {
            if let Some(slot) = outcomes.get_mut(index) {
                *slot = outcome;
            }
        }
    }
    Ok(outcomes)
}

/// The least of the shards' positions of each partition, as `assign` answers them.
pub(super) fn least_positions(answers: Vec<Vec<i64>>) -> Vec<i64> {
    let mut answers = answers.into_iter();
    let first = answers.next().unwrap_or_default();
    answers.fold(first, |least, positions| {
        least
            .into_iter()
            .zip(positions)
            .map(|(a, b)| a.min(b))
            .collect()
    })
}

/// The shards' releases as one: every campaign released by a shard, and every one kept.
pub(super) fn merge_releases(releases: Vec<Release>) -> Release {
    let mut merged = Release::default();
    for release in releases {
        merged.campaigns.extend(release.campaigns);
        merged.kept.extend(release.kept);
    }
    for list in [&mut merged.campaigns, &mut merged.kept] {
        list.sort_unstable();
        list.dedup();
    }
    merged
}

/// The shards' recoveries as one: the events and records of all, the longest duration (they run
/// side by side), the oldest checkpoint position.
pub(super) fn merge_reports(reports: Vec<RecoveryReport>) -> RecoveryReport {
    let mut merged = RecoveryReport::default();
    for report in reports {
        merged.checkpoint_position = match (merged.checkpoint_position, report.checkpoint_position)
        {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        merged
            .checkpoints_rejected
            .extend(report.checkpoints_rejected);
        merged.records_replayed += report.records_replayed;
        merged.events_replayed += report.events_replayed;
        merged.torn_bytes += report.torn_bytes;
        merged.duration = merged.duration.max(report.duration);
    }
    merged
}

/// Which campaigns missing from the registry have counters of their own, process-wide, and the
/// shards that hold each: decided as submissions are split, in submission order, so that a
/// campaign is counted on its own in every shard or in none. A campaign takes room when an
/// event of it is first given to a shard, and gives it back when no shard holds it any more
/// (released with its Kafka partitions). A submission refused after its split may leave a
/// campaign holding room with no event until the next start.
#[derive(Debug)]
pub struct UnregisteredRoom {
    limit: usize,
    /// The registered and reserved campaigns, which always have counters.
    always: HashSet<String>,
    /// Each campaign with the shards holding it, one bit a shard.
    held: Mutex<HashMap<String, u64>>,
}

impl UnregisteredRoom {
    /// Room for `limit` unregistered campaigns besides the `registered` ones, `direct` and
    /// `unregistered`.
    pub fn new(limit: usize, registered: &[String]) -> UnregisteredRoom {
        let mut always: HashSet<String> = registered.iter().cloned().collect();
        always.insert(DIRECT_CAMPAIGN.to_owned());
        always.insert(UNREGISTERED_CAMPAIGN.to_owned());
        UnregisteredRoom {
            limit,
            always,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Puts `event`, given to `shard`, under `unregistered` when its campaign is an
    /// unregistered one with no room; says whether it did.
    pub fn admit(&self, event: &mut Event, shard: usize) -> bool {
        if self.always.contains(event.campaign.as_str()) || self.take(&event.campaign, shard) {
            return false;
        }
        UNREGISTERED_CAMPAIGN.clone_into(&mut event.campaign);
        telemetry::record_events_redirected_to_unregistered(1);
        true
    }

    /// Whether `shard` may give `campaign` counters of its own; if so, it holds it from now.
    pub fn take(&self, campaign: &str, shard: usize) -> bool {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shards) = held.get_mut(campaign) {
            *shards |= 1 << shard;
            return true;
        }
        if held.len() >= self.limit {
            return false;
        }
        held.insert(campaign.to_owned(), 1 << shard);
        true
    }

    /// The campaigns some shard holds, and of those the unregistered ones: what every shard
    /// reports as the process's (a shard alone holds some of the unregistered campaigns only).
    pub fn held(&self) -> (usize, usize) {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        (self.always.len() + held.len(), held.len())
    }

    /// Notes that `shard` holds `campaigns` (recovered), whatever the limit of this start.
    pub fn hold(&self, campaigns: Vec<String>, shard: usize) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for campaign in campaigns {
            *held.entry(campaign).or_default() |= 1 << shard;
        }
    }

    /// Notes that `shard` no longer holds `campaigns`.
    pub fn release(&self, campaigns: &[String], shard: usize) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for campaign in campaigns {
            if let Some(shards) = held.get_mut(campaign.as_str()) {
                *shards &= !(1 << shard);
                if *shards == 0 {
                    held.remove(campaign.as_str());
                }
            }
        }
    }
}

/// The Kafka positions of each shard's newest checkpoint, and on `combined` the positions all
/// of them cover: a partition every checkpoint has, at the least of their positions (shards by
/// learner all read every partition); with shards that are partitions, each partition at its
/// own shard's position.
#[derive(Debug)]
pub struct CheckpointBoard {
    shards: Mutex<Vec<Option<Vec<KafkaOffset>>>>,
    sharding: Sharding,
    combined: watch::Sender<Vec<KafkaOffset>>,
}

impl CheckpointBoard {
    pub fn new(
        shards: usize,
        sharding: Sharding,
        combined: watch::Sender<Vec<KafkaOffset>>,
    ) -> CheckpointBoard {
        CheckpointBoard {
            shards: Mutex::new(vec![None; shards]),
            sharding,
            combined,
        }
    }

    /// Notes that `shard` wrote a checkpoint at `offsets`.
    pub fn written(&self, shard: usize, offsets: Vec<KafkaOffset>) {
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        shards[shard] = Some(offsets);
        if self.sharding == Sharding::Partition {
            let mut combined: Vec<KafkaOffset> = shards
                .iter()
                .flatten()
                .flatten()
                .map(|offset| KafkaOffset {
                    campaigns: Vec::new(),
                    ..offset.clone()
                })
                .collect();
            combined.sort_unstable_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            self.combined.send_replace(combined);
            return;
        }
        let Some(all) = shards
            .iter()
            .map(Option::as_ref)
            .collect::<Option<Vec<_>>>()
        else {
            return;
        };
        let mut combined: Vec<KafkaOffset> = Vec::new();
        if let Some((first, rest)) = all.split_first() {
            for offset in first.iter() {
                let positions: Option<Vec<i64>> = rest
                    .iter()
                    .map(|offsets| {
                        offsets
                            .iter()
                            .find(|other| {
                                other.topic == offset.topic && other.partition == offset.partition
                            })
                            .map(|other| other.next_offset)
                    })
                    .collect();
                if let Some(positions) = positions {
                    combined.push(KafkaOffset {
                        next_offset: positions.into_iter().fold(offset.next_offset, i64::min),
                        campaigns: Vec::new(),
                        ..offset.clone()
                    });
                }
            }
        }
        self.combined.send_replace(combined);
    }

    /// The positions every shard's newest checkpoint covers.
    pub fn combined(&self) -> Vec<KafkaOffset> {
        self.combined.borrow().clone()
    }
}

/// The journal and checkpoint directories of `shard` in `data_dir`: shard 0's are those of a
/// suivi without shards.
pub fn shard_dirs(data_dir: &Path, shard: usize) -> (PathBuf, PathBuf) {
    let base = if shard == 0 {
        data_dir.to_owned()
    } else {
        data_dir.join(format!("shard-{shard}"))
    };
    (base.join("journal"), base.join("checkpoints"))
}

/// How many shards `data_dir` holds, recording it on first use. `wanted` 0 means "as the
/// directory says, else `default`"; another number must match what the directory holds (a data
/// directory cannot be re-sharded in place). A directory written before shards existed holds
/// one.
pub fn layout(data_dir: &Path, wanted: usize, default: usize) -> anyhow::Result<usize> {
    let file = data_dir.join(SHARDS_FILE);
    let recorded = match std::fs::read_to_string(&file) {
        Ok(text) => Some(text.trim().parse::<usize>().with_context(|| {
            format!(
                "{} should hold a number of shards, not {text:?}",
                file.display()
            )
        })?),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let (journal, _) = shard_dirs(data_dir, 0);
            journal.exists().then_some(1)
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", file.display()));
        }
    };
    let shards = match (recorded, wanted) {
        (Some(recorded), 0) => recorded,
        (Some(recorded), wanted) if recorded != wanted => bail!(
            "data_dir {} holds {recorded} shards and shards = {wanted}: a data directory cannot be \
             re-sharded in place; set shards = {recorded} (or 0: as the directory says), or start \
             from an empty data_dir and send the history again",
            data_dir.display()
        ),
        (Some(recorded), _) => recorded,
        (None, 0) => default.max(1),
        (None, wanted) => wanted,
    };
    if recorded.is_none() {
        std::fs::write(&file, format!("{shards}\n"))
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(shards)
}

/// A shard's writer thread and what the others share with it.
#[derive(Debug, Clone)]
pub(super) struct Shared {
    pub(super) shard: usize,
    pub(super) sharding: Sharding,
    /// With shards that are partitions: where the shard's partials go to be published.
    pub(super) outbox: Option<Arc<crate::partials::Outbox>>,
    pub(super) unregistered: Arc<UnregisteredRoom>,
    pub(super) board: Arc<CheckpointBoard>,
}

#[cfg(test)]
mod tests;
