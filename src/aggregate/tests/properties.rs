//! Property tests of invariant 1 of the product design: the counters are a function of the set
//! of distinct events, whatever their order, batching or repetition, checked against an oracle
//! computed from the definition; and what `drain_changes` publishes adds up to the state.

use super::*;

// Property tests: invariant 1 of the product design, over random sets of events drawn from a
// small pool, so that learners, days and campaigns collide often.

/// The campaigns of the generated events; `max_unregistered_campaigns` is exactly the number of
/// unregistered ones, so that the limit is reached and never exceeded.
pub(super) const CAMPAIGNS: [&str; 4] = ["gendarmerie", "la-poste", "pole-emploi", DIRECT_CAMPAIGN];
pub(super) const CHAPTER_COUNT: u8 = 4;
pub(super) const SOURCES: u32 = 2;
/// Learner ids per source: the same id on both sources makes 2 × 6 = 12 learners.
pub(super) const LEARNER_IDS: u32 = 6;
pub(super) const VISITORS: u32 = 5;
pub(super) const DAYS: i64 = 20;

pub(super) fn property_settings() -> AggregatorSettings {
    AggregatorSettings {
        time_zone: chrono_tz::Europe::Paris,
        chapter_count: CHAPTER_COUNT,
        max_unregistered_campaigns: CAMPAIGNS.len() - 1,
    }
}

/// Every campaign and the totals, each with its counts and timeline.
pub(super) type State = BTreeMap<String, (Counts, BTreeMap<Day, DayCounts>)>;

pub(super) fn state(aggregator: &Aggregator) -> State {
    shown_campaigns(aggregator)
        .chain([TOTALS_CAMPAIGN])
        .map(|campaign| {
            let (counts, timeline) = aggregator
                .campaign(campaign)
                .expect("every listed campaign is held");
            (campaign.to_owned(), (counts.clone(), timeline.clone()))
        })
        .collect()
}

pub(super) fn stage() -> impl Strategy<Value = Stage> {
    prop_oneof![
        Just(Stage::Enrolled),
        Just(Stage::Started),
        (1..=CHAPTER_COUNT).prop_map(Stage::ChapterCompleted),
        Just(Stage::Certified),
    ]
}

pub(super) fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        1 => (
            proptest::option::of(0..VISITORS),
            proptest::option::of((0..SOURCES, 0..LEARNER_IDS)),
        )
            .prop_map(|(visitor, learner)| Action::Click {
                visitor: visitor.map(|visitor| VisitorKey([visitor, 0, 0])),
                learner: learner.map(|(source, learner_id)| learner_key(source, learner_id)),
            }),
        3 => (0..SOURCES, 0..LEARNER_IDS, stage()).prop_map(|(source, learner_id, stage)| {
            Action::Progress {
                learner: learner_key(source, learner_id),
                stage,
            }
        }),
    ]
}

/// The pseudonym of learner `learner_id` of source `source`: its first word differs for every
/// learner, as a keyed hash's would, so that learners spread over shards.
pub(super) fn learner_key(source: u32, learner_id: u32) -> LearnerKey {
    LearnerKey([learner_id * SOURCES + source, source, learner_id])
}

/// Events dated to the minute over `DAYS` days, so that some fall on either side of midnight in
/// Paris.
pub(super) fn event_at(number: usize, campaign: usize, minute: i64, action: Action) -> Event {
    Event {
        id: event_id("openclassrooms", &format!("event-{number}")),
        id_prefix: id_prefix(&format!("event-{number}")),
        content: u32::try_from(number).expect("few events"),
        campaign: CAMPAIGNS[campaign].to_owned(),
        action,
        occurred_at: instant("2020-10-01T00:00:00Z") + TimeDelta::minutes(minute),
    }
}

/// A set of distinct events: each has its own id.
pub(super) fn event_set(sizes: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Event>> {
    vec((0..CAMPAIGNS.len(), 0..DAYS * 24 * 60, action()), sizes).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(number, (campaign, minute, action))| event_at(number, campaign, minute, action))
            .collect()
    })
}

