//! `ChunkReader`: the sender's side of a round's data. It turns a `Delta`
//! into `Chunk`s read from the sender's copy as the caller pulls them (one
//! buffer of at most `MAX_CHUNK_BYTES` per chunk, one open file at a time),
//! and records what it actually sent. It does not send (the network layer
//! drives the iterator from `spawn_blocking` and ships each chunk).
//!
//! The app may still be writing during the early rounds, so the bytes read
//! can differ from the hashes the scan saw. The reader hashes what it reads
//! and `finish` returns the receiver's exact expected state (the scan with
//! those blocks replaced): the next round's `have`, and the root this round's
//! receiver must reach. A file that vanished is sent as zeros, for the same
//! reason: the sender always knows exactly what the receiver holds.

use super::delta::Delta;
use super::error::{IoContext, Result, VolumeError};
use super::hash::{self, Hash, BLOCK_SIZE};
use super::manifest::{Entry, FileData, Kind, Manifest};
use super::scan::read_full_at;
use super::wire::{BlockChunk, Chunk, RoundEnd, ZeroRun, MAX_CHUNK_BLOCKS};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

pub struct ChunkReader<'a> {
    data: PathBuf,
    delta: &'a Delta,
    want: &'a Manifest,
    upsert: usize,
    pos: Pos,
    file: Option<Source>,
    sent: u64,
    /// Per upsert: blocks whose sent bytes hash differently from `want`.
    changed: BTreeMap<usize, Vec<(u64, Hash)>>,
    failed: bool,
    done: bool,
}

#[derive(Clone, Copy)]
enum Pos {
    Zero(usize),
    Send { range: usize, at: Option<u64> },
}

enum Source {
    Open(File),
    Vanished,
}

impl<'a> ChunkReader<'a> {
    pub(crate) fn new(data: &std::path::Path, delta: &'a Delta, want: &'a Manifest) -> Self {
        ChunkReader {
            data: data.to_path_buf(),
            delta,
            want,
            upsert: 0,
            pos: Pos::Zero(0),
            file: None,
            sent: 0,
            changed: BTreeMap::new(),
            failed: false,
            done: false,
        }
    }

    /// After the iterator ended without error: the receiver's expected copy
    /// (next round's `have`) and the round's tail to send.
    pub fn finish(self) -> Result<(Manifest, RoundEnd)> {
        if self.failed || !self.done {
            return Err(VolumeError::Invalid(
                "chunk reader finished before all chunks were read".into(),
            ));
        }
        let mut expected = self.want.clone();
        for (idx, changes) in self.changed {
            let path = &self.delta.upserts()[idx].header.path;
            let Some(Entry {
                meta,
                kind: Kind::File(f),
            }) = expected.get(path).cloned()
            else {
                continue;
            };
            let mut leaves = f.leaves().to_vec();
            for (i, h) in changes {
                if let Some(l) = leaves.get_mut(i as usize) {
                    *l = h;
                }
            }
            let data = FileData::new(f.size(), leaves).map_err(VolumeError::Invalid)?;
            expected.insert(
                path.clone(),
                Entry {
                    meta,
                    kind: Kind::File(Arc::new(data)),
                },
            );
        }
        let end = RoundEnd {
            chunks: self.sent,
            root: expected.root(),
        };
        Ok((expected, end))
    }

    fn step(&mut self) -> Option<Result<Chunk>> {
        loop {
            let Some(up) = self.delta.upserts().get(self.upsert) else {
                self.done = true;
                return None;
            };
            let path_id = self.upsert as u32;
            match self.pos {
                Pos::Zero(r) if r < up.zero.len() => {
                    self.pos = Pos::Zero(r + 1);
                    let range = &up.zero[r];
                    return Some(Ok(Chunk::Zero(ZeroRun {
                        path_id,
                        index: range.start,
                        count: range.end - range.start,
                    })));
                }
                Pos::Zero(_) => self.pos = Pos::Send { range: 0, at: None },
                Pos::Send { range: r, at } if r < up.send.len() => {
                    let range = &up.send[r];
                    let start = at.unwrap_or(range.start);
                    let end = (start + MAX_CHUNK_BLOCKS as u64).min(range.end);
                    self.pos = if end == range.end {
                        Pos::Send {
                            range: r + 1,
                            at: None,
                        }
                    } else {
                        Pos::Send {
                            range: r,
                            at: Some(end),
                        }
                    };
                    return Some(self.read(start, end));
                }
                Pos::Send { .. } => {
                    self.upsert += 1;
                    self.pos = Pos::Zero(0);
                    self.file = None;
                }
            }
        }
    }

    fn read(&mut self, start: u64, end: u64) -> Result<Chunk> {
        let idx = self.upsert;
        let path_id = idx as u32;
        let rel = &self.delta.upserts()[idx].header.path;
        let Some(Kind::File(f)) = self.want.get(rel).map(|e| &e.kind) else {
            return Err(VolumeError::Invalid(format!(
                "delta sends blocks of {rel}, which the manifest has as no file"
            )));
        };
        let f = f.clone();
        let path = rel.under(&self.data);
        if self.file.is_none() {
            self.file = Some(open_source(&path)?);
        }
        let len: usize = (start..end).map(|i| hash::block_len(f.size(), i)).sum();
        let file = match &self.file {
            Some(Source::Open(file)) => file,
            _ => {
                for i in start..end {
                    self.note(idx, &f, i, hash::zero_hash(hash::block_len(f.size(), i)));
                }
                return Ok(Chunk::Zero(ZeroRun {
                    path_id,
                    index: start,
                    count: end - start,
                }));
            }
        };
        let mut bytes = vec![0u8; len];
        read_full_at(file, &mut bytes, start * BLOCK_SIZE as u64).ctx("read", &path)?;
        let hashes: Vec<Hash> = bytes.chunks(BLOCK_SIZE).map(hash::leaf_hash).collect();
        for (i, h) in (start..end).zip(hashes) {
            self.note(idx, &f, i, h);
        }
        Ok(Chunk::Data(BlockChunk {
            path_id,
            index: start,
            bytes,
        }))
    }

    fn note(&mut self, idx: usize, f: &FileData, i: u64, sent: Hash) {
        if f.leaves().get(i as usize) != Some(&sent) {
            self.changed.entry(idx).or_default().push((i, sent));
        }
    }
}

fn open_source(path: &std::path::Path) -> Result<Source> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => match f.metadata() {
            Ok(m) if m.file_type().is_file() => Ok(Source::Open(f)),
            Ok(_) => Ok(Source::Vanished),
            Err(e) => Err(e).ctx("fstat", path),
        },
        Err(e)
            if e.kind() == ErrorKind::NotFound
                || matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENXIO)) =>
        {
            Ok(Source::Vanished)
        }
        Err(e) => Err(e).ctx("open", path),
    }
}

impl Iterator for ChunkReader<'_> {
    type Item = Result<Chunk>;

    fn next(&mut self) -> Option<Result<Chunk>> {
        if self.failed || self.done {
            return None;
        }
        let item = self.step()?;
        match &item {
            Ok(_) => self.sent += 1,
            Err(_) => self.failed = true,
        }
        Some(item)
    }
}
