//! Tests of checkpoint files: a written checkpoint reads back the same, every kind of damage is
//! refused by `read` (whose file is read, and its checksum computed, in pieces side by side),
//! `load_newest` falls back past a damaged newest file, and `prune` keeps
//! exactly the checkpoints a fallback may need.

use std::path::Path;

use tempfile::TempDir;

use super::*;
use crate::proto::storage::{CampaignState, KafkaOffset};

/// A checkpoint at `journal_position` with every field set, so that a field lost on the way
/// fails the round trip.
fn checkpoint_at(journal_position: u64) -> Checkpoint {
    let campaign = |id: &str, seed: u32| CampaignState {
        campaign: id.to_owned(),
        learner_keys: vec![seed, seed + 1, seed + 2, seed + 3, seed + 4, seed + 5],
        enrolled: vec![1200, 1201],
        started: vec![1200, 0],
        certified: vec![1203, 0],
        chapters: vec![0b111, 0],
        visitor_keys: vec![seed + 10, seed + 11, seed + 12],
        clicks: 4,
        days: vec![1200, 1201, 1203],
        day_clicks: vec![3, 1, 0],
        day_enrolled: vec![1, 1, 0],
        day_started: vec![1, 0, 0],
        day_certified: vec![0, 0, 1],
    };
    Checkpoint {
        journal_position,
        seen: vec![1, 2, 3, 4, 5, 6, 7, 8],
        campaigns: vec![campaign("gendarmerie", 100), campaign("direct", 200)],
        totals: Some(campaign("*", 300)),
        kafka_offsets: vec![KafkaOffset {
            topic: "learner-events".to_owned(),
            partition: 3,
            next_offset: 1234,
            campaigns: vec!["gendarmerie".to_owned()],
        }],
        chapter_count: 3,
        direct_campaigns: vec!["direct".to_owned()],
        time_zone: "Europe/Paris".to_owned(),
        event_identity: crate::proto::storage::EventIdentity::SourceAndEventId.into(),
        ..Checkpoint::default()
    }
}

/// The file names in `directory`, sorted.
fn file_names(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .expect("the directory lists")
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

/// Writes `checkpoint_at(position)` into `directory` and returns its path.
fn write_at(directory: &Path, position: u64) -> PathBuf {
    write(directory, &checkpoint_at(position))
        .expect("the checkpoint writes")
        .0
}

/// Changes the bytes of the file at `path` with `damage`.
fn damage(path: &Path, damage: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).expect("the checkpoint reads");
    damage(&mut bytes);
    std::fs::write(path, bytes).expect("the checkpoint writes");
}

/// The error `read` gives for the file at `path`, with its whole chain.
fn read_error(path: &Path) -> String {
    match read(path) {
        Ok(checkpoint) => panic!(
            "{} was read as a checkpoint at {}",
            path.display(),
            checkpoint.journal_position
        ),
        Err(error) => format!("{error:#}"),
    }
}

#[test]
fn a_written_checkpoint_reads_back_the_same() {
    let directory = TempDir::new().expect("a temporary directory");
    let checkpoint = checkpoint_at(42);

    let (path, bytes) = write(directory.path(), &checkpoint).expect("the checkpoint writes");

    assert_eq!(path, directory.path().join("00000000000000000042.ckpt"));
    assert_eq!(
        bytes,
        std::fs::metadata(&path).expect("the file exists").len()
    );
    assert_eq!(
        file_names(directory.path()),
        ["00000000000000000042.ckpt"],
        "no temporary file is left behind"
    );
    assert_eq!(read(&path).expect("the checkpoint reads"), checkpoint);
}

#[test]
fn writing_creates_the_directory_and_replaces_a_checkpoint_at_the_same_position() {
    let directory = TempDir::new().expect("a temporary directory");
    let checkpoints = directory.path().join("a").join("b");
    write_at(&checkpoints, 7);
    let mut newer = checkpoint_at(7);
    newer.seen.push(9);

    let (path, _) = write(&checkpoints, &newer).expect("the checkpoint writes");

    assert_eq!(file_names(&checkpoints), ["00000000000000000007.ckpt"]);
    assert_eq!(read(&path).expect("the checkpoint reads"), newer);
}

