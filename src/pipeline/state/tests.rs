//! Tests of recovery, for invariant 2 of the product design (§3): an acknowledged event is never
//! lost. The property test drives the journal and checkpoints the way the pipeline's writer does
//! (admit, append, apply; checkpoint at a fresh segment; prune), crashes at random points (the
//! process's state is dropped, what it wrote stays), leaves what a crash in the middle of an
//! append or of a checkpoint leaves, and checks that every recovery gives exactly the state of
//! one aggregator that applied the same events without ever stopping, even when the newest
//! checkpoint then proves corrupt.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message;
use tempfile::TempDir;

use super::*;
use crate::aggregate::{Admission, Applied};
use crate::durable::journal::{self, FsyncPolicy};
use crate::durable::{DurableSettings, Recovered, RecoveryReport, checkpoint};
use crate::event::{EventKind, EventParser, RawEvent, RawKind, RawTime, TOTALS_CAMPAIGN};
use crate::proto::storage::{EventIdentity, JournalRecord, KafkaOffset, StoredEvent};

/// A short course, so that histories of a few dozen events complete it.
const CHAPTER_COUNT: u8 = 3;
/// The campaign texts of the generated events; the empty one is counted as `direct`.
const CAMPAIGNS: [&str; 4] = ["gendarmerie", "la-poste", "", "pole-emploi"];
/// One campaign is registered at first; with room for one unregistered campaign, events of the
/// second one seen count under `unregistered`, so that redirections take part in the comparison.
const REGISTERED: &str = "gendarmerie";
const MAX_UNREGISTERED: usize = 1;
const SOURCES: [&str; 2] = ["openclassrooms", "gendform3"];
/// Kafka partitions events may come from (besides gRPC/HTTP), so that releases take part.
const PARTITIONS: i32 = 2;
const LEARNERS: u8 = 5;
const VISITORS: u8 = 4;
/// Event ids are drawn from a small pool, so that some ids are reused with another content.
const EVENT_IDS: u8 = 30;
/// Events fall within this many days, at any minute, so that the time zone moves some of them
/// to the next day.
const DAYS: i64 = 5;

fn settings() -> AggregatorSettings {
    Config::first().settings()
}

fn registered() -> Vec<String> {
    Config::first().registered
}

/// The configuration of one run of the process: a restart may change it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    registered: Vec<String>,
    max_unregistered: usize,
}

impl Config {
    fn first() -> Config {
        Config {
            registered: vec![REGISTERED.to_owned()],
            max_unregistered: MAX_UNREGISTERED,
        }
    }

    /// A partner added to the registry and no room left for unregistered campaigns: fewer
    /// campaigns have room than had it when the journal was written.
    fn narrowed() -> Config {
        Config {
            registered: vec![REGISTERED.to_owned(), "pole-emploi".to_owned()],
            max_unregistered: 0,
        }
    }

    fn settings(&self) -> AggregatorSettings {
        AggregatorSettings {
            time_zone: chrono_tz::Europe::Paris,
            chapter_count: CHAPTER_COUNT,
            max_unregistered_campaigns: self.max_unregistered,
        }
    }
}

/// Durable state in `directory`, with segments small enough that a few records fill one, so
/// that histories span several segments and pruning removes some.
fn storage(directory: &Path) -> DurableSettings {
    DurableSettings {
        journal_dir: directory.join("journal"),
        checkpoint_dir: directory.join("checkpoints"),
        fsync: FsyncPolicy::Always,
        segment_bytes: 400,
        max_record_bytes: journal::MAX_RECORD_BYTES,
    }
}

/// A fresh directory for one test case. On /dev/shm when there is one: a case syncs files and
/// directories dozens of times, which costs milliseconds each on a disk and nothing in memory,
/// and syncing changes nothing these tests look at (their crashes drop the process's state, not
/// the page cache).
fn scratch_directory() -> TempDir {
    let shared_memory = Path::new("/dev/shm");
    if shared_memory.is_dir() {
        TempDir::new_in(shared_memory)
    } else {
        TempDir::new()
    }
    .expect("a temporary directory")
}

