//! The one validated learner event, and the single place where wire input becomes it. Protobuf
//! messages and JSON objects are first borrowed as a [`RawEvent`], then [`EventParser::parse`]
//! applies every rule of the product design (§2) and either returns an [`Event`] or a
//! [`RejectReason`] with a stable code. Learner and visitor ids are pseudonymised here, before
//! anything keeps them. Past this module nothing re-checks an event and nothing sees wire types.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, TimeZone, Utc};

use fingerprint::{content_fingerprint, with_concatenated, words};

mod fingerprint;
mod shard;
mod stored;
mod wire;

pub use fingerprint::{event_id, id_prefix};
pub use shard::{Placement, kafka_partition};
pub use stored::MalformedStoredEvent;
pub use wire::{JsonEvent, RawEvent, RawKind, RawTime};

/// The campaign id of events that came without one.
pub const DIRECT_CAMPAIGN: &str = "direct";
/// The campaign under which events of unregistered campaigns count once
/// `max_unregistered_campaigns` of them have counters of their own.
pub const UNREGISTERED_CAMPAIGN: &str = "unregistered";
/// The campaign id under which programme totals are published.
pub const TOTALS_CAMPAIGN: &str = "*";
/// The most chapters a course may have: a learner's chapters are a 32-bit set.
pub const MAX_CHAPTER_COUNT: u8 = 32;

const MAX_EVENT_ID_BYTES: usize = 128;
const MAX_CAMPAIGN_BYTES: usize = 64;
const MAX_SOURCE_BYTES: usize = 64;
/// The longest `learner_id`, in bytes.
pub const MAX_LEARNER_ID_BYTES: usize = 128;
const MAX_VISITOR_ID_BYTES: usize = 128;
/// How far in the future an event may be dated, for clocks that run a little ahead.
const MAX_CLOCK_SKEW_MICROS: i64 = 5 * 60 * 1_000_000;

/// A learner event that passed every rule: what the rest of suivi works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    /// The event_id's first eight bytes as sent ([`id_prefix`]): with the id, the order of
    /// events of one instant ([`Event::tie_order`]).
    pub id_prefix: u64,
    /// A fingerprint of everything but the id, to tell a conflicting reuse of an id from a resend.
    pub content: u32,
    /// The normalised campaign id; [`DIRECT_CAMPAIGN`] when the event came without one.
    pub campaign: String,
    pub action: Action,
    pub occurred_at: DateTime<Utc>,
}

/// What the event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Someone followed the tracking link; `visitor` identifies the browser when it is known,
    /// and `learner` the learner when the platform knew who clicked (a *tagged click*: it names
    /// the learner's campaign for attribution, but is no stage of the funnel).
    Click {
        visitor: Option<VisitorKey>,
        learner: Option<LearnerKey>,
    },
    /// A learner reached a stage of the course.
    Progress { learner: LearnerKey, stage: Stage },
    /// What a tagged click tells its learner's shard when its visitor lives in another one
    /// ([`Event::route`]): the campaign it names, for attribution. The click itself is counted
    /// in the visitor's shard.
    Names { learner: LearnerKey },
}

/// The stages of the learner funnel, each implying the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Enrolled,
    Started,
    /// The completed chapter, from 1 to the course's chapter count.
    ChapterCompleted(u8),
    Certified,
}

/// The kinds of event on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    LinkClicked,
    Enrolled,
    CourseStarted,
    ChapterCompleted,
    Certified,
}

/// A 96-bit fingerprint of an event id: ids are remembered by it, never in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub [u32; 3]);

impl EventId {
    /// The order ids are kept in on disk (the id runs): by [`spread`]'s bits from the lowest
    /// one up, then by id. The aggregator's tables choose a key's chunk by the low bits of its
    /// spread, so in this order the ids of each chunk come together, whatever the number of
    /// chunks, and a table is built from a run chunk after chunk.
    pub fn run_order(&self) -> (u32, [u32; 3]) {
        (spread(self.0).reverse_bits(), self.0)
    }
}

/// 32 bits that depend on every bit of a fingerprint's words (MurmurHash3's finalizer over
/// them), so that fingerprints made up to vary in one word only spread as well as real ones.
pub fn spread([a, b, c]: [u32; 3]) -> u32 {
    let mut hash = a ^ b.rotate_left(11) ^ c.rotate_left(22);
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    hash ^ (hash >> 16)
}

/// A learner's pseudonym: a keyed hash of (source, learner_id). The same id on two platforms is
/// two learners, and the id in clear is never kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LearnerKey(pub [u32; 3]);

/// A visitor's pseudonym: a keyed hash of the anonymous browser id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VisitorKey(pub [u32; 3]);

