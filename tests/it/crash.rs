//! Crashes: the real `suivi` binary killed with SIGKILL at random moments while several clients
//! stream simulated events to it, restarted on the same data directory each time, and its journal
//! and checkpoints damaged on purpose. What must hold (product design §3, invariants 1 and 2):
//! every event a client saw acknowledged survives every crash, and once every event is in, the
//! counters are exactly those of the same events folded in without any crash.
//!
//! The expected counters come from a [`Model`]: the same events parsed with `EventParser` (same
//! pseudonymisation key) and folded into an in-process `Aggregator` and `Figures`, compared with
//! what the restarted binary serves over HTTP as whole JSON objects (`as_of` aside).
//!
//! The kill moments, sending rates and batch sizes come from a seeded RNG; set
//! `SUIVI_CRASH_SEED` to try another seed. The seed is printed, so a failure can be rerun with it
//! (thread timing still differs from run to run).
//!
//! What a SIGKILL of the process cannot show: a missing fsync. The kernel keeps what was written
//! and not synced, and writes it out after the process died; only a machine crash or power loss
//! loses it. These tests catch an event acknowledged before it was written to the journal, or
//! written only to a buffer in the process, and damaged or misplaced journal records and
//! checkpoints; the journal's own tests cover the fsync calls.

use std::collections::{BTreeMap, VecDeque};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use suivi::aggregate::{Aggregator, AggregatorSettings};
use suivi::config::{
    DEFAULT_CHAPTER_COUNT, DEFAULT_MAX_UNREGISTERED_CAMPAIGNS, Settings, parse_key,
};
use suivi::event::{Event, EventParser, RawEvent};
use suivi::figures::Figures;
use suivi::proto;
use suivi::proto::ingest_service_client::IngestServiceClient;
use suivi::registry::Registry;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::helpers::{PSEUDONYM_KEY, Suivi, without_as_of};

