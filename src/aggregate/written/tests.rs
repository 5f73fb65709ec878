//! `Written` against a map: every id of its runs found with its word, every other id absent,
//! released slots absent, filters built entry by entry and read in pieces alike, and a run read
//! through with its checksum and order checked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use super::*;

/// A run file in memory, counting its reads.
#[derive(Debug, Default)]
struct InMemory {
    bytes: Vec<u8>,
    reads: AtomicUsize,
}

impl RunFile for InMemory {
    fn read_at(&self, first: u64, into: &mut [u8]) -> io::Result<()> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let start = first as usize * ENTRY_BYTES;
        let stored = self
            .bytes
            .get(start..start + into.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "past the run"))?;
        into.copy_from_slice(stored);
        Ok(())
    }
}

/// `entries` in run order, each id once (the last word of a repeated id kept).
fn in_order(entries: impl IntoIterator<Item = Entry>) -> Vec<Entry> {
    let mut unique: HashMap<[u32; 3], u32> = HashMap::new();
    for [a, b, c, word] in entries {
        unique.insert([a, b, c], word);
    }
    let mut sorted: Vec<Entry> = unique
        .into_iter()
        .map(|([a, b, c], word)| [a, b, c, word])
        .collect();
    sorted.sort_by_key(|entry| EventId([entry[0], entry[1], entry[2]]).run_order());
    sorted
}

