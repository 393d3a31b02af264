//! Node-to-node and client-to-node transport: one QUIC endpoint per node with
//! mutual TLS from the cluster CA, length-limited frames, and a service tag at
//! the start of every stream.
//!
//! This module moves bytes and authenticates peers. It does not know what the
//! messages mean: services (`raft`, `api`) decode their own requests and check
//! what the authenticated [`crate::ca::Identity`] may do.

pub mod deny;
pub mod endpoint;
pub mod frame;
pub mod tls;
pub mod verify;

pub use deny::DenyList;
pub use endpoint::{CallError, Net, Service, StreamHandler};
pub use frame::{read_frame, write_frame, FrameError};
