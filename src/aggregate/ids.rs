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
//! distinct value in its `runs`. A block's entries are a slot of the `slabs`, of the smallest
//! size class that holds them (`slabs` says why not one allocation each); [`EventIds::freeze`]
//! copies the blocks' small descriptors and shares the slabs' chunks, and the writer's next
//! change to a chunk still shared copies that chunk only.

use std::sync::Arc;

use anyhow::{anyhow, ensure};

mod block;
mod build;
mod slabs;

use block::{Block, Entry, Key, word_of};
use build::Builder;
use slabs::{Moved, Slabs};

/// Bits of the id fingerprint that choose a sub-directory.
const TOP_BITS: u32 = 10;
/// Leading bits of the id fingerprint an entry does not store.
const QUOTIENT_BITS: usize = 16;
/// The deepest a block goes: a block this deep never splits (with uniform ids none gets near).
const MAX_DEPTH: u32 = 26;
/// The most entries a block holds before it splits.
const MAX_BLOCK: usize = 256;
/// A block's storage grows by this many entries at a time, so that its slack stays small.
const GROWTH_STEP: usize = 16;
/// Blocks per chunk of the block list: a chunk is never moved once full, so the list grows
/// without copying every block at once.
const CHUNK_BLOCKS: usize = 1 << 14;
/// Bytes of one id and its word in the encoding: four little-endian `u32` words.
pub const ENCODED_ID_BYTES: usize = 16;

/// The remembered event ids of an aggregator: each id fingerprint once, with its word.
pub struct EventIds {
    /// Indexed by the first [`TOP_BITS`] bits of an id.
    directory: Vec<SubDirectory>,
    blocks: Chunked<Block>,
    slabs: Slabs,
    len: usize,
    max_block: usize,
}

/// A read-only copy of an [`EventIds`] as it was when frozen, sharing its entries; made to be
/// encoded on another thread while the original goes on changing.
#[derive(Clone)]
pub struct FrozenIds {
    /// Every block, in key order.
    blocks: Vec<Block>,
    /// The slabs' chunks, by class.
    chunks: Vec<Vec<Arc<[Entry]>>>,
    len: usize,
}

/// The slots of the ids that share their first [`TOP_BITS`] bits: slot `i` holds the block of
/// the ids whose next `depth` bits are `i`.
#[derive(Debug, Clone)]
struct SubDirectory {
    depth: u32,
    slots: Vec<u32>,
}

/// How many ids in a row share their first [`MAX_DEPTH`] bits, as sorted ids are read: more
/// than a slot can hold are no fingerprints (a uniform hash would need 2^46 ids for that), and
/// are refused rather than built into a block too large.
#[derive(Debug, Default)]
struct Density {
    prefix: Option<u32>,
    count: usize,
}

/// A list in chunks of [`CHUNK_BLOCKS`], so that it grows without ever moving all it holds.
#[derive(Debug, Clone)]
struct Chunked<T> {
    chunks: Vec<Vec<T>>,
}

impl EventIds {
    /// An empty set: about 70 KB, whatever it will hold.
    pub fn new() -> EventIds {
        EventIds::with_max_block(MAX_BLOCK)
    }

