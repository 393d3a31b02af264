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
