//! The writer thread: recovers the state, then takes submissions from the queue in groups and,
//! for each group, admits its events, appends the admitted ones to the journal as one record
//! (one fsync for the group), applies them, publishes the changes and answers; runs the Kafka
//! control messages (assign, release, checkpoint) between groups; and checkpoints when the
//! policy says so, on a helper thread.

use super::*;
use crate::durable::runs::Kept;
use crate::proto::storage::Checkpoint;

pub(super) mod checkpoint;
mod handover;

/// Runs the writer thread to its end: recovery, then the loop until stopped.
pub(super) fn run(
    settings: PipelineSettings,
    shared: Shared,
    figures: Arc<Figures>,
    room: Arc<Semaphore>,
    receiver: mpsc::Receiver<Message>,
    recovered_sender: oneshot::Sender<anyhow::Result<RecoveryReport>>,
) -> anyhow::Result<()> {
    let durable = settings.durable[shared.shard].clone();
    let recovered = state::recover(
        &durable,
        settings.aggregator.clone(),
        settings.registered.clone(),
    );
    let recovered = match recovered {
        Ok(recovered) => recovered,
        Err(error) => {
            // The error goes to whoever waits for the recovery; the thread just ends.
            let _ = recovered_sender.send(Err(error));
            return Err(anyhow::anyhow!("recovery failed"));
        }
    };
    shared.unregistered.hold(
        recovered.state.aggregator.unregistered_campaigns(),
        shared.shard,
    );
    let mut writer = WriterState {
        room,
        capacity: settings.queue_events,
        aggregator: recovered.state.aggregator,
        journal: recovered.journal,
        sources: recovered.state.sources,
        shared,
        figures,
        durable,
        policy: CheckpointPolicy::new(
            settings.checkpoint_interval,
            settings.checkpoint_journal_bytes,
            Instant::now(),
        ),
        checkpointing: None,
        id_runs: recovered.state.id_runs,
        id_generation: recovered.state.id_generation,
        aggregator_settings: settings.aggregator.clone(),
        registered: settings.registered.clone(),
    };
    writer.publish();
    telemetry::record_recovery(writer.shared.shard, &recovered.report);
    let _ = recovered_sender.send(Ok(recovered.report));
    writer.run(receiver)
}

/// Runs beside the writers: answers their recoveries as one, then waits until all of them end,
/// or one ends with an error.
pub(super) fn supervise(
    mut threads: Vec<JoinHandle<anyhow::Result<()>>>,
    recoveries: Vec<oneshot::Receiver<anyhow::Result<RecoveryReport>>>,
    recovered: oneshot::Sender<anyhow::Result<RecoveryReport>>,
) -> anyhow::Result<()> {
    let mut reports = Vec::with_capacity(recoveries.len());
    let mut failure = None;
    for (shard, recovery) in recoveries.into_iter().enumerate() {
        match recovery.blocking_recv() {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(error)) => {
                failure = Some(error.context(format!("cannot recover shard {shard}")));
                break;
            }
            Err(_gone) => {
                failure = Some(anyhow::anyhow!("the writer of shard {shard} ended"));
                break;
            }
        }
    }
    let _ = recovered.send(match failure {
        Some(error) => Err(error),
        None => Ok(shards::merge_reports(reports)),
    });
    while !threads.is_empty() {
        if let Some(index) = threads.iter().position(JoinHandle::is_finished) {
            let ended = threads.swap_remove(index);
            match ended.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error),
                Err(_panic) => anyhow::bail!("a writer thread panicked"),
            }
        } else {
            std::thread::sleep(SUPERVISE_INTERVAL);
        }
    }
    Ok(())
}

/// How often [`supervise`] looks whether a writer ended.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(20);

struct WriterState {
    /// The queue's room, to report how full it is once a group is answered.
    room: Arc<Semaphore>,
    capacity: usize,
    aggregator: Aggregator,
    journal: Journal,
    sources: Sources,
    /// This shard's number, and what the shards share.
    shared: Shared,
    figures: Arc<Figures>,
    durable: DurableSettings,
    policy: CheckpointPolicy,
    /// The checkpoint being written by its helper thread, if any; it answers how it ended
    /// (the id runs it names), or nothing when it failed.
    checkpointing: Option<JoinHandle<Option<checkpoint::Ended>>>,
    /// The id runs of the checkpoints kept (`checkpoint`).
    id_runs: Kept,
    /// The generation of the last checkpoint taken: each names its new id run by it.
    id_generation: u64,
    /// What a parked state is restored with (shards that are partitions).
    aggregator_settings: AggregatorSettings,
    registered: Vec<String>,
}