/// One event of a generated history, before parsing.
#[derive(Debug, Clone)]
struct EventSpec {
    id: u8,
    kind: EventKind,
    chapter: u8,
    campaign: usize,
    source: usize,
    learner: u8,
    visitor: Option<u8>,
    minutes: i64,
    /// The Kafka partition it was read from; `None` for gRPC/HTTP.
    partition: Option<i32>,
}

fn event_spec() -> impl Strategy<Value = EventSpec> {
    (
        0..EVENT_IDS,
        proptest::sample::select(EventKind::ALL.to_vec()),
        1..=CHAPTER_COUNT,
        0..CAMPAIGNS.len(),
        0..SOURCES.len(),
        0..LEARNERS,
        proptest::option::of(0..VISITORS),
        0..DAYS * 24 * 60,
        proptest::option::of(0..PARTITIONS),
    )
        .prop_map(
            |(id, kind, chapter, campaign, source, learner, visitor, minutes, partition)| {
                EventSpec {
                    id,
                    kind,
                    chapter,
                    campaign,
                    source,
                    learner,
                    visitor,
                    minutes,
                    partition,
                }
            },
        )
}

/// Parses `spec` with the real parser, so that learners are pseudonymised and contents
/// fingerprinted as in the service.
fn parse(parser: &EventParser, spec: &EventSpec) -> Event {
    let first_day = DateTime::parse_from_rfc3339("2021-01-04T00:00:00Z")
        .expect("a valid instant")
        .to_utc();
    let event_id = format!("event-{}", spec.id);
    let is_click = spec.kind == EventKind::LinkClicked;
    let learner_id = if is_click {
        String::new()
    } else {
        format!("learner-{}", spec.learner)
    };
    let visitor_id = match spec.visitor {
        Some(visitor) if is_click => format!("visitor-{visitor}"),
        _ => String::new(),
    };
    let raw = RawEvent {
        event_id: &event_id,
        kind: RawKind::Known(spec.kind),
        campaign: CAMPAIGNS[spec.campaign],
        source: SOURCES[spec.source],
        learner_id: &learner_id,
        visitor_id: &visitor_id,
        occurred_at: RawTime::At(first_day + TimeDelta::minutes(spec.minutes)),
        chapter: (spec.kind == EventKind::ChapterCompleted).then_some(i64::from(spec.chapter)),
    };
    parser
        .parse(&raw, first_day + TimeDelta::days(DAYS + 1))
        .expect("generated events are valid")
}

/// What happens after a group of events is committed.
#[derive(Debug, Clone)]
enum AfterGroup {
    Continue,
    Checkpoint,
    /// The partition is taken away: the campaigns only it fed are released.
    Release(i32),
    /// The process dies; it restarts and recovers, with the narrowed configuration when `true`.
    Crash(bool),
    /// The process dies while appending a record that was never acknowledged: these bytes of
    /// it reached the end of the journal.
    CrashDuringAppend(Vec<u8>),
    /// The process dies while writing a checkpoint: the journal was rotated for it, and part of
    /// it reached the temporary file that is renamed into place once complete.
    CrashDuringCheckpoint,
}

fn after_group() -> impl Strategy<Value = AfterGroup> {
    prop_oneof![
        4 => Just(AfterGroup::Continue),
        2 => Just(AfterGroup::Checkpoint),
        1 => (0..PARTITIONS).prop_map(AfterGroup::Release),
        1 => any::<bool>().prop_map(AfterGroup::Crash),
        1 => vec(any::<u8>(), 1..40).prop_map(AfterGroup::CrashDuringAppend),
        1 => Just(AfterGroup::CrashDuringCheckpoint),
    ]
}

fn partition(number: i32) -> Partition {
    Partition {
        topic: "learner-events".to_owned(),
        partition: number,
    }
}

/// What the writer did, in order: the history an aggregator that never stopped is fed.
#[derive(Debug, Clone)]
enum Done {
    /// Partitions read up to these positions (by a group, counted or not).
    Read(Vec<KafkaOffset>),
    /// An event counted, as admitted (under `unregistered` when it had no room), and the
    /// partition it came from.
    Counted(Event, Option<i32>),
    Released(i32),
}