/// The seed of the crash test unless `SUIVI_CRASH_SEED` gives another.
const DEFAULT_SEED: u64 = 20_241_005;
/// The simulated programme's scale: about 97,000 events.
const SCALE: f64 = 0.065;
/// Rounds that end with a SIGKILL, before the last one, which lets every client finish.
const KILL_ROUNDS: usize = 10;
/// A round is killed this long (milliseconds) after its clients start sending.
const KILL_AFTER_MS: Range<u64> = 50..500;
/// Events per second the clients of a round that ends in a kill send at most, together. The
/// first half of the kill rounds cannot send every event even at the highest rate, so at least
/// half the kills land while clients are sending, however fast the machine; a debug build
/// sends about 35,000 events a second on two cores, so the highest rates are hardly limits.
const KILL_ROUND_RATE: Range<f64> = 8_000.0..36_000.0;
/// Events acknowledged before the previous restart that are sent again after a restart, to check
/// that each is a duplicate (those acknowledged since are all sent again).
const OLDER_EVENTS_CHECKED: usize = 2_000;
/// Events per batch.
const BATCH_EVENTS: Range<usize> = 50..201;
/// Clients sending at once, each its own slice of the events; the last one uses unary `Ingest`,
/// the others `IngestStream`.
const NUM_CLIENTS: usize = 3;
/// Batches a streaming client sends ahead of their answers.
const STREAM_WINDOW: usize = 4;
/// Checkpoints this often, so that kills also land while one is written or segments are removed.
const CHECKPOINT_INTERVAL: &str = "200ms";
/// Small journal segments, so that segments rotate and are removed during the test.
const JOURNAL_SEGMENT_BYTES: &str = "16384";
/// The longest a started binary may take to log that it is ready.
/// The longest the clients may take to end once their server is killed.
const CLIENT_PATIENCE: Duration = Duration::from_secs(20);
/// The longest the last round may take to send every event left.
const FINISH_PATIENCE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_event_survives_sigkill_at_random_moments() {
    let started = Instant::now();
    let seed = std::env::var("SUIVI_CRASH_SEED")
        .ok()
        .map(|seed| seed.parse::<u64>().expect("SUIVI_CRASH_SEED is a number"))
        .unwrap_or(DEFAULT_SEED);
    eprintln!("crash test seed {seed} (set SUIVI_CRASH_SEED to change it)");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // The checks' samples depend on how far clients got, so they draw from a stream of their own,
    // and one seed always gives the same kill moments and rates.
    let mut sample_rng = rng.clone();
    sample_rng.set_stream(1);
    let registry = Registry::load(None).expect("the embedded registry loads");
    let mut events = suivi::simulate::generate(&registry, seed, SCALE, DEFAULT_CHAPTER_COUNT);
    // Learners' events arrive out of order and over several clients, as they would from several
    // platforms.
    events.shuffle(&mut rng);
    let events = Arc::new(events);
    let model = Model::new(&registry, &events);
    let ledger = Arc::new(Ledger::new(events.len()));

    assert!(
        events.len() as f64
            > (KILL_ROUNDS / 2) as f64 * KILL_AFTER_MS.end as f64 / 1000.0 * KILL_ROUND_RATE.end,
        "enough events that the first half of the kill rounds cannot send them all"
    );

    let mut batches = Vec::new();
    let mut start = 0;
    while start < events.len() {
        let end = (start + rng.random_range(BATCH_EVENTS)).min(events.len());
        batches.push(start..end);
        start = end;
    }
    let mut clients: Vec<ClientState> = (0..NUM_CLIENTS)
        .map(|client| ClientState {
            client,
            unary: client + 1 == NUM_CLIENTS,
            batches: batches
                .iter()
                .skip(client)
                .step_by(NUM_CLIENTS)
                .cloned()
                .collect(),
            acknowledged_prefix: 0,
        })
        .collect();
    eprintln!(
        "{} events in {} batches over {NUM_CLIENTS} clients",
        events.len(),
        batches.len()
    );

    let dir = tempfile::tempdir().expect("a temporary dir");
    let data_dir = dir.path().join("data");
    let mut logs = Vec::new();
    let mut kills_while_sending = 0;
    let mut bounds = Bounds {
        acknowledged: model.nothing(),
        sent: model.nothing(),
        checked: vec![false; events.len()],
    };
    for round in 0..=KILL_ROUNDS {
        let suivi = Suivi::start(&data_dir, &crash_test_env());
        check_recovered(&suivi, &model, &ledger, &mut bounds, &mut sample_rng, round).await;
        let rate = rng.random_range(KILL_ROUND_RATE);
        let rate_per_client = (round < KILL_ROUNDS).then_some(rate / NUM_CLIENTS as f64);
        let mut senders = JoinSet::new();
        for client in std::mem::take(&mut clients) {
            // After a crash, a client sometimes resends batches it had seen acknowledged, as a
            // client unsure of what got through would.
            let rewind = if round == 0 {
                0
            } else {
                rng.random_range(0..3)
            };
            senders.spawn(send_round(
                client,
                suivi.grpc_addr,
                events.clone(),
                ledger.clone(),
                rewind,
                rate_per_client,
            ));
        }
        if round < KILL_ROUNDS {
            let kill_after = Duration::from_millis(rng.random_range(KILL_AFTER_MS));
            tokio::time::sleep(kill_after).await;
            let killed_at = Instant::now();
            let log = suivi.kill();
            let ends = join_clients(&mut senders, CLIENT_PATIENCE, &log).await;
            let mut sending = false;
            for (client, end) in ends {
                match end {
                    RoundEnd::Finished => {}
                    RoundEnd::Broken { at, error } => {
                        assert!(
                            at >= killed_at,
                            "client {} failed before suivi was killed: {error}\nsuivi's log:\n{log}",
                            client.client
                        );
                        sending = true;
                    }
                }
                clients.push(client);
            }
            kills_while_sending += usize::from(sending);
            eprintln!(
                "round {round}: sending at most {rate:.0} events/s, killed after {kill_after:?}{}; \
                 {} of {} events acknowledged",
                if sending {
                    ""
                } else {
                    " (the clients had finished)"
                },
                ledger.count(&ledger.acknowledged),
                events.len()
            );
            logs.push(log);
        } else {
            let ends = join_clients(&mut senders, FINISH_PATIENCE, &suivi.log()).await;
            for (client, end) in ends {
                if let RoundEnd::Broken { error, .. } = end {
                    panic!(
                        "client {} failed in the last round, without a crash: {error}\nsuivi's log:\n{}",
                        client.client,
                        suivi.log()
                    );
                }
                clients.push(client);
            }
            assert_eq!(
                ledger.count(&ledger.acknowledged),
                events.len(),
                "every event is acknowledged once every client finished"
            );
            let everything = model.figures(|_| true);
            assert_counters(&suivi, &everything, "after every event was sent").await;

            // Durability of what was acknowledged: a crash right now, and nothing resent.
            logs.push(suivi.kill());
            let suivi = Suivi::start(&data_dir, &crash_test_env());
            assert_counters(
                &suivi,
                &everything,
                "after a last SIGKILL and a restart without resending anything",
            )
            .await;
            let status = suivi.terminate().await;
            assert!(status.success(), "suivi stops cleanly on SIGTERM: {status}");
        }
    }
    assert!(
        kills_while_sending * 2 >= KILL_ROUNDS,
        "only {kills_while_sending} of {KILL_ROUNDS} kills landed while clients were sending: \
         the test needs more events to exercise crashes"
    );
    let logs = logs.concat();
    let checkpoints = logs.matches("\"checkpoint written\"").count();
    assert!(
        checkpoints >= 2,
        "suivi wrote {checkpoints} checkpoints: the test means to crash around checkpoints"
    );
    eprintln!(
        "{KILL_ROUNDS} kills ({kills_while_sending} while sending), {checkpoints} checkpoints, in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_journal_tail_and_a_corrupt_checkpoint_lose_nothing_acknowledged() {
    let registry = Registry::load(None).expect("the embedded registry loads");
    let events = suivi::simulate::generate(&registry, 7, 0.004, DEFAULT_CHAPTER_COUNT);
    assert!(events.len() > 1000, "{} events", events.len());
    let model = Model::new(&registry, &events);
    let (before, tail) = events.split_at(events.len() - 300);
    let (last, after) = tail.split_at(150);
    let (first_end, last_end) = (before.len(), before.len() + last.len());
    let dir = tempfile::tempdir().expect("a temporary dir");
    let data_dir = dir.path().join("data");
    // No checkpoint but the ones at shutdown, and one shard (one journal): this test decides
    // which records are where.
    let env = [
        ("SUIVI_CHECKPOINT_INTERVAL", "1h"),
        ("SUIVI_JOURNAL_SEGMENT_BYTES", JOURNAL_SEGMENT_BYTES),
        ("SUIVI_SHARDS", "1"),
    ];

    // Garbage after the last record, as a crash in the middle of an append leaves: cut off and
    // counted, and nothing acknowledged is lost.
    let suivi = Suivi::start(&data_dir, &env);
    for batch in before.chunks(200) {
        ingest_all_new(&suivi, batch).await;
    }
    suivi.kill();
    let garbage = b"\x2a\0\0\0torn";
    let segment = newest_file(&data_dir.join("journal"), "wal");
    OpenOptions::new()
        .append(true)
        .open(&segment)
        .and_then(|mut file| file.write_all(garbage))
        .expect("garbage appended to the newest journal segment");
    let suivi = Suivi::start(&data_dir, &env);
    assert_counters(
        &suivi,
        &model.figures(|index| index < first_end),
        "after garbage was appended to the journal",
    )
    .await;
    assert_eq!(
        metric(&suivi, "suivi_journal_torn_bytes_total").await,
        garbage.len() as f64,
        "the garbage is cut off and counted"
    );

    // The last record cut in half: exactly that record's events are gone, every earlier one is
    // still counted, and the lost ones are new again (the dedup state agrees with the counters).
    ingest_all_new(&suivi, last).await;
    suivi.kill();
    let segment = newest_file(&data_dir.join("journal"), "wal");
    let (record_start, record_end) = last_record(&segment);
    let cut_at = record_start + (record_end - record_start) / 2;
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .and_then(|file| file.set_len(cut_at))
        .expect("the last journal record cut in half");
    let suivi = Suivi::start(&data_dir, &env);
    assert_counters(
        &suivi,
        &model.figures(|index| index < first_end),
        "after the last journal record was cut in half",
    )
    .await;
    assert_eq!(
        metric(&suivi, "suivi_journal_torn_bytes_total").await,
        (cut_at - record_start) as f64,
    );
    ingest_all_new(&suivi, last).await;
    assert_counters(
        &suivi,
        &model.figures(|index| index < last_end),
        "after the lost record was sent again",
    )
    .await;
    let status = suivi.terminate().await;
    assert!(status.success(), "{status}");

    // Two checkpoints (one per clean stop), the newer one corrupted: recovery falls back to the
    // older one and replays the journal after it.
    let suivi = Suivi::start(&data_dir, &env);
    ingest_all_new(&suivi, after).await;
    let status = suivi.terminate().await;
    assert!(status.success(), "{status}");
    let checkpoint_dir = data_dir.join("checkpoints");
    let newest = newest_file(&checkpoint_dir, "ckpt");
    let older = files(&checkpoint_dir, "ckpt");
    assert_eq!(older.len(), 2, "two checkpoints are kept: {older:?}");
    let older_position: u64 = older[0]
        .file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.parse().ok())
        .expect("a checkpoint is named by its journal position");
    let mut bytes = std::fs::read(&newest).expect("the newest checkpoint reads");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&newest, bytes).expect("the newest checkpoint is corrupted");
    let suivi = Suivi::start(&data_dir, &env);
    assert_counters(
        &suivi,
        &model.figures(|_| true),
        "after the newest checkpoint was corrupted",
    )
    .await;
    assert_eq!(
        metric(&suivi, "suivi_checkpoints_rejected_total").await,
        1.0
    );
    let log = suivi.log();
    let recovered = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|entry| entry["fields"]["message"] == "state recovered")
        .unwrap_or_else(|| panic!("suivi logs what it recovered: {log}"));
    assert_eq!(
        recovered["fields"]["checkpoint"],
        json!(format!("Some({older_position})")),
        "recovery starts from the older checkpoint: {recovered}"
    );
    assert!(
        newest.with_extension("ckpt.corrupt").exists(),
        "the corrupt checkpoint is set aside"
    );
    let status = suivi.terminate().await;
    assert!(status.success(), "{status}");
}

