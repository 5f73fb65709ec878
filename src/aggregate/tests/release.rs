//! Releasing campaigns (a Kafka rebalance) and the campaign slots: examples, then properties over
//! the random events of the property tests: a release is as if the campaigns' events had never
//! been applied, and a checkpoint with vacant slots restores the same aggregator.

use super::properties::*;
use super::*;
use crate::aggregate::remembered::SEEN_CONTENT_MASK;

// Releasing campaigns (a Kafka rebalance): examples, then properties over the same random events.

/// Applies the events of `notation` whose ids are in `ids` (all when empty), each accepted.
#[track_caller]
fn apply_accepted(aggregator: &mut Aggregator, parser: &EventParser, notation: &str, ids: &[&str]) {
    for (id, event) in parse_events(parser, notation) {
        if ids.is_empty() || ids.contains(&id.as_str()) {
            assert_eq!(
                aggregator.apply(&event).expect("a campaign slot"),
                Applied::Accepted,
                "{id}"
            );
        }
    }
}

#[test]
fn a_released_campaign_is_forgotten_and_the_totals_are_those_of_the_others() {
    // Alice is dated in the totals by her gendarmerie enrolment on the 5th: once gendarmerie is
    // released she enrolls on the 7th, with la-poste's certification. The visitor stays, from
    // la-poste's click; gendarmerie's click goes.
    let events = "
        e1 enrolled  gendarmerie gf/alice  2020-10-05
        e2 certified la-poste    gf/alice  2020-10-07
        e3 enrolled  la-poste    gf/bob    2020-10-06
        e4 click     la-poste    browser-1 2020-10-06
        e5 click     gendarmerie browser-1 2020-10-07
    ";
    let everything = "
        gendarmerie: clicks 1, visitors 1, enrolled 1, started 0, chapters [0, 0, 0], certified 0
          2020-10-05: enrolled 1
          2020-10-07: clicks 1
        la-poste: clicks 1, visitors 1, enrolled 2, started 1, chapters [1, 1, 1], certified 1
          2020-10-06: clicks 1, enrolled 1
          2020-10-07: enrolled 1, started 1, certified 1
        *: clicks 2, visitors 1, enrolled 2, started 1, chapters [1, 1, 1], certified 1
          2020-10-05: enrolled 1
          2020-10-06: clicks 1, enrolled 1
          2020-10-07: clicks 1, started 1, certified 1
    ";
    let mut aggregator = check_with(settings(), &[], events, everything);
    aggregator.drain_changes();

    // Unknown and repeated campaigns are ignored.
    let released = aggregator.release(&owned(&["gendarmerie", "unknown", "gendarmerie"]));
    assert_eq!(released, owned(&["gendarmerie"]));
    assert_eq!(aggregator.campaign("gendarmerie"), None);
    assert_text(
        &render_state(&aggregator),
        "
        la-poste: clicks 1, visitors 1, enrolled 2, started 1, chapters [1, 1, 1], certified 1
          2020-10-06: clicks 1, enrolled 1
          2020-10-07: enrolled 1, started 1, certified 1
        *: clicks 1, visitors 1, enrolled 2, started 1, chapters [1, 1, 1], certified 1
          2020-10-06: clicks 1, enrolled 1
          2020-10-07: enrolled 1, started 1, certified 1
        ",
    );
    // The totals come with every day whose value changed, and only those: the 5th emptied, the
    // 7th lost a click and gained an enrolment, the 6th is as it was.
    assert_text(
        &render_changes(&aggregator.drain_changes()),
        "
        *: clicks 1, visitors 1, enrolled 2, started 1, chapters [1, 1, 1], certified 1
          2020-10-05: nothing
          2020-10-07: enrolled 1, started 1, certified 1
        ",
    );
    assert_eq!(
        aggregator.holdings(),
        Holdings {
            campaigns: 3,
            unregistered_campaigns: 1,
            learners: 2,
            campaign_learners: 2,
            event_ids: 3,
        }
    );
    // Its events count again, and bring it back as it was (in its old slot).
    let parser = EventParser::new(3, [0x11; 32]);
    apply_accepted(&mut aggregator, &parser, events, &["e1", "e5"]);
    assert_text(&render_state(&aggregator), everything);
    // Releasing nothing held changes nothing and publishes nothing.
    aggregator.drain_changes();
    assert_eq!(
        aggregator.release(&owned(&["unknown"])),
        Vec::<String>::new()
    );
    assert_eq!(aggregator.release(&[]), Vec::<String>::new());
    assert_eq!(aggregator.drain_changes(), Vec::new());
}

