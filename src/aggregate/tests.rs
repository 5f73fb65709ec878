//! Tests of the aggregation core. Examples go through `check`: a few events written one a line
//! in a small notation, and the counters and timelines they give rendered as text. Property tests
//! then check invariant 1 of the product design (§3), that the counters are a function of the set
//! of distinct events, against an oracle that computes them from the definition.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::event::{
    DIRECT_CAMPAIGN, EventKind, EventParser, RawEvent, RawKind, RawTime, UNREGISTERED_CAMPAIGN,
    event_id,
};
use crate::proto::storage::CampaignState as StoredCampaign;

/// The settings of the examples: a short course of three chapters, so that chapter lists stay
/// readable, in the programme's time zone.
fn settings() -> AggregatorSettings {
    AggregatorSettings {
        time_zone: chrono_tz::Europe::Paris,
        chapter_count: 3,
        max_unregistered_campaigns: 8,
    }
}

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test instants are RFC 3339")
        .to_utc()
}

/// Parses the event notation of `check`, one event a line: `<id> <kind> <campaign> <who> <when>`.
/// `kind` is `click`, `enrolled`, `started`, `chapter:<n>` or `certified`; `campaign` is `-` for
/// none; `who` is `<source>/<learner_id>` for progress and the visitor id (`-` for none) for
/// clicks; `when` is a day, meaning noon UTC on that day, or an RFC 3339 instant. Events go
/// through the real parser, so that learners are pseudonymised and contents fingerprinted as in
/// the service.
fn parse_events(parser: &EventParser, notation: &str) -> Vec<(String, Event)> {
    // Far enough ahead that no example is "in the future".
    let now = instant("2030-01-01T00:00:00Z");
    let mut events = Vec::new();
    for line in notation
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let &[id, kind, campaign, who, when] = fields.as_slice() else {
            panic!("{line:?} is not <id> <kind> <campaign> <who> <when>");
        };
        let (kind, chapter) = match kind {
            "click" => (EventKind::LinkClicked, None),
            "enrolled" => (EventKind::Enrolled, None),
            "started" => (EventKind::CourseStarted, None),
            "certified" => (EventKind::Certified, None),
            _ => {
                let chapter = kind
                    .strip_prefix("chapter:")
                    .and_then(|chapter| chapter.parse().ok())
                    .unwrap_or_else(|| panic!("{line:?}: unknown kind {kind:?}"));
                (EventKind::ChapterCompleted, Some(chapter))
            }
        };
        let (source, learner_id, visitor_id) = match (kind, who) {
            (EventKind::LinkClicked, "-") => ("web", "", ""),
            (EventKind::LinkClicked, visitor_id) => ("web", "", visitor_id),
            (_, learner) => {
                let (source, learner_id) = learner
                    .split_once('/')
                    .unwrap_or_else(|| panic!("{line:?}: a learner is <source>/<learner_id>"));
                (source, learner_id, "")
            }
        };
        let occurred_at = if when.len() == "2020-10-05".len() {
            instant(&format!("{when}T12:00:00Z"))
        } else {
            instant(when)
        };
        let raw = RawEvent {
            event_id: id,
            kind: RawKind::Known(kind),
            campaign: if campaign == "-" { "" } else { campaign },
            source,
            learner_id,
            visitor_id,
            occurred_at: RawTime::At(occurred_at),
            chapter,
        };
        let event = parser
            .parse(&raw, now)
            .unwrap_or_else(|reason| panic!("{line:?} is not a valid event: {reason}"));
        events.push((id.to_owned(), event));
    }
    events
}

fn render_counts(campaign: &str, counts: &Counts) -> String {
    format!(
        "{campaign}: clicks {}, visitors {}, enrolled {}, started {}, chapters {:?}, certified {}",
        counts.clicks,
        counts.unique_visitors,
        counts.enrolled,
        counts.started,
        counts.chapters_completed,
        counts.certified
    )
}

