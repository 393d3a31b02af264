//! Continuous volume replication (issue 15): the owner of a volume takes
//! crash-consistent points of it and ships each to the volume's replicas;
//! a replica keeps its last complete point while the next one arrives.
//!
//! The owner, for every app it runs whose volume has replicas
//! (`state::replicas`), every `point_interval` (a third of `max_lag`, at
//! least a second):
//!
//! 1. takes a point: `docker pause` (when the volume backend needs it), the
//!    backend's capture of the live copy into `<data-dir>/points/<app>`,
//!    `docker unpause` — the pause is the app's only stall;
//! 2. scans the point (the hash cache makes that cost what changed) and
//!    ships it to each replica over the volume endpoint, as rounds of the
//!    move protocol opened by `ReplicaHello` (`crate::moves`), with the rate
//!    limit of moves;
//! 3. once a replica answers that its slot is complete at the point's root,
//!    commits `ReplicaPoint` through Raft (the owner's alone to propose).
//!
//! The replica side (`moves::replica`, on the volume stream) writes each point into the slot that does
//! not hold its newest committed point (`volume::replica`), so a point cut
//! off by the owner's death leaves the previous one intact. A failover
//! promotes exactly the committed point's slot (`agent`).
//!
//! Not here: who holds replicas (`state::replicas`, a function of the
//! state), and when to fail over (the leader, `scheduler`).

pub mod owner;
pub mod upkeep;

pub use owner::{point_interval, Replicator};
