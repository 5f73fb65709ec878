//! Run files of remembered event ids (checkpoint format 2, in run order since format 3). A
//! checkpoint does not hold the remembered ids, two thirds of it at ten million learners: it
//! lists the runs that do. A run is written once — the ids accepted since the previous
//! checkpoint, sorted — and shared by every checkpoint after it, until the newest runs are
//! merged into one ([`plan`], [`merge`]) so that they stay few: each run holds more ids than
//! all the newer ones together, so there are at most about log2 of the ids over those of one
//! checkpoint, and an id is rewritten about as many times in its life instead of once a
//! checkpoint. When campaigns were released, every id left is written afresh in one run
//! ([`rewrite`]).
//!
//! The runs are also where the aggregator looks its older ids up (`aggregate::Written`): a run
//! is kept open with its filter, built as it is written ([`write`], [`merge`]) or read at a
//! restart ([`open`]), and an entry is read at its place when the filter matches.
//!
//! A run file is `ids-{first generation:020}-{last generation:020}.run` in the checkpoint
//! directory: the same header as a checkpoint (magic `SUIVIRN1`, payload length, CRC-32C), then
//! the entries, four little-endian `u32` words each (three of id fingerprint, then the word the
//! aggregator remembers), in run order (`EventId::run_order`: by the bits of the id's spread
//! from the lowest), each id once. Like a checkpoint it is written under a temporary name,
//! synced, renamed into place and its directory synced, so it is whole or absent; a run named by
//! a checkpoint that is missing or fails its checksum makes that checkpoint unusable (recovery
//! falls back to an older one). Runs that no kept checkpoint names are removed by [`prune`]; a
//! run removed while the aggregator still reads it stays readable through its open file.

use std::collections::BinaryHeap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail, ensure};

use super::checkpoint::{self, HEADER_BYTES, PieceWriter};
use crate::aggregate::{
    ENTRY_BYTES, Entry, FilterBuilder, Run, RunFile, Written, entry_order as order,
};
use crate::proto::storage::IdRun;

const MAGIC: &[u8; 8] = b"SUIVIRN1";
const PREFIX: &str = "ids-";
const SUFFIX: &str = ".run";
/// What a merge reads of each run at a time.
const MERGE_BUFFER_BYTES: usize = 1 << 20;

/// The file of `run`, in `directory`.
pub fn path(directory: &Path, run: &IdRun) -> PathBuf {
    directory.join(format!(
        "{PREFIX}{:020}-{:020}{SUFFIX}",
        run.first_generation, run.last_generation
    ))
}

/// `entries`, each id once, in run order (`EventId::run_order`), ready for [`write`]: sorted
/// on every core, with each entry's order computed once.
#[cfg(test)]
pub(crate) fn in_order(
    entries: impl rayon::iter::IntoParallelIterator<Item = Entry>,
) -> impl ExactSizeIterator<Item = Entry> {
    use rayon::prelude::*;
    let mut keyed: Vec<(u32, Entry)> = entries
        .into_par_iter()
        .map(|entry| (order(&entry).0, entry))
        .collect();
    keyed.par_sort_unstable();
    keyed.into_iter().map(|(_, entry)| entry)
}

/// Writes the run of generations `first` to `last` holding `entries`, about `expected` of
/// them, which must come in run order, each id once (an entry out of order is refused: the run
/// would not merge). Atomic. Answers the run with its filter, read from the file written.
pub fn write(
    directory: &Path,
    (first, last): (u64, u64),
    expected: u64,
    entries: impl IntoIterator<Item = Entry>,
) -> anyhow::Result<Arc<Run>> {
    let mut run = IdRun {
        first_generation: first,
        last_generation: last,
        ..IdRun::default()
    };
    std::fs::create_dir_all(directory)
        .with_context(|| format!("cannot create directory {}", directory.display()))?;
    let file = path(directory, &run);
    let mut filter = FilterBuilder::new(expected);
    let mut count = 0u64;
    let (_, checksum) = checkpoint::write_atomic(&file, MAGIC, |writer| {
        write_sorted(writer, entries, &mut filter, &mut count)
    })
    .with_context(|| format!("cannot write id run {}", file.display()))?;
    run.entries = count;
    run.checksum = checksum;
    let opened =
        File::open(&file).with_context(|| format!("cannot open id run {}", file.display()))?;
    Ok(Arc::new(filter.finish(run, Arc::new(Opened(opened)))))
}