/// One day of a timeline, its zero columns left out; a day with nothing is `nothing`.
fn render_day(day: Day, counts: &DayCounts) -> String {
    let columns: Vec<String> = [
        ("clicks", counts.clicks),
        ("enrolled", counts.enrolled),
        ("started", counts.started),
        ("certified", counts.certified),
    ]
    .into_iter()
    .filter(|(_, count)| *count != 0)
    .map(|(column, count)| format!("{column} {count}"))
    .collect();
    if columns.is_empty() {
        format!("  {day}: nothing")
    } else {
        format!("  {day}: {}", columns.join(", "))
    }
}

/// Every campaign in the order it was opened, then the totals, each followed by its timeline.
/// The campaigns held, in slot order, but for the reserved ones (`direct`, `unregistered`,
/// always held) while they hold nothing: the examples read as the events they were given.
fn shown_campaigns(aggregator: &Aggregator) -> impl Iterator<Item = &str> {
    aggregator.campaign_ids().filter(|campaign| {
        let reserved = [DIRECT_CAMPAIGN, UNREGISTERED_CAMPAIGN].contains(campaign);
        let empty = aggregator
            .campaign(campaign)
            .is_some_and(|(counts, timeline)| {
                timeline.is_empty()
                    && counts.clicks == 0
                    && counts.unique_visitors == 0
                    && counts.enrolled == 0
            });
        !(reserved && empty)
    })
}

fn render_state(aggregator: &Aggregator) -> Vec<String> {
    let mut lines = Vec::new();
    for campaign in shown_campaigns(aggregator).chain([TOTALS_CAMPAIGN]) {
        let (counts, timeline) = aggregator
            .campaign(campaign)
            .expect("every listed campaign is held");
        lines.push(render_counts(campaign, counts));
        lines.extend(
            timeline
                .iter()
                .map(|(day, counts)| render_day(*day, counts)),
        );
    }
    lines
}

fn render_changes(changes: &[CampaignChange]) -> Vec<String> {
    let mut lines = Vec::new();
    for change in changes {
        lines.push(render_counts(&change.campaign, &change.counts));
        lines.extend(
            change
                .days
                .iter()
                .map(|(day, counts)| render_day(*day, counts)),
        );
    }
    lines
}

/// `text` without its first line break and without the indentation its lines share, so that
/// expectations can be indented with the code.
fn dedent(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|line| line.trim().is_empty())
        .collect();
    let indentation = lines
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    let lines: Vec<&str> = lines
        .iter()
        .map(|line| line.get(indentation..).unwrap_or("").trim_end())
        .collect();
    lines.join("\n").trim_end().to_owned()
}

#[track_caller]
fn assert_text(actual: &[String], expected: &str) {
    let actual = actual.join("\n");
    let expected = dedent(expected);
    assert!(
        actual == expected,
        "\nexpected:\n{expected}\n\nactual:\n{actual}\n"
    );
}

/// Applies `events` in order to an aggregator holding the `registered` campaigns, and compares
/// what it holds then with `expected`: first a line for each event that was not accepted, then
/// every campaign and the totals with their timelines.
#[track_caller]
fn check_with(
    settings: AggregatorSettings,
    registered: &[&str],
    events: &str,
    expected: &str,
) -> Aggregator {
    let parser = EventParser::new(settings.chapter_count, [0x11; 32]);
    let mut aggregator = Aggregator::new(
        settings,
        registered.iter().map(|campaign| (*campaign).to_owned()),
    );
    let mut lines = Vec::new();
    // Each event admitted then applied, as the writer does.
    for (id, mut event) in parse_events(&parser, events) {
        let named = event.campaign.clone();
        match aggregator.admit(&mut event, &mut Admission::default()) {
            Applied::Accepted => {
                assert_eq!(aggregator.apply(&event), Applied::Accepted, "{id}");
                if event.campaign != named {
                    lines.push(format!("{id}: {named} counted as {}", event.campaign));
                }
            }
            Applied::Duplicate { conflict: false } => lines.push(format!("{id}: duplicate")),
            Applied::Duplicate { conflict: true } => {
                lines.push(format!("{id}: duplicate, conflict"));
            }
            Applied::Rejected(reason) => lines.push(format!("{id}: rejected {}", reason.code())),
        }
    }
    lines.extend(render_state(&aggregator));
    assert_text(&lines, expected);
    aggregator
}

