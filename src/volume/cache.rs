//! `HashCache`: per volume, what a file's block hashes were the last time it
//! was read (keyed by size, mtime, ctime and inode), so a rescan reads only
//! files whose key changed; plus the owners this node was asked to give but
//! could not (not running as root), and the modes it chose not to write in
//! full (setuid and setgid bits of received files, unless the app's volume
//! says `preserve_setuid`). It owns that record and its file next to the
//! volume's `data`; it does not walk directories (`scan`).
//!
//! Both overrides work the same way: the volume is what the sender had (its
//! root hash counts the sender's owner and mode), the disk holds what this
//! node could or would write, and the override maps one to the other only
//! while the entry still has exactly what this node left on disk. A copy
//! received with its bits stripped therefore scans as the sender's, matches
//! its root and is not sent again; moved onward, it carries the real mode.
//!
//! Why ctime is in the key: the receiver sets mtimes back to the sender's
//! after writing, so size + mtime + inode would hide its own writes after a
//! crash; ctime cannot be set back by anyone.
//!
//! Why a "racy" window: timestamps are coarse (a kernel tick), so a change
//! in the same tick as the recording leaves the key as it was. An entry
//! recorded less than [`RACY_WINDOW`] after its file's last change is not
//! trusted: the next scan reads that file again. Writes through `mmap` are
//! covered by the scan, not the window: it writes a file's dirty pages back
//! (`fdatasync`) before reading it, which write-protects them, so a later
//! write through a mapping faults and moves mtime like `write(2)` does.
//! (Without that, a page already dirty when read could change again with
//! no timestamp moving until writeback, ~35 s later.)
//!
//! The file is a cache: missing, unreadable or failing its checksum, it is
//! dropped and every file is read once more. The owner overrides live in it
//! too, because losing them only costs a resend of metadata.

use super::error::{IoContext, Result, VolumeError};
use super::hash::Hash;
use super::manifest::{join_ns, FileData, Meta};
use super::path::RelPath;
use super::sys;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// See the module comment: far longer than a timestamp tick (≤ 10 ms).
pub const RACY_WINDOW: Duration = Duration::from_secs(1);

const MAGIC: &[u8; 8] = b"FLKCACHE";
/// 2 added the mode overrides; a version 1 file is still read.
const VERSION: u32 = 2;
/// A cache file larger than this is not read (it would describe ~128 GiB).
const MAX_CACHE_BYTES: u64 = 1 << 30;

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatKey {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
}

impl StatKey {
    pub fn of(m: &std::fs::Metadata) -> StatKey {
        StatKey {
            size: m.size(),
            mtime_ns: join_ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: join_ns(m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
        }
    }
}

/// The owner an entry should have (`want`) while this node, not root, left
/// it as `disk`. Applies only while the entry still has the `disk` owner, so
/// a later real chown is seen as such.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerOverride {
    pub disk: (u32, u32),
    pub want: (u32, u32),
}

/// The mode an entry should have (`want`, as the sender had it) while this
/// node wrote `disk` (without setuid and setgid). Applies only while the
/// entry still has the `disk` mode, so a later real chmod is seen as such.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeOverride {
    pub disk: u32,
    pub want: u32,
}

struct Cached {
    key: StatKey,
    recorded_at_ns: i64,
    data: Arc<FileData>,
}

#[derive(Default)]
pub struct HashCache {
    files: BTreeMap<RelPath, Cached>,
    owners: BTreeMap<RelPath, OwnerOverride>,
    modes: BTreeMap<RelPath, ModeOverride>,
}

