//! suivi's schema in PostgreSQL and reading it back: the versioned [`MIGRATIONS`] and
//! [`migrate`] (applied in one transaction under an advisory lock, so running it twice, or from
//! two processes at once, is a no-op), [`connect`] (which names its target without the
//! password), and [`counters_from_row`] with [`COUNTER_COLUMNS`], shared by the reports' store.
//! The sink that writes the rows is the parent module.

use std::collections::HashSet;

use anyhow::{Context, bail};
use tokio_postgres::{Client, Config, Row};

use crate::config::PostgresTarget;
use crate::figures::CampaignCounters;

/// The `pg_advisory_xact_lock` key that serialises migrations ("suivi" in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x7375_6976_6900_0001;

/// The columns of a campaign's counters in `campaign_counters` and `snapshot_counters`, in the
/// order [`counters_from_row`] reads them by name.
pub const COUNTER_COLUMNS: &str = "campaign, name, registered, clicks, unique_visitors, enrolled, \
     started, chapters_completed, certified, completion_rate, target, progress, as_of";

/// One step of the schema, applied once.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first. Never edit one that has shipped: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "counters, daily timeline and snapshot history",
        sql: r"
CREATE TABLE suivi.campaign_counters (
    campaign text PRIMARY KEY,
    name text NOT NULL,
    registered boolean NOT NULL,
    clicks bigint NOT NULL,
    unique_visitors bigint NOT NULL,
    enrolled bigint NOT NULL,
    started bigint NOT NULL,
    chapters_completed bigint[] NOT NULL,
    certified bigint NOT NULL,
    completion_rate double precision NOT NULL,
    target bigint,
    progress double precision,
    as_of timestamptz NOT NULL,
    snapshot_at timestamptz NOT NULL
);
COMMENT ON TABLE suivi.campaign_counters IS
    'Current counters per campaign (distinct learners per stage); campaign * is the programme totals.';
COMMENT ON COLUMN suivi.campaign_counters.chapters_completed IS
    'Learners who completed chapter i, at index i (1-based).';
COMMENT ON COLUMN suivi.campaign_counters.as_of IS 'When these counters last changed in suivi.';
COMMENT ON COLUMN suivi.campaign_counters.snapshot_at IS 'The snapshot that wrote this row.';

CREATE TABLE suivi.campaign_days (
    campaign text NOT NULL,
    day date NOT NULL,
    clicks bigint NOT NULL,
    enrolled bigint NOT NULL,
    started bigint NOT NULL,
    certified bigint NOT NULL,
    snapshot_at timestamptz NOT NULL,
    PRIMARY KEY (campaign, day)
);
COMMENT ON TABLE suivi.campaign_days IS
    'Daily timeline: per campaign and day (when events happened, in suivi''s time zone), the clicks and the learners who first reached each stage that day. Days with nothing are absent. Summed over days, each column gives the campaign''s counter.';

CREATE TABLE suivi.snapshots (
    taken_at timestamptz PRIMARY KEY,
    campaigns integer NOT NULL,
    days integer NOT NULL
);
COMMENT ON TABLE suivi.snapshots IS
    'One row per snapshot written: when it was taken, how many campaigns and days changed in it.';

CREATE TABLE suivi.snapshot_counters (
    campaign text NOT NULL,
    taken_at timestamptz NOT NULL REFERENCES suivi.snapshots ON DELETE CASCADE,
    name text NOT NULL,
    registered boolean NOT NULL,
    clicks bigint NOT NULL,
    unique_visitors bigint NOT NULL,
    enrolled bigint NOT NULL,
    started bigint NOT NULL,
    chapters_completed bigint[] NOT NULL,
    certified bigint NOT NULL,
    completion_rate double precision NOT NULL,
    target bigint,
    progress double precision,
    as_of timestamptz NOT NULL,
    PRIMARY KEY (campaign, taken_at)
);
CREATE INDEX snapshot_counters_taken_at ON suivi.snapshot_counters (taken_at);
COMMENT ON TABLE suivi.snapshot_counters IS
    'Per snapshot, the counters of each campaign that changed in it: a campaign''s counters as of time T are those of its latest row taken at or before T.';

