//! Checkpoints: the whole aggregation state at a journal position, written as one atomic file
//! so that a restart loads it and replays only the journal after it. A checkpoint file is
//! `[magic "SUIVICK1"][payload length: u64][crc32c: u32][payload]`, the payload a protobuf
//! `suivi.storage.v1.Checkpoint`; it is written to a temporary name, synced, renamed into place
//! and its directory synced, so it is either whole or absent. The newest [`KEEP`] checkpoints
//! are kept: when the newest proves corrupt, recovery falls back to the one before, whose journal
//! segments are still there.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use prost::Message;

use crate::proto::storage::Checkpoint;

/// How many checkpoints are kept.
pub const KEEP: usize = 2;

const MAGIC: &[u8; 8] = b"SUIVICK1";
const HEADER_BYTES: usize = 20;
const SUFFIX: &str = ".ckpt";
/// A checkpoint is written and synced this much at a time. The journal's fsync makes the file
/// system commit, and on ext4 (`data=ordered`) a commit first writes out every file's dirty
/// data: written whole and synced at the end, a checkpoint of hundreds of megabytes held the
/// next journal fsync for the time to write it out, half a second at a million learners.
const WRITE_PIECE_BYTES: usize = 8 << 20;

/// A checkpoint that was found unusable during recovery.
#[derive(Debug)]
pub struct Rejected {
    pub path: PathBuf,
    pub error: anyhow::Error,
}

/// Writes `checkpoint` into `directory` atomically; returns its path and size in bytes.
pub fn write(directory: &Path, checkpoint: &Checkpoint) -> anyhow::Result<(PathBuf, u64)> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("cannot create checkpoint directory {}", directory.display()))?;
    let payload = checkpoint.encode_to_vec();
    let path = directory.join(format!("{:020}{SUFFIX}", checkpoint.journal_position));
    let temporary = directory.join(format!("{:020}{SUFFIX}.tmp", checkpoint.journal_position));
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    let written = file
        .write_all(&header)
        .and_then(|()| {
            payload.chunks(WRITE_PIECE_BYTES).try_for_each(|piece| {
                file.write_all(piece)?;
                file.sync_data()
            })
        })
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, &path))
        .and_then(|()| File::open(directory)?.sync_all());
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("cannot write checkpoint {}", path.display()));
    }
    Ok((path, (HEADER_BYTES + payload.len()) as u64))
}

/// Loads the newest valid checkpoint, with the ones found unusable on the way.
pub fn load_newest(directory: &Path) -> anyhow::Result<(Option<Checkpoint>, Vec<Rejected>)> {
    let mut rejected = Vec::new();
    for (_, path) in checkpoints(directory)?.into_iter().rev() {
        match read(&path) {
            Ok(checkpoint) => return Ok((Some(checkpoint), rejected)),
            Err(error) => rejected.push(Rejected { path, error }),
        }
    }
    Ok((None, rejected))
}

/// Removes all but the newest [`KEEP`] checkpoints, and leftover temporary files. Once [`KEEP`]
/// checkpoints exist, returns the journal position of the oldest: journal segments before it are
/// not needed even if the newest proves corrupt. Before that, the whole journal is still needed.
pub fn prune(directory: &Path) -> anyhow::Result<Option<u64>> {
    let all = checkpoints(directory)?;
    let keep_from = all.len().saturating_sub(KEEP);
    for (_, path) in &all[..keep_from] {
        std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    for entry in std::fs::read_dir(directory)? {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension == "tmp") {
            let _ = std::fs::remove_file(path);
        }
    }
    if all.len() < KEEP {
        return Ok(None);
    }
    Ok(all.get(keep_from).map(|(position, _)| *position))
}

/// Reads and checks one checkpoint file.
pub fn read(path: &Path) -> anyhow::Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        bail!("{} is too short to be a checkpoint", path.display());
    };
    if &header[..8] != MAGIC {
        bail!("{} is not a suivi checkpoint", path.display());
    }
    let mut length = [0u8; 8];
    length.copy_from_slice(&header[8..16]);
    let mut checksum = [0u8; 4];
    checksum.copy_from_slice(&header[16..20]);
    let payload = &bytes[HEADER_BYTES..];
    if payload.len() as u64 != u64::from_le_bytes(length) {
        bail!("{} is truncated", path.display());
    }
    if crc32c::crc32c(payload) != u32::from_le_bytes(checksum) {
        bail!("{} fails its checksum", path.display());
    }
    Checkpoint::decode(payload).with_context(|| format!("{} does not decode", path.display()))
}

/// The checkpoint files of `directory`, oldest first.
fn checkpoints(directory: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    if !directory.exists() {
        return Ok(found);
    }
    for entry in std::fs::read_dir(directory)
        .with_context(|| format!("cannot list {}", directory.display()))?
    {
        let path = entry?.path();
        let position = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(SUFFIX))
            .and_then(|stem| stem.parse::<u64>().ok());
        if let Some(position) = position {
            found.push((position, path));
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests;