impl HashCache {
    pub fn new() -> HashCache {
        HashCache::default()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The recorded hashes, if `key` is unchanged and was not racy.
    pub(crate) fn lookup(
        &self,
        path: &RelPath,
        key: &StatKey,
        window: Duration,
    ) -> Option<Arc<FileData>> {
        let c = self.files.get(path)?;
        let window_ns = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
        let changed_at = key.mtime_ns.max(key.ctime_ns);
        let racy = changed_at >= c.recorded_at_ns.saturating_sub(window_ns);
        (c.key == *key && !racy && c.data.size() == key.size).then(|| c.data.clone())
    }

    /// Records hashes read (or written) starting at `recorded_at_ns`.
    pub(crate) fn record(
        &mut self,
        path: RelPath,
        key: StatKey,
        recorded_at_ns: i64,
        data: Arc<FileData>,
    ) {
        self.files.insert(
            path,
            Cached {
                key,
                recorded_at_ns,
                data,
            },
        );
    }

    /// Drops every record below or at `path`.
    pub(crate) fn forget_subtree(&mut self, path: &RelPath) {
        self.files
            .retain(|p, _| !(p == path || path.is_ancestor_of(p)));
        self.owners
            .retain(|p, _| !(p == path || path.is_ancestor_of(p)));
        self.modes
            .retain(|p, _| !(p == path || path.is_ancestor_of(p)));
    }

    /// Keeps only the records `keep` accepts (after a scan: what exists).
    pub(crate) fn retain(&mut self, keep: impl Fn(&RelPath) -> bool) {
        self.files.retain(|p, _| keep(p));
        self.owners.retain(|p, _| keep(p));
        self.modes.retain(|p, _| keep(p));
    }

    pub(crate) fn set_owner(&mut self, path: &RelPath, o: Option<OwnerOverride>) {
        match o {
            Some(o) => self.owners.insert(path.clone(), o),
            None => self.owners.remove(path),
        };
    }

    pub(crate) fn set_mode(&mut self, path: &RelPath, o: Option<ModeOverride>) {
        match o {
            Some(o) => self.modes.insert(path.clone(), o),
            None => self.modes.remove(path),
        };
    }

    /// `meta` as the volume should see it: the recorded owner and mode where
    /// the entry still has the owner or mode this node left it with.
    pub(crate) fn volume_view(&self, path: &RelPath, mut meta: Meta) -> Meta {
        if let Some(o) = self.owners.get(path) {
            if o.disk == (meta.uid, meta.gid) {
                (meta.uid, meta.gid) = o.want;
            }
        }
        if let Some(o) = self.modes.get(path) {
            if o.disk == meta.mode {
                meta.mode = o.want;
            }
        }
        meta
    }

    pub fn owner_overrides(&self) -> usize {
        self.owners.len()
    }

    pub fn mode_overrides(&self) -> usize {
        self.modes.len()
    }

    /// Reads a cache file; `Ok(empty)` when there is none.
    pub fn load(path: &Path) -> Result<HashCache> {
        let bytes = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashCache::new()),
            Err(e) => return Err(e).ctx("stat", path),
            Ok(m) if m.len() > MAX_CACHE_BYTES => {
                return Err(corrupt(
                    path,
                    format!("{} bytes is over the limit", m.len()),
                ))
            }
            Ok(_) => std::fs::read(path).ctx("read", path)?,
        };
        if bytes.len() < MAGIC.len() + 4 + 32 || !bytes.starts_with(MAGIC) {
            return Err(corrupt(path, "not a cache file".into()));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(corrupt(path, "checksum mismatch".into()));
        }
        let version = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
        let disk: DiskCache = match version {
            VERSION => postcard::from_bytes(&body[12..]),
            1 => postcard::from_bytes::<DiskCacheV1>(&body[12..]).map(DiskCacheV1::upgrade),
            _ => return Err(corrupt(path, format!("version {version}"))),
        }
        .map_err(|e| corrupt(path, e.to_string()))?;
        let mut cache = HashCache::new();
        for f in disk.files {
            let data = FileData::new(f.size, f.leaves).map_err(|e| corrupt(path, e))?;
            cache.record(f.path, f.key, f.recorded_at_ns, Arc::new(data));
        }
        cache.owners = disk.owners.into_iter().collect();
        cache.modes = disk.modes.into_iter().collect();
        Ok(cache)
    }

    /// Writes the cache durably and atomically as `dir/name`.
    pub fn save(&self, dir: &Path, name: &str) -> Result<()> {
        let body = DiskCacheRef {
            files: self
                .files
                .iter()
                .map(|(p, c)| DiskFileRef {
                    path: p,
                    key: c.key,
                    recorded_at_ns: c.recorded_at_ns,
                    size: c.data.size(),
                    leaves: c.data.leaves(),
                })
                .collect(),
            owners: self.owners.iter().collect(),
            modes: self.modes.iter().collect(),
        };
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        let mut bytes = postcard::to_extend(&body, bytes)
            .map_err(|e| VolumeError::Invalid(format!("encoding the hash cache: {e}")))?;
        let sum = blake3::hash(&bytes);
        bytes.extend_from_slice(sum.as_bytes());
        sys::write_atomic(dir, name, &bytes)
    }
}

fn corrupt(path: &Path, why: String) -> VolumeError {
    VolumeError::Corrupt {
        what: "hash cache",
        path: path.to_path_buf(),
        why,
    }
}

#[derive(Serialize)]
struct DiskCacheRef<'a> {
    files: Vec<DiskFileRef<'a>>,
    owners: Vec<(&'a RelPath, &'a OwnerOverride)>,
    modes: Vec<(&'a RelPath, &'a ModeOverride)>,
}

#[derive(Serialize)]
struct DiskFileRef<'a> {
    path: &'a RelPath,
    key: StatKey,
    recorded_at_ns: i64,
    size: u64,
    leaves: &'a [Hash],
}

#[derive(Deserialize)]
struct DiskCache {
    files: Vec<DiskFile>,
    owners: Vec<(RelPath, OwnerOverride)>,
    modes: Vec<(RelPath, ModeOverride)>,
}

/// Version 1: no mode overrides (every mode was written as received).
#[derive(Deserialize)]
struct DiskCacheV1 {
    files: Vec<DiskFile>,
    owners: Vec<(RelPath, OwnerOverride)>,
}

impl DiskCacheV1 {
    fn upgrade(self) -> DiskCache {
        DiskCache {
            files: self.files,
            owners: self.owners,
            modes: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
struct DiskFile {
    path: RelPath,
    key: StatKey,
    recorded_at_ns: i64,
    size: u64,
    leaves: Vec<Hash>,
}
