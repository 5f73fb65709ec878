//! A small tmpfs mounted for one test, to check what a full disk does to the journal: only a
//! real full file system fails a write the way a full production disk does (a short write, then
//! `StorageFull`). The pipeline's tests include this file too.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// A tmpfs mounted on a fresh directory of its own (so that tests running in parallel never
/// share one), unmounted when dropped, even when the test fails.
#[derive(Debug)]
pub struct SmallDisk {
    mount_point: PathBuf,
    // Declared after `mount_point` only for reading order: `Drop::drop` unmounts before any
    // field is dropped, so the directory still exists when it is unmounted.
    _parent: TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` reads it). Fails the test, never skips it,
    /// when mounting is not permitted: the full-disk behaviour is only checked for real.
    pub fn mount(size: &str) -> SmallDisk {
        let parent = TempDir::new().expect("a temporary directory");
        let mount_point = parent.path().join("disk");
        std::fs::create_dir(&mount_point).expect("the mount point creates");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount_point)
            .output()
            .expect("the mount command runs");
        assert!(
            output.status.success(),
            "cannot mount a {size} tmpfs on {} ({}): the full-disk tests must run as root (or \
             with CAP_SYS_ADMIN); mount said: {}",
            mount_point.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        SmallDisk {
            mount_point,
            _parent: parent,
        }
    }

    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Fills what is left of the disk with the file `filler`.
    pub fn fill(&self, filler: &Path) {
        let mut file = File::create(filler).expect("the filler file creates");
        let block = [0u8; 4096];
        loop {
            match file.write(&block) {
                Ok(0) => panic!("the disk took no more bytes but did not say it is full"),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::StorageFull => break,
                Err(error) => {
                    panic!("filling the disk failed otherwise than by being full: {error}")
                }
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = |lazy: bool| {
            let mut umount = Command::new("umount");
            if lazy {
                umount.arg("--lazy");
            }
            matches!(umount.arg(&self.mount_point).status(), Ok(status) if status.success())
        };
        // A test that failed may still hold files open on the disk (a writer thread that did
        // not stop); a lazy unmount detaches the disk anyway, and frees it once they close.
        let clean = unmounted(false);
        if !clean && !unmounted(true) && !std::thread::panicking() {
            panic!("cannot unmount {}", self.mount_point.display());
        }
        if !clean && !std::thread::panicking() {
            panic!(
                "{} was still busy at the end of the test: a file on it was left open",
                self.mount_point.display()
            );
        }
    }
}
