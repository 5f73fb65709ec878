//! Tests of [`EventIds`]: every operation on small and large sets, block splits and directory
//! growth with tiny blocks, ids that share long prefixes (down to blocks that may not split),
//! frozen copies that keep their state, the sorted encoding and its refusals, and a property
//! test of random operations against a `HashMap` model. Every test checks the layout's
//! invariants too (`check_layout`).

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;

/// `count` ids from `seed`, distinct with overwhelming probability, uniformly spread.
fn random_ids(count: usize, seed: u64) -> Vec<[u32; 3]> {
    let mut state = seed;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..count)
        .map(|_| {
            let (a, b) = (next(), next());
            [(a >> 32) as u32, a as u32, b as u32]
        })
        .collect()
}

/// The word each test remembers with `id`: its last word, whose low 16 bits make a slot.
fn word(id: &[u32; 3]) -> u32 {
    id[2].rotate_left(7)
}

fn encoded(ids: &EventIds) -> Vec<u8> {
    let mut bytes = Vec::new();
    ids.freeze().encode(&mut bytes);
    bytes
}

/// The model's content in the encoding: sorted, four little-endian words each.
fn model_encoded(model: &BTreeMap<[u32; 3], u32>) -> Vec<u8> {
    model
        .iter()
        .flat_map(|(id, word)| [id[0], id[1], id[2], *word])
        .flat_map(u32::to_le_bytes)
        .collect()
}

/// Checks every invariant of the layout: sub-directories of 2^depth slots, each pointing to
/// the block of its ids; every block reached, in order, holding its prefix's ids sorted, with
/// right runs and no more than `max_block` entries unless it is as deep as blocks go; `len`.
fn check_layout(ids: &EventIds) {
    let mut reached = 0;
    let mut last: Option<u32> = None;
    let mut count = 0;
    let mut previous: Option<[u32; 3]> = None;
    for (top, sub) in ids.directory.iter().enumerate() {
        assert_eq!(sub.slots.len(), 1 << sub.depth, "sub-directory {top}");
        for (slot, &index) in sub.slots.iter().enumerate() {
            let block = ids.blocks.get(index);
            let depth = u32::from(block.depth);
            // The first TOP_BITS + depth bits this slot stands for, and those of the block.
            let bits = (top as u64) << sub.depth | slot as u64;
            let slot_depth = TOP_BITS + sub.depth;
            assert!(depth <= slot_depth, "a block deeper than its slots");
            assert_eq!(
                u64::from(block.prefix),
                bits >> (slot_depth - depth),
                "slot {top}/{slot} points to a block of another prefix"
            );
            if last == Some(index) {
                continue;
            }
            last = Some(index);
            reached += 1;
            let len = block.len as usize;
            assert!(
                len <= ids.max_block || depth == MAX_DEPTH,
                "a block over max_block"
            );
            assert_eq!(
                block.class,
                Slabs::class_for(len),
                "a slot of the wrong size"
            );
            if block.class > 0 {
                assert_eq!(
                    ids.slabs.owner(block.class, block.slot),
                    index,
                    "slot owner"
                );
            }
            if (depth as usize) < QUOTIENT_BITS {
                let mut end = 0;
                for pair in block.runs.windows(2) {
                    assert!(pair[0][0] < pair[1][0], "runs out of order");
                }
                for run in &block.runs {
                    assert!(run[1] > end, "an empty run");
                    end = run[1];
                }
                assert_eq!(usize::from(end), len, "runs and entries");
            } else {
                assert!(block.runs.is_empty());
            }
            let entries = &ids.slabs.slot(block.class, block.slot)[..len];
            block.for_each(entries, |id, _| {
                assert_eq!(build::prefix_of(&id, depth), block.prefix);
                assert!(previous < Some(id), "ids out of order");
                previous = Some(id);
                count += 1;
            });
        }
    }
    assert_eq!(reached, ids.blocks.len(), "blocks no slot points to");
    assert_eq!(
        ids.slabs.slots_used(),
        ids.blocks.iter().filter(|b| b.class > 0).count()
    );
    assert_eq!(count, ids.len());
}

#[test]
fn an_empty_set_holds_nothing_and_is_small() {
    let ids = EventIds::new();
    assert!(ids.is_empty());
    assert_eq!(ids.len(), 0);
    assert_eq!(ids.find(&[1, 2, 3]), None);
    assert!(ids.heap_bytes() < 100_000, "{}", ids.heap_bytes());
    assert_eq!(encoded(&ids), Vec::<u8>::new());
    let decoded = EventIds::decode(&[]).expect("nothing decodes");
    assert!(decoded.is_empty());
    check_layout(&decoded);
    check_layout(&ids);
}

