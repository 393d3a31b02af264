//! The replicated desired state of the cluster and the one function that
//! changes it, [`State::apply`].
//!
//! Invariant 1: applying a committed command reads no clock, does no I/O and
//! uses no randomness, so every node that applies the same log holds the same
//! state. Time-based decisions are taken by the leader and arrive here as
//! commands. This module knows nothing of Raft, the network or Docker.

mod archive;
mod authz;
mod codec;
mod command;
mod deploy;
mod history;
pub mod invariants;
mod members;
mod moves;
mod placing;
mod refound;
mod releases;
mod replicas;
mod requests;
mod trust;
mod v1;
mod volumes;

pub use archive::{ArchivedConfig, ConfigArchive, ARCHIVE_CAPACITY};
pub use authz::{check_request_id, Principal, MAX_REQUEST_ID, MEMBERSHIP_ACCESS};
pub use codec::STATE_FORMAT;
pub use command::{
    Batch, Command, CommandDecodeError, Decoded, MoveStep, Outcome, Proposal, AUTHORIZATION_KINDS,
    BASELINE_COMMAND_KINDS, COMMAND_FORMAT, COMMAND_FORMAT_V1, COMMAND_KINDS,
};
pub use deploy::{plan, Deployed, Move, Plan};
pub use moves::VolumeMove;
pub use replicas::{ReplicaPoint, ReplicaSet, ZONE_LABEL};
pub use trust::{short as trust_short, CertificateRecord, Denial};

/// Node labels follow the rules configurations check constraints against.
pub use crate::config::{validate_label, MAX_LABEL_KEY, MAX_LABEL_VALUE};
pub use history::{History, HistoryEntry, HISTORY_BYTES, HISTORY_CAPACITY};
pub use requests::{RequestWindow, REQUEST_WINDOW_BYTES, REQUEST_WINDOW_CAPACITY};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the cluster knows of one member node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub address: String,
    pub labels: BTreeMap<String, String>,
    /// The IP its containers' ports are published on, as the node reported
    /// it; links to its apps point there. `None` until the node registers.
    pub publish_ip: Option<String>,
    /// What the node offers `anywhere` apps, as it reported it: bytes of
    /// memory and CPU shares (1024 per CPU). `None` until it registers.
    pub capacity: Option<Capacity>,
    /// Declared down by the leader after its grace ran out.
    pub down: bool,
    /// Drained by an operator: no `anywhere` apps are placed here.
    pub drained: bool,
    /// Command kinds its build can apply, as it registered.
    pub command_kinds: Option<u16>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub memory_bytes: u64,
    pub cpu_shares: u64,
}

