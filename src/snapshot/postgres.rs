//! The PostgreSQL sink: snapshots as rows a reporting person can query directly, in the schema
//! `suivi`, which suivi creates and migrates itself ([`migrate`]: a versioned list applied in one
//! transaction under an advisory lock, so running it twice, or from two processes at once, is a
//! no-op). The tables:
//!
//! - `suivi.campaign_counters` — the current counters, one row per campaign; the programme
//!   totals are the row of campaign `*` (also the view `suivi.programme_totals`);
//! - `suivi.campaign_days` — the daily timeline: per campaign (and `*`) and calendar day, the
//!   clicks and the learners who first enrolled, started, were certified that day (also the view
//!   `suivi.programme_days`); days with nothing are absent;
//! - `suivi.snapshots` — one row per snapshot written, by `taken_at`;
//! - `suivi.snapshot_counters` — per snapshot, the counters of each campaign that changed in it,
//!   so the counters of any campaign as of any time are those of its latest row at or before it.
//!
//! Each snapshot is one transaction of idempotent statements: absolute values upserted (never
//! increments), history rows keyed by the snapshot's time, so writing a snapshot again after a
//! failure whose commit did or did not land changes nothing, and an older snapshot never
//! overwrites a row a newer one wrote (rows carry the `snapshot_at` that wrote them; one suivi
//! process writes to a database at a time, and never sends an older snapshot after a newer one).
//! The first
//! snapshot of a campaign in a process is its whole timeline (see [`crate::snapshot`]), so days
//! that were not in it are deleted then: a day emptied while PostgreSQL was out of reach does not
//! linger. The sink holds one connection, opened (and the schema migrated) on first use and again
//! after any failure; it never blocks ingestion, and the snapshot task retries it with backoff.
//! The connection URL is a secret: it never reaches Debug output, logs or error messages.
//!
//! A campaign whose rows the server refuses never stops the others: a NUL character (which no
//! PostgreSQL text takes) or a count beyond a bigint is set aside before sending; anything else
//! the server refuses as data (SQLSTATE class 22, such as a character a non-UTF-8 database
//! cannot hold, or 54000, an id too long for its index entry) is found by writing under a
//! savepoint and halving the campaigns until the refused ones stand alone. Their rows are left
//! out of the transaction, which commits the rest; the sink names them in [`Written`].

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls, Row, Transaction};

use crate::config::{Secret, parse_postgres_url};
use crate::figures::{CampaignCounters, DayCounters};
use crate::snapshot::{SetAside, Snapshot, Written};

/// How long one snapshot's transaction may take before it is abandoned (and retried later on a
/// new connection): a server that hangs must not hold the snapshot task, or shutdown, for long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
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
pub const MIGRATIONS: &[Migration] = &[Migration {
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
}];

/// Writes snapshots to PostgreSQL.
pub struct PostgresSink {
    config: Config,
    client: Option<Client>,
    /// Campaigns whose whole timeline this sink has written (see the module's doc).
    reconciled: HashSet<String>,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password: show only that there is one.
        f.debug_struct("PostgresSink")
            .field("connected", &self.client.is_some())
            .field("reconciled", &self.reconciled.len())
            .finish_non_exhaustive()
    }
}

impl PostgresSink {
    /// A sink for the database at `url`; it connects on its first write.
    pub fn new(url: &Secret) -> anyhow::Result<PostgresSink> {
        Ok(PostgresSink {
            config: parse_postgres_url(url)?,
            client: None,
            reconciled: HashSet::new(),
        })
    }

    /// Writes one snapshot in one transaction, or nothing of it, but for the campaigns whose
    /// rows PostgreSQL refuses: those are left out and named in the answer.
    pub async fn write(&mut self, snapshot: &Snapshot) -> anyhow::Result<Written> {
        let written = tokio::time::timeout(WRITE_TIMEOUT, self.write_once(snapshot)).await;
        let written = match written {
            Ok(written) => written,
            Err(_elapsed) => Err(anyhow::anyhow!(
                "the snapshot transaction took more than {WRITE_TIMEOUT:?}"
            )),
        };
        if written.is_err() {
            // Whatever broke, the next attempt starts from a fresh connection; dropping the
            // client closes this one, and an open transaction on it is rolled back.
            self.client = None;
        }
        written
    }

