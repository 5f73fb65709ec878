//! The PostgreSQL sink against the real server on 127.0.0.1:5432 (trust auth, user postgres;
//! `scripts/test` starts it when it is down): each test creates a database of its own and drops
//! it. Snapshots land and match the live counters; a flush killed by `pg_terminate_backend` or
//! by stopping the server is retried until it lands, with nothing lost and nothing doubled;
//! migrations run twice are a no-op; a snapshot written twice changes nothing; snapshots go over
//! TLS as `sslmode` says, and a certificate that `verify-full` cannot trust is refused. The rows
//! keyed by shard (the migration to them, positions) are in `shards`. When the
//! server cannot be reached, or the test CA that `scripts/test` gives it is missing, these tests
//! fail; they never skip.
//!
//! Every test that uses the server holds [`shared`] (or [`exclusive`], for the one that stops
//! the server) so the stop never disturbs another test of this binary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use suivi::aggregate::Counts;
use suivi::config::Secret;
use suivi::day::Day;
use suivi::figures::{CampaignCounters, Changes, DayCounters, ShardChanges, ShardCounts, ShardDay};
use suivi::snapshot::Snapshot;
use suivi::snapshot::postgres::{self as pg, MIGRATIONS, PostgresSink};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio_postgres::Client;

use crate::helpers::{Ev, Kind, PATIENCE, TestApp, event, spawn_app_with};

mod shards;

/// The server every test uses, as the `postgres` superuser (trust auth).
pub const SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432";

static SERVER: RwLock<()> = RwLock::const_new(());

/// Leave to use the server alongside other tests.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    SERVER.read().await
}

/// Leave to stop the server: no other test of this binary uses it meanwhile.
async fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SERVER.write().await
}

/// A database of its own for one test, dropped (with any connection to it) when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
}

impl TestDatabase {
    /// Creates `suivi_test_<random>`; panics, naming the fix, when the server is out of reach.
    pub async fn create() -> TestDatabase {
        let name = format!("suivi_test_{:016x}", rand::random::<u64>());
        let admin = admin_client().await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|error| panic!("cannot create database {name}: {error}"));
        TestDatabase { name }
    }

    /// The URL suivi is given.
    pub fn url(&self) -> String {
        format!("{SERVER_URL}/{}", self.name)
    }

    pub fn secret(&self) -> Secret {
        Secret::new(self.url())
    }

    /// A client of the test's own, to look at the tables as a reporting person would.
    pub async fn client(&self) -> Client {
        connect(&self.url()).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Dropping needs async IO; a runtime of its own on a thread of its own works whether or
        // not the test's runtime is still running.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let admin = try_connect(&format!("{SERVER_URL}/postgres")).await?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|error| error.to_string())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("cannot drop test database {}: {error}", self.name);
        }
    }
}

async fn admin_client() -> Client {
    connect(&format!("{SERVER_URL}/postgres")).await
}

async fn try_connect(url: &str) -> Result<Client, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|error| error.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects, or fails the test saying how to start the server.
pub async fn connect(url: &str) -> Client {
    try_connect(url).await.unwrap_or_else(|error| {
        panic!(
            "PostgreSQL is not reachable at {url} ({error}): these tests need it; \
             ./scripts/test starts it (pg_ctlcluster --skip-systemctl-redirect <version> main start)"
        )
    })
}

/// Starts suivi with both sinks, snapshots every 50 ms and retries at most every 200 ms.
pub async fn spawn_app_with_postgres(database: &TestDatabase) -> TestApp {
    spawn_app_with_postgres_url(database.secret()).await
}

/// [`spawn_app_with_postgres`] with a URL of the test's own (for its TLS parameters).
pub async fn spawn_app_with_postgres_url(url: Secret) -> TestApp {
    spawn_app_with(move |settings| {
        settings.postgres_url = Some(url);
        settings.snapshot_interval = Duration::from_millis(50);
        settings.snapshot_retry_max = Duration::from_millis(200);
    })
    .await
}

/// Every campaign's counters in `campaign_counters` (`*` included), as the HTTP API's JSON
/// without `as_of`.
pub async fn stored_counters(client: &Client) -> BTreeMap<String, Value> {
    client
        .query(
            &format!(
                "SELECT {} FROM suivi.campaign_counters",
                pg::COUNTER_COLUMNS
            ),
            &[],
        )
        .await
        .expect("campaign_counters reads")
        .iter()
        .map(|row| {
            let counters = pg::counters_from_row(row).expect("a counters row");
            (counters.campaign.clone(), counters_value(&counters))
        })
        .collect()
}

/// Every campaign's timeline in `campaign_days`, `[day, clicks, enrolled, started, certified]`.
pub async fn stored_days(client: &Client) -> BTreeMap<String, Vec<Value>> {
    let mut days: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for row in client
        .query(
            "SELECT campaign, day::text, clicks, enrolled, started, certified \
             FROM suivi.campaign_days ORDER BY campaign, day",
            &[],
        )
        .await
        .expect("campaign_days reads")
    {
        let campaign: String = row.get(0);
        let day: String = row.get(1);
        let counts: [i64; 4] = [row.get(2), row.get(3), row.get(4), row.get(5)];
        days.entry(campaign).or_default().push(serde_json::json!({
            "day": day, "clicks": counts[0], "enrolled": counts[1], "started": counts[2],
            "certified": counts[3]
        }));
    }
    days
}

fn counters_value(counters: &CampaignCounters) -> Value {
    let mut value = serde_json::to_value(counters).expect("counters serialize");
    value.as_object_mut().expect("an object").remove("as_of");
    value
}

/// Every campaign's counters (the totals' included, as `*`, without `as_of`) and every
/// non-empty timeline, as the HTTP API answers them or PostgreSQL holds them.
pub type FiguresJson = (BTreeMap<String, Value>, BTreeMap<String, Vec<Value>>);

