//! `Written`, the remembered ids that live out of memory: those of the id runs the checkpoints
//! wrote (`durable::runs`). Memory keeps of each run a filter of about 2.3 bytes an id: the
//! run's entries fall into buckets by the leading bits of their run order (the bits of the
//! id's spread from the lowest, which the run is sorted by), and the filter holds where each
//! bucket starts and a 16-bit fingerprint of every entry, in the run's order. An id is looked
//! up in its bucket's few fingerprints; only on a match is its entry read from the file
//! ([`RunFile`]), at the match's own place, so that an id never seen costs no read but once in
//! several thousand lookups (a fingerprint of another id that matches by chance: about one in
//! 2^16 per entry of the bucket, measured in BENCHMARKS.md), and an id seen costs one read.
//!
//! Released campaigns (a Kafka rebalance) are forgotten here by their slot: the runs are
//! immutable, so their entries stay until the runs are written afresh, and a slot released
//! since is read as absent ([`Written::release`]).

use std::fmt;
use std::io;
use std::sync::Arc;

use super::Slot;
use crate::event::EventId;
use crate::proto::storage::IdRun;

/// One remembered id and its word, as a run holds it: three words of id fingerprint, then
/// the word the aggregator remembers.
pub type Entry = [u32; 4];

/// Bytes of an [`Entry`] in a run file: four little-endian words.
pub const ENTRY_BYTES: usize = 16;

/// How many entries a bucket of the filter holds on average, at most: each costs 2 bytes and
/// makes a chance match 1/65,536 likelier; each bucket's start costs 4.
const BUCKET_ENTRIES: u64 = 16;

/// Entries a core reads at a time when a run is read to build its filter: 16 MiB.
const READ_PIECE: usize = 1 << 20;

/// Entries read at a time when a run is read through.
const READ_ENTRIES: usize = 1 << 16;

/// The file of a run, read where it is.
pub trait RunFile: Send + Sync + fmt::Debug {
    /// Reads the entries from entry `first` on into `into`, as they are stored (four
    /// little-endian words each); `into` holds whole entries.
    fn read_at(&self, first: u64, into: &mut [u8]) -> io::Result<()>;
}

/// The ids of some runs, newest last, and the slots released since they were written.
#[derive(Clone, Default)]
pub struct Written {
    runs: Vec<Arc<Run>>,
    /// Campaign slots whose entries in `runs` are forgotten.
    released: Option<Arc<SlotSet>>,
}

/// One run: what the checkpoint says of it, its file and its filter.
pub struct Run {
    run: IdRun,
    file: Arc<dyn RunFile>,
    /// Right shift of an id's run order that gives its bucket (32 for a single bucket).
    shift: u32,
    /// Where each bucket starts, and the end: bucket `b` is `starts[b]..starts[b + 1]`.
    starts: Vec<u32>,
    /// Each entry's [`fingerprint`], in the run's order.
    fingerprints: Vec<u16>,
    /// Entries by campaign slot, for those held.
    slots: Vec<u64>,
}

/// A set of campaign slots.
#[derive(Clone)]
struct SlotSet(Box<[u64]>);

/// Builds the filter of a run from its entries, given in run order.
#[derive(Debug)]
pub struct FilterBuilder {
    shift: u32,
    buckets: usize,
    starts: Vec<u32>,
    fingerprints: Vec<u16>,
    slots: Vec<u64>,
    previous: Option<(u32, [u32; 3])>,
}

/// The run's entries are not in run order, or more than a filter indexes.
#[derive(Debug, thiserror::Error)]
#[error("id run entries out of order, repeated, or more than 2^32")]
pub struct OutOfOrder;

impl FilterBuilder {
    /// A builder for a run of about `expected` entries (more or fewer only cost a little
    /// memory or a few more chance matches).
    pub fn new(expected: u64) -> FilterBuilder {
        let buckets = (expected / BUCKET_ENTRIES).max(1).next_power_of_two();
        let bits = buckets.trailing_zeros();
        FilterBuilder {
            shift: 32 - bits,
            buckets: usize::try_from(buckets).unwrap_or(usize::MAX),
            starts: Vec::with_capacity(usize::try_from(buckets + 1).unwrap_or(0)),
            fingerprints: Vec::with_capacity(usize::try_from(expected).unwrap_or(0)),
            slots: Vec::new(),
            previous: None,
        }
    }

