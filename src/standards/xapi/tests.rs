//! The xAPI mapping, case by case, on records shaped as LMSs send them.

use serde_json::json;

use super::*;

fn mapping() -> Mapping {
    Mapping {
        course: Vec::new(),
        chapters: [("https://lms.example/mod/scorm/view.php?id=7".to_owned(), 3)]
            .into_iter()
            .collect(),
        sources: [("lms.example".to_owned(), "gendform3".to_owned())]
            .into_iter()
            .collect(),
    }
}

fn read(statement: &Value) -> Result<Interpreted, Malformed> {
    let mapping = mapping();
    interpret(
        statement,
        &Reading {
            mapping: &mapping,
            only_source: None,
            only_campaign: None,
            now: DateTime::parse_from_rfc3339("2024-05-01T00:00:00Z")
                .expect("a time")
                .to_utc(),
        },
    )
}

fn statement(verb: &str, object: Value) -> Value {
    json!({
        "actor": {"objectType": "Agent", "account": {"homePage": "https://LMS.example", "name": "42"}},
        "verb": {"id": verb, "display": {"en": "did"}},
        "object": object,
        "timestamp": "2024-04-02T10:00:00+02:00",
    })
}

fn course() -> Value {
    json!({"objectType": "Activity", "id": "https://lms.example/course/view.php?id=2",
           "definition": {"type": "https://w3id.org/xapi/cmi5/activitytype/course"}})
}

fn event(statement: &Value) -> MappedEvent {
    match read(statement).expect("well formed").outcome {
        Outcome::Event(event) => event,
        Outcome::Ignored(reason) => panic!("ignored: {reason:?}"),
    }
}

fn ignored(statement: &Value) -> Ignored {
    match read(statement).expect("well formed").outcome {
        Outcome::Event(event) => panic!("counted: {event:?}"),
        Outcome::Ignored(reason) => reason,
    }
}

#[test]
fn each_row_of_the_table_gives_its_kind() {
    let enrolled = event(&statement(REGISTERED, course()));
    assert_eq!(enrolled.kind, EventKind::Enrolled);
    assert_eq!(enrolled.source, "gendform3", "the host, renamed");
    assert_eq!(enrolled.learner_id, "account:42@https://LMS.example");
    assert_eq!(enrolled.campaign, "");
    assert_eq!(
        enrolled.occurred_at.to_rfc3339(),
        "2024-04-02T08:00:00+00:00"
    );
    for verb in STARTED {
        assert_eq!(
            event(&statement(verb, course())).kind,
            EventKind::CourseStarted
        );
    }
    let chapter = json!({"id": "https://lms.example/mod/scorm/view.php?id=7"});
    let completed = event(&statement(COMPLETED[1], chapter.clone()));
    assert_eq!(
        (completed.kind, completed.chapter),
        (EventKind::ChapterCompleted, Some(3))
    );
    let mut progressed = statement(PROGRESSED, chapter.clone());
    assert_eq!(ignored(&progressed), Ignored::Incomplete);
    progressed["result"] = json!({"completion": true});
    assert_eq!(event(&progressed).kind, EventKind::ChapterCompleted);
    for verb in COMPLETED.into_iter().chain(PASSED) {
        assert_eq!(event(&statement(verb, course())).kind, EventKind::Certified);
    }
    let badge = json!({"id": "https://lms.example/badges/badge.php?hash=ab",
                       "definition": {"type": "http://activitystrea.ms/schema/1.0/badge"}});
    let mut earned = statement(EARNED[1], badge.clone());
    assert_eq!(
        ignored(&earned),
        Ignored::UnmappedObject,
        "a badge outside the course"
    );
    // Moodle sends contextActivities values as an object or an array.
    earned["context"] = json!({"contextActivities": {"parent": course(), "category": [{"id": "https://lms.example"}]}});
    assert_eq!(event(&earned).kind, EventKind::Certified);
    earned["context"] = json!({"contextActivities": {"grouping": [course()]}});
    assert_eq!(event(&earned).kind, EventKind::Certified);
    assert_eq!(
        event(&statement(EARNED[2], course())).kind,
        EventKind::Certified
    );
}

#[test]
fn what_the_table_does_not_count_is_ignored_with_its_reason() {
    assert_eq!(
        ignored(&statement("http://id.tincanapi.com/verb/viewed", course())),
        Ignored::UnmappedVerb
    );
    let module = json!({"id": "https://lms.example/mod/page/view.php?id=9"});
    assert_eq!(
        ignored(&statement(COMPLETED[0], module)),
        Ignored::UnmappedObject
    );
    assert_eq!(
        ignored(&statement(
            VOIDED,
            json!({"objectType": "StatementRef", "id": "e05aa883-acaf-40ad-bf54-02c8ce485fb0"})
        )),
        Ignored::Voided
    );
    let mut group = statement(REGISTERED, course());
    group["actor"] = json!({"objectType": "Group", "member": []});
    assert_eq!(ignored(&group), Ignored::NotALearner);
    assert_eq!(
        Ignored::ALL.map(Ignored::as_str),
        crate::telemetry::XAPI_IGNORED_REASONS
    );
}

