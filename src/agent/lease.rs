//! The node's lease and the files that carry it into fenced containers, in
//! one place: a node may run the containers the cluster may start elsewhere
//! only while its lease holds, and every renewal is published at once to
//! `<fence dir>/lease`, which the fence inside each such container reads
//! (`fence.rs`), so the container stops on time even when this process is
//! dead or paused. The heartbeat loop (`scheduler`) renews it; the agent and
//! the routing mesh act on its validity.
//!
//! The timing of invariant 3 is defined here, both sides of it: how often a
//! node heartbeats, how long an ack lets it run, and how long the leader
//! waits before declaring it down, with the compile-time check that ties
//! them. The leader's scheduler and the API's heartbeat both read them from
//! here, below either.

use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often every node heartbeats the leader.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// How long a heartbeat ack lets a node run fenceable containers.
pub const NODE_LEASE: Duration = Duration::from_secs(2);
/// How long the leader waits without a heartbeat before declaring a node down.
pub const DOWN_GRACE: Duration = Duration::from_millis(3500);
/// Time the fenced node gets to kill its containers, in the margin.
const KILL_MARGIN: Duration = Duration::from_millis(500);
const _: () = assert!(
    DOWN_GRACE.as_millis()
        > NODE_LEASE.as_millis() + HEARTBEAT_INTERVAL.as_millis() + KILL_MARGIN.as_millis(),
    "the leader's grace must outlast a node's lease, a heartbeat and a kill"
);

/// Node side: until when this node may run containers the cluster may start
/// elsewhere. Starts expired: a node runs none before it has heard from the
/// cluster.
pub struct Lease {
    until: Mutex<Option<Instant>>,
    valid: watch::Sender<bool>,
    /// The fence directory whose lease file fenced containers read.
    fence_dir: Option<std::path::PathBuf>,
}

impl Default for Lease {
    fn default() -> Self {
        Lease {
            until: Mutex::new(None),
            valid: watch::Sender::new(false),
            fence_dir: None,
        }
    }
}

impl Lease {
    /// A lease that also publishes its deadline to fenced containers.
    pub fn with_fence(fence_dir: std::path::PathBuf) -> Lease {
        Lease {
            fence_dir: Some(fence_dir),
            ..Lease::default()
        }
    }

    /// Extends the lease to `NODE_LEASE` after `heard_at`, when a quorum was
    /// last known to be there.
    pub fn renew(&self, heard_at: Instant) {
        let mut until = self.until.lock().expect("lease lock");
        let new = heard_at + NODE_LEASE;
        if until.is_none_or(|u| u < new) {
            *until = Some(new);
            if let Some(dir) = &self.fence_dir {
                let left = new.saturating_duration_since(Instant::now());
                let published = super::fence::uptime_cs().and_then(|now| {
                    let mut deadline = now + (left.as_millis() / 10) as u64;
                    if crate::plant::planted(crate::plant::PlantedBug::NoFencing) {
                        deadline = u64::from(u32::MAX);
                    }
                    super::fence::write_lease(dir, deadline)
                });
                if let Err(e) = published {
                    tracing::error!("cannot publish the lease to fenced containers: {e:#}");
                }
            }
        }
        drop(until);
        self.refresh();
    }

    pub fn expires_at(&self) -> Option<Instant> {
        *self.until.lock().expect("lease lock")
    }

    pub fn is_valid(&self) -> bool {
        self.expires_at().is_some_and(|u| Instant::now() < u)
    }

    /// Publishes validity changes (call after time may have run the lease out).
    pub fn refresh(&self) {
        let valid = self.is_valid();
        self.valid
            .send_if_modified(|v| std::mem::replace(v, valid) != valid);
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.valid.subscribe()
    }
}
