//! Caliper 1.1 and 1.2 envelopes read as learner events, without I/O: [`read`] checks an
//! envelope `{sensor, sendTime, dataVersion, data[]}` and maps each of its events onto a
//! [`CaliperEvent`] (the fields of a `LearnerEvent`, still unchecked) or says why it is
//! ignored ([`Ignored`]). The HTTP route (`ingest::caliper`) submits the mapped ones.
//!
//! The mapping reads the same `[xapi]` table as xAPI ([`Mapping`]): `course` lists the course's
//! ids (empty: any `CourseOffering` or `CourseSection` is the course), `chapters` the chapter ids
//! and their numbers, `sources` the names of LMS hosts.
//!
//! | action | object | counted as |
//! |---|---|---|
//! | `Activated` | the course, or a `Membership` in it (Open edX's enrolment) | enrolled |
//! | `Started` | the course | course_started |
//! | `Completed` | a mapped chapter | chapter_completed |
//! | `Completed` | the course, or a `Membership` in it (Open edX's course completion) | certified |
//! | `Graded` | the course, or an `Attempt` whose `assignable` is the course, with a passing `generated` Score | certified |
//!
//! A Score passes when its or the event's `extensions` say so under [`CALIPER_PASSED_EXTENSION`]
//! (`true` or `false`, which wins), else when `scoreGiven` reaches `maxScore` times
//! [`PASS_RATIO`]. Everything else (navigation, views, unenrolments, problems, entities) is
//! ignored, by an [`Ignored`] reason.
//!
//! Identity: the event's `id` (`urn:uuid:…`) is its event_id. Learner: `actor.id`. Source: the
//! credential's only source, else the host of `sensor`, else of `actor.id`, renamed by
//! `sources`. Campaign: the event's `extensions` entry [`CALIPER_CAMPAIGN_EXTENSION`], else the
//! credential's only campaign, else none.

use chrono::DateTime;
use serde_json::{Map, Value};

use super::{CALIPER_CAMPAIGN_EXTENSION, CALIPER_PASSED_EXTENSION, Mapping};
use crate::event::{EventKind, RawEvent, RawKind, RawTime};

/// The `dataVersion`s (JSON-LD contexts) of the envelopes suivi reads: Caliper 1.1 and 1.2.
pub const DATA_VERSIONS: [&str; 2] = [
    "http://purl.imsglobal.org/ctx/caliper/v1p1",
    "http://purl.imsglobal.org/ctx/caliper/v1p2",
];

/// The entity types that make an entity the course when `course` lists no id.
pub const COURSE_TYPES: [&str; 2] = ["CourseOffering", "CourseSection"];

/// The share of `maxScore` a course grade's `scoreGiven` must reach to pass, when no
/// [`CALIPER_PASSED_EXTENSION`] says whether it passed: the maximum.
pub const PASS_RATIO: f64 = 1.0;

/// One event of an envelope mapped onto a learner event, its fields as they came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaliperEvent {
    /// The event's position in the envelope's `data`, from 0.
    pub index: usize,
    pub event_id: String,
    pub kind: EventKind,
    pub learner_id: String,
    pub source: String,
    pub campaign: String,
    /// `eventTime` as it came (empty when missing).
    pub event_time: String,
    pub chapter: Option<i64>,
}

impl CaliperEvent {
    /// Borrows this event as a raw learner event, for the parser.
    pub fn raw(&self) -> RawEvent<'_> {
        RawEvent {
            event_id: &self.event_id,
            kind: RawKind::Known(self.kind),
            campaign: &self.campaign,
            source: &self.source,
            learner_id: &self.learner_id,
            visitor_id: "",
            occurred_at: if self.event_time.is_empty() {
                RawTime::Missing
            } else {
                DateTime::parse_from_rfc3339(&self.event_time)
                    .map_or(RawTime::Invalid(&self.event_time), |at| {
                        RawTime::At(at.to_utc())
                    })
            },
            chapter: self.chapter,
        }
    }
}

/// Why an item of an envelope is not counted (the `reason` of
/// `suivi_caliper_events_ignored_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// An action the table does not map (`NavigatedTo`, `Viewed`, `Deactivated`, …).
    Action,
    /// A mapped action on something that is neither the course nor a mapped chapter.
    Object,
    /// A course grade below the pass mark.
    NotPassing,
    /// A course grade without a usable `generated` Score.
    NoScore,
    /// An entity described in `data`, not an event.
    Entity,
}

impl Ignored {
    /// Every reason, in the order of the metric's zero-registered series.
    pub const ALL: [Ignored; 5] = [
        Ignored::Action,
        Ignored::Object,
        Ignored::NotPassing,
        Ignored::NoScore,
        Ignored::Entity,
    ];

    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Ignored::Action => "unmapped_action",
            Ignored::Object => "unmapped_object",
            Ignored::NotPassing => "grade_not_passing",
            Ignored::NoScore => "grade_without_score",
            Ignored::Entity => "entity",
        }
    }
}

/// One item of an envelope's `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Mapped(CaliperEvent),
    Ignored(Ignored),
}

