//! Making files and directories survive a power cut, not just a process
//! kill. A file's data is durable once the file is fsynced; its directory
//! entry (a create, a rename, an unlink) only once the directory holding it
//! is fsynced too; a new directory is reachable after a power cut only when
//! every parent it was created under is. `syncfs` does both for a whole
//! file system on the local ones it is trusted on (ext4, xfs, btrfs) and
//! nothing on FUSE or network file systems: elsewhere, every file and
//! directory is fsynced one by one ([`fsync_tree`]). ARCHITECTURE.md,
//! "Durability", lists where the node relies on each of these.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// File system magic numbers whose `syncfs` writes every dirty file and
/// directory of the file system.
const SYNCFS_TRUSTED: [i64; 3] = [
    0xEF53,      // ext2/3/4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
];

/// fsync of a directory: its entries (creates, renames, unlinks) are
/// durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents with `mode`, each created one made
/// durable (its parent fsynced), so the whole path survives a power cut.
/// Nothing happens to parts that exist.
pub fn create_dir_all(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.as_os_str().is_empty() && std::fs::symlink_metadata(at).is_err() {
        missing.push(at);
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(mode).create(d) {
            Ok(()) => {}
            // Another thread or process made it: it fsyncs its parent.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => continue,
            Err(e) => return Err(e),
        }
        fsync_dir(parent_or_dot(d))?;
    }
    if dir.is_dir() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", dir.display()),
        ))
    }
}

/// fsync of every regular file under `root`, then of every directory
/// (deepest first, `root` last): the whole tree's data and entries are
/// durable. Symlinks are covered by their directory's fsync. The entry of
/// `root` itself is its parent's business.
pub fn fsync_tree(root: &Path) -> io::Result<()> {
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        for entry in std::fs::read_dir(&dirs[i])? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                File::open(entry.path())?.sync_all()?;
            }
        }
        i += 1;
    }
    for d in dirs.iter().rev() {
        fsync_dir(d)?;
    }
    Ok(())
}

/// Makes the tree at `root` durable the cheapest sound way: one `syncfs`
/// where the file system honours it, [`fsync_tree`] elsewhere.
pub fn sync_whole_tree(root: &Path) -> io::Result<()> {
    let dir = File::open(root)?;
    if syncfs_trusted(&dir)? {
        // SAFETY: syncfs on a descriptor we own.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
            return Ok(());
        }
        return Err(io::Error::last_os_error());
    }
    fsync_tree(root)
}

/// Whether `syncfs` on `file`'s file system makes everything on it durable
/// (not on FUSE, which passes no syncfs to the file system behind it).
pub fn syncfs_trusted(file: &File) -> io::Result<bool> {
    // SAFETY: zeroed plain-old-data the kernel fills.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a descriptor we own and a pointer valid for the call.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs across targets
    Ok(SYNCFS_TRUSTED.contains(&(s.f_type as i64)))
}

fn parent_or_dot(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A lazyfs (a file system that forgets what was not fsynced, until a
/// cut) mounted in this process for one test, with its scratch directory.
/// Needs root and /dev/fuse: a test without them fails, never skips.
#[cfg(test)]
pub(crate) fn lazyfs_for_test() -> (tempfile::TempDir, flocker_lazyfs::Mount) {
    let t = tempfile::tempdir().unwrap();
    let (backing, mnt) = (t.path().join("backing"), t.path().join("mnt"));
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let mount = flocker_lazyfs::Mount::new(&backing, &mnt, 256)
        .unwrap_or_else(|e| panic!("lazyfs must mount (root and /dev/fuse): {e}"));
    (t, mount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_dir_all_makes_each_missing_part_with_the_mode() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("a/b/c");
        create_dir_all(&deep, 0o700).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            let mode = std::fs::metadata(t.path().join(d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{d}");
        }
        create_dir_all(&deep, 0o700).unwrap();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        let err = create_dir_all(&t.path().join("f"), 0o700).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn fsync_tree_walks_files_and_directories() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("x/y")).unwrap();
        std::fs::write(t.path().join("x/y/f"), b"data").unwrap();
        std::os::unix::fs::symlink("f", t.path().join("x/y/l")).unwrap();
        fsync_tree(t.path()).unwrap();
        sync_whole_tree(t.path()).unwrap();
    }
}