#[test]
fn read_refuses_a_truncated_file() {
    let directory = TempDir::new().expect("a temporary directory");
    let path = write_at(directory.path(), 1);

    damage(&path, |bytes| {
        bytes.pop();
    });

    assert_eq!(
        read_error(&path),
        format!("{} is truncated", path.display())
    );
}

#[test]
fn read_refuses_a_file_shorter_than_the_header() {
    let directory = TempDir::new().expect("a temporary directory");
    let path = write_at(directory.path(), 1);

    damage(&path, |bytes| bytes.truncate(HEADER_BYTES - 1));

    assert_eq!(
        read_error(&path),
        format!("{} is too short to be a checkpoint", path.display())
    );
}

#[test]
fn read_refuses_a_flipped_payload_byte() {
    let directory = TempDir::new().expect("a temporary directory");
    let path = write_at(directory.path(), 1);

    damage(&path, |bytes| {
        let middle = HEADER_BYTES + (bytes.len() - HEADER_BYTES) / 2;
        bytes[middle] ^= 0x01;
    });

    assert_eq!(
        read_error(&path),
        format!("{} fails its checksum", path.display())
    );
}

#[test]
fn read_refuses_a_flipped_checksum_byte() {
    let directory = TempDir::new().expect("a temporary directory");
    let path = write_at(directory.path(), 1);

    damage(&path, |bytes| bytes[HEADER_BYTES - 1] ^= 0x80);

    assert_eq!(
        read_error(&path),
        format!("{} fails its checksum", path.display())
    );
}

#[test]
fn read_refuses_a_wrong_magic() {
    let directory = TempDir::new().expect("a temporary directory");
    let path = write_at(directory.path(), 1);

    damage(&path, |bytes| bytes[..8].copy_from_slice(b"SUIVICK2"));

    assert_eq!(
        read_error(&path),
        format!("{} is not a suivi checkpoint", path.display())
    );
}

#[test]
fn read_refuses_a_missing_file() {
    let directory = TempDir::new().expect("a temporary directory");
    let path = directory.path().join("00000000000000000001.ckpt");

    assert!(
        read_error(&path).starts_with(&format!("cannot read {}: ", path.display())),
        "{}",
        read_error(&path)
    );
}

#[test]
fn load_newest_loads_the_newest_checkpoint() {
    let directory = TempDir::new().expect("a temporary directory");
    write_at(directory.path(), 10);
    write_at(directory.path(), 20);

    let (loaded, rejected) = load_newest(directory.path()).expect("loading works");
    let loaded = loaded.map(|loaded| loaded.checkpoint);

    assert_eq!(loaded, Some(checkpoint_at(20)));
    assert!(rejected.is_empty(), "{rejected:?}");
}

#[test]
fn load_newest_falls_back_to_the_older_checkpoint_when_the_newest_is_corrupt() {
    let directory = TempDir::new().expect("a temporary directory");
    write_at(directory.path(), 10);
    let newest = write_at(directory.path(), 20);
    damage(&newest, |bytes| {
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
    });

    let (loaded, rejected) = load_newest(directory.path()).expect("loading works");
    let loaded = loaded.map(|loaded| loaded.checkpoint);

    assert_eq!(loaded, Some(checkpoint_at(10)));
    let rejected: Vec<(PathBuf, String)> = rejected
        .into_iter()
        .map(|rejected| (rejected.path, format!("{:#}", rejected.error)))
        .collect();
    assert_eq!(
        rejected,
        [(
            newest.clone(),
            format!("{} fails its checksum", newest.display())
        )]
    );
}

#[test]
fn load_newest_finds_nothing_when_every_checkpoint_is_corrupt() {
    let directory = TempDir::new().expect("a temporary directory");
    let older = write_at(directory.path(), 10);
    let newest = write_at(directory.path(), 20);
    damage(&older, |bytes| bytes.truncate(3));
    damage(&newest, |bytes| bytes[0] = b'X');

    let (loaded, rejected) = load_newest(directory.path()).expect("loading works");
    let loaded = loaded.map(|loaded| loaded.checkpoint);

    assert_eq!(loaded, None);
    let rejected: Vec<&Path> = rejected
        .iter()
        .map(|rejected| rejected.path.as_path())
        .collect();
    assert_eq!(
        rejected,
        [newest.as_path(), older.as_path()],
        "newest first"
    );
}

