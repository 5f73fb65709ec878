//! Tests of the pipeline's writer against a real full disk (a small tmpfs mounted by the test):
//! a submission that cannot be made durable is refused whole and counts nothing, queries go on,
//! and ingestion resumes by itself once there is room again, without a restart.

use std::path::Path;

use chrono::{DateTime, TimeDelta};

use super::*;
use crate::durable::journal::{DEFAULT_SEGMENT_BYTES, FsyncPolicy, MAX_RECORD_BYTES};
use crate::event::{EventKind, EventParser, RawEvent, RawKind, RawTime};
use crate::figures::CampaignCounters;
use crate::registry::Registry;

// The journal's tests own this helper. One test module cannot reach into another, so the file is
// compiled a second time here rather than copied.
#[allow(clippy::duplicate_mod)]
#[path = "../durable/journal/tests/small_disk.rs"]
mod small_disk;

use prost::Message;
use small_disk::SmallDisk;

const CHAPTER_COUNT: u8 = 3;
const CAMPAIGN: &str = "gendarmerie";

fn aggregator_settings() -> AggregatorSettings {
    AggregatorSettings {
        time_zone: chrono_tz::Europe::Paris,
        chapter_count: CHAPTER_COUNT,
        max_unregistered_campaigns: 8,
    }
}

/// Enrolments of learners `numbers` in [`CAMPAIGN`], one event each, parsed as the edges do.
fn enrolments(numbers: std::ops::Range<u32>) -> Vec<Event> {
    let parser = EventParser::new(CHAPTER_COUNT, [0x33; 32]);
    let occurred_at = DateTime::parse_from_rfc3339("2021-01-25T10:00:00Z")
        .expect("a valid instant")
        .to_utc();
    numbers
        .map(|number| {
            let event_id = format!("event-{number}");
            let learner_id = format!("learner-{number}");
            let raw = RawEvent {
                event_id: &event_id,
                kind: RawKind::Known(EventKind::Enrolled),
                campaign: CAMPAIGN,
                source: "gendform3",
                learner_id: &learner_id,
                occurred_at: RawTime::At(occurred_at),
                ..RawEvent::default()
            };
            parser
                .parse(&raw, occurred_at + TimeDelta::hours(1))
                .expect("the enrolments are valid")
        })
        .collect()
}

/// Durable state in `directory`, with records of at most `max_record_bytes`.
fn durable_in(directory: &Path, max_record_bytes: u32) -> DurableSettings {
    DurableSettings {
        journal_dir: directory.join("journal"),
        checkpoint_dir: directory.join("checkpoints"),
        fsync: FsyncPolicy::Always,
        segment_bytes: DEFAULT_SEGMENT_BYTES,
        max_record_bytes,
    }
}

/// Starts the writer on `durable`, with [`CAMPAIGN`] registered and no checkpoint until the stop
/// (so that the journal holds everything for the end); answers its queue, the thread and the
/// figures it publishes to.
fn start_writer(durable: &DurableSettings) -> (Queue, Writer, Arc<Figures>) {
    let settings = PipelineSettings {
        durable: vec![durable.clone()],
        aggregator: aggregator_settings(),
        registered: vec![CAMPAIGN.to_owned()],
        queue_events: 10_000,
        queue_timeout: Duration::from_secs(10),
        checkpoint_interval: Duration::from_secs(3600),
        checkpoint_journal_bytes: u64::MAX,
        sharding: shards::Sharding::Learner,
        outbox: None,
    };
    let registry = Registry::parse("[[campaign]]\nid = \"gendarmerie\"\nname = \"Gendarmerie\"")
        .expect("the registry parses");
    let figures = Arc::new(Figures::new(&registry, CHAPTER_COUNT, Utc::now()));
    let (queue, writer) = start(settings, figures.clone()).expect("the writer starts");
    (queue, writer, figures)
}

/// The published counters of [`CAMPAIGN`].
fn published(figures: &Figures) -> CampaignCounters {
    figures
        .campaign(CAMPAIGN)
        .expect("the registered campaign is published")
}

