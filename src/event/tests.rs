//! Tests of event parsing: tables of wire events, as JSON objects or protobuf messages, each with
//! the outcome the rules of the product design (§2) give it, written as one line of text so that
//! a table reads like the rules it checks.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};

use super::*;
use crate::proto;

/// The pseudonymisation key of every test parser unless a test needs another.
const PSEUDONYM_KEY: [u8; 32] = [0xA7; 32];

/// The parser of a course of 12 chapters, the default course.
fn parser() -> EventParser {
    EventParser::new(12, PSEUDONYM_KEY)
}

/// The fixed "now" of every parse, so that the time rules are tested at exact distances from it.
fn now() -> DateTime<Utc> {
    instant("2021-01-25T12:00:00Z")
}

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test instants are RFC 3339")
        .to_utc()
}

/// A valid enrolment as JSON, with `changes` applied: a field set to `null` in `changes` is
/// removed from the object, so that tables can say "without this field".
fn event(changes: Value) -> String {
    let mut object = json!({
        "event_id": "event-1",
        "kind": "enrolled",
        "campaign": "gendarmerie",
        "source": "gendform3",
        "learner_id": "learner-1",
        "occurred_at": "2021-01-25T10:00:00Z",
    });
    let fields = object.as_object_mut().expect("the base event is an object");
    for (name, value) in changes.as_object().expect("changes are an object") {
        if value.is_null() {
            fields.remove(name);
        } else {
            fields.insert(name.clone(), value.clone());
        }
    }
    object.to_string()
}

/// The same valid enrolment as a protobuf message.
fn proto_event() -> proto::LearnerEvent {
    proto::LearnerEvent {
        event_id: "event-1".to_owned(),
        kind: proto::EventKind::Enrolled.into(),
        campaign: "gendarmerie".to_owned(),
        source: "gendform3".to_owned(),
        learner_id: "learner-1".to_owned(),
        visitor_id: String::new(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: instant("2021-01-25T10:00:00Z").timestamp(),
            nanos: 0,
        }),
        chapter: 0,
    }
}

fn parse_json(parser: &EventParser, json: &str) -> Result<Event, RejectReason> {
    JsonEvent::decode(json).and_then(|decoded| parser.parse(&decoded.raw(), now()))
}

fn parse_json_ok(parser: &EventParser, json: &str) -> Event {
    parse_json(parser, json).unwrap_or_else(|reason| panic!("{json} is valid, yet: {reason}"))
}

/// One line saying what became of an event: what it counts for, or the code it was rejected with.
fn outcome(result: Result<Event, RejectReason>) -> String {
    match result {
        Err(RejectReason::FieldTooLong { field, len, limit }) => {
            format!("rejected field_too_long: {field} {len} > {limit}")
        }
        Err(reason) => format!("rejected {}", reason.code()),
        Ok(event) => {
            let what = match event.action {
                Action::Click { visitor, learner } => format!(
                    "link_clicked {} visitor{}",
                    if visitor.is_some() { "with" } else { "without" },
                    if learner.is_some() { ", tagged" } else { "" }
                ),
                Action::Progress {
                    stage: Stage::ChapterCompleted(chapter),
                    ..
                } => format!("chapter_completed {chapter}"),
                Action::Progress { .. } => event.kind().as_str().to_owned(),
                Action::Names { .. } => "names a campaign".to_owned(),
            };
            let at = event
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::AutoSi, true);
            format!("{what} in {} at {at}", event.campaign)
        }
    }
}

#[track_caller]
fn check(json: &str, expected: &str) {
    assert_eq!(outcome(parse_json(&parser(), json)), expected, "for {json}");
}

#[track_caller]
fn check_proto(event: &proto::LearnerEvent, expected: &str) {
    let actual = parser().parse(&RawEvent::from(event), now());
    assert_eq!(outcome(actual), expected, "for {event:?}");
}

/// A text of `len` bytes.
fn bytes(len: usize) -> String {
    "x".repeat(len)
}

/// What the base event parses to.
const ENROLLED: &str = "enrolled in gendarmerie at 2021-01-25T10:00:00Z";

#[test]
fn the_base_event_is_valid_in_both_wire_forms() {
    check(&event(json!({})), ENROLLED);
    check_proto(&proto_event(), ENROLLED);
}

