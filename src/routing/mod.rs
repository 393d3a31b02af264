//! The routing mesh: every node answers on every application's external
//! ports and forwards to the node the app is served from, as Flocker 0.1
//! did, so clients keep one list of addresses (every node's) and nothing
//! changes for them when an app moves.
//!
//! [`Router`] keeps this node's kernel rules equal to [`table::route_table`]
//! of the applied state: it wakes on applied changes, on lease changes and
//! at the lease's expiry, and resyncs every [`RESYNC`] (rules changed from
//! outside are put back). The table is a pure function; `iptables` turns it
//! into rules. Forwarding is kernel NAT, not a proxy in this process: no
//! copy through userspace (see README's routing benchmark) and connections
//! survive a restart of this process.
//!
//! Safety (invariant 3 for routing): a node whose lease ran out forwards
//! nothing, since it may hold an old state; and a node never forwards what
//! another node forwarded, so a stale node's forward ends at a node that
//! refuses it rather than at a stale instance.

pub mod iptables;
pub mod table;

use crate::agent::lease::Lease;
use crate::raft::StateMachineStore;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use table::{RouteTable, Target, Vantage};
use tokio::time::Instant;

/// How often the rules are rewritten even when nothing changed.
pub const RESYNC: Duration = Duration::from_secs(30);
/// First and longest wait before retrying a failed install.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// `flocker node --routing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RoutingMode {
    /// Kernel forwarding with iptables (needs root or CAP_NET_ADMIN).
    #[default]
    Iptables,
    /// No routing: an app answers only on the node that runs it, and links
    /// point at that node (nodes sharing one engine in tests do this).
    Off,
}

/// One port as this node routes it, for `ctl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRoute {
    pub app: String,
    pub port: u16,
    pub protocol: crate::runtime::Protocol,
    /// `None`: refused here. Otherwise the node connections go to (this
    /// node's own name when it serves the app).
    pub to: Option<String>,
    /// Why the port is refused, when it is.
    pub refused: Option<String>,
}

/// What this node's routing does now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingReport {
    /// `iptables` or `off`.
    pub mode: String,
    /// The applied index of the state the installed rules follow.
    pub applied_index: u64,
    /// Whether this node forwards (its lease is valid).
    pub forwarding: bool,
    pub ports: Vec<PortRoute>,
    /// The last install's error, while the rules lag behind the state.
    pub error: Option<String>,
}

impl RoutingReport {
    fn from_table(table: &RouteTable, me: &str, index: u64, lease_valid: bool) -> RoutingReport {
        RoutingReport {
            mode: "iptables".into(),
            applied_index: index,
            forwarding: lease_valid,
            ports: table
                .routes
                .values()
                .map(|r| PortRoute {
                    app: r.app.clone(),
                    port: r.port,
                    protocol: r.protocol,
                    to: match &r.target {
                        Target::Local => Some(me.to_string()),
                        Target::Forward { node, .. } => Some(node.clone()),
                        Target::Unrouted(_) => None,
                    },
                    refused: match &r.target {
                        Target::Unrouted(why) => Some(why.clone()),
                        _ => None,
                    },
                })
                .collect(),
            error: None,
        }
    }
}

/// Shared view of the router's report.
pub type SharedReport = Arc<Mutex<RoutingReport>>;

/// Keeps this node's routing rules equal to the applied state.
pub struct Router {
    node: String,
    publish_ip: IpAddr,
    chains: iptables::Chains,
    kernel: iptables::Iptables,
    sm: StateMachineStore,
    lease: Arc<Lease>,
    report: SharedReport,
}

impl Router {
    /// Checks that iptables can be used; fails with what to do otherwise.
    pub fn new(
        cluster_id: &str,
        node: &str,
        publish_ip: IpAddr,
        sm: StateMachineStore,
        lease: Arc<Lease>,
    ) -> Result<Router> {
        let kernel = iptables::Iptables::for_address(publish_ip);
        kernel.check()?;
        warn_without_forwarding(publish_ip);
        Ok(Router {
            node: node.to_string(),
            publish_ip,
            chains: iptables::Chains::for_node(cluster_id, node),
            kernel,
            sm,
            lease,
            report: Arc::new(Mutex::new(RoutingReport {
                mode: "iptables".into(),
                ..RoutingReport::default()
            })),
        })
    }

    pub fn report(&self) -> SharedReport {
        self.report.clone()
    }

    /// The handle that removes the rules when the node stops cleanly.
    pub fn remover(&self) -> Remover {
        Remover {
            chains: self.chains.clone(),
            kernel: self.kernel.clone(),
        }
    }