/// The state of an aggregator that never stopped, started with `config` and fed `history`: the
/// same operations the writer performs, without any journal, checkpoint or restart.
fn never_stopped(config: &Config, history: &[Done]) -> (Aggregator, Sources) {
    let mut aggregator = Aggregator::new(config.settings(), config.registered.clone());
    let mut sources = Sources::default();
    for done in history {
        match done {
            Done::Read(positions) => {
                sources.advance(positions);
            }
            Done::Counted(event, from) => {
                assert_eq!(
                    aggregator.apply(event).expect("a campaign slot"),
                    Applied::Accepted,
                    "{event:?}"
                );
                sources.note(&event.campaign, from.map(partition).as_ref());
            }
            Done::Released(number) => {
                sources::release(&mut sources, &mut aggregator, &[partition(*number)]);
            }
        }
    }
    (aggregator, sources)
}

/// The process that keeps its state durable, and what its recoveries must find.
struct Process {
    storage: DurableSettings,
    config: Config,
    recovered: Recovered<State>,
    /// Positions of the checkpoints written, oldest first, each once.
    checkpoints: Vec<u64>,
    /// The number of events of each record appended, by position.
    record_events: Vec<u64>,
    /// The next offset of each partition.
    next_offsets: [i64; PARTITIONS as usize],
    history: Vec<Done>,
}

impl Process {
    fn start(storage: DurableSettings) -> Process {
        let config = Config::first();
        let recovered = recover(&storage, config.settings(), config.registered.clone())
            .expect("a new storage recovers");
        Process {
            storage,
            config,
            recovered,
            checkpoints: Vec::new(),
            record_events: Vec::new(),
            next_offsets: [0; PARTITIONS as usize],
            history: Vec::new(),
        }
    }

    /// Commits one group as the pipeline's writer does: admits every event, appends the
    /// admitted ones (and the partitions' new positions) as one record, then applies them.
    /// Returns each event's outcome.
    fn commit(&mut self, group: &[(Event, Option<i32>)]) -> Vec<Applied> {
        let aggregator = &mut self.recovered.state.aggregator;
        let mut admission = Admission::default();
        let mut admitted = Vec::new();
        let mut outcomes = Vec::new();
        let mut positions: Vec<KafkaOffset> = Vec::new();
        for (event, from) in group {
            let mut event = event.clone();
            let outcome = aggregator
                .admit(&mut event, &mut admission)
                .expect("the runs read");
            // Every message read moves its partition, counted or not.
            let from = from.map(|number| {
                let next = &mut self.next_offsets[number as usize];
                *next += 1;
                let index = match positions.iter().position(|p| p.partition == number) {
                    Some(index) => index,
                    None => {
                        positions.push(KafkaOffset {
                            topic: "learner-events".to_owned(),
                            partition: number,
                            ..KafkaOffset::default()
                        });
                        positions.len() - 1
                    }
                };
                positions[index].next_offset = *next;
                (number, *next, index)
            });
            if outcome == Applied::Accepted {
                admitted.push((event, from));
            }
            outcomes.push(outcome);
        }
        if admitted.is_empty() && positions.is_empty() {
            return outcomes;
        }
        let record = JournalRecord {
            events: admitted
                .iter()
                .map(|(event, from)| StoredEvent {
                    source: from.map_or(0, |(_, _, index)| index as u32 + 1),
                    ..StoredEvent::from(event)
                })
                .collect(),
            positions: positions.clone(),
            released: Vec::new(),
            event_identity: EventIdentity::SourceAndEventId.into(),
            senders: Vec::new(),
        };
        self.recovered
            .journal
            .append(&record)
            .expect("the journal appends");
        self.record_events.push(admitted.len() as u64);
        let partitions = self.recovered.state.sources.advance(&positions);
        self.history.push(Done::Read(positions));
        for (event, from) in admitted {
            assert_eq!(
                self.recovered
                    .state
                    .aggregator
                    .apply(&event)
                    .expect("a campaign slot"),
                Applied::Accepted,
                "an admitted event is accepted when applied"
            );
            let source = from.map_or(0, |(_, _, index)| index as u32 + 1);
            self.recovered
                .state
                .sources
                .note(&event.campaign, source_of(&partitions, source));
            self.history
                .push(Done::Counted(event, from.map(|(number, _, _)| number)));
        }
        outcomes
    }

