//! How a chunk of a `Chunked` table holds its entries: side by side in key order (`Vec`, the
//! default), or in a hash table (`HashMap`). The first takes little more memory than its
//! entries — what the learners' records and the visitors, held for good, need; the second
//! takes half as much again but inserts faster — what the ids accepted since the last
//! checkpoint need, an insert for every event and out of memory at the next checkpoint.

use std::cmp::Ordering;
use std::hash::Hash;
use std::sync::Arc;

use hashbrown::HashMap;

use super::Fingerprint;

/// A full array takes room for `1 / GROWTH` more entries (and one): at most an eighth of its
/// room is empty, and it is moved to a larger place every few inserts only.
pub(super) const GROWTH: usize = 8;

/// A chunk's entries, the keys all in the chunk whose spreads end in the same `depth` bits.
pub(in crate::aggregate) trait Chunk<K, V>: Clone + Default {
    /// The entries a chunk holds on average before the table takes one more chunk: small
    /// enough that copying a chunk on write, or splitting one, takes microseconds; large
    /// enough that a frozen copy of ten million learners is some tens of thousands of `Arc`s.
    const ENTRIES: usize;

    fn len(&self) -> usize;

    fn get(&self, key: &K, depth: u32) -> Option<&V>;

    /// The value of `key`, to change in place: its chunk unshared first (copied if a frozen
    /// table still holds it) only when the key is there.
    fn get_mut<'a>(chunk: &'a mut Arc<Self>, key: &K, depth: u32) -> Option<&'a mut V>;

    fn insert(&mut self, key: K, value: V, depth: u32) -> Option<V>;

    fn entries<'a>(&'a self) -> impl Iterator<Item = (&'a K, &'a V)>
    where
        K: 'a,
        V: 'a;

    fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool);

    fn clear(&mut self);

    /// The entries whose spread has not `bit` set, and those whose spread has.
    fn split(&self, bit: usize) -> (Self, Self);

    /// The chunk of `entries`, in [`Fingerprint::order`] and of distinct keys.
    fn of_ordered(entries: &[(K, V)]) -> Self;

    /// The entries in [`Fingerprint::order`].
    fn into_ordered(self) -> Vec<(K, V)>;
}

impl<K: Fingerprint, V: Clone> Chunk<K, V> for Vec<(K, V)> {
    /// An insert moves half a chunk: a few kilobytes at most.
    const ENTRIES: usize = 256;

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn get(&self, key: &K, depth: u32) -> Option<&V> {
        find(self, key, depth).ok().map(|at| &self[at].1)
    }

    fn get_mut<'a>(chunk: &'a mut Arc<Self>, key: &K, depth: u32) -> Option<&'a mut V> {
        let at = find(chunk, key, depth).ok()?;
        Some(&mut Arc::make_mut(chunk)[at].1)
    }

    fn insert(&mut self, key: K, value: V, depth: u32) -> Option<V> {
        match find(self, &key, depth) {
            Ok(at) => Some(std::mem::replace(&mut self[at].1, value)),
            Err(at) => {
                if self.as_slice().len() == self.capacity() {
                    self.reserve_exact(self.as_slice().len() / GROWTH + 1);
                }
                Vec::insert(self, at, (key, value));
                None
            }
        }
    }

    fn entries<'a>(&'a self) -> impl Iterator<Item = (&'a K, &'a V)>
    where
        K: 'a,
        V: 'a,
    {
        self.iter().map(|(key, value)| (key, value))
    }

    fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.retain_mut(|(key, value)| keep(key, value));
        let len = self.as_slice().len();
        if self.capacity() > len + len / GROWTH + 1 {
            self.shrink_to_fit();
        }
    }

    fn clear(&mut self) {
        Vec::clear(self);
    }

    /// In the chunk's order, the keys without `bit` come first.
    fn split(&self, bit: usize) -> (Self, Self) {
        let at = self.partition_point(|(key, _)| key.spread() as usize & bit == 0);
        let (stays, moves) = self.split_at(at);
        (stays.to_vec(), moves.to_vec())
    }

    fn of_ordered(entries: &[(K, V)]) -> Self {
        entries.to_vec()
    }

    fn into_ordered(self) -> Vec<(K, V)> {
        self
    }
}

