//! The writer's state and how a journal record applies to it: the [`Aggregator`] and the
//! [`Sources`] beside it (Kafka partition positions, and which source fed which campaign). The
//! writer commits a group through the same steps replay takes here, in the same order: releases,
//! then partition positions, then events, each counted where admission put it. Admission was
//! decided before the record was written, so replay consults no limit of this start, and the
//! state recovered is the state the writer had.

use crate::aggregate::{Aggregator, AggregatorSettings, WARM_EVENTS};
use crate::durable::checkpoint::Loaded;
use crate::durable::runs::Kept;
use crate::durable::{self, DurableSettings, Recovered};
use crate::event::Event;
use crate::proto::storage::{EventIdentity, JournalRecord};

use super::sources::{self, Partition, Sources, source_of};

/// What the writer holds besides the journal.
#[derive(Debug)]
pub struct State {
    pub aggregator: Aggregator,
    /// The Kafka partition positions and campaign sources.
    pub sources: Sources,
    /// The id runs of the checkpoints kept, as far as known (`durable::runs`).
    pub id_runs: Kept,
    /// The generation of the newest of those runs.
    pub id_generation: u64,
}

impl State {
    /// The state of `checkpoint`, or the empty state (holding the `registered` campaigns) when
    /// there is none.
    pub fn restore(
        settings: AggregatorSettings,
        registered: Vec<String>,
        checkpoint: Option<&Loaded>,
    ) -> anyhow::Result<State> {
        Ok(match checkpoint {
            Some(Loaded {
                checkpoint,
                runs,
                written,
            }) => State {
                aggregator: Aggregator::restore(
                    settings,
                    registered,
                    checkpoint,
                    runs,
                    written.clone(),
                )?,
                sources: Sources::restore(&checkpoint.kafka_offsets, &checkpoint.direct_campaigns),
                id_runs: Kept::restored(checkpoint.journal_position, checkpoint.id_runs.clone()),
                id_generation: checkpoint.id_generation,
            },
            None => State {
                aggregator: Aggregator::new(settings, registered),
                sources: Sources::default(),
                id_runs: Kept::none(),
                id_generation: 0,
            },
        })
    }

    /// Applies one journal record exactly as the writer committed it: its releases, then its
    /// partition positions and events. Says why when the record cannot be replayed (a malformed
    /// event, ids of an older suivi, or no campaign slot left under a grown registry); recovery
    /// then stops rather than lose acknowledged events.
    pub fn replay(&mut self, record: JournalRecord) -> Result<(), String> {
        if !record.events.is_empty()
            && record.event_identity != i32::from(EventIdentity::SourceAndEventId)
        {
            return Err(
                "it was written by an older suivi, which identified events by event_id alone, \
                 not by (source, event_id); rebuild the state from an empty data_dir"
                    .to_owned(),
            );
        }
        if !record.released.is_empty() {
            let partitions: Vec<Partition> = record.released.iter().map(Partition::from).collect();
            sources::release(&mut self.sources, &mut self.aggregator, &partitions);
        }
        let partitions = self.sources.advance(&record.positions);
        let mut events = Vec::with_capacity(record.events.len());
        for stored in record.events {
            let source = stored.source;
            events.push((
                Event::try_from(stored).map_err(|error| error.to_string())?,
                source,
            ));
        }
        for ahead in events.chunks(WARM_EVENTS) {
            self.aggregator.warm(ahead.iter().map(|(event, _)| event));
            for (event, source) in ahead {
                self.aggregator
                    .apply(event)
                    .map_err(|error| error.to_string())?;
                self.sources
                    .note(&event.campaign, source_of(&partitions, *source));
            }
        }
        Ok(())
    }
}

/// Recovers the writer's state from `durable`: the newest valid checkpoint, then every journal
/// record after it.
pub fn recover(
    durable: &DurableSettings,
    settings: AggregatorSettings,
    registered: Vec<String>,
) -> anyhow::Result<Recovered<State>> {
    durable::recover(
        durable,
        |checkpoint| State::restore(settings, registered, checkpoint),
        State::replay,
    )
}

#[cfg(test)]
mod tests;
