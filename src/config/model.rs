//! The validated configuration model: what an operator asked for, with every
//! value already checked. These types go into the Raft state machine, so they
//! use ordered maps and canonical (sorted) lists: the same files always give
//! the same bytes, and reordering a list in a file changes nothing.
//!
//! This module knows nothing of YAML or of file positions; the parsers in
//! the sibling modules build these values and only hand them out when the
//! whole configuration is valid. Serde derives stay plain (no tagging,
//! flattening or skipped fields) because the state machine encodes with
//! postcard, which is not self-describing.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Applications by name, and where they are placed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    pub applications: BTreeMap<String, AppSpec>,
    pub deployment: Deployment,
}

/// One application: a container image and how to run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSpec {
    pub image: ImageRef,
    /// Sorted by (external, protocol, internal); (external, protocol) pairs
    /// are distinct here and across applications (every node answers on
    /// every application's external ports).
    pub ports: Vec<PortMapping>,
    /// Sorted; (alias, local_port) pairs are distinct.
    pub links: Vec<Link>,
    pub environment: BTreeMap<String, String>,
    pub volume: Option<VolumeSpec>,
    /// Bytes.
    pub mem_limit: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub restart_policy: RestartPolicy,
    /// Replaces the image's command when given; never empty.
    pub command: Option<Vec<String>>,
    /// Node-label requirements for the scheduler, all of which must hold.
    /// Sorted and distinct.
    pub constraints: Vec<Constraint>,
}

/// A Docker image reference. Without a tag or a digest the tag is `latest`,
/// as Docker and Flocker read it, so `nginx` and `nginx:latest` are equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImageRef {
    /// Repository, with its registry host when one was given.
    pub name: String,
    pub tag: Option<String>,
    /// `algorithm:hex`, e.g. `sha256:…`.
    pub digest: Option<String>,
}

/// A container port published under an external port that is the
/// application's throughout the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    pub internal: u16,
    pub external: u16,
    /// Last and defaulted: configurations stored before UDP ports read as
    /// TCP (format 1 cannot hold it, see `state/codec.rs`).
    #[serde(default)]
    pub protocol: Protocol,
}

/// A published port's transport. The runtime has its own enum: the
/// configuration layer does not depend on it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// The name the files use (`protocol: udp`, `"53:53/udp"`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// `8080` for a TCP port, `53/udp` for a UDP one: how errors name it.
    pub fn port_name(self, port: u16) -> String {
        match self {
            Protocol::Tcp => port.to_string(),
            Protocol::Udp => format!("{port}/udp"),
        }
    }
}

/// Flocker's cross-host link: the linking container reaches `local_port` of
/// `alias` (through `ALIAS_PORT_<local_port>_TCP*` environment variables),
/// which leads to `remote_port`, an external TCP port published by `app`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Link {
    pub alias: String,
    pub local_port: u16,
    pub remote_port: u16,
    /// The application publishing `remote_port` (as TCP), found when the
    /// files were checked (Flocker's own format names only the port).
    pub app: String,
}

/// The application's one volume, which follows it between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// Absolute path inside the container.
    pub mountpoint: String,
    /// Bytes.
    pub maximum_size: Option<u64>,
    /// Flocker's optional dataset UUID, kept so files exported by Flocker
    /// read back unchanged; distinct across applications.
    pub dataset_id: Option<String>,
    /// Write setuid and setgid bits of files when this volume arrives on a
    /// node (`volume.preserve_setuid`). Off by default: a received file
    /// keeps them in its recorded mode (and the root hash) but not on disk.
    #[serde(default)]
    pub preserve_setuid: bool,
    /// Copies of the volume the cluster keeps, the owner's included
    /// (`volume.replicas`); 1 keeps only the owner's, as before replicas.
    #[serde(default = "VolumeSpec::one_copy")]
    pub replicas: u32,
    /// The recovery-point objective (`volume.max_lag`), in milliseconds: a
    /// replica whose last point is older is flagged, and failover promises
    /// to lose at most about this much of acknowledged writes.
    #[serde(default = "VolumeSpec::default_max_lag_ms")]
    pub max_lag_ms: u64,
}

impl VolumeSpec {
    pub const DEFAULT_MAX_LAG_MS: u64 = 10_000;
    /// More copies than this cost more than they protect on a few hundred hosts.
    pub const MAX_REPLICAS: u32 = 5;
    pub const MIN_MAX_LAG_MS: u64 = 1_000;
    pub const MAX_MAX_LAG_MS: u64 = 3_600_000;