#[test]
fn inserted_ids_are_found_with_their_word_and_others_are_not() {
    for (count, max_block) in [(10, MAX_BLOCK), (3_000, 4), (200_000, MAX_BLOCK)] {
        let all = random_ids(count * 2, 1);
        let (present, absent) = all.split_at(count);
        let mut ids = EventIds::with_max_block(max_block);
        for id in present {
            assert_eq!(ids.find(id), None);
            ids.insert(*id, word(id));
        }
        assert_eq!(ids.len(), count);
        assert!(!ids.is_empty());
        check_layout(&ids);
        for id in present {
            assert_eq!(ids.find(id), Some(word(id)));
        }
        for id in absent {
            assert_eq!(ids.find(id), None);
        }
    }
}

#[test]
fn a_large_set_is_deeper_than_the_quotient_and_about_15_bytes_an_id() {
    let present = random_ids(1 << 20, 2);
    let mut ids = EventIds::new();
    for id in &present {
        ids.insert(*id, word(id));
    }
    check_layout(&ids);
    assert!(ids.directory.iter().any(|sub| sub.depth > 0));
    let per_id = ids.heap_bytes() as f64 / ids.len() as f64;
    assert!((14.0..16.0).contains(&per_id), "{per_id} bytes an id");
    for id in present.iter().step_by(97) {
        assert_eq!(ids.find(id), Some(word(id)));
    }
    let decoded = EventIds::decode(&encoded(&ids)).expect("what encode wrote decodes");
    check_layout(&decoded);
    assert_eq!(encoded(&decoded), encoded(&ids));
    let per_id = decoded.heap_bytes() as f64 / decoded.len() as f64;
    assert!(
        (14.0..16.0).contains(&per_id),
        "decoded: {per_id} bytes an id"
    );
}

#[test]
fn ids_sharing_long_prefixes_split_as_deep_as_blocks_go() {
    // Ids that differ only in their last word: blocks split down to the deepest depth, then
    // grow past max_block instead.
    let mut ids = EventIds::with_max_block(4);
    let mut model = BTreeMap::new();
    for (low, id) in random_ids(300, 3).iter().enumerate() {
        let near = [0x1234_5678, 0x9ABC_DEF0, id[2]];
        let far = [id[0], id[1], low as u32];
        for id in [near, far] {
            ids.insert(id, word(&id));
            model.insert(id, word(&id));
        }
    }
    check_layout(&ids);
    assert!(ids.blocks.len() > 1);
    for (id, word) in &model {
        assert_eq!(ids.find(id), Some(*word));
    }
    assert_eq!(encoded(&ids), model_encoded(&model));
    let decoded =
        EventIds::decode_with_max_block(&encoded(&ids), 4).expect("what encode wrote decodes");
    check_layout(&decoded);
    assert_eq!(encoded(&decoded), model_encoded(&model));
}

#[test]
fn a_frozen_copy_keeps_the_state_it_was_taken_in() {
    let all = random_ids(20_000, 4);
    let (before, after) = all.split_at(10_000);
    let mut ids = EventIds::with_max_block(16);
    for id in before {
        ids.insert(*id, word(id));
    }
    let frozen = ids.freeze();
    let mut expected = Vec::new();
    frozen.encode(&mut expected);
    let thread = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        frozen.encode(&mut bytes);
        (frozen.len(), bytes)
    });
    for id in after {
        ids.insert(*id, word(id));
    }
    ids.retain(|word| word % 3 != 0);
    check_layout(&ids);
    assert_eq!(
        thread.join().expect("the encoding thread ends"),
        (10_000, expected.clone())
    );
    assert_eq!(
        EventIds::decode(&expected)
            .expect("what encode wrote decodes")
            .len(),
        10_000,
        "the copy decodes as the set it was"
    );
}

#[test]
fn retain_keeps_the_ids_whose_word_it_accepts_and_compacts_the_blocks() {
    let present = random_ids(50_000, 5);
    let mut ids = EventIds::with_max_block(32);
    for id in &present {
        ids.insert(*id, word(id));
    }
    let blocks = ids.blocks.len();
    // A few ids go: the blocks stay.
    ids.retain(|word| word % 100 != 0);
    check_layout(&ids);
    assert_eq!(ids.blocks.len(), blocks);
    // Most go: fewer blocks.
    ids.retain(|word| word % 10 == 1);
    check_layout(&ids);
    assert!(ids.blocks.len() < blocks / 4, "{} blocks", ids.blocks.len());
    for id in &present {
        let kept = word(id) % 10 == 1;
        assert_eq!(ids.find(id), kept.then(|| word(id)));
    }
    ids.retain(|_| false);
    check_layout(&ids);
    assert!(ids.is_empty());
    assert_eq!(ids.blocks.len(), 1);
}

#[test]
fn decode_refuses_what_the_encoding_never_gives() {
    let mut ids = EventIds::new();
    for id in random_ids(3, 6) {
        ids.insert(id, 7);
    }
    let bytes = encoded(&ids);
    let error = |bytes: &[u8]| format!("{:#}", EventIds::decode(bytes).expect_err("refused"));
    assert_eq!(
        error(&bytes[..47]),
        "remembered event ids: 47 bytes is not a whole number of 16-byte ids"
    );
    let mut swapped = bytes[16..32].to_vec();
    swapped.extend_from_slice(&bytes[..16]);
    assert!(error(&swapped).contains("id 1 is less than the one before it"));
    let mut repeated = bytes[..32].to_vec();
    repeated.extend_from_slice(&bytes[16..32]);
    assert!(error(&repeated).contains("id 2 is equal to the one before it"));
}

