//! Recovery at start-up: load the newest valid checkpoint (falling back to an older one when the
//! newest is unusable), rebuild the state from it, replay the journal records after it, and hand
//! back the state and the open journal. What the state is and how a record is applied belong to
//! the writer (`pipeline::state`): this module only finds and reads the files, in order, and
//! stops loudly at a record that cannot be replayed. Nothing is served as ready before it returns.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::durable::checkpoint::{self, Loaded};
use crate::durable::journal::{FsyncPolicy, Journal};
use crate::proto::storage::JournalRecord;

/// Where the durable state lives and how the journal is written.
#[derive(Debug, Clone)]
pub struct DurableSettings {
    pub journal_dir: PathBuf,
    pub checkpoint_dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub segment_bytes: u64,
    /// The largest journal record written ([`crate::durable::journal::MAX_RECORD_BYTES`] but in tests): a
    /// group over it is journaled in parts.
    pub max_record_bytes: u32,
}

/// The state recovered, ready to take events, and the open journal.
#[derive(Debug)]
pub struct Recovered<S> {
    pub state: S,
    pub journal: Journal,
    pub report: RecoveryReport,
}

/// What recovery did, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The journal position of the checkpoint loaded, if one was.
    pub checkpoint_position: Option<u64>,
    /// Checkpoints found unusable (newest first) before one loaded.
    pub checkpoints_rejected: Vec<String>,
    pub records_replayed: u64,
    pub events_replayed: u64,
    pub torn_bytes: u64,
    pub duration: Duration,
}

/// Loads the newest valid checkpoint, rebuilds the state from it with `restore` (from nothing
/// when there is none), and applies every journal record after it with `replay`, in order. The
/// first record `replay` cannot apply stops recovery, naming the record.
pub fn recover<S>(
    storage: &DurableSettings,
    restore: impl FnOnce(Option<&Loaded>) -> anyhow::Result<S>,
    mut replay: impl FnMut(&mut S, JournalRecord) -> Result<(), String>,
) -> anyhow::Result<Recovered<S>> {
    let started = Instant::now();
    let (checkpoint, rejected) = checkpoint::load_newest(&storage.checkpoint_dir)?;
    let mut report = RecoveryReport {
        checkpoints_rejected: rejected
            .iter()
            .map(|rejected| format!("{:#}", rejected.error))
            .collect(),
        ..RecoveryReport::default()
    };
    // The reasons, each the error and its causes, as every log line writes them (durable sits
    // below telemetry, so the report's text is logged rather than `telemetry::chain`).
    for (rejected, reason) in rejected.iter().zip(&report.checkpoints_rejected) {
        // Set aside, not deleted: an operator may want it, and it must no longer count as one of
        // the checkpoints kept (the journal it would let go of is still needed).
        let set_aside = rejected.path.with_extension("ckpt.corrupt");
        let renamed = std::fs::rename(&rejected.path, &set_aside);
        tracing::error!(
            checkpoint = %rejected.path.display(),
            set_aside = %set_aside.display(),
            renamed = renamed.is_ok(),
            error = %reason,
            "checkpoint unusable; falling back to an older one"
        );
    }
    let mut state = restore(checkpoint.as_ref()).context("cannot restore the checkpoint")?;
    let from = checkpoint
        .as_ref()
        .map_or(0, |loaded| loaded.checkpoint.journal_position);
    report.checkpoint_position = checkpoint
        .as_ref()
        .map(|loaded| loaded.checkpoint.journal_position);
    // The first record that cannot be counted as it was when it was acknowledged.
    let mut unreplayable: Option<(u64, String)> = None;
    let (journal, opened) = Journal::open(
        &storage.journal_dir,
        storage.fsync,
        storage.segment_bytes,
        from,
        |position, record| {
            if unreplayable.is_some() {
                return;
            }
            if let Err(error) = replay(&mut state, record) {
                unreplayable = Some((position, error));
            }
        },
    )?;
    if let Some((position, error)) = unreplayable {
        anyhow::bail!("journal record {position} cannot be replayed: {error}");
    }
    let mut journal = journal;
    journal.limit_record_bytes(storage.max_record_bytes);
    report.records_replayed = opened.records_replayed;
    report.events_replayed = opened.events_replayed;
    report.torn_bytes = opened.torn_bytes;
    report.duration = started.elapsed();
    Ok(Recovered {
        state,
        journal,
        report,
    })
}
