//! Raft RPCs over the cluster's QUIC endpoint: the client side openraft calls
//! (`RaftNetworkFactoryImpl`) and the server side a node's dispatcher calls
//! ([`serve_raft_rpc`]), which admits only node certificates and only RPCs
//! whose sender is the node the certificate names.

use super::types::{node_id_for, NodeInfo, Raft, TypeConfig};
use crate::ca::{Identity, Role};
use crate::net::frame::MAX_RAFT_FRAME;
use crate::net::{CallError, Net, Service};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpcReply {
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
}

pub struct RaftNetworkFactoryImpl {
    net: Arc<Net>,
}

impl RaftNetworkFactoryImpl {
    pub fn new(net: Arc<Net>) -> Self {
        RaftNetworkFactoryImpl { net }
    }
}

impl RaftNetworkFactory<TypeConfig> for RaftNetworkFactoryImpl {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> RaftPeer {
        RaftPeer {
            net: self.net.clone(),
            target,
            node: node.clone(),
        }
    }
}

pub struct RaftPeer {
    net: Arc<Net>,
    target: u64,
    node: NodeInfo,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PeerError(String);

impl RaftPeer {
    async fn send<E: std::error::Error>(
        &self,
        rpc: RaftRpc,
        option: &RPCOption,
    ) -> Result<RaftRpcReply, RPCError<u64, NodeInfo, E>> {
        let addr: SocketAddr = self.node.address.parse().map_err(|_| {
            RPCError::Unreachable(Unreachable::new(&PeerError(format!(
                "member {} has an unusable address",
                self.node
            ))))
        })?;
        let entries = match &rpc {
            RaftRpc::AppendEntries(r) => r.entries.len() as u64,
            _ => 1,
        };
        self.net
            .call(
                addr,
                Some(&self.node.name),
                Service::Raft,
                &rpc,
                MAX_RAFT_FRAME,
                option.hard_ttl(),
            )
            .await
            .map_err(|e| match e {
                CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                // Ask openraft to send fewer entries per RPC.
                CallError::TooLarge { .. } => RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint((entries / 2).max(1)),
                ),
                other => RPCError::Network(NetworkError::new(&other)),
            })
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<u64, NodeInfo, E> {
        RPCError::Network(NetworkError::new(&PeerError(format!(
            "{} answered a different RPC",
            self.node
        ))))
    }
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64>>> {
        match self.send(RaftRpc::AppendEntries(rpc), &option).await? {
            RaftRpcReply::AppendEntries(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, NodeInfo, RaftError<u64, InstallSnapshotError>>,
    > {
        match self.send(RaftRpc::InstallSnapshot(rpc), &option).await? {
            RaftRpcReply::InstallSnapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64>>> {
        match self.send(RaftRpc::Vote(rpc), &option).await? {
            RaftRpcReply::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }
}

/// Serves one Raft RPC from `peer`. Refuses RPCs whose claimed sender is not
/// the node named in the certificate: n3 cannot act as n1. User certificates
/// are refused by the dispatcher right after the service tag, before their
/// frame is read (`Service::admits`); the check here keeps this function
/// safe to call from anywhere.
pub async fn serve_raft_rpc(
    raft: &Raft,
    peer: &Identity,
    rpc: RaftRpc,
) -> Result<RaftRpcReply, String> {
    if peer.role != Role::Node {
        return Err(format!(
            "refused: Raft RPCs need a node certificate, and this is the certificate of {peer}"
        ));
    }
    let claimed = match &rpc {
        RaftRpc::AppendEntries(r) => r.vote.leader_id().voted_for(),
        RaftRpc::Vote(r) => r.vote.leader_id().voted_for(),
        RaftRpc::InstallSnapshot(r) => r.vote.leader_id().voted_for(),
    };
    if claimed != Some(node_id_for(&peer.name)) {
        return Err(format!(
            "refused: {peer} sent a Raft RPC on behalf of another node (id {claimed:?})"
        ));
    }
    if let RaftRpc::Vote(_) = &rpc {
        // A removed member that still believes it belongs must not win an
        // election: votes go only to members of this node's latest
        // membership. (Log replication is not filtered: a lagging node must
        // be able to hear from a leader it does not know yet.)
        let metrics = raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        // An uninitialised node (a cluster being founded from --peers) has
        // no membership yet to check against.
        let known = membership.nodes().next().is_some();
        if known && membership.get_node(&node_id_for(&peer.name)).is_none() {
            return Err(format!(
                "refused: {peer} asked for a vote but is not a member of this node's latest membership"
            ));
        }
    }
    Ok(match rpc {
        RaftRpc::AppendEntries(r) => RaftRpcReply::AppendEntries(raft.append_entries(r).await),
        RaftRpc::Vote(r) => RaftRpcReply::Vote(raft.vote(r).await),
        RaftRpc::InstallSnapshot(r) => {
            RaftRpcReply::InstallSnapshot(raft.install_snapshot(r).await)
        }
    })
}
