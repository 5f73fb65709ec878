//! The wire forms of an event, borrowed before any rule is applied: a protobuf `LearnerEvent` or
//! a JSON object (with the HTTP field names) becomes a [`RawEvent`], which
//! [`EventParser::parse`](super::EventParser::parse) turns into an `Event` or a rejection. Every
//! field is taken as it came, loosely typed, so that a wrong value is reported by the rules with
//! its code rather than as a bare decoding error.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{EventKind, MAX_DETAIL_BYTES, RejectReason, excerpt};
use crate::proto;

/// An event as it arrived, borrowed from its wire form, before any rule is applied.
#[derive(Debug, Clone, Default)]
pub struct RawEvent<'a> {
    pub event_id: &'a str,
    pub kind: RawKind<'a>,
    pub campaign: &'a str,
    pub source: &'a str,
    pub learner_id: &'a str,
    pub visitor_id: &'a str,
    pub occurred_at: RawTime<'a>,
    pub chapter: Option<i64>,
}

/// The kind as it arrived.
#[derive(Debug, Clone, Copy, Default)]
pub enum RawKind<'a> {
    #[default]
    Missing,
    Known(EventKind),
    Unknown(&'a str),
}

/// The occurrence time as it arrived.
#[derive(Debug, Clone, Copy, Default)]
pub enum RawTime<'a> {
    #[default]
    Missing,
    At(DateTime<Utc>),
    Invalid(&'a str),
}

impl RawEvent<'_> {
    /// The event as a protobuf `LearnerEvent`, for a valid one (its kind known and its time
    /// read): what the parser reads back from it is what it read from this. `None` otherwise.
    pub fn to_proto(&self) -> Option<proto::LearnerEvent> {
        let RawKind::Known(kind) = self.kind else {
            return None;
        };
        let RawTime::At(at) = self.occurred_at else {
            return None;
        };
        let kind = match kind {
            EventKind::LinkClicked => proto::EventKind::LinkClicked,
            EventKind::Enrolled => proto::EventKind::Enrolled,
            EventKind::CourseStarted => proto::EventKind::CourseStarted,
            EventKind::ChapterCompleted => proto::EventKind::ChapterCompleted,
            EventKind::Certified => proto::EventKind::Certified,
        };
        Some(proto::LearnerEvent {
            event_id: self.event_id.to_owned(),
            kind: kind as i32,
            campaign: self.campaign.to_owned(),
            source: self.source.to_owned(),
            learner_id: self.learner_id.to_owned(),
            visitor_id: self.visitor_id.to_owned(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
            }),
            chapter: self
                .chapter
                .and_then(|chapter| u32::try_from(chapter).ok())
                .unwrap_or(0),
        })
    }
}

impl<'a> From<&'a proto::LearnerEvent> for RawEvent<'a> {
    fn from(event: &'a proto::LearnerEvent) -> RawEvent<'a> {
        let kind = match proto::EventKind::try_from(event.kind) {
            Ok(proto::EventKind::Unspecified) => RawKind::Missing,
            Ok(proto::EventKind::LinkClicked) => RawKind::Known(EventKind::LinkClicked),
            Ok(proto::EventKind::Enrolled) => RawKind::Known(EventKind::Enrolled),
            Ok(proto::EventKind::CourseStarted) => RawKind::Known(EventKind::CourseStarted),
            Ok(proto::EventKind::ChapterCompleted) => RawKind::Known(EventKind::ChapterCompleted),
            Ok(proto::EventKind::Certified) => RawKind::Known(EventKind::Certified),
            Err(_) => RawKind::Unknown("(an unknown enum number)"),
        };
        let occurred_at = match &event.occurred_at {
            None => RawTime::Missing,
            Some(at) => u32::try_from(at.nanos)
                .ok()
                .and_then(|nanos| DateTime::from_timestamp(at.seconds, nanos))
                .map_or(RawTime::Invalid("(a timestamp out of range)"), RawTime::At),
        };
        RawEvent {
            event_id: &event.event_id,
            kind,
            campaign: &event.campaign,
            source: &event.source,
            learner_id: &event.learner_id,
            visitor_id: &event.visitor_id,
            occurred_at,
            chapter: (event.chapter != 0).then_some(i64::from(event.chapter)),
        }
    }
}

/// A learner event as a JSON object, with the HTTP field names. Every field is optional and
/// loosely typed here so that a wrong value is reported by the rules, with its code, rather than
/// as a bare JSON error.
#[derive(Debug, Default, Deserialize)]
pub struct JsonEvent<'a> {
    #[serde(default, borrow)]
    pub event_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub campaign: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub source: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub learner_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub visitor_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub occurred_at: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub chapter: Option<i64>,
}

impl<'a> JsonEvent<'a> {
    /// Decodes one JSON event, or says why it is not one.
    pub fn decode(json: &'a str) -> Result<JsonEvent<'a>, RejectReason> {
        // Serde would also read a struct from an array, field after field; an event must be an
        // object, so that an array is reported as one and not as a missing event_id.
        if !json.trim_start().starts_with('{') {
            return Err(RejectReason::InvalidEvent(
                "expected a JSON object with the event's fields".to_owned(),
            ));
        }
        serde_json::from_str(json).map_err(|error| {
            RejectReason::InvalidEvent(excerpt(&error.to_string(), MAX_DETAIL_BYTES))
        })
    }

    /// Borrows this object as a raw event.
    pub fn raw(&self) -> RawEvent<'_> {
        fn text<'s>(field: &'s Option<std::borrow::Cow<'_, str>>) -> &'s str {
            field.as_deref().unwrap_or("")
        }
        RawEvent {
            event_id: text(&self.event_id),
            kind: match self.kind.as_deref() {
                None | Some("") => RawKind::Missing,
                Some(name) => {
                    EventKind::from_name(name).map_or(RawKind::Unknown(name), RawKind::Known)
                }
            },
            campaign: text(&self.campaign),
            source: text(&self.source),
            learner_id: text(&self.learner_id),
            visitor_id: text(&self.visitor_id),
            occurred_at: match self.occurred_at.as_deref() {
                None | Some("") => RawTime::Missing,
                Some(at) => DateTime::parse_from_rfc3339(at)
                    .map_or(RawTime::Invalid(at), |at| RawTime::At(at.to_utc())),
            },
            chapter: self.chapter,
        }
    }
}
