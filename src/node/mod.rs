//! `flocker node`: one cluster member. Wires the QUIC endpoint, the RocksDB
//! stores, openraft and the API together; forms the initial cluster from
//! `--peers` or joins an existing one with `--join`; runs the leader's
//! membership upkeep; shuts down cleanly on SIGINT/SIGTERM.

pub mod data_dir;
mod deny_watch;
pub mod dispatch;
pub mod metered;
pub mod settings;

use crate::agent::{Agent, NodeContext};
use crate::api::Liveness;
use crate::api::{Api, PeerReply, PeerRequest};
use crate::ca::{validate_name, CertsDir, Role};
use crate::net::frame::MAX_CLIENT_FRAME;
use crate::net::tls::TlsMaterial;
use crate::net::{DenyList, Net, Service};
use crate::raft::{node_id_for, open_stores, NodeInfo, Raft, RaftNetworkFactoryImpl};
use crate::routing::{Router, RoutingMode};
use crate::runtime::{ContainerRuntime, DockerRuntime, DockerTimeouts, SimRuntime};
use crate::scheduler::{self, Lease};
use crate::state::{Capacity, Command};
use anyhow::{bail, Context, Result};
use dispatch::Dispatcher;
use openraft::error::{InitializeError, RaftError};
pub use settings::NodeSettings;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often the leader looks for learners to promote, and a joining node retries.
const MEMBERSHIP_TICK: Duration = Duration::from_millis(500);

/// A parsed `--peers` list: name → address, in the order given.
pub fn parse_peers(spec: &str) -> Result<Vec<(String, SocketAddr)>> {
    let mut peers = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((name, addr)) = item.split_once('=') else {
            bail!("--peers: '{item}' is not NAME=IP:PORT");
        };
        validate_name(name).with_context(|| format!("--peers: '{item}'"))?;
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("--peers: '{item}': address is not IP:PORT"))?;
        if peers.iter().any(|(n, _)| n == name) {
            bail!("--peers: '{name}' is listed twice");
        }
        peers.push((name.to_string(), addr));
    }
    Ok(peers)
}

pub struct RunningNode {
    pub api: Arc<Api>,
    pub raft: Raft,
    /// Certificates this node refuses at every handshake, on both of its
    /// endpoints; replace its contents to deny more or fewer.
    pub deny: DenyList,
    /// Becomes `Some(reason)` when the node cannot go on (its certificate
    /// was refused by the cluster it tried to join).
    pub fatal: tokio::sync::watch::Receiver<Option<String>>,
    net: Arc<Net>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Volume streams and movers (on their own runtime); `None` when this
    /// node's volume store is unusable.
    volumes: Option<crate::moves::endpoint::VolumeEndpoint>,
    drain: Arc<dispatch::Drain>,
    /// Removes this node's routing rules when it stops cleanly.
    routing: Option<crate::routing::Remover>,
}

/// How long a stopping node lets client requests in flight answer.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);