CREATE VIEW suivi.programme_totals AS
    SELECT clicks, unique_visitors, enrolled, started, chapters_completed, certified,
           completion_rate, target, progress, as_of, snapshot_at
    FROM suivi.campaign_counters WHERE campaign = '*';
CREATE VIEW suivi.programme_days AS
    SELECT day, clicks, enrolled, started, certified
    FROM suivi.campaign_days WHERE campaign = '*';
",
    },
    Migration {
        version: 2,
        name: "rows keyed by shard, summed by the views campaign_counters and campaign_days",
        sql: SHARD_ROWS,
    },
];

/// Migration 2: the current counters and the timeline become rows keyed by shard, each with the
/// position it reflects, so that instances writing one database never overwrite each other;
/// `campaign_counters` and `campaign_days` become views with the columns the tables had,
/// summing the shards. The history (`snapshots`, `snapshot_counters`) stays as it was: one row
/// per snapshot of an instance, holding the sums that instance answered then (with
/// `forward_to_kafka` every instance answers the whole programme, so each row is whole by
/// itself; summing rows of several instances would count their learners again). The rows of a
/// suivi before shards become shard 0 at position -1, which every shard's row passes: the sink
/// deletes what remains of them once its first snapshot of a process has restated everything
/// ([`super::rows`]).
const SHARD_ROWS: &str = r"
CREATE TABLE suivi.campaigns (
    campaign text PRIMARY KEY,
    name text NOT NULL,
    registered boolean NOT NULL,
    target bigint,
    snapshot_at timestamptz NOT NULL
);
COMMENT ON TABLE suivi.campaigns IS
    'Per campaign, what the registry says of it (name, registered, target), as the latest snapshot wrote it; campaign * is the programme.';

CREATE TABLE suivi.shard_counters (
    shard integer NOT NULL,
    campaign text NOT NULL,
    clicks bigint NOT NULL,
    unique_visitors bigint NOT NULL,
    enrolled bigint NOT NULL,
    started bigint NOT NULL,
    chapters_completed bigint[] NOT NULL,
    certified bigint NOT NULL,
    position bigint NOT NULL,
    as_of timestamptz NOT NULL,
    snapshot_at timestamptz NOT NULL,
    PRIMARY KEY (shard, campaign)
);
COMMENT ON TABLE suivi.shard_counters IS
    'One shard''s part of each campaign''s counters (a learner lives in one shard, so every counter is the sum of the shards''); campaign * is the programme totals. Summed by the view campaign_counters.';
COMMENT ON COLUMN suivi.shard_counters.position IS
    'How far the shard''s Kafka partitions were counted (forward_to_kafka); 0 without Kafka shards, -1 for a row of a suivi before shards. A row is replaced only by one at the same or a later position.';
COMMENT ON COLUMN suivi.shard_counters.as_of IS 'When this shard''s part last changed in the suivi that wrote it.';
COMMENT ON COLUMN suivi.shard_counters.snapshot_at IS 'The snapshot that wrote this row.';

CREATE TABLE suivi.shard_days (
    shard integer NOT NULL,
    campaign text NOT NULL,
    day date NOT NULL,
    clicks bigint NOT NULL,
    enrolled bigint NOT NULL,
    started bigint NOT NULL,
    certified bigint NOT NULL,
    position bigint NOT NULL,
    snapshot_at timestamptz NOT NULL,
    PRIMARY KEY (shard, campaign, day)
);
CREATE INDEX shard_days_campaign_day ON suivi.shard_days (campaign, day);
COMMENT ON TABLE suivi.shard_days IS
    'One shard''s part of each campaign''s daily timeline. A day that emptied is kept at zero with its position, so that an older value cannot come back. Summed by the view campaign_days.';
COMMENT ON COLUMN suivi.shard_days.position IS
    'As shard_counters.position, for this day.';

INSERT INTO suivi.campaigns (campaign, name, registered, target, snapshot_at)
    SELECT campaign, name, registered, target, snapshot_at FROM suivi.campaign_counters;
