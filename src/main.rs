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
    Node(Box<NodeArgs>),
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
    /// Disaster recovery on a stopped node: a single-member cluster from
    /// this node's state (--force-new-cluster) or from a snapshot file.
    Recover(RecoverCli),
    /// Benchmarks against anchors measured in the same run.
    Bench {
        #[command(subcommand)]
        which: BenchWhich,
    },
}

#[derive(Debug, clap::Args)]
struct RecoverCli {
    /// The stopped node's data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// The node's name (its certificate's).
    #[arg(long)]
    name: String,
    /// The node's bundle (asks former members how far their logs go).
    #[arg(long)]
    certs: PathBuf,
    /// The address it will listen on (default: the one it had).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Refounds the cluster on this member; refused while a reachable
    /// former member has a longer log.
    #[arg(long, conflicts_with = "from_snapshot")]
    force_new_cluster: bool,
    /// Builds a first member from a `ctl snapshot save` file.
    #[arg(long, value_name = "FILE")]
    from_snapshot: Option<PathBuf>,
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
    /// Volume replicas: a host crash until the stateful app runs elsewhere
    /// with its data, the writes lost, the app's stall per point, its fsync
    /// latency and the bytes shipped, per volume backend. Needs root.
    Failover(flocker::bench::failover::FailoverBenchArgs),
    /// Placements/s through a 3-node Raft group; 1,000 nodes and 50,000
    /// apps in the state machine and scheduler.
    Scale(flocker::bench::scale::ScaleBenchArgs),
    /// Volume moves: whole-volume throughput against tar | nc, rsync and dd;
    /// bytes on the wire for small changes; the app's downtime split.
    Volume(flocker::bench::volume::VolumeBenchArgs),
    /// The routing mesh in a network lab: throughput and connection
    /// latency direct, through the mesh and through a userspace relay;
    /// how soon every node's address follows a move. Needs root.
    Routing(flocker::bench::routing::RoutingBenchArgs),
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
    /// This node's bundle (`flocker ca bundle --node NAME`): ca.crt,
    /// nodes/NAME.crt, nodes/NAME.key.
    #[arg(long, env = "FLOCKER_CERTS")]
    certs: PathBuf,
    /// Start even though the certs directory holds the CA's private key
    /// (ca.key). Without it the node refuses: one compromised host could
    /// then mint certificates for the whole cluster.
    #[arg(long)]
    allow_ca_key: bool,
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
    /// TCP address to serve the HTTPS JSON API on (off by default): the
    /// same client certificates and roles as `ctl`, under /v1.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// Most volume data this node sends per second (e.g. 100M; 0: no limit).
    #[arg(long, default_value = "512M", value_parser = parse_rate)]
    volume_rate: u64,
    /// Free space kept for Raft on the data directory's file system (e.g.
    /// 500M; 0: none): a volume move into this node that would leave less
    /// fails, and the node warns at start when there is already less.
    #[arg(long, default_value = "1G", value_parser = parse_rate)]
    reserve: u64,
    /// The routing mesh: `iptables` (every node answers on every app's
    /// external ports and forwards to the node that runs the app; needs
    /// root or CAP_NET_ADMIN) or `off` (an app answers only where it runs).
    #[arg(long, value_enum, default_value_t = flocker::routing::RoutingMode::Iptables)]
    routing: flocker::routing::RoutingMode,
    /// How this node keeps volumes so replicas get crash-consistent points:
    /// `auto` (the best the volumes' file system allows, said at start),
    /// `btrfs` (snapshots, no pause), `xfs` (reflink copies, a short
    /// `docker pause`) or `dir` (plain directories, changed blocks copied
    /// during a `docker pause`).
    #[arg(long, default_value = "auto")]
    volume_backend: flocker::volume::BackendChoice,
    /// Serve Prometheus metrics over plain HTTP at http://ADDR/metrics
    /// (off unless given); bind it where only your Prometheus reaches.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// How log lines are written to stderr: `text` (colour only when stderr
    /// is a terminal) or `json` (one object per line, for log shippers).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Check the replicated state's invariants after every applied entry
    /// (always on in debug builds); a violation stops applying on this node.
    #[arg(long)]
    check_invariants: bool,
    /// Chaos testing only: switch off one safety mechanism (repeatable) so
    /// the chaos suite can show its checkers catch the result.
    #[arg(long = "plant-bug", value_enum, value_name = "BUG")]
    plant_bugs: Vec<flocker::plant::PlantedBug>,
}

