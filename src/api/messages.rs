//! Messages of the client (`Service::Client`) and peer (`Service::Peer`)
//! services. Both sides of every call use these types; the frame envelope
//! carries their version.

/// What the agents observe, carried in replies (defined where they are recorded).
pub use crate::agent::{InstanceStatus, MoveReport, MoveStatus};
use crate::config::Configuration;
use crate::state::{Command, HistoryEntry, Outcome, Plan, Principal};
use serde::{Deserialize, Deserializer, Serialize};

/// How many times a request may be passed on towards the leader, so that a
/// stale leader hint can never bounce a request around forever.
pub const MAX_FORWARD_HOPS: u8 = 3;

#[derive(Debug, Clone, Serialize)]
pub struct ClientEnvelope {
    /// Times this request has already been forwarded between nodes.
    pub hops: u8,
    /// The user on whose behalf a node forwards the request (the name only,
    /// as the first release sent it). Ignored when a user certificate sent
    /// it: then the certificate's name is the user.
    pub user: Option<String>,
    pub request: ClientRequest,
    /// Set by a forwarding node: the principal it authenticated and its own
    /// name. Last in the encoding, so a first-release node reads the fields
    /// before it and ignores this one; absent in a first-release frame.
    pub forwarded: Option<Forwarded>,
}

/// Who a forwarded request is for, as the node that authenticated it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    pub principal: Principal,
    /// The node whose endpoint authenticated the user's certificate.
    pub via: String,
}

impl ClientEnvelope {
    /// A request as a client (or a node for itself) sends it.
    pub fn new(request: ClientRequest) -> ClientEnvelope {
        ClientEnvelope {
            hops: 0,
            user: None,
            request,
            forwarded: None,
        }
    }
}