#[test]
fn a_released_campaigns_pending_changes_are_dropped() {
    let parser = EventParser::new(3, [0x11; 32]);
    let mut aggregator = Aggregator::new(settings(), []);
    apply_accepted(
        &mut aggregator,
        &parser,
        "
        e1 enrolled gendarmerie gf/alice 2020-10-05
        e2 enrolled la-poste    gf/bob   2020-10-06
        ",
        &[],
    );
    aggregator.release(&owned(&["gendarmerie"]));
    // Never published, gendarmerie is not given at all; the totals only hold Bob.
    assert_text(
        &render_changes(&aggregator.drain_changes()),
        "
        la-poste: clicks 0, visitors 0, enrolled 1, started 0, chapters [0, 0, 0], certified 0
          2020-10-06: enrolled 1
        *: clicks 0, visitors 0, enrolled 1, started 0, chapters [0, 0, 0], certified 0
          2020-10-05: nothing
          2020-10-06: enrolled 1
        ",
    );
}

#[test]
fn a_release_makes_room_for_another_campaign_in_the_lowest_vacant_slot() {
    let full = AggregatorSettings {
        max_unregistered_campaigns: 3,
        ..settings()
    };
    let parser = EventParser::new(3, [0x11; 32]);
    let events = parse_events(
        &parser,
        "
        e1 enrolled gendarmerie gf/alice 2020-10-05
        e2 enrolled la-poste    gf/bob   2020-10-05
        e3 enrolled pole-emploi gf/carol 2020-10-05
        e4 enrolled apec        gf/dave  2020-10-05
        e5 enrolled cnam        gf/erin  2020-10-05
        ",
    );
    let event = |id: &str| {
        events
            .iter()
            .find(|(event_id, _)| event_id == id)
            .expect("the event is in the list")
            .1
            .clone()
    };
    // Slots 0 and 1 are direct's and unregistered's.
    let mut aggregator = Aggregator::new(full, []);
    for id in ["e1", "e2", "e3"] {
        assert_eq!(
            aggregator.apply(&event(id)).expect("a campaign slot"),
            Applied::Accepted
        );
    }
    let mut e4 = event("e4");
    assert_eq!(
        aggregator
            .admit(&mut e4, &mut Admission::default())
            .expect("the runs read"),
        Applied::Accepted
    );
    assert_eq!(e4.campaign, UNREGISTERED_CAMPAIGN, "no room for apec");

    // Released slots 4 then 2: room for two, which take slot 2 then slot 4.
    aggregator.release(&owned(&["pole-emploi", "gendarmerie"]));
    assert_eq!(aggregator.holdings().unregistered_campaigns, 1);
    let mut group = Admission::default();
    let mut admitted = Vec::new();
    for id in ["e4", "e5", "e1"] {
        let mut event = event(id);
        assert_eq!(
            aggregator
                .admit(&mut event, &mut group)
                .expect("the runs read"),
            Applied::Accepted
        );
        admitted.push(event);
    }
    assert_eq!(
        admitted
            .iter()
            .map(|event| event.campaign.as_str())
            .collect::<Vec<_>>(),
        ["apec", "cnam", UNREGISTERED_CAMPAIGN]
    );
    for event in &admitted {
        assert_eq!(
            aggregator.apply(event).expect("a campaign slot"),
            Applied::Accepted
        );
    }
    assert_eq!(
        aggregator.campaign_ids().collect::<Vec<_>>(),
        [
            DIRECT_CAMPAIGN,
            UNREGISTERED_CAMPAIGN,
            "apec",
            "la-poste",
            "cnam"
        ]
    );
    assert_eq!(aggregator.holdings().unregistered_campaigns, 3);
}