#[test]
fn event_id_is_required_and_at_most_128_bytes() {
    check(
        &event(json!({"event_id": null})),
        "rejected missing_event_id",
    );
    check(&event(json!({"event_id": ""})), "rejected missing_event_id");
    check(&event(json!({"event_id": bytes(128)})), ENROLLED);
    check(
        &event(json!({"event_id": bytes(129)})),
        "rejected field_too_long: event_id 129 > 128",
    );
    // The limit is in bytes, not characters: "é" is two bytes in UTF-8.
    check(&event(json!({"event_id": "é".repeat(64)})), ENROLLED);
    check(
        &event(json!({"event_id": "é".repeat(65)})),
        "rejected field_too_long: event_id 130 > 128",
    );
    check_proto(
        &proto::LearnerEvent {
            event_id: String::new(),
            ..proto_event()
        },
        "rejected missing_event_id",
    );
}

#[test]
fn kind_is_required_and_one_of_five_names() {
    for (kind, expected) in [
        ("link_clicked", "link_clicked without visitor, tagged"),
        ("enrolled", "enrolled"),
        ("course_started", "course_started"),
        ("certified", "certified"),
    ] {
        check(
            &event(json!({"kind": kind})),
            &format!("{expected} in gendarmerie at 2021-01-25T10:00:00Z"),
        );
    }
    check(
        &event(json!({"kind": "chapter_completed", "chapter": 3})),
        "chapter_completed 3 in gendarmerie at 2021-01-25T10:00:00Z",
    );
    check(&event(json!({"kind": null})), "rejected invalid_kind");
    check(&event(json!({"kind": ""})), "rejected invalid_kind");
    check(
        &event(json!({"kind": "graduated"})),
        "rejected invalid_kind",
    );
    // Kind names are exact: the wire names are snake_case, and nothing else is guessed at.
    check(&event(json!({"kind": "Enrolled"})), "rejected invalid_kind");
    check(
        &event(json!({"kind": " enrolled"})),
        "rejected invalid_kind",
    );
    check(
        &event(json!({"kind": "EVENT_KIND_ENROLLED"})),
        "rejected invalid_kind",
    );
    check_proto(
        &proto::LearnerEvent {
            kind: proto::EventKind::Unspecified.into(),
            ..proto_event()
        },
        "rejected invalid_kind",
    );
    // A newer sender may use an enum number this build does not know.
    check_proto(
        &proto::LearnerEvent {
            kind: 99,
            ..proto_event()
        },
        "rejected invalid_kind",
    );
    check_proto(
        &proto::LearnerEvent {
            kind: proto::EventKind::Certified.into(),
            ..proto_event()
        },
        "certified in gendarmerie at 2021-01-25T10:00:00Z",
    );
}

#[test]
fn campaign_is_trimmed_lower_cased_and_direct_when_empty() {
    for (campaign, expected) in [
        (json!("gendarmerie"), "gendarmerie"),
        (json!("  La-Poste\t"), "la-poste"),
        (json!("ÉDUCATION-Nationale"), "éducation-nationale"),
        (json!(null), "direct"),
        (json!(""), "direct"),
        (json!("   "), "direct"),
        // Naming the direct campaign is the same as giving none.
        (json!("DIRECT"), "direct"),
    ] {
        check(
            &event(json!({ "campaign": campaign })),
            &format!("enrolled in {expected} at 2021-01-25T10:00:00Z"),
        );
    }
    let campaign_of_64_bytes = bytes(64);
    check(
        &event(json!({ "campaign": campaign_of_64_bytes })),
        &format!("enrolled in {campaign_of_64_bytes} at 2021-01-25T10:00:00Z"),
    );
    // The limit applies to the normalised campaign: spaces around it do not count.
    check(
        &event(json!({ "campaign": format!("  {campaign_of_64_bytes}  ") })),
        &format!("enrolled in {campaign_of_64_bytes} at 2021-01-25T10:00:00Z"),
    );
    check(
        &event(json!({"campaign": bytes(65)})),
        "rejected field_too_long: campaign 65 > 64",
    );
    check_proto(
        &proto::LearnerEvent {
            campaign: " Gendarmerie ".to_owned(),
            ..proto_event()
        },
        ENROLLED,
    );
    check_proto(
        &proto::LearnerEvent {
            campaign: String::new(),
            ..proto_event()
        },
        "enrolled in direct at 2021-01-25T10:00:00Z",
    );
}

