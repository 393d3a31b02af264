//! The client API: what `flocker ctl` (and a node forwarding on a client's
//! behalf) may ask, how writes reach the leader and are acknowledged only once
//! committed, and how reads are made linearizable with a read index.
//!
//! It owns request handling, not transport (`net`) or storage (`raft`).
//! [`Api`] is also the handle the drivers above it (`scheduler`, `moves`)
//! propose and ask through; it reports what the layers below it (`agent`,
//! `routing`) observe, and depends on none above it (ARCHITECTURE.md, Layers).

mod caller;
pub mod client;
mod event_gather;
pub mod events;
pub mod freshness;
mod heartbeat;
mod logs;
mod membership;
mod messages;
pub mod metered;
mod peer;
mod proposer;
mod replica_view;
mod routing_view;
mod server;
mod status_view;
mod upkeep_trust;

pub use caller::Caller;
pub use events::{Event, EventKey, EventLog, EventsPage};
pub use heartbeat::Liveness;
pub use logs::LogSource;
pub use messages::*;
pub use routing_view::{route_views, RouteView};
pub use server::{reply_for_call_error, Api, DEFAULT_HISTORY_PAGE};