/// The live counters of every campaign and of the totals, and every non-empty timeline, from the
/// HTTP API.
pub async fn live(app: &TestApp) -> FiguresJson {
    let (_, list) = app.get("/v1/campaigns").await;
    let mut counters: BTreeMap<String, Value> = BTreeMap::new();
    let mut days = BTreeMap::new();
    let totals = app.totals_json().await;
    for mut campaign in list["campaigns"]
        .as_array()
        .expect("a list")
        .iter()
        .cloned()
        .chain([totals])
    {
        // Made when asked for, from the timeline: not a stored figure.
        campaign.as_object_mut().expect("an object").remove("as_of");
        campaign
            .as_object_mut()
            .expect("an object")
            .remove("forecast");
        let id = campaign["campaign"].as_str().expect("an id").to_owned();
        let path = if id == "*" {
            "/v1/totals/timeline".to_owned()
        } else {
            format!("/v1/campaigns/{id}/timeline")
        };
        let (_, timeline) = app.get(&path).await;
        let timeline = timeline["days"].as_array().expect("days").clone();
        if !timeline.is_empty() {
            days.insert(id.clone(), timeline);
        }
        counters.insert(id, campaign);
    }
    (counters, days)
}

/// How PostgreSQL's `campaign_counters` and `campaign_days` differ from `expected` (campaigns
/// never seen and never changed are in neither, or at zero in both); `None` when they hold
/// exactly that, and when suivi has not created its tables yet.
pub async fn postgres_difference(client: &Client, expected: &FiguresJson) -> Option<String> {
    let migrated: bool = client
        .query_one("SELECT to_regclass('suivi.campaign_days') IS NOT NULL", &[])
        .await
        .expect("a look at the schema")
        .get(0);
    if !migrated {
        return Some("suivi has not created its tables".to_owned());
    }
    let (counters, days) = expected;
    let stored = stored_counters(client).await;
    let stored_days = stored_days(client).await;
    let changed: BTreeMap<String, Value> = counters
        .iter()
        .filter(|(id, value)| {
            stored.contains_key(*id) || value["enrolled"] != 0 || value["clicks"] != 0
        })
        .map(|(id, value)| (id.clone(), value.clone()))
        .collect();
    (changed != stored || *days != stored_days).then(|| {
        format!(
            "expected {changed:#?}\nstored {stored:#?}\nexpected days {days:#?}\nstored days {stored_days:#?}"
        )
    })
}

