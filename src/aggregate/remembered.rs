//! The remembered event ids: where each one is — among those accepted since the last seal, in a
//! table sealed for a checkpoint, or in an id run out of memory ([`Written`]) — looking one up
//! ([`Aggregator::remembered_word`]), sealing them for a checkpoint's id run
//! ([`Aggregator::seal`]) and taking in the runs it wrote ([`Aggregator::install`]); and the
//! word remembered with each id (its content bits and its campaign's slot).

use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::chunked::Hashed;
use super::{Aggregator, Entry, Slot, Written};
use crate::event::EventId;

/// The part of what `seen` remembers of an event that holds the high 16 bits of the content fingerprint;
/// the low 16 bits hold the campaign's slot.
pub(super) const SEEN_CONTENT_MASK: u32 = 0xFFFF_0000;

/// The remembered ids as a checkpoint takes them ([`Aggregator::seal`]): those in memory, to
/// be written in a new id run, and the runs installed, which hold all the others.
#[derive(Debug)]
pub struct SealedIds {
    tables: Vec<Hashed<EventId, u32>>,
    /// The runs installed. When some of their ids were released since they were written
    /// (`Written::has_released`), every id is to be written afresh in one run.
    pub written: Written,
    /// The seal's number, for [`Aggregator::install`].
    pub seal: u64,
}

/// Numbers seals, across aggregators, so that a seal is installed only in the aggregator that
/// sealed it.
static SEALS: AtomicU64 = AtomicU64::new(1);

impl SealedIds {
    /// How many ids are in memory, to be written in a new run.
    pub fn len(&self) -> usize {
        self.tables.iter().map(Hashed::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids in memory, in run order ([`EventId::run_order`]), sorted here on every core:
    /// chunk by chunk when they are one table (a chunk's ids come together in that order),
    /// all at once when they are several.
    pub fn in_order(&self) -> Vec<Entry> {
        let entry = |(EventId([a, b, c]), word): (EventId, u32)| [a, b, c, word];
        match self.tables.as_slice() {
            [] => Vec::new(),
            [table] => table.in_order().into_iter().map(entry).collect(),
            tables => {
                let mut keyed: Vec<((u32, [u32; 3]), u32)> = tables
                    .par_iter()
                    .flat_map_iter(|table| table.iter().map(|(id, word)| (id.run_order(), *word)))
                    .collect();
                keyed.par_sort_unstable();
                keyed
                    .into_iter()
                    .map(|((_, id), word)| entry((EventId(id), word)))
                    .collect()
            }
        }
    }
}

impl Aggregator {
    /// The word remembered with `id`, wherever it is: among the ids accepted since the last
    /// seal, those sealed, or in an id run.
    pub(super) fn remembered_word(&self, id: &EventId) -> std::io::Result<Option<u32>> {
        if let Some(word) = self.seen.get(id) {
            return Ok(Some(*word));
        }
        for sealed in self.sealed.iter().rev() {
            if let Some(word) = sealed.get(id) {
                return Ok(Some(*word));
            }
        }
        self.written.find(id)
    }

    /// Takes the ids accepted since the last seal apart for a checkpoint's id run: they stay
    /// looked up where they are until [`Aggregator::install`] takes the runs that hold them,
    /// and the ids accepted from now on are the next seal's.
    pub fn seal(&mut self) -> SealedIds {
        let seal = SEALS.fetch_add(1, Ordering::Relaxed);
        if !self.seen.is_empty() {
            self.sealed.push(std::mem::take(&mut self.seen));
        }
        self.pending_seal = Some(seal);
        SealedIds {
            tables: self.sealed.clone(),
            written: self.written.clone(),
            seal,
        }
    }

    /// Takes `written`, the runs a checkpoint of `seal` wrote, which hold every id sealed then
    /// and the runs' before: the sealed ids are let go from memory. Not when a campaign was
    /// released or another seal taken since (answers false): the runs may hold ids forgotten
    /// since, and the next checkpoint writes them again.
    pub fn install(&mut self, seal: u64, written: Written) -> bool {
        if self.pending_seal != Some(seal) {
            return false;
        }
        self.pending_seal = None;
        self.sealed.clear();
        self.written = written;
        true
    }

    /// The ids in id runs, as installed.
    pub fn written(&self) -> &Written {
        &self.written
    }
}

/// What `seen` remembers of an event: the high 16 bits of its content fingerprint with its
/// campaign's slot in the low 16 bits.
pub(super) fn remembered(content: u32, slot: Slot) -> u32 {
    (content & SEEN_CONTENT_MASK) | u32::from(slot)
}

/// The campaign slot of what `seen` remembers.
pub(super) fn remembered_slot(remembered: u32) -> Slot {
    // The low 16 bits, which always fit.
    (remembered & !SEEN_CONTENT_MASK) as Slot
}

/// Whether `content` differs from a remembered content (a `seen` entry's last word, or a whole
/// fingerprint) in the 16 bits that are remembered.
pub(super) fn content_conflicts(remembered: u32, content: u32) -> bool {
    (remembered ^ content) & SEEN_CONTENT_MASK != 0
}
