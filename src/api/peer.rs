//! The node-to-node service and the asking of members: what a node answers
//! a peer (its status, observations, routing report, volume address, a read
//! index, a heartbeat, a join), and how this node asks one member or every
//! member at once, each within [`PROBE_TIMEOUT`].

use super::caller::Caller;
use super::messages::*;
use super::server::READ_TIMEOUT;
use super::Api;
use crate::agent::Observed;
use crate::ca::{Identity, Role};
use crate::net::frame::MAX_CLIENT_FRAME;
use crate::net::Service;
use crate::raft::NodeInfo;
use crate::routing::RoutingReport;
use openraft::ServerState;
use std::net::SocketAddr;
use std::time::Duration;

/// How long a member has to answer a status probe for `ctl nodes`.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

impl Api {
    pub async fn handle_peer(
        &self,
        peer: &Identity,
        request: PeerRequest,
    ) -> Result<PeerReply, String> {
        if peer.role != Role::Node {
            return Err(format!(
                "refused: node-to-node requests need a node certificate, and this is the certificate of {peer}"
            ));
        }
        match request {
            PeerRequest::Status => Ok(PeerReply::Status(self.status())),
            PeerRequest::VolumeAddress => Ok(PeerReply::VolumeAddress(
                self.volume_addr.get().map(|a| a.to_string()),
            )),
            PeerRequest::Observed => Ok(PeerReply::Observed(self.observed.snapshot())),
            PeerRequest::Heartbeat => Ok(self.heartbeat_from(&peer.name)),
            PeerRequest::ReadIndex => {
                match tokio::time::timeout(READ_TIMEOUT, self.raft.ensure_linearizable()).await {
                    Ok(Ok(read_log_id)) => {
                        Ok(PeerReply::ReadIndex(read_log_id.map_or(0, |l| l.index)))
                    }
                    Ok(Err(e)) => Err(format!("no read index from {}: {e}", self.name)),
                    Err(_) => Err(format!(
                        "{} could not confirm its leadership within {READ_TIMEOUT:?}",
                        self.name
                    )),
                }
            }
            PeerRequest::Logs(request) => self.local_logs(&request).await.map(PeerReply::Logs),
            PeerRequest::Routing => Ok(PeerReply::Routing(self.routing_report())),
            PeerRequest::ObservedEvents { since } => {
                super::event_gather::own_page(&self.events, since.as_deref())
                    .map(PeerReply::ObservedEvents)
            }
            PeerRequest::Join { address } => {
                let env = ClientEnvelope::new(ClientRequest::MembersAdd {
                    name: peer.name.clone(),
                    address,
                });
                match self.serve_client(&Caller::node(&peer.name), env).await {
                    ClientReply::Done(message) => Ok(PeerReply::Joined(message)),
                    ClientReply::Failed { message, .. } => Err(message),
                    other => Err(format!("unexpected reply to join: {other:?}")),
                }
            }
        }
    }

    /// This node's own view of itself, from its Raft metrics.
    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Learner => "learner",
            ServerState::Candidate => "candidate",
            ServerState::Shutdown => "shutdown",
        };
        let leader = m.current_leader.map(|id| {
            m.membership_config
                .membership()
                .get_node(&id)
                .map_or_else(|| format!("#{id}"), |n| n.name.clone())
        });
        NodeStatus {
            name: self.name.clone(),
            role: role.to_string(),
            term: m.current_term,
            leader,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            degraded: self.observed.degraded(),
            last_log_index: m.last_log_index.unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
        }
    }

    /// Asks every member at once (this node answers itself with `local`);
    /// `None` for a member that did not answer with what `take` accepts.
    async fn ask_members<T>(
        &self,
        request: &PeerRequest,
        local: impl Fn() -> T,
        take: impl Fn(PeerReply) -> Option<T>,
    ) -> Vec<(String, Option<T>)> {
        let members: Vec<NodeInfo> = self
            .sm
            .read()
            .membership
            .membership()
            .nodes()
            .map(|(_, n)| n.clone())
            .collect();
        let (local, take) = (&local, &take);
        let asks = members.into_iter().map(|info| async move {
            if info.name == self.name {
                return (info.name, Some(local()));
            }
            let reply = self.ask(&info, request, PROBE_TIMEOUT).await;
            (info.name, reply.ok().and_then(take))
        });
        futures::future::join_all(asks).await
    }

    /// Every member's observations, asked of each (this node's own locally).
    pub(super) async fn observations(&self) -> Vec<(String, Option<Observed>)> {
        self.ask_members(
            &PeerRequest::Observed,
            || self.observed.snapshot(),
            |reply| match reply {
                PeerReply::Observed(o) => Some(o),
                _ => None,
            },
        )
        .await
    }

    /// This node's routing report (`off` when it does not route).
    fn routing_report(&self) -> RoutingReport {
        match self.routing.get() {
            Some(shared) => shared.lock().expect("routing report lock").clone(),
            None => RoutingReport {
                mode: "off".into(),
                ..Default::default()
            },
        }
    }

    /// Every member's routing report (`None`: it did not answer, or its
    /// build predates routing).
    pub(super) async fn routing_reports(&self) -> Vec<(String, Option<RoutingReport>)> {
        let mut reports = self
            .ask_members(
                &PeerRequest::Routing,
                || self.routing_report(),
                |reply| match reply {
                    PeerReply::Routing(r) => Some(r),
                    _ => None,
                },
            )
            .await;
        reports.sort_by(|a, b| a.0.cmp(&b.0));
        reports
    }

    /// Member `name` as the applied membership knows it.
    pub(super) fn member(&self, name: &str) -> Option<NodeInfo> {
        self.sm
            .read()
            .membership
            .membership()
            .nodes()
            .find(|(_, n)| n.name == name)
            .map(|(_, n)| n.clone())
    }

    /// The volume endpoint of member `node`.
    pub async fn volume_address_of(&self, node: &str) -> Result<SocketAddr, String> {
        let info = self
            .member(node)
            .ok_or_else(|| format!("{node} is not a member"))?;
        match self
            .ask(&info, &PeerRequest::VolumeAddress, PROBE_TIMEOUT)
            .await?
        {
            PeerReply::VolumeAddress(Some(addr)) => addr
                .parse()
                .map_err(|_| format!("{node} named an unusable volume address '{addr}'")),
            PeerReply::VolumeAddress(None) => Err(format!("{node} has no volume endpoint")),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    /// One node-to-node request to `member`, whose certificate must carry
    /// its name.
    pub(super) async fn ask(
        &self,
        member: &NodeInfo,
        request: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerReply, String> {
        let addr: SocketAddr = member
            .address
            .parse()
            .map_err(|_| format!("member {member} has an unusable address"))?;
        self.net
            .call(
                addr,
                Some(&member.name),
                Service::Peer,
                request,
                MAX_CLIENT_FRAME,
                timeout,
            )
            .await
            .map_err(|e| e.to_string())
    }

    pub(super) async fn probe(&self, info: &NodeInfo) -> Option<NodeStatus> {
        match self.ask(info, &PeerRequest::Status, PROBE_TIMEOUT).await {
            Ok(PeerReply::Status(s)) => Some(s),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(peer = %info, "status probe failed: {e}");
                None
            }
        }
    }
}
