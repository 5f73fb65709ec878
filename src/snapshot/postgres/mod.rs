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
//! The connection URL is a secret: it never reaches Debug output, logs or error messages. TLS
//! follows the URL's `sslmode`, as in libpq ([`tls`]).
//!
//! A campaign whose rows the server refuses never stops the others: a NUL character (which no
//! PostgreSQL text takes) or a count beyond a bigint is set aside before sending; anything else
//! the server refuses as data (SQLSTATE class 22, such as a character a non-UTF-8 database
//! cannot hold, or 54000, an id too long for its index entry) is found by writing under a
//! savepoint and halving the campaigns until the refused ones stand alone. Their rows are left
//! out of the transaction, which commits the rest; the sink names them in [`Written`].

mod rows;
mod schema;
pub mod tls;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use tokio_postgres::Client;

use self::rows::{CampaignRows, SnapshotRows, refuses_the_rows};
pub use self::schema::{
    COUNTER_COLUMNS, MIGRATIONS, Migration, connect, counters_from_row, migrate,
};
use crate::config::{PostgresTarget, Secret, parse_postgres_url};
use crate::snapshot::{Snapshot, Written};

/// How long one snapshot's transaction may take before it is abandoned (and retried later on a
/// new connection): a server that hangs must not hold the snapshot task, or shutdown, for long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);

/// Writes snapshots to PostgreSQL.
pub struct PostgresSink {
    target: PostgresTarget,
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
            target: parse_postgres_url(url)?,
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
            let mut client = connect(&self.target).await?;
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

#[cfg(test)]
mod tests {
    use super::schema::describe_target;
    use super::*;

    #[test]
    fn a_sink_names_its_target_and_never_its_password() {
        let target = parse_postgres_url(&Secret::new("postgres://suivi:hunter2@db:5433/reports"))
            .expect("a URL");
        assert_eq!(describe_target(&target.config), "suivi@db:5433/reports");
        let sink = PostgresSink {
            target,
            client: None,
            reconciled: HashSet::new(),
        };
        assert!(!format!("{sink:?}").contains("hunter2"));
    }
}
