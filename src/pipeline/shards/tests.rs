//! Splitting work among shards and putting it back together; the process-wide room for
//! unregistered campaigns; the positions every checkpoint covers; a data directory's shards.

use chrono::Utc;

use super::*;
use crate::event::{EventParser, RawEvent, RawKind, RawTime};

fn events(count: usize) -> Vec<Event> {
    let parser = EventParser::new(12, [7; 32]);
    let now = Utc::now();
    (0..count)
        .map(|index| {
            let (id, learner) = (format!("e{index}"), format!("learner-{}", index % 7));
            let raw = RawEvent {
                event_id: &id,
                kind: RawKind::Known(crate::event::EventKind::Enrolled),
                campaign: "gendarmerie",
                source: "gendform3",
                learner_id: &learner,
                visitor_id: "",
                occurred_at: RawTime::At(now),
                chapter: None,
            };
            parser.parse(&raw, now).expect("a valid event")
        })
        .collect()
}

fn range(partition: i32, from: i64, to: i64) -> Range {
    Range {
        partition: Partition {
            topic: "learner-events".to_owned(),
            partition,
        },
        from,
        to,
    }
}

use super::super::sources::{Partition, Range};

#[test]
fn each_event_goes_to_its_learners_shard_and_the_answers_come_back_in_order() {
    let events = events(40);
    let shard_of: Vec<usize> = events.iter().map(|event| event.shard(3)).collect();
    let room = UnregisteredRoom::new(10, &["gendarmerie".to_owned()]);
    let parts = split(3, Sharding::Learner, events, None, &room);
    assert!(parts.len() > 1, "seven learners spread over three shards");
    let mut answers = Vec::new();
    for part in parts {
        assert!(!part.events.is_empty(), "no empty part without Kafka");
        for (index, event) in part.indices.iter().zip(&part.events) {
            assert_eq!(shard_of[*index], part.shard);
            assert_eq!(event.shard(3), part.shard);
        }
        // Each event's outcome says where it was: accepted on even indices.
        let outcomes = part
            .indices
            .iter()
            .map(|index| {
                if index % 2 == 0 {
                    Applied::Accepted
                } else {
                    Applied::Duplicate { conflict: false }
                }
            })
            .collect();
        answers.push((part.indices, Ok(outcomes)));
    }
    let merged = merge(40, answers).expect("no refusal");
    for (index, outcome) in merged.iter().enumerate() {
        assert_eq!(*outcome == Applied::Accepted, index % 2 == 0, "{index}");
    }
}

#[test]
fn a_kafka_batch_gives_every_shard_every_range_and_its_events_sources() {
    let events = events(10);
    let batch = KafkaBatch {
        ranges: vec![range(0, 5, 10), range(1, 0, 5)],
        sources: (0..10).map(|index| u32::from(index >= 5)).collect(),
    };
    let room = UnregisteredRoom::new(10, &["gendarmerie".to_owned()]);
    let parts = split(4, Sharding::Learner, events, Some(batch), &room);
    assert_eq!(parts.len(), 4);
    for part in &parts {
        let kafka = part.kafka.as_ref().expect("every part carries the batch");
        assert_eq!(kafka.ranges, vec![range(0, 5, 10), range(1, 0, 5)]);
        let expected: Vec<u32> = part
            .indices
            .iter()
            .map(|index| u32::from(*index >= 5))
            .collect();
        assert_eq!(kafka.sources, expected);
    }
}

#[test]
fn one_refused_part_refuses_the_submission() {
    let answers = vec![
        (vec![0, 2], Ok(vec![Applied::Accepted, Applied::Accepted])),
        (vec![1], Err(Refusal::DiskFull)),
    ];
    assert_eq!(merge(3, answers), Err(Refusal::DiskFull));
}

