//! Partner reports: for one campaign (or each) and one period, the figures the programme sends
//! its partners twice a quarter — clicks, unique visitors, enrolled, started, certified,
//! completion rate, progress towards the target, the change since the previous period, where
//! learners stop (completions per chapter) — beside the same figures for the whole programme,
//! unless the caller may not see those ([`Programme::LeftOut`]); a caller may also be limited to
//! some campaigns ([`Allowed`]).
//! Reports are built from the downstream store ([`store`]: the snapshot files or PostgreSQL),
//! never from the live counters, so any process can make them for any past period; they are
//! rendered as a printable HTML page with inline SVG charts ([`html`]), CSV ([`csv`]) or JSON, in
//! French or English ([`lang`]). `suivi report` (here), `GET /v1/campaigns/{campaign}/report`
//! ([`http`]) and the half-quarterly writer ([`schedule`]) all go through [`make`] and
//! [`render`].
//!
//! What a report can say, and what it cannot: figures are dated by the day events happened
//! (the daily timeline), so clicks, enrolled, started and certified are exact for any period,
//! including events that arrived late. Unique visitors and per-chapter completions exist only as
//! totals in each snapshot, not per day: a report gives them as of the last snapshot taken at or
//! before the end of the period, or, when none was, as of the first one after, and says which;
//! it never gives them per period. Building a report does no IO besides reading the store.

pub mod charts;
pub mod csv;
pub mod html;
pub mod http;
pub mod lang;
pub mod period;
pub mod remote;
pub mod schedule;
pub mod store;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::config::{Settings, SettingsFlags};
use crate::day::Day;
use crate::event::TOTALS_CAMPAIGN;
use crate::figures::DayCounters;
use crate::forecast::{self, Forecast};
pub use crate::report::lang::Lang;
use crate::report::period::Period;
use crate::report::store::{Stamped, Store, StoredCampaign};

/// One partner's report for one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub campaign: String,
    /// The partner's name; empty for an unregistered campaign.
    pub name: String,
    pub registered: bool,
    /// The programme's name (`Objectif IA`).
    pub programme_name: String,
    pub period: Period,
    /// The period the change is measured against.
    pub previous_period: Period,
    /// The IANA zone of the days.
    pub time_zone: String,
    /// `postgres` or `files`.
    pub source: &'static str,
    /// When the newest snapshot in the store was taken: nothing after it is in the report.
    pub latest_snapshot: Option<DateTime<Utc>>,
    pub generated_at: DateTime<Utc>,
    /// The campaign's figures.
    pub figures: ReportFigures,
    /// The same figures for the whole programme (distinct learners over every campaign);
    /// `None` (and absent from the JSON) when made with [`Programme::LeftOut`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub programme: Option<ReportFigures>,
}

/// The figures of a campaign, or of the programme, for a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportFigures {
    /// What was new during the period.
    pub in_period: Flow,
    /// What was new during the previous period.
    pub in_previous_period: Flow,
    /// `in_period − in_previous_period`.
    pub change: Change,
    /// Everything up to the end of the period.
    pub at_period_end: Flow,
    /// Everything up to the end of the previous period.
    pub at_previous_period_end: Flow,
    /// certified / enrolled at the end of the period; `None` when nobody had enrolled.
    pub completion_rate: Option<f64>,
    pub target: Option<u64>,
    /// certified / target at the end of the period.
    pub progress: Option<f64>,
    /// When the target is reached at the pace of the period's last four weeks, made as of the
    /// day after the period (`forecast`); absent without a target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
    /// Unique visitors and completions per chapter, from one snapshot; `None` when the store
    /// has no counters for the campaign.
    pub funnel: Option<Funnel>,
    /// Running totals of enrolled and certified on every day something changed, up to the end
    /// of the period (the cumulative chart).
    pub cumulative: Vec<CumulativeDay>,
}

/// Counts of the daily timeline, summed over some days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Flow {
    pub clicks: u64,
    pub enrolled: u64,
    pub started: u64,
    pub certified: u64,
}

