//! Examples of the aggregation rules, each a list of events and the state they give (through
//! `check` and `check_with`): implied stages, earliest days, duplicates, clicks and visitors,
//! direct and unregistered campaigns, time zones, and what `drain_changes` publishes.

use super::*;

#[test]
fn certified_alone_implies_every_earlier_stage() {
    check(
        "e1 certified gendarmerie gf/alice 2020-10-07",
        "
        gendarmerie: clicks 0, visitors 0, enrolled 1, started 1, chapters [1, 1, 1], certified 1
          2020-10-07: enrolled 1, started 1, certified 1
        *: clicks 0, visitors 0, enrolled 1, started 1, chapters [1, 1, 1], certified 1
          2020-10-07: enrolled 1, started 1, certified 1
        ",
    );
}

#[test]
fn a_chapter_completion_implies_enrolled_and_started_but_no_other_chapter() {
    check(
        "
        e1 chapter:2 gendarmerie gf/alice 2020-10-06
        e2 started   gendarmerie gf/bob   2020-10-06
        e3 enrolled  gendarmerie gf/carol 2020-10-07
        ",
        "
        gendarmerie: clicks 0, visitors 0, enrolled 3, started 2, chapters [0, 1, 0], certified 0
          2020-10-06: enrolled 2, started 2
          2020-10-07: enrolled 1
        *: clicks 0, visitors 0, enrolled 3, started 2, chapters [0, 1, 0], certified 0
          2020-10-06: enrolled 2, started 2
          2020-10-07: enrolled 1
        ",
    );
}

#[test]
fn a_later_event_does_not_move_a_stage_day() {
    check(
        "
        e1 enrolled  gendarmerie gf/alice 2020-10-05
        e2 started   gendarmerie gf/alice 2020-10-06
        e3 certified gendarmerie gf/alice 2020-10-08
        e4 enrolled  gendarmerie gf/alice 2020-10-09
        e5 chapter:1 gendarmerie gf/alice 2020-10-09
        e6 certified gendarmerie gf/alice 2020-10-10
        ",
        "
        gendarmerie: clicks 0, visitors 0, enrolled 1, started 1, chapters [1, 1, 1], certified 1
          2020-10-05: enrolled 1
          2020-10-06: started 1
          2020-10-08: certified 1
        *: clicks 0, visitors 0, enrolled 1, started 1, chapters [1, 1, 1], certified 1
          2020-10-05: enrolled 1
          2020-10-06: started 1
          2020-10-08: certified 1
        ",
    );
}

#[test]
fn an_earlier_event_moves_the_day_and_an_emptied_day_disappears() {
    // Alice is first seen certified on the 9th; earlier events then date each of her stages
    // earlier, one at a time, until the 9th only holds Bob, who then moves too.
    check(
        "
        e1 certified gendarmerie gf/alice 2020-10-09
        e2 enrolled  gendarmerie gf/bob   2020-10-09
        e3 enrolled  gendarmerie gf/alice 2020-10-05
        e4 chapter:1 gendarmerie gf/alice 2020-10-07
        e5 certified gendarmerie gf/alice 2020-10-08
        ",
        "
        gendarmerie: clicks 0, visitors 0, enrolled 2, started 1, chapters [1, 1, 1], certified 1
          2020-10-05: enrolled 1
          2020-10-07: started 1
          2020-10-08: certified 1
          2020-10-09: enrolled 1
        *: clicks 0, visitors 0, enrolled 2, started 1, chapters [1, 1, 1], certified 1
          2020-10-05: enrolled 1
          2020-10-07: started 1
          2020-10-08: certified 1
          2020-10-09: enrolled 1
        ",
    );
    check(
        "
        e1 certified gendarmerie gf/alice 2020-10-09
        e2 enrolled  gendarmerie gf/bob   2020-10-09
        e3 enrolled  gendarmerie gf/alice 2020-10-05
        e4 chapter:1 gendarmerie gf/alice 2020-10-07
        e5 certified gendarmerie gf/alice 2020-10-08
        e6 enrolled  gendarmerie gf/bob   2020-10-01
        ",
        "
        gendarmerie: clicks 0, visitors 0, enrolled 2, started 1, chapters [1, 1, 1], certified 1
          2020-10-01: enrolled 1
          2020-10-05: enrolled 1
          2020-10-07: started 1
          2020-10-08: certified 1
        *: clicks 0, visitors 0, enrolled 2, started 1, chapters [1, 1, 1], certified 1
          2020-10-01: enrolled 1
          2020-10-05: enrolled 1
          2020-10-07: started 1
          2020-10-08: certified 1
        ",
    );
}