/// Why an event was not counted. `code()` is the stable machine code senders branch on; the
/// message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("event_id is missing: give every event a unique id (a UUID is usual)")]
    MissingEventId,
    #[error("{field} is {len} bytes long, over its limit of {limit} bytes")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        limit: usize,
    },
    #[error(
        "kind is missing: use one of link_clicked, enrolled, course_started, chapter_completed, certified"
    )]
    MissingKind,
    #[error(
        "kind {0:?} is unknown: use one of link_clicked, enrolled, course_started, chapter_completed, certified"
    )]
    UnknownKind(String),
    #[error("campaign {0:?} is reserved for the programme totals: use another campaign id")]
    ReservedCampaign(String),
    #[error(
        "campaign contains the character {character:?} at byte {at}: control and bidirectional-override characters are not allowed in a campaign id"
    )]
    CampaignCharacter { character: char, at: usize },
    #[error(
        "source contains the character {character:?} at byte {at}: control and bidirectional-override characters are not allowed in a source"
    )]
    SourceCharacter { character: char, at: usize },
    #[error(
        "source is missing: name the platform that emitted the event (openclassrooms, gendform3, ...)"
    )]
    MissingSource,
    #[error("learner_id is missing: every {0} event must name its learner")]
    MissingLearnerId(&'static str),
    #[error("occurred_at is missing: date every event (RFC 3339, e.g. 2021-01-25T10:00:00Z)")]
    MissingOccurredAt,
    #[error("occurred_at {0:?} is not an RFC 3339 timestamp (e.g. 2021-01-25T10:00:00Z)")]
    InvalidOccurredAt(String),
    #[error("occurred_at {occurred_at} is more than 5 minutes in the future (now {now})")]
    OccurredAtInFuture {
        occurred_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error("occurred_at {0} is before 2018-01-01, the earliest date suivi accepts")]
    OccurredAtTooOld(DateTime<Utc>),
    #[error("chapter is missing (or 0): chapter_completed needs the chapter, from 1 to {0}")]
    MissingChapter(u8),
    #[error("chapter {chapter} is out of range: the course has chapters 1 to {chapter_count}")]
    ChapterOutOfRange { chapter: i64, chapter_count: u8 },
    #[error("event is not a valid JSON event object: {0}")]
    InvalidEvent(String),
    #[error("credential {credential:?} may not send events of source {name:?}")]
    SourceNotAllowed { name: String, credential: String },
    #[error("credential {credential:?} may not send events of campaign {campaign:?}")]
    CampaignNotAllowed {
        campaign: String,
        credential: String,
    },
    #[error(
        "campaign {campaign:?} is not registered, and this credential already opened its {limit} new campaigns of the day: register the campaign, or use an existing one"
    )]
    CampaignQuotaExceeded { campaign: String, limit: u32 },
}

impl RejectReason {
    /// Every code a rejection can carry, for documentation and metric pre-registration.
    pub const CODES: [&'static str; 17] = [
        "missing_event_id",
        "field_too_long",
        "invalid_kind",
        "invalid_campaign",
        "missing_source",
        "invalid_source",
        "missing_learner_id",
        "missing_occurred_at",
        "invalid_occurred_at",
        "occurred_at_in_future",
        "occurred_at_too_old",
        "missing_chapter",
        "chapter_out_of_range",
        "invalid_event",
        "source_not_allowed",
        "campaign_not_allowed",
        "campaign_quota_exceeded",
    ];

    /// The stable machine code of this reason.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::MissingEventId => "missing_event_id",
            RejectReason::FieldTooLong { .. } => "field_too_long",
            RejectReason::MissingKind | RejectReason::UnknownKind(_) => "invalid_kind",
            RejectReason::ReservedCampaign(_) | RejectReason::CampaignCharacter { .. } => {
                "invalid_campaign"
            }
            RejectReason::MissingSource => "missing_source",
            RejectReason::SourceCharacter { .. } => "invalid_source",
            RejectReason::MissingLearnerId(_) => "missing_learner_id",
            RejectReason::MissingOccurredAt => "missing_occurred_at",
            RejectReason::InvalidOccurredAt(_) => "invalid_occurred_at",
            RejectReason::OccurredAtInFuture { .. } => "occurred_at_in_future",
            RejectReason::OccurredAtTooOld(_) => "occurred_at_too_old",
            RejectReason::MissingChapter(_) => "missing_chapter",
            RejectReason::ChapterOutOfRange { .. } => "chapter_out_of_range",
            RejectReason::InvalidEvent(_) => "invalid_event",
            RejectReason::SourceNotAllowed { .. } => "source_not_allowed",
            RejectReason::CampaignNotAllowed { .. } => "campaign_not_allowed",
            RejectReason::CampaignQuotaExceeded { .. } => "campaign_quota_exceeded",
        }
    }
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::LinkClicked,
        EventKind::Enrolled,
        EventKind::CourseStarted,
        EventKind::ChapterCompleted,
        EventKind::Certified,
    ];

    /// The snake_case name used in JSON and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LinkClicked => "link_clicked",
            EventKind::Enrolled => "enrolled",
            EventKind::CourseStarted => "course_started",
            EventKind::ChapterCompleted => "chapter_completed",
            EventKind::Certified => "certified",
        }
    }

    /// The kind named `name` in JSON, if any.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

