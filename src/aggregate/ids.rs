//! The set of remembered event ids: [`EventIds`], each 96-bit id fingerprint with its 32-bit
//! remembered word (content bits and campaign slot), in about 15 bytes an id at any size, with
//! no long pause on insert, a copy-on-write frozen copy ([`FrozenIds`]) for checkpoints, and a
//! sorted bulk encoding read back without hashing. It never hashes, does no IO and cannot fail
//! except on decoding bytes it is handed.
//!
//! The layout is extendible hashing of small sorted blocks over the fingerprint's leading bits,
//! which are uniformly distributed (a keyed hash). A block of local depth `d` holds every id
//! whose first `d` bits are its prefix, sorted, at most `max_block` of them; a full block splits
//! in two by its next bit, touching only itself and the directory slots that pointed to it. The
//! directory is two levels: 2^[`TOP_BITS`] sub-directories chosen by the first bits, each
//! indexed by the next bits to its own depth, so that growing one copies a few kilobytes, never
//! the whole directory. Entries do not store the first 16 bits of their id (quotienting): a
//! block at least 16 deep implies them, and a shallower one (a small set) keeps them once per
//! distinct value in its `runs`. Blocks live in [`Arc`]s: [`EventIds::freeze`] shares them, and
//! the writer's next change to a block still shared copies that block only.

use std::sync::Arc;

use anyhow::{anyhow, ensure};

mod block;
mod build;

use block::{Block, Key, word_of};
use build::Builder;

/// Bits of the id fingerprint that choose a sub-directory.
const TOP_BITS: u32 = 10;
/// Leading bits of the id fingerprint an entry does not store.
const QUOTIENT_BITS: u32 = 16;
/// The deepest a block goes: a block this deep never splits (with uniform ids none gets near).
const MAX_DEPTH: u32 = 26;
/// The most entries a block holds before it splits.
const MAX_BLOCK: usize = 256;
/// A block's storage grows by this many entries at a time, so that its slack stays small.
const GROWTH_STEP: usize = 16;
/// Blocks per chunk of the block list: a chunk is never moved once full, so the list grows
/// without copying every block's handle at once.
const CHUNK_BLOCKS: usize = 1 << 14;
/// Bytes of one id and its word in the encoding: four little-endian `u32` words.
pub const ENCODED_ID_BYTES: usize = 16;

/// The remembered event ids of an aggregator: each id fingerprint once, with its word.
pub struct EventIds {
    /// Indexed by the first [`TOP_BITS`] bits of an id.
    directory: Vec<SubDirectory>,
    blocks: BlockList,
    len: usize,
    max_block: usize,
}

/// A read-only copy of an [`EventIds`] as it was when frozen, sharing its blocks; made to be
/// encoded on another thread while the original goes on changing.
#[derive(Clone)]
pub struct FrozenIds {
    /// Every block, in key order.
    blocks: Vec<Arc<Block>>,
    len: usize,
}

/// The slots of the ids that share their first [`TOP_BITS`] bits: slot `i` holds the block of
/// the ids whose next `depth` bits are `i`.
#[derive(Debug, Clone)]
struct SubDirectory {
    depth: u32,
    slots: Vec<u32>,
}

/// Every block, each owned once, in chunks of [`CHUNK_BLOCKS`].
#[derive(Debug)]
struct BlockList {
    chunks: Vec<Vec<Arc<Block>>>,
}

impl EventIds {
    /// An empty set: about 70 KB, whatever it will hold.
    pub fn new() -> EventIds {
        EventIds::with_max_block(MAX_BLOCK)
    }

