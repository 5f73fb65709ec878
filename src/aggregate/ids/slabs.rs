//! Where [`EventIds`](super::EventIds) keeps its entries: slabs by size class, class `c`
//! made of slots of `c` × [`GROWTH_STEP`] entries, in chunks of [`CHUNK_ENTRIES`] entries
//! whatever the class. A class's used slots are always its first ones: freeing a slot moves the
//! class's last slot into it (and says whose it was), so no slot is left empty between used
//! ones, and every chunk is of one size, so a chunk one class gives back is what the next needs.
//! The memory held is then what the blocks' sizes round up to, whatever order they grew in
//! (given blocks that each grow by small steps, or chunks of a size per class, the system
//! allocator leaves a fifth of the heap in holes). Chunks are [`Arc`]s: a frozen copy shares
//! them, and the first write to a shared one copies that chunk only. It knows nothing of keys
//! or of the directory.

use std::sync::Arc;

use super::GROWTH_STEP;
use super::block::Entry;

/// Entries per chunk (56 KB): 256 growth steps, so a whole number of slots of most classes.
/// A chunk is the unit a frozen copy shares: one written after a freeze is copied whole.
const CHUNK_ENTRIES: usize = 256 * GROWTH_STEP;

/// Empty chunks kept for the next class that needs one, rather than given back to the system
/// allocator, which would cut them up for smaller things between two uses (a chunk leaves a
/// class and another class takes one all the time as blocks grow).
const SPARE_CHUNKS: usize = 4;

/// The slots of every size class.
#[derive(Debug, Clone, Default)]
pub(super) struct Slabs {
    /// Indexed by class; class 0 (no slot) holds nothing.
    classes: Vec<Class>,
    /// Empty chunks of [`CHUNK_ENTRIES`], not shared.
    spare: Vec<Arc<[Entry]>>,
}

#[derive(Debug, Clone, Default)]
struct Class {
    chunks: Vec<Arc<[Entry]>>,
    /// The owner (a block's index) of each used slot, in slot order.
    owners: Vec<u32>,
}

/// A slot moved to fill the one freed: its owner now has slot `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Moved {
    pub(super) owner: u32,
    pub(super) slot: u32,
}

impl Slabs {
    /// The most entries a slot holds (about a million): blocks past `max_block` exist only at
    /// the deepest depth, where uniform ids put a few each, and decoding refuses more.
    pub(super) const MAX_ENTRIES: usize = u16::MAX as usize * GROWTH_STEP;

    /// The class of slots that hold `len` entries with the least room to spare.
    pub(super) fn class_for(len: usize) -> u16 {
        u16::try_from(len.div_ceil(GROWTH_STEP)).unwrap_or(u16::MAX)
    }

    pub(super) fn capacity(class: u16) -> usize {
        usize::from(class) * GROWTH_STEP
    }

    /// The entries of `slot` in `class`, as many as the slot holds.
    pub(super) fn slot(&self, class: u16, slot: u32) -> &[Entry] {
        let Some(class_slabs) = self.classes.get(usize::from(class)) else {
            return &[];
        };
        let (chunk, start) = locate(class, slot);
        let capacity = Slabs::capacity(class);
        class_slabs
            .chunks
            .get(chunk)
            .map_or(&[], |chunk| &chunk[start..start + capacity])
    }

    /// The entries of `slot` in `class`, to write; the chunk is copied first if it is shared.
    pub(super) fn slot_mut(&mut self, class: u16, slot: u32) -> &mut [Entry] {
        let (chunk, start) = locate(class, slot);
        let capacity = Slabs::capacity(class);
        match self.classes.get_mut(usize::from(class)) {
            Some(class_slabs) if class > 0 => {
                let chunk = Arc::make_mut(&mut class_slabs.chunks[chunk]);
                &mut chunk[start..start + capacity]
            }
            _ => &mut [],
        }
    }

    /// A new slot in `class` (not 0) for the block at `owner`.
    pub(super) fn allocate(&mut self, class: u16, owner: u32) -> u32 {
        if self.classes.len() <= usize::from(class) {
            self.classes
                .resize_with(usize::from(class) + 1, Class::default);
        }
        let class_slabs = &mut self.classes[usize::from(class)];
        let slot = class_slabs.owners.len();
        if slot % slots_per_chunk(class) == 0 {
            let entries = Slabs::capacity(class).max(CHUNK_ENTRIES);
            let chunk = match self.spare.pop() {
                Some(chunk) if entries == CHUNK_ENTRIES => chunk,
                _ => std::iter::repeat_n([0; 14], entries).collect(),
            };
            class_slabs.chunks.push(chunk);
        }
        class_slabs.owners.push(owner);
        // Slots are fewer than blocks, which are counted in u32.
        slot as u32
    }

    /// Gives `slot` of `class` to the block at `owner`.
    pub(super) fn set_owner(&mut self, class: u16, slot: u32, owner: u32) {
        if let Some(class_slabs) = self.classes.get_mut(usize::from(class)) {
            class_slabs.owners[slot as usize] = owner;
        }
    }