#[test]
fn a_statement_without_id_gets_the_same_id_whatever_its_key_order() {
    let first = read(&statement(REGISTERED, course())).expect("well formed");
    let reordered: Value = serde_json::from_str(
        r#"{"timestamp": "2024-04-02T10:00:00+02:00",
            "object": {"definition": {"type": "https://w3id.org/xapi/cmi5/activitytype/course"},
                       "id": "https://lms.example/course/view.php?id=2", "objectType": "Activity"},
            "verb": {"display": {"en": "did"}, "id": "http://adlnet.gov/expapi/verbs/registered"},
            "actor": {"account": {"name": "42", "homePage": "https://LMS.example"}, "objectType": "Agent"}}"#,
    )
    .expect("JSON");
    let second = read(&reordered).expect("well formed");
    assert!(!first.own_id);
    assert_eq!(first.id, second.id);
    assert_eq!(first.id.get_version_num(), 5);
    let mut other = statement(REGISTERED, course());
    other["timestamp"] = json!("2024-04-02T10:00:01+02:00");
    assert_ne!(read(&other).expect("well formed").id, first.id);
    let mut own = statement(REGISTERED, course());
    own["id"] = json!("6D1F033B-3F70-458C-B53A-E6BB63CBAEF9");
    let own = read(&own).expect("well formed");
    assert!(own.own_id);
    let Outcome::Event(event) = own.outcome else {
        panic!("counted")
    };
    assert_eq!(event.event_id, "6d1f033b-3f70-458c-b53a-e6bb63cbaef9");
}

#[test]
fn the_learner_is_the_actor_identifier_and_the_campaign_an_extension() {
    let mut by_mail = statement(REGISTERED, course());
    by_mail["actor"] = json!({"mbox": "mailto:ada@example.org"});
    assert!(
        read(&by_mail)
            .expect_err("no source")
            .0
            .contains("names no source")
    );
    let mapping = mapping();
    let reading = Reading {
        mapping: &mapping,
        only_source: Some("gendform3"),
        only_campaign: Some("gendarmerie"),
        now: Utc::now(),
    };
    let Outcome::Event(event) = interpret(&by_mail, &reading).expect("well formed").outcome else {
        panic!("counted")
    };
    assert_eq!(
        (
            event.learner_id.as_str(),
            event.source.as_str(),
            event.campaign.as_str()
        ),
        ("mailto:ada@example.org", "gendform3", "gendarmerie")
    );
    by_mail["context"] = json!({"extensions": {CAMPAIGN_EXTENSION: "pole-emploi"}});
    let Outcome::Event(event) = interpret(&by_mail, &reading).expect("well formed").outcome else {
        panic!("counted")
    };
    assert_eq!(event.campaign, "pole-emploi");
    let mut long = statement(REGISTERED, course());
    long["actor"]["account"]["name"] = json!("x".repeat(200));
    assert!(self::event(&long).learner_id.starts_with("xapi:"));
}

#[test]
fn a_malformed_statement_says_what_is_wrong() {
    for (change, expected) in [
        (json!({"id": "not-a-uuid"}), "is not a UUID"),
        (json!({"actor": {"name": "Ada"}}), "no identifier"),
        (
            json!({"verb": {"display": {"en": "did"}}}),
            "verb.id is missing",
        ),
        (json!({"object": null}), "object is missing"),
        (json!({"timestamp": "yesterday"}), "not an ISO 8601"),
        (
            json!({"context": {"contextActivities": {"parent": "x"}}}),
            "must be an activity",
        ),
        (json!({"result": {"completion": "yes"}}), "completion"),
    ] {
        let mut bad = statement(REGISTERED, course());
        for (key, value) in change.as_object().expect("an object") {
            bad[key] = value.clone();
        }
        let error = read(&bad).expect_err("malformed");
        assert!(error.0.contains(expected), "{change}: {error}");
    }
    let mut no_zone = statement(REGISTERED, course());
    no_zone["timestamp"] = json!("2024-04-02T10:00:00.250");
    assert_eq!(
        event(&no_zone).occurred_at.to_rfc3339(),
        "2024-04-02T10:00:00.250+00:00"
    );
}
