//! Run files of remembered event ids (checkpoint format 2). A checkpoint does not hold the
//! remembered ids, two thirds of it at ten million learners: it lists the runs that do. A run
//! is written once — the ids accepted since the previous checkpoint, sorted — and shared by
//! every checkpoint after it, until the newest runs are merged into one ([`plan`], [`merge`])
//! so that they stay few: each run holds more ids than all the newer ones together, so there
//! are at most about log2 of the ids over those of one checkpoint, and an id is rewritten about
//! as many times in its life instead of once a checkpoint.
//!
//! A run file is `ids-{first generation:020}-{last generation:020}.run` in the checkpoint
//! directory: the same header as a checkpoint (magic `SUIVIRN1`, payload length, CRC-32C), then
//! the entries, four little-endian `u32` words each (three of id fingerprint, then the word the
//! aggregator remembers), in run order ([`EventId::run_order`]: by the bits of the id's spread
//! from the lowest, so that a table is built from a run chunk after chunk), each id once. Like
//! a checkpoint it is written under a temporary name, synced, renamed into place and its
//! directory synced, so it is whole or absent; a run named by a checkpoint that is missing or
//! fails its checksum makes that checkpoint unusable (recovery falls back to an older one).
//! Runs that no kept checkpoint names are removed by [`prune`].

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use rayon::prelude::*;

use super::checkpoint::{self, HEADER_BYTES, PieceWriter};
use crate::event::EventId;
use crate::proto::storage::IdRun;

const MAGIC: &[u8; 8] = b"SUIVIRN1";
const PREFIX: &str = "ids-";
const SUFFIX: &str = ".run";
/// Bytes of one entry: four `u32` words.
pub const ENTRY_BYTES: usize = 16;
/// Words of one entry.
const ENTRY_WORDS: usize = ENTRY_BYTES / 4;
/// What a merge reads of each run at a time.
const MERGE_BUFFER_BYTES: usize = 1 << 20;

/// One remembered id and its word.
pub type Entry = [u32; ENTRY_WORDS];

/// The file of `run`, in `directory`.
pub fn path(directory: &Path, run: &IdRun) -> PathBuf {
    directory.join(format!(
        "{PREFIX}{:020}-{:020}{SUFFIX}",
        run.first_generation, run.last_generation
    ))
}

/// `entries`, each id once, in run order ([`EventId::run_order`]), ready for [`write`]: sorted
/// on every core, with each entry's order computed once.
pub fn in_order(
    entries: impl IntoParallelIterator<Item = Entry>,
) -> impl ExactSizeIterator<Item = Entry> {
    let mut keyed: Vec<(u32, Entry)> = entries
        .into_par_iter()
        .map(|entry| (order(&entry).0, entry))
        .collect();
    keyed.par_sort_unstable();
    keyed.into_iter().map(|(_, entry)| entry)
}

/// Writes the run of generations `first` to `last` holding `entries`, which must come in run
/// order, each id once (an entry out of order is refused: the run would not merge). Atomic.
pub fn write(
    directory: &Path,
    first: u64,
    last: u64,
    entries: impl IntoIterator<Item = Entry>,
) -> anyhow::Result<IdRun> {
    let mut run = IdRun {
        first_generation: first,
        last_generation: last,
        ..IdRun::default()
    };
    std::fs::create_dir_all(directory)
        .with_context(|| format!("cannot create directory {}", directory.display()))?;
    let file = path(directory, &run);
    let mut count = 0u64;
    let (_, checksum) = checkpoint::write_atomic(&file, MAGIC, |writer| {
        write_sorted(writer, entries, &mut count)
    })
    .with_context(|| format!("cannot write id run {}", file.display()))?;
    run.entries = count;
    run.checksum = checksum;
    Ok(run)
}

/// Writes `entries` through `writer`, a few thousand at a time, checking their order.
fn write_sorted(
    writer: &mut PieceWriter,
    entries: impl IntoIterator<Item = Entry>,
    count: &mut u64,
) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(MERGE_BUFFER_BYTES);
    let mut previous: Option<(u32, [u32; 3])> = None;
    for entry in entries {
        let order = order(&entry);
        if previous.is_some_and(|previous| previous >= order) {
            return Err(std::io::Error::other(
                "id run entries out of order or repeated",
            ));
        }
        previous = Some(order);
        for word in entry {
            buffer.extend_from_slice(&word.to_le_bytes());
        }
        *count += 1;
        if buffer.len() >= MERGE_BUFFER_BYTES {
            writer.write(&buffer)?;
            buffer.clear();
        }
    }
    writer.write(&buffer)
}

/// Where `entry` goes in a run.
fn order(entry: &Entry) -> (u32, [u32; 3]) {
    EventId([entry[0], entry[1], entry[2]]).run_order()
}

