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

pub use crate::ca::node_id_for;
