//! The messages a move carries between two nodes, and their bounds. It owns
//! the shapes and the checks a receiver of each message makes before acting
//! on it; it does not frame, send or authenticate them (that is `net`, in the
//! next step) and it does not decide their order (see the module list in
//! `volume`).
//!
//! Every type is `serde` + postcard, and every message encodes to at most
//! [`MAX_MESSAGE_BYTES`] (a test builds the largest of each), so a framer
//! can refuse a longer frame before reading it. Paths are `RelPath`, which
//! refuses to deserialize an escaping path, so no message can name a file
//! outside the volume; the remaining checks (modes, sizes, order) are in
//! [`EntryHeader::check`] and in the consumers (`SummaryBuilder`, `Round`).

use super::hash::{Hash, BLOCK_SIZE};
use super::manifest::Meta;
use super::path::{RelPath, MAX_PATH};
use serde::{Deserialize, Serialize};

/// Data bytes per `BlockChunk`: large enough that the receiver writes in
/// 1 MiB pieces (per-packet writes cut throughput by half here, see the
/// issue's measurements), small enough to bound a frame and the memory of
/// each chunk in flight.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;
pub const MAX_CHUNK_BLOCKS: usize = MAX_CHUNK_BYTES / BLOCK_SIZE;
/// Hashes per `SummaryItem::Groups` or per `LeafReply` (256 KiB).
pub const MAX_HASHES_PER_ITEM: usize = 8192;
/// Groups per `LeafRequest`: the reply holds at most 16 hashes per group.
pub const MAX_GROUPS_PER_REQUEST: usize = MAX_HASHES_PER_ITEM / super::hash::GROUP_BLOCKS;
/// Longest symlink target accepted.
pub const MAX_SYMLINK_TARGET: usize = MAX_PATH;
/// No message encodes to more: a chunk's data plus its small header, or two
/// paths at their limit.
pub const MAX_MESSAGE_BYTES: usize = MAX_CHUNK_BYTES + 16 * 1024;

/// An entry's kind as it travels: a file by its size only (its content is
/// described by group hashes, or sent as chunks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    Dir,
    Symlink {
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
    File {
        size: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryHeader {
    pub path: RelPath,
    pub meta: Meta,
    pub kind: EntryKind,
}

impl EntryHeader {
    /// What the type alone cannot promise. Sizes are checked against the
    /// receiver's own `Limits` by its consumer.
    pub fn check(&self) -> Result<(), String> {
        if self.meta.mode & !0o7777 != 0 {
            return Err(format!(
                "{}: mode {:o} has bits beyond 0o7777",
                self.path, self.meta.mode
            ));
        }
        if self.path.is_root() && self.kind != EntryKind::Dir {
            return Err("the volume root must be a directory".into());
        }
        if let EntryKind::Symlink { target } = &self.kind {
            if target.is_empty() || target.len() > MAX_SYMLINK_TARGET || target.contains(&0) {
                return Err(format!(
                    "{}: symlink target must be 1-{MAX_SYMLINK_TARGET} bytes without NUL",
                    self.path
                ));
            }
        }
        Ok(())
    }
}

/// Receiver → sender, first round of a move to a node that holds a copy:
/// its entries in `RelPath` order, each file followed by its group hashes in
/// `Groups` items until all are sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SummaryItem {
    Entry(EntryHeader),
    Groups { first: u64, hashes: Vec<Hash> },
}

/// Sender → receiver: the block hashes inside some groups of one file, asked
/// for where the group hashes differ (see `hash` on the two levels).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafRequest {
    pub path: RelPath,
    pub groups: Vec<u64>,
}

/// The block hashes of the requested groups, concatenated in request order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafReply {
    pub leaves: Vec<Hash>,
}

/// What the receiver does with an upserted entry's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// Content already matches; set metadata only.
    Keep,
    /// Create anew, replacing whatever is at the path; a file starts as one
    /// hole of its size and receives its non-zero blocks.
    Replace,
    /// Files only: resize in place, then receive the changed blocks.
    Patch,
}

/// Sender → receiver, the head of a round: all deletions, then upserts in
/// `RelPath` order. The n-th upsert is `path_id` n in the chunks that follow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeltaItem {
    Delete(RelPath),
    Upsert {
        header: EntryHeader,
        content: Content,
    },
}

/// Consecutive blocks of one file, from `index` on: whole blocks, except
/// that the file's last block may be short.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockChunk {
    pub path_id: u32,
    pub index: u64,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// `count` blocks of one file that became all zeros: the receiver punches
/// them out, no data travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZeroRun {
    pub path_id: u32,
    pub index: u64,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Chunk {
    Data(BlockChunk),
    Zero(ZeroRun),
}

/// Sender → receiver, the tail of a round: how many chunks were sent (a cut
/// stream is an error, not a mismatch) and the root the receiver's copy has
/// if every block landed as sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundEnd {
    pub chunks: u64,
    pub root: Hash,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::hash::GROUP_BLOCKS;

    fn size_of<T: Serialize>(msg: &T) -> usize {
        postcard::to_allocvec(msg).unwrap().len()
    }

    #[test]
    fn the_largest_of_each_message_fits() {
        let long_path = RelPath::new(
            std::iter::repeat_n(&b"abcdefg/"[..], MAX_PATH / 8)
                .flatten()
                .copied()
                .take(MAX_PATH - 1)
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        let meta = Meta {
            mode: 0o7777,
            uid: u32::MAX,
            gid: u32::MAX,
            mtime_ns: i64::MIN,
        };
        let header = EntryHeader {
            path: long_path.clone(),
            meta,
            kind: EntryKind::Symlink {
                target: vec![b'x'; MAX_SYMLINK_TARGET],
            },
        };
        header.check().unwrap();
        let sizes = [
            size_of(&SummaryItem::Entry(header.clone())),
            size_of(&SummaryItem::Groups {
                first: u64::MAX,
                hashes: vec![[0xff; 32]; MAX_HASHES_PER_ITEM],
            }),
            size_of(&LeafRequest {
                path: long_path.clone(),
                groups: vec![u64::MAX; MAX_GROUPS_PER_REQUEST],
            }),
            size_of(&LeafReply {
                leaves: vec![[0xff; 32]; MAX_GROUPS_PER_REQUEST * GROUP_BLOCKS],
            }),
            size_of(&DeltaItem::Upsert {
                header,
                content: Content::Replace,
            }),
            size_of(&Chunk::Data(BlockChunk {
                path_id: u32::MAX,
                index: u64::MAX,
                bytes: vec![0xff; MAX_CHUNK_BYTES],
            })),
            size_of(&RoundEnd {
                chunks: u64::MAX,
                root: [0xff; 32],
            }),
        ];
        for s in sizes {
            assert!(s <= MAX_MESSAGE_BYTES, "{s} > {MAX_MESSAGE_BYTES}");
        }
    }

    #[test]
    fn headers_are_checked() {
        let meta = Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
        };
        let p = RelPath::new(&b"l"[..]).unwrap();
        let bad_mode = EntryHeader {
            path: p.clone(),
            meta: Meta {
                mode: 0o170644,
                ..meta
            },
            kind: EntryKind::Dir,
        };
        assert!(bad_mode.check().is_err());
        let nul = EntryHeader {
            path: p.clone(),
            meta,
            kind: EntryKind::Symlink {
                target: b"a\0b".to_vec(),
            },
        };
        assert!(nul.check().is_err());
        let root_file = EntryHeader {
            path: RelPath::root(),
            meta,
            kind: EntryKind::File { size: 1 },
        };
        assert!(root_file.check().is_err());
    }
}
