//! The pseudonymisation key: the configured one, or one generated on first start and kept in
//! `<data_dir>/pseudonym.key` (readable by its owner only), so that a learner keeps the same
//! pseudonym across restarts. The key is never logged.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use rand::RngCore;

use crate::config::parse_key;

const KEY_FILE: &str = "pseudonym.key";

/// The key to use: `configured`, else the one kept in `data_dir`, else a new one kept there.
pub fn load_or_create(configured: Option<[u8; 32]>, data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    if let Some(key) = configured {
        return Ok(key);
    }
    let path = data_dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            parse_key(&text).with_context(|| format!("invalid key file {}", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            let hex: String = key.iter().map(|byte| format!("{byte:02x}")).collect();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(&path)
                .with_context(|| format!("cannot create key file {}", path.display()))?;
            file.write_all(hex.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write key file {}", path.display()))?;
            tracing::info!(file = %path.display(), "generated a new pseudonymisation key");
            Ok(key)
        }
        Err(error) => {
            Err(error).with_context(|| format!("cannot read key file {}", path.display()))
        }
    }
}
