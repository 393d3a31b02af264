//! `Summary`: what a sender knows about the receiver's copy, the `have` side
//! of a delta. Either exact (the sender's own record of what it sent last
//! round: `Summary::from_manifest`) or a peer's word, built and checked item
//! by item from its `SummaryItem`s by `SummaryBuilder`, which holds files by
//! group hashes and learns block hashes only for the groups that differ
//! (`leaf_requests` / `add_leaves`). It does not compute the delta itself.
//!
//! A peer's summary is untrusted input: its paths arrive validated by type,
//! and the builder refuses disorder, orphans, miscounted groups and anything
//! past the receiver-given `Limits`, so memory stays bounded; block hashes a
//! peer returns must hash to the group hash it sent first.

use super::error::{peer, Result};
use super::hash::{self, Hash, GROUP_BLOCKS};
use super::manifest::{FileData, Kind, Manifest, Meta};
use super::path::RelPath;
use super::wire::{
    EntryHeader, EntryKind, LeafReply, LeafRequest, SummaryItem, MAX_GROUPS_PER_REQUEST,
    MAX_HASHES_PER_ITEM,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Bounds on what a peer may describe or send, so that its summary or delta
/// cannot make this node allocate without limit. Block bookkeeping costs
/// 32 bytes per 4 KiB of `max_bytes` (or per 64 KiB for a peer's summary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: u64,
    /// Sum of file sizes (logical: holes count).
    pub max_bytes: u64,
}