    fn with_max_block(max_block: usize) -> EventIds {
        let mut blocks = Chunked { chunks: Vec::new() };
        blocks.push(Block::default());
        EventIds {
            directory: vec![
                SubDirectory {
                    depth: 0,
                    slots: vec![0],
                };
                1 << TOP_BITS
            ],
            blocks,
            slabs: Slabs::default(),
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
        let block = self.blocks.get(self.block_index(id));
        let entries = &self.slabs.slot(block.class, block.slot);
        block.find(entries, Key::of(id))
    }

    /// Remembers `id` with `word`. `id` must not be remembered already (checked in debug
    /// builds): the caller has just found it absent.
    pub fn insert(&mut self, id: [u32; 3], word: u32) {
        let index = self.block_index(&id);
        let block = self.blocks.get(index);
        if block.len as usize == Slabs::capacity(block.class) {
            // Never past the largest class: a block at the deepest depth would need 2^46
            // uniform ids to fill its largest slot (and decode refuses such sets).
            self.move_block(index, block.class + 1);
        }
        let block = self.blocks.get_mut(index);
        block.insert(
            self.slabs.slot_mut(block.class, block.slot),
            Key::of(&id),
            word,
        );
        self.len += 1;
        if block.len as usize > self.max_block {
            self.split(index);
        }
    }

    /// Keeps only the ids whose word `keep` accepts, each word asked once. When that leaves the
    /// blocks mostly empty, the set is rebuilt into fewer of them.
    pub fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        let mut kept = Vec::new();
        for index in 0..self.blocks.len() {
            let block = self.blocks.get(index);
            let entries = &self.slabs.slot(block.class, block.slot)[..block.len as usize];
            kept.clear();
            kept.extend(entries.iter().map(|entry| keep(word_of(entry))));
            if kept.iter().all(|kept| *kept) {
                continue;
            }
            let block = self.blocks.get_mut(index);
            block.retain(self.slabs.slot_mut(block.class, block.slot), &kept);
            let class = Slabs::class_for(block.len as usize);
            if class < block.class {
                self.move_block(index, class);
            }
        }
        self.len = self.blocks.iter().map(|block| block.len as usize).sum();
        if self.blocks.len() > 1 && self.len * 4 < self.blocks.len() as usize * self.max_block {
            let max_block = self.max_block;
            // Taken out first, so that the old entries are freed as soon as they are read.
            let old = std::mem::replace(self, EventIds::with_max_block(max_block)).freeze();
            let mut builder = Builder::new(old.len, max_block);
            for block in &old.blocks {
                let entries = Slabs::shared_slot(&old.chunks, block.class, block.slot);
                block.for_each(entries, |id, word| builder.push(id, word));
            }
            *self = builder.finish();
        }
    }