impl<K: Fingerprint + Hash, V: Clone> Chunk<K, V> for HashMap<K, V> {
    /// Twice the arrays': an insert moves nothing, and the ids' table, a hundred million ids
    /// at most before a checkpoint, is frozen in as many `Arc`s as a table of half as many.
    const ENTRIES: usize = 512;

    fn len(&self) -> usize {
        HashMap::len(self)
    }

    fn get(&self, key: &K, _: u32) -> Option<&V> {
        HashMap::get(self, key)
    }

    fn get_mut<'a>(chunk: &'a mut Arc<Self>, key: &K, _: u32) -> Option<&'a mut V> {
        if !chunk.contains_key(key) {
            return None;
        }
        Arc::make_mut(chunk).get_mut(key)
    }

    fn insert(&mut self, key: K, value: V, _: u32) -> Option<V> {
        HashMap::insert(self, key, value)
    }

    fn entries<'a>(&'a self) -> impl Iterator<Item = (&'a K, &'a V)>
    where
        K: 'a,
        V: 'a,
    {
        self.iter()
    }

    fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        HashMap::retain(self, |key, value| keep(key, value));
    }

    fn clear(&mut self) {
        HashMap::clear(self);
    }

    fn split(&self, bit: usize) -> (Self, Self) {
        let half = HashMap::len(self) / 2 + 1;
        let (mut stays, mut moves) = (HashMap::with_capacity(half), HashMap::with_capacity(half));
        for (key, value) in self {
            let half = if key.spread() as usize & bit == 0 {
                &mut stays
            } else {
                &mut moves
            };
            half.insert(*key, value.clone());
        }
        (stays, moves)
    }

    fn of_ordered(entries: &[(K, V)]) -> Self {
        entries.iter().cloned().collect()
    }

    fn into_ordered(self) -> Vec<(K, V)> {
        let mut entries: Vec<(K, V)> = self.into_iter().collect();
        entries.sort_unstable_by_key(|(key, _)| key.order());
        entries
    }
}

/// Where `key` is in `entries` (in [`Fingerprint::order`], their spreads all ending in the
/// same `depth` bits), or where it would go, as `binary_search` says. The spread's other bits
/// are uniform, so the key's share of them guesses its place; the search widens from there.
fn find<K: Fingerprint, V>(entries: &[(K, V)], key: &K, depth: u32) -> Result<usize, usize> {
    let target = key.order();
    let Some(last) = entries.len().checked_sub(1) else {
        return Err(0);
    };
    let share = u64::from(target.0.checked_shl(depth).unwrap_or(0));
    let guess =
        usize::try_from((share * entries.len() as u64) >> 32).map_or(last, |guess| guess.min(last));
    let order_at = |index: usize| entries[index].0.order();
    // A range the key is in if anywhere, found by steps doubling away from the guess.
    let (low, high) = match order_at(guess).cmp(&target) {
        Ordering::Equal => return Ok(guess),
        Ordering::Less => {
            let (mut low, mut step) = (guess + 1, 1);
            loop {
                let probe = guess + step;
                if probe > last {
                    break (low, entries.len());
                }
                if order_at(probe) >= target {
                    break (low, probe + 1);
                }
                low = probe + 1;
                step *= 2;
            }
        }
        Ordering::Greater => {
            let (mut high, mut step) = (guess, 1);
            loop {
                let Some(probe) = guess.checked_sub(step) else {
                    break (0, high);
                };
                if order_at(probe) <= target {
                    break (probe, high);
                }
                high = probe;
                step *= 2;
            }
        }
    };
    entries[low..high]
        .binary_search_by(|(known, _)| known.order().cmp(&target))
        .map(|at| low + at)
        .map_err(|at| low + at)
}