#[test]
fn a_resent_or_reused_event_id_changes_nothing() {
    // The reuse of e1 would certify Bob in another campaign, and the reuse of e2 would date
    // Alice earlier: neither may count, and only the reuse is a conflict.
    check(
        "
        e1 enrolled  gendarmerie gf/alice 2020-10-05
        e1 enrolled  gendarmerie gf/alice 2020-10-05
        e1 certified la-poste    gf/bob   2020-10-01
        e2 started   gendarmerie gf/alice 2020-10-06
        e2 started   gendarmerie gf/alice 2020-10-02
        e3 click     gendarmerie browser  2020-10-05
        e3 click     gendarmerie browser  2020-10-05
        ",
        "
        e1: duplicate
        e1: duplicate, conflict
        e2: duplicate, conflict
        e3: duplicate
        gendarmerie: clicks 1, visitors 1, enrolled 1, started 1, chapters [0, 0, 0], certified 0
          2020-10-05: clicks 1, enrolled 1
          2020-10-06: started 1
        *: clicks 1, visitors 1, enrolled 1, started 1, chapters [0, 0, 0], certified 0
          2020-10-05: clicks 1, enrolled 1
          2020-10-06: started 1
        ",
    );
}

#[test]
fn clicks_count_events_and_unique_visitors_count_browsers() {
    check(
        "
        e1 click gendarmerie browser-1 2020-10-05
        e2 click gendarmerie browser-1 2020-10-05
        e3 click gendarmerie browser-2 2020-10-06
        e4 click gendarmerie -         2020-10-06
        e5 click la-poste    browser-1 2020-10-06
        ",
        "
        gendarmerie: clicks 4, visitors 2, enrolled 0, started 0, chapters [0, 0, 0], certified 0
          2020-10-05: clicks 2
          2020-10-06: clicks 2
        la-poste: clicks 1, visitors 1, enrolled 0, started 0, chapters [0, 0, 0], certified 0
          2020-10-06: clicks 1
        *: clicks 5, visitors 2, enrolled 0, started 0, chapters [0, 0, 0], certified 0
          2020-10-05: clicks 2
          2020-10-06: clicks 3
        ",
    );
}

#[test]
fn a_learner_named_by_its_enrolment_only_takes_its_later_events_there() {
    // The LMS sends alice's progress without a campaign; her enrolment came through the
    // Gendarmerie's link. Bob never names one: he stays direct.
    check(
        "
        e1 enrolled  gendarmerie gf/alice 2020-10-05
        e2 started   -           gf/alice 2020-10-06
        e3 chapter:2 -           gf/alice 2020-10-07
        e4 certified -           gf/alice 2020-10-09
        e5 enrolled  -           gf/bob   2020-10-06
        ",
        "
        direct: clicks 0, visitors 0, enrolled 1, started 0, chapters [0, 0, 0], certified 0
          2020-10-06: enrolled 1
        gendarmerie: clicks 0, visitors 0, enrolled 1, started 1, chapters [1, 1, 1], certified 1
          2020-10-05: enrolled 1
          2020-10-06: started 1
          2020-10-09: certified 1
        *: clicks 0, visitors 0, enrolled 2, started 1, chapters [1, 1, 1], certified 1
          2020-10-05: enrolled 1
          2020-10-06: enrolled 1, started 1
          2020-10-09: certified 1
        ",
    );
}

#[test]
fn a_learner_named_by_a_later_event_only_moves_there_whole() {
    // Everything alice did before naming a campaign moves to it, days included; the totals
    // do not move.
    check(
        "
        e1 enrolled  -        gf/alice 2020-10-05
        e2 chapter:1 -        gf/alice 2020-10-06
        e3 certified la-poste gf/alice 2020-10-08
        ",
        "
        la-poste: clicks 0, visitors 0, enrolled 1, started 1, chapters [1, 1, 1], certified 1
          2020-10-05: enrolled 1
          2020-10-06: started 1
          2020-10-08: certified 1
        *: clicks 0, visitors 0, enrolled 1, started 1, chapters [1, 1, 1], certified 1
          2020-10-05: enrolled 1
          2020-10-06: started 1
          2020-10-08: certified 1
        ",
    );
}

