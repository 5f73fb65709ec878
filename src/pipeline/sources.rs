//! Where the counted events came from, kept by the writer beside the aggregate: for each Kafka
//! partition consumed, the next offset to read and the campaigns it fed; and the campaigns fed
//! over gRPC or HTTP. It is what makes Kafka exact:
//!
//! - a batch read from a partition is taken only if it starts where the last one taken ended,
//!   or before (its events counted already are duplicates) ([`Sources::check`]), so a refused
//!   batch can never be skipped over by a later one;
//! - positions are journaled with the events and checkpointed with the state they produced, so a
//!   restart resumes each partition exactly after what was counted;
//! - when a partition is handed to another instance, the campaigns only it fed are released from
//!   this instance's aggregate ([`Sources::release`]): the new owner rebuilds them from the
//!   partition, and the two instances never both count a campaign.
//!
//! Events are keyed by campaign, so a campaign normally comes from one partition. One that comes
//! from two (a producer that keys otherwise) or from Kafka and gRPC/HTTP both is kept on release
//! and reported, since its counts cannot be split by source.

use hashbrown::{HashMap, HashSet};

use crate::aggregate::Aggregator;
use crate::proto::storage::KafkaOffset;

/// librdkafka's "from the beginning" offset: the position of a partition nothing was read from.
pub const OFFSET_BEGINNING: i64 = -2;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
}

impl From<&KafkaOffset> for Partition {
    fn from(offset: &KafkaOffset) -> Partition {
        Partition {
            topic: offset.topic.clone(),
            partition: offset.partition,
        }
    }
}

/// The partition a journaled event's `source` names among its record's `partitions` (as
/// [`Sources::advance`] gives them); `None` for gRPC/HTTP (source 0).
pub fn source_of(partitions: &[Partition], source: u32) -> Option<&Partition> {
    partitions.get((source as usize).checked_sub(1)?)
}

/// The part of a Kafka batch read from one partition: offsets `from` (the position the batch
/// continues from) up to `to` (the next offset to read after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub partition: Partition,
    pub from: i64,
    pub to: i64,
}

/// A batch that does not continue from where its partition's last counted batch ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{partition:?} is at offset {position:?}, the batch starts at {from}")]
pub struct OutOfSequence {
    pub partition: Partition,
    pub position: Option<i64>,
    pub from: i64,
}

#[derive(Debug, Default)]
struct PartitionState {
    position: i64,
    campaigns: HashSet<String>,
}

/// Partition positions, and which source fed which campaign.
#[derive(Debug, Default)]
pub struct Sources {
    partitions: HashMap<Partition, PartitionState>,
    /// Campaigns fed over gRPC or HTTP.
    direct: HashSet<String>,
}

/// What a release found: campaigns to forget, and campaigns kept because another source fed them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Release {
    pub campaigns: Vec<String>,
    pub kept: Vec<String>,
}

impl Sources {
    /// Rebuilds the sources of a checkpoint.
    pub fn restore(offsets: &[KafkaOffset], direct: &[String]) -> Sources {
        let mut sources = Sources::default();
        for offset in offsets {
            sources.partitions.insert(
                Partition::from(offset),
                PartitionState {
                    position: offset.next_offset,
                    campaigns: offset.campaigns.iter().cloned().collect(),
                },
            );
        }
        sources.direct = direct.iter().cloned().collect();
        sources
    }

    /// Every partition with its position and campaigns, sorted, for a checkpoint.
    pub fn offsets(&self) -> Vec<KafkaOffset> {
        let mut offsets: Vec<KafkaOffset> = self
            .partitions
            .iter()
            .map(|(partition, state)| {
                let mut campaigns: Vec<String> = state.campaigns.iter().cloned().collect();
                campaigns.sort_unstable();
                KafkaOffset {
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                    next_offset: state.position,
                    campaigns,
                }
            })
            .collect();
        offsets.sort_unstable_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        offsets
    }

    /// The campaigns fed over gRPC or HTTP, sorted, for a checkpoint.
    pub fn direct_campaigns(&self) -> Vec<String> {
        let mut direct: Vec<String> = self.direct.iter().cloned().collect();
        direct.sort_unstable();
        direct
    }

    /// Takes `partitions` on: the position of each, [`OFFSET_BEGINNING`] for one never read.
    pub fn assign(&mut self, partitions: &[Partition]) -> Vec<i64> {
        partitions
            .iter()
            .map(|partition| {
                self.partitions
                    .entry(partition.clone())
                    .or_insert_with(|| PartitionState {
                        position: OFFSET_BEGINNING,
                        campaigns: HashSet::new(),
                    })
                    .position
            })
            .collect()
    }

