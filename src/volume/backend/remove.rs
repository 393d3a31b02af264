//! Removing a tree that may hold btrfs subvolumes and read-only snapshots,
//! which `rmdir` and `unlink` cannot remove. Never follows a symlink: it
//! unlinks the link. Off btrfs it is `std::fs::remove_dir_all` (which opens
//! each directory `O_NOFOLLOW`).

use super::super::error::{IoContext, Result};
use super::super::sys;
use super::btrfs;
use super::copy::lstat;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Removes `path` and everything below it; nothing there is no error.
pub(super) fn remove_tree(path: &Path) -> Result<()> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx("lstat", path),
    };
    if !m.file_type().is_dir() {
        return std::fs::remove_file(path).ctx("remove", path);
    }
    if sys::fs_magic(path).ctx("statfs", path)? != libc::BTRFS_SUPER_MAGIC as u64 {
        return std::fs::remove_dir_all(path).ctx("remove", path);
    }
    // Depth first with an explicit stack; a directory is revisited
    // (`emptied`) once everything pushed after it is gone.
    let mut stack: Vec<(PathBuf, bool)> = vec![(path.to_path_buf(), false)];
    while let Some((dir, emptied)) = stack.pop() {
        let is_subvolume = btrfs::is_subvolume(&lstat(&dir)?);
        if emptied {
            if is_subvolume {
                btrfs::delete_subvolume(&dir).ctx("delete subvolume", &dir)?;
            } else {
                std::fs::remove_dir(&dir).ctx("remove", &dir)?;
            }
            continue;
        }
        // One ioctl removes a whole subvolume, unless it holds another.
        if is_subvolume {
            match btrfs::delete_subvolume(&dir) {
                Ok(()) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
                Err(e) => return Err(e).ctx("delete subvolume", &dir),
            }
        }
        stack.push((dir.clone(), true));
        for item in std::fs::read_dir(&dir).ctx("read directory", &dir)? {
            let child = dir.join(item.ctx("read directory", &dir)?.file_name());
            if lstat(&child)?.file_type().is_dir() {
                stack.push((child, false));
            } else {
                std::fs::remove_file(&child).ctx("remove", &child)?;
            }
        }
    }
    Ok(())
}
