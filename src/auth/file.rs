//! The credentials file (`credentials` setting, `SUIVI_CREDENTIALS`): one TOML table per
//! credential with its id, its scopes and their limits, and only a hash of its token. `suivi
//! credentials add|list|revoke` write it; `suivi serve` reads it, and reads it again when it
//! changes. Tokens are 256 random bits, so a fast hash (BLAKE3) is as safe as a slow one here:
//! there is nothing to guess a dictionary word from.
//!
//! ```toml
//! [[credential]]
//! id = "gendform3"
//! hash = "blake3:9f2c…"
//! created = "2026-11-30T19:00:00Z"
//! scopes = ["events:write"]
//! sources = ["gendform3"]
//! campaigns = ["gendarmerie"]
//! ```

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::event::{TOTALS_CAMPAIGN, campaign_id, source_name};

/// What every token starts with, so that secret scanners and people recognise one.
pub const TOKEN_PREFIX: &str = "suivi_";
/// The prefix of a stored hash, naming its algorithm.
const HASH_PREFIX: &str = "blake3:";
/// The longest credential id: ids are metric labels and log fields.
const MAX_ID_BYTES: usize = 64;

/// A scope, as the credentials file and the contract name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Send events, of its `sources` only, and of its `campaigns` only when it names some.
    #[serde(rename = "events:write")]
    EventsWrite,
    /// Read the live figures of its `campaigns` (all when it names none), and the programme
    /// totals when `totals` is set.
    #[serde(rename = "figures:read")]
    FiguresRead,
    /// Read the reports of its `campaigns` (all when it names none), with the programme's figures
    /// when `totals` is set.
    #[serde(rename = "reports:read")]
    ReportsRead,
    /// Everything.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// The scope's name in the contract.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EventsWrite => "events:write",
            Scope::FiguresRead => "figures:read",
            Scope::ReportsRead => "reports:read",
            Scope::Admin => "admin",
        }
    }
}

/// One credential as the file holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredCredential {
    pub id: String,
    /// `blake3:` and the hex digest of the token.
    pub hash: String,
    pub created: DateTime<Utc>,
    pub scopes: BTreeSet<Scope>,
    /// The sources `events:write` may send events of.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub sources: BTreeSet<String>,
    /// The campaigns every scope is limited to; none means every campaign.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub campaigns: BTreeSet<String>,
    /// Whether the programme totals (`*`) may be read.
    #[serde(default)]
    pub totals: bool,
    /// Events per second allowed (a token bucket); the `credential_events_per_second` setting
    /// when absent, unlimited when 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<u32>,
    /// New unregistered campaigns its events may open per day; the
    /// `credential_new_campaigns_per_day` setting when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_campaigns_per_day: Option<u32>,
    /// When it was revoked: kept for the record, never accepted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<DateTime<Utc>>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsFile {
    #[serde(default, rename = "credential")]
    pub credentials: Vec<StoredCredential>,
}

/// A token's hash as stored: `blake3:` and 64 hex digits.
pub fn hash_token(token: &str) -> String {
    format!("{HASH_PREFIX}{}", blake3::hash(token.as_bytes()).to_hex())
}

/// Reads a stored hash back.
pub fn parse_hash(text: &str) -> Option<blake3::Hash> {
    blake3::Hash::from_hex(text.strip_prefix(HASH_PREFIX)?).ok()
}

/// A new token: the prefix and 256 random bits in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{TOKEN_PREFIX}{hex}")
}

impl CredentialsFile {
    /// Reads and checks the file; a missing file is an empty one only when `missing_ok`.
    pub fn read(path: &Path, missing_ok: bool) -> anyhow::Result<CredentialsFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if missing_ok && error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CredentialsFile::default());
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("cannot read the credentials file {}", path.display())
                });
            }
        };
        CredentialsFile::parse(&text)
            .with_context(|| format!("invalid credentials file {}", path.display()))
    }

    /// Parses and checks the text of a credentials file.
    pub fn parse(text: &str) -> anyhow::Result<CredentialsFile> {
        let file: CredentialsFile = toml::from_str(text)?;
        file.check()?;
        Ok(file)
    }

    /// Checks every credential: ids unique and short, hashes well formed, scopes with what
    /// they need, names as events name them.
    pub fn check(&self) -> anyhow::Result<()> {
        let mut ids = BTreeSet::new();
        for credential in &self.credentials {
            let id = &credential.id;
            check_id(id)?;
            if !ids.insert(id.as_str()) {
                bail!("credential {id:?} appears twice");
            }
            if parse_hash(&credential.hash).is_none() {
                bail!("credential {id:?}: hash must be \"blake3:\" and 64 hex digits");
            }
            if credential.scopes.is_empty() {
                bail!("credential {id:?} has no scope");
            }
            if credential.scopes.contains(&Scope::EventsWrite) && credential.sources.is_empty() {
                bail!("credential {id:?}: events:write needs the sources it may send");
            }
            for source in &credential.sources {
                if source_name(source) != *source || source.is_empty() {
                    bail!(
                        "credential {id:?}: source {source:?} must be written as events name it ({:?})",
                        source_name(source)
                    );
                }
            }
            for campaign in &credential.campaigns {
                if campaign_id(campaign) != *campaign || campaign == TOTALS_CAMPAIGN {
                    bail!(
                        "credential {id:?}: campaign {campaign:?} must be written as events name it ({:?})",
                        campaign_id(campaign)
                    );
                }
            }
        }
        Ok(())
    }

    /// Writes the file whole, readable by its owner only, replacing the old one at once (a
    /// reader sees the old file or the new one, never half of one).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        self.check()?;
        let mut text = String::from(
            "# suivi credentials: managed with `suivi credentials add|list|revoke`.\n\
             # Only hashes of the tokens are kept; a lost token is revoked and a new one added.\n\n",
        );
        text.push_str(&toml::to_string_pretty(self).context("cannot encode the credentials")?);
        write_private(path, &text)
    }

    /// The credential named `id`.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut StoredCredential> {
        self.credentials
            .iter_mut()
            .find(|credential| credential.id == id)
    }
}

