//! The state split by learner (product.md §6): the same events split among any number of
//! shards, each its own aggregator, and their partials summed by [`Figures`], give the figures
//! of one aggregator that took them all — funnels, chapters, timelines, attribution and totals.

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
    }
}
