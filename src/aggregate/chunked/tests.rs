//! `Chunked` against a plain `HashMap` model: the same answers through splits, removals,
//! retains and clears, and a frozen copy (a clone) that keeps showing the table as it was while
//! the original changes.

use std::collections::HashMap;

use proptest::prelude::*;

use super::chunk::{GROWTH, ROOM_STEP};

/// The entries of a chunk of an array table, and of one built whole.
const CHUNK_ENTRIES: usize = <Sorted<LearnerKey, u32> as Chunk<LearnerKey, u32>>::ENTRIES;
const BUILT_ENTRIES: usize = CHUNK_ENTRIES * 3 / 4;
use super::*;

fn key(n: u32) -> LearnerKey {
    // Made up as benchmarks do, two words constant: the chunks must still get even shares.
    LearnerKey([n, 7, 7])
}

fn model_of(table: &Chunked<LearnerKey, u32>) -> HashMap<LearnerKey, u32> {
    table.iter().map(|(key, value)| (*key, *value)).collect()
}

#[test]
fn a_table_grows_a_chunk_at_a_time_and_finds_every_entry_after_the_splits() {
    let mut table: Chunked<LearnerKey, u32> = Chunked::default();
    let count = 20 * CHUNK_ENTRIES as u32 + 123;
    for n in 0..count {
        assert_eq!(table.insert(key(n), n), None);
    }
    assert_eq!(table.len(), count as usize);
    assert_eq!(
        table.chunks.len(),
        21,
        "one chunk per CHUNK_ENTRIES entries"
    );
    for n in 0..count {
        assert_eq!(table.get(&key(n)), Some(&n), "entry {n}");
    }
    assert_eq!(table.get(&key(count)), None);
    // Every entry sits in the chunk its key is looked up in, and no chunk is far off average.
    for (index, chunk) in table.chunks.iter().enumerate() {
        assert!(chunk.entries().all(|(key, _)| table.locate(key).0 == index));
        assert!(chunk.entries.is_sorted_by_key(|(key, _)| key.order()));
        assert!(chunk.marks.is_sorted());
        assert!(
            chunk.entries.len() < 3 * CHUNK_ENTRIES,
            "chunk {index}: {}",
            chunk.entries.len()
        );
    }
}

