//! Commands, the proposals that carry them through the log, and outcomes.
//!
//! A proposal holds its command as opaque, versioned bytes: the log and the
//! network never need to understand a command, and a node that meets a command
//! it cannot decode refuses to apply it instead of misreading it (invariant 8).
//!
//! Two formats: 1 (the first release: postcard of the command alone, read
//! through the frozen types in `v1.rs`) and 2 (signed: the principal and the
//! node that forwarded the request travel with the command, as JSON so that
//! fields added later with defaults keep old entries readable). A leader
//! writes format 2 only once authorization is enforced, that is once every
//! voter runs a build that reads it.

use super::authz::Principal;
use serde::{Deserialize, Serialize};

/// The first release's command encoding (postcard, unsigned).
pub const COMMAND_FORMAT_V1: u8 = 1;
/// Signed commands: `[2]`, the forwarding node's name (u16 length + UTF-8),
/// then JSON of [`SignedBody`].
pub const COMMAND_FORMAT: u8 = 2;

/// Every change to the desired state. New kinds are appended, never reordered:
/// the variant index is part of the encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Sets (`Some`) or removes (`None`) labels on a member node, all or none.
    SetLabels {
        node: String,
        changes: std::collections::BTreeMap<String, Option<String>>,
    },
    /// Replaces the whole desired configuration, refused unless the current
    /// version is `if_version` (when given).
    Deploy {
        configuration: crate::config::Configuration,
        if_version: Option<u64>,
    },
    /// A node reports the IP its containers publish ports on, what it
    /// offers, and how many command kinds its build can apply.
    RegisterNode {
        node: String,
        publish_ip: String,
        capacity: crate::state::Capacity,
        command_kinds: u16,
    },
    /// The leader's placements of `anywhere` apps (`None`: unplaced). Not an
    /// operator change: the configuration version stays.
    Place {
        changes: Vec<(String, Option<String>)>,
    },
    /// The leader declares a node down (its grace ran out) or up again.
    SetNodeDown { node: String, down: bool },
    /// An operator drains a node or returns it to service.
    SetDrained { node: String, drained: bool },
    /// An operator gives up on a volume's owner: `node` becomes the owner at
    /// a new epoch and starts from whatever copy it has (or empty).
    RecoverVolume { app: String, node: String },
    /// An operator moves an app to `node`: a pinned app's deployment entry
    /// changes (a new configuration version, as if deployment.yml had been
    /// edited), an `anywhere` app's placement changes. An app with a volume
    /// keeps running where its volume is until the handoff.
    MoveApp { app: String, node: String },
    /// A step of a volume move, proposed by the nodes running it. Applies
    /// only while `epoch` is the move's current attempt, which is what fences
    /// a late step of an abandoned attempt.
    MoveStep {
        app: String,
        epoch: u64,
        step: MoveStep,
    },
    /// A node stopped an app it no longer runs (its node changed): the new
    /// node may start it (see `releases.rs`).
    Released { app: String, node: String },
    /// The leader turns on authorization at apply time: from this entry on,
    /// unsigned (format 1) proposals are refused. Proposed once every voter
    /// registered a build that knows this kind.
    EnforceAuthorization,
    /// A node reports the certificate it runs with (shown by `ctl nodes`,
    /// revoked when the node is removed).
    NodeCertificate {
        node: String,
        fingerprint: String,
        /// Seconds since the Unix epoch.
        not_after: i64,
    },
    /// An admin (or `members remove`) puts a certificate on the deny list:
    /// every service refuses it from the commit on.
    Revoke {
        fingerprint: String,
        /// Whose certificate, as far as the revoker knows (`user alice`).
        subject: String,
        reason: String,
        /// When the certificate expires anyway (seconds since the Unix
        /// epoch), after which the entry is dropped; `None` keeps it.
        not_after: Option<i64>,
    },
    /// An operator deploys an earlier configuration version again, through
    /// the same plan as a deploy (a new version; history says rollback).
    Rollback { to: u64, if_version: Option<u64> },
    /// The owner of `app`'s volume: replica `node` holds its point `seq`
    /// (taken at `epoch`, root `root` in hex) complete. `age_ms`: how long
    /// before this proposal the point was taken, by the owner's monotonic
    /// clock (the leader's stamp minus it dates the point).
    ReplicaPoint {
        app: String,
        node: String,
        epoch: u64,
        seq: u64,
        root: String,
        age_ms: u64,
    },
    /// The leader: `app`'s owner is down; `node`, the live replica holding
    /// the newest committed point `seq`, becomes the owner (`replicas.rs`).
    Failover { app: String, node: String, seq: u64 },
    /// An operator: what `node` (every node when `None`) kept aside of
    /// `app`'s volume after a failover may be removed.
    ForgetDiverged { app: String, node: Option<String> },
}

