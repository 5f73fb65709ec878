//! `suivi simulate`: generates a realistic Objectif IA programme from the campaign registry and
//! sends it to a running suivi over gRPC `IngestService.IngestStream`. It owns the simulated
//! programme — the [`Plan`] of how many learners each campaign gets, which reproduces the
//! published figures exactly, and the events that realise it — and the load-generating client
//! that sends them, retries what failed and reports what the service answered. It never reaches
//! the service other than through its public gRPC API, never reads the clock to date an event
//! (the same seed and scale give the same events, ids included, so sending twice is all
//! duplicates), and never holds more than one compact record per event in memory, besides the
//! batches in flight.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use chrono::{NaiveDate, NaiveTime};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

pub mod kafka;

use crate::event::MAX_CHAPTER_COUNT;
use crate::proto::{self, ingest_service_client::IngestServiceClient};
use crate::registry::Registry;

/// `suivi simulate`: generate the programme of the campaign registry and send it to a running
/// suivi. At `--scale 1` the counters suivi computes equal the published figures exactly:
/// 110,000 learners started and 67,000 certified over the programme, and the Gendarmerie's
/// 65,000 enrolled and 56,000 certified.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// gRPC endpoint of the running suivi
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub grpc: String,
    /// Seed of the simulation: the same seed and scale give the same events, ids included, so
    /// sending them again changes nothing (every event is a duplicate)
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// 1 = the published programme; 10 = ten times as many learners (every published figure is
    /// multiplied and rounded)
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// The campaign registry (default: the embedded one)
    #[arg(long, env = "SUIVI_CAMPAIGNS")]
    pub campaigns: Option<PathBuf>,
    /// Chapters of the course; must match the chapter count the service is configured with
    #[arg(long, default_value_t = 12)]
    pub chapters: u8,
    /// Concurrent IngestStream streams, each on its own connection
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Events per request on a stream
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Send events in a seeded random order instead of per-learner order
    #[arg(long)]
    pub shuffle: bool,
    /// Produce the events into Kafka (these bootstrap servers, host:port,...) instead of sending
    /// them over gRPC; one event per message, keyed by campaign
    #[arg(long, value_name = "BROKERS")]
    pub kafka: Option<String>,
    /// The topic to produce into, with --kafka
    #[arg(long, default_value = crate::config::DEFAULT_KAFKA_TOPIC)]
    pub topic: String,
    /// With --kafka, produce protobuf LearnerEvents (content-type application/x-protobuf)
    /// instead of JSON
    #[arg(long)]
    pub protobuf: bool,
}

/// How many learners each campaign gets, and so the exact figures suivi will count once every
/// event is in.
///
/// Campaigns with published figures (the Gendarmerie) get them, scaled: all their enrollees
/// click, 97% of them start, and the published number certify. The programme's published
/// started and certified learners that remain are spread over the other registered campaigns
/// and direct traffic (a fifth of the remainder) by the largest-remainder method, so the sums are
/// exact: a campaign with a target weighs a fifth of its target, one without a seeded random
/// weight between 50 and 2,000 (log-uniform). Certificates are spread the same way, each
/// campaign's starters weighted by a seeded propensity between 0.5 and 1.5. Elsewhere 10% of
/// enrollees never start. Every campaign, direct traffic included (its clicks are visits of the
/// course page without a campaign), has 60 visitors who click and never enrol per 100 enrollees.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The seed the plan's random choices (and the events') are drawn from.
    pub seed: u64,
    /// The multiplier of every published figure.
    pub scale: f64,
    /// Distinct learners who start the course, over the whole programme.
    pub started: u64,
    /// Distinct learners who complete every chapter and are certified, over the whole programme.
    pub certified: u64,
    /// The registered campaigns in registry order, then direct traffic.
    pub campaigns: Vec<CampaignPlan>,
}

/// One campaign's share of the programme: exactly this many distinct learners reach each stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignPlan {
    /// The UTM campaign; empty for direct traffic.
    pub campaign: String,
    /// The platform its events come from.
    pub source: String,
    /// Its events are dated from this day to `last_day`, both included (in UTC and in Paris).
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    /// Whether `enrolled` and `certified` are the registry's published figures, scaled.
    pub published: bool,
    pub enrolled: u64,
    pub started: u64,
    pub certified: u64,
    /// Visitors who click the campaign's link and never enrol.
    pub bouncers: u64,
}

/// A generated programme: its plan and its events, kept compact until they are sent.
#[derive(Debug)]
pub struct Simulation {
    plan: Plan,
    /// Sets this run's learner and visitor ids apart from another seed's or scale's, so that two
    /// simulations sent to one service are two sets of people.
    id_prefix: u32,
    events: Vec<SimulatedEvent>,
}

/// Where and how to send a simulation.
#[derive(Debug, Clone)]
pub struct SendSettings {
    /// The gRPC endpoint, e.g. `http://127.0.0.1:50051`.
    pub grpc: String,
    /// Concurrent streams, each on its own connection; batch `i` goes on stream `i % streams`.
    pub streams: usize,
    pub batch_size: usize,
}

/// What the service answered.
#[derive(Debug, Clone, Default)]
pub struct SendReport {
    /// Events answered for (each once, however often it was resent).
    pub events: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// The first few rejections received.
    pub first_rejections: Vec<RejectedEvent>,
    /// Streams broken and reopened on the way.
    pub retries: u64,
    pub elapsed: Duration,
}

/// One event the service refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedEvent {
    /// The event's position in the simulation's order.
    pub index: usize,
    pub event_id: String,
    pub code: String,
    pub message: String,
}