impl RunningNode {
    /// Stops cleanly: new client requests are refused, those in flight may
    /// answer (up to [`DRAIN_LIMIT`]), then Raft stops and the database is
    /// quiesced. Containers keep running.
    pub async fn shutdown(self) {
        let left = self.drain.close_and_wait(DRAIN_LIMIT).await;
        if left > 0 {
            tracing::warn!(left, "stopping with client requests still in flight");
        }
        for task in &self.tasks {
            task.abort();
        }
        if let Some(routing) = self.routing {
            tokio::task::spawn_blocking(move || routing.remove())
                .await
                .ok();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        self.api.sm.quiesce();
        self.net.close();
        drop(self.volumes);
    }
}

/// Starts a node and returns once it is serving.
pub async fn start(settings: NodeSettings) -> Result<RunningNode> {
    settings.validate()?;
    let certs = CertsDir::new(&settings.certs);
    // One list for both endpoints, so a refusal holds for Raft, client,
    // peer and volume streams alike.
    let deny = DenyList::new();
    let tls = TlsMaterial::load(&certs, Role::Node, &settings.name)
        .with_context(|| format!("loading the certificate of node {}", settings.name))?
        .with_deny_list(deny.clone());
    let advertise = settings.advertise();
    let net = Net::server(settings.listen, &tls)?;
    data_dir::prepare(&settings.data_dir)?;
    data_dir::warn_if_below_reserve(&settings.data_dir, settings.reserve);
    let volume_backend = select_volume_backend(&settings)?;
    let (log_store, sm) = open_stores(&settings.data_dir.join("raft"))?;
    let raft_config = Arc::new(
        settings
            .raft_config()
            .validate()
            .context("invalid Raft settings")?,
    );
    let id = node_id_for(&settings.name);
    let raft = Raft::new(
        id,
        raft_config,
        RaftNetworkFactoryImpl::new(net.clone()),
        log_store,
        sm.clone(),
    )
    .await
    .context("starting Raft")?;
    let fence_dir = settings.data_dir.join("fence");
    if let Err(e) = crate::agent::fence::prepare(&fence_dir) {
        // Pinned apps still run; fenceable ones will fail to start and say why.
        tracing::error!("the container fence is unavailable: {e:#}");
    }
    let lease = Arc::new(Lease::with_fence(fence_dir.clone()));
    let liveness = Arc::new(Liveness::default());
    let node_ctx = NodeContext {
        cluster_id: cluster_id(&certs)?,
        node: settings.name.clone(),
        publish_ip: settings.publish_ip(),
        volumes_dir: settings.data_dir.join("volumes"),
        fence_dir,
        routing: settings.routing == RoutingMode::Iptables,
        volume_backend: volume_backend.clone(),
    };
    let router = match settings.routing {
        RoutingMode::Iptables => Some(
            Router::new(
                &node_ctx.cluster_id,
                &settings.name,
                settings.publish_ip(),
                sm.clone(),
                lease.clone(),
            )
            .context("starting the routing mesh")?,
        ),
        RoutingMode::Off => {
            crate::routing::remove_leftovers(
                &node_ctx.cluster_id,
                &settings.name,
                settings.publish_ip(),
            );
            None
        }
    };
    let labels = node_ctx.ownership_labels();
    let node_ctx_cluster_id = node_ctx.cluster_id.clone();
    let runtime = engine(&settings)?;
    // Operators find (and clean up after) a cluster's containers by this label.
    tracing::info!(
        "engine {}; this cluster's containers carry the label flocker.cluster={}",
        runtime.endpoint(),
        node_ctx.cluster_id
    );
    let agent = Agent::new(node_ctx, runtime.clone(), sm.clone(), lease.clone());
    let api = Arc::new(Api::new(
        settings.name.clone(),
        raft.clone(),
        sm.clone(),
        net.clone(),
        settings.max_voters,
        agent.observed(),
        liveness.clone(),
    ));
    if let Some(router) = &router {
        let _ = api.routing.set(router.report());
    }
    if let Some(mine) = own_certificate(&tls) {
        let _ = api.certificate.set(mine);
    }
    let _ = api.log_source.set(crate::api::LogSource {
        runtime: runtime.clone(),
        cluster_id: node_ctx_cluster_id.clone(),
    });
    let drain = Arc::new(dispatch::Drain::default());
    let dispatcher = Dispatcher::new(raft.clone(), api.clone(), drain.clone());
    let mut tasks = vec![net.serve(Arc::new(dispatcher))];
    if let Some(addr) = settings.http_listen {
        tasks.push(crate::http::start(addr, &tls, api.clone()).await?);
    }
    tasks.push(tokio::spawn(metered::count_elections(raft.clone())));
    if let Some(listen) = settings.metrics_listen {
        let refresh = metered::refresh(raft.clone(), sm.clone());
        let server = crate::metrics::server::start(listen, refresh).await?;
        tracing::info!(metrics = %server.local, "metrics endpoint serving /metrics");
        tasks.push(server.task);
    }
    let volumes = match crate::volume::VolumeStore::open(&settings.data_dir) {
        Ok(store) => {
            let store = match &volume_backend {
                Some(backend) => store.with_backend(backend.clone()),
                None => store,
            };
            let listen = settings
                .volume_listen
                .unwrap_or(SocketAddr::new(settings.listen.ip(), 0));
            tasks.push(tokio::spawn(crate::agent::usage::usage_loop(
                settings.name.clone(),
                store.clone(),
                sm.clone(),
                agent.observed(),
            )));
            let endpoint = start_movers(
                &settings, &tls, listen, advertise, store, &api, &sm, runtime, labels, &agent,
            )?;
            Some(endpoint)
        }
        Err(e) => {
            tracing::error!("volume store unusable, volumes cannot move here: {e}");
            None
        }
    };
    tracing::info!(name = %settings.name, id, listen = %settings.listen, %advertise, "node serving");

    if !settings.peers.is_empty() {
        bootstrap(&raft, &settings.peers).await?;
    }
    let (fatal_tx, fatal) = tokio::sync::watch::channel(None);
    if let Some(join) = settings.join {
        tasks.push(tokio::spawn(join_loop(
            raft.clone(),
            net.clone(),
            join,
            advertise,
            fatal_tx,
        )));
    }
    tasks.push(tokio::spawn(deny_watch::follow(
        sm.clone(),
        deny.clone(),
        [Some(net.clone()), volumes.as_ref().map(|v| v.net.clone())]
            .into_iter()
            .flatten()
            .collect(),
    )));
    tasks.push(tokio::spawn(agent.run()));
    let routing = router.map(|router| {
        let remover = router.remover();
        tasks.push(tokio::spawn(router.run()));
        remover
    });
    tasks.push(tokio::spawn(scheduler::heartbeat_loop(api.clone(), lease)));
    tasks.push(tokio::spawn(scheduler::leader_loop(api.clone(), liveness)));
    tasks.push(tokio::spawn(register(
        api.clone(),
        settings.publish_ip().to_string(),
        settings.labels.clone(),
    )));
    let upkeep = api.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(MEMBERSHIP_TICK);
        loop {
            tick.tick().await;
            upkeep.reconcile_membership().await;
            upkeep.trust_upkeep().await;
        }
    }));
    Ok(RunningNode {
        api,
        raft,
        deny,
        fatal,
        drain,
        net,
        tasks,
        volumes,
        routing,
    })
}

