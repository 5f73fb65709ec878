//! How a chunk of a `Chunked` table holds its entries: side by side in key order (`Sorted`,
//! the default), or in a hash table (`HashMap`). The first takes little more memory than its
//! entries — what the learners' records, 64 bytes each and held for good, need; the second
//! takes half as much again but inserts without moving anything — what the visitors (a click
//! inserts into its campaign's set and the totals') and the ids accepted since the last
//! checkpoint (an insert for every event, out of memory at the next checkpoint) need.

use std::cmp::Ordering;
use std::hash::Hash;
use std::sync::Arc;

use hashbrown::HashMap;

use super::Fingerprint;

/// A full array takes room for `1 / GROWTH` more entries (and one): at most an eighth of its
/// room is empty, and it is moved to a larger place every few inserts only.
pub(super) const GROWTH: usize = 8;

/// An array's room is a multiple of this many entries, so that the allocator sees a few sizes
/// of arrays, not hundreds. glibc keeps the freed blocks of a learners' array (about 16 KB) in
/// bins 4 KB wide, sorted by size, and files each freed block by walking the distinct sizes of
/// its bin, a cache miss a size: while a checkpoint let go of the chunks the writer had copied
/// on write, that was a fifth to four fifths of the writer's time (BENCHMARKS.md).
pub(super) const ROOM_STEP: usize = 16;

/// The room an array of `len` entries is given.
fn room(len: usize) -> usize {
    len.next_multiple_of(ROOM_STEP)
}

/// A copy of `items` in the room [`room`] gives.
fn in_room<T: Clone>(items: &[T]) -> Vec<T> {
    let mut copy = Vec::with_capacity(room(items.len()));
    copy.extend_from_slice(items);
    copy
}

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

    /// The chunk of `entries`, in [`Fingerprint::order`] and of distinct keys whose spreads
    /// share their first `depth` bits.
    fn of_ordered(entries: &[(K, V)], depth: u32) -> Self;

    /// The entries in [`Fingerprint::order`].
    fn into_ordered(self) -> Vec<(K, V)>;

    /// A copy of the entries in [`Fingerprint::order`], the chunk left as it is (shared with
    /// the writer, or a table being read).
    fn ordered(&self) -> Vec<(K, V)>;
}

/// A chunk's entries side by side in [`Fingerprint::order`], and beside them each one's mark:
/// the 16 bits of its order just past those all the chunk's keys share. A lookup searches the
/// marks — 2 bytes an entry, so the few it reads around the place its key's share guesses are
/// in a cache line or two — and reads the entry they point to, where searching the entries
/// themselves (12 to 64 bytes each) read a cache line for every step.
#[derive(Debug)]
pub(in crate::aggregate) struct Sorted<K, V> {
    pub(super) marks: Vec<u16>,
    pub(super) entries: Vec<(K, V)>,
}

impl<K: Clone, V: Clone> Clone for Sorted<K, V> {
    /// A copy of the arrays in the room [`room`] gives, as every array has: the copy a write
    /// makes of a chunk a frozen table holds is one of the few sizes the allocator sees.
    fn clone(&self) -> Self {
        Sorted {
            marks: in_room(&self.marks),
            entries: in_room(&self.entries),
        }
    }
}

impl<K, V> Default for Sorted<K, V> {
    fn default() -> Self {
        Sorted {
            marks: Vec::new(),
            entries: Vec::new(),
        }
    }
}

/// The mark of an order whose spread's bits from the lowest are `reversed`, in a chunk whose
/// keys share the first `depth` of them.
fn mark(reversed: u32, depth: u32) -> u16 {
    (reversed.checked_shl(depth).unwrap_or(0) >> 16) as u16
}

impl<K: Fingerprint, V: Clone> Sorted<K, V> {
    /// The chunk of `entries`, in order, in the room [`room`] gives.
    fn of(entries: &[(K, V)], depth: u32) -> Self {
        let mut marks = Vec::with_capacity(room(entries.len()));
        marks.extend(entries.iter().map(|(key, _)| mark(key.order().0, depth)));
        Sorted {
            marks,
            entries: in_room(entries),
        }
    }

    /// Where `key` is, or where it would go, as `binary_search` says.
    fn find(&self, key: &K, depth: u32) -> Result<usize, usize> {
        let order = key.order();
        let wanted = mark(order.0, depth);
        let mut at = first_at_least(&self.marks, wanted);
        // Keys of one mark: a few at most, told apart by their whole order.
        while self.marks.get(at) == Some(&wanted) {
            match self.entries[at].0.order().cmp(&order) {
                Ordering::Equal => return Ok(at),
                Ordering::Greater => return Err(at),
                Ordering::Less => at += 1,
            }
        }
        Err(at)
    }
}

