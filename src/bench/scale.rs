//! `flocker bench scale`: the state machine and the scheduler at 1,000 nodes
//! and 50,000 `anywhere` apps (issue #5, item 7), in one process, no Docker.
//!
//! # Why two parts
//!
//! In flocker the node table *is* the Raft membership: `State::nodes` is
//! filled only by `State::apply_membership` when a membership entry commits
//! (invariant 1), and `Command::Place` refuses a node the state does not
//! know. So a 3-node Raft group's state knows exactly 3 nodes, and a cluster
//! of 1,000 nodes is 1,000 Raft members (5 voters, 995 learners). There is no
//! honest way to make a 3-node group place apps on 1,000 nodes without
//! changing the state (a way for non-member nodes to exist in it), which this
//! benchmark does not do. Adding 997 learners at unreachable addresses would
//! make the leader run 997 failing replication streams and measure that
//! noise instead. So:
//!
//! * **Part A — the 1,000-node state, in memory, no network.** A `State`
//!   gets its 1,000 nodes through `apply_membership` (what a committed
//!   membership entry does), then every change is a real command applied
//!   with `State::apply_batch`: `RegisterNode` (capacity), `SetLabels`
//!   (zones), one `Deploy` of the 50,000-app configuration, the `Place`
//!   commands that the real `place()` computes, `SetNodeDown` for the failed
//!   nodes and their re-placement. This measures the scheduler (`place()`)
//!   and the state machine's apply at full size, and the memory of the state
//!   each node holds.
//! * **Part B — a real 3-node Raft group.** Three nodes in this process wired
//!   as `node::start` wires them (QUIC `Net` with certificates from
//!   `ca::init`, RocksDB stores with fsync on, openraft with the production
//!   settings, `Api` and its proposer), but without the agent, the heartbeat
//!   and the leader's scheduler loop: the bench plays the scheduler, so its
//!   `Place` commands are the only ones, and no agent starts 16,667
//!   simulated containers per node (a shape a 1,000-node cluster never has).
//!   The same 50,000-app configuration is deployed, `place()` runs on the
//!   leader's applied state, and its changes are committed as
//!   `Command::Place` commands of `--batch` changes, concurrently, through
//!   `Api::submit_as_node` — the scheduler's own write path. The group's
//!   members carry names as long as part A's nodes, so the entries have the
//!   same size as they would with 1,000 nodes. Each member runs on its own
//!   Tokio runtime, as it would in its own process: otherwise one member's
//!   apply (synchronous work of seconds at this size) would starve the
//!   others' heartbeats and cause elections that separate hosts never see.
//!   The members still share this machine's CPUs, and every member applies
//!   every entry, so on a small machine the group is slower than three hosts.
//!
//! The time to re-place the apps of the failed nodes is then the leader
//! loop's sequence: one `SetNodeDown` commit per failed node (the loop
//! commits them one after the other), `place()` on the 1,000-node state
//! (part A), and one `Place` commit of that many changes through the group
//! (part B; the targets are the group's members, since its state knows no
//! others). The detection grace (`DOWN_GRACE`) comes before all of it.
//!
//! Nomad's C2M figure (about 1,500 containers placed per second) is a
//! published number from a different system and machine, not measured here.

