//! The benchmarks of suivi's durable side, all in one run so that their ratios are comparable on
//! a noisy machine:
//!
//! 1. durable ingest through the real pipeline (`pipeline::start`, a journal on the real disk)
//!    with `fsync = always` and `fsync = interval` (200 ms), against the same events admitted and
//!    applied to an `Aggregator` directly, without any IO. The events are the programme of
//!    `suivi simulate` (`simulate::generate`), parsed once up front; [`SUBMITTERS`] tasks submit
//!    batches of 1,000 concurrently, as gRPC streams would, so that group commit has something to
//!    group. Before criterion times the three, one interleaved pass runs them in turn, round
//!    after round, with two more for context: the writer's CPU work without the IO (admit,
//!    encode the record, apply, publish) and `fsync = always` with 16 submitters;
//! 2. the journal alone against an embedded key-value store (redb 2.6, the newest that builds
//!    with the crate's rust-version) doing the same job: groups of 1,000 encoded events appended
//!    and made durable one group at a time, our `Journal::append` (fsync always) against one
//!    redb write transaction per group (key: the position, value: the encoded `JournalRecord`,
//!    `Durability::Immediate`). Before criterion times them, one interleaved pass of each, and
//!    of a plain file appended and `fdatasync`ed (the floor), measures their rates and the bytes
//!    each writes per event.
//!
//! The interleaved passes are the figures to compare: the disk's fsync latency on a shared
//! machine changes tenfold from one minute to the next, and criterion times one benchmark after
//! the other.
//!
//! With `SUIVI_BENCH_RECOVERY=<learners>` it runs no benchmark and measures instead, once,
//! recovery and checkpoints with that many learners (see [`recovery_report`]):
//!
//! ```text
//! cargo bench --bench durability                                # 1 and 2, 1.5 to 2.5 minutes
//! SUIVI_BENCH_RECOVERY=1000000 cargo bench --bench durability   # 3, a million learners, 1 min
//! SUIVI_BENCH_RECOVERY=10000000 cargo bench --bench durability  # 3, ten million: 5 min, 11 GB
//! ```
//!
//! With `SUIVI_BENCH_STALL=<learners>` it measures instead the ingest path's latency across
//! checkpoints with that many learners (`benches/durability/stall.rs`).
//!
//! `SUIVI_BENCH_REPLAY_EVENTS` sets the events of the replayed journal (default 10,000,000),
//! `SUIVI_BENCH_SHAPE=certified` gives every learner one event (a certificate) instead of a
//! whole funnel, and `SUIVI_BENCH_DIR` the directory of the files written (default
//! `target/tmp`: it must be on the real disk, not a tmpfs; its file system is printed).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{Criterion, SamplingMode, Throughput};
use prost::Message;
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use redb::{Database, Durability, TableDefinition};
use tempfile::TempDir;
use tokio::task::JoinSet;

use suivi::aggregate::{
    Admission, Aggregator, Applied, ENTRY_BYTES, Holdings, StoredIds, WARM_EVENTS,
};
use suivi::config::{
    DEFAULT_CHAPTER_COUNT, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_CHECKPOINT_JOURNAL_BYTES,
    DEFAULT_FSYNC_INTERVAL, DEFAULT_INGEST_QUEUE_EVENTS,
};
use suivi::durable::DurableSettings;
use suivi::durable::journal::{DEFAULT_SEGMENT_BYTES, FsyncPolicy, Journal, MAX_RECORD_BYTES};
use suivi::durable::{checkpoint, runs};
use suivi::event::{
    Action, DIRECT_CAMPAIGN, Event, EventId, LearnerKey, RawEvent, Stage, VisitorKey,
};
use suivi::figures::Figures;
use suivi::pipeline::{self, PipelineSettings, Writer, state};
use suivi::proto::storage::{EventIdentity, JournalRecord, StoredEvent};
use suivi::registry::Registry;
use suivi::simulate;

mod common;
#[path = "durability/stall.rs"]
mod stall;
use common::{
    BATCH_EVENTS, CERTIFY_RATE, SEED, START_RATE, VISITOR_RATE, campaign_spread, parser,
    registered, settings, status_kib,
};

/// The simulated programme of the ingest benchmarks: 1 = the published one.
const SIMULATION_SCALE: f64 = 1.0;
/// Concurrent submitters, as the streams of `suivi simulate`.
const SUBMITTERS: usize = 4;
/// Events per journal group in the journal-against-redb comparison.
const GROUP_EVENTS: usize = 1_000;
/// Distinct groups prepared for that comparison (they are appended round and round).
const PREPARED_GROUPS: usize = 200;
/// Groups each store appends in the interleaved pass that measures bytes written.
const BYTES_PASS_GROUPS: usize = 900;
/// Rounds of that pass: each store appends a share of its groups in turn.
const BYTES_PASS_ROUNDS: usize = 9;
/// Rounds of the interleaved ingest pass.
const INGEST_ROUNDS: usize = 5;
/// Events of the replayed journal, unless `SUIVI_BENCH_REPLAY_EVENTS` says otherwise.
const REPLAY_EVENTS: usize = 10_000_000;
/// The size of a page as /proc/self/statm counts them (checked against VmRSS at start).
const PAGE_BYTES: u64 = 4096;

/// The redb table the journal's records go to.
const REDB_TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");

fn main() {
    if let Ok(learners) = std::env::var("SUIVI_BENCH_RECOVERY") {
        let learners = learners
            .replace('_', "")
            .parse()
            .expect("SUIVI_BENCH_RECOVERY is a number of learners");
        recovery_report(learners);
        return;
    }
    if let Ok(learners) = std::env::var("SUIVI_BENCH_STALL") {
        let learners = learners
            .replace('_', "")
            .parse()
            .expect("SUIVI_BENCH_STALL is a number of learners");
        stall::stall_report(learners);
        return;
    }
    let base = bench_base();
    println!("files under {}", describe_dir(&base));
    let registry = Registry::load(None).expect("the embedded campaign registry parses");
    let events = simulated_events(&registry);
    // Plots cost more than a second per benchmark and the figures are in the text output.
    let mut criterion = Criterion::default().without_plots().configure_from_args();
    let rates = RefCell::new(BTreeMap::new());
    ingest_benches(&mut criterion, &registry, &events, &base, &rates);
    journal_benches(&mut criterion, &events, &base, &rates);
    criterion.final_summary();
    print_rates(&rates.into_inner());
}

