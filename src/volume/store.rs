//! `VolumeStore`: where a node keeps its copies of volumes, and the rules
//! about a copy as a whole: create, mountable or not, set aside. Layout:
//!
//! ```text
//! <data-dir>/volumes/<app>/data          what the agent bind-mounts
//! <data-dir>/volumes/<app>/mark          see `mark`
//! <data-dir>/volumes/<app>/cache         see `cache`
//! <data-dir>/volumes/<app>.stale-<epoch> a copy kept aside (`volume recover`)
//! ```
//!
//! The mark and cache sit next to `data`, never inside it, so the app cannot
//! see or change them and they are not part of the volume. App names are
//! checked with the configuration's rule, which allows no `.`, so no app's
//! directory can collide with a stale copy's.
//!
//! It does not decide epochs or ownership (committed through Raft by the
//! caller) and does not lock: one move at a time per app is the caller's
//! rule. Blocking I/O: call it from `spawn_blocking`.

use super::cache::HashCache;
use super::error::{IoContext, Result, VolumeError};
use super::hash::Hash;
use super::manifest::Manifest;
use super::mark::{self, Mark, MarkState};
use super::scan::{self, ScanOptions, ScanReport};
use super::sys;
use std::path::{Path, PathBuf};

pub const DATA_DIR: &str = "data";
pub const CACHE_FILE: &str = "cache";
const STALE_INFIX: &str = ".stale-";

#[derive(Clone, Debug)]
pub struct VolumeStore {
    root: PathBuf,
    /// How new copies' `data` directories are made (a btrfs subvolume, so
    /// points of it are snapshots); plain directories without one.
    backend: Option<super::backend::Backend>,
}

/// A copy set aside by `set_aside`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleCopy {
    pub path: PathBuf,
    /// The epoch in its name: the epoch its mark had when set aside.
    pub epoch: u64,
    pub mark: Option<Mark>,
}

impl VolumeStore {
    /// The store under a node's data directory (`<data-dir>/volumes`),
    /// created private (0700: other local users must not read apps' data;
    /// `node::data_dir` also tightens an existing one).
    pub fn open(data_dir: &Path) -> Result<VolumeStore> {
        Self::open_at(data_dir.join("volumes"))
    }

    /// A store rooted at `root` itself (a replica's slot), created private.
    pub fn open_at(root: PathBuf) -> Result<VolumeStore> {
        // Each part made durable: a power cut must not lose a slot whose
        // marks and data were fsynced.
        crate::durable::create_dir_all(&root, 0o700).ctx("create", &root)?;
        Ok(VolumeStore {
            root,
            backend: None,
        })
    }