    /// Releases a partition as the pipeline's writer does: a journal record, then the release.
    fn release(&mut self, number: i32) {
        let record = JournalRecord {
            released: vec![KafkaOffset {
                topic: "learner-events".to_owned(),
                partition: number,
                ..KafkaOffset::default()
            }],
            ..JournalRecord::default()
        };
        self.recovered
            .journal
            .append(&record)
            .expect("the journal appends");
        self.record_events.push(0);
        let State {
            aggregator,
            sources,
            ..
        } = &mut self.recovered.state;
        sources::release(sources, aggregator, &[partition(number)]);
        self.history.push(Done::Released(number));
    }

    /// Checkpoints as the pipeline's writer does: at a fresh segment, the ids since the last
    /// checkpoint in a run of their own (every id when a release forgot some), then prunes
    /// checkpoints, the journal segments and the id runs no kept checkpoint needs; the
    /// aggregator then looks those ids up in the runs.
    fn checkpoint(&mut self) {
        let sealed = self.seal_checkpoint();
        assert!(self.end_checkpoint(sealed), "the runs are installed");
    }

    /// The part of [`Process::checkpoint`] the writer does before the checkpoint thread takes
    /// over: a fresh segment, the ids sealed, the state frozen.
    fn seal_checkpoint(&mut self) -> crate::pipeline::writer::checkpoint::Sealed {
        let position = self
            .recovered
            .journal
            .rotate()
            .expect("the journal rotates");
        let state = &mut self.recovered.state;
        state.id_generation += 1;
        if self.checkpoints.last() != Some(&position) {
            self.checkpoints.push(position);
        }
        crate::pipeline::writer::checkpoint::seal(
            &mut state.aggregator,
            &state.sources,
            &state.id_runs,
            state.id_generation,
            position,
        )
    }

    /// The rest: the checkpoint written, then its runs handed to the aggregator, which says
    /// whether it took them.
    fn end_checkpoint(&mut self, sealed: crate::pipeline::writer::checkpoint::Sealed) -> bool {
        let (_, ended, _) = sealed
            .write(&self.storage)
            .expect("the checkpoint writes, and pruning works");
        let state = &mut self.recovered.state;
        state.id_runs = ended.kept;
        state.aggregator.install(ended.seal, ended.written)
    }

    /// The checkpoint of the whole state, as the writer fills it.
    fn state_at(&self, position: u64) -> crate::proto::storage::Checkpoint {
        let mut state = self
            .recovered
            .state
            .aggregator
            .checkpoint(position, self.recovered.state.sources.offsets())
            .expect("the runs read");
        state.direct_campaigns = self.recovered.state.sources.direct_campaigns();
        state
    }

    /// Rotates the journal for a checkpoint, writes its id run and half of it to its
    /// temporary file, as a checkpoint interrupted by a crash leaves them. The run is of ids
    /// never seen: a recovery that took it would count their events as duplicates.
    fn start_checkpoint(&mut self) {
        let position = self
            .recovered
            .journal
            .rotate()
            .expect("the journal rotates");
        let generation = self.recovered.state.id_generation + 1;
        let never_seen = (0..3).map(|word| [u32::MAX, u32::MAX, word, 0]);
        crate::durable::runs::write(
            &self.storage.checkpoint_dir,
            (generation, generation),
            3,
            crate::durable::runs::in_order(never_seen.collect::<Vec<_>>()),
        )
        .expect("the run writes");
        let encoded = self.state_at(position).encode_to_vec();
        std::fs::create_dir_all(&self.storage.checkpoint_dir).expect("the directory creates");
        std::fs::write(
            self.storage
                .checkpoint_dir
                .join(format!("{position:020}.ckpt.tmp")),
            &encoded[..encoded.len() / 2],
        )
        .expect("the temporary file writes");
    }

