//! The benchmarks of suivi's core, on a generated programme shaped like the published one:
//! event parsing (protobuf and JSON, batches of 1,000) and aggregation (a fresh rebuild from a
//! recorded history, re-sent duplicates, and the pipeline's drain every 1,000 events). Every
//! input is generated, from a fixed seed, before anything is timed; throughput is in events.
//!
//! With `SUIVI_BENCH_MEMORY=1` it runs no benchmark: it measures instead, by the process's
//! resident memory, what an aggregator holds per (campaign, learner) and per remembered event
//! id, each case in a fresh child process. BENCHMARKS.md says how to run both and what they gave.

use std::cell::{LazyCell, RefCell};
use std::collections::HashMap;
use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{Criterion, SamplingMode, Throughput};
use prost::Message;
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::value::RawValue;

use suivi::aggregate::{Aggregator, Applied};
use suivi::config::DEFAULT_CHAPTER_COUNT;
use suivi::day::Day;
use suivi::event::{Event, EventKind, EventParser, JsonEvent, RawEvent, RawKind, RawTime};
use suivi::proto;
use suivi::registry::Registry;

mod common;
use common::{
    BATCH_EVENTS, CERTIFY_RATE, SEED, START_RATE, VISITOR_RATE, campaign_spread, parser,
    registered, settings, status_kib,
};

/// Learners of the programme whose history the aggregation benchmarks replay.
const AGGREGATE_LEARNERS: usize = 200_000;
/// Learners of the memory measurement, unless `SUIVI_BENCH_LEARNERS` says otherwise.
const MEMORY_LEARNERS: usize = 1_000_000;

/// The share of each kind in the parsing mix, in percent: the shape of a live stream, where
/// clicks and chapter completions dominate.
const PARSE_MIX: [(EventKind, u32); 5] = [
    (EventKind::LinkClicked, 35),
    (EventKind::Enrolled, 10),
    (EventKind::CourseStarted, 9),
    (EventKind::ChapterCompleted, 40),
    (EventKind::Certified, 6),
];

/// Clicks on a link that are followed by no enrolment, per enrolled learner: 1 or 2.
const MAX_ANONYMOUS_CLICKS: u32 = 2;

/// Sizes of the aggregator's tables' entries, read from src/aggregate: an event id is
/// `[u32; 4]`; a learner's `Record` (src/aggregate/learners.rs) is 48 bytes beside its 12-byte
/// `LearnerKey`, padded to 64 (the box of its rare cases aligns it at 8); a visitor is its
/// 12-byte `VisitorKey`. They feed the
/// layout estimate printed next to the measured memory, not the measurement itself.
const SEEN_ENTRY_BYTES: usize = 16;
const LEARNER_ENTRY_BYTES: usize = 12 + 48 + 4;
const VISITOR_ENTRY_BYTES: usize = 12;

fn main() {
    if let Ok(case) = std::env::var("SUIVI_BENCH_MEMORY_CASE") {
        memory_case(&case, memory_learners());
        return;
    }
    if std::env::var_os("SUIVI_BENCH_MEMORY").is_some_and(|value| value != "0") {
        memory_report(memory_learners());
        return;
    }
    // Plots cost more than a second per benchmark and the figures are in the text output.
    let mut criterion = Criterion::default().without_plots().configure_from_args();
    parse_benches(&mut criterion);
    aggregate_benches(&mut criterion);
    criterion.final_summary();
}

// ---------------------------------------------------------------------------------------------
// Generation: a programme shaped like the published one.

/// An event as a platform sends it, before any wire encoding.
#[derive(Debug, Clone)]
struct WireEvent {
    event_id: String,
    kind: EventKind,
    campaign: String,
    source: &'static str,
    learner_id: String,
    visitor_id: String,
    occurred_at: DateTime<Utc>,
    chapter: u32,
}

/// A partner's tracking campaign as the generator uses it.
#[derive(Debug)]
struct CampaignPlan {
    /// The campaign text of the tracking link; empty for direct traffic.
    text: String,
    source: &'static str,
    learner_prefix: &'static str,
    opens: DateTime<Utc>,
}