/// The environment of the crash test's binary, besides what [`Suivi::start`] always sets: three
/// shards, so that kills land between shards' journal appends and checkpoints, and a
/// submission's parts can be durable in one shard and not yet in another.
fn crash_test_env() -> [(&'static str, &'static str); 3] {
    [
        ("SUIVI_CHECKPOINT_INTERVAL", CHECKPOINT_INTERVAL),
        ("SUIVI_JOURNAL_SEGMENT_BYTES", JOURNAL_SEGMENT_BYTES),
        ("SUIVI_SHARDS", "3"),
    ]
}

/// What clients saw, per event (by its index in the test's event list).
struct Ledger {
    /// Sent in a request at least once (so it may be counted).
    sent: Vec<AtomicBool>,
    /// Acknowledged (accepted or duplicate) in an OK answer at least once (so it must be counted).
    acknowledged: Vec<AtomicBool>,
}

impl Ledger {
    fn new(num_events: usize) -> Ledger {
        let flags = || (0..num_events).map(|_| AtomicBool::new(false)).collect();
        Ledger {
            sent: flags(),
            acknowledged: flags(),
        }
    }

    fn mark(flags: &[AtomicBool], range: Range<usize>) {
        for flag in &flags[range] {
            flag.store(true, Ordering::SeqCst);
        }
    }