/// Writes `entries` through `writer`, a few thousand at a time, into `filter` too, which
/// checks their order.
fn write_sorted(
    writer: &mut PieceWriter,
    entries: impl IntoIterator<Item = Entry>,
    filter: &mut FilterBuilder,
    count: &mut u64,
) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(MERGE_BUFFER_BYTES);
    for entry in entries {
        filter.push(&entry).map_err(std::io::Error::other)?;
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

/// A run file opened for reading its entries where they are.
#[derive(Debug)]
struct Opened(File);

impl RunFile for Opened {
    fn read_at(&self, first: u64, into: &mut [u8]) -> std::io::Result<()> {
        self.0
            .read_exact_at(into, HEADER_BYTES as u64 + first * ENTRY_BYTES as u64)
    }
}

/// The runs `runs` of a checkpoint in run order (format 3), each checked against its header
/// and against what the checkpoint says of it, read through in pieces on every core (its
/// checksum and order checked) to build its filter, and kept open: the ids they hold, out of
/// memory.
pub fn open(directory: &Path, runs: &[IdRun]) -> anyhow::Result<Written> {
    let opened = runs
        .iter()
        .map(|run| {
            let file = path(directory, run);
            let read = open_checked(&file, run)
                .and_then(|opened| Ok(FilterBuilder::read(*run, Arc::new(Opened(opened)))?));
            Ok(Arc::new(read.with_context(|| {
                format!("cannot read id run {}", file.display())
            })?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Written::new(opened))
}

/// The entries of `runs`, each run's words (four an entry) read whole and checked against its
/// header and against what the checkpoint says of it (entries and checksum): runs of format 2,
/// sorted by id, whose ids a restore holds in memory. Read in pieces side by side, straight
/// into the words.
pub fn read(directory: &Path, runs: &[IdRun]) -> anyhow::Result<Vec<Vec<u32>>> {
    runs.iter()
        .map(|run| {
            let file = path(directory, run);
            read_one(&file, run).with_context(|| format!("cannot read id run {}", file.display()))
        })
        .collect()
}

/// The run file `file`, opened once its length and header are those of `run`.
fn open_checked(file: &Path, run: &IdRun) -> anyhow::Result<File> {
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
    Ok(opened)
}

fn read_one(file: &Path, run: &IdRun) -> anyhow::Result<Vec<u32>> {
    let opened = open_checked(file, run)?;
    // The entries are read as bytes straight into their words, in pieces side by side.
    let mut words = vec![0u32; run.entries as usize * ENTRY_BYTES / 4];
    let computed = checkpoint::read_pieces(
        &opened,
        HEADER_BYTES as u64,
        bytemuck::cast_slice_mut(&mut words),
    )?;
    ensure!(computed == run.checksum, "fails its checksum");
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
pub fn merge(directory: &Path, runs: &[Arc<Run>]) -> anyhow::Result<Arc<Run>> {
    let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
        bail!("no runs to merge");
    };
    let generations = (
        first.id_run().first_generation,
        last.id_run().last_generation,
    );
    let sources = runs
        .iter()
        .map(|run| -> Source<'_> { Box::new(run.entries()) })
        .collect();
    let expected = runs.iter().map(|run| run.id_run().entries).sum();
    merge_sources(directory, generations, expected, sources)
}

/// Writes every id of `written` that is not released and `memory` (in run order, newer than
/// the runs), into one run of generations 0 to `generation`: the runs written afresh.
pub fn rewrite(
    directory: &Path,
    generation: u64,
    written: &Written,
    memory: Vec<Entry>,
) -> anyhow::Result<Arc<Run>> {
    let mut sources: Vec<Source<'_>> = written
        .runs()
        .iter()
        .map(|run| -> Source<'_> {
            Box::new(
                run.entries()
                    .filter(|entry| !entry.as_ref().is_ok_and(|entry| written.is_released(entry))),
            )
        })
        .collect();
    let expected = (written.len() + memory.len()) as u64;
    sources.push(Box::new(memory.into_iter().map(Ok)));
    merge_sources(directory, (0, generation), expected, sources)
}

/// Entries in run order, as read.
type Source<'a> = Box<dyn Iterator<Item = std::io::Result<Entry>> + 'a>;

/// Merges `sources` (the newest last) into one run of `generations`, an id in several kept
/// once with the newest source's word; a source that fails to read, or comes out of order
/// (a damaged run, whose checksum says so at its end), fails the merge.
fn merge_sources(
    directory: &Path,
    generations: (u64, u64),
    expected: u64,
    mut sources: Vec<Source<'_>>,
) -> anyhow::Result<Arc<Run>> {
    // The first in run order first; of equal ids, the newest source's.
    let mut heads = BinaryHeap::new();
    let mut failure = None;
    for (index, source) in sources.iter_mut().enumerate() {
        match source.next() {
            Some(Ok(entry)) => heads.push(std::cmp::Reverse((
                order(&entry),
                usize::MAX - index,
                entry[3],
            ))),
            Some(Err(error)) => failure = Some(error),
            None => {}
        }
    }
    if let Some(error) = failure {
        return Err(error).context("cannot read an id run to merge");
    }
    let mut previous: Option<[u32; 3]> = None;
    let merged = std::iter::from_fn(|| {
        loop {
            let std::cmp::Reverse(((_, id), rank, word)) = heads.pop()?;
            let index = usize::MAX - rank;
            match sources[index].next() {
                Some(Ok(entry)) => {
                    heads.push(std::cmp::Reverse((order(&entry), rank, entry[3])));
                }
                Some(Err(error)) => {
                    failure = Some(error);
                    return None;
                }
                None => {}
            }
            if previous != Some(id) {
                previous = Some(id);
                return Some([id[0], id[1], id[2], word]);
            }
        }
    });
    let written = write(directory, generations, expected, merged);
    if failure.is_none() && written.is_err() {
        // Entries out of order come from a damaged run, whose checksum says so at its end.
        failure = sources
            .iter_mut()
            .find_map(|source| source.find_map(Result::err));
    }
    if let Some(error) = failure {
        if let Ok(run) = written {
            let _ = std::fs::remove_file(path(directory, run.id_run()));
        }
        return Err(error).context("cannot read an id run to merge");
    }
    written
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
