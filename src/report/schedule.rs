//! The half-quarterly writer (`reports_dir`, off by default): when a half-quarter ends (midnight
//! in suivi's time zone), and once the snapshot that closes it has had time to reach the store,
//! every campaign's report for it is written to `<reports_dir>/<YYYY-Qn-h>/` — `<campaign>.html`,
//! `.csv` and `.json` for each campaign (named by [`crate::report::file_name`]: one file per
//! campaign, whatever its id holds), and `_all.csv`, `_all.json` for all of them (a name no
//! campaign's file can take). A folder
//! appears whole or not at all (written under a temporary name, then renamed). At start, the
//! last half-quarter that has ended is written too if its folder is missing, so a half-quarter
//! that ended while suivi was down is not skipped. A failure (the store out of reach) is logged
//! and retried every minute; it never touches ingestion or snapshots.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use tokio_util::sync::CancellationToken;

use crate::report::period::{self, HalfQuarter};
use crate::report::store::Store;
use crate::report::{
    ALL_CAMPAIGNS_FILE_NAME, Allowed, Format, Lang, Programme, make, render, write_each,
};

/// How long a failed write waits before it is tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(60);
/// The longest single sleep: the wall clock is read again after it, so a long wait follows the
/// calendar even if the monotonic clock drifts (a suspended machine).
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// Where and how scheduled reports are written.
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    pub store: Arc<Store>,
    pub directory: PathBuf,
    pub time_zone: Tz,
    pub lang: Lang,
    /// How long after a half-quarter ends its reports are made: long enough for the snapshot
    /// that holds its last events to reach the store (two snapshot intervals).
    pub settle: Duration,
}

/// Writes each half-quarter's reports when it ends, until `shutdown`.
pub async fn run(settings: ScheduleSettings, shutdown: CancellationToken) {
    let mut due = period::last_completed(today(Utc::now(), settings.time_zone));
    loop {
        if !folder(&settings.directory, due).exists() {
            if !sleep(settings.settle, &shutdown).await {
                return;
            }
            if !write_with_retries(&settings, due, &shutdown).await {
                return;
            }
        }
        let boundary = period::next_boundary(Utc::now(), settings.time_zone);
        if !sleep_until(boundary, &shutdown).await {
            return;
        }
        due = period::last_completed(today(Utc::now(), settings.time_zone));
    }
}

/// Writes every campaign's reports for `half_quarter` into `<directory>/<half_quarter>/`, whole
/// or not at all; returns the folder.
pub async fn write_half_quarter(
    settings: &ScheduleSettings,
    half_quarter: HalfQuarter,
) -> anyhow::Result<PathBuf> {
    let period = half_quarter.period();
    let reports = make(
        &settings.store,
        None,
        Allowed::All,
        Programme::Included,
        &period,
        settings.time_zone,
    )
    .await?;
    let directory = settings.directory.clone();
    let lang = settings.lang;
    let name = half_quarter.to_string();
    tokio::task::spawn_blocking(move || {
        let folder = directory.join(&name);
        let partial = directory.join(format!(".{name}.partial"));
        if partial.exists() {
            std::fs::remove_dir_all(&partial)
                .with_context(|| format!("cannot remove {}", partial.display()))?;
        }
        write_each(
            &reports,
            &partial,
            &[Format::Html, Format::Csv, Format::Json],
            lang,
        )?;
        for format in [Format::Csv, Format::Json] {
            let path = partial.join(format!("{ALL_CAMPAIGNS_FILE_NAME}.{}", format.extension()));
            std::fs::write(&path, render(&reports, format, lang, false)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        std::fs::rename(&partial, &folder).with_context(|| {
            format!(
                "cannot rename {} to {}",
                partial.display(),
                folder.display()
            )
        })?;
        Ok(folder)
    })
    .await
    .context("the report writer failed")?
}

/// Tries until written, a newer half-quarter is due, or shutdown (`false`).
async fn write_with_retries(
    settings: &ScheduleSettings,
    half_quarter: HalfQuarter,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        match write_half_quarter(settings, half_quarter).await {
            Ok(folder) => {
                tracing::info!(period = %half_quarter, folder = %folder.display(), "half-quarterly reports written");
                return true;
            }
            Err(error) => tracing::warn!(
                period = %half_quarter,
                error = %crate::telemetry::chain(error.as_ref()),
                retry_in = ?RETRY_INTERVAL,
                "cannot write the half-quarterly reports"
            ),
        }
        if !sleep(RETRY_INTERVAL, shutdown).await {
            return false;
        }
        if period::last_completed(today(Utc::now(), settings.time_zone)) != half_quarter {
            tracing::error!(period = %half_quarter, "gave up the half-quarterly reports: the next half-quarter has ended");
            return true;
        }
    }
}

fn today(now: DateTime<Utc>, time_zone: Tz) -> NaiveDate {
    now.with_timezone(&time_zone).date_naive()
}

/// Sleeps `duration`; `false` if shutdown came first.
async fn sleep(duration: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        () = shutdown.cancelled() => false,
    }
}

/// Sleeps until the wall clock reads `instant`; `false` if shutdown came first.
async fn sleep_until(instant: DateTime<Utc>, shutdown: &CancellationToken) -> bool {
    loop {
        let Ok(left) = (instant - Utc::now()).to_std() else {
            return true;
        };
        if left.is_zero() {
            return true;
        }
        if !sleep(left.min(LONGEST_SLEEP), shutdown).await {
            return false;
        }
    }
}

/// The folder the reports of `half_quarter` go to.
pub fn folder(directory: &Path, half_quarter: HalfQuarter) -> PathBuf {
    directory.join(half_quarter.to_string())
}