/// The difference between two [`Flow`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Change {
    pub clicks: i64,
    pub enrolled: i64,
    pub started: i64,
    pub certified: i64,
}

/// The counters that only snapshots hold (totals, not per day), as of one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Funnel {
    /// When the snapshot was taken.
    pub as_of: DateTime<Utc>,
    /// Whether that snapshot was taken after the end of the period (no snapshot was taken
    /// before it): its figures then include what came after the period.
    pub after_period_end: bool,
    pub unique_visitors: u64,
    pub clicks: u64,
    pub enrolled: u64,
    pub started: u64,
    /// Learners who completed chapter i, at index i − 1.
    pub chapters_completed: Vec<u64>,
    pub certified: u64,
}

/// Running totals at the end of one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CumulativeDay {
    pub day: Day,
    pub enrolled: u64,
    pub certified: u64,
}

/// A report's output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A self-contained HTML page with SVG charts, ready to print to PDF.
    #[default]
    Html,
    /// One row per figure: campaign, period, metric, label, value, programme value, as of.
    Csv,
    /// The report as JSON, every figure under its machine name.
    Json,
}

/// Why no report could be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("campaign {campaign:?} is not in the downstream store ({store})")]
    CampaignNotFound {
        campaign: String,
        store: &'static str,
    },
    #[error("the downstream store ({0}) holds no snapshot yet: has suivi serve written one there?")]
    Empty(&'static str),
    #[error("cannot read the downstream store: {0:#}")]
    Store(anyhow::Error),
}

/// `suivi report`: a partner's report (or every partner's) for one period, from the downstream
/// store, to stdout or files.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The campaign (its tracking id, e.g. gendarmerie); every campaign when omitted
    #[arg(long)]
    pub campaign: Option<String>,
    /// A half-quarter, YYYY-Qn-h: h = 1 is the quarter's first month and the first 15 days of
    /// its second (2021-Q1-1 is 1 January to 15 February), h = 2 the rest (2021-Q1-2 is
    /// 16 February to 31 March); or a range FROM..TO (YYYY-MM-DD..YYYY-MM-DD) [default: the last
    /// half-quarter that has ended]
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub period: Option<String>,
    /// The first day of a range (with --to)
    #[arg(long, value_name = "YYYY-MM-DD", requires = "to")]
    pub from: Option<String>,
    /// The last day of a range, included (with --from)
    #[arg(long, value_name = "YYYY-MM-DD", requires = "from")]
    pub to: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Html)]
    pub format: Format,
    /// Language of the report
    #[arg(long, value_enum, default_value_t = Lang::Fr)]
    pub lang: Lang,
    /// Write to this file instead of stdout
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write one file per campaign (<campaign>.html, .csv or .json) into this directory
    #[arg(long, value_name = "DIR", conflicts_with = "output")]
    pub output_dir: Option<PathBuf>,
    /// Where to read from [default: postgres when postgres_url is set, else files]
    #[arg(long, value_enum)]
    pub store: Option<StoreKind>,
    /// A TOML file of suivi settings (data_dir, postgres_url, time_zone are used)
    /// [env: SUIVI_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The data directory whose snapshots/ to read [env: SUIVI_DATA_DIR] [default: ./suivi-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The PostgreSQL database to read [env: SUIVI_POSTGRES_URL]
    #[arg(long, value_name = "URL")]
    pub postgres_url: Option<String>,
    /// The time zone of the days [env: SUIVI_TIME_ZONE] [default: Europe/Paris]
    #[arg(long, value_name = "ZONE")]
    pub time_zone: Option<String>,
    /// Fetch the reports from this running suivi (http(s)://host:port, its HTTP API) instead of
    /// reading the store: with --token, the campaigns that credential may read
    #[arg(long, value_name = "URL", conflicts_with_all = ["store", "config", "data_dir", "postgres_url", "time_zone"])]
    pub server: Option<String>,
    /// The bearer token for --server (a credential with reports:read)
    #[arg(long, env = "SUIVI_TOKEN", hide_env_values = true, requires = "server")]
    pub token: Option<String>,
    /// For an https:// --server: a PEM CA certificate to trust besides the system's roots
    #[arg(long, value_name = "FILE", requires = "server")]
    pub ca_cert: Option<PathBuf>,
}

