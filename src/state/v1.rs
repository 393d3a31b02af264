//! The replicated formats of the first release, frozen: commands (command
//! format 1) and the state snapshot (state format 1) were postcard, which has
//! no field names, so decoding them needs their exact layout. These types are
//! that layout and nothing else; decoded values are carried over to the
//! current types by name (see `codec.rs`), so fields added since take their
//! defaults. Never edit these types: data written by the first release would
//! no longer decode.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

#[derive(Serialize, Deserialize)]
pub enum Command {
    SetLabels {
        node: String,
        changes: BTreeMap<String, Option<String>>,
    },
    Deploy {
        configuration: Configuration,
        if_version: Option<u64>,
    },
    RegisterNode {
        node: String,
        publish_ip: String,
        capacity: Capacity,
        command_kinds: u16,
    },
    Place {
        changes: Vec<(String, Option<String>)>,
    },
    SetNodeDown {
        node: String,
        down: bool,
    },
    SetDrained {
        node: String,
        drained: bool,
    },
    RecoverVolume {
        app: String,
        node: String,
    },
    MoveApp {
        app: String,
        node: String,
    },
    MoveStep {
        app: String,
        epoch: u64,
        step: MoveStep,
    },
    Released {
        app: String,
        node: String,
    },
}

#[derive(Serialize, Deserialize)]
pub enum MoveStep {
    Freeze,
    Handoff,
    Retry { reason: String },
}

#[derive(Serialize, Deserialize)]
pub struct Configuration {
    pub applications: BTreeMap<String, AppSpec>,
    pub deployment: Deployment,
}

#[derive(Serialize, Deserialize)]
pub struct AppSpec {
    pub image: ImageRef,
    pub ports: Vec<PortMapping>,
    pub links: Vec<Link>,
    pub environment: BTreeMap<String, String>,
    pub volume: Option<VolumeSpec>,
    pub mem_limit: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub restart_policy: RestartPolicy,
    pub command: Option<Vec<String>>,
    pub constraints: Vec<Constraint>,
}

#[derive(Serialize, Deserialize)]
pub struct ImageRef {
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct PortMapping {
    pub internal: u16,
    pub external: u16,
}

#[derive(Serialize, Deserialize)]
pub struct Link {
    pub alias: String,
    pub local_port: u16,
    pub remote_port: u16,
    pub app: String,
}

#[derive(Serialize, Deserialize)]
pub struct VolumeSpec {
    pub mountpoint: String,
    pub maximum_size: Option<u64>,
    pub dataset_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub enum RestartPolicy {
    Never,
    Always,
    OnFailure { maximum_retry_count: Option<u32> },
}

#[derive(Serialize, Deserialize)]
pub struct Constraint {
    pub label: String,
    pub op: ConstraintOp,
    pub value: String,
}

#[derive(Serialize, Deserialize)]
pub enum ConstraintOp {
    Equal,
    NotEqual,
}

#[derive(Serialize, Deserialize)]
pub struct Deployment {
    pub pinned: BTreeMap<String, Vec<String>>,
    pub anywhere: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub struct Capacity {
    pub memory_bytes: u64,
    pub cpu_shares: u64,
}

#[derive(Serialize, Deserialize)]
pub struct State {
    pub nodes: BTreeMap<String, NodeRecord>,
    pub requests: RequestWindow,
    pub deployed: Deployed,
    pub history: History,
    pub volumes: BTreeMap<String, VolumeOwner>,
    pub moves: BTreeMap<String, VolumeMove>,
    pub releases: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
pub struct NodeRecord {
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub publish_ip: Option<String>,
    pub capacity: Option<Capacity>,
    pub down: bool,
    pub drained: bool,
    pub command_kinds: Option<u16>,
}

#[derive(Serialize, Deserialize)]
pub struct RequestWindow {
    pub seen: BTreeMap<String, SeenRequest>,
    pub order: VecDeque<String>,
}

#[derive(Serialize, Deserialize)]
pub struct SeenRequest {
    pub fingerprint: [u8; 32],
    pub outcome: Outcome,
}

#[derive(Serialize, Deserialize)]
pub struct Outcome {
    pub index: u64,
    pub result: Result<String, String>,
    pub replayed: bool,
}

#[derive(Serialize, Deserialize)]
pub struct Deployed {
    pub version: u64,
    pub config: Configuration,
    pub placements: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
pub struct History {
    pub entries: VecDeque<HistoryEntry>,
}

#[derive(Serialize, Deserialize)]
pub struct HistoryEntry {
    pub index: u64,
    pub proposed_at_ms: u64,
    pub author: String,
    pub request_id: String,
    pub summary: String,
}

#[derive(Serialize, Deserialize)]
pub struct VolumeOwner {
    pub node: String,
    pub epoch: u64,
    pub adopt: bool,
    pub issued: u64,
}

#[derive(Serialize, Deserialize)]
pub struct VolumeMove {
    pub from: String,
    pub to: String,
    pub epoch: u64,
    pub frozen: bool,
    pub attempt: u32,
    pub started_ms: u64,
    pub last_error: Option<String>,
}
