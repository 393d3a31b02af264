//! Volume backends (issue 15): how this node keeps a volume's data on its
//! file system so that a **point** — a state the volume actually had at one
//! instant, as after a power cut — can be taken cheaply and kept while the
//! next one is received. It owns the choice of backend (`Backend::select`,
//! probed once at start), the volume directory's creation, `capture` (live
//! tree → point), `clone_tree` (a writable copy of a point) and
//! `remove_tree`, plus which ranges of a reflinked file changed
//! (`changed_ranges`, from FIEMAP). Synchronous, blocking file-system code
//! like the rest of `volume`: no Docker, network or Raft. Pausing the app
//! (`docker pause`) around a capture is the caller's, when `needs_pause`.
//!
//! What each backend captures, and why the point is consistent:
//!
//! - **btrfs**: each volume's `data` is a subvolume; a point is a read-only
//!   snapshot of it (`BTRFS_IOC_SNAP_CREATE_V2`). The snapshot is taken in
//!   one transaction commit and holds, across all files at once, every write
//!   that returned before the call (fsynced or not) and none made after it
//!   returned; a write racing with it may be in it in part, as with a power
//!   cut. A crash-consistent state with the app running, so no pause. A
//!   `data` made as a plain directory (before this backend) is captured like
//!   xfs, paused (`capture_method` says which).
//! - **xfs** (any file system where `FICLONE` works): a point is a fresh
//!   reflink copy of the tree (blocks shared, metadata copied), built under
//!   a hidden `.<name>.partial` and renamed into place. The app is paused
//!   for the copy, so the tree holds still; `FICLONE` writes the source's
//!   dirty pages back before sharing them, so the copy has what the app
//!   wrote, mmap'd writes included. Cost in the pause: per file and extent,
//!   not per byte.
//! - **dir** (plain directories, any file system): a point is a full plain
//!   copy kept between captures; each capture updates the previous point in
//!   place, paused, writing only the 4 KiB blocks that differ (see `sync` for
//!   which files it reads and why a crash mid-update loses nothing). Cost
//!   in the pause: the changed files' bytes, read twice, written once.
//!
//! What a point holds, next to the volume as `scan` defines it (what a move
//! carries): the same directories, files, symlinks, modes, owners and mtimes
//! on every backend. xfs and dir copies leave out xattrs and ACLs, fifos,
//! sockets and devices, and copy hard links as separate files, as a move
//! does; a btrfs snapshot keeps them all. On btrfs a subvolume the app made
//! inside its volume is not in the snapshot (it appears as an empty
//! directory).

mod btrfs;
mod copy;
pub mod extents;
mod limit;
pub mod loopfs;
mod probe;
mod remove;
mod sync;

#[cfg(test)]
mod tests;

pub use extents::changed_ranges;
pub use limit::SizeLimit;
pub use probe::FsType;

use super::error::{IoContext, Result, VolumeError};
use super::sys;
use copy::FileCopy;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// What `flocker node --volume-backend` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// The best the volumes' file system allows: btrfs, then xfs, then dir.
    #[default]
    Auto,
    Btrfs,
    Xfs,
    Dir,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<BackendChoice, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "btrfs" => Ok(BackendChoice::Btrfs),
            "xfs" => Ok(BackendChoice::Xfs),
            "dir" => Ok(BackendChoice::Dir),
            other => Err(format!(
                "unknown volume backend {other:?}: choose auto, btrfs, xfs or dir"
            )),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Btrfs => "btrfs",
            BackendChoice::Xfs => "xfs",
            BackendChoice::Dir => "dir",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Btrfs,
    Xfs,
    Dir,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Btrfs => "btrfs",
            BackendKind::Xfs => "xfs",
            BackendKind::Dir => "dir",
        })
    }
}