#[test]
fn campaign_may_not_name_the_programme_totals() {
    // "*" is the id under which the totals are published; a campaign of that name would be
    // mistaken for them by every reader.
    check(
        &event(json!({"campaign": "*"})),
        "rejected invalid_campaign",
    );
    check(
        &event(json!({"campaign": " * "})),
        "rejected invalid_campaign",
    );
    check_proto(
        &proto::LearnerEvent {
            campaign: "*".to_owned(),
            ..proto_event()
        },
        "rejected invalid_campaign",
    );
}

#[test]
fn source_is_required_and_at_most_64_bytes() {
    check(&event(json!({"source": null})), "rejected missing_source");
    check(&event(json!({"source": ""})), "rejected missing_source");
    check(&event(json!({"source": "  "})), "rejected missing_source");
    check(&event(json!({"source": bytes(64)})), ENROLLED);
    check(
        &event(json!({"source": format!(" {} ", bytes(64))})),
        ENROLLED,
    );
    check(
        &event(json!({"source": bytes(65)})),
        "rejected field_too_long: source 65 > 64",
    );
    check_proto(
        &proto::LearnerEvent {
            source: String::new(),
            ..proto_event()
        },
        "rejected missing_source",
    );
}

#[test]
fn learner_id_is_required_for_every_kind_but_link_clicked() {
    for (kind, chapter) in [
        ("enrolled", None),
        ("course_started", None),
        ("chapter_completed", Some(1)),
        ("certified", None),
    ] {
        check(
            &event(json!({"kind": kind, "chapter": chapter, "learner_id": null})),
            "rejected missing_learner_id",
        );
        check(
            &event(json!({"kind": kind, "chapter": chapter, "learner_id": ""})),
            "rejected missing_learner_id",
        );
    }
    check(
        &event(json!({"kind": "link_clicked", "learner_id": null})),
        "link_clicked without visitor in gendarmerie at 2021-01-25T10:00:00Z",
    );
    // A click whose platform knew the learner is tagged with the learner's pseudonym.
    check(
        &event(json!({"kind": "link_clicked"})),
        "link_clicked without visitor, tagged in gendarmerie at 2021-01-25T10:00:00Z",
    );
    check(&event(json!({"learner_id": bytes(128)})), ENROLLED);
    check(
        &event(json!({"learner_id": bytes(129)})),
        "rejected field_too_long: learner_id 129 > 128",
    );
    check_proto(
        &proto::LearnerEvent {
            learner_id: String::new(),
            ..proto_event()
        },
        "rejected missing_learner_id",
    );
    check_proto(
        &proto::LearnerEvent {
            kind: proto::EventKind::LinkClicked.into(),
            learner_id: String::new(),
            ..proto_event()
        },
        "link_clicked without visitor in gendarmerie at 2021-01-25T10:00:00Z",
    );
}

#[test]
fn visitor_id_is_optional_and_at_most_128_bytes() {
    check(
        &event(json!({"kind": "link_clicked", "visitor_id": "browser-1"})),
        "link_clicked with visitor, tagged in gendarmerie at 2021-01-25T10:00:00Z",
    );
    check(
        &event(json!({"kind": "link_clicked", "visitor_id": ""})),
        "link_clicked without visitor, tagged in gendarmerie at 2021-01-25T10:00:00Z",
    );
    check(
        &event(json!({"kind": "link_clicked", "visitor_id": bytes(128)})),
        "link_clicked with visitor, tagged in gendarmerie at 2021-01-25T10:00:00Z",
    );
    check(
        &event(json!({"kind": "link_clicked", "visitor_id": bytes(129)})),
        "rejected field_too_long: visitor_id 129 > 128",
    );
    // A visitor id on another kind means nothing and is ignored.
    check(&event(json!({"visitor_id": "browser-1"})), ENROLLED);
}

