//! Serving client requests on a node: who may ask what, and where each is
//! answered. Writes go to the leader (forwarded if this node is not it) and
//! are answered only once committed; reads pass a read-index barrier unless
//! the client asked for a stale read. What the answers say is worked out
//! elsewhere: `status_view` (`ctl status`), `membership` (members add and
//! remove), `peer` (asking the other members).

use super::caller::Caller;
use super::heartbeat::{Liveness, QuorumWatch};
use super::messages::*;
use super::proposer::{ProposeError, Proposer};
use super::status_view::status_view;
use crate::ca::Identity;
use crate::config::Configuration;
use crate::net::frame::MAX_CLIENT_FRAME;
use crate::net::{CallError, Net, Service};
use crate::raft::{node_id_for, NodeInfo, Raft, StateMachineStore};
use crate::state::{check_request_id, plan, Command, Outcome, Proposal, AUTHORIZATION_KINDS};
use openraft::error::{CheckIsLeaderError, RaftError};
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
/// History entries a page holds unless the client asks for fewer.
pub const DEFAULT_HISTORY_PAGE: usize = 100;
/// Most history entries one page may hold (it is also cut to fit a frame).
pub const MAX_HISTORY_PAGE: usize = 1000;

pub struct Api {
    pub name: String,
    pub id: u64,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub net: Arc<Net>,
    pub max_voters: usize,
    proposer: Proposer,
    /// What this node's agent observes.
    pub(super) observed: crate::agent::Observations,
    /// Leader side: heartbeats received.
    pub(super) liveness: Arc<Liveness>,
    /// Where this node's volume endpoint listens, once it does.
    pub volume_addr: std::sync::OnceLock<SocketAddr>,
    /// The certificate this node runs with, reported to the cluster.
    pub certificate: std::sync::OnceLock<crate::state::CertificateRecord>,
    pub(super) quorum: QuorumWatch,
    /// This node's engine, for `ctl logs`; set once the engine is made.
    pub log_source: std::sync::OnceLock<super::LogSource>,
    /// This node's routing, when it routes (`--routing iptables`).
    pub routing: std::sync::OnceLock<crate::routing::SharedReport>,
    /// How old each replica's newest point is, on this node's clock.
    pub(super) freshness: super::freshness::Freshness,
    /// What this node serves as events (`ctl events`, `/v1/events`).
    pub events: Arc<super::EventLog>,
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
        let freshness = super::freshness::Freshness::follow(sm.clone());
        let events = super::EventLog::follow(name.clone(), sm.clone(), observed.clone());
        let weak = Arc::downgrade(&events);
        super::event_gather::gather(weak, name.clone(), sm.clone(), net.clone());
        Api {
            events,
            freshness,
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
        // A node's request is one a user's or its own forwarded here: the
        // metrics count each user request once, where it arrived.
        if peer.role == crate::ca::Role::Node {
            return self.answer_client(peer, env).await;
        }
        let kind = super::metered::kind(&env.request);
        let started = std::time::Instant::now();
        let reply = self.answer_client(peer, env).await;
        super::metered::record(&kind, &reply, started.elapsed());
        reply
    }

    /// Serves a client request from `peer` (see `handle_client`).
    async fn answer_client(&self, peer: &Identity, env: ClientEnvelope) -> ClientReply {
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

    /// Serves a request `caller` is permitted: reads here (behind a read
    /// barrier unless the client asked for a stale read), writes and
    /// membership changes on the leader.
    pub(super) async fn serve_client(&self, caller: &Caller, env: ClientEnvelope) -> ClientReply {
        if let Err(why) = caller.permit(&env.request) {
            return ClientReply::refused(why);
        }
        match &env.request {
            ClientRequest::Nodes { stale } => self.nodes(*stale).await,
            ClientRequest::PlanDeploy { configuration } => self.plan_deploy(configuration).await,
            ClientRequest::ShowConfig => self.show_config(None).await,
            ClientRequest::ShowConfigVersion { version } => self.show_config(Some(*version)).await,
            ClientRequest::Status => self.app_status().await,
            ClientRequest::History => self.history(DEFAULT_HISTORY_PAGE, None).await,
            ClientRequest::HistoryPage { limit, before } => {
                self.history(*limit as usize, *before).await
            }
            ClientRequest::Logs(request) => self.logs(request).await,
            ClientRequest::SnapshotSave => self.snapshot_save().await,
            ClientRequest::Events { since, limit } => self.events_page(since.as_deref(), *limit),
            // Answered in `handle_client`, which knows the certificate.
            ClientRequest::WhoAmI => ClientReply::refused("whoami is answered by the first node"),
            ClientRequest::Write {
                request_id,
                command,
            } => self.write(caller, request_id, command, &env).await,
            ClientRequest::MembersAdd { name, address } if self.is_leader() => {
                self.members_add(name, address).await
            }
            ClientRequest::MembersRemove { name } if self.is_leader() => {
                self.members_remove(caller, name).await
            }
            ClientRequest::MembersAdd { .. } | ClientRequest::MembersRemove { .. } => {
                self.forward(caller, env).await
            }
        }
    }

    /// The deployed configuration, or the kept one at `version`.
    async fn show_config(&self, version: Option<u64>) -> ClientReply {
        if let Err(e) = self.read_barrier().await {
            return ClientReply::unknown(e);
        }
        let applied = self.sm.read();
        let deployed = &applied.state.deployed;
        match version {
            None => ClientReply::Config {
                version: deployed.version,
                configuration: deployed.config.clone(),
            },
            Some(version) => match applied.state.configuration_at(version) {
                Ok(configuration) => ClientReply::Config {
                    version,
                    configuration: configuration.clone(),
                },
                Err(why) => ClientReply::refused(why),
            },
        }
    }

    /// The applied state, encoded, with the index and term it is at.
    async fn snapshot_save(&self) -> ClientReply {
        if let Err(e) = self.read_barrier().await {
            return ClientReply::unknown(e);
        }
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

    /// A page of this node's event log, cut to fit a reply frame. Not
    /// behind a read barrier: each node serves what it applied and saw.
    fn events_page(&self, since: Option<&str>, limit: u32) -> ClientReply {
        let since = match since.map(super::EventKey::parse).transpose() {
            Ok(since) => since,
            Err(e) => return ClientReply::refused(format!("since: {e}")),
        };
        let mut page = self.events.page(since, limit as usize);
        let mut bytes = 0;
        let fits = page.events.iter().take_while(|e| {
            bytes += e.summary.len() + e.node.len() + 128;
            bytes <= MAX_CLIENT_FRAME / 2
        });
        let fits = fits.count();
        page.events.truncate(fits);
        ClientReply::Events(page)
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

    async fn app_status(&self) -> ClientReply {
        if let Err(e) = self.read_barrier().await {
            return ClientReply::unknown(e);
        }
        let (observations, routing) =
            futures::future::join(self.observations(), self.routing_reports()).await;
        let applied = self.sm.read();
        let ages = self.freshness.ages();
        ClientReply::Status(status_view(&applied.state, &observations, &routing, &ages))
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
