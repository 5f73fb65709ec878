//! Tests of partition positions, batch sequencing and the campaigns released with a partition.

use super::*;

fn partition(number: i32) -> Partition {
    Partition {
        topic: "learner-events".to_owned(),
        partition: number,
    }
}

fn position(number: i32, next_offset: i64) -> KafkaOffset {
    KafkaOffset {
        topic: "learner-events".to_owned(),
        partition: number,
        next_offset,
        campaigns: Vec::new(),
    }
}

#[test]
fn a_partition_never_read_starts_from_the_beginning_and_a_known_one_where_it_was() {
    let mut sources = Sources::restore(&[position(1, 40)], &[]);
    assert_eq!(
        sources.assign(&[partition(0), partition(1)]),
        vec![OFFSET_BEGINNING, 40]
    );
    assert_eq!(sources.held(), vec![partition(0), partition(1)]);
}

#[test]
fn only_a_batch_continuing_from_the_position_is_taken() {
    let mut sources = Sources::default();
    sources.assign(&[partition(0)]);
    let first = Range {
        partition: partition(0),
        from: OFFSET_BEGINNING,
        to: 10,
    };
    assert_eq!(sources.check(std::slice::from_ref(&first)), Ok(()));
    sources.advance(&[position(0, 10)]);
    // A batch read after a refused one must not be taken: it would skip the refused events.
    let skipping = Range {
        partition: partition(0),
        from: 20,
        to: 30,
    };
    assert_eq!(
        sources.check(&[skipping]),
        Err(OutOfSequence {
            partition: partition(0),
            position: Some(10),
            from: 20
        })
    );
    let next = Range {
        partition: partition(0),
        from: 10,
        to: 20,
    };
    assert_eq!(sources.check(&[next]), Ok(()));
    // A partition that is not assigned takes nothing.
    let unassigned = Range {
        partition: partition(5),
        from: OFFSET_BEGINNING,
        to: 1,
    };
    assert!(sources.check(&[unassigned]).is_err());
}

#[test]
fn a_release_forgets_the_position_and_gives_back_the_campaigns_the_partition_alone_fed() {
    let mut sources = Sources::default();
    sources.assign(&[partition(0), partition(1)]);
    assert!(!sources.note("gendarmerie", Some(&partition(0))));
    assert!(!sources.note("pole-emploi", Some(&partition(0))));
    assert!(!sources.note("inria", Some(&partition(1))));
    // Fed by a second partition, then over HTTP: reported each time it gains a source.
    assert!(sources.note("inria", Some(&partition(0))));
    assert!(!sources.note("inria", Some(&partition(0))));
    assert!(!sources.note("pole-emploi", Some(&partition(0))));
    assert!(sources.note("pole-emploi", None));
    assert!(!sources.note("pole-emploi", None));
    assert!(!sources.note("direct-only", None));

    let release = sources.release(&[partition(0)]);
    assert_eq!(release.campaigns, vec!["gendarmerie".to_owned()]);
    assert_eq!(
        release.kept,
        vec!["inria".to_owned(), "pole-emploi".to_owned()]
    );
    assert_eq!(sources.held(), vec![partition(1)]);
    assert_eq!(sources.assign(&[partition(0)]), vec![OFFSET_BEGINNING]);
    // Releasing what is not held releases nothing.
    assert_eq!(sources.release(&[partition(7)]), Release::default());
}

#[test]
fn sources_survive_a_checkpoint() {
    let mut sources = Sources::default();
    sources.assign(&[partition(0), partition(2)]);
    sources.advance(&[position(0, 12), position(2, 3)]);
    sources.note("gendarmerie", Some(&partition(0)));
    sources.note("inria", Some(&partition(2)));
    sources.note("pole-emploi", None);

    let offsets = sources.offsets();
    assert_eq!(
        offsets
            .iter()
            .map(|o| (o.partition, o.next_offset, o.campaigns.clone()))
            .collect::<Vec<_>>(),
        vec![
            (0, 12, vec!["gendarmerie".to_owned()]),
            (2, 3, vec!["inria".to_owned()])
        ]
    );
    let mut restored = Sources::restore(&offsets, &sources.direct_campaigns());
    assert_eq!(restored.offsets(), offsets);
    assert_eq!(restored.direct_campaigns(), vec!["pole-emploi".to_owned()]);
    assert_eq!(
        restored.release(&[partition(2)]).campaigns,
        vec!["inria".to_owned()]
    );
}