#[test]
fn the_least_position_of_each_partition_is_where_the_instance_is() {
    assert_eq!(
        least_positions(vec![vec![10, -2, 7], vec![8, 4, 7], vec![12, 5, 9]]),
        vec![8, -2, 7]
    );
}

#[test]
fn unregistered_campaigns_take_room_once_for_every_shard() {
    let room = UnregisteredRoom::new(2, &["gendarmerie".to_owned()]);
    let mut registered = events(1).remove(0);
    assert!(
        !room.admit(&mut registered, 1),
        "a registered campaign always has counters"
    );
    let mut typo = events(1).remove(0);
    typo.campaign = "typo-0".to_owned();
    assert!(!room.admit(&mut typo, 1));
    assert_eq!(typo.campaign, "typo-0");
    room.release(&["typo-0".to_owned()], 1);
    assert!(room.take("typo-1", 0));
    assert!(
        room.take("typo-1", 1),
        "held already: another shard may count it"
    );
    assert!(room.take("typo-2", 1));
    // gendarmerie, direct and unregistered always; typo-1 (two shards) and typo-2 once each.
    assert_eq!(
        room.held(),
        (5, 2),
        "the process's campaigns, not one shard's"
    );
    assert!(!room.take("typo-3", 0), "no room left, in any shard");
    let mut past = events(1).remove(0);
    past.campaign = "typo-3".to_owned();
    assert!(room.admit(&mut past, 0));
    assert_eq!(past.campaign, "unregistered");
    room.release(&["typo-1".to_owned()], 0);
    assert!(!room.take("typo-3", 2), "typo-1 is still held by shard 1");
    room.release(&["typo-1".to_owned()], 1);
    assert!(room.take("typo-3", 2));
    room.hold(vec!["typo-4".to_owned()], 3);
    assert!(
        room.take("typo-4", 0),
        "recovered campaigns are held whatever the limit"
    );
    assert_eq!(room.held(), (6, 3));
}

#[test]
fn only_positions_every_shards_checkpoint_covers_are_committed() {
    let offset = |partition, next_offset| KafkaOffset {
        topic: "learner-events".to_owned(),
        partition,
        next_offset,
        campaigns: vec!["gendarmerie".to_owned()],
    };
    let (sender, combined) = watch::channel(Vec::new());
    let board = CheckpointBoard::new(2, Sharding::Learner, sender);
    board.written(0, vec![offset(0, 100), offset(1, 50)]);
    assert!(
        combined.borrow().is_empty(),
        "shard 1 has not checkpointed yet"
    );
    board.written(1, vec![offset(0, 80)]);
    let expected = KafkaOffset {
        campaigns: Vec::new(),
        ..offset(0, 80)
    };
    assert_eq!(*combined.borrow(), vec![expected.clone()]);
    assert_eq!(board.combined(), vec![expected]);
}

#[test]
fn a_data_directory_keeps_its_number_of_shards() {
    let fresh = tempfile::tempdir().expect("a directory");
    assert_eq!(layout(fresh.path(), 0, 3).expect("a layout"), 3);
    assert_eq!(layout(fresh.path(), 0, 5).expect("a layout"), 3, "recorded");
    assert_eq!(layout(fresh.path(), 3, 5).expect("a layout"), 3);
    let error = layout(fresh.path(), 2, 5)
        .expect_err("cannot re-shard")
        .to_string();
    assert!(error.contains("holds 3 shards and shards = 2"), "{error}");

    // A data directory from before shards: one shard, in the directories it has.
    let older = tempfile::tempdir().expect("a directory");
    std::fs::create_dir(older.path().join("journal")).expect("a journal directory");
    assert_eq!(layout(older.path(), 0, 4).expect("a layout"), 1);
    assert_eq!(
        shard_dirs(older.path(), 0),
        (
            older.path().join("journal"),
            older.path().join("checkpoints")
        )
    );
    assert_eq!(
        shard_dirs(older.path(), 2).0,
        older.path().join("shard-2").join("journal")
    );
}