/// The downstream stores reports read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Postgres,
    Files,
}

impl Format {
    /// The file extension, and the `format` parameter's value.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
        }
    }

    /// `html`, `csv` or `json`.
    pub fn parse(text: &str) -> Option<Format> {
        match text.trim().to_ascii_lowercase().as_str() {
            "html" => Some(Format::Html),
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

impl Store {
    /// The store `settings` point to: PostgreSQL when `postgres_url` is set (or `kind` says
    /// so), else the snapshot files of `data_dir`.
    pub fn from_settings(settings: &Settings, kind: Option<StoreKind>) -> anyhow::Result<Store> {
        match (kind, &settings.postgres_url) {
            (Some(StoreKind::Files), _) | (None, None) => {
                Ok(Store::Files(settings.data_dir.join("snapshots")))
            }
            (Some(StoreKind::Postgres) | None, Some(url)) => Ok(Store::Postgres(url.clone())),
            (Some(StoreKind::Postgres), None) => {
                anyhow::bail!(
                    "--store postgres needs postgres_url (--postgres-url or SUIVI_POSTGRES_URL)"
                )
            }
        }
    }
}

/// Whether reports give the whole programme's figures beside the campaign's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Programme {
    /// [`Report::programme`] holds the programme's figures, and every format shows them
    /// (`suivi report`, the half-quarterly writer).
    Included,
    /// No programme figure anywhere: [`Report::programme`] is `None`, the HTML has no programme
    /// column, card detail, funnel marker or note, the CSV's `programme_value` is empty and the
    /// JSON has no `programme` key; the totals campaign (`*`) cannot be asked for as a
    /// campaign either. Only the programme's name is still read from the store, for the title.
    LeftOut,
}

/// The campaigns a caller may have reports on.
#[derive(Debug, Clone, Copy)]
pub enum Allowed<'a> {
    /// Every campaign in the store.
    All,
    /// Only these campaign ids (as [`crate::event::campaign_id`] gives them). Asking for one
    /// outside the set gives the same [`ReportError::CampaignNotFound`] as asking for one the
    /// store never held, and the others are not even read from the store.
    Only(&'a BTreeSet<String>),
}

impl Allowed<'_> {
    /// Whether reports on `campaign` may be given.
    pub fn contains(&self, campaign: &str) -> bool {
        match self {
            Allowed::All => true,
            Allowed::Only(campaigns) => campaigns.contains(campaign),
        }
    }
}

