//! The Caliper mapping, case by case, on records shaped as LMSs send them.

use serde_json::json;

use super::*;

const COURSE: &str = "https://lms.example.org/courses/course-v1:Gend+Cyber+2024/";
const CHAPTER: &str =
    "https://lms.example.org/xblock/block-v1:Gend+Cyber+2024+type@chapter+block@c2";

fn mapping() -> Mapping {
    Mapping {
        chapters: [(CHAPTER.to_owned(), 2)].into(),
        sources: [("lms.example.org".to_owned(), "gendform3".to_owned())].into(),
        ..Mapping::default()
    }
}

fn envelope(data: Value) -> Vec<u8> {
    json!({
        "sensor": "https://lms.example.org/sensors/edx",
        "sendTime": "2024-03-01T10:00:01.000Z",
        "dataVersion": DATA_VERSIONS[1],
        "data": data,
    })
    .to_string()
    .into_bytes()
}

fn event(kind: &str, action: &str, object: Value) -> Value {
    json!({
        "@context": DATA_VERSIONS[1],
        "id": "urn:uuid:6a3c3f4e-0d7e-4b5e-9a51-2f0c7e9d1a01",
        "type": kind,
        "action": action,
        "actor": {"id": "5f1b7c2a-3e44-4c0b-8d3e-1a2b3c4d5e6f", "type": "Person"},
        "object": object,
        "eventTime": "2024-03-01T10:00:00.000Z",
    })
}

fn one(item: Value) -> Item {
    one_with(item, &mapping(), Defaults::default())
}

fn one_with(item: Value, mapping: &Mapping, defaults: Defaults<'_>) -> Item {
    let mut items = read(&envelope(json!([item])), mapping, defaults).expect("a valid envelope");
    assert_eq!(items.len(), 1);
    items.remove(0)
}

fn kind_of(item: &Item) -> Result<(EventKind, Option<i64>), Ignored> {
    match item {
        Item::Mapped(event) => Ok((event.kind, event.chapter)),
        Item::Ignored(ignored) => Err(*ignored),
    }
}

fn membership() -> Value {
    json!({"id": COURSE, "type": "Membership", "extensions": {"course_id": "course-v1:Gend+Cyber+2024", "mode": "audit"}})
}

fn grade(score_given: f64, max_score: f64) -> Value {
    let mut graded = event(
        "GradeEvent",
        "Graded",
        json!({"id": "urn:uuid:0b0c", "type": "Attempt", "assignable": {"id": COURSE, "type": "CourseOffering"}}),
    );
    graded["generated"] = json!({"id": "urn:uuid:0b0d", "type": "Score", "scoreGiven": score_given, "maxScore": max_score});
    graded
}

#[test]
fn open_edx_enrolment_and_completion_are_enrolled_and_certified() {
    let enrolled = one(event("Event", "Activated", membership()));
    let Item::Mapped(enrolled) = enrolled else {
        panic!("mapped: {enrolled:?}")
    };
    assert_eq!(enrolled.kind, EventKind::Enrolled);
    assert_eq!(
        enrolled.event_id,
        "urn:uuid:6a3c3f4e-0d7e-4b5e-9a51-2f0c7e9d1a01"
    );
    assert_eq!(enrolled.learner_id, "5f1b7c2a-3e44-4c0b-8d3e-1a2b3c4d5e6f");
    assert_eq!(enrolled.source, "gendform3", "the sensor's host, renamed");
    assert_eq!(enrolled.campaign, "");
    assert!(matches!(enrolled.raw().occurred_at, RawTime::At(_)));
    let completed = one(event("Event", "Completed", membership()));
    assert_eq!(kind_of(&completed), Ok((EventKind::Certified, None)));
}

