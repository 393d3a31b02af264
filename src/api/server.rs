//! Serving client and peer requests on a node. Writes go to the leader
//! (forwarded if this node is not it) and are answered only once committed;
//! reads pass a read-index barrier unless the client asked for a stale read.

use super::caller::Caller;
use super::messages::*;
use super::proposer::{ProposeError, Proposer};
use crate::agent::Observed;
use crate::ca::{validate_name, Identity, Role};
use crate::config::Configuration;
use crate::net::frame::MAX_CLIENT_FRAME;
use crate::net::{CallError, Net, Service};
use crate::raft::{node_id_for, NodeInfo, Raft, StateMachineStore};
use crate::scheduler::{waiting_reason, Liveness, DOWN_GRACE, HEARTBEAT_INTERVAL, NODE_LEASE};
use crate::state::{check_request_id, plan, Command, Outcome, Proposal, AUTHORIZATION_KINDS};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a write may wait to commit before its outcome is reported unknown.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a read may wait for its read index.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a leader to be known before giving up on a request.
pub const LEADER_WAIT: Duration = Duration::from_secs(3);
/// How long a member has to answer a status probe for `ctl nodes`.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// History entries a page holds unless the client asks for fewer.
pub const DEFAULT_HISTORY_PAGE: usize = 100;
/// Most history entries one page may hold (it is also cut to fit a frame).
pub const MAX_HISTORY_PAGE: usize = 1000;
/// A learner this close to the leader's last log index may become a voter.
pub const PROMOTE_LAG: u64 = 16;

pub struct Api {
    pub name: String,
    pub id: u64,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub net: Arc<Net>,
    pub max_voters: usize,
    proposer: Proposer,
    /// What this node's agent observes.
    observed: crate::agent::Observations,
    /// Leader side: heartbeats received.
    liveness: Arc<Liveness>,
    /// Where this node's volume endpoint listens, once it does.
    pub volume_addr: std::sync::OnceLock<SocketAddr>,
    /// The certificate this node runs with, reported to the cluster.
    pub certificate: std::sync::OnceLock<crate::state::CertificateRecord>,
    quorum: QuorumWatch,
    /// This node's engine, for `ctl logs`; set once the engine is made.
    pub log_source: std::sync::OnceLock<super::LogSource>,
    /// This node's routing, when it routes (`--routing iptables`).
    pub routing: std::sync::OnceLock<crate::routing::SharedReport>,
}

/// The leader's last quorum contact as openraft reported it, stamped with
/// when this process saw the report.
#[derive(Clone, Default)]
struct QuorumWatch(Arc<std::sync::Mutex<Option<(Duration, std::time::Instant)>>>);