/// The fingerprint and expiry of the certificate this node serves with.
fn own_certificate(tls: &TlsMaterial) -> Option<crate::state::CertificateRecord> {
    let (chain, _) = tls.own.as_ref()?;
    let identity = crate::ca::Identity::from_der(chain.first()?).ok()?;
    Some(crate::state::CertificateRecord {
        fingerprint: identity.fingerprint,
        not_after: identity.not_after,
    })
}

/// The volume backend (`--volume-backend`), said at start: an explicit
/// choice the file system cannot do stops the node; without a usable
/// volume store there is none (volumes are then unusable here anyway).
fn select_volume_backend(settings: &NodeSettings) -> Result<Option<crate::volume::Backend>> {
    let Ok(store) = crate::volume::VolumeStore::open(&settings.data_dir) else {
        return Ok(None);
    };
    let backend = crate::volume::Backend::select(store.root(), settings.volume_backend)
        .map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!("{}", backend.describe());
    Ok(Some(backend))
}

/// The volume endpoint, its receiver and this node's move driver.
#[allow(clippy::too_many_arguments)]
fn start_movers(
    settings: &NodeSettings,
    tls: &TlsMaterial,
    listen: SocketAddr,
    advertise: SocketAddr,
    store: crate::volume::VolumeStore,
    api: &Arc<Api>,
    sm: &crate::raft::StateMachineStore,
    runtime: Arc<dyn ContainerRuntime>,
    labels: crate::runtime::Labels,
    agent: &Agent,
) -> Result<crate::moves::endpoint::VolumeEndpoint> {
    use crate::moves::{driver, endpoint::VolumeEndpoint, receiver::Receiver, MoveContext};
    // The receiver needs the context and the context the endpoint's `Net`:
    // the endpoint starts with a handler that waits for the context.
    let slot: Arc<std::sync::OnceLock<Arc<Receiver>>> = Arc::default();
    let endpoint = VolumeEndpoint::start(listen, tls, Arc::new(LateReceiver(slot.clone())))?;
    let backend = crate::volume::Backend::select(store.root(), settings.volume_backend)
        .map_err(|e| anyhow::anyhow!(e))?;
    let slots = crate::volume::ReplicaSlots::open(&settings.data_dir)?.with_backend(&backend);
    let ctx = Arc::new(MoveContext {
        node: settings.name.clone(),
        api: api.clone(),
        sm: sm.clone(),
        store,
        runtime,
        labels,
        observed: agent.observed(),
        volume_net: endpoint.net.clone(),
        rate_limit: settings.volume_rate,
        reserve: settings.reserve,
        slots,
        backend,
    });
    let _ = slot.set(Receiver::new(ctx.clone()));
    let bound = endpoint.local_addr()?;
    let advertised = SocketAddr::new(advertise.ip(), bound.port());
    let _ = api.volume_addr.set(advertised);
    endpoint
        .handle()
        .spawn(crate::moves::releases::run(ctx.clone()));
    let points = crate::volume::VolumeStore::open_at(settings.data_dir.join("points"))?;
    let replicator = crate::replication::Replicator::new(ctx.clone(), points, agent.lease());
    endpoint.handle().spawn(replicator.run());
    endpoint
        .handle()
        .spawn(crate::replication::upkeep::run(ctx.clone()));
    endpoint.handle().spawn(driver::run(ctx));
    tracing::info!(volume = %advertised, "volume endpoint serving");
    Ok(endpoint)
}