#[test]
fn occurred_at_is_required_rfc_3339_and_within_bounds() {
    check(
        &event(json!({"occurred_at": null})),
        "rejected missing_occurred_at",
    );
    check(
        &event(json!({"occurred_at": ""})),
        "rejected missing_occurred_at",
    );
    for not_rfc_3339 in [
        "yesterday",
        "2021-01-25",
        "2021-01-25T10:00:00",
        "2021-02-30T10:00:00Z",
        "25/01/2021 10:00",
    ] {
        check(
            &event(json!({ "occurred_at": not_rfc_3339 })),
            "rejected invalid_occurred_at",
        );
    }
    // Offsets are honoured and the instant is kept in UTC.
    check(
        &event(json!({"occurred_at": "2021-01-25T11:00:00+01:00"})),
        ENROLLED,
    );
    check(
        &event(json!({"occurred_at": "2021-01-25T10:00:00.250Z"})),
        "enrolled in gendarmerie at 2021-01-25T10:00:00.250Z",
    );

    // Up to five minutes ahead of now is tolerated for clocks that run a little fast.
    let ahead_of_now = |delta: TimeDelta| {
        event(json!({"occurred_at": (now() + delta).to_rfc3339_opts(SecondsFormat::AutoSi, true)}))
    };
    check(
        &ahead_of_now(TimeDelta::minutes(5) - TimeDelta::seconds(1)),
        "enrolled in gendarmerie at 2021-01-25T12:04:59Z",
    );
    check(
        &ahead_of_now(TimeDelta::minutes(5)),
        "enrolled in gendarmerie at 2021-01-25T12:05:00Z",
    );
    check(
        &ahead_of_now(TimeDelta::minutes(5) + TimeDelta::milliseconds(1)),
        "rejected occurred_at_in_future",
    );
    check(
        &ahead_of_now(TimeDelta::days(1)),
        "rejected occurred_at_in_future",
    );

    check(
        &event(json!({"occurred_at": "2018-01-01T00:00:00Z"})),
        "enrolled in gendarmerie at 2018-01-01T00:00:00Z",
    );
    check(
        &event(json!({"occurred_at": "2017-12-31T23:59:59Z"})),
        "rejected occurred_at_too_old",
    );
    // Half past midnight in Paris on 1 January 2018 is still 2017 in UTC, the reference.
    check(
        &event(json!({"occurred_at": "2018-01-01T00:30:00+01:00"})),
        "rejected occurred_at_too_old",
    );
    check(
        &event(json!({"occurred_at": "1970-01-01T00:00:00Z"})),
        "rejected occurred_at_too_old",
    );

    check_proto(
        &proto::LearnerEvent {
            occurred_at: None,
            ..proto_event()
        },
        "rejected missing_occurred_at",
    );
    check_proto(
        &proto::LearnerEvent {
            occurred_at: Some(prost_types::Timestamp {
                seconds: instant("2021-01-25T10:00:00Z").timestamp(),
                nanos: -1,
            }),
            ..proto_event()
        },
        "rejected invalid_occurred_at",
    );
    check_proto(
        &proto::LearnerEvent {
            occurred_at: Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            }),
            ..proto_event()
        },
        "rejected invalid_occurred_at",
    );
    check_proto(
        &proto::LearnerEvent {
            occurred_at: Some(prost_types::Timestamp {
                seconds: (now() + TimeDelta::minutes(6)).timestamp(),
                nanos: 0,
            }),
            ..proto_event()
        },
        "rejected occurred_at_in_future",
    );
    check_proto(
        &proto::LearnerEvent {
            occurred_at: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..proto_event()
        },
        "rejected occurred_at_too_old",
    );
}

#[test]
fn chapter_is_required_for_chapter_completed_and_within_the_course() {
    let chapter_completed =
        |chapter: Value| event(json!({"kind": "chapter_completed", "chapter": chapter}));
    check(
        &chapter_completed(json!(1)),
        "chapter_completed 1 in gendarmerie at 2021-01-25T10:00:00Z",
    );
    check(
        &chapter_completed(json!(12)),
        "chapter_completed 12 in gendarmerie at 2021-01-25T10:00:00Z",
    );
    check(&chapter_completed(json!(null)), "rejected missing_chapter");
    // Protobuf cannot tell 0 from "not set", so JSON's 0 is read as missing too: the same event
    // gets the same answer over either transport.
    check(&chapter_completed(json!(0)), "rejected missing_chapter");
    for out_of_range in [
        json!(13),
        json!(-1),
        json!(256),
        json!(i64::MAX),
        json!(i64::MIN),
    ] {
        check(
            &chapter_completed(out_of_range),
            "rejected chapter_out_of_range",
        );
    }
    // The bound is the configured course, not the default one.
    let short_course = EventParser::new(4, PSEUDONYM_KEY);
    assert_eq!(
        outcome(parse_json(&short_course, &chapter_completed(json!(4)))),
        "chapter_completed 4 in gendarmerie at 2021-01-25T10:00:00Z"
    );
    assert_eq!(
        outcome(parse_json(&short_course, &chapter_completed(json!(5)))),
        "rejected chapter_out_of_range"
    );
    // A chapter on another kind means nothing and is ignored.
    check(&event(json!({"chapter": 3})), ENROLLED);
    check(&event(json!({"chapter": 99})), ENROLLED);

    let proto_chapter_completed = |chapter: u32| proto::LearnerEvent {
        kind: proto::EventKind::ChapterCompleted.into(),
        chapter,
        ..proto_event()
    };
    check_proto(
        &proto_chapter_completed(12),
        "chapter_completed 12 in gendarmerie at 2021-01-25T10:00:00Z",
    );
    check_proto(&proto_chapter_completed(0), "rejected missing_chapter");
    check_proto(
        &proto_chapter_completed(13),
        "rejected chapter_out_of_range",
    );
    check_proto(
        &proto_chapter_completed(u32::MAX),
        "rejected chapter_out_of_range",
    );
}