/// Generates the programme, sends it and prints a summary; fails when the service could not be
/// reached or rejected any event.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    ensure!(
        args.scale.is_finite() && args.scale > 0.0,
        "--scale must be a positive number, not {}",
        args.scale
    );
    ensure!(
        (1..=MAX_CHAPTER_COUNT).contains(&args.chapters),
        "--chapters must be between 1 and {MAX_CHAPTER_COUNT}, not {}",
        args.chapters
    );
    ensure!(args.streams >= 1, "--streams must be at least 1");
    ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    let registry = Registry::load(args.campaigns.as_deref())?;

    let generating = Instant::now();
    let mut simulation = Simulation::new(&registry, args.seed, args.scale, args.chapters);
    if args.shuffle {
        simulation.shuffle();
    }
    eprintln!("{}", simulation.plan());
    if let Some(brokers) = &args.kafka {
        let settings = kafka::ProduceSettings {
            brokers: brokers.clone(),
            topic: args.topic.clone(),
            protobuf: args.protobuf,
        };
        eprintln!(
            "generated {} events in {:.1} s; producing them to {} on {} as {}",
            simulation.num_events(),
            generating.elapsed().as_secs_f64(),
            settings.topic,
            settings.brokers,
            if settings.protobuf {
                "protobuf"
            } else {
                "JSON"
            }
        );
        let report = kafka::produce(&simulation, &settings).await?;
        let seconds = report.elapsed.as_secs_f64();
        println!(
            "produced {} events in {:.2} s ({:.0} events/s), every one acknowledged",
            report.events,
            seconds,
            report.events as f64 / seconds.max(1e-9)
        );
        println!("expected: {}", simulation.plan().expected_figures());
        return Ok(());
    }
    eprintln!(
        "generated {} events in {:.1} s; sending them to {} on {} streams, {} events a batch",
        simulation.num_events(),
        generating.elapsed().as_secs_f64(),
        args.grpc,
        args.streams,
        args.batch_size
    );

    let simulation = Arc::new(simulation);
    let settings = SendSettings {
        grpc: args.grpc,
        streams: args.streams,
        batch_size: args.batch_size,
    };
    let report = send(Arc::clone(&simulation), &settings).await?;
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "sent {} events in {:.2} s ({:.0} events/s): {} accepted, {} duplicates, {} rejected{}",
        report.events,
        seconds,
        report.events as f64 / seconds.max(1e-9),
        report.accepted,
        report.duplicates,
        report.rejected,
        if report.retries > 0 {
            format!(", after {} retried streams", report.retries)
        } else {
            String::new()
        }
    );
    println!("expected: {}", simulation.plan().expected_figures());
    if report.rejected > 0 {
        println!("first rejections:");
        for rejection in &report.first_rejections {
            println!(
                "  event {} ({}): {}: {}",
                rejection.index, rejection.event_id, rejection.code, rejection.message
            );
        }
        bail!(
            "{} of {} events were rejected",
            report.rejected,
            report.events
        );
    }
    Ok(())
}

/// The programme as a list of `LearnerEvent`s, in per-learner order. Deterministic: the same
/// arguments give the same events, ids included.
pub fn generate(
    registry: &Registry,
    seed: u64,
    scale: f64,
    chapter_count: u8,
) -> Vec<proto::LearnerEvent> {
    Simulation::new(registry, seed, scale, chapter_count)
        .events()
        .collect()
}