#[test]
fn two_partners_links_arriving_in_reverse_order_attribute_to_the_earlier() {
    // Alice followed la-poste's link on the 5th and the Gendarmerie's on the 7th; the
    // Gendarmerie's arrives first. Her unnamed progress goes to the Gendarmerie, then moves to
    // la-poste when its earlier link arrives; each campaign keeps what named it.
    check(
        "
        e1 enrolled  gendarmerie gf/alice 2020-10-07
        e2 chapter:3 -           gf/alice 2020-10-08
        e3 certified -           gf/alice 2020-10-10
        e4 enrolled  la-poste    gf/alice 2020-10-05
        ",
        "
        gendarmerie: clicks 0, visitors 0, enrolled 1, started 0, chapters [0, 0, 0], certified 0
          2020-10-07: enrolled 1
        la-poste: clicks 0, visitors 0, enrolled 1, started 1, chapters [1, 1, 1], certified 1
          2020-10-05: enrolled 1
          2020-10-08: started 1
          2020-10-10: certified 1
        *: clicks 0, visitors 0, enrolled 1, started 1, chapters [1, 1, 1], certified 1
          2020-10-05: enrolled 1
          2020-10-08: started 1
          2020-10-10: certified 1
        ",
    );
}

#[test]
fn a_tagged_click_names_the_learners_campaign_without_making_it_a_learner_there() {
    // GendForm3.0 knows who follows the Gendarmerie's link: the click names alice's campaign,
    // and her statements, naming none, count there. Her click on la-poste's link came later.
    // Bob clicked but never enrolled: a click, not a learner.
    check(
        "
        e1 enrolled  -           gf/alice 2020-10-05T12:00:00Z
        e2 chapter:1 -           gf/alice 2020-10-06
        e3 click     gendarmerie gf/alice 2020-10-05T11:00:00Z
        e4 click     la-poste    gf/alice 2020-10-07
        e5 click     gendarmerie gf/bob   2020-10-05
        ",
        "
        gendarmerie: clicks 2, visitors 0, enrolled 1, started 1, chapters [1, 0, 0], certified 0
          2020-10-05: clicks 2, enrolled 1
          2020-10-06: started 1
        la-poste: clicks 1, visitors 0, enrolled 0, started 0, chapters [0, 0, 0], certified 0
          2020-10-07: clicks 1
        *: clicks 3, visitors 0, enrolled 1, started 1, chapters [1, 0, 0], certified 0
          2020-10-05: clicks 2, enrolled 1
          2020-10-06: started 1
          2020-10-07: clicks 1
        ",
    );
}

#[test]
fn two_links_at_the_same_instant_attribute_by_the_smaller_event_id() {
    // The same instant: the smaller event_id decides, whatever the order the events come in.
    for (first, second, winner) in [
        ("e1", "e2", "gendarmerie"),
        ("e2", "e1", "la-poste"),
        ("zz", "aaa", "la-poste"),
        ("event-10", "event-9", "gendarmerie"),
        (
            "9f1c3a52-7d2e-4b8a-9c11-0e5d6f7a8b90",
            "0a4e8c21-3b5f-4d6e-8f70-1a2b3c4d5e6f",
            "la-poste",
        ),
        // Alike in their first eight bytes: ordered by their fingerprints, the same way in
        // every order (which one wins is not the event_ids' order).
        ("statement-2", "statement-1", ""),
    ] {
        let events = [
            format!("{first} enrolled gendarmerie gf/alice 2020-10-05T10:00:00Z"),
            format!("{second} enrolled la-poste    gf/alice 2020-10-05T10:00:00Z"),
            "e3 started  -           gf/alice 2020-10-06".to_owned(),
        ];
        let parser = EventParser::new(settings().chapter_count, [0x11; 32]);
        let parsed: Vec<Event> = parse_events(&parser, &events.join("\n"))
            .into_iter()
            .map(|(_, event)| event)
            .collect();
        let mut winners = BTreeSet::new();
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            let mut aggregator = Aggregator::new(settings(), []);
            for index in order {
                assert_eq!(
                    aggregator.apply(&parsed[index]).ok(),
                    Some(Applied::Accepted)
                );
            }
            let won: Vec<&str> = ["gendarmerie", "la-poste"]
                .into_iter()
                .filter(|campaign| {
                    let (counts, _) = aggregator.campaign(campaign).expect("held");
                    (counts.enrolled, counts.started) == (1, 1)
                })
                .collect();
            assert_eq!(won.len(), 1, "{first} {second} {order:?}: {won:?}");
            winners.insert(won[0]);
        }
        assert_eq!(winners.len(), 1, "{first} {second}: {winners:?}");
        if !winner.is_empty() {
            assert!(winners.contains(winner), "{first} {second}: {winners:?}");
        }
    }
}

