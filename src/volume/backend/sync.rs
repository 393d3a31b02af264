//! The `dir` backend's capture: bring an existing plain copy (the previous
//! point) up to a tree by writing only what differs, then make it durable.
//! It owns the rule for when a file of the copy may be trusted without being
//! read, and the marker that withdraws that trust after a crash.
//!
//! **When a file is not read.** Its size, mtime, mode and owner equal the
//! source's, and the copy's ctime is at least [`RACY_WINDOW`] later than the
//! source's. The copy's ctime is when this module last wrote or checked it
//! (nobody else writes a point), so the source has not changed since, unless
//! a change fell in the same timestamp tick as the last check (hence the
//! window, as in `cache`). Every other file is read on both sides and only
//! its differing 4 KiB blocks ([`BLOCK_SIZE`]) are written; a hole in the
//! source punches one in the copy.
//!
//! **Writes through `mmap`.** A page already dirty and writable-mapped can
//! change again without any timestamp moving. Each source file's dirty
//! pages are written back (`sync_file_range`: no journal commit or cache
//! flush, which would cost the paused app milliseconds per file) before it
//! is read, which write-protects them, so a later write through a mapping
//! faults and moves ctime (as `scan` does with `fdatasync`).
//!
//! **Crashes.** The trust rule needs a copy's data on disk whenever its
//! ctime is. While an update runs, an empty marker `.<name>.updating` sits
//! next to the copy (created and made durable first, removed once every
//! changed file and directory is); an update that finds one trusts nothing
//! and reads every file. Removed entries, new entries and changed
//! directories are made durable by the same final sync.

use super::super::cache::RACY_WINDOW;
use super::super::error::{IoContext, Result};
use super::super::hash::BLOCK_SIZE;
use super::super::manifest::join_ns;
use super::super::sys;
use super::copy::{self, EntryKind, FileCopy, WINDOW};
use super::Tally;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io::ErrorKind;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Above this many changed files and directories one `syncfs` replaces the
/// per-entry fsyncs (as in `apply`).
const SYNCFS_THRESHOLD: usize = 64;

/// Makes `to` equal the tree at `from`, writing only what differs; creates
/// it when missing; durable when it returns. On error `to` is neither
/// tree, and the marker stays, so the next update reads everything.
pub(super) fn sync_tree(from: &Path, to: &Path, tally: &mut Tally) -> Result<()> {
    update_tree(from, to, tally)?.make_durable()
}

/// [`sync_tree`] up to its data written: what is left is to make it
/// durable ([`Unsynced::make_durable`]), which a point does after its app
/// is thawed — the written data is already the instant it captured, and
/// the marker keeps the copy untrusted until it is durable.
pub(super) fn update_tree(from: &Path, to: &Path, tally: &mut Tally) -> Result<Unsynced> {
    let marker = super::hidden_sibling(to, ".updating")?;
    let trust = match std::fs::symlink_metadata(&marker) {
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::NotFound => true,
        Err(e) => return Err(e).ctx("lstat", &marker),
    };
    if trust {
        File::create(&marker).ctx("create", &marker)?;
        sys::fsync_dir(super::parent_of(&marker))?;
    }
    let mut run = Update {
        trust,
        tally,
        a: vec![0; WINDOW],
        b: vec![0; WINDOW],
        unsynced: Unsynced {
            to: to.to_path_buf(),
            marker,
            changed_files: Vec::new(),
            changed_dirs: Vec::new(),
            everything_changed: false,
        },
    };
    match std::fs::symlink_metadata(to) {
        Ok(m) if m.file_type().is_dir() => run.update(from, to)?,
        Ok(_) => {
            std::fs::remove_file(to).ctx("remove", to)?;
            run.fresh(from, to)?;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => run.fresh(from, to)?,
        Err(e) => return Err(e).ctx("lstat", to),
    }
    Ok(run.unsynced)
}

/// An updated copy whose changes are written but not yet durable.
#[derive(Debug)]
pub struct Unsynced {
    to: PathBuf,
    /// Present while the copy may not be trusted.
    marker: PathBuf,
    changed_files: Vec<PathBuf>,
    changed_dirs: Vec<PathBuf>,
    /// A fresh copy: no finer list than the whole file system to sync.
    everything_changed: bool,
}

impl Unsynced {
    /// Makes every change durable, then withdraws the marker.
    pub fn make_durable(self) -> Result<()> {
        let many = self.changed_files.len() + self.changed_dirs.len() > SYNCFS_THRESHOLD;
        if self.everything_changed || many {
            // One syncfs where it is sound, each file and directory elsewhere.
            crate::durable::sync_whole_tree(&self.to).ctx("sync", &self.to)?;
        } else {
            for f in &self.changed_files {
                copy::open_source(f)?.sync_all().ctx("fsync", f)?;
            }
            for d in &self.changed_dirs {
                sys::fsync_dir(d)?;
            }
        }
        std::fs::remove_file(&self.marker).ctx("remove", &self.marker)?;
        sys::fsync_dir(super::parent_of(&self.marker))
    }
}

struct Update<'t> {
    trust: bool,
    tally: &'t mut Tally,
    /// Read buffers, source and copy: the bounded memory of an update.
    a: Vec<u8>,
    b: Vec<u8>,
    unsynced: Unsynced,
}