#[test]
fn registered_and_reserved_campaigns_are_held_again_at_once_after_a_release() {
    let parser = EventParser::new(3, [0x11; 32]);
    let mut aggregator = Aggregator::new(settings(), owned(&["gendarmerie"]));
    apply_accepted(
        &mut aggregator,
        &parser,
        "
        e1 enrolled gendarmerie gf/alice 2020-10-05
        e2 enrolled -           gf/bob   2020-10-05
        ",
        &[],
    );
    aggregator.release(&owned(&["gendarmerie", DIRECT_CAMPAIGN]));
    assert_eq!(
        aggregator.campaign_ids().collect::<Vec<_>>(),
        [DIRECT_CAMPAIGN, UNREGISTERED_CAMPAIGN, "gendarmerie"]
    );
    assert_text(
        &render_state(&aggregator),
        "
        gendarmerie: clicks 0, visitors 0, enrolled 0, started 0, chapters [0, 0, 0], certified 0
        *: clicks 0, visitors 0, enrolled 0, started 0, chapters [0, 0, 0], certified 0
        ",
    );
}

#[test]
fn a_reused_id_is_a_conflict_when_the_high_16_bits_of_its_content_differ() {
    // Only 16 bits of content are remembered with an id, beside its campaign's slot: a conflict
    // in the low 16 bits passes for a resend, in the metrics only.
    let first = Event {
        content: 0x1234_5678,
        ..event_at(
            0,
            0,
            0,
            Action::Click {
                visitor: None,
                learner: None,
            },
        )
    };
    let mut aggregator = Aggregator::new(property_settings(), []);
    assert_eq!(
        aggregator.apply(&first).expect("a campaign slot"),
        Applied::Accepted
    );
    let unseen = Event {
        id: event_id("openclassrooms", "unseen"),
        ..first.clone()
    };
    for (content, conflict) in [
        (0x1234_5678, false),
        (0x1234_0000, false),
        (0x1234_FFFF, false),
        (0x1235_5678, true),
        (0x9234_5678, true),
    ] {
        let reuse = Event {
            content,
            ..first.clone()
        };
        let duplicate = Applied::Duplicate { conflict };
        assert_eq!(
            aggregator.apply(&reuse).expect("a campaign slot"),
            duplicate,
            "{content:#x}"
        );
        assert_eq!(
            aggregator
                .admit(&mut reuse.clone(), &mut Admission::default())
                .expect("the runs read"),
            duplicate,
            "{content:#x}"
        );
        // Within one group, before it is applied, the same.
        let mut group = Admission::default();
        assert_eq!(
            aggregator
                .admit(&mut unseen.clone(), &mut group)
                .expect("the runs read"),
            Applied::Accepted
        );
        let mut reuse_in_group = Event {
            content,
            ..unseen.clone()
        };
        assert_eq!(
            aggregator
                .admit(&mut reuse_in_group, &mut group)
                .expect("the runs read"),
            duplicate,
            "{content:#x}"
        );
    }
}