// ---------------------------------------------------------------------------------------------
// Shared helpers.

/// Where the benchmark's files go: `SUIVI_BENCH_DIR`, else cargo's `target/tmp`.
fn bench_base() -> PathBuf {
    let base = std::env::var_os("SUIVI_BENCH_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    std::fs::create_dir_all(&base).expect("the benchmark directory can be created");
    base
}

fn temp_dir(base: &Path) -> TempDir {
    tempfile::Builder::new()
        .prefix("durability-")
        .tempdir_in(base)
        .expect("a temporary directory can be created")
}

/// `path`, with the file system and device it is on (from /proc/self/mountinfo).
fn describe_dir(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mount = mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let point = *fields.get(4)?;
            let after = fields.iter().position(|field| *field == "-")?;
            let fs_type = *fields.get(after + 1)?;
            let source = *fields.get(after + 2)?;
            path.starts_with(point)
                .then_some((point.len(), fs_type.to_owned(), source.to_owned()))
        })
        .max();
    match mount {
        Some((_, fs_type, source)) => format!("{} ({fs_type} on {source})", path.display()),
        None => format!("{} (file system unknown)", path.display()),
    }
}

/// The bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Bytes this process caused to be sent to the storage layer (/proc/self/io `write_bytes`):
/// page-granular, so it shows what a partial page rewritten at every fsync costs.
fn io_write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|line| line.strip_prefix("write_bytes:"))
                .and_then(|value| value.trim().parse().ok())
        })
        .expect("/proc/self/io has write_bytes")
}

/// Resident memory, from /proc/self/statm.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm is readable");
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .expect("/proc/self/statm has a resident size");
    resident * PAGE_BYTES
}

