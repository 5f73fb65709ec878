//! What makes the state durable, in one place: the write-ahead [`journal`] every accepted event
//! is appended to before it is acknowledged, the [`checkpoint`] files of the whole state, the
//! [`policy`] that says when to checkpoint and what a written checkpoint lets go (journal
//! segments are removed only when two newer checkpoints cover them), and [`recover`], which
//! rebuilds the state at start. It knows the stored forms (`proto::storage`) and the aggregate's
//! restore, never the edges, the queue or the read side.

pub mod checkpoint;
pub mod journal;
pub mod policy;
pub mod recover;

pub use recover::{DurableSettings, Recovered, RecoveryReport, recover};
