//! Decoding in pieces against prost decoding the whole: the same message from any number of
//! pieces, whatever parts the payload was written in; and a payload cut short refused.

use prost::Message;

use super::*;
use crate::proto::storage::KafkaOffset;

fn campaign(name: &str, seed: u32) -> CampaignState {
    CampaignState {
        campaign: name.to_owned(),
        learner_keys: (0..30).map(|n| n * seed).collect(),
        enrolled: (0..10).collect(),
        started: (0..10).map(|n| n + seed).collect(),
        certified: vec![0; 10],
        chapters: (0..10).map(|n| n << 2).collect(),
        visitor_keys: vec![seed; 6],
        clicks: u64::from(seed) + 3,
        days: vec![20_000, 20_001],
        day_clicks: vec![1, 2],
        day_enrolled: vec![3, 4],
        day_started: vec![5, 6],
        day_certified: vec![7, 8],
    }
}

/// A checkpoint written in parts, as `Frozen::parts` writes one: every field set, the totals
/// and the columns spread over several parts.
fn parts() -> Vec<Checkpoint> {
    let head = Checkpoint {
        journal_position: 1234,
        kafka_offsets: vec![KafkaOffset {
            topic: "learner-events".to_owned(),
            partition: 3,
            next_offset: 99,
            campaigns: vec!["gendarmerie".to_owned()],
        }],
        chapter_count: 12,
        direct_campaigns: vec!["direct".to_owned()],
        time_zone: "Europe/Paris".to_owned(),
        event_identity: 1,
        format_version: 1,
        ..Checkpoint::default()
    };
    let mut parts = vec![head];
    for seed in 1..6 {
        parts.push(Checkpoint {
            campaigns: vec![campaign(&format!("c{seed}"), seed)],
            ..Checkpoint::default()
        });
    }
    for seed in 1..4 {
        let mut totals = campaign(if seed == 1 { "*" } else { "" }, seed);
        if seed > 1 {
            totals.clicks = 0;
            totals.days.clear();
        }
        parts.push(Checkpoint {
            totals: Some(totals),
            ..Checkpoint::default()
        });
    }
    for seed in 0..5u32 {
        parts.push(Checkpoint {
            seen: (0..400).map(|n| n ^ seed).collect(),
            named_learners: vec![seed; 3],
            named_at: vec![i64::from(seed) - 2],
            named_ids: vec![seed + 1; 3],
            named_slots: vec![seed],
            loose_learners: vec![seed; 3],
            loose_enrolled: vec![seed],
            loose_started: vec![seed + 1],
            loose_certified: vec![seed + 2],
            loose_chapters: vec![seed + 3],
            own_enrolled: vec![seed + 4],
            own_started: vec![seed + 5],
            own_certified: vec![seed + 6],
            own_chapters: vec![seed + 7],
            ..Checkpoint::default()
        });
    }
    parts
}

fn encoded(parts: &[Checkpoint]) -> Vec<u8> {
    let mut payload = Vec::new();
    for part in parts {
        part.encode_raw(&mut payload);
    }
    payload
}

#[test]
fn any_number_of_pieces_decodes_to_what_the_whole_payload_does() {
    let payload = encoded(&parts());
    let whole = Checkpoint::decode(payload.as_slice()).expect("prost decodes it");
    assert_eq!(
        whole.totals.as_ref().map(|totals| totals.enrolled.len()),
        Some(30)
    );
    for count in 1..60 {
        let pieces = pieces(&payload, count).expect("fields");
        assert_eq!(pieces.concat(), payload, "{count} pieces");
        let decoded: Vec<Checkpoint> = pieces
            .iter()
            .map(|piece| Checkpoint::decode(*piece).expect("a piece decodes"))
            .collect();
        assert_eq!(merged(decoded), whole, "{count} pieces");
    }
    assert_eq!(decode(&payload).expect("decodes"), whole);
}

#[test]
fn a_payload_cut_short_or_with_groups_is_refused() {
    let payload = encoded(&parts());
    for cut in [1, payload.len() / 3, payload.len() - 1] {
        assert!(decode(&payload[..cut]).is_err(), "cut at {cut}");
    }
    // Field 2 as the start of a group.
    assert!(decode(&[0x13, 0x14]).is_err());
    assert_eq!(
        decode(&[]).expect("an empty message"),
        Checkpoint::default()
    );
}