    fn count(&self, flags: &[AtomicBool]) -> usize {
        flags
            .iter()
            .filter(|flag| flag.load(Ordering::SeqCst))
            .count()
    }

    fn snapshot(flags: &[AtomicBool]) -> Vec<bool> {
        flags
            .iter()
            .map(|flag| flag.load(Ordering::SeqCst))
            .collect()
    }
}

/// One client's slice of the events and how far it got, carried from round to round.
struct ClientState {
    client: usize,
    /// Sends with unary `Ingest`, one request at a time, rather than over `IngestStream`.
    unary: bool,
    batches: Vec<Range<usize>>,
    /// Every batch before this one was acknowledged.
    acknowledged_prefix: usize,
}

/// How a client's round ended.
enum RoundEnd {
    /// Every batch of the client is acknowledged.
    Finished,
    /// The connection broke (or could not be made) at `at`.
    Broken { at: Instant, error: String },
}

/// Sends the client's batches from the first one not acknowledged (less `rewind`, to resend some
/// that were), until all are acknowledged or the connection breaks.
async fn send_round(
    mut state: ClientState,
    grpc_addr: SocketAddr,
    events: Arc<Vec<proto::LearnerEvent>>,
    ledger: Arc<Ledger>,
    rewind: usize,
    rate: Option<f64>,
) -> (ClientState, RoundEnd) {
    let first = state.acknowledged_prefix.saturating_sub(rewind);
    let pace = Pace {
        started: tokio::time::Instant::now(),
        events: 0,
        rate,
    };
    let end = if state.unary {
        send_unary(&mut state, first, grpc_addr, &events, &ledger, pace).await
    } else {
        send_stream(&mut state, first, grpc_addr, &events, &ledger, pace).await
    };
    (state, end)
}