/// The shape of a node's log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
        /// Comma-separated users, each NAME or NAME:ROLE (admin, operator,
        /// viewer; default admin): --users alice,bob:viewer
        #[arg(long, value_delimiter = ',', default_value = "admin")]
        users: Vec<String>,
        /// An IP address or DNS name every node certificate also names
        /// (repeatable), so HTTPS clients verify a node by the address they
        /// reach it at: --san 10.0.0.5 --san nodes.example.com
        #[arg(long = "san", value_name = "IP|DNS")]
        sans: Vec<String>,
        #[command(flatten)]
        validity: ValidityArgs,
    },
    /// Issue one more node or user certificate from an existing CA.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        who: WhoArgs,
        /// A user's access: admin, operator or viewer (default admin).
        #[arg(long)]
        role: Option<String>,
        /// An IP address or DNS name the node certificate also names
        /// (repeatable): the addresses its HTTPS API is reached at.
        #[arg(long = "san", value_name = "IP|DNS")]
        sans: Vec<String>,
        #[command(flatten)]
        validity: ValidityArgs,
    },
    /// Replace a certificate with a fresh key and certificate for the same
    /// name; the old pair is kept as NAME.crt.replaced-<unix time>.
    Renew {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        who: WhoArgs,
        /// A user's new access (default: the one it has).
        #[arg(long)]
        role: Option<String>,
        #[command(flatten)]
        validity: ValidityArgs,
    },
    /// Write what one node or user needs into DIR: ca.crt and its own
    /// certificate and key, never the CA key.
    Bundle {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        who: WhoArgs,
        /// Where to write the bundle (created; existing files are never
        /// overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Also write the user's certificate and key as PKCS#12
        /// (users/NAME.p12) for a browser, under a password printed once.
        #[arg(long)]
        p12: bool,
    },
    /// Print the SHA-256 fingerprint of a PEM certificate (what `ctl
    /// revoke --fingerprint` takes).
    Fingerprint { file: PathBuf },
}

/// Exactly one of --node NAME and --user NAME.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct WhoArgs {
    #[arg(long)]
    node: Option<String>,
    #[arg(long)]
    user: Option<String>,
}

impl WhoArgs {
    fn role_and_name(&self) -> (Role, &str) {
        match (&self.node, &self.user) {
            (Some(node), _) => (Role::Node, node),
            (None, Some(user)) => (Role::User, user),
            // clap's group makes one of the two required.
            (None, None) => (Role::User, ""),
        }
    }
}

#[derive(Debug, Args)]
struct ValidityArgs {
    /// Days the certificates are valid from now.
    #[arg(long, default_value_t = ca::DEFAULT_VALIDITY_DAYS, value_parser = clap::value_parser!(u32).range(1..))]
    days: u32,
    /// Tests only: issue certificates that expired this many days ago.
    #[arg(long, hide = true, conflicts_with = "days")]
    expired_days_ago: Option<u32>,
}