    fn with_max_block(max_block: usize) -> EventIds {
        let mut blocks = BlockList { chunks: Vec::new() };
        blocks.push(Arc::new(Block::default()));
        EventIds {
            directory: vec![
                SubDirectory {
                    depth: 0,
                    slots: vec![0],
                };
                1 << TOP_BITS
            ],
            blocks,
            len: 0,
            max_block,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The word remembered with `id`, if `id` is remembered.
    pub fn find(&self, id: &[u32; 3]) -> Option<u32> {
        self.blocks.get(self.block_index(id)).find(Key::of(id))
    }

    /// Remembers `id` with `word`. `id` must not be remembered already (checked in debug
    /// builds): the caller has just found it absent.
    pub fn insert(&mut self, id: [u32; 3], word: u32) {
        let index = self.block_index(&id);
        let block = Arc::make_mut(self.blocks.get_mut(index));
        block.insert(Key::of(&id), word);
        self.len += 1;
        if block.entries.len() > self.max_block {
            self.split(index);
        }
    }

    /// Keeps only the ids whose word `keep` accepts, each word asked once. When that leaves the
    /// blocks mostly empty, the set is rebuilt into fewer of them.
    pub fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        let mut len = 0;
        for chunk in &mut self.blocks.chunks {
            for block in chunk {
                if block.entries.iter().all(|entry| keep(word_of(entry))) {
                    len += block.entries.len();
                    continue;
                }
                let block = Arc::make_mut(block);
                block.retain(&mut keep);
                len += block.entries.len();
            }
        }
        self.len = len;
        if self.blocks.len() > 1 && len * 4 < self.blocks.len() * self.max_block {
            let max_block = self.max_block;
            // Taken out first, so that each old block is freed as soon as it is read.
            let old = std::mem::replace(self, EventIds::with_max_block(max_block)).freeze();
            let mut builder = Builder::new(len, max_block);
            for block in old.blocks {
                block.for_each(|id, word| builder.push(id, word));
            }
            *self = builder.finish();
        }
    }

    /// A copy of the set as it is now, in time proportional to the number of blocks (their
    /// handles are copied, not their entries).
    pub fn freeze(&self) -> FrozenIds {
        let mut blocks: Vec<Arc<Block>> = Vec::with_capacity(self.blocks.len());
        let mut last = None;
        for sub in &self.directory {
            for &slot in &sub.slots {
                if last != Some(slot) {
                    blocks.push(Arc::clone(self.blocks.get(slot)));
                    last = Some(slot);
                }
            }
        }
        FrozenIds {
            blocks,
            len: self.len,
        }
    }

    /// The set encoded by [`FrozenIds::encode`], checked: a whole number of ids, each greater
    /// than the one before.
    pub fn decode(bytes: &[u8]) -> anyhow::Result<EventIds> {
        EventIds::decode_with_max_block(bytes, MAX_BLOCK)
    }

    fn decode_with_max_block(bytes: &[u8], max_block: usize) -> anyhow::Result<EventIds> {
        ensure!(
            bytes.len() % ENCODED_ID_BYTES == 0,
            "remembered event ids: {} bytes is not a whole number of {ENCODED_ID_BYTES}-byte ids",
            bytes.len()
        );
        let mut builder = Builder::new(bytes.len() / ENCODED_ID_BYTES, max_block);
        let mut previous: Option<[u32; 3]> = None;
        for (position, chunk) in bytes.chunks_exact(ENCODED_ID_BYTES).enumerate() {
            let [a, b, c, word] = decode_words(chunk);
            let id = [a, b, c];
            if let Some(previous) = previous {
                ensure!(
                    previous < id,
                    "remembered event ids: id {position} is {} the one before it (they must be \
                     in increasing order, each once)",
                    if previous == id {
                        "equal to"
                    } else {
                        "less than"
                    }
                );
            }
            previous = Some(id);
            builder.push(id, word);
        }
        Ok(builder.finish())
    }

    /// The set of ids stored as four words each (three of id, then the word), in any order,
    /// as checkpoints before the sorted encoding kept them. An id given twice is refused.
    pub fn from_unsorted(words: &[u32]) -> anyhow::Result<EventIds> {
        ensure!(
            words.len() % 4 == 0,
            "remembered event ids: {} words is not a whole number of 4-word ids",
            words.len()
        );
        let mut ids: Vec<([u32; 3], u32)> = words
            .chunks_exact(4)
            .map(|w| ([w[0], w[1], w[2]], w[3]))
            .collect();
        ids.sort_unstable_by_key(|(id, _)| *id);
        if let Some(pair) = ids.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(anyhow!(
                "remembered event ids: id {:08x}{:08x}{:08x} is stored twice",
                pair[0].0[0],
                pair[0].0[1],
                pair[0].0[2]
            ));
        }
        let mut builder = Builder::new(ids.len(), MAX_BLOCK);
        for (id, word) in ids {
            builder.push(id, word);
        }
        Ok(builder.finish())
    }

    /// An estimate of the bytes held on the heap: entries, blocks, the block list and the
    /// directory, by capacity (not counting the allocator's own overhead).
    pub fn heap_bytes(&self) -> usize {
        let blocks: usize = self
            .blocks
            .chunks
            .iter()
            .flatten()
            .map(|block| block.heap_bytes())
            .sum();
        let list: usize = self
            .blocks
            .chunks
            .iter()
            .map(|chunk| chunk.capacity() * size_of::<Arc<Block>>())
            .sum();
        let directory: usize = self
            .directory
            .iter()
            .map(|sub| size_of::<SubDirectory>() + sub.slots.capacity() * size_of::<u32>())
            .sum();
        blocks + list + directory
    }