/// Sends every event of `simulation` over `settings.streams` concurrent `IngestStream` streams
/// and sums the answers, printing progress to stderr about once a second. A broken stream or an
/// overloaded service (UNAVAILABLE) is retried with backoff by resending every batch not yet
/// answered: a resent event that had been counted is a duplicate and changes nothing.
pub async fn send(
    simulation: Arc<Simulation>,
    settings: &SendSettings,
) -> anyhow::Result<SendReport> {
    ensure!(
        settings.streams >= 1 && settings.batch_size >= 1,
        "streams and batch size must be at least 1"
    );
    let endpoint = Endpoint::from_shared(settings.grpc.clone())
        .with_context(|| format!("invalid gRPC endpoint {:?}", settings.grpc))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_adaptive_window(true);
    let num_events = simulation.num_events();
    let batches: Vec<Range<usize>> = (0..num_events)
        .step_by(settings.batch_size)
        .map(|start| start..(start + settings.batch_size).min(num_events))
        .collect();

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for stream in 0..settings.streams {
        let own_batches: Vec<Range<usize>> = batches
            .iter()
            .skip(stream)
            .step_by(settings.streams)
            .cloned()
            .collect();
        if !own_batches.is_empty() {
            tasks.spawn(run_stream(
                stream,
                endpoint.clone(),
                Arc::clone(&simulation),
                own_batches,
                Arc::clone(&tally),
            ));
        }
    }

    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // The first tick of an interval is immediate; progress is due only after a full interval.
    ticker.tick().await;
    let mut last_tick = (Instant::now(), 0);
    loop {
        tokio::select! {
            finished = tasks.join_next() => match finished {
                None => break,
                Some(Ok(Ok(()))) => {}
                // Returning drops the join set, which aborts the other streams.
                Some(Ok(Err(error))) => return Err(error),
                Some(Err(error)) => return Err(anyhow!(error).context("a sending task failed")),
            },
            _ = ticker.tick() => {
                let answered = tally.answered.load(Ordering::Relaxed);
                let (then, answered_then) = last_tick;
                let rate = (answered - answered_then) as f64 / then.elapsed().as_secs_f64();
                eprintln!(
                    "sent {}, answered {}: {} accepted, {} duplicates, {} rejected; {:.0} events/s",
                    tally.sent.load(Ordering::Relaxed),
                    answered,
                    tally.accepted.load(Ordering::Relaxed),
                    tally.duplicates.load(Ordering::Relaxed),
                    tally.rejected.load(Ordering::Relaxed),
                    rate
                );
                last_tick = (Instant::now(), answered);
            }
        }
    }

    Ok(SendReport {
        events: tally.answered.load(Ordering::Relaxed),
        accepted: tally.accepted.load(Ordering::Relaxed),
        duplicates: tally.duplicates.load(Ordering::Relaxed),
        rejected: tally.rejected.load(Ordering::Relaxed),
        first_rejections: std::mem::take(
            &mut *tally
                .first_rejections
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        ),
        retries: tally.retries.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}

// The plan: how many learners reach each stage, per campaign. Published figures come from the
// registry; these choices fill in the rest.

/// The programme's published figures (product design §1), for a registry without them.
const DEFAULT_PUBLISHED_STARTED: u64 = 110_000;
const DEFAULT_PUBLISHED_CERTIFIED: u64 = 67_000;
/// The programme published its figures on this day: no event is dated after it.
const PROGRAMME_FIGURES_PUBLISHED_ON: NaiveDate = date(2021, 2, 4);
/// The Gendarmerie published its figures on this day: the campaigns with published figures end
/// here.
const PARTNER_FIGURES_PUBLISHED_ON: NaiveDate = date(2021, 1, 25);
/// The start of campaigns without a published launch date.
const DEFAULT_LAUNCH: NaiveDate = date(2020, 9, 1);
/// Events are dated between these hours (UTC) of each day, so that their calendar day is the
/// same in UTC and in Paris (UTC+1 in winter, UTC+2 in summer).
const FIRST_HOUR: NaiveTime = time(6);
const LAST_HOUR: NaiveTime = time(21);
/// The course platform, the source of every campaign that names no platform of its own.
const COURSE_PLATFORM: &str = "openclassrooms";

/// Share of a published campaign's enrollees who start: staff enrolled by their employer mostly
/// do.
const PUBLISHED_STARTED_PERCENT: u64 = 97;
/// The Gendarmerie's certified per enrolled (56,000 of 65,000), for a campaign that publishes
/// only one of the two figures.
const PUBLISHED_CERTIFIED_PER_ENROLLED: (u64, u64) = (56, 65);
/// Share of enrollees who start elsewhere: a tenth sign up and never open the course.
const STARTED_PERCENT: u64 = 90;
/// A campaign with a target weighs this share of it: partners had reached a fifth of their
/// commitment by the time of the figures.
const TARGET_REACHED_PERCENT: u64 = 20;
/// The weight of a campaign without a target, drawn log-uniformly: a few large partners, many
/// small ones.
const UNTARGETED_WEIGHTS: (f64, f64) = (50.0, 2_000.0);
/// Share of the learners outside published campaigns who came without a campaign.
const DIRECT_PERCENT: u64 = 20;
/// A campaign's starters weigh this many percent each when certificates are shared out: some
/// partners follow their learners up, others do not.
const CERTIFICATION_PROPENSITY_PERCENT: std::ops::RangeInclusive<u64> = 50..=150;
/// Visitors who click a campaign's link and never enrol, per 100 enrollees.
const BOUNCERS_PERCENT: u64 = 60;

/// The random streams of one seed: the plan, the events and the shuffle draw from separate
/// streams, so that shuffling (or a change in the plan's draws) leaves the others unchanged.
const PLAN_STREAM: u64 = 0;
const EVENT_STREAM: u64 = 1;
const SHUFFLE_STREAM: u64 = 2;

impl Plan {
    /// Plans the programme of `registry` at `scale` (see [`Plan`] for the choices). The figures
    /// the registry publishes are reproduced exactly, rounded to the nearest learner; where they
    /// contradict each other (a campaign publishing more than the programme), the programme's
    /// figures are raised to fit, and the plan says so in its numbers.
    pub fn new(registry: &Registry, seed: u64, scale: f64) -> Plan {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(PLAN_STREAM);
        // `as` saturates, so a negative or NaN scale plans an empty programme instead of failing.
        let scaled = |figure: u64| (figure as f64 * scale).round() as u64;

        let mut campaigns = Vec::with_capacity(registry.campaigns.len() + 1);
        // The campaigns that share the programme's remaining learners, with their weights.
        let mut open: Vec<(usize, u64)> = Vec::new();
        for campaign in &registry.campaigns {
            let first_day = campaign.launched.unwrap_or(DEFAULT_LAUNCH);
            let mut plan = CampaignPlan {
                campaign: campaign.id.clone(),
                source: campaign
                    .platform
                    .clone()
                    .unwrap_or_else(|| COURSE_PLATFORM.to_owned()),
                first_day,
                last_day: PROGRAMME_FIGURES_PUBLISHED_ON.max(first_day),
                published: false,
                enrolled: 0,
                started: 0,
                certified: 0,
                bouncers: 0,
            };
            let enrolled = campaign.published_enrolled.map(scaled);
            let certified = campaign.published_certified.map(scaled);
            match (enrolled, certified) {
                (None, None) => {
                    let weight = match campaign.target {
                        Some(target) => part(target, TARGET_REACHED_PERCENT, 100).max(1),
                        None => log_uniform(&mut rng, UNTARGETED_WEIGHTS).round() as u64,
                    };
                    open.push((campaigns.len(), weight));
                }
                (enrolled, certified) => {
                    // A campaign that publishes one figure only gets the other from the
                    // Gendarmerie's ratio.
                    let (certified_per, enrolled_per) = PUBLISHED_CERTIFIED_PER_ENROLLED;
                    let certified = certified
                        .or(enrolled.map(|enrolled| part(enrolled, certified_per, enrolled_per)))
                        .unwrap_or_default();
                    let enrolled = enrolled
                        .unwrap_or_else(|| part(certified, enrolled_per, certified_per))
                        .max(certified);
                    plan.published = true;
                    plan.last_day = PARTNER_FIGURES_PUBLISHED_ON.max(first_day);
                    plan.enrolled = enrolled;
                    plan.started =
                        part(enrolled, PUBLISHED_STARTED_PERCENT, 100).clamp(certified, enrolled);
                    plan.certified = certified;
                }
            }
            campaigns.push(plan);
        }
        let campaign_weights: u64 = open.iter().map(|(_, weight)| weight).sum();
        open.push((
            campaigns.len(),
            part(campaign_weights, DIRECT_PERCENT, 100 - DIRECT_PERCENT).max(1),
        ));
        campaigns.push(CampaignPlan {
            campaign: String::new(),
            source: COURSE_PLATFORM.to_owned(),
            first_day: DEFAULT_LAUNCH,
            last_day: PROGRAMME_FIGURES_PUBLISHED_ON,
            published: false,
            enrolled: 0,
            started: 0,
            certified: 0,
            bouncers: 0,
        });

        let published_started: u64 = campaigns.iter().map(|c| c.started).sum();
        let published_certified: u64 = campaigns.iter().map(|c| c.certified).sum();
        let programme = &registry.programme;
        let certified = scaled(
            programme
                .published_certified
                .unwrap_or(DEFAULT_PUBLISHED_CERTIFIED),
        )
        .max(published_certified);
        let started = scaled(
            programme
                .published_started
                .unwrap_or(DEFAULT_PUBLISHED_STARTED),
        )
        .max(published_started + (certified - published_certified));

        let weights: Vec<u64> = open.iter().map(|(_, weight)| *weight).collect();
        let started_parts = apportion(
            started - published_started,
            &weights,
            &vec![u64::MAX; open.len()],
        );
        let propensities: Vec<u64> = started_parts
            .iter()
            .map(|started| {
                started.saturating_mul(rng.random_range(CERTIFICATION_PROPENSITY_PERCENT))
            })
            .collect();
        let certified_parts = apportion(
            certified - published_certified,
            &propensities,
            &started_parts,
        );
        for (((index, _), started), certified) in
            open.iter().zip(started_parts).zip(certified_parts)
        {
            let plan = &mut campaigns[*index];
            plan.started = started;
            plan.certified = certified;
            plan.enrolled = part(started, 100, STARTED_PERCENT);
        }
        for plan in &mut campaigns {
            plan.bouncers = part(plan.enrolled, BOUNCERS_PERCENT, 100);
        }
        Plan {
            seed,
            scale,
            started,
            certified,
            campaigns,
        }
    }

    /// The plan of `campaign` (the empty string for direct traffic).
    pub fn campaign(&self, campaign: &str) -> Option<&CampaignPlan> {
        self.campaigns.iter().find(|plan| plan.campaign == campaign)
    }

    /// Distinct learners who enrol, over the whole programme.
    pub fn enrolled(&self) -> u64 {
        self.campaigns.iter().map(|plan| plan.enrolled).sum()
    }

    /// The figures to check against suivi's: the totals, and every campaign with published ones.
    pub fn expected_figures(&self) -> String {
        let mut figures = format!(
            "totals started {}, certified {}",
            self.started, self.certified
        );
        for plan in self.campaigns.iter().filter(|plan| plan.published) {
            figures += &format!(
                "; {} enrolled {}, certified {}",
                plan.campaign, plan.enrolled, plan.certified
            );
        }
        figures
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan (seed {}, scale {}): {} learners enrol, {} start and {} are certified, over {} \
             campaigns and direct traffic",
            self.seed,
            self.scale,
            self.enrolled(),
            self.started,
            self.certified,
            self.campaigns.len() - 1
        )?;
        for plan in &self.campaigns {
            if plan.published || plan.campaign.is_empty() {
                writeln!(
                    f,
                    "  {}{}: {} enrol, {} start, {} are certified, from {} to {}",
                    if plan.campaign.is_empty() {
                        "direct traffic"
                    } else {
                        &plan.campaign
                    },
                    if plan.published {
                        " (published figures)"
                    } else {
                        ""
                    },
                    plan.enrolled,
                    plan.started,
                    plan.certified,
                    plan.first_day,
                    plan.last_day
                )?;
            }
        }
        let others = self
            .campaigns
            .iter()
            .filter(|plan| !plan.published && !plan.campaign.is_empty());
        let (count, enrolled, started, certified) =
            others.fold((0, 0, 0, 0), |(n, e, s, c), plan| {
                (
                    n + 1,
                    e + plan.enrolled,
                    s + plan.started,
                    c + plan.certified,
                )
            });
        write!(
            f,
            "  the other {count} campaigns: {enrolled} enrol, {started} start, {certified} are \
             certified"
        )
    }
}

/// Splits `total` into parts proportional to `weights` by the largest-remainder method (ties to
/// the first), none over its cap: the parts sum to `total` exactly whenever the caps allow it.
/// A part that would pass its cap gets the cap, and the rest is split again among the others.
fn apportion(total: u64, weights: &[u64], caps: &[u64]) -> Vec<u64> {
    let mut parts = vec![0; weights.len()];
    let mut open: Vec<usize> = (0..weights.len()).filter(|&i| caps[i] > 0).collect();
    let mut left = total;
    while left > 0 && !open.is_empty() {
        // When every open weight is zero, the open parts share equally.
        let equal = open.iter().all(|&i| weights[i] == 0);
        let weight = |i: usize| u128::from(if equal { 1 } else { weights[i] });
        let weight_sum: u128 = open.iter().map(|&i| weight(i)).sum();
        let mut quotas: Vec<(usize, u64, u128)> = open
            .iter()
            .map(|&i| {
                let exact = u128::from(left) * weight(i);
                // A quotient of at most `left`, so it fits.
                (i, (exact / weight_sum) as u64, exact % weight_sum)
            })
            .collect();
        let floors: u64 = quotas.iter().map(|(_, quota, _)| quota).sum();
        quotas.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        // Fewer than `open.len()` units are left after the floors.
        for (_, quota, _) in quotas.iter_mut().take((left - floors) as usize) {
            *quota += 1;
        }
        let over: Vec<usize> = quotas
            .iter()
            .filter(|(i, quota, _)| *quota > caps[*i])
            .map(|(i, _, _)| *i)
            .collect();
        if over.is_empty() {
            for (i, quota, _) in quotas {
                parts[i] = quota;
            }
            return parts;
        }
        for i in over {
            parts[i] = caps[i];
            left -= caps[i];
            open.retain(|&j| j != i);
        }
    }
    parts
}

/// `value × numerator / denominator`, rounded half up, without overflow.
fn part(value: u64, numerator: u64, denominator: u64) -> u64 {
    let exact = u128::from(value) * u128::from(numerator);
    let denominator = u128::from(denominator.max(1));
    u64::try_from((exact + denominator / 2) / denominator).unwrap_or(u64::MAX)
}

/// A number between `low` and `high` whose logarithm is uniform.
fn log_uniform(rng: &mut ChaCha8Rng, (low, high): (f64, f64)) -> f64 {
    (low.ln() + rng.random::<f64>() * (high.ln() - low.ln())).exp()
}

const fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(year, month, day) {
        Some(date) => date,
        // Evaluated at compile time for constants only: a wrong date fails the build.
        None => panic!("invalid date constant"),
    }
}