    /// Kills the process (dropping everything it holds in memory, which closes the journal as
    /// a crash would), leaves `torn` at the end of the journal, restarts with `config` and
    /// recovers, and checks what recovery says it did.
    fn crash_and_recover(self, torn: &[u8], config: Config) -> Process {
        let Process {
            storage,
            recovered,
            checkpoints,
            record_events,
            next_offsets,
            history,
            ..
        } = self;
        let position = recovered.journal.position();
        drop(recovered);
        if !torn.is_empty() {
            append_to_last_segment(&storage.journal_dir, torn);
        }
        let recovered = recover(&storage, config.settings(), config.registered.clone())
            .expect("the storage of a crashed process recovers");
        let restarted = Process {
            storage,
            config,
            recovered,
            checkpoints,
            record_events,
            next_offsets,
            history,
        };
        restarted.check_report(restarted.checkpoints.last().copied(), 0, torn.len());
        assert_eq!(restarted.recovered.journal.position(), position);
        restarted
    }

    /// Checks that the last recovery started from the checkpoint at `from` (none: the start of
    /// the journal), rejected `rejected` newer ones, replayed every record after it and cut
    /// `torn_bytes`.
    fn check_report(&self, from: Option<u64>, rejected: usize, torn_bytes: usize) {
        let report = &self.recovered.report;
        let first_replayed = usize::try_from(from.unwrap_or(0)).expect("small");
        let replayed = &self.record_events[first_replayed..];
        assert_eq!(report.checkpoint_position, from);
        assert_eq!(report.checkpoints_rejected.len(), rejected);
        assert_eq!(report.records_replayed, replayed.len() as u64);
        assert_eq!(report.events_replayed, replayed.iter().sum::<u64>());
        assert_eq!(report.torn_bytes, torn_bytes as u64);
    }

    /// Checks that the process holds what an aggregator that never stopped holds, started with
    /// this run's configuration and fed the same history.
    fn check_state(&self) {
        let (aggregator, sources) = never_stopped(&self.config, &self.history);
        assert_same_state(&aggregator, &self.recovered.state.aggregator);
        assert_eq!(self.recovered.state.sources.offsets(), sources.offsets());
        assert_eq!(
            self.recovered.state.sources.direct_campaigns(),
            sources.direct_campaigns()
        );
    }
}

/// Appends `bytes` to the journal segment with the highest first position.
fn append_to_last_segment(journal_dir: &Path, bytes: &[u8]) {
    let last = std::fs::read_dir(journal_dir)
        .expect("the journal directory lists")
        .map(|entry| entry.expect("a directory entry reads").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "wal"))
        .max()
        .expect("the journal has a segment");
    let mut contents = std::fs::read(&last).expect("the segment reads");
    contents.extend_from_slice(bytes);
    std::fs::write(&last, contents).expect("the segment writes");
}

/// Flips a byte in the middle of the checkpoint at `position`.
fn corrupt_checkpoint(checkpoint_dir: &Path, position: u64) {
    let path = checkpoint_dir.join(format!("{position:020}.ckpt"));
    let mut bytes = std::fs::read(&path).expect("the checkpoint reads");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&path, bytes).expect("the checkpoint writes");
}