/// The steps of a volume move that go through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveStep {
    /// The source is about to stop the app for the final delta: from this
    /// commit on no node runs it until the handoff or a retry.
    Freeze,
    /// The destination holds a copy complete at the attempt's epoch, made
    /// after the freeze: it becomes the owner at that epoch.
    Handoff,
    /// This attempt cannot finish: the source is authoritative again and
    /// the next attempt gets a fresh epoch.
    Retry { reason: String },
}

/// What one Raft entry carries: client writes the leader batched together,
/// applied in order. Batching shares one log append, one fsync and one
/// replication round among concurrent writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The proposing leader's clock, milliseconds since the Unix epoch: the
    /// only time the state machine ever sees, and a committed value.
    pub proposed_at_ms: u64,
    pub proposals: Vec<Proposal>,
}

/// How many command kinds this build knows: variants are only ever appended,
/// so a node that knows N kinds can apply kinds `0..N`. Nodes register this
/// number; the leader proposes a kind only once every voter knows it
/// (invariant 8), which is what makes a rolling upgrade safe.
pub const COMMAND_KINDS: u16 = 17;

/// The first count that includes the signed format and its commands: a
/// leader enforces authorization once every voter knows this many kinds.
pub const AUTHORIZATION_KINDS: u16 = 13;

/// Kinds every build of this format knows; assumed for a node that has not
/// registered yet.
pub const BASELINE_COMMAND_KINDS: u16 = 6;

impl Command {
    /// The variant's position, which is also its place in the encoding.
    pub fn kind_index(&self) -> u16 {
        match self {
            Command::SetLabels { .. } => 0,
            Command::Deploy { .. } => 1,
            Command::RegisterNode { .. } => 2,
            Command::Place { .. } => 3,
            Command::SetNodeDown { .. } => 4,
            Command::SetDrained { .. } => 5,
            Command::RecoverVolume { .. } => 6,
            Command::MoveApp { .. } => 7,
            Command::MoveStep { .. } => 8,
            Command::Released { .. } => 9,
            Command::EnforceAuthorization => 10,
            Command::NodeCertificate { .. } => 11,
            Command::Revoke { .. } => 12,
            Command::Rollback { .. } => 13,
            Command::ReplicaPoint { .. } => 14,
            Command::Failover { .. } => 15,
            Command::ForgetDiverged { .. } => 16,
        }
    }

    /// What it does, in words for refusals.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Command::SetLabels { .. } => "set labels",
            Command::Deploy { .. } => "deploy",
            Command::RegisterNode { .. } => "register a node",
            Command::Place { .. } => "place apps",
            Command::SetNodeDown { .. } => "declare a node down or up",
            Command::SetDrained { .. } => "drain or activate a node",
            Command::RecoverVolume { .. } => "recover a volume",
            Command::MoveApp { .. } => "move an app",
            Command::MoveStep { .. } => "take a move step",
            Command::Released { .. } => "release an app",
            Command::EnforceAuthorization => "enforce authorization",
            Command::NodeCertificate { .. } => "report a node certificate",
            Command::Revoke { .. } => "revoke a certificate",
            Command::Rollback { .. } => "roll back the configuration",
            Command::ReplicaPoint { .. } => "commit a replica point",
            Command::Failover { .. } => "fail a volume over",
            Command::ForgetDiverged { .. } => "forget diverged copies",
        }
    }
}

/// What a signed proposal carries besides the forwarding node: the part a
/// retry through another node repeats exactly (its fingerprint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBody {
    pub principal: Principal,
    pub command: Command,
}

/// A proposal's content once decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// `None` for the first release's unsigned format.
    pub principal: Option<Principal>,
    /// The node that passed a user's request on (it vouches for the user).
    pub via: Option<String>,
    pub command: Command,
}

