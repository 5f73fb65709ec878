//! Tests of the journal: what a reopened journal replays, how it rotates and sheds segments, how
//! it cuts a torn tail and refuses real corruption, and how a full disk leaves it (on a small
//! tmpfs mounted by the test, since only a real full file system fails a write the real way).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::*;
use crate::proto::storage::StoredEvent;

mod small_disk;

use small_disk::SmallDisk;

/// Record `number` of most tests: `number % 3 + 1` events carrying `number`, so that records
/// differ in content and in event count.
fn record(number: u32) -> JournalRecord {
    sized_record(number, number % 3 + 1)
}

/// A record of `events` events, all carrying `number`. Their fields are fixed-width and never
/// zero (protobuf leaves zeros out), so records of as many events all have the same size.
fn sized_record(number: u32, events: u32) -> JournalRecord {
    JournalRecord {
        events: (0..events)
            .map(|index| StoredEvent {
                id0: 1000 + number,
                id1: 1000 + index,
                content: 7,
                ..StoredEvent::default()
            })
            .collect(),
        ..JournalRecord::default()
    }
}

/// A record of one event: every such record has the same size, so that tests can say where a
/// segment ends.
fn uniform_record(number: u32) -> JournalRecord {
    sized_record(number, 1)
}

/// The framed size of every [`uniform_record`].
fn uniform_record_bytes() -> u64 {
    (HEADER_BYTES + uniform_record(0).encoded_len()) as u64
}

/// What opening `directory` gives: the journal, its report, and every record replayed.
struct Opened {
    journal: Journal,
    report: OpenReport,
    replayed: Vec<(u64, JournalRecord)>,
}

fn open(directory: &Path, max_segment_bytes: u64, from: u64) -> anyhow::Result<Opened> {
    let mut replayed = Vec::new();
    let (journal, report) = Journal::open(
        directory,
        FsyncPolicy::Always,
        max_segment_bytes,
        from,
        |position, record| replayed.push((position, record)),
    )?;
    Ok(Opened {
        journal,
        report,
        replayed,
    })
}

/// A new journal holding `records`, closed again.
fn journal_with(directory: &Path, max_segment_bytes: u64, records: &[JournalRecord]) {
    let mut opened = open(directory, max_segment_bytes, 0).expect("a new journal opens");
    for record in records {
        opened
            .journal
            .append(record)
            .expect("appending to a fresh journal works");
    }
}

/// The positions and records `records` should replay as, from `from`.
fn numbered(records: &[JournalRecord], from: u64) -> Vec<(u64, JournalRecord)> {
    (0u64..)
        .zip(records.iter().cloned())
        .filter(|(position, _)| *position >= from)
        .collect()
}