#[test]
fn at_most_65536_campaigns_are_held_whatever_max_unregistered_campaigns_says() {
    let over = AggregatorSettings {
        max_unregistered_campaigns: CAMPAIGN_SLOTS + 10,
        ..settings()
    };
    let click = |number: usize, campaign: usize| Event {
        id: event_id("openclassrooms", &format!("event-{number}")),
        id_prefix: id_prefix(&format!("event-{number}")),
        content: 0,
        campaign: format!("campaign-{campaign}"),
        action: Action::Click {
            visitor: None,
            learner: None,
        },
        occurred_at: instant("2020-10-05T12:00:00Z"),
    };
    let mut aggregator = Aggregator::new(over.clone(), []);
    // Two slots are direct's and unregistered's.
    for campaign in 0..CAMPAIGN_SLOTS - 2 {
        assert_eq!(
            aggregator
                .apply(&click(campaign, campaign))
                .expect("a campaign slot"),
            Applied::Accepted
        );
    }
    // Admission counts the event under unregistered; a replay that has no slot for it says so.
    let mut one_more = click(CAMPAIGN_SLOTS, CAMPAIGN_SLOTS);
    match aggregator.apply(&one_more) {
        Err(ApplyError::NoCampaignSlot(NoCampaignSlot { campaign })) => {
            assert_eq!(campaign, format!("campaign-{CAMPAIGN_SLOTS}"));
        }
        other => panic!("no slot for it, not {other:?}"),
    }
    assert_eq!(
        aggregator
            .admit(&mut one_more, &mut Admission::default())
            .expect("the runs read"),
        Applied::Accepted
    );
    assert_eq!(one_more.campaign, UNREGISTERED_CAMPAIGN);
    assert_eq!(
        aggregator.apply(&one_more).expect("a campaign slot"),
        Applied::Accepted
    );
    assert_eq!(aggregator.holdings().campaigns, CAMPAIGN_SLOTS);
    assert_eq!(aggregator.holdings().event_ids, CAMPAIGN_SLOTS - 1);

    // The last slot's ids are its own: releasing another keeps them, releasing it forgets them.
    let last = CAMPAIGN_SLOTS - 3;
    aggregator.release(&[format!("campaign-{last}")]);
    assert_eq!(
        aggregator
            .apply(&click(last, last))
            .expect("a campaign slot"),
        Applied::Accepted
    );
    aggregator.release(&owned(&["campaign-0"]));
    assert_eq!(
        aggregator
            .apply(&click(last, last))
            .expect("a campaign slot"),
        Applied::Duplicate { conflict: false }
    );
    assert_eq!(
        aggregator.apply(&click(1, 1)).expect("a campaign slot"),
        Applied::Duplicate { conflict: false }
    );
    // campaign-0's slot (2) is free again: a campaign too many now fits, in it.
    let another = click(CAMPAIGN_SLOTS + 1, CAMPAIGN_SLOTS + 1);
    assert_eq!(
        aggregator.apply(&another).expect("a campaign slot"),
        Applied::Accepted
    );
    assert_eq!(
        aggregator.campaign_ids().nth(2),
        Some(format!("campaign-{}", CAMPAIGN_SLOTS + 1).as_str())
    );

    // Registered campaigns past the last slot are not held; admission counts their events
    // under unregistered.
    let registered = (0..=CAMPAIGN_SLOTS).map(|campaign| format!("campaign-{campaign}"));
    let aggregator = Aggregator::new(over.clone(), registered);
    assert_eq!(aggregator.holdings().campaigns, CAMPAIGN_SLOTS);
    assert_eq!(
        aggregator.campaign(&format!("campaign-{}", CAMPAIGN_SLOTS - 2)),
        None
    );
    let mut past_the_slots = click(CAMPAIGN_SLOTS, CAMPAIGN_SLOTS - 2);
    assert_eq!(
        aggregator
            .admit(&mut past_the_slots, &mut Admission::default())
            .expect("the runs read"),
        Applied::Accepted
    );
    assert_eq!(past_the_slots.campaign, UNREGISTERED_CAMPAIGN);

    // A checkpoint holds at most 65,536 slots.
    let mut checkpoint = Aggregator::new(over.clone(), [])
        .checkpoint(0, Vec::new())
        .expect("the runs read");
    checkpoint.campaigns = vec![StoredCampaign::default(); CAMPAIGN_SLOTS];
    let restored = Aggregator::restore(over.clone(), [], &checkpoint, &[], Default::default())
        .expect("every slot fits");
    // Only direct and unregistered, in vacant slots.
    assert_eq!(restored.holdings().campaigns, 2);
    checkpoint.campaigns.push(StoredCampaign::default());
    assert!(Aggregator::restore(over, [], &checkpoint, &[], Default::default()).is_err());
}

#[test]
fn a_restore_keeps_vacant_slots_and_publishes_only_campaigns_that_hold_something() {
    let parser = EventParser::new(3, [0x11; 32]);
    let mut aggregator = Aggregator::new(settings(), owned(&["registered"]));
    // La-poste only has a click without a visitor: it still holds something.
    apply_accepted(
        &mut aggregator,
        &parser,
        "
        e1 enrolled gendarmerie gf/alice 2020-10-05
        e2 click    la-poste    -        2020-10-05
        e3 enrolled pole-emploi gf/bob   2020-10-06
        e4 enrolled apec        gf/carol 2020-10-06
        ",
        &[],
    );
    aggregator.release(&owned(&["pole-emploi"]));
    let checkpoint = aggregator.checkpoint(7, Vec::new()).expect("the runs read");
    let stored: Vec<&str> = checkpoint
        .campaigns
        .iter()
        .map(|campaign| campaign.campaign.as_str())
        .collect();
    assert_eq!(
        stored,
        [
            DIRECT_CAMPAIGN,
            UNREGISTERED_CAMPAIGN,
            "registered",
            "gendarmerie",
            "la-poste",
            "",
            "apec"
        ]
    );

    let mut restored = Aggregator::restore(
        settings(),
        owned(&["registered", "late-registered"]),
        &checkpoint,
        &[],
        Default::default(),
    )
    .expect("the checkpoint restores");
    // The vacant slot is where it was, and the first campaign opened takes it.
    assert_eq!(
        restored.campaign_ids().collect::<Vec<_>>(),
        [
            DIRECT_CAMPAIGN,
            UNREGISTERED_CAMPAIGN,
            "registered",
            "gendarmerie",
            "la-poste",
            "late-registered",
            "apec"
        ]
    );
    let published: Vec<String> = restored
        .drain_changes()
        .into_iter()
        .map(|change| change.campaign)
        .collect();
    assert_eq!(
        published,
        ["gendarmerie", "la-poste", "apec", TOTALS_CAMPAIGN]
    );

    // A vacant slot that holds something, or a campaign in two slots, is refused.
    let mut corrupt = checkpoint.clone();
    corrupt.campaigns[5].clicks = 1;
    assert!(Aggregator::restore(settings(), [], &corrupt, &[], Default::default()).is_err());
    let mut corrupt = checkpoint;
    corrupt.campaigns[6].campaign = "gendarmerie".to_owned();
    assert!(Aggregator::restore(settings(), [], &corrupt, &[], Default::default()).is_err());
}

