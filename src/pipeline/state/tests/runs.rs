//! Recovery with the remembered ids in id runs (`durable::runs`): each checkpoint writes only
//! the ids accepted since the one before, runs are merged and pruned as the writer does, a
//! checkpoint of format 1 (ids in itself) is read and its ids moved to a run, one of format 2
//! (runs sorted by id) is read and its runs replaced by one in run order, a damaged run
//! sends recovery back to the checkpoint before, and a release has every id written afresh —
//! also when it comes while a checkpoint is written, whose runs the aggregator then does not
//! take.

use super::*;
use crate::durable::runs;
use crate::proto::storage::IdRun;

fn enrolment(parser: &EventParser, id: u8, campaign: usize, partition: Option<i32>) -> Event {
    parse(
        parser,
        &EventSpec {
            id,
            kind: EventKind::Enrolled,
            chapter: 1,
            campaign,
            source: 0,
            learner: id,
            visitor: None,
            minutes: i64::from(id),
            partition,
        },
    )
}

/// Commits `ids`, one group each, to `process` and to `reference`.
fn commit(
    process: &mut Process,
    reference: &mut Aggregator,
    parser: &EventParser,
    ids: std::ops::Range<u8>,
) -> Vec<Event> {
    let mut events = Vec::new();
    for id in ids {
        let event = enrolment(parser, id, 0, None);
        assert_eq!(
            process.commit(&[(event.clone(), None)]),
            [Applied::Accepted]
        );
        reference.apply(&event).expect("a campaign slot");
        events.push(event);
    }
    events
}

/// The runs the newest checkpoint names, checking that it keeps no id in itself.
fn newest_runs(storage: &DurableSettings) -> Vec<IdRun> {
    let (loaded, rejected) =
        checkpoint::load_newest(&storage.checkpoint_dir).expect("the checkpoints load");
    assert!(rejected.is_empty(), "{rejected:?}");
    let loaded = loaded.expect("a checkpoint");
    assert!(loaded.checkpoint.seen.is_empty(), "the ids are in runs");
    loaded.checkpoint.id_runs
}

fn generations(runs: &[IdRun]) -> Vec<(u64, u64, u64)> {
    runs.iter()
        .map(|run| (run.first_generation, run.last_generation, run.entries))
        .collect()
}

/// The names of the run files in `storage`'s checkpoint directory, sorted.
fn run_files(storage: &DurableSettings) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&storage.checkpoint_dir)
        .expect("the directory lists")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with("ids-"))
        .collect();
    names.sort();
    names
}

fn run_name(first: u64, last: u64) -> String {
    format!("ids-{first:020}-{last:020}.run")
}

#[test]
fn each_checkpoint_writes_only_the_new_ids_and_runs_merge_and_go_as_checkpoints_do() {
    let directory = scratch_directory();
    let parser = EventParser::new(CHAPTER_COUNT, [0x11; 32]);
    let mut reference = Aggregator::new(settings(), registered());
    let mut process = Process::start(storage(directory.path()));
    let mut events = commit(&mut process, &mut reference, &parser, 0..40);
    process.checkpoint();
    assert_eq!(generations(&newest_runs(&process.storage)), [(1, 1, 40)]);

    events.extend(commit(&mut process, &mut reference, &parser, 40..50));
    process.checkpoint();
    assert_eq!(
        generations(&newest_runs(&process.storage)),
        [(1, 1, 40), (2, 2, 10)],
        "40 > 10: no merge"
    );

    // Nothing new: no run of its own.
    process.checkpoint();
    assert_eq!(
        generations(&newest_runs(&process.storage)),
        [(1, 1, 40), (2, 2, 10)]
    );

    events.extend(commit(&mut process, &mut reference, &parser, 50..80));
    process.checkpoint();
    assert_eq!(
        generations(&newest_runs(&process.storage)),
        [(1, 4, 80)],
        "10 <= 30 and 40 <= 40: all merged"
    );
    // The checkpoint before still names the runs merged: they stay while it is kept. The run
    // of generation 4 alone, merged as soon as written, no checkpoint names.
    assert_eq!(
        run_files(&process.storage),
        [run_name(1, 1), run_name(1, 4), run_name(2, 2)]
    );

    events.extend(commit(&mut process, &mut reference, &parser, 80..81));
    process.checkpoint();
    assert_eq!(
        generations(&newest_runs(&process.storage)),
        [(1, 4, 80), (5, 5, 1)]
    );
    assert_eq!(
        run_files(&process.storage),
        [run_name(1, 4), run_name(5, 5)]
    );

    let storage = process.storage.clone();
    drop(process);
    let mut recovered = recover(&storage, settings(), registered()).expect("recovery works");
    assert_same_state(&reference, &recovered.state.aggregator);
    assert_eq!(recovered.state.aggregator.holdings().event_ids, 81);
    for event in &events {
        assert_eq!(
            recovered.state.aggregator.apply(event).ok(),
            Some(Applied::Duplicate { conflict: false }),
            "every id is remembered after the restart"
        );
    }
}