    /// Adds the next entry of the run.
    pub fn push(&mut self, entry: &Entry) -> Result<(), OutOfOrder> {
        let id = EventId([entry[0], entry[1], entry[2]]);
        let order = id.run_order();
        if self.previous.is_some_and(|previous| previous >= order) {
            return Err(OutOfOrder);
        }
        self.previous = Some(order);
        let index = u32::try_from(self.fingerprints.len()).map_err(|_| OutOfOrder)?;
        let bucket = bucket(order.0, self.shift);
        while self.starts.len() <= bucket {
            self.starts.push(index);
        }
        self.fingerprints.push(fingerprint(&id));
        let slot = usize::from(super::remembered_slot(entry[3]));
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, 0);
        }
        self.slots[slot] += 1;
        Ok(())
    }

    /// The run `run`, whose entries were all pushed, read from `file`.
    pub fn finish(mut self, run: IdRun, file: Arc<dyn RunFile>) -> Run {
        let end = u32::try_from(self.fingerprints.len()).unwrap_or(u32::MAX);
        while self.starts.len() <= self.buckets {
            self.starts.push(end);
        }
        self.fingerprints.shrink_to_fit();
        Run {
            run,
            file,
            shift: self.shift,
            starts: self.starts,
            fingerprints: self.fingerprints,
            slots: self.slots,
        }
    }

    /// The run `run`, read from `file` a piece at a time on every core, its checksum checked
    /// and its entries' order, its filter built on the way: a restart's, which holds no more
    /// of the run than a piece a core.
    pub fn read(run: IdRun, file: Arc<dyn RunFile>) -> io::Result<Run> {
        FilterBuilder::read_in_pieces(run, file, READ_PIECE)
    }

    /// [`FilterBuilder::read`], `piece_entries` entries to a core at a time.
    fn read_in_pieces(run: IdRun, file: Arc<dyn RunFile>, piece_entries: usize) -> io::Result<Run> {
        use rayon::prelude::*;
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let len =
            u32::try_from(run.entries).map_err(|_| invalid("id run of more than 2^32 entries"))?;
        let total = len as usize;
        let mut shape = FilterBuilder::new(u64::from(len));
        let shift = shape.shift;
        // Each piece: its fingerprints, its slots and the buckets that start in it, with the
        // checksum of its bytes.
        let pieces: Vec<(Piece, u32, usize)> = (0..total.div_ceil(piece_entries))
            .into_par_iter()
            .map(|number| {
                let first = number * piece_entries;
                let end = (first + piece_entries).min(total);
                // The entry before the piece too, for the order of its first.
                let from = first.saturating_sub(1);
                let mut bytes = vec![0u8; (end - from) * ENTRY_BYTES];
                file.read_at(from as u64, &mut bytes)?;
                let own = &bytes[(first - from) * ENTRY_BYTES..];
                let mut previous = (first > from).then(|| entry_order(&decode(&bytes)));
                let mut piece = Piece {
                    fingerprints: Vec::with_capacity(end - first),
                    slots: Vec::new(),
                    starts: Vec::new(),
                };
                let mut next = previous.map_or(0, |(order, _)| bucket(order, shift) + 1);
                for (offset, stored) in own.chunks_exact(ENTRY_BYTES).enumerate() {
                    let entry = decode(stored);
                    let order = entry_order(&entry);
                    if previous.is_some_and(|previous| previous >= order) {
                        return Err(invalid("id run entries out of order or repeated"));
                    }
                    previous = Some(order);
                    let bucket = bucket(order.0, shift);
                    while next <= bucket {
                        // `first + offset` is below `len`, a `u32`.
                        piece.starts.push((next, (first + offset) as u32));
                        next += 1;
                    }
                    piece
                        .fingerprints
                        .push(fingerprint(&EventId([entry[0], entry[1], entry[2]])));
                    let slot = usize::from(super::remembered_slot(entry[3]));
                    if piece.slots.len() <= slot {
                        piece.slots.resize(slot + 1, 0);
                    }
                    piece.slots[slot] += 1;
                }
                Ok((piece, crc32c::crc32c(own), own.len()))
            })
            .collect::<io::Result<_>>()?;
        let mut checksum = 0;
        for (piece, piece_checksum, length) in pieces {
            checksum = crc32c::crc32c_combine(checksum, piece_checksum, length);
            shape.fingerprints.extend_from_slice(&piece.fingerprints);
            if shape.slots.len() < piece.slots.len() {
                shape.slots.resize(piece.slots.len(), 0);
            }
            for (total, count) in shape.slots.iter_mut().zip(piece.slots) {
                *total += count;
            }
            for (bucket, start) in piece.starts {
                debug_assert_eq!(bucket, shape.starts.len());
                shape.starts.push(start);
            }
        }
        if checksum != run.checksum {
            return Err(invalid("id run fails its checksum"));
        }
        Ok(shape.finish(run, file))
    }
}