/// Waits until PostgreSQL holds exactly what the live API shows (campaigns never seen and never
/// changed are in neither, or at zero in both).
pub async fn wait_until_postgres_matches(app: &TestApp, client: &Client, patience: Duration) {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let Some(difference) = postgres_difference(client, &live(app).await).await else {
            return;
        };
        assert!(
            std::time::Instant::now() < deadline,
            "PostgreSQL does not match the live counters after {patience:?}: {difference}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Learners enrolling, starting, completing chapters and certified across two campaigns and
/// several days; `prefix` keeps ids apart.
pub fn programme_events(prefix: &str, learners: usize) -> Vec<Ev> {
    let mut events = Vec::new();
    for i in 0..learners {
        let campaign = if i % 3 == 0 {
            "la-poste"
        } else {
            "gendarmerie"
        };
        let learner = format!("{prefix}-learner-{i}");
        let day = |offset: usize| {
            let date = chrono::NaiveDate::from_ymd_opt(2020, 10, 5).expect("a date")
                + chrono::Days::new((i * 7 + offset) as u64 % 120);
            date.format("%Y-%m-%d").to_string()
        };
        events.push(
            event(&format!("{prefix}-click-{i}"), Kind::LinkClicked)
                .campaign(campaign)
                .visitor(&format!("{prefix}-visitor-{i}"))
                .day(&day(0)),
        );
        events.push(
            event(&format!("{prefix}-enrol-{i}"), Kind::Enrolled)
                .campaign(campaign)
                .learner(&learner)
                .day(&day(0)),
        );
        if i % 4 != 3 {
            events.push(
                event(&format!("{prefix}-start-{i}"), Kind::CourseStarted)
                    .campaign(campaign)
                    .learner(&learner)
                    .day(&day(1)),
            );
            for chapter in 1..=(i % 12 + 1) as u32 {
                events.push(
                    event(
                        &format!("{prefix}-chapter-{i}-{chapter}"),
                        Kind::ChapterCompleted,
                    )
                    .campaign(campaign)
                    .learner(&learner)
                    .chapter(chapter)
                    .day(&day(2)),
                );
            }
        }
        if i % 2 == 0 {
            events.push(
                event(&format!("{prefix}-certified-{i}"), Kind::Certified)
                    .campaign(campaign)
                    .learner(&learner)
                    .day(&day(3)),
            );
        }
    }
    events
}

/// What `/metrics` says for the postgres sink's failed snapshots.
async fn postgres_snapshot_failures(app: &TestApp) -> f64 {
    let (_, text) = app.get_text("/metrics").await;
    text.lines()
        .filter(|line| {
            line.starts_with(suivi::telemetry::SNAPSHOT_FAILURES)
                && line.contains("sink=\"postgres\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `/readyz`'s word on the postgres sink.
async fn postgres_readiness(app: &TestApp) -> (reqwest::StatusCode, Value) {
    let (status, body) = app.get("/readyz").await;
    (status, body["sinks"]["postgres"].clone())
}

#[tokio::test]
async fn snapshots_land_in_postgres_and_match_the_live_counters() {
    let _server = shared().await;
    let database = TestDatabase::create().await;
    let mut app = spawn_app_with_postgres(&database).await;
    let client = database.client().await;

    let response = app.ingest(&programme_events("a", 60)).await;
    assert!(response.rejections.is_empty(), "{response:?}");
    wait_until_postgres_matches(&app, &client, PATIENCE).await;

    // More events, one of which re-dates a learner's enrolment earlier: a day's count moves.
    let response = app.ingest(&programme_events("b", 30)).await;
    assert!(response.rejections.is_empty(), "{response:?}");
    app.ingest(&[event("a-early", Kind::Enrolled)
        .campaign("gendarmerie")
        .learner("a-learner-1")
        .day("2020-10-01")])
        .await;
    wait_until_postgres_matches(&app, &client, PATIENCE).await;

    // The tables a reporting person reads.
    let gendarmerie = client
        .query_one(
            "SELECT enrolled, certified, chapters_completed[1], name FROM suivi.campaign_counters \
             WHERE campaign = 'gendarmerie'",
            &[],
        )
        .await
        .expect("the gendarmerie's row");
    let live = app.campaign_json("gendarmerie").await;
    assert_eq!(
        gendarmerie.get::<_, i64>(0),
        live["enrolled"].as_i64().expect("a count")
    );
    assert_eq!(
        gendarmerie.get::<_, i64>(1),
        live["certified"].as_i64().expect("a count")
    );
    assert_eq!(
        gendarmerie.get::<_, i64>(2),
        live["chapters_completed"][0].as_i64().expect("a count")
    );
    assert_eq!(gendarmerie.get::<_, String>(3), "Gendarmerie nationale");
    let summed = client
        .query_one(
            "SELECT sum(enrolled)::bigint, sum(certified)::bigint FROM suivi.campaign_days \
             WHERE campaign = 'gendarmerie'",
            &[],
        )
        .await
        .expect("a sum");
    assert_eq!(
        (summed.get::<_, i64>(0), summed.get::<_, i64>(1)),
        (gendarmerie.get(0), gendarmerie.get(1)),
        "the timeline sums to the counters"
    );
    let totals = client
        .query_one("SELECT enrolled FROM suivi.programme_totals", &[])
        .await
        .expect("the totals");
    assert_eq!(totals.get::<_, i64>(0), 90);
    let history = client
        .query_one(
            "SELECT count(*), (SELECT count(*) FROM suivi.snapshot_counters \
             WHERE campaign = 'gendarmerie') FROM suivi.snapshots",
            &[],
        )
        .await
        .expect("the history");
    assert!(history.get::<_, i64>(0) >= 2, "one row per snapshot");
    assert!(history.get::<_, i64>(1) >= 2, "per-snapshot counters");
    let (status, postgres) = postgres_readiness(&app).await;
    assert_eq!((status.as_u16(), postgres), (200, Value::from("ok")));

    app.stop().await;
    // The final snapshot changes nothing that was already there.
    assert_eq!(
        stored_counters(&client).await["gendarmerie"]["enrolled"],
        live["enrolled"]
    );
}

#[tokio::test]
async fn migrations_run_twice_are_a_no_op() {
    let _server = shared().await;
    let database = TestDatabase::create().await;
    let mut first = database.client().await;
    let mut second = database.client().await;
    // Two at once: the advisory lock lets one apply them and the other find them applied.
    let (one, two) = tokio::join!(pg::migrate(&mut first), pg::migrate(&mut second));
    let mut applied = [one.expect("migrates"), two.expect("migrates")];
    applied.sort();
    let all: Vec<i32> = MIGRATIONS
        .iter()
        .map(|migration| migration.version)
        .collect();
    assert_eq!(applied, [Vec::new(), all.clone()]);
    let schema = schema_of(&first).await;
    assert!(
        schema.contains("campaign_counters.chapters_completed bigint[]"),
        "{schema}"
    );
    assert!(
        schema.contains("snapshot_counters.taken_at timestamp with time zone"),
        "{schema}"
    );
    assert!(
        schema.contains("programme_totals.enrolled bigint"),
        "{schema}"
    );

    assert_eq!(
        pg::migrate(&mut first).await.expect("migrates"),
        Vec::<i32>::new()
    );
    assert_eq!(schema_of(&first).await, schema);
    let recorded: Vec<i32> = first
        .query(
            "SELECT version FROM suivi.schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("the migrations table")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(recorded, all);

    // A schema newer than this suivi is refused, not touched.
    first
        .execute(
            "INSERT INTO suivi.schema_migrations (version, name) VALUES (9999, 'from the future')",
            &[],
        )
        .await
        .expect("inserts");
    let error = pg::migrate(&mut first).await.expect_err("a newer schema");
    assert!(
        error.to_string().contains("newer than this suivi"),
        "{error:#}"
    );
}

/// Every column of the schema `suivi`, as `table.column type` lines.
async fn schema_of(client: &Client) -> String {
    client
        .query(
            "SELECT table_name || '.' || column_name || ' ' || \
             CASE WHEN data_type = 'ARRAY' THEN replace(udt_name, '_int8', 'bigint') || '[]' ELSE data_type END \
             FROM information_schema.columns WHERE table_schema = 'suivi' \
             ORDER BY table_name, ordinal_position",
            &[],
        )
        .await
        .expect("the schema")
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every row of every table and view, as text, in a fixed order.
async fn dump(client: &Client) -> Vec<String> {
    let mut rows = Vec::new();
    for table in [
        "campaigns",
        "shard_counters",
        "shard_days",
        "campaign_counters",
        "campaign_days",
        "snapshots",
        "snapshot_counters",
    ] {
        for row in client
            .query(
                &format!("SELECT t::text FROM suivi.{table} t ORDER BY t::text"),
                &[],
            )
            .await
            .expect("a table")
        {
            rows.push(format!("{table} {}", row.get::<_, String>(0)));
        }
    }
    rows
}

fn day_counters(day: &str, counts: [u64; 4]) -> DayCounters {
    let [clicks, enrolled, started, certified] = counts;
    DayCounters {
        day: day.parse::<Day>().expect("a day"),
        clicks,
        enrolled,
        started,
        certified,
    }
}

fn campaign_counters(campaign: &str, enrolled: u64, certified: u64) -> CampaignCounters {
    CampaignCounters {
        campaign: campaign.to_owned(),
        name: "Gendarmerie nationale".to_owned(),
        clicks: enrolled * 2,
        unique_visitors: enrolled,
        enrolled,
        started: enrolled,
        chapters_completed: vec![certified; 12],
        certified,
        completion_rate: 0.5,
        target: Some(100_000),
        progress: Some(0.000_01),
        as_of: Utc::now(),
        registered: true,
    }
}

/// A snapshot of `changes` as a process with one shard, without positions, takes it: shard 0's
/// parts are the sums.
pub fn one_shard_snapshot(changes: Changes) -> Snapshot {
    let shards = ShardChanges {
        counts: changes
            .campaigns
            .iter()
            .map(|counters| ShardCounts {
                shard: 0,
                campaign: counters.campaign.clone(),
                counts: counts_of(counters),
                position: None,
                as_of: counters.as_of,
            })
            .collect(),
        days: changes
            .days
            .iter()
            .flat_map(|(campaign, days)| {
                days.iter().map(|day| ShardDay {
                    shard: 0,
                    campaign: campaign.clone(),
                    counts: *day,
                    position: None,
                })
            })
            .collect(),
    };
    Snapshot {
        taken_at: Utc::now(),
        changes,
        shards,
    }
}

/// The counts a campaign's counters are made of.
pub fn counts_of(counters: &CampaignCounters) -> Counts {
    Counts {
        clicks: counters.clicks,
        unique_visitors: counters.unique_visitors,
        enrolled: counters.enrolled,
        started: counters.started,
        chapters_completed: counters.chapters_completed.clone(),
        certified: counters.certified,
    }
}

#[tokio::test]
async fn a_snapshot_written_again_changes_nothing_and_a_restatement_clears_stale_days() {
    let _server = shared().await;
    let database = TestDatabase::create().await;
    let client = database.client().await;
    let mut sink = PostgresSink::new(&database.secret()).expect("a sink");
    let first = one_shard_snapshot(Changes {
        campaigns: vec![campaign_counters("gendarmerie", 2, 1)],
        days: vec![(
            "gendarmerie".to_owned(),
            vec![
                day_counters("2020-10-05", [2, 1, 1, 0]),
                day_counters("2020-10-06", [0, 1, 1, 1]),
            ],
        )],
    });
    sink.write(&first).await.expect("writes");
    let once = dump(&client).await;
    sink.write(&first).await.expect("writes again");
    assert_eq!(
        dump(&client).await,
        once,
        "the same snapshot twice changes nothing"
    );
    // A new sink (a new process) writing it again: still nothing new.
    let mut restarted = PostgresSink::new(&database.secret()).expect("a sink");
    restarted.write(&first).await.expect("writes");
    assert_eq!(dump(&client).await, once);

    // A later snapshot: day 10-06 emptied (its learner re-dated to 10-05).
    let second = one_shard_snapshot(Changes {
        campaigns: vec![campaign_counters("gendarmerie", 2, 1)],
        days: vec![(
            "gendarmerie".to_owned(),
            vec![
                day_counters("2020-10-05", [2, 2, 2, 1]),
                day_counters("2020-10-06", [0, 0, 0, 0]),
            ],
        )],
    });
    restarted.write(&second).await.expect("writes");
    let days = stored_days(&client).await;
    assert_eq!(days["gendarmerie"].len(), 1, "{days:?}");
    assert_eq!(
        stored_counters(&client).await["gendarmerie"]["enrolled"],
        Value::from(2)
    );

    // A stale day (left by a restatement that never landed) goes when a new process first
    // writes the campaign's whole timeline.
    client
        .execute(
            "INSERT INTO suivi.shard_days VALUES (0, 'gendarmerie', '2020-12-01', 1, 1, 1, 1, 0, now() - interval '1 hour')",
            &[],
        )
        .await
        .expect("inserts");
    let mut third_process = PostgresSink::new(&database.secret()).expect("a sink");
    third_process
        .write(&Snapshot {
            taken_at: Utc::now(),
            ..second.clone()
        })
        .await
        .expect("writes");
    assert_eq!(stored_days(&client).await, days);
    let snapshots: i64 = client
        .query_one("SELECT count(*) FROM suivi.snapshots", &[])
        .await
        .expect("a count")
        .get(0);
    assert_eq!(snapshots, 3, "one row per distinct snapshot");
}

#[tokio::test]
async fn a_flush_killed_by_pg_terminate_backend_is_retried_with_nothing_lost_or_doubled() {
    let _server = shared().await;
    let database = TestDatabase::create().await;
    let mut app = spawn_app_with_postgres(&database).await;
    let client = database.client().await;
    app.ingest(&programme_events("a", 40)).await;
    wait_until_postgres_matches(&app, &client, PATIENCE).await;
    let before = stored_counters(&client).await;
    let failures_before = postgres_snapshot_failures(&app).await;

    // Hold the shards' timeline table so the next flush stops inside its transaction, after it
    // has upserted the counters, then kill its connection there.
    let mut locker = database.client().await;
    let lock = locker.transaction().await.expect("a transaction");
    lock.batch_execute("LOCK TABLE suivi.shard_days IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("locks");
    let response = app.ingest(&programme_events("b", 40)).await;
    assert!(response.rejections.is_empty());
    for round in 0..2 {
        let killed = kill_waiting_flush(&client, &database.name).await;
        assert_eq!(
            killed, 1,
            "round {round}: one flush was waiting and is killed"
        );
        // Nothing of the killed transaction is visible.
        assert_eq!(stored_counters(&client).await, before, "round {round}");
    }
    let (status, postgres) = postgres_readiness(&app).await;
    assert_eq!(
        status.as_u16(),
        200,
        "a failing sink does not make suivi unready"
    );
    let postgres = postgres.as_str().expect("a word on the sink").to_owned();
    assert!(postgres.starts_with("failing since"), "{postgres}");
    // Ingestion goes on meanwhile.
    let response = app.ingest(&programme_events("c", 10)).await;
    assert_eq!(response.accepted as usize, programme_events("c", 10).len());

    lock.rollback().await.expect("unlocks");
    wait_until_postgres_matches(&app, &client, PATIENCE).await;
    assert!(postgres_snapshot_failures(&app).await >= failures_before + 2.0);
    let (_, postgres) = postgres_readiness(&app).await;
    assert_eq!(postgres, Value::from("ok"));
    app.stop().await;
}

/// Kills the connection of a suivi flush waiting for a lock, once one is; returns how many.
async fn kill_waiting_flush(client: &Client, database: &str) -> u64 {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let killed: i64 = client
            .query_one(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND application_name = 'suivi' AND wait_event_type = 'Lock') k",
                &[&database],
            )
            .await
            .expect("terminates")
            .get(0);
        if killed > 0 {
            return killed as u64;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no suivi flush waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Stops the local cluster; starts it again when dropped, whatever happened.
struct StoppedServer {
    version: String,
}

impl StoppedServer {
    fn stop() -> StoppedServer {
        let version = cluster_version();
        run_pg_ctlcluster(&version, &["stop", "-m", "fast"]);
        StoppedServer { version }
    }
}

impl Drop for StoppedServer {
    fn drop(&mut self) {
        run_pg_ctlcluster(&self.version, &["start"]);
    }
}

/// The version of the one local cluster, from /etc/postgresql/<version>.
fn cluster_version() -> String {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .expect("a local PostgreSQL cluster under /etc/postgresql")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    versions.sort();
    versions.pop().expect("a cluster version")
}

fn run_pg_ctlcluster(version: &str, action: &[&str]) {
    let (command, args) = (
        "pg_ctlcluster",
        [&["--skip-systemctl-redirect", version, "main"], action].concat(),
    );
    let status = std::process::Command::new(command)
        .args(&args)
        .status()
        .unwrap_or_else(|error| panic!("cannot run {command} {args:?}: {error}"));
    assert!(status.success(), "{command} {args:?} failed: {status}");
}

#[tokio::test]
async fn a_postgres_stop_is_ridden_out_and_caught_up_with_nothing_lost_or_doubled() {
    let _server = exclusive().await;
    let database = TestDatabase::create().await;
    let mut app = spawn_app_with_postgres(&database).await;
    let client = database.client().await;
    app.ingest(&programme_events("a", 40)).await;
    wait_until_postgres_matches(&app, &client, PATIENCE).await;
    drop(client);
    let failures_before = postgres_snapshot_failures(&app).await;

    let stopped = StoppedServer::stop();
    // Ingestion does not depend on the sink.
    let events = programme_events("b", 40);
    let response = app.ingest(&events).await;
    assert_eq!(response.accepted as usize, events.len());
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (status, postgres) = postgres_readiness(&app).await;
        assert_eq!(status.as_u16(), 200);
        if postgres
            .as_str()
            .is_some_and(|word| word.starts_with("failing since"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the outage does not show: {postgres}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(postgres_snapshot_failures(&app).await > failures_before);
    // More while it is down, then a few retries' worth of backoff.
    app.ingest(&programme_events("c", 10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(stopped);

    let client = connect_when_up(&database.url()).await;
    wait_until_postgres_matches(&app, &client, Duration::from_secs(30)).await;
    let (_, postgres) = postgres_readiness(&app).await;
    assert_eq!(postgres, Value::from("ok"));
    app.stop().await;
}

/// Connects once the restarted server takes connections.
async fn connect_when_up(url: &str) -> Client {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match try_connect(url).await {
            Ok(client) => return client,
            Err(error) => assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL did not come back: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_restart_restates_every_campaign_and_clears_what_is_no_longer_true() {
    let _server = shared().await;
    let database = TestDatabase::create().await;
    let mut first = spawn_app_with_postgres(&database).await;
    let client = database.client().await;
    first.ingest(&programme_events("a", 30)).await;
    wait_until_postgres_matches(&first, &client, PATIENCE).await;
    first.stop().await;
    // What a snapshot lost with a stopped process could leave: a day that has since emptied.
    client
        .execute(
            "INSERT INTO suivi.shard_days VALUES \
             (0, 'gendarmerie', '2020-09-30', 0, 1, 1, 0, 0, now() - interval '1 hour')",
            &[],
        )
        .await
        .expect("inserts");

    let data_dir = first.data_dir.path().to_path_buf();
    let url = database.secret();
    let mut second = spawn_app_with(move |settings| {
        settings.data_dir = data_dir;
        settings.postgres_url = Some(url);
        settings.snapshot_interval = Duration::from_millis(50);
    })
    .await;
    wait_until_postgres_matches(&second, &client, PATIENCE).await;
    let restated: i32 = client
        .query_one(
            "SELECT campaigns FROM suivi.snapshots ORDER BY taken_at DESC LIMIT 1",
            &[],
        )
        .await
        .expect("the last snapshot")
        .get(0);
    assert!(
        restated >= 3,
        "gendarmerie, la-poste and * restated ({restated})"
    );
    second.stop().await;
}

/// Campaigns PostgreSQL refuses, each for another reason: a NUL character (which no text
/// column takes: found before sending), a character a LATIN1 database cannot hold (22P05), and
/// an id too long for the primary key's index entry (54000). The other campaigns' rows, and
/// the totals, are written in the same transaction; each refused campaign is named, with its
/// rows, and its rows are absent.
#[tokio::test]
async fn rows_postgres_refuses_are_set_aside_and_the_rest_of_the_snapshot_is_written() {
    let _server = shared().await;
    let database = TestDatabase::create().await;
    let admin = admin_client().await;
    // A database whose encoding cannot hold every character, as an older installation's may be.
    let latin1 = format!("{}_latin1", database.name);
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {latin1} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ))
        .await
        .expect("creates a LATIN1 database");
    let latin1_url = format!("{SERVER_URL}/{latin1}");
    let too_long: String = (0..1_000)
        .map(|_| format!("{:x}", rand::random::<u64>()))
        .collect();
    let nul = "evil\u{0}x";
    let emoji = "patrol-\u{1f693}";
    let campaigns = [
        "gendarmerie",
        nul,
        "la-poste",
        emoji,
        too_long.as_str(),
        "*",
    ];
    let snapshot = one_shard_snapshot(Changes {
        campaigns: campaigns
            .iter()
            .map(|campaign| campaign_counters(campaign, 2, 1))
            .collect(),
        days: campaigns
            .iter()
            .map(|campaign| {
                (
                    (*campaign).to_owned(),
                    vec![
                        day_counters("2020-10-05", [2, 1, 1, 0]),
                        day_counters("2020-10-06", [0, 1, 1, 1]),
                    ],
                )
            })
            .collect(),
    });
    let latin1_client = connect(&latin1_url).await;
    let mut sink = PostgresSink::new(&Secret::new(latin1_url.clone())).expect("a sink");
    let written = sink
        .write(&snapshot)
        .await
        .expect("the snapshot is written");
    let mut set_aside: Vec<(String, u64)> = written
        .set_aside
        .iter()
        .map(|set_aside| (set_aside.campaign.clone(), set_aside.rows))
        .collect();
    set_aside.sort();
    let mut expected = vec![
        (nul.to_owned(), 3),
        (emoji.to_owned(), 3),
        (too_long.clone(), 3),
    ];
    expected.sort();
    assert_eq!(set_aside, expected, "{:?}", written.set_aside);
    let reasons: Vec<&str> = written
        .set_aside
        .iter()
        .map(|set_aside| set_aside.reason.as_str())
        .collect();
    assert!(
        reasons.iter().any(|reason| reason.contains("NUL")),
        "{reasons:?}"
    );
    let stored: Vec<String> = stored_counters(&latin1_client).await.into_keys().collect();
    assert_eq!(stored, ["*", "gendarmerie", "la-poste"]);
    let days: BTreeMap<String, usize> = stored_days(&latin1_client)
        .await
        .into_iter()
        .map(|(campaign, days)| (campaign, days.len()))
        .collect();
    assert_eq!(
        days,
        BTreeMap::from([
            ("*".to_owned(), 2),
            ("gendarmerie".to_owned(), 2),
            ("la-poste".to_owned(), 2)
        ])
    );
    let history: i64 = latin1_client
        .query_one("SELECT count(*) FROM suivi.snapshot_counters", &[])
        .await
        .expect("a count")
        .get(0);
    assert_eq!(history, 3);

    // The same snapshot in a UTF-8 database: only the NUL and the overlong id are refused.
    let mut sink = PostgresSink::new(&database.secret()).expect("a sink");
    let written = sink
        .write(&snapshot)
        .await
        .expect("the snapshot is written");
    let mut set_aside: Vec<&str> = written
        .set_aside
        .iter()
        .map(|set_aside| set_aside.campaign.as_str())
        .collect();
    set_aside.sort_unstable();
    let mut expected = vec![nul, too_long.as_str()];
    expected.sort_unstable();
    assert_eq!(set_aside, expected);
    let stored: Vec<String> = stored_counters(&database.client().await)
        .await
        .into_keys()
        .collect();
    assert_eq!(stored, ["*", "gendarmerie", "la-poste", emoji]);

    drop(latin1_client);
    admin
        .batch_execute(&format!("DROP DATABASE {latin1} WITH (FORCE)"))
        .await
        .expect("drops the LATIN1 database");
}

/// What a data dir holding a campaign from before the edge refused NUL characters gives: figures
/// with that campaign. The snapshot loop writes every other campaign, logs and counts the refused
/// rows in `suivi_snapshot_rows_set_aside_total{sink="postgres"}`, and keeps the sink healthy.
#[tokio::test]
async fn a_campaign_with_a_nul_character_is_counted_and_does_not_stop_postgres_snapshots() {
    use std::sync::Arc;

    use suivi::aggregate::{CampaignChange, Counts, DayCounts};
    use suivi::figures::Figures;
    use suivi::registry::Registry;
    use suivi::snapshot::{self, SinkHealth};
    use tokio_util::sync::CancellationToken;

    let _server = shared().await;
    let database = TestDatabase::create().await;
    let metrics = suivi::telemetry::metrics_handle().expect("the recorder");
    let set_aside = || {
        metrics
            .render()
            .lines()
            .find_map(|line| {
                line.strip_prefix("suivi_snapshot_rows_set_aside_total{sink=\"postgres\"} ")
                    .map(|value| value.parse::<f64>().expect("a number"))
            })
            .unwrap_or(0.0)
    };
    let before = set_aside();

    let registry = Registry::load(None).expect("the embedded registry");
    let figures = Arc::new(Figures::new(&registry, 12, Utc::now()));
    let day = "2020-10-05".parse::<Day>().expect("a day");
    let change = |campaign: &str| CampaignChange {
        campaign: campaign.to_owned(),
        counts: Counts {
            clicks: 1,
            unique_visitors: 1,
            enrolled: 1,
            started: 1,
            chapters_completed: vec![0; 12],
            certified: 0,
        },
        days: vec![(
            day,
            DayCounts {
                clicks: 1,
                enrolled: 1,
                started: 1,
                certified: 0,
            },
        )],
    };
    figures.publish(
        0,
        vec![change("gendarmerie"), change("evil\u{0}x"), change("*")],
        Utc::now(),
    );
    let health = Arc::new(SinkHealth::default());
    let shutdown = CancellationToken::new();
    // Cancelled at once: the loop takes the changes once and makes its final attempt.
    shutdown.cancel();
    snapshot::run(
        Arc::clone(&figures),
        vec![snapshot::Sink::Postgres(Box::new(
            PostgresSink::new(&database.secret()).expect("a sink"),
        ))],
        snapshot::Schedule {
            interval: Duration::from_secs(60),
            retry_max: Duration::from_secs(60),
        },
        Arc::clone(&health),
        shutdown,
    )
    .await;

    let status = health.status("postgres").expect("the sink's status");
    assert_eq!(status.failures, 0, "{status:?}");
    assert!(status.last_written.is_some(), "{status:?}");
    let client = database.client().await;
    let stored = stored_counters(&client).await;
    assert!(stored.contains_key("gendarmerie"), "{stored:?}");
    assert!(stored.contains_key("*"), "{stored:?}");
    assert!(
        !stored.keys().any(|campaign| campaign.starts_with("evil")),
        "{stored:?}"
    );
    assert_eq!(stored_days(&client).await["gendarmerie"].len(), 1);
    // Its counters and its one day.
    assert!(
        set_aside() - before >= 2.0,
        "suivi_snapshot_rows_set_aside_total rose by {}",
        set_aside() - before
    );
}

/// A data dir from before the edge refused control characters, whose checkpoint holds a campaign
/// `evil\0x` (built here with the library: no edge takes it any more): suivi starts, is ready,
/// and flushes every other campaign to PostgreSQL, with the sink healthy.
#[tokio::test]
async fn a_data_dir_holding_a_campaign_with_a_nul_character_starts_and_flushes_the_others() {
    use suivi::aggregate::{Aggregator, AggregatorSettings};
    use suivi::config::{DEFAULT_CHAPTER_COUNT, Settings, parse_key};
    use suivi::event::{Event, EventParser, RawEvent};
    use suivi::registry::Registry;

    let _server = shared().await;
    let database = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().expect("a data dir");
    let parser = EventParser::new(
        DEFAULT_CHAPTER_COUNT,
        parse_key(crate::helpers::PSEUDONYM_KEY).expect("the test key"),
    );
    let parse = |event: Ev| -> Event {
        parser
            .parse(&RawEvent::from(&event.proto()), Utc::now())
            .expect("a valid event")
    };
    let good = parse(
        event("old-1", Kind::Enrolled)
            .campaign("gendarmerie")
            .learner("old-learner-1"),
    );
    let evil = Event {
        campaign: "evil\u{0}x".to_owned(),
        ..parse(
            event("old-2", Kind::Enrolled)
                .campaign("placeholder")
                .learner("old-learner-2"),
        )
    };
    let registry = Registry::load(None).expect("the embedded registry");
    let mut aggregator = Aggregator::new(
        AggregatorSettings {
            time_zone: Settings::default().time_zone().expect("the default zone"),
            chapter_count: DEFAULT_CHAPTER_COUNT,
            max_unregistered_campaigns: suivi::config::DEFAULT_MAX_UNREGISTERED_CAMPAIGNS,
        },
        registry
            .campaigns
            .iter()
            .map(|campaign| campaign.id.clone()),
    );
    aggregator.apply(&good).expect("a campaign slot");
    aggregator.apply(&evil).expect("a campaign slot");
    suivi::durable::checkpoint::write(
        &data_dir.path().join("checkpoints"),
        &aggregator.checkpoint(0, Vec::new()).expect("the runs read"),
    )
    .expect("the checkpoint is written");

    // The schema, so that the tables can be read before suivi's first snapshot creates them.
    let mut client = database.client().await;
    pg::migrate(&mut client).await.expect("the schema");
    let path = data_dir.path().to_path_buf();
    let url = database.secret();
    let mut app = spawn_app_with(move |settings| {
        settings.data_dir = path;
        settings.postgres_url = Some(url);
        settings.snapshot_interval = Duration::from_millis(50);
        settings.snapshot_retry_max = Duration::from_millis(200);
    })
    .await;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let stored = stored_counters(&client).await;
        if stored
            .get("gendarmerie")
            .is_some_and(|counters| counters["enrolled"] == 1)
            && stored
                .get("*")
                .is_some_and(|totals| totals["enrolled"] == 2)
        {
            assert!(
                !stored.keys().any(|campaign| campaign.starts_with("evil")),
                "{stored:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other campaigns never reached PostgreSQL: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, readiness) = postgres_readiness(&app).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{readiness}");
    assert_eq!(readiness, Value::from("ok"), "the sink is not failing");
    app.stop().await;
}

/// Where `scripts/test` puts the CA that signed the server's certificate (for `localhost` and
/// 127.0.0.1), when `TEST_POSTGRES_CA` does not say.
const DEFAULT_TEST_CA: &str = "/var/lib/postgresql/suivi-test-tls/ca.crt";

/// The test CA, and beside it `other-ca.crt`, a CA that signed nothing the server holds; panics,
/// naming the fix, when either is missing.
fn test_cas() -> (PathBuf, PathBuf) {
    let ca = std::env::var_os("TEST_POSTGRES_CA")
        .map_or_else(|| PathBuf::from(DEFAULT_TEST_CA), PathBuf::from);
    let other = ca.with_file_name("other-ca.crt");
    for path in [&ca, &other] {
        assert!(
            path.is_file(),
            "the PostgreSQL test CA {} is missing: ./scripts/test makes it and gives the server \
             a certificate it signed (or set TEST_POSTGRES_CA to the CA's path)",
            path.display()
        );
    }
    (ca, other)
}

/// Whether suivi's own connection (the sink's, by its application_name) to `database` is TLS.
async fn suivi_connections_encrypted(client: &Client, database: &str) -> Vec<bool> {
    client
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = $1 AND a.application_name = 'suivi'",
            &[&database],
        )
        .await
        .expect("pg_stat_ssl")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Connects as suivi does (`pg::connect`), and says whether the connection is TLS.
async fn connect_as_suivi(url: &str) -> anyhow::Result<bool> {
    let target = suivi::config::parse_postgres_url(&Secret::new(url))?;
    let client = pg::connect(&target).await?;
    Ok(client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?
        .get(0))
}

#[tokio::test]
async fn snapshots_reach_postgres_over_tls_with_require_and_verify_full() {
    let _server = shared().await;
    let (ca, _) = test_cas();
    let database = TestDatabase::create().await;
    let client = database.client().await;
    let name = &database.name;
    for url in [
        format!("postgres://postgres@127.0.0.1:5432/{name}?sslmode=require"),
        format!(
            "postgres://postgres@localhost:5432/{name}?sslmode=verify-full&sslrootcert={}",
            ca.display()
        ),
        format!(
            "host=localhost port=5432 user=postgres dbname={name} sslmode=verify-full \
             sslrootcert='{}'",
            ca.display()
        ),
    ] {
        assert!(
            connect_as_suivi(&url).await.expect("connects over TLS"),
            "{url}: not encrypted"
        );
        let mut app = spawn_app_with_postgres_url(Secret::new(url.clone())).await;
        let prefix = format!("tls{}", url.len());
        let response = app.ingest(&programme_events(&prefix, 10)).await;
        assert!(response.rejections.is_empty(), "{response:?}");
        wait_until_postgres_matches(&app, &client, PATIENCE).await;
        // The sink keeps its connection open: it is there, and encrypted. Every URL's events
        // make the same counts, and the shard rows of the app before already hold them, so the
        // views can match before this app's sink has connected: wait for its connection.
        let deadline = std::time::Instant::now() + PATIENCE;
        let mut encrypted = suivi_connections_encrypted(&client, name).await;
        while encrypted.is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
            encrypted = suivi_connections_encrypted(&client, name).await;
        }
        assert!(
            !encrypted.is_empty() && encrypted.iter().all(|ssl| *ssl),
            "{url}: suivi's connections are {encrypted:?}"
        );
        let (status, postgres) = postgres_readiness(&app).await;
        assert_eq!((status.as_u16(), postgres), (200, Value::from("ok")));
        app.stop().await;
    }
}

#[tokio::test]
async fn each_sslmode_encrypts_as_libpq_would() {
    let _server = shared().await;
    let (ca, _) = test_cas();
    let database = TestDatabase::create().await;
    let name = &database.name;
    let ca = ca.display();
    for (url, encrypted) in [
        (format!("{SERVER_URL}/{name}?sslmode=disable"), false),
        // The server offers TLS (scripts/test sets it up): prefer, the default, takes it.
        (format!("{SERVER_URL}/{name}"), true),
        (format!("{SERVER_URL}/{name}?sslmode=prefer"), true),
        (
            format!("{SERVER_URL}/{name}?sslmode=require&sslrootcert={ca}"),
            true,
        ),
        // The certificate names 127.0.0.1 too.
        (
            format!("{SERVER_URL}/{name}?sslmode=verify-full&sslrootcert={ca}"),
            true,
        ),
        // verify-ca does not look at the host name.
        (
            format!(
                "postgres://postgres@suivi-not-in-the-certificate.invalid:5432/{name}\
                 ?hostaddr=127.0.0.1&sslmode=verify-ca&sslrootcert={ca}"
            ),
            true,
        ),
    ] {
        assert_eq!(
            connect_as_suivi(&url)
                .await
                .unwrap_or_else(|error| panic!("{url}: {error:#}")),
            encrypted,
            "{url}"
        );
    }
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_from_another_ca_or_for_another_host() {
    let _server = shared().await;
    let (ca, other_ca) = test_cas();
    let database = TestDatabase::create().await;
    let name = &database.name;
    for (url, cause) in [
        (
            format!(
                "postgres://postgres@localhost:5432/{name}?sslmode=verify-full&sslrootcert={}",
                other_ca.display()
            ),
            "invalid peer certificate: UnknownIssuer",
        ),
        // As in libpq, require with a root certificate checks the chain.
        (
            format!(
                "postgres://postgres@localhost:5432/{name}?sslmode=require&sslrootcert={}",
                other_ca.display()
            ),
            "invalid peer certificate: UnknownIssuer",
        ),
        // The certificate names localhost and 127.0.0.1, not this host.
        (
            format!(
                "postgres://postgres@suivi-not-in-the-certificate.invalid:5432/{name}\
                 ?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
                ca.display()
            ),
            "invalid peer certificate: certificate not valid for name \
             \"suivi-not-in-the-certificate.invalid\"",
        ),
    ] {
        let error = format!(
            "{:#}",
            connect_as_suivi(&url)
                .await
                .expect_err("a certificate it cannot trust")
        );
        assert!(
            error.starts_with("cannot connect to PostgreSQL at postgres@"),
            "{error}"
        );
        assert!(error.contains("error performing TLS handshake"), "{error}");
        assert!(error.contains(cause), "{url}: {error}");
    }
    // Without sslrootcert (or with `system`), the system's roots are trusted, and the test CA is
    // not one of them (a machine without any gets an error saying so).
    for url in [
        format!("postgres://postgres@localhost:5432/{name}?sslmode=verify-full"),
        format!("postgres://postgres@localhost:5432/{name}?sslmode=verify-ca"),
        format!("postgres://postgres@localhost:5432/{name}?sslrootcert=system"),
    ] {
        let error = format!(
            "{:#}",
            connect_as_suivi(&url)
                .await
                .expect_err("the test CA is not a system root")
        );
        assert!(
            error.contains("invalid peer certificate: UnknownIssuer")
                || error.contains("no trusted root certificate found on this system"),
            "{url}: {error}"
        );
    }

    // The service starts, reports the sink failing, and writes nothing.
    let url = format!(
        "postgres://postgres@localhost:5432/{name}?sslmode=verify-full&sslrootcert={}",
        other_ca.display()
    );
    let mut app = spawn_app_with_postgres_url(Secret::new(url)).await;
    let response = app.ingest(&programme_events("untrusted", 5)).await;
    assert!(response.rejections.is_empty(), "{response:?}");
    let deadline = std::time::Instant::now() + PATIENCE;
    let readiness = loop {
        let (_, postgres) = postgres_readiness(&app).await;
        if postgres != "ok" {
            break postgres;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sink is not failing with an untrusted certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let readiness = readiness.as_str().expect("a text").to_owned();
    assert!(readiness.starts_with("failing since"), "{readiness}");
    assert!(
        readiness.contains("sslmode=verify-full")
            && readiness.contains("invalid peer certificate: UnknownIssuer"),
        "{readiness}"
    );
    let tables: i64 = database
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'suivi'",
            &[],
        )
        .await
        .expect("pg_tables")
        .get(0);
    assert_eq!(tables, 0, "nothing was written");
    app.stop().await;
}
