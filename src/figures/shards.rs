//! Each shard's part of the figures as the sinks that key their rows by shard take it
//! ([`Figures::take_shard_changes`]): what changed per (shard, campaign) and per (shard,
//! campaign, day) since the last take, with the position each part reflects. Kept apart from
//! the sums the other readers see; it never changes a figure, only the flags it takes.

use chrono::{DateTime, Utc};

use super::{DayCounters, Figures, day_counters};
use crate::aggregate::Counts;

/// What changed in each shard's partials since the last [`Figures::take_shard_changes`]: the
/// rows the PostgreSQL sink keys by shard, so that instances never overwrite each other.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardChanges {
    /// By shard, then campaign.
    pub counts: Vec<ShardCounts>,
    /// By shard, campaign and day; a day whose counts are all zero has emptied.
    pub days: Vec<ShardDay>,
}

/// One shard's counts of one campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardCounts {
    pub shard: usize,
    pub campaign: String,
    pub counts: Counts,
    /// The Kafka position these counts reflect ([`Figures::publish_at`]); `None` for shards
    /// published without positions ([`Figures::publish`]).
    pub position: Option<i64>,
    /// When this shard's part of the campaign last changed here.
    pub as_of: DateTime<Utc>,
}

/// One shard's counts of one campaign on one day.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardDay {
    pub shard: usize,
    pub campaign: String,
    pub counts: DayCounters,
    /// As [`ShardCounts::position`], for this day.
    pub position: Option<i64>,
}

impl Figures {
    /// Takes what changed in each shard's partials since the last call, each with the position
    /// it reflects, for the sinks that key their rows by shard. Its flags are apart from
    /// [`Figures::take_changes`]' (set by the same publishes), so each taker sees every change.
    pub fn take_shard_changes(&self) -> ShardChanges {
        let mut changes = ShardChanges::default();
        for mut entry in self.campaigns.iter_mut() {
            let (campaign, published) = entry.pair_mut();
            for (shard, partial) in published.partials.iter_mut().enumerate() {
                if partial.counts_due {
                    partial.counts_due = false;
                    changes.counts.push(ShardCounts {
                        shard,
                        campaign: campaign.clone(),
                        counts: partial.counts.clone(),
                        // A partial published without positions keeps the default one.
                        position: (partial.position != i64::MIN).then_some(partial.position),
                        as_of: partial.as_of,
                    });
                }
                for day in std::mem::take(&mut partial.days_due) {
                    changes.days.push(ShardDay {
                        shard,
                        campaign: campaign.clone(),
                        counts: day_counters(
                            day,
                            &partial.timeline.get(&day).copied().unwrap_or_default(),
                        ),
                        position: partial.day_positions.get(&day).copied(),
                    });
                }
            }
        }
        changes
            .counts
            .sort_by(|a, b| (a.shard, &a.campaign).cmp(&(b.shard, &b.campaign)));
        changes.days.sort_by(|a, b| {
            (a.shard, &a.campaign, a.counts.day).cmp(&(b.shard, &b.campaign, b.counts.day))
        });
        changes
    }
}

#[cfg(test)]
mod tests {
    use crate::aggregate::{CampaignChange, Counts, DayCounts};
    use crate::day::Day;
    use crate::figures::Figures;
    use crate::registry::Registry;

    fn counts(enrolled: u64) -> Counts {
        Counts {
            enrolled,
            chapters_completed: vec![0; 12],
            ..Counts::default()
        }
    }

    fn day(enrolled: u64) -> DayCounts {
        DayCounts {
            enrolled,
            ..DayCounts::default()
        }
    }

    #[test]
    fn each_shard_part_is_taken_once_with_the_position_it_reflects() {
        let registry = Registry::load(None).expect("the embedded registry");
        let figures = Figures::new(&registry, 12, chrono::Utc::now());
        let first: Day = "2020-10-05".parse().expect("a day");
        let second: Day = "2020-10-06".parse().expect("a day");
        figures.publish_at(
            2,
            50,
            [(
                "gendarmerie".to_owned(),
                Some(counts(3)),
                vec![(first, day(3))],
            )],
            chrono::Utc::now(),
        );
        // A day alone, later; then an older position, which shows nothing and is not taken.
        figures.publish_at(
            2,
            60,
            [("gendarmerie".to_owned(), None, vec![(second, day(1))])],
            chrono::Utc::now(),
        );
        figures.publish_at(
            2,
            40,
            [(
                "gendarmerie".to_owned(),
                Some(counts(1)),
                vec![(first, day(1))],
            )],
            chrono::Utc::now(),
        );
        let taken = figures.take_shard_changes();
        let counts_taken: Vec<(usize, &str, u64, Option<i64>)> = taken
            .counts
            .iter()
            .map(|part| {
                (
                    part.shard,
                    part.campaign.as_str(),
                    part.counts.enrolled,
                    part.position,
                )
            })
            .collect();
        assert_eq!(counts_taken, [(2, "gendarmerie", 3, Some(50))]);
        let days_taken: Vec<(usize, Day, u64, Option<i64>)> = taken
            .days
            .iter()
            .map(|part| {
                (
                    part.shard,
                    part.counts.day,
                    part.counts.enrolled,
                    part.position,
                )
            })
            .collect();
        assert_eq!(
            days_taken,
            [(2, first, 3, Some(50)), (2, second, 1, Some(60))]
        );
        assert_eq!(
            figures.take_shard_changes(),
            super::ShardChanges::default(),
            "taken once"
        );

        // Shards in one process publish without positions.
        figures.publish(
            1,
            vec![CampaignChange {
                campaign: "gendarmerie".to_owned(),
                counts: counts(2),
                days: vec![(first, day(2))],
            }],
            chrono::Utc::now(),
        );
        let taken = figures.take_shard_changes();
        assert_eq!((taken.counts[0].shard, taken.counts[0].position), (1, None));
        assert_eq!((taken.days[0].shard, taken.days[0].position), (1, None));
        // The summed figures are taken apart: still there for the other sinks.
        assert_eq!(figures.take_changes().campaigns.len(), 1);
    }
}
