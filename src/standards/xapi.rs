//! xAPI statements read as learner events: [`interpret`] checks one statement as an LRS would
//! (a malformed one is refused with the reason), gives it its id (its own, or a UUID v5 of its
//! content: see [`statement_id`]) and maps it through the [`Mapping`] table onto a
//! [`MappedEvent`], or says why it is acknowledged and not counted ([`Ignored`]). The HTTP
//! routes are `ingest::xapi`; this file knows nothing of requests, credentials or metrics.
//!
//! | verb | object | counted as |
//! |---|---|---|
//! | adlnet `registered` | the course | enrolled |
//! | adlnet `launched`, `initialized`, `attempted` | the course | course_started |
//! | adlnet or tincan `completed`, adlnet `progressed` with `result.completion: true` | a chapter of `[xapi.chapters]` | chapter_completed |
//! | the same, adlnet `passed`, adl `satisfied` | the course | certified |
//! | tincan `earned`, tla `achieved`, openbadges `earned` | the course, or any activity (a badge, a certificate) whose context `parent` or `grouping` is the course | certified |
//!
//! The course is an activity listed in `[xapi] course`, or, when that list is empty, any activity
//! typed as a course ([`COURSE_ACTIVITY_TYPES`](super::COURSE_ACTIVITY_TYPES)). Everything else is acknowledged and ignored:
//! voiding statements (suivi keeps no statements to void), groups, other verbs, other objects.
//!
//! The event: `event_id` the statement id; `learner_id` the actor's identifier (see
//! [`learner_id`]); `source` the caller's only source, else the actor's `account.homePage` host
//! (renamed by `[xapi.sources]`); `campaign` the context extension [`CAMPAIGN_EXTENSION`], else
//! the caller's only campaign, else none (attribution decides); `occurred_at` the statement's
//! `timestamp`, else its `stored`, else the time it arrived (as an LRS fills in a missing
//! timestamp).

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{CAMPAIGN_EXTENSION, Mapping};
use crate::event::{EventKind, MAX_LEARNER_ID_BYTES, RawEvent, RawKind, RawTime};

/// The namespace of the UUID v5 given to a statement that comes without an id. Never change it:
/// a re-sent statement would get another id and be counted again.
pub const STATEMENT_ID_NAMESPACE: Uuid = uuid::uuid!("3ea0b0fa-cc7f-43a9-8d47-c1004eb1c3ba");

/// The verb of a voiding statement.
pub const VOIDED: &str = "http://adlnet.gov/expapi/verbs/voided";
const REGISTERED: &str = "http://adlnet.gov/expapi/verbs/registered";
const STARTED: [&str; 3] = [
    "http://adlnet.gov/expapi/verbs/launched",
    "http://adlnet.gov/expapi/verbs/initialized",
    "http://adlnet.gov/expapi/verbs/attempted",
];
const COMPLETED: [&str; 2] = [
    "http://adlnet.gov/expapi/verbs/completed",
    "http://id.tincanapi.com/verb/completed",
];
const PROGRESSED: &str = "http://adlnet.gov/expapi/verbs/progressed";
const PASSED: [&str; 2] = [
    "http://adlnet.gov/expapi/verbs/passed",
    "https://w3id.org/xapi/adl/verbs/satisfied",
];
const EARNED: [&str; 3] = [
    "http://id.tincanapi.com/verb/earned",
    "https://w3id.org/xapi/tla/verbs/achieved",
    "https://w3id.org/xapi/openbadges/verbs/earned",
];

/// One statement read: its id and what it counts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreted {
    /// The statement's id: its own (lower-case), or the one [`statement_id`] gave it.
    pub id: Uuid,
    /// Whether the statement carried its id.
    pub own_id: bool,
    pub outcome: Outcome,
}

/// What a statement counts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Event(MappedEvent),
    Ignored(Ignored),
}