/// The entries of `runs`, each run's words (four an entry) read whole and checked against its
/// header and against what the checkpoint says of it (entries and checksum). Read in pieces
/// side by side, straight into the words.
pub fn read(directory: &Path, runs: &[IdRun]) -> anyhow::Result<Vec<Vec<u32>>> {
    runs.iter()
        .map(|run| {
            let file = path(directory, run);
            read_one(&file, run).with_context(|| format!("cannot read id run {}", file.display()))
        })
        .collect()
}

fn read_one(file: &Path, run: &IdRun) -> anyhow::Result<Vec<u32>> {
    let opened = File::open(file)?;
    let length = usize::try_from(opened.metadata()?.len())?;
    let payload = usize::try_from(run.entries)?
        .checked_mul(ENTRY_BYTES)
        .context("the run's entry count overflows")?;
    ensure!(
        length == HEADER_BYTES + payload,
        "is {length} bytes, where {} entries take {}",
        run.entries,
        HEADER_BYTES + payload
    );
    let mut header = [0u8; HEADER_BYTES];
    opened.read_exact_at(&mut header, 0)?;
    let (stored, checksum) = checkpoint::parse_header(&header, MAGIC)?;
    ensure!(stored == payload as u64, "is truncated or overlong");
    ensure!(
        checksum == run.checksum,
        "is not the run the checkpoint names (another checksum)"
    );
    // The entries are read as bytes straight into their words, in pieces side by side.
    let mut words = vec![0u32; payload / 4];
    let computed = checkpoint::read_pieces(
        &opened,
        HEADER_BYTES as u64,
        bytemuck::cast_slice_mut(&mut words),
    )?;
    ensure!(computed == checksum, "fails its checksum");
    for word in &mut words {
        *word = u32::from_le(*word);
    }
    Ok(words)
}

/// How many of the newest `runs` to merge into one (none, or two and more) so that every run
/// holds more ids than all the runs newer than it together: from the oldest run that does not.
/// A run then holds at least twice the ids of the next, so `n` ids are in at most log2(n + 1)
/// runs, and an id is rewritten at most that many times.
pub fn plan(runs: &[IdRun]) -> usize {
    let mut newer = 0u64;
    let mut from = runs.len();
    for (index, run) in runs.iter().enumerate().rev() {
        if index + 1 < runs.len() && run.entries <= newer {
            from = index;
        }
        newer += run.entries;
    }
    runs.len() - from
}