/// An aggregator that took 20 enrolments, as an older suivi left it, and the enrolments.
fn enrolled_before(parser: &EventParser) -> (Aggregator, Vec<Event>) {
    let mut reference = Aggregator::new(settings(), registered());
    let mut events = Vec::new();
    for id in 0..20 {
        let event = enrolment(parser, id, 0, None);
        reference.apply(&event).expect("a campaign slot");
        events.push(event);
    }
    (reference, events)
}

/// Recovers from `storage`: the state of `reference`, every one of `events` a duplicate.
fn assert_recovers_every_event(
    storage: &DurableSettings,
    reference: &Aggregator,
    events: &[Event],
) {
    let mut recovered = recover(storage, settings(), registered()).expect("recovery works");
    assert_same_state(reference, &recovered.state.aggregator);
    for event in events {
        assert_eq!(
            recovered.state.aggregator.apply(event).ok(),
            Some(Applied::Duplicate { conflict: false })
        );
    }
}

#[test]
fn a_checkpoint_of_format_1_loads_and_the_next_one_moves_its_ids_to_a_run() {
    let directory = scratch_directory();
    let storage = storage(directory.path());
    let parser = EventParser::new(CHAPTER_COUNT, [0x22; 32]);
    let (mut reference, mut events) = enrolled_before(&parser);
    let old = reference.older_checkpoint(0, 1);
    assert_eq!(old.seen.len(), 20 * 4, "format 1 keeps the ids in itself");
    checkpoint::write(&storage.checkpoint_dir, &old).expect("the checkpoint writes");

    let mut process = Process::start(storage.clone());
    assert!(
        process.recovered.state.aggregator.written().is_empty(),
        "the ids are held in memory until the next checkpoint writes them in a run"
    );
    events.extend(commit(&mut process, &mut reference, &parser, 20..25));
    process.checkpoint();

    assert_eq!(
        generations(&newest_runs(&storage)),
        [(1, 1, 25)],
        "every id in one run"
    );
    drop(process);
    assert_recovers_every_event(&storage, &reference, &events);
}

#[test]
fn a_checkpoint_of_format_2_loads_and_its_runs_sorted_by_id_are_replaced_by_one_in_run_order() {
    let directory = scratch_directory();
    let storage = storage(directory.path());
    let parser = EventParser::new(CHAPTER_COUNT, [0x23; 32]);
    let (mut reference, mut events) = enrolled_before(&parser);
    // Format 2 kept its ids in a run sorted by id.
    let mut old = reference.older_checkpoint(0, 2);
    let mut by_id: Vec<crate::aggregate::Entry> = old
        .seen
        .chunks_exact(4)
        .map(|words| [words[0], words[1], words[2], words[3]])
        .collect();
    by_id.sort_unstable();
    let in_run_order: Vec<crate::aggregate::Entry> = runs::in_order(by_id.clone()).collect();
    assert_ne!(by_id, in_run_order, "the two orders differ");
    // Written as format 2 wrote it: `runs::write` now refuses this order.
    let payload: Vec<u8> = by_id
        .iter()
        .flatten()
        .flat_map(|word| word.to_le_bytes())
        .collect();
    let run = IdRun {
        first_generation: 1,
        last_generation: 1,
        entries: by_id.len() as u64,
        checksum: crc32c::crc32c(&payload),
    };
    let mut file = b"SUIVIRN1".to_vec();
    file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    file.extend_from_slice(&run.checksum.to_le_bytes());
    file.extend_from_slice(&payload);
    std::fs::create_dir_all(&storage.checkpoint_dir).expect("the directory creates");
    std::fs::write(runs::path(&storage.checkpoint_dir, &run), file).expect("the run writes");
    old.seen.clear();
    old.id_runs = vec![run];
    old.id_generation = 1;
    old.format_version = 2;
    checkpoint::write(&storage.checkpoint_dir, &old).expect("the checkpoint writes");

    let mut process = Process::start(storage.clone());
    assert_same_state(&reference, &process.recovered.state.aggregator);
    assert!(
        process.recovered.state.aggregator.written().is_empty(),
        "the ids are held in memory until the next checkpoint writes them in a run"
    );
    events.extend(commit(&mut process, &mut reference, &parser, 20..25));
    process.checkpoint();
    assert_eq!(
        generations(&newest_runs(&storage)),
        [(2, 2, 25)],
        "every id in one run"
    );
    events.extend(commit(&mut process, &mut reference, &parser, 25..27));
    process.checkpoint();
    assert_eq!(
        run_files(&storage),
        [run_name(2, 2), run_name(3, 3)],
        "the run of format 2 goes with its checkpoint"
    );
    drop(process);
    assert_recovers_every_event(&storage, &reference, &events);
}