/// Writes `text` to `path` whole, readable by its owner only, replacing the old file at once (a
/// reader sees the old file or the new one, never half of one).
pub(super) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let directory = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;
    let mut temporary = tempfile_in(directory)?;
    temporary
        .file
        .write_all(text.as_bytes())
        .and_then(|()| temporary.file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.path.display()))?;
    std::fs::rename(&temporary.path, path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    temporary.renamed = true;
    Ok(())
}

/// Checks a credential id: 1 to 64 bytes of letters, digits, `-`, `_` and `.`.
pub fn check_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty()
        || id.len() > MAX_ID_BYTES
        || !id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
    {
        bail!("credential id {id:?} must be 1 to {MAX_ID_BYTES} letters, digits, '-', '_' or '.'");
    }
    if id == super::ANONYMOUS {
        bail!("credential id {id:?} is reserved for callers without a credential");
    }
    Ok(())
}

/// A file being written beside its final place; removed unless renamed into it.
struct Temporary {
    file: std::fs::File,
    path: std::path::PathBuf,
    renamed: bool,
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn tempfile_in(directory: &Path) -> anyhow::Result<Temporary> {
    let path = directory.join(format!(".suivi-credentials-{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok(Temporary {
        file,
        path,
        renamed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(id: &str, scopes: &[Scope]) -> StoredCredential {
        StoredCredential {
            id: id.to_owned(),
            hash: hash_token("suivi_x"),
            created: Utc::now(),
            scopes: scopes.iter().copied().collect(),
            sources: BTreeSet::new(),
            campaigns: BTreeSet::new(),
            totals: false,
            events_per_second: None,
            new_campaigns_per_day: None,
            revoked: None,
        }
    }

    #[test]
    fn a_written_file_reads_back_the_same_and_holds_no_token() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let path = directory.path().join("credentials.toml");
        let token = new_token();
        let mut lms = credential("gendform3", &[Scope::EventsWrite]);
        lms.hash = hash_token(&token);
        lms.sources.insert("gendform3".to_owned());
        lms.campaigns.insert("gendarmerie".to_owned());
        let file = CredentialsFile {
            credentials: vec![lms, credential("ops", &[Scope::FiguresRead])],
        };
        file.write(&path).expect("the file is written");
        let text = std::fs::read_to_string(&path).expect("the file reads");
        assert!(!text.contains(&token[TOKEN_PREFIX.len()..]), "{text}");
        assert!(text.contains("events:write"), "{text}");
        assert_eq!(
            CredentialsFile::read(&path, false).expect("it parses"),
            file
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn tokens_are_random_and_their_hashes_match_only_them() {
        let (one, two) = (new_token(), new_token());
        assert_ne!(one, two);
        assert_eq!(one.len(), TOKEN_PREFIX.len() + 64);
        let hash = parse_hash(&hash_token(&one)).expect("a stored hash parses");
        assert_eq!(hash, blake3::hash(one.as_bytes()));
        assert_ne!(hash, blake3::hash(two.as_bytes()));
        assert!(parse_hash("sha256:00").is_none());
    }

    #[test]
    fn a_wrong_file_is_refused_with_the_reason() {
        let cases = [
            ("[[credential]]\nid = \"a b\"", "missing field"),
            (
                "[[credential]]\nid = \"a b\"\nhash = \"blake3:00\"\ncreated = \"2026-01-01T00:00:00Z\"\nscopes = [\"admin\"]",
                "letters, digits",
            ),
            (
                "[[credential]]\nid = \"lms\"\nhash = \"blake3:00\"\ncreated = \"2026-01-01T00:00:00Z\"\nscopes = [\"admin\"]",
                "64 hex digits",
            ),
            (
                "[[credential]]\nid = \"lms\"\nhash = \"x\"\ncreated = \"2026-01-01T00:00:00Z\"\nscopes = [\"events:read\"]",
                "unknown variant",
            ),
        ];
        for (text, expected) in cases {
            let error = format!("{:#}", CredentialsFile::parse(text).expect_err(text));
            assert!(error.contains(expected), "{text}: {error}");
        }
        let mut writer = credential("lms", &[Scope::EventsWrite]);
        let file = CredentialsFile {
            credentials: vec![writer.clone()],
        };
        assert!(format!("{:#}", file.check().expect_err("no sources")).contains("sources"));
        writer.sources.insert("GendForm3".to_owned());
        let file = CredentialsFile {
            credentials: vec![writer.clone(), credential("lms", &[Scope::Admin])],
        };
        let error = format!("{:#}", file.check().expect_err("a bad source"));
        assert!(error.contains("\"gendform3\""), "{error}");
    }
}
