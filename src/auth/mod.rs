//! Who may do what. A client presents a bearer token; the [`Gate`] finds its credential (hashes
//! compared in constant time, over every credential) and answers a [`Caller`], whose grants every
//! surface checks: ingest per event (`source_not_allowed`, `campaign_not_allowed`), queries,
//! watch streams and reports per campaign — a campaign out of a caller's reach answers exactly
//! as one that does not exist. Without a credentials file the gate is open: every caller is
//! `anonymous`, with every grant and no quota (suivi refuses to start that way on a non-loopback
//! address unless `allow_anonymous` is set). The file is read again when it changes and on
//! SIGHUP; a request holds the credential it was let in with until it ends, and a stream (gRPC
//! `IngestStream`, `WatchCampaigns`) asks the gate again before each message ([`Gate::current`]),
//! so that revoking a credential ends its open streams too.
//!
//! `gate` holds the credentials in force and reloads them, `file` is the credentials file,
//! `quota` the per-credential quotas, `cli` the `suivi credentials` command, `http` and `grpc`
//! the two edges' checks.

pub mod cli;
pub mod file;
mod gate;
pub mod grpc;
pub mod http;
pub mod link;
pub mod quota;

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use crate::event::{RejectReason, TOTALS_CAMPAIGN, source_name};
use crate::telemetry;
use file::Scope;
use quota::{Limits, Quota, RateLimited};

pub use gate::{Gate, QuotaDefaults, check_settings};

/// The id of every caller when no credentials file is configured.
pub const ANONYMOUS: &str = "anonymous";

/// Which campaigns a grant reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Campaigns {
    All,
    Only(BTreeSet<String>),
}

impl Campaigns {
    fn contains(&self, campaign: &str) -> bool {
        match self {
            Campaigns::All => true,
            Campaigns::Only(campaigns) => campaigns.contains(campaign),
        }
    }
}

/// What a caller may read: figures (`figures:read`) or reports (`reports:read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Figures,
    Reports,
}

/// A caller let in: its credential's id, grants and quota.
#[derive(Debug, Clone)]
pub struct Caller {
    entry: Arc<Entry>,
}

/// One credential, as the gate holds it.
#[derive(Debug)]
struct Entry {
    id: Arc<str>,
    hash: blake3::Hash,
    revoked: bool,
    scopes: BTreeSet<Scope>,
    sources: BTreeSet<String>,
    campaigns: Campaigns,
    totals: bool,
    quota: Arc<Quota>,
    /// For a signed link: when it expires and the key it was signed with.
    link: Option<LinkGrant>,
}

/// What a caller let in by a signed link holds on to, to be checked again.
#[derive(Debug, Clone, Copy)]
struct LinkGrant {
    expires: DateTime<Utc>,
    key: blake3::Hash,
}

/// Why a request was not let in; `cause()` is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    #[error("this request needs a bearer token: send the header Authorization: Bearer <token>")]
    Missing,
    #[error(
        "the Authorization header must be \"Bearer <token>\" (or HTTP Basic with the token as password)"
    )]
    Malformed,
    #[error("the bearer token is not a valid credential")]
    Unknown,
    #[error("the bearer token's credential was revoked")]
    Revoked,
    #[error("{}", link::LinkRefused::Invalid)]
    LinkInvalid,
    #[error("{}", link::LinkRefused::Expired { expired: *expired })]
    LinkExpired { expired: DateTime<Utc> },
}

impl Unauthenticated {
    pub fn cause(self) -> &'static str {
        match self {
            Unauthenticated::Missing => "missing_token",
            Unauthenticated::Malformed => "malformed_token",
            Unauthenticated::Unknown => "unknown_token",
            Unauthenticated::Revoked => "revoked_token",
            Unauthenticated::LinkInvalid => "invalid_link",
            Unauthenticated::LinkExpired { .. } => "expired_link",
        }
    }
}

/// A caller asking for what its credential does not grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credential {credential:?} does not grant {scope}")]
pub struct PermissionDenied {
    pub credential: String,
    pub scope: &'static str,
}

impl Caller {
    /// The caller of an open gate: every grant, no quota.
    pub fn anonymous() -> Caller {
        Caller {
            entry: Arc::new(Entry {
                id: Arc::from(ANONYMOUS),
                hash: blake3::hash(b""),
                revoked: false,
                scopes: [Scope::Admin].into_iter().collect(),
                sources: BTreeSet::new(),
                campaigns: Campaigns::All,
                totals: true,
                quota: Arc::new(Quota::new(Limits {
                    events_per_second: None,
                    burst: NonZeroU32::MIN,
                    new_campaigns_per_day: u32::MAX,
                })),
                link: None,
            }),
        }
    }

    /// The caller of a signed link: what a partner read credential on its campaign grants
    /// (`figures:read` and `reports:read` there, no totals, no events), named
    /// `link:<campaign>`.
    fn of_link(link: link::Link, key: blake3::Hash) -> Caller {
        Caller {
            entry: Arc::new(Entry {
                id: Arc::from(format!("link:{}", link.campaign)),
                hash: blake3::hash(b""),
                revoked: false,
                scopes: [Scope::FiguresRead, Scope::ReportsRead]
                    .into_iter()
                    .collect(),
                sources: BTreeSet::new(),
                campaigns: Campaigns::Only([link.campaign].into_iter().collect()),
                totals: false,
                quota: Arc::new(Quota::new(Limits {
                    events_per_second: None,
                    burst: NonZeroU32::MIN,
                    new_campaigns_per_day: 0,
                })),
                link: Some(LinkGrant {
                    expires: link.expires,
                    key,
                }),
            }),
        }
    }

