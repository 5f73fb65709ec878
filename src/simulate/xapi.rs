//! `suivi simulate --xapi URL`: the programme sent as LMSs send it, as xAPI statements to an
//! LRS endpoint (suivi's `/xAPI`). Each learner is an account of its platform
//! (`https://<source>`, whose host is the source); the course and its chapters are the activities
//! of [`COURSE`] and [`chapter_activity`], which the service's `[xapi]` table must map
//! ([`mapping_toml`] prints it). Clicks are not learning records: they are sent apart, as the
//! tracking links' redirector sends them (see `records`).
//!
//! Statements name their campaign with the `urn:suivi:campaign` extension, except on a
//! GendForm3.0-like platform ([`TAGS_CLICKS`]), which, like the Gendarmerie's LMS, names none:
//! its learners are signed in when they follow the partner's tracking link, so their clicks are
//! tagged with their id, and their statements count under the clicks' campaign by attribution.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::proto::{EventKind, LearnerEvent};
use crate::simulate::generate::TAGS_CLICKS;
use crate::standards::CAMPAIGN_EXTENSION;

/// The simulated course's activity id.
pub const COURSE: &str = "https://objectif-ia.example/course";

/// The activity id of chapter `chapter`.
pub fn chapter_activity(chapter: u32) -> String {
    format!("{COURSE}/chapter/{chapter}")
}

/// The `[xapi]` settings a service needs to count the simulated statements (`chapters`
/// chapters).
pub fn mapping_toml(chapters: u8) -> String {
    let mut text = format!("[xapi]\ncourse = [\"{COURSE}\"]\n[xapi.chapters]\n");
    for chapter in 1..=u32::from(chapters) {
        text.push_str(&format!("\"{}\" = {chapter}\n", chapter_activity(chapter)));
    }
    text
}

/// The request bodies of a batch of events: one array of statements (clicks left out).
pub fn requests(events: &[&LearnerEvent]) -> Vec<Value> {
    let statements: Vec<Value> = events.iter().copied().filter_map(statement).collect();
    if statements.is_empty() {
        Vec::new()
    } else {
        vec![Value::Array(statements)]
    }
}

/// The learner id suivi reads from the statements of learner `learner_id` of `source`
/// (`account:NAME@HOMEPAGE`): the id the platform's tagged clicks carry.
pub fn learner_id(source: &str, learner_id: &str) -> String {
    format!("account:{learner_id}@{}", home_page(source))
}

/// The home page of a platform's accounts, whose host is the source.
fn home_page(source: &str) -> String {
    format!("https://{source}")
}

/// Whether the campaign of `event` is named in the statement its platform sends: always, but
/// on the GendForm3.0-like platform, whose learners' tagged clicks name it instead.
pub fn names_campaign(event: &LearnerEvent) -> bool {
    !event.campaign.is_empty() && event.source != TAGS_CLICKS
}

/// The statement an LMS would send for `event`, or `None` for a click.
pub fn statement(event: &LearnerEvent) -> Option<Value> {
    let kind = EventKind::try_from(event.kind).ok()?;
    let course = json!({
        "id": COURSE,
        "objectType": "Activity",
        "definition": {"type": "http://adlnet.gov/expapi/activities/course"},
    });
    let (verb, object) = match kind {
        EventKind::Enrolled => ("http://adlnet.gov/expapi/verbs/registered", course),
        EventKind::CourseStarted => ("http://adlnet.gov/expapi/verbs/launched", course),
        EventKind::ChapterCompleted => (
            "http://adlnet.gov/expapi/verbs/completed",
            json!({
                "id": chapter_activity(event.chapter),
                "objectType": "Activity",
                "definition": {"type": "http://adlnet.gov/expapi/activities/module"},
            }),
        ),
        EventKind::Certified => ("http://adlnet.gov/expapi/verbs/completed", course),
        EventKind::LinkClicked | EventKind::Unspecified => return None,
    };
    let at = event.occurred_at.as_ref().and_then(|at| {
        DateTime::<Utc>::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
    })?;
    let mut context = json!({"contextActivities": {"parent": [{"id": COURSE}]}});
    if names_campaign(event) {
        context["extensions"] = json!({ CAMPAIGN_EXTENSION: event.campaign });
    }
    Some(json!({
        "id": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, event.event_id.as_bytes()).to_string(),
        "actor": {
            "objectType": "Agent",
            "account": {"homePage": home_page(&event.source), "name": event.learner_id},
        },
        "verb": {"id": verb},
        "object": object,
        "timestamp": at.to_rfc3339(),
        "context": context,
    }))
}