#[test]
fn json_of_the_wrong_shape_is_an_invalid_event() {
    for wrong_type in [
        json!({"event_id": 42}),
        json!({"kind": 2}),
        json!({"campaign": ["gendarmerie"]}),
        json!({"source": {"name": "gendform3"}}),
        json!({"learner_id": 7}),
        json!({"visitor_id": true}),
        json!({"occurred_at": 1_611_568_800}),
        json!({"chapter": "3"}),
        json!({"chapter": 3.5}),
    ] {
        check(&event(wrong_type), "rejected invalid_event");
    }
    for not_an_event in ["[]", "42", "\"enrolled\"", "null", "{", ""] {
        check(not_an_event, "rejected invalid_event");
    }
    // An event is an object: its fields in a row are not read by position.
    check(
        r#"["event-1", "enrolled", "gendarmerie", "gendform3", "learner-1", "", "2021-01-25T10:00:00Z"]"#,
        "rejected invalid_event",
    );
    // JSON null is the same as leaving the field out.
    check(
        r#"{"event_id": null, "kind": "enrolled", "source": "gendform3", "learner_id": "learner-1", "occurred_at": "2021-01-25T10:00:00Z"}"#,
        "rejected missing_event_id",
    );
    check(
        r#"{"event_id": "event-1", "kind": "enrolled", "campaign": null, "source": "gendform3", "learner_id": "learner-1", "occurred_at": "2021-01-25T10:00:00Z"}"#,
        "enrolled in direct at 2021-01-25T10:00:00Z",
    );
    // Fields this version does not know are left alone, so that senders can add some.
    check(&event(json!({"utm_source": "newsletter"})), ENROLLED);
}

#[test]
fn every_code_the_parser_gives_is_listed_and_explained() {
    // One event per reason the parser can give: the aggregate rejects nothing valid.
    let one_event_per_reason = [
        event(json!({"event_id": ""})),
        event(json!({"event_id": bytes(129)})),
        event(json!({"kind": "graduated"})),
        event(json!({"campaign": "*"})),
        event(json!({"source": ""})),
        event(json!({"source": "lms\u{0}"})),
        event(json!({"learner_id": ""})),
        event(json!({"occurred_at": ""})),
        event(json!({"occurred_at": "yesterday"})),
        event(json!({"occurred_at": "2031-01-01T00:00:00Z"})),
        event(json!({"occurred_at": "2017-01-01T00:00:00Z"})),
        event(json!({"kind": "chapter_completed"})),
        event(json!({"kind": "chapter_completed", "chapter": 13})),
        event(json!({"chapter": "one"})),
    ];
    let mut codes_given = Vec::new();
    for json in &one_event_per_reason {
        let reason = parse_json(&parser(), json).expect_err("every event here is invalid");
        let message = reason.to_string();
        // Messages follow the house style: lowercase, no trailing period.
        assert!(
            message.starts_with(|first: char| first.is_lowercase()) && !message.ends_with('.'),
            "{message:?}"
        );
        codes_given.push(reason.code());
    }
    codes_given.sort_unstable();
    // The credential's checks (`auth::Caller`) give the others.
    let from_credentials = [
        "source_not_allowed",
        "campaign_not_allowed",
        "campaign_quota_exceeded",
    ];
    let mut codes_listed: Vec<&str> = RejectReason::CODES
        .into_iter()
        .filter(|code| !from_credentials.contains(code))
        .collect();
    codes_listed.sort_unstable();
    assert_eq!(codes_given, codes_listed);
}

