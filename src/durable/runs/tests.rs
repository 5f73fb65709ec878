//! Tests of id runs: a run reads back what was written and refuses every kind of damage or a
//! file that is not the run named; runs merge into the union of their ids in run order (the newest
//! run's word for an id found twice); the plan keeps each run larger than all newer ones
//! together, so runs stay few; and pruning removes exactly the runs not kept.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tempfile::TempDir;

use super::*;
use crate::event::EventId;

fn entry(id: u32, word: u32) -> Entry {
    [id.rotate_left(7), id, !id, word]
}

fn sorted(entries: Vec<Entry>) -> Vec<Entry> {
    in_order(entries).collect()
}

/// [`write`] of generations `first` to `last`.
fn write_run(
    directory: &Path,
    first: u64,
    last: u64,
    entries: Vec<Entry>,
) -> anyhow::Result<Arc<Run>> {
    write(directory, (first, last), entries.len() as u64, entries)
}

fn words(entries: &[Entry]) -> Vec<u32> {
    entries.iter().flatten().copied().collect()
}

fn run_of(directory: &Path, generation: u64, ids: impl IntoIterator<Item = u32>) -> Arc<Run> {
    let entries = sorted(ids.into_iter().map(|id| entry(id, id / 3)).collect());
    write_run(directory, generation, generation, entries).expect("the run writes")
}

#[test]
fn a_run_reads_back_what_was_written_and_is_named_by_its_generations() {
    let directory = TempDir::new().expect("a temporary directory");
    let entries = sorted((0..10_000).map(|id| entry(id, id * 5)).collect());
    let run = write_run(directory.path(), 3, 7, entries.clone()).expect("the run writes");
    let run = run.id_run();

    assert_eq!((run.first_generation, run.last_generation), (3, 7));
    assert_eq!(run.entries, 10_000);
    assert_eq!(
        path(directory.path(), run)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned()),
        Some("ids-00000000000000000003-00000000000000000007.run".to_owned())
    );
    assert_eq!(
        std::fs::metadata(path(directory.path(), run))
            .expect("the run exists")
            .len(),
        (HEADER_BYTES + 10_000 * ENTRY_BYTES) as u64
    );
    let read = read(directory.path(), std::slice::from_ref(run)).expect("the run reads");
    assert_eq!(read, vec![words(&entries)]);
}

#[test]
fn an_empty_run_reads_back_empty() {
    let directory = TempDir::new().expect("a temporary directory");
    let run = write_run(directory.path(), 1, 1, Vec::new()).expect("the run writes");
    assert_eq!(run.id_run().entries, 0);
    assert_eq!(run.entries().count(), 0);
    assert_eq!(
        read(directory.path(), &[*run.id_run()]).expect("the run reads"),
        vec![Vec::<u32>::new()]
    );
}

#[test]
fn entries_out_of_order_or_repeated_are_refused_and_leave_no_file() {
    let directory = TempDir::new().expect("a temporary directory");
    let (low, high) = if order(&entry(1, 0)) < order(&entry(2, 0)) {
        (entry(1, 0), entry(2, 0))
    } else {
        (entry(2, 0), entry(1, 0))
    };
    for entries in [vec![high, low], vec![low, [low[0], low[1], low[2], 9]]] {
        let error = write_run(directory.path(), 1, 1, entries).expect_err("refused");
        assert!(format!("{error:#}").contains("out of order"), "{error:#}");
    }
    assert_eq!(
        std::fs::read_dir(directory.path()).expect("lists").count(),
        0
    );
}

