//! The client API: what `flocker ctl` (and a node forwarding on a client's
//! behalf) may ask, how writes reach the leader and are acknowledged only once
//! committed, and how reads are made linearizable with a read index.
//!
//! It owns request handling, not transport (`net`) or storage (`raft`).

mod caller;
pub mod client;
mod logs;
mod messages;
mod proposer;
mod routing_view;
mod server;
mod upkeep_trust;

pub use caller::Caller;
pub use logs::LogSource;
pub use messages::*;
pub use routing_view::{route_views, RouteView};
pub use server::{reply_for_call_error, Api};