    /// This store with new copies made by `backend`.
    pub fn with_backend(mut self, backend: super::backend::Backend) -> VolumeStore {
        self.backend = Some(backend);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Bounds `app`'s copy to `max` bytes (`None`: unbounded) where this
    /// store's backend can; see [`Backend::limit_volume`]. Blocking.
    ///
    /// [`Backend::limit_volume`]: super::backend::Backend::limit_volume
    pub fn limit_volume(&self, app: &str, max: Option<u64>) -> super::backend::SizeLimit {
        use super::backend::SizeLimit;
        let data = match self.data_dir(app) {
            Ok(data) => data,
            Err(e) => return SizeLimit::Reported(e.to_string()),
        };
        match &self.backend {
            Some(backend) => backend.limit_volume(&data, max),
            None => SizeLimit::Reported("this store has no volume backend".into()),
        }
    }

    /// Creates `app`'s `data` directory (and its volume directory) if
    /// missing, as the backend makes volumes.
    pub fn create_data_dir(&self, app: &str) -> Result<PathBuf> {
        let data = self.data_dir(app)?;
        if data.symlink_metadata().is_ok() {
            return Ok(data);
        }
        let dir = self.volume_dir(app)?;
        crate::durable::create_dir_all(&dir, 0o777).ctx("create", &dir)?;
        match &self.backend {
            Some(backend) => backend.create_volume_dir(&data)?,
            None => crate::durable::create_dir_all(&data, 0o777).ctx("create", &data)?,
        }
        Ok(data)
    }

    pub fn volume_dir(&self, app: &str) -> Result<PathBuf> {
        crate::config::check_app_name(app).map_err(VolumeError::Invalid)?;
        Ok(self.root.join(app))
    }

    /// The directory the agent bind-mounts for `app`.
    pub fn data_dir(&self, app: &str) -> Result<PathBuf> {
        Ok(self.volume_dir(app)?.join(DATA_DIR))
    }

    pub fn exists(&self, app: &str) -> Result<bool> {
        let dir = self.volume_dir(app)?;
        match std::fs::symlink_metadata(&dir) {
            Ok(m) => Ok(m.is_dir()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).ctx("lstat", &dir),
        }
    }

    pub fn mark(&self, app: &str) -> Result<Option<Mark>> {
        mark::read_mark(&self.volume_dir(app)?)
    }

    /// Invariant 5's gate: only a Complete copy at exactly the committed
    /// epoch. A missing, unreadable or corrupt mark is not mountable.
    pub fn mountable(&self, app: &str, committed_epoch: u64) -> bool {
        match self.mark(app) {
            Ok(Some(m)) => m.is_complete_at(committed_epoch),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(app, error = %e, "volume mark unreadable: not mountable");
                false
            }
        }
    }