/// How one capture or clone was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureMethod {
    /// A btrfs snapshot: atomic, the app may keep running.
    Snapshot,
    /// A fresh tree of reflinked files (files the file system would not
    /// share are copied: `bytes_copied`).
    Reflink,
    /// The previous copy updated in place, only differing blocks written.
    Update,
}

impl CaptureMethod {
    /// Whether the tree must hold still (the app paused) while this runs.
    pub fn needs_pause(self) -> bool {
        self != CaptureMethod::Snapshot
    }
}

/// What a capture or clone did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureStats {
    pub method: CaptureMethod,
    /// Data bytes written (copied files, differing blocks).
    pub bytes_copied: u64,
    /// Data bytes shared by reflink, not written.
    pub bytes_reflinked: u64,
    /// Regular files created, reflinked or written into.
    pub files: u64,
    /// Entries of the previous copy removed (`Update` only).
    pub removed: u64,
    /// Fifos, sockets and devices left out (not part of a volume).
    pub skipped: u64,
    pub elapsed: Duration,
}

/// The counters the copying modules add to.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    bytes_copied: u64,
    bytes_reflinked: u64,
    files: u64,
    removed: u64,
    skipped: u64,
}

impl Tally {
    fn stats(self, method: CaptureMethod, started: Instant) -> CaptureStats {
        CaptureStats {
            method,
            bytes_copied: self.bytes_copied,
            bytes_reflinked: self.bytes_reflinked,
            files: self.files,
            removed: self.removed,
            skipped: self.skipped,
            elapsed: started.elapsed(),
        }
    }
}

/// What is left of a capture after its data is written: on dir, making
/// the point durable (and trusted as the next update's base).
#[derive(Debug)]
#[must_use = "a point is not to be used before it settled"]
pub struct Settle(Option<sync::Unsynced>);

impl Settle {
    pub fn settle(self) -> Result<()> {
        match self.0 {
            Some(unsynced) => unsynced.make_durable(),
            None => Ok(()),
        }
    }
}

/// This node's backend, for volumes under one root.
#[derive(Clone, Debug)]
pub struct Backend {
    kind: BackendKind,
    root: PathBuf,
    fs: FsType,
    /// Why `auto` settled for `dir` on a file system that has a backend.
    note: Option<String>,
    /// Whether quota groups could be turned on (btrfs, the first time a
    /// volume is bounded), shared by the clones of this backend.
    quota: std::sync::Arc<std::sync::OnceLock<std::result::Result<(), String>>>,
}

impl Backend {
    /// Chooses the backend for volumes under `volumes_root` (which must
    /// exist), trying there what the backend needs. An explicit choice the
    /// file system cannot do is an error naming the path and what was found.
    pub fn select(
        volumes_root: &Path,
        choice: BackendChoice,
    ) -> std::result::Result<Backend, String> {
        let shown = volumes_root.display();
        let fs = FsType::of(volumes_root)
            .map_err(|e| format!("volume backend {choice}: cannot inspect {shown}: {e}"))?;
        let backend = |kind, note| Backend {
            kind,
            root: volumes_root.to_path_buf(),
            fs,
            note,
            quota: Default::default(),
        };
        match choice {
            BackendChoice::Dir => Ok(backend(BackendKind::Dir, None)),
            BackendChoice::Btrfs if fs != FsType::Btrfs => Err(format!(
                "volume backend btrfs: {shown} is on {fs}, not btrfs"
            )),
            BackendChoice::Btrfs => probe::try_subvolumes(volumes_root)
                .map(|()| backend(BackendKind::Btrfs, None))
                .map_err(|why| format!("volume backend btrfs: {shown} is on btrfs, but {why}")),
            BackendChoice::Xfs => probe::try_reflink(volumes_root)
                .map(|()| backend(BackendKind::Xfs, None))
                .map_err(|why| {
                    let hint = if fs == FsType::Xfs {
                        " (an XFS made without reflink: mkfs.xfs -m reflink=1)"
                    } else {
                        ""
                    };
                    format!("volume backend xfs: {shown} is on {fs}, and {why}{hint}")
                }),
            BackendChoice::Auto => {
                let (kind, tried) = match fs {
                    FsType::Btrfs => (BackendKind::Btrfs, probe::try_subvolumes(volumes_root)),
                    FsType::Xfs => (BackendKind::Xfs, probe::try_reflink(volumes_root)),
                    _ => return Ok(backend(BackendKind::Dir, None)),
                };
                Ok(match tried {
                    Ok(()) => backend(kind, None),
                    Err(why) => backend(BackendKind::Dir, Some(format!("not {kind}: {why}"))),
                })
            }
        }
    }

    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn file_system(&self) -> FsType {
        self.fs
    }