const fn time(hour: u32) -> NaiveTime {
    match NaiveTime::from_hms_opt(hour, 0, 0) {
        Some(time) => time,
        // Evaluated at compile time for constants only: a wrong hour fails the build.
        None => panic!("invalid time constant"),
    }
}

// The generator: each visitor's journey, dated within its campaign's window.

/// After each click, the chance the visitor comes back through the link once more before
/// enrolling; with the bouncers, about two clicks per enrolment.
const REPEAT_CLICK_PROBABILITY: f64 = 0.2;
/// The chance a learner who will not be certified goes on to the next chapter: most drop out in
/// the first chapters.
const NEXT_CHAPTER_PROBABILITY: f64 = 0.8;
/// The chance a learner opens the course in the session they enrolled in.
const SAME_SESSION_START_PROBABILITY: f64 = 0.7;
/// A share of every campaign's learners arrive in the launch wave, its first three weeks.
const LAUNCH_WAVE_PROBABILITY: f64 = 0.3;
const LAUNCH_WAVE_MS: i64 = 21 * DAY_MS;

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

impl Simulation {
    /// Plans the programme of `registry` and generates its events, in per-learner order.
    pub fn new(registry: &Registry, seed: u64, scale: f64, chapter_count: u8) -> Simulation {
        let plan = Plan::new(registry, seed, scale);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(EVENT_STREAM);
        let mut generator = Generator {
            rng,
            chapter_count,
            events: Vec::with_capacity(estimated_events(&plan, chapter_count)),
            next_learner: 0,
            next_visitor: 0,
            journey: Vec::new(),
        };
        for (index, campaign) in (0u32..).zip(&plan.campaigns) {
            generator.campaign(index, campaign);
        }
        let mut prefix_input = seed.to_le_bytes().to_vec();
        prefix_input.extend_from_slice(&scale.to_bits().to_le_bytes());
        Simulation {
            // Truncating the hash to 32 bits is enough to tell runs apart.
            id_prefix: xxhash_rust::xxh3::xxh3_64(&prefix_input) as u32,
            events: generator.events,
            plan,
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn num_events(&self) -> usize {
        self.events.len()
    }

    /// Puts the events in an order drawn from the seed, the same for every run of one seed. The
    /// events themselves, ids included, are those of the per-learner order.
    pub fn shuffle(&mut self) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.plan.seed);
        rng.set_stream(SHUFFLE_STREAM);
        self.events.shuffle(&mut rng);
    }

