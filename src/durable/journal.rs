//! The write-ahead journal: every accepted event is appended here, and made durable, before it
//! is applied and acknowledged. The journal is a directory of segment files, each named by the
//! position of its first record (`00000000000000000042.wal`); positions count records from 0
//! over the journal's whole life.
//!
//! A record is `[payload length: u32][crc32c: u32][position: u64][payload]`, all little-endian;
//! the checksum covers the position and the payload, so a torn, corrupted or misplaced record is
//! detected. The payload is a protobuf `suivi.storage.v1.JournalRecord`.
//!
//! On open, every segment is checked. A bad record in the *last* segment is a torn tail (a crash
//! during an append): it and everything after it are cut off, logged and counted. A bad record
//! in an earlier segment is real corruption of acknowledged data: opening fails loudly rather
//! than lose it silently. A failed append is cut off again before the next one, so a write error
//! (a full disk) never leaves garbage between good records.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use prost::Message;

use crate::proto::storage::JournalRecord;

/// The default size at which a segment is closed and a new one started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

const HEADER_BYTES: usize = 16;
/// No record is larger: the writer splits a group whose record would be (a group holds at most
/// `ingest_queue_events`, bounded by configuration far below this), and [`Journal::append`]
/// refuses one before writing anything.
pub const MAX_RECORD_BYTES: u32 = 1 << 30;
const SEGMENT_SUFFIX: &str = ".wal";

/// When appended records are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before every acknowledgement (group commit: one fsync per group of batches).
    Always,
    /// At most this long after an append; a crash may lose what was acknowledged meanwhile.
    Interval(Duration),
}

/// The open journal, appended to by the pipeline's writer thread only.
#[derive(Debug)]
pub struct Journal {
    directory: PathBuf,
    file: File,
    segment_bytes: u64,
    max_segment_bytes: u64,
    next_position: u64,
    policy: FsyncPolicy,
    last_sync: Instant,
    unsynced: bool,
    /// After a failed append could not be cut off: the length the segment must be cut to before
    /// anything else is written.
    cut_to: Option<u64>,
    /// The largest record appended: [`MAX_RECORD_BYTES`], or less (see
    /// [`Journal::limit_record_bytes`]).
    max_record_bytes: u32,
}

/// What opening the journal found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Records handed to the replay callback.
    pub records_replayed: u64,
    /// Events in those records.
    pub events_replayed: u64,
    /// Bytes of torn tail cut off the last segment.
    pub torn_bytes: u64,
    /// Whether an intact record followed the bad one and was cut with it (see [`Journal::open`]).
    pub intact_record_cut: bool,
    pub segments: usize,
}