/// A list of campaigns to release: the generated ones, sometimes repeated, and one never held.
fn release_list() -> impl Strategy<Value = Vec<String>> {
    vec(
        prop_oneof![
            4 => proptest::sample::select(CAMPAIGNS.to_vec()).prop_map(str::to_owned),
            1 => Just("unknown".to_owned()),
        ],
        0..6,
    )
}

/// What [`Aggregator::release`] gives for `list` after `events`: the campaigns of `list` that
/// some event opened, each once, in order.
fn expected_release(list: &[String], events: &[Event]) -> Vec<String> {
    let mut released: Vec<String> = Vec::new();
    for campaign in list {
        // The reserved campaigns are always held, fed or not.
        let held = events.iter().any(|event| event.campaign == *campaign)
            || [DIRECT_CAMPAIGN, UNREGISTERED_CAMPAIGN].contains(&campaign.as_str());
        if held && !released.contains(campaign) {
            released.push(campaign.clone());
        }
    }
    released
}

/// The remembered ids: id fingerprint, remembered content bits and, `with_slots`, the slot.
fn remembered(aggregator: &Aggregator, with_slots: bool) -> BTreeSet<[u32; 4]> {
    let mask = if with_slots {
        u32::MAX
    } else {
        SEEN_CONTENT_MASK
    };
    aggregator
        .seen
        .iter()
        .map(|(EventId([a, b, c]), last)| [*a, *b, *c, last & mask])
        .collect()
}

/// Everything an aggregator holds: the campaigns in slot order, every counter and timeline, the
/// holdings, and the remembered ids with their slots.
pub(super) type WholeState = (Vec<String>, State, Holdings, BTreeSet<[u32; 4]>);

