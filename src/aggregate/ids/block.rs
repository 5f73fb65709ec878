//! One block of [`EventIds`](super::EventIds): the ids that share a prefix, sorted, in 14-byte
//! entries (the id without its first 16 bits, then its word), with the runs of its ids' first
//! 16 bits when it is too shallow to imply them. It finds, inserts, splits in two and filters
//! within the entries it is handed (its slot in the slabs); it knows nothing of the directory
//! that points to it, nor of where its slot is.

use super::QUOTIENT_BITS;

/// An id's bits past the first [`QUOTIENT_BITS`] (80, big-endian, so that byte order is key
/// order), then its remembered word (little-endian).
pub(super) type Entry = [u8; 14];

/// The ids sharing a prefix: how many, and where their sorted entries are.
#[derive(Debug, Clone, Default)]
pub(super) struct Block {
    /// When `depth` is under [`QUOTIENT_BITS`]: per distinct value of the ids' first 16 bits,
    /// in order, that value and the end of its entries. Empty otherwise. A boxed slice, not a
    /// vector: it changes seldom, and its exact size saves memory in small sets.
    pub(super) runs: Box<[[u16; 2]]>,
    /// The first `depth` bits of every id in the block.
    pub(super) prefix: u32,
    /// The block's slot in the slabs of its class.
    pub(super) slot: u32,
    pub(super) len: u32,
    /// The size class of its slot ([`Slabs`](super::slabs::Slabs)); 0 for no slot.
    pub(super) class: u16,
    pub(super) depth: u8,
}

/// An id as the blocks see it: its first 16 bits, its next 64, its last 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    pub(super) top: u16,
    pub(super) middle: u64,
    pub(super) low: u16,
}

impl Block {
    /// The word of the entry of `key` among the block's `entries`, if there is one.
    pub(super) fn find(&self, entries: &[Entry], key: Key) -> Option<u32> {
        let (start, end) = match self.run_of(key.top) {
            Ok(run) => self.run_range(run),
            Err(_) => return None,
        };
        let position = self.lower_bound(entries, key, start, end);
        let entry = entries.get(position).filter(|_| position < end)?;
        (rest_of(entry) == (key.middle, key.low)).then(|| word_of(entry))
    }

    /// Inserts `key` into the block's `slot`, which has room for one more entry.
    pub(super) fn insert(&mut self, slot: &mut [Entry], key: Key, word: u32) {
        let (start, end, run, new_run) = match self.run_of(key.top) {
            Ok(run) => {
                let (start, end) = self.run_range(run);
                (start, end, run, false)
            }
            Err(run) => {
                let start = self.run_start(run);
                (start, start, run, true)
            }
        };
        let position = self.lower_bound(slot, key, start, end);
        debug_assert!(
            position == end || rest_of(&slot[position]) != (key.middle, key.low),
            "an id inserted twice"
        );
        let len = self.len as usize;
        slot.copy_within(position..len, position + 1);
        slot[position] = key.entry(word);
        self.len += 1;
        if usize::from(self.depth) < QUOTIENT_BITS {
            if new_run {
                // The run ends are offsets into a block this shallow, which splits past
                // `max_block` (< 2^16) entries.
                let mut runs = Vec::with_capacity(self.runs.len() + 1);
                runs.extend_from_slice(&self.runs[..run]);
                runs.push([key.top, start as u16]);
                runs.extend_from_slice(&self.runs[run..]);
                self.runs = runs.into_boxed_slice();
            }
            for run in &mut self.runs[run..] {
                run[1] += 1;
            }
        }
    }

    /// The run of the ids whose first 16 bits are `top`: `Ok` with its index if there is one,
    /// else `Err` with where it would go. A block 16 or more deep is one run, index 0.
    fn run_of(&self, top: u16) -> Result<usize, usize> {
        if usize::from(self.depth) >= QUOTIENT_BITS {
            Ok(0)
        } else {
            self.runs.binary_search_by_key(&top, |run| run[0])
        }
    }

    fn run_start(&self, run: usize) -> usize {
        if usize::from(self.depth) >= QUOTIENT_BITS || run == 0 {
            0
        } else {
            usize::from(self.runs[run - 1][1])
        }
    }

    fn run_range(&self, run: usize) -> (usize, usize) {
        let end = if usize::from(self.depth) >= QUOTIENT_BITS {
            self.len as usize
        } else {
            usize::from(self.runs[run][1])
        };
        (self.run_start(run), end)
    }

    /// The first position in `start..end` whose entry is not less than `key`, guessed from the
    /// key's bits past what the entries of the range share (they are uniform), then walked to.
    fn lower_bound(&self, entries: &[Entry], key: Key, start: usize, end: usize) -> usize {
        let shared = usize::from(self.depth).max(QUOTIENT_BITS) - QUOTIENT_BITS;
        let fraction = (key.middle << shared) >> 32;
        let mut position = start + (((end - start) as u64 * fraction) >> 32) as usize;
        let target = (key.middle, key.low);
        let entries = &entries[..end];
        if position < end && rest_of(&entries[position]) < target {
            position += 1;
            while position < end && rest_of(&entries[position]) < target {
                position += 1;
            }
        } else {
            while position > start && rest_of(&entries[position - 1]) >= target {
                position -= 1;
            }
        }
        position
    }