/// The programme: its campaigns, how learners spread over them, and its time window.
#[derive(Debug)]
struct Programme {
    campaigns: Vec<CampaignPlan>,
    spread: WeightedIndex<u64>,
    closes: DateTime<Utc>,
    /// The registered campaign ids, to build aggregators with.
    registered: Vec<String>,
}

impl Programme {
    fn new() -> Programme {
        let registry = Registry::load(None).expect("the embedded campaign registry parses");
        let start = utc(2020, 9, 1);
        let mut campaigns = vec![CampaignPlan {
            text: String::new(),
            source: "openclassrooms",
            learner_prefix: "oc-",
            opens: start,
        }];
        for campaign in &registry.campaigns {
            let (source, learner_prefix) = match campaign.platform.as_deref() {
                Some("gendform3") => ("gendform3", "gf3-"),
                _ => ("openclassrooms", "oc-"),
            };
            let opens = campaign
                .launched
                .and_then(|date| date.and_hms_opt(8, 0, 0))
                .map_or(start, |at| at.and_utc());
            campaigns.push(CampaignPlan {
                text: campaign.id.clone(),
                source,
                learner_prefix,
                opens,
            });
        }
        Programme {
            campaigns,
            spread: campaign_spread(&registry),
            // The programme's published progress is as of 4 February 2021.
            closes: utc(2021, 2, 4),
            registered: registered(&registry),
        }
    }

    /// Every event one learner causes: the click that brought them, anonymous clicks by
    /// others on the same link, the enrolment, then as far down the funnel as they go, each
    /// stage some time after the one before.
    fn learner_events(&self, rng: &mut ChaCha8Rng, learner: usize, out: &mut Vec<WireEvent>) {
        let plan = &self.campaigns[self.spread.sample(rng)];
        let learner_id = format!("{}{learner:09}", plan.learner_prefix);
        // Leave three weeks before the close, so that most learners have time to progress.
        let window = (self.closes - plan.opens - TimeDelta::days(21)).num_seconds();
        let enrolled_at = plan.opens + TimeDelta::seconds(rng.random_range(0..window));
        let event = |rng: &mut ChaCha8Rng, kind, at, chapter| WireEvent {
            event_id: uuid(rng),
            kind,
            campaign: plan.text.clone(),
            source: plan.source,
            learner_id: if kind == EventKind::LinkClicked {
                String::new()
            } else {
                learner_id.clone()
            },
            visitor_id: if kind == EventKind::LinkClicked && rng.random_bool(VISITOR_RATE) {
                uuid(rng)
            } else {
                String::new()
            },
            occurred_at: at,
            chapter,
        };
        let clicked_at = enrolled_at - TimeDelta::seconds(rng.random_range(10..3_600));
        out.push(event(rng, EventKind::LinkClicked, clicked_at, 0));
        for _ in 0..rng.random_range(1..=MAX_ANONYMOUS_CLICKS) {
            let at = plan.opens + TimeDelta::seconds(rng.random_range(0..window));
            out.push(event(rng, EventKind::LinkClicked, at, 0));
        }
        out.push(event(rng, EventKind::Enrolled, enrolled_at, 0));
        if !rng.random_bool(START_RATE) {
            return;
        }
        let mut at = enrolled_at + TimeDelta::seconds(rng.random_range(0..3 * 86_400));
        out.push(event(rng, EventKind::CourseStarted, at, 0));
        let certified = rng.random_bool(CERTIFY_RATE);
        let chapters = if certified {
            u32::from(DEFAULT_CHAPTER_COUNT)
        } else {
            rng.random_range(0..u32::from(DEFAULT_CHAPTER_COUNT))
        };
        for chapter in 1..=chapters {
            at += TimeDelta::seconds(rng.random_range(600..4 * 86_400));
            out.push(event(rng, EventKind::ChapterCompleted, at, chapter));
        }
        if certified {
            at += TimeDelta::seconds(rng.random_range(1..600));
            out.push(event(rng, EventKind::Certified, at, 0));
        }
    }

