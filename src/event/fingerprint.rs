//! The fingerprints of an event: of its (source, event_id), by which it is remembered; of the
//! rest of it, to tell a conflicting reuse of an id from a resend; and its event_id's first
//! bytes, by which attribution breaks ties of one instant.

use chrono::{DateTime, Utc};
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use super::{EventId, EventKind, RawEvent};

/// Calls `hash` with `parts` laid end to end, on the stack when they fit (they always do for
/// length-checked fields), so that hashing an event allocates nothing.
pub(super) fn with_concatenated<R>(parts: &[&[u8]], hash: impl FnOnce(&[u8]) -> R) -> R {
    const STACK_BYTES: usize = 512;
    let total: usize = parts.iter().map(|part| part.len()).sum();
    if total > STACK_BYTES {
        return hash(&parts.concat());
    }
    let mut buffer = [0u8; STACK_BYTES];
    let mut end = 0;
    for part in parts {
        buffer[end..end + part.len()].copy_from_slice(part);
        end += part.len();
    }
    hash(&buffer[..end])
}

/// The fingerprint by which an event is remembered: of its (normalised) source and its id, since
/// an id names one event only within its source (two LMSs may both number their events 1, 2, 3).
/// Length-prefixed, so that no two (source, id) pairs hash the same bytes. Stable across versions
/// and restarts.
pub fn event_id(source: &str, id: &str) -> EventId {
    let source_len = (source.len() as u64).to_le_bytes();
    let parts = [&source_len[..], source.as_bytes(), id.as_bytes()];
    EventId(words(&with_concatenated(&parts, xxh3_128).to_le_bytes()))
}

/// An event_id's first eight bytes as a big-endian number, zero-padded: two ids that differ
/// within those bytes compare as these numbers do.
pub fn id_prefix(id: &str) -> u64 {
    let mut bytes = [0u8; 8];
    let head = &id.as_bytes()[..id.len().min(8)];
    bytes[..head.len()].copy_from_slice(head);
    u64::from_be_bytes(bytes)
}

/// The first twelve bytes of a hash as three little-endian words.
pub(super) fn words(bytes: &[u8]) -> [u32; 3] {
    let word = |i: usize| {
        let mut four = [0u8; 4];
        four.copy_from_slice(&bytes[4 * i..4 * i + 4]);
        u32::from_le_bytes(four)
    };
    [word(0), word(1), word(2)]
}

/// 32 bits of a hash of everything of an event but its id, each text length-prefixed.
pub(super) fn content_fingerprint(
    kind: EventKind,
    campaign: &str,
    source: &str,
    raw: &RawEvent<'_>,
    occurred_at: DateTime<Utc>,
) -> u32 {
    let fields = [
        kind.as_str(),
        campaign,
        source,
        raw.learner_id,
        raw.visitor_id,
    ];
    let lengths = fields.map(|field| (field.len() as u32).to_le_bytes());
    let micros = occurred_at.timestamp_micros().to_le_bytes();
    let chapter = raw.chapter.unwrap_or(0).to_le_bytes();
    let parts: [&[u8]; 12] = [
        &lengths[0],
        fields[0].as_bytes(),
        &lengths[1],
        fields[1].as_bytes(),
        &lengths[2],
        fields[2].as_bytes(),
        &lengths[3],
        fields[3].as_bytes(),
        &lengths[4],
        fields[4].as_bytes(),
        &micros,
        &chapter,
    ];
    with_concatenated(&parts, xxh3_64) as u32
}