impl Default for Limits {
    /// 4 million entries and 64 GiB: at most 512 MiB of block hashes. A
    /// caller that knows the volume's `maximum_size` passes that instead.
    fn default() -> Limits {
        Limits {
            max_entries: 4_000_000,
            max_bytes: 64 << 30,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SummaryEntry {
    pub meta: Meta,
    pub kind: SummaryKind,
}

#[derive(Clone, Debug)]
pub enum SummaryKind {
    Dir,
    Symlink(Vec<u8>),
    File(FileSummary),
}

impl SummaryKind {
    pub(crate) fn same_kind(&self, other: &Kind) -> bool {
        matches!(
            (self, other),
            (SummaryKind::Dir, Kind::Dir)
                | (SummaryKind::Symlink(_), Kind::Symlink(_))
                | (SummaryKind::File(_), Kind::File(_))
        )
    }
}

#[derive(Clone, Debug)]
pub enum FileSummary {
    /// Every block hash known.
    Local(Arc<FileData>),
    /// Group hashes, and block hashes for the groups asked about.
    Peer {
        size: u64,
        groups: Vec<Hash>,
        leaves: BTreeMap<u64, Box<[Hash]>>,
    },
}

impl FileSummary {
    pub fn size(&self) -> u64 {
        match self {
            FileSummary::Local(f) => f.size(),
            FileSummary::Peer { size, .. } => *size,
        }
    }

    pub(crate) fn leaf(&self, i: u64) -> Option<Hash> {
        match self {
            FileSummary::Local(f) => usize::try_from(i)
                .ok()
                .and_then(|i| f.leaves().get(i))
                .copied(),
            FileSummary::Peer { leaves, .. } => {
                let g = leaves.get(&(i / GROUP_BLOCKS as u64))?;
                g.get((i % GROUP_BLOCKS as u64) as usize).copied()
            }
        }
    }

    pub(crate) fn knows_leaves_of(&self, g: u64) -> bool {
        match self {
            FileSummary::Local(_) => true,
            FileSummary::Peer { leaves, .. } => leaves.contains_key(&g),
        }
    }

    pub(crate) fn group(&self, g: u64) -> Option<Hash> {
        match self {
            FileSummary::Local(f) => f.group(g),
            FileSummary::Peer { groups, .. } => {
                usize::try_from(g).ok().and_then(|g| groups.get(g)).copied()
            }
        }
    }

    fn hash(&self) -> Hash {
        match self {
            FileSummary::Local(f) => f.hash(),
            FileSummary::Peer { size, groups, .. } => {
                hash::file_hash(*size, groups.iter().copied())
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Summary {
    entries: BTreeMap<RelPath, SummaryEntry>,
}

impl Summary {
    /// A receiver with no copy at all.
    pub fn empty() -> Summary {
        Summary::default()
    }

    /// An exact summary: what the sender knows the receiver holds because it
    /// sent it (see `ChunkReader::finish`). Shares the file data.
    pub fn from_manifest(m: &Manifest) -> Summary {
        let entries = m
            .iter()
            .map(|(p, e)| {
                let kind = match &e.kind {
                    Kind::Dir => SummaryKind::Dir,
                    Kind::Symlink(t) => SummaryKind::Symlink(t.clone()),
                    Kind::File(f) => SummaryKind::File(FileSummary::Local(f.clone())),
                };
                (p.clone(), SummaryEntry { meta: e.meta, kind })
            })
            .collect();
        Summary { entries }
    }

    pub fn get(&self, path: &RelPath) -> Option<&SummaryEntry> {
        self.entries.get(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&RelPath, &SummaryEntry)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The same root as the copy's `Manifest::root` (files hash from their
    /// groups, so block hashes are not needed).
    pub fn root(&self) -> Hash {
        hash::root_hash(
            self.entries.len() as u64,
            self.entries.iter().map(|(p, e)| {
                let kind = match &e.kind {
                    SummaryKind::Dir => hash::HashedKind::Dir,
                    SummaryKind::Symlink(t) => hash::HashedKind::Symlink(t),
                    SummaryKind::File(f) => hash::HashedKind::File(f.hash()),
                };
                hash::entry_hash(p, &e.meta, kind)
            }),
        )
    }

    /// The groups whose block hashes the sender should ask for: those of a
    /// file both sides hold that differ, except where the sender's group is
    /// all zeros (punching needs no comparison). Each request is bounded.
    pub fn leaf_requests(&self, want: &Manifest) -> Vec<LeafRequest> {
        let mut out = Vec::new();
        for (path, entry) in want.iter() {
            let (Kind::File(w), Some(SummaryKind::File(h))) =
                (&entry.kind, self.entries.get(path).map(|e| &e.kind))
            else {
                continue;
            };
            let mut groups = Vec::new();
            for g in 0..w.group_count() {
                let Some(theirs) = h.group(g) else { break };
                if h.knows_leaves_of(g) {
                    continue;
                }
                let Some(mine) = w.group_leaves(g) else { break };
                if hash::group_hash(mine) == theirs {
                    continue;
                }
                let first = g * GROUP_BLOCKS as u64;
                if (first..first + mine.len() as u64).all(|i| w.is_zero_block(i)) {
                    continue;
                }
                groups.push(g);
                if groups.len() == MAX_GROUPS_PER_REQUEST {
                    out.push(LeafRequest {
                        path: path.clone(),
                        groups: std::mem::take(&mut groups),
                    });
                }
            }
            if !groups.is_empty() {
                out.push(LeafRequest {
                    path: path.clone(),
                    groups,
                });
            }
        }
        out
    }

    /// Takes a peer's answer to `req`, checking each group's block hashes
    /// against the group hash the peer sent earlier.
    pub fn add_leaves(&mut self, req: &LeafRequest, reply: LeafReply) -> Result<()> {
        let Some(SummaryEntry {
            kind:
                SummaryKind::File(FileSummary::Peer {
                    size,
                    groups,
                    leaves,
                }),
            ..
        }) = self.entries.get_mut(&req.path)
        else {
            return Err(peer(format!(
                "leaf reply for {} which is no peer file",
                req.path
            )));
        };
        let blocks = hash::block_count(*size);
        let mut rest: &[Hash] = &reply.leaves;
        for &g in &req.groups {
            let Some(expected) = usize::try_from(g).ok().and_then(|i| groups.get(i)) else {
                return Err(peer(format!(
                    "leaf reply for group {g} of {}: no such group",
                    req.path
                )));
            };
            let n = (blocks - g * GROUP_BLOCKS as u64).min(GROUP_BLOCKS as u64) as usize;
            if rest.len() < n {
                return Err(peer(format!("leaf reply for {} is short", req.path)));
            }
            let (mine, tail) = rest.split_at(n);
            if hash::group_hash(mine) != *expected {
                return Err(peer(format!(
                    "block hashes of group {g} of {} do not match its group hash",
                    req.path
                )));
            }
            leaves.insert(g, mine.into());
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(peer(format!("leaf reply for {} is too long", req.path)));
        }
        Ok(())
    }
}

/// The receiver's side of a summary: its manifest as items, each file's group
/// hashes in pieces of at most `MAX_HASHES_PER_ITEM`.
pub struct SummaryItems<'a> {
    entries: std::collections::btree_map::Iter<'a, RelPath, super::manifest::Entry>,
    file: Option<(&'a FileData, u64)>,
}

impl Iterator for SummaryItems<'_> {
    type Item = SummaryItem;

    fn next(&mut self) -> Option<SummaryItem> {
        if let Some((f, next)) = self.file.take() {
            let end = (next + MAX_HASHES_PER_ITEM as u64).min(f.group_count());
            let hashes: Vec<Hash> = (next..end).filter_map(|g| f.group(g)).collect();
            if end < f.group_count() {
                self.file = Some((f, end));
            }
            return Some(SummaryItem::Groups {
                first: next,
                hashes,
            });
        }
        let (path, entry) = self.entries.next()?;
        if let Kind::File(f) = &entry.kind {
            if f.group_count() > 0 {
                self.file = Some((f, 0));
            }
        }
        Some(SummaryItem::Entry(entry.header(path)))
    }
}

impl Manifest {
    pub fn summary_items(&self) -> SummaryItems<'_> {
        SummaryItems {
            entries: self.iter(),
            file: None,
        }
    }

    /// The receiver's answer to a sender's `LeafRequest`.
    pub fn leaves_for(&self, req: &LeafRequest) -> Result<LeafReply> {
        let Some(Kind::File(f)) = self.get(&req.path).map(|e| &e.kind) else {
            return Err(peer(format!(
                "leaf request for {}: not a file here",
                req.path
            )));
        };
        if req.groups.len() > MAX_GROUPS_PER_REQUEST {
            return Err(peer(format!(
                "leaf request for {} asks for {} groups (max {MAX_GROUPS_PER_REQUEST})",
                req.path,
                req.groups.len()
            )));
        }
        let mut leaves = Vec::new();
        for &g in &req.groups {
            let Some(l) = f.group_leaves(g) else {
                return Err(peer(format!("leaf request for {}: no group {g}", req.path)));
            };
            leaves.extend_from_slice(l);
        }
        Ok(LeafReply { leaves })
    }
}

/// Builds a peer's `Summary` from its items, refusing what is malformed or
/// over the limits as soon as it arrives.
pub struct SummaryBuilder {
    limits: Limits,
    entries: BTreeMap<RelPath, SummaryEntry>,
    last: Option<RelPath>,
    pending: Option<PendingFile>,
    bytes: u64,
}

struct PendingFile {
    path: RelPath,
    meta: Meta,
    size: u64,
    groups: Vec<Hash>,
    expected: u64,
}

impl SummaryBuilder {
    pub fn new(limits: Limits) -> SummaryBuilder {
        SummaryBuilder {
            limits,
            entries: BTreeMap::new(),
            last: None,
            pending: None,
            bytes: 0,
        }
    }

    pub fn push(&mut self, item: SummaryItem) -> Result<()> {
        match item {
            SummaryItem::Entry(header) => self.entry(header),
            SummaryItem::Groups { first, hashes } => self.groups(first, hashes),
        }
    }

    fn entry(&mut self, header: EntryHeader) -> Result<()> {
        header.check().map_err(peer)?;
        let EntryHeader { path, meta, kind } = header;
        if let Some(p) = &self.pending {
            return Err(peer(format!(
                "{path} arrived before the groups of {}",
                p.path
            )));
        }
        match &self.last {
            None if !path.is_root() => {
                return Err(peer("a summary starts with the volume root"));
            }
            Some(last) if path <= *last => {
                return Err(peer(format!("{path} arrived after {last}: out of order")));
            }
            _ => {}
        }
        if let Some(parent) = path.parent() {
            if !matches!(
                self.entries.get(&parent).map(|e| &e.kind),
                Some(SummaryKind::Dir)
            ) {
                return Err(peer(format!(
                    "{path} has no parent directory in the summary"
                )));
            }
        }
        if self.entries.len() as u64 >= self.limits.max_entries {
            return Err(peer(format!(
                "summary has more than {} entries",
                self.limits.max_entries
            )));
        }
        self.last = Some(path.clone());
        let kind = match kind {
            EntryKind::Dir => SummaryKind::Dir,
            EntryKind::Symlink { target } => SummaryKind::Symlink(target),
            EntryKind::File { size } => {
                self.bytes = self.bytes.saturating_add(size);
                if self.bytes > self.limits.max_bytes {
                    return Err(peer(format!(
                        "summary describes more than {} bytes",
                        self.limits.max_bytes
                    )));
                }
                let expected = hash::group_count(hash::block_count(size));
                if expected > 0 {
                    self.pending = Some(PendingFile {
                        path,
                        meta,
                        size,
                        groups: Vec::new(),
                        expected,
                    });
                    return Ok(());
                }
                SummaryKind::File(FileSummary::Peer {
                    size,
                    groups: Vec::new(),
                    leaves: BTreeMap::new(),
                })
            }
        };
        self.entries.insert(path, SummaryEntry { meta, kind });
        Ok(())
    }

    fn groups(&mut self, first: u64, hashes: Vec<Hash>) -> Result<()> {
        let Some(p) = &mut self.pending else {
            return Err(peer("group hashes without a file before them"));
        };
        if first != p.groups.len() as u64
            || hashes.is_empty()
            || hashes.len() > MAX_HASHES_PER_ITEM
            || p.groups.len() as u64 + hashes.len() as u64 > p.expected
        {
            return Err(peer(format!(
                "group hashes {first}..+{} for {} do not follow its {} of {}",
                hashes.len(),
                p.path,
                p.groups.len(),
                p.expected
            )));
        }
        p.groups.extend(hashes);
        if p.groups.len() as u64 == p.expected {
            if let Some(p) = self.pending.take() {
                self.entries.insert(
                    p.path,
                    SummaryEntry {
                        meta: p.meta,
                        kind: SummaryKind::File(FileSummary::Peer {
                            size: p.size,
                            groups: p.groups,
                            leaves: BTreeMap::new(),
                        }),
                    },
                );
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Result<Summary> {
        if let Some(p) = self.pending {
            return Err(peer(format!(
                "summary ended with {} of {} group hashes of {}",
                p.groups.len(),
                p.expected,
                p.path
            )));
        }
        Ok(Summary {
            entries: self.entries,
        })
    }
}
