//! Commands, the proposals that carry them through the log, and outcomes.
//!
//! A proposal holds its command as opaque, versioned bytes: the log and the
//! network never need to understand a command, and a node that meets a command
//! it cannot decode refuses to apply it instead of misreading it (invariant 8).

use serde::{Deserialize, Serialize};

/// The command encoding this build writes and reads.
pub const COMMAND_FORMAT: u8 = 1;

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
pub const COMMAND_KINDS: u16 = 10;

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
        }
    }
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
}

impl Proposal {
    pub fn new(
        request_id: impl Into<String>,
        author: impl Into<String>,
        command: &Command,
    ) -> Proposal {
        let mut bytes = vec![COMMAND_FORMAT];
        postcard::to_io(command, &mut bytes).expect("commands are postcard-serializable");
        Proposal {
            request_id: request_id.into(),
            author: author.into(),
            command: bytes,
        }
    }

    pub fn decode(&self) -> Result<Command, CommandDecodeError> {
        let (&format, body) = self
            .command
            .split_first()
            .ok_or(CommandDecodeError::Empty)?;
        if format != COMMAND_FORMAT {
            return Err(CommandDecodeError::UnknownFormat(format));
        }
        postcard::from_bytes(body).map_err(CommandDecodeError::Undecodable)
    }

    /// Identifies the request's content, so a reused id with other content is caught.
    pub fn fingerprint(&self) -> [u8; 32] {
        *blake3::hash(&self.command).as_bytes()
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