    /// One line for the node's start log.
    pub fn describe(&self) -> String {
        let how = match self.kind {
            BackendKind::Btrfs => "snapshots, no pause",
            BackendKind::Xfs => "reflink copies, short pause",
            BackendKind::Dir => "changed blocks copied, pause",
        };
        let mut line = format!(
            "volume backend: {} ({how}) on {} ({})",
            self.kind,
            self.root.display(),
            self.fs
        );
        if let Some(note) = &self.note {
            line.push_str(&format!("; {note}"));
        }
        line
    }

    /// Whether captures on this backend run while the app is paused. On
    /// btrfs a volume made as a plain directory still needs one: ask
    /// `capture_method` for a given volume.
    pub fn needs_pause(&self) -> bool {
        self.kind != BackendKind::Btrfs
    }

    /// How `capture(live, _)` will capture this volume.
    pub fn capture_method(&self, live: &Path) -> Result<CaptureMethod> {
        Ok(match self.kind {
            BackendKind::Btrfs if btrfs::is_subvolume(&copy::lstat(live)?) => {
                CaptureMethod::Snapshot
            }
            BackendKind::Btrfs | BackendKind::Xfs => CaptureMethod::Reflink,
            BackendKind::Dir => CaptureMethod::Update,
        })
    }

    /// Creates a volume's data directory (a subvolume on btrfs, so it can be
    /// snapshotted; a directory elsewhere), private (0700) like the store,
    /// and its missing parents. One that exists is left as it is.
    pub fn create_volume_dir(&self, path: &Path) -> Result<()> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_dir() => return Ok(()),
            Ok(_) => {
                return Err(VolumeError::Invalid(format!(
                    "{} exists and is not a directory",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("lstat", path),
        }
        let parent = parent_of(path);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .ctx("create", parent)?;
        if self.kind == BackendKind::Btrfs {
            btrfs::create_subvolume(path).ctx("create subvolume", path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                .ctx("chmod", path)?;
        } else {
            copy::make_dir(path)?;
        }
        sys::fsync_dir(parent)
    }

    /// Makes `point` hold exactly the tree at `live` at one instant (the
    /// caller pauses the app around it when `capture_method(live)` says so).
    /// btrfs and xfs replace whatever `point` held; dir updates the previous
    /// point in place (or makes a first one). Not fsynced on btrfs and xfs,
    /// where a point serves shipping in this boot (a btrfs snapshot is
    /// durable anyway); on dir the point is durable, being the next base.
    /// On error there is no new point: on btrfs `point` is gone, on xfs it
    /// is what it was before, on dir a copy the next capture repairs.
    pub fn capture(&self, live: &Path, point: &Path) -> Result<CaptureStats> {
        let (stats, settle) = self.capture_unsettled(live, point)?;
        settle.settle()?;
        Ok(stats)
    }

    /// [`capture`](Self::capture) whose last step, making a dir point
    /// durable, is left to the caller ([`Settle::settle`]): the app need
    /// not stay paused through the fsyncs of what its point copied. The
    /// point is not to be used before it settled.
    pub fn capture_unsettled(&self, live: &Path, point: &Path) -> Result<(CaptureStats, Settle)> {
        let started = Instant::now();
        apart(live, point)?;
        let method = self.capture_method(live)?;
        let mut tally = Tally::default();
        let settle = match method {
            CaptureMethod::Snapshot => {
                self.snapshot(live, point, true)?;
                Settle(None)
            }
            CaptureMethod::Reflink => {
                fresh_copy(live, point, false, &mut tally)?;
                Settle(None)
            }
            CaptureMethod::Update => Settle(Some(sync::update_tree(live, point, &mut tally)?)),
        };
        Ok((tally.stats(method, started), settle))
    }

    /// Makes `to` a writable copy of `from`, leaving `from` as it was, for a
    /// replica to receive the next point into: a writable snapshot on btrfs
    /// (when `from` is a subvolume), a reflink copy on xfs. On dir, an
    /// existing `to` is updated in place to equal `from`, writing only what
    /// differs: keep two copies and alternate (double buffering), or pay a
    /// full copy each time. Durable when it returns, on every backend.
    pub fn clone_tree(&self, from: &Path, to: &Path) -> Result<CaptureStats> {
        let started = Instant::now();
        apart(from, to)?;
        let mut tally = Tally::default();
        let method = match self.kind {
            BackendKind::Btrfs if btrfs::is_subvolume(&copy::lstat(from)?) => {
                self.snapshot(from, to, false)?;
                CaptureMethod::Snapshot
            }
            BackendKind::Btrfs | BackendKind::Xfs => {
                fresh_copy(from, to, true, &mut tally)?;
                CaptureMethod::Reflink
            }
            BackendKind::Dir => {
                sync::sync_tree(from, to, &mut tally)?;
                CaptureMethod::Update
            }
        };
        Ok(tally.stats(method, started))
    }

    /// Removes `path` and everything below it (subvolumes and read-only
    /// snapshots included), never following a symlink out of it.
    pub fn remove_tree(&self, path: &Path) -> Result<()> {
        remove::remove_tree(path)
    }

    fn snapshot(&self, from: &Path, to: &Path, read_only: bool) -> Result<()> {
        remove::remove_tree(to)?;
        btrfs::snapshot(from, to, read_only).ctx("snapshot to", to)
    }
}

/// Refuses a copy into its own source or over an ancestor of it (a copy
/// inside the tree it walks would never end). Compares the paths as given.
fn apart(from: &Path, to: &Path) -> Result<()> {
    if to.starts_with(from) || from.starts_with(to) {
        return Err(VolumeError::Invalid(format!(
            "cannot copy {} to {}: one holds the other",
            from.display(),
            to.display()
        )));
    }
    Ok(())
}

/// A new reflink copy of `from` at `to`, replacing it, built under a hidden
/// sibling and renamed into place: `to` is whole or absent, even after a crash.
fn fresh_copy(from: &Path, to: &Path, durable: bool, tally: &mut Tally) -> Result<()> {
    let staging = hidden_sibling(to, ".partial")?;
    remove::remove_tree(&staging)?;
    if let Err(e) = copy::copy_tree(from, &staging, FileCopy::Reflink, tally) {
        // Best effort: the next copy removes it too.
        let _ = remove::remove_tree(&staging);
        return Err(e);
    }
    if durable {
        crate::durable::sync_whole_tree(&staging).ctx("sync", &staging)?;
    }
    remove::remove_tree(to)?;
    std::fs::rename(&staging, to).ctx("rename into place", to)?;
    if durable {
        sys::fsync_dir(parent_of(to))?;
    }
    Ok(())
}

/// `<parent>/.<name><suffix>`: hidden (app names hold no `.`), next to `path`.
fn hidden_sibling(path: &Path, suffix: &str) -> Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        VolumeError::Invalid(format!("{}: a copy needs a last name", path.display()))
    })?;
    let mut sibling = OsString::from(".");
    sibling.push(name);
    sibling.push(suffix);
    Ok(path.with_file_name(sibling))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