#[track_caller]
fn check(events: &str, expected: &str) {
    check_with(settings(), &[], events, expected);
}

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
            live.admit(&mut event, &mut Admission::default()),
            Applied::Accepted
        );
        assert_eq!(live.apply(&event), Applied::Accepted);
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
        assert_eq!(replayed.apply(event), Applied::Accepted);
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
            let applied = aggregator.apply(&event);
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

// Property tests: invariant 1 of the product design, over random sets of events drawn from a
// small pool, so that learners, days and campaigns collide often.

/// The campaigns of the generated events; `max_unregistered_campaigns` is exactly the number of
/// unregistered ones, so that the limit is reached and never exceeded.
const CAMPAIGNS: [&str; 4] = ["gendarmerie", "la-poste", "pole-emploi", DIRECT_CAMPAIGN];
const CHAPTER_COUNT: u8 = 4;
const SOURCES: u32 = 2;
/// Learner ids per source: the same id on both sources makes 2 × 6 = 12 learners.
const LEARNER_IDS: u32 = 6;
const VISITORS: u32 = 5;
const DAYS: i64 = 20;

fn property_settings() -> AggregatorSettings {
    AggregatorSettings {
        time_zone: chrono_tz::Europe::Paris,
        chapter_count: CHAPTER_COUNT,
        max_unregistered_campaigns: CAMPAIGNS.len() - 1,
    }
}

/// Every campaign and the totals, each with its counts and timeline.
type State = BTreeMap<String, (Counts, BTreeMap<Day, DayCounts>)>;

fn state(aggregator: &Aggregator) -> State {
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

fn stage() -> impl Strategy<Value = Stage> {
    prop_oneof![
        Just(Stage::Enrolled),
        Just(Stage::Started),
        (1..=CHAPTER_COUNT).prop_map(Stage::ChapterCompleted),
        Just(Stage::Certified),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        1 => proptest::option::of(0..VISITORS).prop_map(|visitor| Action::Click {
            visitor: visitor.map(|visitor| VisitorKey([visitor, 0, 0])),
        }),
        3 => (0..SOURCES, 0..LEARNER_IDS, stage()).prop_map(|(source, learner_id, stage)| {
            Action::Progress {
                learner: LearnerKey([source, learner_id, 0]),
                stage,
            }
        }),
    ]
}

/// Events dated to the minute over `DAYS` days, so that some fall on either side of midnight in
/// Paris.
fn event_at(number: usize, campaign: usize, minute: i64, action: Action) -> Event {
    Event {
        id: event_id("openclassrooms", &format!("event-{number}")),
        content: u32::try_from(number).expect("few events"),
        campaign: CAMPAIGNS[campaign].to_owned(),
        action,
        occurred_at: instant("2020-10-01T00:00:00Z") + TimeDelta::minutes(minute),
    }
}

/// A set of distinct events: each has its own id.
fn event_set(sizes: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Event>> {
    vec((0..CAMPAIGNS.len(), 0..DAYS * 24 * 60, action()), sizes).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(number, (campaign, minute, action))| event_at(number, campaign, minute, action))
            .collect()
    })
}

/// A fresh aggregator that took `events` in order, each accepted.
fn aggregate(events: &[Event]) -> Result<Aggregator, TestCaseError> {
    let mut aggregator = Aggregator::new(property_settings(), []);
    for event in events {
        prop_assert_eq!(aggregator.apply(event), Applied::Accepted);
    }
    Ok(aggregator)
}

