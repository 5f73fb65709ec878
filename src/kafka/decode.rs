//! One Kafka message into one event: JSON with the HTTP field names, or the protobuf
//! `LearnerEvent` when the `content-type` header says `application/x-protobuf`; then the same
//! parser as gRPC and HTTP, so every rule and rejection code is the same on every transport.

use chrono::{DateTime, Utc};
use prost::Message as _;

use crate::event::{Event, EventParser, JsonEvent, Placement, RawEvent, RejectReason};
use crate::proto::LearnerEvent;

/// The content types that mean a protobuf `LearnerEvent`.
const PROTOBUF_TYPES: [&str; 2] = ["application/x-protobuf", "application/protobuf"];

/// How a message's payload is encoded, from its `content-type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

impl Encoding {
    /// The encoding named by a `content-type` header value (JSON when there is none).
    pub fn of(content_type: Option<&[u8]>) -> Encoding {
        let Some(value) = content_type.and_then(|value| std::str::from_utf8(value).ok()) else {
            return Encoding::Json;
        };
        let media_type = value.split(';').next().unwrap_or("").trim();
        if PROTOBUF_TYPES
            .iter()
            .any(|protobuf| media_type.eq_ignore_ascii_case(protobuf))
        {
            Encoding::Protobuf
        } else {
            Encoding::Json
        }
    }
}

/// Decodes and validates one message's payload.
pub fn event(
    parser: &EventParser,
    encoding: Encoding,
    payload: Option<&[u8]>,
    now: DateTime<Utc>,
) -> Result<Event, RejectReason> {
    with_raw(encoding, payload, |raw| parser.parse(raw, now))
}

/// Decodes and validates one message's payload, and says where its event belongs among
/// `partitions` partitions that are shards.
pub fn placed(
    parser: &EventParser,
    encoding: Encoding,
    payload: Option<&[u8]>,
    now: DateTime<Utc>,
    partitions: usize,
) -> Result<(Event, Placement), RejectReason> {
    with_raw(encoding, payload, |raw| {
        let event = parser.parse(raw, now)?;
        let placement = Placement::of(&event, raw, partitions);
        Ok((event, placement))
    })
}

/// Calls `read` with the event a payload holds, as it came.
fn with_raw<T>(
    encoding: Encoding,
    payload: Option<&[u8]>,
    read: impl FnOnce(&RawEvent<'_>) -> Result<T, RejectReason>,
) -> Result<T, RejectReason> {
    let payload = match payload {
        Some(payload) if !payload.is_empty() => payload,
        _ => {
            return Err(RejectReason::InvalidEvent(
                "the message is empty: a message carries one event".to_owned(),
            ));
        }
    };
    match encoding {
        Encoding::Protobuf => {
            let event = LearnerEvent::decode(payload).map_err(|error| {
                RejectReason::InvalidEvent(format!(
                    "not a protobuf LearnerEvent (content-type application/x-protobuf): {error}"
                ))
            })?;
            read(&RawEvent::from(&event))
        }
        Encoding::Json => {
            let text = std::str::from_utf8(payload)
                .map_err(|error| RejectReason::InvalidEvent(format!("not UTF-8 JSON: {error}")))?;
            let event = JsonEvent::decode(text)?;
            read(&event.raw())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> EventParser {
        EventParser::new(12, [7; 32])
    }

    #[test]
    fn the_content_type_header_chooses_protobuf_and_anything_else_is_json() {
        assert_eq!(Encoding::of(None), Encoding::Json);
        assert_eq!(Encoding::of(Some(b"application/json")), Encoding::Json);
        assert_eq!(
            Encoding::of(Some(b"application/x-protobuf")),
            Encoding::Protobuf
        );
        assert_eq!(
            Encoding::of(Some(
                b"Application/X-Protobuf; messageType=suivi.v1.LearnerEvent"
            )),
            Encoding::Protobuf
        );
        assert_eq!(Encoding::of(Some(&[0xff, 0xfe])), Encoding::Json);
    }

    #[test]
    fn json_and_protobuf_give_the_same_event() {
        let now = Utc::now();
        let json = br#"{"event_id":"e1","kind":"enrolled","campaign":"Gendarmerie","source":"gendform3","learner_id":"l1","occurred_at":"2021-03-01T10:00:00Z"}"#;
        let from_json = event(&parser(), Encoding::Json, Some(json), now).expect("valid JSON");
        let protobuf = LearnerEvent {
            event_id: "e1".to_owned(),
            kind: crate::proto::EventKind::Enrolled as i32,
            campaign: "Gendarmerie".to_owned(),
            source: "gendform3".to_owned(),
            learner_id: "l1".to_owned(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_614_592_800,
                nanos: 0,
            }),
            ..LearnerEvent::default()
        }
        .encode_to_vec();
        let from_protobuf =
            event(&parser(), Encoding::Protobuf, Some(&protobuf), now).expect("valid protobuf");
        assert_eq!(from_json, from_protobuf);
        assert_eq!(from_json.campaign, "gendarmerie");
    }

    #[test]
    fn garbage_is_rejected_with_a_code_and_a_message_a_person_can_act_on() {
        let now = Utc::now();
        for (encoding, payload) in [
            (Encoding::Json, Some(&b"not json"[..])),
            (Encoding::Json, Some(&[0xc3, 0x28][..])),
            (Encoding::Json, Some(&b"[1, 2]"[..])),
            (Encoding::Protobuf, Some(&[0xff, 0xff, 0xff][..])),
            (Encoding::Json, None),
            (Encoding::Protobuf, Some(&b""[..])),
        ] {
            let error = event(&parser(), encoding, payload, now).expect_err("garbage");
            assert_eq!(error.code(), "invalid_event", "{payload:?}");
        }
        let invalid = br#"{"event_id":"e1","kind":"enrolled","source":"s","occurred_at":"2021-03-01T10:00:00Z"}"#;
        let error = event(&parser(), Encoding::Json, Some(invalid), now).expect_err("invalid");
        assert_eq!(error.code(), "missing_learner_id");
    }
}