    /// Splits the block by its next bit: it keeps the ids whose bit is 0 and returns the block
    /// of those whose bit is 1 (both one deeper), with no slot yet, and where its entries
    /// start among this block's `entries`.
    pub(super) fn split_off(&mut self, entries: &[Entry]) -> (Block, usize) {
        let depth = usize::from(self.depth);
        let (position, run) = if depth < QUOTIENT_BITS {
            let bit = 1 << (QUOTIENT_BITS - 1 - depth);
            let run = self.runs.partition_point(|run| run[0] & bit == 0);
            (self.run_start(run), run)
        } else {
            let bit = 1 << (63 - (depth - QUOTIENT_BITS));
            let position =
                entries[..self.len as usize].partition_point(|entry| rest_of(entry).0 & bit == 0);
            (position, 0)
        };
        let mut runs = Box::default();
        if depth + 1 < QUOTIENT_BITS {
            let moved = position as u16;
            runs = self.runs[run..]
                .iter()
                .map(|r| [r[0], r[1] - moved])
                .collect();
            self.runs = self.runs[..run].into();
        } else {
            self.runs = Box::default();
        }
        let right = Block {
            runs,
            prefix: self.prefix << 1 | 1,
            slot: 0,
            len: self.len - position as u32,
            class: 0,
            depth: self.depth + 1,
        };
        self.depth += 1;
        self.prefix <<= 1;
        self.len = position as u32;
        (right, position)
    }

    /// Keeps the entries of `slot` whose word `keep` accepts (`kept` says which, in order).
    pub(super) fn retain(&mut self, slot: &mut [Entry], kept: &[bool]) {
        let mut len = 0;
        let mut start = 0;
        let mut runs = Vec::with_capacity(self.runs.len());
        let mut keep_run = |end: usize, slot: &mut [Entry], len: &mut usize| {
            for position in start..end {
                if kept[position] {
                    slot[*len] = slot[position];
                    *len += 1;
                }
            }
            start = end;
        };
        if usize::from(self.depth) >= QUOTIENT_BITS {
            keep_run(self.len as usize, slot, &mut len);
        } else {
            for &[top, end] in &self.runs {
                keep_run(usize::from(end), slot, &mut len);
                if runs.last().map_or(0, |run: &[u16; 2]| run[1]) != len as u16 {
                    runs.push([top, len as u16]);
                }
            }
            self.runs = runs.into_boxed_slice();
        }
        self.len = len as u32;
    }

    /// Calls `visit` with every id and word of the block (its `entries`), in increasing order.
    pub(super) fn for_each(&self, entries: &[Entry], mut visit: impl FnMut([u32; 3], u32)) {
        let mut start = 0;
        let mut each_run = |top: u16, end: usize| {
            for entry in &entries[start..end] {
                let (middle, low) = rest_of(entry);
                visit(Key { top, middle, low }.id(), word_of(entry));
            }
            start = end;
        };
        if usize::from(self.depth) >= QUOTIENT_BITS {
            // The first 16 bits of the prefix, which all its ids share.
            each_run(
                (self.prefix >> (usize::from(self.depth) - QUOTIENT_BITS)) as u16,
                self.len as usize,
            );
        } else {
            for &[top, end] in &*self.runs {
                each_run(top, usize::from(end));
            }
        }
    }
}

impl Key {
    pub(super) fn of(id: &[u32; 3]) -> Key {
        Key {
            top: (id[0] >> 16) as u16,
            middle: u64::from(id[0] & 0xFFFF) << 48
                | u64::from(id[1]) << 16
                | u64::from(id[2] >> 16),
            low: id[2] as u16,
        }
    }

    pub(super) fn id(self) -> [u32; 3] {
        [
            u32::from(self.top) << 16 | (self.middle >> 48) as u32,
            (self.middle >> 16) as u32,
            (self.middle as u32) << 16 | u32::from(self.low),
        ]
    }

    pub(super) fn entry(self, word: u32) -> Entry {
        let mut entry = [0; 14];
        entry[..8].copy_from_slice(&self.middle.to_be_bytes());
        entry[8..10].copy_from_slice(&self.low.to_be_bytes());
        entry[10..].copy_from_slice(&word.to_le_bytes());
        entry
    }
}

/// An entry's stored id bits: the 64 after the first 16, and the last 16.
fn rest_of(entry: &Entry) -> (u64, u16) {
    let [a, b, c, d, e, f, g, h, i, j, ..] = *entry;
    (
        u64::from_be_bytes([a, b, c, d, e, f, g, h]),
        u16::from_be_bytes([i, j]),
    )
}

pub(super) fn word_of(entry: &Entry) -> u32 {
    let [.., a, b, c, d] = *entry;
    u32::from_le_bytes([a, b, c, d])
}