/// The counters and timelines of a set of distinct events, computed from the definition of the
/// product design (§3) and not event by event: a learner's stage is dated by the earliest of the
/// events that reach it, directly or by implication.
fn oracle(events: &[Event]) -> State {
    let mut scopes: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    for event in events {
        scopes
            .entry(event.campaign.clone())
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

fn oracle_scope(events: &[&Event]) -> (Counts, BTreeMap<Day, DayCounts>) {
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
            Action::Click { visitor } => {
                counts.clicks += 1;
                timeline.entry(day_of(event)).or_default().clicks += 1;
                visitors.extend(visitor);
            }
            Action::Progress { learner, stage } => reached_by_learner
                .entry(learner)
                .or_default()
                .push((stage, day_of(event))),
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
fn check_funnels(aggregator: &Aggregator) -> Result<(), TestCaseError> {
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
fn publish(published: &mut State, changes: Vec<CampaignChange>) -> Result<(), TestCaseError> {
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

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
            prop_assert_eq!(aggregator.apply(event), expected, "{:?}", event);
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
                prop_assert_eq!(aggregator.apply(event), Applied::Accepted);
            }
            publish(&mut published, aggregator.drain_changes())?;
            prop_assert_eq!(aggregator.drain_changes(), Vec::new());
            remaining = rest;
        }
        let final_state = state(&aggregator);
        prop_assert_eq!(&final_state, &state(&aggregate(&events)?));
        prop_assert_eq!(published, final_state);
    }

    #[test]
    fn every_funnel_holds_after_every_event(events in event_set(0..60)) {
        let mut aggregator = Aggregator::new(property_settings(), []);
        check_funnels(&aggregator)?;
        for event in &events {
            prop_assert_eq!(aggregator.apply(event), Applied::Accepted);
            check_funnels(&aggregator)?;
        }
    }
}

// Releasing campaigns (a Kafka rebalance): examples, then properties over the same random events.

/// Applies the events of `notation` whose ids are in `ids` (all when empty), each accepted.
#[track_caller]
fn apply_accepted(aggregator: &mut Aggregator, parser: &EventParser, notation: &str, ids: &[&str]) {
    for (id, event) in parse_events(parser, notation) {
        if ids.is_empty() || ids.contains(&id.as_str()) {
            assert_eq!(aggregator.apply(&event), Applied::Accepted, "{id}");
        }
    }
}

fn owned(campaigns: &[&str]) -> Vec<String> {
    campaigns
        .iter()
        .map(|campaign| (*campaign).to_owned())
        .collect()
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
        assert_eq!(aggregator.apply(&event(id)), Applied::Accepted);
    }
    let mut e4 = event("e4");
    assert_eq!(
        aggregator.admit(&mut e4, &mut Admission::default()),
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
        assert_eq!(aggregator.admit(&mut event, &mut group), Applied::Accepted);
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
        assert_eq!(aggregator.apply(event), Applied::Accepted);
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
        ..event_at(0, 0, 0, Action::Click { visitor: None })
    };
    let mut aggregator = Aggregator::new(property_settings(), []);
    assert_eq!(aggregator.apply(&first), Applied::Accepted);
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
        assert_eq!(aggregator.apply(&reuse), duplicate, "{content:#x}");
        assert_eq!(
            aggregator.admit(&mut reuse.clone(), &mut Admission::default()),
            duplicate,
            "{content:#x}"
        );
        // Within one group, before it is applied, the same.
        let mut group = Admission::default();
        assert_eq!(
            aggregator.admit(&mut unseen.clone(), &mut group),
            Applied::Accepted
        );
        let mut reuse_in_group = Event {
            content,
            ..unseen.clone()
        };
        assert_eq!(
            aggregator.admit(&mut reuse_in_group, &mut group),
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
        content: 0,
        campaign: format!("campaign-{campaign}"),
        action: Action::Click { visitor: None },
        occurred_at: instant("2020-10-05T12:00:00Z"),
    };
    let mut aggregator = Aggregator::new(over.clone(), []);
    // Two slots are direct's and unregistered's.
    for campaign in 0..CAMPAIGN_SLOTS - 2 {
        assert_eq!(
            aggregator.apply(&click(campaign, campaign)),
            Applied::Accepted
        );
    }
    // Admission counts the event under unregistered; a replay that has no slot for it says so.
    let mut one_more = click(CAMPAIGN_SLOTS, CAMPAIGN_SLOTS);
    assert_eq!(
        aggregator.apply(&one_more),
        Applied::Rejected(RejectReason::TooManyCampaigns {
            campaign: format!("campaign-{CAMPAIGN_SLOTS}"),
            limit: CAMPAIGN_SLOTS,
        })
    );
    assert_eq!(
        aggregator.admit(&mut one_more, &mut Admission::default()),
        Applied::Accepted
    );
    assert_eq!(one_more.campaign, UNREGISTERED_CAMPAIGN);
    assert_eq!(aggregator.apply(&one_more), Applied::Accepted);
    assert_eq!(aggregator.holdings().campaigns, CAMPAIGN_SLOTS);
    assert_eq!(aggregator.holdings().event_ids, CAMPAIGN_SLOTS - 1);

    // The last slot's ids are its own: releasing another keeps them, releasing it forgets them.
    let last = CAMPAIGN_SLOTS - 3;
    aggregator.release(&[format!("campaign-{last}")]);
    assert_eq!(aggregator.apply(&click(last, last)), Applied::Accepted);
    aggregator.release(&owned(&["campaign-0"]));
    assert_eq!(
        aggregator.apply(&click(last, last)),
        Applied::Duplicate { conflict: false }
    );
    assert_eq!(
        aggregator.apply(&click(1, 1)),
        Applied::Duplicate { conflict: false }
    );
    // campaign-0's slot (2) is free again: a campaign too many now fits, in it.
    let another = click(CAMPAIGN_SLOTS + 1, CAMPAIGN_SLOTS + 1);
    assert_eq!(aggregator.apply(&another), Applied::Accepted);
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
        aggregator.admit(&mut past_the_slots, &mut Admission::default()),
        Applied::Accepted
    );
    assert_eq!(past_the_slots.campaign, UNREGISTERED_CAMPAIGN);

    // A checkpoint holds at most 65,536 slots.
    let mut checkpoint = Aggregator::new(over.clone(), []).checkpoint(0, Vec::new());
    checkpoint.campaigns = vec![StoredCampaign::default(); CAMPAIGN_SLOTS];
    let restored = Aggregator::restore(over.clone(), [], &checkpoint).expect("every slot fits");
    // Only direct and unregistered, in vacant slots.
    assert_eq!(restored.holdings().campaigns, 2);
    checkpoint.campaigns.push(StoredCampaign::default());
    assert!(Aggregator::restore(over, [], &checkpoint).is_err());
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
    let checkpoint = aggregator.checkpoint(7, Vec::new());
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
    assert!(Aggregator::restore(settings(), [], &corrupt).is_err());
    let mut corrupt = checkpoint;
    corrupt.campaigns[6].campaign = "gendarmerie".to_owned();
    assert!(Aggregator::restore(settings(), [], &corrupt).is_err());
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
        .map(|&[a, b, c, last]| [a, b, c, last & mask])
        .collect()
}

