//! `suivi simulate`: generates a realistic Objectif IA programme from the campaign registry and
//! sends it to a running suivi over gRPC `IngestService.IngestStream` (or produces it into Kafka,
//! or posts it as xAPI statements or Caliper envelopes, as LMSs send them: `kafka`, `xapi`,
//! `caliper`, through `records`). It owns the simulated
//! programme — the [`Plan`] of how many learners each campaign gets, which reproduces the
//! published figures exactly, and the events that realise it — and the load-generating client
//! that sends them, retries what failed and reports what the service answered. It never reaches
//! the service other than through its public gRPC API, never reads the clock to date an event
//! (the same seed and scale give the same events, ids included, so sending twice is all
//! duplicates), and never holds more than one compact record per event in memory, besides the
//! batches in flight.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail, ensure};

mod caliper;
mod generate;
pub mod kafka;
mod plan;
mod records;
mod send;
pub mod xapi;

pub use generate::{Simulation, generate};
pub use plan::{CampaignPlan, Plan};
pub use send::{RejectedEvent, SendReport, SendSettings, send};

use crate::event::MAX_CHAPTER_COUNT;
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
    /// The bearer token to send, when suivi has credentials: one with events:write for the
    /// simulated sources (an admin's, or `suivi credentials add simulator --write-source
    /// openclassrooms --write-source gendform3 …`).
    #[arg(long, env = "SUIVI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// For an https:// endpoint (suivi with tls_cert): a PEM CA certificate to trust besides the
    /// system's roots.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
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
    /// Move the whole programme by whole days so that it ends on this day (YYYY-MM-DD, before
    /// today), instead of on 4 February 2021: live pages and forecasts then show a programme
    /// under way
    #[arg(long, value_name = "DATE", value_parser = crate::report::period::parse_date)]
    pub end_on: Option<chrono::NaiveDate>,
    /// Produce the events into Kafka (these bootstrap servers, host:port,...) instead of sending
    /// them over gRPC; one event per message, keyed by learner (Kafka's default murmur2 partitioner)
    #[arg(long, value_name = "BROKERS")]
    pub kafka: Option<String>,
    /// The topic to produce into, with --kafka
    #[arg(long, default_value = crate::config::DEFAULT_KAFKA_TOPIC)]
    pub topic: String,
    /// With --kafka, produce protobuf LearnerEvents (content-type application/x-protobuf)
    /// instead of JSON
    #[arg(long)]
    pub protobuf: bool,
    /// Send the programme as LMSs do, as xAPI statements to this LRS endpoint (suivi's
    /// http://HOST:8080/xAPI) instead of over gRPC. Clicks, which are not learning records, go
    /// to --clicks. The service's [xapi] table must map the simulated course and chapters: see
    /// --print-xapi-mapping
    #[arg(long, value_name = "URL", conflicts_with_all = ["kafka", "caliper"])]
    pub xapi: Option<String>,
    /// Send the programme as a Caliper sensor does, in Caliper 1.2 envelopes posted to this
    /// endpoint (suivi's http://HOST:8080/caliper); clicks go to --clicks, and the service's
    /// [xapi] table must map the simulated course and chapters (--print-xapi-mapping)
    #[arg(long, value_name = "URL", conflicts_with = "kafka")]
    pub caliper: Option<String>,
    /// With --xapi or --caliper: where the tracking links' clicks are posted, as JSON events
    /// (default: /v1/events on the host of --xapi or --caliper). The GendForm3.0-like platform's
    /// clicks are tagged with the learner, and name the campaign its statements do not
    #[arg(long, value_name = "URL", conflicts_with = "no_clicks")]
    pub clicks: Option<String>,
    /// With --xapi or --caliper: leave the clicks out (to an LRS that is not suivi); the
    /// GendForm3.0-like platform's learners then count under direct
    #[arg(long)]
    pub no_clicks: bool,
    /// With --xapi or --caliper: send the token as HTTP Basic's password with this user name (as
    /// Moodle does; suivi takes both), for an LRS that wants Basic
    #[arg(long, value_name = "USER", requires = "token")]
    pub basic_user: Option<String>,
    /// Print the [xapi] settings that map the simulated course and chapters, and exit
    #[arg(long)]
    pub print_xapi_mapping: bool,
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
    if args.print_xapi_mapping {
        print!("{}", xapi::mapping_toml(args.chapters));
        return Ok(());
    }
    let registry = Registry::load(args.campaigns.as_deref())?;

    let generating = Instant::now();
    let mut simulation = Simulation::new(&registry, args.seed, args.scale, args.chapters);
    if let Some(last_day) = args.end_on {
        // The one reading of the clock: events dated later than now would be refused.
        ensure!(
            last_day < chrono::Utc::now().date_naive(),
            "--end-on must be a day before today (UTC), not {last_day}: events of today's later \
             hours would be in the future"
        );
        simulation.end_on(last_day);
    }
    if args.shuffle {
        simulation.shuffle();
    }
    eprintln!("{}", simulation.plan());
    let records = match (&args.xapi, &args.caliper) {
        (Some(endpoint), _) => Some((
            "xAPI statements",
            format!("{}/statements", endpoint.trim_end_matches('/')),
            vec![("x-experience-api-version", "1.0.3")],
            records::Standard {
                encode: xapi::requests,
                learner_id: xapi::learner_id,
            },
        )),
        (None, Some(endpoint)) => Some((
            "Caliper events",
            endpoint.clone(),
            Vec::new(),
            records::Standard {
                encode: caliper::requests,
                learner_id: caliper::learner_id,
            },
        )),
        (None, None) => None,
    };
    if let Some((what, url, headers, standard)) = records {
        let clicks = match (&args.clicks, args.no_clicks) {
            (_, true) => None,
            (Some(clicks), false) => Some(clicks.clone()),
            (None, false) => Some(
                reqwest::Url::parse(&url)
                    .and_then(|endpoint| endpoint.join("/v1/events"))
                    .with_context(|| format!("{url} is not a URL"))?
                    .to_string(),
            ),
        };
        let settings = records::RecordSettings {
            clicks,
            url,
            headers,
            token: args.token.clone(),
            basic_user: args.basic_user.clone(),
            ca_cert: args.ca_cert.clone(),
            batch_size: args.batch_size,
        };
        eprintln!(
            "generated {} events in {:.1} s; sending them as {what} to {}, {} events a batch",
            simulation.num_events(),
            generating.elapsed().as_secs_f64(),
            settings.url,
            args.batch_size
        );
        let report = records::send(&simulation, &settings, standard).await?;
        let seconds = report.elapsed.as_secs_f64();
        println!(
            "sent {} {what} and {} clicks in {} requests in {:.2} s ({:.0} records a second), every one taken; {} clicks left out",
            report.records,
            report.clicks,
            report.requests,
            seconds,
            report.records as f64 / seconds.max(1e-9),
            report.clicks_left_out
        );
        println!("expected: {}", simulation.plan().expected_figures());
        return Ok(());
    }
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
        token: args.token,
        ca_cert: args.ca_cert,
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

#[cfg(test)]
mod tests;
