//! Removing the durable files no longer needed (an old checkpoint, journal segments before it)
//! without stalling the writer. On ext4, unlinking a file of hundreds of megabytes frees all
//! its extents in one transaction of the file system's journal, and every `fdatasync` of the
//! writer's journal waits for that transaction: measured on this machine, removing a 700 MB
//! file held a 4 KB write and sync for 260–280 ms. Shortening the file a step at a time, each
//! step synced, frees its extents in small transactions; the same syncs then waited 9 ms at
//! most (2 MiB steps, `SYNC_STEP_BYTES`; BENCHMARKS.md).
//!
//! A file being removed is first renamed aside (`<name>.removed`), its directory synced, so that
//! a crash in the middle never leaves a shortened file under a name recovery reads; what a crash
//! leaves aside is removed by the next [`leftovers`].

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// What a step frees.
const STEP_BYTES: u64 = super::SYNC_STEP_BYTES as u64;

/// The suffix of a file set aside to be removed.
const ASIDE: &str = ".removed";

/// Removes the file `path`, which no one has open any more: renamed aside, shortened
/// [`STEP_BYTES`] at a time, then unlinked.
pub(super) fn remove(path: &Path) -> anyhow::Result<()> {
    let mut aside = OsString::from(path.as_os_str());
    aside.push(ASIDE);
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)
        .and_then(|()| match path.parent() {
            Some(directory) => File::open(directory)?.sync_all(),
            None => Ok(()),
        })
        .and_then(|()| shorten_and_unlink(&aside))
        .with_context(|| format!("cannot remove {}", path.display()))
}

/// Removes the files of `directory` that a crash left aside. Answers how many.
pub(super) fn leftovers(directory: &Path) -> anyhow::Result<usize> {
    let removed = || -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(directory)? {
            let path = entry?.path();
            if path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(ASIDE))
            {
                shorten_and_unlink(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    };
    removed().with_context(|| {
        format!(
            "cannot remove what was set aside in {}",
            directory.display()
        )
    })
}

fn shorten_and_unlink(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    let mut length = file.metadata()?.len();
    while length > STEP_BYTES {
        length -= STEP_BYTES;
        file.set_len(length)?;
        file.sync_data()?;
    }
    drop(file);
    std::fs::remove_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_removed_and_what_a_crash_left_aside_too() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let path = directory.path().join("00000000000000000001.ckpt");
        let bytes = vec![7u8; (STEP_BYTES * 2 + 5) as usize];
        std::fs::write(&path, &bytes).expect("the file is written");
        let kept = directory.path().join("00000000000000000002.ckpt");
        std::fs::write(&kept, b"kept").expect("the file is written");

        remove(&path).expect("the file is removed");
        assert!(!path.exists());
        let names = |directory: &Path| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(directory)
                .expect("the directory lists")
                .map(|entry| {
                    entry
                        .expect("an entry")
                        .file_name()
                        .into_string()
                        .expect("a name")
                })
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(directory.path()), ["00000000000000000002.ckpt"]);

        // A crash after the rename: the file is aside, whole or shortened, and goes next time.
        let aside = directory
            .path()
            .join(format!("00000000000000000003.wal{ASIDE}"));
        std::fs::write(&aside, &bytes[..(STEP_BYTES + 1) as usize]).expect("the file is written");
        assert_eq!(leftovers(directory.path()).expect("the leftovers go"), 1);
        assert_eq!(names(directory.path()), ["00000000000000000002.ckpt"]);
        assert_eq!(std::fs::read(&kept).expect("the kept file reads"), b"kept");
        assert_eq!(leftovers(directory.path()).expect("nothing is left"), 0);
    }
}