    /// A copy of the set as it is now, in time proportional to the number of blocks (their
    /// descriptors are copied, their entries shared).
    pub fn freeze(&self) -> FrozenIds {
        let mut blocks = Vec::with_capacity(self.blocks.len() as usize);
        let mut last = None;
        for sub in &self.directory {
            for &slot in &sub.slots {
                if last != Some(slot) {
                    blocks.push(self.blocks.get(slot).clone());
                    last = Some(slot);
                }
            }
        }
        FrozenIds {
            blocks,
            chunks: self.slabs.share(),
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
        let mut density = Density::default();
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
            density.check(&id)?;
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
        let mut density = Density::default();
        for (id, word) in ids {
            density.check(&id)?;
            builder.push(id, word);
        }
        Ok(builder.finish())
    }

    /// An estimate of the bytes held on the heap: entries, block descriptors and the directory,
    /// by capacity (not counting the allocator's own overhead).
    pub fn heap_bytes(&self) -> usize {
        let blocks: usize = self
            .blocks
            .chunks
            .iter()
            .map(|chunk| chunk.capacity() * size_of::<Block>())
            .sum::<usize>()
            + self
                .blocks
                .iter()
                .map(|block| size_of_val::<[[u16; 2]]>(&block.runs))
                .sum::<usize>();
        let directory: usize = self
            .directory
            .iter()
            .map(|sub| size_of::<SubDirectory>() + sub.slots.capacity() * size_of::<u32>())
            .sum();
        blocks + directory + self.slabs.heap_bytes()
    }

    /// Where `id`'s block is in the block list.
    fn block_index(&self, id: &[u32; 3]) -> u32 {
        let sub = &self.directory[(id[0] >> (32 - TOP_BITS)) as usize];
        sub.slots[slot_in(sub.depth, leading_bits(id) << TOP_BITS)]
    }

    /// Moves the entries of the block at `index` to a slot of `class` (none for class 0).
    fn move_block(&mut self, index: u32, class: u16) {
        let block = self.blocks.get(index);
        let (old_class, old_slot, len) = (block.class, block.slot, block.len as usize);
        let slot = if class == 0 {
            0
        } else {
            let slot = self.slabs.allocate(class, index);
            self.slabs
                .copy((old_class, old_slot, 0), (class, slot, 0), len);
            slot
        };
        self.free_slot(old_class, old_slot);
        let block = self.blocks.get_mut(index);
        block.class = class;
        block.slot = slot;
    }

    /// Frees a slot, telling the block whose slot moved into it.
    fn free_slot(&mut self, class: u16, slot: u32) {
        if class > 0
            && let Some(Moved { owner, slot }) = self.slabs.free(class, slot)
        {
            self.blocks.get_mut(owner).slot = slot;
        }
    }

    /// Splits the block at `index` and any half of it still over `max_block`, pointing the
    /// directory to the new blocks.
    fn split(&mut self, index: u32) {
        let mut pending = vec![index];
        while let Some(index) = pending.pop() {
            let block = self.blocks.get(index);
            if block.len as usize <= self.max_block || u32::from(block.depth) >= MAX_DEPTH {
                continue;
            }
            let (class, slot, len) = (block.class, block.slot, block.len as usize);
            let block = self.blocks.get_mut(index);
            let (right, position) = block.split_off(self.slabs.slot(class, slot));
            let (prefix, depth) = (right.prefix, u32::from(right.depth));
            let right_index = self.blocks.push(right);
            if position == 0 {
                // Every entry goes right: the slot with them.
                let block = self.blocks.get_mut(index);
                (block.class, block.slot) = (0, 0);
                let right = self.blocks.get_mut(right_index);
                (right.class, right.slot) = (class, slot);
                self.slabs.set_owner(class, slot, right_index);
            } else if position < len {
                let right_class = Slabs::class_for(len - position);
                let right_slot = self.slabs.allocate(right_class, right_index);
                self.slabs.copy(
                    (class, slot, position),
                    (right_class, right_slot, 0),
                    len - position,
                );
                let right = self.blocks.get_mut(right_index);
                (right.class, right.slot) = (right_class, right_slot);
                if Slabs::class_for(position) < class {
                    self.move_block(index, Slabs::class_for(position));
                }
            }
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
            let entries = Slabs::shared_slot(&self.chunks, block.class, block.slot);
            block.for_each(entries, |id, word| {
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

impl Density {
    fn check(&mut self, id: &[u32; 3]) -> anyhow::Result<()> {
        let prefix = build::prefix_of(id, MAX_DEPTH);
        if self.prefix == Some(prefix) {
            self.count += 1;
        } else {
            (self.prefix, self.count) = (Some(prefix), 1);
        }
        ensure!(
            self.count <= Slabs::MAX_ENTRIES,
            "remembered event ids: more than {} share their first {MAX_DEPTH} bits, which \
             fingerprints never do",
            Slabs::MAX_ENTRIES
        );
        Ok(())
    }
}

impl<T> Chunked<T> {
    fn len(&self) -> u32 {
        // Blocks hold at least one id each but for a few empty ones, and 2^32 of them would be
        // over a terabyte of ids.
        self.chunks.iter().map(Vec::len).sum::<usize>() as u32
    }

    fn get(&self, index: u32) -> &T {
        let index = index as usize;
        &self.chunks[index / CHUNK_BLOCKS][index % CHUNK_BLOCKS]
    }

    fn get_mut(&mut self, index: u32) -> &mut T {
        let index = index as usize;
        &mut self.chunks[index / CHUNK_BLOCKS][index % CHUNK_BLOCKS]
    }

    /// Adds `item` and returns its index.
    fn push(&mut self, item: T) -> u32 {
        if self
            .chunks
            .last()
            .is_none_or(|chunk| chunk.len() == CHUNK_BLOCKS)
        {
            self.chunks.push(Vec::new());
        }
        let full_chunks = self.chunks.len() - 1;
        let chunk = &mut self.chunks[full_chunks];
        chunk.push(item);
        // As in `len`.
        (full_chunks * CHUNK_BLOCKS + chunk.len() - 1) as u32
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
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
