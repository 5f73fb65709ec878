//! What makes the state durable, in one place: the write-ahead [`journal`] every accepted event
//! is appended to before it is acknowledged, the [`checkpoint`] files of the whole state and
//! the id [`runs`] they share (the remembered event ids, each written once), the [`policy`] that says when to checkpoint and what a written checkpoint lets go (journal
//! segments are removed only when two newer checkpoints cover them), and [`recover`], which
//! finds and reads them back at start. It knows the files and the stored forms
//! (`proto::storage`); what the state is and how a record applies are the writer's
//! (`pipeline::state`). It never sees the edges, the queue or the read side.

pub mod checkpoint;
pub mod journal;
pub mod policy;
pub mod recover;
mod remove;
pub mod runs;

pub use recover::{DurableSettings, Recovered, RecoveryReport, recover};

/// What a checkpoint's thread writes, or frees, between two syncs. The journal's `fdatasync`
/// waits for the file system's commit, which on ext4 (`data=ordered`) first writes out the
/// other files' dirty data and frees their released extents: this bounds how long an
/// acknowledgement waits behind a checkpoint. Measured on this machine, a 4 KB write and
/// sync beside 700 MB being written waited at most 35 ms with 8 MiB steps and 13 ms with
/// 2 MiB (the writing took a fifth longer); beside 700 MB being freed, 14 and 9 ms (and
/// 260–280 ms when the file was unlinked at once).
const SYNC_STEP_BYTES: usize = 2 << 20;