/// Why a well-formed statement is acknowledged and not counted: the `reason` label of
/// `suivi_xapi_statements_ignored_total` (`telemetry::XAPI_IGNORED_REASONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// A voiding statement: suivi keeps no statement to void, and counts stay as they are.
    Voided,
    /// The actor is a group, not a learner.
    NotALearner,
    /// A verb the mapping does not count (viewed, answered, …).
    UnmappedVerb,
    /// A counted verb on an activity that is neither the course nor a mapped chapter (a module
    /// with no chapter number, a badge outside the course, a statement as object, …).
    UnmappedObject,
    /// `progressed` without `result.completion: true`.
    Incomplete,
}

impl Ignored {
    /// Every reason, in the order of `telemetry::XAPI_IGNORED_REASONS`.
    pub const ALL: [Ignored; 5] = [
        Ignored::Voided,
        Ignored::NotALearner,
        Ignored::UnmappedVerb,
        Ignored::UnmappedObject,
        Ignored::Incomplete,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::Voided => "voided",
            Ignored::NotALearner => "not_a_learner",
            Ignored::UnmappedVerb => "unmapped_verb",
            Ignored::UnmappedObject => "unmapped_object",
            Ignored::Incomplete => "incomplete",
        }
    }
}

/// A statement mapped onto a learner event, owning its fields; [`MappedEvent::raw`] borrows it
/// as the [`RawEvent`] suivi's parser checks like any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedEvent {
    pub event_id: String,
    pub kind: EventKind,
    pub campaign: String,
    pub source: String,
    pub learner_id: String,
    pub occurred_at: DateTime<Utc>,
    pub chapter: Option<i64>,
}

impl MappedEvent {
    /// The event as suivi's parser takes it.
    pub fn raw(&self) -> RawEvent<'_> {
        RawEvent {
            event_id: &self.event_id,
            kind: RawKind::Known(self.kind),
            campaign: &self.campaign,
            source: &self.source,
            learner_id: &self.learner_id,
            visitor_id: "",
            occurred_at: RawTime::At(self.occurred_at),
            chapter: self.chapter,
        }
    }
}

/// What a statement is read with besides itself: the mapping table and what the caller's
/// credential says when it names exactly one source or campaign.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    pub mapping: &'a Mapping,
    pub only_source: Option<&'a str>,
    pub only_campaign: Option<&'a str>,
    /// When the request arrived: the time of a statement with neither timestamp nor stored.
    pub now: DateTime<Utc>,
}

/// Why a statement is malformed: the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn malformed(message: impl Into<String>) -> Malformed {
    Malformed(message.into())
}

