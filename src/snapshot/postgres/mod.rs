//! The PostgreSQL sink: snapshots as rows a reporting person can query directly, in the schema
//! `suivi`, which suivi creates and migrates itself ([`migrate`]: a versioned list applied in one
//! transaction under an advisory lock, so running it twice, or from two processes at once, is a
//! no-op). What is stored:
//!
//! - `suivi.shard_counters` — each shard's part of each campaign's counters (product.md §6: a
//!   learner lives in one shard, so every counter is the sum of the shards'), with the position
//!   it reflects; `suivi.shard_days` — the same per day; `suivi.campaigns` — each campaign's
//!   name, whether it is registered, and its target;
//! - the views `suivi.campaign_counters` (the current counters, one row per campaign; the
//!   programme totals are the row of campaign `*`, also the view `suivi.programme_totals`) and
//!   `suivi.campaign_days` (the daily timeline: per campaign, and `*`, and calendar day, the
//!   clicks and the learners who first enrolled, started, were certified that day; also the
//!   view `suivi.programme_days`; days with nothing are absent), which sum the shards' rows and
//!   have the columns the tables of that name had before shards;
//! - `suivi.snapshots` — one row per snapshot written, by `taken_at`;
//! - `suivi.snapshot_counters` — per snapshot, the counters (sums) of each campaign that changed
//!   in it, so the counters of any campaign as of any time are those of its latest row at or
//!   before it. These stay per instance (see [`MIGRATIONS`]' version 2).
//!
//! Each snapshot is one transaction of idempotent statements: absolute values upserted (never
//! increments), history rows keyed by the snapshot's time, so writing a snapshot again after a
//! failure whose commit did or did not land changes nothing. A shard's row is replaced only by
//! one at the same or a later position, so an older value never overwrites a newer one.
//!
//! **Several instances on one database.** With `forward_to_kafka`, a shard is a Kafka
//! partition and every instance holds every shard's partials, each at the latest position it
//! has read (`Figures::publish_at`); so every instance writes every shard's rows. That is
//! right: a shard's partial at a position is the same whoever made it, and the position guard
//! keeps, for each row, the latest position any instance wrote — a lagging instance, or one
//! killed and replaced, never takes a row backwards. Without `forward_to_kafka` the shards are
//! in-process (by learner hash) and their rows carry position 0: the latest snapshot's row
//! wins, and shard numbers mean something only within one instance, so several instances
//! writing one database need `forward_to_kafka` (their rows would overwrite each other's).
//!
//! **Stale rows.** Without positions, the first snapshot of a (shard, campaign) in a process is
//! that shard's whole timeline of it (see [`crate::snapshot`]), so that shard's days that were
//! not in it are deleted then: a day emptied while PostgreSQL was out of reach does not linger.
//! With positions, a day that empties is written at zero (and the partials topic keeps its zero
//! for the next process), so nothing is deleted: deleting would let an older value come back.
//! The rows of a suivi before shards (migrated as shard 0 at position -1) are deleted by the
//! first snapshot of a process, which restates every campaign that holds something.
//!
//! The sink holds one connection, opened (and the schema migrated) on first use and again after
//! any failure; it never blocks ingestion, and the snapshot task retries it with backoff. The
//! connection URL is a secret: it never reaches Debug output, logs or error messages. TLS
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
    /// The (shard, campaign) pairs without positions whose whole timeline this sink has
    /// written (see the module's doc).
    reconciled: HashSet<(usize, String)>,
    /// Whether this sink has written a snapshot, which restated every campaign.
    restated_all: bool,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password: show only that there is one.
        f.debug_struct("PostgresSink")
            .field("connected", &self.client.is_some())
            .field("reconciled", &self.reconciled.len())
            .field("restated_all", &self.restated_all)
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
            restated_all: false,
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
        // The days of the sums, as the history counts them (not each shard's).
        let num_days = snapshot
            .changes
            .days
            .iter()
            .filter(|(campaign, _)| {
                !set_aside
                    .iter()
                    .any(|set_aside| set_aside.campaign == *campaign)
            })
            .map(|(_, days)| days.len())
            .sum::<usize>();
        let restated_all = self.restated_all;
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
        let mut restated = Vec::new();
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
                    restated.extend(rows.restated);
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
        if !restated_all {
            // The first snapshot of a process restates every campaign that holds something,
            // in every shard: what is left of a suivi before shards is no longer true.
            transaction
                .batch_execute(
                    "DELETE FROM suivi.shard_counters WHERE position < 0; \
                     DELETE FROM suivi.shard_days WHERE position < 0",
                )
                .await
                .context("cannot delete the rows of a suivi before shards")?;
        }
        transaction
            .commit()
            .await
            .context("cannot commit the snapshot")?;
        self.reconciled.extend(restated);
        self.restated_all = true;
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
            restated_all: false,
        };
        assert!(!format!("{sink:?}").contains("hunter2"));
    }
}
