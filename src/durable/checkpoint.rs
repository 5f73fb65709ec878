//! Checkpoints: the whole aggregation state at a journal position, written as one atomic file
//! so that a restart loads it and replays only the journal after it. A checkpoint file is
//! `[magic "SUIVICK1"][payload length: u64][crc32c: u32][payload]`, the payload a protobuf
//! `suivi.storage.v1.Checkpoint`; it is written to a temporary name, synced, renamed into place
//! and its directory synced, so it is either whole or absent ([`write_atomic`], which id runs
//! share). From format 2 on a checkpoint's remembered ids are in the id runs it names
//! (`durable::runs`), read with it by [`load_newest`]. The newest [`KEEP`] checkpoints are
//! kept: when the newest proves corrupt, recovery falls back to the one before, whose journal
//! segments are still there.

use std::borrow::Borrow;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use prost::Message;
use rayon::prelude::*;

use super::{SYNC_STEP_BYTES, remove, runs};
use crate::aggregate::{RUN_ORDER_FORMAT, Written};
use crate::proto::storage::Checkpoint;

/// How many checkpoints are kept.
pub const KEEP: usize = 2;

const MAGIC: &[u8; 8] = b"SUIVICK1";
/// Bytes of a checkpoint's (or an id run's) header.
pub(super) const HEADER_BYTES: usize = 20;
const SUFFIX: &str = ".ckpt";
/// A checkpoint is read, and its checksum computed, in pieces of this size side by side.
const READ_PIECE_BYTES: usize = 32 << 20;

/// A checkpoint that was found unusable during recovery.
#[derive(Debug)]
pub struct Rejected {
    pub path: PathBuf,
    pub error: anyhow::Error,
}

/// Writes `checkpoint` into `directory` atomically; returns its path and size in bytes.
pub fn write(directory: &Path, checkpoint: &Checkpoint) -> anyhow::Result<(PathBuf, u64)> {
    write_parts(
        directory,
        checkpoint.journal_position,
        std::iter::once(checkpoint),
    )
}

/// Writes a checkpoint at `journal_position` made of `parts`, encoded and written one after the
/// other, so that the whole never sits in memory encoded (a checkpoint of ten million learners
/// is gigabytes). The concatenation of protobuf encodings is the encoding of their merge, so the
/// file reads back as one `Checkpoint`: a repeated field holds the parts' values in order, a
/// message field is the merge of the parts' (its repeated fields likewise), and a scalar is the
/// last part's that sets one. Atomic as [`write`]; returns the path and size in bytes.
pub fn write_parts<P: Borrow<Checkpoint>>(
    directory: &Path,
    journal_position: u64,
    parts: impl IntoIterator<Item = P>,
) -> anyhow::Result<(PathBuf, u64)> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("cannot create checkpoint directory {}", directory.display()))?;
    let path = directory.join(format!("{journal_position:020}{SUFFIX}"));
    let mut buffer = Vec::new();
    let (length, _) = write_atomic(&path, MAGIC, |writer| {
        for part in parts {
            buffer.clear();
            part.borrow().encode_raw(&mut buffer);
            writer.write(&buffer)?;
        }
        Ok(())
    })
    .with_context(|| format!("cannot write checkpoint {}", path.display()))?;
    Ok((path, HEADER_BYTES as u64 + length))
}

/// Writes the file `path` atomically: `[magic][payload length: u64][crc32c: u32][payload]`,
/// the payload what `body` writes, under a temporary name, synced every [`SYNC_STEP_BYTES`]
/// and at the end, renamed into place, and its directory synced. Answers the payload's length
/// and checksum. On failure nothing is left under either name.
pub(super) fn write_atomic(
    path: &Path,
    magic: &[u8; 8],
    body: impl FnOnce(&mut PieceWriter) -> std::io::Result<()>,
) -> std::io::Result<(u64, u32)> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let written = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(&header(magic, 0, 0))?;
            let mut writer = PieceWriter {
                file,
                length: 0,
                checksum: 0,
                unsynced: 0,
            };
            body(&mut writer)?;
            let PieceWriter {
                mut file,
                length,
                checksum,
                ..
            } = writer;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&header(magic, length, checksum))?;
            file.sync_all()?;
            Ok((length, checksum))
        })
        .and_then(|written| {
            std::fs::rename(&temporary, path)?;
            if let Some(directory) = path.parent() {
                File::open(directory)?.sync_all()?;
            }
            Ok(written)
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// The payload of a file [`write_atomic`] writes, its length and checksum counted as it goes.
pub(super) struct PieceWriter {
    file: File,
    length: u64,
    checksum: u32,
    unsynced: usize,
}

impl PieceWriter {
    /// Appends `bytes` to the payload, syncing every [`SYNC_STEP_BYTES`].
    pub(super) fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.checksum = crc32c::crc32c_append(self.checksum, bytes);
        self.length += bytes.len() as u64;
        for piece in bytes.chunks(SYNC_STEP_BYTES) {
            self.file.write_all(piece)?;
            self.unsynced += piece.len();
            if self.unsynced >= SYNC_STEP_BYTES {
                self.file.sync_data()?;
                self.unsynced = 0;
            }
        }
        Ok(())
    }
}

fn header(magic: &[u8; 8], length: u64, checksum: u32) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(magic);
    header.extend_from_slice(&length.to_le_bytes());
    header.extend_from_slice(&checksum.to_le_bytes());
    header
}

