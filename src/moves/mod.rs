//! Moving volumes between nodes (issue 6): the network half that drives
//! `crate::volume`'s rounds over QUIC, and the Raft steps around them.
//!
//! A move, as the source (the volume's owner) runs it (`driver`):
//!
//! 1. push rounds over one volume stream while the app keeps running,
//!    until what is still dirty is small (`sender`);
//! 2. commit `Freeze`: from here on no node runs the app, and the source's
//!    agent stops it;
//! 3. once the container is gone, a final round sends what changed since
//!    the last one and asks the destination to mark its copy complete at
//!    the attempt's epoch (`receiver`);
//! 4. commit `Handoff` (the destination proposes it too): the destination
//!    owns the volume at that epoch and its agent starts the app.
//!
//! Failures before the freeze retry the same attempt (a new session asks
//! the destination what it holds, so only what is missing is sent again);
//! failures after it retry the final round a few times and then commit
//! `Retry`, which hands the app back to the source under a fresh epoch. The
//! source stays the owner until a handoff commits, and nothing mounts a
//! copy unless it is complete at the committed epoch (invariants 4 and 5).
//! The volume endpoint is separate from the Raft one (`endpoint`).

pub mod driver;
pub mod endpoint;
pub mod error;
pub mod protocol;
pub mod receiver;
pub mod releases;
pub mod replica;
pub mod sender;

use crate::api::Api;
use crate::raft::StateMachineStore;
use crate::runtime::ContainerRuntime;
use crate::state::{Command, MoveStep, State};
use crate::volume::VolumeStore;
use std::sync::Arc;
use std::time::Duration;

/// Proposals of a handoff before giving the question back to the caller.
const HANDOFF_PROPOSALS: u32 = 10;
const HANDOFF_RETRY: Duration = Duration::from_millis(500);
/// How long a session waits for this node to apply the state a peer names
/// (the move, its freeze) before refusing: the peer applied it already.
const STATE_WAIT: Duration = Duration::from_secs(3);

/// What the movers of one node share.
pub struct MoveContext {
    pub node: String,
    pub api: Arc<Api>,
    pub sm: StateMachineStore,
    pub store: VolumeStore,
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Labels of this node's containers (cluster and node).
    pub labels: crate::runtime::Labels,
    /// Where progress is published for `ctl status`.
    pub observed: crate::agent::Observations,
    /// Outgoing volume streams (the volume endpoint's).
    pub volume_net: Arc<crate::net::Net>,
    /// Sender's limit in bytes per second; 0: none.
    pub rate_limit: u64,
    /// Free space a receiving round must leave on the volume store's file
    /// system (`--reserve`); 0: none.
    pub reserve: u64,
    /// This node's replica slots (`volume::replica`).
    pub slots: crate::volume::ReplicaSlots,
    /// How this node takes points and copies trees (`volume::backend`).
    pub backend: crate::volume::Backend,
}

/// How a handoff question ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffResult {
    /// The destination owns the volume at the attempt's epoch.
    Done,
    /// The attempt is no longer the move's (a retry, a cancel, a recover).
    Superseded,
    /// Neither could be seen: no quorum, or proposals failing.
    Unknown(String),
}

impl MoveContext {
    /// Waits until `check` says something of this node's applied state, for
    /// at most `timeout`.
    pub async fn wait_state<T>(
        &self,
        timeout: Duration,
        check: impl Fn(&State) -> Option<T>,
    ) -> Option<T> {
        let mut applied = self.sm.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = check(&self.sm.read().state) {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }

    /// Waits until the attempt of `app` at `epoch` from `from` to this node
    /// is in flight here; returns the volume's committed epoch.
    pub async fn wait_for_attempt(&self, app: &str, epoch: u64, from: &str) -> Result<u64, String> {
        let seen = self
            .wait_state(STATE_WAIT, |s| {
                let m = s.moves.get(app)?;
                if m.epoch > epoch {
                    return Some(Err(format!(
                        "the attempt at epoch {epoch} was superseded by epoch {}",
                        m.epoch
                    )));
                }
                (m.epoch == epoch && m.from == from && m.to == self.node)
                    .then(|| Ok(s.volumes.get(app).map_or(0, |o| o.epoch)))
            })
            .await;
        seen.unwrap_or_else(|| {
            Err(format!(
                "{} knows no move of {app} from {from} to it at epoch {epoch}",
                self.node
            ))
        })
    }

    /// Whether this node has applied the freeze of `app`'s attempt `epoch`.
    pub async fn wait_for_freeze(&self, app: &str, epoch: u64) -> bool {
        self.wait_state(STATE_WAIT, |s| {
            let m = s.moves.get(app);
            match m {
                Some(m) if m.epoch == epoch && m.frozen => Some(true),
                Some(m) if m.epoch == epoch => None,
                _ => Some(false),
            }
        })
        .await
        .unwrap_or(false)
    }

    /// What the applied state says of the attempt: `Some(Done)` or
    /// `Some(Superseded)` once decided, `None` while it is in flight.
    fn attempt_outcome(state: &State, app: &str, epoch: u64) -> Option<HandoffResult> {
        let owner = state.volumes.get(app);
        if owner.is_some_and(|o| o.epoch == epoch) {
            return Some(HandoffResult::Done);
        }
        match state.moves.get(app) {
            Some(m) if m.epoch == epoch => None,
            _ => Some(HandoffResult::Superseded),
        }
    }

    /// Proposes the handoff of `app` at `epoch` until the applied state
    /// shows how the attempt ended (bounded).
    pub async fn hand_off(&self, app: &str, epoch: u64) -> HandoffResult {
        let mut last = String::new();
        for _ in 0..HANDOFF_PROPOSALS {
            if let Some(decided) = Self::attempt_outcome(&self.sm.read().state, app, epoch) {
                return decided;
            }
            let step = Command::MoveStep {
                app: app.to_string(),
                epoch,
                step: MoveStep::Handoff,
            };
            match self.api.submit_as_node(step).await {
                Ok(_) => return HandoffResult::Done,
                Err(why) => last = why,
            }
            // Refused or unknown: the state will say which.
            if let Some(decided) = self
                .wait_state(HANDOFF_RETRY, |s| Self::attempt_outcome(s, app, epoch))
                .await
            {
                return decided;
            }
        }
        HandoffResult::Unknown(last)
    }
}