    /// Frees `slot` of `class` by moving the class's last slot into it: the moved slot's owner,
    /// if another slot moved, must be told its new slot.
    pub(super) fn free(&mut self, class: u16, slot: u32) -> Option<Moved> {
        let capacity = Slabs::capacity(class);
        let class_slabs = self.classes.get_mut(usize::from(class))?;
        let last = class_slabs.owners.len().checked_sub(1)?;
        let freed = slot as usize;
        let moved = (freed != last).then(|| {
            let at = |slot: usize| locate(class, slot as u32);
            copy_within_class(&mut class_slabs.chunks, at(last), at(freed), capacity);
            class_slabs.owners[freed] = class_slabs.owners[last];
            Moved {
                owner: class_slabs.owners[freed],
                slot,
            }
        });
        class_slabs.owners.pop();
        if last % slots_per_chunk(class) == 0
            && let Some(chunk) = class_slabs.chunks.pop()
            && chunk.len() == CHUNK_ENTRIES
            && Arc::strong_count(&chunk) == 1
            && self.spare.len() < SPARE_CHUNKS
        {
            self.spare.push(chunk);
        }
        moved
    }

    /// Copies `count` entries from `from` (class, slot, offset) to `to` (another slot).
    pub(super) fn copy(&mut self, from: (u16, u32, usize), to: (u16, u32, usize), count: usize) {
        if count == 0 {
            return;
        }
        let at = |(class, slot, offset): (u16, u32, usize)| {
            let (chunk, start) = locate(class, slot);
            (chunk, start + offset)
        };
        let ((from_chunk, from_start), (to_chunk, to_start)) = (at(from), at(to));
        if from.0 == to.0 {
            let chunks = &mut self.classes[usize::from(from.0)].chunks;
            copy_within_class(
                chunks,
                (from_chunk, from_start),
                (to_chunk, to_start),
                count,
            );
            return;
        }
        let (low, high) = (from.0.min(to.0), from.0.max(to.0));
        let (head, tail) = self.classes.split_at_mut(usize::from(high));
        let (from_slabs, to_slabs) = if from.0 < to.0 {
            (&head[usize::from(low)], &mut tail[0])
        } else {
            (&tail[0], &mut head[usize::from(low)])
        };
        Arc::make_mut(&mut to_slabs.chunks[to_chunk])[to_start..to_start + count]
            .copy_from_slice(&from_slabs.chunks[from_chunk][from_start..from_start + count]);
    }

    /// The chunks of every class, shared, for a frozen copy.
    pub(super) fn share(&self) -> Vec<Vec<Arc<[Entry]>>> {
        self.classes
            .iter()
            .map(|class| class.chunks.clone())
            .collect()
    }

    /// The entries of `slot` in `class` among chunks shared by [`Slabs::share`].
    pub(super) fn shared_slot(chunks: &[Vec<Arc<[Entry]>>], class: u16, slot: u32) -> &[Entry] {
        let (chunk, start) = locate(class, slot);
        let capacity = Slabs::capacity(class);
        chunks
            .get(usize::from(class))
            .and_then(|chunks| chunks.get(chunk))
            .map_or(&[], |chunk| &chunk[start..start + capacity])
    }

    pub(super) fn heap_bytes(&self) -> usize {
        let chunk_bytes = 2 * size_of::<usize>() + CHUNK_ENTRIES * size_of::<Entry>();
        self.spare.len() * chunk_bytes
            + self
                .classes
                .iter()
                .map(|class| {
                    class.owners.capacity() * size_of::<u32>()
                        + class.chunks.capacity() * size_of::<Arc<[Entry]>>()
                        + class
                            .chunks
                            .iter()
                            .map(|chunk| 2 * size_of::<usize>() + size_of_val::<[Entry]>(chunk))
                            .sum::<usize>()
                })
                .sum::<usize>()
    }

    /// The owner of `slot` in `class`.
    #[cfg(test)]
    pub(super) fn owner(&self, class: u16, slot: u32) -> u32 {
        self.classes[usize::from(class)].owners[slot as usize]
    }

    /// Slots used, in every class.
    #[cfg(test)]
    pub(super) fn slots_used(&self) -> usize {
        self.classes.iter().map(|class| class.owners.len()).sum()
    }
}

/// Slots of `class` in a chunk: as many as fit in [`CHUNK_ENTRIES`], or one larger than it.
fn slots_per_chunk(class: u16) -> usize {
    (CHUNK_ENTRIES / Slabs::capacity(class).max(1)).max(1)
}

/// The chunk of `slot` in `class`, and where the slot starts in it.
fn locate(class: u16, slot: u32) -> (usize, usize) {
    // In 32 bits, whose division is the faster: slots_per_chunk is at most CHUNK_ENTRIES.
    let per_chunk = slots_per_chunk(class) as u32;
    (
        (slot / per_chunk) as usize,
        (slot % per_chunk) as usize * Slabs::capacity(class),
    )
}

/// Copies `count` entries within one class's `chunks`, from (chunk, start) to (chunk, start).
fn copy_within_class(
    chunks: &mut [Arc<[Entry]>],
    (from_chunk, from): (usize, usize),
    (to_chunk, to): (usize, usize),
    count: usize,
) {
    if from_chunk == to_chunk {
        Arc::make_mut(&mut chunks[to_chunk]).copy_within(from..from + count, to);
    } else if from_chunk < to_chunk {
        let (head, tail) = chunks.split_at_mut(to_chunk);
        Arc::make_mut(&mut tail[0])[to..to + count]
            .copy_from_slice(&head[from_chunk][from..from + count]);
    } else {
        let (head, tail) = chunks.split_at_mut(from_chunk);
        Arc::make_mut(&mut head[to_chunk])[to..to + count]
            .copy_from_slice(&tail[0][from..from + count]);
    }
}
