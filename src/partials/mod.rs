//! The shards' partial counters across instances (`forward_to_kafka`, product.md §6). When
//! each Kafka partition is a shard, an instance counts only the partitions assigned to it; so
//! that every instance answers the exact programme-wide figures, each publishes its shards'
//! partials — absolute values per campaign and per day, dated by the shard's position in its
//! partitions — to a compacted topic (`<topic>.partials`), and every instance reads every
//! shard's partials from it into its [`Figures`], which sums them.
//!
//! - A shard's partials at a position are the same whoever made them (deduplication and
//!   unregistered campaigns are decided within the shard), so a partial replaces the one shown
//!   only when it is at a later position or the same ([`Figures::publish_at`]): a former
//!   owner, a new owner catching up, and a record read late never take figures backwards.
//! - The writers put their changes in the [`Outbox`]; [`kafka::publish`] sends what is there
//!   every [`PUBLISH_INTERVAL`], the latest value of each key only, and a head record per
//!   owned shard (its position and when it was made) at least every [`HEARTBEAT`].
//! - [`kafka::read`] reads the topic from its beginning, applies every record, and keeps each
//!   shard's head in the [`ShardBoard`]: how fresh each shard's figures are, who counts it,
//!   and how far behind its partitions' ends they are (the lag), for `/v1/shards` and the
//!   `suivi_shard_*` metrics.

pub mod kafka;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{CampaignChange, Counts, DayCounts};
use crate::day::Day;
use crate::figures::Figures;

/// How often the outbox is sent.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);
/// How often an owned shard's head is sent when nothing changed: its figures are still current.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// One record of the partials topic: a shard's head (its position and when it was made), a
/// campaign's counts in a shard, or one day of a campaign in a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub shard: usize,
    /// How far the shard's partitions were counted when this was made.
    pub position: i64,
    pub as_of: DateTime<Utc>,
    /// The instance that made it.
    #[serde(default)]
    pub instance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<Day>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_counts: Option<DayCounts>,
}

impl Record {
    /// The record's key in the compacted topic: a later record of the same key replaces it.
    pub fn key(&self) -> String {
        match (&self.campaign, self.day) {
            (None, _) => format!("{}", self.shard),
            (Some(campaign), None) => format!("{}\u{1f}{campaign}", self.shard),
            (Some(campaign), Some(day)) => format!("{}\u{1f}{campaign}\u{1f}{day}", self.shard),
        }
    }

    /// Whether `figures` show a later partial than this record for its key.
    pub fn superseded(&self, figures: &Figures) -> bool {
        let Some(campaign) = &self.campaign else {
            return false;
        };
        figures
            .shown_position(self.shard, campaign, self.day)
            .is_some_and(|shown| shown > self.position)
    }

    /// Shows the record in `figures` (a head changes no figure), unless a later one is shown.
    pub fn apply(self, figures: &Figures, now: DateTime<Utc>) {
        let Some(campaign) = self.campaign else {
            return;
        };
        let days = match (self.day, self.day_counts) {
            (Some(day), Some(counts)) => vec![(day, counts)],
            _ => Vec::new(),
        };
        figures.publish_at(
            self.shard,
            self.position,
            [(campaign, self.counts, days)],
            now,
        );
    }
}

/// What the writers of the shards owned here have to publish: the latest record of each key,
/// and each shard's head.
#[derive(Debug)]
pub struct Outbox {
    instance: String,
    state: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    records: HashMap<String, Record>,
    heads: Vec<Head>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Head {
    owned: bool,
    position: i64,
    /// Changed since it was last sent.
    changed: bool,
}

impl Outbox {
    /// An outbox for `shards` shards, its records signed `instance`.
    pub fn new(shards: usize, instance: String) -> Outbox {
        Outbox {
            instance,
            state: Mutex::new(Pending {
                records: HashMap::new(),
                heads: vec![Head::default(); shards],
            }),
        }
    }

    /// Notes what changed in `shard` once counted up to `position`.
    pub fn put(&self, shard: usize, position: i64, changes: &[CampaignChange], now: DateTime<Utc>) {
        let mut pending = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for change in changes {
            let record = Record {
                shard,
                position,
                as_of: now,
                instance: self.instance.clone(),
                campaign: Some(change.campaign.clone()),
                counts: Some(change.counts.clone()),
                day: None,
                day_counts: None,
            };
            for (day, counts) in &change.days {
                let day = Record {
                    counts: None,
                    day: Some(*day),
                    day_counts: Some(*counts),
                    ..record.clone()
                };
                pending.records.insert(day.key(), day);
            }
            pending.records.insert(record.key(), record);
        }
        if let Some(head) = pending.heads.get_mut(shard)
            && head.position != position
        {
            head.position = position;
            head.changed = true;
        }
    }