    /// How far the partitions held are read, as one number that only grows while they are
    /// held: the sum of their positions (a partition not read yet counts 0). With shards that
    /// are partitions, it dates the shard's partials.
    pub fn position(&self) -> i64 {
        self.partitions
            .values()
            .map(|state| state.position.max(0))
            .sum()
    }

    /// The partitions held, sorted.
    pub fn held(&self) -> Vec<Partition> {
        let mut held: Vec<Partition> = self.partitions.keys().cloned().collect();
        held.sort_unstable();
        held
    }

    /// Checks that every range continues its partition from where it is, or goes over what is
    /// counted already (a batch sent again after another shard refused its part: its events
    /// counted here are duplicates).
    pub fn check(&self, ranges: &[Range]) -> Result<(), OutOfSequence> {
        for range in ranges {
            let position = self
                .partitions
                .get(&range.partition)
                .map(|state| state.position);
            if !position.is_some_and(|position| continues(position, range.from)) {
                return Err(OutOfSequence {
                    partition: range.partition.clone(),
                    position,
                    from: range.from,
                });
            }
        }
        Ok(())
    }

    /// Moves each partition of `positions` to its next offset (a journal record's positions);
    /// answers the record's partitions in order, for its events' sources ([`source_of`]).
    pub fn advance(&mut self, positions: &[KafkaOffset]) -> Vec<Partition> {
        positions
            .iter()
            .map(|offset| {
                let partition = Partition::from(offset);
                let state = self.partitions.entry(partition.clone()).or_default();
                state.position = advanced(state.position, offset.next_offset);
                partition
            })
            .collect()
    }

    /// Notes that `campaign` got an event from `source` (`None` for gRPC/HTTP); says whether the
    /// campaign has just become fed by more than one source.
    pub fn note(&mut self, campaign: &str, source: Option<&Partition>) -> bool {
        match source {
            None => {
                if self.direct.contains(campaign) {
                    return false;
                }
                self.direct.insert(campaign.to_owned());
                self.fed_by_partition_other_than(campaign, None)
            }
            Some(partition) => {
                let Some(state) = self.partitions.get_mut(partition) else {
                    return false;
                };
                if state.campaigns.contains(campaign) {
                    return false;
                }
                state.campaigns.insert(campaign.to_owned());
                self.direct.contains(campaign)
                    || self.fed_by_partition_other_than(campaign, Some(partition))
            }
        }
    }

    fn fed_by_partition_other_than(&self, campaign: &str, partition: Option<&Partition>) -> bool {
        self.partitions
            .iter()
            .any(|(other, state)| Some(other) != partition && state.campaigns.contains(campaign))
    }

    /// Lets `partitions` go: forgets their positions, and says which campaigns they alone fed
    /// (to release from the aggregate) and which are kept because another source fed them too.
    pub fn release(&mut self, partitions: &[Partition]) -> Release {
        let mut candidates = Vec::new();
        for partition in partitions {
            if let Some(state) = self.partitions.remove(partition) {
                candidates.extend(state.campaigns);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut release = Release::default();
        for campaign in candidates {
            if self.direct.contains(&campaign) || self.fed_by_partition_other_than(&campaign, None)
            {
                release.kept.push(campaign);
            } else {
                release.campaigns.push(campaign);
            }
        }
        release
    }
}

/// Whether a batch from offset `from` may be taken at `position`: it starts there, or over
/// offsets counted already. A logical position (beginning) takes only a batch from it.
pub fn continues(position: i64, from: i64) -> bool {
    from == position || (position >= 0 && from <= position)
}

/// A partition's position after a batch up to `to`: never back over what is counted.
pub fn advanced(position: i64, to: i64) -> i64 {
    if position < 0 { to } else { position.max(to) }
}

/// Lets `partitions` go in the writer's state: forgets their positions and releases from
/// `aggregator` the campaigns they alone fed. Answers what [`Sources::release`] found and the
/// campaigns actually released. The writer and the journal's replay both release through here,
/// so that a replayed release forgets exactly what the live one did.
pub fn release(
    sources: &mut Sources,
    aggregator: &mut Aggregator,
    partitions: &[Partition],
) -> (Release, Vec<String>) {
    let release = sources.release(partitions);
    let released = aggregator.release(&release.campaigns);
    (release, released)
}

#[cfg(test)]
mod tests;