/// The payload length and checksum of a [`HEADER_BYTES`] header, if it starts with `magic`.
pub(super) fn parse_header(header: &[u8], magic: &[u8; 8]) -> anyhow::Result<(u64, u32)> {
    ensure!(header.len() >= HEADER_BYTES, "is too short");
    ensure!(
        &header[..8] == magic,
        "is not a suivi {} file",
        String::from_utf8_lossy(magic)
    );
    let mut length = [0u8; 8];
    length.copy_from_slice(&header[8..16]);
    let mut checksum = [0u8; 4];
    checksum.copy_from_slice(&header[16..20]);
    Ok((u64::from_le_bytes(length), u32::from_le_bytes(checksum)))
}

/// A checkpoint read back whole with the id runs it names (`durable::runs`): those in run
/// order opened with their filters (`written`), or, for a checkpoint of format 2, the words of
/// its runs, sorted by id, in its order (`runs`).
#[derive(Debug, Default)]
pub struct Loaded {
    pub checkpoint: Checkpoint,
    pub runs: Vec<Vec<u32>>,
    pub written: Written,
}

/// Loads the newest valid checkpoint with its id runs, with the ones found unusable on the way
/// (a checkpoint one of whose runs is missing or damaged is unusable).
pub fn load_newest(directory: &Path) -> anyhow::Result<(Option<Loaded>, Vec<Rejected>)> {
    let mut rejected = Vec::new();
    for (_, path) in checkpoints(directory)?.into_iter().rev() {
        let loaded = read(&path).and_then(|checkpoint| {
            let named = |error: anyhow::Error| {
                error.context(format!("{} names an id run it cannot have", path.display()))
            };
            let (runs, written) = if checkpoint.format_version >= RUN_ORDER_FORMAT {
                let written = runs::open(directory, &checkpoint.id_runs).map_err(named)?;
                (Vec::new(), written)
            } else {
                let runs = runs::read(directory, &checkpoint.id_runs).map_err(named)?;
                (runs, Written::default())
            };
            Ok(Loaded {
                checkpoint,
                runs,
                written,
            })
        });
        match loaded {
            Ok(loaded) => return Ok((Some(loaded), rejected)),
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
        remove::remove(path)?;
    }
    remove::leftovers(directory)?;
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
    let cannot_read = || format!("cannot read {}", path.display());
    let file = File::open(path).with_context(cannot_read)?;
    let length = file.metadata().with_context(cannot_read)?.len();
    if length < HEADER_BYTES as u64 {
        bail!("{} is too short to be a checkpoint", path.display());
    }
    let mut header = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut header, 0)
        .with_context(cannot_read)?;
    if &header[..8] != MAGIC {
        bail!("{} is not a suivi checkpoint", path.display());
    }
    let (stored, checksum) = parse_header(&header, MAGIC)?;
    let payload_length = length - HEADER_BYTES as u64;
    if payload_length != stored {
        bail!("{} is truncated", path.display());
    }
    let mut payload = vec![0u8; usize::try_from(payload_length)?];
    let computed =
        read_pieces(&file, HEADER_BYTES as u64, &mut payload).with_context(cannot_read)?;
    if computed != checksum {
        bail!("{} fails its checksum", path.display());
    }
    decode::decode(&payload).with_context(|| format!("{} does not decode", path.display()))
}

/// Fills `bytes` from `file`, from `offset` on, in pieces of [`READ_PIECE_BYTES`] side by side
/// on rayon's threads, and answers their CRC-32C, the pieces' computed as they are read and
/// combined: a checkpoint or an id run of ten million learners is gigabytes, which one thread
/// took 1.6 s to copy out of the page cache.
pub(super) fn read_pieces(file: &File, offset: u64, bytes: &mut [u8]) -> std::io::Result<u32> {
    let pieces: Vec<(u32, usize)> = bytes
        .par_chunks_mut(READ_PIECE_BYTES)
        .enumerate()
        .map(|(index, piece)| {
            file.read_exact_at(piece, offset + (index * READ_PIECE_BYTES) as u64)?;
            Ok((crc32c::crc32c(piece), piece.len()))
        })
        .collect::<std::io::Result<_>>()?;
    Ok(pieces.into_iter().fold(0, |checksum, (piece, length)| {
        crc32c::crc32c_combine(checksum, piece, length)
    }))
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

mod decode;

#[cfg(test)]
mod tests;