impl WriterState {
    fn run(&mut self, mut queue: mpsc::Receiver<Message>) -> anyhow::Result<()> {
        let mut group = Vec::with_capacity(MAX_GROUP_SUBMISSIONS);
        let mut stopping = false;
        while !stopping {
            let mut control = None;
            match queue.blocking_recv() {
                Some(Message::Submit(first)) => group.push(first),
                Some(Message::Tick) => {}
                Some(Message::Stop) | None => stopping = true,
                Some(message) => control = Some(message),
            }
            // A control message is handled after the submissions queued before it, alone.
            while control.is_none() && (group.len() < MAX_GROUP_SUBMISSIONS || stopping) {
                match queue.try_recv() {
                    Ok(Message::Submit(next)) => group.push(next),
                    Ok(Message::Tick) => {}
                    Ok(Message::Stop) => stopping = true,
                    Ok(message) => control = Some(message),
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.commit(&mut group);
                // The answered submissions gave their room back.
                telemetry::record_queue(self.capacity - self.room.available_permits());
            }
            match control {
                Some(Message::Assign {
                    partitions,
                    exclusive,
                    reply,
                }) => {
                    if exclusive {
                        let stale: Vec<Partition> = self
                            .sources
                            .held()
                            .into_iter()
                            .filter(|held| !partitions.contains(held))
                            .collect();
                        if !stale.is_empty() {
                            self.release(&stale);
                        }
                    }
                    if self.shared.sharding == Sharding::Partition {
                        self.unpark(&partitions);
                    }
                    let positions = self.sources.assign(&partitions);
                    self.note_ownership();
                    let _ = reply.send(positions);
                }
                Some(Message::Checkpoint { reply }) => {
                    self.checkpoint(true);
                    let _ = reply.send(());
                }
                Some(Message::Release { partitions, reply }) => {
                    let _ = reply.send(self.release(&partitions));
                }
                _ => {}
            }
            if let Err(error) = self.journal.sync_if_due() {
                tracing::error!(error = %telemetry::chain(&error), "journal sync failed");
            }
            if self.checkpoint_due() {
                self.checkpoint(false);
            }
        }
        self.journal
            .sync()
            .context("cannot sync the journal at shutdown")?;
        self.checkpoint(true);
        Ok(())
    }

    /// Makes a group durable, applies it, publishes it and answers it. A group whose journal
    /// record would be over the journal's limit is committed in halves, one record each.
    fn commit(&mut self, group: &mut Vec<Submission>) {
        self.refuse_out_of_sequence(group);
        if group.is_empty() {
            return;
        }
        let mut admission = Admission::default();
        let decisions: std::io::Result<Vec<Outcomes>> = group
            .iter_mut()
            .map(|submission| {
                submission
                    .events
                    .iter_mut()
                    .map(|event| self.aggregator.admit(event, &mut admission))
                    .collect::<std::io::Result<Outcomes>>()
            })
            .collect::<std::io::Result<_>>();
        let decisions: Vec<Outcomes> = match decisions {
            Ok(decisions) => decisions,
            Err(error) => {
                // Whether an event was seen before cannot be told: nothing is journaled.
                tracing::error!(error = %telemetry::chain(&error), "cannot read a remembered event id; refusing the group");
                for submission in group.drain(..) {
                    let _ = submission.reply.send(Err(Refusal::StorageUnwritable));
                }
                return;
            }
        };
        let (record, admitted) = journal_record(group, &decisions);
        if record.events.is_empty() && record.positions.is_empty() {
            return self.answer(group, decisions);
        }
        let refusal = match self.append(&record) {
            Ok(()) => None,
            Err(NotAppended::TooLarge { .. }) if group.len() > 1 => {
                // Nothing was written nor applied: commit each half, admitted again, the second
                // after the first.
                let mut second = group.split_off(group.len() / 2);
                self.commit(group);
                self.commit(&mut second);
                return;
            }
            Err(NotAppended::TooLarge { bytes }) => {
                // One submission over the record limit: configuration bounds batches and the
                // queue far below it, so this is a fault to see in the logs.
                tracing::error!(
                    bytes,
                    "a single submission is over the journal's record limit; refusing it"
                );
                telemetry::record_journal_failure(false);
                Some(Refusal::StorageUnwritable)
            }
            Err(NotAppended::Refused(refusal)) => Some(refusal),
        };
        if let Some(refusal) = refusal {
            for submission in group.drain(..) {
                let _ = submission.reply.send(Err(refusal));
            }
            return;
        }
        telemetry::record_events_redirected_to_unregistered(admission.redirected);
        let partitions = self.sources.advance(&record.positions);
        for (submission, event, source) in admitted {
            let event = &group[submission].events[event];
            // Admission said accepted, and applying in the same order agrees: admission kept
            // a slot for every campaign it let through, and looked every id up already.
            if let Err(error) = self.aggregator.apply_admitted(event) {
                tracing::error!(error = %telemetry::chain(&error), "an admitted event was not applied");
            }
            self.note_source(&event.campaign, source_of(&partitions, source));
        }
        self.answer(group, decisions);
    }

    /// Publishes what the group changed, then answers each of its submissions.
    fn answer(&mut self, group: &mut Vec<Submission>, decisions: Vec<Outcomes>) {
        self.publish();
        for (submission, outcomes) in group.drain(..).zip(decisions) {
            // A client that went away no longer needs its answer; its events are counted.
            let _ = submission.reply.send(Ok(outcomes));
        }
    }

    /// Appends `record` to the journal (durable under `fsync = "always"`). A failure is logged
    /// and counted, except a record too large, which nothing was written of.
    fn append(&mut self, record: &JournalRecord) -> Result<(), NotAppended> {
        match self.journal.append(record) {
            Ok(appended) => {
                self.policy.appended(appended.bytes);
                telemetry::record_journal_append(appended.bytes, appended.fsync);
                Ok(())
            }
            Err(AppendError::TooLarge { bytes }) => Err(NotAppended::TooLarge { bytes }),
            Err(error) => {
                let refusal = match error {
                    AppendError::DiskFull(_) => Refusal::DiskFull,
                    _ => Refusal::StorageUnwritable,
                };
                tracing::error!(
                    error = %telemetry::chain(&error),
                    "journal append failed"
                );
                telemetry::record_journal_failure(refusal == Refusal::DiskFull);
                Err(NotAppended::Refused(refusal))
            }
        }
    }

    /// Answers, and takes out of the group, every Kafka batch that does not continue from its
    /// partitions' positions (counting the batches before it in the group).
    fn refuse_out_of_sequence(&mut self, group: &mut Vec<Submission>) {
        if group.iter().all(|submission| submission.kafka.is_none()) {
            return;
        }
        let mut ahead: Vec<(Partition, i64)> = Vec::new();
        let mut kept = Vec::with_capacity(group.len());
        for submission in group.drain(..) {
            let Some(kafka) = &submission.kafka else {
                kept.push(submission);
                continue;
            };
            let in_sequence = kafka.ranges.iter().all(|range| {
                match ahead
                    .iter()
                    .find(|(partition, _)| *partition == range.partition)
                {
                    Some((_, position)) => sources::continues(*position, range.from),
                    None => self.sources.check(std::slice::from_ref(range)).is_ok(),
                }
            });
            if in_sequence {
                for range in &kafka.ranges {
                    match ahead
                        .iter_mut()
                        .find(|(partition, _)| *partition == range.partition)
                    {
                        Some((_, position)) => *position = sources::advanced(*position, range.to),
                        None => ahead.push((range.partition.clone(), range.to)),
                    }
                }
                kept.push(submission);
            } else {
                let _ = submission.reply.send(Err(Refusal::OutOfSequence));
            }
        }
        *group = kept;
    }

    /// Notes the source of a counted event, and says so when a campaign gains a second source.
    fn note_source(&mut self, campaign: &str, partition: Option<&Partition>) {
        if self.sources.note(campaign, partition) {
            telemetry::record_campaign_with_several_sources();
            tracing::warn!(
                campaign,
                "campaign fed by more than one source (Kafka partitions, or Kafka and gRPC/HTTP): \
                 it stays on this instance when its partition is reassigned; key Kafka messages \
                 by campaign"
            );
        }
    }

    /// Lets Kafka partitions go: releases the campaigns they alone fed, publishes, and
    /// checkpoints so that the release is durable before another instance counts them.
    fn release(&mut self, partitions: &[Partition]) -> Release {
        if partitions.is_empty() {
            // A shard that is a partition is told of revocations of other shards' partitions.
            return Release::default();
        }
        // The journal is the whole history: the release is a record, so that a recovery from an
        // older checkpoint forgets these campaigns again. Should it fail, the campaigns are still
        // let go (another instance counts them now); a recovery before the next checkpoint then
        // brings them back, and the first assignment after it releases them again.
        let record = JournalRecord {
            released: partitions
                .iter()
                .map(|partition| KafkaOffset {
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                    ..KafkaOffset::default()
                })
                .collect(),
            ..JournalRecord::default()
        };
        // The checkpoint being written does not know of the release: it ends first.
        self.settle_checkpoint();
        if self.shared.sharding == Sharding::Partition && !self.sources.held().is_empty() {
            self.park();
        }
        let _ = self.append(&record);
        let (release, released) =
            sources::release(&mut self.sources, &mut self.aggregator, partitions);
        self.shared
            .unregistered
            .release(&released, self.shared.shard);
        if self.shared.sharding == Sharding::Learner {
            self.figures
                .remove(self.shared.shard, &released, Utc::now());
        }
        // A partition's shard is dropped whole; its figures stay as its last partials said,
        // until its new owner's partials come (`Figures::publish_at`).
        telemetry::record_campaigns_released(released.len());
        self.publish();
        self.note_ownership();
        tracing::info!(
            partitions = ?partitions,
            released = released.len(),
            kept = ?release.kept,
            "Kafka partitions released"
        );
        self.checkpoint(true);
        release
    }

    fn publish(&mut self) {
        let changes = self.aggregator.drain_changes();
        let now = Utc::now();
        match &self.shared.outbox {
            None => self.figures.publish(self.shared.shard, changes, now),
            Some(outbox) => {
                // Shards that are partitions: their partials are dated by their position, and
                // published to every instance.
                let position = self.sources.position();
                outbox.put(self.shared.shard, position, &changes, now);
                self.figures.publish_at(
                    self.shared.shard,
                    position,
                    changes
                        .into_iter()
                        .map(|change| (change.campaign, Some(change.counts), change.days)),
                    now,
                );
            }
        }
        telemetry::record_holdings(
            self.shared.shard,
            self.aggregator.holdings(),
            self.shared.unregistered.held(),
            (
                self.aggregator.written().len(),
                self.aggregator.written().filter_bytes(),
            ),
        );
    }
}

/// Why a journal record was not appended.
#[derive(Debug, Clone, Copy)]
enum NotAppended {
    /// Over the journal's record limit; nothing was written.
    TooLarge { bytes: usize },
    /// The journal cannot be written now; the failure was logged and counted.
    Refused(Refusal),
}

/// The journal record of a group given its admission `decisions`: the accepted events, each with
/// its source (0 for gRPC/HTTP, else its partition's index in the record's positions, plus one),
/// and the position of each partition the group read once it is counted. Also answers where each
/// accepted event is in the group (submission, event, source), in order.
fn journal_record(
    group: &[Submission],
    decisions: &[Outcomes],
) -> (JournalRecord, Vec<(usize, usize, u32)>) {
    let mut positions: Vec<KafkaOffset> = Vec::new();
    let mut admitted = Vec::new();
    for (submission_index, (submission, outcomes)) in group.iter().zip(decisions).enumerate() {
        // Each range's index in `positions`, plus one (0 is gRPC/HTTP).
        let mut range_sources = Vec::new();
        if let Some(kafka) = &submission.kafka {
            for range in &kafka.ranges {
                let found = positions.iter().position(|position| {
                    position.partition == range.partition.partition
                        && position.topic == range.partition.topic
                });
                let index = found.unwrap_or_else(|| {
                    positions.push(KafkaOffset {
                        topic: range.partition.topic.clone(),
                        partition: range.partition.partition,
                        ..KafkaOffset::default()
                    });
                    positions.len() - 1
                });
                positions[index].next_offset = if found.is_some() {
                    sources::advanced(positions[index].next_offset, range.to)
                } else {
                    range.to
                };
                range_sources.push(u32::try_from(index + 1).unwrap_or(u32::MAX));
            }
        }
        for (event_index, outcome) in outcomes.iter().enumerate() {
            if *outcome == Applied::Accepted {
                let source = submission.kafka.as_ref().map_or(0, |kafka| {
                    kafka
                        .sources
                        .get(event_index)
                        .and_then(|range| range_sources.get(*range as usize))
                        .copied()
                        .unwrap_or(0)
                });
                admitted.push((submission_index, event_index, source));
            }
        }
    }
    // Each sender once, in the order first met; an event names its sender by index plus one.
    let mut senders: Vec<String> = Vec::new();
    let sender_of: Vec<u32> = group
        .iter()
        .map(|submission| {
            submission.sender.as_deref().map_or(0, |sender| {
                let index = senders
                    .iter()
                    .position(|known| known == sender)
                    .unwrap_or_else(|| {
                        senders.push(sender.to_owned());
                        senders.len() - 1
                    });
                u32::try_from(index + 1).unwrap_or(u32::MAX)
            })
        })
        .collect();
    let events: Vec<StoredEvent> = admitted
        .iter()
        .map(|(submission, event, source)| StoredEvent {
            source: *source,
            sender: sender_of[*submission],
            ..StoredEvent::from(&group[*submission].events[*event])
        })
        .collect();
    let record = JournalRecord {
        event_identity: if events.is_empty() {
            EventIdentity::Unspecified
        } else {
            EventIdentity::SourceAndEventId
        }
        .into(),
        events,
        positions,
        released: Vec::new(),
        senders,
    };
    (record, admitted)
}