/// Why an envelope is malformed (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// What the sender's credential supplies when an event names no source or campaign.
#[derive(Debug, Clone, Copy, Default)]
pub struct Defaults<'a> {
    /// The credential's only source: the source of every event.
    pub source: Option<&'a str>,
    /// The credential's only campaign: the campaign of events that name none.
    pub campaign: Option<&'a str>,
}

/// Reads an envelope and maps each item of its `data`, in order.
pub fn read(
    body: &[u8],
    mapping: &Mapping,
    defaults: Defaults<'_>,
) -> Result<Vec<Item>, Malformed> {
    let envelope: Value = serde_json::from_slice(body)
        .map_err(|error| Malformed(format!("the body is not valid JSON: {error}")))?;
    let Value::Object(envelope) = envelope else {
        return Err(Malformed(
            "the body must be a Caliper envelope: an object {sensor, sendTime, dataVersion, data}"
                .to_owned(),
        ));
    };
    let sensor = match envelope.get("sensor") {
        Some(Value::String(sensor)) if !sensor.trim().is_empty() => sensor.as_str(),
        _ => {
            return Err(Malformed(
                "sensor is missing: the envelope must name its sensor (an IRI)".to_owned(),
            ));
        }
    };
    match envelope.get("sendTime") {
        Some(Value::String(at)) if DateTime::parse_from_rfc3339(at).is_ok() => {}
        Some(other) => {
            return Err(Malformed(format!(
                "sendTime {other} is not an ISO 8601 timestamp (e.g. 2024-01-25T10:00:00.000Z)"
            )));
        }
        None => return Err(Malformed("sendTime is missing".to_owned())),
    }
    match envelope.get("dataVersion") {
        Some(Value::String(version)) if DATA_VERSIONS.contains(&version.as_str()) => {}
        other => {
            return Err(Malformed(format!(
                "dataVersion {} is not one suivi reads: use {} (Caliper 1.1) or {} (Caliper 1.2)",
                other.map_or_else(|| "(missing)".to_owned(), Value::to_string),
                DATA_VERSIONS[0],
                DATA_VERSIONS[1]
            )));
        }
    }
    let Some(Value::Array(data)) = envelope.get("data") else {
        return Err(Malformed(
            "data is missing or not an array: put the events in data [...]".to_owned(),
        ));
    };
    data.iter()
        .enumerate()
        .map(|(index, item)| {
            map_item(index, item, sensor, mapping, defaults)
                .map_err(|message| Malformed(format!("data[{index}]: {message}")))
        })
        .collect()
}

/// Maps one item of `data`, or says why it is malformed.
fn map_item(
    index: usize,
    item: &Value,
    sensor: &str,
    mapping: &Mapping,
    defaults: Defaults<'_>,
) -> Result<Item, String> {
    let Value::Object(item) = item else {
        return Err("an item of data must be an object (an event or an entity)".to_owned());
    };
    let Some(kind) = item.get("type").and_then(Value::as_str) else {
        return Err("type is missing".to_owned());
    };
    if !short_type(kind).ends_with("Event") {
        return Ok(Item::Ignored(Ignored::Entity));
    }
    let event_id = match item.get("id").and_then(Value::as_str) {
        Some(id) if is_urn_uuid(id) => id,
        Some(id) => return Err(format!("id {id:?} is not a urn:uuid: IRI")),
        None => return Err("id is missing: every Caliper event has a urn:uuid: id".to_owned()),
    };
    let Some(action) = item.get("action").and_then(Value::as_str) else {
        return Err("action is missing".to_owned());
    };
    let (kind, chapter) = match classify(item, short_type(action), mapping) {
        Ok(mapped) => mapped,
        Err(ignored) => return Ok(Item::Ignored(ignored)),
    };
    let learner_id = item.get("actor").and_then(id_of).unwrap_or_default();
    let source = match defaults.source {
        Some(source) => source.to_owned(),
        None => host(sensor)
            .or_else(|| host(learner_id))
            .map(|host| mapping.sources.get(&host).cloned().unwrap_or(host))
            .unwrap_or_default(),
    };
    let campaign = match extensions(item).and_then(|map| map.get(CALIPER_CAMPAIGN_EXTENSION)) {
        Some(Value::String(campaign)) => campaign.clone(),
        Some(other) => {
            return Err(format!(
                "extensions[{CALIPER_CAMPAIGN_EXTENSION:?}] must be a string, not {other}"
            ));
        }
        None => defaults.campaign.unwrap_or_default().to_owned(),
    };
    let event_time = match item.get("eventTime") {
        None => String::new(),
        Some(Value::String(at)) => at.clone(),
        Some(other) => other.to_string(),
    };
    Ok(Item::Mapped(CaliperEvent {
        index,
        event_id: event_id.to_owned(),
        kind,
        learner_id: learner_id.to_owned(),
        source,
        campaign,
        event_time,
        chapter,
    }))
}