#[test]
fn a_damaged_missing_or_other_run_is_refused() {
    let directory = TempDir::new().expect("a temporary directory");
    let run = *run_of(directory.path(), 1, 0..1000).id_run();
    let file = path(directory.path(), &run);
    let original = std::fs::read(&file).expect("the run reads");
    let refused = |bytes: Option<Vec<u8>>, run: &IdRun| {
        match bytes {
            Some(bytes) => std::fs::write(&file, bytes).expect("the file writes"),
            None => {
                let _ = std::fs::remove_file(&file);
            }
        }
        format!(
            "{:#}",
            read(directory.path(), std::slice::from_ref(run)).expect_err("refused")
        )
    };

    let mut flipped = original.clone();
    flipped[HEADER_BYTES + 500] ^= 1;
    assert!(refused(Some(flipped), &run).contains("checksum"));
    let truncated = original[..original.len() - 16].to_vec();
    assert!(refused(Some(truncated), &run).contains("entries take"));
    let mut magic = original.clone();
    magic[0] = b'X';
    assert!(refused(Some(magic), &run).contains("is not a suivi"));
    let other = IdRun {
        checksum: run.checksum ^ 1,
        ..run
    };
    assert!(refused(Some(original.clone()), &other).contains("not the run"));
    let longer = IdRun {
        entries: run.entries + 1,
        ..run
    };
    assert!(refused(Some(original), &longer).contains("entries take"));
    assert!(refused(None, &run).contains("cannot read id run"));
}

#[test]
fn the_plan_merges_the_newest_runs_until_each_holds_more_than_all_newer_ones() {
    let runs = |sizes: &[u64]| -> Vec<IdRun> {
        sizes
            .iter()
            .zip(1..)
            .map(|(entries, generation)| IdRun {
                first_generation: generation,
                last_generation: generation,
                entries: *entries,
                checksum: 0,
            })
            .collect()
    };
    assert_eq!(plan(&runs(&[])), 0);
    assert_eq!(plan(&runs(&[5])), 0);
    assert_eq!(plan(&runs(&[100, 10])), 0);
    assert_eq!(plan(&runs(&[100, 10, 10])), 2);
    assert_eq!(plan(&runs(&[100, 40, 20, 10, 5])), 0);
    assert_eq!(
        plan(&runs(&[100, 40, 20, 10, 10])),
        4,
        "40 <= 20 + 10 + 10, 100 > 80"
    );
    assert_eq!(plan(&runs(&[8, 4, 2, 1, 1])), 5);
    assert_eq!(plan(&runs(&[8, 0])), 0, "an empty run takes nothing");
}

proptest! {
    #[test]
    fn runs_stay_few_whatever_is_sealed(sizes in proptest::collection::vec(0u64..5000, 1..200)) {
        let mut runs: Vec<u64> = Vec::new();
        for size in sizes {
            if size > 0 {
                runs.push(size);
            }
            let as_runs: Vec<IdRun> = runs
                .iter()
                .map(|entries| IdRun { entries: *entries, ..IdRun::default() })
                .collect();
            let merging = plan(&as_runs);
            if merging > 0 {
                let merged = runs.split_off(runs.len() - merging).iter().sum();
                runs.push(merged);
            }
            // Each run holds more than all the newer ones together.
            for (index, run) in runs.iter().enumerate() {
                let newer: u64 = runs[index + 1..].iter().sum();
                prop_assert!(*run > newer, "{runs:?}");
            }
            let total: u64 = runs.iter().sum();
            prop_assert!(runs.len() as f64 <= (total as f64 + 1.0).log2(), "{runs:?}");
        }
    }

    #[test]
    fn merged_runs_hold_the_union_of_their_ids_in_run_order(
        runs in proptest::collection::vec(
            proptest::collection::btree_map(0u32..3000, 0u32..100, 0..300),
            1..6,
        )
    ) {
        let directory = TempDir::new().expect("a temporary directory");
        let mut written = Vec::new();
        let mut model: BTreeMap<(u32, [u32; 3]), u32> = BTreeMap::new();
        for (generation, ids) in (1..).zip(&runs) {
            let entries: Vec<Entry> = sorted(ids.iter().map(|(id, word)| entry(*id, *word)).collect());
            for entry in &entries {
                // The newest run's word wins.
                model.insert(order(entry), entry[3]);
            }
            written.push(write_run(directory.path(), generation, generation, entries).expect("the run writes"));
        }
        let merged = merge(directory.path(), &written).expect("the runs merge");
        prop_assert_eq!((merged.id_run().first_generation, merged.id_run().last_generation), (1, runs.len() as u64));
        let expected: Vec<u32> = model
            .iter()
            .flat_map(|((_, id), word)| [id[0], id[1], id[2], *word])
            .collect();
        prop_assert_eq!(merged.id_run().entries as usize, model.len());
        let read = read(directory.path(), &[*merged.id_run()]).expect("the merged run reads");
        prop_assert_eq!(&read[0], &expected);
        // Its filter finds every id with its word, read from the file.
        let found = Written::new(vec![merged]);
        for ((_, id), word) in &model {
            prop_assert_eq!(found.find(&EventId(*id)).expect("reads"), Some(*word));
        }
    }
}