#[test]
fn the_table_maps_course_and_chapter_actions() {
    let offering = json!({"id": COURSE, "type": "CourseOffering"});
    let section = json!({"id": "https://lms.example.org/sections/1", "type": "CourseSection"});
    let chapter = json!({"id": CHAPTER, "type": "DigitalResourceCollection"});
    let cases = [
        (
            event("Event", "Activated", offering.clone()),
            Ok((EventKind::Enrolled, None)),
        ),
        (
            event("Event", "Started", section),
            Ok((EventKind::CourseStarted, None)),
        ),
        (
            event("Event", "Completed", chapter.clone()),
            Ok((EventKind::ChapterCompleted, Some(2))),
        ),
        (
            event("Event", "Completed", offering.clone()),
            Ok((EventKind::Certified, None)),
        ),
        (event("Event", "Started", chapter), Err(Ignored::Object)),
        (
            event("Event", "Deactivated", membership()),
            Err(Ignored::Action),
        ),
        (
            event(
                "NavigationEvent",
                "NavigatedTo",
                json!({"id": CHAPTER, "type": "WebPage"}),
            ),
            Err(Ignored::Action),
        ),
        (
            event(
                "Event",
                "Completed",
                json!({"id": "https://lms.example.org/xblock/other", "type": "DigitalResource"}),
            ),
            Err(Ignored::Object),
        ),
        (
            event(
                "Event",
                "http://purl.imsglobal.org/vocab/caliper/action#Activated",
                offering,
            ),
            Ok((EventKind::Enrolled, None)),
        ),
        (
            json!({"id": COURSE, "type": "CourseOffering"}),
            Err(Ignored::Entity),
        ),
    ];
    for (item, expected) in cases {
        assert_eq!(kind_of(&one(item.clone())), expected, "{item}");
    }
}

#[test]
fn a_course_grade_certifies_when_it_passes() {
    assert_eq!(
        kind_of(&one(grade(10.0, 10.0))),
        Ok((EventKind::Certified, None))
    );
    assert_eq!(kind_of(&one(grade(9.0, 10.0))), Err(Ignored::NotPassing));
    let mut said = grade(7.0, 10.0);
    said["generated"]["extensions"] = json!({CALIPER_PASSED_EXTENSION: true});
    assert_eq!(kind_of(&one(said)), Ok((EventKind::Certified, None)));
    let mut refused = grade(10.0, 10.0);
    refused["extensions"] = json!({CALIPER_PASSED_EXTENSION: false});
    assert_eq!(kind_of(&one(refused)), Err(Ignored::NotPassing));
    let mut no_score = grade(1.0, 0.0);
    assert_eq!(kind_of(&one(no_score.clone())), Err(Ignored::NoScore));
    no_score
        .as_object_mut()
        .expect("an object")
        .remove("generated");
    assert_eq!(kind_of(&one(no_score)), Err(Ignored::NoScore));
    let mut quiz = grade(10.0, 10.0);
    quiz["object"]["assignable"] =
        json!({"id": "https://lms.example.org/quiz/1", "type": "Assessment"});
    assert_eq!(
        kind_of(&one(quiz)),
        Err(Ignored::Object),
        "a quiz is not the course"
    );
}

#[test]
fn listed_courses_are_matched_by_id_organization_or_course_key() {
    let listed = Mapping {
        course: vec!["course-v1:Gend+Cyber+2024".to_owned()],
        ..mapping()
    };
    let enrolment = event("Event", "Activated", membership());
    assert_eq!(
        kind_of(&one_with(enrolment, &listed, Defaults::default())),
        Ok((EventKind::Enrolled, None))
    );
    let by_url = Mapping {
        course: vec![COURSE.trim_end_matches('/').to_owned()],
        ..mapping()
    };
    let offering = event(
        "Event",
        "Started",
        json!({"id": COURSE, "type": "CourseOffering"}),
    );
    assert_eq!(
        kind_of(&one_with(offering, &by_url, Defaults::default())),
        Ok((EventKind::CourseStarted, None))
    );
    let other = event(
        "Event",
        "Started",
        json!({"id": "https://lms.example.org/courses/other", "type": "CourseOffering"}),
    );
    assert_eq!(
        kind_of(&one_with(other, &by_url, Defaults::default())),
        Err(Ignored::Object)
    );
    let in_course = event(
        "Event",
        "Activated",
        json!({"id": "urn:uuid:m1", "type": "Membership", "organization": {"id": COURSE, "type": "CourseOffering"}}),
    );
    assert_eq!(
        kind_of(&one_with(in_course, &by_url, Defaults::default())),
        Ok((EventKind::Enrolled, None))
    );
}