impl Event {
    /// The wire kind of this event.
    pub fn kind(&self) -> EventKind {
        match self.action {
            Action::Click { .. } | Action::Names { .. } => EventKind::LinkClicked,
            Action::Progress { stage, .. } => match stage {
                Stage::Enrolled => EventKind::Enrolled,
                Stage::Started => EventKind::CourseStarted,
                Stage::ChapterCompleted(_) => EventKind::ChapterCompleted,
                Stage::Certified => EventKind::Certified,
            },
        }
    }

    /// The order attribution breaks ties of one instant by (product.md: the smaller event_id):
    /// the ids' first eight bytes, then a word of their (source, event_id) fingerprint, so
    /// that ids alike in those bytes are still ordered the same whatever the order they come
    /// in. Compared as a whole, after the instant.
    pub fn tie_order(&self) -> [u32; 3] {
        [
            (self.id_prefix >> 32) as u32,
            self.id_prefix as u32,
            self.id.0[0],
        ]
    }
}

/// Applies the event rules: limits, the course's chapter count, and the pseudonymisation key.
pub struct EventParser {
    chapter_count: u8,
    pseudonym_key: [u8; 32],
    earliest: DateTime<Utc>,
}

impl fmt::Debug for EventParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a secret: it never reaches Debug output or logs.
        f.debug_struct("EventParser")
            .field("chapter_count", &self.chapter_count)
            .finish_non_exhaustive()
    }
}

