//! `Delta`: what must change in the receiver's copy (`have`, a `Summary`)
//! to make it equal the sender's scan (`want`, a `Manifest`): deletions,
//! creations, metadata changes, and for each changed file the blocks to
//! send and the blocks that became zero. It owns that comparison and the
//! order the receiver needs; it reads no file (the sender's `ChunkReader`
//! does) and writes none (the receiver's `apply::Round` does).
//!
//! Order: deletions first (only the top of each deleted subtree, deepest
//! first), then upserts in `RelPath` order so parents exist before their
//! children. Any directory whose listing changes gets an upsert even when
//! its own metadata did not, because creating or removing a child changes
//! its mtime on the receiver, which must then be set back.

use super::chunks::ChunkReader;
use super::error::{Result, VolumeError};
use super::hash::{self, GROUP_BLOCKS};
use super::manifest::{FileData, Kind, Manifest};
use super::path::RelPath;
use super::summary::{FileSummary, Summary, SummaryKind};
use super::wire::{Content, DeltaItem, EntryHeader};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct Upsert {
    pub header: EntryHeader,
    pub content: Content,
    /// Block ranges to send, ascending (files only).
    pub send: Vec<Range<u64>>,
    /// Block ranges that became all zeros, ascending (Patch only).
    pub zero: Vec<Range<u64>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeltaStats {
    pub deletes: u64,
    pub upserts: u64,
    pub send_blocks: u64,
    /// Data bytes the chunks will carry: what a progress bar counts.
    pub send_bytes: u64,
    pub zero_blocks: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Delta {
    deletes: Vec<RelPath>,
    upserts: Vec<Upsert>,
}

impl Delta {
    pub fn compute(have: &Summary, want: &Manifest) -> Result<Delta> {
        if !matches!(want.get(&RelPath::root()).map(|e| &e.kind), Some(Kind::Dir)) {
            return Err(VolumeError::Invalid(
                "the sender's manifest has no root directory".into(),
            ));
        }
        let mut touched: BTreeSet<RelPath> = BTreeSet::new();
        let mut deletes = Vec::new();
        let mut pruned: Option<RelPath> = None;
        for (path, h) in have.iter() {
            if path.is_root() || pruned.as_ref().is_some_and(|d| d.is_ancestor_of(path)) {
                continue;
            }
            let gone = want.get(path).is_none_or(|w| !h.kind.same_kind(&w.kind));
            if gone {
                deletes.push(path.clone());
                touched.extend(path.parent());
                pruned = Some(path.clone());
            }
        }
        deletes.reverse();

        let mut upserts: BTreeMap<RelPath, Upsert> = BTreeMap::new();
        for (path, w) in want.iter() {
            let h = have.get(path).filter(|h| h.kind.same_kind(&w.kind));
            let meta_differs = h.is_none_or(|h| h.meta != w.meta);
            let (content, send, zero) = match (&w.kind, h.map(|h| &h.kind)) {
                (kind, None) => {
                    touched.extend(path.parent());
                    let send = match kind {
                        Kind::File(f) => fresh_blocks(f),
                        _ => Vec::new(),
                    };
                    (Some(Content::Replace), send, Vec::new())
                }
                (Kind::Symlink(t), Some(SummaryKind::Symlink(ht))) if t != ht => {
                    touched.extend(path.parent());
                    (Some(Content::Replace), Vec::new(), Vec::new())
                }
                (Kind::File(f), Some(SummaryKind::File(hf))) => {
                    let (send, zero) = changed_blocks(hf, f);
                    if !send.is_empty() || !zero.is_empty() || hf.size() != f.size() {
                        (Some(Content::Patch), send, zero)
                    } else {
                        (meta_differs.then_some(Content::Keep), send, zero)
                    }
                }
                _ => (
                    meta_differs.then_some(Content::Keep),
                    Vec::new(),
                    Vec::new(),
                ),
            };
            if let Some(content) = content {
                upserts.insert(
                    path.clone(),
                    Upsert {
                        header: w.header(path),
                        content,
                        send,
                        zero,
                    },
                );
            }
        }
        for dir in touched {
            if upserts.contains_key(&dir) {
                continue;
            }
            if let Some(e) = want.get(&dir).filter(|e| e.kind == Kind::Dir) {
                let header = e.header(&dir);
                upserts.insert(
                    dir,
                    Upsert {
                        header,
                        content: Content::Keep,
                        send: Vec::new(),
                        zero: Vec::new(),
                    },
                );
            }
        }
        if upserts.len() > u32::MAX as usize {
            return Err(VolumeError::Invalid(
                "more than 2^32 entries changed".into(),
            ));
        }
        Ok(Delta {
            deletes,
            upserts: upserts.into_values().collect(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.deletes.is_empty() && self.upserts.is_empty()
    }

    pub fn deletes(&self) -> &[RelPath] {
        &self.deletes
    }

    pub fn upserts(&self) -> &[Upsert] {
        &self.upserts
    }

    pub fn stats(&self) -> DeltaStats {
        let mut s = DeltaStats {
            deletes: self.deletes.len() as u64,
            upserts: self.upserts.len() as u64,
            ..DeltaStats::default()
        };
        for u in &self.upserts {
            let size = match u.header.kind {
                super::wire::EntryKind::File { size } => size,
                _ => 0,
            };
            for r in &u.send {
                s.send_blocks += r.end - r.start;
                s.send_bytes += r
                    .clone()
                    .map(|i| hash::block_len(size, i) as u64)
                    .sum::<u64>();
            }
            s.zero_blocks += u.zero.iter().map(|r| r.end - r.start).sum::<u64>();
        }
        s
    }

    /// The head of the round, in the order the receiver applies it.
    pub fn items(&self) -> impl Iterator<Item = DeltaItem> + '_ {
        self.deletes
            .iter()
            .map(|p| DeltaItem::Delete(p.clone()))
            .chain(self.upserts.iter().map(|u| DeltaItem::Upsert {
                header: u.header.clone(),
                content: u.content,
            }))
    }

    /// The round's chunks, read from `data` (the sender's copy, which `want`
    /// was scanned from) as the iterator is driven.
    pub fn chunks<'a>(&'a self, data: &Path, want: &'a Manifest) -> ChunkReader<'a> {
        ChunkReader::new(data, self, want)
    }
}

/// All non-zero blocks: a new file starts as one hole.
fn fresh_blocks(f: &FileData) -> Vec<Range<u64>> {
    let mut send = Ranges::default();
    for i in 0..f.leaves().len() as u64 {
        if !f.is_zero_block(i) {
            send.push(i);
        }
    }
    send.0
}

/// Blocks of `want` that the receiver's `have` lacks: compared block by
/// block where block hashes are known, else group by group (an equal group
/// hash means equal blocks). A zero block past the receiver's old end needs
/// nothing: extending the file leaves a hole there.
fn changed_blocks(have: &FileSummary, want: &FileData) -> (Vec<Range<u64>>, Vec<Range<u64>>) {
    let (mut send, mut zero) = (Ranges::default(), Ranges::default());
    let old_blocks = hash::block_count(have.size());
    let leaves = want.leaves();
    for g in 0..want.group_count() {
        if !have.knows_leaves_of(g) && have.group(g).is_some() && have.group(g) == want.group(g) {
            continue;
        }
        let lo = g * GROUP_BLOCKS as u64;
        let hi = (lo + GROUP_BLOCKS as u64).min(leaves.len() as u64);
        for i in lo..hi {
            if have.leaf(i) == Some(leaves[i as usize]) {
                continue;
            }
            if want.is_zero_block(i) {
                if i < old_blocks {
                    zero.push(i);
                }
            } else {
                send.push(i);
            }
        }
    }
    (send.0, zero.0)
}

/// Ascending block indexes folded into ranges.
#[derive(Default)]
struct Ranges(Vec<Range<u64>>);

impl Ranges {
    fn push(&mut self, i: u64) {
        match self.0.last_mut() {
            Some(r) if r.end == i => r.end += 1,
            _ => self.0.push(i..i + 1),
        }
    }
}