/// A fresh aggregator that took `events` in order, each accepted.
pub(super) fn aggregate(events: &[Event]) -> Result<Aggregator, TestCaseError> {
    let mut aggregator = Aggregator::new(property_settings(), []);
    for event in events {
        prop_assert_eq!(
            aggregator.apply(event).expect("a campaign slot"),
            Applied::Accepted
        );
    }
    Ok(aggregator)
}

/// The counters and timelines of a set of distinct events, computed from the definition of the
/// product design (§3) and not event by event: a learner's stage is dated by the earliest of the
/// events that reach it, directly or by implication.
pub(super) fn oracle(events: &[Event]) -> State {
    let attributed = attributions(events);
    let mut scopes: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    for event in events {
        scopes
            .entry(counted_under(event, &attributed))
            .or_default()
            .push(event);
        scopes
            .entry(TOTALS_CAMPAIGN.to_owned())
            .or_default()
            .push(event);
    }
    // The totals exist even before any event.
    scopes.entry(TOTALS_CAMPAIGN.to_owned()).or_default();
    scopes
        .into_iter()
        .map(|(campaign, events)| (campaign, oracle_scope(&events)))
        .collect()
}

/// Each learner's campaign (product.md §3): that of its earliest event naming one (a progress
/// event or a tagged click), ties broken by the smaller event id.
pub(super) fn attributions(events: &[Event]) -> BTreeMap<LearnerKey, String> {
    let mut first: BTreeMap<LearnerKey, (DateTime<Utc>, [u32; 3], &str)> = BTreeMap::new();
    for event in events {
        let learner = match event.action {
            Action::Progress { learner, .. }
            | Action::Names { learner }
            | Action::Click {
                learner: Some(learner),
                ..
            } => learner,
            Action::Click { learner: None, .. } => continue,
        };
        if event.campaign != DIRECT_CAMPAIGN {
            // Ties by the smaller event_id: its first bytes, then its fingerprint's.
            let candidate = (
                event.occurred_at,
                event.tie_order(),
                event.campaign.as_str(),
            );
            first
                .entry(learner)
                .and_modify(|known| {
                    if (candidate.0, candidate.1) < (known.0, known.1) {
                        *known = candidate;
                    }
                })
                .or_insert(candidate);
        }
    }
    first
        .into_iter()
        .map(|(learner, (_, _, campaign))| (learner, campaign.to_owned()))
        .collect()
}

/// The campaign an event counts under: the one it names, or, naming none, its learner's.
pub(super) fn counted_under(event: &Event, attributed: &BTreeMap<LearnerKey, String>) -> String {
    match event.action {
        Action::Progress { learner, .. } if event.campaign == DIRECT_CAMPAIGN => attributed
            .get(&learner)
            .cloned()
            .unwrap_or_else(|| DIRECT_CAMPAIGN.to_owned()),
        _ => event.campaign.clone(),
    }
}

pub(super) fn oracle_scope(events: &[&Event]) -> (Counts, BTreeMap<Day, DayCounts>) {
    let day_of = |event: &Event| Day::of(event.occurred_at, property_settings().time_zone);
    let mut counts = Counts {
        chapters_completed: vec![0; usize::from(CHAPTER_COUNT)],
        ..Counts::default()
    };
    let mut timeline: BTreeMap<Day, DayCounts> = BTreeMap::new();
    let mut visitors = BTreeSet::new();
    let mut reached_by_learner: BTreeMap<LearnerKey, Vec<(Stage, Day)>> = BTreeMap::new();
    for event in events {
        match event.action {
            Action::Click { visitor, .. } => {
                counts.clicks += 1;
                timeline.entry(day_of(event)).or_default().clicks += 1;
                visitors.extend(visitor);
            }
            Action::Progress { learner, stage } => reached_by_learner
                .entry(learner)
                .or_default()
                .push((stage, day_of(event))),
            Action::Names { .. } => {}
        }
    }
    counts.unique_visitors = visitors.len() as u64;
    for reached in reached_by_learner.values() {
        let first_day = |implies: &dyn Fn(Stage) -> bool| {
            reached
                .iter()
                .filter(|(stage, _)| implies(*stage))
                .map(|(_, day)| *day)
                .min()
        };
        if let Some(day) = first_day(&|_| true) {
            counts.enrolled += 1;
            timeline.entry(day).or_default().enrolled += 1;
        }
        if let Some(day) = first_day(&|stage| stage != Stage::Enrolled) {
            counts.started += 1;
            timeline.entry(day).or_default().started += 1;
        }
        if let Some(day) = first_day(&|stage| stage == Stage::Certified) {
            counts.certified += 1;
            timeline.entry(day).or_default().certified += 1;
        }
        for (index, completed) in counts.chapters_completed.iter_mut().enumerate() {
            let chapter = Stage::ChapterCompleted(u8::try_from(index + 1).expect("few chapters"));
            if first_day(&|stage| stage == chapter || stage == Stage::Certified).is_some() {
                *completed += 1;
            }
        }
    }
    (counts, timeline)
}

