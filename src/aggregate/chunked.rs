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

use crate::event::{EventId, LearnerKey, VisitorKey};

/// The entries a chunk holds on average before the table takes one more chunk. Small enough
/// that copying a chunk on write, or splitting one, takes microseconds; large enough that a
/// frozen copy of ten million learners is a few thousand `Arc`s.
const CHUNK_ENTRIES: usize = 512;

/// A key of three words, from which a chunk is chosen.
pub(super) trait Fingerprint: Copy + Eq + Hash {
    fn words(&self) -> [u32; 3];

    /// 32 bits that depend on every bit of the key (MurmurHash3's finalizer over the words).
    fn spread(&self) -> u32 {
        let [a, b, c] = self.words();
        let mut hash = a ^ b.rotate_left(11) ^ c.rotate_left(22);
        hash ^= hash >> 16;
        hash = hash.wrapping_mul(0x85eb_ca6b);
        hash ^= hash >> 13;
        hash = hash.wrapping_mul(0xc2b2_ae35);
        hash ^ (hash >> 16)
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

    /// The value of `key`, inserted by `value` when absent.
    pub(super) fn get_or_insert_with(&mut self, key: K, value: impl FnOnce() -> V) -> &mut V {
        if !self.contains_key(&key) {
            self.grow_for_one_more();
            self.len += 1;
        }
        self.chunk_mut(&key).entry(key).or_insert_with(value)
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

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        if !self.contains_key(key) {
            return None;
        }
        let old = self.chunk_mut(key).remove(key);
        self.len -= usize::from(old.is_some());
        old
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(key, _)| key)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, value)| value)
    }

    /// Every entry, the table left empty. A chunk still shared with a frozen copy is cloned.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = (K, V)> + use<K, V> {
        std::mem::take(self).into_entries()
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

    /// Room for `additional` more entries: the chunks they will need, split now.
    pub(super) fn reserve(&mut self, additional: usize) {
        let wanted = (self.len + additional).div_ceil(CHUNK_ENTRIES);
        while self.chunks.len() < wanted {
            self.split_one();
        }
        let per_chunk = (self.len + additional).div_ceil(self.chunks.len());
        for chunk in &mut self.chunks {
            let chunk = Arc::make_mut(chunk);
            chunk.reserve(per_chunk.saturating_sub(chunk.len()));
        }
    }

    /// Takes one more chunk when one more entry would bring the average past `CHUNK_ENTRIES`.
    fn grow_for_one_more(&mut self) {
        if self.len + 1 > self.chunks.len() * CHUNK_ENTRIES {
            self.split_one();
        }
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
