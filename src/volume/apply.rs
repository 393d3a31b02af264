//! The receiver's side of a move: `ReceiverCopy` is this node's copy of one
//! volume while a move into it runs (its manifest kept in memory between
//! rounds, so a round costs what it changes, not a rescan), and `Round` applies
//! one round of a peer's delta and chunks to it, in place.
//!
//! Invariant 5 is kept here. `begin_round` marks the copy Incomplete before
//! anything is written, and only `Round::finish` marks it Complete: when the
//! root over the copy's block hashes (those of the blocks it wrote, hashed as
//! they arrived, and its own for the rest) equals the sender's, and only at
//! the epoch the caller names (the last round's handoff epoch). Writes go in
//! place, never to a staging copy, because nothing mounts an Incomplete copy.
//!
//! Holes: a file created by a round starts as one hole of its size
//! (`set_len`) and only its non-zero blocks are written; a block that became
//! all zeros is punched out (`FALLOC_FL_PUNCH_HOLE`), or overwritten with
//! zeros where the file system cannot punch. Either way it hashes the same.
//!
//! Everything a peer sends is checked before it touches the disk: paths
//! are `RelPath`s resolved through real directories only (no symlinked
//! parent, files opened `O_NOFOLLOW`), order and kinds are enforced, block
//! indexes and lengths must fit the announced size, and sizes and entry
//! counts stay within `Limits`. A refused message fails the round; the copy
//! stays Incomplete and is rescanned before the next one.
//!
//! Modes: every entry is recorded with the sender's mode (it is part of the
//! root), but a regular file's setuid and setgid bits are written only when
//! `ApplyOptions::preserve_setuid` says so (the app's `volume.preserve_setuid`):
//! a peer must not be able to plant a setuid-root binary on this host. The
//! difference is kept in the hash cache (`cache::ModeOverride`), so the copy
//! still scans as the sender's, matches its root and is not sent again.
//! Directories keep their setgid bit: there it only makes new entries inherit
//! the group, and stripping it would change how the app's files are owned.
//!
//! Free space: with `ApplyOptions::reserve`, a round refuses to start, and
//! a chunk to be written, when the file system would be left with less than
//! the reserve available (`VolumeError::Reserve`): the node keeps room for
//! its Raft log, and the move fails cleanly instead of the disk filling.
//!
//! Not done here: it does not fetch anything (chunks are pushed to it) and
//! does not mount. Blocking I/O: drive it from `spawn_blocking`.

use super::cache::ModeOverride;
use super::cache::{HashCache, OwnerOverride, StatKey};
use super::error::{peer, IoContext, ReserveShortfall, Result, VolumeError};
use super::hash::{self, Hash, BLOCK_SIZE};
use super::manifest::{Entry, FileData, Kind, Manifest, Meta};
use super::mark::{Mark, MarkState};
use super::path::{resolve_beneath, resolve_existing, RelPath};
use super::scan::{read_full_at, scan, ScanOptions, ScanReport};
use super::store::VolumeStore;
use super::summary::{Limits, SummaryItems};
use super::sys;
use super::wire::{
    BlockChunk, Chunk, Content, DeltaItem, EntryHeader, EntryKind, LeafReply, LeafRequest,
    RoundEnd, ZeroRun, MAX_CHUNK_BLOCKS, MAX_CHUNK_BYTES,
};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Above this many entries to make durable, one `syncfs` replaces one
/// fsync each (each fsync may force its own journal commit), on the file
/// systems whose syncfs is sound (`durable::syncfs_trusted`).
const SYNCFS_THRESHOLD: usize = 64;
/// Notes kept per round; the rest are counted.
const MAX_NOTES: usize = 16;

#[derive(Clone, Copy, Debug)]
pub struct ApplyOptions {
    /// Give entries their sender's owner. Only root may; otherwise the owner
    /// is recorded in the hash cache and reported (so the root still matches
    /// and a later move onward carries the real owner).
    pub chown: bool,
    pub limits: Limits,
    /// Write setuid and setgid bits of regular files as the sender had them
    /// (the app's `volume.preserve_setuid`); otherwise they are recorded only.
    pub preserve_setuid: bool,
    /// Bytes the file system must keep available after every write; 0: none.
    pub reserve: u64,
}

