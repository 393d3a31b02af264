//! flocker: stateful Docker containers on a Raft cluster with no master.
//! See ARCHITECTURE.md for the map of these modules.

pub mod ca;
pub mod net;
pub mod raft;
pub mod state;