impl NodeRecord {
    /// Where other nodes' containers reach this node's published ports: its
    /// registered publish IP, else the IP of its cluster address.
    pub fn reachable_ip(&self) -> Option<String> {
        self.publish_ip.clone().or_else(|| {
            self.address
                .parse::<std::net::SocketAddr>()
                .ok()
                .map(|a| a.ip().to_string())
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Member nodes by name, kept in step with the Raft membership.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Recently applied request ids and their outcomes (invariant 6).
    pub requests: RequestWindow,
    /// The deployed configuration, its version and placements.
    pub deployed: Deployed,
    /// Committed operator changes: who, when, what.
    pub history: History,
    /// Who owns each app's volume, at which epoch (invariant 4). Assigned
    /// when an app with a volume is first placed; changed only by a
    /// committed handoff or an operator's `volume recover`.
    pub volumes: BTreeMap<String, VolumeOwner>,
    /// Volume moves in flight, by app (see `moves.rs`).
    pub moves: BTreeMap<String, VolumeMove>,
    /// Apps without a volume whose node changed, by app: the live node that
    /// must stop its container before the new one starts (`releases.rs`).
    pub releases: BTreeMap<String, String>,
    /// The index of the entry that turned on apply-time authorization;
    /// `None` while some voter may still run the first release.
    #[serde(default)]
    pub authorization_from: Option<u64>,
    /// Certificates on the deny list, by SHA-256 fingerprint (`trust.rs`).
    #[serde(default)]
    pub denied: BTreeMap<String, Denial>,
    /// The certificate each member node reported it runs with, by node.
    #[serde(default)]
    pub certificates: BTreeMap<String, CertificateRecord>,
    /// The last deployed configurations (`archive.rs`).
    #[serde(default)]
    pub configurations: ConfigArchive,
    /// Volume replicas by app (`replicas.rs`): apps with `volume.replicas`
    /// above 1, and apps whose failover left diverged copies.
    #[serde(default)]
    pub replicas: BTreeMap<String, ReplicaSet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeOwner {
    pub node: String,
    pub epoch: u64,
    /// Set by `volume recover`: the owner adopts whatever copy it has (or
    /// starts empty) at this epoch, accepting the loss of newer data.
    pub adopt: bool,
    /// The highest epoch issued for this volume (to owners and to move
    /// attempts); every new one is higher, so none is given out twice.
    pub issued: u64,
    /// Set by a failover: the owner mounts its replica copy of exactly this
    /// point (and nothing else) at `epoch`.
    #[serde(default)]
    pub from_point: Option<ReplicaPoint>,
    /// Set by a move's handoff: the former owner and its epoch. Until a
    /// point of the new epoch is committed, the former owner's own copy —
    /// exactly what it handed off — is fresher than any replica's, so a
    /// failover goes there (`replicas.rs`).
    #[serde(default)]
    pub handed_from: Option<HandedFrom>,
}

/// The owner a handoff replaced, and the epoch its copy is complete at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedFrom {
    pub node: String,
    pub epoch: u64,
}

/// What executing a command did.
struct Effect {
    message: String,
    /// False when the command asked for what already was (nothing to record).
    changed: bool,
}

impl Effect {
    fn changed(message: String) -> Effect {
        Effect {
            message,
            changed: true,
        }
    }
}

impl State {
    /// Applies one proposal of the entry committed at log `index`. A retried
    /// request id returns the outcome of its first application and changes
    /// nothing. `decoded` is the proposal's content, decoded by
    /// `apply_batch` (which stops on an undecodable one, invariant 8).
    fn apply(
        &mut self,
        index: u64,
        leader_id: u64,
        proposed_at_ms: u64,
        proposal: &Proposal,
        decoded: &Decoded,
    ) -> Outcome {
        let fingerprint = proposal.fingerprint();
        if let Some(seen) = self.requests.get(&proposal.request_id) {
            if seen.fingerprint == fingerprint
                || same_as_unsigned(proposal, decoded, seen.fingerprint)
            {
                let mut outcome = seen.outcome.clone();
                outcome.replayed = true;
                return outcome;
            }
            return Outcome::refused(
                index,
                format!(
                    "request id '{}' was already used for a different request (at index {})",
                    proposal.request_id, seen.outcome.index
                ),
            );
        }
        let executed = self
            .admit(decoded, &proposal.request_id, leader_id)
            .and_then(|()| self.execute(&decoded.command, index, proposed_at_ms))
            .inspect(|_| self.reconcile_replicas());
        let outcome = match executed {
            Ok(Effect { message, changed }) => {
                if changed {
                    self.history.record(HistoryEntry {
                        index,
                        proposed_at_ms,
                        author: proposal.author.clone(),
                        request_id: proposal.request_id.clone(),
                        summary: message.clone(),
                        via: decoded.via.clone(),
                    });
                }
                Outcome::done(index, message)
            }
            Err(reason) => Outcome::refused(index, reason),
        };
        self.requests
            .remember(proposal.request_id.clone(), fingerprint, outcome.clone());
        outcome
    }

    /// Applies a batch committed as one entry: whole, or (when any command
    /// cannot be decoded) not at all.
    /// `leader_id` is the Raft id of the leader that proposed the entry
    /// (from its log id): some commands are the leader's alone.
    pub fn apply_batch(
        &mut self,
        index: u64,
        leader_id: u64,
        batch: &Batch,
    ) -> Result<Vec<Outcome>, CommandDecodeError> {
        // Decoded once, all before any applies: a batch applies whole or
        // not at all.
        let decoded = batch
            .proposals
            .iter()
            .map(Proposal::decode)
            .collect::<Result<Vec<_>, _>>()?;
        self.forget_expired_denials(batch.proposed_at_ms);
        Ok(batch
            .proposals
            .iter()
            .zip(&decoded)
            .map(|(p, d)| self.apply(index, leader_id, batch.proposed_at_ms, p, d))
            .collect())
    }

    /// Whether a decoded proposal may apply at all: signed ones by the
    /// authorization rules, unsigned ones only before the switch.
    fn admit(&self, decoded: &Decoded, request_id: &str, leader_id: u64) -> Result<(), String> {
        match &decoded.principal {
            Some(principal) => {
                check_request_id(request_id)?;
                self.authorize(principal, &decoded.command, leader_id)
            }
            None => match self.authorization_from {
                Some(since) => Err(format!(
                    "unsigned command refused: authorization is enforced since index {since}"
                )),
                None => Ok(()),
            },
        }
    }

    /// Why `command` must not be proposed yet: a voter whose build cannot
    /// apply its kind (it would stop applying, invariant 8).
    pub fn unsupported_by(&self, command: &Command, voters: &[String]) -> Option<String> {
        let kind = command.kind_index();
        voters.iter().find_map(|voter| {
            let known = self
                .nodes
                .get(voter)
                .and_then(|r| r.command_kinds)
                .unwrap_or(BASELINE_COMMAND_KINDS);
            (kind >= known).then(|| {
                format!(
                    "{voter} runs a build that knows {known} command kinds and cannot apply this one (kind {kind}); upgrade it first"
                )
            })
        })
    }

    fn member_mut(&mut self, node: &str) -> Result<&mut NodeRecord, String> {
        self.nodes
            .get_mut(node)
            .ok_or_else(|| format!("no member node named '{node}'"))
    }

    /// Runs one admitted command: each kind in its own method, next to
    /// the state it changes.
    fn execute(&mut self, command: &Command, index: u64, now_ms: u64) -> Result<Effect, String> {
        match command {
            Command::SetLabels { node, changes } => self.execute_set_labels(node, changes),
            Command::RegisterNode {
                node,
                publish_ip,
                capacity,
                command_kinds,
            } => self.execute_register(node, publish_ip, *capacity, *command_kinds),
            Command::Place { changes } => self.execute_place(changes, now_ms),
            Command::SetNodeDown { node, down } => self.execute_set_down(node, *down),
            Command::RecoverVolume { app, node } => self.execute_recover_volume(app, node),
            Command::SetDrained { node, drained } => self.execute_set_drained(node, *drained),
            Command::Deploy {
                configuration,
                if_version,
            } => self.execute_deploy(configuration, *if_version, now_ms),
            Command::MoveApp { app, node } => self.execute_move_app(app, node, now_ms),
            Command::MoveStep { app, epoch, step } => self.execute_move_step(app, *epoch, step),
            Command::Released { app, node } => self.execute_released(app, node),
            Command::EnforceAuthorization
            | Command::NodeCertificate { .. }
            | Command::Revoke { .. } => self.execute_trust(command, index, now_ms),
            Command::Rollback { .. } => self.execute_rollback(command, now_ms),
            Command::ReplicaPoint {
                app,
                node,
                epoch,
                seq,
                root,
                age_ms,
            } => {
                let point = ReplicaPoint {
                    epoch: *epoch,
                    seq: *seq,
                    root: root.clone(),
                    taken_at_ms: now_ms.saturating_sub(*age_ms),
                    age_at_commit_ms: *age_ms,
                };
                self.execute_replica_point(app, node, point)
            }
            Command::Failover { app, node, seq } => self.execute_failover(app, node, *seq),
            Command::ForgetDiverged { app, node } => {
                self.execute_forget_diverged(app, node.as_deref())
            }
        }
    }

    fn execute_deploy(
        &mut self,
        configuration: &crate::config::Configuration,
        if_version: Option<u64>,
        now_ms: u64,
    ) -> Result<Effect, String> {
        let current = self.deployed.version;
        if let Some(expected) = if_version {
            if expected != current {
                return Err(format!(
                    "the configuration is at version {current}, not {expected}: someone else deployed meanwhile; review with `ctl config show` and retry"
                ));
            }
        }
        let plan =
            plan(&self.deployed, &self.nodes, configuration).map_err(|errors| errors.join("; "))?;
        if plan.is_noop() {
            return Ok(Effect {
                message: format!("configuration unchanged at version {current}"),
                changed: false,
            });
        }
        if plan.config_changed {
            self.deployed.version += 1;
            self.deployed.config = configuration.clone();
            self.archive_current();
        }
        let before = std::mem::replace(&mut self.deployed.placements, plan.placements.clone());
        self.assign_new_volumes();
        self.reconcile_moves(now_ms);
        self.note_releases(&before);
        Ok(Effect::changed(format!(
            "configuration version {}: {}",
            self.deployed.version,
            plan.describe()
        )))
    }

    /// Brings the node table in step with a committed membership: new members
    /// get a record, departed members lose theirs, addresses follow.
    pub fn apply_membership<'a>(&mut self, members: impl Iterator<Item = (&'a str, &'a str)>) {
        let mut keep = BTreeMap::new();
        for (name, address) in members {
            let mut record = self.nodes.remove(name).unwrap_or_default();
            record.address = address.to_string();
            keep.insert(name.to_string(), record);
        }
        self.nodes = keep;
        // A departed member releases what it held.
        let nodes = &self.nodes;
        self.releases.retain(|_, holder| nodes.contains_key(holder));
        self.reconcile_replicas();
    }
}

/// Whether a signed proposal is the retry of a request first applied in
/// the unsigned format (a client retrying across the upgrade): the same
/// command, written as the first release would have. Checked only when the
/// fingerprints differ, so the common path never re-encodes.
fn same_as_unsigned(proposal: &Proposal, decoded: &Decoded, seen: [u8; 32]) -> bool {
    decoded.principal.is_some()
        && Proposal::unsigned(&proposal.request_id, "", &decoded.command)
            .is_ok_and(|old| old.fingerprint() == seen)
}

/// The leader the tests' entries name.
#[cfg(test)]
pub(crate) const TEST_LEADER: &str = "n1";

#[cfg(test)]
impl State {
    /// Applies `command` as its own entry at `index`, signed by whoever
    /// would propose it in a healthy cluster led by [`TEST_LEADER`]: a move
    /// step by the move's source (its handoff by the destination).
    pub(crate) fn apply_signed(&mut self, index: u64, command: &Command) -> Outcome {
        let principal = match (command, self.moves.values().next()) {
            (Command::ReplicaPoint { app, .. }, _) if self.volumes.contains_key(app) => {
                Principal::Node {
                    name: self.volumes[app].node.clone(),
                }
            }
            (Command::MoveStep { app, step, .. }, _) if self.moves.contains_key(app) => {
                let m = &self.moves[app];
                let name = match step {
                    MoveStep::Handoff => m.to.clone(),
                    _ => m.from.clone(),
                };
                Principal::Node { name }
            }
            _ => Principal::usual_for(command, TEST_LEADER),
        };
        let batch = Batch {
            proposed_at_ms: index * 1000,
            proposals: vec![Proposal::signed(
                format!("r{index}"),
                principal,
                None,
                command,
            )],
        };
        self.apply_batch(index, crate::ca::node_id_for(TEST_LEADER), &batch)
            .expect("test commands decode")
            .remove(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(nodes: &[&str]) -> State {
        let mut s = State::default();
        s.apply_membership(nodes.iter().map(|n| (*n, "127.0.0.1:1")));
        s
    }

    /// Applies one proposal as its own entry.
    fn apply1(s: &mut State, index: u64, p: &Proposal) -> Result<Outcome, CommandDecodeError> {
        let batch = Batch {
            proposed_at_ms: 1_000 * index,
            proposals: vec![p.clone()],
        };
        s.apply_batch(index, crate::ca::node_id_for(TEST_LEADER), &batch)
            .map(|mut o| o.remove(0))
    }

    fn admin() -> Principal {
        Principal::User {
            name: "admin".into(),
            access: crate::ca::Access::Admin,
        }
    }

    fn label(id: &str, node: &str, key: &str, value: &str) -> Proposal {
        Proposal::signed(
            id,
            admin(),
            None,
            &Command::SetLabels {
                node: node.into(),
                changes: [(key.to_string(), Some(value.to_string()))].into(),
            },
        )
    }

    #[test]
    fn retried_request_is_applied_once() {
        let mut s = state_with(&["n1"]);
        let first = apply1(&mut s, 5, &label("r1", "n1", "zone", "a")).unwrap();
        assert!(first.result.is_ok());
        apply1(&mut s, 6, &label("r2", "n1", "zone", "b")).unwrap();
        // The retry of r1 must not set zone back to "a".
        let retry = apply1(&mut s, 7, &label("r1", "n1", "zone", "a")).unwrap();
        assert!(retry.replayed);
        assert_eq!(retry.index, 5);
        assert_eq!(s.nodes["n1"].labels["zone"], "b");
        // Reusing an id for another request is refused and changes nothing.
        let reuse = apply1(&mut s, 8, &label("r1", "n1", "zone", "c")).unwrap();
        assert!(reuse.result.is_err());
        assert_eq!(s.nodes["n1"].labels["zone"], "b");
    }

    #[test]
    fn unknown_node_and_bad_labels_are_refused() {
        let mut s = state_with(&["n1"]);
        assert!(apply1(&mut s, 1, &label("a", "n9", "k", "v"))
            .unwrap()
            .result
            .is_err());
        assert!(apply1(&mut s, 2, &label("b", "n1", "bad key", "v"))
            .unwrap()
            .result
            .is_err());
        assert!(apply1(&mut s, 3, &label("c", "n1", "k", "two words"))
            .unwrap()
            .result
            .is_err());
        assert!(s.nodes["n1"].labels.is_empty());
    }

    #[test]
    fn undecodable_command_stops_apply() {
        let mut s = state_with(&["n1"]);
        let future = Proposal {
            request_id: "x".into(),
            author: "admin".into(),
            command: vec![COMMAND_FORMAT + 1, 0],
        };
        assert!(apply1(&mut s, 1, &future).is_err());
        let unknown_kind = Proposal {
            request_id: "y".into(),
            author: "admin".into(),
            command: vec![COMMAND_FORMAT_V1, 200],
        };
        assert!(apply1(&mut s, 2, &unknown_kind).is_err());
    }

    #[test]
    fn a_batch_applies_whole_or_not_at_all() {
        let mut s = state_with(&["n1"]);
        let undecodable = Proposal {
            request_id: "z".into(),
            author: "admin".into(),
            command: vec![COMMAND_FORMAT + 1],
        };
        let bad = Batch {
            proposed_at_ms: 0,
            proposals: vec![label("a", "n1", "k", "v"), undecodable],
        };
        assert!(s.apply_batch(1, 0, &bad).is_err());
        assert!(
            s.nodes["n1"].labels.is_empty(),
            "nothing of a bad batch applies"
        );
        let good = Batch {
            proposed_at_ms: 0,
            proposals: vec![
                label("a", "n1", "k", "1"),
                label("b", "n1", "k", "2"),
                label("a", "n1", "k", "1"),
            ],
        };
        let outcomes = s.apply_batch(2, 0, &good).unwrap();
        assert_eq!(outcomes.len(), 3);
        assert!(
            outcomes[2].replayed,
            "a retry inside the same batch is answered once"
        );
        assert_eq!(s.nodes["n1"].labels["k"], "2");
    }

    #[test]
    fn a_kind_is_proposed_only_once_every_voter_knows_it() {
        let mut s = state_with(&["n1", "n2"]);
        let deploy = Command::Deploy {
            configuration: Default::default(),
            if_version: None,
        };
        let voters = vec!["n1".to_string(), "n2".to_string()];
        assert_eq!(s.unsupported_by(&deploy, &voters), None);
        // An old build that knows only the first kind.
        s.nodes.get_mut("n2").unwrap().command_kinds = Some(1);
        let why = s.unsupported_by(&deploy, &voters).unwrap();
        assert!(why.contains("n2"), "{why}");
        // Every variant has an index below the count this build advertises.
        assert!(deploy.kind_index() < COMMAND_KINDS);
        let last = Command::ForgetDiverged {
            app: "db".into(),
            node: None,
        };
        assert_eq!(
            last.kind_index(),
            COMMAND_KINDS - 1,
            "COMMAND_KINDS counts every variant"
        );
    }

    #[test]
    fn membership_keeps_labels_of_remaining_members() {
        let mut s = state_with(&["n1", "n2"]);
        apply1(&mut s, 1, &label("a", "n1", "k", "v")).unwrap();
        s.apply_membership([("n1", "10.0.0.1:1"), ("n3", "10.0.0.3:1")].into_iter());
        assert_eq!(s.nodes["n1"].labels["k"], "v");
        assert_eq!(s.nodes["n1"].address, "10.0.0.1:1");
        assert!(!s.nodes.contains_key("n2"));
        assert!(s.nodes.contains_key("n3"));
    }
}