/// Every event in the journal at `journal_dir`, in order.
fn journaled_events(journal_dir: &Path) -> Vec<StoredEvent> {
    let mut events = Vec::new();
    Journal::open(
        journal_dir,
        FsyncPolicy::Always,
        DEFAULT_SEGMENT_BYTES,
        0,
        |_, record| events.extend(record.events),
    )
    .expect("the journal opens");
    events
}

#[tokio::test]
async fn a_full_disk_refuses_submissions_whole_and_ingestion_resumes_once_space_is_freed() {
    let disk = SmallDisk::mount("256k");
    let filler = disk.path().join("filler");
    let storage = durable_in(disk.path(), MAX_RECORD_BYTES);
    let (ingest, writer, figures) = start_writer(&storage);
    writer
        .recovered
        .await
        .expect("the writer reports its recovery")
        .expect("an empty storage recovers");

    let first = enrolments(0..20);
    assert_eq!(
        ingest.submit(first.clone(), None).await,
        Ok(vec![Applied::Accepted; 20])
    );
    let before = published(&figures);
    let totals_before = figures.totals();
    assert_eq!(before.enrolled, 20);

    disk.fill(&filler);
    // Large enough that its record cannot fit in the slack of the journal's last page.
    let second = enrolments(20..220);
    for _ in 0..2 {
        assert_eq!(
            ingest.submit(second.clone(), None).await,
            Err(Refusal::DiskFull)
        );
        assert_eq!(
            published(&figures),
            before,
            "queries still answer, and nothing refused is counted"
        );
        assert_eq!(figures.totals(), totals_before);
    }

    std::fs::remove_file(&filler).expect("the filler removes");
    // Accepted, not duplicates: nothing of the refused submissions was remembered either.
    assert_eq!(
        ingest.submit(second.clone(), None).await,
        Ok(vec![Applied::Accepted; 200])
    );
    assert_eq!(published(&figures).enrolled, 220);
    assert_eq!(
        ingest.submit(first.clone(), None).await,
        Ok(vec![Applied::Duplicate { conflict: false }; 20])
    );

    ingest.close().await;
    writer
        .thread
        .join()
        .expect("the writer does not panic")
        .expect("the writer stops cleanly");

    let expected: Vec<StoredEvent> = first.iter().chain(&second).map(StoredEvent::from).collect();
    assert_eq!(
        journaled_events(&storage.journal_dir),
        expected,
        "the journal holds every accepted event once, and nothing of the refused submissions"
    );
    let recovered = state::recover(&storage, aggregator_settings(), vec![CAMPAIGN.to_owned()])
        .expect("the storage recovers");
    let (counts, _) = recovered
        .state
        .aggregator
        .campaign(CAMPAIGN)
        .expect("the campaign is recovered");
    assert_eq!(counts.enrolled, 220);
    assert_eq!(recovered.state.aggregator.holdings().event_ids, 220);
}

#[tokio::test]
async fn a_group_over_the_journal_record_limit_is_journaled_in_parts_and_recovers_whole() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    // About 40 events fit in a record: every submission fits, but a group of them does not.
    let storage = durable_in(directory.path(), 4096);
    let (ingest, writer, figures) = start_writer(&storage);
    // Queued before recovery ends, the submissions are taken as one group.
    let submissions: Vec<_> = (0..16)
        .map(|part| {
            let ingest = ingest.clone();
            tokio::spawn(async move {
                ingest
                    .submit(enrolments(part * 30..part * 30 + 30), None)
                    .await
            })
        })
        .collect();
    writer
        .recovered
        .await
        .expect("the writer reports its recovery")
        .expect("an empty storage recovers");
    for submission in submissions {
        assert_eq!(
            submission.await.expect("the submission task ends"),
            Ok(vec![Applied::Accepted; 30])
        );
    }
    assert_eq!(published(&figures).enrolled, 480);
    // A submission over the limit on its own is refused whole, and nothing of it counts.
    assert_eq!(
        ingest.submit(enrolments(1000..1100), None).await,
        Err(Refusal::StorageUnwritable)
    );
    assert_eq!(published(&figures).enrolled, 480);
    ingest.close().await;
    writer
        .thread
        .join()
        .expect("the writer does not panic")
        .expect("the writer stops cleanly");

    let mut records = 0;
    Journal::open(
        &storage.journal_dir,
        FsyncPolicy::Always,
        DEFAULT_SEGMENT_BYTES,
        0,
        |_, record| {
            assert!(record.encoded_len() <= 4096);
            records += 1;
        },
    )
    .expect("the journal opens");
    assert!(
        records >= 4,
        "the events were journaled in parts: {records} records"
    );
    // Recovery from the journal alone (the final checkpoint set aside) gives every event.
    std::fs::remove_dir_all(&storage.checkpoint_dir).expect("the checkpoints remove");
    let recovered = state::recover(&storage, aggregator_settings(), vec![CAMPAIGN.to_owned()])
        .expect("the storage recovers");
    assert_eq!(recovered.state.aggregator.holdings().event_ids, 480);
}

