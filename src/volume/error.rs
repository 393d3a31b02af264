//! `VolumeError`, the one error type of the volume module. It keeps apart
//! what the caller must tell differently: a local file-system failure (retry,
//! or report the disk), a peer that sent something refused (drop that peer's
//! stream, never the node), and a file of our own that does not read back
//! (mark or cache: treated as absent by the callers that can).

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Untrusted input (a peer's summary, delta or chunk) that is refused.
    #[error("refused peer input: {0}")]
    Peer(String),
    #[error("corrupt {what} at {}: {why}", path.display())]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    /// A local limit or precondition: a bad app name, a volume that cannot be
    /// represented (a path longer than the wire allows), a copy that exists.
    #[error("{0}")]
    Invalid(String),
    /// Writing would eat into the free space kept for Raft (`--reserve`).
    #[error("{}", .0.describe("this node"))]
    Reserve(ReserveShortfall),
}

/// Free space a write would leave below the node's reserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReserveShortfall {
    pub reserve: u64,
    /// Available on the file system before the write.
    pub available: u64,
    /// What the write needed.
    pub writing: u64,
}

impl ReserveShortfall {
    /// `receiving would leave less than the 1.0 GiB reserve free on n2's
    /// disk (…)`, with `whose` naming the node.
    pub fn describe(&self, whose: &str) -> String {
        let disk = if whose == "this node" {
            "this node's disk".to_string()
        } else {
            format!("{whose}'s disk")
        };
        format!(
            "receiving would leave less than the {} reserve free on {disk} ({} available, {} to write; the reserve keeps room for Raft: see flocker node --reserve)",
            human_bytes(self.reserve),
            human_bytes(self.available),
            human_bytes(self.writing),
        )
    }
}

/// `1.0 GiB`, `512 B`: sizes for people.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

pub(crate) fn peer(why: impl Into<String>) -> VolumeError {
    VolumeError::Peer(why.into())
}

/// Attaches the operation and path to an `io::Error`, so every failure names
/// the file it happened on.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| VolumeError::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}
