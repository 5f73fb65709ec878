//! Building an [`EventIds`] in one pass from ids in increasing order (a decoded checkpoint, or
//! what a release keeps): blocks of one depth chosen from the count, each made at its exact
//! size, then the directory for them. It never searches or inserts into a block.

use super::block::{Block, Key};
use super::slabs::Slabs;
use super::{Chunked, EventIds, MAX_DEPTH, QUOTIENT_BITS, SubDirectory, TOP_BITS, leading_bits};

/// Builds an [`EventIds`] from ids in increasing order: blocks of one depth chosen from the
/// count, each split further when it is over `max_block`, then the directory for them.
pub(super) struct Builder {
    depth: u32,
    max_block: usize,
    /// Blocks made so far, in key order.
    blocks: Vec<Block>,
    /// Their entries.
    slabs: Slabs,
    /// The ids of the block being gathered, whose prefix is `prefix`.
    pending: Vec<([u32; 3], u32)>,
    prefix: u32,
}

impl Builder {
    pub(super) fn new(count: usize, max_block: usize) -> Builder {
        // The shallowest depth at which blocks hold at most `max_block` ids on average: the
        // fewest blocks (each costs its descriptor and slack), those over it split once more.
        let mut depth = 0;
        while depth < MAX_DEPTH && count >> depth > max_block {
            depth += 1;
        }
        Builder {
            depth,
            max_block,
            blocks: Vec::new(),
            slabs: Slabs::default(),
            pending: Vec::new(),
            prefix: 0,
        }
    }

    /// Adds `id`, which must be greater than every id added before.
    pub(super) fn push(&mut self, id: [u32; 3], word: u32) {
        let prefix = prefix_of(&id, self.depth);
        while prefix != self.prefix {
            self.flush();
        }
        self.pending.push((id, word));
    }

    pub(super) fn finish(mut self) -> EventIds {
        let last = if self.depth == 0 {
            0
        } else {
            u32::MAX >> (32 - self.depth)
        };
        while self.prefix != last {
            self.flush();
        }
        self.flush();
        self.into_ids()
    }

    /// Makes the blocks of the pending ids and moves on to the next prefix.
    fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.emit(&pending, self.prefix, self.depth);
        self.pending = pending;
        self.pending.clear();
        self.prefix = self.prefix.wrapping_add(1);
    }

    /// Makes the blocks of `ids`, which share their first `depth` bits (`prefix`).
    fn emit(&mut self, ids: &[([u32; 3], u32)], prefix: u32, depth: u32) {
        if ids.len() > self.max_block && depth < MAX_DEPTH {
            let bit = 1 << (63 - depth);
            let half = ids.partition_point(|(id, _)| leading_bits(id) & bit == 0);
            self.emit(&ids[..half], prefix << 1, depth + 1);
            self.emit(&ids[half..], prefix << 1 | 1, depth + 1);
            return;
        }
        let index = self.blocks.len() as u32;
        let class = Slabs::class_for(ids.len());
        let mut block = Block {
            runs: Box::default(),
            prefix,
            slot: if class == 0 {
                0
            } else {
                self.slabs.allocate(class, index)
            },
            // At most max_block, or a few more at the deepest depth.
            len: ids.len() as u32,
            class,
            // At most MAX_DEPTH.
            depth: depth as u8,
        };
        let slot = self.slabs.slot_mut(class, block.slot);
        let mut runs: Vec<[u16; 2]> = Vec::new();
        for (position, (id, word)) in ids.iter().enumerate() {
            let key = Key::of(id);
            if (depth as usize) < QUOTIENT_BITS {
                match runs.last_mut() {
                    Some(run) if run[0] == key.top => run[1] += 1,
                    // At most `max_block` (< 2^16) entries in a block this shallow.
                    _ => runs.push([key.top, position as u16 + 1]),
                }
            }
            slot[position] = key.entry(*word);
        }
        block.runs = runs.into_boxed_slice();
        self.blocks.push(block);
    }

    fn into_ids(self) -> EventIds {
        let mut ids = EventIds {
            directory: Vec::with_capacity(1 << TOP_BITS),
            blocks: Chunked { chunks: Vec::new() },
            slabs: self.slabs,
            len: 0,
            max_block: self.max_block,
        };
        let mut blocks = self.blocks.into_iter().peekable();
        for top in 0..1u32 << TOP_BITS {
            // The blocks of this sub-directory: one shallower than it, or all those under it.
            let mut under = Vec::new();
            while let Some(block) = blocks.next_if(|block| {
                let depth = u32::from(block.depth);
                if depth <= TOP_BITS {
                    block.prefix << (TOP_BITS - depth) == top
                } else {
                    block.prefix >> (depth - TOP_BITS) == top
                }
            }) {
                let shallow = u32::from(block.depth) <= TOP_BITS;
                under.push(block);
                if shallow {
                    break;
                }
            }
            let depth = under
                .iter()
                .map(|block| u32::from(block.depth).saturating_sub(TOP_BITS))
                .max()
                .unwrap_or(0);
            let mut slots = Vec::with_capacity(1 << depth);
            for block in under {
                let span = 1 << (depth - u32::from(block.depth).saturating_sub(TOP_BITS));
                ids.len += block.len as usize;
                let index = ids.blocks.push(block);
                slots.extend(std::iter::repeat_n(index, span));
            }
            if slots.is_empty() {
                // Under the block of the sub-directory before, which is shallower than both.
                slots.push(ids.directory[top as usize - 1].slots[0]);
            }
            ids.directory.push(SubDirectory { depth, slots });
        }
        ids
    }
}

/// The first `depth` bits of an id.
pub(super) fn prefix_of(id: &[u32; 3], depth: u32) -> u32 {
    (leading_bits(id) >> 1 >> (63 - depth)) as u32
}