    /// One event of a live stream, its kind drawn from [`PARSE_MIX`], for a learner among a
    /// million.
    fn mixed_event(&self, rng: &mut ChaCha8Rng, kinds: &WeightedIndex<u32>) -> WireEvent {
        let plan = &self.campaigns[self.spread.sample(rng)];
        let kind = PARSE_MIX[kinds.sample(rng)].0;
        let clicked = kind == EventKind::LinkClicked;
        let window = (self.closes - plan.opens).num_seconds();
        WireEvent {
            event_id: uuid(rng),
            kind,
            campaign: plan.text.clone(),
            source: plan.source,
            learner_id: if clicked {
                String::new()
            } else {
                format!(
                    "{}{:09}",
                    plan.learner_prefix,
                    rng.random_range(0..1_000_000)
                )
            },
            visitor_id: if clicked && rng.random_bool(VISITOR_RATE) {
                uuid(rng)
            } else {
                String::new()
            },
            occurred_at: plan.opens + TimeDelta::seconds(rng.random_range(0..window)),
            chapter: if kind == EventKind::ChapterCompleted {
                rng.random_range(1..=u32::from(DEFAULT_CHAPTER_COUNT))
            } else {
                0
            },
        }
    }
}

impl WireEvent {
    fn raw(&self) -> RawEvent<'_> {
        RawEvent {
            event_id: &self.event_id,
            kind: RawKind::Known(self.kind),
            campaign: &self.campaign,
            source: self.source,
            learner_id: &self.learner_id,
            visitor_id: &self.visitor_id,
            occurred_at: RawTime::At(self.occurred_at),
            chapter: (self.chapter != 0).then_some(i64::from(self.chapter)),
        }
    }

    fn to_proto(&self) -> proto::LearnerEvent {
        let kind = match self.kind {
            EventKind::LinkClicked => proto::EventKind::LinkClicked,
            EventKind::Enrolled => proto::EventKind::Enrolled,
            EventKind::CourseStarted => proto::EventKind::CourseStarted,
            EventKind::ChapterCompleted => proto::EventKind::ChapterCompleted,
            EventKind::Certified => proto::EventKind::Certified,
        };
        proto::LearnerEvent {
            event_id: self.event_id.clone(),
            kind: kind as i32,
            campaign: self.campaign.clone(),
            source: self.source.to_owned(),
            learner_id: self.learner_id.clone(),
            visitor_id: self.visitor_id.clone(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: self.occurred_at.timestamp(),
                nanos: 0,
            }),
            chapter: self.chapter,
        }
    }

    /// The event as one element of a `POST /v1/events` body: absent fields left out, as a
    /// client serialising optional fields would.
    fn to_json(&self) -> String {
        let mut object = serde_json::Map::new();
        let mut put = |key: &str, value: serde_json::Value| {
            object.insert(key.to_owned(), value);
        };
        put("event_id", self.event_id.clone().into());
        put("kind", self.kind.as_str().into());
        if !self.campaign.is_empty() {
            put("campaign", self.campaign.clone().into());
        }
        put("source", self.source.into());
        if !self.learner_id.is_empty() {
            put("learner_id", self.learner_id.clone().into());
        }
        if !self.visitor_id.is_empty() {
            put("visitor_id", self.visitor_id.clone().into());
        }
        put(
            "occurred_at",
            self.occurred_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .into(),
        );
        if self.chapter != 0 {
            put("chapter", self.chapter.into());
        }
        serde_json::Value::Object(object).to_string()
    }
}

fn utc(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, 0, 0, 0)
        .single()
        .expect("a valid calendar date")
}

/// A random version-4 UUID, as text.
fn uuid(rng: &mut ChaCha8Rng) -> String {
    let bits: u128 = rng.random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        bits >> 96,
        (bits >> 80) & 0xffff,
        (bits >> 68) & 0xfff,
        0x8000 | ((bits >> 48) & 0x3fff),
        bits & 0xffff_ffff_ffff
    )
}

