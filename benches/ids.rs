//! The benchmark of the remembered event ids (issue 15): `aggregate::ids::EventIds` against the
//! `hashbrown::HashTable<[u32; 4]>` the aggregator kept them in before, in the same run, on
//! uniformly random 96-bit ids generated from a fixed seed: inserts (building a set from
//! empty), hit and miss lookups, and the checkpoint's side (freeze, encode, decode; for the hash
//! table, what the checkpoint and restore did with it).
//!
//! Criterion runs at 1 and 10 million ids (`SUIVI_BENCH_IDS_SIZES` changes the list).
//! `SUIVI_BENCH_IDS_ONCE=N` times each step once at N ids instead, with the slowest single
//! insert (each insert timed in two identical runs, so that a pause of the shared machine is
//! not taken for one of the structure), for sizes criterion would take too long over. `SUIVI_BENCH_IDS_MEMORY=1` runs no
//! benchmark: it measures the resident memory (`VmRSS`) each structure adds for N ids, each
//! case in a fresh child process. BENCHMARKS.md says how to run them and what they gave.

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use hashbrown::HashTable;

use suivi::aggregate::ids::EventIds;

/// Sizes criterion measures, unless `SUIVI_BENCH_IDS_SIZES` says otherwise.
const SIZES: [usize; 2] = [1_000_000, 10_000_000];
/// Sizes the memory measurement builds, unless `SUIVI_BENCH_IDS_SIZES` says otherwise.
const MEMORY_SIZES: [usize; 4] = [1_000_000, 10_000_000, 30_000_000, 100_000_000];
/// Lookups timed per sample, hits and misses alike.
const LOOKUPS: usize = 1_000_000;
const SEED: u64 = 15;
/// The seed of the ids that are never inserted.
const MISS_SEED: u64 = 16;

fn main() {
    if let Ok(case) = std::env::var("SUIVI_BENCH_IDS_MEMORY_CASE") {
        memory_case(&case);
        return;
    }
    if std::env::var_os("SUIVI_BENCH_IDS_MEMORY").is_some_and(|value| value != "0") {
        memory_report();
        return;
    }
    if let Ok(count) = std::env::var("SUIVI_BENCH_IDS_ONCE") {
        once(
            count
                .parse()
                .expect("SUIVI_BENCH_IDS_ONCE is a number of ids"),
        );
        return;
    }
    // Plots cost more than a second per benchmark and the figures are in the text output.
    let mut criterion = Criterion::default().without_plots().configure_from_args();
    for count in sizes(&SIZES) {
        benches(&mut criterion, count);
    }
    criterion.final_summary();
}

