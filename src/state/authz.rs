//! Who may propose which command (the trust model's rules, in one place).
//!
//! Every signed proposal names its principal: the user whose certificate
//! made the request (with the access level that certificate carries) or the
//! node that asked for a change about itself. The leader checks the rules
//! before it proposes, and every node checks them again when it applies a
//! signed entry, so an entry that slipped past the first check (a forwarding
//! bug, a replayed entry) still changes nothing. The rules depend only on the
//! command, the state it applies to and the leader that proposed the entry:
//! applying them is as deterministic as the rest of `apply` (invariant 1).

use super::{Command, MoveStep, State};
use crate::ca::{node_id_for, Access};
use serde::{Deserialize, Serialize};

/// On whose behalf a proposal was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Principal {
    /// An operator, as its user certificate names it and with the access
    /// that certificate grants.
    User { name: String, access: Access },
    /// A member node acting for itself.
    Node { name: String },
}

impl Principal {
    /// How history shows the author (`node n2` for nodes, as before).
    pub fn author(&self) -> String {
        match self {
            Principal::User { name, .. } => name.clone(),
            Principal::Node { name } => format!("node {name}"),
        }
    }
}

impl Principal {
    /// The principal that proposes `command` in a healthy cluster whose
    /// leader is `leader`, with an admin user for operator commands: for
    /// simulations and tests that apply commands the way the log carries
    /// them.
    pub fn usual_for(command: &Command, leader: &str) -> Principal {
        let node = |name: &str| Principal::Node {
            name: name.to_string(),
        };
        match command {
            Command::RegisterNode { node: n, .. }
            | Command::Released { node: n, .. }
            | Command::NodeCertificate { node: n, .. } => node(n),
            Command::Place { .. }
            | Command::SetNodeDown { .. }
            | Command::EnforceAuthorization
            | Command::Failover { .. } => node(leader),
            Command::MoveStep { .. } => node(leader),
            _ => Principal::User {
                name: "admin".into(),
                access: Access::Admin,
            },
        }
    }
}

/// What the command needs of its principal.
enum Needs<'a> {
    /// A user with at least this access.
    User(Access),
    /// The named node itself.
    Node(&'a str),
    /// The leader that proposes the entry.
    Leader,
    /// The move's source or destination.
    MoveParty { from: &'a str, to: &'a str },
    /// Either a user with this access or the named node itself.
    UserOrNode(Access, &'a str),
}

/// The access level a user needs for requests outside the log (membership
/// changes are Raft configuration changes, not commands).
pub const MEMBERSHIP_ACCESS: Access = Access::Admin;

impl State {
    /// Whether `principal` may propose `command` in an entry proposed by the
    /// node whose Raft id is `leader_id`. `Err` says who could.
    pub fn authorize(
        &self,
        principal: &Principal,
        command: &Command,
        leader_id: u64,
    ) -> Result<(), String> {
        let needs = match command {
            Command::SetLabels { node, .. } => Needs::UserOrNode(Access::Operator, node),
            Command::Deploy { .. }
            | Command::Rollback { .. }
            | Command::MoveApp { .. }
            | Command::SetDrained { .. }
            | Command::ForgetDiverged { .. } => Needs::User(Access::Operator),
            Command::RecoverVolume { .. } | Command::Revoke { .. } => Needs::User(Access::Admin),
            Command::RegisterNode { node, .. }
            | Command::Released { node, .. }
            | Command::NodeCertificate { node, .. } => Needs::Node(node),
            Command::Place { .. }
            | Command::SetNodeDown { .. }
            | Command::EnforceAuthorization
            | Command::Failover { .. } => Needs::Leader,
            // The volume's owner takes the points; an app without an
            // owner gets a refusal from apply whoever asks.
            Command::ReplicaPoint { app, .. } => match self.volumes.get(app) {
                Some(owner) => Needs::Node(&owner.node),
                None => Needs::Leader,
            },
            Command::MoveStep { app, .. } => match self.moves.get(app) {
                Some(m) => Needs::MoveParty {
                    from: &m.from,
                    to: &m.to,
                },
                // No move: the step will be refused as stale anyway; only
                // a node may say so.
                None => {
                    return match principal {
                        Principal::Node { .. } => Ok(()),
                        Principal::User { .. } => Err(refusal(principal, command, "a node")),
                    }
                }
            },
        };
        let allowed = match (&needs, principal) {
            (Needs::User(min), Principal::User { access, .. })
            | (Needs::UserOrNode(min, _), Principal::User { access, .. }) => access >= min,
            (Needs::Node(node), Principal::Node { name })
            | (Needs::UserOrNode(_, node), Principal::Node { name }) => name == node,
            (Needs::Leader, Principal::Node { name }) => node_id_for(name) == leader_id,
            (Needs::MoveParty { from, to }, Principal::Node { name }) => name == from || name == to,
            _ => false,
        };
        if allowed {
            return Ok(());
        }
        let who = match needs {
            Needs::User(min) => format!("a user with role {min} or higher"),
            Needs::UserOrNode(min, node) => {
                format!("a user with role {min} or higher, or node {node} itself")
            }
            Needs::Node(node) => format!("node {node} itself"),
            Needs::Leader => "the leader that proposes it".to_string(),
            Needs::MoveParty { from, to } => {
                format!("the move's source {from} or destination {to}")
            }
        };
        Err(refusal(principal, command, &who))
    }
}

fn refusal(principal: &Principal, command: &Command, who: &str) -> String {
    let by = match principal {
        Principal::User { name, access } => format!("user {name} (role {access})"),
        Principal::Node { name } => format!("node {name}"),
    };
    let what = command.kind_name();
    let step = match command {
        Command::MoveStep { step, .. } => match step {
            MoveStep::Freeze => " (freeze)",
            MoveStep::Handoff => " (handoff)",
            MoveStep::Retry { .. } => " (retry)",
        },
        _ => "",
    };
    format!("permission denied: {by} may not {what}{step}; that needs {who}")
}

/// Why a request id is unusable: at most 128 bytes of letters, digits and
/// `.`, `_`, `:`, `-` (it is replicated, remembered and shown in history).
pub fn check_request_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        let shown: String = id.chars().take(40).collect();
        Err(format!(
            "invalid request id '{shown}{}' ({} bytes): use 1-{MAX_REQUEST_ID} letters, digits, '.', '_', ':' or '-'",
            if id.chars().count() > 40 { "…" } else { "" },
            id.len()
        ))
    }
}