/// What [`FilterBuilder::read`] makes of some consecutive entries on a core: their
/// fingerprints, their count by slot, and each bucket that starts among them with its start.
struct Piece {
    fingerprints: Vec<u16>,
    slots: Vec<u64>,
    starts: Vec<(usize, u32)>,
}

/// Where `entry` goes in a run: its id's [`EventId::run_order`].
pub fn entry_order(entry: &Entry) -> (u32, [u32; 3]) {
    EventId([entry[0], entry[1], entry[2]]).run_order()
}

/// The bucket of an id whose run order starts with `order`.
fn bucket(order: u32, shift: u32) -> usize {
    // `shift` is at most 32: the bucket fits in 32 bits.
    (u64::from(order) >> shift) as usize
}

/// 16 bits of an id that its bucket does not decide. Not of the spread's words: the spread
/// first folds the three words into one by exclusive or, and any function of that fold would
/// match exactly for ids made up to differ in two words in step. Multiplication mixes them
/// otherwise.
fn fingerprint(id: &EventId) -> u16 {
    let [a, b, c] = id.0;
    let low = (u64::from(a) | u64::from(b) << 32).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let high = u64::from(c)
        .wrapping_add(low >> 29)
        .wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    (high >> 48) as u16
}

impl Run {
    /// What the checkpoint says of the run.
    pub fn id_run(&self) -> &IdRun {
        &self.run
    }

    /// The run's file.
    pub fn file(&self) -> &Arc<dyn RunFile> {
        &self.file
    }

    /// Bytes of memory the filter holds.
    pub fn filter_bytes(&self) -> usize {
        self.starts.capacity() * 4 + self.fingerprints.capacity() * 2 + self.slots.capacity() * 8
    }

    /// The places in the run where `id` may be.
    fn candidates(&self, id: &EventId) -> impl Iterator<Item = usize> + '_ {
        let bucket = bucket(id.run_order().0, self.shift);
        let start = self.starts[bucket] as usize;
        let end = self.starts[bucket + 1] as usize;
        let fingerprint = fingerprint(id);
        self.fingerprints[start..end]
            .iter()
            .enumerate()
            .filter(move |(_, candidate)| **candidate == fingerprint)
            .map(move |(offset, _)| start + offset)
    }

    /// The entry at `index`, read from the file.
    fn entry(&self, index: usize) -> io::Result<Entry> {
        let mut bytes = [0u8; ENTRY_BYTES];
        self.file.read_at(index as u64, &mut bytes)?;
        Ok(decode(&bytes))
    }

    /// Every entry, in run order, read from the file a piece at a time; the run's checksum
    /// is checked at its end.
    pub fn entries(&self) -> impl Iterator<Item = io::Result<Entry>> + '_ {
        let mut next = 0u64;
        let mut buffer = Vec::new();
        let mut checksum = 0u32;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed {
                return None;
            }
            if buffer.is_empty() {
                if next == self.run.entries {
                    return None;
                }
                let count = (self.run.entries - next).min(READ_ENTRIES as u64) as usize;
                let mut bytes = vec![0u8; count * ENTRY_BYTES];
                let read = self.file.read_at(next, &mut bytes).and_then(|()| {
                    checksum = crc32c::crc32c_append(checksum, &bytes);
                    next += count as u64;
                    if next == self.run.entries && checksum != self.run.checksum {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "id run of generations {} to {} fails its checksum",
                                self.run.first_generation, self.run.last_generation
                            ),
                        ));
                    }
                    Ok(())
                });
                if let Err(error) = read {
                    failed = true;
                    return Some(Err(error));
                }
                buffer = bytes.chunks_exact(ENTRY_BYTES).rev().map(decode).collect();
            }
            buffer.pop().map(Ok)
        })
    }
}