    /// The events as `LearnerEvent`s, in the simulation's order.
    pub fn events(&self) -> impl Iterator<Item = proto::LearnerEvent> + '_ {
        self.events.iter().map(|event| self.learner_event(event))
    }

    fn batch(&self, range: Range<usize>) -> Vec<proto::LearnerEvent> {
        self.events[range]
            .iter()
            .map(|event| self.learner_event(event))
            .collect()
    }

    fn learner_event(&self, event: &SimulatedEvent) -> proto::LearnerEvent {
        // Events are only ever made with the index of a campaign of this simulation's plan.
        let campaign = &self.plan.campaigns[event.campaign as usize];
        let (kind, chapter) = match event.step {
            Step::Click => (proto::EventKind::LinkClicked, 0),
            Step::Enrolled => (proto::EventKind::Enrolled, 0),
            Step::Started => (proto::EventKind::CourseStarted, 0),
            Step::Chapter(chapter) => (proto::EventKind::ChapterCompleted, chapter),
            Step::Certified => (proto::EventKind::Certified, 0),
        };
        let (learner_id, visitor_id) = match event.step {
            Step::Click => (
                String::new(),
                format!("{:08x}-v{}", self.id_prefix, event.person),
            ),
            _ => (
                format!("{:08x}-{}", self.id_prefix, event.person),
                String::new(),
            ),
        };
        proto::LearnerEvent {
            event_id: uuid(event.id),
            kind: kind as i32,
            campaign: campaign.campaign.clone(),
            source: campaign.source.clone(),
            learner_id,
            visitor_id,
            occurred_at: Some(prost_types::Timestamp {
                seconds: event.occurred_at_ms.div_euclid(1000),
                // Below 1,000,000,000, so it fits.
                nanos: (event.occurred_at_ms.rem_euclid(1000) * 1_000_000) as i32,
            }),
            chapter: u32::from(chapter),
        }
    }
}

/// One event, compact (40 bytes) until it is sent: the strings are made per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SimulatedEvent {
    /// 128 random bits, formatted as a UUID.
    id: [u64; 2],
    occurred_at_ms: i64,
    /// The learner's number for progress events, the visitor's for clicks.
    person: u64,
    /// The index of its campaign in the plan.
    campaign: u32,
    step: Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Click,
    Enrolled,
    Started,
    Chapter(u8),
    Certified,
}

/// How far a visitor goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Certified,
    /// Starts, completes a few chapters, and stops.
    DropsOut,
    /// Enrols and never starts.
    NeverStarts,
    /// Clicks and never enrols.
    Bounces,
}

struct Generator {
    rng: ChaCha8Rng,
    chapter_count: u8,
    events: Vec<SimulatedEvent>,
    /// Learners and visitors are numbered over the whole programme, so that no two campaigns
    /// share one.
    next_learner: u64,
    next_visitor: u64,
    /// The current visitor's steps, with their offsets from its first click, reused.
    journey: Vec<(Step, i64)>,
}

impl Generator {
    /// Generates the visitors of one campaign, their roles interleaved at random so that every
    /// part of the per-learner order looks alike.
    fn campaign(&mut self, index: u32, plan: &CampaignPlan) {
        let window_start = plan
            .first_day
            .and_time(FIRST_HOUR)
            .and_utc()
            .timestamp_millis();
        let window_end = plan
            .last_day
            .and_time(LAST_HOUR)
            .and_utc()
            .timestamp_millis()
            .max(window_start);
        // The plan keeps certified ≤ started ≤ enrolled; saturating keeps a hand-made plan from
        // failing.
        let mut left = [
            (Role::Certified, plan.certified),
            (Role::DropsOut, plan.started.saturating_sub(plan.certified)),
            (
                Role::NeverStarts,
                plan.enrolled.saturating_sub(plan.started),
            ),
            (Role::Bounces, plan.bouncers),
        ];
        loop {
            let total: u64 = left.iter().map(|(_, count)| count).sum();
            if total == 0 {
                break;
            }
            // Drawing a role in proportion to what is left of each gives every order of roles
            // the same chance, and exactly the planned count of each.
            let mut draw = self.rng.random_range(0..total);
            for (role, count) in &mut left {
                if draw < *count {
                    *count -= 1;
                    self.visitor(index, *role, window_start, window_end);
                    break;
                }
                draw -= *count;
            }
        }
    }