/// The learner event an event stands for, by the table of this module.
fn classify(
    event: &Map<String, Value>,
    action: &str,
    mapping: &Mapping,
) -> Result<(EventKind, Option<i64>), Ignored> {
    let object = event.get("object").unwrap_or(&Value::Null);
    match action {
        "Activated" if is_course(object, mapping) => Ok((EventKind::Enrolled, None)),
        "Started" if is_course(object, mapping) => Ok((EventKind::CourseStarted, None)),
        "Completed" => match chapter(object, mapping) {
            Some(chapter) => Ok((EventKind::ChapterCompleted, Some(i64::from(chapter)))),
            None if is_course(object, mapping) => Ok((EventKind::Certified, None)),
            None => Err(Ignored::Object),
        },
        "Graded" => {
            let graded = if entity_type(object) == Some("Attempt") {
                object.get("assignable").unwrap_or(&Value::Null)
            } else {
                object
            };
            if !is_course(graded, mapping) {
                return Err(Ignored::Object);
            }
            if passes(event)? {
                Ok((EventKind::Certified, None))
            } else {
                Err(Ignored::NotPassing)
            }
        }
        "Activated" | "Started" => Err(Ignored::Object),
        _ => Err(Ignored::Action),
    }
}

/// Whether a course grade passes: [`CALIPER_PASSED_EXTENSION`] in the Score's or the event's
/// extensions, else `scoreGiven` ≥ `maxScore` × [`PASS_RATIO`].
fn passes(event: &Map<String, Value>) -> Result<bool, Ignored> {
    let score = event.get("generated").unwrap_or(&Value::Null);
    let said = [score.as_object(), Some(event)]
        .into_iter()
        .flatten()
        .filter_map(extensions)
        .find_map(|map| map.get(CALIPER_PASSED_EXTENSION).and_then(Value::as_bool));
    if let Some(passed) = said {
        return Ok(passed);
    }
    let given = score.get("scoreGiven").and_then(Value::as_f64);
    let max = score.get("maxScore").and_then(Value::as_f64);
    match (given, max) {
        (Some(given), Some(max)) if max > 0.0 => Ok(given >= max * PASS_RATIO),
        _ => Err(Ignored::NoScore),
    }
}

/// Whether `entity` is the course: one of `course`'s ids (its `id`, its `organization`'s for a
/// `Membership`, or its `extensions.course_id`, such as an Open edX course key), or, when
/// `course` is empty, typed as a course or a `Membership` in one.
fn is_course(entity: &Value, mapping: &Mapping) -> bool {
    let membership = entity_type(entity) == Some("Membership");
    let organization = entity.get("organization");
    if !mapping.course.is_empty() {
        let ids = [
            id_of(entity),
            organization.filter(|_| membership).and_then(id_of),
            entity
                .get("extensions")
                .and_then(|map| map.get("course_id"))
                .and_then(Value::as_str),
        ];
        return ids
            .into_iter()
            .flatten()
            .any(|id| mapping.course.iter().any(|course| same_id(course, id)));
    }
    let course_typed =
        |entity: &Value| entity_type(entity).is_some_and(|t| COURSE_TYPES.contains(&t));
    if membership {
        // Open edX names the course by its URL as the Membership's id, with no organization.
        organization
            .is_none_or(|organization| organization.is_string() || course_typed(organization))
    } else {
        course_typed(entity)
    }
}

/// The chapter number of `entity`, when `chapters` maps its id.
fn chapter(entity: &Value, mapping: &Mapping) -> Option<u8> {
    let id = id_of(entity)?;
    mapping
        .chapters
        .iter()
        .find(|(chapter, _)| same_id(chapter, id))
        .map(|(_, number)| *number)
}

/// Two ids the same but for a trailing slash.
fn same_id(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// An entity's id: the entity is an object with an `id`, or (JSON-LD) the id itself.
fn id_of(entity: &Value) -> Option<&str> {
    match entity {
        Value::String(id) => Some(id),
        Value::Object(map) => map.get("id").and_then(Value::as_str),
        _ => None,
    }
}

/// An entity's type, without the context's prefix.
fn entity_type(entity: &Value) -> Option<&str> {
    entity.get("type").and_then(Value::as_str).map(short_type)
}

/// A type or action name without the IRI it may be written with
/// (`http://purl.imsglobal.org/vocab/caliper/action#Completed` is `Completed`).
fn short_type(name: &str) -> &str {
    name.rsplit(['/', '#']).next().unwrap_or(name)
}

/// The `extensions` object of an event or entity.
fn extensions(item: &Map<String, Value>) -> Option<&Map<String, Value>> {
    item.get("extensions").and_then(Value::as_object)
}

/// Whether `id` is a `urn:uuid:` IRI.
fn is_urn_uuid(id: &str) -> bool {
    id.get(..9)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("urn:uuid:"))
        && id.len() > 9
}

/// The host of an IRI with an authority (`https://lms.example.org:8443/x` is `lms.example.org`),
/// lower-case.
fn host(iri: &str) -> Option<String> {
    let (_, rest) = iri.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if host_port.starts_with('[') {
        host_port.split_inclusive(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