#[test]
fn load_newest_finds_nothing_in_an_empty_or_missing_directory() {
    let directory = TempDir::new().expect("a temporary directory");

    let (loaded, rejected) = load_newest(directory.path()).expect("loading works");
    let loaded = loaded.map(|loaded| loaded.checkpoint);
    assert_eq!(loaded, None);
    assert!(rejected.is_empty());

    let (loaded, rejected) =
        load_newest(&directory.path().join("never-created")).expect("loading works");
    let loaded = loaded.map(|loaded| loaded.checkpoint);
    assert_eq!(loaded, None);
    assert!(rejected.is_empty());
}

#[test]
fn load_newest_ignores_temporary_and_unrelated_files() {
    // A checkpoint that was being written when the process died is left as a temporary file;
    // it must not be taken for a checkpoint, complete or not.
    let directory = TempDir::new().expect("a temporary directory");
    write_at(directory.path(), 10);
    let unfinished = write_at(directory.path(), 20);
    std::fs::rename(
        &unfinished,
        directory.path().join("00000000000000000020.ckpt.tmp"),
    )
    .expect("the rename works");
    std::fs::write(directory.path().join("notes.txt"), "kept").expect("the file writes");

    let (loaded, rejected) = load_newest(directory.path()).expect("loading works");
    let loaded = loaded.map(|loaded| loaded.checkpoint);

    assert_eq!(loaded.map(|loaded| loaded.journal_position), Some(10));
    assert!(rejected.is_empty(), "{rejected:?}");
}

#[test]
fn prune_keeps_the_newest_two_and_removes_temporary_files() {
    let directory = TempDir::new().expect("a temporary directory");
    for position in [10, 20, 30, 40] {
        write_at(directory.path(), position);
    }
    std::fs::write(
        directory.path().join("00000000000000000050.ckpt.tmp"),
        "unfinished",
    )
    .expect("the file writes");

    // The older of the two kept is where the journal must still start.
    assert_eq!(prune(directory.path()).expect("pruning works"), Some(30));

    assert_eq!(
        file_names(directory.path()),
        ["00000000000000000030.ckpt", "00000000000000000040.ckpt"]
    );
    // Pruning again changes nothing.
    assert_eq!(prune(directory.path()).expect("pruning works"), Some(30));
    assert_eq!(
        file_names(directory.path()),
        ["00000000000000000030.ckpt", "00000000000000000040.ckpt"]
    );
}

#[test]
fn prune_needs_the_whole_journal_while_fewer_than_two_checkpoints_exist() {
    let directory = TempDir::new().expect("a temporary directory");
    std::fs::write(
        directory.path().join("00000000000000000005.ckpt.tmp"),
        "unfinished",
    )
    .expect("the file writes");

    assert_eq!(prune(directory.path()).expect("pruning works"), None);
    assert_eq!(
        file_names(directory.path()),
        Vec::<String>::new(),
        "temporary files go even then"
    );

    write_at(directory.path(), 10);
    assert_eq!(prune(directory.path()).expect("pruning works"), None);
    assert_eq!(file_names(directory.path()), ["00000000000000000010.ckpt"]);

    write_at(directory.path(), 20);
    assert_eq!(prune(directory.path()).expect("pruning works"), Some(10));
    assert_eq!(
        file_names(directory.path()),
        ["00000000000000000010.ckpt", "00000000000000000020.ckpt"]
    );
}

#[test]
fn a_file_of_several_pieces_reads_whole_with_its_pieces_checksums_combined() {
    let directory = TempDir::new().expect("a temporary directory");
    let path = directory.path().join("big");
    // Two whole pieces and a few bytes, none alike.
    let bytes: Vec<u8> = (0..2 * READ_PIECE_BYTES + 5)
        .map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &bytes).expect("the file is written");
    let file = File::open(&path).expect("the file opens");
    let mut read = vec![0u8; bytes.len()];
    let checksum = read_pieces(&file, 0, &mut read).expect("the file reads");
    assert!(read == bytes, "the pieces are put back in their places");
    assert_eq!(checksum, crc32c::crc32c(&bytes));
    let mut read = vec![0u8; bytes.len() - 7];
    let checksum = read_pieces(&file, 7, &mut read).expect("the file reads");
    assert!(read == bytes[7..], "read from an offset");
    assert_eq!(checksum, crc32c::crc32c(&bytes[7..]));
    assert_eq!(
        read_pieces(&file, 0, &mut []).expect("nothing to read"),
        crc32c::crc32c(&[])
    );
}