#[test]
fn a_damaged_run_sends_recovery_back_to_the_checkpoint_before_it() {
    let directory = scratch_directory();
    let parser = EventParser::new(CHAPTER_COUNT, [0x33; 32]);
    let mut reference = Aggregator::new(settings(), registered());
    let mut process = Process::start(storage(directory.path()));
    commit(&mut process, &mut reference, &parser, 0..30);
    process.checkpoint();
    commit(&mut process, &mut reference, &parser, 30..40);
    process.checkpoint();
    commit(&mut process, &mut reference, &parser, 40..45);
    let runs = newest_runs(&process.storage);
    assert_eq!(generations(&runs), [(1, 1, 30), (2, 2, 10)]);
    let newest_run = runs::path(&process.storage.checkpoint_dir, &runs[1]);
    let storage = process.storage.clone();
    drop(process);
    let mut bytes = std::fs::read(&newest_run).expect("the run reads");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&newest_run, bytes).expect("the run writes");

    let recovered = recover(&storage, settings(), registered()).expect("recovery works");

    assert_eq!(recovered.report.checkpoints_rejected.len(), 1);
    assert!(
        recovered.report.checkpoints_rejected[0].contains("fails its checksum"),
        "{:?}",
        recovered.report.checkpoints_rejected
    );
    assert_eq!(recovered.report.events_replayed, 15);
    assert_same_state(&reference, &recovered.state.aggregator);
}

/// Commits, for each of `ids`, an enrolment in a registered campaign over gRPC, which a
/// release of partition 0 keeps, and one in a campaign only partition 0 feeds, which it
/// releases; answers them in that order.
fn commit_kept_and_released(
    process: &mut Process,
    parser: &EventParser,
    ids: std::ops::Range<u8>,
) -> (Vec<Event>, Vec<Event>) {
    let fed = CAMPAIGNS
        .iter()
        .position(|campaign| *campaign == "la-poste")
        .expect("a campaign");
    let mut kept = Vec::new();
    let mut released = Vec::new();
    for id in ids {
        let event = enrolment(parser, id, 0, None);
        assert_eq!(
            process.commit(&[(event.clone(), None)]),
            [Applied::Accepted]
        );
        kept.push(event);
        let event = enrolment(parser, 100 + id, fed, Some(0));
        assert_eq!(
            process.commit(&[(event.clone(), Some(0))]),
            [Applied::Accepted]
        );
        released.push(event);
    }
    (kept, released)
}

/// Checks that `aggregator` remembers every event of `kept` and none of `released`.
fn assert_forgets_the_released_only(aggregator: &Aggregator, kept: &[Event], released: &[Event]) {
    let is_new = |event: &Event| {
        aggregator
            .admit(&mut event.clone(), &mut Admission::default())
            .expect("the runs read")
            == Applied::Accepted
    };
    assert!(
        kept.iter().all(|event| !is_new(event)),
        "the ids kept are remembered"
    );
    assert!(
        released.iter().all(is_new),
        "a released campaign's ids are forgotten"
    );
}

#[test]
fn after_a_release_the_next_checkpoint_writes_every_id_kept_afresh() {
    let directory = scratch_directory();
    let parser = EventParser::new(CHAPTER_COUNT, [0x44; 32]);
    let mut process = Process::start(storage(directory.path()));
    let (kept, released) = commit_kept_and_released(&mut process, &parser, 0..10);
    process.checkpoint();
    assert_eq!(generations(&newest_runs(&process.storage)), [(1, 1, 20)]);

    process.release(0);
    process.checkpoint();

    assert_eq!(
        generations(&newest_runs(&process.storage)),
        [(0, 2, 10)],
        "the ids kept, written afresh"
    );
    let storage = process.storage.clone();
    drop(process);
    let recovered = recover(&storage, settings(), registered()).expect("recovery works");
    assert_forgets_the_released_only(&recovered.state.aggregator, &kept, &released);
}

#[test]
fn a_release_while_a_checkpoint_is_written_is_not_undone_by_its_runs() {
    let directory = scratch_directory();
    let parser = EventParser::new(CHAPTER_COUNT, [0x45; 32]);
    let mut process = Process::start(storage(directory.path()));
    let (mut kept, mut released) = commit_kept_and_released(&mut process, &parser, 0..10);
    process.checkpoint();
    let (more_kept, more_released) = commit_kept_and_released(&mut process, &parser, 10..15);
    kept.extend(more_kept);
    released.extend(more_released);

    // The checkpoint thread writes the ids sealed here while the writer releases partition 0:
    // its runs hold ids forgotten since, and the aggregator does not take them.
    let sealed = process.seal_checkpoint();
    process.release(0);
    assert!(
        !process.end_checkpoint(sealed),
        "the runs are not installed"
    );
    assert_forgets_the_released_only(&process.recovered.state.aggregator, &kept, &released);

    // The next checkpoint writes every id kept afresh, in one run.
    process.checkpoint();
    assert_eq!(
        generations(&newest_runs(&process.storage)),
        [(0, 3, 15)],
        "the ids kept, written afresh"
    );
    assert_forgets_the_released_only(&process.recovered.state.aggregator, &kept, &released);
    let storage = process.storage.clone();
    drop(process);
    let recovered = recover(&storage, settings(), registered()).expect("recovery works");
    assert_forgets_the_released_only(&recovered.state.aggregator, &kept, &released);
}