/// What one append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub bytes: u64,
    /// Time spent in fsync (zero when the policy did not sync).
    pub fsync: Duration,
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the disk holding the journal is full")]
    DiskFull(#[source] io::Error),
    #[error("the journal cannot be written")]
    Unwritable(#[source] io::Error),
    /// Refused before anything is written: the reader would refuse the record at the next start.
    #[error("the record is {bytes} bytes, over the journal's limit of {MAX_RECORD_BYTES} bytes")]
    TooLarge { bytes: usize },
}

impl Journal {
    /// Opens (or creates) the journal in `directory`, checking every record, cutting a torn tail,
    /// and calling `replay` with each record at or after `from`, in order.
    pub fn open(
        directory: &Path,
        policy: FsyncPolicy,
        max_segment_bytes: u64,
        from: u64,
        mut replay: impl FnMut(u64, JournalRecord),
    ) -> anyhow::Result<(Journal, OpenReport)> {
        std::fs::create_dir_all(directory)
            .with_context(|| format!("cannot create journal directory {}", directory.display()))?;
        let segments = segments(directory)?;
        let mut report = OpenReport {
            segments: segments.len(),
            ..OpenReport::default()
        };
        let mut next_position = segments.first().map_or(from, |(first, _)| *first);
        if next_position > from {
            bail!(
                "the journal starts at record {next_position} but the state needs it from record {from}: \
                 records were removed that no valid checkpoint covers"
            );
        }
        for (index, (first, path)) in segments.iter().enumerate() {
            if *first != next_position {
                bail!(
                    "journal segment {} starts at record {first}, expected {next_position}: a segment is missing",
                    path.display()
                );
            }
            let last = index + 1 == segments.len();
            let scan = scan_segment(path, *first, |position, payload| {
                if position < from {
                    return Ok(());
                }
                let record = JournalRecord::decode(payload).with_context(|| {
                    format!(
                        "journal record {position} in {} does not decode",
                        path.display()
                    )
                })?;
                report.records_replayed += 1;
                report.events_replayed += record.events.len() as u64;
                replay(position, record);
                Ok(())
            })?;
            next_position = scan.next_position;
            if let Some(bad) = scan.bad_at {
                if !last {
                    bail!(
                        "journal segment {} is corrupt at byte {bad} (record {}): acknowledged events would be lost; \
                         restore it or move it away knowingly",
                        path.display(),
                        scan.next_position
                    );
                }
                let file = OpenOptions::new().write(true).open(path)?;
                file.set_len(bad)?;
                file.sync_all()?;
                report.torn_bytes = scan.length - bad;
                report.intact_record_cut = scan.intact_after_bad.is_some();
                if let Some(later) = scan.intact_after_bad {
                    // A torn append leaves nothing intact after it when every record is synced
                    // before the next is written (fsync = always). An intact record after the bad
                    // one means either fsync = interval lost an unsynced window (accepted), or
                    // the disk corrupted an acknowledged record: say so loudly either way.
                    tracing::error!(
                        segment = %path.display(),
                        bad_at = bad,
                        intact_record_at = later,
                        "an intact record follows the bad one: records after it are cut too; \
                         unless fsync = interval was in use, acknowledged events may be lost"
                    );
                }
                tracing::warn!(
                    segment = %path.display(),
                    cut_bytes = report.torn_bytes,
                    next_record = next_position,
                    "cut a torn or corrupt tail off the journal"
                );
            }
        }
        // Going on from an earlier position would give new records positions that the next
        // recovery from the same checkpoint skips: acknowledged events would be lost.
        if next_position < from {
            bail!(
                "the journal ends at record {next_position} but the state needs it up to record {from}: \
                 its last segments are missing"
            );
        }
        let (file, segment_bytes) = match segments.last() {
            Some((_, path)) => {
                let file = OpenOptions::new().append(true).open(path)?;
                let length = file.metadata()?.len();
                (file, length)
            }
            None => (create_segment(directory, next_position)?, 0),
        };
        let journal = Journal {
            directory: directory.to_owned(),
            file,
            segment_bytes,
            max_segment_bytes,
            next_position,
            policy,
            last_sync: Instant::now(),
            unsynced: false,
            cut_to: None,
            max_record_bytes: MAX_RECORD_BYTES,
        };
        Ok((journal, report))
    }

    /// Refuses records over `bytes` (at most [`MAX_RECORD_BYTES`], which the reader enforces):
    /// the writer then splits its group. Smaller limits let tests reach the split.
    pub fn limit_record_bytes(&mut self, bytes: u32) {
        self.max_record_bytes = bytes.min(MAX_RECORD_BYTES);
    }

    /// The position the next record will have: every record before it is in the journal.
    pub fn position(&self) -> u64 {
        self.next_position
    }

    /// Appends one record and, under [`FsyncPolicy::Always`], makes it durable.
    pub fn append(&mut self, record: &JournalRecord) -> Result<Appended, AppendError> {
        self.cut_failed_append().map_err(classify)?;
        if self.segment_bytes >= self.max_segment_bytes {
            self.rotate().map_err(classify)?;
        }
        let payload = record.encode_to_vec();
        let fits = u32::try_from(payload.len()).is_ok_and(|len| len <= self.max_record_bytes);
        let Some(bytes) = frame(self.next_position, &payload).filter(|_| fits) else {
            return Err(AppendError::TooLarge {
                bytes: payload.len(),
            });
        };
        let mut fsync = Duration::ZERO;
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|()| match self.policy {
                FsyncPolicy::Always => {
                    let started = Instant::now();
                    let synced = self.file.sync_data();
                    fsync = started.elapsed();
                    synced
                }
                FsyncPolicy::Interval(_) => Ok(()),
            });
        if let Err(error) = written {
            // Leave nothing of a failed record behind, or remember to cut it before the next one.
            if self.file.set_len(self.segment_bytes).is_err() {
                self.cut_to = Some(self.segment_bytes);
            }
            return Err(classify(error));
        }
        match self.policy {
            FsyncPolicy::Always => self.last_sync = Instant::now(),
            FsyncPolicy::Interval(_) => self.unsynced = true,
        }
        self.segment_bytes += bytes.len() as u64;
        self.next_position += 1;
        Ok(Appended {
            bytes: bytes.len() as u64,
            fsync,
        })
    }

    /// Under [`FsyncPolicy::Interval`], syncs when the interval has passed since the last sync.
    pub fn sync_if_due(&mut self) -> Result<(), AppendError> {
        if let FsyncPolicy::Interval(interval) = self.policy
            && self.unsynced
            && self.last_sync.elapsed() >= interval
        {
            self.sync()?;
        }
        Ok(())
    }

    /// Forces everything appended to stable storage.
    pub fn sync(&mut self) -> Result<(), AppendError> {
        self.file.sync_data().map_err(classify)?;
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Closes the current segment and starts a new one at the current position, so a checkpoint
    /// taken now covers whole segments. Returns the position.
    pub fn rotate(&mut self) -> io::Result<u64> {
        // Closing a segment with a failed append still at its end would leave garbage between
        // good records, and the cut would then be applied to the new segment instead.
        self.cut_failed_append()?;
        if self.segment_bytes > 0 {
            self.file.sync_data()?;
            self.file = create_segment(&self.directory, self.next_position)?;
            self.segment_bytes = 0;
            self.unsynced = false;
        }
        Ok(self.next_position)
    }

    /// Cuts what a failed append left at the end of the segment, when that could not be done
    /// at the time.
    fn cut_failed_append(&mut self) -> io::Result<()> {
        if let Some(length) = self.cut_to {
            self.file.set_len(length)?;
            self.segment_bytes = length;
            self.cut_to = None;
        }
        Ok(())
    }

    /// The journal's directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }
}

/// Removes every segment whose records all come before `position` (the next segment starts at
/// or before it). Safe while the journal is appended to: the segment being written is never
/// before the newest checkpoint. Returns how many were removed.
pub fn remove_segments_before(directory: &Path, position: u64) -> anyhow::Result<usize> {
    let segments = segments(directory)?;
    let mut removed = 0;
    for pair in segments.windows(2) {
        let (_, path) = &pair[0];
        let (next_first, _) = &pair[1];
        if *next_first <= position {
            super::remove::remove(path)?;
            removed += 1;
        }
    }
    super::remove::leftovers(directory)?;
    Ok(removed)
}

/// The segments of `directory`, by first position.
fn segments(directory: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(directory)
        .with_context(|| format!("cannot list {}", directory.display()))?
    {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        if let Some(first) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .and_then(|stem| stem.parse::<u64>().ok())
        {
            segments.push((first, path));
        }
    }
    segments.sort();
    Ok(segments)
}

fn create_segment(directory: &Path, first: u64) -> io::Result<File> {
    let path = directory.join(format!("{first:020}{SEGMENT_SUFFIX}"));
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    // The new name must survive a crash as surely as the records written into it.
    File::open(directory)?.sync_all()?;
    Ok(file)
}

/// Frames one record; `None` when the payload is over [`MAX_RECORD_BYTES`], which the reader
/// would refuse.
fn frame(position: u64, payload: &[u8]) -> Option<Vec<u8>> {
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|length| *length <= MAX_RECORD_BYTES)?;
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    let checksum = crc32c::crc32c_append(crc32c::crc32c(&position.to_le_bytes()), payload);
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(&checksum.to_le_bytes());
    bytes.extend_from_slice(&position.to_le_bytes());
    bytes.extend_from_slice(payload);
    Some(bytes)
}