impl EventParser {
    /// A parser for a course of `chapter_count` chapters (1 to [`MAX_CHAPTER_COUNT`], checked by
    /// config validation) that pseudonymises with `pseudonym_key`.
    pub fn new(chapter_count: u8, pseudonym_key: [u8; 32]) -> EventParser {
        EventParser {
            chapter_count,
            pseudonym_key,
            earliest: Utc
                .with_ymd_and_hms(2018, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
        }
    }

    /// The course's chapter count.
    pub fn chapter_count(&self) -> u8 {
        self.chapter_count
    }

    /// Applies every rule to `raw`, as of `now`.
    pub fn parse(&self, raw: &RawEvent<'_>, now: DateTime<Utc>) -> Result<Event, RejectReason> {
        if raw.event_id.is_empty() {
            return Err(RejectReason::MissingEventId);
        }
        check_len("event_id", raw.event_id, MAX_EVENT_ID_BYTES)?;
        let kind = match raw.kind {
            RawKind::Known(kind) => kind,
            RawKind::Missing => return Err(RejectReason::MissingKind),
            RawKind::Unknown(name) => {
                return Err(RejectReason::UnknownKind(excerpt(name, MAX_QUOTED_BYTES)));
            }
        };
        let campaign = campaign_id(raw.campaign);
        check_len("campaign", &campaign, MAX_CAMPAIGN_BYTES)?;
        if let Some((at, character)) = forbidden_character(&campaign) {
            return Err(RejectReason::CampaignCharacter { character, at });
        }
        // A campaign named like the totals would be published over them and could not be queried.
        if campaign == TOTALS_CAMPAIGN {
            return Err(RejectReason::ReservedCampaign(campaign));
        }
        let source = normalise(raw.source);
        if source.is_empty() {
            return Err(RejectReason::MissingSource);
        }
        check_len("source", &source, MAX_SOURCE_BYTES)?;
        if let Some((at, character)) = forbidden_character(&source) {
            return Err(RejectReason::SourceCharacter { character, at });
        }
        check_len("learner_id", raw.learner_id, MAX_LEARNER_ID_BYTES)?;
        check_len("visitor_id", raw.visitor_id, MAX_VISITOR_ID_BYTES)?;
        let occurred_at = match raw.occurred_at {
            RawTime::At(at) => at,
            RawTime::Missing => return Err(RejectReason::MissingOccurredAt),
            RawTime::Invalid(text) => {
                return Err(RejectReason::InvalidOccurredAt(excerpt(
                    text,
                    MAX_QUOTED_BYTES,
                )));
            }
        };
        // Compared in microseconds: chrono's checked date arithmetic costs more than the rest of
        // the rule, for every event.
        if occurred_at.timestamp_micros() > now.timestamp_micros() + MAX_CLOCK_SKEW_MICROS {
            return Err(RejectReason::OccurredAtInFuture { occurred_at, now });
        }
        if occurred_at < self.earliest {
            return Err(RejectReason::OccurredAtTooOld(occurred_at));
        }
        let action = match kind {
            EventKind::LinkClicked => Action::Click {
                visitor: (!raw.visitor_id.is_empty()).then(|| self.visitor_key(raw.visitor_id)),
                learner: (!raw.learner_id.is_empty())
                    .then(|| self.learner_key(&source, raw.learner_id)),
            },
            _ => {
                if raw.learner_id.is_empty() {
                    return Err(RejectReason::MissingLearnerId(kind.as_str()));
                }
                let stage = match kind {
                    EventKind::Enrolled => Stage::Enrolled,
                    EventKind::CourseStarted => Stage::Started,
                    EventKind::Certified => Stage::Certified,
                    _ => Stage::ChapterCompleted(self.chapter(raw.chapter)?),
                };
                Action::Progress {
                    learner: self.learner_key(&source, raw.learner_id),
                    stage,
                }
            }
        };
        Ok(Event {
            id: event_id(&source, raw.event_id),
            id_prefix: id_prefix(raw.event_id),
            content: content_fingerprint(kind, &campaign, &source, raw, occurred_at),
            campaign,
            action,
            occurred_at,
        })
    }

    fn chapter(&self, chapter: Option<i64>) -> Result<u8, RejectReason> {
        match chapter {
            None | Some(0) => Err(RejectReason::MissingChapter(self.chapter_count)),
            Some(chapter) => u8::try_from(chapter)
                .ok()
                .filter(|c| *c <= self.chapter_count)
                .ok_or(RejectReason::ChapterOutOfRange {
                    chapter,
                    chapter_count: self.chapter_count,
                }),
        }
    }

    fn learner_key(&self, source: &str, learner_id: &str) -> LearnerKey {
        LearnerKey(self.keyed_hash(b"learner", source, learner_id))
    }

    fn visitor_key(&self, visitor_id: &str) -> VisitorKey {
        VisitorKey(self.keyed_hash(b"visitor", "", visitor_id))
    }

    /// A keyed BLAKE3 hash, with the domain and a length prefix so that no two (source, id)
    /// pairs feed the same bytes.
    fn keyed_hash(&self, domain: &[u8], source: &str, id: &str) -> [u32; 3] {
        let source_len = (source.len() as u64).to_le_bytes();
        let parts = [domain, &source_len, source.as_bytes(), id.as_bytes()];
        words(
            with_concatenated(&parts, |bytes| {
                blake3::keyed_hash(&self.pseudonym_key, bytes)
            })
            .as_bytes(),
        )
    }
}

/// The most bytes of a sender's value quoted back in a rejection message: enough to recognise
/// it, never enough to let one bad value make the answer (or a log line) large.
pub const MAX_QUOTED_BYTES: usize = 64;
/// The most bytes of a decoder's error message (which may quote the value) in a rejection.
pub const MAX_DETAIL_BYTES: usize = 256;

/// `text` cut to at most `max_bytes` (on a character boundary), saying how long it was when it
/// was cut.
pub fn excerpt(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &text[..end], text.len())
}

/// The first character of `text` that has no place in an identifier shown to people and written
/// to downstream stores: a control character (C0, DEL, C1: NUL breaks PostgreSQL text, line
/// breaks break CSV rows and logs), or an invisible direction mark or override that makes an id
/// read as another (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069).
fn forbidden_character(text: &str) -> Option<(usize, char)> {
    text.char_indices().find(|(_, character)| {
        character.is_control()
            || matches!(
                character,
                '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            )
    })
}

/// Trims and lower-cases, allocating only when the text has capitals.
fn normalise(text: &str) -> Cow<'_, str> {
    let trimmed = text.trim();
    if trimmed
        .bytes()
        .all(|byte| byte.is_ascii() && !byte.is_ascii_uppercase())
    {
        Cow::Borrowed(trimmed)
    } else {
        Cow::Owned(trimmed.to_lowercase())
    }
}

fn check_len(field: &'static str, value: &str, limit: usize) -> Result<(), RejectReason> {
    if value.len() > limit {
        return Err(RejectReason::FieldTooLong {
            field,
            len: value.len(),
            limit,
        });
    }
    Ok(())
}

/// The source name a platform's `source` text stands for: trimmed and lower-case, as events
/// are identified and credentials limited by it.
pub fn source_name(text: &str) -> String {
    normalise(text).into_owned()
}

/// The campaign id a tracking link's campaign text stands for: trimmed, lower-case, and
/// [`DIRECT_CAMPAIGN`] when empty. Queries name campaigns the way events do.
pub fn campaign_id(text: &str) -> String {
    let campaign = normalise(text);
    if campaign.is_empty() {
        DIRECT_CAMPAIGN.to_owned()
    } else {
        campaign.into_owned()
    }
}

#[cfg(test)]
mod tests;