/// Hands volume streams to the receiver once it exists.
struct LateReceiver(Arc<std::sync::OnceLock<Arc<crate::moves::receiver::Receiver>>>);

impl crate::net::StreamHandler for LateReceiver {
    fn handle(
        self: Arc<Self>,
        peer: crate::ca::Identity,
        service: crate::net::Service,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> futures::future::BoxFuture<'static, ()> {
        match self.0.get() {
            Some(receiver) => receiver.clone().handle(peer, service, send, recv),
            None => Box::pin(async {}),
        }
    }
}

/// Initialises the cluster from `--peers`. Every node does this with the same
/// list, so each writes the same first membership entry; a node that already
/// holds state (a restart, or entries from a faster peer) skips it.
async fn bootstrap(raft: &Raft, peers: &[(String, SocketAddr)]) -> Result<()> {
    if raft.is_initialized().await? {
        tracing::info!("resuming from stored Raft state");
        return Ok(());
    }
    let members: BTreeMap<u64, NodeInfo> = peers
        .iter()
        .map(|(name, addr)| {
            (
                node_id_for(name),
                NodeInfo {
                    name: name.clone(),
                    address: addr.to_string(),
                },
            )
        })
        .collect();
    if members.len() != peers.len() {
        bail!("--peers: two names map to the same node id; rename one");
    }
    match raft.initialize(members).await {
        Ok(()) => {
            tracing::info!("initialised the cluster from --peers");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
            tracing::info!("cluster already initialised by a peer: {e}");
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("initialising the cluster: {e}")),
    }
}