#[test]
fn events_without_a_campaign_count_under_direct() {
    check(
        "
        e1 click    -      browser-1 2020-10-05
        e2 enrolled -      gf/alice  2020-10-05
        e3 started  DIRECT gf/alice  2020-10-06
        ",
        "
        direct: clicks 1, visitors 1, enrolled 1, started 1, chapters [0, 0, 0], certified 0
          2020-10-05: clicks 1, enrolled 1
          2020-10-06: started 1
        *: clicks 1, visitors 1, enrolled 1, started 1, chapters [0, 0, 0], certified 0
          2020-10-05: clicks 1, enrolled 1
          2020-10-06: started 1
        ",
    );
}

#[test]
fn totals_count_distinct_learners_over_campaigns() {
    // Alice is in both campaigns: once in the totals, dated by her earliest event anywhere.
    check(
        "
        e1 enrolled  gendarmerie gf/alice 2020-10-05
        e2 certified la-poste    gf/alice 2020-10-07
        e3 enrolled  la-poste    gf/bob   2020-10-06
        ",
        "
        gendarmerie: clicks 0, visitors 0, enrolled 1, started 0, chapters [0, 0, 0], certified 0
          2020-10-05: enrolled 1
        la-poste: clicks 0, visitors 0, enrolled 2, started 1, chapters [1, 1, 1], certified 1
          2020-10-06: enrolled 1
          2020-10-07: enrolled 1, started 1, certified 1
        *: clicks 0, visitors 0, enrolled 2, started 1, chapters [1, 1, 1], certified 1
          2020-10-05: enrolled 1
          2020-10-06: enrolled 1
          2020-10-07: started 1, certified 1
        ",
    );
}

#[test]
fn the_same_learner_id_on_two_sources_is_two_learners() {
    // Sources are normalised like campaigns: GF and gf are one platform.
    check(
        "
        e1 enrolled gendarmerie gf/alice 2020-10-05
        e2 enrolled gendarmerie oc/alice 2020-10-05
        e3 started  gendarmerie GF/alice 2020-10-06
        ",
        "
        gendarmerie: clicks 0, visitors 0, enrolled 2, started 1, chapters [0, 0, 0], certified 0
          2020-10-05: enrolled 2
          2020-10-06: started 1
        *: clicks 0, visitors 0, enrolled 2, started 1, chapters [0, 0, 0], certified 0
          2020-10-05: enrolled 2
          2020-10-06: started 1
        ",
    );
}

#[test]
fn past_max_unregistered_campaigns_events_count_under_unregistered() {
    let aggregator = check_with(
        AggregatorSettings {
            max_unregistered_campaigns: 2,
            ..settings()
        },
        &[],
        "
        e1 enrolled gendarmerie gf/alice  2020-10-05
        e2 click    la-poste    browser-1 2020-10-05
        e3 enrolled pole-emploi gf/bob    2020-10-05
        e3 enrolled pole-emploi gf/bob    2020-10-05
        e4 click    -           browser-1 2020-10-05
        e5 started  gendarmerie gf/alice  2020-10-06
        e6 started  pole-emploi gf/bob    2020-10-06
        ",
        "
        e3: pole-emploi counted as unregistered
        e3: duplicate
        e6: pole-emploi counted as unregistered
        direct: clicks 1, visitors 1, enrolled 0, started 0, chapters [0, 0, 0], certified 0
          2020-10-05: clicks 1
        unregistered: clicks 0, visitors 0, enrolled 1, started 1, chapters [0, 0, 0], certified 0
          2020-10-05: enrolled 1
          2020-10-06: started 1
        gendarmerie: clicks 0, visitors 0, enrolled 1, started 1, chapters [0, 0, 0], certified 0
          2020-10-05: enrolled 1
          2020-10-06: started 1
        la-poste: clicks 1, visitors 1, enrolled 0, started 0, chapters [0, 0, 0], certified 0
          2020-10-05: clicks 1
        *: clicks 2, visitors 1, enrolled 2, started 2, chapters [0, 0, 0], certified 0
          2020-10-05: clicks 2, enrolled 2
          2020-10-06: started 2
        ",
    );
    // Nothing was refused: every distinct event is remembered.
    assert_eq!(
        aggregator.holdings(),
        Holdings {
            campaigns: 4,
            unregistered_campaigns: 2,
            learners: 2,
            campaign_learners: 2,
            event_ids: 6,
        }
    );
}

