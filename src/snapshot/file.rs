//! The file sink: snapshots as JSON Lines under `<data_dir>/snapshots/`, one file per calendar
//! day (in the configured time zone) of the snapshot, one line per record. A snapshot is
//! appended with one write and made durable before it counts as written; a write that fails is
//! cut off again, and a torn last line left by a crash is cut off before the next append, so a
//! reader never sees a partial line followed by more data.
//!
//! Each line is one JSON object with a `type`: `campaign` (a campaign's counters), `totals` (the
//! programme totals) or `day` (one day of one campaign's timeline; `campaign` is `*` for the
//! totals' timeline), and the snapshot's `taken_at`.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::day::Day;
use crate::event::TOTALS_CAMPAIGN;
use crate::figures::{CampaignCounters, DayCounters};
use crate::snapshot::Snapshot;

/// One line of a snapshot file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Campaign {
        taken_at: DateTime<Utc>,
        #[serde(flatten)]
        counters: CampaignCounters,
    },
    Totals {
        taken_at: DateTime<Utc>,
        #[serde(flatten)]
        counters: CampaignCounters,
    },
    Day {
        taken_at: DateTime<Utc>,
        campaign: String,
        #[serde(flatten)]
        counts: DayCounters,
    },
}

/// Writes snapshots to daily JSON Lines files.
#[derive(Debug)]
pub struct FileSink {
    directory: PathBuf,
    time_zone: Tz,
    /// Files already checked for a torn tail by this process.
    repaired: HashSet<PathBuf>,
}

impl FileSink {
    /// A sink writing under `directory` (created if missing), naming files by the day in
    /// `time_zone`.
    pub fn new(directory: impl Into<PathBuf>, time_zone: Tz) -> anyhow::Result<FileSink> {
        let directory = directory.into();
        std::fs::create_dir_all(&directory)
            .with_context(|| format!("cannot create snapshot directory {}", directory.display()))?;
        Ok(FileSink {
            directory,
            time_zone,
            repaired: HashSet::new(),
        })
    }

    /// The file that snapshots taken at `taken_at` go to.
    pub fn path_for(&self, taken_at: DateTime<Utc>) -> PathBuf {
        let day = Day::of(taken_at, self.time_zone);
        self.directory.join(format!("{day}.jsonl"))
    }

    /// Appends one snapshot, durably, or leaves the file as it was.
    pub fn write(&mut self, snapshot: &Snapshot) -> anyhow::Result<()> {
        if snapshot.changes.campaigns.is_empty() && snapshot.changes.days.is_empty() {
            // Only shards' parts changed (a publish between the two takes): the sums come
            // with the next snapshot.
            return Ok(());
        }
        let lines = encode(snapshot)?;
        let path = self.path_for(snapshot.taken_at);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if !self.repaired.contains(&path) {
            cut_torn_tail(&mut file, &path)?;
            self.repaired.insert(path.clone());
        }
        let length = file.metadata()?.len();
        let written = file.write_all(&lines).and_then(|()| file.sync_data());
        if let Err(error) = written {
            // Leave no partial snapshot behind; if even this fails, the next open cuts it.
            let _ = file.set_len(length);
            return Err(error).with_context(|| format!("cannot append to {}", path.display()));
        }
        if length == 0 {
            // A new file's directory entry must be durable too.
            File::open(&self.directory).and_then(|directory| directory.sync_all())?;
        }
        Ok(())
    }
}

/// Reads every complete record of a snapshot file, skipping a torn last line.
pub fn read(path: &Path) -> anyhow::Result<Vec<Record>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .enumerate()
        .map(|(number, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{}:{}: invalid record", path.display(), number + 1))
        })
        .collect()
}

fn encode(snapshot: &Snapshot) -> anyhow::Result<Vec<u8>> {
    let taken_at = snapshot.taken_at;
    let mut lines = Vec::new();
    for counters in &snapshot.changes.campaigns {
        let record = if counters.campaign == TOTALS_CAMPAIGN {
            Record::Totals {
                taken_at,
                counters: counters.clone(),
            }
        } else {
            Record::Campaign {
                taken_at,
                counters: counters.clone(),
            }
        };
        serde_json::to_writer(&mut lines, &record)?;
        lines.push(b'\n');
    }
    for (campaign, days) in &snapshot.changes.days {
        for counts in days {
            let record = Record::Day {
                taken_at,
                campaign: campaign.clone(),
                counts: *counts,
            };
            serde_json::to_writer(&mut lines, &record)?;
            lines.push(b'\n');
        }
    }
    Ok(lines)
}

/// Cuts a last line that has no newline: a crash tore it while it was being appended.
fn cut_torn_tail(file: &mut File, path: &Path) -> anyhow::Result<()> {
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(length - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    let mut text = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut text)?;
    let keep = text
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |end| end + 1);
    file.set_len(keep as u64)?;
    file.sync_data()?;
    tracing::warn!(file = %path.display(), cut_bytes = length - keep as u64, "cut a torn last line from a snapshot file");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figures::{Changes, ShardChanges};

    /// JSON escapes what PostgreSQL refuses: a campaign with a NUL or a bidi override is
    /// written, and read back as it was, beside the others.
    #[test]
    fn any_campaign_id_is_written_and_read_back_as_it_was() {
        let directory = tempfile::tempdir().expect("a temporary dir");
        let mut sink =
            FileSink::new(directory.path(), chrono_tz::Europe::Paris).expect("a file sink");
        let taken_at = Utc::now();
        let counters = |campaign: &str| CampaignCounters {
            campaign: campaign.to_owned(),
            name: String::new(),
            clicks: 1,
            unique_visitors: 1,
            enrolled: 0,
            started: 0,
            chapters_completed: vec![0; 12],
            certified: 0,
            completion_rate: 0.0,
            target: None,
            progress: None,
            as_of: taken_at,
            registered: false,
        };
        let campaigns = [
            "evil\u{0}x",
            "\u{202e}txt.exe",
            "line\nbreak",
            "gendarmerie",
        ];
        let snapshot = Snapshot {
            taken_at,
            changes: Changes {
                campaigns: campaigns
                    .iter()
                    .map(|campaign| counters(campaign))
                    .collect(),
                days: Vec::new(),
            },
            shards: ShardChanges::default(),
        };
        sink.write(&snapshot).expect("written");
        let records = read(&sink.path_for(taken_at)).expect("read back");
        let read_back: Vec<&str> = records
            .iter()
            .map(|record| match record {
                Record::Campaign { counters, .. } => counters.campaign.as_str(),
                other => panic!("a campaign record, not {other:?}"),
            })
            .collect();
        assert_eq!(read_back, campaigns);
    }
}