    fn table(&self) -> (RouteTable, u64, bool) {
        let lease_valid = self.lease.is_valid();
        let applied = self.sm.read();
        let me = Vantage {
            node: &self.node,
            publish_ip: self.publish_ip,
            lease_valid,
        };
        (
            table::route_table(&applied.state, &me),
            applied.index(),
            lease_valid,
        )
    }

    /// Runs until the state machine goes away.
    pub async fn run(self) {
        let mut applied = self.sm.subscribe();
        let mut lease = self.lease.subscribe();
        let mut installed: Option<RouteTable> = None;
        let mut resync_at = Instant::now();
        let mut retry = RETRY_MIN;
        loop {
            let (table, index, lease_valid) = self.table();
            let due = Instant::now() >= resync_at;
            if installed.as_ref() != Some(&table) || due {
                match self.install(&table).await {
                    Ok(()) => {
                        self.log_changes(installed.as_ref(), &table, index);
                        let mut report =
                            RoutingReport::from_table(&table, &self.node, index, lease_valid);
                        report.error = None;
                        *self.report.lock().expect("routing report lock") = report;
                        installed = Some(table);
                        resync_at = Instant::now() + RESYNC;
                        retry = RETRY_MIN;
                    }
                    Err(e) => {
                        tracing::error!(
                            "routing rules not installed (retrying in {retry:?}): {e:#}"
                        );
                        self.report.lock().expect("routing report lock").error =
                            Some(format!("{e:#}"));
                        installed = None;
                        resync_at = Instant::now() + retry;
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                }
            } else {
                self.report
                    .lock()
                    .expect("routing report lock")
                    .applied_index = index;
            }
            let mut wake = resync_at;
            if let Some(expiry) = self.lease.expires_at().filter(|_| lease_valid) {
                // Forwarding must stop when the lease runs out, not at the
                // next heartbeat that notices it.
                wake = wake.min(expiry);
            }
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return },
                changed = lease.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn install(&self, table: &RouteTable) -> Result<()> {
        let kernel = self.kernel.clone();
        let chains = self.chains.clone();
        let table = table.clone();
        let me = self.publish_ip;
        tokio::task::spawn_blocking(move || kernel.install(&table, &chains, me)).await?
    }

    fn log_changes(&self, before: Option<&RouteTable>, after: &RouteTable, index: u64) {
        for (key, route) in &after.routes {
            let old = before.and_then(|b| b.routes.get(key));
            if old.map(|o| &o.target) != Some(&route.target) {
                let to = match &route.target {
                    Target::Local => "delivered here".to_string(),
                    Target::Forward { node, ip } => format!("forwarded to {node} ({ip})"),
                    Target::Unrouted(why) => format!("refused: {why}"),
                };
                tracing::info!(app = %route.app, port = route.port, applied_index = index, "routing: {}:{}/{} now {to}", route.app, route.port, route.protocol);
            }
        }
    }
}

/// Removes this node's rules on a clean stop: a stopped node cannot follow
/// the state, so it must not keep forwarding (containers it runs keep
/// answering through the engine's own published ports).
#[derive(Clone)]
pub struct Remover {
    chains: iptables::Chains,
    kernel: iptables::Iptables,
}

impl Remover {
    pub fn remove(&self) {
        match self.kernel.remove(&self.chains) {
            Ok(()) => tracing::info!("routing rules removed"),
            Err(e) => tracing::error!("routing rules not removed: {e:#}"),
        }
    }
}

/// With `--routing off`: removes what an earlier run with routing on left
/// (nothing when iptables is missing or there is nothing to remove).
pub fn remove_leftovers(cluster_id: &str, node: &str, publish_ip: IpAddr) {
    let kernel = iptables::Iptables::for_address(publish_ip);
    if kernel.check().is_err() {
        return;
    }
    let chains = iptables::Chains::for_node(cluster_id, node);
    match kernel.listed(&chains) {
        Ok(lines) if lines.is_empty() => {}
        Ok(_) => Remover { chains, kernel }.remove(),
        Err(e) => tracing::debug!("no routing leftovers looked for: {e:#}"),
    }
}

/// Forwarding between interfaces needs the kernel's IP forwarding (Docker
/// turns it on); say so at start rather than let forwarded ports hang.
fn warn_without_forwarding(ip: IpAddr) {
    let path = if ip.is_ipv6() {
        "/proc/sys/net/ipv6/conf/all/forwarding"
    } else {
        "/proc/sys/net/ipv4/ip_forward"
    };
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "0") {
        tracing::warn!("{path} is 0: connections this node forwards to other nodes will not pass (sysctl -w net.ipv4.ip_forward=1; Docker normally sets it)");
    }
}