impl Update<'_> {
    fn fresh(&mut self, from: &Path, to: &Path) -> Result<()> {
        // A plain copy writes each source back before reading it, as `update` does.
        copy::copy_tree(from, to, FileCopy::Plain, self.tally)?;
        self.unsynced.everything_changed = true;
        Ok(())
    }

    fn update(&mut self, from: &Path, to: &Path) -> Result<()> {
        let mut dirs: Vec<(PathBuf, Metadata)> = vec![(to.to_path_buf(), copy::lstat(from)?)];
        let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
        while let Some((src_dir, dst_dir)) = stack.pop() {
            let src = listing(&src_dir)?;
            let mut dst = listing(&dst_dir)?;
            let mut dir_changed = false;
            // Entries gone from the source, or of another kind now.
            let mut gone = Vec::new();
            dst.retain(|name, m| {
                let keep = src
                    .get(name)
                    .is_some_and(|s| EntryKind::of(s) == EntryKind::of(m));
                if !keep {
                    gone.push(name.clone());
                }
                keep
            });
            for name in gone {
                remove_entry(&dst_dir.join(&name))?;
                self.tally.removed += 1;
                dir_changed = true;
            }
            for (name, m) in src {
                let (s, d) = (src_dir.join(&name), dst_dir.join(&name));
                let existing = dst.get(&name);
                match EntryKind::of(&m) {
                    EntryKind::Dir => {
                        if existing.is_none() {
                            copy::make_dir(&d)?;
                            dir_changed = true;
                        }
                        stack.push((s, d.clone()));
                        dirs.push((d, m));
                    }
                    EntryKind::File => {
                        dir_changed |= existing.is_none();
                        self.file(&s, &d, &m, existing)?;
                    }
                    EntryKind::Symlink => dir_changed |= self.symlink(&s, &d, &m, existing)?,
                    EntryKind::Other => self.tally.skipped += 1,
                }
            }
            if dir_changed {
                self.unsynced.changed_dirs.push(dst_dir);
            }
        }
        for (d, m) in dirs.iter().rev() {
            copy::match_metadata(d, m)?;
        }
        Ok(())
    }

    fn file(
        &mut self,
        s: &Path,
        d: &Path,
        m: &Metadata,
        existing: Option<&Metadata>,
    ) -> Result<()> {
        if let Some(have) = existing {
            if self.trust && unchanged(m, have) {
                return Ok(());
            }
        }
        let source = copy::open_source(s)?;
        let wrote = match existing {
            None => {
                copy::copy_new_file(&source, s, d, m.len(), FileCopy::Plain, self.tally)?;
                true
            }
            Some(_) => {
                // Write-protects mmap'd pages: see the module comment.
                sys::write_back(&source).ctx("write back", s)?;
                self.patch(&source, s, d, m.len())?
            }
        };
        if wrote {
            self.unsynced.changed_files.push(d.to_path_buf());
        }
        // Checked now, whatever it held: the copy's ctime must say so (see
        // "When a file is not read"), so set the mtime again if nothing did.
        if !copy::match_metadata(d, m)? {
            copy::set_mtime(d, m)?;
        }
        Ok(())
    }

    /// Writes into the existing copy `d` the blocks of `source` that differ;
    /// returns whether it wrote anything.
    fn patch(&mut self, source: &File, s: &Path, d: &Path, len: u64) -> Result<bool> {
        let out = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(d)
            .ctx("open for writing", d)?;
        let mut wrote = false;
        if out.metadata().ctx("stat", d)?.len() != len {
            out.set_len(len).ctx("set length", d)?;
            wrote = true;
        }
        let mut pos = 0;
        while pos < len {
            let data = sys::seek_data(source, pos)
                .ctx("seek data", s)?
                .unwrap_or(len)
                .min(len);
            wrote |= clear(&out, d, pos, data)?;
            if data >= len {
                break;
            }
            let hole = sys::seek_hole(source, data).ctx("seek hole", s)?.min(len);
            wrote |= self.patch_range(source, s, &out, d, data, hole)?;
            pos = hole;
        }
        if wrote {
            self.tally.files += 1;
        }
        Ok(wrote)
    }

    /// Compares `[start, end)` of both files block by block and writes the
    /// runs of differing blocks.
    fn patch_range(
        &mut self,
        source: &File,
        s: &Path,
        out: &File,
        d: &Path,
        start: u64,
        end: u64,
    ) -> Result<bool> {
        let mut wrote = false;
        let mut off = start - start % BLOCK_SIZE as u64;
        while off < end {
            let n = (end - off).min(WINDOW as u64) as usize;
            source.read_exact_at(&mut self.a[..n], off).ctx("read", s)?;
            out.read_exact_at(&mut self.b[..n], off).ctx("read", d)?;
            for run in differing_blocks(&self.a[..n], &self.b[..n]) {
                let at = off + run.start as u64;
                out.write_all_at(&self.a[run.clone()], at).ctx("write", d)?;
                self.tally.bytes_copied += run.len() as u64;
                wrote = true;
            }
            off += n as u64;
        }
        Ok(wrote)
    }

    /// Returns whether the directory's entries changed.
    fn symlink(
        &mut self,
        s: &Path,
        d: &Path,
        m: &Metadata,
        existing: Option<&Metadata>,
    ) -> Result<bool> {
        if existing.is_some() {
            let want = std::fs::read_link(s).ctx("readlink", s)?;
            if std::fs::read_link(d).ctx("readlink", d)? == want {
                copy::match_metadata(d, m)?;
                return Ok(false);
            }
            std::fs::remove_file(d).ctx("remove", d)?;
        }
        copy::copy_symlink(s, d, m)?;
        Ok(true)
    }
}

