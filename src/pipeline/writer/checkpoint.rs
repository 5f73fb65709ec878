//! The writer's checkpoints: when one is due, and taking it without stopping
//! ingestion — a fresh journal segment, a frozen copy of the state and the ids remembered since
//! the last checkpoint sealed on the writer; the id run of those ids (`durable::runs`), the
//! encoding and the writing on a helper thread (`durable::policy::write_and_prune`), which
//! answers the runs the checkpoint names, for the aggregator to look its ids up in from then
//! on (`Aggregator::install`).

use std::sync::Arc;

use super::*;
use crate::aggregate::{Frozen, Run, SealedIds, StoredIds, Written};
use crate::durable::runs::{self, Kept};
use crate::proto::storage::KafkaOffset;

/// What a checkpoint written answers the writer: the runs of the checkpoints kept, and the
/// seal whose ids the runs it names now hold, with those runs.
pub(in crate::pipeline) struct Ended {
    pub kept: Kept,
    pub seal: u64,
    pub written: Written,
}

impl WriterState {
    pub(super) fn checkpoint_due(&mut self) -> bool {
        if self
            .checkpointing
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
        {
            return false;
        }
        self.policy.due(Instant::now())
    }

    /// The state as it is now, as the parts of a checkpoint at `position` that holds its ids
    /// (a parked shard): the writer's part, then the aggregate's frozen copy, the ids of its
    /// runs read into it.
    pub(super) fn frozen_parts(
        &self,
        position: u64,
    ) -> std::io::Result<impl Iterator<Item = Checkpoint> + Send + use<>> {
        let frozen = self.aggregator.freeze().read_written()?;
        Ok(
            std::iter::once(sources_part(&self.sources)).chain(frozen.parts(
                position,
                self.sources.offsets(),
                StoredIds::Inline,
            )),
        )
    }

    /// Notes how the checkpoint written on the helper thread ended: the runs it names hold
    /// every id sealed for it, which the aggregator then looks up there; or, when it failed,
    /// the ids it sealed stay in memory and the next checkpoint writes them.
    fn checkpoint_ended(&mut self, ended: Option<Ended>) {
        if let Some(Ended {
            kept,
            seal,
            written,
        }) = ended
        {
            self.id_runs = kept;
            self.aggregator.install(seal, written);
        }
    }

    /// Waits for the checkpoint being written, if any, and notes how it ended: before the
    /// aggregator is changed in a way its runs do not know of (a release, a state restored).
    pub(super) fn settle_checkpoint(&mut self) {
        if let Some(previous) = self.checkpointing.take() {
            let ended = previous.join().unwrap_or(None);
            self.checkpoint_ended(ended);
        }
    }

    /// Takes a checkpoint at a fresh segment boundary, encoded and written on a helper thread
    /// unless `wait`. A failed checkpoint only delays the removal of journal segments.
    pub(super) fn checkpoint(&mut self, wait: bool) {
        self.settle_checkpoint();
        let paused = Instant::now();
        let position = match self.journal.rotate() {
            Ok(position) => position,
            Err(error) => {
                tracing::warn!(error = %telemetry::chain(&error), "cannot start a journal segment; checkpoint postponed");
                telemetry::record_checkpoint(Duration::ZERO, 0, false);
                return;
            }
        };
        // Only the freezing and the sealing stop ingestion, for milliseconds: the rest is done
        // on the helper thread while the writer goes on.
        self.id_generation += 1;
        let sealed = seal(
            &mut self.aggregator,
            &self.sources,
            &self.id_runs,
            self.id_generation,
            position,
        );
        let pause = paused.elapsed();
        telemetry::record_checkpoint_pause(pause);
        self.policy.started(Instant::now());
        let shared = self.shared.clone();
        let durable = self.durable.clone();
        let write = move || -> Option<Ended> {
            let started = Instant::now();
            let offsets = sealed.offsets.clone();
            let written = sealed.write(&durable);
            let elapsed = pause + started.elapsed();
            match written {
                Ok((written, ended, ids_written)) => {
                    telemetry::record_checkpoint(elapsed, written.bytes, true);
                    shared.board.written(shared.shard, offsets);
                    tracing::info!(
                        shard = shared.shard,
                        checkpoint = %written.path.display(),
                        bytes = written.bytes,
                        id_runs = ended.written.runs().len(),
                        id_filter_bytes = ended.written.filter_bytes(),
                        ids_written,
                        id_run_bytes = ids_written * crate::aggregate::ENTRY_BYTES as u64,
                        journal_position = position,
                        segments_removed = written.segments_removed,
                        runs_removed = written.runs_removed,
                        seconds = elapsed.as_secs_f64(),
                        "checkpoint written"
                    );
                    Some(ended)
                }
                Err(error) => {
                    telemetry::record_checkpoint(elapsed, 0, false);
                    tracing::error!(
                        error = %telemetry::chain(error.as_ref()),
                        "checkpoint failed; the journal is kept until one succeeds"
                    );
                    None
                }
            }
        };
        if wait {
            let ended = write();
            self.checkpoint_ended(ended);
        } else {
            match std::thread::Builder::new()
                .name("suivi-checkpoint".to_owned())
                .spawn(write)
            {
                Ok(thread) => self.checkpointing = Some(thread),
                Err(error) => {
                    tracing::error!(error = %telemetry::chain(&error), "cannot start the checkpoint thread");
                    self.checkpoint_ended(None);
                }
            }
        }
    }
}