    /// Where `id`'s block is in the block list.
    fn block_index(&self, id: &[u32; 3]) -> u32 {
        let sub = &self.directory[(id[0] >> (32 - TOP_BITS)) as usize];
        sub.slots[slot_in(sub.depth, leading_bits(id) << TOP_BITS)]
    }

    /// Splits the block at `index` and any half of it still over `max_block`, pointing the
    /// directory to the new blocks.
    fn split(&mut self, index: u32) {
        let mut pending = vec![index];
        while let Some(index) = pending.pop() {
            let block = self.blocks.get(index);
            if block.entries.len() <= self.max_block || block.depth >= MAX_DEPTH {
                continue;
            }
            let right = Arc::make_mut(self.blocks.get_mut(index)).split_off();
            let (prefix, depth) = (right.prefix, right.depth);
            let right_index = self.blocks.push(Arc::new(right));
            self.point(right_index, prefix, depth);
            pending.extend([index, right_index]);
        }
    }

    /// Points the directory slots of the ids with first `depth` bits `prefix` to the block at
    /// `index`, deepening the sub-directory if it is not deep enough.
    fn point(&mut self, index: u32, prefix: u32, depth: u32) {
        if depth <= TOP_BITS {
            let first = (prefix << (TOP_BITS - depth)) as usize;
            for sub in &mut self.directory[first..first + (1 << (TOP_BITS - depth))] {
                sub.slots[0] = index;
            }
            return;
        }
        let local_depth = depth - TOP_BITS;
        let sub = &mut self.directory[(prefix >> local_depth) as usize];
        if sub.depth < local_depth {
            // Each slot in two: only ever one level at a time, as blocks split one bit at a time.
            sub.slots = sub.slots.iter().flat_map(|&slot| [slot, slot]).collect();
            sub.depth += 1;
        }
        let shift = sub.depth - local_depth;
        let local_prefix = (prefix & ((1 << local_depth) - 1)) as usize;
        sub.slots[local_prefix << shift..(local_prefix + 1) << shift].fill(index);
    }
}

impl Default for EventIds {
    fn default() -> EventIds {
        EventIds::new()
    }
}

impl std::fmt::Debug for EventIds {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EventIds")
            .field("len", &self.len)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl FrozenIds {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends every id with its word to `out`, in increasing order of id: [`ENCODED_ID_BYTES`]
    /// bytes each, the three id words then the remembered word, each little-endian.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.len * ENCODED_ID_BYTES);
        for block in &self.blocks {
            block.for_each(|id, word| {
                let mut bytes = [0; ENCODED_ID_BYTES];
                for (place, value) in bytes.chunks_exact_mut(4).zip([id[0], id[1], id[2], word]) {
                    place.copy_from_slice(&value.to_le_bytes());
                }
                out.extend_from_slice(&bytes);
            });
        }
    }
}

impl std::fmt::Debug for FrozenIds {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FrozenIds")
            .field("len", &self.len)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl BlockList {
    fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    fn get(&self, index: u32) -> &Arc<Block> {
        let index = index as usize;
        &self.chunks[index / CHUNK_BLOCKS][index % CHUNK_BLOCKS]
    }

    fn get_mut(&mut self, index: u32) -> &mut Arc<Block> {
        let index = index as usize;
        &mut self.chunks[index / CHUNK_BLOCKS][index % CHUNK_BLOCKS]
    }

    /// Adds `block` and returns its index.
    fn push(&mut self, block: Arc<Block>) -> u32 {
        if self
            .chunks
            .last()
            .is_none_or(|chunk| chunk.len() == CHUNK_BLOCKS)
        {
            self.chunks.push(Vec::new());
        }
        let full_chunks = self.chunks.len() - 1;
        let chunk = &mut self.chunks[full_chunks];
        chunk.push(block);
        // Blocks hold at least one id each but for a few empty ones, and ids are counted in
        // `usize`; 2^32 blocks would be over a terabyte of ids.
        (full_chunks * CHUNK_BLOCKS + chunk.len() - 1) as u32
    }
}

/// The first 64 bits of an id.
fn leading_bits(id: &[u32; 3]) -> u64 {
    u64::from(id[0]) << 32 | u64::from(id[1])
}

/// The slot, in a sub-directory `depth` deep, of bits whose first `depth` index it.
fn slot_in(depth: u32, bits: u64) -> usize {
    // Shifted in two steps so that depth 0 gives slot 0.
    (bits >> 1 >> (63 - depth)) as usize
}

fn decode_words(chunk: &[u8]) -> [u32; 4] {
    let mut words = [0; 4];
    for (word, bytes) in words.iter_mut().zip(chunk.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    words
}

#[cfg(test)]
mod tests;