/// Reads the envelope field by field so that a first-release frame, which
/// ends before `forwarded`, still decodes (with `forwarded: None`).
impl<'de> Deserialize<'de> for ClientEnvelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = ClientEnvelope;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a client envelope")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ClientEnvelope, A::Error> {
                let missing = |what| serde::de::Error::custom(format!("envelope without {what}"));
                let hops = seq.next_element()?.ok_or_else(|| missing("hops"))?;
                let user = seq.next_element()?.ok_or_else(|| missing("user"))?;
                let request = seq.next_element()?.ok_or_else(|| missing("request"))?;
                // The end of a first-release frame: nothing more to read.
                let forwarded = seq.next_element().ok().flatten().flatten();
                Ok(ClientEnvelope {
                    hops,
                    user,
                    request,
                    forwarded,
                })
            }
        }
        deserializer.deserialize_tuple(4, Fields)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Every member with its role and progress. `stale` skips the read index
    /// and answers from this node's own applied state.
    Nodes { stale: bool },
    /// A change to the desired state, applied once per request id.
    Write {
        request_id: String,
        command: Command,
    },
    /// Adds a member: a learner first, promoted to voter once caught up while
    /// there are fewer voters than the cluster's maximum.
    MembersAdd { name: String, address: String },
    /// Removes a member (voter or not).
    MembersRemove { name: String },
    /// What deploying this configuration would change; commits nothing.
    PlanDeploy { configuration: Configuration },
    /// The deployed configuration and its version.
    ShowConfig,
    /// Applications with their desired and observed state.
    Status,
    /// Committed operator changes, oldest first (the newest page of them).
    History,
    /// How the node sees the caller's certificate.
    WhoAmI,
    /// A page of committed changes: up to `limit` entries older than index
    /// `before` (the newest when `None`), oldest first.
    HistoryPage { limit: u32, before: Option<u64> },
    /// The configuration deployed as `version` (the current or a kept one).
    ShowConfigVersion { version: u64 },
    /// A page of an app's container output, from the node that runs it.
    Logs(LogsRequest),
    /// The whole replicated state, read linearizably (admin).
    SnapshotSave,
    /// Events after the id `since` (the newest `limit` when `None`), from
    /// the answering node's event log (`api::events`).
    Events { since: Option<String>, limit: u32 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClientReply {
    Nodes(Vec<NodeView>),
    Written(Outcome),
    Done(String),
    Plan(Plan),
    Config {
        version: u64,
        configuration: Configuration,
    },
    Status(StatusView),
    History(Vec<HistoryEntry>),
    /// Nothing was done (`unknown == false`), or the outcome is unknown.
    Failed {
        unknown: bool,
        message: String,
    },
    // Variants are only appended: the index is part of the encoding, and
    // old and new builds decode each other's replies.
    /// The caller's certificate as the node sees it.
    Identity(CallerView),
    Logs(LogsPage),
    /// The whole replicated state at a log position (`ctl snapshot save`).
    Snapshot {
        index: u64,
        term: u64,
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
    },
    Events(super::EventsPage),
}

impl ClientReply {
    pub fn refused(message: impl Into<String>) -> ClientReply {
        ClientReply::Failed {
            unknown: false,
            message: message.into(),
        }
    }
    pub fn unknown(message: impl Into<String>) -> ClientReply {
        ClientReply::Failed {
            unknown: true,
            message: message.into(),
        }
    }
}

/// `ctl whoami`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallerView {
    pub name: String,
    /// `node`, or the user's role: `admin`, `operator`, `viewer`.
    pub role: String,
    pub fingerprint: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

/// One member as `ctl nodes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub address: String,
    /// `voter` or `learner` in the committed membership.
    pub membership: String,
    /// Whether the node answered a status probe just now.
    pub reachable: bool,
    /// `leader`, `follower`, `learner`, `candidate`, or `unknown` when unreachable.
    pub role: String,
    pub term: Option<u64>,
    /// The leader's name as this member knows it.
    pub leader: Option<String>,
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// Why the node cannot run containers right now, when it cannot.
    pub degraded: Option<String>,
    /// `up`, or `down` once the leader declared it so.
    pub liveness: String,
    pub drained: bool,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The certificate the node reported running with: its fingerprint and
    /// the end of its validity (seconds since the Unix epoch).
    pub certificate: Option<crate::state::CertificateRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    /// This node's own view of itself.
    Status,
    /// Read index for a linearizable read on a follower: the leader confirms
    /// its leadership with a quorum and returns its commit point.
    ReadIndex,
    /// The calling node (named by its certificate) asks to be added.
    Join { address: String },
    /// What this node's agent observes of its containers.
    Observed,
    /// A node's heartbeat to the leader (not through the Raft log).
    Heartbeat,
    /// Where this node's volume endpoint listens.
    VolumeAddress,
    /// A page of an app's output from this node's own engine (never passed on).
    Logs(LogsRequest),
    /// How this node routes apps' external ports now.
    Routing,
    /// This node's own observed events after the id `since` (its
    /// numbering), for a member's event log (`api::event_gather`).
    ObservedEvents { since: Option<String> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerReply {
    Status(NodeStatus),
    ReadIndex(u64),
    Joined(String),
    Observed(crate::agent::Observed),
    /// From the leader: how long ago it last heard from a quorum, if it is
    /// the leader and did so recently enough to renew a lease.
    HeartbeatAck {
        quorum_age_ms: Option<u64>,
        /// The leader's applied index when it answered (all committed): the
        /// node's lease counts only once its own state has caught up to it.
        leader_applied: u64,
    },
    VolumeAddress(Option<String>),
    Logs(LogsPage),
    Routing(crate::routing::RoutingReport),
    ObservedEvents(super::EventsPage),
}

/// A node's report on itself, from its Raft metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub role: String,
    pub term: u64,
    pub leader: Option<String>,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// Why the node cannot run containers right now (engine unreachable).
    pub degraded: Option<String>,
}

/// `ctl status`: desired state (read linearizably) and what the nodes observe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub config_version: u64,
    pub apps: Vec<AppStatus>,
    /// Every external port and which members route it where the app is
    /// served (last: a ctl that predates it ignores the trailing bytes).
    #[serde(default)]
    pub routing: Vec<super::RouteView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    pub image: String,
    /// Where the cluster wants it; `None` until it is placed.
    pub desired_node: Option<String>,
    /// Containers observed for it, on any node.
    pub instances: Vec<InstanceStatus>,
    /// Why it is not running, when it is not.
    pub waiting: Option<String>,
    /// A volume move in flight.
    #[serde(rename = "move")]
    pub moving: Option<MoveStatus>,
    /// The last finished move of its volume, as its source reported it.
    pub last_move: Option<MoveReport>,
    /// Its volume: owner, epoch, disk used.
    pub volume: Option<VolumeView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeView {
    pub owner: String,
    pub epoch: u64,
    /// As the owner last measured it (allocated blocks).
    pub used_bytes: Option<u64>,
    pub maximum_size: Option<u64>,
    /// Set when the volume uses more than its `maximum_size`, which this
    /// file system cannot enforce (see `agent::usage`), or when fewer
    /// copies are kept than `volume.replicas` asks.
    pub warning: Option<String>,
    /// Copies besides the owner's (issue 15), by node.
    #[serde(default)]
    pub replicas: Vec<ReplicaView>,
    /// Former owners whose copies a failover left aside (`node (epoch N)`),
    /// until `ctl volume forget-diverged`.
    #[serde(default)]
    pub diverged: Vec<String>,
}

/// One replica of a volume, as `ctl status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    pub node: String,
    /// `seeding` (no complete point yet), `in-sync` (a point within
    /// `max_lag`), `lagging` (older, or of unknown age and behind), `down`.
    pub state: String,
    /// Its newest committed point: the owner's epoch and seq.
    pub epoch: Option<u64>,
    pub seq: Option<u64>,
    /// How old that point is, on the answering node's monotonic clock.
    pub age_ms: Option<u64>,
    /// What the owner says it lacks (the point on its way, or that failed).
    pub bytes_behind: Option<u64>,
    /// A point on its way: bytes sent of the round's total.
    pub sending: Option<(u64, u64)>,
    pub last_error: Option<String>,
}

/// `ctl logs`: which lines of an app's output to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub app: String,
    /// Only lines stamped after this (the last line already shown), in
    /// nanoseconds since the Unix epoch on the engine's clock.
    pub after_ns: Option<i64>,
    /// Only the last this many lines.
    pub tail: Option<u32>,
}

/// One bounded page of an app's output (see `runtime::logs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsPage {
    /// The node whose engine answered; `None` when no node runs the app.
    pub node: Option<String>,
    pub lines: Vec<crate::runtime::LogLine>,
    /// The page filled up: ask again from its last line for more.
    pub more: bool,
    /// Why there are no lines to be had right now (not placed, no
    /// container yet), for the operator.
    pub note: Option<String>,
}