#[test]
fn source_and_campaign_come_from_the_credential_the_event_or_the_hosts() {
    let defaults = Defaults {
        source: Some("gendform3"),
        campaign: Some("gendarmerie"),
    };
    let Item::Mapped(plain) = one_with(
        event("Event", "Activated", membership()),
        &mapping(),
        defaults,
    ) else {
        panic!("mapped")
    };
    assert_eq!(
        (plain.source.as_str(), plain.campaign.as_str()),
        ("gendform3", "gendarmerie")
    );
    let mut named = event("Event", "Activated", membership());
    named["extensions"] = json!({CALIPER_CAMPAIGN_EXTENSION: "pole-emploi"});
    let Item::Mapped(named) = one_with(named, &mapping(), defaults) else {
        panic!("mapped")
    };
    assert_eq!(named.campaign, "pole-emploi");
    // A sensor that is no URL: the actor's host, not renamed when the table does not list it.
    let body = json!({
        "sensor": "urn:sensor:edx",
        "sendTime": "2024-03-01T10:00:01Z",
        "dataVersion": DATA_VERSIONS[0],
        "data": [{
            "id": "urn:uuid:1", "type": "Event", "action": "Activated",
            "actor": {"id": "https://User@Other.example.net:8443/u/42", "type": "Person"},
            "object": membership(), "eventTime": "2024-03-01T10:00:00Z",
        }],
    });
    let items = read(body.to_string().as_bytes(), &mapping(), Defaults::default()).expect("valid");
    let Item::Mapped(by_actor) = &items[0] else {
        panic!("mapped")
    };
    assert_eq!(by_actor.source, "other.example.net");
}

#[test]
fn malformed_envelopes_say_why() {
    let cases = [
        (b"[]".to_vec(), "must be a Caliper envelope"),
        (b"{".to_vec(), "not valid JSON"),
        (
            json!({"sendTime": "2024-03-01T10:00:01Z", "dataVersion": DATA_VERSIONS[1], "data": []}).to_string().into_bytes(),
            "sensor is missing",
        ),
        (
            json!({"sensor": "https://s", "sendTime": "2024-03-01T10:00:01Z", "dataVersion": "http://purl.imsglobal.org/ctx/caliper/v1p0", "data": []}).to_string().into_bytes(),
            "dataVersion",
        ),
        (
            json!({"sensor": "https://s", "sendTime": "yesterday", "dataVersion": DATA_VERSIONS[1], "data": []}).to_string().into_bytes(),
            "sendTime",
        ),
        (
            json!({"sensor": "https://s", "sendTime": "2024-03-01T10:00:01Z", "dataVersion": DATA_VERSIONS[1]}).to_string().into_bytes(),
            "data is missing",
        ),
        (envelope(json!([membership(), 3])), "data[1]: an item of data must be an object"),
        (
            envelope(json!([{"id": "42", "type": "Event", "action": "Activated"}])),
            "data[0]: id \"42\" is not a urn:uuid:",
        ),
        (envelope(json!([{"id": "urn:uuid:1", "type": "Event"}])), "data[0]: action is missing"),
    ];
    for (body, expected) in cases {
        let error = read(&body, &mapping(), Defaults::default()).expect_err("malformed");
        assert!(
            error.0.contains(expected),
            "{error} should say {expected:?}"
        );
    }
}

#[test]
fn hosts_are_read_from_iris() {
    assert_eq!(
        host("https://LMS.example.org/x?y#z").as_deref(),
        Some("lms.example.org")
    );
    assert_eq!(
        host("http://u:p@h.example:80").as_deref(),
        Some("h.example")
    );
    assert_eq!(host("http://[::1]:8080/").as_deref(), Some("[::1]"));
    assert_eq!(host("urn:uuid:1"), None);
    assert_eq!(host("https:///nothing"), None);
}

#[test]
fn every_ignored_reason_is_a_metric_label() {
    for ignored in Ignored::ALL {
        assert!(
            crate::telemetry::CALIPER_IGNORED_REASONS.contains(&ignored.reason()),
            "{ignored:?}"
        );
    }
    assert_eq!(
        Ignored::ALL.len(),
        crate::telemetry::CALIPER_IGNORED_REASONS.len()
    );
}