#[tokio::test]
async fn the_journal_records_which_credential_sent_each_event() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let storage = durable_in(directory.path(), MAX_RECORD_BYTES);
    let (ingest, writer, _figures) = start_writer(&storage);
    // Queued before recovery ends, the three submissions are journaled as one group.
    let senders = [Some("gendform3"), None, Some("moodle-lyon")];
    let submissions: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(part, sender)| {
            let ingest = ingest.clone();
            let sender = sender.map(Arc::from);
            let first = u32::try_from(part).expect("a few parts") * 2;
            tokio::spawn(async move { ingest.submit(enrolments(first..first + 2), sender).await })
        })
        .collect();
    writer
        .recovered
        .await
        .expect("the writer reports its recovery")
        .expect("an empty storage recovers");
    for submission in submissions {
        assert!(submission.await.expect("the task ends").is_ok());
    }
    ingest.close().await;
    writer
        .thread
        .join()
        .expect("the writer does not panic")
        .expect("the writer stops cleanly");
    let mut sent_by = Vec::new();
    Journal::open(
        &storage.journal_dir,
        FsyncPolicy::Always,
        DEFAULT_SEGMENT_BYTES,
        0,
        |_, record| {
            for event in &record.events {
                let sender = (event.sender as usize)
                    .checked_sub(1)
                    .map(|index| record.senders[index].clone());
                sent_by.push((event.campaign.clone(), sender));
            }
        },
    )
    .expect("the journal opens");
    let expected: Vec<(String, Option<String>)> = senders
        .iter()
        .flat_map(|sender| [sender.map(str::to_owned), sender.map(str::to_owned)])
        .map(|sender| (CAMPAIGN.to_owned(), sender))
        .collect();
    sent_by.sort_by(|a, b| a.1.cmp(&b.1));
    let mut expected = expected;
    expected.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(sent_by, expected);
}

#[test]
fn every_pipeline_refusal_is_registered_at_start() {
    let refusals = [
        Refusal::Overloaded(Duration::ZERO),
        Refusal::ShuttingDown,
        Refusal::DiskFull,
        Refusal::StorageUnwritable,
        Refusal::OutOfSequence,
    ];
    for refusal in &refusals {
        // Exhaustive on purpose: a new refusal does not compile here until it is listed in
        // `refusals` above, and this test then says whether telemetry::PIPELINE_REFUSALS has it.
        match refusal {
            Refusal::Overloaded(_)
            | Refusal::ShuttingDown
            | Refusal::DiskFull
            | Refusal::StorageUnwritable
            | Refusal::OutOfSequence => {}
        }
        assert!(
            telemetry::PIPELINE_REFUSALS.contains(&refusal.reason()),
            "{}",
            refusal.reason()
        );
    }
    // The edges refuse the first four (out_of_sequence is Kafka's alone).
    assert_eq!(
        telemetry::PIPELINE_REFUSALS[4],
        Refusal::OutOfSequence.reason()
    );
}