    /// Generates one visitor's journey, then places it in the campaign's window.
    fn visitor(&mut self, campaign: u32, role: Role, window_start: i64, window_end: i64) {
        self.journey.clear();
        let mut offset = 0;
        self.journey.push((Step::Click, offset));
        while self.rng.random_bool(REPEAT_CLICK_PROBABILITY) {
            offset += self.gap(10 * MINUTE_MS, 3 * DAY_MS);
            self.journey.push((Step::Click, offset));
        }
        if role != Role::Bounces {
            offset += self.gap(MINUTE_MS, 2 * HOUR_MS);
            self.journey.push((Step::Enrolled, offset));
        }
        if matches!(role, Role::Certified | Role::DropsOut) {
            offset += if self.rng.random_bool(SAME_SESSION_START_PROBABILITY) {
                self.gap(MINUTE_MS, HOUR_MS)
            } else {
                self.gap(HOUR_MS, 10 * DAY_MS)
            };
            self.journey.push((Step::Started, offset));
            let chapters = if role == Role::Certified {
                self.chapter_count
            } else {
                self.chapters_before_dropping_out()
            };
            for chapter in 1..=chapters {
                offset += self.gap(20 * MINUTE_MS, 7 * DAY_MS);
                self.journey.push((Step::Chapter(chapter), offset));
            }
        }
        if role == Role::Certified {
            // The certificate comes with the last chapter's quiz.
            offset += self.gap(SECOND_MS, 5 * MINUTE_MS);
            self.journey.push((Step::Certified, offset));
        }

        let length = offset;
        let span = window_end - window_start;
        let journey_start = if length <= span {
            let slack = span - length;
            let latest = if self.rng.random_bool(LAUNCH_WAVE_PROBABILITY) {
                slack.min(LAUNCH_WAVE_MS)
            } else {
                slack
            };
            window_start + self.rng.random_range(0..=latest)
        } else {
            window_start
        };
        let visitor = self.next_visitor;
        self.next_visitor += 1;
        let learner = self.next_learner;
        if role != Role::Bounces {
            self.next_learner += 1;
        }
        for &(step, offset) in &self.journey {
            // A journey longer than its window is compressed into it, keeping its order.
            let offset = if length <= span {
                offset
            } else {
                (i128::from(offset) * i128::from(span) / i128::from(length)) as i64
            };
            self.events.push(SimulatedEvent {
                id: [self.rng.random(), self.rng.random()],
                occurred_at_ms: journey_start + offset,
                person: if step == Step::Click {
                    visitor
                } else {
                    learner
                },
                campaign,
                step,
            });
        }
    }

    /// Chapters completed by a starter who is not certified: 0 to all but one.
    fn chapters_before_dropping_out(&mut self) -> u8 {
        let most = self.chapter_count.saturating_sub(1);
        let mut completed = 0;
        while completed < most && self.rng.random_bool(NEXT_CHAPTER_PROBABILITY) {
            completed += 1;
        }
        completed
    }

    /// A pause between two steps, log-uniform between `shortest` and `longest` milliseconds:
    /// minutes as likely as days.
    fn gap(&mut self, shortest: i64, longest: i64) -> i64 {
        log_uniform(&mut self.rng, (shortest as f64, longest as f64)).round() as i64
    }
}

/// Events the plan will produce, about, to allocate once.
fn estimated_events(plan: &Plan, chapter_count: u8) -> usize {
    let estimate: u64 = plan
        .campaigns
        .iter()
        .map(|campaign| {
            let visitors = campaign.enrolled + campaign.bouncers;
            let progress = campaign.enrolled
                + campaign.started
                + campaign.certified * (u64::from(chapter_count) + 1)
                + campaign.started.saturating_sub(campaign.certified) * 4;
            visitors + visitors / 4 + progress
        })
        .sum();
    // An estimate past the address space starts empty: the vector then grows as far as it can.
    usize::try_from(estimate).unwrap_or(0)
}

/// Formats 128 random bits as a version-4 UUID, the ids platforms usually send.
fn uuid([high, low]: [u64; 2]) -> String {
    let high = (high & !0xF000) | 0x4000;
    let low = (low & !(0b11 << 62)) | (0b10 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xFFFF,
        high & 0xFFFF,
        low >> 48,
        low & 0xFFFF_FFFF_FFFF
    )
}

// The sender: batches over concurrent streams, retried until answered.

/// Requests queued on a stream ahead of the service's answers.
const IN_FLIGHT_BATCHES: usize = 4;
/// Large enough for any sensible batch and for a response listing every event of it as rejected.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// A stream gives up after this many failures in a row without an answered batch in between:
/// with the backoff, about half a minute, enough for a service to restart.
const MAX_FAILURES_WITHOUT_PROGRESS: u32 = 10;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Rejections kept to show.
const FIRST_REJECTIONS_KEPT: usize = 10;

/// The answers so far, shared by the streams and read by the progress line.
#[derive(Debug, Default)]
struct Tally {
    /// Events sent, resends included.
    sent: AtomicU64,
    /// Events whose batch was answered.
    answered: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
    first_rejections: Mutex<Vec<RejectedEvent>>,
}

impl Tally {
    fn record(
        &self,
        simulation: &Simulation,
        batch: &Range<usize>,
        response: &proto::IngestStreamResponse,
    ) {
        self.answered
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.accepted
            .fetch_add(u64::from(response.accepted), Ordering::Relaxed);
        self.duplicates
            .fetch_add(u64::from(response.duplicates), Ordering::Relaxed);
        self.rejected
            .fetch_add(response.rejections.len() as u64, Ordering::Relaxed);
        if response.rejections.is_empty() {
            return;
        }
        let mut first = self
            .first_rejections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for rejection in &response.rejections {
            if first.len() >= FIRST_REJECTIONS_KEPT {
                break;
            }
            let index = batch.start + rejection.index as usize;
            first.push(RejectedEvent {
                index,
                event_id: simulation
                    .events
                    .get(index)
                    .map(|event| uuid(event.id))
                    .unwrap_or_default(),
                code: rejection.code.clone(),
                message: rejection.message.clone(),
            });
        }
    }
}

/// Why one attempt at a stream ended early, and whether trying again may help.
#[derive(Debug)]
struct Failure {
    error: anyhow::Error,
    retryable: bool,
}

impl Failure {
    fn from_status(status: tonic::Status) -> Failure {
        use tonic::Code;
        let code = status.code();
        let hint = match code {
            Code::InvalidArgument | Code::ResourceExhausted => "; try a smaller --batch-size",
            _ => "",
        };
        Failure {
            error: anyhow!("{code:?}: {}{hint}", status.message()),
            // Transport failures surface as these codes; UNAVAILABLE is also how an overloaded
            // service asks to be called again later.
            retryable: matches!(
                code,
                Code::Unavailable
                    | Code::Unknown
                    | Code::Internal
                    | Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::Aborted
            ),
        }
    }
}