    /// A new, empty volume owned by this node from `epoch` on (its first
    /// placement). Refuses if a marked copy exists.
    /// Re-marks a copy that is Complete at `from` as Complete at `to` with
    /// the same root (a recovered cluster's fresh epoch for the copies it
    /// already owned). Returns whether it did.
    pub fn remark_complete(&self, app: &str, from: u64, to: u64) -> Result<bool> {
        let dir = self.volume_dir(app)?;
        match mark::read_mark(&dir)? {
            Some(mark) if mark.is_complete_at(from) => {
                mark::write_mark(&dir, &Mark { epoch: to, ..mark })?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub fn create_empty(&self, app: &str, epoch: u64) -> Result<Mark> {
        let dir = self.volume_dir(app)?;
        // A corrupt mark refuses too: that copy may hold the only data.
        if self.mark(app)?.is_some() {
            return Err(VolumeError::Invalid(format!(
                "{} already holds a copy of {app}",
                dir.display()
            )));
        }
        self.create_data_dir(app)?;
        sys::fsync_dir(&self.root)?;
        let mut scanner = self.scanner(app, ScanOptions::default())?;
        let (manifest, _) = scanner.scan()?;
        self.mark_complete(app, epoch, manifest.root())
    }

    /// Marks a copy Incomplete before a round's first write; keeps the
    /// epoch and root of its last Complete state. No write if it already is.
    pub(crate) fn mark_incomplete(&self, app: &str) -> Result<Mark> {
        let dir = self.volume_dir(app)?;
        let prev = match mark::read_mark(&dir) {
            Ok(m) => m,
            Err(VolumeError::Corrupt { .. }) => None,
            Err(e) => return Err(e),
        };
        if let Some(m) = prev.filter(|m| m.state == MarkState::Incomplete) {
            return Ok(m);
        }
        let m = Mark {
            state: MarkState::Incomplete,
            epoch: prev.map_or(0, |m| m.epoch),
            root: prev.map_or([0; 32], |m| m.root),
        };
        mark::write_mark(&dir, &m)?;
        Ok(m)
    }

    /// Only `Round::finish` (equal roots) and `adopt_as_complete` call this.
    pub(crate) fn mark_complete(&self, app: &str, epoch: u64, root: Hash) -> Result<Mark> {
        let m = Mark {
            state: MarkState::Complete,
            epoch,
            root,
        };
        mark::write_mark(&self.volume_dir(app)?, &m)?;
        Ok(m)
    }

    /// For `volume recover --accept-data-loss` only: takes this copy, whatever
    /// it holds, as the volume at the new `epoch`.
    pub fn adopt_as_complete(&self, app: &str, epoch: u64, opts: ScanOptions) -> Result<Mark> {
        let mut scanner = self.scanner(app, opts)?;
        let (manifest, _) = scanner.scan()?;
        scanner.save()?;
        self.mark_complete(app, epoch, manifest.root())
    }

    /// Moves this node's copy of `app` aside as `<app>.stale-<epoch>` (its
    /// mark's epoch), so it is never mounted again but stays for recovery.
    pub fn set_aside(&self, app: &str) -> Result<Option<PathBuf>> {
        if !self.exists(app)? {
            return Ok(None);
        }
        let dir = self.volume_dir(app)?;
        let epoch = match self.mark(app) {
            Ok(m) => m.map_or(0, |m| m.epoch),
            Err(_) => 0,
        };
        let base = format!("{app}{STALE_INFIX}{epoch}");
        for n in 0..1000 {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let target = self.root.join(name);
            if target.symlink_metadata().is_ok() {
                continue;
            }
            std::fs::rename(&dir, &target).ctx("set aside", &dir)?;
            sys::fsync_dir(&self.root)?;
            return Ok(Some(target));
        }
        Err(VolumeError::Invalid(format!(
            "{app}: 1000 stale copies at epoch {epoch} already"
        )))
    }

    /// The copies of `app` set aside, newest epoch first.
    pub fn stale_copies(&self, app: &str) -> Result<Vec<StaleCopy>> {
        crate::config::check_app_name(app).map_err(VolumeError::Invalid)?;
        let prefix = format!("{app}{STALE_INFIX}");
        let mut out = Vec::new();
        for item in std::fs::read_dir(&self.root).ctx("read directory", &self.root)? {
            let item = item.ctx("read directory", &self.root)?;
            let name = item.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            let Ok(epoch) = rest.split('-').next().unwrap_or("").parse::<u64>() else {
                continue;
            };
            let path = item.path();
            let mark = mark::read_mark(&path).ok().flatten();
            out.push(StaleCopy { path, epoch, mark });
        }
        out.sort_by(|a, b| b.epoch.cmp(&a.epoch).then_with(|| a.path.cmp(&b.path)));
        Ok(out)
    }

    /// The hash cache of `app`; an unreadable one is dropped (it is a cache).
    pub fn load_cache(&self, app: &str) -> Result<HashCache> {
        let path = self.volume_dir(app)?.join(CACHE_FILE);
        match HashCache::load(&path) {
            Ok(c) => Ok(c),
            Err(e @ VolumeError::Corrupt { .. }) => {
                tracing::warn!(app, error = %e, "hash cache dropped: every file is read again");
                Ok(HashCache::new())
            }
            Err(e) => Err(e),
        }
    }

    pub fn save_cache(&self, app: &str, cache: &HashCache) -> Result<()> {
        cache.save(&self.volume_dir(app)?, CACHE_FILE)
    }

    /// A scanner over `app`'s copy with its cache loaded.
    pub fn scanner(&self, app: &str, opts: ScanOptions) -> Result<Scanner> {
        Ok(Scanner {
            store: self.clone(),
            app: app.to_string(),
            data: self.data_dir(app)?,
            cache: self.load_cache(app)?,
            opts,
        })
    }
}

/// One copy's scans, keeping its hash cache in memory between them: a
/// sender scans once per round and saves the cache when the move is done,
/// so no cache write lands in the app's downtime.
pub struct Scanner {
    store: VolumeStore,
    app: String,
    data: PathBuf,
    cache: HashCache,
    opts: ScanOptions,
}

impl Scanner {
    pub fn scan(&mut self) -> Result<(Manifest, ScanReport)> {
        scan::scan(&self.data, &mut self.cache, &self.opts)
    }

    pub fn save(&self) -> Result<()> {
        self.store.save_cache(&self.app, &self.cache)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn cache(&self) -> &HashCache {
        &self.cache
    }
}