/// Checks the funnel of every campaign and of the totals: each stage holds at most the learners
/// of the one before, the timeline adds up to the counters, and the totals lie between the
/// largest campaign and the sum of all.
pub(super) fn check_funnels(aggregator: &Aggregator) -> Result<(), TestCaseError> {
    let state = state(aggregator);
    for (campaign, (counts, timeline)) in &state {
        prop_assert_eq!(counts.chapters_completed.len(), usize::from(CHAPTER_COUNT));
        prop_assert!(counts.started <= counts.enrolled, "{campaign}: {counts:?}");
        for completed in &counts.chapters_completed {
            prop_assert!(
                counts.certified <= *completed && *completed <= counts.started,
                "{campaign}: {counts:?}"
            );
        }
        prop_assert!(
            counts.unique_visitors <= counts.clicks,
            "{campaign}: {counts:?}"
        );
        let column_sum = |column: fn(&DayCounts) -> u64| timeline.values().map(column).sum::<u64>();
        prop_assert_eq!(column_sum(|day| day.clicks), counts.clicks, "{}", campaign);
        prop_assert_eq!(
            column_sum(|day| day.enrolled),
            counts.enrolled,
            "{}",
            campaign
        );
        prop_assert_eq!(
            column_sum(|day| day.started),
            counts.started,
            "{}",
            campaign
        );
        prop_assert_eq!(
            column_sum(|day| day.certified),
            counts.certified,
            "{}",
            campaign
        );
        prop_assert!(
            timeline.values().all(|day| *day != DayCounts::default()),
            "{campaign} keeps an empty day: {timeline:?}"
        );
    }
    let (totals, _) = &state[TOTALS_CAMPAIGN];
    let campaigns: Vec<&Counts> = state
        .iter()
        .filter(|(campaign, _)| *campaign != TOTALS_CAMPAIGN)
        .map(|(_, (counts, _))| counts)
        .collect();
    prop_assert_eq!(
        totals.clicks,
        campaigns.iter().map(|counts| counts.clicks).sum::<u64>()
    );
    let learner_columns: [fn(&Counts) -> u64; 3] = [
        |counts| counts.enrolled,
        |counts| counts.started,
        |counts| counts.certified,
    ];
    for column in learner_columns {
        let largest = campaigns
            .iter()
            .map(|counts| column(counts))
            .max()
            .unwrap_or(0);
        let sum: u64 = campaigns.iter().map(|counts| column(counts)).sum();
        prop_assert!(
            largest <= column(totals) && column(totals) <= sum,
            "totals {totals:?} against campaigns {campaigns:?}"
        );
    }
    Ok(())
}

/// Applies drained changes to `published` the way a reader does, after checking that each
/// campaign comes once and the totals last.
pub(super) fn publish(
    published: &mut State,
    changes: Vec<CampaignChange>,
) -> Result<(), TestCaseError> {
    let campaigns: Vec<&str> = changes
        .iter()
        .map(|change| change.campaign.as_str())
        .collect();
    let distinct: BTreeSet<&str> = campaigns.iter().copied().collect();
    prop_assert_eq!(distinct.len(), campaigns.len(), "{:?}", campaigns);
    if let Some(position) = campaigns
        .iter()
        .position(|campaign| *campaign == TOTALS_CAMPAIGN)
    {
        prop_assert_eq!(position, campaigns.len() - 1, "{:?}", campaigns);
    }
    for change in changes {
        let (counts, timeline) = published.entry(change.campaign).or_default();
        *counts = change.counts;
        for (day, day_counts) in change.days {
            if day_counts == DayCounts::default() {
                timeline.remove(&day);
            } else {
                timeline.insert(day, day_counts);
            }
        }
    }
    Ok(())
}