impl ValidityArgs {
    fn validity(&self) -> ca::Validity {
        match self.expired_days_ago {
            Some(days) => ca::Validity::ExpiredDaysAgo(days),
            None => ca::Validity::Days(self.days),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.command {
        Top::Ctl(args) => {
            init_logging("warn", LogFormat::Text);
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
        Top::Recover(args) => {
            init_logging("warn", LogFormat::Text);
            let args = flocker::recover::RecoverArgs {
                data_dir: args.data_dir,
                name: args.name,
                certs: args.certs,
                listen: args.listen,
                force_new_cluster: args.force_new_cluster,
                from_snapshot: args.from_snapshot,
            };
            let code = match runtime.block_on(flocker::recover::run(args)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            };
            // It opened RocksDB: leave as a node does.
            leave_node_process(code)
        }
        Top::Bench { which } => {
            init_logging("warn", LogFormat::Text);
            let result = match which {
                BenchWhich::Raft(args) => runtime.block_on(flocker::bench::raft::run(args)),
                BenchWhich::Deploy(args) => runtime.block_on(flocker::bench::deploy::run(args)),
                BenchWhich::NodeLoss(args) => runtime.block_on(flocker::bench::nodeloss::run(args)),
                BenchWhich::Failover(args) => runtime.block_on(flocker::bench::failover::run(args)),
                BenchWhich::Scale(args) => runtime.block_on(flocker::bench::scale::run(args)),
                BenchWhich::Volume(args) => runtime.block_on(flocker::bench::volume::run(args)),
                BenchWhich::Routing(args) => runtime.block_on(flocker::bench::routing::run(args)),
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
            init_logging("info", args.log_format);
            let code = match runtime.block_on(run_node(*args)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            };
            leave_node_process(code)
        }
    }
}

/// Ends a node process without running C++ static destructors: RocksDB
/// 7.8's background thread pool aborts the process ("terminate called
/// without an active exception") when it is destroyed at exit with its
/// threads alive, which would turn every stop into a crash. By now the node
/// has shut down and quiesced its database (WAL synced, background work
/// cancelled), and every acknowledged write was fsynced when it was
/// acknowledged, so skipping the destructors loses nothing.
fn leave_node_process(code: i32) -> ExitCode {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` ends the process at once; no Rust state is observed
    // after it, and the buffers above have been flushed.
    unsafe { libc::_exit(code) }
}

/// Logs go to stderr. Colour codes only reach a terminal: a log file or
/// journald gets plain text.
fn init_logging(default: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOCKER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},openraft=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

fn run_ca(action: CaAction) -> anyhow::Result<()> {
    match action {
        CaAction::Init {
            dir,
            nodes,
            users,
            sans,
            validity,
        } => {
            let users = users
                .iter()
                .map(|spec| ca::Subject::parse_user(spec))
                .collect::<anyhow::Result<Vec<_>>>()?;
            ca::init_with_sans(&dir, &nodes, &users, validity.validity(), &sans)?;
            println!(
                "cluster CA in {}: {} node and {} user certificates",
                dir.display(),
                nodes.len(),
                users.len()
            );
        }
        CaAction::Issue {
            dir,
            who,
            role,
            sans,
            validity,
        } => {
            let subject = match who.role_and_name() {
                (Role::Node, _) if role.is_some() => {
                    anyhow::bail!("--role applies to user certificates only")
                }
                (Role::Node, name) => ca::Subject::Node(name.to_string()),
                (Role::User, name) => ca::Subject::User {
                    name: name.to_string(),
                    access: role
                        .as_deref()
                        .map_or(Ok(ca::Access::Admin), ca::Access::parse)?,
                },
            };
            let path = ca::issue_with_sans(&dir, &subject, validity.validity(), &sans)?;
            let id = ca::Identity::from_der(&flocker::net::tls::load_cert(&path)?)?;
            println!("issued {}", describe_cert(&id, &path));
        }
        CaAction::Renew {
            dir,
            who,
            role,
            validity,
        } => {
            let (kind, name) = who.role_and_name();
            let access = role.as_deref().map(ca::Access::parse).transpose()?;
            let renewed = ca::renew(&dir, kind, name, access, validity.validity())?;
            println!(
                "renewed {}; the old certificate is kept as {}",
                describe_cert(&renewed.identity, &renewed.cert),
                renewed.replaced_cert.display()
            );
        }
        CaAction::Bundle { dir, who, out, p12 } => {
            let (kind, name) = who.role_and_name();
            if p12 && kind != Role::User {
                anyhow::bail!("--p12 is for a user's certificate (a browser's), not a node's");
            }
            let files = ca::bundle(&dir, kind, name, &out)?;
            println!(
                "bundle for {} '{name}' in {}: {}",
                kind.as_str(),
                out.display(),
                files
                    .iter()
                    .filter_map(|f| f.strip_prefix(&out).ok())
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if p12 {
                let (path, password) = ca::p12(&dir, name, &out)?;
                println!("PKCS#12 for a browser: {}", path.display());
                println!("its password (shown only now): {password}");
            }
        }
        CaAction::Fingerprint { file } => println!("{}", ca::fingerprint_file(&file)?),
    }
    Ok(())
}

/// `user 'ops' (viewer) in users/ops.crt, expires 2026-...`
fn describe_cert(id: &ca::Identity, path: &std::path::Path) -> String {
    let access = id.access.map(|a| format!(" ({a})")).unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let expires = if id.not_after <= now {
        "expired on"
    } else {
        "expires"
    };
    format!(
        "{id}{access} in {}, {expires} {}",
        path.display(),
        id.expires()
    )
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
    if args.check_invariants {
        flocker::state::invariants::check_always();
    }
    if flocker::state::invariants::checking() {
        // The chaos suite looks for this line (chaos/src/check/state_invariants.rs).
        tracing::info!("checking the replicated state's invariants after every applied entry");
    }
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
        allow_ca_key: args.allow_ca_key,
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
        reserve: args.reserve,
        routing: args.routing,
        volume_backend: args.volume_backend,
        http_listen: args.http_listen,
        metrics_listen: args.metrics_listen,
    };
    let running = node::start(settings).await?;
    let mut fatal = running.fatal.clone();
    let stopped_by = tokio::select! {
        () = wait_for_signal() => None,
        why = async {
            match fatal.wait_for(Option::is_some).await {
                Ok(why) => why.clone(),
                // No task can report a fatal error any more: only a signal stops us.
                Err(_) => std::future::pending().await,
            }
        } => why,
    };
    tracing::info!("shutting down");
    running.shutdown().await;
    match stopped_by {
        Some(why) => anyhow::bail!(why),
        None => Ok(()),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