/// A field of /proc/self/status, in bytes: `VmRSS` (resident now) or `VmHWM` (at most).
fn status_bytes(field: &str) -> u64 {
    status_kib(field) * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// The rates each criterion benchmark's iterations measured, warm-up included, by name.
type Rates = RefCell<BTreeMap<String, Vec<f64>>>;

fn record_rate(rates: &Rates, name: &str, rate: f64) {
    rates
        .borrow_mut()
        .entry(name.to_owned())
        .or_default()
        .push(rate);
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn print_rates(rates: &BTreeMap<String, Vec<f64>>) {
    println!();
    println!(
        "summary of the criterion benchmarks, run one after the other (the interleaved passes above are the fairer comparison): median events/s of each one's iterations, warm-up included"
    );
    let rate = |name: &str| rates.get(name).map_or(f64::NAN, |values| median(values));
    for (name, values) in rates {
        println!(
            "  {name:<36} {:>12.0} events/s  ({} samples)",
            median(values),
            values.len()
        );
    }
    let without = rate("durable_ingest/no_journal");
    for name in [
        "durable_ingest/fsync_always",
        "durable_ingest/fsync_interval_200ms",
    ] {
        println!("  {name} = {:.2} x no_journal", rate(name) / without);
    }
    let journal = rate("journal_vs_kv/journal_append_fsync");
    let redb = rate("journal_vs_kv/redb_commit_immediate");
    println!(
        "  journal_append_fsync = {:.2} x redb_commit_immediate ({:.0} against {:.0} groups of {GROUP_EVENTS}/s)",
        journal / redb,
        journal / GROUP_EVENTS as f64,
        redb / GROUP_EVENTS as f64
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Durable ingest through the pipeline.

/// The programme of `suivi simulate`, parsed as the ingest edges parse it, in its order.
fn simulated_events(registry: &Registry) -> Vec<Event> {
    let started = Instant::now();
    let wire = simulate::generate(registry, SEED, SIMULATION_SCALE, DEFAULT_CHAPTER_COUNT);
    let parser = parser();
    let now = Utc::now();
    let events: Vec<Event> = wire
        .iter()
        .map(|event| {
            parser
                .parse(&RawEvent::from(event), now)
                .expect("simulated events are valid")
        })
        .collect();
    let encoded: usize = events
        .iter()
        .map(|event| StoredEvent::from(event).encoded_len())
        .sum();
    println!(
        "simulated programme at scale {SIMULATION_SCALE}: {} events, {:.1} encoded bytes each in the journal; generated and parsed in {:.1?}",
        events.len(),
        encoded as f64 / events.len() as f64,
        started.elapsed()
    );
    events
}

fn pipeline_settings(
    dir: &Path,
    fsync: FsyncPolicy,
    registry: &Registry,
    shards: usize,
) -> PipelineSettings {
    PipelineSettings {
        durable: (0..shards)
            .map(|shard| {
                let (journal_dir, checkpoint_dir) = pipeline::shards::shard_dirs(dir, shard);
                DurableSettings {
                    journal_dir,
                    checkpoint_dir,
                    fsync,
                    segment_bytes: DEFAULT_SEGMENT_BYTES,
                    max_record_bytes: MAX_RECORD_BYTES,
                }
            })
            .collect(),
        aggregator: settings(),
        registered: registered(registry),
        queue_events: DEFAULT_INGEST_QUEUE_EVENTS,
        // Long enough never to refuse a batch on a loaded machine: refusals would not be timed.
        queue_timeout: Duration::from_secs(60),
        checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
        checkpoint_journal_bytes: DEFAULT_CHECKPOINT_JOURNAL_BYTES,
        sharding: pipeline::shards::Sharding::Learner,
        outbox: None,
    }
}

/// What one run of the pipeline did.
struct IngestRun {
    elapsed: Duration,
    /// Journal records written, one per group (so one fsync each under `fsync = always`).
    records: u64,
}

/// Starts a pipeline of `shards` shards on an empty directory, submits every batch from
/// `submitters` tasks (batch `i` from task `i % submitters`) and times from the first
/// submission to the last answer. Stopping the writers (their final checkpoints) is not timed.
fn ingest_once(
    runtime: &tokio::runtime::Runtime,
    base: &Path,
    registry: &Registry,
    (fsync, submitters, shards): (FsyncPolicy, usize, usize),
    batches: &[Vec<Event>],
) -> IngestRun {
    let dir = temp_dir(base);
    let settings = pipeline_settings(dir.path(), fsync, registry, shards);
    let checkpoint_dirs: Vec<PathBuf> = settings
        .durable
        .iter()
        .map(|durable| durable.checkpoint_dir.clone())
        .collect();
    let figures = Arc::new(Figures::new(registry, DEFAULT_CHAPTER_COUNT, Utc::now()));
    let (ingest, Writer { recovered, thread }) =
        pipeline::start(settings, figures).expect("the writer thread starts");
    let work: Vec<Vec<Vec<Event>>> = (0..submitters)
        .map(|submitter| {
            batches
                .iter()
                .skip(submitter)
                .step_by(submitters)
                .cloned()
                .collect()
        })
        .collect();
    let expected: usize = batches.iter().map(Vec::len).sum();
    let elapsed = runtime.block_on(async {
        recovered
            .await
            .expect("the writer reports its recovery")
            .expect("an empty directory recovers");
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for batches in work {
            let ingest = ingest.clone();
            tasks.spawn(async move {
                let mut accepted = 0;
                for batch in batches {
                    let outcomes = ingest.submit(batch, None).await.expect("a batch is taken");
                    accepted += outcomes
                        .iter()
                        .filter(|outcome| **outcome == Applied::Accepted)
                        .count();
                }
                accepted
            });
        }
        let mut accepted = 0;
        while let Some(done) = tasks.join_next().await {
            accepted += done.expect("a submitter does not panic");
        }
        let elapsed = started.elapsed();
        assert_eq!(accepted, expected, "every simulated event is new and valid");
        ingest.close().await;
        elapsed
    });
    thread
        .join()
        .expect("the writer does not panic")
        .expect("the writer stops cleanly");
    // Each shard's final checkpoint is named by its journal position: the number of records
    // it wrote.
    let records = checkpoint_dirs
        .iter()
        .map(|checkpoint_dir| {
            std::fs::read_dir(checkpoint_dir)
                .expect("the final checkpoint was written")
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    entry
                        .file_name()
                        .to_str()?
                        .strip_suffix(".ckpt")?
                        .parse::<u64>()
                        .ok()
                })
                .max()
                .expect("the final checkpoint is there")
        })
        .sum();
    IngestRun { elapsed, records }
}

/// The same events, admitted and applied batch by batch as the writer does, with no IO.
fn apply_directly(registry: &Registry, batches: &[Vec<Event>]) -> Duration {
    let mut aggregator = Aggregator::new(settings(), registered(registry));
    // Admission may rewrite an event's campaign: it works on copies, made before the clock runs.
    let mut batches = batches.to_vec();
    let started = Instant::now();
    for batch in &mut batches {
        let mut admission = Admission::default();
        let admitted: Vec<&Event> = batch
            .iter_mut()
            .filter_map(|event| {
                (aggregator
                    .admit(event, &mut admission)
                    .expect("the runs read")
                    == Applied::Accepted)
                    .then_some(&*event)
            })
            .collect();
        for event in admitted {
            aggregator.apply(event).expect("a campaign slot");
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(
        aggregator.holdings().event_ids,
        batches.iter().map(Vec::len).sum::<usize>(),
        "every simulated event is new and valid"
    );
    elapsed
}

/// The variants of the interleaved ingest pass: (name, fsync policy or none for the aggregator
/// alone, submitters).
const INGEST_VARIANTS: [(&str, Option<FsyncPolicy>, usize, usize); 7] = [
    ("no_journal (admit + apply)", None, 1, 1),
    ("writer's CPU work, no IO", None, SUBMITTERS, 1),
    ("fsync_always", Some(FsyncPolicy::Always), SUBMITTERS, 1),
    (
        "fsync_interval_200ms",
        Some(FsyncPolicy::Interval(DEFAULT_FSYNC_INTERVAL)),
        SUBMITTERS,
        1,
    ),
    (
        "fsync_always, 16 submitters",
        Some(FsyncPolicy::Always),
        16,
        1,
    ),
    (
        "fsync_always, 2 shards",
        Some(FsyncPolicy::Always),
        SUBMITTERS,
        2,
    ),
    (
        "fsync_interval_200ms, 2 shards",
        Some(FsyncPolicy::Interval(DEFAULT_FSYNC_INTERVAL)),
        SUBMITTERS,
        2,
    ),
];

/// Runs every ingest variant once per round, in turn, so that they share the machine's moods,
/// and prints each one's median and its median ratio to the aggregator alone in the same round.
fn ingest_pass(
    runtime: &tokio::runtime::Runtime,
    base: &Path,
    registry: &Registry,
    batches: &[Vec<Event>],
) {
    let total: u64 = batches.iter().map(|batch| batch.len() as u64).sum();
    let mut rates = vec![Vec::new(); INGEST_VARIANTS.len()];
    let mut ratios = vec![Vec::new(); INGEST_VARIANTS.len()];
    let mut records = vec![Vec::new(); INGEST_VARIANTS.len()];
    for round_number in 0..INGEST_ROUNDS {
        let mut round = vec![0.0; INGEST_VARIANTS.len()];
        // Each round starts with the next variant, so that none always runs first.
        for turn in 0..INGEST_VARIANTS.len() {
            let index = (round_number + turn) % INGEST_VARIANTS.len();
            let (_, fsync, submitters, shards) = &INGEST_VARIANTS[index];
            let elapsed = match fsync {
                None if *submitters == 1 => apply_directly(registry, batches),
                None => writer_work_without_io(registry, batches, *submitters),
                Some(fsync) => {
                    let run = ingest_once(
                        runtime,
                        base,
                        registry,
                        (*fsync, *submitters, *shards),
                        batches,
                    );
                    records[index].push(run.records as f64);
                    run.elapsed
                }
            };
            round[index] = per_second(total, elapsed);
            rates[index].push(round[index]);
        }
        for (index, rate) in round.iter().enumerate() {
            ratios[index].push(rate / round[0]);
        }
    }
    println!(
        "durable ingest, {total} events in batches of {BATCH_EVENTS}, {INGEST_ROUNDS} interleaved rounds (median of the rounds):"
    );
    for (index, (name, fsync, submitters, _)) in INGEST_VARIANTS.iter().enumerate() {
        let groups = if fsync.is_some() {
            format!(
                "; {submitters} submitters, {:.0} events per journal record (group)",
                total as f64 / median(&records[index])
            )
        } else {
            String::new()
        };
        println!(
            "  {name:<28} {:>10.0} events/s  {:.2} x no_journal{groups}",
            median(&rates[index]),
            median(&ratios[index]),
        );
    }
}

/// What the writer does with a group of `group_batches` batches, but the write and the fsync:
/// admit, convert and encode the journal record and checksum it, apply, publish the changes.
fn writer_work_without_io(
    registry: &Registry,
    batches: &[Vec<Event>],
    group_batches: usize,
) -> Duration {
    let mut aggregator = Aggregator::new(settings(), registered(registry));
    let figures = Figures::new(registry, DEFAULT_CHAPTER_COUNT, Utc::now());
    let mut bytes = 0;
    // Admission may rewrite an event's campaign: it works on copies, made before the clock runs.
    let mut batches = batches.to_vec();
    let started = Instant::now();
    for group in batches.chunks_mut(group_batches) {
        let mut admission = Admission::default();
        let admitted: Vec<&Event> = group
            .iter_mut()
            .flatten()
            .filter_map(|event| {
                (aggregator
                    .admit(event, &mut admission)
                    .expect("the runs read")
                    == Applied::Accepted)
                    .then_some(&*event)
            })
            .collect();
        let record = JournalRecord {
            events: admitted
                .iter()
                .map(|event| StoredEvent::from(*event))
                .collect(),
            event_identity: EventIdentity::SourceAndEventId.into(),
            ..JournalRecord::default()
        };
        let payload = record.encode_to_vec();
        bytes += payload.len() + usize::from(crc32c::crc32c(&payload) == 0);
        for event in admitted {
            aggregator.apply(event).expect("a campaign slot");
        }
        figures.publish(0, aggregator.drain_changes(), Utc::now());
    }
    let elapsed = started.elapsed();
    assert!(bytes > 0);
    elapsed
}

fn ingest_benches(
    criterion: &mut Criterion,
    registry: &Registry,
    events: &[Event],
    base: &Path,
    rates: &Rates,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let batches: Vec<Vec<Event>> = events.chunks(BATCH_EVENTS).map(<[Event]>::to_vec).collect();
    let total = events.len() as u64;
    ingest_pass(&runtime, base, registry, &batches);
    let mut group = criterion.benchmark_group("durable_ingest");
    group
        .throughput(Throughput::Elements(total))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(1));
    for (name, fsync) in [
        ("fsync_always", FsyncPolicy::Always),
        (
            "fsync_interval_200ms",
            FsyncPolicy::Interval(DEFAULT_FSYNC_INTERVAL),
        ),
    ] {
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iterations| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    let run =
                        ingest_once(&runtime, base, registry, (fsync, SUBMITTERS, 1), &batches);
                    record_rate(
                        rates,
                        &format!("durable_ingest/{name}"),
                        per_second(total, run.elapsed),
                    );
                    elapsed += run.elapsed;
                }
                elapsed
            });
        });
    }
    group.bench_function("no_journal", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                let run = apply_directly(registry, &batches);
                record_rate(rates, "durable_ingest/no_journal", per_second(total, run));
                elapsed += run;
            }
            elapsed
        });
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. The journal alone against redb.