/// Reads one statement: refuses it when malformed, else gives its id and what it counts as.
pub fn interpret(statement: &Value, reading: &Reading<'_>) -> Result<Interpreted, Malformed> {
    let Value::Object(fields) = statement else {
        return Err(malformed("a statement must be a JSON object"));
    };
    let own_id = match fields.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            Some(Uuid::try_parse(id).map_err(|_| malformed(format!("id {id:?} is not a UUID")))?)
        }
        Some(_) => return Err(malformed("id must be a UUID string")),
    };
    let actor = Actor::read(fields.get("actor"))?;
    let verb = object(fields.get("verb"), "verb")?;
    let verb = text(verb.get("id"), "verb.id")?;
    let target = Target::read(fields.get("object"))?;
    let timestamp = time(fields.get("timestamp"), "timestamp")?;
    let stored = time(fields.get("stored"), "stored")?;
    let result = optional_object(fields.get("result"), "result")?;
    let completion = match result.and_then(|result| result.get("completion")) {
        None | Some(Value::Null) => None,
        Some(Value::Bool(completion)) => Some(*completion),
        Some(_) => return Err(malformed("result.completion must be true or false")),
    };
    let context = optional_object(fields.get("context"), "context")?;
    let context_course = match context {
        None => false,
        Some(context) => context_names_course(context, reading.mapping)?,
    };
    let campaign = match context.and_then(|context| context.get("extensions")) {
        None | Some(Value::Null) => None,
        Some(Value::Object(extensions)) => match extensions.get(CAMPAIGN_EXTENSION) {
            None | Some(Value::Null) => None,
            Some(Value::String(campaign)) => Some(campaign.as_str()),
            Some(_) => {
                return Err(malformed(format!(
                    "context.extensions[{CAMPAIGN_EXTENSION:?}] must be a string: the campaign"
                )));
            }
        },
        Some(_) => return Err(malformed("context.extensions must be an object")),
    };
    let id = own_id.unwrap_or_else(|| statement_id(fields));
    let ignored = |reason| {
        Ok(Interpreted {
            id,
            own_id: own_id.is_some(),
            outcome: Outcome::Ignored(reason),
        })
    };
    if verb == VOIDED {
        return ignored(Ignored::Voided);
    }
    let Actor::Agent { learner, host } = actor else {
        return ignored(Ignored::NotALearner);
    };
    let source = match (reading.only_source, host) {
        (Some(source), _) => source.to_owned(),
        (None, Some(host)) => reading.mapping.sources.get(&host).cloned().unwrap_or(host),
        (None, None) => {
            return Err(malformed(
                "the statement names no source: its actor has no account.homePage to take the \
                 LMS host from, and the credential does not name exactly one source",
            ));
        }
    };
    let (kind, chapter) = match map(verb, &target, completion, context_course, reading.mapping) {
        Ok(mapped) => mapped,
        Err(reason) => return ignored(reason),
    };
    Ok(Interpreted {
        id,
        own_id: own_id.is_some(),
        outcome: Outcome::Event(MappedEvent {
            event_id: id.hyphenated().to_string(),
            kind,
            campaign: campaign
                .or(reading.only_campaign)
                .unwrap_or_default()
                .to_owned(),
            source,
            learner_id: learner,
            occurred_at: timestamp.or(stored).unwrap_or(reading.now),
            chapter: chapter.map(i64::from),
        }),
    })
}

/// The table: a verb on an object, to the event kind (and chapter) it counts as.
fn map(
    verb: &str,
    target: &Target,
    completion: Option<bool>,
    context_course: bool,
    mapping: &Mapping,
) -> Result<(EventKind, Option<u8>), Ignored> {
    let counted = verb == REGISTERED
        || STARTED.contains(&verb)
        || COMPLETED.contains(&verb)
        || verb == PROGRESSED
        || PASSED.contains(&verb)
        || EARNED.contains(&verb);
    if !counted {
        return Err(Ignored::UnmappedVerb);
    }
    let Target::Activity { id, kind } = target else {
        return Err(Ignored::UnmappedObject);
    };
    let is_course = mapping.is_course(id, kind.as_deref());
    if verb == REGISTERED && is_course {
        return Ok((EventKind::Enrolled, None));
    }
    if STARTED.contains(&verb) && is_course {
        return Ok((EventKind::CourseStarted, None));
    }
    if COMPLETED.contains(&verb) || verb == PROGRESSED {
        if verb == PROGRESSED && completion != Some(true) {
            return Err(Ignored::Incomplete);
        }
        if let Some(chapter) = mapping.chapters.get(id.as_str()) {
            return Ok((EventKind::ChapterCompleted, Some(*chapter)));
        }
        if is_course {
            return Ok((EventKind::Certified, None));
        }
    }
    if PASSED.contains(&verb) && is_course {
        return Ok((EventKind::Certified, None));
    }
    if EARNED.contains(&verb) && (is_course || context_course) {
        return Ok((EventKind::Certified, None));
    }
    Err(Ignored::UnmappedObject)
}

