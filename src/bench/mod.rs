//! `flocker bench`: measurements against anchors taken in the same run on the
//! same machine (timings here are noisy; only same-run ratios mean anything).
//! Benchmarks live here, not in tests: tests never time things.

mod cluster;
pub mod deploy;
mod docker_cli;
mod etcd;
pub mod failover;
mod https;
mod logs;
pub mod nodeloss;
mod procs;
pub mod raft;
pub mod routing;
pub mod scale;
mod scrape;
mod stats;
pub mod volume;