    fn one_copy() -> u32 {
        1
    }

    fn default_max_lag_ms() -> u64 {
        Self::DEFAULT_MAX_LAG_MS
    }

    /// A volume at `mountpoint` with every other setting at its default.
    pub fn at(mountpoint: String) -> VolumeSpec {
        VolumeSpec {
            mountpoint,
            maximum_size: None,
            dataset_id: None,
            preserve_setuid: false,
            replicas: 1,
            max_lag_ms: Self::DEFAULT_MAX_LAG_MS,
        }
    }

    /// Whether copies beyond the owner's are kept.
    pub fn is_replicated(&self) -> bool {
        self.replicas > 1
    }
}

/// What Docker does when the container exits. The agent, not Docker, acts on
/// it, so a container the cluster fenced is never restarted behind its back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Flocker's default.
    #[default]
    Never,
    Always,
    OnFailure {
        /// `None`: retry without limit.
        maximum_retry_count: Option<u32>,
    },
}

/// `label=value` or `label!=value` on a node's labels. A node without the
/// label meets a `!=` constraint and fails an `=` one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Constraint {
    pub label: String,
    pub op: ConstraintOp,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConstraintOp {
    Equal,
    NotEqual,
}

/// Where applications run. Every application named here is defined in
/// `Configuration::applications` and appears exactly once; applications that
/// are defined but not named here are not run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// Node key (a node name, or an address or host name as Flocker used)
    /// → the applications pinned there, sorted.
    pub pinned: BTreeMap<String, Vec<String>>,
    /// Applications the cluster places itself, and re-places when their node
    /// dies; sorted.
    pub anywhere: Vec<String>,
}

/// How the application file was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppFormat {
    /// `version: 1` and `applications:`.
    Flocker,
    /// Service names at the top level.
    Fig,
    /// A compose file with `services:`.
    Compose,
}

impl AppFormat {
    pub fn describe(self) -> &'static str {
        match self {
            AppFormat::Flocker => "Flocker form",
            AppFormat::Fig => "fig form",
            AppFormat::Compose => "compose form",
        }
    }
}

impl Configuration {
    /// `3 applications (2 pinned on 2 nodes, 1 anywhere)`.
    pub fn summary(&self) -> String {
        let pinned: usize = self.deployment.pinned.values().map(Vec::len).sum();
        let nodes = self
            .deployment
            .pinned
            .values()
            .filter(|apps| !apps.is_empty())
            .count();
        let anywhere = self.deployment.anywhere.len();
        let idle = self.applications.len().saturating_sub(pinned + anywhere);
        let mut text = format!(
            "{} application{} ({pinned} pinned on {nodes} node{}, {anywhere} anywhere",
            self.applications.len(),
            plural(self.applications.len()),
            plural(nodes),
        );
        if idle > 0 {
            text.push_str(&format!(", {idle} not deployed"));
        }
        text.push(')');
        text
    }
}

impl AppSpec {
    /// An application running `image` with Flocker's defaults for the rest.
    pub fn new(image: ImageRef) -> AppSpec {
        AppSpec {
            image,
            ports: Vec::new(),
            links: Vec::new(),
            environment: BTreeMap::new(),
            volume: None,
            mem_limit: None,
            cpu_shares: None,
            restart_policy: RestartPolicy::Never,
            command: None,
            constraints: Vec::new(),
        }
    }
}

impl Deployment {
    /// The node key an application is pinned to, if it is pinned.
    pub fn node_key_of(&self, app: &str) -> Option<&str> {
        self.pinned
            .iter()
            .find(|(_, apps)| apps.iter().any(|a| a == app))
            .map(|(key, _)| key.as_str())
    }

    pub fn is_anywhere(&self, app: &str) -> bool {
        // Sorted (see the field): this runs per change in apply, at 50,000 apps.
        self.anywhere
            .binary_search_by(|a| a.as_str().cmp(app))
            .is_ok()
    }
}

impl RestartPolicy {
    /// The name used in Flocker's `restart_policy`.
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure { .. } => "on-failure",
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            ConstraintOp::Equal => "=",
            ConstraintOp::NotEqual => "!=",
        };
        write!(f, "{}{op}{}", self.label, self.value)
    }
}

impl Constraint {
    /// Whether a node with these labels meets the constraint.
    pub fn holds(&self, labels: &BTreeMap<String, String>) -> bool {
        let has = labels.get(&self.label) == Some(&self.value);
        match self.op {
            ConstraintOp::Equal => has,
            ConstraintOp::NotEqual => !has,
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
