//! PostgreSQL's rows keyed by shard (product.md §6): a database a suivi before shards wrote
//! migrates with the figures its views answer unchanged, and the first snapshot of a suivi with
//! shards replaces them without counting them twice; a shard's row written by two instances at
//! two positions, in either order, holds the later position's values.

use chrono::Utc;
use suivi::figures::{Changes, ShardChanges, ShardCounts, ShardDay};
use suivi::snapshot::Snapshot;
use suivi::snapshot::postgres::{self as pg, MIGRATIONS, PostgresSink};
use tokio_postgres::Client;

use super::{
    TestDatabase, campaign_counters, counts_of, day_counters, shared, stored_counters, stored_days,
};

/// Every row of the relations reports and people read, as text, and the columns of each.
async fn what_reports_read(client: &Client) -> Vec<String> {
    let mut rows = Vec::new();
    for relation in [
        "campaign_counters",
        "campaign_days",
        "programme_totals",
        "programme_days",
        "snapshots",
        "snapshot_counters",
    ] {
        let columns: Vec<String> = client
            .query(
                "SELECT column_name || ' ' || udt_name FROM information_schema.columns \
                 WHERE table_schema = 'suivi' AND table_name = $1 ORDER BY ordinal_position",
                &[&relation],
            )
            .await
            .expect("the columns")
            .iter()
            .map(|row| row.get(0))
            .collect();
        rows.push(format!("{relation}: {}", columns.join(", ")));
        for row in client
            .query(
                &format!("SELECT t::text FROM suivi.{relation} t ORDER BY t::text"),
                &[],
            )
            .await
            .expect("a relation")
        {
            rows.push(format!("{relation} {}", row.get::<_, String>(0)));
        }
    }
    rows
}

