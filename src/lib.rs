//! flocker: stateful Docker containers on a Raft cluster with no master.
//! See ARCHITECTURE.md for the map of these modules.

pub mod agent;
pub mod api;
pub mod bench;
pub mod ca;
pub mod config;
pub mod ctl;
pub mod durable;
pub mod http;
pub mod metrics;
pub mod moves;
pub mod net;
pub mod netlab;
pub mod node;
pub mod plant;
pub mod raft;
pub mod recover;
pub mod replication;
pub mod routing;
pub mod runtime;
pub mod scheduler;
pub mod state;
pub mod volume;
