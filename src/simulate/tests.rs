//! Tests of `suivi simulate`: the plan reproduces the published figures, the events realise it
//! exactly through the real parser and aggregator, and generation is deterministic.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::generate::{SimulatedEvent, Step, uuid};
use super::plan::{apportion, date};

use super::*;
use crate::aggregate::{Aggregator, AggregatorSettings, Applied};
use crate::event::{DIRECT_CAMPAIGN, EventParser, RawEvent, TOTALS_CAMPAIGN};
use crate::proto;

fn registry() -> Registry {
    Registry::load(None).expect("the embedded registry loads")
}

/// Feeds `events` through the parser and the aggregator, as the service does, asserting
/// that every one is accepted.
fn aggregate(registry: &Registry, events: &[proto::LearnerEvent]) -> Aggregator {
    let parser = EventParser::new(12, [7; 32]);
    let mut aggregator = Aggregator::new(
        AggregatorSettings {
            time_zone: chrono_tz::Europe::Paris,
            chapter_count: 12,
            max_unregistered_campaigns: 1_000,
        },
        registry
            .campaigns
            .iter()
            .map(|campaign| campaign.id.clone()),
    );
    let now = Utc::now();
    for (index, event) in events.iter().enumerate() {
        let parsed = parser
            .parse(&RawEvent::from(event), now)
            .unwrap_or_else(|reason| panic!("event {index} rejected: {reason}: {event:?}"));
        assert_eq!(
            aggregator.apply(&parsed).expect("a campaign slot"),
            Applied::Accepted,
            "{event:?}"
        );
    }
    aggregator
}

#[test]
fn a_tenth_of_the_programme_counts_to_a_tenth_of_the_published_figures() {
    let registry = registry();
    let events = generate(&registry, 7, 0.1, 12);
    let aggregator = aggregate(&registry, &events);

    let (totals, _) = aggregator.campaign(TOTALS_CAMPAIGN).expect("totals");
    assert_eq!((totals.started, totals.certified), (11_000, 6_700));
    let (gendarmerie, timeline) = aggregator.campaign("gendarmerie").expect("gendarmerie");
    assert_eq!(
        (gendarmerie.enrolled, gendarmerie.certified),
        (6_500, 5_600)
    );
    let first_day = timeline.keys().next().expect("a first day").to_string();
    let last_day = timeline.keys().last().expect("a last day").to_string();
    assert!(first_day.as_str() >= "2020-10-05", "{first_day}");
    assert!(last_day.as_str() <= "2021-01-25", "{last_day}");

    let plan = Plan::new(&registry, 7, 0.1);
    assert_eq!(plan.campaigns.len(), registry.campaigns.len() + 1);
    let (mut enrolled, mut started, mut certified) = (0, 0, 0);
    for campaign in &plan.campaigns {
        let id = if campaign.campaign.is_empty() {
            DIRECT_CAMPAIGN
        } else {
            campaign.campaign.as_str()
        };
        let (counts, timeline) = aggregator.campaign(id).expect("every campaign is counted");
        assert_eq!(
            (counts.enrolled, counts.started, counts.certified),
            (campaign.enrolled, campaign.started, campaign.certified),
            "{id}"
        );
        assert!(counts.started <= counts.enrolled, "{id}: {counts:?}");
        for &completed in &counts.chapters_completed {
            assert!(
                counts.certified <= completed && completed <= counts.started,
                "{id}: {counts:?}"
            );
        }
        if counts.enrolled > 0 {
            assert!(counts.clicks > counts.enrolled, "{id}: {counts:?}");
            assert!(counts.unique_visitors > counts.enrolled, "{id}: {counts:?}");
        }
        if let Some(last) = timeline.keys().last() {
            assert!(last.to_string().as_str() <= "2021-02-04", "{id}: {last}");
        }
        enrolled += counts.enrolled;
        started += counts.started;
        certified += counts.certified;
    }
    assert_eq!(
        (enrolled, started, certified),
        (totals.enrolled, totals.started, totals.certified)
    );
    // About two clicks per enrolment, and drop-off along the chapters.
    let clicks_per_enrolment = totals.clicks as f64 / totals.enrolled as f64;
    assert!(
        (1.8..2.2).contains(&clicks_per_enrolment),
        "{clicks_per_enrolment}"
    );
    assert!(totals.chapters_completed[0] > totals.chapters_completed[11]);
}

#[test]
fn the_plan_holds_the_published_figures_at_scale_one() {
    let registry = registry();
    let plan = Plan::new(&registry, 1, 1.0);
    assert_eq!((plan.started, plan.certified), (110_000, 67_000));
    let gendarmerie = plan.campaign("gendarmerie").expect("gendarmerie");
    assert!(gendarmerie.published);
    assert_eq!(
        (
            gendarmerie.enrolled,
            gendarmerie.started,
            gendarmerie.certified
        ),
        (65_000, 63_050, 56_000)
    );
    assert_eq!(
        (
            gendarmerie.source.as_str(),
            gendarmerie.first_day,
            gendarmerie.last_day
        ),
        ("gendform3", date(2020, 10, 5), date(2021, 1, 25))
    );
    let started: u64 = plan.campaigns.iter().map(|c| c.started).sum();
    let certified: u64 = plan.campaigns.iter().map(|c| c.certified).sum();
    assert_eq!((started, certified), (110_000, 67_000));
    for campaign in &plan.campaigns {
        assert!(
            campaign.enrolled > 0,
            "every campaign has learners: {campaign:?}"
        );
        assert!(campaign.certified <= campaign.started, "{campaign:?}");
        assert!(campaign.started <= campaign.enrolled, "{campaign:?}");
    }
    let direct = plan.campaign("").expect("direct traffic");
    assert_eq!(direct.source, "openclassrooms");
    let tech_for_good = plan
        .campaign("tech-for-good-education")
        .expect("registered");
    assert!(
        tech_for_good.started > direct.started / 2,
        "{tech_for_good:?}"
    );
    assert_eq!(
        plan.expected_figures(),
        "totals started 110000, certified 67000; gendarmerie enrolled 65000, certified 56000"
    );
}