/// The instant against which every generated event is parsed: after all of them, so none is
/// in the future.
fn parse_now() -> DateTime<Utc> {
    utc(2021, 6, 1)
}

fn parse(parser: &EventParser, wire: &WireEvent) -> Event {
    parser
        .parse(&wire.raw(), parse_now())
        .expect("generated events are valid")
}

/// The whole history of `learners` learners, as validated events in a shuffled order.
fn programme_history(programme: &Programme, learners: usize) -> Vec<Event> {
    let parser = parser();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut wire = Vec::new();
    let mut events = Vec::new();
    for learner in 0..learners {
        programme.learner_events(&mut rng, learner, &mut wire);
        events.extend(wire.drain(..).map(|wire| parse(&parser, &wire)));
    }
    events.shuffle(&mut rng);
    events
}

fn describe(events: &[Event]) -> String {
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    for event in events {
        *kinds.entry(event.kind().as_str()).or_default() += 1;
    }
    let share = |kind: EventKind| {
        100.0 * kinds.get(kind.as_str()).copied().unwrap_or(0) as f64 / events.len() as f64
    };
    format!(
        "{} events: link_clicked {:.0}%, enrolled {:.0}%, course_started {:.0}%, chapter_completed {:.0}%, certified {:.0}%",
        events.len(),
        share(EventKind::LinkClicked),
        share(EventKind::Enrolled),
        share(EventKind::CourseStarted),
        share(EventKind::ChapterCompleted),
        share(EventKind::Certified),
    )
}

// ---------------------------------------------------------------------------------------------
// Parsing.

