//! `Chunked`, the aggregator's big tables (learners, visitors, attributions): a hash map split
//! into chunks by linear hashing, each chunk behind an `Arc`. Cloning one clones the `Arc`s
//! only, so a checkpoint takes a frozen copy of the whole state in a few milliseconds and
//! encodes it on another thread while the writer goes on: the writer's first change to a chunk
//! still shared with that copy clones that chunk alone (copy on write). The table grows one
//! chunk at a time — a full chunk splits in two — so no insert ever rehashes the whole table,
//! which for tens of millions of learners used to stop the writer for a fraction of a second.
//! A chunk is chosen by a mix of all of a key's words, so that keys that vary in one word only
//! (made up by a test or a benchmark) spread as well as real fingerprints.

use std::hash::Hash;
use std::sync::Arc;

use hashbrown::HashMap;
use rayon::prelude::*;

use crate::event::{self, EventId, LearnerKey, VisitorKey};

/// The entries a chunk holds on average before the table takes one more chunk. Small enough
/// that copying a chunk on write, or splitting one, takes microseconds; large enough that a
/// frozen copy of ten million learners is a few thousand `Arc`s.
const CHUNK_ENTRIES: usize = 512;

/// The entries a chunk holds on average in a table built whole ([`Chunked::build`]),
/// below [`CHUNK_ENTRIES`] so that the table takes inserts for a while before its first split.
const BUILT_ENTRIES: usize = CHUNK_ENTRIES * 3 / 4;

/// The groups [`Chunked::build`] first sorts the entries into, each group the chunks whose
/// index ends in the same bits, built by one thread: enough that a group's chunks fit in a
/// core's cache at a hundred million entries, few enough that sorting into them stays a
/// sequential pass. A power of two.
const BUILD_GROUPS: usize = 1024;

/// The entries each thread of [`Chunked::build`] sorts into groups at a time.
const BUILD_SLICE: usize = 1 << 16;

/// A key of three words, from which a chunk is chosen.
pub(super) trait Fingerprint: Copy + Eq + Hash {
    fn words(&self) -> [u32; 3];

    /// 32 bits that depend on every bit of the key ([`event::spread`]).
    fn spread(&self) -> u32 {
        event::spread(self.words())
    }
}

impl Fingerprint for LearnerKey {
    fn words(&self) -> [u32; 3] {
        self.0
    }
}

impl Fingerprint for VisitorKey {
    fn words(&self) -> [u32; 3] {
        self.0
    }
}

impl Fingerprint for EventId {
    fn words(&self) -> [u32; 3] {
        self.0
    }
}

/// A hash map in chunks, each shared copy-on-write (see the module's documentation).
#[derive(Debug, Clone)]
pub(super) struct Chunked<K, V> {
    /// `base + split` chunks: a key goes to chunk `spread % base`, or `spread % (2 * base)`
    /// when that chunk (one of the first `split`) has already been split in two.
    chunks: Vec<Arc<HashMap<K, V>>>,
    /// A power of two.
    base: usize,
    split: usize,
    len: usize,
}

impl<K: Fingerprint, V: Clone> Default for Chunked<K, V> {
    fn default() -> Self {
        Chunked {
            chunks: vec![Arc::default()],
            base: 1,
            split: 0,
            len: 0,
        }
    }
}

