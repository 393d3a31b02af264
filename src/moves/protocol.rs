//! The messages of one volume stream (`Service::Volume`), in both
//! directions, and their frame limit.
//!
//! A stream carries one session of one move attempt: the source opens it
//! with `Hello`, the destination answers `Ready` (or `Refused` and closes).
//! Then any number of rounds, each `Begin`, the round's `Item`s and
//! `Chunk`s, and `End`, answered by `RoundDone`. The first round of a
//! session starts with `SummaryPlease`: the destination describes its copy
//! (`Summary`* then `SummaryEnd`) and the source asks for the block hashes
//! of groups that differ (`Leaves` each answered by `Leaves`). Later rounds
//! of the same session need no summary: the source knows what it sent.

use crate::volume::wire::{
    Chunk, DeltaItem, LeafReply, LeafRequest, RoundEnd, SummaryItem, MAX_MESSAGE_BYTES,
};
use serde::{Deserialize, Serialize};

/// The largest frame on a volume stream: the largest volume message and
/// the envelope around it.
pub const MAX_VOLUME_FRAME: usize = MAX_MESSAGE_BYTES + 4096;

/// Source → destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToReceiver {
    /// Opens a session for the move attempt of `app` at `epoch`.
    Hello {
        app: String,
        epoch: u64,
    },
    SummaryPlease,
    Leaves(LeafRequest),
    Begin,
    Item(DeltaItem),
    Chunk(Chunk),
    /// The round's tail. `complete_epoch` only on the final round, sent
    /// after the freeze: the copy is marked complete at it when it matches.
    End {
        end: RoundEnd,
        complete_epoch: Option<u64>,
    },
    /// Opens a session that ships the owner's point `seq`, taken at owner
    /// epoch `epoch`, to this replica of `app` (`crate::replication`). Its
    /// rounds go into the replica's spare slot; the last one names `epoch`
    /// as the epoch to complete at. (Appended: variants keep their places.)
    ReplicaHello {
        app: String,
        epoch: u64,
        seq: u64,
    },
}

/// Destination → source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToSender {
    Ready,
    Summary(SummaryItem),
    SummaryEnd,
    Leaves(LeafReply),
    RoundDone {
        /// The copy's root equals the sender's.
        matched: bool,
        /// The copy is marked complete at the epoch asked for.
        complete: bool,
        bytes_written: u64,
    },
    /// The session ends: why, in words for the operator.
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::wire::{BlockChunk, MAX_CHUNK_BLOCKS};

    #[test]
    fn the_largest_chunk_fits_a_frame() {
        let chunk = ToReceiver::Chunk(Chunk::Data(BlockChunk {
            path_id: u32::MAX,
            index: u64::MAX,
            bytes: vec![0xAB; MAX_CHUNK_BLOCKS * crate::volume::BLOCK_SIZE],
        }));
        let encoded = crate::net::frame::encode(&chunk);
        assert!(encoded.len() <= MAX_VOLUME_FRAME, "{}", encoded.len());
    }
}
