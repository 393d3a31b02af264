//! A node's settings: the `flocker node` flags after validation, and the
//! timing defaults (each a named constant, with why it has its value).

use anyhow::{bail, Result};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Raft leader heartbeat. Short, so followers notice a dead leader quickly.
pub const RAFT_HEARTBEAT_MS: u64 = 100;
/// Election timeout range, randomised per node. The low end is three
/// heartbeats, so one lost packet does not start an election; the range is
/// wide enough that candidates rarely collide. openraft makes voters refuse a
/// candidate until the maximum has passed since they last heard the leader
/// (its leader lease), so a failover takes between one and two maxima: with
/// 300-600 ms that is 0.6-1.2 s, inside the 1.5 s goal; 500-1000 ms measured
/// 1.5-2.0 s here.
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 300;
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 600;
/// Most voters a cluster keeps; further members stay learners (they still run
/// apps). Five voters survive two failures; more only slow commits down.
pub const DEFAULT_MAX_VOTERS: usize = 5;
/// A snapshot is taken after this many applied entries since the last one,
/// and as many entries are kept behind it for followers that lag a little.
pub const DEFAULT_SNAPSHOT_LOGS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub name: String,
    pub listen: SocketAddr,
    /// Address other members use; defaults to `listen`.
    pub advertise: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub certs: PathBuf,
    /// Run even though `certs` holds the CA's private key (`--allow-ca-key`).
    pub allow_ca_key: bool,
    /// The initial cluster, identical on every founding node.
    pub peers: Vec<(String, SocketAddr)>,
    /// An existing member to ask for admission.
    pub join: Option<SocketAddr>,
    pub max_voters: usize,
    pub snapshot_logs: u64,
    /// Host IP for this node's containers' published ports, and the address
    /// links to its apps point at; defaults to the advertised IP.
    pub publish_ip: Option<std::net::IpAddr>,
    /// The container engine: `unix:///var/run/docker.sock` (the default,
    /// or `DOCKER_HOST`), or `sim` for an in-memory engine.
    pub engine: Option<String>,
    /// Labels this node sets on itself at start (`--label k=v`).
    pub labels: std::collections::BTreeMap<String, String>,
    /// UDP address of the volume endpoint; default: the listen IP, any port.
    pub volume_listen: Option<SocketAddr>,
    /// Most bytes per second this node sends of volumes; 0: no limit.
    pub volume_rate: u64,
    /// Free space kept on the data directory's file system for Raft: a
    /// volume round that would leave less is refused; 0: none.
    pub reserve: u64,
    /// How this node routes apps' external ports (`--routing`).
    pub routing: crate::routing::RoutingMode,
    /// How volume points are taken here (`--volume-backend`).
    pub volume_backend: crate::volume::BackendChoice,
    /// TCP address of the HTTPS JSON API (`--http-listen`); off when `None`.
    pub http_listen: Option<SocketAddr>,
    /// Plain-HTTP address serving Prometheus metrics at /metrics; none: off.
    pub metrics_listen: Option<SocketAddr>,
}

/// Default `--reserve`: room for the Raft log to grow through a few
/// snapshot intervals of large deploys (a snapshot interval is 10,000
/// entries, each at most a 4 MiB frame in the worst case, far less in
/// practice) and for RocksDB compactions, while costing little on any disk
/// that holds volumes.
pub const DEFAULT_RESERVE: u64 = 1 << 30;

/// Default cap on volume data sent per second: above what one QUIC stream
/// carries on this class of machine (~235 MB/s), so it binds on fast paths
/// only; operators sharing a slow link with Raft set it lower.
pub const DEFAULT_VOLUME_RATE: u64 = 512 << 20;

impl NodeSettings {
    pub fn advertise(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }

    pub fn publish_ip(&self) -> std::net::IpAddr {
        self.publish_ip.unwrap_or_else(|| self.advertise().ip())
    }

    pub fn validate(&self) -> Result<()> {
        crate::ca::validate_name(&self.name)?;
        let advertise = self.advertise();
        if advertise.ip().is_unspecified() {
            bail!("--listen {} is a wildcard address: give --advertise IP:PORT that other nodes can reach", self.listen);
        }
        if !self.peers.is_empty() && self.join.is_some() {
            bail!("--peers founds a new cluster and --join enters an existing one: give one, not both");
        }
        if !self.peers.is_empty() {
            match self.peers.iter().find(|(n, _)| *n == self.name) {
                None => bail!("--peers does not list this node ({})", self.name),
                Some((_, addr)) if *addr != advertise => bail!(
                    "--peers gives {} the address {addr}, but it listens at {advertise}",
                    self.name
                ),
                Some(_) => {}
            }
        }
        if self.max_voters == 0 {
            bail!("--max-voters must be at least 1");
        }
        if self.snapshot_logs == 0 {
            bail!("--snapshot-logs must be at least 1");
        }
        self.check_no_ca_key()?;
        for (key, value) in &self.labels {
            crate::state::validate_label(key, Some(value))
                .map_err(|e| anyhow::anyhow!("--label: {e}"))?;
        }
        Ok(())
    }

    /// Refuses a certs directory that holds the CA's private key, unless
    /// `--allow-ca-key`: a node needs only its bundle, and the key on every
    /// node would let whoever breaks into one host issue certificates for
    /// any node or admin of the cluster.
    pub fn check_no_ca_key(&self) -> Result<()> {
        let ca_key = crate::ca::CertsDir::new(&self.certs).ca_key();
        if ca_key.exists() && !self.allow_ca_key {
            bail!(
                "{} is the cluster CA's private key; a node must not hold it: \
                 one compromised host could then mint certificates for the whole cluster. \
                 Start the node from its own bundle (`flocker ca bundle --dir {} --node {} --out DIR`), \
                 or pass --allow-ca-key to run anyway",
                ca_key.display(),
                self.certs.display(),
                self.name
            );
        }
        Ok(())
    }

    pub fn raft_config(&self) -> openraft::Config {
        openraft::Config {
            cluster_name: "flocker".into(),
            heartbeat_interval: RAFT_HEARTBEAT_MS,
            election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
            install_snapshot_timeout: 2_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs),
            max_in_snapshot_log_to_keep: self.snapshot_logs,
            snapshot_max_chunk_size: 1 << 20,
            ..Default::default()
        }
    }
}
