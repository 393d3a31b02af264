//! Scanning one copy into a `Manifest`: walk `data` without following
//! symlinks, take each entry's metadata, and hash only the files whose
//! `StatKey` changed since the `HashCache` last saw them. It owns the read
//! side of block hashing (holes found with `SEEK_DATA`/`SEEK_HOLE` are not
//! read at all); it does not decide what to send.
//!
//! Runs while the app may be writing: entries that vanish mid-walk are left
//! out, and a file changed while being read has a new ctime, so the next scan
//! reads it again (the racy window covers changes within one timestamp tick).
//! Fifos, sockets and devices are skipped and counted; hard links are
//! copied as separate files. Blocking I/O: call it from `spawn_blocking`.

use super::cache::{HashCache, StatKey, RACY_WINDOW};
use super::error::{IoContext, Result, VolumeError};
use super::hash::{self, Hash, BLOCK_SIZE};
use super::manifest::{Entry, FileData, Kind, Manifest, Meta};
use super::path::RelPath;
use super::summary::Limits;
use super::sys;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Bytes read per `pread` while hashing: the bounded buffer of a scan.
const READ_WINDOW: usize = 1 << 20;

#[derive(Clone, Copy, Debug)]
pub struct ScanOptions {
    /// See `cache::RACY_WINDOW`; tests use zero to see cache hits at once.
    pub racy_window: Duration,
    /// A scan holds 32 bytes per 4 KiB of logical file size: an app that
    /// creates a huge sparse file must fail the scan, not exhaust memory.
    pub limits: Limits,
}

impl Default for ScanOptions {
    fn default() -> ScanOptions {
        ScanOptions {
            racy_window: RACY_WINDOW,
            limits: Limits::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    /// Fifos, sockets and device nodes: not part of a volume.
    pub skipped: u64,
    /// Files read and hashed because their key changed (or was racy).
    pub hashed_files: u64,
    /// Bytes read for those (holes are not read).
    pub hashed_bytes: u64,
    pub reused_files: u64,
}

/// Scans `data` (a volume's `data` directory), updating `cache`.
pub fn scan(
    data: &Path,
    cache: &mut HashCache,
    opts: &ScanOptions,
) -> Result<(Manifest, ScanReport)> {
    let mut report = ScanReport::default();
    let mut manifest = Manifest::default();
    let root_meta = std::fs::symlink_metadata(data).ctx("lstat", data)?;
    if !root_meta.file_type().is_dir() {
        return Err(VolumeError::Invalid(format!(
            "{} is not a directory",
            data.display()
        )));
    }
    let root = RelPath::root();
    manifest.insert(
        root.clone(),
        Entry {
            meta: cache.volume_view(&root, Meta::of(&root_meta)),
            kind: Kind::Dir,
        },
    );
    report.dirs += 1;
    let mut buf = vec![0u8; READ_WINDOW];
    let mut logical = 0u64;
    // Explicit stack: depth is bounded by MAX_PATH, but not by the thread's stack.
    let mut dirs: Vec<(RelPath, PathBuf)> = vec![(root, data.to_path_buf())];
    while let Some((rel_dir, dir)) = dirs.pop() {
        let listing = match std::fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == ErrorKind::NotFound && !rel_dir.is_root() => continue,
            Err(e) => return Err(e).ctx("read directory", &dir),
        };
        for item in listing {
            let item = match item {
                Ok(i) => i,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx("read directory", &dir),
            };
            let name = item.file_name();
            let rel = rel_dir.join(name.as_bytes()).map_err(|e| {
                VolumeError::Invalid(format!(
                    "{}: cannot be moved: {e}",
                    dir.join(&name).display()
                ))
            })?;
            let path = dir.join(&name);
            let m = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx("lstat", &path),
            };
            if manifest.len() as u64 >= opts.limits.max_entries {
                return Err(VolumeError::Invalid(format!(
                    "{} holds more than {} entries",
                    data.display(),
                    opts.limits.max_entries
                )));
            }
            let ft = m.file_type();
            let entry = if ft.is_dir() {
                report.dirs += 1;
                dirs.push((rel.clone(), path));
                Entry {
                    meta: Meta::of(&m),
                    kind: Kind::Dir,
                }
            } else if ft.is_symlink() {
                let target = match std::fs::read_link(&path) {
                    Ok(t) => t.into_os_string().into_vec(),
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e).ctx("readlink", &path),
                };
                report.symlinks += 1;
                Entry {
                    meta: Meta::of(&m),
                    kind: Kind::Symlink(target),
                }
            } else if ft.is_file() {
                logical = logical.saturating_add(m.len());
                if logical > opts.limits.max_bytes {
                    return Err(VolumeError::Invalid(format!(
                        "{} holds more than {} bytes (holes count)",
                        data.display(),
                        opts.limits.max_bytes
                    )));
                }
                let key = StatKey::of(&m);
                let (meta, data) = match cache.lookup(&rel, &key, opts.racy_window) {
                    Some(d) => {
                        report.reused_files += 1;
                        (Meta::of(&m), d)
                    }
                    None => {
                        let Some(h) = hash_file(&path, &mut buf, opts.limits.max_bytes)? else {
                            continue;
                        };
                        report.hashed_files += 1;
                        report.hashed_bytes += h.read_bytes;
                        let data = Arc::new(h.data);
                        cache.record(rel.clone(), h.key, h.started_ns, data.clone());
                        (h.meta, data)
                    }
                };
                report.files += 1;
                Entry {
                    meta,
                    kind: Kind::File(data),
                }
            } else {
                report.skipped += 1;
                tracing::debug!(path = %path.display(), "not a file, directory or symlink: skipped");
                continue;
            };
            let meta = cache.volume_view(&rel, entry.meta);
            manifest.insert(rel, Entry { meta, ..entry });
        }
    }
    cache.retain(|p| manifest.get(p).is_some());
    Ok((manifest, report))
}