    async fn write_once(&mut self, snapshot: &Snapshot) -> anyhow::Result<Written> {
        let (parts, mut set_aside) = CampaignRows::split(snapshot, &self.reconciled);
        let num_campaigns = parts.iter().filter(|part| part.counters.is_some()).count();
        let num_days = parts.iter().map(|part| part.days.len()).sum::<usize>();
        let client = self.client().await?;
        let mut transaction = client
            .transaction()
            .await
            .context("cannot begin the snapshot transaction")?;
        let taken_at = snapshot.taken_at;
        transaction
            .execute(
                "INSERT INTO suivi.snapshots (taken_at, campaigns, days) VALUES ($1, $2, $3) \
                 ON CONFLICT (taken_at) DO NOTHING",
                &[
                    &taken_at,
                    &i32::try_from(num_campaigns).unwrap_or(i32::MAX),
                    &i32::try_from(num_days).unwrap_or(i32::MAX),
                ],
            )
            .await
            .context("cannot record the snapshot")?;
        // All campaigns in one go; when the server refuses a row, the group is rolled back to
        // its savepoint and halved until the refused campaigns stand alone and are set aside:
        // about log2(campaigns) more attempts per refused campaign, none when all is well.
        let mut groups = vec![parts];
        let mut first_written = Vec::new();
        while let Some(group) = groups.pop() {
            if group.is_empty() {
                continue;
            }
            let rows = SnapshotRows::new(&group);
            let savepoint = transaction
                .savepoint("campaigns")
                .await
                .context("cannot set a savepoint")?;
            match rows.write(&savepoint, taken_at).await {
                Ok(()) => {
                    savepoint
                        .commit()
                        .await
                        .context("cannot release a savepoint")?;
                    first_written.extend(rows.first_written);
                }
                Err(error) if refuses_the_rows(&error.source) => {
                    savepoint
                        .rollback()
                        .await
                        .context("cannot roll back to a savepoint")?;
                    if let [part] = group.as_slice() {
                        set_aside.push(part.set_aside(format!("{:#}", anyhow::Error::new(error))));
                    } else {
                        let mut group = group;
                        let second_half = group.split_off(group.len() / 2);
                        groups.push(second_half);
                        groups.push(group);
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
        transaction
            .commit()
            .await
            .context("cannot commit the snapshot")?;
        self.reconciled.extend(first_written);
        Ok(Written { set_aside })
    }

    /// The open connection, or a new one (with the schema migrated).
    async fn client(&mut self) -> anyhow::Result<&mut Client> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            let mut client = connect(&self.config).await?;
            let applied = migrate(&mut client).await?;
            tracing::info!(
                migrations_applied = ?applied,
                "connected to PostgreSQL for snapshots"
            );
            self.client = Some(client);
        }
        // Set just above when it was not.
        self.client
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no PostgreSQL connection"))
    }
}

/// Opens a connection, and drives it on a task of its own until the client is dropped or the
/// server goes away.
pub async fn connect(config: &Config) -> anyhow::Result<Client> {
    let (client, connection) = config.connect(NoTls).await.map_err(|error| {
        anyhow::anyhow!(
            "cannot connect to PostgreSQL at {}: {error}",
            describe_target(config)
        )
    })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %error, "PostgreSQL connection closed");
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

const UPSERT_COUNTERS: &str = "
INSERT INTO suivi.campaign_counters (campaign, name, registered, clicks, unique_visitors,
    enrolled, started, chapters_completed, certified, completion_rate, target, progress, as_of,
    snapshot_at)
SELECT c.campaign, c.name, c.registered, c.clicks, c.unique_visitors, c.enrolled, c.started,
    c.chapters::bigint[], c.certified, c.completion_rate, c.target, c.progress, c.as_of, $14
FROM unnest($1::text[], $2::text[], $3::bool[], $4::int8[], $5::int8[], $6::int8[], $7::int8[],
    $8::text[], $9::int8[], $10::float8[], $11::int8[], $12::float8[], $13::timestamptz[])
    AS c(campaign, name, registered, clicks, unique_visitors, enrolled, started, chapters,
         certified, completion_rate, target, progress, as_of)
ON CONFLICT (campaign) DO UPDATE SET
    name = excluded.name, registered = excluded.registered, clicks = excluded.clicks,
    unique_visitors = excluded.unique_visitors, enrolled = excluded.enrolled,
    started = excluded.started, chapters_completed = excluded.chapters_completed,
    certified = excluded.certified, completion_rate = excluded.completion_rate,
    target = excluded.target, progress = excluded.progress, as_of = excluded.as_of,
    snapshot_at = excluded.snapshot_at
WHERE suivi.campaign_counters.snapshot_at <= excluded.snapshot_at";

const INSERT_SNAPSHOT_COUNTERS: &str = "
INSERT INTO suivi.snapshot_counters (taken_at, campaign, name, registered, clicks,
    unique_visitors, enrolled, started, chapters_completed, certified, completion_rate, target,
    progress, as_of)
SELECT $14, c.campaign, c.name, c.registered, c.clicks, c.unique_visitors, c.enrolled, c.started,
    c.chapters::bigint[], c.certified, c.completion_rate, c.target, c.progress, c.as_of
FROM unnest($1::text[], $2::text[], $3::bool[], $4::int8[], $5::int8[], $6::int8[], $7::int8[],
    $8::text[], $9::int8[], $10::float8[], $11::int8[], $12::float8[], $13::timestamptz[])
    AS c(campaign, name, registered, clicks, unique_visitors, enrolled, started, chapters,
         certified, completion_rate, target, progress, as_of)
ON CONFLICT (campaign, taken_at) DO NOTHING";

const UPSERT_DAYS: &str = "
INSERT INTO suivi.campaign_days (campaign, day, clicks, enrolled, started, certified, snapshot_at)
SELECT d.campaign, d.day, d.clicks, d.enrolled, d.started, d.certified, $7
FROM unnest($1::text[], $2::date[], $3::int8[], $4::int8[], $5::int8[], $6::int8[])
    AS d(campaign, day, clicks, enrolled, started, certified)
ON CONFLICT (campaign, day) DO UPDATE SET
    clicks = excluded.clicks, enrolled = excluded.enrolled, started = excluded.started,
    certified = excluded.certified, snapshot_at = excluded.snapshot_at
WHERE suivi.campaign_days.snapshot_at <= excluded.snapshot_at";

/// One campaign's part of a snapshot: its counters and changed days, which are written or set
/// aside together.
struct CampaignRows<'a> {
    campaign: &'a str,
    counters: Option<&'a CampaignCounters>,
    days: &'a [DayCounters],
    /// Whether this sink has not written the campaign's whole timeline yet.
    first_written: bool,
}

impl<'a> CampaignRows<'a> {
    /// The snapshot by campaign, less the campaigns PostgreSQL is known to refuse, which are
    /// set aside without a round trip.
    fn split(
        snapshot: &'a Snapshot,
        reconciled: &HashSet<String>,
    ) -> (Vec<CampaignRows<'a>>, Vec<SetAside>) {
        let mut parts: BTreeMap<&str, CampaignRows<'a>> = BTreeMap::new();
        for counters in &snapshot.changes.campaigns {
            parts
                .entry(&counters.campaign)
                .or_insert_with(|| CampaignRows::new(&counters.campaign))
                .counters = Some(counters);
        }
        for (campaign, days) in &snapshot.changes.days {
            parts
                .entry(campaign)
                .or_insert_with(|| CampaignRows::new(campaign))
                .days = days;
        }
        let mut kept = Vec::with_capacity(parts.len());
        let mut set_aside = Vec::new();
        for mut part in parts.into_values() {
            part.first_written = part.counters.is_some() && !reconciled.contains(part.campaign);
            match part.refusal() {
                None => kept.push(part),
                Some(reason) => set_aside.push(part.set_aside(reason)),
            }
        }
        (kept, set_aside)
    }

