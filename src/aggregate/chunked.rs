//! `Chunked`, the aggregator's big tables (learners, visitors, remembered ids): a map split
//! into chunks by linear hashing, each chunk behind an `Arc`. Cloning one clones the `Arc`s
//! only, so a checkpoint takes a frozen copy of the whole state in a few milliseconds and
//! encodes it on another thread while the writer goes on: the writer's first change to a chunk
//! still shared with that copy clones that chunk alone (copy on write). The table grows one
//! chunk at a time — a full chunk splits in two — so no insert ever rehashes the whole table,
//! which for tens of millions of learners used to stop the writer for a fraction of a second.
//!
//! A key's chunk is chosen by the low bits of its spread (a mix of all of its words, so that
//! keys that vary in one word only — made up by a test or a benchmark — spread as well as
//! real fingerprints). A chunk holds its entries as [`Chunk`] says: side by side in the order
//! of the spread's other bits (the default, little more memory than the entries), or in a
//! hash table ([`Hashed`]). Taken chunk after chunk in the order of their patterns, a table's
//! entries are in one order throughout, that of an id run (`EventId::run_order`): what a
//! checkpoint writes, so that a restore cuts what it reads into chunks without sorting it.

use std::marker::PhantomData;
use std::sync::Arc;

use hashbrown::HashMap;
use rayon::prelude::*;

use crate::event::{self, EventId, LearnerKey, VisitorKey};

mod chunk;

pub(super) use chunk::{Chunk, Sorted};

/// A key of three words, from which a chunk and a place in it are chosen.
pub(super) trait Fingerprint: Copy + Eq {
    fn words(&self) -> [u32; 3];

    /// 32 bits that depend on every bit of the key ([`event::spread`]).
    fn spread(&self) -> u32 {
        event::spread(self.words())
    }

