//! The mark: the one small file that says whether a copy may be mounted
//! (invariant 5). It owns the format and the durable write; the rules of
//! when to write which state are kept by its callers (`apply::Round` marks
//! Incomplete before a round's first write and Complete only on an equal
//! root; `VolumeStore::mountable` reads it).
//!
//! Format, 81 bytes: `FLKMARK\x01`, state (0 Incomplete, 1 Complete), epoch
//! (u64 LE), root (32 bytes), then BLAKE3 of the 49 bytes before. A torn or
//! foreign file fails the checksum and reads as corrupt, so never as Complete.

use super::error::{IoContext, Result, VolumeError};
use super::hash::Hash;
use super::sys;
use std::path::Path;

const MAGIC: &[u8; 8] = b"FLKMARK\x01";
const BODY: usize = 8 + 1 + 8 + 32;
pub const MARK_LEN: usize = BODY + 32;
/// The mark's file name inside a volume's directory (next to `data`).
pub const MARK_FILE: &str = "mark";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkState {
    Incomplete,
    Complete,
}

/// `epoch` and `root` of an Incomplete mark are those of the last Complete
/// state the copy had (or zero): they tell `volume recover` how new the copy
/// is, never that it may be mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub state: MarkState,
    pub epoch: u64,
    pub root: Hash,
}

impl Mark {
    pub fn is_complete_at(&self, epoch: u64) -> bool {
        self.state == MarkState::Complete && self.epoch == epoch
    }

    pub fn encode(&self) -> [u8; MARK_LEN] {
        let mut out = [0u8; MARK_LEN];
        out[..8].copy_from_slice(MAGIC);
        out[8] = match self.state {
            MarkState::Incomplete => 0,
            MarkState::Complete => 1,
        };
        out[9..17].copy_from_slice(&self.epoch.to_le_bytes());
        out[17..BODY].copy_from_slice(&self.root);
        let sum = blake3::hash(&out[..BODY]);
        out[BODY..].copy_from_slice(sum.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Mark, String> {
        if bytes.len() != MARK_LEN || !bytes.starts_with(MAGIC) {
            return Err(format!("not a mark ({} bytes)", bytes.len()));
        }
        if blake3::hash(&bytes[..BODY]).as_bytes() != &bytes[BODY..] {
            return Err("checksum mismatch".into());
        }
        let state = match bytes[8] {
            0 => MarkState::Incomplete,
            1 => MarkState::Complete,
            s => return Err(format!("unknown state {s}")),
        };
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&bytes[9..17]);
        let mut root = [0u8; 32];
        root.copy_from_slice(&bytes[17..BODY]);
        Ok(Mark {
            state,
            epoch: u64::from_le_bytes(epoch),
            root,
        })
    }
}

/// The mark in volume directory `dir`; `None` if it has none.
pub fn read_mark(dir: &Path) -> Result<Option<Mark>> {
    let path = dir.join(MARK_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).ctx("read", &path),
    };
    Mark::decode(&bytes)
        .map(Some)
        .map_err(|why| VolumeError::Corrupt {
            what: "mark",
            path,
            why,
        })
}

/// Writes the mark durably: once this returns, a crash leaves this mark.
pub(crate) fn write_mark(dir: &Path, mark: &Mark) -> Result<()> {
    sys::write_atomic(dir, MARK_FILE, &mark.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let m = Mark {
            state: MarkState::Complete,
            epoch: 7,
            root: [3; 32],
        };
        let bytes = m.encode();
        assert_eq!(Mark::decode(&bytes).unwrap(), m);
        for i in [0, 8, 9, 20, MARK_LEN - 1] {
            let mut b = bytes;
            b[i] ^= 1;
            assert!(Mark::decode(&b).is_err(), "flip at {i}");
        }
        assert!(Mark::decode(&bytes[..MARK_LEN - 1]).is_err());
        assert!(m.is_complete_at(7));
        assert!(!m.is_complete_at(8));
    }
}
