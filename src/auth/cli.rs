//! `suivi credentials add|list|revoke|link|rotate-link-key`: manages the credentials file and
//! the link key beside it. `add` prints the new token once — only its hash is kept — and a
//! running suivi picks the change up within a second. `link` prints a signed read-only link to a
//! partner's page (`auth::link`); `rotate-link-key` withdraws every link made so far.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Args, Subcommand};

use crate::auth::file::{self, CredentialsFile, Scope, StoredCredential};
use crate::auth::link::{self, LinkKey};
use crate::event::{campaign_id, source_name};

/// `suivi credentials`.
#[derive(Debug, Args)]
pub struct CredentialsArgs {
    /// The credentials file; `suivi serve` must be given the same (credentials setting).
    #[arg(long, env = "SUIVI_CREDENTIALS", value_name = "FILE", global = true)]
    pub file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CredentialsCommand,
}

/// What to do with the credentials file.
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Add a credential and print its token, once: give it to its holder and keep no copy.
    Add(AddArgs),
    /// List the credentials: ids, scopes, limits, created and revoked (never a token).
    List,
    /// Revoke a credential: its token stops working within a second on a running suivi.
    Revoke {
        /// The credential's id.
        id: String,
    },
    /// Print a read-only link to a partner's page, signed and expiring, for its coordinator: it
    /// grants what `add --read CAMPAIGN` grants (that campaign's figures and reports), with no
    /// token to handle. Makes the link key (beside the credentials file) when there is none.
    Link(LinkArgs),
    /// Replace the link key: every link made so far stops working within a second.
    RotateLinkKey,
}

/// `suivi credentials link`.
#[derive(Debug, Args)]
pub struct LinkArgs {
    /// The partner's campaign.
    #[arg(long, value_name = "CAMPAIGN")]
    pub campaign: String,
    /// Days the link works for.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3660))]
    pub days: u32,
    /// The address coordinators reach suivi's HTTP listener at.
    #[arg(
        long,
        env = "SUIVI_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub base_url: url::Url,
}

/// `suivi credentials add`: the id, then exactly one role.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("role").required(true).args(["write_source", "read", "operator", "admin"])))]
pub struct AddArgs {
    /// The credential's id: letters, digits, '-', '_' or '.' (shown in logs and metrics).
    pub id: String,
    /// A partner's LMS or platform: send events of this source (repeat for several).
    #[arg(long, value_name = "SOURCE")]
    pub write_source: Vec<String>,
    /// With --write-source: only events of this campaign (repeat for several; default any).
    #[arg(long, value_name = "CAMPAIGN", requires = "write_source")]
    pub campaign: Vec<String>,
    /// A partner: read the figures and reports of this campaign (repeat for several).
    #[arg(long, value_name = "CAMPAIGN", num_args = 1..)]
    pub read: Vec<String>,
    /// With --read: also the programme totals (and the programme's figures in reports).
    #[arg(long, requires = "read")]
    pub with_totals: bool,
    /// An operator or Grafana: read every campaign's figures and reports, and the totals.
    #[arg(long)]
    pub operator: bool,
    /// Everything, including sending any source's events.
    #[arg(long)]
    pub admin: bool,
    /// Events per second this credential may send; 0 for no limit (default: the
    /// credential_events_per_second setting of suivi serve).
    #[arg(long, value_name = "N")]
    pub events_per_second: Option<u32>,
    /// New unregistered campaigns its events may open per day (default: the
    /// credential_new_campaigns_per_day setting of suivi serve).
    #[arg(long, value_name = "N")]
    pub new_campaigns_per_day: Option<u32>,
}