/// Everything an aggregator holds: the campaigns in slot order, every counter and timeline, the
/// holdings, and the remembered ids with their slots.
type WholeState = (Vec<String>, State, Holdings, BTreeSet<[u32; 4]>);

fn whole_state(aggregator: &Aggregator) -> WholeState {
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
            prop_assert_eq!(aggregator.admit(&mut admitted, &mut group), Applied::Accepted);
            prop_assert_eq!(&admitted.campaign, &event.campaign);
        }
        for event in &again {
            prop_assert_eq!(aggregator.apply(event), Applied::Accepted);
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
        let checkpoint = aggregator.checkpoint(0, Vec::new());
        let mut restored = Aggregator::restore(property_settings(), [], &checkpoint)
            .map_err(|error| TestCaseError::fail(format!("{error:#}")))?;
        prop_assert_eq!(whole_state(&restored), whole_state(&aggregator));
        // Later events, every first event again (released ones count again, the others are
        // duplicates) then `extra`, whose ids are those of the first events with other content
        // and campaigns, or new: both take them alike.
        for event in events.iter().chain(&extra) {
            prop_assert_eq!(restored.apply(event), aggregator.apply(event), "{:?}", event);
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
            prop_assert_eq!(aggregator.apply(event), Applied::Accepted);
        }
        publish(&mut published, aggregator.drain_changes())?;
        for event in after {
            prop_assert_eq!(aggregator.apply(event), Applied::Accepted);
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