/// Longest request id accepted.
pub const MAX_REQUEST_ID: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Batch, Capacity, Outcome, Proposal, TEST_LEADER};

    fn state() -> State {
        let mut s = State::default();
        s.apply_membership([("n1", "127.0.0.1:1"), ("n2", "127.0.0.1:2")].into_iter());
        s
    }

    fn user(access: Access) -> Principal {
        Principal::User {
            name: "u".into(),
            access,
        }
    }

    fn node(name: &str) -> Principal {
        Principal::Node { name: name.into() }
    }

    /// Applies one signed proposal in an entry led by TEST_LEADER.
    fn apply(s: &mut State, index: u64, who: Principal, command: &Command) -> Outcome {
        let batch = Batch {
            proposed_at_ms: index * 1000,
            proposals: vec![Proposal::signed(format!("r{index}"), who, None, command)],
        };
        s.apply_batch(index, node_id_for(TEST_LEADER), &batch)
            .unwrap()
            .remove(0)
    }

    fn internal_commands() -> Vec<Command> {
        vec![
            Command::RegisterNode {
                node: "n2".into(),
                publish_ip: "127.0.0.1".into(),
                capacity: Capacity::default(),
                command_kinds: 99,
            },
            Command::Released {
                app: "web".into(),
                node: "n2".into(),
            },
            Command::Place {
                changes: vec![("web".into(), Some("n2".into()))],
            },
            Command::SetNodeDown {
                node: "n2".into(),
                down: true,
            },
            Command::MoveStep {
                app: "web".into(),
                epoch: 2,
                step: MoveStep::Handoff,
            },
            Command::EnforceAuthorization,
            Command::NodeCertificate {
                node: "n2".into(),
                fingerprint: "a".repeat(64),
                not_after: 1,
            },
        ]
    }

    /// A user certificate, even an admin's, can propose no node-internal
    /// command, and the state stays as it was.
    #[test]
    fn users_cannot_forge_internal_commands() {
        for command in internal_commands() {
            let mut s = state();
            let before = s.clone();
            let out = apply(&mut s, 1, user(Access::Admin), &command);
            let why = out.result.unwrap_err();
            assert!(why.starts_with("permission denied"), "{why}");
            let mut after = s.clone();
            after.requests = before.requests.clone();
            assert_eq!(after, before, "{} changed the state", command.kind_name());
        }
    }

    /// A node acts only for itself; the leader's commands need the leader.
    #[test]
    fn nodes_act_only_for_themselves() {
        let mut s = state();
        let forged = Command::RegisterNode {
            node: "n1".into(),
            publish_ip: "10.9.9.9".into(),
            capacity: Capacity::default(),
            command_kinds: 1,
        };
        let why = apply(&mut s, 1, node("n2"), &forged).result.unwrap_err();
        assert!(why.contains("node n1 itself"), "{why}");
        assert_eq!(s.nodes["n1"].publish_ip, None);
        // The same command by n1 itself applies.
        assert!(apply(&mut s, 2, node("n1"), &forged).result.is_ok());
        // n2 is not the leader of the entry (TEST_LEADER is n1).
        let down = Command::SetNodeDown {
            node: "n1".into(),
            down: true,
        };
        let why = apply(&mut s, 3, node("n2"), &down).result.unwrap_err();
        assert!(why.contains("the leader"), "{why}");
        assert!(!s.nodes["n1"].down);
        assert!(apply(&mut s, 4, node("n1"), &down).result.is_ok());
    }

    /// Each role can do what it should and is told what it lacks.
    #[test]
    fn roles_limit_users() {
        let mut s = state();
        let drain = Command::SetDrained {
            node: "n2".into(),
            drained: true,
        };
        let why = apply(&mut s, 1, user(Access::Viewer), &drain)
            .result
            .unwrap_err();
        assert!(
            why.contains("role viewer") && why.contains("operator"),
            "{why}"
        );
        assert!(!s.nodes["n2"].drained);
        assert!(apply(&mut s, 2, user(Access::Operator), &drain)
            .result
            .is_ok());
        let recover = Command::RecoverVolume {
            app: "db".into(),
            node: "n2".into(),
        };
        let why = apply(&mut s, 3, user(Access::Operator), &recover)
            .result
            .unwrap_err();
        assert!(why.contains("role admin"), "{why}");
    }

    /// Once the switch is committed, unsigned (first-release) proposals
    /// are refused; before it they apply as they always did.
    #[test]
    fn unsigned_commands_stop_at_the_switch() {
        let mut s = state();
        let label = |v: &str| Command::SetLabels {
            node: "n1".into(),
            changes: [("k".to_string(), Some(v.to_string()))].into(),
        };
        let unsigned = |id: &str, c: &Command| Batch {
            proposed_at_ms: 0,
            proposals: vec![Proposal::unsigned(id, "admin", c).unwrap()],
        };
        let lead = node_id_for(TEST_LEADER);
        let before = s.apply_batch(1, lead, &unsigned("a", &label("1"))).unwrap();
        assert!(before[0].result.is_ok());
        // Only the leader of the entry may turn it on.
        let by_other = apply(&mut s, 2, node("n2"), &Command::EnforceAuthorization);
        assert!(by_other.result.is_err());
        assert_eq!(s.authorization_from, None);
        let on = apply(&mut s, 3, node(TEST_LEADER), &Command::EnforceAuthorization);
        assert!(on.result.is_ok());
        assert_eq!(s.authorization_from, Some(3));
        let after = s.apply_batch(4, lead, &unsigned("b", &label("2"))).unwrap();
        let why = after[0].result.clone().unwrap_err();
        assert!(why.contains("unsigned"), "{why}");
        assert_eq!(s.nodes["n1"].labels["k"], "1");
    }

    /// Request ids are bounded in length and characters, at apply too.
    #[test]
    fn request_ids_are_checked() {
        assert!(check_request_id("ok-1.2_3:4").is_ok());
        assert!(check_request_id("").is_err());
        assert!(check_request_id("a b").is_err());
        assert!(check_request_id(&"x".repeat(MAX_REQUEST_ID + 1)).is_err());
        let mut s = state();
        let long = "x".repeat(120_000);
        let batch = Batch {
            proposed_at_ms: 0,
            proposals: vec![Proposal::signed(
                long,
                user(Access::Admin),
                None,
                &Command::SetDrained {
                    node: "n2".into(),
                    drained: true,
                },
            )],
        };
        let out = s.apply_batch(1, node_id_for(TEST_LEADER), &batch).unwrap();
        assert!(out[0].result.is_err());
        assert!(!s.nodes["n2"].drained);
    }
}