    fn new(campaign: &'a str) -> CampaignRows<'a> {
        CampaignRows {
            campaign,
            counters: None,
            days: &[],
            first_written: false,
        }
    }

    /// Why PostgreSQL would refuse these rows, when that can be told before sending them: a
    /// NUL character in a text column (`invalid byte sequence for encoding "UTF8": 0x00`;
    /// every other character a Rust string holds is valid UTF-8, which a UTF-8 database takes),
    /// or a count beyond a bigint. Anything else the server refuses is found by writing.
    fn refusal(&self) -> Option<String> {
        let texts = std::iter::once(self.campaign).chain(self.counters.map(|c| c.name.as_str()));
        if texts.into_iter().any(|text| text.contains('\0')) {
            return Some("a NUL character, which PostgreSQL text cannot hold".to_owned());
        }
        let counts = self
            .counters
            .into_iter()
            .flat_map(|c| {
                [
                    c.clicks,
                    c.unique_visitors,
                    c.enrolled,
                    c.started,
                    c.certified,
                ]
                .into_iter()
                .chain(c.chapters_completed.iter().copied())
                .chain(c.target)
            })
            .chain(
                self.days
                    .iter()
                    .flat_map(|d| [d.clicks, d.enrolled, d.started, d.certified]),
            );
        for count in counts {
            if let Err(error) = signed(count) {
                return Some(format!("{error:#}"));
            }
        }
        None
    }

    fn set_aside(&self, reason: String) -> SetAside {
        SetAside {
            campaign: self.campaign.to_owned(),
            rows: u64::from(self.counters.is_some()) + self.days.len() as u64,
            reason,
        }
    }
}

/// Whether an error is the server refusing the rows themselves (SQLSTATE class 22, data
/// exception: a character the database's encoding cannot hold, a bad value; or 54000, program
/// limit exceeded: a campaign id too long for a btree index entry), rather than the connection
/// or the server failing, which fails the whole snapshot, to be retried.
fn refuses_the_rows(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        code.code().starts_with("22") || *code == SqlState::PROGRAM_LIMIT_EXCEEDED
    })
}