/// A checkpoint at `position` taken on the writer, to be written by [`Sealed::write`].
pub(in crate::pipeline) struct Sealed {
    position: u64,
    generation: u64,
    ids: SealedIds,
    sources: Checkpoint,
    frozen: Frozen,
    offsets: Vec<KafkaOffset>,
    /// The runs of the checkpoints kept before this one.
    kept: Kept,
}

/// The part of a checkpoint that is the writer's, not the aggregate's: where events came from.
fn sources_part(sources: &Sources) -> Checkpoint {
    Checkpoint {
        direct_campaigns: sources.direct_campaigns(),
        ..Checkpoint::default()
    }
}

/// Takes a checkpoint of generation `generation` at `position`: seals the ids `aggregator`
/// remembered since the last one, and freezes it. `kept` are the runs of the checkpoints kept.
pub(in crate::pipeline) fn seal(
    aggregator: &mut Aggregator,
    sources: &Sources,
    kept: &Kept,
    generation: u64,
    position: u64,
) -> Sealed {
    Sealed {
        position,
        generation,
        ids: aggregator.seal(),
        sources: sources_part(sources),
        frozen: aggregator.freeze(),
        offsets: sources.offsets(),
        kept: kept.clone(),
    }
}

impl Sealed {
    /// Writes the id runs, then the checkpoint naming them, and lets go of what no kept
    /// checkpoint needs. Answers what was written, how it ended for the writer (the runs of the
    /// checkpoints kept now, the newest this one's, and its runs opened) and how many ids were
    /// written in runs.
    pub(in crate::pipeline) fn write(
        self,
        durable: &DurableSettings,
    ) -> anyhow::Result<(policy::Written, Ended, u64)> {
        let Sealed {
            position,
            generation,
            ids,
            sources,
            frozen,
            offsets,
            kept,
        } = self;
        let (written, ids_written) = store_ids(&durable.checkpoint_dir, generation, &ids)?;
        let runs = written.id_runs();
        let parts = std::iter::once(sources).chain(frozen.parts(
            position,
            offsets,
            StoredIds::Runs {
                runs: runs.clone(),
                generation,
            },
        ));
        let (checkpoint, kept) = policy::write_and_prune(durable, position, parts, (kept, runs))?;
        let ended = Ended {
            kept,
            seal: ids.seal,
            written,
        };
        Ok((checkpoint, ended, ids_written))
    }
}

/// Writes the id run of a checkpoint of `generation` into `directory`, and merges the newest
/// runs when they are many (`runs::plan`); or, when some ids of the runs were released, writes
/// them all afresh in one run. Answers the runs that then hold every id, and how many ids were
/// written (the new run's and the merged one's).
fn store_ids(
    directory: &std::path::Path,
    generation: u64,
    ids: &SealedIds,
) -> anyhow::Result<(Written, u64)> {
    if ids.written.has_released() {
        if ids.written.is_empty() && ids.is_empty() {
            return Ok((Written::default(), 0));
        }
        let run = runs::rewrite(directory, generation, &ids.written, ids.in_order())?;
        let entries = run.id_run().entries;
        return Ok((Written::new(vec![run]), entries));
    }
    let mut written = 0;
    let mut runs: Vec<Arc<Run>> = ids.written.runs().to_vec();
    if !ids.is_empty() {
        let entries = ids.in_order();
        let run = runs::write(
            directory,
            (generation, generation),
            entries.len() as u64,
            entries,
        )?;
        written += run.id_run().entries;
        runs.push(run);
    }
    let id_runs: Vec<_> = runs.iter().map(|run| *run.id_run()).collect();
    let merging = runs::plan(&id_runs);
    if merging > 0 {
        let from = runs.len() - merging;
        let merged = runs::merge(directory, &runs[from..])?;
        written += merged.id_run().entries;
        runs.truncate(from);
        runs.push(merged);
    }
    Ok((Written::new(runs), written))
}
