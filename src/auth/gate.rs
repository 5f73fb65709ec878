//! The gate: the credentials in force (a `Table` swapped whole by `ArcSwap` when the file is read
//! again), finding a request's credential by its token, the `/metrics` token, and the reload on
//! change and SIGHUP.

use std::borrow::Cow;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use base64::Engine;
use tokio_util::sync::CancellationToken;

use super::file::{self, CredentialsFile, StoredCredential};
use super::link::{self, LINK_PREFIX, LinkKey, LinkRefused};
use super::quota::{Limits, Quota};
use super::{ANONYMOUS, Caller, Campaigns, Entry, Unauthenticated};
use crate::config::Valid;
use crate::telemetry;

/// Checks what settings say of credentials before anything starts: the credentials file, when
/// set, must read and parse (`suivi serve` exits 2 otherwise, as for any invalid setting).
pub fn check_settings(settings: Valid) -> anyhow::Result<Valid> {
    if let Some(path) = &settings.credentials {
        CredentialsFile::read(path, false)?;
        LinkKey::read(&link::key_path(path))?;
    }
    Ok(settings)
}

/// How often the credentials file is looked at for a change.
const RELOAD_POLL: Duration = Duration::from_millis(250);

/// The quotas a credential gets when its entry does not set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDefaults {
    /// Events per second; 0 for no limit.
    pub events_per_second: u32,
    pub new_campaigns_per_day: u32,
    /// The largest batch: a bucket holds at least that many events.
    pub max_batch_events: usize,
}

/// The credentials in force, swapped whole on reload.
#[derive(Debug)]
struct Table {
    entries: Vec<Arc<Entry>>,
}

/// Lets requests in by their bearer token.
#[derive(Debug)]
pub struct Gate {
    /// `None`: open (no credentials file).
    source: Option<Source>,
    table: ArcSwap<Table>,
    metrics_token: Option<blake3::Hash>,
    /// The key signed links are checked with; none until one is made.
    link_key: ArcSwapOption<LinkKey>,
}

/// Where the credentials come from.
#[derive(Debug)]
struct Source {
    path: PathBuf,
    defaults: QuotaDefaults,
    /// The link key's file, beside the credentials file.
    link_key_path: PathBuf,
    /// The modification time and length of the file and of the link key when last read.
    seen: parking_lot::Mutex<[Option<(SystemTime, u64)>; 2]>,
}

impl Gate {
    /// A gate that lets everyone in as `anonymous` (no credentials file); `/metrics` still needs
    /// `metrics_token` when one is set.
    pub fn open(metrics_token: Option<&str>) -> Gate {
        telemetry::register_credential(ANONYMOUS);
        Gate {
            source: None,
            table: ArcSwap::from_pointee(Table {
                entries: Vec::new(),
            }),
            metrics_token: metrics_token.map(|token| blake3::hash(token.as_bytes())),
            link_key: ArcSwapOption::empty(),
        }
    }

    /// A gate holding the credentials of the file at `path`, which must exist and be valid.
    pub fn load(
        path: &Path,
        defaults: QuotaDefaults,
        metrics_token: Option<&str>,
    ) -> anyhow::Result<Gate> {
        let link_key_path = link::key_path(path);
        let source = Source {
            path: path.to_owned(),
            seen: parking_lot::Mutex::new([stamp(path), stamp(&link_key_path)]),
            link_key_path,
            defaults,
        };
        let file = CredentialsFile::read(path, false)?;
        let link_key = LinkKey::read(&source.link_key_path)?;
        let table = build(&file, defaults, None);
        table.register();
        let gate = Gate {
            source: Some(source),
            table: ArcSwap::from_pointee(table),
            metrics_token: metrics_token.map(|token| blake3::hash(token.as_bytes())),
            link_key: ArcSwapOption::from(link_key.map(Arc::new)),
        };
        telemetry::record_credentials(gate.table.load().active());
        Ok(gate)
    }

    /// Whether every request is let in as `anonymous`.
    pub fn is_open(&self) -> bool {
        self.source.is_none()
    }