/// The schema at version 1, as a suivi before shards made it, with the rows it wrote: three
/// campaigns (one unregistered, without a target) and the totals, their days, and a history.
async fn version_1_with_rows(client: &Client) {
    client
        .batch_execute(
            "CREATE SCHEMA suivi; \
             CREATE TABLE suivi.schema_migrations ( \
                 version integer PRIMARY KEY, name text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .expect("the migrations table");
    client
        .batch_execute(MIGRATIONS[0].sql)
        .await
        .expect("version 1");
    client
        .execute(
            "INSERT INTO suivi.schema_migrations (version, name) VALUES ($1, $2)",
            &[&MIGRATIONS[0].version, &MIGRATIONS[0].name],
        )
        .await
        .expect("version 1 recorded");
    // Rates as suivi computed them: certified / enrolled, certified / target.
    client
        .batch_execute(
            "INSERT INTO suivi.campaign_counters VALUES \
             ('gendarmerie', 'Gendarmerie nationale', true, 12, 9, 7, 6, \
              '{5,5,5,4,4,4,3,3,3,3,3,2}', 2, 2::float8 / 7, 65000, 2::float8 / 65000, \
              '2021-01-25 09:00:00+00', '2021-01-25 09:00:05+00'), \
             ('la-poste', 'La Poste', true, 3, 3, 3, 3, '{3,3,2,2,2,2,1,1,1,1,1,1}', 1, \
              1::float8 / 3, 8000, 1::float8 / 8000, '2021-01-24 09:00:00+00', \
              '2021-01-24 09:00:05+00'), \
             ('a-typo', '', false, 2, 2, 1, 0, '{0,0,0,0,0,0,0,0,0,0,0,0}', 0, 0, NULL, NULL, \
              '2021-01-20 09:00:00+00', '2021-01-20 09:00:05+00'), \
             ('*', 'Objectif IA', false, 17, 14, 11, 9, '{8,8,7,6,6,6,4,4,4,4,4,3}', 3, \
              3::float8 / 11, 670000, 3::float8 / 670000, '2021-01-25 09:00:00+00', \
              '2021-01-25 09:00:05+00'); \
             INSERT INTO suivi.campaign_days VALUES \
             ('gendarmerie', '2020-10-05', 12, 7, 4, 0, '2021-01-25 09:00:05+00'), \
             ('gendarmerie', '2020-11-16', 0, 0, 2, 2, '2021-01-25 09:00:05+00'), \
             ('la-poste', '2020-10-06', 3, 3, 3, 1, '2021-01-24 09:00:05+00'), \
             ('a-typo', '2020-10-07', 2, 1, 0, 0, '2021-01-20 09:00:05+00'), \
             ('*', '2020-10-05', 12, 7, 4, 0, '2021-01-25 09:00:05+00'), \
             ('*', '2020-10-06', 3, 3, 3, 1, '2021-01-25 09:00:05+00'), \
             ('*', '2020-10-07', 2, 1, 0, 0, '2021-01-25 09:00:05+00'), \
             ('*', '2020-11-16', 0, 0, 2, 2, '2021-01-25 09:00:05+00'); \
             INSERT INTO suivi.snapshots VALUES ('2021-01-25 09:00:05+00', 2, 2); \
             INSERT INTO suivi.snapshot_counters \
                 SELECT campaign, '2021-01-25 09:00:05+00', name, registered, clicks, \
                        unique_visitors, enrolled, started, chapters_completed, certified, \
                        completion_rate, target, progress, as_of \
                 FROM suivi.campaign_counters WHERE campaign IN ('gendarmerie', '*')",
        )
        .await
        .expect("the rows of version 1");
}

#[tokio::test]
async fn a_version_1_database_keeps_its_figures_through_the_migration_to_shard_rows() {
    let _server = shared().await;
    let database = TestDatabase::create().await;
    let mut client = database.client().await;
    version_1_with_rows(&client).await;
    let before = what_reports_read(&client).await;

    assert_eq!(pg::migrate(&mut client).await.expect("migrates"), [2]);
    assert_eq!(what_reports_read(&client).await, before);
    let moved: Vec<(i32, i64)> = client
        .query(
            "SELECT shard, position FROM suivi.shard_counters \
             UNION ALL SELECT shard, position FROM suivi.shard_days",
            &[],
        )
        .await
        .expect("the shard rows")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(moved, vec![(0, -1); 12], "each row moved to shard 0");

    // A suivi with shards starts: its first snapshot restates every campaign that holds
    // something, here the Gendarmerie in shard 1 only and the totals in shards 0 and 1. The
    // rows of before are then no longer true, and count nowhere.
    let gendarmerie = campaign_counters("gendarmerie", 8, 3);
    let totals = campaign_counters("*", 8, 3);
    let day = day_counters("2020-10-05", [16, 8, 8, 3]);
    let part = |shard: usize, counters: &suivi::figures::CampaignCounters, enrolled: u64| {
        let mut counts = counts_of(counters);
        counts.enrolled = enrolled;
        counts.clicks = enrolled * 2;
        ShardCounts {
            shard,
            campaign: counters.campaign.clone(),
            counts,
            position: None,
            as_of: counters.as_of,
        }
    };
    let day_part = |shard: usize, campaign: &str, enrolled: u64| ShardDay {
        shard,
        campaign: campaign.to_owned(),
        counts: suivi::figures::DayCounters {
            clicks: enrolled * 2,
            enrolled,
            started: enrolled,
            certified: 0,
            ..day
        },
        position: None,
    };
    let mut sink = PostgresSink::new(&database.secret()).expect("a sink");
    sink.write(&Snapshot {
        taken_at: Utc::now(),
        changes: Changes {
            campaigns: vec![gendarmerie.clone(), totals.clone()],
            days: Vec::new(),
        },
        shards: ShardChanges {
            counts: vec![
                part(0, &totals, 3),
                part(1, &gendarmerie, 8),
                part(1, &totals, 5),
            ],
            days: vec![
                day_part(0, "*", 3),
                day_part(1, "gendarmerie", 8),
                day_part(1, "*", 5),
            ],
        },
    })
    .await
    .expect("writes");
    let stored = stored_counters(&client).await;
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        ["*", "gendarmerie"],
        "La Poste and the typo hold nothing now: {stored:#?}"
    );
    assert_eq!(stored["gendarmerie"]["enrolled"], 8);
    assert_eq!(stored["gendarmerie"]["clicks"], 16);
    assert_eq!(stored["*"]["enrolled"], 8, "3 in shard 0 and 5 in shard 1");
    let days = stored_days(&client).await;
    assert_eq!(days.len(), 2, "{days:#?}");
    assert_eq!(days["gendarmerie"].len(), 1, "{days:#?}");
    assert_eq!(days["*"][0]["enrolled"], 8);
    assert_eq!(days["*"][0]["clicks"], 16);
    // The history is what each snapshot wrote, before shards and since.
    let history: i64 = client
        .query_one("SELECT count(*) FROM suivi.snapshot_counters", &[])
        .await
        .expect("a count")
        .get(0);
    assert_eq!(history, 4);
}