/// A client write as committed to the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Chosen by the client; a retry carries the same id (invariant 6).
    pub request_id: String,
    /// The user certificate's name of whoever asked for the change (or
    /// `node <name>` for changes a node asked for itself).
    pub author: String,
    /// `COMMAND_FORMAT` byte followed by the postcard-encoded [`Command`].
    pub command: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandDecodeError {
    #[error("empty command")]
    Empty,
    #[error("command format {0} is newer than this build understands ({COMMAND_FORMAT}); upgrade this node")]
    UnknownFormat(u8),
    #[error("command not understood by this build ({0}); upgrade this node")]
    Undecodable(postcard::Error),
    #[error("command not understood by this build ({0}); upgrade this node")]
    Json(serde_json::Error),
    #[error("signed command is cut short")]
    Truncated,
    #[error("{0}")]
    NotInFormat1(String),
}

/// Splits a signed command's forwarding node from its body.
fn split_via(rest: &[u8]) -> Result<(Option<String>, &[u8]), CommandDecodeError> {
    let (len, rest) = rest
        .split_first_chunk::<2>()
        .ok_or(CommandDecodeError::Truncated)?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return Err(CommandDecodeError::Truncated);
    }
    let (via, body) = rest.split_at(len);
    let via = std::str::from_utf8(via).map_err(|_| CommandDecodeError::Truncated)?;
    Ok(((!via.is_empty()).then(|| via.to_string()), body))
}

impl Proposal {
    /// A signed proposal (format 2): `author` is derived from `principal`.
    pub fn signed(
        request_id: impl Into<String>,
        principal: Principal,
        via: Option<&str>,
        command: &Command,
    ) -> Proposal {
        let via = via.unwrap_or_default().as_bytes();
        let via_len = u16::try_from(via.len()).expect("node names are at most 63 bytes");
        let mut bytes = vec![COMMAND_FORMAT];
        bytes.extend_from_slice(&via_len.to_be_bytes());
        bytes.extend_from_slice(via);
        let author = principal.author();
        let body = SignedBody {
            principal,
            command: command.clone(),
        };
        serde_json::to_writer(&mut bytes, &body).expect("commands are JSON-serializable");
        Proposal {
            request_id: request_id.into(),
            author,
            command: bytes,
        }
    }

    /// An unsigned proposal in the first release's format, for a cluster
    /// whose voters do not all read signed ones yet.
    pub fn unsigned(
        request_id: impl Into<String>,
        author: impl Into<String>,
        command: &Command,
    ) -> Result<Proposal, CommandDecodeError> {
        let mut bytes = vec![COMMAND_FORMAT_V1];
        let old = super::codec::command_to_v1(command)?;
        postcard::to_io(&old, &mut bytes).expect("commands are postcard-serializable");
        Ok(Proposal {
            request_id: request_id.into(),
            author: author.into(),
            command: bytes,
        })
    }

    pub fn decode(&self) -> Result<Decoded, CommandDecodeError> {
        let (&format, rest) = self
            .command
            .split_first()
            .ok_or(CommandDecodeError::Empty)?;
        match format {
            COMMAND_FORMAT_V1 => Ok(Decoded {
                principal: None,
                via: None,
                command: super::codec::command_from_v1(rest)?,
            }),
            COMMAND_FORMAT => {
                let (via, body) = split_via(rest)?;
                let body: SignedBody =
                    serde_json::from_slice(body).map_err(CommandDecodeError::Json)?;
                Ok(Decoded {
                    principal: Some(body.principal),
                    via,
                    command: body.command,
                })
            }
            other => Err(CommandDecodeError::UnknownFormat(other)),
        }
    }

    /// Identifies the request's content, so a reused id with other content
    /// is caught. A signed proposal's forwarding node is left out: a retry
    /// through another node is the same request.
    pub fn fingerprint(&self) -> [u8; 32] {
        let content = match self.command.split_first() {
            Some((&COMMAND_FORMAT, rest)) => split_via(rest).map_or(rest, |(_, body)| body),
            _ => &self.command,
        };
        *blake3::hash(content).as_bytes()
    }
}

/// What applying a proposal did, returned to the client that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The log index at which the request was (first) applied.
    pub index: u64,
    /// What changed, or why nothing did.
    pub result: Result<String, String>,
    /// True when this is a retry answered from the request window.
    pub replayed: bool,
}

impl Outcome {
    pub fn done(index: u64, message: String) -> Outcome {
        Outcome {
            index,
            result: Ok(message),
            replayed: false,
        }
    }
    pub fn refused(index: u64, reason: String) -> Outcome {
        Outcome {
            index,
            result: Err(reason),
            replayed: false,
        }
    }
}
