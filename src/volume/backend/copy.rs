//! Copying a tree entry by entry, as a volume is defined (see `scan`):
//! directories, regular files and symlinks, each with its mode, owner and
//! mtime. Fifos, sockets and devices are skipped (not part of a volume),
//! hard links become separate files, and extended attributes are not copied
//! (a move does not carry them either, so a replica could not have them).
//! File data is reflinked (`FICLONE`: the blocks are shared, nothing is
//! written) or copied range by range with its holes kept. Nothing is ever
//! followed through a symlink: entries are `lstat`ed and files opened
//! `O_NOFOLLOW`. It owns these per-entry steps; `sync` reuses them to update
//! a copy in place.

use super::super::error::{IoContext, Result, VolumeError};
use super::super::sys;
use super::Tally;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Bytes per read while copying data: the bounded buffer of a copy.
pub(super) const WINDOW: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FileCopy {
    /// Share blocks (`FICLONE`); a file the file system refuses to share is
    /// copied instead (counted as copied bytes).
    Reflink,
    Plain,
}

/// What an entry is, as far as a volume cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EntryKind {
    Dir,
    File,
    Symlink,
    /// Fifo, socket or device: skipped.
    Other,
}

impl EntryKind {
    pub(super) fn of(m: &Metadata) -> EntryKind {
        let t = m.file_type();
        if t.is_dir() {
            EntryKind::Dir
        } else if t.is_file() {
            EntryKind::File
        } else if t.is_symlink() {
            EntryKind::Symlink
        } else {
            EntryKind::Other
        }
    }
}

/// Copies the tree at `from` to `to`, which must not exist. Metadata is set
/// last, deepest directory first, so no later step changes an mtime set.
pub(super) fn copy_tree(from: &Path, to: &Path, how: FileCopy, tally: &mut Tally) -> Result<()> {
    let root = lstat(from)?;
    if EntryKind::of(&root) != EntryKind::Dir {
        return Err(VolumeError::Invalid(format!(
            "{} is not a directory",
            from.display()
        )));
    }
    make_dir(to)?;
    let mut dirs: Vec<(PathBuf, Metadata)> = vec![(to.to_path_buf(), root)];
    // Explicit stack: the depth of a tree must not bound on the thread's stack.
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((src_dir, dst_dir)) = stack.pop() {
        for item in std::fs::read_dir(&src_dir).ctx("read directory", &src_dir)? {
            let name = item.ctx("read directory", &src_dir)?.file_name();
            let (src, dst) = (src_dir.join(&name), dst_dir.join(&name));
            let m = lstat(&src)?;
            match EntryKind::of(&m) {
                EntryKind::Dir => {
                    make_dir(&dst)?;
                    stack.push((src, dst.clone()));
                    dirs.push((dst, m));
                }
                EntryKind::File => {
                    let source = open_source(&src)?;
                    copy_new_file(&source, &src, &dst, m.len(), how, tally)?;
                    match_metadata(&dst, &m)?;
                }
                EntryKind::Symlink => copy_symlink(&src, &dst, &m)?,
                EntryKind::Other => tally.skipped += 1,
            }
        }
    }
    for (dst, m) in dirs.iter().rev() {
        match_metadata(dst, m)?;
    }
    Ok(())
}

pub(super) fn lstat(path: &Path) -> Result<Metadata> {
    std::fs::symlink_metadata(path).ctx("lstat", path)
}

/// A directory private to this node until its own mode is set.
pub(super) fn make_dir(path: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .ctx("create directory", path)
}

/// Opens a file to read from, never through a symlink.
pub(super) fn open_source(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ctx("open", path)
}

/// Creates `dst` (which must not exist) with `len` bytes of `source`.
pub(super) fn copy_new_file(
    source: &File,
    src: &Path,
    dst: &Path,
    len: u64,
    how: FileCopy,
    tally: &mut Tally,
) -> Result<()> {
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dst)
        .ctx("create", dst)?;
    tally.files += 1;
    if len == 0 {
        return Ok(());
    }
    if how == FileCopy::Reflink {
        match sys::reflink(source, &out) {
            Ok(()) => {
                tally.bytes_reflinked += len;
                return Ok(());
            }
            Err(e) if cannot_reflink(&e) => {}
            Err(e) => return Err(e).ctx("reflink", dst),
        }
    }
    tally.bytes_copied += copy_data(source, src, &out, dst, len)?;
    Ok(())
}

/// The errors by which a file system says it cannot share these blocks (as
/// opposed to a failing disk).
fn cannot_reflink(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::EXDEV) | Some(libc::EINVAL)
    )
}

/// Writes the data ranges of `source` into `out` (fresh, empty) and sets
/// its length: holes stay holes. Returns the bytes written. The source's
/// dirty pages are written back first: that write-protects its mmap'd
/// pages, which `sync` relies on to see later writes through a mapping.
fn copy_data(source: &File, src: &Path, out: &File, dst: &Path, len: u64) -> Result<u64> {
    sys::write_back(source).ctx("write back", src)?;
    let mut buf = vec![0u8; WINDOW];
    let mut written = 0;
    let mut pos = 0;
    while pos < len {
        let Some(start) = sys::seek_data(source, pos).ctx("seek data", src)? else {
            break;
        };
        if start >= len {
            break;
        }
        let end = sys::seek_hole(source, start)
            .ctx("seek hole", src)?
            .min(len);
        let mut off = start;
        while off < end {
            let n = (end - off).min(WINDOW as u64) as usize;
            source.read_exact_at(&mut buf[..n], off).ctx("read", src)?;
            out.write_all_at(&buf[..n], off).ctx("write", dst)?;
            off += n as u64;
            written += n as u64;
        }
        pos = end;
    }
    out.set_len(len).ctx("set length", dst)?;
    Ok(written)
}

/// Creates the symlink `dst` as `src` (which it reads, never follows).
pub(super) fn copy_symlink(src: &Path, dst: &Path, m: &Metadata) -> Result<()> {
    let target = std::fs::read_link(src).ctx("readlink", src)?;
    std::os::unix::fs::symlink(&target, dst).ctx("create symlink", dst)?;
    match_metadata(dst, m).map(drop)
}

/// Gives `path` the owner, mode and mtime of `want`, touching only what
/// differs. Returns whether it changed anything. Owner first: a chown
/// clears setuid and setgid bits, so the mode is set after it.
pub(super) fn match_metadata(path: &Path, want: &Metadata) -> Result<bool> {
    let have = lstat(path)?;
    let mut changed = false;
    let chowned = (have.uid(), have.gid()) != (want.uid(), want.gid());
    if chowned {
        std::os::unix::fs::lchown(path, Some(want.uid()), Some(want.gid())).ctx("chown", path)?;
        changed = true;
    }
    let mode = want.mode() & 0o7777;
    // A symlink's mode cannot be set (and is always 0777 on Linux).
    if !have.file_type().is_symlink() && (chowned || have.mode() & 0o7777 != mode) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).ctx("chmod", path)?;
        changed = true;
    }
    if (have.mtime(), have.mtime_nsec()) != (want.mtime(), want.mtime_nsec()) {
        set_mtime(path, want)?;
        changed = true;
    }
    Ok(changed)
}

pub(super) fn set_mtime(path: &Path, want: &Metadata) -> Result<()> {
    let ns = super::super::manifest::join_ns(want.mtime(), want.mtime_nsec());
    sys::set_mtime_nofollow(path, ns).ctx("set mtime", path)
}
