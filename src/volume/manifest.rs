//! `Manifest`: what one copy of a volume holds, as this node has scanned or
//! written it: every entry below `data` (directory, file, symlink) with the
//! metadata a move preserves, and for files every block hash. It owns the
//! in-memory shape and the root over it; it does not read the disk (`scan`)
//! nor travel as is (a peer sees a `Summary`, built from `wire` items).
//!
//! Memory: 32 bytes per 4 KiB of file data (8 MiB per GiB) plus the entries.
//! File data sits behind an `Arc`, so the manifests of successive rounds and
//! the hash cache share every file that did not change, and a file's hash is
//! computed once per content.

use super::hash::{self, Hash, HashedKind, GROUP_BLOCKS};
use super::path::RelPath;
use super::wire::{EntryHeader, EntryKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, OnceLock};

/// The metadata a move preserves. `mode` is the permission bits only
/// (`0o7777`, so setuid, setgid and sticky too); a symlink's is 0o777 on Linux.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
}

impl Meta {
    pub fn of(m: &std::fs::Metadata) -> Meta {
        Meta {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime_ns: join_ns(m.mtime(), m.mtime_nsec()),
        }
    }
}

/// Seconds and nanoseconds as one `i64`, saturating (±292 years).
pub(crate) fn join_ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// One file's content as block hashes; its count always matches its size.
pub struct FileData {
    size: u64,
    leaves: Box<[Hash]>,
    hash: OnceLock<Hash>,
}

impl FileData {
    pub fn new(size: u64, leaves: Vec<Hash>) -> Result<FileData, String> {
        if leaves.len() as u64 != hash::block_count(size) {
            return Err(format!(
                "{} block hashes for a file of {size} bytes",
                leaves.len()
            ));
        }
        Ok(FileData {
            size,
            leaves: leaves.into_boxed_slice(),
            hash: OnceLock::new(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn leaves(&self) -> &[Hash] {
        &self.leaves
    }

    pub fn group_count(&self) -> u64 {
        hash::group_count(self.leaves.len() as u64)
    }

    pub fn group_leaves(&self, g: u64) -> Option<&[Hash]> {
        let start = usize::try_from(g).ok()?.checked_mul(GROUP_BLOCKS)?;
        let end = start.saturating_add(GROUP_BLOCKS).min(self.leaves.len());
        (start < end).then(|| &self.leaves[start..end])
    }

    pub fn group(&self, g: u64) -> Option<Hash> {
        self.group_leaves(g).map(hash::group_hash)
    }

    /// The file hash, computed once per `FileData`.
    pub fn hash(&self) -> Hash {
        *self.hash.get_or_init(|| {
            hash::file_hash(
                self.size,
                self.leaves.chunks(GROUP_BLOCKS).map(hash::group_hash),
            )
        })
    }

    pub fn is_zero_block(&self, i: u64) -> bool {
        let Some(leaf) = usize::try_from(i).ok().and_then(|i| self.leaves.get(i)) else {
            return false;
        };
        *leaf == hash::zero_hash(hash::block_len(self.size, i))
    }
}

impl PartialEq for FileData {
    fn eq(&self, other: &FileData) -> bool {
        self.size == other.size && self.leaves == other.leaves
    }
}

impl Eq for FileData {}

impl fmt::Debug for FileData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FileData({} bytes, {} blocks)",
            self.size,
            self.leaves.len()
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    Symlink(Vec<u8>),
    File(Arc<FileData>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub meta: Meta,
    pub kind: Kind,
}

impl Entry {
    pub fn hash(&self, path: &RelPath) -> Hash {
        let kind = match &self.kind {
            Kind::Dir => HashedKind::Dir,
            Kind::Symlink(t) => HashedKind::Symlink(t),
            Kind::File(f) => HashedKind::File(f.hash()),
        };
        hash::entry_hash(path, &self.meta, kind)
    }

    pub fn header(&self, path: &RelPath) -> EntryHeader {
        EntryHeader {
            path: path.clone(),
            meta: self.meta,
            kind: match &self.kind {
                Kind::Dir => EntryKind::Dir,
                Kind::Symlink(t) => EntryKind::Symlink { target: t.clone() },
                Kind::File(f) => EntryKind::File { size: f.size() },
            },
        }
    }

    pub fn file(&self) -> Option<&Arc<FileData>> {
        match &self.kind {
            Kind::File(f) => Some(f),
            _ => None,
        }
    }
}

/// Entries in `RelPath` order; a scanned manifest always holds the root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: BTreeMap<RelPath, Entry>,
}

impl Manifest {
    pub fn get(&self, path: &RelPath) -> Option<&Entry> {
        self.entries.get(path)
    }

    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, RelPath, Entry> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Logical bytes of all files (holes included).
    pub fn data_bytes(&self) -> u64 {
        self.entries
            .values()
            .filter_map(Entry::file)
            .map(|f| f.size())
            .sum()
    }

    /// The root hash (see `hash` for its definition).
    pub fn root(&self) -> Hash {
        hash::root_hash(
            self.entries.len() as u64,
            self.entries.iter().map(|(p, e)| e.hash(p)),
        )
    }

    pub(crate) fn insert(&mut self, path: RelPath, entry: Entry) {
        self.entries.insert(path, entry);
    }

    /// Removes `path` and everything below it.
    pub(crate) fn remove_subtree(&mut self, path: &RelPath) {
        let doomed: Vec<RelPath> = self
            .entries
            .range(path.clone()..)
            .map(|(p, _)| p)
            .take_while(|p| *p == path || path.is_ancestor_of(p))
            .cloned()
            .collect();
        for p in doomed {
            self.entries.remove(&p);
        }
    }
}

impl FromIterator<(RelPath, Entry)> for Manifest {
    fn from_iter<I: IntoIterator<Item = (RelPath, Entry)>>(iter: I) -> Manifest {
        Manifest {
            entries: iter.into_iter().collect(),
        }
    }
}