/// Keeps a client at most at `rate` events a second, when there is one.
struct Pace {
    started: tokio::time::Instant,
    events: usize,
    rate: Option<f64>,
}

impl Pace {
    /// Waits until `events` more may be sent.
    async fn take(&mut self, events: usize) {
        if let Some(rate) = self.rate {
            let due = self.started + Duration::from_secs_f64(self.events as f64 / rate);
            tokio::time::sleep_until(due).await;
        }
        self.events += events;
    }
}

fn broken(error: impl std::fmt::Display) -> RoundEnd {
    RoundEnd::Broken {
        at: Instant::now(),
        error: error.to_string(),
    }
}

async fn connect(grpc_addr: SocketAddr) -> Result<IngestServiceClient<Channel>, RoundEnd> {
    let channel = Channel::from_shared(format!("http://{grpc_addr}"))
        .expect("a valid URI")
        .connect()
        .await
        .map_err(broken)?;
    Ok(IngestServiceClient::new(channel))
}

async fn send_unary(
    state: &mut ClientState,
    first: usize,
    grpc_addr: SocketAddr,
    events: &[proto::LearnerEvent],
    ledger: &Ledger,
    mut pace: Pace,
) -> RoundEnd {
    let mut client = match connect(grpc_addr).await {
        Ok(client) => client,
        Err(end) => return end,
    };
    for batch in first..state.batches.len() {
        let range = state.batches[batch].clone();
        pace.take(range.len()).await;
        Ledger::mark(&ledger.sent, range.clone());
        let request = proto::IngestRequest {
            events: events[range.clone()].to_vec(),
        };
        match client.ingest(request).await {
            Ok(answer) => {
                let answer = answer.into_inner();
                state.acknowledge(
                    batch,
                    answer.accepted,
                    answer.duplicates,
                    &answer.rejections,
                );
                Ledger::mark(&ledger.acknowledged, range);
            }
            Err(status) => return broken(status),
        }
    }
    RoundEnd::Finished
}

async fn send_stream(
    state: &mut ClientState,
    first: usize,
    grpc_addr: SocketAddr,
    events: &[proto::LearnerEvent],
    ledger: &Ledger,
    mut pace: Pace,
) -> RoundEnd {
    let mut client = match connect(grpc_addr).await {
        Ok(client) => client,
        Err(end) => return end,
    };
    let (requests, outgoing) = tokio::sync::mpsc::channel(STREAM_WINDOW);
    let mut answers = match client.ingest_stream(ReceiverStream::new(outgoing)).await {
        Ok(answers) => answers.into_inner(),
        Err(status) => return broken(status),
    };
    let mut next = first;
    let mut in_flight = VecDeque::new();
    loop {
        while in_flight.len() < STREAM_WINDOW && next < state.batches.len() {
            let range = state.batches[next].clone();
            pace.take(range.len()).await;
            Ledger::mark(&ledger.sent, range.clone());
            let request = proto::IngestStreamRequest {
                events: events[range].to_vec(),
            };
            if requests.send(request).await.is_err() {
                return broken("the request stream closed");
            }
            in_flight.push_back(next);
            next += 1;
        }
        let Some(&batch) = in_flight.front() else {
            return RoundEnd::Finished;
        };
        match answers.message().await {
            Ok(Some(answer)) => {
                state.acknowledge(
                    batch,
                    answer.accepted,
                    answer.duplicates,
                    &answer.rejections,
                );
                Ledger::mark(&ledger.acknowledged, state.batches[batch].clone());
                in_flight.pop_front();
            }
            Ok(None) => return broken("the answer stream ended before every batch was answered"),
            Err(status) => return broken(status),
        }
    }
}

impl ClientState {
    /// Checks an OK answer to batch `batch` and moves past it.
    fn acknowledge(
        &mut self,
        batch: usize,
        accepted: u32,
        duplicates: u32,
        rejections: &[proto::Rejection],
    ) {
        let len = self.batches[batch].len();
        assert!(
            rejections.is_empty(),
            "client {}: simulated events are valid: {rejections:?}",
            self.client
        );
        assert_eq!(
            (accepted + duplicates) as usize,
            len,
            "client {}: every event of a batch is accepted or a duplicate",
            self.client
        );
        if batch < self.acknowledged_prefix {
            assert_eq!(
                accepted, 0,
                "client {}: batch {batch}, acknowledged before, is all duplicates",
                self.client
            );
        }
        self.acknowledged_prefix = self.acknowledged_prefix.max(batch + 1);
    }
}

