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
    Action, DIRECT_CAMPAIGN, EventKind, EventParser, LearnerKey, RawEvent, RawKind, RawTime, Stage,
    UNREGISTERED_CAMPAIGN, VisitorKey, event_id, id_prefix,
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
/// none; `who` is `<source>/<learner_id>` for progress and for a tagged click, and the visitor id
/// (`-` for none) for other clicks; `when` is a day, meaning noon UTC on that day, or an RFC 3339 instant. Events go
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
            (EventKind::LinkClicked, visitor_id) if !visitor_id.contains('/') => {
                ("web", "", visitor_id)
            }
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
        match aggregator
            .admit(&mut event, &mut Admission::default())
            .expect("the runs read")
        {
            Applied::Accepted => {
                assert_eq!(
                    aggregator.apply(&event).expect("a campaign slot"),
                    Applied::Accepted,
                    "{id}"
                );
                if event.campaign != named {
                    lines.push(format!("{id}: {named} counted as {}", event.campaign));
                }
            }
            Applied::Duplicate { conflict: false } => lines.push(format!("{id}: duplicate")),
            Applied::Duplicate { conflict: true } => {
                lines.push(format!("{id}: duplicate, conflict"));
            }
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

fn owned(campaigns: &[&str]) -> Vec<String> {
    campaigns
        .iter()
        .map(|campaign| (*campaign).to_owned())
        .collect()
}

mod examples;
mod properties;
mod release;
mod shards;
mod upgrade;