/// The id of a statement that came without one: a UUID v5 (namespace
/// [`STATEMENT_ID_NAMESPACE`]) of the canonical JSON (keys sorted, no spaces) of its `actor`,
/// `verb`, `object`, `timestamp` and `result` (`null` when absent), so that the same statement
/// sent again is the same event.
pub fn statement_id(fields: &Map<String, Value>) -> Uuid {
    let mut canonical = String::new();
    let mut parts = Map::new();
    for key in ["actor", "verb", "object", "timestamp", "result"] {
        parts.insert(
            key.to_owned(),
            fields.get(key).cloned().unwrap_or(Value::Null),
        );
    }
    write_canonical(&Value::Object(parts), &mut canonical);
    Uuid::new_v5(&STATEMENT_ID_NAMESPACE, canonical.as_bytes())
}

/// Writes `value` as JSON with every object's keys in sorted order, whatever order the map
/// keeps them in.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The actor: a learner (an agent) or a group.
enum Actor {
    Agent {
        learner: String,
        /// The host of `account.homePage`, lower-case, when the agent is identified by account.
        host: Option<String>,
    },
    Group,
}

impl Actor {
    fn read(actor: Option<&Value>) -> Result<Actor, Malformed> {
        let actor = object(actor, "actor")?;
        match actor.get("objectType") {
            None | Some(Value::Null) => {}
            Some(Value::String(kind)) if kind == "Agent" => {}
            Some(Value::String(kind)) if kind == "Group" => return Ok(Actor::Group),
            Some(other) => {
                return Err(malformed(format!(
                    "actor.objectType must be \"Agent\" or \"Group\", not {other}"
                )));
            }
        }
        let (learner, host) = learner_id(actor)?;
        Ok(Actor::Agent { learner, host })
    }
}

/// The learner id of an agent, from its identifier: `account:NAME@HOMEPAGE` for an account,
/// the `mailto:` IRI for `mbox`, `sha1:HEX` for `mbox_sha1sum`, the IRI for `openid` (in that
/// order of preference); one over 128 bytes is replaced by `xapi:` and its BLAKE3 hash in hex.
/// Like every learner id, it is pseudonymised on arrival. Also the host of the account's
/// homePage, when identified by account.
fn learner_id(actor: &Map<String, Value>) -> Result<(String, Option<String>), Malformed> {
    let (learner, host) = if let Some(account) = actor.get("account") {
        let account = object(Some(account), "actor.account")?;
        let home_page = text(account.get("homePage"), "actor.account.homePage")?;
        let name = text(account.get("name"), "actor.account.name")?;
        let host = url::Url::parse(home_page)
            .ok()
            .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
            .ok_or_else(|| {
                malformed(format!(
                    "actor.account.homePage {home_page:?} is not a URL with a host"
                ))
            })?;
        (format!("account:{name}@{home_page}"), Some(host))
    } else if let Some(mbox) = actor.get("mbox") {
        let mbox = text(Some(mbox), "actor.mbox")?;
        if !mbox.starts_with("mailto:") {
            return Err(malformed("actor.mbox must be a mailto: IRI"));
        }
        (mbox.to_owned(), None)
    } else if let Some(sum) = actor.get("mbox_sha1sum") {
        let sum = text(Some(sum), "actor.mbox_sha1sum")?;
        (format!("sha1:{}", sum.to_ascii_lowercase()), None)
    } else if let Some(openid) = actor.get("openid") {
        (text(Some(openid), "actor.openid")?.to_owned(), None)
    } else {
        return Err(malformed(
            "the actor has no identifier: give it an account (homePage and name), an mbox, an \
             mbox_sha1sum or an openid",
        ));
    };
    if learner.len() > MAX_LEARNER_ID_BYTES {
        return Ok((format!("xapi:{}", blake3::hash(learner.as_bytes())), host));
    }
    Ok((learner, host))
}

/// The statement's object: an activity, or something else (an agent, a statement).
enum Target {
    Activity { id: String, kind: Option<String> },
    Other,
}