/// The sizes `SUIVI_BENCH_IDS_SIZES` lists (comma-separated), else `default`.
fn sizes(default: &[usize]) -> Vec<usize> {
    std::env::var("SUIVI_BENCH_IDS_SIZES").map_or_else(
        |_| default.to_vec(),
        |list| {
            list.split(',')
                .map(|size| {
                    size.trim()
                        .parse()
                        .expect("SUIVI_BENCH_IDS_SIZES lists numbers")
                })
                .collect()
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The two structures, behind the calls the aggregator makes.

/// A set of remembered ids as the aggregator uses one.
trait IdSet {
    const NAME: &'static str;
    fn empty() -> Self;
    fn find(&self, id: &[u32; 3]) -> Option<u32>;
    fn insert(&mut self, id: [u32; 3], word: u32);
}

impl IdSet for EventIds {
    const NAME: &'static str = "event_ids";
    fn empty() -> Self {
        EventIds::new()
    }
    fn find(&self, id: &[u32; 3]) -> Option<u32> {
        EventIds::find(self, id)
    }
    fn insert(&mut self, id: [u32; 3], word: u32) {
        EventIds::insert(self, id, word);
    }
}

/// The aggregator's table before issue 15: `seen`, hashed by `seen_hash`.
struct Table(HashTable<[u32; 4]>);

fn seen_hash(id: &[u32]) -> u64 {
    u64::from(id[0]) | (u64::from(id[1]) << 32)
}

impl IdSet for Table {
    const NAME: &'static str = "hash_table";
    fn empty() -> Self {
        Table(HashTable::new())
    }
    fn find(&self, id: &[u32; 3]) -> Option<u32> {
        self.0
            .find(seen_hash(id), |seen| seen[..3] == *id)
            .map(|seen| seen[3])
    }
    fn insert(&mut self, [a, b, c]: [u32; 3], word: u32) {
        self.0
            .insert_unique(seen_hash(&[a, b]), [a, b, c, word], |seen| seen_hash(seen));
    }
}

impl Table {
    /// What `Aggregator::checkpoint` did: every entry's four words, in the table's order.
    fn encode(&self, out: &mut Vec<u32>) {
        out.reserve(self.0.len() * 4);
        for words in &self.0 {
            out.extend_from_slice(words);
        }
    }

    /// What `Aggregator::restore` did: a table of the right capacity, each entry inserted.
    fn decode(words: &[u32]) -> Table {
        let mut table = HashTable::with_capacity(words.len() / 4);
        for words in words.chunks_exact(4) {
            table.insert_unique(
                seen_hash(words),
                [words[0], words[1], words[2], words[3]],
                |seen| seen_hash(seen),
            );
        }
        Table(table)
    }
}

// ---------------------------------------------------------------------------------------------
// Ids.

/// Uniform 96-bit ids, as the keyed fingerprint gives them, from a seed (splitmix64).
struct Ids(u64);

impl Iterator for Ids {
    type Item = [u32; 3];
    fn next(&mut self) -> Option<[u32; 3]> {
        let mut next = || {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let (a, b) = (next(), next());
        Some([(a >> 32) as u32, a as u32, b as u32])
    }
}

/// The word remembered with an id: 16 bits of content, 16 of slot.
fn word_of(id: &[u32; 3]) -> u32 {
    id[2] & 0xFFFF_0000 | id[0] & 0x3F
}

fn build<S: IdSet>(ids: &[[u32; 3]]) -> S {
    let mut set = S::empty();
    for id in ids {
        set.insert(*id, word_of(id));
    }
    set
}

fn found<S: IdSet>(set: &S, ids: &[[u32; 3]]) -> usize {
    ids.iter().filter(|id| set.find(id).is_some()).count()
}

// ---------------------------------------------------------------------------------------------
// Criterion.

fn benches(criterion: &mut Criterion, count: usize) {
    let present: Vec<[u32; 3]> = Ids(SEED).take(count).collect();
    let absent: Vec<[u32; 3]> = Ids(MISS_SEED).take(LOOKUPS).collect();
    let hits = &present[..LOOKUPS.min(count)];
    let mut group = criterion.benchmark_group(format!("ids/{count}"));
    group.sample_size(10).sampling_mode(SamplingMode::Flat);

    group.throughput(Throughput::Elements(count as u64));
    group.bench_function(BenchmarkId::new("insert", EventIds::NAME), |b| {
        b.iter_custom(|iterations| timed_builds::<EventIds>(&present, iterations))
    });
    group.bench_function(BenchmarkId::new("insert", Table::NAME), |b| {
        b.iter_custom(|iterations| timed_builds::<Table>(&present, iterations))
    });

    let event_ids: EventIds = build(&present);
    let table: Table = build(&present);
    group.throughput(Throughput::Elements(hits.len() as u64));
    group.bench_function(BenchmarkId::new("find_hit", EventIds::NAME), |b| {
        b.iter(|| found(&event_ids, black_box(hits)))
    });
    group.bench_function(BenchmarkId::new("find_hit", Table::NAME), |b| {
        b.iter(|| found(&table, black_box(hits)))
    });
    group.throughput(Throughput::Elements(absent.len() as u64));
    group.bench_function(BenchmarkId::new("find_miss", EventIds::NAME), |b| {
        b.iter(|| found(&event_ids, black_box(&absent)))
    });
    group.bench_function(BenchmarkId::new("find_miss", Table::NAME), |b| {
        b.iter(|| found(&table, black_box(&absent)))
    });

    group.throughput(Throughput::Elements(count as u64));
    group.bench_function(BenchmarkId::new("freeze", EventIds::NAME), |b| {
        b.iter_with_large_drop(|| event_ids.freeze())
    });
    let mut bytes = Vec::new();
    group.bench_function(BenchmarkId::new("encode", EventIds::NAME), |b| {
        b.iter(|| {
            bytes.clear();
            event_ids.freeze().encode(&mut bytes);
        })
    });
    let mut words = Vec::new();
    group.bench_function(BenchmarkId::new("encode", Table::NAME), |b| {
        b.iter(|| {
            words.clear();
            table.encode(&mut words);
        })
    });
    group.bench_function(BenchmarkId::new("decode", EventIds::NAME), |b| {
        b.iter_with_large_drop(|| EventIds::decode(&bytes).expect("what encode wrote"))
    });
    group.bench_function(BenchmarkId::new("decode", Table::NAME), |b| {
        b.iter_with_large_drop(|| Table::decode(&words))
    });
    group.finish();
}

/// The time of `iterations` builds of a set of `ids` from empty, not counting their drops.
fn timed_builds<S: IdSet>(ids: &[[u32; 3]], iterations: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iterations {
        let start = Instant::now();
        let set: S = build(ids);
        total += start.elapsed();
        drop(black_box(set));
    }
    total
}

// ---------------------------------------------------------------------------------------------
// One timed pass (`SUIVI_BENCH_IDS_ONCE`).

fn once(count: usize) {
    let present: Vec<[u32; 3]> = Ids(SEED).take(count).collect();
    let absent: Vec<[u32; 3]> = Ids(MISS_SEED).take(LOOKUPS).collect();
    let hits = &present[..LOOKUPS.min(count)];
    println!("{count} ids, each step timed once (rates in millions a second)");
    println!("| | event_ids | hash_table |");
    println!("|---|---:|---:|");
    let (event_ids, event_ids_inserts) = once_build::<EventIds>(&present);
    let (table, table_inserts) = once_build::<Table>(&present);
    let row = |what: &str, a: String, b: String| println!("| {what} | {a} | {b} |");
    for (line, (a, b)) in [
        "inserts/s, building from empty",
        "inserts/s, the last 10%",
        "slowest single insert (the faster of two runs)",
        "inserts over 100 µs (in both runs)",
    ]
    .iter()
    .zip(event_ids_inserts.into_iter().zip(table_inserts))
    {
        row(line, a, b);
    }
    let rate =
        |elapsed: Duration, n: usize| format!("{:.2}", n as f64 / elapsed.as_secs_f64() / 1e6);
    let time = |run: &dyn Fn() -> usize| {
        let start = Instant::now();
        assert!(black_box(run()) > 0 || hits.is_empty() || absent.is_empty());
        start.elapsed()
    };
    row(
        "hit lookups/s",
        rate(time(&|| found(&event_ids, hits)), hits.len()),
        rate(time(&|| found(&table, hits)), hits.len()),
    );
    row(
        "miss lookups/s",
        rate(time(&|| LOOKUPS - found(&event_ids, &absent) + 1), LOOKUPS),
        rate(time(&|| LOOKUPS - found(&table, &absent) + 1), LOOKUPS),
    );
    let start = Instant::now();
    let frozen = event_ids.freeze();
    row("freeze", format!("{:.2?}", start.elapsed()), "—".into());
    let per_id = |elapsed: Duration| {
        format!(
            "{:.2?} ({:.1} ns an id)",
            elapsed,
            elapsed.as_nanos() as f64 / count as f64
        )
    };
    let mut bytes = Vec::new();
    let start = Instant::now();
    frozen.encode(&mut bytes);
    let encode = start.elapsed();
    drop(frozen);
    let mut words = Vec::new();
    let start = Instant::now();
    table.encode(&mut words);
    row("encode", per_id(encode), per_id(start.elapsed()));
    drop((event_ids, table));
    let start = Instant::now();
    let decoded = EventIds::decode(&bytes).expect("what encode wrote");
    let decode = start.elapsed();
    assert_eq!(decoded.len(), count);
    drop((decoded, bytes));
    let start = Instant::now();
    let decoded = Table::decode(&words);
    row("decode", per_id(decode), per_id(start.elapsed()));
    drop(black_box(decoded));
}

/// Builds a set of `ids` three times: once timed as a whole (the rate from empty and over the
/// last 10%), then twice timing every insert. An insert slow in both of the identical runs is
/// slow for what it does (or for the allocator), not for being descheduled on a shared machine:
/// the slowest insert is the largest of each insert's faster time, and the count those over
/// 100 µs. Returns the first set and those figures.
fn once_build<S: IdSet>(ids: &[[u32; 3]]) -> (S, [String; 4]) {
    let mut set = S::empty();
    let last_tenth = ids.len() - ids.len() / 10;
    let start = Instant::now();
    for id in &ids[..last_tenth] {
        set.insert(*id, word_of(id));
    }
    let tail_start = Instant::now();
    for id in &ids[last_tenth..] {
        set.insert(*id, word_of(id));
    }
    let end = Instant::now();
    let mut first_times: Vec<u32> = Vec::with_capacity(ids.len());
    let mut again = S::empty();
    for id in ids {
        let before = Instant::now();
        again.insert(*id, word_of(id));
        first_times.push(before.elapsed().as_nanos().try_into().unwrap_or(u32::MAX));
    }
    drop(again);
    let (mut slowest, mut over) = (0, 0);
    let mut again = S::empty();
    for (id, first_time) in ids.iter().zip(first_times) {
        let before = Instant::now();
        again.insert(*id, word_of(id));
        let time = first_time.min(before.elapsed().as_nanos().try_into().unwrap_or(u32::MAX));
        slowest = slowest.max(time);
        over += usize::from(time > 100_000);
    }
    drop(again);
    let rate =
        |elapsed: Duration, n: usize| format!("{:.2}", n as f64 / elapsed.as_secs_f64() / 1e6);
    let figures = [
        rate(end - start, ids.len()),
        rate(end - tail_start, ids.len() - last_tenth),
        format!("{:.2?}", Duration::from_nanos(slowest.into())),
        over.to_string(),
    ];
    (set, figures)
}

// ---------------------------------------------------------------------------------------------
// Memory (`SUIVI_BENCH_IDS_MEMORY`).

/// The cases, each in a fresh child process, and a table of what they print.
fn memory_report() {
    let executable = std::env::current_exe().expect("the bench knows its executable");
    println!(
        "| ids | hash_table B/id | event_ids B/id (estimate) | event_ids decoded B/id (estimate) |"
    );
    println!("|---:|---:|---:|---:|");
    for count in sizes(&MEMORY_SIZES) {
        let mut cells = Vec::new();
        for kind in ["hash_table", "event_ids", "decoded"] {
            let output = Command::new(&executable)
                .env("SUIVI_BENCH_IDS_MEMORY_CASE", format!("{kind}:{count}"))
                .output()
                .expect("the bench runs itself");
            assert!(output.status.success(), "{kind}:{count} failed");
            cells.push(String::from_utf8_lossy(&output.stdout).trim().to_owned());
        }
        println!("| {count} | {} |", cells.join(" | "));
    }
}

/// One case, `kind:count`: prints the resident bytes per id the structure added, and for
/// `EventIds` its own estimate beside.
fn memory_case(case: &str) {
    let (kind, count) = case.split_once(':').expect("a case is kind:count");
    let count: usize = count.parse().expect("a case's count is a number");
    let ids = Ids(SEED).take(count);
    let per_id = |bytes: u64| bytes as f64 / count as f64;
    match kind {
        "hash_table" => {
            let before = resident_bytes();
            let mut table = Table::empty();
            for id in ids {
                table.insert(id, word_of(&id));
            }
            println!("{:.1}", per_id(resident_bytes() - before));
            drop(black_box(table));
        }
        "event_ids" => {
            let before = resident_bytes();
            let mut set = EventIds::new();
            for id in ids {
                set.insert(id, word_of(&id));
            }
            let after = resident_bytes();
            println!(
                "{:.1} ({:.1})",
                per_id(after - before),
                per_id(set.heap_bytes() as u64)
            );
        }
        "decoded" => {
            // The sorted encoding, made without a set, then the set decoded from it.
            let mut sorted: Vec<[u32; 3]> = ids.collect();
            sorted.sort_unstable();
            let bytes: Vec<u8> = sorted
                .iter()
                .flat_map(|id| [id[0], id[1], id[2], word_of(id)])
                .flat_map(u32::to_le_bytes)
                .collect();
            drop(sorted);
            let before = resident_bytes();
            let set = EventIds::decode(&bytes).expect("sorted, each once");
            let after = resident_bytes();
            println!(
                "{:.1} ({:.1})",
                per_id(after - before),
                per_id(set.heap_bytes() as u64)
            );
        }
        _ => panic!("unknown case {kind}"),
    }
}

/// `VmRSS` of this process, in bytes.
fn resident_bytes() -> u64 {
    let status =
        std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .expect("/proc/self/status has VmRSS in kB")
        * 1024
}