/// The run file of `entries`, as stored, and what a checkpoint says of it.
fn file_of(generation: u64, entries: &[Entry]) -> (IdRun, Arc<InMemory>) {
    let mut bytes = Vec::new();
    for word in entries.iter().flatten() {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    let run = IdRun {
        first_generation: generation,
        last_generation: generation,
        entries: entries.len() as u64,
        checksum: crc32c::crc32c(&bytes),
    };
    let file = Arc::new(InMemory {
        bytes,
        ..InMemory::default()
    });
    (run, file)
}

/// The run of `entries` (in run order), its filter built entry by entry, and its file.
fn run_of(generation: u64, entries: &[Entry]) -> (Arc<Run>, Arc<InMemory>) {
    let (run, file) = file_of(generation, entries);
    let mut builder = FilterBuilder::new(entries.len() as u64);
    for entry in entries {
        builder.push(entry).expect("entries in run order");
    }
    (Arc::new(builder.finish(run, file.clone())), file)
}

fn entry(n: u32, slot: Slot) -> Entry {
    // Ids made up in one varying word, as tests and benchmarks make them.
    [n, 0, 0, 0xABCD_0000 | u32::from(slot)]
}

#[test]
fn every_id_of_the_runs_is_found_with_its_word_and_others_cost_almost_no_read() {
    let first = in_order((0..100_000).map(|n| entry(n, (n % 3) as Slot)));
    let second = in_order((100_000..130_000).map(|n| entry(n, 5)));
    let (first_run, first_file) = run_of(1, &first);
    let (second_run, second_file) = run_of(2, &second);
    let written = Written::new(vec![first_run, second_run]);
    assert_eq!(written.len(), 130_000);
    for expected in first.iter().chain(&second) {
        let id = EventId([expected[0], expected[1], expected[2]]);
        assert_eq!(written.find(&id).expect("read"), Some(expected[3]));
        assert!(written.may_hold(&id));
    }
    let reads_of_hits =
        first_file.reads.load(Ordering::Relaxed) + second_file.reads.load(Ordering::Relaxed);
    assert!(reads_of_hits >= 130_000);
    let misses = 1_000_000u32;
    for n in 0..misses {
        assert_eq!(written.find(&EventId([n, 1, 0])).expect("read"), None);
    }
    let reads_of_misses = first_file.reads.load(Ordering::Relaxed)
        + second_file.reads.load(Ordering::Relaxed)
        - reads_of_hits;
    // About 16 entries a bucket, one chance in 65,536 each, two runs: some 500 in a million.
    assert!(
        reads_of_misses < 1_000,
        "{reads_of_misses} reads for {misses} ids never seen"
    );
    let bytes_an_id = written.filter_bytes() as f64 / 130_000.0;
    assert!(bytes_an_id < 3.0, "{bytes_an_id} bytes an id");
}

#[test]
fn a_released_slot_is_absent_and_left_out_of_the_count_and_the_entries() {
    let entries = in_order((0..10_000).map(|n| entry(n, (n % 4) as Slot)));
    let (run, _) = run_of(1, &entries);
    let mut written = Written::new(vec![run]);
    assert!(!written.has_released());
    let mut released = vec![false; 4];
    released[2] = true;
    written.release(&released);
    assert!(written.has_released());
    assert_eq!(written.len(), 7_500);
    for expected in &entries {
        let id = EventId([expected[0], expected[1], expected[2]]);
        let found = written.find(&id).expect("read");
        if remembered_slot(expected[3]) == 2 {
            assert_eq!(found, None);
        } else {
            assert_eq!(found, Some(expected[3]));
        }
    }
    let kept: Vec<Entry> = written.entries().collect::<io::Result<_>>().expect("read");
    assert_eq!(kept.len(), 7_500);
    assert!(kept.iter().all(|entry| remembered_slot(entry[3]) != 2));
}

use super::super::remembered_slot;

#[test]
fn a_run_read_through_gives_its_entries_and_a_damaged_one_fails_its_checksum() {
    let entries = in_order((0..(READ_ENTRIES as u32 * 2 + 17)).map(|n| entry(n, 1)));
    let (run, _) = run_of(1, &entries);
    let read: Vec<Entry> = run.entries().collect::<io::Result<_>>().expect("read");
    assert_eq!(read, entries);

    let mut bytes = Vec::new();
    for word in entries.iter().flatten() {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    let id_run = *run.id_run();
    bytes[ENTRY_BYTES * 5 + 3] ^= 1;
    let damaged = FilterBuilder::new(1).finish(
        id_run,
        Arc::new(InMemory {
            bytes,
            ..InMemory::default()
        }),
    );
    let error = damaged
        .entries()
        .collect::<io::Result<Vec<_>>>()
        .expect_err("the checksum fails");
    assert!(error.to_string().contains("checksum"), "{error}");
}

#[test]
fn entries_out_of_run_order_or_a_damaged_run_are_refused() {
    let mut entries = in_order((0..100).map(|n| entry(n, 0)));
    let mut builder = FilterBuilder::new(100);
    builder.push(&entries[1]).expect("first");
    assert!(builder.push(&entries[0]).is_err());
    assert!(builder.push(&entries[1]).is_err(), "a repeated id");
    entries.swap(40, 41);
    let (run, file) = file_of(1, &entries);
    // Within a piece, and across two.
    for piece in [7, 41, 100] {
        let error =
            FilterBuilder::read_in_pieces(run, file.clone(), piece).expect_err("out of order");
        assert!(error.to_string().contains("out of order"), "{error}");
    }
    entries.swap(40, 41);
    let (run, file) = file_of(1, &entries);
    let damaged = IdRun {
        checksum: run.checksum ^ 1,
        ..run
    };
    let error = FilterBuilder::read(damaged, file).expect_err("the checksum fails");
    assert!(error.to_string().contains("checksum"), "{error}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A filter read in pieces on every core is the filter built entry by entry, and
    /// finds what the map holds, whatever the runs' sizes (empty, one bucket, pieces).
    #[test]
    fn built_at_once_or_entry_by_entry_the_runs_answer_as_a_map(
        ids in proptest::collection::vec((any::<u32>(), 0u32..4, any::<u16>()), 0..3_000),
        sizes in proptest::collection::vec(0usize..1_500, 1..4),
        piece in 1usize..300,
        looked_up in proptest::collection::vec(any::<u32>(), 0..200),
    ) {
        let mut model: HashMap<[u32; 3], u32> = HashMap::new();
        let mut runs = Vec::new();
        let mut taken = 0;
        for (generation, size) in sizes.iter().enumerate() {
            let chosen: Vec<Entry> = ids
                .iter()
                .skip(taken)
                .take(*size)
                .map(|(n, word, slot)| [*n, *word, 7, *word << 16 | u32::from(*slot)])
                .filter(|entry| !model.contains_key(&[entry[0], entry[1], entry[2]]))
                .collect();
            taken += size;
            let entries = in_order(chosen);
            for entry in &entries {
                model.insert([entry[0], entry[1], entry[2]], entry[3]);
            }
            let (run, file) = run_of(generation as u64, &entries);
            let at_once = FilterBuilder::read_in_pieces(*run.id_run(), file, piece)
                .expect("in run order");
            prop_assert_eq!(&at_once.starts, &run.starts);
            prop_assert_eq!(&at_once.fingerprints, &run.fingerprints);
            prop_assert_eq!(&at_once.slots, &run.slots);
            runs.push(Arc::new(at_once));
        }
        let written = Written::new(runs);
        prop_assert_eq!(written.len(), model.len());
        for (id, word) in &model {
            prop_assert_eq!(written.find(&EventId(*id)).expect("read"), Some(*word));
        }
        for n in looked_up {
            let id = [n, 9, 7];
            prop_assert_eq!(written.find(&EventId(id)).expect("read"), model.get(&id).copied());
        }
    }
}
