//! This node's side of the metrics (issue 17): its own gauges, read from its
//! Raft handle and applied state when scraped, and the elections it starts.

use crate::metrics::server::Refresh;
use crate::metrics::NodeGauges;
use crate::raft::{Raft, StateMachineStore};
use openraft::ServerState;
use std::sync::Arc;

/// Fills a scrape's [`NodeGauges`] from `raft` and `sm`.
pub fn refresh(raft: Raft, sm: StateMachineStore) -> Refresh {
    Arc::new(move |gauges: &NodeGauges| {
        {
            let m = raft.metrics();
            let m = m.borrow();
            gauges.raft_term.set(m.current_term as i64);
            let leader = m.state == ServerState::Leader;
            gauges.raft_is_leader.set(i64::from(leader));
            let applied = m.last_applied.map_or(0, |l| l.index);
            gauges.raft_applied_index.set(applied as i64);
            gauges
                .raft_last_log_index
                .set(m.last_log_index.unwrap_or(0) as i64);
            let voters = m.membership_config.membership().voter_ids().count();
            gauges.raft_voters.set(voters as i64);
        }
        let applied = sm.read();
        let nodes = applied.state.nodes.values();
        let (mut up, mut down, mut drained) = (0, 0, 0);
        for record in nodes {
            match (record.down, record.drained) {
                (true, _) => down += 1,
                (false, true) => drained += 1,
                (false, false) => up += 1,
            }
        }
        for (liveness, count) in [("up", up), ("down", down), ("drained", drained)] {
            gauges.nodes.with_label_values(&[liveness]).set(count);
        }
    })
}

/// Counts the elections this node starts: each time it becomes a candidate.
pub async fn count_elections(raft: Raft) {
    let mut watch = raft.metrics();
    let mut was_candidate = false;
    while watch.changed().await.is_ok() {
        let candidate = watch.borrow().state == ServerState::Candidate;
        if candidate && !was_candidate {
            crate::metrics::get().raft_elections_total.inc();
        }
        was_candidate = candidate;
    }
}