/// The reports of `campaign` (every campaign in the store that `allowed` contains, by id, when
/// `None`) for `period`, from `store`; days are in `time_zone`; with or without the programme's
/// figures, as `programme` says. A `campaign` that `allowed` does not contain (or the totals,
/// `*`, when the programme is left out) is [`ReportError::CampaignNotFound`], word for word as
/// one the store never held.
pub async fn make(
    store: &Store,
    campaign: Option<&str>,
    allowed: Allowed<'_>,
    programme: Programme,
    period: &Period,
    time_zone: Tz,
) -> Result<Vec<Report>, ReportError> {
    let visible = |id: &str| {
        allowed.contains(id) && !(programme == Programme::LeftOut && id == TOTALS_CAMPAIGN)
    };
    // The totals are read even when their figures are left out: they hold the programme's name.
    let totals = TOTALS_CAMPAIGN.to_owned();
    let wanted: Option<Vec<String>> = match (campaign, allowed) {
        (Some(campaign), _) => Some(
            Some(campaign.to_owned())
                .filter(|campaign| visible(campaign))
                .into_iter()
                .chain([totals])
                .collect(),
        ),
        (None, Allowed::All) => None,
        (None, Allowed::Only(campaigns)) => {
            Some(campaigns.iter().cloned().chain([totals]).collect())
        }
    };
    let (_, last_day) = period.days();
    let mut stored = store
        .load(wanted.as_deref(), period.end_instant(time_zone), last_day)
        .await
        .map_err(ReportError::Store)?;
    if stored.latest_snapshot.is_none() {
        return Err(ReportError::Empty(store.name()));
    }
    let programme_name = stored
        .campaigns
        .get(TOTALS_CAMPAIGN)
        .and_then(|totals| totals.latest.as_ref())
        .map(|stamped| stamped.counters.name.clone())
        .unwrap_or_default();
    let programme_figures = match programme {
        Programme::Included => {
            let empty = StoredCampaign::default();
            let totals = stored.campaigns.get(TOTALS_CAMPAIGN).unwrap_or(&empty);
            Some(figures(totals, period, time_zone))
        }
        Programme::LeftOut => {
            // Nothing below can reach the totals.
            stored.campaigns.remove(TOTALS_CAMPAIGN);
            None
        }
    };
    let ids: Vec<&String> = match campaign {
        Some(campaign) => {
            let id = stored
                .campaigns
                .get_key_value(campaign)
                .filter(|(id, stored)| visible(id) && stored.latest.is_some())
                .ok_or_else(|| ReportError::CampaignNotFound {
                    campaign: campaign.to_owned(),
                    store: store.name(),
                })?
                .0;
            vec![id]
        }
        None => stored
            .campaigns
            .iter()
            .filter(|(id, stored)| *id != TOTALS_CAMPAIGN && visible(id) && stored.latest.is_some())
            .map(|(id, _)| id)
            .collect(),
    };
    let generated_at = Utc::now();
    Ok(ids
        .into_iter()
        .map(|id| {
            let campaign = &stored.campaigns[id];
            let latest = campaign.latest.as_ref().map(|stamped| &stamped.counters);
            Report {
                campaign: id.clone(),
                name: latest.map(|c| c.name.clone()).unwrap_or_default(),
                registered: latest.is_some_and(|c| c.registered),
                programme_name: programme_name.clone(),
                period: period.clone(),
                previous_period: period.previous(),
                time_zone: time_zone.name().to_owned(),
                source: store.name(),
                latest_snapshot: stored.latest_snapshot,
                generated_at,
                figures: figures(campaign, period, time_zone),
                programme: programme_figures.clone(),
            }
        })
        .collect())
}

/// A campaign's figures for `period`, from what the store holds.
pub fn figures(campaign: &StoredCampaign, period: &Period, time_zone: Tz) -> ReportFigures {
    let previous = period.previous();
    let (from, to) = period.days();
    let (previous_from, previous_to) = previous.days();
    let sum = |days: &mut dyn Iterator<Item = &DayCounters>| {
        days.fold(Flow::default(), |flow, day| Flow {
            clicks: flow.clicks + day.clicks,
            enrolled: flow.enrolled + day.enrolled,
            started: flow.started + day.started,
            certified: flow.certified + day.certified,
        })
    };
    let timeline = &campaign.timeline;
    let in_period = sum(&mut timeline.range(from..=to).map(|(_, day)| day));
    let in_previous_period = sum(&mut timeline
        .range(previous_from..=previous_to)
        .map(|(_, day)| day));
    let at_period_end = sum(&mut timeline.range(..=to).map(|(_, day)| day));
    let at_previous_period_end = sum(&mut timeline.range(..=previous_to).map(|(_, day)| day));
    let target = campaign
        .latest
        .as_ref()
        .and_then(|stamped| stamped.counters.target);
    let end = period.end_instant(time_zone);
    let funnel = campaign
        .as_of_end
        .as_ref()
        .or(campaign.latest.as_ref())
        .map(|stamped| funnel(stamped, end));
    let mut running = (0, 0);
    let cumulative = timeline
        .range(..=to)
        .map(|(day, counts)| {
            running = (running.0 + counts.enrolled, running.1 + counts.certified);
            CumulativeDay {
                day: *day,
                enrolled: running.0,
                certified: running.1,
            }
        })
        .collect();
    let days: Vec<DayCounters> = timeline.range(..=to).map(|(_, day)| *day).collect();
    let day_after = period.to.succ_opt().unwrap_or(period.to);
    let forecast = forecast::forecast(&days, at_period_end.certified, target, day_after);
    ReportFigures {
        in_period,
        in_previous_period,
        change: Change {
            clicks: difference(in_period.clicks, in_previous_period.clicks),
            enrolled: difference(in_period.enrolled, in_previous_period.enrolled),
            started: difference(in_period.started, in_previous_period.started),
            certified: difference(in_period.certified, in_previous_period.certified),
        },
        at_period_end,
        at_previous_period_end,
        completion_rate: ratio(at_period_end.certified, at_period_end.enrolled),
        target,
        progress: target.and_then(|target| ratio(at_period_end.certified, target)),
        forecast,
        funnel,
        cumulative,
    }
}

