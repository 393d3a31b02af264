//! Consensus: the openraft type configuration, the RocksDB-backed log and
//! state machine stores, and the network adapter that carries Raft RPCs over
//! the cluster's QUIC endpoint.
//!
//! This module keeps storage, network and state apart (as openraft's own
//! examples do). It does not decide membership policy or serve clients: that
//! is `node` and `api`.

mod log_store;
mod network;
mod state_machine;
mod store;
mod types;
mod wal_sync;

pub use log_store::LogStore;
pub use network::{serve_raft_rpc, RaftNetworkFactoryImpl, RaftRpc};
pub use state_machine::{Applied, StateMachineStore};
pub use store::open_stores;
pub use types::{node_id_for, NodeInfo, Raft, TypeConfig};