pub(super) fn whole_state(aggregator: &Aggregator) -> WholeState {
    (
        aggregator.campaign_ids().map(str::to_owned).collect(),
        state(aggregator),
        aggregator.holdings(),
        remembered(aggregator, true),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn releasing_campaigns_is_as_if_their_events_had_never_been_applied(
        events in event_set(0..60),
        list in release_list(),
    ) {
        let mut aggregator = aggregate(&events)?;
        let released = aggregator.release(&list);
        prop_assert_eq!(&released, &expected_release(&list, &events));
        let kept: Vec<Event> = events
            .iter()
            .filter(|event| !released.contains(&event.campaign))
            .cloned()
            .collect();
        let fresh = aggregate(&kept)?;
        prop_assert_eq!(state(&aggregator), state(&fresh));
        prop_assert_eq!(state(&aggregator), oracle(&kept));
        prop_assert_eq!(
            aggregator.campaign_ids().collect::<Vec<_>>(),
            fresh.campaign_ids().collect::<Vec<_>>()
        );
        prop_assert_eq!(aggregator.holdings(), fresh.holdings());
        prop_assert_eq!(remembered(&aggregator, false), remembered(&fresh, false));
        check_funnels(&aggregator)?;
    }

    #[test]
    fn released_events_count_again_as_if_applied_once(
        events in event_set(0..60),
        list in release_list(),
    ) {
        let mut aggregator = aggregate(&events)?;
        let released = aggregator.release(&list);
        let again: Vec<&Event> = events
            .iter()
            .filter(|event| released.contains(&event.campaign))
            .collect();
        // Admitted as one group, then applied: max_unregistered_campaigns is full before the
        // release, so this needs the released campaigns' room as well as their ids.
        let mut group = Admission::default();
        for event in &again {
            let mut admitted = (*event).clone();
            prop_assert_eq!(aggregator.admit(&mut admitted, &mut group).expect("the runs read"), Applied::Accepted);
            prop_assert_eq!(&admitted.campaign, &event.campaign);
        }
        for event in &again {
            prop_assert_eq!(aggregator.apply(event).expect("a campaign slot"), Applied::Accepted);
        }
        // The same slots too: released campaigns come back in the order they were opened, each
        // into the lowest slot left vacant.
        prop_assert_eq!(whole_state(&aggregator), whole_state(&aggregate(&events)?));
    }

    #[test]
    fn a_checkpoint_with_vacant_slots_restores_the_same_aggregator(
        events in event_set(0..60),
        list in release_list(),
        extra in event_set(0..30),
    ) {
        let mut aggregator = aggregate(&events)?;
        aggregator.release(&list);
        let checkpoint = aggregator.checkpoint(0, Vec::new()).expect("the runs read");
        let mut restored = Aggregator::restore(property_settings(), [], &checkpoint, &[], Default::default())
            .map_err(|error| TestCaseError::fail(format!("{error:#}")))?;
        prop_assert_eq!(whole_state(&restored), whole_state(&aggregator));
        // Later events, every first event again (released ones count again, the others are
        // duplicates) then `extra`, whose ids are those of the first events with other content
        // and campaigns, or new: both take them alike.
        for event in events.iter().chain(&extra) {
            prop_assert_eq!(restored.apply(event).expect("a campaign slot"), aggregator.apply(event).expect("a campaign slot"), "{:?}", event);
        }
        prop_assert_eq!(whole_state(&restored), whole_state(&aggregator));
    }

    #[test]
    fn drained_changes_after_a_release_give_readers_the_new_totals(
        events in event_set(0..60),
        published_before in 0..60usize,
        list in release_list(),
    ) {
        // Some events are published before the release, the others are still pending.
        let mut aggregator = Aggregator::new(property_settings(), []);
        let mut published = state(&aggregator);
        let (before, after) = events.split_at(published_before.min(events.len()));
        for event in before {
            prop_assert_eq!(aggregator.apply(event).expect("a campaign slot"), Applied::Accepted);
        }
        publish(&mut published, aggregator.drain_changes())?;
        for event in after {
            prop_assert_eq!(aggregator.apply(event).expect("a campaign slot"), Applied::Accepted);
        }
        let released = aggregator.release(&list);
        let changes = aggregator.drain_changes();
        for change in &changes {
            prop_assert!(!released.contains(&change.campaign), "{:?}", change.campaign);
        }
        publish(&mut published, changes)?;
        // What a reader has for every campaign held, and for the totals, is what is held.
        let now = state(&aggregator);
        for (campaign, held) in &now {
            prop_assert_eq!(published.get(campaign), Some(held), "{}", campaign);
        }
        prop_assert_eq!(aggregator.drain_changes(), Vec::new());
    }
}

#[test]
fn a_checkpoint_says_its_format_and_one_of_a_newer_format_is_refused_clearly() {
    let parser = EventParser::new(settings().chapter_count, [0x11; 32]);
    let mut aggregator = Aggregator::new(settings(), []);
    apply_accepted(
        &mut aggregator,
        &parser,
        "e1 enrolled gendarmerie gf/alice 2020-10-05",
        &[],
    );
    let checkpoint = aggregator.checkpoint(7, Vec::new()).expect("the runs read");
    assert_eq!(checkpoint.format_version, stored::CHECKPOINT_FORMAT);

    // One written before formats had a version reads as the first format.
    let unversioned = aggregator.older_checkpoint(7, 0);
    let restored = Aggregator::restore(settings(), [], &unversioned, &[], Default::default())
        .expect("an older checkpoint");
    assert_eq!(
        restored
            .campaign("gendarmerie")
            .map(|(counts, _)| counts.enrolled),
        Some(1)
    );

    let newer = crate::proto::storage::Checkpoint {
        format_version: stored::CHECKPOINT_FORMAT + 1,
        ..checkpoint
    };
    let error = Aggregator::restore(settings(), [], &newer, &[], Default::default())
        .expect_err("a newer format is refused")
        .to_string();
    assert!(
        error.contains(&format!(
            "format {}, written by a newer suivi",
            stored::CHECKPOINT_FORMAT + 1
        )),
        "{error}"
    );
}

/// The learners' records a checkpoint holds, in an order that does not depend on the tables':
/// each learner's key, then per campaign named its slot, earliest event and progress there, then
/// its loose progress.
fn sorted_records(checkpoint: &crate::proto::storage::Checkpoint) -> Vec<Vec<i64>> {
    let (mut named, mut loose) = (0, 0);
    let mut records: Vec<Vec<i64>> = (0..checkpoint.learner_named.len())
        .map(|learner| {
            let mut row: Vec<i64> = checkpoint.learner_keys[learner * 3..learner * 3 + 3]
                .iter()
                .map(|word| i64::from(*word))
                .collect();
            let mut campaigns: Vec<Vec<i64>> = (named
                ..named + checkpoint.learner_named[learner] as usize)
                .map(|row| {
                    let mut campaign = vec![
                        checkpoint.named_slots[row].into(),
                        checkpoint.named_at[row],
                        checkpoint.named_enrolled[row].into(),
                        checkpoint.named_chapters[row].into(),
                    ];
                    campaign.extend(
                        checkpoint.named_ids[row * 3..row * 3 + 3]
                            .iter()
                            .map(|word| i64::from(*word)),
                    );
                    campaign
                })
                .collect();
            named += campaigns.len();
            campaigns.sort();
            row.extend(campaigns.concat());
            if checkpoint.learner_loose[learner] {
                row.extend([
                    i64::from(checkpoint.loose_enrolled[loose]),
                    i64::from(checkpoint.loose_chapters[loose]),
                ]);
                loose += 1;
            }
            row
        })
        .collect();
    records.sort();
    records
}

#[test]
fn a_checkpoint_of_many_parts_restores_the_whole_state() {
    // More learners, ids and attributions than one part holds, so that the totals, the ids
    // and the attributions are written in several parts that merge when read.
    let learners = 120_000u32;
    let mut aggregator = Aggregator::new(settings(), owned(&["gendarmerie", "la-poste"]));
    let at = instant("2020-10-05T10:00:00Z");
    for learner in 0..learners {
        let key = LearnerKey([learner, 1, 2]);
        let campaign = match learner % 3 {
            0 => "gendarmerie",
            1 => "la-poste",
            _ => DIRECT_CAMPAIGN,
        };
        let mut event = |n: u32, campaign: &str, action: Action| {
            let event = Event {
                id: EventId([learner, n, 3]),
                id_prefix: u64::from(n),
                content: learner ^ n,
                campaign: campaign.to_owned(),
                action,
                occurred_at: at + chrono::TimeDelta::hours(i64::from(learner % 500 + n)),
            };
            assert_eq!(aggregator.apply(&event).ok(), Some(Applied::Accepted));
        };
        event(
            0,
            campaign,
            Action::Progress {
                learner: key,
                stage: Stage::Enrolled,
            },
        );
        event(
            1,
            DIRECT_CAMPAIGN,
            Action::Progress {
                learner: key,
                stage: Stage::ChapterCompleted(2),
            },
        );
        if learner % 5 == 0 {
            let visitor = VisitorKey([learner, 9, 9]);
            event(
                2,
                "la-poste",
                Action::Click {
                    visitor: Some(visitor),
                    learner: Some(key),
                },
            );
        }
    }
    drop(aggregator.drain_changes());
    let checkpoint = aggregator.checkpoint(7, Vec::new()).expect("the runs read");
    assert!(checkpoint.named_at.len() > 65_536 && checkpoint.seen.len() / 4 > 2 * 65_536);
    let restored = Aggregator::restore(
        settings(),
        owned(&["gendarmerie", "la-poste"]),
        &checkpoint,
        &[],
        Default::default(),
    )
    .expect("the checkpoint restores");
    assert_eq!(whole_state(&restored), whole_state(&aggregator));
    assert_eq!(
        sorted_records(&restored.checkpoint(7, Vec::new()).expect("the runs read")),
        sorted_records(&checkpoint)
    );
}