impl<K: Fingerprint, V: Clone> Chunked<K, V> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn chunk_of(&self, key: &K) -> usize {
        let spread = key.spread() as usize;
        let low = spread & (self.base - 1);
        if low < self.split {
            spread & (2 * self.base - 1)
        } else {
            low
        }
    }

    /// The chunk of `key`, unshared first (cloned if a frozen copy still holds it).
    fn chunk_mut(&mut self, key: &K) -> &mut HashMap<K, V> {
        let index = self.chunk_of(key);
        Arc::make_mut(&mut self.chunks[index])
    }

    pub(super) fn get(&self, key: &K) -> Option<&V> {
        self.chunks[self.chunk_of(key)].get(key)
    }

    pub(super) fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// The value of `key`, to change in place; `None` (and no copy made) when absent.
    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        if !self.contains_key(key) {
            return None;
        }
        self.chunk_mut(key).get_mut(key)
    }

    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let old = self.chunk_mut(&key).insert(key, value);
        if old.is_none() {
            self.len += 1;
            if self.len > self.chunks.len() * CHUNK_ENTRIES {
                self.split_one();
            }
        }
        old
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(key, _)| key)
    }

    /// Every value, a chunk at a time on rayon's threads.
    pub(super) fn par_values(&self) -> impl ParallelIterator<Item = &V>
    where
        K: Send + Sync,
        V: Send + Sync,
    {
        self.chunks.par_iter().flat_map_iter(|chunk| chunk.values())
    }

    /// Every entry, ordered by the bits of its key's spread from the lowest, then by key (for
    /// the remembered ids, the order of an id run: `EventId::run_order`), in one sorted list per
    /// pattern of the low bits of a chunk's index. A chunk holds the keys whose spread ends in
    /// its index, so the chunks taken in the order of their index's bits from the lowest, each
    /// with the one split off it, need each be sorted only within: a few hundred entries at a
    /// time, on every core, rather than the whole table at once.
    pub(super) fn sorted_by_spread(&self) -> Vec<Vec<(K, V)>>
    where
        K: Ord + Send + Sync,
        V: Send + Sync,
    {
        let mut patterns: Vec<usize> = (0..self.base).collect();
        patterns.sort_unstable_by_key(|pattern| pattern.reverse_bits());
        patterns
            .into_par_iter()
            .map(|pattern| {
                let split_off = (pattern < self.split).then(|| &self.chunks[pattern + self.base]);
                // Each key's order computed once, not at every comparison.
                let mut entries: Vec<(u32, K, V)> = self.chunks[pattern]
                    .iter()
                    .chain(split_off.into_iter().flat_map(|chunk| chunk.iter()))
                    .map(|(key, value)| (key.spread().reverse_bits(), *key, value.clone()))
                    .collect();
                entries.sort_unstable_by_key(|&(order, key, _)| (order, key));
                entries
                    .into_iter()
                    .map(|(_, key, value)| (key, value))
                    .collect()
            })
            .collect()
    }

    /// Every entry, each chunk let go as soon as it is read: what a frozen copy being encoded
    /// does, so that the writer's later changes to those chunks copy nothing. A chunk the
    /// writer still shares is read, not copied.
    pub(super) fn into_entries(self) -> impl Iterator<Item = (K, V)> {
        self.chunks
            .into_iter()
            .flat_map(|chunk| match Arc::try_unwrap(chunk) {
                Ok(chunk) => chunk.into_iter().collect::<Vec<_>>(),
                Err(shared) => shared
                    .iter()
                    .map(|(key, value)| (*key, value.clone()))
                    .collect(),
            })
    }

    /// Empties the table, keeping its chunks' room when they are not shared.
    pub(super) fn clear(&mut self) {
        for chunk in &mut self.chunks {
            match Arc::get_mut(chunk) {
                Some(chunk) => chunk.clear(),
                None => *chunk = Arc::default(),
            }
        }
        self.len = 0;
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let mut len = 0;
        for chunk in &mut self.chunks {
            let chunk = Arc::make_mut(chunk);
            chunk.retain(|key, value| keep(key, value));
            len += chunk.len();
        }
        self.len = len;
    }

    /// A table of the `len` entries `entry(0)`, `entry(1)`, …, built whole on every core rather
    /// than one insert at a time: the entries are first sorted into groups of chunks (those
    /// whose index ends in the same bits: a chunk and the one split off it share a group), then
    /// each group's chunks are built, so that every insert lands in a chunk already in the
    /// cache. Entries in a run's order ([`EventId::run_order`]) come group after group and
    /// chunk after chunk. A key given twice keeps its last value, as inserting the entries in
    /// order would. For a restore, where tens of millions of entries inserted one by one each
    /// missed the cache; `entry` reads them where they are (a checkpoint's columns, an id run),
    /// so no copy of them all is made first.
    pub(super) fn build(len: usize, entry: impl Fn(usize) -> (K, V) + Sync) -> Self
    where
        K: Send + Sync,
        V: Send + Sync,
    {
        let count = len.div_ceil(BUILT_ENTRIES).max(1);
        // The geometry of a table grown to `count` chunks: `base` the largest power of two not
        // over it, the chunks past it split off the first ones.
        let base = 1 << count.ilog2();
        let mut table = Chunked {
            chunks: Vec::new(),
            base,
            split: count - base,
            len: 0,
        };
        let groups = BUILD_GROUPS.min(base);
        let group_of = |key: &K| table.chunk_of(key) & (groups - 1);
        // Each thread sorts slices of the entries into groups, keeping their order.
        let sorted: Vec<Vec<Vec<(K, V)>>> = (0..len.div_ceil(BUILD_SLICE))
            .into_par_iter()
            .map(|slice| {
                let entries = slice * BUILD_SLICE..len.min((slice + 1) * BUILD_SLICE);
                let of: Vec<usize> = entries
                    .clone()
                    .map(|index| group_of(&entry(index).0))
                    .collect();
                let mut held = vec![0usize; groups];
                for group in &of {
                    held[*group] += 1;
                }
                let mut sorted: Vec<Vec<(K, V)>> =
                    held.into_iter().map(Vec::with_capacity).collect();
                for (index, group) in entries.zip(of) {
                    sorted[group].push(entry(index));
                }
                sorted
            })
            .collect();
        // Each group's share of every slice, in the slices' order.
        let mut by_group: Vec<Vec<Vec<(K, V)>>> = (0..groups)
            .map(|_| Vec::with_capacity(sorted.len()))
            .collect();
        for slice in sorted {
            for (group, entries) in slice.into_iter().enumerate() {
                by_group[group].push(entries);
            }
        }
        let mut built: Vec<std::vec::IntoIter<HashMap<K, V>>> = by_group
            .into_par_iter()
            .enumerate()
            .map(|(group, slices)| {
                // The group's chunks are `group`, `group + groups`, …: chunk `index` is its
                // `index / groups`th. Each is made the size it will hold: chunks not split
                // yet hold twice what the split ones do.
                let mut held = vec![0usize; (count - group).div_ceil(groups)];
                for (key, _) in slices.iter().flatten() {
                    held[table.chunk_of(key) / groups] += 1;
                }
                let mut chunks: Vec<HashMap<K, V>> =
                    held.into_iter().map(HashMap::with_capacity).collect();
                for (key, value) in slices.into_iter().flatten() {
                    chunks[table.chunk_of(&key) / groups].insert(key, value);
                }
                chunks.into_iter()
            })
            .collect();
        table.chunks = (0..count)
            .map(|index| {
                let chunk = built[index % groups].next();
                Arc::new(chunk.expect("a group builds each of its chunks"))
            })
            .collect();
        table.len = table.chunks.iter().map(|chunk| chunk.len()).sum();
        table
    }

    /// Splits chunk `split` in two by the next bit of the keys' spread: linear hashing.
    fn split_one(&mut self) {
        let from = self.split;
        let bit = self.base;
        let old = Arc::make_mut(&mut self.chunks[from]);
        let moved: HashMap<K, V> = old
            .extract_if(|key, _| key.spread() as usize & bit != 0)
            .collect();
        old.shrink_to_fit();
        self.chunks.push(Arc::new(moved));
        self.split += 1;
        if self.split == self.base {
            self.base *= 2;
            self.split = 0;
        }
    }
}

impl<K: Fingerprint> Chunked<K, ()> {
    /// Adds `key` to a set; says whether it was new.
    pub(super) fn add(&mut self, key: K) -> bool {
        self.insert(key, ()).is_none()
    }
}

#[cfg(test)]
mod tests;
