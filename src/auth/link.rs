//! Signed read-only links: what a partner's coordinator is given instead of a bearer token. A
//! link names one campaign and an expiry, signed with the service's link key (BLAKE3 keyed
//! hashing), and grants exactly what a partner read credential (`suivi credentials add --read
//! CAMPAIGN`) grants: `figures:read` and `reports:read` on that campaign, without the programme
//! totals. Nothing is stored per link: a link is valid while its signature matches the key in
//! force and it has not expired, so the only way to withdraw links before they expire is to
//! replace the key (`suivi credentials rotate-link-key`), which withdraws them all.
//!
//! The key lives beside the credentials file (`<file>.link-key`, 256 random bits in hex,
//! readable by its owner only); `suivi credentials link` creates it when it is missing, and a
//! running suivi reads it again when it changes, as it does the credentials file.
//!
//! A token is `link1.<campaign, base64url>.<expiry, Unix seconds>.<signature, base64url>`; the
//! signature covers the version, the campaign (length-prefixed) and the expiry, so no part can be
//! changed or moved to another link. This module never reads the clock: callers pass `now`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;

use crate::event::{TOTALS_CAMPAIGN, campaign_id};

/// What every link token starts with (a credential's token starts with `suivi_`).
pub const LINK_PREFIX: &str = "link1.";
/// The query parameter a page's address carries a link token in.
pub const LINK_PARAMETER: &str = "key";
/// What the signature covers before the campaign: the token's version.
const SIGNED_CONTEXT: &[u8] = b"suivi read-only link v1";

/// The key links are signed with.
#[derive(Clone)]
pub struct LinkKey {
    key: [u8; 32],
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key itself never reaches a log.
        f.write_str("LinkKey(..)")
    }
}

/// What a valid link grants: one campaign, until it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub campaign: String,
    pub expires: DateTime<Utc>,
}

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkRefused {
    #[error(
        "this link is not valid: it was altered, or it was withdrawn when the link key was replaced"
    )]
    Invalid,
    #[error("this link expired on {expired}: ask the programme for a new one")]
    Expired { expired: DateTime<Utc> },
}

/// Where the link key of the credentials file at `credentials` lives: beside it.
pub fn key_path(credentials: &Path) -> PathBuf {
    let mut name = credentials
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    name.push(".link-key");
    credentials.with_file_name(name)
}

impl LinkKey {
    /// A new random key.
    pub fn generate() -> LinkKey {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        LinkKey { key }
    }