fn learner_key(parser: &EventParser, json: &str) -> LearnerKey {
    match parse_json_ok(parser, json).action {
        Action::Progress { learner, .. } => learner,
        Action::Click { .. } | Action::Names { .. } => panic!("{json} is not a progress event"),
    }
}

fn visitor_key(parser: &EventParser, json: &str) -> VisitorKey {
    match parse_json_ok(parser, json).action {
        Action::Click {
            visitor: Some(visitor),
            ..
        } => visitor,
        action => panic!("{json} is not a click with a visitor: {action:?}"),
    }
}

#[test]
fn a_tagged_click_names_the_learner_its_source_and_learner_id_name() {
    let parser = parser();
    let clicked = |fields: serde_json::Value| match parse_json_ok(&parser, &event(fields)).action {
        Action::Click {
            learner: Some(learner),
            ..
        } => learner,
        action => panic!("not a tagged click: {action:?}"),
    };
    let learner = learner_key(&parser, &event(json!({})));
    assert_eq!(clicked(json!({"kind": "link_clicked"})), learner);
    assert_eq!(
        clicked(json!({"kind": "link_clicked", "visitor_id": "browser-1"})),
        learner
    );
    assert_ne!(
        clicked(json!({"kind": "link_clicked", "source": "openclassrooms"})),
        learner
    );
}

#[test]
fn a_learner_is_a_keyed_hash_of_source_and_learner_id() {
    let parser = parser();
    let learner = learner_key(&parser, &event(json!({})));
    // The same person seen again, in any campaign and stage, is the same learner.
    for same_learner in [
        json!({"event_id": "event-2", "kind": "certified"}),
        json!({"campaign": "la-poste"}),
        json!({"source": " GendForm3 "}),
    ] {
        assert_eq!(learner, learner_key(&parser, &event(same_learner)));
    }
    // An escaped JSON string is decoded before it is hashed.
    let escaped = r#"{"event_id": "event-1", "kind": "enrolled", "source": "gendform3", "learner_id": "l\u00e9a", "occurred_at": "2021-01-25T10:00:00Z"}"#;
    assert_eq!(
        learner_key(&parser, escaped),
        learner_key(&parser, &event(json!({"learner_id": "léa"})))
    );
    // The same learner id on another platform is another person, and so is another id.
    assert_ne!(
        learner,
        learner_key(&parser, &event(json!({"source": "openclassrooms"})))
    );
    assert_ne!(
        learner,
        learner_key(&parser, &event(json!({"learner_id": "learner-2"})))
    );
    // The source's length is hashed with it, so that source and learner id cannot run together.
    assert_ne!(
        learner_key(&parser, &event(json!({"source": "ab", "learner_id": "c"}))),
        learner_key(&parser, &event(json!({"source": "a", "learner_id": "bc"})))
    );
    // Pseudonyms depend on the key: without it nobody can recompute one from a learner id.
    let other_parser = EventParser::new(12, [0x5C; 32]);
    assert_ne!(learner, learner_key(&other_parser, &event(json!({}))));
}

#[test]
fn a_visitor_is_a_keyed_hash_of_visitor_id() {
    let parser = parser();
    let click = |changes: Value| {
        let mut click = json!({"kind": "link_clicked", "visitor_id": "browser-1"});
        for (name, value) in changes.as_object().expect("changes are an object") {
            click[name] = value.clone();
        }
        event(click)
    };
    let visitor = visitor_key(&parser, &click(json!({})));
    assert_eq!(
        visitor,
        visitor_key(
            &parser,
            &click(json!({"event_id": "event-2", "campaign": "la-poste"}))
        )
    );
    assert_ne!(
        visitor,
        visitor_key(&parser, &click(json!({"visitor_id": "browser-2"})))
    );
    let other_parser = EventParser::new(12, [0x5C; 32]);
    assert_ne!(visitor, visitor_key(&other_parser, &click(json!({}))));
}