#[test]
fn a_merge_of_a_damaged_run_fails_and_leaves_no_merged_run() {
    let directory = TempDir::new().expect("a temporary directory");
    let older = run_of(directory.path(), 1, 0..5000);
    let newer = run_of(directory.path(), 2, 5000..10_000);
    let file = path(directory.path(), newer.id_run());
    let mut bytes = std::fs::read(&file).expect("the run reads");
    bytes[HEADER_BYTES + 40_000] ^= 0x10;
    std::fs::write(&file, bytes).expect("the run writes");

    let error = merge(directory.path(), &[older, newer]).expect_err("refused");
    assert!(format!("{error:#}").contains("checksum"), "{error:#}");
    let merged = IdRun {
        first_generation: 1,
        last_generation: 2,
        ..IdRun::default()
    };
    assert!(!path(directory.path(), &merged).exists());
}

#[test]
fn pruning_removes_the_runs_not_kept_and_leftovers_only() {
    let directory = TempDir::new().expect("a temporary directory");
    let kept = run_of(directory.path(), 1, 0..10);
    let gone = run_of(directory.path(), 2, 10..20);
    let also_kept = run_of(directory.path(), 3, 20..30);
    std::fs::write(directory.path().join("ids-4-4.run.tmp"), b"half").expect("writes");
    std::fs::write(directory.path().join("00000000000000000009.ckpt"), b"x").expect("writes");

    let removed =
        prune(directory.path(), [kept.id_run(), also_kept.id_run()]).expect("pruning works");

    assert_eq!(removed, 2);
    assert!(path(directory.path(), kept.id_run()).exists());
    assert!(path(directory.path(), also_kept.id_run()).exists());
    assert!(!path(directory.path(), gone.id_run()).exists());
    assert!(directory.path().join("00000000000000000009.ckpt").exists());
    assert_eq!(
        prune(&directory.path().join("never-created"), []).expect("fine"),
        0
    );
}

#[test]
fn runs_go_only_when_every_checkpoint_kept_is_known_not_to_name_them() {
    let run = |generation: u64| IdRun {
        first_generation: generation,
        last_generation: generation,
        ..IdRun::default()
    };
    let named = |kept: &Kept| -> Option<Vec<u64>> {
        kept.named()
            .map(|runs| runs.map(|run| run.first_generation).collect())
    };

    // A fresh start: every checkpoint kept is one of this process's.
    let mut kept = Kept::none();
    assert_eq!(named(&kept), Some(vec![]));
    kept.written(10, vec![run(1)]);
    assert_eq!(named(&kept), Some(vec![1]));
    kept.written(20, vec![run(1), run(2)]);
    kept.written(30, vec![run(3)]);
    assert_eq!(
        named(&kept),
        Some(vec![1, 2, 3]),
        "the checkpoints at 20 and 30"
    );

    // After a restart, an older checkpoint may be kept beside the one restored: nothing goes
    // until a checkpoint at another position replaces it.
    let mut kept = Kept::restored(30, vec![run(3)]);
    assert_eq!(named(&kept), None);
    kept.written(30, vec![run(4)]);
    assert_eq!(
        named(&kept),
        None,
        "the same position: the older is still kept"
    );
    kept.written(40, vec![run(4), run(5)]);
    assert_eq!(named(&kept), Some(vec![4, 4, 5]));
}
