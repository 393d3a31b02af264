//! The openraft type configuration and node identities.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Cursor;

use crate::state::{Batch, Outcome};

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Batch,
        R = Vec<Outcome>,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;

/// A member as the Raft membership records it: its certificate name and the
/// address its QUIC endpoint listens on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub address: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.address)
    }
}

/// The Raft node id of the node named `name`. Ids derive from names so that a
/// node's identity in the cluster is exactly the name in its certificate, and
/// every node computes the same ids from the same `--peers` with no exchange.
/// (Collisions among 63-bit hashes of a few hundred names are negligible and
/// refused when a member is added.)
pub fn node_id_for(name: &str) -> u64 {
    let hash = blake3::hash(name.as_bytes());
    let bytes: [u8; 8] = hash.as_bytes()[..8].try_into().expect("8 bytes");
    u64::from_be_bytes(bytes) >> 1
}