#[test]
fn ids_in_clear_never_reach_debug_output() {
    let learner_id = "lea.martin@gendarmerie.example";
    let visitor_id = "browser-of-lea-martin";
    for json in [
        event(json!({ "learner_id": learner_id })),
        event(
            json!({ "kind": "link_clicked", "learner_id": learner_id, "visitor_id": visitor_id }),
        ),
    ] {
        let parsed = parse_json_ok(&parser(), &json);
        for debug in [format!("{parsed:?}"), format!("{parsed:#?}")] {
            assert!(!debug.contains(learner_id), "{debug}");
            assert!(!debug.contains(visitor_id), "{debug}");
            assert!(!debug.contains("martin"), "{debug}");
        }
    }
}

#[test]
fn the_parser_keeps_its_key_out_of_debug_output() {
    assert_eq!(
        format!("{:?}", parser()),
        "EventParser { chapter_count: 12, .. }"
    );
    let pretty = format!("{:#?}", parser());
    // The key's bytes, 0xA7, in any notation Debug could have used.
    for byte in ["167", "a7", "A7"] {
        assert!(!pretty.contains(byte), "{pretty}");
    }
}

#[test]
fn the_content_fingerprint_tells_a_resend_from_a_conflicting_reuse() {
    let parser = parser();
    let content = |changes: Value| parse_json_ok(&parser, &event(changes)).content;
    let original = content(json!({}));
    // The same content is the same fingerprint, whatever its id or its unnormalised spelling.
    for same_content in [
        json!({}),
        json!({"event_id": "event-2"}),
        json!({"campaign": " GENDARMERIE "}),
        json!({"source": "GendForm3"}),
        json!({"occurred_at": "2021-01-25T11:00:00+01:00"}),
    ] {
        assert_eq!(original, content(same_content.clone()), "{same_content}");
    }
    for other_content in [
        json!({"kind": "course_started"}),
        json!({"campaign": "la-poste"}),
        json!({"campaign": ""}),
        json!({"source": "openclassrooms"}),
        json!({"learner_id": "learner-2"}),
        json!({"visitor_id": "browser-1"}),
        json!({"occurred_at": "2021-01-25T10:00:01Z"}),
        json!({"chapter": 3}),
    ] {
        assert_ne!(original, content(other_content.clone()), "{other_content}");
    }
    let chapter = |chapter: u8| content(json!({"kind": "chapter_completed", "chapter": chapter}));
    assert_ne!(chapter(1), chapter(2));
}

#[test]
fn the_same_event_parses_the_same_over_json_and_protobuf() {
    let json = event(json!({"kind": "chapter_completed", "chapter": 7, "campaign": " La-Poste "}));
    let proto = proto::LearnerEvent {
        kind: proto::EventKind::ChapterCompleted.into(),
        chapter: 7,
        campaign: " La-Poste ".to_owned(),
        ..proto_event()
    };
    let from_proto = parser()
        .parse(&RawEvent::from(&proto), now())
        .expect("the protobuf event is valid");
    assert_eq!(parse_json_ok(&parser(), &json), from_proto);
    assert_eq!(from_proto.id, event_id("gendform3", "event-1"));
    assert_ne!(from_proto.id, event_id("gendform3", "event-2"));
}

#[test]
fn an_event_is_identified_by_its_source_and_its_id() {
    let parser = parser();
    let id = |changes: Value| parse_json_ok(&parser, &event(changes)).id;
    let gendform = id(json!({"event_id": "lms-0001", "source": "gendform3"}));
    // Two platforms that both number their events 1, 2, 3 do not cancel each other.
    assert_ne!(
        gendform,
        id(json!({"event_id": "lms-0001", "source": "openclassrooms"}))
    );
    // Within one source an id names one event, however the source is spelled.
    assert_eq!(
        gendform,
        id(json!({"event_id": "lms-0001", "source": " GendForm3 "}))
    );
    // The source and the id are length-prefixed: no two pairs hash the same bytes.
    assert_ne!(event_id("ab", "c"), event_id("a", "bc"));
}

#[test]
fn control_and_direction_characters_are_refused_in_campaign_and_source() {
    for campaign in [
        "evil\u{0}x",
        "line\nbreak",
        "tab\there",
        "del\u{7f}",
        "c1\u{85}x",
        "gendarmerie\u{202E}eil",
        "\u{2066}isolate",
        "mark\u{200F}",
    ] {
        check(
            &event(json!({ "campaign": campaign })),
            "rejected invalid_campaign",
        );
        check(
            &event(json!({ "source": campaign })),
            "rejected invalid_source",
        );
    }
    // Accents and other scripts are fine.
    check(
        &event(json!({"campaign": "académie-de-créteil"})),
        "enrolled in académie-de-créteil at 2021-01-25T10:00:00Z",
    );
}