/// Renders reports made for one campaign (`one`) or for all.
pub fn render(reports: &[Report], format: Format, lang: Lang, one: bool) -> anyhow::Result<String> {
    match format {
        Format::Html => Ok(html::render(reports, lang)),
        Format::Csv => Ok(csv::render(reports, lang)),
        Format::Json => {
            let text = match (one, reports) {
                (true, [report]) => serde_json::to_string_pretty(report)?,
                _ => serde_json::to_string_pretty(&serde_json::json!({ "reports": reports }))?,
            };
            Ok(text + "\n")
        }
    }
}

/// Runs `suivi report`.
pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    if let Some(server) = &args.server {
        return run_remote(server, &args).await;
    }
    let settings = Settings::load(&SettingsFlags {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
        postgres_url: args.postgres_url.clone(),
        time_zone: args.time_zone.clone(),
        ..SettingsFlags::default()
    })?;
    let time_zone = settings.time_zone()?;
    let store = Store::from_settings(&settings, args.store)?;
    let period = match (&args.period, &args.from, &args.to) {
        (Some(period), _, _) => Period::parse(period)?,
        (None, Some(from), Some(to)) => {
            Period::range(period::parse_date(from)?, period::parse_date(to)?)?
        }
        _ => {
            let today = Utc::now().with_timezone(&time_zone).date_naive();
            period::last_completed(today).period()
        }
    };
    let campaign = args.campaign.as_deref().map(crate::event::campaign_id);
    let reports = make(
        &store,
        campaign.as_deref(),
        Allowed::All,
        Programme::Included,
        &period,
        time_zone,
    )
    .await?;
    match (&args.output, &args.output_dir) {
        (_, Some(directory)) => {
            let written = write_each(&reports, directory, &[args.format], args.lang)?;
            eprintln!(
                "wrote {} reports for {period} into {}",
                written,
                directory.display()
            );
        }
        (Some(file), None) => {
            let text = render(&reports, args.format, args.lang, campaign.is_some())?;
            std::fs::write(file, text)
                .with_context(|| format!("cannot write {}", file.display()))?;
            eprintln!("wrote the report for {period} to {}", file.display());
        }
        (None, None) => {
            let text = render(&reports, args.format, args.lang, campaign.is_some())?;
            use std::io::Write;
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("cannot write to stdout")?;
        }
    }
    Ok(())
}