impl Target {
    fn read(target: Option<&Value>) -> Result<Target, Malformed> {
        let target = object(target, "object")?;
        match target.get("objectType") {
            None | Some(Value::Null) => {}
            Some(Value::String(kind)) if kind == "Activity" => {}
            Some(Value::String(_)) => return Ok(Target::Other),
            Some(_) => return Err(malformed("object.objectType must be a string")),
        }
        let (id, kind) = activity(target, "object")?;
        Ok(Target::Activity {
            id: id.to_owned(),
            kind: kind.map(str::to_owned),
        })
    }
}

/// An activity's id and `definition.type`, if any.
fn activity<'a>(
    activity: &'a Map<String, Value>,
    what: &str,
) -> Result<(&'a str, Option<&'a str>), Malformed> {
    let id = text(activity.get("id"), &format!("{what}.id"))?;
    let definition = optional_object(activity.get("definition"), &format!("{what}.definition"))?;
    let kind = match definition.and_then(|definition| definition.get("type")) {
        None | Some(Value::Null) => None,
        Some(Value::String(kind)) => Some(kind.as_str()),
        Some(_) => {
            return Err(malformed(format!(
                "{what}.definition.type must be an IRI string"
            )));
        }
    };
    Ok((id, kind))
}

/// Whether the context's `parent` or `grouping` activities include the course. Each of
/// `contextActivities`' values may be one activity or an array of them (Moodle sends both).
fn context_names_course(
    context: &Map<String, Value>,
    mapping: &Mapping,
) -> Result<bool, Malformed> {
    let Some(activities) = optional_object(
        context.get("contextActivities"),
        "context.contextActivities",
    )?
    else {
        return Ok(false);
    };
    let mut names_course = false;
    for (key, value) in activities {
        let what = format!("context.contextActivities.{key}");
        let listed: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            Value::Object(_) => vec![value],
            Value::Null => Vec::new(),
            _ => {
                return Err(malformed(format!(
                    "{what} must be an activity or an array of activities"
                )));
            }
        };
        for item in listed {
            let Value::Object(item) = item else {
                return Err(malformed(format!("{what} must hold activity objects")));
            };
            let (id, kind) = activity(item, &what)?;
            if (key == "parent" || key == "grouping") && mapping.is_course(id, kind) {
                names_course = true;
            }
        }
    }
    Ok(names_course)
}

/// A required JSON object.
fn object<'a>(value: Option<&'a Value>, what: &str) -> Result<&'a Map<String, Value>, Malformed> {
    match value {
        Some(Value::Object(map)) => Ok(map),
        None | Some(Value::Null) => Err(malformed(format!("{what} is missing"))),
        Some(_) => Err(malformed(format!("{what} must be a JSON object"))),
    }
}

/// An optional JSON object.
fn optional_object<'a>(
    value: Option<&'a Value>,
    what: &str,
) -> Result<Option<&'a Map<String, Value>>, Malformed> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(malformed(format!("{what} must be a JSON object"))),
    }
}

/// A required non-empty string.
fn text<'a>(value: Option<&'a Value>, what: &str) -> Result<&'a str, Malformed> {
    match value {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text),
        None | Some(Value::Null) => Err(malformed(format!("{what} is missing"))),
        Some(_) => Err(malformed(format!("{what} must be a non-empty string"))),
    }
}

/// An optional ISO 8601 timestamp; one without a time zone is UTC (as the xAPI spec says).
fn time(value: Option<&Value>, what: &str) -> Result<Option<DateTime<Utc>>, Malformed> {
    let text = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text,
        Some(_) => return Err(malformed(format!("{what} must be an ISO 8601 string"))),
    };
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(at.to_utc()));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|at| Some(at.and_utc()))
        .map_err(|_| {
            malformed(format!(
                "{what} {text:?} is not an ISO 8601 date and time (2024-05-01T09:30:00Z)"
            ))
        })
}

#[cfg(test)]
mod tests;