impl Default for ApplyOptions {
    fn default() -> ApplyOptions {
        ApplyOptions {
            chown: sys::is_superuser(),
            limits: Limits::default(),
            preserve_setuid: false,
            reserve: 0,
        }
    }
}

/// The bits a received regular file loses unless its app preserves them.
const SETID_BITS: u32 = libc::S_ISUID | libc::S_ISGID;

pub struct ReceiverCopy {
    store: VolumeStore,
    app: String,
    data: PathBuf,
    manifest: Manifest,
    cache: HashCache,
    scan_opts: ScanOptions,
    opts: ApplyOptions,
    /// The in-memory manifest may not match the disk (a round began and did
    /// not finish): rescan before using it.
    stale: bool,
}

impl ReceiverCopy {
    /// Opens (creating if needed) this node's copy of `app` to receive into.
    /// Refuses a copy that is mountable at `committed_epoch`: that copy is the
    /// volume itself, and the owner never receives.
    pub fn open(
        store: &VolumeStore,
        app: &str,
        committed_epoch: u64,
        scan_opts: ScanOptions,
        opts: ApplyOptions,
    ) -> Result<ReceiverCopy> {
        if store.mountable(app, committed_epoch) {
            return Err(VolumeError::Invalid(format!(
                "this node's copy of {app} is the volume at epoch {committed_epoch}: it cannot receive"
            )));
        }
        // No mark is written yet: a copy without one is not mountable either.
        let data = store.create_data_dir(app)?;
        let mut cache = store.load_cache(app)?;
        let (manifest, _) = scan(&data, &mut cache, &scan_opts)?;
        Ok(ReceiverCopy {
            store: store.clone(),
            app: app.to_string(),
            data,
            manifest,
            cache,
            scan_opts,
            opts,
            stale: false,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Rescans the copy (reading only files whose key changed).
    pub fn refresh(&mut self) -> Result<ScanReport> {
        let (manifest, report) = scan(&self.data, &mut self.cache, &self.scan_opts)?;
        self.manifest = manifest;
        self.stale = false;
        Ok(report)
    }

    /// What to tell a sender that does not know this copy yet.
    pub fn summary_items(&mut self) -> Result<SummaryItems<'_>> {
        if self.stale {
            self.refresh()?;
        }
        Ok(self.manifest.summary_items())
    }

    pub fn leaves(&self, req: &LeafRequest) -> Result<LeafReply> {
        self.manifest.leaves_for(req)
    }

    /// Starts a round: the copy is marked Incomplete (durably) before this
    /// returns, so before the round's first write.
    pub fn begin_round(&mut self) -> Result<Round<'_>> {
        if self.stale {
            self.refresh()?;
        }
        self.check_reserve(0)?;
        let mark = self.store.mark_incomplete(&self.app)?;
        debug_assert_eq!(mark.state, MarkState::Incomplete);
        self.stale = true;
        Ok(Round {
            copy: self,
            phase: Phase::Deletes,
            last: None,
            pending: Vec::new(),
            open: None,
            chunks: 0,
            round_bytes: 0,
            dirs_changed: BTreeSet::new(),
            stats: RoundStats::default(),
            notes: Notes::default(),
        })
    }

    /// Refuses a write of `writing` bytes that would leave less than the
    /// reserve available on the copy's file system.
    fn check_reserve(&self, writing: u64) -> Result<()> {
        let reserve = self.opts.reserve;
        if reserve == 0 {
            return Ok(());
        }
        let available = sys::available_bytes(&self.data).ctx("statvfs", &self.data)?;
        if available < reserve.saturating_add(writing) {
            return Err(VolumeError::Reserve(ReserveShortfall {
                reserve,
                available,
                writing,
            }));
        }
        Ok(())
    }

    /// Persists the hash cache; off the critical path (after the handoff).
    pub fn save_cache(&self) -> Result<()> {
        self.store.save_cache(&self.app, &self.cache)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Deletes,
    Upserts,
    Chunks,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundStats {
    pub deleted: u64,
    pub upserted: u64,
    pub blocks_written: u64,
    pub bytes_written: u64,
    pub zero_blocks: u64,
    /// Blocks read back at the end because their hash was not known
    /// (a resized last block, or a file this copy knew nothing about).
    pub blocks_reread: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundOutcome {
    /// The root of this copy now.
    pub root: Hash,
    /// Whether it equals the sender's.
    pub matched: bool,
    pub mark: Mark,
    pub stats: RoundStats,
    /// What was not done as asked (owners not applied, ...), bounded.
    pub notes: Vec<String>,
}

#[derive(Default)]
struct Notes {
    kept: Vec<String>,
    dropped: u64,
}

impl Notes {
    fn push(&mut self, note: String) {
        if self.kept.len() < MAX_NOTES {
            self.kept.push(note);
        } else {
            self.dropped += 1;
        }
    }

    fn into_vec(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.kept.push(format!("... and {} more", self.dropped));
        }
        self.kept
    }
}

struct Pending {
    path: RelPath,
    full: PathBuf,
    header: EntryHeader,
    /// Files that take blocks this round: each block's hash, `None` where
    /// unknown until read back at the end.
    leaves: Option<Vec<Option<Hash>>>,
}

impl Pending {
    fn size(&self) -> u64 {
        match self.header.kind {
            EntryKind::File { size } => size,
            _ => 0,
        }
    }
}

/// One round applied to a `ReceiverCopy`: `apply_item` for each `DeltaItem`,
/// `apply_chunk` for each `Chunk`, then `finish` with the sender's `RoundEnd`.
/// Dropping it before `finish` leaves the copy Incomplete.
pub struct Round<'a> {
    copy: &'a mut ReceiverCopy,
    phase: Phase,
    last: Option<RelPath>,
    pending: Vec<Pending>,
    open: Option<(usize, File)>,
    chunks: u64,
    round_bytes: u64,
    dirs_changed: BTreeSet<RelPath>,
    stats: RoundStats,
    notes: Notes,
}

impl Round<'_> {
    pub fn apply_item(&mut self, item: DeltaItem) -> Result<()> {
        match item {
            DeltaItem::Delete(path) => {
                if self.phase != Phase::Deletes {
                    return Err(peer(format!("delete of {path} after the upserts began")));
                }
                self.delete(&path)
            }
            DeltaItem::Upsert { header, content } => {
                if self.phase > Phase::Upserts {
                    return Err(peer(format!(
                        "upsert of {} after the chunks began",
                        header.path
                    )));
                }
                self.phase = Phase::Upserts;
                header.check().map_err(peer)?;
                if let Some(last) = &self.last {
                    if header.path <= *last {
                        return Err(peer(format!(
                            "upsert of {} after {last}: out of order",
                            header.path
                        )));
                    }
                }
                self.last = Some(header.path.clone());
                self.upsert(header, content)
            }
        }
    }

    fn delete(&mut self, path: &RelPath) -> Result<()> {
        if path.is_root() {
            return Err(peer("the volume root cannot be deleted"));
        }
        let data = &self.copy.data;
        if let Some(full) = resolve_existing(data, path)? {
            remove_any(&full)?;
        }
        self.copy.manifest.remove_subtree(path);
        self.copy.cache.forget_subtree(path);
        self.dirs_changed.extend(path.parent());
        self.stats.deleted += 1;
        Ok(())
    }

    fn upsert(&mut self, header: EntryHeader, content: Content) -> Result<()> {
        let path = header.path.clone();
        let full = resolve_beneath(&self.copy.data, &path)?;
        let limits = self.copy.opts.limits;
        if self.copy.manifest.get(&path).is_none()
            && self.copy.manifest.len() as u64 >= limits.max_entries
        {
            return Err(peer(format!(
                "upsert of {path} exceeds {} entries",
                limits.max_entries
            )));
        }
        let existing = match std::fs::symlink_metadata(&full) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e).ctx("lstat", &full),
        };
        let is_dir = existing.as_ref().is_some_and(|m| m.file_type().is_dir());
        let is_link = existing
            .as_ref()
            .is_some_and(|m| m.file_type().is_symlink());
        let is_file = existing.as_ref().is_some_and(|m| m.file_type().is_file());
        let mut leaves = None;
        match &header.kind {
            EntryKind::Dir => {
                // An existing directory is kept even for Replace: whatever
                // the sender did not expect in it shows in the root.
                if !is_dir {
                    self.replace_with(&path, &full, existing.is_some())?;
                    std::fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&full)
                        .ctx("mkdir", &full)?;
                }
            }
            EntryKind::Symlink { target } => {
                if content != Content::Keep || !is_link {
                    self.replace_with(&path, &full, existing.is_some())?;
                    std::os::unix::fs::symlink(OsStr::from_bytes(target), &full)
                        .ctx("symlink", &full)?;
                }
            }
            EntryKind::File { size } => {
                let size = *size;
                let known = self
                    .copy
                    .manifest
                    .get(&path)
                    .and_then(Entry::file)
                    .filter(|_| is_file)
                    .cloned();
                let keep = content == Content::Keep
                    && is_file
                    && known.as_ref().is_some_and(|f| f.size() == size);
                if !keep {
                    // Block bookkeeping is sized by the peer's word: bound it
                    // before allocating (metadata-only upserts allocate none).
                    self.round_bytes = self.round_bytes.saturating_add(size);
                    if self.round_bytes > limits.max_bytes {
                        return Err(peer(format!(
                            "files written this round exceed {} bytes",
                            limits.max_bytes
                        )));
                    }
                }
                match (content, is_file) {
                    _ if keep => {}
                    (Content::Keep | Content::Patch, true) => {
                        let f = open_write(&full, false)?;
                        if existing.as_ref().map(|m| m.len()) != Some(size) {
                            f.set_len(size).ctx("resize", &full)?;
                        }
                        leaves = Some(patch_leaves(known.as_deref(), size));
                    }
                    _ => {
                        if !is_file {
                            self.replace_with(&path, &full, existing.is_some())?;
                        }
                        let f = open_write(&full, true)?;
                        f.set_len(size).ctx("resize", &full)?;
                        leaves = Some(
                            (0..hash::block_count(size))
                                .map(|i| Some(hash::zero_hash(hash::block_len(size, i))))
                                .collect(),
                        );
                    }
                }
            }
        }
        self.stats.upserted += 1;
        self.pending.push(Pending {
            path,
            full,
            header,
            leaves,
        });
        Ok(())
    }

    /// Clears `path` for a new entry of another kind (or a new symlink).
    fn replace_with(&mut self, path: &RelPath, full: &Path, exists: bool) -> Result<()> {
        if exists {
            remove_any(full)?;
        }
        self.copy.manifest.remove_subtree(path);
        self.copy.cache.forget_subtree(path);
        self.dirs_changed.extend(path.parent());
        Ok(())
    }

    pub fn apply_chunk(&mut self, chunk: Chunk) -> Result<()> {
        self.phase = Phase::Chunks;
        self.chunks += 1;
        match chunk {
            Chunk::Data(c) => self.data(c),
            Chunk::Zero(z) => self.zero(z),
        }
    }

    /// The pending file `path_id` names, if it takes blocks this round.
    fn target(&self, path_id: u32) -> Result<usize> {
        let idx = path_id as usize;
        match self.pending.get(idx) {
            Some(p) if p.leaves.is_some() => Ok(idx),
            Some(p) => Err(peer(format!("chunk for {}, which takes no blocks", p.path))),
            None => Err(peer(format!(
                "chunk for path id {path_id}, which was not upserted"
            ))),
        }
    }

    fn file(&mut self, idx: usize) -> Result<&File> {
        if self.open.as_ref().map(|(i, _)| *i) != Some(idx) {
            self.open = None;
            let f = open_write(&self.pending[idx].full, false)?;
            self.open = Some((idx, f));
        }
        match &self.open {
            Some((_, f)) => Ok(f),
            None => Err(VolumeError::Invalid("no open file".into())),
        }
    }

    fn data(&mut self, c: BlockChunk) -> Result<()> {
        let idx = self.target(c.path_id)?;
        let p = &self.pending[idx];
        let size = p.size();
        let blocks = c.bytes.len().div_ceil(BLOCK_SIZE) as u64;
        let fits = !c.bytes.is_empty()
            && c.bytes.len() <= MAX_CHUNK_BYTES
            && blocks <= MAX_CHUNK_BLOCKS as u64
            && c.index
                .checked_add(blocks)
                .is_some_and(|end| end <= hash::block_count(size))
            && (c.index..c.index + blocks)
                .map(|i| hash::block_len(size, i))
                .sum::<usize>()
                == c.bytes.len();
        if !fits {
            return Err(peer(format!(
                "chunk of {} bytes at block {} does not fit {} ({size} bytes)",
                c.bytes.len(),
                c.index,
                p.path
            )));
        }
        let full = p.full.clone();
        let off = c.index * BLOCK_SIZE as u64;
        self.copy.check_reserve(c.bytes.len() as u64)?;
        self.file(idx)?
            .write_all_at(&c.bytes, off)
            .ctx("write", &full)?;
        let p = &mut self.pending[idx];
        if let Some(leaves) = &mut p.leaves {
            for (i, block) in (c.index..).zip(c.bytes.chunks(BLOCK_SIZE)) {
                leaves[i as usize] = Some(hash::leaf_hash(block));
            }
        }
        self.stats.blocks_written += blocks;
        self.stats.bytes_written += c.bytes.len() as u64;
        Ok(())
    }

    /// Punches the blocks out; where the file system cannot, writes zeros.
    fn zero(&mut self, z: ZeroRun) -> Result<()> {
        let idx = self.target(z.path_id)?;
        let p = &self.pending[idx];
        let size = p.size();
        let n = hash::block_count(size);
        if z.count == 0 || z.index.checked_add(z.count).is_none_or(|end| end > n) {
            return Err(peer(format!(
                "zero run {}+{} does not fit {} ({n} blocks)",
                z.index, z.count, p.path
            )));
        }
        let full = p.full.clone();
        let off = z.index * BLOCK_SIZE as u64;
        let len = (z.count * BLOCK_SIZE as u64).min(size - off);
        let punched = sys::punch_hole(self.file(idx)?, off, len).ctx("punch hole", &full)?;
        if !punched {
            self.copy.check_reserve(len)?;
            let file = self.file(idx)?;
            let zeros = vec![0u8; MAX_CHUNK_BYTES.min(len as usize)];
            let mut at = off;
            while at < off + len {
                let piece = (off + len - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..piece], at).ctx("write", &full)?;
                at += piece as u64;
            }
        }
        let p = &mut self.pending[idx];
        if let Some(leaves) = &mut p.leaves {
            for i in z.index..z.index + z.count {
                leaves[i as usize] = Some(hash::zero_hash(hash::block_len(size, i)));
            }
        }
        self.stats.zero_blocks += z.count;
        Ok(())
    }

    /// Ends the round: fills in unknown block hashes, sets owners, modes and
    /// then mtimes (directories after their contents), makes it all durable,
    /// recomputes the root and marks the copy Complete at `complete_epoch`
    /// if the root equals the sender's. `None` for the rounds before the
    /// last one: they may match, but nothing is to be mounted from them.
    pub fn finish(mut self, end: &RoundEnd, complete_epoch: Option<u64>) -> Result<RoundOutcome> {
        if end.chunks != self.chunks {
            return Err(peer(format!(
                "round ended after {} chunks, the sender sent {}",
                self.chunks, end.chunks
            )));
        }
        self.open = None;
        let files = self.fill_unknown_leaves()?;
        self.set_metadata()?;
        self.make_durable()?;
        self.record(files)?;

        let copy = &mut *self.copy;
        let root = copy.manifest.root();
        let matched = root == end.root;
        let mark = match complete_epoch {
            Some(epoch) if matched => copy.store.mark_complete(&copy.app, epoch, root)?,
            _ => copy.store.mark(&copy.app)?.ok_or_else(|| {
                VolumeError::Invalid("the round's Incomplete mark vanished".into())
            })?,
        };
        copy.stale = false;
        Ok(RoundOutcome {
            root,
            matched,
            mark,
            stats: self.stats,
            notes: self.notes.into_vec(),
        })
    }

    /// The new content of every file that took blocks, by pending index.
    fn fill_unknown_leaves(&mut self) -> Result<Vec<(usize, Arc<FileData>)>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; BLOCK_SIZE];
        for (idx, p) in self.pending.iter_mut().enumerate() {
            let size = p.size();
            let Some(leaves) = p.leaves.take() else {
                continue;
            };
            let mut reader: Option<File> = None;
            let mut done = Vec::with_capacity(leaves.len());
            for (i, leaf) in leaves.into_iter().enumerate() {
                let h = match leaf {
                    Some(h) => h,
                    None => {
                        if reader.is_none() {
                            reader = Some(open_read(&p.full)?);
                        }
                        let len = hash::block_len(size, i as u64);
                        if let Some(r) = &reader {
                            read_full_at(r, &mut buf[..len], i as u64 * BLOCK_SIZE as u64)
                                .ctx("read", &p.full)?;
                        }
                        self.stats.blocks_reread += 1;
                        hash::leaf_hash(&buf[..len])
                    }
                };
                done.push(h);
            }
            let data = FileData::new(size, done).map_err(VolumeError::Invalid)?;
            out.push((idx, Arc::new(data)));
        }
        Ok(out)
    }

    fn set_metadata(&mut self) -> Result<()> {
        let chown = self.copy.opts.chown;
        for p in &self.pending {
            let m = std::fs::symlink_metadata(&p.full).ctx("lstat", &p.full)?;
            let want = (p.header.meta.uid, p.header.meta.gid);
            if chown {
                std::os::unix::fs::lchown(&p.full, Some(want.0), Some(want.1))
                    .ctx("chown", &p.full)?;
                self.copy.cache.set_owner(&p.path, None);
            } else {
                let disk = (
                    std::os::unix::fs::MetadataExt::uid(&m),
                    std::os::unix::fs::MetadataExt::gid(&m),
                );
                if disk == want {
                    self.copy.cache.set_owner(&p.path, None);
                } else {
                    self.copy
                        .cache
                        .set_owner(&p.path, Some(OwnerOverride { disk, want }));
                    self.notes.push(format!(
                        "{}: owner {}:{} recorded, not applied (not running as root)",
                        p.path, want.0, want.1
                    ));
                }
            }
            // chmod after chown: chown clears setuid and setgid bits.
            if !m.file_type().is_symlink() {
                let want = p.header.meta.mode;
                let strip = m.file_type().is_file() && !self.copy.opts.preserve_setuid;
                let disk = if strip { want & !SETID_BITS } else { want };
                std::fs::set_permissions(&p.full, std::fs::Permissions::from_mode(disk))
                    .ctx("chmod", &p.full)?;
                if disk == want {
                    self.copy.cache.set_mode(&p.path, None);
                } else {
                    self.copy
                        .cache
                        .set_mode(&p.path, Some(ModeOverride { disk, want }));
                    self.notes.push(format!(
                        "{}: mode {want:04o} recorded, written as {disk:04o} (volume.preserve_setuid is off)",
                        p.path
                    ));
                }
            }
        }
        // Last, and deepest first: nothing below changes a directory after
        // its mtime is set.
        for p in self.pending.iter().rev() {
            sys::set_mtime_nofollow(&p.full, p.header.meta.mtime_ns).ctx("set mtime", &p.full)?;
        }
        Ok(())
    }

    /// Every entry this round created, wrote or changed reaches the disk
    /// before the mark can say Complete.
    fn make_durable(&self) -> Result<()> {
        let data = &self.copy.data;
        if self.pending.len() + self.dirs_changed.len() > SYNCFS_THRESHOLD {
            let d = File::open(data).ctx("open", data)?;
            // On FUSE syncfs reaches no file system: fsync each entry there.
            if crate::durable::syncfs_trusted(&d).ctx("statfs", data)? {
                return sys::syncfs(&d).ctx("syncfs", data);
            }
        }
        let mut dirs: BTreeSet<RelPath> = self.dirs_changed.clone();
        for p in &self.pending {
            match p.header.kind {
                EntryKind::Dir => {
                    dirs.insert(p.path.clone());
                }
                // A symlink cannot be opened: its directory's fsync covers it.
                EntryKind::Symlink { .. } => dirs.extend(p.path.parent()),
                EntryKind::File { .. } => {
                    open_read(&p.full)?.sync_all().ctx("fsync", &p.full)?;
                }
            }
        }
        for d in dirs {
            if let Some(full) = resolve_existing(data, &d)?.filter(|f| f.is_dir()) {
                sys::fsync_dir(&full)?;
            }
        }
        Ok(())
    }

    /// Brings the in-memory manifest and the cache up to what is on disk.
    fn record(&mut self, files: Vec<(usize, Arc<FileData>)>) -> Result<()> {
        let mut files = files.into_iter().peekable();
        let mut stats = Vec::with_capacity(self.pending.len());
        for p in &self.pending {
            stats.push(std::fs::symlink_metadata(&p.full).ctx("lstat", &p.full)?);
        }
        // Taken after the last write: any later write has a later ctime.
        let recorded_at = sys::now_ns();
        let copy = &mut *self.copy;
        for (idx, (p, m)) in self.pending.iter().zip(stats).enumerate() {
            let meta = copy.cache.volume_view(&p.path, Meta::of(&m));
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&p.full).ctx("readlink", &p.full)?;
                Kind::Symlink(t.into_os_string().into_vec())
            } else if ft.is_file() {
                let data = match files.next_if(|(i, _)| *i == idx) {
                    Some((_, d)) => d,
                    None => match copy.manifest.get(&p.path).and_then(Entry::file) {
                        Some(d) => d.clone(),
                        None => {
                            return Err(VolumeError::Invalid(format!(
                                "{}: no block hashes after the round",
                                p.path
                            )))
                        }
                    },
                };
                if data.size() != m.len() {
                    return Err(VolumeError::Invalid(format!(
                        "{} is {} bytes after being written as {}",
                        p.path,
                        m.len(),
                        data.size()
                    )));
                }
                copy.cache
                    .record(p.path.clone(), StatKey::of(&m), recorded_at, data.clone());
                Kind::File(data)
            } else {
                return Err(VolumeError::Invalid(format!(
                    "{} is no file, directory or symlink after the round",
                    p.path
                )));
            };
            copy.manifest.insert(p.path.clone(), Entry { meta, kind });
        }
        Ok(())
    }
}

/// Opens a file of the copy for writing, never through a symlink.
fn open_write(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create(create)
        .truncate(create)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ctx("open for writing", path)
}

fn open_read(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ctx("open", path)
}

/// Removes a file, symlink or whole directory (never following symlinks).
fn remove_any(full: &Path) -> Result<()> {
    let m = match std::fs::symlink_metadata(full) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx("lstat", full),
    };
    let r = if m.file_type().is_dir() {
        std::fs::remove_dir_all(full)
    } else {
        std::fs::remove_file(full)
    };
    match r {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e).ctx("remove", full),
        _ => Ok(()),
    }
}

/// Block hashes of a file resized in place from `old` to `size`: unchanged
/// full blocks keep theirs, blocks past the old end are holes, and a block
/// whose length changed (the old or new last one) is unknown until read.
fn patch_leaves(old: Option<&FileData>, size: u64) -> Vec<Option<Hash>> {
    (0..hash::block_count(size))
        .map(|i| {
            let len = hash::block_len(size, i);
            let old = old?;
            match old.leaves().get(i as usize) {
                Some(h) if hash::block_len(old.size(), i) == len => Some(*h),
                Some(_) => None,
                None => Some(hash::zero_hash(len)),
            }
        })
        .collect()
}