struct Hashed {
    key: StatKey,
    meta: Meta,
    data: FileData,
    started_ns: i64,
    read_bytes: u64,
}

/// Reads and hashes one file; `None` if it vanished or stopped being a
/// regular file. Key and metadata come from the opened file, so they
/// describe the inode that was read.
fn hash_file(path: &Path, buf: &mut [u8], max_size: u64) -> Result<Option<Hashed>> {
    // O_NONBLOCK: if a fifo replaced the file since lstat, opening it must
    // not wait for a writer.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e)
            if e.kind() == ErrorKind::NotFound
                || matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENXIO)) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e).ctx("open", path),
    };
    let m = file.metadata().ctx("fstat", path)?;
    if !m.file_type().is_file() {
        return Ok(None);
    }
    // Writing back the dirty pages write-protects them again, so any later
    // write through a shared mapping faults and moves mtime: from here on
    // the stat key sees every change (see `cache`'s racy window).
    file.sync_data().ctx("fdatasync", path)?;
    let started_ns = sys::now_ns();
    let m = file.metadata().ctx("fstat", path)?;
    let size = m.len();
    if size > max_size {
        return Err(VolumeError::Invalid(format!(
            "{} has grown to {size} bytes, over the limit of {max_size}",
            path.display()
        )));
    }
    let mut leaves: Vec<Hash> = Vec::with_capacity(hash::block_count(size) as usize);
    let mut holes = DataCursor::new();
    let mut read_bytes = 0u64;
    let mut off = 0u64;
    while off < size {
        let len = (size - off).min(READ_WINDOW as u64) as usize;
        if holes.is_hole(&file, off, len as u64) {
            leaves.extend(
                (off / BLOCK_SIZE as u64..(off + len as u64).div_ceil(BLOCK_SIZE as u64))
                    .map(|i| hash::zero_hash(hash::block_len(size, i))),
            );
        } else {
            let window = &mut buf[..len];
            read_full_at(&file, window, off).ctx("read", path)?;
            read_bytes += len as u64;
            leaves.extend(window.chunks(BLOCK_SIZE).map(hash::leaf_hash));
        }
        off += len as u64;
    }
    let data = FileData::new(size, leaves).map_err(VolumeError::Invalid)?;
    Ok(Some(Hashed {
        key: StatKey::of(&m),
        meta: Meta::of(&m),
        data,
        started_ns,
        read_bytes,
    }))
}

/// Fills `buf` from `off`; past the end of the file (it shrank while being
/// read) the rest reads as zeros, which is what the receiver will hold.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                return Ok(());
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Walks a file's data extents forward, asking the kernel only when a read
/// passes the extent it knows.
struct DataCursor {
    data_start: u64,
    data_end: u64,
    supported: bool,
}

impl DataCursor {
    fn new() -> DataCursor {
        DataCursor {
            data_start: 0,
            data_end: 0,
            supported: true,
        }
    }

    /// Whether `[off, off + len)` lies wholly in a hole. Any error turns the
    /// cursor off: everything is then read, which is only slower.
    fn is_hole(&mut self, file: &File, off: u64, len: u64) -> bool {
        if !self.supported {
            return false;
        }
        if off >= self.data_end {
            match sys::seek_data(file, off) {
                Ok(Some(start)) => {
                    self.data_start = start;
                    self.data_end = sys::seek_hole(file, start).unwrap_or(u64::MAX);
                }
                Ok(None) => {
                    self.data_start = u64::MAX;
                    self.data_end = u64::MAX;
                }
                Err(_) => {
                    self.supported = false;
                    return false;
                }
            }
        }
        off.saturating_add(len) <= self.data_start
    }
}
