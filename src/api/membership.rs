//! Membership upkeep on the leader: `members add` (a new node joins as a
//! learner), `members remove` (revoked first, then out after the down
//! grace), and the periodic promotion of caught-up learners to voters while
//! there are fewer than `max_voters`. One membership change at a time, as
//! openraft requires.

use super::caller::Caller;
use super::messages::ClientReply;
use super::Api;
use crate::agent::lease::DOWN_GRACE;
use crate::ca::validate_name;
use crate::raft::{node_id_for, NodeInfo};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// A learner this close to the leader's last log index may become a voter.
const PROMOTE_LAG: u64 = 16;

impl Api {
    pub(super) async fn members_add(&self, name: &str, address: &str) -> ClientReply {
        if let Err(e) = validate_name(name) {
            return ClientReply::refused(e.to_string());
        }
        if address.parse::<SocketAddr>().is_err() {
            return ClientReply::refused(format!(
                "invalid address '{address}': expected IP:PORT, e.g. 127.0.0.1:7004"
            ));
        }
        let id = node_id_for(name);
        let membership = self.raft.metrics().borrow().membership_config.clone();
        for (other_id, info) in membership.membership().nodes() {
            if info.name == name {
                if info.address == address {
                    return ClientReply::Done(format!("{name} is already a member at {address}"));
                }
                return ClientReply::refused(format!(
                    "{name} is already a member at {}; remove it first to change its address",
                    info.address
                ));
            }
            if *other_id == id {
                return ClientReply::refused(format!(
                    "the name {name} collides with member {} (same node id); choose another name",
                    info.name
                ));
            }
        }
        let node = NodeInfo {
            name: name.to_string(),
            address: address.to_string(),
        };
        match self.raft.add_learner(id, node, false).await {
            Ok(_) => ClientReply::Done(format!(
                "{name} added as a learner; it becomes a voter once caught up while there are fewer than {} voters",
                self.max_voters
            )),
            Err(e) => membership_error(e),
        }
    }

    /// Removes a member for good: its certificate goes on the deny list
    /// first (so it can neither rejoin nor keep talking), then it leaves
    /// the membership.
    pub(super) async fn members_remove(&self, caller: &Caller, name: &str) -> ClientReply {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        let Some((&id, _)) = membership.nodes().find(|(_, n)| n.name == name) else {
            return ClientReply::Done(format!("{name} is not a member"));
        };
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return ClientReply::refused(format!(
                    "{name} is the only voter; removing it would leave no cluster"
                ));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let revoked = match self.revoke_member(caller, name).await {
            Ok(said) => said,
            Err(reply) => return reply,
        };
        // Its lease may have been renewed just before the revocation: once
        // it leaves the membership its apps are placed elsewhere at once,
        // so first wait until it has certainly stopped them (the same
        // grace after which a silent node is declared down; invariant 3).
        tokio::time::sleep(DOWN_GRACE).await;
        match self.raft.change_membership(change, false).await {
            Ok(_) => ClientReply::Done(format!("{name} removed; {revoked}")),
            Err(e) => membership_error(e),
        }
    }

    /// Leader only: promotes one caught-up learner while there are fewer
    /// voters than `max_voters`. Called periodically; one change at a time.
    pub async fn reconcile_membership(&self) {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return;
        }
        let membership = m.membership_config.membership();
        if membership.get_joint_config().len() > 1 {
            return;
        }
        let voters = membership.voter_ids().count();
        if voters >= self.max_voters {
            return;
        }
        let last = m.last_log_index.unwrap_or(0);
        let Some(replication) = &m.replication else {
            return;
        };
        let caught_up = membership.learner_ids().find(|learner| {
            let matched = replication
                .get(learner)
                .copied()
                .flatten()
                .map_or(0, |l| l.index);
            last.saturating_sub(matched) <= PROMOTE_LAG
        });
        if let Some(learner) = caught_up {
            let name = membership
                .get_node(&learner)
                .map_or_else(|| format!("#{learner}"), |n| n.name.clone());
            tracing::info!(%name, voters, max = self.max_voters, "promoting learner to voter");
            if let Err(e) = self
                .raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([learner])), false)
                .await
            {
                tracing::warn!(%name, "promotion failed: {e}");
            }
        }
    }
}

/// A refused or failed membership change as the client sees it.
fn membership_error(e: RaftError<u64, ClientWriteError<u64, NodeInfo>>) -> ClientReply {
    match e {
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            ClientReply::refused(format!("membership change refused: {c}"))
        }
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            ClientReply::refused("leadership moved during the change; retry".to_string())
        }
        other => ClientReply::unknown(format!("membership change failed: {other}")),
    }
}