fn parse_benches(criterion: &mut Criterion) {
    let programme = Programme::new();
    let kinds = WeightedIndex::new(PARSE_MIX.map(|(_, weight)| weight))
        .expect("the parse mix weights are positive");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let batch: Vec<WireEvent> = (0..BATCH_EVENTS)
        .map(|_| programme.mixed_event(&mut rng, &kinds))
        .collect();
    let parser = parser();
    let now = parse_now();

    let messages: Vec<proto::LearnerEvent> = batch.iter().map(WireEvent::to_proto).collect();
    let request = proto::IngestRequest {
        events: messages.clone(),
    }
    .encode_to_vec();
    let elements: Vec<String> = batch.iter().map(WireEvent::to_json).collect();
    let body = format!("[{}]", elements.join(","));
    eprintln!(
        "parse batch: {} events, {} bytes as protobuf, {} bytes as JSON",
        batch.len(),
        request.len(),
        body.len()
    );

    let mut group = criterion.benchmark_group("parse");
    group
        .throughput(Throughput::Elements(BATCH_EVENTS as u64))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    // What the gRPC edge does once prost has decoded the request.
    group.bench_function("protobuf", |b| {
        b.iter(|| {
            messages
                .iter()
                .map(|message| parser.parse(&RawEvent::from(message), now))
                .collect::<Vec<_>>()
        })
    });
    // The same with the decoding of the request's bytes.
    group.bench_function("protobuf_bytes", |b| {
        b.iter(|| {
            let request = proto::IngestRequest::decode(black_box(request.as_slice()))
                .expect("the request decodes");
            request
                .events
                .iter()
                .map(|message| parser.parse(&RawEvent::from(message), now))
                .collect::<Vec<_>>()
        })
    });
    // What the HTTP edge does with each element of a body already split.
    group.bench_function("json_element", |b| {
        b.iter(|| {
            elements
                .iter()
                .map(|element| {
                    JsonEvent::decode(element).and_then(|event| parser.parse(&event.raw(), now))
                })
                .collect::<Vec<_>>()
        })
    });
    // The same with the split of the body into elements, as `POST /v1/events` does it.
    group.bench_function("json_body", |b| {
        b.iter(|| {
            let elements: Vec<&RawValue> =
                serde_json::from_str(black_box(&body)).expect("the body is a JSON array");
            elements
                .iter()
                .map(|element| {
                    JsonEvent::decode(element.get())
                        .and_then(|event| parser.parse(&event.raw(), now))
                })
                .collect::<Vec<_>>()
        })
    });
    group.finish();

    // The calendar day of each event, which the aggregator computes for every new event.
    let time_zone = settings().time_zone;
    let instants: Vec<DateTime<Utc>> = batch.iter().map(|wire| wire.occurred_at).collect();
    let mut group = criterion.benchmark_group("parts");
    group
        .throughput(Throughput::Elements(BATCH_EVENTS as u64))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("day_of", |b| {
        b.iter(|| instants.iter().map(|at| Day::of(*at, time_zone)).max())
    });
    group.bench_function("event_id", |b| {
        b.iter(|| {
            batch
                .iter()
                .map(|wire| {
                    suivi::event::event_id(black_box(wire.source), black_box(&wire.event_id))
                })
                .max()
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Aggregation.

fn aggregate_benches(criterion: &mut Criterion) {
    let programme = Programme::new();
    let settings = settings();
    let fresh = || Aggregator::new(settings.clone(), programme.registered.iter().cloned());
    // Generated on first use only, so that a run filtered to other benchmarks skips it.
    let history = LazyCell::new(|| {
        let started = Instant::now();
        let history = programme_history(&programme, AGGREGATE_LEARNERS);
        eprintln!(
            "aggregate history: {AGGREGATE_LEARNERS} learners, {}; generated in {:.1?}",
            describe(&history),
            started.elapsed()
        );
        history
    });
    // The state the duplicates are sent to, built outside timing, and a check that the history
    // is what it should be: every event accepted, once.
    let filled = LazyCell::new(|| {
        let mut aggregator = fresh();
        let rejected = history
            .iter()
            .filter(|event| aggregator.apply(event).expect("a campaign slot") != Applied::Accepted)
            .count();
        assert_eq!(rejected, 0, "every generated event is new and valid");
        let holdings = aggregator.holdings();
        eprintln!(
            "aggregate state: {} campaigns, {} learners, {} (campaign, learner) records, {} event ids",
            holdings.campaigns, holdings.learners, holdings.campaign_learners, holdings.event_ids
        );
        RefCell::new(aggregator)
    });

    let mut group = criterion.benchmark_group("aggregate");
    // One iteration replays the whole history, a few seconds here: ten samples of one iteration
    // each is the least criterion takes, and the measurement time only needs to cover them.
    group
        .throughput(Throughput::Elements(history_len(AGGREGATE_LEARNERS)))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    // (a) Rebuilding every counter from a recorded history (§7: 3,000,000 events/s). Recovery
    // decodes a journal record and applies its events at once, so they are in cache: each batch
    // is read once, untimed, before it is applied, and only `apply` is timed. Without that, the
    // first read of each event's campaign text misses the cache, a cost that belongs to this
    // benchmark's 300 MB history and not to the service.
    group.bench_function("fresh_shuffled", |b| {
        b.iter_custom(|iterations| {
            let mut timed = Duration::ZERO;
            for _ in 0..iterations {
                let mut aggregator = fresh();
                for batch in history.chunks(BATCH_EVENTS) {
                    black_box(warm(batch));
                    let started = Instant::now();
                    for event in batch {
                        black_box(aggregator.apply(event).expect("a campaign slot"));
                    }
                    timed += started.elapsed();
                }
                drop(aggregator);
            }
            timed
        })
    });
    // (b) A client re-sending everything: every event is a duplicate and changes nothing.
    group.bench_function("all_duplicates", |b| {
        let mut aggregator = filled.borrow_mut();
        b.iter(|| {
            for event in history.iter() {
                black_box(aggregator.apply(event).expect("a campaign slot"));
            }
        })
    });
    // (c) What the pipeline's writer does with each group: apply it, then take the changes,
    // every 1,000 events; timed like (a), so that the two compare.
    group.bench_function("fresh_drain_every_1000", |b| {
        b.iter_custom(|iterations| {
            let mut timed = Duration::ZERO;
            for _ in 0..iterations {
                let mut aggregator = fresh();
                for batch in history.chunks(BATCH_EVENTS) {
                    black_box(warm(batch));
                    let started = Instant::now();
                    for event in batch {
                        black_box(aggregator.apply(event).expect("a campaign slot"));
                    }
                    black_box(aggregator.drain_changes());
                    timed += started.elapsed();
                }
                drop(aggregator);
            }
            timed
        })
    });
    group.finish();
}

/// Reads every byte of `batch` that `apply` reads, as a batch just decoded would be: in cache.
fn warm(batch: &[Event]) -> u64 {
    batch
        .iter()
        .map(|event| {
            let campaign: u64 = event.campaign.bytes().map(u64::from).sum();
            campaign + u64::from(event.id.0[0]) + u64::from(event.content)
        })
        .sum()
}

/// The number of events [`programme_history`] makes for `learners` learners, without keeping
/// them: criterion needs the throughput before the history is generated.
fn history_len(learners: usize) -> u64 {
    let programme = Programme::new();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut wire = Vec::new();
    let mut count = 0;
    for learner in 0..learners {
        programme.learner_events(&mut rng, learner, &mut wire);
        count += wire.len() as u64;
        wire.clear();
    }
    count
}

// ---------------------------------------------------------------------------------------------
// Memory, without criterion.

/// The cases of the memory measurement, each run in its own process so that none inherits
/// another's freed heap.
const MEMORY_CASES: [&str; 3] = ["ids", "learners", "programme"];

fn memory_learners() -> usize {
    std::env::var("SUIVI_BENCH_LEARNERS")
        .ok()
        .map(|text| text.parse().expect("SUIVI_BENCH_LEARNERS is a number"))
        .unwrap_or(MEMORY_LEARNERS)
}

/// Runs each case in a child process and prints what each holds per record.
fn memory_report(learners: usize) {
    let exe = std::env::current_exe().expect("the bench binary knows its own path");
    let mut results: HashMap<&str, HashMap<String, u64>> = HashMap::new();
    for case in MEMORY_CASES {
        let output = Command::new(&exe)
            .env("SUIVI_BENCH_MEMORY_CASE", case)
            .env("SUIVI_BENCH_LEARNERS", learners.to_string())
            .output()
            .expect("the bench binary runs as a child");
        assert!(
            output.status.success(),
            "memory case {case} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text
            .lines()
            .find(|line| line.starts_with("memory "))
            .expect("the child prints one memory line");
        println!("{line}");
        let fields = line
            .split_whitespace()
            .filter_map(|field| field.split_once('='))
            .filter_map(|(key, value)| Some((key.to_owned(), value.parse().ok()?)))
            .collect();
        results.insert(case, fields);
    }
    let value = |case: &str, key: &str| results[case][key] as f64;
    let rss =
        |case: &str| value(case, "rss_after_kib") * 1024.0 - value(case, "rss_before_kib") * 1024.0;

    println!();
    println!("bytes per remembered event id (case ids: clicks without visitor, one campaign):");
    println!(
        "  measured RSS: {:.1}   layout estimate: {:.1}   target: <= 16",
        rss("ids") / value("ids", "event_ids"),
        value("ids", "estimate_bytes") / value("ids", "event_ids"),
    );
    println!(
        "bytes per (campaign, learner) (case learners: one certified event each, minus case ids):"
    );
    println!(
        "  measured RSS: {:.1}   layout estimate: {:.1}   target: <= 64   (the programme totals' own entry per learner included)",
        (rss("learners") - rss("ids")) / value("learners", "campaign_learners"),
        (value("learners", "estimate_bytes") - value("ids", "estimate_bytes"))
            / value("learners", "campaign_learners"),
    );
    println!("whole programme (case programme: the funnel of the benchmarks, every event):");
    println!(
        "  measured RSS: {:.0} MiB for {} (campaign, learner) records and {} event ids: {:.1} bytes per (campaign, learner), all included; layout estimate {:.0} MiB",
        rss("programme") / 1_048_576.0,
        results["programme"]["campaign_learners"],
        results["programme"]["event_ids"],
        rss("programme") / value("programme", "campaign_learners"),
        value("programme", "estimate_bytes") / 1_048_576.0,
    );
}

/// One memory case, in this process: builds an aggregator from generated events, streamed so
/// that nothing but the aggregator grows, and prints one line of `key=value` figures.
fn memory_case(case: &str, learners: usize) {
    let programme = Programme::new();
    let parser = parser();
    let settings = settings();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut wire = Vec::new();
    let rss_before = status_kib("VmRSS");
    let started = Instant::now();
    let mut aggregator = Aggregator::new(settings, programme.registered.iter().cloned());
    for learner in 0..learners {
        match case {
            "ids" => wire.push(WireEvent {
                event_id: uuid(&mut rng),
                kind: EventKind::LinkClicked,
                campaign: "gendarmerie".to_owned(),
                source: "gendform3",
                learner_id: String::new(),
                visitor_id: String::new(),
                occurred_at: utc(2020, 10, 5) + TimeDelta::seconds((learner % 10_000_000) as i64),
                chapter: 0,
            }),
            "learners" => {
                programme.learner_events(&mut rng, learner, &mut wire);
                // Keep the learner's last event only: the certificate when they earned it.
                let last = wire.pop().expect("a learner has events");
                wire.clear();
                wire.push(WireEvent {
                    kind: EventKind::Certified,
                    chapter: 0,
                    ..last
                });
            }
            "programme" => programme.learner_events(&mut rng, learner, &mut wire),
            _ => panic!("unknown memory case {case:?}: expected one of {MEMORY_CASES:?}"),
        }
        for wire in wire.drain(..) {
            let applied = aggregator
                .apply(&parse(&parser, &wire))
                .expect("a campaign slot");
            assert_eq!(
                applied,
                Applied::Accepted,
                "generated events are new and valid"
            );
        }
    }
    let elapsed = started.elapsed();
    let rss_after = status_kib("VmRSS");
    let holdings = aggregator.holdings();
    println!(
        "memory case={case} learners={learners} campaigns={} programme_learners={} campaign_learners={} event_ids={} rss_before_kib={rss_before} rss_after_kib={rss_after} rss_peak_kib={} estimate_bytes={} build_ms={}",
        holdings.campaigns,
        holdings.learners,
        holdings.campaign_learners,
        holdings.event_ids,
        status_kib("VmHWM"),
        layout_estimate(&aggregator),
        elapsed.as_millis(),
    );
}

/// The bytes the aggregator's tables take by their layout, for the record counts it reports:
/// what the measured figure should be without allocator overhead.
fn layout_estimate(aggregator: &Aggregator) -> usize {
    let holdings = aggregator.holdings();
    let mut bytes = hashed_table_bytes(holdings.event_ids, SEEN_ENTRY_BYTES);
    let campaigns: Vec<String> = aggregator.campaign_ids().map(str::to_owned).collect();
    for campaign in campaigns
        .iter()
        .map(String::as_str)
        .chain([suivi::event::TOTALS_CAMPAIGN])
    {
        let (counts, _) = aggregator
            .campaign(campaign)
            .expect("every listed campaign is held");
        bytes += hashed_table_bytes(counts.unique_visitors as usize, VISITOR_ENTRY_BYTES);
    }
    // One record a learner, for all its campaigns and the totals.
    bytes + table_bytes(holdings.learners, LEARNER_ENTRY_BYTES)
}

/// The allocation of a table of `items` entries of `entry_bytes` grown one insert at a time
/// (src/aggregate/chunked.rs): the entries side by side, with room for a sixteenth more on
/// average (a full chunk takes an eighth more).
fn table_bytes(items: usize, entry_bytes: usize) -> usize {
    items * entry_bytes * 17 / 16
}

/// The allocation of a table of hash-table chunks (the ids accepted since the last
/// checkpoint: `chunked::Hashed`) of `items` entries of `entry_bytes`: hashbrown's buckets,
/// one control byte each, from seven eighths used to just under half (a chunk grows by
/// doubling; a chunk split off is made for its size), about two thirds on average.
fn hashed_table_bytes(items: usize, entry_bytes: usize) -> usize {
    items * (entry_bytes + 1) * 3 / 2
}