/// An entry from its stored bytes.
fn decode(bytes: &[u8]) -> Entry {
    let mut entry = [0u32; 4];
    for (word, bytes) in entry.iter_mut().zip(bytes.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    entry
}

impl Written {
    /// The ids of `runs`, oldest first, none released.
    pub fn new(runs: Vec<Arc<Run>>) -> Written {
        Written {
            runs,
            released: None,
        }
    }

    /// The runs, oldest first.
    pub fn runs(&self) -> &[Arc<Run>] {
        &self.runs
    }

    /// What the checkpoint says of each run, oldest first.
    pub fn id_runs(&self) -> Vec<IdRun> {
        self.runs.iter().map(|run| run.run).collect()
    }

    /// Whether some slot was released since the runs were written: their entries of it are
    /// still in them, and the runs are to be written afresh without them.
    pub fn has_released(&self) -> bool {
        self.released.is_some()
    }

    /// Whether the entry `entry` of a run is forgotten (its campaign released).
    pub fn is_released(&self, entry: &Entry) -> bool {
        self.released
            .as_ref()
            .is_some_and(|released| released.contains(super::remembered_slot(entry[3])))
    }

    /// How many ids the runs hold, the released ones left out.
    pub fn len(&self) -> usize {
        let mut len = 0u64;
        for run in &self.runs {
            len += run.run.entries;
            if let Some(released) = &self.released {
                for (slot, count) in (0..=Slot::MAX).zip(&run.slots) {
                    if released.contains(slot) {
                        len -= count;
                    }
                }
            }
        }
        usize::try_from(len).unwrap_or(usize::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory the filters hold.
    pub fn filter_bytes(&self) -> usize {
        self.runs.iter().map(|run| run.filter_bytes()).sum()
    }

    /// The word remembered with `id`, if a run holds it and its campaign was not released
    /// since: the filters are looked in, and the file read only where one matches.
    pub fn find(&self, id: &EventId) -> io::Result<Option<u32>> {
        for run in self.runs.iter().rev() {
            for index in run.candidates(id) {
                let entry = run.entry(index)?;
                if entry[..3] == id.0 {
                    return Ok((!self.is_released(&entry)).then_some(entry[3]));
                }
            }
        }
        Ok(None)
    }

    /// Whether a filter matches `id`: what [`Written::find`] looks at before reading a file.
    pub fn may_hold(&self, id: &EventId) -> bool {
        self.runs
            .iter()
            .any(|run| run.candidates(id).next().is_some())
    }

    /// Forgets the entries of the slots `is_released` says (by slot).
    pub fn release(&mut self, is_released: &[bool]) {
        let mut set = self
            .released
            .as_deref()
            .cloned()
            .unwrap_or_else(SlotSet::empty);
        for (slot, released) in (0..=Slot::MAX).zip(is_released) {
            if *released {
                set.insert(slot);
            }
        }
        self.released = Some(Arc::new(set));
    }

    /// Every entry not released, run after run (not in run order across runs).
    pub fn entries(&self) -> impl Iterator<Item = io::Result<Entry>> + '_ {
        self.runs
            .iter()
            .flat_map(|run| run.entries())
            .filter(|entry| !entry.as_ref().is_ok_and(|entry| self.is_released(entry)))
    }
}

impl SlotSet {
    fn empty() -> SlotSet {
        SlotSet(vec![0u64; (usize::from(Slot::MAX) + 1) / 64].into_boxed_slice())
    }

    fn insert(&mut self, slot: Slot) {
        self.0[usize::from(slot) / 64] |= 1 << (slot % 64);
    }

    fn contains(&self, slot: Slot) -> bool {
        self.0[usize::from(slot) / 64] & (1 << (slot % 64)) != 0
    }
}

impl fmt::Debug for Written {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Written")
            .field("runs", &self.id_runs())
            .field("released", &self.released.is_some())
            .finish()
    }
}

impl fmt::Debug for Run {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Run")
            .field("run", &self.run)
            .field("buckets", &(self.starts.len() - 1))
            .finish()
    }
}

#[cfg(test)]
mod tests;