/// Waits for every client of the round, at most `patience`.
async fn join_clients(
    senders: &mut JoinSet<(ClientState, RoundEnd)>,
    patience: Duration,
    log: &str,
) -> Vec<(ClientState, RoundEnd)> {
    let mut ends = Vec::new();
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, senders.join_next()).await {
            Ok(None) => return ends,
            Ok(Some(Ok(end))) => ends.push(end),
            Ok(Some(Err(error))) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(error) => panic!("a client task failed: {error}"),
            },
            Err(_) => panic!("the clients did not end within {patience:?}\nsuivi's log:\n{log}"),
        }
    }
}

/// What [`check_recovered`] carries from one restart to the next.
struct Bounds {
    /// The figures of the events acknowledged so far: the least suivi may show.
    acknowledged: Folded,
    /// The figures of the events sent so far: the most suivi may show.
    sent: Folded,
    /// The acknowledged events already sent again to check that they are duplicates.
    checked: Vec<bool>,
}

/// Checks a freshly restarted suivi against what its clients saw: each counter is at least that
/// of the acknowledged events and at most that of the events sent, and acknowledged events are
/// known: sent again, each is a duplicate. Those are every event acknowledged since the last
/// check (marked in `checked`), and a sample of the older ones.
async fn check_recovered(
    suivi: &Suivi,
    model: &Model,
    ledger: &Ledger,
    bounds: &mut Bounds,
    rng: &mut ChaCha8Rng,
    round: usize,
) {
    let acknowledged = Ledger::snapshot(&ledger.acknowledged);
    let sent = Ledger::snapshot(&ledger.sent);
    model.fold(&mut bounds.acknowledged, &acknowledged);
    model.fold(&mut bounds.sent, &sent);
    let checked = &mut bounds.checked;
    let (lower, upper) = (&bounds.acknowledged.figures, &bounds.sent.figures);
    let served = served_counters(suivi).await;
    let bound = |figures: &Figures| -> BTreeMap<String, Value> {
        std::iter::once(figures.totals())
            .chain(figures.campaigns())
            .map(|counters| {
                let counters = serde_json::to_value(counters).expect("counters serialize");
                (
                    counters["campaign"].as_str().unwrap_or("").to_owned(),
                    counters,
                )
            })
            .collect()
    };
    let (lower, upper) = (bound(lower), bound(upper));
    let zero = Value::Null;
    for (campaign, counters) in std::iter::once(&served.totals)
        .chain(&served.campaigns)
        .map(|counters| {
            (
                counters["campaign"]
                    .as_str()
                    .expect("a campaign id")
                    .to_owned(),
                counters,
            )
        })
    {
        let low = lower.get(&campaign).unwrap_or(&zero);
        let high = upper.get(&campaign).unwrap_or(&zero);
        for (field, value) in counts(counters) {
            let low = counts(low).get(&field).copied().unwrap_or(0);
            let high = counts(high).get(&field).copied().unwrap_or(0);
            assert!(
                low <= value && value <= high,
                "round {round}: campaign {campaign:?} {field} is {value} after the restart, \
                 but the events acknowledged give {low} and those sent {high}"
            );
        }
    }

    let mut older: Vec<usize> = (0..checked.len()).filter(|&index| checked[index]).collect();
    older.shuffle(rng);
    older.truncate(OLDER_EVENTS_CHECKED);
    let newer: Vec<usize> = (0..checked.len())
        .filter(|&index| acknowledged[index] && !checked[index])
        .collect();
    let known: Vec<proto::LearnerEvent> = older
        .into_iter()
        .chain(newer)
        .map(|index| {
            checked[index] = true;
            model.events[index].clone()
        })
        .collect();
    let mut client = suivi.ingest_client().await;
    for batch in known.chunks(1000) {
        let answer = client
            .ingest(proto::IngestRequest {
                events: batch.to_vec(),
            })
            .await
            .expect("Ingest answers")
            .into_inner();
        assert_eq!(
            (answer.accepted, answer.duplicates as usize),
            (0, batch.len()),
            "round {round}: every acknowledged event is a duplicate after the restart"
        );
    }
}