#[test]
fn registered_campaigns_and_direct_are_counted_whatever_the_unregistered_limit() {
    // No room at all for unregistered campaigns: registered ones and direct still take events.
    let full = AggregatorSettings {
        max_unregistered_campaigns: 0,
        ..settings()
    };
    check_with(
        full.clone(),
        &["gendarmerie", "la-poste"],
        "",
        "
        gendarmerie: clicks 0, visitors 0, enrolled 0, started 0, chapters [0, 0, 0], certified 0
        la-poste: clicks 0, visitors 0, enrolled 0, started 0, chapters [0, 0, 0], certified 0
        *: clicks 0, visitors 0, enrolled 0, started 0, chapters [0, 0, 0], certified 0
        ",
    );
    check_with(
        full,
        &["gendarmerie", "la-poste"],
        "
        e1 enrolled la-poste    gf/alice 2020-10-05
        e2 enrolled -           gf/bob   2020-10-05
        e3 enrolled gendarmerie gf/carol 2020-10-06
        e4 enrolled apec        gf/dave  2020-10-06
        ",
        "
        e4: apec counted as unregistered
        direct: clicks 0, visitors 0, enrolled 1, started 0, chapters [0, 0, 0], certified 0
          2020-10-05: enrolled 1
        unregistered: clicks 0, visitors 0, enrolled 1, started 0, chapters [0, 0, 0], certified 0
          2020-10-06: enrolled 1
        gendarmerie: clicks 0, visitors 0, enrolled 1, started 0, chapters [0, 0, 0], certified 0
          2020-10-06: enrolled 1
        la-poste: clicks 0, visitors 0, enrolled 1, started 0, chapters [0, 0, 0], certified 0
          2020-10-05: enrolled 1
        *: clicks 0, visitors 0, enrolled 4, started 0, chapters [0, 0, 0], certified 0
          2020-10-05: enrolled 2
          2020-10-06: enrolled 2
        ",
    );
}

#[test]
fn replay_counts_what_was_admitted_whatever_the_limits_of_this_start() {
    // Admitted live with room for two unregistered campaigns, then applied by a replay whose
    // aggregator has room for none (the limit lowered, or partners added to the registry).
    let parser = EventParser::new(3, [0x11; 32]);
    let mut live = Aggregator::new(settings(), []);
    let mut journaled = Vec::new();
    for (_, mut event) in parse_events(
        &parser,
        "
        e1 enrolled apec  gf/alice 2020-10-05
        e2 enrolled cnam  gf/bob   2020-10-05
        e3 started  apec  gf/alice 2020-10-06
        ",
    ) {
        assert_eq!(
            live.admit(&mut event, &mut Admission::default())
                .expect("the runs read"),
            Applied::Accepted
        );
        assert_eq!(
            live.apply(&event).expect("a campaign slot"),
            Applied::Accepted
        );
        journaled.push(event);
    }
    let mut replayed = Aggregator::new(
        AggregatorSettings {
            max_unregistered_campaigns: 0,
            ..settings()
        },
        owned(&["gendarmerie"]),
    );
    for event in &journaled {
        assert_eq!(
            replayed.apply(event).expect("a campaign slot"),
            Applied::Accepted
        );
    }
    for campaign in ["apec", "cnam"] {
        assert_eq!(
            replayed.campaign(campaign),
            live.campaign(campaign),
            "{campaign}"
        );
    }
    assert_eq!(
        replayed.campaign(TOTALS_CAMPAIGN),
        live.campaign(TOTALS_CAMPAIGN)
    );
}

