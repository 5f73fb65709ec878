//! Recovery at start-up: load the newest valid checkpoint (falling back to an older one when the
//! newest is unusable), then replay the journal records after it, and hand back the aggregator
//! and the open journal. Nothing is served as ready before this returns.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::aggregate::{Aggregator, AggregatorSettings, Applied};
use crate::durable::checkpoint;
use crate::durable::journal::{FsyncPolicy, Journal};
use crate::event::Event;
use crate::proto::storage::{EventIdentity, JournalRecord};
use crate::sources::{self, Partition, Sources, source_of};

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
    storage: &DurableSettings,
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
            if let Err(error) = replay(&mut aggregator, &mut sources, record) {
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
        aggregator,
        journal,
        sources,
        report,
    })
}

/// Replays one journal record exactly as the writer committed it: its releases, then its
/// partition positions and events. Every event is counted where it was counted live: admission
/// was decided before the record was written, so no limit of this start is consulted. Says why
/// when the record cannot be replayed (a malformed event, ids of an older suivi, or no campaign
/// slot left under a grown registry); recovery then stops rather than lose acknowledged events.
fn replay(
    aggregator: &mut Aggregator,
    sources: &mut Sources,
    record: JournalRecord,
) -> Result<(), String> {
    if !record.events.is_empty()
        && record.event_identity != i32::from(EventIdentity::SourceAndEventId)
    {
        return Err(
            "it was written by an older suivi, which identified events by event_id \
                    alone, not by (source, event_id); rebuild the state from an empty data_dir"
                .to_owned(),
        );
    }
    if !record.released.is_empty() {
        let partitions: Vec<Partition> = record.released.iter().map(Partition::from).collect();
        sources::release(sources, aggregator, &partitions);
    }
    let partitions = sources.advance(&record.positions);
    for stored in record.events {
        let source = stored.source;
        let event = Event::try_from(stored).map_err(|error| error.to_string())?;
        if let Applied::Rejected(reason) = aggregator.apply(&event) {
            return Err(reason.to_string());
        }
        sources.note(&event.campaign, source_of(&partitions, source));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