/// How a learner of [`attribution_scenario`] names its campaign.
#[derive(Debug, Clone, Copy)]
enum Naming {
    /// Its enrolment names a campaign; every later event names none.
    ByEnrolmentOnly,
    /// Its events name none, but a later one (a certification) does.
    ByLaterEventOnly,
    /// Two partners' links, the later one first in the stream.
    TwoLinksInReverseOrder,
    /// Nothing ever names a campaign: `direct`.
    ByNone,
}

/// Learners each following one [`Naming`], with progress events naming no campaign around
/// their named ones, in an order that puts the later named events first: the cases where
/// attribution must move progress between campaigns.
pub(super) fn attribution_scenario() -> impl Strategy<Value = Vec<Event>> {
    let naming = prop_oneof![
        Just(Naming::ByEnrolmentOnly),
        Just(Naming::ByLaterEventOnly),
        Just(Naming::TwoLinksInReverseOrder),
        Just(Naming::ByNone),
    ];
    let learner = (
        naming,
        0..CAMPAIGNS.len() - 1,
        0..CAMPAIGNS.len() - 1,
        vec((stage(), 0..DAYS * 24 * 60), 1..5),
    );
    vec(learner, 1..8).prop_map(|learners| {
        let mut events = Vec::new();
        for (number, (naming, first, second, loose)) in learners.into_iter().enumerate() {
            let learner = LearnerKey([0, u32::try_from(number).expect("few learners"), 0]);
            let progress = |stage| Action::Progress { learner, stage };
            let mut push = |campaign: usize, minute: i64, stage: Stage| {
                let number = events.len();
                events.push(event_at(number, campaign, minute, progress(stage)));
            };
            // CAMPAIGNS ends with DIRECT_CAMPAIGN.
            let direct = CAMPAIGNS.len() - 1;
            match naming {
                Naming::ByEnrolmentOnly => push(first, 0, Stage::Enrolled),
                Naming::ByLaterEventOnly => push(first, DAYS * 24 * 60 - 1, Stage::Certified),
                Naming::TwoLinksInReverseOrder => {
                    push(second, 600, Stage::Enrolled);
                    push(first, 60, Stage::Enrolled);
                }
                Naming::ByNone => {}
            }
            for (stage, minute) in loose {
                push(direct, minute, stage);
            }
        }
        events
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn attribution_follows_the_definition_whatever_the_order(
        (events, shuffled) in attribution_scenario()
            .prop_flat_map(|events| (Just(events.clone()), Just(events).prop_shuffle()))
    ) {
        let expected = oracle(&events);
        prop_assert_eq!(state(&aggregate(&events)?), expected.clone());
        prop_assert_eq!(state(&aggregate(&shuffled)?), expected);
        // And through a checkpoint taken halfway.
        let (first, rest) = shuffled.split_at(shuffled.len() / 2);
        let checkpoint = aggregate(first)?.checkpoint(0, Vec::new()).expect("the runs read");
        let mut restored = Aggregator::restore(property_settings(), [], &checkpoint, &[], Default::default())
            .map_err(|error| TestCaseError::fail(format!("{error:#}")))?;
        for event in rest {
            prop_assert_eq!(restored.apply(event).expect("a campaign slot"), Applied::Accepted);
        }
        prop_assert_eq!(state(&restored), oracle(&events));
        check_funnels(&restored)?;
    }

    #[test]
    fn counters_are_the_definition_applied_to_the_set_of_events(events in event_set(0..60)) {
        let aggregator = aggregate(&events)?;
        prop_assert_eq!(state(&aggregator), oracle(&events));
    }

    #[test]
    fn the_order_of_events_does_not_matter(
        (events, shuffled) in event_set(0..60)
            .prop_flat_map(|events| (Just(events.clone()), Just(events).prop_shuffle()))
    ) {
        prop_assert_eq!(state(&aggregate(&shuffled)?), state(&aggregate(&events)?));
    }

    #[test]
    fn resent_and_reused_event_ids_change_nothing(
        events in event_set(1..60),
        resends in vec((any::<Index>(), any::<Index>()), 0..30),
        reuses in vec((any::<Index>(), any::<Index>(), 0..CAMPAIGNS.len(), action()), 0..10),
    ) {
        // A resend is an exact copy anywhere in the stream, even before the original: then the
        // copy counts and the original is the duplicate, to the same effect.
        // Each event of the stream is paired with whether it reuses an id with other content.
        let mut stream: Vec<(Event, bool)> = events
            .iter()
            .map(|event| (event.clone(), false))
            .collect();
        for (which, position) in resends {
            let copy = events[which.index(events.len())].clone();
            stream.insert(position.index(stream.len() + 1), (copy, false));
        }
        // A reuse carries the id of an event already taken, with other content: it must come
        // after the first arrival of that id to be the one left out.
        for (which, position, campaign, action) in reuses {
            let original = &events[which.index(events.len())];
            let first_arrival = stream
                .iter()
                .position(|(event, _)| event.id == original.id)
                .expect("every event is in the stream");
            // Other content in every bit: only the high 16 bits are remembered (see `seen`).
            let reuse = Event {
                content: !original.content,
                campaign: CAMPAIGNS[campaign].to_owned(),
                action,
                occurred_at: original.occurred_at - TimeDelta::days(1),
                ..original.clone()
            };
            let after_first_arrival = first_arrival + 1 + position.index(stream.len() - first_arrival);
            stream.insert(after_first_arrival, (reuse, true));
        }
        let mut aggregator = Aggregator::new(property_settings(), []);
        let mut seen = BTreeSet::new();
        for (event, is_reuse) in &stream {
            // The first arrival of an id is the one that counts, whichever copy it is.
            let expected = if seen.insert(event.id) {
                Applied::Accepted
            } else {
                Applied::Duplicate { conflict: *is_reuse }
            };
            prop_assert_eq!(aggregator.apply(event).expect("a campaign slot"), expected, "{:?}", event);
        }
        prop_assert_eq!(state(&aggregator), state(&aggregate(&events)?));
    }

    #[test]
    fn batching_and_publishing_drained_changes_change_nothing(
        events in event_set(0..60),
        batch_sizes in vec(1..10usize, 1..20),
    ) {
        let mut aggregator = Aggregator::new(property_settings(), []);
        // A reader starts from the empty counters, as it does for the totals and the registry.
        let mut published = state(&aggregator);
        let mut remaining = events.as_slice();
        let mut batch_sizes = batch_sizes.into_iter().cycle();
        while !remaining.is_empty() {
            let batch_size = batch_sizes.next().expect("a non-empty list cycles forever");
            let (batch, rest) = remaining.split_at(batch_size.min(remaining.len()));
            for event in batch {
                prop_assert_eq!(aggregator.apply(event).expect("a campaign slot"), Applied::Accepted);
            }
            publish(&mut published, aggregator.drain_changes())?;
            prop_assert_eq!(aggregator.drain_changes(), Vec::new());
            remaining = rest;
        }
        let final_state = state(&aggregator);
        prop_assert_eq!(&final_state, &state(&aggregate(&events)?));
        // A reserved campaign emptied by attribution was published at zero; `state` leaves it
        // out, as it does every empty reserved campaign.
        published.retain(|campaign, (counts, timeline)| {
            ![DIRECT_CAMPAIGN, UNREGISTERED_CAMPAIGN].contains(&campaign.as_str())
                || !timeline.is_empty()
                || counts.clicks != 0
                || counts.enrolled != 0
        });
        prop_assert_eq!(published, final_state);
    }

    #[test]
    fn every_funnel_holds_after_every_event(events in event_set(0..60)) {
        let mut aggregator = Aggregator::new(property_settings(), []);
        check_funnels(&aggregator)?;
        for event in &events {
            prop_assert_eq!(aggregator.apply(event).expect("a campaign slot"), Applied::Accepted);
            check_funnels(&aggregator)?;
        }
    }
}
