//! Volumes: this node's copies of application volumes, and the local half of
//! moving one to another node (issue 6). It owns the store layout, the mark
//! that gates mounting (invariant 5), scanning with a hash cache, the hash
//! tree and root, deltas, the chunk stream's two ends, and the message types
//! a move sends. It does not talk to the network, Raft or Docker: every
//! function here is synchronous, blocking file I/O with bounded buffers, to
//! be run on `spawn_blocking` by the move protocol that will drive it.
//!
//! One round of a move, as the protocol will run it (the sender is the
//! volume's owner, the receiver the destination):
//!
//! ```text
//! receiver                                 sender
//! ReceiverCopy::open                       VolumeStore::scanner, Scanner::scan -> want
//! summary_items  ── SummaryItem* ───────▶  SummaryBuilder -> have   (first round only;
//! leaves         ◀── LeafRequest* ───────  Summary::leaf_requests   later rounds use the
//!                ── LeafReply* ─────────▶  Summary::add_leaves      last round's expected)
//!                                          Delta::compute(have, want)
//! begin_round (marks Incomplete)
//! Round::apply_item ◀── DeltaItem* ──────  Delta::items
//! Round::apply_chunk ◀── Chunk* ─────────  Delta::chunks (ChunkReader)
//! Round::finish ◀── RoundEnd ────────────  ChunkReader::finish -> expected, RoundEnd
//!   root equal + epoch given: Complete
//! ```
//!
//! Rounds repeat while the app runs; the last one follows the app's stop and
//! names the handoff epoch, which Raft then commits. Module map:
//!
//! - `path`: `RelPath`, validated relative paths; `resolve_beneath`.
//! - `hash`: block size, the hash tree and its exact definition.
//! - `manifest`: `Manifest`, `Entry`, `Meta`, `FileData`.
//! - `cache`: `HashCache`, what makes a rescan cheap; owners not applied and
//!   setuid/setgid bits not written (the volume still sees the sender's).
//! - `scan`: reading a copy into a `Manifest`.
//! - `mark`: the mark file. `store`: `VolumeStore`, layout, `mountable`.
//! - `summary`: `Summary` (what a sender knows of the receiver), `Limits`.
//! - `delta`: `Delta`. `chunks`: `ChunkReader`. `apply`: `ReceiverCopy`, `Round`.
//! - `wire`: the messages and their size limits.
//! - `usage`: disk a copy uses, compared with `maximum_size`.
//! - `replica`: `ReplicaSlots`, a replica's two copies of a volume (the last
//!   complete point kept while the next arrives) and their promotion.
//! - `backend`: `Backend` (btrfs, xfs, dir), how this node takes
//!   crash-consistent points of a volume and writable copies of them
//!   (issue 15); `changed_ranges` from FIEMAP; `LoopFs` for its tests.

pub mod apply;
pub mod backend;
pub mod cache;
pub mod chunks;
pub mod delta;
pub mod error;
pub mod hash;
pub mod manifest;
pub mod mark;
pub mod path;
pub mod replica;
pub mod scan;
pub mod store;
pub mod summary;
mod sys;
pub mod usage;
pub mod wire;

#[cfg(test)]
mod tests;

pub use apply::{ApplyOptions, ReceiverCopy, Round, RoundOutcome, RoundStats};
pub use backend::{
    Backend, BackendChoice, BackendKind, CaptureMethod, CaptureStats, Settle, SizeLimit,
};
pub use cache::HashCache;
pub use chunks::ChunkReader;
pub use delta::{Delta, DeltaStats};
pub use error::{human_bytes, ReserveShortfall, VolumeError};
pub use hash::{Hash, BLOCK_SIZE};
pub use manifest::{Entry, FileData, Kind, Manifest, Meta};
pub use mark::{Mark, MarkState};
pub use path::RelPath;
pub use replica::{HeldPoint, ReplicaSlots, Slot};
pub use scan::{ScanOptions, ScanReport};
pub use store::{Scanner, StaleCopy, VolumeStore};
pub use summary::{Limits, Summary, SummaryBuilder};
pub use sys::available_bytes;

// The move protocol hands these to `spawn_blocking` and between tasks.
const _: fn() = || {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<VolumeStore>();
    shareable::<ReceiverCopy>();
    shareable::<Manifest>();
    shareable::<Summary>();
    shareable::<Delta>();
    shareable::<VolumeError>();
    shareable::<Backend>();
};