/// The integer counters of a CampaignCounters JSON object, by name (`chapters_completed.3`…).
fn counts(counters: &Value) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for field in [
        "clicks",
        "unique_visitors",
        "enrolled",
        "started",
        "certified",
    ] {
        if let Some(value) = counters[field].as_u64() {
            counts.insert(field.to_owned(), value);
        }
    }
    if let Some(chapters) = counters["chapters_completed"].as_array() {
        for (index, value) in chapters.iter().enumerate() {
            counts.insert(
                format!("chapters_completed.{index}"),
                value.as_u64().expect("a count"),
            );
        }
    }
    counts
}

/// What suivi serves: totals, every campaign, and every timeline, `as_of` left out.
#[derive(Debug, PartialEq)]
struct Served {
    totals: Value,
    campaigns: Vec<Value>,
    timelines: BTreeMap<String, Value>,
}

async fn served_counters(suivi: &Suivi) -> Served {
    let totals = without_as_of(suivi.get("/v1/totals").await);
    let list = suivi.get("/v1/campaigns").await;
    let campaigns: Vec<Value> = list["campaigns"]
        .as_array()
        .unwrap_or_else(|| panic!("a campaign list: {list}"))
        .iter()
        .cloned()
        .map(without_as_of)
        .collect();
    let mut timelines = BTreeMap::new();
    timelines.insert(
        "*".to_owned(),
        suivi.get("/v1/totals/timeline").await["days"].clone(),
    );
    for counters in &campaigns {
        let campaign = counters["campaign"].as_str().expect("a campaign id");
        let days = suivi
            .get(&format!("/v1/campaigns/{campaign}/timeline"))
            .await["days"]
            .clone();
        timelines.insert(campaign.to_owned(), days);
    }
    Served {
        totals,
        campaigns,
        timelines,
    }
}

fn expected_counters(figures: &Figures) -> Served {
    // Through JSON text, as suivi's answers come: serde_json parses floats to within one ulp,
    // so the same text must be parsed on both sides.
    fn json(value: impl serde::Serialize) -> Value {
        let text = serde_json::to_string(&value).expect("figures serialize");
        serde_json::from_str(&text).expect("figures parse back")
    }
    let campaigns: Vec<Value> = figures
        .campaigns()
        .into_iter()
        .map(|counters| without_as_of(json(counters)))
        .collect();
    let mut timelines = BTreeMap::new();
    timelines.insert(
        "*".to_owned(),
        json(
            figures
                .timeline("*", None, None)
                .expect("the totals' timeline"),
        ),
    );
    for counters in &campaigns {
        let campaign = counters["campaign"].as_str().expect("a campaign id");
        let days = figures
            .timeline(campaign, None, None)
            .expect("a campaign's timeline");
        timelines.insert(campaign.to_owned(), json(days));
    }
    Served {
        totals: without_as_of(json(figures.totals())),
        campaigns,
        timelines,
    }
}

/// Checks that suivi serves exactly the counters and timelines of `expected`.
async fn assert_counters(suivi: &Suivi, expected: &Figures, when: &str) {
    let served = served_counters(suivi).await;
    let expected = expected_counters(expected);
    if served == expected {
        return;
    }
    assert_eq!(served.totals, expected.totals, "{when}: the totals differ");
    let served_ids: Vec<&Value> = served.campaigns.iter().map(|c| &c["campaign"]).collect();
    let expected_ids: Vec<&Value> = expected.campaigns.iter().map(|c| &c["campaign"]).collect();
    assert_eq!(served_ids, expected_ids, "{when}: the campaigns differ");
    for (served, expected) in served.campaigns.iter().zip(&expected.campaigns) {
        assert_eq!(served, expected, "{when}: a campaign's counters differ");
    }
    for (campaign, days) in &served.timelines {
        assert_eq!(
            Some(days),
            expected.timelines.get(campaign),
            "{when}: the timeline of {campaign:?} differs"
        );
    }
    panic!("{when}: the counters differ");
}

/// The counters the events give, computed in-process by the same rules, without any crash.
struct Model {
    registry: Registry,
    settings: AggregatorSettings,
    events: Vec<proto::LearnerEvent>,
    parsed: Vec<Event>,
}