use super::stats::ms;
use crate::api::Api;
use crate::api::Liveness;
use crate::ca::{self, CertsDir, Role};
use crate::config::{AppSpec, Configuration, Constraint, ConstraintOp, Deployment, ImageRef};
use crate::net::tls::TlsMaterial;
use crate::net::Net;
use crate::node::dispatch::Dispatcher;
use crate::node::settings::{DEFAULT_MAX_VOTERS, DEFAULT_SNAPSHOT_LOGS};
use crate::node::NodeSettings;
use crate::raft::{node_id_for, open_stores, NodeInfo, Raft, RaftNetworkFactoryImpl};
use crate::scheduler::{place, Change, DOWN_GRACE};
use crate::state::{Batch, Capacity, Command, Outcome, Principal, Proposal, State, COMMAND_KINDS};
use anyhow::{bail, Context, Result};
use openraft::error::{InitializeError, RaftError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct ScaleBenchArgs {
    /// Nodes in the simulated cluster's state (part A).
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// `anywhere` applications deployed and placed.
    #[arg(long, default_value_t = 50_000)]
    pub apps: usize,
    /// Nodes that fail at once; their apps are placed again.
    #[arg(long, default_value_t = 10)]
    pub failed: usize,
    /// Placements per `Command::Place` committed through the Raft group.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Keep the working directory (certificates, RocksDB) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

/// HashiCorp's "C2M" challenge (2020): 2,000,000 containers placed by Nomad
/// on 6,100 hosts in about 22 minutes, ~1,500 placements/s. A published
/// figure from another system on other machines: an anchor, not a
/// measurement of this run.
pub const NOMAD_C2M_PLACEMENTS_PER_SEC: f64 = 1_500.0;
/// Issue #5's goal.
pub const GOAL_PLACEMENTS_PER_SEC: f64 = 5_000.0;

/// What every simulated node offers: 32 GiB and 16 CPUs.
const NODE_MEMORY: u64 = 32 << 30;
const NODE_CPU_SHARES: u64 = 16 * 1024;
/// Nodes carry `zone=z0`..`z3`; every tenth app requires `zone=z0`.
const ZONES: usize = 4;
/// Proposals per log entry at most, as the leader's proposer gathers them
/// (`api::proposer::MAX_BATCH_PROPOSALS`); part A applies in entries of this size.
const PROPOSALS_PER_ENTRY: usize = 512;
/// The Raft group's size.
const GROUP: usize = 3;

pub async fn run(args: ScaleBenchArgs) -> Result<()> {
    if args.nodes < GROUP || args.apps == 0 || args.batch == 0 {
        bail!("--nodes must be at least {GROUP}, --apps and --batch at least 1");
    }
    if args.failed >= args.nodes {
        bail!("--failed must leave some nodes alive");
    }
    let workload = Workload::new(args.nodes, args.apps);
    let sim = part_a(&args, &workload)?;
    let work =
        std::env::temp_dir().join(format!("flocker-bench-scale-{:x}", rand::random::<u32>()));
    std::fs::create_dir_all(&work)?;
    println!("\nworking directory: {}", work.display());
    let result = part_b(&args, &workload, &sim, &work).await;
    if args.keep || result.is_err() {
        println!("kept {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    let group = result?;

    let rate = group.placed as f64 / group.commit.as_secs_f64();
    println!(
        "\nsummary ({} nodes in the state, {} anywhere apps)",
        args.nodes, args.apps
    );
    println!(
        "  placements committed through the 3-node group: {} in {} ms = {rate:.0}/s \
         (place() on the leader's state + commit, acknowledged by the leader)",
        group.placed,
        ms(group.commit)
    );
    println!(
        "  against the goal of {GOAL_PLACEMENTS_PER_SEC:.0}/s: {:.2}x",
        rate / GOAL_PLACEMENTS_PER_SEC
    );
    println!(
        "  against Nomad C2M's ~{NOMAD_C2M_PLACEMENTS_PER_SEC:.0}/s: {:.2}x \
         (a published figure, other system and hardware, not measured in this run)",
        rate / NOMAD_C2M_PLACEMENTS_PER_SEC
    );
    println!(
        "  state machine alone (part A, {} nodes, no Raft): place() {:.0}/s, apply of the Place commands {:.0}/s",
        args.nodes,
        sim.placed as f64 / sim.place.as_secs_f64(),
        sim.placed as f64 / sim.apply_place.as_secs_f64()
    );
    let per = |bytes: Option<u64>, n: usize, unit: f64| {
        bytes.map_or("?".into(), |b| format!("{:.1}", b as f64 / unit / n as f64))
    };
    println!(
        "  state every member holds: {} MiB in memory (one copy's RSS), {} MiB encoded \
         (a snapshot); per node of the {}: {} KiB in memory, {} KiB encoded; per app {} bytes in memory",
        mib(sim.rss_copy),
        mib(sim.encoded),
        args.nodes,
        per(sim.rss_copy, args.nodes, 1024.0),
        per(sim.encoded, args.nodes, 1024.0),
        per(sim.rss_copy, args.apps, 1.0),
    );
    let replace_total = group.down_commits + sim.replace_place + group.replace_commit;
    println!(
        "  re-placing the {} apps of {} failed nodes: {} ms after the grace = {} SetNodeDown commits {} ms \
         + place() on {} nodes {} ms + Place commit {} ms (DOWN_GRACE {} ms comes first)",
        sim.replace.len(),
        args.failed,
        ms(replace_total),
        args.failed,
        ms(group.down_commits),
        args.nodes,
        ms(sim.replace_place),
        ms(group.replace_commit),
        DOWN_GRACE.as_millis()
    );
    Ok(())
}

/// The simulated cluster: node names and the configuration of every app.
struct Workload {
    nodes: Vec<String>,
    configuration: Configuration,
}

fn node_name(width: usize, i: usize) -> String {
    format!("node-{i:0width$}")
}

impl Workload {
    fn new(nodes: usize, apps: usize) -> Workload {
        let width = nodes.to_string().len();
        let app_width = apps.to_string().len();
        let mut applications = BTreeMap::new();
        // Zero-padded names: generated in order, so `anywhere` is sorted.
        let mut anywhere = Vec::with_capacity(apps);
        for i in 1..=apps {
            let name = format!("app-{i:0app_width$}");
            let mut spec = AppSpec::new(ImageRef {
                name: "busybox".into(),
                tag: None,
                digest: None,
            });
            spec.mem_limit = Some([64u64, 128, 256][i % 3] << 20);
            spec.cpu_shares = Some(128);
            if i % 10 == 0 {
                spec.constraints.push(Constraint {
                    label: "zone".into(),
                    op: ConstraintOp::Equal,
                    value: "z0".into(),
                });
            }
            applications.insert(name.clone(), spec);
            anywhere.push(name);
        }
        Workload {
            nodes: (1..=nodes).map(|i| node_name(width, i)).collect(),
            configuration: Configuration {
                applications,
                deployment: Deployment {
                    pinned: BTreeMap::new(),
                    anywhere,
                },
            },
        }
    }

    /// Commands that register node `i` with its capacity and label its zone.
    fn register(&self, i: usize, capacity: Capacity) -> [Command; 2] {
        let node = self.nodes[i].clone();
        [
            Command::RegisterNode {
                node: node.clone(),
                publish_ip: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
                capacity,
                command_kinds: COMMAND_KINDS,
            },
            Command::SetLabels {
                node,
                changes: [("zone".to_string(), Some(format!("z{}", i % ZONES)))].into(),
            },
        ]
    }
}

/// Part A's results that the summary and part B need.
struct Simulated {
    placed: usize,
    place: Duration,
    apply_place: Duration,
    rss_copy: Option<u64>,
    encoded: Option<u64>,
    /// The changes `place()` made after the failures.
    replace: Vec<Change>,
    replace_place: Duration,
}

/// The leader the simulated log's entries name.
const SIMULATED_LEADER: &str = "n1";

/// Applies commands as the log carries them, in entries of at most
/// `PROPOSALS_PER_ENTRY` proposals; fails on any refusal. Encoding happens
/// before the clock starts (the leader encodes, every node applies).
fn apply_all(
    state: &mut State,
    index: &mut u64,
    commands: impl IntoIterator<Item = Command>,
) -> Result<Duration> {
    let mut proposals: Vec<Proposal> = commands
        .into_iter()
        .map(|c| {
            Proposal::signed(
                format!("scale-{index}-{:x}", rand::random::<u64>()),
                Principal::usual_for(&c, SIMULATED_LEADER),
                None,
                &c,
            )
        })
        .collect();
    let start = Instant::now();
    while !proposals.is_empty() {
        let rest = proposals.split_off(proposals.len().min(PROPOSALS_PER_ENTRY));
        *index += 1;
        let batch = Batch {
            proposed_at_ms: *index,
            proposals: std::mem::replace(&mut proposals, rest),
        };
        for outcome in state.apply_batch(*index, node_id_for(SIMULATED_LEADER), &batch)? {
            if let Err(e) = outcome.result {
                bail!("a command was refused at index {}: {e}", outcome.index);
            }
        }
    }
    Ok(start.elapsed())
}

fn place_commands(changes: &[Change], batch: usize) -> Vec<Command> {
    changes
        .chunks(batch)
        .map(|c| Command::Place {
            changes: c.to_vec(),
        })
        .collect()
}

fn part_a(args: &ScaleBenchArgs, w: &Workload) -> Result<Simulated> {
    println!(
        "part A: {} nodes, {} anywhere apps; State::apply_batch and place() in memory, no network",
        args.nodes, args.apps
    );
    let rss_start = rss_bytes();
    let mut state = State::default();
    let mut index = 1u64;
    let addresses: Vec<String> = (0..args.nodes)
        .map(|i| format!("10.{}.{}.{}:7000", (i >> 16) & 255, (i >> 8) & 255, i & 255))
        .collect();
    state.apply_membership(
        w.nodes
            .iter()
            .zip(&addresses)
            .map(|(n, a)| (n.as_str(), a.as_str())),
    );
    let capacity = Capacity {
        memory_bytes: NODE_MEMORY,
        cpu_shares: NODE_CPU_SHARES,
    };
    let t = apply_all(
        &mut state,
        &mut index,
        (0..args.nodes).flat_map(|i| w.register(i, capacity)),
    )?;
    println!(
        "  {:<52} {:>9} ms",
        format!("register + label {} nodes (apply)", args.nodes),
        ms(t)
    );

    let deploy = Command::Deploy {
        configuration: w.configuration.clone(),
        if_version: None,
    };
    let deploy_bytes = Proposal::signed(
        "size",
        Principal::usual_for(&deploy, SIMULATED_LEADER),
        None,
        &deploy,
    )
    .command
    .len();
    let t = apply_all(&mut state, &mut index, [deploy])?;
    println!(
        "  {:<52} {:>9} ms",
        format!(
            "deploy {} apps, {} KiB command (apply)",
            args.apps,
            deploy_bytes >> 10
        ),
        ms(t)
    );

    let t = Instant::now();
    let changes = place(&state);
    let place_time = t.elapsed();
    let placed = changes.iter().filter(|(_, n)| n.is_some()).count();
    println!(
        "  {:<52} {:>9} ms  {:>9.0}/s",
        format!("place(): {placed} of {} apps placed", args.apps),
        ms(place_time),
        placed as f64 / place_time.as_secs_f64()
    );
    let commands = place_commands(&changes, args.batch);
    let n_commands = commands.len();
    let apply_place = apply_all(&mut state, &mut index, commands)?;
    println!(
        "  {:<52} {:>9} ms  {:>9.0}/s",
        format!("apply {n_commands} Place commands of ≤{}", args.batch),
        ms(apply_place),
        placed as f64 / apply_place.as_secs_f64()
    );
    let t = Instant::now();
    let idle = place(&state);
    let idle_time = t.elapsed();
    if !idle.is_empty() {
        bail!(
            "place() still changes {} apps once all are placed",
            idle.len()
        );
    }
    println!(
        "  {:<52} {:>9} ms",
        "place() with nothing to do (every leader tick)",
        ms(idle_time)
    );

    // Memory: the RSS growth of one more copy of the state is what one node
    // holds (the allocator may reuse memory freed while building it: a lower
    // bound); the growth while building it counts that garbage too (an upper
    // bound).
    let before = rss_bytes();
    let rss_built = before.zip(rss_start).map(|(a, b)| a.saturating_sub(b));
    let copy = std::hint::black_box(state.clone());
    let rss_copy = rss_bytes().zip(before).map(|(a, b)| a.saturating_sub(b));
    drop(copy);
    let encoded = postcard::to_stdvec(&state)?.len() as u64;
    let part = |bytes: Result<Vec<u8>, postcard::Error>| -> Result<String> {
        Ok(format!("{} KiB", bytes?.len() >> 10))
    };
    println!(
        "  {:<52} {:>9} MiB in memory ({} MiB RSS growth building it), {} MiB encoded",
        "state held by every node (RSS of one more copy)",
        mib(rss_copy),
        mib(rss_built),
        mib(Some(encoded))
    );
    println!(
        "    encoded: nodes {}, configuration {}, placements {}, request window {} ({} ids), history {}",
        part(postcard::to_stdvec(&state.nodes))?,
        part(postcard::to_stdvec(&state.deployed.config))?,
        part(postcard::to_stdvec(&state.deployed.placements))?,
        part(postcard::to_stdvec(&state.requests))?,
        state.requests.len(),
        part(postcard::to_stdvec(&state.history))?,
    );

    // Failures, spread over the node list.
    let failed: BTreeSet<String> = (0..args.failed)
        .map(|k| w.nodes[k * args.nodes / args.failed].clone())
        .collect();
    let stranded = state
        .deployed
        .placements
        .values()
        .filter(|n| failed.contains(*n))
        .count();
    let t = apply_all(
        &mut state,
        &mut index,
        failed.iter().map(|node| Command::SetNodeDown {
            node: node.clone(),
            down: true,
        }),
    )?;
    println!(
        "  {:<52} {:>9} ms",
        format!("{} nodes declared down (apply)", failed.len()),
        ms(t)
    );
    let t = Instant::now();
    let replace = place(&state);
    let replace_place = t.elapsed();
    if replace.len() != stranded
        || replace
            .iter()
            .any(|(_, n)| n.as_ref().is_none_or(|n| failed.contains(n)))
    {
        bail!(
            "place() after the failures: {} changes for {stranded} stranded apps, or some unplaced or on a failed node",
            replace.len()
        );
    }
    println!(
        "  {:<52} {:>9} ms",
        format!("place(): re-place the {stranded} apps of failed nodes"),
        ms(replace_place)
    );
    // The leader loop commits all its changes as one command.
    let t = apply_all(
        &mut state,
        &mut index,
        [Command::Place {
            changes: replace.clone(),
        }],
    )?;
    println!(
        "  {:<52} {:>9} ms",
        format!("apply 1 Place command of {} changes", replace.len()),
        ms(t)
    );
    if state
        .deployed
        .placements
        .values()
        .any(|n| failed.contains(n))
    {
        bail!("apps are still placed on failed nodes");
    }

    // An operator's next deploy, changing one app's image.
    let mut next = w.configuration.clone();
    if let Some(spec) = next.applications.values_mut().next() {
        spec.image.tag = Some("1.36".into());
    }
    let t = apply_all(
        &mut state,
        &mut index,
        [Command::Deploy {
            configuration: next,
            if_version: None,
        }],
    )?;
    println!(
        "  {:<52} {:>9} ms",
        format!("deploy changing 1 of {} apps (apply)", args.apps),
        ms(t)
    );
    Ok(Simulated {
        placed,
        place: place_time,
        apply_place,
        rss_copy,
        encoded: Some(encoded),
        replace,
        replace_place,
    })
}

/// Part B's results.
struct GroupResult {
    placed: usize,
    /// From `place()` on the leader until every Place command was acknowledged.
    commit: Duration,
    down_commits: Duration,
    replace_commit: Duration,
}

/// One Raft member running in this process, on its own Tokio runtime as if
/// it were its own process: a member whose apply keeps its threads busy
/// does not starve the others' heartbeats.
struct Member {
    name: String,
    raft: Raft,
    api: Arc<Api>,
    net: Arc<Net>,
    server: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Runtime,
}

/// Runs `task` on `runtime` and waits for it from the caller's runtime.
async fn on<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    task: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    runtime.spawn(task).await?
}

/// Starts the group's members on loopback ports and initialises the group.
async fn start_group(dir: &Path, names: &[String]) -> Result<Vec<Member>> {
    // The CA stays in `ca/`; each member reads only its own bundle.
    let ca_dir = dir.join("ca");
    ca::init(
        &ca_dir,
        names,
        &[ca::Subject::user("admin")],
        ca::Validity::default(),
    )?;
    let bundle = |name: &str| dir.join("bundles").join(name);
    for name in names {
        ca::bundle(&ca_dir, Role::Node, name, &bundle(name))?;
    }
    let mut endpoints = Vec::new();
    for name in names {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(name.clone())
            .build()?;
        let tls = TlsMaterial::load(&CertsDir::new(bundle(name)), Role::Node, name)?;
        let net = on(&runtime, async move {
            Net::server("127.0.0.1:0".parse().expect("literal address"), &tls)
        })
        .await?;
        let addr = net.local_addr()?;
        endpoints.push((name.clone(), net, addr, runtime));
    }
    let membership: BTreeMap<u64, NodeInfo> = endpoints
        .iter()
        .map(|(name, _, addr, _)| {
            (
                node_id_for(name),
                NodeInfo {
                    name: name.clone(),
                    address: addr.to_string(),
                },
            )
        })
        .collect();
    let mut members = Vec::new();
    for (name, net, addr, runtime) in endpoints {
        let settings = NodeSettings {
            name: name.clone(),
            listen: addr,
            advertise: None,
            data_dir: dir.join(&name),
            certs: bundle(&name),
            allow_ca_key: false,
            peers: Vec::new(),
            join: None,
            max_voters: DEFAULT_MAX_VOTERS,
            snapshot_logs: DEFAULT_SNAPSHOT_LOGS,
            publish_ip: None,
            engine: Some("sim".into()),
            labels: Default::default(),
            volume_listen: None,
            volume_rate: 0,
            reserve: 0,
            routing: crate::routing::RoutingMode::Off,
            volume_backend: Default::default(),
            http_listen: None,
            metrics_listen: None,
        };
        let serving = net.clone();
        let (raft, api, server) = on(&runtime, async move {
            let (log_store, sm) = open_stores(&settings.data_dir.join("raft"))?;
            let config = Arc::new(
                settings
                    .raft_config()
                    .validate()
                    .context("invalid Raft settings")?,
            );
            let raft = Raft::new(
                node_id_for(&settings.name),
                config,
                RaftNetworkFactoryImpl::new(serving.clone()),
                log_store,
                sm.clone(),
            )
            .await
            .context("starting Raft")?;
            let api = Arc::new(Api::new(
                settings.name.clone(),
                raft.clone(),
                sm,
                serving.clone(),
                settings.max_voters,
                crate::agent::Observations::default(),
                Arc::new(Liveness::default()),
            ));
            let server = serving.serve(Arc::new(Dispatcher::new(
                raft.clone(),
                api.clone(),
                Arc::default(),
            )));
            Ok((raft, api, server))
        })
        .await?;
        members.push(Member {
            name,
            raft,
            api,
            net,
            server,
            runtime,
        });
    }
    // One member initialises (as `--peers` would on every member, where all
    // but the first are refused): the others learn the membership from it.
    match members[0].raft.initialize(membership).await {
        Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
        Err(e) => bail!("initialising the group: {e}"),
    }
    Ok(members)
}

/// The leader's position once every member follows it and knows every member.
async fn wait_leader(members: &[Member], timeout: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let leaders: BTreeSet<Option<u64>> = members
            .iter()
            .map(|m| m.raft.metrics().borrow().current_leader)
            .collect();
        let known = members
            .iter()
            .all(|m| m.api.sm.read().state.nodes.len() == members.len());
        if let (1, Some(Some(id)), true) = (leaders.len(), leaders.first(), known) {
            if let Some(i) = members.iter().position(|m| m.api.id == *id) {
                return Ok(i);
            }
        }
        if Instant::now() > deadline {
            bail!("no agreed leader within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn applied_index(member: &Member) -> u64 {
    member.api.sm.read().index()
}

/// Waits until every member has applied `index`.
async fn all_applied(members: &[Member], index: u64) -> Result<()> {
    for member in members {
        let mut applied = member.api.sm.subscribe();
        tokio::time::timeout(Duration::from_secs(60), applied.wait_for(|i| *i >= index))
            .await
            .with_context(|| format!("{} did not apply index {index}", member.name))?
            .context("state machine gone")?;
    }
    Ok(())
}

async fn submit(api: &Api, command: Command) -> Result<Outcome> {
    api.submit_as_node(command)
        .await
        .map_err(|e| anyhow::anyhow!("not committed: {e}"))
}

async fn part_b(
    args: &ScaleBenchArgs,
    w: &Workload,
    sim: &Simulated,
    dir: &Path,
) -> Result<GroupResult> {
    let names: Vec<String> = w.nodes[..GROUP].to_vec();
    println!(
        "part B: a 3-node Raft group in this process ({}): QUIC + mTLS on loopback, RocksDB with fsync",
        names.join(", ")
    );
    let mut members = start_group(dir, &names).await?;
    let result = drive_group(args, w, sim, &members).await;
    // The leader first, so no follower sees it vanish and calls an election.
    members.sort_by_key(|m| !m.api.is_leader());
    for member in members {
        member.server.abort();
        let _ = member.raft.shutdown().await;
        member.net.close();
        member.runtime.shutdown_background();
    }
    result
}

async fn drive_group(
    args: &ScaleBenchArgs,
    w: &Workload,
    sim: &Simulated,
    members: &[Member],
) -> Result<GroupResult> {
    let leader = &members[wait_leader(members, Duration::from_secs(30)).await?];
    let api = leader.api.clone();
    // The group's members share the simulated cluster's capacity, so they
    // are as full as its nodes.
    let capacity = Capacity {
        memory_bytes: NODE_MEMORY * args.nodes as u64 / GROUP as u64,
        cpu_shares: NODE_CPU_SHARES * args.nodes as u64 / GROUP as u64,
    };
    for i in 0..GROUP {
        for command in w.register(i, capacity) {
            submit(&api, command).await?;
        }
    }
    let t = Instant::now();
    submit(
        &api,
        Command::Deploy {
            configuration: w.configuration.clone(),
            if_version: None,
        },
    )
    .await?;
    println!(
        "  {:<52} {:>9} ms",
        format!("deploy {} apps (commit)", args.apps),
        ms(t.elapsed())
    );
    all_applied(members, applied_index(leader)).await?;

    // The scheduler's pass: place() on the leader's applied state, then its
    // changes committed in Place commands of `--batch` changes, all at once
    // (the proposer gathers them into entries).
    let log_before = leader.raft.metrics().borrow().last_log_index.unwrap_or(0);
    let start = Instant::now();
    let changes = {
        let applied = api.sm.read();
        place(&applied.state)
    };
    let place_time = start.elapsed();
    let placed = changes.iter().filter(|(_, n)| n.is_some()).count();
    let commands = place_commands(&changes, args.batch);
    let command_bytes = commands.first().map_or(0, |c| {
        Proposal::signed("size", Principal::usual_for(c, SIMULATED_LEADER), None, c)
            .command
            .len()
    });
    let n_commands = commands.len();
    let tasks: Vec<_> = commands
        .into_iter()
        .map(|command| {
            let api = api.clone();
            tokio::spawn(async move { submit(&api, command).await })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let commit = start.elapsed();
    let log_after = leader.raft.metrics().borrow().last_log_index.unwrap_or(0);
    all_applied(members, applied_index(leader)).await?;
    let everywhere = start.elapsed();
    println!(
        "  {:<52} {:>9} ms",
        format!("place(): {placed} apps on {GROUP} members"),
        ms(place_time)
    );
    println!(
        "  {:<52} {:>9} ms  {:>9.0}/s",
        format!(
            "place() + commit {n_commands} Place commands ({} KiB each)",
            command_bytes >> 10
        ),
        ms(commit),
        placed as f64 / commit.as_secs_f64()
    );
    println!(
        "    in {} log entries; applied on all {GROUP} members after {} ms",
        log_after.saturating_sub(log_before),
        ms(everywhere)
    );
    let placements: Vec<_> = members
        .iter()
        .map(|m| m.api.sm.read().state.deployed.placements.clone())
        .collect();
    if placements[0].len() != placed || placements.iter().any(|p| *p != placements[0]) {
        bail!("the members' placements differ or miss apps");
    }

    // Re-placement after failures, in the leader loop's order: each node
    // declared down by its own commit, one after the other, then one Place
    // command. The group knows only its members, so the liveness commits
    // name the leader (unchanged: still up) and the Place targets are the
    // members: the same commands and sizes, committed the same way.
    let t = Instant::now();
    for _ in 0..args.failed {
        submit(
            &api,
            Command::SetNodeDown {
                node: leader.name.clone(),
                down: false,
            },
        )
        .await?;
    }
    let down_commits = t.elapsed();
    let moved: Vec<Change> = sim
        .replace
        .iter()
        .enumerate()
        .map(|(k, (app, _))| (app.clone(), Some(w.nodes[k % GROUP].clone())))
        .collect();
    let t = Instant::now();
    submit(&api, Command::Place { changes: moved }).await?;
    let replace_commit = t.elapsed();
    println!(
        "  {:<52} {:>9} ms",
        format!("{} SetNodeDown commits, one after the other", args.failed),
        ms(down_commits)
    );
    println!(
        "  {:<52} {:>9} ms",
        format!("commit 1 Place command of {} changes", sim.replace.len()),
        ms(replace_commit)
    );
    Ok(GroupResult {
        placed,
        commit,
        down_commits,
        replace_commit,
    })
}

/// This process's resident set size, from /proc.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("?".into(), |b| {
        format!("{:.1}", b as f64 / (1 << 20) as f64)
    })
}