impl QuorumWatch {
    /// Follows the metrics for as long as Raft runs.
    fn start(raft: &Raft) -> QuorumWatch {
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
    pub fn new(
        name: String,
        raft: Raft,
        sm: StateMachineStore,
        net: Arc<Net>,
        max_voters: usize,
        observed: crate::agent::Observations,
        liveness: Arc<Liveness>,
    ) -> Api {
        let quorum = QuorumWatch::start(&raft);
        Api {
            observed,
            liveness,
            proposer: Proposer::start(raft.clone(), WRITE_TIMEOUT),
            id: node_id_for(&name),
            name,
            raft,
            sm,
            net,
            max_voters,
            volume_addr: std::sync::OnceLock::new(),
            certificate: std::sync::OnceLock::new(),
            quorum,
            log_source: std::sync::OnceLock::new(),
            routing: std::sync::OnceLock::new(),
        }
    }

    /// Serves a client request from `peer`. A user certificate is the
    /// request's principal; a node forwarding a request vouches for its
    /// user (see `caller.rs`).
    pub async fn handle_client(&self, peer: &Identity, env: ClientEnvelope) -> ClientReply {
        if let ClientRequest::WhoAmI = env.request {
            return ClientReply::Identity(CallerView {
                name: peer.name.clone(),
                role: match peer.access {
                    Some(access) => access.to_string(),
                    None => peer.role.as_str().to_string(),
                },
                fingerprint: peer.fingerprint.clone(),
                not_after: peer.not_after,
            });
        }
        let caller = Caller::of(peer, &env, &self.sm.read().state);
        match caller {
            Ok(caller) => self.serve_client(&caller, env).await,
            Err(why) => ClientReply::refused(why),
        }
    }

    pub(super) async fn serve_client(&self, caller: &Caller, env: ClientEnvelope) -> ClientReply {
        if let Err(why) = caller.permit(&env.request) {
            return ClientReply::refused(why);
        }
        match &env.request {
            ClientRequest::Nodes { stale } => self.nodes(*stale).await,
            ClientRequest::PlanDeploy { configuration } => self.plan_deploy(configuration).await,
            ClientRequest::ShowConfig => match self.read_barrier().await {
                Ok(()) => {
                    let applied = self.sm.read();
                    ClientReply::Config {
                        version: applied.state.deployed.version,
                        configuration: applied.state.deployed.config.clone(),
                    }
                }
                Err(e) => ClientReply::unknown(e),
            },
            ClientRequest::ShowConfigVersion { version } => match self.read_barrier().await {
                Ok(()) => {
                    let applied = self.sm.read();
                    match applied.state.configuration_at(*version) {
                        Ok(configuration) => ClientReply::Config {
                            version: *version,
                            configuration: configuration.clone(),
                        },
                        Err(why) => ClientReply::refused(why),
                    }
                }
                Err(e) => ClientReply::unknown(e),
            },
            ClientRequest::Status => self.app_status().await,
            ClientRequest::History => self.history(DEFAULT_HISTORY_PAGE, None).await,
            ClientRequest::HistoryPage { limit, before } => {
                self.history(*limit as usize, *before).await
            }
            ClientRequest::Logs(request) => self.logs(request).await,
            ClientRequest::SnapshotSave => match self.read_barrier().await {
                Ok(()) => {
                    let applied = self.sm.read();
                    let state = applied.state.encode();
                    let last = applied.last_applied;
                    drop(applied);
                    if state.len() > MAX_CLIENT_FRAME - 4096 {
                        return ClientReply::refused(format!(
                            "the state is {} bytes, more than one reply carries ({MAX_CLIENT_FRAME}); back up a stopped node's data dir instead",
                            state.len()
                        ));
                    }
                    ClientReply::Snapshot {
                        index: last.map_or(0, |l| l.index),
                        term: last.map_or(0, |l| l.leader_id.term),
                        state,
                    }
                }
                Err(e) => ClientReply::unknown(e),
            },
            // Answered in `handle_client`, which knows the certificate.
            ClientRequest::WhoAmI => ClientReply::refused("whoami is answered by the first node"),
            ClientRequest::Write {
                request_id,
                command,
            } => self.write(caller, request_id, command, &env).await,
            ClientRequest::MembersAdd { name, address } => {
                if !self.is_leader() {
                    return self.forward(caller, env).await;
                }
                self.members_add(name, address).await
            }
            ClientRequest::MembersRemove { name } => {
                if !self.is_leader() {
                    return self.forward(caller, env).await;
                }
                self.members_remove(caller, name).await
            }
        }
    }

    /// A write: checked, proposed here if this node leads, else forwarded.
    async fn write(
        &self,
        caller: &Caller,
        request_id: &str,
        command: &Command,
        env: &ClientEnvelope,
    ) -> ClientReply {
        if let Err(why) = check_request_id(request_id) {
            return ClientReply::refused(why);
        }
        if let Some(why) = self.unsupported(command) {
            return ClientReply::refused(why);
        }
        if !self.is_leader() {
            return self.forward(caller, env.clone()).await;
        }
        let proposal = {
            let applied = self.sm.read();
            let state = &applied.state;
            if let Err(why) = state.authorize(&caller.principal, command, self.id) {
                return ClientReply::refused(why);
            }
            if self.signing_ok(state) {
                Proposal::signed(
                    request_id,
                    caller.principal.clone(),
                    caller.via.as_deref(),
                    command,
                )
            } else {
                match Proposal::unsigned(request_id, caller.principal.author(), command) {
                    Ok(p) => p,
                    Err(e) => return ClientReply::refused(e.to_string()),
                }
            }
        };
        match self.proposer.propose(proposal).await {
            Ok(outcome) => ClientReply::Written(outcome),
            Err(ProposeError::NotLeader) => self.forward(caller, env.clone()).await,
            Err(ProposeError::Unknown(why)) => ClientReply::unknown(format!(
                "{why}; the outcome is unknown: retry with request id '{request_id}'"
            )),
        }
    }

    /// Whether every voter reads signed commands (so they may be proposed).
    fn signing_ok(&self, state: &crate::state::State) -> bool {
        state.authorization_from.is_some() || self.voters_know(state, AUTHORIZATION_KINDS)
    }

    /// Whether every voter registered a build that knows `kinds` kinds.
    pub(super) fn voters_know(&self, state: &crate::state::State, kinds: u16) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        membership.voter_ids().all(|id| {
            membership
                .get_node(&id)
                .and_then(|n| state.nodes.get(&n.name))
                .and_then(|r| r.command_kinds)
                .is_some_and(|known| known >= kinds)
        })
    }