    /// The credential's id, as the journal and the metrics name it.
    pub fn id(&self) -> &Arc<str> {
        &self.entry.id
    }

    fn has(&self, scope: Scope) -> bool {
        self.entry.scopes.contains(&Scope::Admin) || self.entry.scopes.contains(&scope)
    }

    fn require(&self, scope: Scope) -> Result<(), PermissionDenied> {
        if self.has(scope) {
            return Ok(());
        }
        telemetry::record_auth_failure("permission_denied");
        Err(PermissionDenied {
            credential: self.entry.id.to_string(),
            scope: scope.as_str(),
        })
    }

    fn scope_of(read: Read) -> Scope {
        match read {
            Read::Figures => Scope::FiguresRead,
            Read::Reports => Scope::ReportsRead,
        }
    }

    /// Whether the caller may read anything of this kind at all; when it may not, every such
    /// request is refused (403) whatever it names.
    pub fn require_read(&self, read: Read) -> Result<(), PermissionDenied> {
        self.require(Caller::scope_of(read))
    }

    /// Whether the caller may send events at all.
    pub fn require_write(&self) -> Result<(), PermissionDenied> {
        self.require(Scope::EventsWrite)
    }

    /// Whether the caller may read this campaign's figures or reports (`*`: the programme
    /// totals). A campaign it may not read must be answered as one that does not exist.
    pub fn may_read(&self, read: Read, campaign: &str) -> bool {
        if self.entry.scopes.contains(&Scope::Admin) {
            return true;
        }
        if !self.entry.scopes.contains(&Caller::scope_of(read)) {
            return false;
        }
        if campaign == TOTALS_CAMPAIGN {
            self.entry.totals
        } else {
            self.entry.campaigns.contains(campaign)
        }
    }

    /// The campaigns the caller's `read` grant reaches: `None` for every campaign, an empty set
    /// without the grant.
    pub fn campaigns(&self, read: Read) -> Option<&BTreeSet<String>> {
        static NONE: BTreeSet<String> = BTreeSet::new();
        if !self.has(Caller::scope_of(read)) {
            return Some(&NONE);
        }
        match &self.entry.campaigns {
            _ if self.entry.scopes.contains(&Scope::Admin) => None,
            Campaigns::All => None,
            Campaigns::Only(campaigns) => Some(campaigns),
        }
    }

    /// Whether the caller may read the programme totals with its `read` grant.
    pub fn may_read_totals(&self, read: Read) -> bool {
        self.may_read(read, TOTALS_CAMPAIGN)
    }

    /// Checks one parsed event against the caller's write grant: its `source` (as it was sent;
    /// compared as events name it) and its `campaign`. An event that names no campaign is the
    /// sender's own to send.
    pub fn check_event(
        &self,
        source: &str,
        campaign: &str,
        names_campaign: bool,
    ) -> Result<(), RejectReason> {
        if self.entry.scopes.contains(&Scope::Admin) {
            return Ok(());
        }
        let source = source_name(source);
        if !self.entry.sources.contains(&source) {
            return Err(RejectReason::SourceNotAllowed {
                name: source,
                credential: self.entry.id.to_string(),
            });
        }
        if names_campaign && !self.entry.campaigns.contains(campaign) {
            return Err(RejectReason::CampaignNotAllowed {
                campaign: campaign.to_owned(),
                credential: self.entry.id.to_string(),
            });
        }
        Ok(())
    }

    /// The one source the caller's write grant names, when it names exactly one: the source of
    /// what it sends in a standard that names none (xAPI, Caliper).
    pub fn only_source(&self) -> Option<&str> {
        let mut sources = self.entry.sources.iter();
        match (sources.next(), sources.next()) {
            (Some(source), None) if !self.entry.scopes.contains(&Scope::Admin) => Some(source),
            _ => None,
        }
    }

    /// The one campaign the caller's grant names, when it names exactly one: the campaign of
    /// what it sends without naming one.
    pub fn only_campaign(&self) -> Option<&str> {
        match &self.entry.campaigns {
            Campaigns::Only(campaigns) if campaigns.len() == 1 => {
                campaigns.iter().next().map(String::as_str)
            }
            _ => None,
        }
    }

    /// Takes a batch of `events` from the caller's rate.
    pub fn take_events(&self, events: usize) -> Result<(), RateLimited> {
        self.entry.quota.take(events)
    }

    /// Whether the caller's new unregistered campaigns are limited at all (not for `anonymous`):
    /// when not, nothing need be looked up to know whether a campaign is new.
    pub fn limits_new_campaigns(&self) -> bool {
        self.entry.quota.limits().new_campaigns_per_day != u32::MAX
    }

    /// Whether the caller may open the new unregistered `campaign` on `day`.
    pub fn open_campaign(&self, campaign: &str, day: NaiveDate) -> Result<(), RejectReason> {
        if self.entry.quota.open_campaign(campaign, day) {
            Ok(())
        } else {
            Err(RejectReason::CampaignQuotaExceeded {
                campaign: campaign.to_owned(),
                limit: self.entry.quota.limits().new_campaigns_per_day,
            })
        }
    }
}

#[cfg(test)]
mod tests;