struct Scan {
    next_position: u64,
    /// The byte offset of the first bad record, if any.
    bad_at: Option<u64>,
    /// The byte offset of an intact record framed for the position after the bad one, if any.
    intact_after_bad: Option<u64>,
    length: u64,
}

/// Reads the records of one segment in order, stopping at the first bad one.
fn scan_segment(
    path: &Path,
    first: u64,
    mut each: impl FnMut(u64, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<Scan> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .with_context(|| format!("cannot read journal segment {}", path.display()))?;
    let mut offset = 0usize;
    let mut position = first;
    let bad_at = loop {
        let rest = &bytes[offset..];
        if rest.is_empty() {
            break None;
        }
        let Some(header) = rest.get(..HEADER_BYTES) else {
            break Some(offset);
        };
        let word = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let length = word(0);
        let checksum = word(4);
        let stored_position = u64::from(word(8)) | (u64::from(word(12)) << 32);
        let end = HEADER_BYTES + length as usize;
        if length > MAX_RECORD_BYTES || rest.len() < end || stored_position != position {
            break Some(offset);
        }
        let payload = &rest[HEADER_BYTES..end];
        if crc32c::crc32c_append(crc32c::crc32c(&position.to_le_bytes()), payload) != checksum {
            break Some(offset);
        }
        each(position, payload)?;
        offset += end;
        position += 1;
    };
    let intact_after_bad = bad_at.and_then(|bad| find_intact_record(&bytes, bad + 1, position + 1));
    Ok(Scan {
        next_position: position,
        bad_at: bad_at.map(|at| at as u64),
        intact_after_bad: intact_after_bad.map(|at| at as u64),
        length: bytes.len() as u64,
    })
}

/// The first offset from `from` where an intact record framed for `position` starts.
fn find_intact_record(bytes: &[u8], from: usize, position: u64) -> Option<usize> {
    let wanted = position.to_le_bytes();
    (from..bytes.len().saturating_sub(HEADER_BYTES - 1)).find(|&offset| {
        let header = &bytes[offset..offset + HEADER_BYTES];
        if header[8..16] != wanted {
            return false;
        }
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let end = offset + HEADER_BYTES + length as usize;
        length <= MAX_RECORD_BYTES
            && end <= bytes.len()
            && crc32c::crc32c_append(crc32c::crc32c(&wanted), &bytes[offset + HEADER_BYTES..end])
                == checksum
    })
}

fn classify(error: io::Error) -> AppendError {
    if error.kind() == io::ErrorKind::StorageFull || error.kind() == io::ErrorKind::QuotaExceeded {
        AppendError::DiskFull(error)
    } else {
        AppendError::Unwritable(error)
    }
}

#[cfg(test)]
mod tests;