INSERT INTO suivi.shard_counters (shard, campaign, clicks, unique_visitors, enrolled, started,
        chapters_completed, certified, position, as_of, snapshot_at)
    SELECT 0, campaign, clicks, unique_visitors, enrolled, started, chapters_completed,
           certified, -1, as_of, snapshot_at
    FROM suivi.campaign_counters;
INSERT INTO suivi.shard_days (shard, campaign, day, clicks, enrolled, started, certified,
        position, snapshot_at)
    SELECT 0, campaign, day, clicks, enrolled, started, certified, -1, snapshot_at
    FROM suivi.campaign_days;

DROP VIEW suivi.programme_totals;
DROP VIEW suivi.programme_days;
DROP TABLE suivi.campaign_counters;
DROP TABLE suivi.campaign_days;

CREATE VIEW suivi.campaign_counters AS
    WITH sums AS (
        SELECT campaign, sum(clicks)::bigint AS clicks,
               sum(unique_visitors)::bigint AS unique_visitors, sum(enrolled)::bigint AS enrolled,
               sum(started)::bigint AS started, sum(certified)::bigint AS certified,
               max(as_of) AS as_of, max(snapshot_at) AS snapshot_at
        FROM suivi.shard_counters GROUP BY campaign
    ), chapters AS (
        SELECT campaign, array_agg(completed ORDER BY chapter) AS chapters_completed
        FROM (
            SELECT s.campaign, c.chapter, sum(c.completed)::bigint AS completed
            FROM suivi.shard_counters AS s,
                 unnest(s.chapters_completed) WITH ORDINALITY AS c(completed, chapter)
            GROUP BY s.campaign, c.chapter
        ) AS per_chapter
        GROUP BY campaign
    )
    SELECT sums.campaign, coalesce(campaigns.name, '') AS name,
           coalesce(campaigns.registered, false) AS registered,
           sums.clicks, sums.unique_visitors, sums.enrolled, sums.started,
           coalesce(chapters.chapters_completed, '{}'::bigint[]) AS chapters_completed,
           sums.certified,
           CASE WHEN sums.enrolled > 0
                THEN sums.certified::double precision / sums.enrolled ELSE 0 END
               AS completion_rate,
           campaigns.target,
           CASE WHEN campaigns.target > 0
                THEN sums.certified::double precision / campaigns.target END AS progress,
           sums.as_of, sums.snapshot_at
    FROM sums
    LEFT JOIN chapters USING (campaign)
    LEFT JOIN suivi.campaigns USING (campaign);
COMMENT ON VIEW suivi.campaign_counters IS
    'Current counters per campaign (distinct learners per stage), the sum of the shards'' rows in shard_counters; campaign * is the programme totals.';
COMMENT ON COLUMN suivi.campaign_counters.chapters_completed IS
    'Learners who completed chapter i, at index i (1-based).';
COMMENT ON COLUMN suivi.campaign_counters.as_of IS 'When these counters last changed in suivi.';
COMMENT ON COLUMN suivi.campaign_counters.snapshot_at IS 'The latest snapshot that wrote a shard''s row.';

CREATE VIEW suivi.campaign_days AS
    SELECT campaign, day, sum(clicks)::bigint AS clicks, sum(enrolled)::bigint AS enrolled,
           sum(started)::bigint AS started, sum(certified)::bigint AS certified,
           max(snapshot_at) AS snapshot_at
    FROM suivi.shard_days
    GROUP BY campaign, day
    HAVING sum(clicks) + sum(enrolled) + sum(started) + sum(certified) > 0;
COMMENT ON VIEW suivi.campaign_days IS
    'Daily timeline: per campaign and day (when events happened, in suivi''s time zone), the clicks and the learners who first reached each stage that day, the sum of the shards'' rows in shard_days. Days with nothing are absent. Summed over days, each column gives the campaign''s counter.';

CREATE VIEW suivi.programme_totals AS
    SELECT clicks, unique_visitors, enrolled, started, chapters_completed, certified,
           completion_rate, target, progress, as_of, snapshot_at
    FROM suivi.campaign_counters WHERE campaign = '*';
COMMENT ON VIEW suivi.programme_totals IS 'The programme totals: campaign_counters of campaign *.';
CREATE VIEW suivi.programme_days AS
    SELECT day, clicks, enrolled, started, certified
    FROM suivi.campaign_days WHERE campaign = '*';