/// The runs of whole blocks (the last may be short) in which `a` and `b`
/// differ, as byte ranges.
fn differing_blocks(a: &[u8], b: &[u8]) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    for (i, (x, y)) in a.chunks(BLOCK_SIZE).zip(b.chunks(BLOCK_SIZE)).enumerate() {
        if x == y {
            continue;
        }
        let block = i * BLOCK_SIZE..i * BLOCK_SIZE + x.len();
        match runs.last_mut() {
            Some(last) if last.end == block.start => last.end = block.end,
            _ => runs.push(block),
        }
    }
    runs
}

/// The trust rule of the module comment.
fn unchanged(src: &Metadata, copy: &Metadata) -> bool {
    let racy = i64::try_from(RACY_WINDOW.as_nanos()).unwrap_or(i64::MAX);
    let src_ctime = join_ns(src.ctime(), src.ctime_nsec());
    let copy_ctime = join_ns(copy.ctime(), copy.ctime_nsec());
    src.len() == copy.len()
        && (src.mtime(), src.mtime_nsec()) == (copy.mtime(), copy.mtime_nsec())
        && src.mode() & 0o7777 == copy.mode() & 0o7777
        && (src.uid(), src.gid()) == (copy.uid(), copy.gid())
        && src_ctime.saturating_add(racy) <= copy_ctime
}

/// Makes `[start, end)` of `out` read as zeros by punching out whatever data
/// it holds there. Returns whether there was any.
fn clear(out: &File, d: &Path, start: u64, end: u64) -> Result<bool> {
    let mut cleared = false;
    let mut pos = start;
    while pos < end {
        let Some(data) = sys::seek_data(out, pos).ctx("seek data", d)? else {
            break;
        };
        if data >= end {
            break;
        }
        let hole = sys::seek_hole(out, data).ctx("seek hole", d)?.min(end);
        if !sys::punch_hole(out, data, hole - data).ctx("punch hole", d)? {
            write_zeros(out, d, data, hole)?;
        }
        cleared = true;
        pos = hole;
    }
    Ok(cleared)
}

fn write_zeros(out: &File, d: &Path, start: u64, end: u64) -> Result<()> {
    let zeros = vec![0u8; WINDOW];
    let mut off = start;
    while off < end {
        let n = (end - off).min(WINDOW as u64) as usize;
        out.write_all_at(&zeros[..n], off).ctx("write", d)?;
        off += n as u64;
    }
    Ok(())
}

/// Each entry of `dir` with its `lstat`, by name.
fn listing(dir: &Path) -> Result<BTreeMap<OsString, Metadata>> {
    let mut out = BTreeMap::new();
    for name in listing_names(dir)? {
        let m = copy::lstat(&dir.join(&name))?;
        out.insert(name, m);
    }
    Ok(out)
}

fn listing_names(dir: &Path) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).ctx("read directory", dir)? {
        out.push(item.ctx("read directory", dir)?.file_name());
    }
    Ok(out)
}

/// A file, symlink or plain directory of the copy (never followed).
fn remove_entry(path: &Path) -> Result<()> {
    let m = copy::lstat(path)?;
    if m.file_type().is_dir() {
        std::fs::remove_dir_all(path).ctx("remove", path)
    } else {
        std::fs::remove_file(path).ctx("remove", path)
    }
}
