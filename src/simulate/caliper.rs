//! `suivi simulate --caliper URL`: the programme sent as a Caliper sensor sends it, in Caliper
//! 1.2 envelopes, one per platform in each batch (the sensor's host is the source). Learners are
//! `https://<source>/users/<id>`; the course is [`COURSE`] (a `CourseOffering`) and its chapters
//! [`chapter_activity`], the same `[xapi]` table as `--xapi` needs (`--print-xapi-mapping`). Campaigns are
//! named with the `urn:suivi:campaign` extension as `--xapi` names them (the GendForm3.0-like
//! platform names none: its learners' tagged clicks do); clicks are sent apart (`records`).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::proto::{EventKind, LearnerEvent};
use crate::simulate::xapi::{COURSE, chapter_activity, names_campaign};
use crate::standards::CALIPER_CAMPAIGN_EXTENSION;

/// The envelopes of a batch of events: one per source, in the order sources first appear.
pub fn requests(events: &[&LearnerEvent]) -> Vec<Value> {
    let mut envelopes: Vec<(String, Vec<Value>)> = Vec::new();
    for &event in events {
        let Some(item) = caliper_event(event) else {
            continue;
        };
        match envelopes
            .iter_mut()
            .find(|(source, _)| *source == event.source)
        {
            Some((_, data)) => data.push(item),
            None => envelopes.push((event.source.clone(), vec![item])),
        }
    }
    envelopes
        .into_iter()
        .map(|(source, data)| {
            json!({
                "sensor": format!("https://{source}/caliper"),
                "sendTime": Utc::now().to_rfc3339(),
                "dataVersion": "http://purl.imsglobal.org/ctx/caliper/v1p2",
                "data": data,
            })
        })
        .collect()
}

/// The learner id suivi reads from the Caliper events of learner `learner_id` of `source` (the
/// actor's IRI): the id the platform's tagged clicks carry.
pub fn learner_id(source: &str, learner_id: &str) -> String {
    format!("https://{source}/users/{learner_id}")
}

/// The Caliper event a sensor would send for `event`, or `None` for a click.
pub fn caliper_event(event: &LearnerEvent) -> Option<Value> {
    let kind = EventKind::try_from(event.kind).ok()?;
    let course = json!({"id": COURSE, "type": "CourseOffering"});
    let (action, object) = match kind {
        EventKind::Enrolled => ("Activated", course),
        EventKind::CourseStarted => ("Started", course),
        EventKind::ChapterCompleted => (
            "Completed",
            json!({"id": chapter_activity(event.chapter), "type": "DigitalResourceCollection"}),
        ),
        EventKind::Certified => ("Completed", course),
        EventKind::LinkClicked | EventKind::Unspecified => return None,
    };
    let at = event.occurred_at.as_ref().and_then(|at| {
        DateTime::<Utc>::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
    })?;
    let mut item = json!({
        "@context": "http://purl.imsglobal.org/ctx/caliper/v1p2",
        "id": format!(
            "urn:uuid:{}",
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, event.event_id.as_bytes())
        ),
        "type": "Event",
        "actor": {"id": learner_id(&event.source, &event.learner_id), "type": "Person"},
        "action": action,
        "object": object,
        "eventTime": at.to_rfc3339(),
    });
    if names_campaign(event) {
        item["extensions"] = json!({ CALIPER_CAMPAIGN_EXTENSION: event.campaign });
    }
    Some(item)
}