#[test]
fn ids_in_any_order_as_four_words_make_the_same_set() {
    let present = random_ids(5_000, 7);
    let mut words: Vec<u32> = present
        .iter()
        .flat_map(|id| [id[0], id[1], id[2], word(id)])
        .collect();
    let ids = EventIds::from_unsorted(&words).expect("distinct ids");
    check_layout(&ids);
    let model: BTreeMap<_, _> = present.iter().map(|id| (*id, word(id))).collect();
    assert_eq!(encoded(&ids), model_encoded(&model));
    words.extend_from_within(8..12);
    let error = format!(
        "{:#}",
        EventIds::from_unsorted(&words).expect_err("refused")
    );
    assert!(error.contains("is stored twice"), "{error}");
    let error = format!(
        "{:#}",
        EventIds::from_unsorted(&words[..7]).expect_err("refused")
    );
    assert!(error.contains("not a whole number"), "{error}");
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Operation {
    /// Inserts the id unless it is there (then only finds it).
    Insert([u32; 3], u32),
    Find([u32; 3]),
    /// Keeps the ids whose word's slot (low 16 bits) is not divisible by this.
    Retain(u32),
    Freeze,
    /// Replaces the set by its encoding decoded.
    RoundTrip,
}

/// Ids drawn so that they collide, share long prefixes and spread alike.
fn id_strategy() -> impl Strategy<Value = [u32; 3]> {
    let word = prop_oneof![
        any::<u32>(),
        Just(0),
        Just(u32::MAX),
        0..4u32,
        (0..4u32).prop_map(|high| high << 30)
    ];
    [word.clone(), word.clone(), word]
}

fn operation_strategy() -> impl Strategy<Value = Operation> {
    prop_oneof![
        8 => (id_strategy(), any::<u32>()).prop_map(|(id, word)| Operation::Insert(id, word)),
        3 => id_strategy().prop_map(Operation::Find),
        1 => (2..5u32).prop_map(Operation::Retain),
        1 => Just(Operation::Freeze),
        1 => Just(Operation::RoundTrip),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn event_ids_behave_as_a_map(
        max_block in 1..12usize,
        operations in proptest::collection::vec(operation_strategy(), 0..400),
    ) {
        let mut ids = EventIds::with_max_block(max_block);
        let mut model: BTreeMap<[u32; 3], u32> = BTreeMap::new();
        let mut frozen: Vec<(FrozenIds, Vec<u8>)> = Vec::new();
        for operation in operations {
            match operation {
                Operation::Insert(id, word) => {
                    prop_assert_eq!(ids.find(&id), model.get(&id).copied());
                    if let std::collections::btree_map::Entry::Vacant(vacant) = model.entry(id) {
                        ids.insert(id, word);
                        vacant.insert(word);
                    }
                }
                Operation::Find(id) => prop_assert_eq!(ids.find(&id), model.get(&id).copied()),
                Operation::Retain(divisor) => {
                    let keep = |word: u32| (word & 0xFFFF) % divisor != 0;
                    ids.retain(keep);
                    model.retain(|_, word| keep(*word));
                }
                Operation::Freeze => frozen.push((ids.freeze(), model_encoded(&model))),
                Operation::RoundTrip => {
                    ids = EventIds::decode_with_max_block(&encoded(&ids), max_block)
                        .map_err(|error| TestCaseError::fail(format!("{error:#}")))?;
                }
            }
            prop_assert_eq!(ids.len(), model.len());
        }
        check_layout(&ids);
        prop_assert_eq!(encoded(&ids), model_encoded(&model));
        let hashed: HashMap<[u32; 3], u32> = model.iter().map(|(id, word)| (*id, *word)).collect();
        for (id, word) in &hashed {
            prop_assert_eq!(ids.find(id), Some(*word));
        }
        for (copy, expected) in frozen {
            let mut bytes = Vec::new();
            copy.encode(&mut bytes);
            prop_assert_eq!(copy.len(), expected.len() / ENCODED_ID_BYTES);
            prop_assert_eq!(bytes, expected);
        }
    }
}

#[test]
fn decode_refuses_more_ids_under_one_prefix_than_a_slot_holds() {
    // Ids that share their first 64 bits, one more than the largest slot: no fingerprints.
    let bytes: Vec<u8> = (0..=Slabs::MAX_ENTRIES as u32)
        .flat_map(|low| [7, 7, low, 0])
        .flat_map(u32::to_le_bytes)
        .collect();
    let error = format!("{:#}", EventIds::decode(&bytes).expect_err("refused"));
    assert!(error.contains("share their first 26 bits"), "{error}");
}