impl Model {
    fn new(registry: &Registry, events: &[proto::LearnerEvent]) -> Model {
        let key = parse_key(PSEUDONYM_KEY).expect("the test key");
        let parser = EventParser::new(DEFAULT_CHAPTER_COUNT, key);
        let now = Utc::now();
        let parsed = events
            .iter()
            .map(|event| {
                parser
                    .parse(&RawEvent::from(event), now)
                    .unwrap_or_else(|reason| panic!("a valid event {event:?}: {reason}"))
            })
            .collect();
        Model {
            registry: registry.clone(),
            settings: AggregatorSettings {
                time_zone: Settings::default().time_zone().expect("the default zone"),
                chapter_count: DEFAULT_CHAPTER_COUNT,
                max_unregistered_campaigns: DEFAULT_MAX_UNREGISTERED_CAMPAIGNS,
            },
            events: events.to_vec(),
            parsed,
        }
    }

    /// The figures of the events whose index `include` says.
    fn figures(&self, include: impl Fn(usize) -> bool) -> Figures {
        let mut folded = self.nothing();
        let include: Vec<bool> = (0..self.parsed.len()).map(include).collect();
        self.fold(&mut folded, &include);
        folded.figures
    }

    /// The figures of no event, to fold events into.
    fn nothing(&self) -> Folded {
        let now = Utc::now();
        Folded {
            aggregator: Aggregator::new(
                self.settings.clone(),
                self.registry
                    .campaigns
                    .iter()
                    .map(|campaign| campaign.id.clone()),
            ),
            figures: Figures::new(&self.registry, DEFAULT_CHAPTER_COUNT, now),
            included: vec![false; self.parsed.len()],
        }
    }

    /// Folds into `folded` the events `include` says that it does not hold yet.
    fn fold(&self, folded: &mut Folded, include: &[bool]) {
        for (index, event) in self.parsed.iter().enumerate() {
            if include[index] && !folded.included[index] {
                folded.aggregator.apply(event).expect("a campaign slot");
                folded.included[index] = true;
            }
        }
        folded
            .figures
            .publish(0, folded.aggregator.drain_changes(), Utc::now());
    }
}

/// The figures of a set of events that only grows, as the events acknowledged or sent do, so that
/// each check folds in only what joined the set since the previous one.
struct Folded {
    aggregator: Aggregator,
    figures: Figures,
    included: Vec<bool>,
}

/// Sends `events` in one `Ingest` request and checks that every one is accepted (new).
async fn ingest_all_new(suivi: &Suivi, events: &[proto::LearnerEvent]) {
    let answer = suivi
        .ingest_client()
        .await
        .ingest(proto::IngestRequest {
            events: events.to_vec(),
        })
        .await
        .expect("Ingest answers")
        .into_inner();
    assert_eq!(
        (answer.accepted as usize, answer.duplicates),
        (events.len(), 0),
        "{:?}",
        answer.rejections
    );
}

/// The value of an unlabelled metric in suivi's `/metrics`.
async fn metric(suivi: &Suivi, name: &str) -> f64 {
    let text = suivi
        .http
        .get(format!("http://{}/metrics", suivi.http_addr))
        .send()
        .await
        .expect("GET /metrics answers")
        .text()
        .await
        .expect("a text body");
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("/metrics has {name}:\n{text}"))
        .parse()
        .unwrap_or_else(|error| panic!("{name} is a number: {error}"))
}

/// The files of `dir` ending in `.{extension}`, in name order (for journal segments and
/// checkpoints, position order).
fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{} lists: {error}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    files.sort();
    files
}

fn newest_file(dir: &Path, extension: &str) -> PathBuf {
    files(dir, extension)
        .pop()
        .unwrap_or_else(|| panic!("{} has a .{extension} file", dir.display()))
}

/// The byte range of the last record of a journal segment: records are
/// `[payload length: u32 LE][crc32c: u32][position: u64][payload]` (see `journal.rs`).
fn last_record(segment: &Path) -> (u64, u64) {
    let bytes = std::fs::read(segment).expect("the segment reads");
    let mut offset = 0;
    let mut last = None;
    while offset < bytes.len() {
        let length = u32::from_le_bytes(
            bytes[offset..offset + 4]
                .try_into()
                .expect("four length bytes"),
        ) as usize;
        let end = offset + 16 + length;
        assert!(end <= bytes.len(), "whole records in {}", segment.display());
        last = Some((offset as u64, end as u64));
        offset = end;
    }
    last.unwrap_or_else(|| panic!("{} holds a record", segment.display()))
}
