//! The writer's checkpoints: when one is due, and taking it without stopping
//! ingestion — a fresh journal segment and a frozen copy of the state on the writer, the
//! encoding and writing on a helper thread (`durable::policy::write_and_prune`).

use super::*;

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

    /// The state as it is now, as the parts of a checkpoint at `position`: where events came
    /// from (the writer's), then the aggregate's frozen copy (`Frozen::parts`).
    pub(super) fn frozen_parts(
        &self,
        position: u64,
    ) -> impl Iterator<Item = Checkpoint> + Send + use<> {
        let sources = Checkpoint {
            direct_campaigns: self.sources.direct_campaigns(),
            ..Checkpoint::default()
        };
        let frozen = self.aggregator.freeze();
        std::iter::once(sources).chain(frozen.parts(position, self.sources.offsets()))
    }

    /// Encodes the state at a fresh segment boundary and writes it, on a helper thread unless
    /// `wait`. A failed checkpoint only delays the removal of journal segments.
    pub(super) fn checkpoint(&mut self, wait: bool) {
        if let Some(previous) = self.checkpointing.take() {
            let _ = previous.join();
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
        // Only the freezing stops ingestion, for milliseconds: the state is encoded and written
        // on the helper thread while the writer goes on.
        let parts = self.frozen_parts(position);
        let offsets = self.sources.offsets();
        let pause = paused.elapsed();
        telemetry::record_checkpoint_pause(pause);
        self.policy.started(Instant::now());
        let shared = self.shared.clone();
        let durable = self.durable.clone();
        let write = move || {
            let started = Instant::now();
            let written = policy::write_and_prune(&durable, position, parts);
            let elapsed = pause + started.elapsed();
            match written {
                Ok(written) => {
                    telemetry::record_checkpoint(elapsed, written.bytes, true);
                    shared.board.written(shared.shard, offsets);
                    tracing::info!(
                        shard = shared.shard,
                        checkpoint = %written.path.display(),
                        bytes = written.bytes,
                        journal_position = position,
                        segments_removed = written.segments_removed,
                        seconds = elapsed.as_secs_f64(),
                        "checkpoint written"
                    );
                }
                Err(error) => {
                    telemetry::record_checkpoint(elapsed, 0, false);
                    tracing::error!(
                        error = %telemetry::chain(error.as_ref()),
                        "checkpoint failed; the journal is kept until one succeeds"
                    );
                }
            }
        };
        if wait {
            write();
        } else {
            match std::thread::Builder::new()
                .name("suivi-checkpoint".to_owned())
                .spawn(write)
            {
                Ok(thread) => self.checkpointing = Some(thread),
                Err(error) => {
                    tracing::error!(error = %telemetry::chain(&error), "cannot start the checkpoint thread")
                }
            }
        }
    }
}