/// Sends `batches` on one stream until each is answered, reopening the stream after a failure.
async fn run_stream(
    stream: usize,
    endpoint: Endpoint,
    simulation: Arc<Simulation>,
    batches: Vec<Range<usize>>,
    tally: Arc<Tally>,
) -> anyhow::Result<()> {
    let mut answered = 0;
    let mut failures_without_progress = 0;
    loop {
        let answered_before = answered;
        let Err(failure) =
            stream_once(&endpoint, &simulation, &batches, &mut answered, &tally).await
        else {
            return Ok(());
        };
        if answered > answered_before {
            failures_without_progress = 0;
        }
        failures_without_progress += 1;
        if !failure.retryable || failures_without_progress > MAX_FAILURES_WITHOUT_PROGRESS {
            return Err(failure
                .error
                .context(format!("stream {stream} to {} failed", endpoint.uri())));
        }
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << (failures_without_progress - 1).min(16))
            .min(MAX_BACKOFF);
        tally.retries.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "stream {stream}: {:#}; resending its {} unanswered batches in {} ms",
            failure.error,
            batches.len() - answered,
            backoff.as_millis()
        );
        tokio::time::sleep(backoff).await;
    }
}

/// One attempt: opens a stream, sends the batches from `*answered` on and reads the answers in
/// order, moving `*answered` past each. Ends when every batch is answered, or at the first
/// failure.
async fn stream_once(
    endpoint: &Endpoint,
    simulation: &Simulation,
    batches: &[Range<usize>],
    answered: &mut usize,
    tally: &Tally,
) -> Result<(), Failure> {
    let channel = endpoint.connect().await.map_err(|error| Failure {
        error: anyhow!(error).context("cannot connect"),
        retryable: true,
    })?;
    let mut client = IngestServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (requests, request_stream) = mpsc::channel(IN_FLIGHT_BATCHES);
    let unsent = &batches[*answered..];
    let producer = async move {
        for batch in unsent {
            let request = proto::IngestStreamRequest {
                events: simulation.batch(batch.clone()),
            };
            // The receiver is gone only when the call has ended, which the consumer reports.
            if requests.send(request).await.is_err() {
                return;
            }
            tally.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
    };
    let consumer = async {
        let mut responses = client
            .ingest_stream(ReceiverStream::new(request_stream))
            .await
            .map_err(Failure::from_status)?
            .into_inner();
        while let Some(batch) = batches.get(*answered) {
            match responses.message().await {
                Ok(Some(response)) => {
                    tally.record(simulation, batch, &response);
                    *answered += 1;
                }
                Ok(None) => {
                    return Err(Failure {
                        error: anyhow!("the service ended the stream before answering every batch"),
                        retryable: true,
                    });
                }
                Err(status) => return Err(Failure::from_status(status)),
            }
        }
        Ok(())
    };
    let mut consumer = std::pin::pin!(consumer);
    // The producer runs beside the consumer and no longer: once the consumer ends, successfully
    // or not, nothing more is sent.
    tokio::select! {
        result = &mut consumer => result,
        () = producer => consumer.await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::aggregate::{Aggregator, AggregatorSettings, Applied};
    use crate::event::{DIRECT_CAMPAIGN, EventParser, RawEvent, TOTALS_CAMPAIGN};

    fn registry() -> Registry {
        Registry::load(None).expect("the embedded registry loads")
    }

    /// Feeds `events` through the parser and the aggregator, as the service does, asserting
    /// that every one is accepted.
    fn aggregate(registry: &Registry, events: &[proto::LearnerEvent]) -> Aggregator {
        let parser = EventParser::new(12, [7; 32]);
        let mut aggregator = Aggregator::new(
            AggregatorSettings {
                time_zone: chrono_tz::Europe::Paris,
                chapter_count: 12,
                max_unregistered_campaigns: 1_000,
            },
            registry
                .campaigns
                .iter()
                .map(|campaign| campaign.id.clone()),
        );
        let now = Utc::now();
        for (index, event) in events.iter().enumerate() {
            let parsed = parser
                .parse(&RawEvent::from(event), now)
                .unwrap_or_else(|reason| panic!("event {index} rejected: {reason}: {event:?}"));
            assert_eq!(aggregator.apply(&parsed), Applied::Accepted, "{event:?}");
        }
        aggregator
    }

    #[test]
    fn a_tenth_of_the_programme_counts_to_a_tenth_of_the_published_figures() {
        let registry = registry();
        let events = generate(&registry, 7, 0.1, 12);
        let aggregator = aggregate(&registry, &events);

        let (totals, _) = aggregator.campaign(TOTALS_CAMPAIGN).expect("totals");
        assert_eq!((totals.started, totals.certified), (11_000, 6_700));
        let (gendarmerie, timeline) = aggregator.campaign("gendarmerie").expect("gendarmerie");
        assert_eq!(
            (gendarmerie.enrolled, gendarmerie.certified),
            (6_500, 5_600)
        );
        let first_day = timeline.keys().next().expect("a first day").to_string();
        let last_day = timeline.keys().last().expect("a last day").to_string();
        assert!(first_day.as_str() >= "2020-10-05", "{first_day}");
        assert!(last_day.as_str() <= "2021-01-25", "{last_day}");

        let plan = Plan::new(&registry, 7, 0.1);
        assert_eq!(plan.campaigns.len(), registry.campaigns.len() + 1);
        let (mut enrolled, mut started, mut certified) = (0, 0, 0);
        for campaign in &plan.campaigns {
            let id = if campaign.campaign.is_empty() {
                DIRECT_CAMPAIGN
            } else {
                campaign.campaign.as_str()
            };
            let (counts, timeline) = aggregator.campaign(id).expect("every campaign is counted");
            assert_eq!(
                (counts.enrolled, counts.started, counts.certified),
                (campaign.enrolled, campaign.started, campaign.certified),
                "{id}"
            );
            assert!(counts.started <= counts.enrolled, "{id}: {counts:?}");
            for &completed in &counts.chapters_completed {
                assert!(
                    counts.certified <= completed && completed <= counts.started,
                    "{id}: {counts:?}"
                );
            }
            if counts.enrolled > 0 {
                assert!(counts.clicks > counts.enrolled, "{id}: {counts:?}");
                assert!(counts.unique_visitors > counts.enrolled, "{id}: {counts:?}");
            }
            if let Some(last) = timeline.keys().last() {
                assert!(last.to_string().as_str() <= "2021-02-04", "{id}: {last}");
            }
            enrolled += counts.enrolled;
            started += counts.started;
            certified += counts.certified;
        }
        assert_eq!(
            (enrolled, started, certified),
            (totals.enrolled, totals.started, totals.certified)
        );
        // About two clicks per enrolment, and drop-off along the chapters.
        let clicks_per_enrolment = totals.clicks as f64 / totals.enrolled as f64;
        assert!(
            (1.8..2.2).contains(&clicks_per_enrolment),
            "{clicks_per_enrolment}"
        );
        assert!(totals.chapters_completed[0] > totals.chapters_completed[11]);
    }

    #[test]
    fn the_plan_holds_the_published_figures_at_scale_one() {
        let registry = registry();
        let plan = Plan::new(&registry, 1, 1.0);
        assert_eq!((plan.started, plan.certified), (110_000, 67_000));
        let gendarmerie = plan.campaign("gendarmerie").expect("gendarmerie");
        assert!(gendarmerie.published);
        assert_eq!(
            (
                gendarmerie.enrolled,
                gendarmerie.started,
                gendarmerie.certified
            ),
            (65_000, 63_050, 56_000)
        );
        assert_eq!(
            (
                gendarmerie.source.as_str(),
                gendarmerie.first_day,
                gendarmerie.last_day
            ),
            ("gendform3", date(2020, 10, 5), date(2021, 1, 25))
        );
        let started: u64 = plan.campaigns.iter().map(|c| c.started).sum();
        let certified: u64 = plan.campaigns.iter().map(|c| c.certified).sum();
        assert_eq!((started, certified), (110_000, 67_000));
        for campaign in &plan.campaigns {
            assert!(
                campaign.enrolled > 0,
                "every campaign has learners: {campaign:?}"
            );
            assert!(campaign.certified <= campaign.started, "{campaign:?}");
            assert!(campaign.started <= campaign.enrolled, "{campaign:?}");
        }
        let direct = plan.campaign("").expect("direct traffic");
        assert_eq!(direct.source, "openclassrooms");
        let tech_for_good = plan
            .campaign("tech-for-good-education")
            .expect("registered");
        assert!(
            tech_for_good.started > direct.started / 2,
            "{tech_for_good:?}"
        );
        assert_eq!(
            plan.expected_figures(),
            "totals started 110000, certified 67000; gendarmerie enrolled 65000, certified 56000"
        );
    }

    #[test]
    fn the_events_at_scale_one_realise_the_plan() {
        let simulation = Simulation::new(&registry(), 1, 1.0, 12);
        let plan = simulation.plan();
        let mut reached = vec![[0u64; 3]; plan.campaigns.len()];
        for event in &simulation.events {
            let column = match event.step {
                Step::Enrolled => 0,
                Step::Started => 1,
                Step::Certified => 2,
                Step::Click | Step::Chapter(_) => continue,
            };
            reached[event.campaign as usize][column] += 1;
        }
        for (campaign, reached) in plan.campaigns.iter().zip(reached) {
            assert_eq!(
                reached,
                [campaign.enrolled, campaign.started, campaign.certified],
                "{campaign:?}"
            );
        }
    }

    #[test]
    fn a_journey_is_in_causal_order_within_its_campaign_window() {
        fn rank(step: Step) -> u16 {
            match step {
                Step::Click => 0,
                Step::Enrolled => 1,
                Step::Started => 2,
                Step::Chapter(chapter) => 2 + u16::from(chapter),
                Step::Certified => 100,
            }
        }
        let simulation = Simulation::new(&registry(), 3, 0.05, 12);
        let at = |event: &SimulatedEvent| {
            DateTime::from_timestamp_millis(event.occurred_at_ms).expect("a valid instant")
        };
        for event in &simulation.events {
            let campaign = &simulation.plan.campaigns[event.campaign as usize];
            let day = at(event).date_naive();
            assert!(
                campaign.first_day <= day && day <= campaign.last_day,
                "{event:?} outside {campaign:?}"
            );
        }
        for pair in simulation.events.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            let new_journey = after.step == Step::Click
                && (before.step != Step::Click || before.person != after.person);
            if !new_journey {
                assert!(before.occurred_at_ms <= after.occurred_at_ms, "{pair:?}");
                assert!(
                    rank(before.step) < rank(after.step) || after.step == Step::Click,
                    "{pair:?}"
                );
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_events_and_another_seed_other_ids() {
        let registry = registry();
        let events = generate(&registry, 3, 0.02, 12);
        assert_eq!(events, generate(&registry, 3, 0.02, 12));
        let ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids.len(), events.len(), "event ids are unique");
        let other = generate(&registry, 4, 0.02, 12);
        assert!(other.iter().all(|e| !ids.contains(e.event_id.as_str())));
        let learners: HashSet<&str> = events.iter().map(|e| e.learner_id.as_str()).collect();
        assert!(
            other
                .iter()
                .all(|e| e.learner_id.is_empty() || !learners.contains(e.learner_id.as_str()))
        );
    }

    #[test]
    fn shuffling_changes_the_order_not_the_events() {
        let registry = registry();
        let ordered = Simulation::new(&registry, 5, 0.01, 12);
        let mut shuffled = Simulation::new(&registry, 5, 0.01, 12);
        shuffled.shuffle();
        assert_ne!(ordered.events, shuffled.events);
        let mut again = Simulation::new(&registry, 5, 0.01, 12);
        again.shuffle();
        assert_eq!(shuffled.events, again.events);
        let sorted = |simulation: &Simulation| {
            let mut ids: Vec<String> = simulation.events().map(|e| e.event_id).collect();
            ids.sort();
            ids
        };
        assert_eq!(sorted(&ordered), sorted(&shuffled));
    }

    #[test]
    fn apportion_is_exact_and_keeps_to_the_caps() {
        let unbounded = [u64::MAX; 3];
        assert_eq!(apportion(10, &[1, 1, 1], &unbounded), [4, 3, 3]);
        assert_eq!(apportion(10, &[1, 2, 7], &unbounded), [1, 2, 7]);
        assert_eq!(apportion(10, &[0, 0, 0], &unbounded), [4, 3, 3]);
        assert_eq!(
            apportion(10, &[10, 1, 1], &[2, u64::MAX, u64::MAX]),
            [2, 4, 4]
        );
        assert_eq!(apportion(6, &[5, 5, 1], &[1, 2, 9]), [1, 2, 3]);
        assert_eq!(apportion(0, &[1, 1], &[5, 5]), [0, 0]);
    }

    #[test]
    fn event_ids_are_version_4_uuids() {
        let id = uuid([u64::MAX, 0]);
        assert_eq!(id, "ffffffff-ffff-4fff-8000-000000000000");
        assert_eq!(uuid([0, u64::MAX]), "00000000-0000-4000-bfff-ffffffffffff");
    }
}
