//! Recovery at start-up: load the newest valid checkpoint (falling back to an older one when the
//! newest is unusable), then replay the journal records after it, and hand back the aggregator
//! and the open journal. Nothing is served as ready before this returns.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::aggregate::{Aggregator, AggregatorSettings};
use crate::checkpoint;
use crate::event::Event;
use crate::journal::{FsyncPolicy, Journal};
use crate::sources::{Sources, source_of};

/// Where the durable state lives and how the journal is written.
#[derive(Debug, Clone)]
pub struct Storage {
    pub journal_dir: PathBuf,
    pub checkpoint_dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub segment_bytes: u64,
}

/// The state recovered, ready to take events.
#[derive(Debug)]
pub struct Recovered {
    pub aggregator: Aggregator,
    pub journal: Journal,
    /// The Kafka partition positions and campaign sources, as of the journal's end.
    pub sources: Sources,
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

/// Loads the newest valid checkpoint and replays the journal after it.
pub fn recover(
    storage: &Storage,
    settings: AggregatorSettings,
    registered: Vec<String>,
) -> anyhow::Result<Recovered> {
    let started = Instant::now();
    let (checkpoint, rejected) = checkpoint::load_newest(&storage.checkpoint_dir)?;
    let mut report = RecoveryReport {
        checkpoints_rejected: rejected
            .iter()
            .map(|rejected| format!("{:#}", rejected.error))
            .collect(),
        ..RecoveryReport::default()
    };
    for rejected in &rejected {
        // Set aside, not deleted: an operator may want it, and it must no longer count as one of
        // the checkpoints kept (the journal it would let go of is still needed).
        let set_aside = rejected.path.with_extension("ckpt.corrupt");
        let renamed = std::fs::rename(&rejected.path, &set_aside);
        tracing::error!(
            checkpoint = %rejected.path.display(),
            set_aside = %set_aside.display(),
            renamed = renamed.is_ok(),
            error = format!("{:#}", rejected.error),
            "checkpoint unusable; falling back to an older one"
        );
    }
    let (mut aggregator, from, mut sources) = match &checkpoint {
        Some(checkpoint) => (
            Aggregator::restore(settings, registered, checkpoint)
                .context("cannot restore the checkpoint")?,
            checkpoint.journal_position,
            Sources::restore(&checkpoint.kafka_offsets, &checkpoint.direct_campaigns),
        ),
        None => (Aggregator::new(settings, registered), 0, Sources::default()),
    };
    report.checkpoint_position = checkpoint
        .as_ref()
        .map(|checkpoint| checkpoint.journal_position);
    let mut malformed = None;
    let (journal, opened) = Journal::open(
        &storage.journal_dir,
        storage.fsync,
        storage.segment_bytes,
        from,
        |position, record| {
            let partitions = sources.advance(&record.positions);
            for stored in record.events {
                let source = stored.source;
                match Event::try_from(stored) {
                    Ok(event) => {
                        aggregator.apply(&event);
                        sources.note(&event.campaign, source_of(&partitions, source));
                    }
                    Err(error) => {
                        malformed.get_or_insert((position, error));
                    }
                }
            }
        },
    )?;
    if let Some((position, error)) = malformed {
        anyhow::bail!("journal record {position}: {error}");
    }
    report.records_replayed = opened.records_replayed;
    report.events_replayed = opened.events_replayed;
    report.torn_bytes = opened.torn_bytes;
    report.duration = started.elapsed();
    Ok(Recovered {
        aggregator,
        journal,
        sources,
        report,
    })
}

#[cfg(test)]
mod tests;