    /// A page of history that fits a reply frame.
    async fn history(&self, limit: usize, before: Option<u64>) -> ClientReply {
        if let Err(e) = self.read_barrier().await {
            return ClientReply::unknown(e);
        }
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        ClientReply::History(
            self.sm
                .read()
                .state
                .history
                .page(limit, before, MAX_CLIENT_FRAME / 2),
        )
    }

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
            PeerRequest::Heartbeat => {
                // A node that is no longer a member (removed) gets no lease:
                // the cluster may already be starting its apps elsewhere.
                let member = self.sm.read().state.nodes.contains_key(&peer.name);
                if member {
                    self.liveness.heard(&peer.name);
                }
                Ok(PeerReply::HeartbeatAck {
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
                })
            }
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

    /// As leader: refuses a command kind some voter cannot apply yet.
    fn unsupported(&self, command: &Command) -> Option<String> {
        if !self.is_leader() {
            // The leader checks when the request reaches it.
            return None;
        }
        // A member whose certificate is revoked (`members remove` does so
        // first) need not apply it: if its build cannot, it stops applying
        // and the removal follows. Otherwise a member that never registered
        // its build could never be removed.
        let revoked_node = match command {
            Command::Revoke { subject, .. } => subject.strip_prefix("node "),
            _ => None,
        };
        let applied = self.sm.read();
        let membership = applied.membership.membership();
        let voters: Vec<String> = membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| n.name.clone()))
            .filter(|name| Some(name.as_str()) != revoked_node)
            .collect();
        applied.state.unsupported_by(command, &voters)
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
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

    /// The leader as this node knows it, waiting a little for an election.
    async fn leader(&self) -> Option<NodeInfo> {
        let wait = self
            .raft
            .wait(Some(LEADER_WAIT))
            .metrics(|m| m.current_leader.is_some(), "a known leader")
            .await
            .ok()?;
        let id = wait.current_leader?;
        wait.membership_config.membership().get_node(&id).cloned()
    }

    /// Passes a request on to the leader and returns its reply.
    async fn forward(&self, caller: &Caller, env: ClientEnvelope) -> ClientReply {
        if env.hops >= MAX_FORWARD_HOPS {
            return ClientReply::refused(format!(
                "no stable leader: request forwarded {} times without reaching one",
                env.hops
            ));
        }
        let Some(leader) = self.leader().await else {
            return ClientReply::refused(format!(
                "no leader known to {} within {LEADER_WAIT:?} (is a quorum up?)",
                self.name
            ));
        };
        if leader.name == self.name {
            // This node became leader meanwhile: serve it here.
            let env = ClientEnvelope {
                hops: env.hops + 1,
                ..env
            };
            return Box::pin(self.serve_client(caller, env)).await;
        }
        let Ok(addr) = leader.address.parse::<SocketAddr>() else {
            return ClientReply::refused(format!("leader {leader} has an unusable address"));
        };
        let forwarded = ClientEnvelope {
            hops: env.hops + 1,
            // First-release leaders read only the user's name.
            user: Some(caller.principal.author()),
            request: env.request,
            forwarded: Some(caller.forwarded(&self.name)),
        };
        let timeout = WRITE_TIMEOUT + LEADER_WAIT + Duration::from_secs(1);
        match self
            .net
            .call::<_, ClientReply>(
                addr,
                Some(&leader.name),
                Service::Client,
                &forwarded,
                MAX_CLIENT_FRAME,
                timeout,
            )
            .await
        {
            Ok(reply) => reply,
            Err(e) => reply_for_call_error(&format!("via leader {}", leader.name), e),
        }
    }

    /// Waits until this node's state includes every write committed before
    /// the call began (read index), wherever the leader is.
    async fn read_barrier(&self) -> Result<(), String> {
        if crate::plant::planted(crate::plant::PlantedBug::StaleReads) {
            return Ok(());
        }
        let local = tokio::time::timeout(READ_TIMEOUT, self.raft.ensure_linearizable()).await;
        let index = match local {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                let leader = self
                    .leader()
                    .await
                    .ok_or_else(|| format!("no leader known to {} for a linearizable read (use --stale to read this node's state)", self.name))?;
                match self
                    .ask(&leader, &PeerRequest::ReadIndex, READ_TIMEOUT)
                    .await
                {
                    Ok(PeerReply::ReadIndex(index)) => index,
                    Ok(other) => return Err(format!("unexpected read-index reply {other:?}")),
                    Err(e) => return Err(format!("read index from leader {}: {e}", leader.name)),
                }
            }
            Ok(Err(e)) => return Err(format!("linearizable read failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "leadership not confirmed within {READ_TIMEOUT:?} (use --stale to read this node's state)"
                ))
            }
        };
        self.raft
            .wait(Some(READ_TIMEOUT))
            .applied_index_at_least(Some(index), "read index applied")
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "{} did not catch up to the read index {index}: {e}",
                    self.name
                )
            })
    }

    async fn nodes(&self, stale: bool) -> ClientReply {
        if !stale {
            if let Err(e) = self.read_barrier().await {
                return ClientReply::unknown(e);
            }
        }
        type Member = (
            NodeInfo,
            bool,
            crate::state::NodeRecord,
            Option<crate::state::CertificateRecord>,
        );
        let members: Vec<Member> = {
            let applied = self.sm.read();
            let membership = applied.membership.membership();
            let voters: BTreeSet<u64> = membership.voter_ids().collect();
            membership
                .nodes()
                .map(|(id, info)| {
                    let record = applied
                        .state
                        .nodes
                        .get(&info.name)
                        .cloned()
                        .unwrap_or_default();
                    let certificate = applied.state.certificates.get(&info.name).cloned();
                    (info.clone(), voters.contains(id), record, certificate)
                })
                .collect()
        };
        let probes = members
            .into_iter()
            .map(|(info, voter, record, certificate)| async move {
                let status = if info.name == self.name {
                    Some(self.status())
                } else {
                    self.probe(&info).await
                };
                NodeView {
                    membership: if voter { "voter" } else { "learner" }.to_string(),
                    reachable: status.is_some(),
                    role: status.as_ref().map_or("unknown".into(), |s| s.role.clone()),
                    term: status.as_ref().map(|s| s.term),
                    leader: status.as_ref().and_then(|s| s.leader.clone()),
                    applied_index: status.as_ref().map(|s| s.applied_index),
                    last_log_index: status.as_ref().map(|s| s.last_log_index),
                    snapshot_index: status.as_ref().and_then(|s| s.snapshot_index),
                    purged_index: status.as_ref().and_then(|s| s.purged_index),
                    degraded: status.as_ref().and_then(|s| s.degraded.clone()),
                    name: info.name,
                    address: info.address,
                    liveness: if record.down { "down" } else { "up" }.to_string(),
                    drained: record.drained,
                    labels: record.labels,
                    certificate,
                }
            });
        let mut views = futures::future::join_all(probes).await;
        views.sort_by(|a, b| a.name.cmp(&b.name));
        ClientReply::Nodes(views)
    }

    async fn plan_deploy(&self, configuration: &Configuration) -> ClientReply {
        if let Err(e) = self.read_barrier().await {
            return ClientReply::unknown(e);
        }
        let applied = self.sm.read();
        let state = &applied.state;
        match plan(&state.deployed, &state.nodes, configuration) {
            Ok(plan) => ClientReply::Plan(plan),
            Err(errors) => ClientReply::refused(errors.join("\n")),
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
    async fn observations(&self) -> Vec<(String, Option<Observed>)> {
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
    fn routing_report(&self) -> crate::routing::RoutingReport {
        match self.routing.get() {
            Some(shared) => shared.lock().expect("routing report lock").clone(),
            None => crate::routing::RoutingReport {
                mode: "off".into(),
                ..Default::default()
            },
        }
    }

    /// Every member's routing report (`None`: it did not answer, or its
    /// build predates routing).
    async fn routing_reports(&self) -> Vec<(String, Option<crate::routing::RoutingReport>)> {
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

    async fn app_status(&self) -> ClientReply {
        if let Err(e) = self.read_barrier().await {
            return ClientReply::unknown(e);
        }
        let (observations, routing) =
            futures::future::join(self.observations(), self.routing_reports()).await;
        let applied = self.sm.read();
        let deployed = &applied.state.deployed;
        let deployment = &deployed.config.deployment;
        let mut names: Vec<&String> = deployment
            .pinned
            .values()
            .flatten()
            .chain(&deployment.anywhere)
            .collect();
        names.sort();
        let apps = names
            .into_iter()
            .filter_map(|name| {
                let spec = deployed.config.applications.get(name)?;
                let desired_node = deployed.placements.get(name).cloned();
                let instances: Vec<InstanceStatus> = observations
                    .iter()
                    .filter_map(|(_, o)| o.as_ref()?.instances.get(name).cloned())
                    .collect();
                let waiting = match &desired_node {
                    _ if waiting_reason(&applied.state, name).is_some() => {
                        waiting_reason(&applied.state, name)
                    }
                    None => Some("waiting for a node: none can take it now".to_string()),
                    Some(node) => {
                        let seen = observations.iter().find(|(n, _)| n == node);
                        match seen {
                            Some((_, None)) => Some(format!("{node} did not answer")),
                            Some((_, Some(o))) if o.degraded.is_some() => o
                                .degraded
                                .as_ref()
                                .map(|d| format!("{node} is degraded: {d}")),
                            _ => instances
                                .iter()
                                .find(|i| i.node == *node && i.state != "running")
                                .and_then(|i| i.last_error.clone()),
                        }
                    }
                };
                let moving = applied.state.moves.get(name).map(|m| {
                    let reported = observations
                        .iter()
                        .find(|(n, _)| *n == m.from)
                        .and_then(|(_, o)| o.as_ref()?.moves.get(name))
                        .filter(|r| r.epoch == m.epoch);
                    reported.cloned().unwrap_or_else(|| MoveStatus {
                        from: m.from.clone(),
                        to: m.to.clone(),
                        epoch: m.epoch,
                        attempt: m.attempt,
                        phase: format!("waiting for {} to send", m.from),
                        started_ms: m.started_ms,
                        last_error: m.last_error.clone(),
                        ..MoveStatus::default()
                    })
                });
                let waiting = match applied.state.releases.get(name) {
                    Some(holder) => Some(format!("waiting for {holder} to stop it first")),
                    None => waiting,
                };
                let waiting = match &moving {
                    Some(m) if applied.state.moves.get(name).is_some_and(|s| s.frozen) => {
                        Some(format!("stopped for the move to {}: {}", m.to, m.phase))
                    }
                    Some(_) => None,
                    None => waiting,
                };
                let last_move = observations
                    .iter()
                    .filter_map(|(_, o)| o.as_ref()?.moved.get(name))
                    .max_by_key(|r| r.handed_off_ms)
                    .cloned();
                let volume = applied.state.volumes.get(name).map(|owner| {
                    let usage = observations
                        .iter()
                        .find(|(n, _)| *n == owner.node)
                        .and_then(|(_, o)| o.as_ref()?.volumes.get(name));
                    VolumeView {
                        owner: owner.node.clone(),
                        epoch: owner.epoch,
                        used_bytes: usage.map(|u| u.used_bytes),
                        maximum_size: spec.volume.as_ref().and_then(|v| v.maximum_size),
                        warning: usage.filter(|u| u.exceeded()).map(|u| {
                            format!(
                                "uses {} bytes, over its maximum_size of {} (reported, not enforced: this file system has no per-directory quota)",
                                u.used_bytes,
                                u.maximum_size.unwrap_or_default()
                            )
                        }),
                    }
                });
                Some(AppStatus {
                    name: name.clone(),
                    image: spec.image.to_string(),
                    waiting,
                    desired_node,
                    instances,
                    moving,
                    last_move,
                    volume,
                })
            })
            .collect();
        ClientReply::Status(StatusView {
            config_version: deployed.version,
            apps,
            routing: super::route_views(&applied.state, &routing),
        })
    }

    /// The volume endpoint of member `node`.
    pub async fn volume_address_of(&self, node: &str) -> Result<SocketAddr, String> {
        let info = self
            .sm
            .read()
            .membership
            .membership()
            .nodes()
            .find(|(_, n)| n.name == node)
            .map(|(_, n)| n.clone())
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

    /// Submits a write on this node's own behalf (author `node <name>`).
    pub async fn submit_as_node(&self, command: Command) -> Result<Outcome, String> {
        let env = ClientEnvelope::new(ClientRequest::Write {
            request_id: format!("{}-{:032x}", self.name, rand::random::<u128>()),
            command,
        });
        match self.serve_client(&Caller::node(&self.name), env).await {
            ClientReply::Written(outcome) => outcome.result.clone().map(|_| outcome),
            ClientReply::Failed { message, .. } => Err(message),
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

    async fn probe(&self, info: &NodeInfo) -> Option<NodeStatus> {
        match self.ask(info, &PeerRequest::Status, PROBE_TIMEOUT).await {
            Ok(PeerReply::Status(s)) => Some(s),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(peer = %info, "status probe failed: {e}");
                None
            }
        }
    }

    async fn members_add(&self, name: &str, address: &str) -> ClientReply {
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
            Err(e) => self.membership_error(e),
        }
    }

    /// Removes a member for good: its certificate goes on the deny list
    /// first (so it can neither rejoin nor keep talking), then it leaves
    /// the membership.
    async fn members_remove(&self, caller: &Caller, name: &str) -> ClientReply {
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
            Err(e) => self.membership_error(e),
        }
    }

    fn membership_error(&self, e: RaftError<u64, ClientWriteError<u64, NodeInfo>>) -> ClientReply {
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

/// Maps a failed call into a reply, keeping "nothing happened" apart from
/// "unknown".
pub fn reply_for_call_error(context: &str, e: CallError) -> ClientReply {
    let message = format!("{context}: {e}");
    if e.outcome_unknown() {
        ClientReply::unknown(message)
    } else {
        ClientReply::refused(message)
    }
}