#[test]
fn rejection_messages_quote_at_most_a_short_prefix_of_the_value() {
    let huge = "k".repeat(5 * 1024 * 1024);
    for changes in [
        json!({ "kind": huge }),
        json!({ "occurred_at": huge }),
        json!({ "chapter": huge }),
    ] {
        let rejected = parse_json(&parser(), &event(changes)).expect_err("rejected");
        let message = rejected.to_string();
        assert!(
            message.len() < 2 * MAX_DETAIL_BYTES,
            "{} bytes: {}",
            message.len(),
            &message[..200]
        );
        assert!(message.contains("bytes in all)"), "{message}");
    }
}

#[test]
fn every_kind_of_event_reads_back_from_its_stored_form_as_it_was() {
    use prost::Message;

    let parser = parser();
    for fields in [
        json!({"kind": "link_clicked", "learner_id": null}),
        json!({"kind": "link_clicked", "learner_id": null, "visitor_id": "browser-1"}),
        json!({"kind": "link_clicked"}),
        json!({"kind": "link_clicked", "visitor_id": "browser-1"}),
        json!({"kind": "enrolled"}),
        json!({"kind": "course_started", "campaign": ""}),
        json!({"kind": "chapter_completed", "chapter": 7}),
        json!({"kind": "certified"}),
    ] {
        let event = parse_json_ok(&parser, &event(fields.clone()));
        // What a tagged click tells its learner's shard, when its visitor lives in another.
        let names = match event.action {
            Action::Click {
                learner: Some(learner),
                ..
            } => Some(Event {
                action: Action::Names { learner },
                ..event.clone()
            }),
            _ => None,
        };
        for event in std::iter::once(event).chain(names) {
            let bytes = crate::proto::storage::StoredEvent::from(&event).encode_to_vec();
            let stored = crate::proto::storage::StoredEvent::decode(bytes.as_slice())
                .expect("a stored event decodes");
            assert_eq!(Event::try_from(stored), Ok(event), "for {fields}");
        }
    }
}

#[test]
fn a_tagged_click_counts_in_its_visitors_shard_and_names_in_its_learners() {
    let parser = parser();
    let shards = 16;
    let mut split = 0;
    for number in 0..64 {
        let click = parse_json_ok(
            &parser,
            &event(json!({
                "kind": "link_clicked",
                "learner_id": format!("learner-{number}"),
                "visitor_id": format!("browser-{number}"),
            })),
        );
        let Action::Click {
            visitor: Some(visitor),
            learner: Some(learner),
        } = click.action
        else {
            panic!("a tagged click with a visitor");
        };
        let (shard, routed, names) = click.clone().route(shards);
        assert_eq!(shard, click.shard(shards));
        match names {
            None => assert_eq!(routed, click),
            Some((learner_shard, names)) => {
                split += 1;
                assert_ne!(learner_shard, shard);
                assert_eq!(
                    routed.action,
                    Action::Click {
                        visitor: Some(visitor),
                        learner: None
                    }
                );
                assert_eq!(names.action, Action::Names { learner });
                assert_eq!(names.shard(shards), learner_shard);
                assert_eq!((names.id, names.content), (click.id, click.content));
            }
        }
    }
    assert!(
        split > 32,
        "most of 64 clicks' visitors and learners are in two of 16 shards"
    );
}

proptest::proptest! {
    /// Two event_ids that differ within their first eight bytes compare as their prefixes do,
    /// so that ties of one instant go to the smaller event_id.
    #[test]
    fn event_ids_that_differ_early_compare_as_their_prefixes_do(
        a in "[ -~]{1,20}",
        b in "[ -~]{1,20}",
    ) {
        let head = |id: &str| id.as_bytes()[..id.len().min(8)].to_vec();
        if head(&a) != head(&b) {
            proptest::prop_assert_eq!(id_prefix(&a).cmp(&id_prefix(&b)), a.cmp(&b));
        } else {
            proptest::prop_assert_eq!(id_prefix(&a), id_prefix(&b));
        }
    }
}
