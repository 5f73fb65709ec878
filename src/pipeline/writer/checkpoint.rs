//! The writer's checkpoints: when one is due, and taking it without stopping
//! ingestion — a fresh journal segment, a frozen copy of the state and the ids remembered since
//! the last checkpoint sealed on the writer; the id run of those ids (`durable::runs`), the
//! encoding and the writing on a helper thread (`durable::policy::write_and_prune`), which
//! answers the runs the checkpoint names.

use super::*;
use crate::aggregate::{Frozen, Recent, StoredIds};
use crate::durable::runs::{self, Kept};
use crate::proto::storage::{IdRun, KafkaOffset};

/// What a checkpoint writes of the remembered ids.
enum Ids {
    /// The runs of the checkpoint before hold every id but `recent` (in no order), which go
    /// in a run of their own.
    New { runs: Vec<IdRun>, recent: Recent },
    /// Every id, in one run: the runs do not hold them all (a campaign released, a checkpoint
    /// that failed, a state restored from a checkpoint that held its ids in itself).
    All,
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
    /// (a parked shard): the writer's part, then the aggregate's frozen copy.
    pub(super) fn frozen_parts(
        &self,
        position: u64,
    ) -> impl Iterator<Item = Checkpoint> + Send + use<> {
        std::iter::once(sources_part(&self.sources)).chain(self.aggregator.freeze().parts(
            position,
            self.sources.offsets(),
            StoredIds::Inline,
        ))
    }

    /// Notes how the checkpoint written on the helper thread ended: the runs it names hold
    /// every id sealed so far, or, when it failed, the ids it sealed are in no run and the next
    /// checkpoint writes them all.
    fn checkpoint_ended(&mut self, kept: Option<Kept>) {
        match kept {
            Some(kept) => {
                self.id_runs = kept;
                self.ids_in_runs = true;
            }
            None => self.ids_in_runs = false,
        }
    }

    /// Takes a checkpoint at a fresh segment boundary, encoded and written on a helper thread
    /// unless `wait`. A failed checkpoint only delays the removal of journal segments.
    pub(super) fn checkpoint(&mut self, wait: bool) {
        if let Some(previous) = self.checkpointing.take() {
            let kept = previous.join().unwrap_or(None);
            self.checkpoint_ended(kept);
        }
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
            (&self.id_runs, self.ids_in_runs),
            self.id_generation,
            position,
        );
        let pause = paused.elapsed();
        telemetry::record_checkpoint_pause(pause);
        self.policy.started(Instant::now());
        let shared = self.shared.clone();
        let durable = self.durable.clone();
        let write = move || -> Option<Kept> {
            let started = Instant::now();
            let offsets = sealed.offsets.clone();
            let written = sealed.write(&durable);
            let elapsed = pause + started.elapsed();
            match written {
                Ok((written, kept, ids_written)) => {
                    telemetry::record_checkpoint(elapsed, written.bytes, true);
                    shared.board.written(shared.shard, offsets);
                    tracing::info!(
                        shard = shared.shard,
                        checkpoint = %written.path.display(),
                        bytes = written.bytes,
                        id_runs = kept.newest().len(),
                        ids_written,
                        id_run_bytes = ids_written * runs::ENTRY_BYTES as u64,
                        journal_position = position,
                        segments_removed = written.segments_removed,
                        runs_removed = written.runs_removed,
                        seconds = elapsed.as_secs_f64(),
                        "checkpoint written"
                    );
                    Some(kept)
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
            let kept = write();
            self.checkpoint_ended(kept);
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
    ids: Ids,
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
/// remembered since the last one, and freezes it. `runs` are those of the checkpoints kept,
/// and whether the newest's hold every id remembered then.
pub(in crate::pipeline) fn seal(
    aggregator: &mut Aggregator,
    sources: &Sources,
    runs: (&Kept, bool),
    generation: u64,
    position: u64,
) -> Sealed {
    let (kept, ids_in_runs) = runs;
    let ids = match aggregator.seal() {
        Some(recent) if ids_in_runs => Ids::New {
            runs: kept.newest().to_vec(),
            recent,
        },
        _ => Ids::All,
    };
    Sealed {
        position,
        generation,
        ids,
        sources: sources_part(sources),
        frozen: aggregator.freeze(),
        offsets: sources.offsets(),
        kept: kept.clone(),
    }
}

impl Sealed {
    /// Writes the id runs, then the checkpoint naming them, and lets go of what no kept
    /// checkpoint needs. Answers what was written, the runs of the checkpoints kept now (the
    /// newest this one's) and how many ids were written in runs.
    pub(in crate::pipeline) fn write(
        self,
        durable: &DurableSettings,
    ) -> anyhow::Result<(policy::Written, Kept, u64)> {
        let Sealed {
            position,
            generation,
            ids,
            sources,
            frozen,
            offsets,
            kept,
        } = self;
        let (runs, ids_written) = store_ids(&durable.checkpoint_dir, generation, ids, &frozen)?;
        let parts = std::iter::once(sources).chain(frozen.parts(
            position,
            offsets,
            StoredIds::Runs {
                runs: runs.clone(),
                generation,
            },
        ));
        let (written, kept) = policy::write_and_prune(durable, position, parts, (kept, runs))?;
        Ok((written, kept, ids_written))
    }
}

/// Writes the id run of a checkpoint of `generation` into `directory`, and merges the newest
/// runs when they are many (`runs::plan`); answers the runs that then hold every id, and how
/// many ids were written (the new run's and the merged one's).
fn store_ids(
    directory: &std::path::Path,
    generation: u64,
    ids: Ids,
    frozen: &Frozen,
) -> anyhow::Result<(Vec<IdRun>, u64)> {
    let mut written = 0;
    let mut runs = match ids {
        Ids::New { mut runs, recent } => {
            if !recent.is_empty() {
                let run = runs::write(
                    directory,
                    generation,
                    generation,
                    runs::in_order(recent.entries()),
                )?;
                written += run.entries;
                runs.push(run);
            }
            runs
        }
        Ids::All => {
            let mut all = frozen.ids().peekable();
            if all.peek().is_none() {
                Vec::new()
            } else {
                let run = runs::write(directory, 0, generation, all)?;
                written += run.entries;
                vec![run]
            }
        }
    };
    let merging = runs::plan(&runs);
    if merging > 0 {
        let from = runs.len() - merging;
        let merged = runs::merge(directory, &runs[from..])?;
        written += merged.entries;
        runs.truncate(from);
        runs.push(merged);
    }
    Ok((runs, written))
}