#[test]
fn days_are_calendar_days_in_the_configured_time_zone() {
    // Paris is UTC+2 in October and UTC+1 in December. Bob's second event is earlier than his
    // first by an hour, which is the day before in Paris but the same day in UTC.
    let events = "
        e1 enrolled gendarmerie gf/alice 2020-10-04T21:59:59Z
        e2 enrolled gendarmerie gf/bob   2020-10-04T22:00:00Z
        e3 enrolled gendarmerie gf/carol 2020-12-31T22:59:59Z
        e4 enrolled gendarmerie gf/dave  2020-12-31T23:00:00Z
        e5 started  gendarmerie gf/bob   2020-10-04T21:00:00Z
    ";
    check_with(
        settings(),
        &[],
        events,
        "
        gendarmerie: clicks 0, visitors 0, enrolled 4, started 1, chapters [0, 0, 0], certified 0
          2020-10-04: enrolled 2, started 1
          2020-12-31: enrolled 1
          2021-01-01: enrolled 1
        *: clicks 0, visitors 0, enrolled 4, started 1, chapters [0, 0, 0], certified 0
          2020-10-04: enrolled 2, started 1
          2020-12-31: enrolled 1
          2021-01-01: enrolled 1
        ",
    );
    check_with(
        AggregatorSettings {
            time_zone: chrono_tz::UTC,
            ..settings()
        },
        &[],
        events,
        "
        gendarmerie: clicks 0, visitors 0, enrolled 4, started 1, chapters [0, 0, 0], certified 0
          2020-10-04: enrolled 2, started 1
          2020-12-31: enrolled 2
        *: clicks 0, visitors 0, enrolled 4, started 1, chapters [0, 0, 0], certified 0
          2020-10-04: enrolled 2, started 1
          2020-12-31: enrolled 2
        ",
    );
    // Without Bob's earlier event, Paris dates him on the 5th.
    check(
        "e2 enrolled gendarmerie gf/bob 2020-10-04T22:00:00Z",
        "
        gendarmerie: clicks 0, visitors 0, enrolled 1, started 0, chapters [0, 0, 0], certified 0
          2020-10-05: enrolled 1
        *: clicks 0, visitors 0, enrolled 1, started 0, chapters [0, 0, 0], certified 0
          2020-10-05: enrolled 1
        ",
    );
}

#[test]
fn drain_changes_gives_each_changed_campaign_once_then_nothing() {
    let parser = EventParser::new(3, [0x11; 32]);
    let mut aggregator = Aggregator::new(settings(), ["registered".to_owned()]);
    let mut apply = |notation: &str| {
        for (id, event) in parse_events(&parser, notation) {
            let applied = aggregator.apply(&event).expect("a campaign slot");
            assert_eq!(applied, Applied::Accepted, "{id}");
        }
        aggregator.drain_changes()
    };

    // Gendarmerie changed twice but is given once; the registered campaign did not change.
    let changes = apply(
        "
        e1 enrolled gendarmerie gf/alice  2020-10-09
        e2 started  gendarmerie gf/alice  2020-10-09
        e3 click    la-poste    browser-1 2020-10-09
        ",
    );
    assert_text(
        &render_changes(&changes),
        "
        gendarmerie: clicks 0, visitors 0, enrolled 1, started 1, chapters [0, 0, 0], certified 0
          2020-10-09: enrolled 1, started 1
        la-poste: clicks 1, visitors 1, enrolled 0, started 0, chapters [0, 0, 0], certified 0
          2020-10-09: clicks 1
        *: clicks 1, visitors 1, enrolled 1, started 1, chapters [0, 0, 0], certified 0
          2020-10-09: clicks 1, enrolled 1, started 1
        ",
    );
    // A drain right after a drain has nothing to give.
    assert_eq!(apply(""), Vec::new());

    // An event that changes no counter is accepted but gives nothing to publish.
    assert_text(
        &render_changes(&apply("e4 enrolled gendarmerie gf/alice 2020-10-12")),
        "",
    );

    // Only the days that changed since the last drain are given, not every day ever changed.
    assert_text(
        &render_changes(&apply("e5 enrolled gendarmerie gf/bob 2020-10-10")),
        "
        gendarmerie: clicks 0, visitors 0, enrolled 2, started 1, chapters [0, 0, 0], certified 0
          2020-10-10: enrolled 1
        *: clicks 1, visitors 1, enrolled 2, started 1, chapters [0, 0, 0], certified 0
          2020-10-10: enrolled 1
        ",
    );

    // Alice moves to the 5th: the 9th empties in gendarmerie and is given as nothing, so that a
    // reader removes it; in the totals it still holds the click.
    assert_text(
        &render_changes(&apply("e6 certified gendarmerie gf/alice 2020-10-05")),
        "
        gendarmerie: clicks 0, visitors 0, enrolled 2, started 1, chapters [1, 1, 1], certified 1
          2020-10-05: enrolled 1, started 1, certified 1
          2020-10-09: nothing
        *: clicks 1, visitors 1, enrolled 2, started 1, chapters [1, 1, 1], certified 1
          2020-10-05: enrolled 1, started 1, certified 1
          2020-10-09: clicks 1
        ",
    );
    assert_eq!(apply(""), Vec::new());
}