/// Groups of [`GROUP_EVENTS`] events as the writer journals them.
fn journal_records(events: &[Event]) -> Vec<JournalRecord> {
    events
        .chunks_exact(GROUP_EVENTS)
        .take(PREPARED_GROUPS)
        .map(|chunk| JournalRecord {
            events: chunk.iter().map(StoredEvent::from).collect(),
            event_identity: EventIdentity::SourceAndEventId.into(),
            ..JournalRecord::default()
        })
        .collect()
}

/// One of the stores compared, open on its own directory.
enum Store {
    Journal(Journal),
    Redb(Database),
    /// The floor: the encoded record appended to a plain file and `fdatasync`ed, no framing.
    RawFile(std::fs::File),
}

impl Store {
    fn open_journal(dir: &Path) -> Store {
        let (journal, _) = Journal::open(
            dir,
            FsyncPolicy::Always,
            DEFAULT_SEGMENT_BYTES,
            0,
            |_, _| {},
        )
        .expect("the journal opens");
        Store::Journal(journal)
    }

    fn open_redb(dir: &Path) -> Store {
        std::fs::create_dir_all(dir).expect("the redb directory can be created");
        let database = Database::create(dir.join("journal.redb")).expect("redb creates its file");
        Store::Redb(database)
    }

    fn open_raw_file(dir: &Path) -> Store {
        std::fs::create_dir_all(dir).expect("the directory can be created");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("records"))
            .expect("the file opens");
        Store::RawFile(file)
    }

    /// Appends one group at `position` and makes it durable; returns the time spent in fsync
    /// when the store says.
    fn append(&mut self, position: u64, record: &JournalRecord) -> Duration {
        match self {
            Store::Journal(journal) => journal.append(record).expect("the journal appends").fsync,
            Store::Redb(database) => {
                // The journal encodes inside `append`: so does this.
                let payload = record.encode_to_vec();
                let mut transaction = database.begin_write().expect("a write transaction");
                transaction.set_durability(Durability::Immediate);
                {
                    let mut table = transaction.open_table(REDB_TABLE).expect("the table opens");
                    table
                        .insert(position, payload.as_slice())
                        .expect("redb inserts");
                }
                transaction.commit().expect("redb commits");
                Duration::ZERO
            }
            Store::RawFile(file) => {
                let payload = record.encode_to_vec();
                file.write_all(&payload).expect("the file is written");
                let started = Instant::now();
                file.sync_data().expect("the file syncs");
                started.elapsed()
            }
        }
    }
}