    /// The caller presenting `authorization` (the header's value, if any).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, Unauthenticated> {
        if self.source.is_none() {
            return Ok(Caller::anonymous());
        }
        let result = self.find(authorization);
        if let Err(failure) = result {
            telemetry::record_auth_failure(failure.cause());
        }
        result
    }

    /// The caller of a signed link's `token` (a page's `key` parameter). With an open gate,
    /// `anonymous`, as for any request.
    pub fn authenticate_link(&self, token: &str) -> Result<Caller, Unauthenticated> {
        if self.source.is_none() {
            return Ok(Caller::anonymous());
        }
        let result = self.link(token.as_bytes());
        if let Err(failure) = result {
            telemetry::record_auth_failure(failure.cause());
        }
        result
    }

    fn link(&self, token: &[u8]) -> Result<Caller, Unauthenticated> {
        let token = std::str::from_utf8(token).map_err(|_| Unauthenticated::LinkInvalid)?;
        let key = self.link_key.load();
        let key = key.as_deref().ok_or(Unauthenticated::LinkInvalid)?;
        match key.verify(token, chrono::Utc::now()) {
            Ok(link) => Ok(Caller::of_link(link, key.fingerprint())),
            Err(LinkRefused::Invalid) => Err(Unauthenticated::LinkInvalid),
            Err(LinkRefused::Expired { expired }) => Err(Unauthenticated::LinkExpired { expired }),
        }
    }

    fn find(&self, authorization: Option<&[u8]>) -> Result<Caller, Unauthenticated> {
        let token = bearer(authorization)?;
        if token.starts_with(LINK_PREFIX.as_bytes()) {
            return self.link(&token);
        }
        let hash = blake3::hash(&token);
        let table = self.table.load();
        // Every hash is compared, each in constant time: how long this takes says nothing of
        // which credential, if any, was close.
        let mut found = None;
        for entry in &table.entries {
            if entry.hash == hash {
                found = Some(entry);
            }
        }
        match found {
            None => Err(Unauthenticated::Unknown),
            Some(entry) if entry.revoked => Err(Unauthenticated::Revoked),
            Some(entry) => Ok(Caller {
                entry: entry.clone(),
            }),
        }
    }

    /// The credential `caller` was let in with, as it stands now: a long-lived stream asks
    /// before each message, so that a revoked credential ends it and a changed one applies.
    pub fn current(&self, caller: &Caller) -> Result<Caller, Unauthenticated> {
        if self.source.is_none() {
            return Ok(caller.clone());
        }
        if let Some(grant) = caller.entry.link {
            // A link stands while it has not expired and its key is still the one in force.
            let key = self.link_key.load();
            let result = match key.as_deref() {
                Some(key) if key.fingerprint() == grant.key => {
                    if chrono::Utc::now() < grant.expires {
                        Ok(caller.clone())
                    } else {
                        Err(Unauthenticated::LinkExpired {
                            expired: grant.expires,
                        })
                    }
                }
                _ => Err(Unauthenticated::LinkInvalid),
            };
            if let Err(failure) = result {
                telemetry::record_auth_failure(failure.cause());
            }
            return result;
        }
        let table = self.table.load();
        let result = match table
            .entries
            .iter()
            .find(|entry| entry.id == caller.entry.id && entry.hash == caller.entry.hash)
        {
            None => Err(Unauthenticated::Unknown),
            Some(entry) if entry.revoked => Err(Unauthenticated::Revoked),
            Some(entry) => Ok(Caller {
                entry: entry.clone(),
            }),
        };
        if let Err(failure) = result {
            telemetry::record_auth_failure(failure.cause());
        }
        result
    }

    /// Whether `authorization` may read `/metrics`: always when no `metrics_token` is set.
    pub fn allows_metrics(&self, authorization: Option<&[u8]>) -> Result<(), Unauthenticated> {
        let Some(expected) = &self.metrics_token else {
            return Ok(());
        };
        let result = bearer(authorization).and_then(|token| {
            if blake3::hash(&token) == *expected {
                Ok(())
            } else {
                Err(Unauthenticated::Unknown)
            }
        });
        if let Err(failure) = result {
            telemetry::record_auth_failure(failure.cause());
        }
        result
    }

    /// Reads the credentials file again if it changed since last read (or `force`). A file that
    /// does not parse leaves the credentials in force as they were and is an error.
    pub fn reload(&self, force: bool) -> anyhow::Result<bool> {
        let Some(source) = &self.source else {
            return Ok(false);
        };
        let now = [stamp(&source.path), stamp(&source.link_key_path)];
        {
            let mut seen = source.seen.lock();
            if !force && *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        match LinkKey::read(&source.link_key_path) {
            Ok(key) => self.link_key.store(key.map(Arc::new)),
            Err(error) => {
                // The key in force stays: links keep working rather than all failing at once.
                tracing::error!(
                    error = %telemetry::chain(&*error),
                    "link key not reloaded: the key in force stays as it was"
                );
            }
        }
        let file = match CredentialsFile::read(&source.path, false) {
            Ok(file) => file,
            Err(error) => {
                telemetry::record_credentials_reload(false);
                return Err(error);
            }
        };
        let old = self.table.load();
        let table = build(&file, source.defaults, Some(&old));
        table.register();
        telemetry::record_credentials(table.active());
        telemetry::record_credentials_reload(true);
        self.table.store(Arc::new(table));
        Ok(true)
    }

    /// Reloads the file whenever it changes or SIGHUP arrives, until `stop`.
    pub fn watch(self: Arc<Gate>, stop: CancellationToken) -> anyhow::Result<()> {
        let Some(source) = &self.source else {
            return Ok(());
        };
        let path = source.path.clone();
        #[cfg(unix)]
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            let mut poll = tokio::time::interval(RELOAD_POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let force = tokio::select! {
                    () = stop.cancelled() => return,
                    _ = poll.tick() => false,
                    _ = hangup.recv() => true,
                };
                #[cfg(not(unix))]
                let force = tokio::select! {
                    () = stop.cancelled() => return,
                    _ = poll.tick() => false,
                };
                match self.reload(force) {
                    Ok(true) => tracing::info!(
                        file = %path.display(),
                        credentials = self.table.load().active(),
                        "credentials reloaded"
                    ),
                    Ok(false) => {}
                    Err(error) => tracing::error!(
                        error = %telemetry::chain(&*error),
                        "credentials file not reloaded: the credentials in force stay as they were"
                    ),
                }
            }
        });
        Ok(())
    }
}