/// Merges `runs` (consecutive generations, oldest first) into one run of all their
/// generations, written as [`write`] does; reads each run once, a buffer at a time, and checks
/// it. An id found in several runs (which runs written by suivi never hold) is kept once, with
/// the newest run's word.
pub fn merge(directory: &Path, runs: &[IdRun]) -> anyhow::Result<IdRun> {
    let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
        bail!("no runs to merge");
    };
    let mut cursors = runs
        .iter()
        .map(|run| {
            let file = path(directory, run);
            Cursor::open(&file, run)
                .with_context(|| format!("cannot read id run {}", file.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The first in run order first; of equal ids, the newest run's.
    let mut heads = BinaryHeap::new();
    for (index, cursor) in cursors.iter_mut().enumerate() {
        if let Some(entry) = cursor.next()? {
            heads.push(std::cmp::Reverse((
                order(&entry),
                usize::MAX - index,
                entry[3],
            )));
        }
    }
    let mut failure = None;
    let mut previous: Option<[u32; 3]> = None;
    let merged = std::iter::from_fn(|| {
        loop {
            let std::cmp::Reverse(((_, id), rank, word)) = heads.pop()?;
            let index = usize::MAX - rank;
            match cursors[index].next() {
                Ok(Some(entry)) => heads.push(std::cmp::Reverse((order(&entry), rank, entry[3]))),
                Ok(None) => {}
                Err(error) => {
                    failure = Some(error);
                    return None;
                }
            }
            if previous != Some(id) {
                previous = Some(id);
                return Some([id[0], id[1], id[2], word]);
            }
        }
    });
    let written = write(
        directory,
        first.first_generation,
        last.last_generation,
        merged,
    );
    if failure.is_none() && written.is_err() {
        // Entries out of order come from a damaged run, whose checksum says so at its end.
        failure = cursors.iter_mut().find_map(|cursor| cursor.rest().err());
    }
    if let Some(error) = failure {
        let _ = written.map(|run| std::fs::remove_file(path(directory, &run)));
        return Err(error);
    }
    written
}

/// One run read in order, its checksum computed on the way and checked at its end.
struct Cursor {
    reader: BufReader<File>,
    left: u64,
    checksum: u32,
    expected: u32,
    file: PathBuf,
}

impl Cursor {
    fn open(file: &Path, run: &IdRun) -> anyhow::Result<Cursor> {
        let opened = File::open(file)?;
        ensure!(
            opened.metadata()?.len() == HEADER_BYTES as u64 + run.entries * ENTRY_BYTES as u64,
            "is not as long as {} entries",
            run.entries
        );
        let mut reader = BufReader::with_capacity(MERGE_BUFFER_BYTES, opened);
        let mut header = [0u8; HEADER_BYTES];
        reader.read_exact(&mut header)?;
        let (payload, checksum) = checkpoint::parse_header(&header, MAGIC)?;
        ensure!(
            payload == run.entries * ENTRY_BYTES as u64 && checksum == run.checksum,
            "is not the run the checkpoint names"
        );
        Ok(Cursor {
            reader,
            left: run.entries,
            checksum: 0,
            expected: checksum,
            file: file.to_owned(),
        })
    }

    fn next(&mut self) -> anyhow::Result<Option<Entry>> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut bytes = [0u8; ENTRY_BYTES];
        self.reader
            .read_exact(&mut bytes)
            .with_context(|| format!("cannot read id run {}", self.file.display()))?;
        self.checksum = crc32c::crc32c_append(self.checksum, &bytes);
        self.left -= 1;
        if self.left == 0 && self.checksum != self.expected {
            bail!("id run {} fails its checksum", self.file.display());
        }
        let mut entry = [0u32; ENTRY_WORDS];
        for (word, bytes) in entry.iter_mut().zip(bytes.chunks_exact(4)) {
            *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        Ok(Some(entry))
    }

    /// Reads the rest of the run, checking its checksum.
    fn rest(&mut self) -> anyhow::Result<()> {
        while self.next()?.is_some() {}
        Ok(())
    }
}

/// The id runs of the checkpoints kept, as the writer knows them, so that a run goes only when
/// no kept checkpoint names it. After a restart only the checkpoint restored is known, and an
/// older one may be kept beside it: no run goes until [`checkpoint::KEEP`] checkpoints of this
/// process (or the one restored and newer ones) are all the checkpoints kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// At most [`checkpoint::KEEP`], oldest first: each checkpoint's journal position and runs.
    checkpoints: Vec<(u64, Vec<IdRun>)>,
    /// Whether `checkpoints` are all the checkpoints kept.
    complete: bool,
}

impl Kept {
    /// No checkpoint yet.
    pub fn none() -> Kept {
        Kept {
            checkpoints: Vec::new(),
            complete: true,
        }
    }

    /// The checkpoint at `position`, naming `runs`, restored; others may be kept.
    pub fn restored(position: u64, runs: Vec<IdRun>) -> Kept {
        Kept {
            checkpoints: vec![(position, runs)],
            complete: false,
        }
    }

    /// The runs of the newest checkpoint.
    pub fn newest(&self) -> &[IdRun] {
        self.checkpoints
            .last()
            .map_or(&[], |(_, runs)| runs.as_slice())
    }

    /// Notes the checkpoint at `position` naming `runs` written: it replaces one at the same
    /// position, and the oldest goes past [`checkpoint::KEEP`], as `checkpoint::prune` does.
    pub fn written(&mut self, position: u64, runs: Vec<IdRun>) {
        match self.checkpoints.last_mut() {
            Some((last, named)) if *last == position => *named = runs,
            _ => self.checkpoints.push((position, runs)),
        }
        if self.checkpoints.len() > checkpoint::KEEP {
            self.checkpoints.remove(0);
        }
        if self.checkpoints.len() == checkpoint::KEEP {
            self.complete = true;
        }
    }

    /// Every run a kept checkpoint names, if they are all known.
    pub fn named(&self) -> Option<impl Iterator<Item = &IdRun>> {
        self.complete
            .then(|| self.checkpoints.iter().flat_map(|(_, runs)| runs))
    }
}

/// Removes every run file of `directory` that is not one of `keep`, and leftover temporary
/// ones; answers how many went.
pub fn prune<'a>(
    directory: &Path,
    keep: impl IntoIterator<Item = &'a IdRun>,
) -> anyhow::Result<usize> {
    let kept: Vec<PathBuf> = keep.into_iter().map(|run| path(directory, run)).collect();
    let mut removed = 0;
    if !directory.exists() {
        return Ok(0);
    }
    for entry in std::fs::read_dir(directory)
        .with_context(|| format!("cannot list {}", directory.display()))?
    {
        let file = entry?.path();
        let is_run = file
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| {
                name.starts_with(PREFIX) && (name.ends_with(SUFFIX) || name.ends_with(".run.tmp"))
            });
        if is_run && !kept.contains(&file) {
            std::fs::remove_file(&file)
                .with_context(|| format!("cannot remove {}", file.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests;
