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