/// Checks that two aggregators hold the same campaigns with the same counters and timelines,
/// the same totals and the same sizes. Not necessarily in the same slots: a campaign added to
/// the registry is opened where recovery finds room.
fn assert_same_state(expected: &Aggregator, actual: &Aggregator) {
    let mut expected_ids: Vec<&str> = expected.campaign_ids().collect();
    let mut actual_ids: Vec<&str> = actual.campaign_ids().collect();
    expected_ids.sort_unstable();
    actual_ids.sort_unstable();
    assert_eq!(actual_ids, expected_ids, "the campaigns");
    for campaign in expected_ids.iter().copied().chain([TOTALS_CAMPAIGN]) {
        assert_eq!(
            actual.campaign(campaign),
            expected.campaign(campaign),
            "the counters and timeline of {campaign:?}"
        );
    }
    assert_eq!(actual.holdings(), expected.holdings(), "the holdings");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn recovery_gives_the_state_of_an_aggregator_that_never_stopped(
        specs in vec(event_spec(), 1..30),
        picks in vec(any::<Index>(), 0..60),
        steps in vec((1..6usize, after_group()), 1..16),
    ) {
        let parser = EventParser::new(CHAPTER_COUNT, [0x5A; 32]);
        let events: Vec<(Event, Option<i32>)> = specs
            .iter()
            .map(|spec| (parse(&parser, spec), spec.partition))
            .collect();
        // Picking with repetition from the events gives resends of the same event as well as
        // another order than the one generated.
        let history: Vec<(Event, Option<i32>)> = picks
            .iter()
            .map(|pick| events[pick.index(events.len())].clone())
            .collect();
        let directory = scratch_directory();
        let mut process = Process::start(storage(directory.path()));

        let mut rest = history.as_slice();
        let mut steps = steps.into_iter();
        while !rest.is_empty() {
            // When the steps run out, the rest of the history is one last group.
            let (size, after) = steps.next().unwrap_or((rest.len(), AfterGroup::Continue));
            let (group, later) = rest.split_at(size.min(rest.len()));
            rest = later;
            // Nothing valid is refused, whatever room campaigns have (admission cannot say
            // otherwise: an outcome is accepted or a duplicate).
            process.commit(group);
            let config = process.config.clone();
            match after {
                AfterGroup::Continue => {}
                AfterGroup::Checkpoint => process.checkpoint(),
                AfterGroup::Release(number) => process.release(number),
                AfterGroup::Crash(narrow) => {
                    let config = if narrow { Config::narrowed() } else { config };
                    process = process.crash_and_recover(&[], config);
                }
                AfterGroup::CrashDuringAppend(torn) => {
                    process = process.crash_and_recover(&torn, config);
                }
                AfterGroup::CrashDuringCheckpoint => {
                    process.start_checkpoint();
                    process = process.crash_and_recover(&[], config);
                }
            }
            process.check_state();
        }
        let config = process.config.clone();
        process = process.crash_and_recover(&[], config.clone());
        process.check_state();

        // With the newest checkpoint unusable, recovery starts from the one before (or from the
        // start of the journal) and replays the longer journal since: same state.
        if let Some(&newest) = process.checkpoints.last() {
            corrupt_checkpoint(&process.storage.checkpoint_dir, newest);
            let older = process.checkpoints.iter().rev().nth(1).copied();
            process.recovered =
                recover(&process.storage, config.settings(), config.registered.clone())
                    .expect("recovery falls back to the older checkpoint");
            process.check_report(older, 1, 0);
            process.check_state();
        }
    }
}

#[test]
fn recovering_an_empty_storage_gives_the_registered_campaigns_at_zero() {
    let directory = scratch_directory();

    let recovered =
        recover(&storage(directory.path()), settings(), registered()).expect("recovery works");

    assert_same_state(
        &Aggregator::new(settings(), registered()),
        &recovered.state.aggregator,
    );
    assert_eq!(recovered.journal.position(), 0);
    assert_eq!(recovered.state.sources.offsets(), Vec::new());
    assert_eq!(
        RecoveryReport {
            duration: Duration::ZERO,
            ..recovered.report
        },
        RecoveryReport::default()
    );
}