/// The segment file names of `directory`, sorted.
fn segment_names(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .expect("the journal directory lists")
        .map(|entry| {
            entry
                .expect("a directory entry reads")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn segment_path(directory: &Path, first: u64) -> PathBuf {
    directory.join(format!("{first:020}.wal"))
}

fn file_length(path: &Path) -> u64 {
    std::fs::metadata(path).expect("the file exists").len()
}

/// Flips every bit of the byte at `offset` of `path`.
fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("the file reads");
    let index = usize::try_from(offset).expect("test files are small");
    bytes[index] ^= 0xFF;
    std::fs::write(path, bytes).expect("the file writes");
}

/// The error of a `Journal::open` expected to fail, with its whole chain.
fn open_error(directory: &Path, max_segment_bytes: u64, from: u64) -> String {
    match open(directory, max_segment_bytes, from) {
        Ok(opened) => panic!(
            "opening was expected to fail but replayed {} records up to position {}",
            opened.replayed.len(),
            opened.journal.position()
        ),
        Err(error) => format!("{error:#}"),
    }
}

#[test]
fn reopening_replays_every_record_in_order_with_its_position() {
    let directory = TempDir::new().expect("a temporary directory");
    let records: Vec<JournalRecord> = (0..10).map(record).collect();
    journal_with(directory.path(), DEFAULT_SEGMENT_BYTES, &records);

    let opened = open(directory.path(), DEFAULT_SEGMENT_BYTES, 0).expect("the journal reopens");

    assert_eq!(opened.replayed, numbered(&records, 0));
    assert_eq!(
        opened.report,
        OpenReport {
            records_replayed: 10,
            // Records 0 to 9 hold 1, 2, 3, 1, 2, 3, 1, 2, 3, 1 events.
            events_replayed: 19,
            torn_bytes: 0,
            intact_record_cut: false,
            segments: 1,
        }
    );
    assert_eq!(opened.journal.position(), 10);
}

#[test]
fn replay_from_a_position_skips_the_records_before_it() {
    let directory = TempDir::new().expect("a temporary directory");
    let records: Vec<JournalRecord> = (0..10).map(record).collect();
    journal_with(directory.path(), DEFAULT_SEGMENT_BYTES, &records);

    let opened = open(directory.path(), DEFAULT_SEGMENT_BYTES, 4).expect("the journal reopens");

    assert_eq!(opened.replayed, numbered(&records, 4));
    assert_eq!(opened.report.records_replayed, 6);
    // Records 4 to 9 hold 2, 3, 1, 2, 3, 1 events.
    assert_eq!(opened.report.events_replayed, 12);
    // Skipped records still count for the position: appends go on after the last one.
    assert_eq!(opened.journal.position(), 10);
}

#[test]
fn replay_from_the_end_replays_nothing_and_appends_go_on() {
    let directory = TempDir::new().expect("a temporary directory");
    let records: Vec<JournalRecord> = (0..3).map(record).collect();
    journal_with(directory.path(), DEFAULT_SEGMENT_BYTES, &records);

    let mut opened = open(directory.path(), DEFAULT_SEGMENT_BYTES, 3).expect("the journal reopens");
    assert_eq!(opened.replayed, Vec::new());
    opened.journal.append(&record(3)).expect("the append works");
    drop(opened);

    let reopened = open(directory.path(), DEFAULT_SEGMENT_BYTES, 3).expect("the journal reopens");
    assert_eq!(reopened.replayed, vec![(3, record(3))]);
}

#[test]
fn segments_rotate_at_the_size_limit_and_replay_spans_them() {
    let directory = TempDir::new().expect("a temporary directory");
    // A segment is closed once it holds the limit or more, so with a limit just over two
    // records each segment takes three.
    let max_segment_bytes = 2 * uniform_record_bytes() + 1;
    let records: Vec<JournalRecord> = (0..10).map(uniform_record).collect();
    let mut opened = open(directory.path(), max_segment_bytes, 0).expect("a new journal opens");
    for record in &records {
        let appended = opened.journal.append(record).expect("the append works");
        assert_eq!(
            appended.bytes,
            uniform_record_bytes(),
            "append returns the framed size"
        );
    }
    drop(opened);

    assert_eq!(
        segment_names(directory.path()),
        [
            "00000000000000000000.wal",
            "00000000000000000003.wal",
            "00000000000000000006.wal",
            "00000000000000000009.wal",
        ]
    );
    let opened = open(directory.path(), max_segment_bytes, 0).expect("the journal reopens");
    assert_eq!(opened.replayed, numbered(&records, 0));
    assert_eq!(opened.report.segments, 4);
    assert_eq!(opened.journal.position(), 10);
    let opened = open(directory.path(), max_segment_bytes, 5).expect("the journal reopens");
    assert_eq!(opened.replayed, numbered(&records, 5));
}

#[test]
fn rotate_starts_a_segment_only_after_records() {
    let directory = TempDir::new().expect("a temporary directory");
    let mut opened = open(directory.path(), DEFAULT_SEGMENT_BYTES, 0).expect("a new journal opens");
    assert_eq!(opened.journal.rotate().expect("rotate works"), 0);
    opened.journal.append(&record(0)).expect("the append works");
    opened.journal.append(&record(1)).expect("the append works");
    assert_eq!(opened.journal.rotate().expect("rotate works"), 2);
    // A second rotate with nothing appended since must not leave an empty segment behind.
    assert_eq!(opened.journal.rotate().expect("rotate works"), 2);
    opened.journal.append(&record(2)).expect("the append works");
    drop(opened);

    assert_eq!(
        segment_names(directory.path()),
        ["00000000000000000000.wal", "00000000000000000002.wal"]
    );
    let opened = open(directory.path(), DEFAULT_SEGMENT_BYTES, 0).expect("the journal reopens");
    assert_eq!(
        opened.replayed,
        numbered(&[record(0), record(1), record(2)], 0)
    );
}

#[test]
fn remove_segments_before_removes_exactly_the_segments_wholly_before_the_position() {
    let directory = TempDir::new().expect("a temporary directory");
    let max_segment_bytes = 2 * uniform_record_bytes() + 1;
    let records: Vec<JournalRecord> = (0..10).map(uniform_record).collect();
    // Segments start at 0, 3, 6 and 9.
    journal_with(directory.path(), max_segment_bytes, &records);

    // Segment 0 holds records 0 to 2, all before 5; segment 3 holds record 5 and stays.
    assert_eq!(
        remove_segments_before(directory.path(), 5).expect("removal works"),
        1
    );
    assert_eq!(
        segment_names(directory.path()),
        [
            "00000000000000000003.wal",
            "00000000000000000006.wal",
            "00000000000000000009.wal",
        ]
    );
    // At a segment's first position, the segment before it is wholly before.
    assert_eq!(
        remove_segments_before(directory.path(), 6).expect("removal works"),
        1
    );
    assert_eq!(
        segment_names(directory.path()),
        ["00000000000000000006.wal", "00000000000000000009.wal"]
    );
    // The last segment is the one being written: it is never removed, whatever the position.
    assert_eq!(
        remove_segments_before(directory.path(), 1000).expect("removal works"),
        1
    );
    assert_eq!(
        segment_names(directory.path()),
        ["00000000000000000009.wal"]
    );

    let opened = open(directory.path(), max_segment_bytes, 9).expect("the journal reopens");
    assert_eq!(opened.replayed, numbered(&records, 9));
}

#[test]
fn opening_from_a_position_whose_segments_were_removed_fails() {
    let directory = TempDir::new().expect("a temporary directory");
    let max_segment_bytes = 2 * uniform_record_bytes() + 1;
    let records: Vec<JournalRecord> = (0..10).map(uniform_record).collect();
    journal_with(directory.path(), max_segment_bytes, &records);
    remove_segments_before(directory.path(), 6).expect("removal works");

    let error = open_error(directory.path(), max_segment_bytes, 5);

    assert_eq!(
        error,
        "the journal starts at record 6 but the state needs it from record 5: records were \
         removed that no valid checkpoint covers"
    );
}

#[test]
fn an_empty_journal_starts_at_the_position_asked_for() {
    // After a checkpoint at 42 with every segment gone, the journal must go on at 42, not 0,
    // or its next records would be skipped by the next recovery from that checkpoint.
    let directory = TempDir::new().expect("a temporary directory");
    let mut opened =
        open(directory.path(), DEFAULT_SEGMENT_BYTES, 42).expect("a new journal opens");
    assert_eq!(opened.journal.position(), 42);
    opened
        .journal
        .append(&record(42))
        .expect("the append works");
    drop(opened);

    assert_eq!(
        segment_names(directory.path()),
        ["00000000000000000042.wal"]
    );
    let opened = open(directory.path(), DEFAULT_SEGMENT_BYTES, 42).expect("the journal reopens");
    assert_eq!(opened.replayed, vec![(42, record(42))]);
}

#[test]
fn opening_from_beyond_the_end_of_the_journal_fails() {
    // A checkpoint at 8 over a journal that ends at 5 means the records in between are gone;
    // going on at 5 would give new records positions the next recovery skips, losing them.
    let directory = TempDir::new().expect("a temporary directory");
    let records: Vec<JournalRecord> = (0..5).map(record).collect();
    journal_with(directory.path(), DEFAULT_SEGMENT_BYTES, &records);

    let error = open_error(directory.path(), DEFAULT_SEGMENT_BYTES, 8);

    assert_eq!(
        error,
        "the journal ends at record 5 but the state needs it up to record 8: its last segments \
         are missing"
    );
    assert_eq!(
        segment_names(directory.path()),
        ["00000000000000000000.wal"],
        "a failed open changes nothing"
    );
}

/// Damages the last record of a journal of five uniform records in two segments (0 to 2 and
/// 3 to 4) with `damage`, then checks that opening cuts exactly `torn_bytes` off, keeps
/// `surviving` records, and that appends go on after them and are replayed by a later open.
fn check_torn_tail(damage: impl FnOnce(&Path), surviving: u64, torn_bytes: u64) {
    let directory = TempDir::new().expect("a temporary directory");
    let max_segment_bytes = 2 * uniform_record_bytes() + 1;
    let records: Vec<JournalRecord> = (0..5).map(uniform_record).collect();
    journal_with(directory.path(), max_segment_bytes, &records);
    let last_segment = segment_path(directory.path(), 3);
    damage(&last_segment);

    let mut opened = open(directory.path(), max_segment_bytes, 0).expect("the journal reopens");

    let kept = &records[..usize::try_from(surviving).expect("small")];
    assert_eq!(opened.replayed, numbered(kept, 0));
    assert_eq!(opened.report.torn_bytes, torn_bytes);
    assert!(
        !opened.report.intact_record_cut,
        "a torn tail leaves nothing intact after it"
    );
    assert_eq!(opened.journal.position(), surviving);
    assert_eq!(
        file_length(&last_segment),
        (surviving - 3) * uniform_record_bytes(),
        "the segment is cut at the end of its last good record"
    );
    opened
        .journal
        .append(&uniform_record(100))
        .expect("the append after the cut works");
    drop(opened);

    let reopened = open(directory.path(), max_segment_bytes, 0).expect("the journal reopens");
    let mut expected = numbered(kept, 0);
    expected.push((surviving, uniform_record(100)));
    assert_eq!(reopened.replayed, expected);
    assert_eq!(reopened.report.torn_bytes, 0);
}

#[test]
fn a_truncated_last_record_is_cut_off_and_appends_go_on_after_it() {
    check_torn_tail(
        |segment| {
            let file = OpenOptions::new()
                .write(true)
                .open(segment)
                .expect("the segment opens");
            file.set_len(2 * uniform_record_bytes() - 3)
                .expect("the segment truncates");
        },
        4,
        uniform_record_bytes() - 3,
    );
}

#[test]
fn a_truncated_record_header_is_cut_off() {
    check_torn_tail(
        |segment| {
            let file = OpenOptions::new()
                .write(true)
                .open(segment)
                .expect("the segment opens");
            // Only five bytes of the last record's sixteen-byte header reached the disk.
            file.set_len(uniform_record_bytes() + 5)
                .expect("the segment truncates");
        },
        4,
        5,
    );
}

#[test]
fn garbage_after_the_last_record_is_cut_off_and_appends_go_on_after_it() {
    check_torn_tail(
        |segment| {
            let mut file = OpenOptions::new()
                .append(true)
                .open(segment)
                .expect("the segment opens");
            file.write_all(&[0xAB; 10]).expect("the garbage writes");
        },
        5,
        10,
    );
}

#[test]
fn a_flipped_byte_in_the_last_record_cuts_it_off() {
    check_torn_tail(
        |segment| flip_byte(segment, 2 * uniform_record_bytes() - 1),
        4,
        uniform_record_bytes(),
    );
}

#[test]
fn a_bad_record_followed_by_an_intact_one_is_cut_with_it_and_reported() {
    // Corruption of an acknowledged record, not a torn append: the records after it are cut
    // too (they cannot be replayed past a gap), and the report says intact data was cut.
    let directory = TempDir::new().expect("a temporary directory");
    let max_segment_bytes = 2 * uniform_record_bytes() + 1;
    let records: Vec<JournalRecord> = (0..5).map(uniform_record).collect();
    journal_with(directory.path(), max_segment_bytes, &records);
    let last_segment = segment_path(directory.path(), 3);
    flip_byte(&last_segment, uniform_record_bytes() - 1);

    let opened = open(directory.path(), max_segment_bytes, 0).expect("the journal reopens");

    assert_eq!(opened.replayed, numbered(&records[..3], 0));
    assert_eq!(opened.report.torn_bytes, 2 * uniform_record_bytes());
    assert!(opened.report.intact_record_cut);
    assert_eq!(opened.journal.position(), 3);
}

#[test]
fn a_record_with_the_wrong_position_is_cut_off() {
    // A record copied from elsewhere has a valid checksum for its own position, not this one.
    check_torn_tail(
        |segment| {
            let misplaced = frame(7, &uniform_record(4).encode_to_vec()).expect("a small record");
            let mut bytes = std::fs::read(segment).expect("the segment reads");
            let start = usize::try_from(uniform_record_bytes()).expect("small");
            bytes.splice(start.., misplaced);
            std::fs::write(segment, bytes).expect("the segment writes");
        },
        4,
        uniform_record_bytes(),
    );
}

#[test]
fn a_record_whose_position_field_is_damaged_is_cut_off() {
    // The checksum is computed over the position the record should have, so only the check of
    // the stored position catches damage confined to that field.
    check_torn_tail(
        |segment| flip_byte(segment, uniform_record_bytes() + 8),
        4,
        uniform_record_bytes(),
    );
}

#[test]
fn a_corrupt_record_in_an_earlier_segment_fails_open_and_names_the_segment() {
    let directory = TempDir::new().expect("a temporary directory");
    let max_segment_bytes = 2 * uniform_record_bytes() + 1;
    let records: Vec<JournalRecord> = (0..10).map(uniform_record).collect();
    journal_with(directory.path(), max_segment_bytes, &records);
    let corrupt_segment = segment_path(directory.path(), 3);
    // The last byte of the second record of segment 3 (record 4).
    let corrupt_at = 2 * uniform_record_bytes() - 1;
    flip_byte(&corrupt_segment, corrupt_at);

    let error = open_error(directory.path(), max_segment_bytes, 0);

    assert_eq!(
        error,
        format!(
            "journal segment {} is corrupt at byte {} (record 4): acknowledged events would be \
             lost; restore it or move it away knowingly",
            corrupt_segment.display(),
            uniform_record_bytes()
        )
    );
    assert_eq!(
        file_length(&corrupt_segment),
        3 * uniform_record_bytes(),
        "acknowledged records are not cut off"
    );
    assert_eq!(
        file_length(&segment_path(directory.path(), 9)),
        uniform_record_bytes(),
        "later segments are not touched either"
    );
}

#[test]
fn a_corrupt_earlier_segment_fails_open_even_when_replay_starts_after_it() {
    let directory = TempDir::new().expect("a temporary directory");
    let max_segment_bytes = 2 * uniform_record_bytes() + 1;
    let records: Vec<JournalRecord> = (0..10).map(uniform_record).collect();
    journal_with(directory.path(), max_segment_bytes, &records);
    let corrupt_segment = segment_path(directory.path(), 0);
    flip_byte(&corrupt_segment, 0);

    let error = open_error(directory.path(), max_segment_bytes, 6);

    assert!(
        error.starts_with(&format!(
            "journal segment {} is corrupt at byte 0 (record 0)",
            corrupt_segment.display()
        )),
        "{error}"
    );
}

#[test]
fn a_missing_middle_segment_fails_open() {
    let directory = TempDir::new().expect("a temporary directory");
    let max_segment_bytes = 2 * uniform_record_bytes() + 1;
    let records: Vec<JournalRecord> = (0..10).map(uniform_record).collect();
    journal_with(directory.path(), max_segment_bytes, &records);
    std::fs::remove_file(segment_path(directory.path(), 3)).expect("the segment removes");

    let error = open_error(directory.path(), max_segment_bytes, 0);

    assert_eq!(
        error,
        format!(
            "journal segment {} starts at record 6, expected 3: a segment is missing",
            segment_path(directory.path(), 6).display()
        )
    );
}

#[test]
fn files_that_are_not_segments_are_left_alone() {
    let directory = TempDir::new().expect("a temporary directory");
    let records: Vec<JournalRecord> = (0..3).map(record).collect();
    journal_with(directory.path(), DEFAULT_SEGMENT_BYTES, &records);
    std::fs::write(directory.path().join("notes.txt"), "kept").expect("the file writes");
    std::fs::write(directory.path().join("backup.wal"), "kept").expect("the file writes");

    let opened = open(directory.path(), DEFAULT_SEGMENT_BYTES, 0).expect("the journal reopens");

    assert_eq!(opened.replayed, numbered(&records, 0));
    assert_eq!(opened.report.segments, 1);
    assert_eq!(
        remove_segments_before(directory.path(), 1000).expect("removal works"),
        0
    );
    assert_eq!(
        segment_names(directory.path()),
        ["00000000000000000000.wal", "backup.wal", "notes.txt"]
    );
}

/// Puts `journal` in the state a failed append leaves it in when cutting the failed record off
/// failed too: part of a record at the end of the segment, and the length to cut back to
/// remembered for later.
fn leave_an_uncut_failed_append(journal: &mut Journal) {
    let partial = frame(journal.position(), &record(99).encode_to_vec()).expect("a small record");
    journal
        .file
        .write_all(&partial[..10])
        .expect("the partial record writes");
    journal.cut_to = Some(journal.segment_bytes);
}

#[test]
fn a_failed_append_that_could_not_be_cut_is_cut_before_the_next_append() {
    let directory = TempDir::new().expect("a temporary directory");
    let mut opened = open(directory.path(), DEFAULT_SEGMENT_BYTES, 0).expect("a new journal opens");
    opened.journal.append(&record(0)).expect("the append works");
    leave_an_uncut_failed_append(&mut opened.journal);

    opened.journal.append(&record(1)).expect("the append works");
    drop(opened);

    let reopened = open(directory.path(), DEFAULT_SEGMENT_BYTES, 0).expect("the journal reopens");
    assert_eq!(reopened.replayed, numbered(&[record(0), record(1)], 0));
    assert_eq!(reopened.report.torn_bytes, 0);
}

#[test]
fn a_failed_append_that_could_not_be_cut_is_cut_before_the_segment_is_closed() {
    // A checkpoint rotates the journal between the failed append and the next one: the old
    // segment must be cut, and the new one must not be stretched to the old one's length.
    let directory = TempDir::new().expect("a temporary directory");
    let mut opened = open(directory.path(), DEFAULT_SEGMENT_BYTES, 0).expect("a new journal opens");
    opened.journal.append(&record(0)).expect("the append works");
    opened.journal.append(&record(1)).expect("the append works");
    let good_length = file_length(&segment_path(directory.path(), 0));
    leave_an_uncut_failed_append(&mut opened.journal);

    assert_eq!(opened.journal.rotate().expect("rotate works"), 2);
    let appended = opened.journal.append(&record(2)).expect("the append works");
    drop(opened);

    assert_eq!(file_length(&segment_path(directory.path(), 0)), good_length);
    assert_eq!(
        file_length(&segment_path(directory.path(), 2)),
        appended.bytes
    );
    let reopened = open(directory.path(), DEFAULT_SEGMENT_BYTES, 0).expect("the journal reopens");
    assert_eq!(
        reopened.replayed,
        numbered(&[record(0), record(1), record(2)], 0)
    );
    assert_eq!(reopened.report.torn_bytes, 0);
}

#[test]
fn a_full_disk_fails_the_append_cleanly_and_appends_resume_once_space_is_freed() {
    let disk = SmallDisk::mount("256k");
    let directory = disk.path().join("journal");
    let filler = disk.path().join("filler");
    let mut opened = open(&directory, DEFAULT_SEGMENT_BYTES, 0).expect("a new journal opens");
    let segment = segment_path(&directory, 0);
    // Records of a few kilobytes, so that the one that meets the full disk is written in part
    // (tmpfs takes what fits, a page at a time) and the cut-off has something to cut.
    let big_record = |number: u32| sized_record(number, 300);
    assert!(big_record(0).encoded_len() > 4096, "a record spans pages");
    let mut appended = Vec::new();
    for number in 0..4 {
        opened
            .journal
            .append(&big_record(number))
            .expect("the disk has room for the first records");
        appended.push(big_record(number));
    }
    disk.fill(&filler);

    let good_length = file_length(&segment);
    for number in 4..8 {
        match opened.journal.append(&big_record(number)) {
            Err(AppendError::DiskFull(_)) => {}
            other => panic!("an append to a full disk gave {other:?}, not DiskFull"),
        }
        assert_eq!(
            file_length(&segment),
            good_length,
            "a failed append leaves no part of its record behind"
        );
        assert_eq!(opened.journal.position(), 4);
    }

    std::fs::remove_file(&filler).expect("the filler removes");
    for number in 8..10 {
        let bytes = opened
            .journal
            .append(&big_record(number))
            .expect("appends resume once the disk has room")
            .bytes;
        assert_eq!(
            file_length(&segment),
            good_length + bytes * u64::from(number - 7)
        );
        appended.push(big_record(number));
    }
    drop(opened);

    let reopened = open(&directory, DEFAULT_SEGMENT_BYTES, 0).expect("the journal reopens");
    assert_eq!(reopened.replayed, numbered(&appended, 0));
    assert_eq!(reopened.report.torn_bytes, 0);
}