/// `suivi report --server`: the reports as the running suivi renders them for the token.
async fn run_remote(server: &str, args: &ReportArgs) -> anyhow::Result<()> {
    let remote = remote::Remote::new(server, args.token.clone(), args.ca_cert.as_deref())?;
    let period = match (&args.period, &args.from, &args.to) {
        (Some(period), _, _) => vec![("period", period.clone())],
        (None, Some(from), Some(to)) => vec![("from", from.clone()), ("to", to.clone())],
        _ => Vec::new(),
    };
    let query = remote::Query {
        period,
        format: args.format,
        lang: args.lang,
    };
    let campaign = args.campaign.as_deref().map(crate::event::campaign_id);
    match (&args.output, &args.output_dir) {
        (_, Some(directory)) => {
            let written = remote
                .write_each(directory, campaign.as_deref(), &query)
                .await?;
            eprintln!("wrote {written} reports into {}", directory.display());
        }
        (Some(file), None) => {
            let text = remote.report(campaign.as_deref(), &query).await?;
            std::fs::write(file, text)
                .with_context(|| format!("cannot write {}", file.display()))?;
            eprintln!("wrote the report to {}", file.display());
        }
        (None, None) => {
            let text = remote.report(campaign.as_deref(), &query).await?;
            use std::io::Write;
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("cannot write to stdout")?;
        }
    }
    Ok(())
}

/// Writes each report in each format to `<directory>/<campaign>.<extension>`; returns how many
/// reports.
pub fn write_each(
    reports: &[Report],
    directory: &Path,
    formats: &[Format],
    lang: Lang,
) -> anyhow::Result<usize> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;
    for report in reports {
        for format in formats {
            let path = directory.join(format!(
                "{}.{}",
                file_name(&report.campaign),
                format.extension()
            ));
            let text = render(std::slice::from_ref(report), *format, lang, true)?;
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(reports.len())
}

/// The file name (without extension) of the report of all campaigns next to theirs in one
/// folder: [`file_name`] never gives it, as it escapes a leading `_`.
pub const ALL_CAMPAIGNS_FILE_NAME: &str = "_all";

/// The longest name [`file_name`] gives, in bytes (file systems take 255, and an extension
/// follows).
const MAX_FILE_NAME_BYTES: usize = 200;

/// A campaign id as a file name, one of its own: lower-case ASCII letters, digits, `-`, and `_`
/// or `.` past the first character stay; every other byte (`/`, `?`, `%`, upper case, which a
/// case-insensitive file system would merge, anything beyond ASCII) becomes `%XX`, so distinct
/// ids give distinct names, none hidden, none leaving the folder, and none equal to
/// [`ALL_CAMPAIGNS_FILE_NAME`]. A name that would be longer than [`MAX_FILE_NAME_BYTES`] is
/// cut and ends with `~` and a hash of the whole id (`~` is otherwise always escaped).
pub fn file_name(campaign: &str) -> String {
    use std::fmt::Write as _;

    let mut name = String::with_capacity(campaign.len());
    for (index, byte) in campaign.bytes().enumerate() {
        let kept = byte.is_ascii_lowercase()
            || byte.is_ascii_digit()
            || byte == b'-'
            || (index > 0 && matches!(byte, b'_' | b'.'));
        if kept {
            name.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(name, "%{byte:02X}");
        }
    }
    if name.len() > MAX_FILE_NAME_BYTES {
        let mut cut = MAX_FILE_NAME_BYTES - 20;
        // Not inside a `%XX`.
        while name[..cut].ends_with('%') || name[..cut.saturating_sub(1)].ends_with('%') {
            cut -= 1;
        }
        let hash = blake3::hash(campaign.as_bytes()).to_hex();
        name = format!("{}~{}", &name[..cut], &hash.as_str()[..16]);
    }
    name
}

fn funnel(stamped: &Stamped, end: DateTime<Utc>) -> Funnel {
    let counters = &stamped.counters;
    Funnel {
        as_of: stamped.taken_at,
        after_period_end: stamped.taken_at > end,
        unique_visitors: counters.unique_visitors,
        clicks: counters.clicks,
        enrolled: counters.enrolled,
        started: counters.started,
        chapters_completed: counters.chapters_completed.clone(),
        certified: counters.certified,
    }
}

fn difference(now: u64, before: u64) -> i64 {
    i64::try_from(now).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(i64::MAX)
}

#[allow(clippy::cast_precision_loss)] // Counts stay far below 2^52.
fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

#[cfg(test)]
mod tests;
