//! A checkpoint's payload decoded on every core. A protobuf message is a sequence of fields,
//! and any run of whole fields is itself the encoding of a message: the payload is cut at field
//! boundaries into pieces of about equal size, the pieces are decoded at once, and the decoded
//! pieces are merged in order as protobuf merges (a repeated field appends, a message field
//! merges, a scalar set later wins) — the message the whole payload decodes to. A checkpoint of
//! ten million learners is gigabytes, and decoding it on one core took seconds of a restart.

use anyhow::{Context, bail};
use prost::Message;
use prost::bytes::Buf;
use prost::encoding::{WireType, decode_key, decode_varint};
use rayon::prelude::*;

use crate::proto::storage::{CampaignState, Checkpoint};

/// How many pieces each core decodes: more than one, so that a core left with small pieces
/// takes over some of another's.
const PIECES_PER_CORE: usize = 4;

/// Decodes `payload`, a `Checkpoint`, in pieces on rayon's threads.
pub(super) fn decode(payload: &[u8]) -> anyhow::Result<Checkpoint> {
    let pieces = pieces(payload, rayon::current_num_threads() * PIECES_PER_CORE)?;
    let decoded = pieces
        .par_iter()
        .map(|piece| Checkpoint::decode(*piece))
        .collect::<Result<Vec<_>, _>>()
        .context("a field does not decode")?;
    Ok(merged(decoded))
}

/// `payload` cut at field boundaries into about `count` pieces of about equal size (a field
/// is never cut, however large).
fn pieces(payload: &[u8], count: usize) -> anyhow::Result<Vec<&[u8]>> {
    let target = payload.len().div_ceil(count.max(1)).max(1);
    let mut pieces = Vec::with_capacity(count + 1);
    let mut start = 0;
    let mut rest = payload;
    while !rest.is_empty() {
        skip_field(&mut rest)?;
        let end = payload.len() - rest.len();
        if end - start >= target || rest.is_empty() {
            pieces.push(&payload[start..end]);
            start = end;
        }
    }
    Ok(pieces)
}

/// Moves `rest` past its first field.
fn skip_field(rest: &mut &[u8]) -> anyhow::Result<()> {
    let (tag, wire_type) = decode_key(rest).context("a field's key does not decode")?;
    let length = match wire_type {
        WireType::Varint => {
            decode_varint(rest).with_context(|| format!("field {tag}: a bad varint"))?;
            0
        }
        WireType::SixtyFourBit => 8,
        WireType::ThirtyTwoBit => 4,
        WireType::LengthDelimited => {
            let length =
                decode_varint(rest).with_context(|| format!("field {tag}: a bad length"))?;
            usize::try_from(length).unwrap_or(usize::MAX)
        }
        WireType::StartGroup | WireType::EndGroup => {
            bail!("field {tag}: groups are not used by checkpoints")
        }
    };
    if rest.remaining() < length {
        bail!("field {tag} runs past the end of the checkpoint");
    }
    rest.advance(length);
    Ok(())
}

/// The decoded pieces merged in order, as protobuf merges the messages they encode.
fn merged(pieces: Vec<Checkpoint>) -> Checkpoint {
    let mut whole = Checkpoint::default();
    for piece in pieces {
        merge(&mut whole, piece);
    }
    whole
}

/// A repeated field's values appended, moved rather than copied when there is nothing yet.
fn append<T>(into: &mut Vec<T>, from: Vec<T>) {
    if into.is_empty() {
        *into = from;
    } else {
        into.extend(from);
    }
}

/// A scalar set by a later piece (proto3 encodes only values that are not the default).
fn set<T: Default + PartialEq>(into: &mut T, from: T) {
    if from != T::default() {
        *into = from;
    }
}

/// Merges `from` into `into`. Every field is named, so that a field added to `Checkpoint` does
/// not compile until it is merged here.
fn merge(into: &mut Checkpoint, from: Checkpoint) {
    let Checkpoint {
        journal_position,
        seen,
        campaigns,
        totals,
        kafka_offsets,
        chapter_count,
        direct_campaigns,
        time_zone,
        event_identity,
        named_learners,
        named_at,
        named_ids,
        named_slots,
        loose_learners,
        loose_enrolled,
        loose_started,
        loose_certified,
        loose_chapters,
        own_enrolled,
        own_started,
        own_certified,
        own_chapters,
        format_version,
        id_runs,
        id_generation,
        learner_keys,
        learner_named,
        learner_loose,
        named_enrolled,
        named_started,
        named_certified,
        named_chapters,
    } = from;
    set(&mut into.journal_position, journal_position);
    append(&mut into.seen, seen);
    append(&mut into.campaigns, campaigns);
    if let Some(totals) = totals {
        match &mut into.totals {
            Some(into) => merge_campaign(into, totals),
            None => into.totals = Some(totals),
        }
    }
    append(&mut into.kafka_offsets, kafka_offsets);
    set(&mut into.chapter_count, chapter_count);
    append(&mut into.direct_campaigns, direct_campaigns);
    set(&mut into.time_zone, time_zone);
    set(&mut into.event_identity, event_identity);
    append(&mut into.named_learners, named_learners);
    append(&mut into.named_at, named_at);
    append(&mut into.named_ids, named_ids);
    append(&mut into.named_slots, named_slots);
    append(&mut into.loose_learners, loose_learners);
    append(&mut into.loose_enrolled, loose_enrolled);
    append(&mut into.loose_started, loose_started);
    append(&mut into.loose_certified, loose_certified);
    append(&mut into.loose_chapters, loose_chapters);
    append(&mut into.own_enrolled, own_enrolled);
    append(&mut into.own_started, own_started);
    append(&mut into.own_certified, own_certified);
    append(&mut into.own_chapters, own_chapters);
    set(&mut into.format_version, format_version);
    append(&mut into.id_runs, id_runs);
    set(&mut into.id_generation, id_generation);
    append(&mut into.learner_keys, learner_keys);
    append(&mut into.learner_named, learner_named);
    append(&mut into.learner_loose, learner_loose);
    append(&mut into.named_enrolled, named_enrolled);
    append(&mut into.named_started, named_started);
    append(&mut into.named_certified, named_certified);
    append(&mut into.named_chapters, named_chapters);
}

/// Merges `from` into `into`, every field named as in [`merge`].
fn merge_campaign(into: &mut CampaignState, from: CampaignState) {
    let CampaignState {
        campaign,
        learner_keys,
        enrolled,
        started,
        certified,
        chapters,
        visitor_keys,
        clicks,
        days,
        day_clicks,
        day_enrolled,
        day_started,
        day_certified,
    } = from;
    set(&mut into.campaign, campaign);
    append(&mut into.learner_keys, learner_keys);
    append(&mut into.enrolled, enrolled);
    append(&mut into.started, started);
    append(&mut into.certified, certified);
    append(&mut into.chapters, chapters);
    append(&mut into.visitor_keys, visitor_keys);
    set(&mut into.clicks, clicks);
    append(&mut into.days, days);
    append(&mut into.day_clicks, day_clicks);
    append(&mut into.day_enrolled, day_enrolled);
    append(&mut into.day_started, day_started);
    append(&mut into.day_certified, day_certified);
}

#[cfg(test)]
mod tests;
