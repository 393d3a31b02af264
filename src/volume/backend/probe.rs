//! What the file system under a node's volumes can do: its type (`statfs`),
//! and whether subvolumes and reflinks actually work there, found by trying
//! them once at start in the volumes root itself (a btrfs may refuse
//! subvolume deletion to a non-root node; an XFS made without `-m reflink=1`
//! refuses to share blocks).

use super::super::sys;
use super::{btrfs, remove};
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

/// The file system a path is on, by its `statfs` magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsType {
    Btrfs,
    Xfs,
    /// ext2, ext3 and ext4 share one magic.
    Ext4,
    Tmpfs,
    Overlay,
    Other(u64),
}

impl FsType {
    pub fn of(path: &Path) -> io::Result<FsType> {
        const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;
        let magic = sys::fs_magic(path)?;
        Ok(match magic {
            m if m == libc::BTRFS_SUPER_MAGIC as u64 => FsType::Btrfs,
            m if m == libc::XFS_SUPER_MAGIC as u64 => FsType::Xfs,
            m if m == libc::EXT4_SUPER_MAGIC as u64 => FsType::Ext4,
            m if m == libc::TMPFS_MAGIC as u64 => FsType::Tmpfs,
            OVERLAYFS_SUPER_MAGIC => FsType::Overlay,
            other => FsType::Other(other),
        })
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsType::Btrfs => f.write_str("btrfs"),
            FsType::Xfs => f.write_str("xfs"),
            FsType::Ext4 => f.write_str("ext4"),
            FsType::Tmpfs => f.write_str("tmpfs"),
            FsType::Overlay => f.write_str("overlayfs"),
            FsType::Other(magic) => write!(f, "a file system of type {magic:#x}"),
        }
    }
}

/// Names of the probes' scratch entries: hidden (app names hold no `.`),
/// fixed, so a probe interrupted by a crash is cleaned by the next one.
const PROBE_SUBVOLUME: &str = ".flocker-probe-subvolume";
const PROBE_SNAPSHOT: &str = ".flocker-probe-snapshot";
const PROBE_FILE: &str = ".flocker-probe-file";
const PROBE_CLONE: &str = ".flocker-probe-clone";

/// Creates a subvolume in `root`, snapshots it read-only and deletes both:
/// everything the btrfs backend does. `Err` says which step failed.
pub(super) fn try_subvolumes(root: &Path) -> Result<(), String> {
    let (subvolume, snapshot) = (root.join(PROBE_SUBVOLUME), root.join(PROBE_SNAPSHOT));
    clean(&[&snapshot, &subvolume])?;
    btrfs::create_subvolume(&subvolume)
        .map_err(|e| format!("creating a subvolume there failed: {e}"))?;
    let snapped = btrfs::snapshot(&subvolume, &snapshot, true)
        .map_err(|e| format!("a read-only snapshot there failed: {e}"));
    let deleted = [&snapshot, &subvolume]
        .into_iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .try_for_each(|p| btrfs::delete_subvolume(p))
        .map_err(|e| {
            format!("deleting a subvolume there failed: {e} (it needs root or the mount option user_subvol_rm_allowed)")
        });
    snapped.and(deleted)
}

/// Clones a small file in `root` with `FICLONE` and removes both files.
pub(super) fn try_reflink(root: &Path) -> Result<(), String> {
    let (file, clone) = (root.join(PROBE_FILE), root.join(PROBE_CLONE));
    clean(&[&file, &clone])?;
    let result = reflink_probe(&file, &clone);
    let cleaned = clean(&[&file, &clone]);
    result
        .map_err(|e| format!("sharing a file's blocks there (FICLONE) failed: {e}"))
        .and(cleaned)
}

fn reflink_probe(file: &Path, clone: &Path) -> io::Result<()> {
    // Read and write: FICLONE reads from its source.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(file)?;
    f.write_all(&[0x5a; 4096])?;
    let c = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(clone)?;
    sys::reflink(&f, &c)
}

fn clean(paths: &[&Path]) -> Result<(), String> {
    for p in paths {
        remove::remove_tree(p).map_err(|e| format!("cleaning a probe failed: {e}"))?;
    }
    Ok(())
}