/// One statement of a snapshot that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {statement}")]
struct StatementError {
    statement: &'static str,
    #[source]
    source: tokio_postgres::Error,
}

/// Names the statement of a failed write.
trait Statement<T> {
    fn statement(self, statement: &'static str) -> Result<T, StatementError>;
}

impl<T> Statement<T> for Result<T, tokio_postgres::Error> {
    fn statement(self, statement: &'static str) -> Result<T, StatementError> {
        self.map_err(|source| StatementError { statement, source })
    }
}

/// Campaigns' rows as column arrays, one statement per table however many rows.
struct SnapshotRows {
    counters: CounterColumns,
    days: DayColumns,
    emptied_campaign: Vec<String>,
    emptied_day: Vec<NaiveDate>,
    /// Campaigns written for the first time by this sink.
    first_written: Vec<String>,
}

#[derive(Default)]
struct CounterColumns {
    campaign: Vec<String>,
    name: Vec<String>,
    registered: Vec<bool>,
    clicks: Vec<i64>,
    unique_visitors: Vec<i64>,
    enrolled: Vec<i64>,
    started: Vec<i64>,
    /// As array literals (`{1,2,3}`): unnest would flatten a two-dimensional array.
    chapters_completed: Vec<String>,
    certified: Vec<i64>,
    completion_rate: Vec<f64>,
    target: Vec<Option<i64>>,
    progress: Vec<Option<f64>>,
    as_of: Vec<DateTime<Utc>>,
}

#[derive(Default)]
struct DayColumns {
    campaign: Vec<String>,
    day: Vec<NaiveDate>,
    clicks: Vec<i64>,
    enrolled: Vec<i64>,
    started: Vec<i64>,
    certified: Vec<i64>,
}

impl SnapshotRows {
    /// The rows of `parts`, whose counts [`CampaignRows::refusal`] found to fit a bigint.
    fn new(parts: &[CampaignRows<'_>]) -> SnapshotRows {
        // Checked by `refusal`; a count that did not fit would be refused, not wrapped.
        let signed = |count: u64| i64::try_from(count).unwrap_or(i64::MAX);
        let mut counters = CounterColumns::default();
        let mut first_written = Vec::new();
        let mut days = DayColumns::default();
        let mut emptied_campaign = Vec::new();
        let mut emptied_day = Vec::new();
        for part in parts {
            if let Some(campaign) = part.counters {
                let c = &mut counters;
                c.campaign.push(campaign.campaign.clone());
                c.name.push(campaign.name.clone());
                c.registered.push(campaign.registered);
                c.clicks.push(signed(campaign.clicks));
                c.unique_visitors.push(signed(campaign.unique_visitors));
                c.enrolled.push(signed(campaign.enrolled));
                c.started.push(signed(campaign.started));
                let chapters: Vec<String> = campaign
                    .chapters_completed
                    .iter()
                    .map(u64::to_string)
                    .collect();
                c.chapters_completed
                    .push(format!("{{{}}}", chapters.join(",")));
                c.certified.push(signed(campaign.certified));
                c.completion_rate.push(campaign.completion_rate);
                c.target.push(campaign.target.map(signed));
                c.progress.push(campaign.progress);
                c.as_of.push(campaign.as_of);
                if part.first_written {
                    first_written.push(campaign.campaign.clone());
                }
            }
            for day in part.days {
                if day.clicks == 0 && day.enrolled == 0 && day.started == 0 && day.certified == 0 {
                    emptied_campaign.push(part.campaign.to_owned());
                    emptied_day.push(day.day.date());
                    continue;
                }
                days.campaign.push(part.campaign.to_owned());
                days.day.push(day.day.date());
                days.clicks.push(signed(day.clicks));
                days.enrolled.push(signed(day.enrolled));
                days.started.push(signed(day.started));
                days.certified.push(signed(day.certified));
            }
        }
        SnapshotRows {
            counters,
            days,
            emptied_campaign,
            emptied_day,
            first_written,
        }
    }

    /// Upserts the rows, deletes the emptied days and, for campaigns written whole for the first
    /// time, the days no longer in their timeline.
    async fn write(
        &self,
        transaction: &Transaction<'_>,
        taken_at: DateTime<Utc>,
    ) -> Result<(), StatementError> {
        let c = &self.counters;
        let counters: [&(dyn tokio_postgres::types::ToSql + Sync); 14] = [
            &c.campaign,
            &c.name,
            &c.registered,
            &c.clicks,
            &c.unique_visitors,
            &c.enrolled,
            &c.started,
            &c.chapters_completed,
            &c.certified,
            &c.completion_rate,
            &c.target,
            &c.progress,
            &c.as_of,
            &taken_at,
        ];
        transaction
            .execute(UPSERT_COUNTERS, &counters)
            .await
            .statement("write campaign_counters")?;
        transaction
            .execute(INSERT_SNAPSHOT_COUNTERS, &counters)
            .await
            .statement("write snapshot_counters")?;
        let d = &self.days;
        transaction
            .execute(
                UPSERT_DAYS,
                &[
                    &d.campaign,
                    &d.day,
                    &d.clicks,
                    &d.enrolled,
                    &d.started,
                    &d.certified,
                    &taken_at,
                ],
            )
            .await
            .statement("write campaign_days")?;
        transaction
            .execute(
                "DELETE FROM suivi.campaign_days AS d \
                 USING unnest($1::text[], $2::date[]) AS e(campaign, day) \
                 WHERE d.campaign = e.campaign AND d.day = e.day AND d.snapshot_at <= $3",
                &[&self.emptied_campaign, &self.emptied_day, &taken_at],
            )
            .await
            .statement("delete emptied days")?;
        if !self.first_written.is_empty() {
            // This snapshot holds these campaigns' whole timelines and has just stamped every
            // one of their days: a day it did not stamp is no longer in the timeline.
            transaction
                .execute(
                    "DELETE FROM suivi.campaign_days \
                     WHERE campaign = ANY($1::text[]) AND snapshot_at < $2",
                    &[&self.first_written, &taken_at],
                )
                .await
                .statement("delete days no longer in the timeline")?;
        }
        Ok(())
    }
}

fn signed(count: u64) -> anyhow::Result<i64> {
    i64::try_from(count).with_context(|| format!("count {count} does not fit a bigint"))
}

/// Where a config points, without its password: `user@host:port/database`.
fn describe_target(config: &Config) -> String {
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

/// `text` with every occurrence of `secret` (and of its password, if it is a URL with one)
/// replaced.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_names_its_target_and_never_its_password() {
        let config = parse_postgres_url(&Secret::new("postgres://suivi:hunter2@db:5433/reports"))
            .expect("a URL");
        assert_eq!(describe_target(&config), "suivi@db:5433/reports");
        let sink = PostgresSink {
            config,
            client: None,
            reconciled: HashSet::new(),
        };
        assert!(!format!("{sink:?}").contains("hunter2"));
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::try_from(migration.version).ok(), Some(index + 1));
        }
    }
}
