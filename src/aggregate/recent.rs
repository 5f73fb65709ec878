//! `Recent`, the log of the ids the aggregator accepted since a checkpoint last took them
//! (`Aggregator::seal`), for the next id run (`durable::runs`). It is kept in blocks of a fixed
//! size, so that it holds at most one block of room beyond its entries, and never moves what it
//! holds as a doubling vector would: in a long replay the log grows to half of all the ids,
//! and one doubling then copied a gigabyte on the writer's thread.

use rayon::prelude::*;

/// Entries of one block: 64 KiB.
const BLOCK_ENTRIES: usize = 1 << 12;

/// Ids, each `[id words, word]`, in the order they were accepted.
#[derive(Debug, Clone, Default)]
pub struct Recent {
    blocks: Vec<Vec<[u32; 4]>>,
    len: usize,
}

impl Recent {
    pub fn push(&mut self, entry: [u32; 4]) {
        match self.blocks.last_mut() {
            Some(block) if block.len() < BLOCK_ENTRIES => block.push(entry),
            _ => {
                let mut block = Vec::with_capacity(BLOCK_ENTRIES);
                block.push(entry);
                self.blocks.push(block);
            }
        }
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries, read on every core.
    pub fn entries(self) -> impl ParallelIterator<Item = [u32; 4]> {
        self.blocks.into_par_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_all_and_blocks_hold_no_more_room_than_one() {
        let mut recent = Recent::default();
        assert!(recent.is_empty());
        let count = 3 * BLOCK_ENTRIES + 5;
        for index in 0..count as u32 {
            recent.push([index, !index, index.rotate_left(3), index / 2]);
        }
        assert_eq!(recent.len(), count);
        let room: usize = recent.blocks.iter().map(Vec::capacity).sum();
        assert_eq!(room, 4 * BLOCK_ENTRIES);
        let mut entries: Vec<[u32; 4]> = recent.entries().collect();
        entries.sort_unstable();
        let mut expected: Vec<[u32; 4]> = (0..count as u32)
            .map(|index| [index, !index, index.rotate_left(3), index / 2])
            .collect();
        expected.sort_unstable();
        assert_eq!(entries, expected);
    }
}