    /// Notes whether `shard`'s partitions are assigned here, and its position.
    pub fn own(&self, shard: usize, owned: bool, position: i64) {
        let mut pending = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(head) = pending.heads.get_mut(shard) {
            *head = Head {
                owned,
                position,
                changed: true,
            };
        }
    }

    /// Whether each shard is owned here.
    pub fn owned(&self) -> Vec<bool> {
        let pending = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        pending.heads.iter().map(|head| head.owned).collect()
    }

    /// Takes what is to be sent: every record, then the head of each owned shard that changed
    /// (of every owned shard with `heartbeat`), so that a reader that has a shard's head has
    /// its records of that position.
    pub fn take(&self, heartbeat: bool, now: DateTime<Utc>) -> Vec<Record> {
        let mut pending = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut records: Vec<Record> = pending.records.drain().map(|(_, record)| record).collect();
        for (shard, head) in pending.heads.iter_mut().enumerate() {
            if head.owned && (head.changed || heartbeat) {
                head.changed = false;
                records.push(Record {
                    shard,
                    position: head.position,
                    as_of: now,
                    instance: self.instance.clone(),
                    campaign: None,
                    counts: None,
                    day: None,
                    day_counts: None,
                });
            }
        }
        records
    }

    /// Puts back records that could not be sent, unless a later one of the same key came
    /// meanwhile.
    pub fn put_back(&self, records: Vec<Record>) {
        let mut pending = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for record in records {
            if record.campaign.is_none() {
                if let Some(head) = pending.heads.get_mut(record.shard) {
                    head.changed = true;
                }
                continue;
            }
            pending.records.entry(record.key()).or_insert(record);
        }
    }
}

/// What this instance knows of each shard from the partials topic.
#[derive(Debug)]
pub struct ShardBoard {
    shards: Mutex<Vec<ShardStatus>>,
}

/// One shard as `/v1/shards` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ShardStatus {
    pub shard: usize,
    /// Whether this instance counts the shard's partitions.
    pub owned_here: bool,
    /// The instance that made the newest partials read here; empty before any.
    pub owner: String,
    /// How far the newest partials read here counted the shard's partitions.
    pub position: i64,
    /// When those partials were made.
    pub as_of: Option<DateTime<Utc>>,
    /// The end of the shard's partitions, at the last look.
    pub end: i64,
    /// Events in the shard's partitions those partials do not reflect yet.
    pub lag: i64,
}

impl ShardBoard {
    pub fn new(shards: usize) -> ShardBoard {
        ShardBoard {
            shards: Mutex::new(
                (0..shards)
                    .map(|shard| ShardStatus {
                        shard,
                        ..ShardStatus::default()
                    })
                    .collect(),
            ),
        }
    }

    /// Notes a head read from the topic: the latest position wins, and at the same position
    /// the latest made.
    pub fn head(&self, record: &Record) {
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(status) = shards.get_mut(record.shard) else {
            return;
        };
        let newer = record.position > status.position
            || (record.position == status.position
                && status.as_of.is_none_or(|as_of| record.as_of > as_of));
        if newer {
            status.position = record.position;
            status.as_of = Some(record.as_of);
            status.owner.clone_from(&record.instance);
            status.lag = (status.end - status.position).max(0);
        }
    }

    /// Notes the ends of the shards' partitions and which shards are owned here, and records
    /// the metrics.
    pub fn look(&self, ends: &[Option<i64>], owned: &[bool], now: DateTime<Utc>) {
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        for status in shards.iter_mut() {
            if let Some(Some(end)) = ends.get(status.shard) {
                status.end = *end;
                status.lag = (status.end - status.position).max(0);
            }
            status.owned_here = owned.get(status.shard).copied().unwrap_or(false);
            let age = status
                .as_of
                .and_then(|as_of| (now - as_of).to_std().ok())
                .or(status.as_of.map(|_| Duration::ZERO));
            crate::telemetry::record_shard(
                status.shard,
                status.owned_here,
                status.as_of.map(|_| status.lag),
                age,
            );
        }
    }

    /// Every shard, by number.
    pub fn statuses(&self) -> Vec<ShardStatus> {
        self.shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests;