#[test]
fn the_events_at_scale_one_realise_the_plan() {
    let simulation = Simulation::new(&registry(), 1, 1.0, 12);
    let plan = simulation.plan();
    let mut reached = vec![[0u64; 3]; plan.campaigns.len()];
    for event in &simulation.events {
        let column = match event.step {
            Step::Enrolled => 0,
            Step::Started => 1,
            Step::Certified => 2,
            Step::Click | Step::Chapter(_) => continue,
        };
        reached[event.campaign as usize][column] += 1;
    }
    for (campaign, reached) in plan.campaigns.iter().zip(reached) {
        assert_eq!(
            reached,
            [campaign.enrolled, campaign.started, campaign.certified],
            "{campaign:?}"
        );
    }
}

#[test]
fn a_journey_is_in_causal_order_within_its_campaign_window() {
    fn rank(step: Step) -> u16 {
        match step {
            Step::Click => 0,
            Step::Enrolled => 1,
            Step::Started => 2,
            Step::Chapter(chapter) => 2 + u16::from(chapter),
            Step::Certified => 100,
        }
    }
    let simulation = Simulation::new(&registry(), 3, 0.05, 12);
    let at = |event: &SimulatedEvent| {
        DateTime::from_timestamp_millis(event.occurred_at_ms).expect("a valid instant")
    };
    for event in &simulation.events {
        let campaign = &simulation.plan.campaigns[event.campaign as usize];
        let day = at(event).date_naive();
        assert!(
            campaign.first_day <= day && day <= campaign.last_day,
            "{event:?} outside {campaign:?}"
        );
    }
    for pair in simulation.events.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        let new_journey = after.step == Step::Click
            && (before.step != Step::Click || before.visitor != after.visitor);
        if !new_journey {
            assert!(before.occurred_at_ms <= after.occurred_at_ms, "{pair:?}");
            assert!(
                rank(before.step) < rank(after.step) || after.step == Step::Click,
                "{pair:?}"
            );
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_events_and_another_seed_other_ids() {
    let registry = registry();
    let events = generate(&registry, 3, 0.02, 12);
    assert_eq!(events, generate(&registry, 3, 0.02, 12));
    let ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
    let other = generate(&registry, 4, 0.02, 12);
    assert!(other.iter().all(|e| !ids.contains(e.event_id.as_str())));
    let learners: HashSet<&str> = events.iter().map(|e| e.learner_id.as_str()).collect();
    assert!(
        other
            .iter()
            .all(|e| e.learner_id.is_empty() || !learners.contains(e.learner_id.as_str()))
    );
}

#[test]
fn shuffling_changes_the_order_not_the_events() {
    let registry = registry();
    let ordered = Simulation::new(&registry, 5, 0.01, 12);
    let mut shuffled = Simulation::new(&registry, 5, 0.01, 12);
    shuffled.shuffle();
    assert_ne!(ordered.events, shuffled.events);
    let mut again = Simulation::new(&registry, 5, 0.01, 12);
    again.shuffle();
    assert_eq!(shuffled.events, again.events);
    let sorted = |simulation: &Simulation| {
        let mut ids: Vec<String> = simulation.events().map(|e| e.event_id).collect();
        ids.sort();
        ids
    };
    assert_eq!(sorted(&ordered), sorted(&shuffled));
}

#[test]
fn apportion_is_exact_and_keeps_to_the_caps() {
    let unbounded = [u64::MAX; 3];
    assert_eq!(apportion(10, &[1, 1, 1], &unbounded), [4, 3, 3]);
    assert_eq!(apportion(10, &[1, 2, 7], &unbounded), [1, 2, 7]);
    assert_eq!(apportion(10, &[0, 0, 0], &unbounded), [4, 3, 3]);
    assert_eq!(
        apportion(10, &[10, 1, 1], &[2, u64::MAX, u64::MAX]),
        [2, 4, 4]
    );
    assert_eq!(apportion(6, &[5, 5, 1], &[1, 2, 9]), [1, 2, 3]);
    assert_eq!(apportion(0, &[1, 1], &[5, 5]), [0, 0]);
}

#[test]
fn event_ids_are_version_4_uuids() {
    let id = uuid([u64::MAX, 0]);
    assert_eq!(id, "ffffffff-ffff-4fff-8000-000000000000");
    assert_eq!(uuid([0, u64::MAX]), "00000000-0000-4000-bfff-ffffffffffff");
}
