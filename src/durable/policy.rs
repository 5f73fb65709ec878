//! The checkpoint policy: when the writer checkpoints ([`CheckpointPolicy`]: every interval, or
//! sooner when the journal has grown enough, and only when something was journaled since), and
//! what a written checkpoint lets go ([`write_and_prune`]). The invariant "journal segments are
//! removed only when two newer checkpoints cover them" lives here and nowhere else: checkpoints
//! are pruned to the newest [`checkpoint::KEEP`], and segments go only below the oldest kept, so
//! a corrupt newest checkpoint can always fall back to the one before and replay from there.

use std::borrow::Borrow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{DurableSettings, checkpoint, journal, runs};
use crate::proto::storage::{Checkpoint, IdRun};

/// When to checkpoint: tracks the time since the last checkpoint and the journal written since.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    interval: Duration,
    journal_bytes: u64,
    last: Instant,
    bytes_since: u64,
}

/// What [`write_and_prune`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: u64,
    pub segments_removed: usize,
    pub runs_removed: usize,
}

impl CheckpointPolicy {
    /// Checkpoints every `interval`, or once `journal_bytes` were journaled, counting from `now`.
    pub fn new(interval: Duration, journal_bytes: u64, now: Instant) -> CheckpointPolicy {
        CheckpointPolicy {
            interval,
            journal_bytes,
            last: now,
            bytes_since: 0,
        }
    }

    /// Notes `bytes` appended to the journal.
    pub fn appended(&mut self, bytes: u64) {
        self.bytes_since += bytes;
    }

    /// Whether a checkpoint is due at `now`: something was journaled since the last one, and the
    /// interval has passed or the journal has grown by its limit.
    pub fn due(&self, now: Instant) -> bool {
        self.bytes_since > 0
            && (now.saturating_duration_since(self.last) >= self.interval
                || self.bytes_since >= self.journal_bytes)
    }

    /// Notes that a checkpoint of everything journaled so far was started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.last = now;
        self.bytes_since = 0;
    }
}

/// Writes the checkpoint at `journal_position` made of `parts` (whole or absent: see
/// [`checkpoint::write_parts`]), keeps the newest [`checkpoint::KEEP`] checkpoints, and removes
/// the journal segments that only records before the oldest kept one hold, and the id runs no
/// kept checkpoint names: `kept`, the runs of the checkpoints kept before this one, with
/// `runs`, this one's. Answers what it did, and the runs kept now.
pub fn write_and_prune<P: Borrow<Checkpoint>>(
    settings: &DurableSettings,
    journal_position: u64,
    parts: impl IntoIterator<Item = P>,
    (mut kept, runs): (runs::Kept, Vec<IdRun>),
) -> anyhow::Result<(Written, runs::Kept)> {
    let (path, bytes) = checkpoint::write_parts(&settings.checkpoint_dir, journal_position, parts)?;
    let segments_removed = match checkpoint::prune(&settings.checkpoint_dir)? {
        Some(oldest_kept) => journal::remove_segments_before(&settings.journal_dir, oldest_kept)?,
        None => 0,
    };
    kept.written(journal_position, runs);
    let runs_removed = match kept.named() {
        Some(named) => runs::prune(&settings.checkpoint_dir, named)?,
        None => 0,
    };
    Ok((
        Written {
            path,
            bytes,
            segments_removed,
            runs_removed,
        },
        kept,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::journal::{FsyncPolicy, Journal, MAX_RECORD_BYTES};
    use crate::proto::storage::{JournalRecord, StoredEvent};

    #[test]
    fn a_checkpoint_is_due_after_the_interval_or_the_journal_limit_only_when_something_changed() {
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        let mut policy = CheckpointPolicy::new(minute, 1000, start);
        assert!(!policy.due(start + 2 * minute), "nothing journaled since");
        policy.appended(10);
        assert!(!policy.due(start + minute / 2));
        assert!(policy.due(start + minute));
        policy.appended(990);
        assert!(policy.due(start), "the journal grew by its limit");
        policy.started(start + minute);
        assert!(!policy.due(start + 3 * minute), "nothing journaled since");
        policy.appended(1);
        assert!(!policy.due(start + minute + minute / 2));
        assert!(policy.due(start + 2 * minute));
    }

    #[test]
    fn journal_segments_go_only_once_two_newer_checkpoints_cover_them() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let settings = DurableSettings {
            journal_dir: directory.path().join("journal"),
            checkpoint_dir: directory.path().join("checkpoints"),
            fsync: FsyncPolicy::Always,
            segment_bytes: 1 << 20,
            max_record_bytes: MAX_RECORD_BYTES,
        };
        let (mut journal, _) = Journal::open(
            &settings.journal_dir,
            settings.fsync,
            settings.segment_bytes,
            0,
            |_, _| {},
        )
        .expect("the journal opens");
        let record = JournalRecord {
            events: vec![StoredEvent::default()],
            ..JournalRecord::default()
        };
        let segments = |settings: &DurableSettings| {
            std::fs::read_dir(&settings.journal_dir)
                .expect("the journal lists")
                .count()
        };
        let mut removed = Vec::new();
        for _ in 0..4 {
            journal.append(&record).expect("the journal appends");
            let position = journal.rotate().expect("the journal rotates");
            let state = Checkpoint {
                journal_position: position,
                ..Checkpoint::default()
            };
            let (written, _) = write_and_prune(
                &settings,
                state.journal_position,
                [&state],
                (runs::Kept::none(), Vec::new()),
            )
            .expect("the checkpoint writes");
            removed.push((written.segments_removed, segments(&settings)));
        }
        // Checkpoints at 1, 2, 3, 4, each at a fresh segment. The first leaves the segment of
        // record 0: it is the only checkpoint, and a corrupt one would need the whole journal.
        // From the second on, the oldest kept checkpoint covers the segment before it: one goes
        // at each write, and two segments stay (the oldest kept's own and the newest).
        assert_eq!(removed, [(0, 2), (1, 2), (1, 2), (1, 2)]);
        assert_eq!(
            std::fs::read_dir(&settings.checkpoint_dir)
                .expect("the checkpoints list")
                .count(),
            checkpoint::KEEP
        );
    }
}