    /// The order of a chunk's entries: the spread's bits from the lowest, then the words.
    fn order(&self) -> (u32, [u32; 3]) {
        (self.spread().reverse_bits(), self.words())
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

/// A map in chunks, each shared copy-on-write (see the module's documentation), its entries
/// side by side in key order ([`Sorted`], the default) or in a hash table ([`Hashed`]).
#[derive(Debug, Clone)]
pub(super) struct Chunked<K, V, C = Sorted<K, V>> {
    /// `base + split` chunks: a key goes to chunk `spread % base`, or `spread % (2 * base)`
    /// when that chunk (one of the first `split`) has already been split in two.
    chunks: Vec<Arc<C>>,
    entries: PhantomData<(K, V)>,
    /// A power of two.
    base: usize,
    split: usize,
    len: usize,
}

/// A table whose chunks are hash tables: half as much memory again, faster inserts.
pub(super) type Hashed<K, V> = Chunked<K, V, HashMap<K, V>>;

impl<K: Fingerprint, V: Clone, C: Chunk<K, V>> Default for Chunked<K, V, C> {
    fn default() -> Self {
        Chunked {
            chunks: vec![Arc::default()],
            base: 1,
            split: 0,
            len: 0,
            entries: PhantomData,
        }
    }
}

impl<K: Fingerprint, V: Clone, C: Chunk<K, V>> Chunked<K, V, C> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk of `key`, and how many low bits of the spread its keys have in common.
    fn locate(&self, key: &K) -> (usize, u32) {
        let spread = key.spread() as usize;
        let low = spread & (self.base - 1);
        let bits = self.base.trailing_zeros();
        if low < self.split {
            (spread & (2 * self.base - 1), bits + 1)
        } else {
            (low, bits)
        }
    }

    pub(super) fn get(&self, key: &K) -> Option<&V> {
        let (index, depth) = self.locate(key);
        self.chunks[index].get(key, depth)
    }

    /// The value of `key`, to change in place; `None` (and no copy made) when absent.
    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let (index, depth) = self.locate(key);
        C::get_mut(&mut self.chunks[index], key, depth)
    }

    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let (index, depth) = self.locate(&key);
        let old = Arc::make_mut(&mut self.chunks[index]).insert(key, value, depth);
        if old.is_none() {
            self.len += 1;
            if self.len > self.chunks.len() * C::ENTRIES {
                self.split_one();
            }
        }
        old
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.chunks.iter().flat_map(|chunk| chunk.entries())
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(key, _)| key)
    }

    /// Every value, a chunk at a time on rayon's threads.
    pub(super) fn par_values(&self) -> impl ParallelIterator<Item = &V>
    where
        K: Send + Sync,
        V: Send + Sync,
        C: Send + Sync,
    {
        self.chunks
            .par_iter()
            .flat_map_iter(|chunk| chunk.entries().map(|(_, value)| value))
    }

    /// The chunks' indices in the order of their entries: the patterns of a chunk index's low
    /// bits from the lowest bit up, each chunk followed by the one split off it (whose keys'
    /// spreads have one more bit set).
    fn chunks_in_order(&self) -> Vec<usize> {
        let mut patterns: Vec<usize> = (0..self.base).collect();
        patterns.sort_unstable_by_key(|pattern| pattern.reverse_bits());
        patterns
            .into_iter()
            .flat_map(|pattern| {
                std::iter::once(pattern)
                    .chain((pattern < self.split).then_some(pattern + self.base))
            })
            .collect()
    }

    /// Every entry in [`Fingerprint::order`] (for the remembered ids, the order of an id run:
    /// `EventId::run_order`), a few hundred at a time on every core: each chunk's in order
    /// (sorted, when they are in a hash table), the chunks taken in order.
    pub(super) fn in_order(&self) -> Vec<(K, V)>
    where
        K: Send + Sync,
        V: Send + Sync,
        C: Send + Sync,
    {
        self.chunks_in_order()
            .into_par_iter()
            .flat_map_iter(|index| self.chunks[index].ordered())
            .collect()
    }

    /// Every entry in [`Fingerprint::order`], each chunk let go as soon as it is read: what a
    /// frozen copy being encoded does, so that the writer's later changes to those chunks copy
    /// nothing, and what a checkpoint writes, so that [`Chunked::build`] need not sort it. A
    /// chunk the writer still shares is read, not copied.
    pub(super) fn into_entries(self) -> impl Iterator<Item = (K, V)> {
        let mut chunks: Vec<Option<Arc<C>>> = Vec::with_capacity(self.chunks.len());
        let order = self.chunks_in_order();
        chunks.extend(self.chunks.into_iter().map(Some));
        order.into_iter().flat_map(move |index| {
            let chunk = chunks[index].take().unwrap_or_default();
            match Arc::try_unwrap(chunk) {
                Ok(chunk) => chunk.into_ordered(),
                Err(shared) => shared.ordered(),
            }
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
            chunk.retain(&mut keep);
            len += chunk.len();
        }
        self.len = len;
    }

    /// A table of the `len` entries `entry(0)`, `entry(1)`, …, built whole on every core rather
    /// than one insert at a time: the entries are made, sorted into [`Fingerprint::order`]
    /// unless they come in it (as a checkpoint writes them), and cut into chunks. A key given
    /// twice keeps its last value, as inserting the entries in order would. For a restore,
    /// where tens of millions of entries inserted one by one each missed the cache; `entry`
    /// reads them where they are (a checkpoint's columns, an id run).
    pub(super) fn build(len: usize, entry: impl Fn(usize) -> (K, V) + Sync) -> Self
    where
        K: Send + Sync,
        V: Send + Sync,
        C: Send,
    {
        let mut entries: Vec<(K, V)> = (0..len).into_par_iter().map(&entry).collect();
        if !entries.is_sorted_by_key(|(key, _)| key.order()) {
            // Stable: of a key given twice, the last value comes last.
            entries.par_sort_by_key(|(key, _)| key.order());
        }
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            same
        });
        // The geometry of a table grown to `count` chunks, each holding three quarters of
        // [`Chunk::ENTRIES`] so that the table takes inserts for a while before its first
        // split: `base` the largest power of two not over `count`, the chunks past it split
        // off the first ones.
        let count = entries.len().div_ceil(C::ENTRIES * 3 / 4).max(1);
        let base = 1 << count.ilog2();
        let mut table = Chunked {
            chunks: (0..count).map(|_| Arc::default()).collect(),
            base,
            split: count - base,
            len: entries.len(),
            entries: PhantomData,
        };
        // In this order each chunk's entries come together: where each chunk's start, and how
        // many bits its keys' spreads share.
        let mut starts: Vec<(usize, usize, u32)> = Vec::new();
        for (at, (key, _)) in entries.iter().enumerate() {
            let (index, depth) = table.locate(key);
            if starts.last().is_none_or(|(last, _, _)| *last != index) {
                starts.push((index, at, depth));
            }
        }
        let ends = starts
            .iter()
            .skip(1)
            .map(|(_, at, _)| *at)
            .chain([entries.len()]);
        let pieces: Vec<(usize, C)> = starts
            .iter()
            .zip(ends)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|(&(index, start, depth), end)| {
                (index, C::of_ordered(&entries[start..end], depth))
            })
            .collect();
        for (index, piece) in pieces {
            table.chunks[index] = Arc::new(piece);
        }
        table
    }

    /// Splits chunk `split` in two by the next bit of the keys' spread: linear hashing.
    fn split_one(&mut self) {
        let from = self.split;
        let (stays, moves) = self.chunks[from].split(self.base);
        self.chunks[from] = Arc::new(stays);
        self.chunks.push(Arc::new(moves));
        self.split += 1;
        if self.split == self.base {
            self.base *= 2;
            self.split = 0;
        }
    }
}

impl<K: Fingerprint, C: Chunk<K, ()>> Chunked<K, (), C> {
    /// Adds `key` to a set; says whether it was new.
    pub(super) fn add(&mut self, key: K) -> bool {
        self.insert(key, ()).is_none()
    }
}

#[cfg(test)]
mod tests;