#[test]
fn recovery_brings_kafka_positions_to_the_journal_end_with_the_campaigns_each_partition_fed() {
    let directory = scratch_directory();
    let storage = storage(directory.path());
    let offset = |partition: i32, next_offset: i64, campaigns: &[&str]| KafkaOffset {
        topic: "learner-events".to_owned(),
        partition,
        next_offset,
        campaigns: campaigns.iter().map(|c| (*c).to_owned()).collect(),
    };
    let mut state = Aggregator::new(settings(), registered())
        .checkpoint(0, vec![offset(1, 10, &[]), offset(2, 77, &["inria"])])
        .expect("the runs read");
    state.direct_campaigns = vec!["pole-emploi".to_owned()];
    checkpoint::write(&storage.checkpoint_dir, &state).expect("the checkpoint writes");
    let mut recovered = recover(&storage, settings(), registered()).expect("recovery works");
    // After the checkpoint: a group read from partition 1 up to offset 25.
    let spec = EventSpec {
        id: 1,
        kind: EventKind::Enrolled,
        chapter: 1,
        campaign: CAMPAIGNS
            .iter()
            .position(|c| *c == REGISTERED)
            .expect("registered"),
        source: 0,
        learner: 1,
        visitor: None,
        minutes: 0,
        partition: Some(1),
    };
    let event = parse(&EventParser::new(CHAPTER_COUNT, [3; 32]), &spec);
    recovered
        .journal
        .append(&JournalRecord {
            events: vec![StoredEvent {
                source: 1,
                ..StoredEvent::from(&event)
            }],
            positions: vec![offset(1, 25, &[])],
            released: Vec::new(),
            event_identity: EventIdentity::SourceAndEventId.into(),
            senders: Vec::new(),
        })
        .expect("the journal appends");
    drop(recovered);

    let mut recovered = recover(&storage, settings(), registered()).expect("recovery works");

    assert_eq!(
        recovered.state.sources.offsets(),
        vec![offset(1, 25, &[REGISTERED]), offset(2, 77, &["inria"])]
    );
    assert_eq!(
        recovered.state.sources.direct_campaigns(),
        vec!["pole-emploi".to_owned()]
    );
    assert_eq!(
        recovered.state.sources.release(&[partition(1)]).campaigns,
        vec![REGISTERED.to_owned()]
    );
}

#[test]
fn recovery_refuses_a_checkpoint_taken_with_another_chapter_count() {
    let directory = scratch_directory();
    let storage = storage(directory.path());
    let twelve_chapters = AggregatorSettings {
        chapter_count: 12,
        ..settings()
    };
    let state = Aggregator::new(twelve_chapters, registered())
        .checkpoint(0, Vec::new())
        .expect("the runs read");
    checkpoint::write(&storage.checkpoint_dir, &state).expect("the checkpoint writes");

    let error = recover(&storage, settings(), registered()).expect_err("recovery must fail");

    assert_eq!(
        format!("{error:#}"),
        "cannot restore the checkpoint: the checkpoint was taken with chapter_count 12, not 3: \
         chapters cannot be renumbered"
    );
}

#[test]
fn recovery_refuses_a_journal_record_with_a_malformed_event() {
    let directory = scratch_directory();
    let storage = storage(directory.path());
    let mut recovered = recover(&storage, settings(), registered()).expect("recovery works");
    let no_action = StoredEvent {
        id0: 1,
        campaign: REGISTERED.to_owned(),
        ..StoredEvent::default()
    };
    recovered
        .journal
        .append(&JournalRecord {
            events: vec![no_action],
            event_identity: EventIdentity::SourceAndEventId.into(),
            ..JournalRecord::default()
        })
        .expect("the journal appends");
    drop(recovered);

    let error = recover(&storage, settings(), registered()).expect_err("recovery must fail");

    assert_eq!(
        format!("{error:#}"),
        "journal record 0 cannot be replayed: stored event is malformed: an unknown action"
    );
}

#[test]
fn recovery_fails_loudly_when_no_valid_checkpoint_covers_the_removed_journal() {
    // Both kept checkpoints unusable, and the journal before the older one removed: the state
    // cannot be rebuilt, and starting empty would silently lose every acknowledged event.
    let directory = scratch_directory();
    let parser = EventParser::new(CHAPTER_COUNT, [0x5A; 32]);
    let mut process = Process::start(storage(directory.path()));
    for learner in 0..3 {
        let spec = EventSpec {
            id: learner,
            kind: EventKind::Enrolled,
            chapter: 1,
            campaign: 0,
            source: 0,
            learner,
            visitor: None,
            minutes: 0,
            partition: None,
        };
        process.commit(&[(parse(&parser, &spec), None)]);
        process.checkpoint();
    }
    assert_eq!(process.checkpoints, [1, 2, 3]);
    for position in [2, 3] {
        corrupt_checkpoint(&process.storage.checkpoint_dir, position);
    }
    let storage = process.storage.clone();
    drop(process);

    let error = recover(&storage, settings(), registered()).expect_err("recovery must fail");

    assert_eq!(
        format!("{error:#}"),
        "the journal starts at record 2 but the state needs it from record 0: records were \
         removed that no valid checkpoint covers"
    );
}

mod runs;
