//! The `flocker` binary: `node` runs a cluster member, `ctl` talks to one,
//! `ca` makes the cluster's certificates.

use clap::{Args, Parser, Subcommand};
use flocker::ca::{self, Role};
use flocker::ctl::{self, CtlArgs, Exit};
use flocker::node::{self, settings, NodeSettings};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "flocker",
    version,
    about = "Stateful Docker containers on a Raft cluster with no master"
)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Debug, Subcommand)]
enum Top {
    /// Run a cluster member.
    Node(NodeArgs),
    /// Operate the cluster through any node.
    Ctl(CtlArgs),
    /// The cluster's certificate authority.
    Ca {
        #[command(subcommand)]
        action: CaAction,
    },
    /// Flocker's configuration files.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Benchmarks against anchors measured in the same run.
    Bench {
        #[command(subcommand)]
        which: BenchWhich,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Validate deployment and application files offline; every error is
    /// listed with its file, line, column and key.
    Check {
        /// deployment.yml: nodes and the applications pinned to them.
        deployment: PathBuf,
        /// application.yml, or its fig/compose form.
        application: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum BenchWhich {
    /// Raft commits/s and latency against etcd; leader failover time.
    Raft(flocker::bench::raft::RaftBenchArgs),
    /// Deploy N containers until running, against docker run and Swarm.
    Deploy(flocker::bench::deploy::DeployBenchArgs),
    /// A node crash until its anywhere apps run elsewhere.
    NodeLoss(flocker::bench::nodeloss::NodeLossBenchArgs),
    /// Placements/s through a 3-node Raft group; 1,000 nodes and 50,000
    /// apps in the state machine and scheduler.
    Scale(flocker::bench::scale::ScaleBenchArgs),
    /// Volume moves: whole-volume throughput against tar | nc, rsync and dd;
    /// bytes on the wire for small changes; the app's downtime split.
    Volume(flocker::bench::volume::VolumeBenchArgs),
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// This node's name; must match its certificate.
    #[arg(long)]
    name: String,
    /// UDP address of the node's QUIC endpoint.
    #[arg(long)]
    listen: SocketAddr,
    /// Address other members reach this node at (default: --listen).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, env = "FLOCKER_CERTS")]
    certs: PathBuf,
    /// The founding members, identical on each: n1=IP:PORT,n2=IP:PORT,...
    #[arg(long, conflicts_with = "join")]
    peers: Option<String>,
    /// Join an existing cluster through this member (IP:PORT).
    #[arg(long)]
    join: Option<SocketAddr>,
    /// Most voters the cluster keeps; further members stay non-voting.
    #[arg(long, default_value_t = settings::DEFAULT_MAX_VOTERS)]
    max_voters: usize,
    /// Entries applied between snapshots (and kept behind each one).
    #[arg(long, default_value_t = settings::DEFAULT_SNAPSHOT_LOGS)]
    snapshot_logs: u64,
    /// Host IP for containers' published ports (default: the advertised IP).
    #[arg(long)]
    publish_ip: Option<std::net::IpAddr>,
    /// Container engine: unix:///path/to/docker.sock (default: DOCKER_HOST or
    /// /var/run/docker.sock), or `sim` for an in-memory engine.
    #[arg(long)]
    engine: Option<String>,
    /// A label this node sets on itself (repeatable): --label disk=ssd
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// UDP address of the volume endpoint (default: the --listen IP, any
    /// free port); volume data never shares the Raft socket.
    #[arg(long)]
    volume_listen: Option<SocketAddr>,
    /// Most volume data this node sends per second (e.g. 100M; 0: no limit).
    #[arg(long, default_value = "512M", value_parser = parse_rate)]
    volume_rate: u64,
    /// Chaos testing only: switch off one safety mechanism (repeatable) so
    /// the chaos suite can show its checkers catch the result.
    #[arg(long = "plant-bug", value_enum, value_name = "BUG")]
    plant_bugs: Vec<flocker::plant::PlantedBug>,
}

#[derive(Debug, Subcommand)]
enum CaAction {
    /// Create a cluster CA and certificates for the named nodes and users.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Comma-separated node names.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        /// Comma-separated user names.
        #[arg(long, value_delimiter = ',', default_value = "admin")]
        users: Vec<String>,
    },
    /// Issue one more node or user certificate from an existing CA.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        node: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.command {
        Top::Ctl(args) => {
            init_logging("warn");
            let exit: Exit = runtime.block_on(ctl::run(args));
            // The client closed its connection on the way out; let the
            // close reach the node before the runtime stops.
            runtime
                .block_on(async { tokio::time::sleep(flocker::net::endpoint::CLOSE_FLUSH).await });
            ExitCode::from(exit as u8)
        }
        Top::Ca { action } => match run_ca(action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(Exit::Refused as u8)
            }
        },
        Top::Config {
            action:
                ConfigAction::Check {
                    deployment,
                    application,
                },
        } => ExitCode::from(flocker::config::run_check(&deployment, &application)),
        Top::Bench { which } => {
            init_logging("warn");
            let result = match which {
                BenchWhich::Raft(args) => runtime.block_on(flocker::bench::raft::run(args)),
                BenchWhich::Deploy(args) => runtime.block_on(flocker::bench::deploy::run(args)),
                BenchWhich::NodeLoss(args) => runtime.block_on(flocker::bench::nodeloss::run(args)),
                BenchWhich::Scale(args) => runtime.block_on(flocker::bench::scale::run(args)),
                BenchWhich::Volume(args) => runtime.block_on(flocker::bench::volume::run(args)),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Top::Node(args) => {
            init_logging("info");
            match runtime.block_on(run_node(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOCKER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},openraft=warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run_ca(action: CaAction) -> anyhow::Result<()> {
    match action {
        CaAction::Init { dir, nodes, users } => {
            ca::init(&dir, &nodes, &users)?;
            println!(
                "cluster CA in {}: {} node and {} user certificates",
                dir.display(),
                nodes.len(),
                users.len()
            );
        }
        CaAction::Issue { dir, node, user } => {
            let (role, name) = match (node, user) {
                (Some(n), None) => (Role::Node, n),
                (None, Some(u)) => (Role::User, u),
                _ => anyhow::bail!("give exactly one of --node and --user"),
            };
            ca::issue(&dir, role, &name)?;
            println!("issued {} certificate for {name}", role.as_str());
        }
    }
    Ok(())
}

/// A size per second, or 0 for no limit.
fn parse_rate(text: &str) -> Result<u64, String> {
    if text.trim() == "0" {
        return Ok(0);
    }
    flocker::config::parse_size(text)
}

async fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    flocker::plant::plant(&args.plant_bugs);
    let peers = match &args.peers {
        Some(spec) => node::parse_peers(spec)?,
        None => Vec::new(),
    };
    let settings = NodeSettings {
        name: args.name,
        listen: args.listen,
        advertise: args.advertise,
        data_dir: args.data_dir,
        certs: args.certs,
        peers,
        join: args.join,
        max_voters: args.max_voters,
        snapshot_logs: args.snapshot_logs,
        publish_ip: args.publish_ip,
        engine: args.engine,
        labels: args
            .labels
            .iter()
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| anyhow::anyhow!("--label {l}: expected KEY=VALUE"))
            })
            .collect::<anyhow::Result<_>>()?,
        volume_listen: args.volume_listen,
        volume_rate: args.volume_rate,
    };
    let running = node::start(settings).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
