//! A shard that is a Kafka partition (`forward_to_kafka`) across handovers: parked when its
//! partition goes, restored when it comes back to this instance (product.md §6, handover),
//! and whether its partitions are here told to the outbox of partials.

use super::*;

impl WriterState {
    /// Where a shard that is a partition keeps its state while the partition is elsewhere.
    pub(super) fn parked_dir(&self) -> std::path::PathBuf {
        self.durable.checkpoint_dir.with_file_name("parked")
    }

    /// Keeps the shard's state as it is, before its partitions go: should they come back here,
    /// it is restored and their reading resumes from there instead of from their beginning
    /// (product.md §6, handover). Without it they are rebuilt: nothing is lost either way.
    pub(super) fn park(&self) {
        let parked = self
            .frozen_parts(0)
            .map_err(anyhow::Error::from)
            .and_then(|parts| {
                crate::durable::checkpoint::write_parts(&self.parked_dir(), 0, parts)
            });
        match parked {
            Ok((path, bytes)) => tracing::info!(
                shard = self.shared.shard,
                parked = %path.display(),
                bytes,
                "shard parked with its partitions' positions"
            ),
            Err(error) => tracing::warn!(
                error = %telemetry::chain(error.as_ref()),
                "cannot park the shard; should its partitions come back, they are read from their beginning"
            ),
        }
    }

    /// When `partitions` come to a shard that holds nothing, restores the state parked when
    /// they last went from here, if it holds exactly these partitions, and checkpoints it at
    /// once so that a recovery starts from it.
    pub(super) fn unpark(&mut self, partitions: &[Partition]) {
        if partitions.is_empty() || !self.sources.held().is_empty() {
            return;
        }
        let path = self.parked_dir().join(format!("{:020}.ckpt", 0));
        if !path.exists() {
            return;
        }
        let parked = match crate::durable::checkpoint::read(&path) {
            Ok(parked) => parked,
            Err(error) => {
                tracing::warn!(error = %telemetry::chain(error.as_ref()), "a parked shard cannot be read; its partitions are read from their beginning");
                return;
            }
        };
        let mut held: Vec<Partition> = parked.kafka_offsets.iter().map(Partition::from).collect();
        let mut wanted = partitions.to_vec();
        held.sort_unstable();
        wanted.sort_unstable();
        if held != wanted {
            return;
        }
        match state::State::restore(
            self.aggregator_settings.clone(),
            self.registered.clone(),
            Some(&crate::durable::checkpoint::Loaded {
                checkpoint: parked,
                ..Default::default()
            }),
        ) {
            Ok(restored) => {
                // The checkpoint being written is of the state replaced.
                self.settle_checkpoint();
                self.aggregator = restored.aggregator;
                self.sources = restored.sources;
                // A parked state holds its ids: the checkpoint taken next writes them in a run.
                self.shared
                    .unregistered
                    .hold(self.aggregator.unregistered_campaigns(), self.shared.shard);
                // Its changes are older than the figures shown: nothing to publish.
                let _ = self.aggregator.drain_changes();
                self.checkpoint(true);
                telemetry::record_shard_restored();
                tracing::info!(
                    shard = self.shared.shard,
                    position = self.sources.position(),
                    "shard restored from its parked state; its partitions resume from there"
                );
            }
            Err(error) => tracing::warn!(
                error = %telemetry::chain(error.as_ref()),
                "a parked shard cannot be restored; its partitions are read from their beginning"
            ),
        }
    }

    /// Tells the outbox whether this shard's partitions are assigned here.
    pub(super) fn note_ownership(&self) {
        if let Some(outbox) = &self.shared.outbox {
            outbox.own(
                self.shared.shard,
                !self.sources.held().is_empty(),
                self.sources.position(),
            );
        }
    }
}
