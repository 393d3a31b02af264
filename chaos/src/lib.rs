//! flocker-chaos: a Jepsen-style suite that runs real `flocker node`
//! processes in network namespaces, injects faults, records a history and
//! checks it. See chaos/README.md.

pub mod check;
pub mod history;
pub mod report;
pub mod verdict;

// The run harness (see run.rs for the order of things).
pub mod app;
pub mod caught;
pub mod check_shim;
pub mod clock;
pub mod cluster;
pub mod ctl;
pub mod docker_events;
pub mod fuse_cost;
pub mod ids;
pub mod moves;
pub mod nemesis;
pub mod record;
pub mod routed;
pub mod run;
pub mod schedule;
pub mod sh;
pub mod signals;
pub mod topology;
pub mod views;
pub mod witness;
pub mod workload;