/// Runs `suivi credentials`, writing what it shows to `out`.
pub fn run(args: CredentialsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let path = args.file.context(
        "name the credentials file with --file or SUIVI_CREDENTIALS (the file suivi serve reads)",
    )?;
    match args.command {
        CredentialsCommand::Add(add) => {
            let mut credentials = CredentialsFile::read(&path, true)?;
            if credentials
                .credentials
                .iter()
                .any(|known| known.id == add.id)
            {
                bail!(
                    "credential {:?} already exists in {}: revoke it and add another id",
                    add.id,
                    path.display()
                );
            }
            let token = file::new_token();
            let credential = new_credential(add, &token)?;
            let summary = describe(&credential);
            credentials.credentials.push(credential);
            credentials.write(&path)?;
            writeln!(out, "added {summary}")?;
            writeln!(
                out,
                "token (shown once; send it as Authorization: Bearer <token>):"
            )?;
            writeln!(out, "{token}")?;
        }
        CredentialsCommand::List => {
            let credentials = CredentialsFile::read(&path, true)?;
            if credentials.credentials.is_empty() {
                writeln!(out, "no credentials in {}", path.display())?;
            }
            for credential in &credentials.credentials {
                writeln!(out, "{}", describe(credential))?;
            }
        }
        CredentialsCommand::Revoke { id } => {
            let mut credentials = CredentialsFile::read(&path, false)?;
            let credential = credentials
                .get_mut(&id)
                .with_context(|| format!("no credential {id:?} in {}", path.display()))?;
            if credential.revoked.is_none() {
                credential.revoked = Some(Utc::now());
            }
            credentials.write(&path)?;
            writeln!(out, "revoked {id}")?;
        }
        CredentialsCommand::Link(link) => {
            let key = LinkKey::read_or_create(&link::key_path(&path))?;
            let expires = Utc::now() + chrono::Days::new(u64::from(link.days));
            let token = key.sign(&link.campaign, expires)?;
            let campaign = campaign_id(&link.campaign);
            let mut url = link.base_url;
            url.path_segments_mut()
                .map_err(|()| anyhow::anyhow!("--base-url must be an http(s) address"))?
                .pop_if_empty()
                .extend(["partners", campaign.as_str()]);
            url.query_pairs_mut()
                .clear()
                .append_pair(link::LINK_PARAMETER, &token);
            writeln!(
                out,
                "read-only link to {campaign}'s page, until {} (withdrawn only by `suivi credentials rotate-link-key`, which withdraws every link):",
                expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )?;
            writeln!(out, "{url}")?;
        }
        CredentialsCommand::RotateLinkKey => {
            LinkKey::generate().write(&link::key_path(&path))?;
            writeln!(
                out,
                "link key replaced: every link made before stops working"
            )?;
        }
    }
    Ok(())
}

/// The credential `add` describes, holding the hash of `token`.
fn new_credential(add: AddArgs, token: &str) -> anyhow::Result<StoredCredential> {
    file::check_id(&add.id)?;
    let names = |values: &[String], name: fn(&str) -> String| -> BTreeSet<String> {
        values.iter().map(|value| name(value)).collect()
    };
    let (scopes, sources, campaigns, totals): (&[Scope], _, _, _) = if add.admin {
        (&[Scope::Admin], BTreeSet::new(), BTreeSet::new(), true)
    } else if add.operator {
        (
            &[Scope::FiguresRead, Scope::ReportsRead],
            BTreeSet::new(),
            BTreeSet::new(),
            true,
        )
    } else if !add.write_source.is_empty() {
        (
            &[Scope::EventsWrite],
            names(&add.write_source, source_name),
            names(&add.campaign, campaign_id),
            false,
        )
    } else {
        (
            &[Scope::FiguresRead, Scope::ReportsRead],
            BTreeSet::new(),
            names(&add.read, campaign_id),
            add.with_totals,
        )
    };
    Ok(StoredCredential {
        id: add.id,
        hash: file::hash_token(token),
        created: Utc::now(),
        scopes: scopes.iter().copied().collect(),
        sources,
        campaigns,
        totals,
        events_per_second: add.events_per_second,
        new_campaigns_per_day: add.new_campaigns_per_day,
        revoked: None,
    })
}

/// One line about a credential, for people.
fn describe(credential: &StoredCredential) -> String {
    let join = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
    let scopes: Vec<&str> = credential
        .scopes
        .iter()
        .map(|scope| scope.as_str())
        .collect();
    let mut line = format!("{} scopes={}", credential.id, scopes.join(","));
    if !credential.sources.is_empty() {
        line.push_str(&format!(" sources={}", join(&credential.sources)));
    }
    if credential.campaigns.is_empty() {
        line.push_str(" campaigns=all");
    } else {
        line.push_str(&format!(" campaigns={}", join(&credential.campaigns)));
    }
    if credential.totals {
        line.push_str(" totals");
    }
    if let Some(rate) = credential.events_per_second {
        line.push_str(&format!(" events_per_second={rate}"));
    }
    if let Some(campaigns) = credential.new_campaigns_per_day {
        line.push_str(&format!(" new_campaigns_per_day={campaigns}"));
    }
    line.push_str(&format!(" created={}", credential.created.to_rfc3339()));
    if let Some(revoked) = credential.revoked {
        line.push_str(&format!(" REVOKED={}", revoked.to_rfc3339()));
    }
    line
}