/// Appends the same groups to a fresh journal and a fresh redb file, in interleaved rounds, and
/// prints what each took and wrote.
fn bytes_pass(records: &[JournalRecord], base: &Path) {
    let dir = temp_dir(base);
    let mut stores = [
        (
            "raw file",
            Store::open_raw_file(&dir.path().join("raw")),
            dir.path().join("raw"),
        ),
        (
            "journal",
            Store::open_journal(&dir.path().join("journal")),
            dir.path().join("journal"),
        ),
        (
            "redb",
            Store::open_redb(&dir.path().join("redb")),
            dir.path().join("redb"),
        ),
    ];
    let mut totals = [(Duration::ZERO, 0u64, Duration::ZERO); 3];
    let per_round = BYTES_PASS_GROUPS / BYTES_PASS_ROUNDS;
    // Per round, the journal's time over redb's and over the plain file's.
    let mut against_redb = Vec::new();
    let mut against_raw = Vec::new();
    for round in 0..BYTES_PASS_ROUNDS {
        let mut times = [Duration::ZERO; 3];
        // Each round starts with the next store, so that none always runs first.
        for turn in 0..stores.len() {
            let index = (round + turn) % stores.len();
            let (_, store, _) = &mut stores[index];
            let (elapsed, written, fsync) = &mut totals[index];
            let time = &mut times[index];
            let io_before = io_write_bytes();
            let started = Instant::now();
            for index in round * per_round..(round + 1) * per_round {
                *fsync += store.append(index as u64, &records[index % records.len()]);
            }
            *time = started.elapsed();
            *elapsed += *time;
            *written += io_write_bytes() - io_before;
        }
        against_raw.push(times[1].as_secs_f64() / times[0].as_secs_f64());
        against_redb.push(times[1].as_secs_f64() / times[2].as_secs_f64());
    }
    let events = (per_round * BYTES_PASS_ROUNDS * GROUP_EVENTS) as u64;
    println!(
        "journal against redb (and a plain file appended and fdatasynced, the floor), one pass each of {} groups of {GROUP_EVENTS} events, interleaved in {BYTES_PASS_ROUNDS} rounds:",
        per_round * BYTES_PASS_ROUNDS
    );
    for ((name, _, path), (elapsed, written, fsync)) in stores.iter().zip(totals) {
        let file = dir_bytes(path);
        println!(
            "  {name:<8} {:>7.0} groups/s {:>10.0} events/s; file {:.1} bytes/event; written to storage {:.1} bytes/event{}",
            per_second((per_round * BYTES_PASS_ROUNDS) as u64, elapsed),
            per_second(events, elapsed),
            file as f64 / events as f64,
            written as f64 / events as f64,
            if fsync > Duration::ZERO {
                format!(
                    "; {:.0}% of the time in fdatasync",
                    100.0 * fsync.as_secs_f64() / elapsed.as_secs_f64()
                )
            } else {
                String::new()
            }
        );
    }
    println!(
        "  the journal takes {:.2} x redb's time and {:.2} x the plain file's (median of the rounds)",
        median(&against_redb),
        median(&against_raw)
    );
}

fn journal_benches(criterion: &mut Criterion, events: &[Event], base: &Path, rates: &Rates) {
    let records = journal_records(events);
    let encoded: usize = records.iter().map(Message::encoded_len).sum();
    println!(
        "journal groups: {} prepared, {:.0} encoded bytes each on average",
        records.len(),
        encoded as f64 / records.len() as f64
    );
    bytes_pass(&records, base);
    let mut group = criterion.benchmark_group("journal_vs_kv");
    group
        .throughput(Throughput::Elements(GROUP_EVENTS as u64))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    type Open = fn(&Path) -> Store;
    let stores: [(&str, Open); 2] = [
        ("journal_append_fsync", Store::open_journal),
        ("redb_commit_immediate", Store::open_redb),
    ];
    for (name, open) in stores {
        let dir = temp_dir(base);
        let mut store = open(&dir.path().join("store"));
        let mut position = 0u64;
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iterations| {
                let started = Instant::now();
                for _ in 0..iterations {
                    store.append(position, &records[position as usize % records.len()]);
                    position += 1;
                }
                let elapsed = started.elapsed();
                record_rate(
                    rates,
                    &format!("journal_vs_kv/{name}"),
                    per_second(iterations * GROUP_EVENTS as u64, elapsed),
                );
                elapsed
            });
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. Recovery and checkpoints, measured once.

/// What each learner of the recovery measurement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A whole funnel, in the proportions of the programme: the click that brought them (with a
    /// browser id 80% of the time), a visitor who bounced for 60% of them, the enrolment; 90%
    /// start; 60% of those complete the 12 chapters and are certified, the others complete
    /// some chapters. About 12 events (remembered ids) per learner.
    Funnel,
    /// One certificate each: every stage of the learner, one remembered id.
    Certified,
}

/// Learners spread over the registry's campaigns and direct traffic, by the same weights as
/// the core benchmarks ([`campaign_spread`]).
struct Population {
    campaigns: Vec<String>,
    spread: WeightedIndex<u64>,
    start: DateTime<Utc>,
    days: i64,
    shape: Shape,
}

