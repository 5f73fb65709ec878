//! The state split by learner (product.md §6): the same events split among any number of
//! shards, each its own aggregator, and their partials summed by [`Figures`], give the figures
//! of one aggregator that took them all — funnels, chapters, timelines, attribution and totals;
//! and so do the shards' rows a sink takes ([`Figures::take_shard_changes`]), summed as
//! PostgreSQL's views sum them.

use std::sync::Arc;

use super::properties::*;
use super::*;
use crate::figures::{CampaignCounters, Figures};
use crate::registry::Registry;

/// Figures fed by `shards` aggregators, each taking the events of its shard in the order given.
fn figures_over_shards(events: &[Event], shards: usize) -> Arc<Figures> {
    let registry =
        Registry::parse("[[campaign]]\nid = \"gendarmerie\"\nname = \"Gendarmerie\"\ntarget = 100")
            .expect("the registry parses");
    let figures = Arc::new(Figures::new(&registry, CHAPTER_COUNT, Utc::now()));
    let mut aggregators: Vec<Aggregator> = (0..shards)
        .map(|_| Aggregator::new(property_settings(), ["gendarmerie".to_owned()]))
        .collect();
    for event in events {
        let (shard, event, names) = event.clone().route(shards);
        assert_eq!(
            aggregators[shard].apply(&event).expect("a campaign slot"),
            Applied::Accepted
        );
        if let Some((names_shard, names)) = names {
            assert_eq!(
                aggregators[names_shard]
                    .apply(&names)
                    .expect("a campaign slot"),
                Applied::Accepted
            );
            figures.publish(
                names_shard,
                aggregators[names_shard].drain_changes(),
                Utc::now(),
            );
        }
        // Published now and then, as writers do after each group.
        if event.id.0[1] % 3 == 0 {
            figures.publish(shard, aggregators[shard].drain_changes(), Utc::now());
        }
    }
    for (shard, aggregator) in aggregators.iter_mut().enumerate() {
        figures.publish(shard, aggregator.drain_changes(), Utc::now());
    }
    figures
}

/// Everything the figures show but when it changed, leaving out unregistered campaigns at zero
/// (an unregistered campaign whose events all moved elsewhere by attribution stays listed at
/// zero, or is never listed, depending on the order of events: that is not a figure).
fn shown(figures: &Figures) -> Vec<(CampaignCounters, Vec<crate::figures::DayCounters>)> {
    let mut all: Vec<CampaignCounters> = figures.campaigns();
    all.push(figures.totals());
    all.into_iter()
        .map(|mut counters| {
            counters.as_of = DateTime::<Utc>::UNIX_EPOCH;
            let timeline = figures
                .timeline(&counters.campaign, None, None)
                .unwrap_or_default();
            (counters, timeline)
        })
        .filter(|(counters, timeline)| {
            counters.registered || counters.campaign == TOTALS_CAMPAIGN || !timeline.is_empty()
        })
        .collect()
}

/// A campaign's counts as one list (clicks, visitors, enrolled, started, certified, then each
/// chapter), and its days with something, each as [clicks, enrolled, started, certified].
type Summed = (Vec<u64>, BTreeMap<Day, [u64; 4]>);

/// What the views `campaign_counters` and `campaign_days` answer from the rows a sink keyed by
/// shard takes (taken once, at the end: each row's latest value, as upserting every take in
/// turn leaves it), for the campaigns that hold something.
fn summed_shard_rows(figures: &Figures) -> BTreeMap<String, Summed> {
    let rows = figures.take_shard_changes();
    let mut summed: BTreeMap<String, Summed> = BTreeMap::new();
    for part in rows.counts {
        let counts = &part.counts;
        let values = [
            counts.clicks,
            counts.unique_visitors,
            counts.enrolled,
            counts.started,
            counts.certified,
        ]
        .into_iter()
        .chain(counts.chapters_completed.iter().copied());
        let (total, _) = summed.entry(part.campaign).or_default();
        total.resize(5 + usize::from(CHAPTER_COUNT), 0);
        for (total, value) in total.iter_mut().zip(values) {
            *total += value;
        }
    }
    for part in rows.days {
        let day = &part.counts;
        let (_, days) = summed.entry(part.campaign).or_default();
        let total = days.entry(day.day).or_default();
        for (total, value) in
            total
                .iter_mut()
                .zip([day.clicks, day.enrolled, day.started, day.certified])
        {
            *total += value;
        }
    }
    summed
        .into_iter()
        .map(|(campaign, (counts, days))| {
            let days: BTreeMap<Day, [u64; 4]> = days
                .into_iter()
                .filter(|(_, day)| day.iter().any(|value| *value > 0))
                .collect();
            (campaign, (counts, days))
        })
        .filter(|(_, (counts, days))| counts.iter().any(|value| *value > 0) || !days.is_empty())
        .collect()
}

/// The same from the figures themselves.
fn summed_figures(figures: &Figures) -> BTreeMap<String, Summed> {
    shown(figures)
        .into_iter()
        .map(|(counters, timeline)| {
            let counts = [
                counters.clicks,
                counters.unique_visitors,
                counters.enrolled,
                counters.started,
                counters.certified,
            ]
            .into_iter()
            .chain(counters.chapters_completed.iter().copied())
            .collect();
            let days = timeline
                .iter()
                .map(|day| {
                    (
                        day.day,
                        [day.clicks, day.enrolled, day.started, day.certified],
                    )
                })
                .collect();
            (counters.campaign, (counts, days))
        })
        .filter(|(_, (counts, days)): &(String, Summed)| {
            counts.iter().any(|value| *value > 0) || !days.is_empty()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_shards_partials_add_up_to_the_figures_of_one_aggregator(
        events in event_set(0..80),
        shards in 2..6usize,
        order in any::<u64>(),
    ) {
        let one = figures_over_shards(&events, 1);
        let mut shuffled = events.clone();
        // Another order too: shards see their events interleaved differently.
        let len = shuffled.len().max(1);
        shuffled.rotate_left(usize::try_from(order % len as u64).unwrap_or(0));
        let split = figures_over_shards(&shuffled, shards);
        prop_assert_eq!(shown(&split), shown(&one));
        prop_assert_eq!(summed_shard_rows(&split), summed_figures(&one));
    }
}