    /// Reads the key at `path`; `None` when there is no file.
    pub fn read(path: &Path) -> anyhow::Result<Option<LinkKey>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot read the link key {}", path.display()));
            }
        };
        let hash = blake3::Hash::from_hex(text.trim()).map_err(|_| {
            anyhow::anyhow!(
                "invalid link key {}: expected 64 hex digits (remove the file and make a link \
                 again to get a new key, which withdraws every link)",
                path.display()
            )
        })?;
        Ok(Some(LinkKey {
            key: *hash.as_bytes(),
        }))
    }

    /// Writes the key to `path`, readable by its owner only, replacing any key there.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = format!("{}\n", blake3::Hash::from_bytes(self.key).to_hex());
        super::file::write_private(path, &text)
    }

    /// The key at `path`, made and written first when there is none.
    pub fn read_or_create(path: &Path) -> anyhow::Result<LinkKey> {
        if let Some(key) = LinkKey::read(path)? {
            return Ok(key);
        }
        let key = LinkKey::generate();
        key.write(path)?;
        Ok(key)
    }

    /// A token granting read access to `campaign` until `expires`.
    pub fn sign(&self, campaign: &str, expires: DateTime<Utc>) -> anyhow::Result<String> {
        let campaign = campaign_id(campaign);
        if campaign.is_empty() || campaign == TOTALS_CAMPAIGN {
            bail!("a link names one campaign");
        }
        let seconds = expires.timestamp();
        let signature = self.signature(&campaign, seconds);
        Ok(format!(
            "{LINK_PREFIX}{}.{seconds}.{}",
            URL_SAFE_NO_PAD.encode(campaign.as_bytes()),
            URL_SAFE_NO_PAD.encode(signature.as_bytes())
        ))
    }

    /// The link `token` grants at `now`. The signature is checked first, so an altered expiry
    /// reads as invalid, not as expired.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Link, LinkRefused> {
        let mut parts = token
            .strip_prefix(LINK_PREFIX)
            .ok_or(LinkRefused::Invalid)?
            .split('.');
        let (Some(campaign), Some(seconds), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(LinkRefused::Invalid);
        };
        let campaign = URL_SAFE_NO_PAD
            .decode(campaign)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(LinkRefused::Invalid)?;
        let seconds: i64 = seconds.parse().map_err(|_| LinkRefused::Invalid)?;
        let signature: [u8; 32] = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(LinkRefused::Invalid)?;
        // blake3::Hash compares in constant time.
        if self.signature(&campaign, seconds) != blake3::Hash::from_bytes(signature) {
            return Err(LinkRefused::Invalid);
        }
        let expires = DateTime::from_timestamp(seconds, 0).ok_or(LinkRefused::Invalid)?;
        if now >= expires {
            return Err(LinkRefused::Expired { expired: expires });
        }
        Ok(Link { campaign, expires })
    }

    /// An id of the key that says nothing of it: links signed with another key are told apart.
    pub fn fingerprint(&self) -> blake3::Hash {
        blake3::keyed_hash(&self.key, b"suivi link key fingerprint")
    }

    fn signature(&self, campaign: &str, seconds: i64) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(SIGNED_CONTEXT);
        hasher.update(&(campaign.len() as u64).to_le_bytes());
        hasher.update(campaign.as_bytes());
        hasher.update(&seconds.to_le_bytes());
        hasher.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("an instant")
    }

    #[test]
    fn a_link_grants_its_campaign_until_it_expires() {
        let key = LinkKey::generate();
        let token = key
            .sign(" Gendarmerie", at("2026-03-01T00:00:00Z"))
            .expect("signed");
        assert!(token.starts_with(LINK_PREFIX), "{token}");
        // Safe in a URL's query as it is.
        assert!(
            token
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte)),
            "{token}"
        );
        assert_eq!(
            key.verify(&token, at("2026-02-28T23:59:59Z")),
            Ok(Link {
                campaign: "gendarmerie".to_owned(),
                expires: at("2026-03-01T00:00:00Z"),
            })
        );
        assert_eq!(
            key.verify(&token, at("2026-03-01T00:00:00Z")),
            Err(LinkRefused::Expired {
                expired: at("2026-03-01T00:00:00Z")
            })
        );
    }

    #[test]
    fn an_altered_or_foreign_link_is_invalid() {
        let key = LinkKey::generate();
        let now = at("2026-01-01T00:00:00Z");
        let token = key
            .sign("gendarmerie", at("2026-03-01T00:00:00Z"))
            .expect("signed");
        let parts: Vec<&str> = token.split('.').collect();
        let other_campaign = URL_SAFE_NO_PAD.encode("la-poste");
        let later = at("2036-03-01T00:00:00Z").timestamp().to_string();
        let altered = [
            format!("{}.{other_campaign}.{}.{}", parts[0], parts[2], parts[3]),
            format!("{}.{}.{later}.{}", parts[0], parts[1], parts[3]),
            format!("{token}x"),
            format!("{token}.more"),
            token.replace(LINK_PREFIX, "link2."),
            String::new(),
            "suivi_0123".to_owned(),
        ];
        for token in altered {
            assert_eq!(
                key.verify(&token, now),
                Err(LinkRefused::Invalid),
                "{token}"
            );
        }
        assert_eq!(
            LinkKey::generate().verify(&token, now),
            Err(LinkRefused::Invalid)
        );
        assert!(key.sign("*", now).is_err());
    }

    #[test]
    fn the_key_is_written_privately_and_read_back() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let path = key_path(&directory.path().join("credentials.toml"));
        assert!(path.ends_with("credentials.toml.link-key"));
        assert!(LinkKey::read(&path).expect("no file is no key").is_none());
        let key = LinkKey::read_or_create(&path).expect("made");
        let again = LinkKey::read_or_create(&path).expect("read back");
        assert_eq!(key.fingerprint(), again.fingerprint());
        assert_eq!(format!("{key:?}"), "LinkKey(..)");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not a key").expect("written");
        assert!(LinkKey::read(&path).is_err());
    }
}