#[test]
fn a_frozen_copy_keeps_the_state_it_was_taken_at_and_shares_only_untouched_chunks() {
    let mut table: Chunked<LearnerKey, u32> = Chunked::default();
    for n in 0..(4 * CHUNK_ENTRIES as u32) {
        table.insert(key(n), n);
    }
    let before = model_of(&table);
    let frozen = table.clone();
    // One change: one chunk copied, the others still shared.
    *table.get_mut(&key(7)).expect("inserted above") = 0;
    let shared = table
        .chunks
        .iter()
        .zip(&frozen.chunks)
        .filter(|(a, b)| Arc::ptr_eq(a, b))
        .count();
    assert_eq!(shared, table.chunks.len() - 1);
    for n in (4 * CHUNK_ENTRIES as u32)..(8 * CHUNK_ENTRIES as u32) {
        table.insert(key(n), n);
    }
    table.retain(|known, _| *known != key(1));
    assert_eq!(model_of(&frozen), before);
    assert_eq!(frozen.len(), before.len());
    let entries: HashMap<LearnerKey, u32> = frozen.into_entries().collect();
    assert_eq!(entries, before);
    assert_eq!(table.get(&key(7)), Some(&0));
    assert_eq!(table.get(&key(1)), None);
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u32, u32),
    Bump(u32),
    Remove(u32),
    Retain(u32),
    Freeze,
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0..20_000u32;
    prop_oneof![
        20 => (n.clone(), any::<u32>()).prop_map(|(n, v)| Op::Insert(n, v)),
        5 => n.clone().prop_map(Op::Bump),
        5 => n.prop_map(Op::Remove),
        1 => (2..7u32).prop_map(Op::Retain),
        1 => Just(Op::Freeze),
        1 => Just(Op::Clear),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn the_table_answers_as_a_hash_map_does_and_frozen_copies_do_not_move(
        ops in proptest::collection::vec(op(), 1..400),
        bulk in 0..12_000u32,
    ) {
        let mut table: Chunked<LearnerKey, u32> = Chunked::default();
        // The same operations on a table of hash-table chunks.
        let mut hashed: Hashed<LearnerKey, u32> = Chunked::default();
        let mut model = HashMap::new();
        let mut frozen = Vec::new();
        for n in 0..bulk {
            table.insert(key(n), n);
            hashed.insert(key(n), n);
            model.insert(key(n), n);
        }
        for op in ops {
            match op {
                Op::Insert(n, v) => {
                    let want = model.insert(key(n), v);
                    prop_assert_eq!(table.insert(key(n), v), want);
                    prop_assert_eq!(hashed.insert(key(n), v), want);
                }
                Op::Bump(n) => {
                    let want = model.get_mut(&key(n)).map(|v| { *v += 1; *v });
                    prop_assert_eq!(table.get_mut(&key(n)).map(|v| { *v += 1; *v }), want);
                    prop_assert_eq!(hashed.get_mut(&key(n)).map(|v| { *v += 1; *v }), want);
                }
                Op::Remove(n) => {
                    let held = table.get(&key(n)).copied();
                    table.retain(|known, _| *known != key(n));
                    hashed.retain(|known, _| *known != key(n));
                    prop_assert_eq!(held, model.remove(&key(n)));
                }
                Op::Retain(m) => {
                    table.retain(|_, v| *v % m != 0);
                    hashed.retain(|_, v| *v % m != 0);
                    model.retain(|_, v| *v % m != 0);
                }
                Op::Freeze => frozen.push((table.clone(), hashed.clone(), model.clone())),
                Op::Clear => {
                    table.clear();
                    hashed.clear();
                    model.clear();
                }
            }
            prop_assert_eq!(table.len(), model.len());
            prop_assert_eq!(hashed.len(), model.len());
        }
        prop_assert_eq!(&model_of(&table), &model);
        let hashed_entries: HashMap<LearnerKey, u32> =
            hashed.iter().map(|(key, value)| (*key, *value)).collect();
        prop_assert_eq!(&hashed_entries, &model);
        let mut in_order: Vec<(LearnerKey, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
        in_order.sort_unstable_by_key(|(key, _)| key.order());
        prop_assert_eq!(&hashed.in_order(), &in_order);
        prop_assert_eq!(&table.in_order(), &in_order);
        for (copy, copy_hashed, then) in frozen {
            prop_assert_eq!(copy.len(), then.len());
            prop_assert_eq!(copy_hashed.len(), then.len());
            prop_assert_eq!(model_of(&copy), then);
        }
        let drained: HashMap<LearnerKey, u32> = std::mem::take(&mut table).into_entries().collect();
        prop_assert_eq!(drained.len(), model.len());
        prop_assert!(table.is_empty());
        let drained: Vec<(LearnerKey, u32)> = hashed.into_entries().collect();
        prop_assert_eq!(drained, in_order);
    }
}

proptest! {
    /// A table built whole holds what inserting the same entries in order gives, every entry in
    /// the chunk it is looked up in, goes on growing as one grown by inserts does, and is built
    /// again from its entries in order.
    #[test]
    fn a_table_built_whole_is_the_table_of_its_entries_inserted_in_order(
        entries in prop::collection::vec((0u32..20_000, any::<u32>()), 0..12_000),
        more in prop::collection::vec(20_000u32..40_000, 0..3_000),
    ) {
        let mut model = HashMap::new();
        for (n, value) in &entries {
            model.insert(key(*n), *value);
        }
        let mut table: Chunked<LearnerKey, u32> = Chunked::build(entries.len(), |index| {
            let (n, value) = entries[index];
            (key(n), value)
        });
        prop_assert_eq!(table.len(), model.len());
        prop_assert_eq!(model_of(&table), model.clone());
        for (index, chunk) in table.chunks.iter().enumerate() {
            prop_assert!(chunk.entries().all(|(key, _)| table.locate(key).0 == index));
        }
        for n in &more {
            table.insert(key(*n), *n);
            model.insert(key(*n), *n);
        }
        prop_assert_eq!(table.len(), model.len());
        prop_assert_eq!(model_of(&table), model.clone());
        for (n, value) in &model {
            prop_assert_eq!(table.get(n), Some(value));
        }
        // Built again from its entries in order, as a restore builds it from a checkpoint.
        let entries: Vec<(LearnerKey, u32)> = table.into_entries().collect();
        let again: Chunked<LearnerKey, u32> = Chunked::build(entries.len(), |index| entries[index]);
        prop_assert_eq!(again.len(), model.len());
        prop_assert_eq!(model_of(&again), model);
    }
}

#[test]
fn a_table_built_whole_gives_each_chunk_the_room_it_holds_and_inserts_leave_little_more() {
    let count = 200 * BUILT_ENTRIES as u32;
    let mut table: Chunked<LearnerKey, u32> =
        Chunked::build(count as usize, |index| (key(index as u32), index as u32));
    assert_eq!(table.chunks.len(), 200);
    for chunk in &table.chunks {
        // The room of a whole number of steps, no more.
        let len = chunk.entries.len();
        assert_eq!(chunk.entries.capacity(), len.next_multiple_of(ROOM_STEP));
        assert_eq!(chunk.marks.len(), len);
    }
    for n in 0..count {
        assert_eq!(table.get(&key(n)), Some(&n));
    }
    // Grown by inserts to three times its size, the table has room for at most an eighth more
    // than it holds (and a step a chunk).
    for n in count..3 * count {
        table.insert(key(n), n);
    }
    let room: usize = table
        .chunks
        .iter()
        .map(|chunk| chunk.entries.capacity())
        .sum();
    assert!(
        table
            .chunks
            .iter()
            .all(|chunk| chunk.entries.capacity() % ROOM_STEP == 0)
    );
    assert!(
        room <= table.len() + table.len() / GROWTH + table.chunks.len() * ROOM_STEP,
        "room for {room} entries for {}",
        table.len()
    );
}

#[test]
fn entries_in_order_are_every_entry_in_the_order_of_an_id_run() {
    // Sizes with and without a split in progress, and a table built whole.
    for count in [
        0,
        1,
        700,
        5 * CHUNK_ENTRIES as u32 + 77,
        8 * CHUNK_ENTRIES as u32,
    ] {
        let mut grown: Chunked<EventId, u32> = Chunked::default();
        for n in 0..count {
            grown.insert(EventId([n, 7, 7]), n);
        }
        let built: Chunked<EventId, u32> = Chunked::build(count as usize, |index| {
            let n = index as u32;
            (EventId([n, 7, 7]), n)
        });
        for table in [grown, built] {
            let in_order: Vec<(EventId, u32)> = table.in_order();
            let mut expected: Vec<(EventId, u32)> =
                table.iter().map(|(key, value)| (*key, *value)).collect();
            expected.sort_unstable_by_key(|(key, _)| key.run_order());
            assert_eq!(in_order.len(), count as usize);
            assert_eq!(in_order, expected, "{count} entries, split {}", table.split);
            let entries: Vec<(EventId, u32)> = table.into_entries().collect();
            assert_eq!(entries, expected);
        }
    }
}

#[test]
fn keys_whose_spreads_crowd_together_are_still_found() {
    // A guessed place far off: the search must widen to the key, or to where it would be.
    let mut table: Chunked<LearnerKey, u32> = Chunked::default();
    // Half the keys' spreads have ten zero bits just past the chunk's: they crowd at the start
    // of the chunks they are in, the other half spread as usual.
    let crowded = (0..4_000_000u32)
        .map(|n| LearnerKey([n, 11, 3]))
        .filter(|key| (key.spread() >> 2) & 0x3FF == 0)
        .take(3 * CHUNK_ENTRIES);
    let spread = (0..3 * CHUNK_ENTRIES as u32).map(|n| LearnerKey([n, 12, 3]));
    let keys: Vec<LearnerKey> = crowded.chain(spread).collect();
    assert_eq!(keys.len(), 6 * CHUNK_ENTRIES);
    for (value, key) in (0..).zip(&keys) {
        assert_eq!(table.insert(*key, value), None);
    }
    for (value, key) in (0..).zip(&keys) {
        assert_eq!(table.get(key), Some(&value));
    }
    for n in 0..1_000u32 {
        assert_eq!(table.get(&LearnerKey([n, 13, 3])), None);
    }
}