/// Asks the cluster at `join` to add this node until it is a member.
/// Stops (sending the reason to `fatal`) when the cluster refuses this
/// node's certificate: a removed member's or a revoked one never gets in.
async fn join_loop(
    raft: Raft,
    net: Arc<Net>,
    join: SocketAddr,
    advertise: SocketAddr,
    fatal: tokio::sync::watch::Sender<Option<String>>,
) {
    let mut tick = tokio::time::interval(MEMBERSHIP_TICK);
    loop {
        tick.tick().await;
        let me = raft.metrics().borrow().id;
        let member = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&me)
            .is_some();
        if member {
            tracing::info!("member of the cluster; join complete");
            return;
        }
        let request = PeerRequest::Join {
            address: advertise.to_string(),
        };
        match net
            .call::<_, PeerReply>(
                join,
                None,
                Service::Peer,
                &request,
                MAX_CLIENT_FRAME,
                Duration::from_secs(10),
            )
            .await
        {
            Ok(reply) => tracing::info!(%join, "join: {reply:?}"),
            Err(e) if e.to_string().contains("is revoked") => {
                let why = format!("cannot join through {join}: {e}; a removed or revoked member needs a newly issued certificate (`flocker ca renew`)");
                tracing::error!("{why}");
                fatal.send_replace(Some(why));
                return;
            }
            Err(e) => tracing::warn!(%join, "join failed, will retry: {e}"),
        }
        // Wait for the membership entry to reach us before asking again.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The cluster's identity for container labels: a digest of its CA
/// certificate, so two clusters sharing an engine never touch each other's
/// containers.
pub fn cluster_id(certs: &CertsDir) -> Result<String> {
    let ca = crate::net::tls::load_cert(&certs.ca_cert())?;
    Ok(blake3::hash(ca.as_ref()).to_hex()[..16].to_string())
}

fn engine(settings: &NodeSettings) -> Result<Arc<dyn ContainerRuntime>> {
    Ok(match settings.engine.as_deref() {
        Some("sim") => Arc::new(SimRuntime::with_every_image(&settings.name)),
        Some(endpoint) => Arc::new(
            DockerRuntime::new(endpoint, DockerTimeouts::default())
                .map_err(|e| anyhow::anyhow!("--engine: {e}"))?,
        ),
        None => Arc::new(DockerRuntime::local()),
    })
}

/// Records in the cluster state what this node says of itself — its publish
/// IP (links to its apps point there), its capacity, the command kinds its
/// build knows and its `--label`s — retrying until all of it is committed.
async fn register(api: Arc<Api>, publish_ip: String, labels: BTreeMap<String, String>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let capacity = host_capacity();
        let (registered, missing_labels) = {
            let applied = api.sm.read();
            // Not a member yet: wait for the membership to arrive.
            let Some(me) = applied.state.nodes.get(&api.name) else {
                continue;
            };
            let registered = me.publish_ip.as_deref() == Some(publish_ip.as_str())
                && me.capacity == Some(capacity)
                && me.command_kinds == Some(crate::state::COMMAND_KINDS);
            let missing: BTreeMap<String, Option<String>> = labels
                .iter()
                .filter(|(k, v)| me.labels.get(*k) != Some(v))
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect();
            (registered, missing)
        };
        if registered && missing_labels.is_empty() {
            return;
        }
        let mut commands = Vec::new();
        if !registered {
            commands.push(Command::RegisterNode {
                node: api.name.clone(),
                publish_ip: publish_ip.clone(),
                capacity,
                command_kinds: crate::state::COMMAND_KINDS,
            });
        }
        if !missing_labels.is_empty() {
            commands.push(Command::SetLabels {
                node: api.name.clone(),
                changes: missing_labels,
            });
        }
        for command in commands {
            if let Err(e) = api.submit_as_node(command).await {
                tracing::debug!("registering this node: {e}");
            }
        }
    }
}

/// What this host offers `anywhere` apps: its memory (from /proc/meminfo)
/// and 1024 CPU shares per CPU, as Docker counts shares.
fn host_capacity() -> Capacity {
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    Capacity {
        memory_bytes,
        cpu_shares: cpus * 1024,
    }
}