COMMENT ON VIEW suivi.programme_days IS 'The programme''s daily timeline: campaign_days of campaign *.';
";

/// Opens a connection, with TLS as the target's `sslmode` says (see [`super::tls`]), and drives
/// it on a task of its own until the client is dropped or the server goes away. The error names
/// the target (without its password), the TLS mode, and the cause (such as the certificate
/// check that failed).
pub async fn connect(target: &PostgresTarget) -> anyhow::Result<Client> {
    let tls = super::tls::make_connect(target).with_context(|| {
        format!(
            "cannot connect to PostgreSQL at {} (sslmode={})",
            describe_target(&target.config),
            target.tls.as_str()
        )
    })?;
    let (client, connection) = target.config.connect(tls).await.map_err(|error| {
        anyhow::anyhow!(
            "cannot connect to PostgreSQL at {} (sslmode={}): {}",
            describe_target(&target.config),
            target.tls.as_str(),
            crate::telemetry::chain(&error)
        )
    })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %crate::telemetry::chain(&error), "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Creates or updates suivi's schema: applies, in one transaction under an advisory lock, every
/// migration not yet recorded in `suivi.schema_migrations`, and returns their versions (empty
/// when the schema was up to date). Refuses a schema newer than this suivi knows.
pub async fn migrate(client: &mut Client) -> anyhow::Result<Vec<i32>> {
    let transaction = client
        .transaction()
        .await
        .context("cannot begin the migration")?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("cannot take the migration lock")?;
    transaction
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS suivi; \
             CREATE TABLE IF NOT EXISTS suivi.schema_migrations ( \
                 version integer PRIMARY KEY, \
                 name text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .context("cannot create the migrations table")?;
    let done: HashSet<i32> = transaction
        .query("SELECT version FROM suivi.schema_migrations", &[])
        .await
        .context("cannot read the migrations table")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |migration| migration.version);
    if let Some(newer) = done
        .iter()
        .copied()
        .filter(|version| *version > known)
        .max()
    {
        bail!(
            "the database's suivi schema is at version {newer}, newer than this suivi knows ({known})"
        );
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        if done.contains(&migration.version) {
            continue;
        }
        transaction
            .batch_execute(migration.sql)
            .await
            .with_context(|| {
                format!(
                    "cannot apply migration {} ({})",
                    migration.version, migration.name
                )
            })?;
        transaction
            .execute(
                "INSERT INTO suivi.schema_migrations (version, name) VALUES ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .await
            .context("cannot record a migration")?;
        applied.push(migration.version);
    }
    transaction
        .commit()
        .await
        .context("cannot commit the migration")?;
    Ok(applied)
}

/// Reads a campaign's counters from a row holding [`COUNTER_COLUMNS`].
pub fn counters_from_row(row: &Row) -> anyhow::Result<CampaignCounters> {
    let count = |column: &str| -> anyhow::Result<u64> {
        let value: i64 = row.try_get(column)?;
        u64::try_from(value).with_context(|| format!("negative {column} {value}"))
    };
    let chapters: Vec<i64> = row.try_get("chapters_completed")?;
    let target: Option<i64> = row.try_get("target")?;
    Ok(CampaignCounters {
        campaign: row.try_get("campaign")?,
        name: row.try_get("name")?,
        clicks: count("clicks")?,
        unique_visitors: count("unique_visitors")?,
        enrolled: count("enrolled")?,
        started: count("started")?,
        chapters_completed: chapters
            .into_iter()
            .map(|completed| u64::try_from(completed).context("negative chapter count"))
            .collect::<anyhow::Result<_>>()?,
        certified: count("certified")?,
        completion_rate: row.try_get("completion_rate")?,
        target: target.map(u64::try_from).transpose()?,
        progress: row.try_get("progress")?,
        as_of: row.try_get("as_of")?,
        registered: row.try_get("registered")?,
    })
}

/// Where a config points, without its password: `user@host:port/database`.
pub(super) fn describe_target(config: &Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or_default(),
        config.get_dbname().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::try_from(migration.version).ok(), Some(index + 1));
        }
    }
}