/// splitmix64: a bijection of `u64`, so distinct inputs give distinct ids.
fn mix(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

fn key_words(value: u64, salt: u32) -> [u32; 3] {
    let mixed = mix(value);
    [mixed as u32, (mixed >> 32) as u32, salt]
}

impl Population {
    fn new(registry: &Registry, shape: Shape) -> Population {
        let mut campaigns = vec![DIRECT_CAMPAIGN.to_owned()];
        campaigns.extend(registered(registry));
        Population {
            campaigns,
            spread: campaign_spread(registry),
            start: Utc
                .with_ymd_and_hms(2020, 9, 1, 6, 0, 0)
                .single()
                .expect("a valid date"),
            // To 2021-02-04, the programme's published figures.
            days: 156,
            shape,
        }
    }

    /// Every event of learner `learner`, each with a distinct id drawn from `next_id`.
    fn learner_events(
        &self,
        rng: &mut ChaCha8Rng,
        learner: u64,
        next_id: &mut u64,
        out: &mut Vec<Event>,
    ) {
        let campaign = &self.campaigns[self.spread.sample(rng)];
        let key = LearnerKey(key_words(learner, 0x5eed));
        let enrolled_day = rng.random_range(0..self.days - 30);
        let mut event = |rng: &mut ChaCha8Rng, action: Action, day: i64| {
            *next_id += 1;
            out.push(Event {
                id: EventId(key_words(*next_id, 0xe7e7)),
                id_prefix: rng.random(),
                content: rng.random(),
                campaign: campaign.clone(),
                action,
                occurred_at: self.start
                    + TimeDelta::days(day)
                    + TimeDelta::seconds(rng.random_range(0..15 * 3600)),
            });
        };
        let progress = |stage| Action::Progress {
            learner: key,
            stage,
        };
        if self.shape == Shape::Certified {
            event(rng, progress(Stage::Certified), enrolled_day + 20);
            return;
        }
        let visitor = |rng: &mut ChaCha8Rng| {
            let id: u64 = rng.random();
            rng.random_bool(VISITOR_RATE)
                .then(|| VisitorKey(key_words(id, 0x0b0b)))
        };
        let click = Action::Click {
            visitor: visitor(rng),
            learner: None,
        };
        event(rng, click, enrolled_day);
        if rng.random_bool(0.6) {
            let click = Action::Click {
                visitor: visitor(rng),
                learner: None,
            };
            let day = rng.random_range(0..self.days);
            event(rng, click, day);
        }
        event(rng, progress(Stage::Enrolled), enrolled_day);
        if !rng.random_bool(START_RATE) {
            return;
        }
        let mut day = enrolled_day + rng.random_range(0..3);
        event(rng, progress(Stage::Started), day);
        let certified = rng.random_bool(CERTIFY_RATE);
        let chapters = if certified {
            DEFAULT_CHAPTER_COUNT
        } else {
            rng.random_range(0..DEFAULT_CHAPTER_COUNT)
        };
        for chapter in 1..=chapters {
            day += rng.random_range(0..2);
            event(rng, progress(Stage::ChapterCompleted(chapter)), day);
        }
        if certified {
            event(rng, progress(Stage::Certified), day);
        }
    }
}

fn replay_events_wanted() -> usize {
    std::env::var("SUIVI_BENCH_REPLAY_EVENTS")
        .ok()
        .map(|text| {
            text.replace('_', "")
                .parse()
                .expect("SUIVI_BENCH_REPLAY_EVENTS is a number")
        })
        .unwrap_or(REPLAY_EVENTS)
}

fn shape_wanted() -> Shape {
    match std::env::var("SUIVI_BENCH_SHAPE").as_deref() {
        Err(_) | Ok("funnel") => Shape::Funnel,
        Ok("certified") => Shape::Certified,
        Ok(other) => panic!("SUIVI_BENCH_SHAPE is funnel or certified, not {other:?}"),
    }
}

/// Builds an aggregator of `learners` learners directly from events (no parsing, no IO), then
/// measures, once each and printing as it goes:
///
/// - the checkpoint as the writer writes it first: `Aggregator::freeze` (while ingestion
///   pauses) and `Aggregator::seal`, then every id sorted and written in one run
///   (`SealedIds::in_order`, `runs::write`, which builds the run's filter on the way) and
///   the rest of the state in the checkpoint file (`checkpoint::write_parts`), their sizes;
/// - a restart from it: `checkpoint::read`, `runs::open` (the run read and its filter built:
///   the ids stay on disk), `Aggregator::restore`, and the whole of
///   `pipeline::state::recover` (checkpoint and an empty journal), what §7 bounds at 3 s for ten
///   million learners; then the same restore without the remembered event ids, to show their
///   share;
/// - memory: resident bytes per (campaign, learner) held, built and restored, all included;
/// - replay: a journal of `SUIVI_BENCH_REPLAY_EVENTS` events of the same population, in a
///   shuffled order, written in groups of 1,000, then `pipeline::state::recover` with no checkpoint
///   (every counter rebuilt from the journal), with read and decode alone, decode and
///   conversion alone, and applying the same events from memory alone, to tell the costs
///   apart.
///
/// The files just written are in the page cache: the restart figures are those of a warm
/// cache (a service restarted, not a machine rebooted).
fn recovery_report(learners: u64) {
    let base = bench_base();
    let dir = temp_dir(&base);
    let shape = shape_wanted();
    let registry = Registry::load(None).expect("the embedded campaign registry parses");
    let population = Population::new(&registry, shape);
    let rss_start = rss_bytes();
    let vm_rss = status_bytes("VmRSS");
    assert!(
        rss_start.abs_diff(vm_rss) < 1 << 20,
        "statm pages are {PAGE_BYTES} bytes: {rss_start} against VmRSS {vm_rss}"
    );
    println!(
        "recovery and checkpoints: {learners} learners ({shape:?}); files under {}",
        describe_dir(dir.path())
    );

    // Build.
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut next_id = 0;
    let started = Instant::now();
    let aggregator = stall::build(
        &registry,
        &population,
        (&mut rng, &mut next_id),
        0..learners,
    );
    let build = started.elapsed();
    let holdings = aggregator.holdings();
    let rss_built = rss_bytes();
    println!(
        "  built in {build:.2?} ({:.0} events/s, in per-learner order): {} campaigns, {} learners, {} (campaign, learner) records, {} event ids ({:.1} per learner), {} resident MiB",
        per_second(next_id, build),
        holdings.campaigns,
        holdings.learners,
        holdings.campaign_learners,
        holdings.event_ids,
        holdings.event_ids as f64 / holdings.learners as f64,
        mib(rss_built - rss_start)
    );
    print_memory("built", rss_built - rss_start, &holdings, None);

    // Checkpoint, as the writer's first one of a state whose ids are in no run yet: every id
    // in one run, then the rest of the state in the checkpoint file.
    let checkpoint_dir = dir.path().join("checkpoints");
    let mut aggregator = aggregator;
    let started = Instant::now();
    let sealed = aggregator.seal();
    let frozen = aggregator.freeze();
    let freeze = started.elapsed();
    let started = Instant::now();
    let ids = sealed.in_order();
    let sort = started.elapsed();
    let started = Instant::now();
    let run =
        runs::write(&checkpoint_dir, (1, 1), ids.len() as u64, ids).expect("the id run is written");
    let run_write = started.elapsed();
    let run_bytes = run.id_run().entries * ENTRY_BYTES as u64;
    drop(sealed);
    let run = *run.id_run();
    let started = Instant::now();
    let (path, bytes) = checkpoint::write_parts(
        &checkpoint_dir,
        0,
        frozen.parts(
            0,
            Vec::new(),
            StoredIds::Runs {
                runs: vec![run],
                generation: 1,
            },
        ),
    )
    .expect("the checkpoint is written");
    let write = started.elapsed();
    println!(
        "  checkpoint: Aggregator::freeze (ingestion paused) {freeze:.2?}; on the helper thread: every id sorted (SealedIds::in_order) {sort:.2?}, their run written {run_write:.2?} ({:.0} MiB/s), the rest written (checkpoint::write_parts) {write:.2?} ({:.0} MiB/s)",
        mib(run_bytes) / run_write.as_secs_f64(),
        mib(bytes) / write.as_secs_f64()
    );
    println!(
        "  checkpoint file: {:.1} MiB, {:.1} bytes per learner, {:.1} per (campaign, learner); the id run beside it: {:.1} MiB ({:.0}% of both), written once (a later checkpoint writes only the ids new since)",
        mib(bytes),
        bytes as f64 / holdings.learners as f64,
        bytes as f64 / holdings.campaign_learners as f64,
        mib(run_bytes),
        100.0 * run_bytes as f64 / (bytes + run_bytes) as f64
    );
    drop(aggregator);
    let rss_dropped = rss_bytes();

    // Restart from the checkpoint.
    let started = Instant::now();
    drop(std::fs::read(&path).expect("the checkpoint file reads"));
    drop(std::fs::read(runs::path(&checkpoint_dir, &run)).expect("the run file reads"));
    let file_read = started.elapsed();
    let started = Instant::now();
    let stored = checkpoint::read(&path).expect("the checkpoint reads back");
    let read = started.elapsed();
    let started = Instant::now();
    let written = runs::open(&checkpoint_dir, std::slice::from_ref(&run)).expect("the run opens");
    let run_read = started.elapsed();
    let filter_bytes = written.filter_bytes();
    filter_report(&written);
    let started = Instant::now();
    let restored = Aggregator::restore(settings(), registered(&registry), &stored, &[], written)
        .expect("the checkpoint restores");
    let restore = started.elapsed();
    assert_eq!(
        restored.holdings(),
        holdings,
        "the restored state is the built one"
    );
    drop(restored);
    let started = Instant::now();
    let without_ids = Aggregator::restore(
        settings(),
        registered(&registry),
        &stored,
        &[],
        Default::default(),
    )
    .expect("the checkpoint restores");
    let restore_without_ids = started.elapsed();
    drop(without_ids);
    drop(stored);
    println!(
        "  checkpoint::read: {read:.2?}; runs::open: {run_read:.2?}, its filter {:.1} MiB, {:.2} bytes an id (reading both files alone, from the page cache: {file_read:.2?}); Aggregator::restore: {restore:.2?} (without the event ids: {restore_without_ids:.2?}); reads + restore: {:.2?}",
        mib(filter_bytes as u64),
        filter_bytes as f64 / holdings.event_ids as f64,
        read + run_read + restore
    );
    let storage = DurableSettings {
        journal_dir: dir.path().join("journal"),
        checkpoint_dir: checkpoint_dir.clone(),
        fsync: FsyncPolicy::Always,
        segment_bytes: DEFAULT_SEGMENT_BYTES,
        max_record_bytes: MAX_RECORD_BYTES,
    };
    let rss_before_recover = rss_bytes();
    let recovered =
        state::recover(&storage, settings(), registered(&registry)).expect("recovery succeeds");
    let rss_restored = rss_bytes();
    println!(
        "  restart: pipeline::state::recover from the checkpoint (and an empty journal): {:.2?}  [§7: under 3 s for ten million learners]",
        recovered.report.duration
    );
    print_memory(
        "restored (after a state dropped)",
        rss_restored.saturating_sub(rss_before_recover),
        &holdings,
        Some(recovered.state.aggregator.written().filter_bytes() as u64),
    );
    println!(
        "  resident: {:.0} MiB built, {:.0} MiB once it was dropped, {:.0} MiB at most (VmHWM)",
        mib(rss_built),
        mib(rss_dropped),
        mib(status_bytes("VmHWM"))
    );
    drop(recovered);
    std::fs::remove_dir_all(&checkpoint_dir).expect("the checkpoints are removed");
    std::fs::remove_dir_all(dir.path().join("journal")).expect("the journal is removed");

    replay_report(&registry, &population, dir.path());
}

/// Prints what the filters of `written` cost: lookups of ids never seen (the share a
/// fingerprint matches by chance, each of which reads an entry from the run) and of ids held
/// (each reads its entry), a million of each, one at a time.
fn filter_report(written: &suivi::aggregate::Written) {
    const PROBES: u32 = 1_000_000;
    // Ids never seen: the bench's ids are counted from zero in their first word.
    let absent = |n: u32| EventId([n ^ 0x5bd1_e995, 0xdead_beef, !n]);
    let matched = (0..PROBES)
        .filter(|n| written.may_hold(&absent(*n)))
        .count();
    let started = Instant::now();
    for n in 0..PROBES {
        assert!(
            written.find(&absent(n)).expect("the runs read").is_none(),
            "an id never seen is not found"
        );
    }
    let absent_time = started.elapsed();
    let held: Vec<EventId> = written
        .runs()
        .iter()
        .flat_map(|run| run.entries())
        .step_by(97)
        .take(PROBES as usize)
        .map(|entry| {
            let [a, b, c, _] = entry.expect("the run reads");
            EventId([a, b, c])
        })
        .collect();
    let started = Instant::now();
    for id in &held {
        assert!(
            written.find(id).expect("the runs read").is_some(),
            "an id held is found"
        );
    }
    let held_time = started.elapsed();
    println!(
        "  filters: {} runs; {PROBES} ids never seen looked up in {absent_time:.2?} ({:.0} ns each), {matched} matched by chance ({:.1} in 100,000: an entry read for nothing); {} ids held looked up, each read from its run, in {held_time:.2?} ({:.0} ns each)",
        written.runs().len(),
        absent_time.as_nanos() as f64 / f64::from(PROBES),
        matched as f64 * 100_000.0 / f64::from(PROBES),
        held.len(),
        held_time.as_nanos() as f64 / held.len().max(1) as f64,
    );
}

/// Prints what `held` resident bytes are per record: all of it per (campaign, learner), then
/// split between the ids (`id_bytes`, or, when `None`, a table of every id: hashbrown's layout
/// of a power of two of 17-byte buckets, at most 7/8 full, which depends on where the count
/// falls between two powers of two) and the rest. Resident memory grows only past what the
/// allocator already holds: after a state was dropped, `held` says little.
fn print_memory(when: &str, held: u64, holdings: &Holdings, id_bytes: Option<u64>) {
    let ids = holdings.event_ids as u64;
    let id_memory = id_bytes.unwrap_or_else(|| {
        let mut buckets = 4u64;
        while buckets / 8 * 7 < ids.max(4) {
            buckets *= 2;
        }
        buckets * 17 + 16
    });
    let layout = if id_bytes.is_some() {
        "the ids' filters"
    } else {
        "the id table's layout"
    };
    println!(
        "  memory held, {when}: {:.1} bytes per (campaign, learner), everything included; by {layout}, {:.1} bytes per event id ({:.0} MiB) and {:.1} per (campaign, learner) for the rest (the learners' records, visitors, timelines)  [§7: <= 64 per (campaign, learner), <= 16 per event id]",
        held as f64 / holdings.campaign_learners as f64,
        id_memory as f64 / ids.max(1) as f64,
        mib(id_memory),
        held.saturating_sub(id_memory) as f64 / holdings.campaign_learners as f64,
    );
}

/// Writes a journal of shuffled events of `population`, then replays it.
fn replay_report(registry: &Registry, population: &Population, dir: &Path) {
    let wanted = replay_events_wanted();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED + 1);
    let mut next_id = 0;
    let mut events = Vec::with_capacity(wanted + 64);
    let mut learner = 0;
    while events.len() < wanted {
        population.learner_events(&mut rng, learner, &mut next_id, &mut events);
        learner += 1;
    }
    events.truncate(wanted);
    events.shuffle(&mut rng);
    let journal_dir = dir.join("replay-journal");
    let started = Instant::now();
    let (mut journal, _) = Journal::open(
        &journal_dir,
        FsyncPolicy::Interval(DEFAULT_FSYNC_INTERVAL),
        DEFAULT_SEGMENT_BYTES,
        0,
        |_, _| {},
    )
    .expect("the journal opens");
    for chunk in events.chunks(GROUP_EVENTS) {
        let record = JournalRecord {
            events: chunk.iter().map(StoredEvent::from).collect(),
            event_identity: EventIdentity::SourceAndEventId.into(),
            ..JournalRecord::default()
        };
        journal.append(&record).expect("the journal appends");
        journal.sync_if_due().expect("the journal syncs");
    }
    journal.sync().expect("the journal syncs");
    drop(journal);
    let journal_bytes = dir_bytes(&journal_dir);
    println!(
        "replay: a journal of {} events of {learner} learners, shuffled, {:.1} MiB ({:.1} bytes/event), written in groups of {GROUP_EVENTS} in {:.2?}",
        events.len(),
        mib(journal_bytes),
        journal_bytes as f64 / events.len() as f64,
        started.elapsed()
    );

    // Applying alone, from memory, twice each way, alternately: the faster of each is kept.
    // One event after the other, and as replay does, each WARM_EVENTS looked up first.
    let (mut apply_one_by_one, mut apply) = (Duration::MAX, Duration::MAX);
    for _ in 0..2 {
        let mut aggregator = Aggregator::new(settings(), registered(registry));
        let started = Instant::now();
        for event in &events {
            aggregator.apply(event).expect("a campaign slot");
        }
        apply_one_by_one = apply_one_by_one.min(started.elapsed());
        drop(aggregator);
        let mut aggregator = Aggregator::new(settings(), registered(registry));
        let started = Instant::now();
        for ahead in events.chunks(WARM_EVENTS) {
            aggregator.warm(ahead);
            for event in ahead {
                aggregator.apply(event).expect("a campaign slot");
            }
        }
        apply = apply.min(started.elapsed());
    }
    let count = events.len() as u64;
    drop(events);

    // Reading, checking and decoding alone.
    // Each pass twice, the faster kept: the first one also pays for the allocator's growth.
    let open = |convert: bool| {
        (0..2)
            .map(|_| open_journal_once(&journal_dir, count, convert))
            .min()
            .expect("two passes")
    };
    let decode = open(false);
    let convert = open(true);

    let storage = DurableSettings {
        journal_dir: journal_dir.clone(),
        checkpoint_dir: dir.join("no-checkpoints"),
        fsync: FsyncPolicy::Always,
        segment_bytes: DEFAULT_SEGMENT_BYTES,
        max_record_bytes: MAX_RECORD_BYTES,
    };
    let replays: Vec<Duration> = (0..2)
        .map(|_| {
            let recovered = state::recover(&storage, settings(), registered(registry))
                .expect("recovery succeeds");
            assert_eq!(recovered.report.events_replayed, count);
            recovered.report.duration
        })
        .collect();
    let replay = replays.iter().min().copied().expect("two passes");
    println!(
        "  pipeline::state::recover with no checkpoint: {replay:.2?}, {:.0} events/s (the faster of {replays:.2?})  [§7: >= 3,000,000 events/s]",
        per_second(count, replay),
    );
    println!(
        "  of which: read + check + decode records {decode:.2?} ({:.0} events/s); + convert to events {convert:.2?} ({:.0} events/s); applying the same events from memory alone {apply:.2?} ({:.0} events/s, each {WARM_EVENTS} looked up first as replay does; one after the other without: {apply_one_by_one:.2?}, {:.0} events/s)",
        per_second(count, decode),
        per_second(count, convert),
        per_second(count, apply),
        per_second(count, apply_one_by_one)
    );
}

/// Opens the journal at `journal_dir`, decoding every record (and converting each event when
/// `convert`), and applies nothing; returns the time it took.
fn open_journal_once(journal_dir: &Path, count: u64, convert: bool) -> Duration {
    let mut converted = 0u64;
    let started = Instant::now();
    let (_journal, report) = Journal::open(
        journal_dir,
        FsyncPolicy::Always,
        DEFAULT_SEGMENT_BYTES,
        0,
        |_, record| {
            if convert {
                for stored in record.events {
                    let event = Event::try_from(stored).expect("journaled events convert");
                    converted += u64::from(event.id.0 != [0; 3]);
                }
            }
        },
    )
    .expect("the journal opens");
    let elapsed = started.elapsed();
    assert_eq!(report.events_replayed, count);
    assert!(!convert || converted == count);
    elapsed
}
