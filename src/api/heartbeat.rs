//! Both ends of the heartbeat (invariant 3). A node asks the leader
//! ([`Api::heartbeat_leader`]) how fresh its quorum contact is, to renew its
//! lease; the leader records whom it heard from ([`Liveness`], which its
//! scheduler reads to declare nodes down) and answers with the age of its
//! last quorum acknowledgement ([`QuorumWatch`]). The scheduler's loops drive
//! both; the timing comes from `agent::lease`.

use super::messages::{PeerReply, PeerRequest};
use super::Api;
use crate::agent::lease::{HEARTBEAT_INTERVAL, NODE_LEASE};
use crate::raft::Raft;
use openraft::ServerState;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Leader side: when each node was last heard from.
#[derive(Default)]
pub struct Liveness {
    heard: Mutex<HashMap<String, Instant>>,
}

impl Liveness {
    pub fn heard(&self, node: &str) {
        self.heard
            .lock()
            .expect("liveness lock")
            .insert(node.to_string(), Instant::now());
    }

    pub fn last(&self, node: &str) -> Option<Instant> {
        self.heard.lock().expect("liveness lock").get(node).copied()
    }
}

/// The leader's last quorum contact as openraft reported it, stamped with
/// when this process saw the report.
#[derive(Clone, Default)]
pub(super) struct QuorumWatch(Arc<Mutex<Option<(Duration, std::time::Instant)>>>);

impl QuorumWatch {
    /// Follows the metrics for as long as Raft runs.
    pub(super) fn start(raft: &Raft) -> QuorumWatch {
        let watch = QuorumWatch::default();
        let seen = watch.clone();
        let mut metrics = raft.metrics();
        tokio::spawn(async move {
            loop {
                let report = {
                    let m = metrics.borrow_and_update();
                    m.millis_since_quorum_ack
                        .filter(|_| m.state == ServerState::Leader)
                        .map(|ms| (Duration::from_millis(ms), std::time::Instant::now()))
                };
                *seen.0.lock().expect("quorum lock") = report;
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
        watch
    }

    /// How long ago a quorum acknowledged this leader, as of now.
    fn age(&self) -> Option<Duration> {
        let (age, seen) = (*self.0.lock().expect("quorum lock"))?;
        Some(age + seen.elapsed())
    }
}

impl Api {
    /// As leader: a heartbeat from `peer`. A node that is no longer a member
    /// (removed) gets no lease: the cluster may already be starting its apps
    /// elsewhere.
    pub(super) fn heartbeat_from(&self, peer: &str) -> PeerReply {
        let member = self.sm.read().state.nodes.contains_key(peer);
        if member {
            self.liveness.heard(peer);
        }
        PeerReply::HeartbeatAck {
            quorum_age_ms: self
                .quorum_age()
                .filter(|_| member)
                .map(|d| d.as_millis() as u64),
            leader_applied: self
                .raft
                .metrics()
                .borrow()
                .last_applied
                .map_or(0, |l| l.index),
        }
    }

    /// As leader: how long ago a quorum last acknowledged this node, when
    /// recent enough to renew a lease.
    ///
    /// openraft's figure is as old as its last metrics report, and a paused
    /// process reads it unchanged on waking: so it is aged by the time since
    /// it was seen (`QuorumWatch`), or a leader back from a SIGSTOP would
    /// renew leases on a quorum contact from before its pause.
    fn quorum_age(&self) -> Option<Duration> {
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return None;
        }
        let age = self.quorum.age()?;
        (age < NODE_LEASE).then_some(age)
    }

    /// Sends this node's heartbeat to the leader (or, on the leader, checks
    /// its own quorum); returns how old the leader's quorum contact is and
    /// the log index this node must apply before it may renew its lease.
    pub async fn heartbeat_leader(&self) -> Option<(Duration, u64)> {
        if self.is_leader() {
            // Everything in its log: a new leader applies its predecessor's
            // entries before it may act on them.
            let catch_up_to = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
            return self.quorum_age().map(|age| (age, catch_up_to));
        }
        let leader = {
            let m = self.raft.metrics().borrow().clone();
            let id = m.current_leader?;
            m.membership_config.membership().get_node(&id).cloned()?
        };
        match self
            .ask(&leader, &PeerRequest::Heartbeat, HEARTBEAT_INTERVAL)
            .await
        {
            Ok(PeerReply::HeartbeatAck {
                quorum_age_ms: Some(ms),
                leader_applied,
            }) => Some((Duration::from_millis(ms), leader_applied)),
            _ => None,
        }
    }
}
