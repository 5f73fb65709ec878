//! The ingest path's latency across checkpoints (issue 15): `SUIVI_BENCH_STALL=<learners>` builds
//! that many learners, starts the real pipeline (one shard, a journal on the real disk, `fsync =
//! always`) from their checkpoint, then submits batches of new events at a steady rate for a
//! while, with a checkpoint every few seconds, timing each submission from send to answer. A
//! checkpoint that stopped the writer shows as batches answered late; the histogram and the
//! slowest batches say how late, and the writer's own `suivi_checkpoint_pause_seconds` and
//! `suivi_checkpoint_duration_seconds` how long it paused and how long the checkpoints took.
//!
//! ```text
//! SUIVI_BENCH_STALL=10000000 cargo bench --bench durability   # 10M learners: about 10 minutes
//! ```
//!
//! `SUIVI_BENCH_STALL_SECONDS` (default 40) sets how long events are submitted,
//! `SUIVI_BENCH_STALL_RATE` (default 50,000) the events per second, in batches of 500 every
//! 10 ms, and `SUIVI_BENCH_STALL_CHECKPOINT` (default 10) the seconds between checkpoints.

use super::*;

/// Events per submitted batch; one batch every [`PERIOD`] at the default rate.
const STALL_BATCH: usize = 500;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |text| {
        text.replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name} is a number"))
    })
}

