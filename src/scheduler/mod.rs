//! Leader-side scheduling and node liveness, and the node-side lease that
//! fences containers when a node loses the cluster.
//!
//! Timing (invariant 3): every node heartbeats the leader every
//! [`HEARTBEAT_INTERVAL`]; an ack from a leader that heard from a quorum
//! renews the node's [`Lease`] for [`NODE_LEASE`]. A node whose lease ran out
//! kills every container the cluster may start elsewhere. The leader declares
//! a node down only after [`DOWN_GRACE`] without a heartbeat — strictly longer
//! than the lease plus a heartbeat and a kill — and a new leader first grants
//! every node a full grace. Only then are its `anywhere` apps placed again.
//! The numbers are defined beside the lease (`agent::lease`, re-exported
//! here); the heartbeat's requests and acks are the API's (`api::heartbeat`):
//! these loops only drive them, through the [`Api`] handle.

mod placement;

pub use crate::agent::lease::{Lease, DOWN_GRACE, HEARTBEAT_INTERVAL, NODE_LEASE};
pub use placement::{place, Change};

use crate::api::{Api, Liveness};
use crate::state::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the leader reviews liveness and placements.
const SCHEDULER_TICK: Duration = Duration::from_millis(200);
/// How long a heartbeat waits for this node to apply what the leader had
/// committed before it renews the lease (no renewal otherwise).
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// Every node: heartbeats the leader and renews its lease from the acks.
pub async fn heartbeat_loop(api: Arc<Api>, lease: Arc<Lease>) {
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_done = Instant::now();
    let mut no_renewal_until: Option<Instant> = None;
    loop {
        tick.tick().await;
        let sent = Instant::now();
        // A stall of this process (SIGSTOP, starved threads) makes every
        // figure it held stale, the leader's quorum contact included: a
        // report openraft published just before the stall is only seen
        // after it, and would look fresh. After a stall longer than the
        // margin between lease and grace allows, renew nothing for a whole
        // lease (chaos: a leader resumed from SIGSTOP started an app 77 ms
        // after the new leader's node did).
        // (The wait for this tick is at most one interval; the round's own
        // awaits renew relative to `sent`, so a stall inside them only
        // shortens the lease.)
        let waited = sent.duration_since(last_done);
        if waited > HEARTBEAT_INTERVAL + STALL_LIMIT {
            tracing::warn!(
                waited_ms = waited.as_millis() as u64,
                "this process stalled: no lease renewal for {NODE_LEASE:?}"
            );
            no_renewal_until = Some(sent + NODE_LEASE);
        }
        if no_renewal_until.is_some_and(|until| sent < until) {
            lease.refresh();
            last_done = Instant::now();
            continue;
        }
        if let Some((quorum_age, catch_up_to)) = api.heartbeat_leader().await {
            // A node cut off for a while holds an old state (an app placed
            // here that has since moved): it may act on it again only once
            // it has applied what the leader had committed (like a read index).
            let caught_up = api
                .raft
                .wait(Some(CATCH_UP_WAIT))
                .applied_index_at_least(Some(catch_up_to), "caught up for the lease")
                .await
                .is_ok();
            if caught_up {
                lease.renew(sent.checked_sub(quorum_age).unwrap_or(sent));
            }
        }
        lease.refresh();
        last_done = Instant::now();
    }
}

/// A wait for the next heartbeat round longer than one interval plus this
/// means the process stalled. It is under `DOWN_GRACE - NODE_LEASE`, the
/// margin that absorbs a quorum figure this much staler than it looks.
const STALL_LIMIT: Duration = Duration::from_millis(500);
const _: () = assert!(STALL_LIMIT.as_millis() < DOWN_GRACE.as_millis() - NODE_LEASE.as_millis());

/// Every node; acts only while it is the leader: declares nodes down or up
/// and commits placements of `anywhere` apps.
pub async fn leader_loop(api: Arc<Api>, liveness: Arc<Liveness>) {
    let mut tick = tokio::time::interval(SCHEDULER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leader_since: Option<Instant> = None;
    loop {
        tick.tick().await;
        if !api.is_leader() {
            leader_since = None;
            continue;
        }
        let now = Instant::now();
        // A new leader gives every node a full grace before judging it.
        let since = *leader_since.get_or_insert(now);
        let (liveness_changes, placements, failovers) = {
            let applied = api.sm.read();
            let state = &applied.state;
            let mut changes = Vec::new();
            for (name, record) in &state.nodes {
                if *name == api.name {
                    if record.down {
                        changes.push((name.clone(), false));
                    }
                    continue;
                }
                let heard = liveness.last(name);
                let last = heard.map_or(since, |h| h.max(since));
                let overdue = now.duration_since(last) > DOWN_GRACE;
                let heard_lately = heard.is_some_and(|h| now.duration_since(h) < DOWN_GRACE);
                if overdue && !record.down {
                    changes.push((name.clone(), true));
                } else if record.down && heard_lately {
                    changes.push((name.clone(), false));
                }
            }
            (changes, place(state), state.due_failovers())
        };
        for (node, down) in liveness_changes {
            tracing::warn!(%node, down, "leader changes node liveness");
            if let Err(e) = api
                .submit_as_node(Command::SetNodeDown { node, down })
                .await
            {
                tracing::warn!("liveness change not committed: {e}");
            }
        }
        for failover in failovers {
            tracing::warn!(?failover, "failing a volume over to its freshest replica");
            if let Err(e) = api.submit_as_node(failover).await {
                tracing::warn!("failover not committed: {e}");
            }
        }
        if !placements.is_empty() {
            tracing::info!(?placements, "placing anywhere apps");
            let count = placements.len() as u64;
            match api
                .submit_as_node(Command::Place {
                    changes: placements,
                })
                .await
            {
                Ok(_) => crate::metrics::get()
                    .scheduler_placements_total
                    .inc_by(count),
                Err(e) => tracing::warn!("placements not committed: {e}"),
            }
        }
    }
}