/// A snapshot of one instance holding the Gendarmerie's shard 3 at `position`: its counts
/// (`enrolled` learners) and two days, the second emptied when `emptied`.
fn shard_3_at(position: i64, enrolled: u64, emptied: bool) -> Snapshot {
    let counters = campaign_counters("gendarmerie", enrolled, 1);
    let second_day = if emptied { [0, 0, 0, 0] } else { [0, 1, 1, 1] };
    let days = [
        day_counters("2020-10-05", [2, enrolled - 1, enrolled - 1, 0]),
        day_counters("2020-10-06", second_day),
    ];
    Snapshot {
        taken_at: Utc::now(),
        shards: ShardChanges {
            counts: vec![ShardCounts {
                shard: 3,
                campaign: "gendarmerie".to_owned(),
                counts: counts_of(&counters),
                position: Some(position),
                as_of: counters.as_of,
            }],
            days: days
                .iter()
                .map(|day| ShardDay {
                    shard: 3,
                    campaign: "gendarmerie".to_owned(),
                    counts: *day,
                    position: Some(position),
                })
                .collect(),
        },
        changes: Changes {
            campaigns: vec![counters],
            days: vec![("gendarmerie".to_owned(), days.to_vec())],
        },
    }
}

#[tokio::test]
async fn a_shard_row_written_by_two_instances_at_two_positions_holds_the_later_in_either_order() {
    let _server = shared().await;
    // At 120 the shard's second day emptied (its learner re-dated to the first).
    let older = shard_3_at(100, 4, false);
    let newer = shard_3_at(120, 6, true);
    for (first, second) in [(&older, &newer), (&newer, &older)] {
        let database = TestDatabase::create().await;
        let client = database.client().await;
        // Two instances, each writing what it holds of the shard.
        let mut one = PostgresSink::new(&database.secret()).expect("a sink");
        let mut other = PostgresSink::new(&database.secret()).expect("a sink");
        one.write(first).await.expect("writes");
        other
            .write(&Snapshot {
                taken_at: Utc::now(),
                ..second.clone()
            })
            .await
            .expect("writes");
        let stored = stored_counters(&client).await;
        assert_eq!(stored["gendarmerie"]["enrolled"], 6, "{stored:#?}");
        assert_eq!(stored["gendarmerie"]["clicks"], 12, "{stored:#?}");
        let days = stored_days(&client).await;
        assert_eq!(
            days["gendarmerie"],
            [serde_json::json!({
                "day": "2020-10-05", "clicks": 2, "enrolled": 5, "started": 5, "certified": 0
            })],
            "the emptied day stays empty"
        );
        let positions: Vec<i64> = client
            .query(
                "SELECT position FROM suivi.shard_counters \
                 UNION ALL SELECT position FROM suivi.shard_days",
                &[],
            )
            .await
            .expect("the positions")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(positions, [120, 120, 120]);
    }
}