/// Builds `learners` learners, checkpoints them, and measures ingestion across the pipeline's
/// checkpoints (see the module's documentation).
pub(super) fn stall_report(learners: u64) {
    let seconds = env_number("SUIVI_BENCH_STALL_SECONDS", 40);
    let rate = env_number("SUIVI_BENCH_STALL_RATE", 50_000);
    let every = Duration::from_secs(env_number("SUIVI_BENCH_STALL_CHECKPOINT", 10));
    let base = bench_base();
    let dir = temp_dir(&base);
    let registry = Registry::load(None).expect("the embedded campaign registry parses");
    let population = Population::new(&registry, shape_wanted());
    let metrics = suivi::telemetry::metrics_handle().expect("the metrics recorder installs");
    // The writer's log (stderr) says when each checkpoint was written and how long it took.
    suivi::telemetry::init_logging(suivi::config::LogFormat::Text);
    println!(
        "ingest across checkpoints: {learners} learners, {rate} events/s for {seconds} s, a checkpoint every {every:?}; files under {}",
        describe_dir(dir.path())
    );

    // The state to start from, as a checkpoint of shard 0.
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut next_id = 0;
    let started = Instant::now();
    let aggregator = build(
        &registry,
        &population,
        (&mut rng, &mut next_id),
        0..learners,
    );
    println!(
        "  built in {:.2?}: {} event ids",
        started.elapsed(),
        aggregator.holdings().event_ids
    );
    let (_, checkpoint_dir) = pipeline::shards::shard_dirs(dir.path(), 0);
    let started = Instant::now();
    // As a service that has run for a while left it: the ids in a run, the rest in the file.
    let mut aggregator = aggregator;
    let sealed = aggregator.seal();
    let frozen = aggregator.freeze();
    let ids = sealed.in_order();
    let run =
        runs::write(&checkpoint_dir, (1, 1), ids.len() as u64, ids).expect("the id run is written");
    drop(sealed);
    let parts = frozen.parts(
        0,
        Vec::new(),
        StoredIds::Runs {
            runs: vec![*run.id_run()],
            generation: 1,
        },
    );
    checkpoint::write_parts(&checkpoint_dir, 0, parts).expect("the starting checkpoint is written");
    println!("  starting checkpoint written in {:.2?}", started.elapsed());
    drop(aggregator);

    // New learners' events to submit, in batches.
    let wanted = (rate * seconds) as usize;
    let mut events = Vec::with_capacity(wanted + 64);
    let mut learner = learners;
    while events.len() < wanted {
        population.learner_events(&mut rng, learner, &mut next_id, &mut events);
        learner += 1;
    }
    events.shuffle(&mut rng);
    let batches: Vec<Vec<Event>> = events.chunks(STALL_BATCH).map(<[Event]>::to_vec).collect();
    drop(events);
    let period = Duration::from_secs_f64(STALL_BATCH as f64 / rate as f64);

    let mut settings = pipeline_settings(dir.path(), FsyncPolicy::Always, &registry, 1);
    settings.checkpoint_interval = every;
    let figures = Arc::new(Figures::new(&registry, DEFAULT_CHAPTER_COUNT, Utc::now()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let (ingest, Writer { recovered, thread }) =
        pipeline::start(settings, figures).expect("the writer thread starts");
    let latencies = runtime.block_on(async {
        recovered
            .await
            .expect("the writer reports its recovery")
            .expect("the checkpoint recovers");
        println!("  pipeline ready (recovered) in {:.2?}", started.elapsed());
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut latencies = Vec::with_capacity(batches.len());
        let run = Instant::now();
        tracing::info!("submitting: the times below are from here");
        for batch in batches {
            ticks.tick().await;
            let sent = Instant::now();
            let outcomes = ingest.submit(batch, None).await.expect("a batch is taken");
            assert!(outcomes.iter().all(|outcome| *outcome == Applied::Accepted));
            latencies.push((sent - run, sent.elapsed()));
        }
        ingest.close().await;
        latencies
    });
    thread
        .join()
        .expect("the writer does not panic")
        .expect("the writer stops cleanly");
    print_latencies(&latencies);
    let text = metrics.render();
    for line in text.lines().filter(|line| {
        line.starts_with("suivi_checkpoint_pause_seconds")
            || line.starts_with("suivi_journal_fsync_duration_seconds")
            || line.starts_with("suivi_checkpoint_duration_seconds_sum")
            || line.starts_with("suivi_checkpoint_duration_seconds_count")
    }) {
        println!("  {line}");
    }
    println!(
        "  resident at most (VmHWM): {:.0} MiB",
        mib(status_bytes("VmHWM"))
    );
}

/// An aggregator of the learners `range`, built directly from their events.
pub(super) fn build(
    registry: &Registry,
    population: &Population,
    (rng, next_id): (&mut ChaCha8Rng, &mut u64),
    range: std::ops::Range<u64>,
) -> Aggregator {
    let mut aggregator = Aggregator::new(settings(), registered(registry));
    let mut buffer = Vec::new();
    for learner in range {
        population.learner_events(rng, learner, next_id, &mut buffer);
        for event in buffer.drain(..) {
            assert_eq!(
                aggregator.apply(&event).expect("a campaign slot"),
                Applied::Accepted,
                "generated events are new"
            );
        }
    }
    // What a replay would publish; it also empties the changed-days records.
    drop(aggregator.drain_changes());
    aggregator
}

/// The latency histogram of the submitted batches, the slowest of them and when they were sent.
fn print_latencies(latencies: &[(Duration, Duration)]) {
    let bounds_ms = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];
    let mut counts = vec![0usize; bounds_ms.len() + 1];
    for (_, latency) in latencies {
        let ms = latency.as_secs_f64() * 1000.0;
        let bucket = bounds_ms
            .iter()
            .position(|bound| ms <= f64::from(*bound))
            .unwrap_or(bounds_ms.len());
        counts[bucket] += 1;
    }
    let mut line = String::from("  batch latency (send to answer):");
    let mut lower = 0;
    for (bucket, count) in counts.iter().enumerate() {
        match bounds_ms.get(bucket) {
            Some(bound) => line.push_str(&format!(" {lower}–{bound} ms: {count};")),
            None => line.push_str(&format!(" over {lower} ms: {count}")),
        }
        lower = bounds_ms.get(bucket).copied().unwrap_or(lower);
    }
    println!("{line}");
    let mut sorted: Vec<Duration> = latencies.iter().map(|(_, latency)| *latency).collect();
    sorted.sort();
    let at = |quantile: f64| sorted[((sorted.len() - 1) as f64 * quantile) as usize];
    println!(
        "  {} batches: p50 {:.2?}, p99 {:.2?}, p99.9 {:.2?}, max {:.2?}",
        sorted.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
    let mut slowest = latencies.to_vec();
    slowest.sort_by_key(|(_, latency)| std::cmp::Reverse(*latency));
    let slowest: Vec<String> = slowest
        .iter()
        .take(8)
        .map(|(at, latency)| format!("{latency:.1?} at {:.1} s", at.as_secs_f64()))
        .collect();
    println!("  slowest: {}", slowest.join(", "));
}