/// The first of `marks` (in order) that is `wanted` or more. The marks are uniform, so
/// `wanted`'s share of them guesses the place; the search widens from there by steps doubling.
fn first_at_least(marks: &[u16], wanted: u16) -> usize {
    let len = marks.len();
    let Some(last) = len.checked_sub(1) else {
        return 0;
    };
    let guess = ((usize::from(wanted) * len) >> 16).min(last);
    let below = |index: usize| marks[index] < wanted;
    let (low, high) = if below(guess) {
        let (mut low, mut step) = (guess + 1, 1);
        loop {
            let probe = guess + step;
            if probe > last {
                break (low, len);
            }
            if !below(probe) {
                break (low, probe);
            }
            low = probe + 1;
            step *= 2;
        }
    } else {
        let (mut high, mut step) = (guess, 1);
        loop {
            let Some(probe) = guess.checked_sub(step) else {
                break (0, high);
            };
            if below(probe) {
                break (probe + 1, high);
            }
            high = probe;
            step *= 2;
        }
    };
    low + marks[low..high].partition_point(|mark| *mark < wanted)
}

impl<K: Fingerprint, V: Clone> Chunk<K, V> for Sorted<K, V> {
    /// An insert moves half a chunk: a few kilobytes at most.
    const ENTRIES: usize = 256;

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&self, key: &K, depth: u32) -> Option<&V> {
        self.find(key, depth).ok().map(|at| &self.entries[at].1)
    }

    fn get_mut<'a>(chunk: &'a mut Arc<Self>, key: &K, depth: u32) -> Option<&'a mut V> {
        let at = chunk.find(key, depth).ok()?;
        Some(&mut Arc::make_mut(chunk).entries[at].1)
    }

    fn insert(&mut self, key: K, value: V, depth: u32) -> Option<V> {
        match self.find(&key, depth) {
            Ok(at) => Some(std::mem::replace(&mut self.entries[at].1, value)),
            Err(at) => {
                let len = self.entries.len();
                if len == self.entries.capacity() {
                    let more = room(len + len / GROWTH + 1) - len;
                    self.entries.reserve_exact(more);
                    self.marks.reserve_exact(more);
                }
                self.marks.insert(at, mark(key.order().0, depth));
                self.entries.insert(at, (key, value));
                None
            }
        }
    }

    fn entries<'a>(&'a self) -> impl Iterator<Item = (&'a K, &'a V)>
    where
        K: 'a,
        V: 'a,
    {
        self.entries.iter().map(|(key, value)| (key, value))
    }

    fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        // Each entry kept moves to the first place not kept, its mark with it: order holds.
        let mut kept = 0;
        for at in 0..self.entries.len() {
            let (key, value) = &mut self.entries[at];
            if keep(key, value) {
                self.entries.swap(at, kept);
                self.marks.swap(at, kept);
                kept += 1;
            }
        }
        self.entries.truncate(kept);
        self.marks.truncate(kept);
        if self.entries.capacity() > room(kept + kept / GROWTH + 1) {
            self.entries.shrink_to(room(kept));
            self.marks.shrink_to(room(kept));
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.marks.clear();
    }

    /// In the chunk's order, the keys without `bit` come first; the halves' keys share one
    /// bit more (`bit` is the table's base, a power of two: the chunk's keys shared its
    /// trailing zeros' count of bits).
    fn split(&self, bit: usize) -> (Self, Self) {
        let at = self
            .entries
            .partition_point(|(key, _)| key.spread() as usize & bit == 0);
        let (stays, moves) = self.entries.split_at(at);
        let depth = bit.trailing_zeros() + 1;
        (Sorted::of(stays, depth), Sorted::of(moves, depth))
    }

    fn of_ordered(entries: &[(K, V)], depth: u32) -> Self {
        Sorted::of(entries, depth)
    }

    fn into_ordered(self) -> Vec<(K, V)> {
        self.entries
    }

    fn ordered(&self) -> Vec<(K, V)> {
        self.entries.clone()
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

    fn of_ordered(entries: &[(K, V)], _: u32) -> Self {
        entries.iter().cloned().collect()
    }

    fn into_ordered(self) -> Vec<(K, V)> {
        sorted(self.into_iter().collect())
    }

    fn ordered(&self) -> Vec<(K, V)> {
        sorted(
            self.iter()
                .map(|(key, value)| (*key, value.clone()))
                .collect(),
        )
    }
}

/// `entries` (of distinct keys) in [`Fingerprint::order`], each key's order computed once: a
/// checkpoint sorts every hash-table chunk so, and comparing orders computed anew (a mix of
/// the key's words each) took most of a checkpoint's time at ten million learners.
fn sorted<K: Fingerprint, V>(mut entries: Vec<(K, V)>) -> Vec<(K, V)> {
    entries.sort_by_cached_key(|(key, _)| key.order());
    entries
}