impl Table {
    fn active(&self) -> usize {
        self.entries.iter().filter(|entry| !entry.revoked).count()
    }

    /// Registers the metric series of every credential in force.
    fn register(&self) {
        for entry in self.entries.iter().filter(|entry| !entry.revoked) {
            telemetry::register_credential(&entry.id);
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header value, or of `Basic <base64 of
/// user:token>` (the username ignored): LMSs such as Moodle's logstore_xapi send an LRS key and
/// secret as HTTP Basic credentials, so the secret is the token.
fn bearer(authorization: Option<&[u8]>) -> Result<Cow<'_, [u8]>, Unauthenticated> {
    let value = authorization.ok_or(Unauthenticated::Missing)?;
    let (scheme, token) = value
        .iter()
        .position(|byte| *byte == b' ')
        .map(|space| (&value[..space], value[space + 1..].trim_ascii()))
        .ok_or(Unauthenticated::Malformed)?;
    if token.is_empty() {
        return Err(Unauthenticated::Malformed);
    }
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Ok(Cow::Borrowed(token));
    }
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Err(Unauthenticated::Malformed);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| Unauthenticated::Malformed)?;
    let colon = decoded
        .iter()
        .position(|byte| *byte == b':')
        .ok_or(Unauthenticated::Malformed)?;
    let password = decoded[colon + 1..].trim_ascii();
    if password.is_empty() {
        return Err(Unauthenticated::Malformed);
    }
    Ok(Cow::Owned(password.to_vec()))
}

/// The modification time and length of a file, to notice it changed.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// The table of a file's credentials. A credential whose limits did not change keeps its quota
/// state from `old`, so that a reload neither refills a bucket nor forgets the day's campaigns.
fn build(file: &CredentialsFile, defaults: QuotaDefaults, old: Option<&Table>) -> Table {
    let old_quotas: HashMap<&str, &Arc<Quota>> = old
        .map(|table| {
            table
                .entries
                .iter()
                .map(|entry| (&*entry.id, &entry.quota))
                .collect()
        })
        .unwrap_or_default();
    let entries = file
        .credentials
        .iter()
        .filter_map(|stored| {
            let hash = file::parse_hash(&stored.hash)?;
            let limits = limits(stored, defaults);
            let quota = match old_quotas.get(stored.id.as_str()) {
                Some(quota) if quota.limits() == limits => Arc::clone(quota),
                _ => Arc::new(Quota::new(limits)),
            };
            Some(Arc::new(Entry {
                id: Arc::from(stored.id.as_str()),
                hash,
                revoked: stored.revoked.is_some(),
                scopes: stored.scopes.clone(),
                sources: stored.sources.clone(),
                campaigns: if stored.campaigns.is_empty() {
                    Campaigns::All
                } else {
                    Campaigns::Only(stored.campaigns.clone())
                },
                totals: stored.totals,
                quota,
                link: None,
            }))
        })
        .collect();
    Table { entries }
}

/// A credential's limits: its own, else the defaults; a bucket holds at least a whole batch.
fn limits(stored: &StoredCredential, defaults: QuotaDefaults) -> Limits {
    let per_second = stored
        .events_per_second
        .unwrap_or(defaults.events_per_second);
    let batch = u32::try_from(defaults.max_batch_events).unwrap_or(u32::MAX);
    Limits {
        events_per_second: NonZeroU32::new(per_second),
        burst: NonZeroU32::new(per_second.max(batch)).unwrap_or(NonZeroU32::MIN),
        new_campaigns_per_day: stored
            .new_campaigns_per_day
            .unwrap_or(defaults.new_campaigns_per_day),
    }
}
