//! `flocker bench routing`: the routing mesh on real network paths, in a
//! network lab of three hosts (`n1`..`n3`, each its own namespace and
//! engine) and a client namespace, all measured in one run:
//!
//! 1. one TCP stream's throughput from the client: straight to the serving
//!    node (n1, Docker's DNAT delivers), through the mesh via n2 (kernel
//!    DNAT and SNAT in n2's namespace), and through a userspace relay in
//!    n2 (tokio `copy_bidirectional`): the design the mesh did not take;
//! 2. connection latency on the same three paths, the handshake alone and
//!    with one small request;
//! 3. how soon new connections through each node's address reach the new
//!    instance after a move's handoff commits, against when the new
//!    container started and when each node's rules switched.
//!
//! The client, the relay and the prober are threads of this process that
//! entered the lab's namespaces (`wire.rs`); what happened when is read
//! back from the history, the node logs and the prober's samples
//! (`switch.rs`). Timings on a shared 2-core VM are noisy, and the client,
//! the relay, the app and every namespace's forwarding share those cores:
//! compare within one run only.

mod switch;
mod wire;

use super::cluster::{FlockerCluster, NAMES};
use super::docker_cli::docker;
use super::logs::{log_warnings, now_ms, rfc3339_ms};
use super::stats::{summarize, Summary};
use crate::api::{ClientReply, ClientRequest};
use crate::netlab::{Lab, CLIENT};
use crate::runtime::TEST_IMAGE;
use anyhow::{anyhow, bail, Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use switch::Switch;
use wire::{Prober, Relay, Transfer};

#[derive(Debug, Clone, clap::Args)]
pub struct RoutingBenchArgs {
    /// Seconds each throughput run downloads for.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Throughput runs per path, interleaved; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Connections timed per path (handshakes, then handshake + request).
    #[arg(long, default_value_t = 500)]
    pub connects: usize,
    /// Moves of the app with a volume: n1→n2, back, and so on.
    #[arg(long, default_value_t = 5)]
    pub moves: usize,
    /// The file the throughput runs download again and again (whole MiB).
    #[arg(long, default_value = "512M", value_parser = crate::config::parse_size)]
    pub file: u64,
    /// Keep the working directory (node logs).
    #[arg(long)]
    pub keep: bool,
}

const MIB: u64 = 1 << 20;
const RAFT_PORT: u16 = 7000;
/// Serves a large file (throughput) and its hostname (latency); stays on n1.
const STREAM: &str = "stream";
const STREAM_PORT: u16 = 18080;
/// Has a volume; moves between n1 and n2.
const WEB: &str = "web";
const WEB_PORT: u16 = 18081;
/// The userspace relay's port in n2's namespace.
const RELAY_PORT: u16 = 18090;
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// Probing goes on this long after every address reached the new instance,
/// before the next move.
const HOLD: Duration = Duration::from_millis(1500);
/// Everything up and answering through every node.
const READY_LIMIT: Duration = Duration::from_secs(120);
const MOVE_LIMIT: Duration = Duration::from_secs(120);
/// From a move's end until every address reaches the new instance: longer
/// is a broken mesh, not a slow one.
const SWITCH_LIMIT: Duration = Duration::from_secs(30);
const GOAL_RATIO: f64 = 0.9;
const GOAL_EXTRA_P50: Duration = Duration::from_micros(200);
const GOAL_SWITCH_P99: Duration = Duration::from_secs(1);

/// The three paths of parts 1 and 2, in this order.
const PATHS: [&str; 3] = [
    "direct: client → n1 (Docker's DNAT in n1)",
    "mesh: client → n2 → n1 (kernel DNAT + SNAT in n2)",
    "userspace relay in n2 → n1 (tokio copy_bidirectional, 256 KiB buffers)",
];

/// busybox httpd sends files with sendfile(2): the app costs no copies, so
/// the path is what is measured. `sh` stays PID 1 so that a stop's SIGTERM
/// ends the container at once.
fn applications(file_mib: u64) -> String {
    let serve = "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait";
    format!(
        r#"version: 1
applications:
  {STREAM}:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "set -e; mkdir -p /www; hostname > /www/id; dd if=/dev/zero of=/www/big bs=1048576 count={file_mib} 2>/dev/null; {serve}"]
    ports: [{{internal: 80, external: {STREAM_PORT}}}]
  {WEB}:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "set -e; mkdir -p /www; hostname > /www/id; {serve}"]
    ports: [{{internal: 80, external: {WEB_PORT}}}]
    volume: {{mountpoint: /data}}
"#
    )
}

/// One throughput run with what the machine did meanwhile.
struct Run {
    transfer: Transfer,
    /// Busy share of all cores, in percent.
    machine_busy: Option<f64>,
    relay_cpu: Option<Duration>,
}

struct MoveResult {
    from: &'static str,
    to: &'static str,
    committed_ms: u64,
    started_ms: Option<u64>,
    /// Per node, when its log says its rules follow the move.
    rules_ms: Vec<Option<u64>>,
    /// Per node's address.
    switches: Vec<Switch>,
}

struct Results {
    throughput: Vec<Vec<Run>>,
    handshake: Vec<Summary>,
    request: Vec<Summary>,
    moves: Vec<MoveResult>,
}

pub async fn run(args: RoutingBenchArgs) -> Result<()> {
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds must be above 0");
    }
    if args.rounds == 0 || args.connects == 0 || args.moves == 0 {
        bail!("--rounds, --connects and --moves must be at least 1");
    }
    if args.file < MIB || args.file % MIB != 0 {
        bail!("--file must be a whole number of MiB (e.g. 512M)");
    }
    println!("starting a network lab with hosts {}", NAMES.join(", "));
    let lab = tokio::task::spawn_blocking(|| Lab::start(&NAMES))
        .await?
        .context("the network lab (needs root, iproute2, iptables, nsenter, dockerd)")?;
    let work =
        std::env::temp_dir().join(format!("flocker-bench-routing-{:x}", rand::random::<u32>()));
    std::fs::create_dir_all(&work)?;
    println!(
        "lab slot {} ({}), working directory {}",
        lab.slot(),
        lab.subnet(),
        work.display()
    );
    let load_before = load_average();
    let result = measure(&lab, &work, &args).await;
    let load = (load_before, load_average());
    let warnings = log_warnings(&work, &NAMES);
    if args.keep || result.is_err() {
        println!("kept {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    let teardown = tokio::task::spawn_blocking(move || lab.shutdown()).await?;
    let results = result?;
    teardown?;
    print_tables(&args, &results, &warnings, &load);
    Ok(())
}

/// The first three fields of /proc/loadavg (other work on the machine
/// shows in every number here).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Runs `f` on a thread inside the client's (or a host's) namespace.
async fn in_ns<T: Send + 'static>(
    lab: &Lab,
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let thread = lab.thread_in(ns, "bench-client", f)?;
    tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| anyhow!("a bench thread in {ns} panicked"))?
}

fn each(ips: &[IpAddr], port: u16) -> Vec<SocketAddr> {
    ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
}

async fn measure(lab: &Lab, work: &Path, args: &RoutingBenchArgs) -> Result<Results> {
    lab.load_busybox_image(TEST_IMAGE).await?;
    let ips: Vec<IpAddr> = NAMES
        .iter()
        .map(|n| lab.host_ip(n).map(IpAddr::from))
        .collect::<Result<_>>()?;
    let mut shapes = Vec::new();
    for name in NAMES {
        shapes.push((
            name,
            lab.command_prefix(name)?,
            format!("--engine={}", lab.engine(name)?),
        ));
    }
    let cluster = FlockerCluster::start_at(work, each(&ips, RAFT_PORT), |name, command| {
        let (_, prefix, engine) = shapes
            .iter()
            .find(|s| s.0 == name)
            .expect("a lab host per node");
        let mut full = prefix.to_vec();
        full.extend(command);
        // No disk kept free for moves: the lab's engines share one disk.
        full.extend([engine.clone(), "--reserve=0".into()]);
        full
    })?;
    let leader = cluster.leader(&[0, 1, 2], Duration::from_secs(60)).await?;
    let deployment = format!("version: 1\nnodes:\n  n1: [{STREAM}, {WEB}]\n");
    let application = applications(args.file / MIB);
    let deadline = Instant::now() + READY_LIMIT;
    // A node may not have registered its address yet: retry until it has.
    while let Err(e) = cluster.deploy(leader, &deployment, &application).await {
        if Instant::now() > deadline {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for port in [STREAM_PORT, WEB_PORT] {
        let targets = each(&ips, port);
        let id = in_ns(lab, CLIENT, move || {
            wait_one_instance(&targets, READY_LIMIT)
        })
        .await?;
        println!("port {port}: instance {id} answers through every node");
    }

    println!("throughput: {} × {} s per path", args.rounds, args.seconds);
    let relay = Relay::start(
        lab,
        "n2",
        SocketAddr::new(ips[1], RELAY_PORT),
        SocketAddr::new(ips[0], STREAM_PORT),
    )?;
    let paths = [
        SocketAddr::new(ips[0], STREAM_PORT),
        SocketAddr::new(ips[1], STREAM_PORT),
        SocketAddr::new(ips[1], RELAY_PORT),
    ];
    let span = Duration::from_secs_f64(args.seconds);
    let mut throughput: Vec<Vec<Run>> = PATHS.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        for (i, addr) in paths.iter().copied().enumerate() {
            let machine_before = wire::machine_cpu();
            let relay_before = relay.cpu();
            let length = args.file;
            let transfer = in_ns(lab, CLIENT, move || {
                wire::download(addr, "/big", length, span)
            })
            .await?;
            let machine_busy = machine_before
                .zip(wire::machine_cpu())
                .filter(|(b, a)| a.1 > b.1)
                .map(|(b, a)| 100.0 * (a.0 - b.0) as f64 / (a.1 - b.1) as f64);
            let relay_cpu = relay_before
                .zip(relay.cpu())
                .map(|(b, a)| a.saturating_sub(b));
            println!(
                "  round {}, {}: {:.0} MB/s",
                round + 1,
                PATHS[i],
                transfer.mb_per_s()
            );
            throughput[i].push(Run {
                transfer,
                machine_busy,
                relay_cpu,
            });
        }
    }

    println!("latency: {} connections per path, twice", args.connects);
    let count = args.connects;
    let mut handshakes = in_ns(lab, CLIENT, move || {
        wire::connect_times(&paths, count, false)
    })
    .await?;
    let mut requests = in_ns(lab, CLIENT, move || {
        wire::connect_times(&paths, count, true)
    })
    .await?;
    relay.stop()?;
    let handshake = handshakes.iter_mut().map(|t| summarize(t)).collect();
    let request = requests.iter_mut().map(|t| summarize(t)).collect();

    let moves = moves(lab, work, &cluster, &ips, args.moves).await?;
    Ok(Results {
        throughput,
        handshake,
        request,
        moves,
    })
}

/// Waits until every target answers GET /id with one instance; its id.
fn wait_one_instance(targets: &[SocketAddr], limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        let answers: Vec<Result<String>> = targets.iter().map(|a| wire::get_id(*a)).collect();
        if let [Ok(first), rest @ ..] = &answers[..] {
            if rest.iter().all(|a| a.as_ref().is_ok_and(|id| id == first)) {
                return Ok(first.clone());
            }
        }
        if Instant::now() > deadline {
            let seen: Vec<String> = answers
                .iter()
                .map(|a| match a {
                    Ok(id) => id.clone(),
                    Err(e) => format!("{e:#}"),
                })
                .collect();
            bail!(
                "not one instance through every node within {limit:?}: {}",
                seen.join("; ")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `ctl move APP TO --wait` through n3 (no party to the moves).
async fn ctl_move(cluster: &FlockerCluster, app: &str, to: &str) -> Result<()> {
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .arg("ctl")
        .arg("--node")
        .arg(cluster.addrs[2].to_string())
        .arg("--certs")
        .arg(&cluster.certs.root)
        .args(["move", app, to, "--wait", "--timeout"])
        .arg(MOVE_LIMIT.as_secs().to_string())
        .stdin(Stdio::null())
        .output()
        .await
        .context("running flocker ctl move")?;
    if !out.status.success() {
        bail!(
            "ctl move {app} {to}: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The container id of `app` running on `node`, once the status shows it.
async fn running_on(cluster: &FlockerCluster, app: &str, node: &str) -> Result<String> {
    let client = cluster.client(2)?;
    let deadline = Instant::now() + SWITCH_LIMIT;
    loop {
        if let ClientReply::Status(view) = client.request(ClientRequest::Status).await {
            let id = view
                .apps
                .iter()
                .filter(|a| a.name == app)
                .flat_map(|a| &a.instances)
                .find(|i| i.node == node && i.state == "running")
                .and_then(|i| i.container_id.clone());
            if let Some(id) = id {
                return Ok(id);
            }
        }
        if Instant::now() > deadline {
            bail!("{app} does not run on {node}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Part 3: moves `web` back and forth while the prober asks every node's
/// address which instance answers.
async fn moves(
    lab: &Lab,
    work: &Path,
    cluster: &FlockerCluster,
    ips: &[IpAddr],
    count: usize,
) -> Result<Vec<MoveResult>> {
    println!("moves: {count} of {WEB} between n1 and n2, probing every node every {PROBE_EVERY:?}");
    let prober = Prober::start(lab, CLIENT, each(ips, WEB_PORT), PROBE_EVERY)?;
    // (from, to, command, new instance, its start)
    let mut done: Vec<(&'static str, &'static str, u64, String, Option<u64>)> = Vec::new();
    for k in 0..count {
        let (from, to) = if k % 2 == 0 {
            ("n1", "n2")
        } else {
            ("n2", "n1")
        };
        let command_ms = now_ms();
        let start = Instant::now();
        ctl_move(cluster, WEB, to).await?;
        let moved = start.elapsed();
        let instance = running_on(cluster, WEB, to).await?;
        let started_ms = docker(&[
            "-H",
            &lab.engine(to)?,
            "inspect",
            "-f",
            "{{.State.StartedAt}}",
            &instance,
        ])
        .ok()
        .and_then(|s| rfc3339_ms(&s));
        let deadline = Instant::now() + SWITCH_LIMIT;
        loop {
            let seen = prober.since(command_ms);
            let reached = |t: usize| {
                seen.iter().any(|s| {
                    s.target == t
                        && s.answer
                            .as_deref()
                            .is_ok_and(|a| wire::is_instance(a, &instance))
                })
            };
            if (0..NAMES.len()).all(reached) {
                break;
            }
            if Instant::now() > deadline {
                bail!("move {from}→{to}: not every node's address reached the new instance within {SWITCH_LIMIT:?} of the move's end");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "  {from}→{to}: ctl move --wait {:.2} s, every address reaches {} after {:.2} s",
            moved.as_secs_f64(),
            &instance[..12.min(instance.len())],
            start.elapsed().as_secs_f64()
        );
        // Watch it hold before the next move: what flaps after the first
        // answer counts too.
        tokio::time::sleep(HOLD).await;
        done.push((from, to, command_ms, instance, started_ms));
    }
    let samples = tokio::task::spawn_blocking(move || prober.finish()).await??;
    let csv: String = samples
        .iter()
        .map(|s| {
            format!(
                "{},{},{}\n",
                s.at_ms,
                NAMES[s.target],
                match &s.answer {
                    Ok(id) => id.as_str(),
                    Err(why) => why,
                }
            )
        })
        .collect();
    std::fs::write(work.join("probes.csv"), format!("at_ms,via,answer\n{csv}"))?;
    let history = match cluster.client(2)?.request(ClientRequest::History).await {
        ClientReply::History(h) => h,
        other => bail!("reading the history: {other:?}"),
    };
    let logs: Vec<String> = NAMES
        .iter()
        .map(|n| std::fs::read_to_string(work.join(format!("{n}.log"))).unwrap_or_default())
        .collect();
    let mut out = Vec::new();
    for (k, (from, to, command_ms, instance, started_ms)) in done.iter().enumerate() {
        let until_ms = done.get(k + 1).map_or(u64::MAX, |d| d.2);
        let entry = switch::handoff(&history, WEB, from, to, *command_ms)
            .with_context(|| format!("no handoff {from}→{to} in the history"))?;
        let committed_ms = entry.proposed_at_ms;
        out.push(MoveResult {
            from,
            to,
            committed_ms,
            started_ms: *started_ms,
            rules_ms: NAMES
                .iter()
                .zip(&logs)
                .map(|(node, log)| {
                    switch::rules_switched(log, WEB, WEB_PORT, node, to, committed_ms)
                })
                .collect(),
            switches: (0..NAMES.len())
                .map(|t| switch::switch(&samples, t, committed_ms, until_ms, instance))
                .collect(),
        });
    }
    Ok(out)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

fn ms3(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn after(from: u64, at: Option<u64>) -> String {
    at.map_or("–".into(), |t| format!("+{}", t as i64 - from as i64))
}

/// The median of some numbers (the lower middle one of an even count).
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[(values.len() - 1) / 2]
}

/// Percentiles of millisecond spans after a commit.
fn spans(values: impl Iterator<Item = u64>) -> Summary {
    let mut d: Vec<Duration> = values.map(Duration::from_millis).collect();
    summarize(&mut d)
}

fn summary_row(label: &str, s: &Summary) {
    if s.count == 0 {
        println!("| {label} | – | – | 0 |");
    } else {
        println!(
            "| {label} | {} | {} | {} |",
            s.p50.as_millis(),
            s.p99.as_millis(),
            s.count
        );
    }
}

/// What the goals take from the moves.
struct Moved {
    /// First connection reaching the new instance, every address.
    first: Summary,
    steady: Summary,
    /// Addresses (of all moves) that never reached it.
    missing: usize,
}

/// "12 reply timed out, 3 reset", or "–".
fn misses_text<'a>(of: impl Iterator<Item = &'a Switch>) -> String {
    let mut all: std::collections::BTreeMap<&str, usize> = Default::default();
    for s in of {
        for (why, n) in &s.misses_after {
            *all.entry(why).or_default() += n;
        }
    }
    if all.is_empty() {
        return "–".into();
    }
    let parts: Vec<String> = all.iter().map(|(why, n)| format!("{n} {why}")).collect();
    parts.join(", ")
}

fn print_moves(moves: &[MoveResult]) -> Moved {
    println!(
        "\n## Moves of `{WEB}` (ms after the handoff's commit, the leader's stamp; the prober starts a connection through each node's address every {} ms; {:.1} s watched after every address answered)\n",
        PROBE_EVERY.as_millis(),
        HOLD.as_secs_f64()
    );
    println!("| move | rules switched n1 / n2 / n3 | new container started (Docker) | first reached via n1 / n2 / n3 | steady from, n1 / n2 / n3 | misses after the first |");
    println!("|---|---|---:|---|---|---|");
    let per_node = |m: &MoveResult, f: &dyn Fn(usize) -> Option<u64>| -> String {
        let v: Vec<String> = (0..NAMES.len())
            .map(|i| after(m.committed_ms, f(i)))
            .collect();
        v.join(" / ")
    };
    for m in moves {
        println!(
            "| {}→{} | {} | {} | {} | {} | {} |",
            m.from,
            m.to,
            per_node(m, &|i| m.rules_ms[i]),
            after(m.committed_ms, m.started_ms),
            per_node(m, &|i| m.switches[i].reached_ms),
            per_node(m, &|i| m.switches[i].steady_ms),
            misses_text(m.switches.iter())
        );
    }
    // Per address: Some(true) the new server's own, Some(false) the others.
    let over = |own: Option<bool>, f: fn(&Switch) -> Option<u64>| {
        spans(moves.iter().flat_map(|m| {
            m.switches
                .iter()
                .zip(NAMES)
                .filter(move |(_, node)| own.is_none_or(|o| (*node == m.to) == o))
                .filter_map(move |(s, _)| f(s).map(|t| t.saturating_sub(m.committed_ms)))
        }))
    };
    let first = |s: &Switch| s.reached_ms;
    let steady = |s: &Switch| s.steady_ms;
    let started = spans(
        moves
            .iter()
            .filter_map(|m| m.started_ms.map(|t| t.saturating_sub(m.committed_ms))),
    );
    let rules = spans(moves.iter().flat_map(|m| {
        m.rules_ms
            .iter()
            .filter_map(move |t| t.map(|t| t.saturating_sub(m.committed_ms)))
    }));
    // What forwarding adds: an address's first answer after the new
    // server's own first answer, per move (0 when it was not later).
    let extra = spans(moves.iter().flat_map(|m| {
        let own = NAMES
            .iter()
            .position(|n| *n == m.to)
            .and_then(|i| m.switches[i].reached_ms);
        m.switches
            .iter()
            .zip(NAMES)
            .filter(move |(_, node)| *node != m.to)
            .filter_map(move |(s, _)| Some(s.reached_ms?.saturating_sub(own?)))
    }));
    let all_first = over(None, first);
    let own_first = over(Some(true), first);
    println!("\n| after the handoff's commit | p50 ms | p99 ms | n |");
    println!("|---|---:|---:|---:|");
    summary_row(
        "a node's rules switched (its `routing: … now …` log line), every node",
        &rules,
    );
    summary_row(
        "the new container started (Docker's State.StartedAt)",
        &started,
    );
    summary_row(
        "first connection reaching the new instance through its own node's address (no mesh: the container's start)",
        &own_first,
    );
    summary_row(
        "… through the other two addresses (kernel-forwarded)",
        &over(Some(false), first),
    );
    summary_row("… through every address", &all_first);
    summary_row(
        "what forwarding added: the other addresses' first answer after the own address's",
        &extra,
    );
    summary_row(
        "every connection from then on (steady), own node's address",
        &over(Some(true), steady),
    );
    summary_row("… the other two addresses", &over(Some(false), steady));
    let missing = moves.len() * NAMES.len() - all_first.count;
    if missing > 0 {
        println!("\n{missing} address(es) never reached the new instance before the next move (see the table).");
    }
    let own = |m: &MoveResult| NAMES.iter().position(|n| *n == m.to);
    println!(
        "\nMisses after the first answer, through the new server's own address: {}; through the others: {}.",
        misses_text(moves.iter().filter_map(|m| own(m).map(|i| &m.switches[i]))),
        misses_text(moves.iter().flat_map(|m| {
            let o = own(m);
            m.switches
                .iter()
                .enumerate()
                .filter(move |(i, _)| Some(*i) != o)
                .map(|(_, s)| s)
        }))
    );
    println!(
        "\nWhere the switch time goes (p50): every node's rules follow the commit within {} ms; \
         the new instance first answers on its own node at {} ms (the container's start; Docker \
         records StartedAt at {} ms, after its own post-start work); forwarding adds {} ms.",
        rules.p50.as_millis(),
        own_first.p50.as_millis(),
        started.p50.as_millis(),
        extra.p50.as_millis()
    );
    Moved {
        first: all_first,
        steady: over(None, steady),
        missing,
    }
}

fn print_tables(
    args: &RoutingBenchArgs,
    r: &Results,
    warnings: &[(String, usize)],
    load: &(String, String),
) {
    let mb: Vec<f64> = r
        .throughput
        .iter()
        .map(|runs| median(runs.iter().map(|x| x.transfer.mb_per_s()).collect()))
        .collect();
    println!(
        "\n## Throughput: one TCP stream from the client namespace, {} runs of {} s per path (interleaved), each repeated GETs of a {} MiB file (busybox httpd, sendfile); MB = 10^6 bytes\n",
        args.rounds,
        args.seconds,
        args.file / MIB
    );
    println!("| path | MB/s (median) | runs | / direct | client thread CPU | relay thread CPU | machine CPU busy |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    for (i, runs) in r.throughput.iter().enumerate() {
        let each: Vec<String> = runs
            .iter()
            .map(|x| format!("{:.0}", x.transfer.mb_per_s()))
            .collect();
        let share = |f: &dyn Fn(&Run) -> Option<f64>| {
            let v: Vec<f64> = runs.iter().filter_map(f).collect();
            if v.is_empty() {
                "–".to_string()
            } else {
                format!("{:.0} %", median(v))
            }
        };
        let client = share(&|x| {
            Some(100.0 * x.transfer.client_cpu.as_secs_f64() / x.transfer.elapsed.as_secs_f64())
        });
        let relay = if i == 2 {
            share(&|x| {
                x.relay_cpu
                    .map(|c| 100.0 * c.as_secs_f64() / x.transfer.elapsed.as_secs_f64())
            })
        } else {
            "–".into()
        };
        let machine = share(&|x| x.machine_busy);
        println!(
            "| {} | {:.0} | {} | {:.2}× | {client} | {relay} | {machine} |",
            PATHS[i],
            mb[i],
            each.join(" / "),
            mb[i] / mb[0]
        );
    }
    println!("\n(CPU: client and relay in % of one core; the machine's in % of all its cores.)");

    println!(
        "\n## Connection latency: {} connections per path, interleaved, ms\n",
        args.connects
    );
    println!("| path | handshake p50 | handshake p99 | handshake + GET /id p50 | p99 |");
    println!("|---|---:|---:|---:|---:|");
    for (i, path) in PATHS.iter().enumerate() {
        let note = if i == 2 {
            " (handshake with the relay itself)"
        } else {
            ""
        };
        println!(
            "| {path}{note} | {} | {} | {} | {} |",
            ms3(r.handshake[i].p50),
            ms3(r.handshake[i].p99),
            ms3(r.request[i].p50),
            ms3(r.request[i].p99)
        );
    }

    let moved = print_moves(&r.moves);
    println!("\n## Goals\n");
    println!("| goal | measured | target | |");
    println!("|---|---:|---:|---|");
    let ratio = mb[1] / mb[0];
    println!(
        "| mesh / direct throughput | {ratio:.2}× | ≥ {GOAL_RATIO:.2}× | {} |",
        met(ratio >= GOAL_RATIO)
    );
    let extra = r.handshake[1].p50.as_secs_f64() - r.handshake[0].p50.as_secs_f64();
    println!(
        "| mesh p50 − direct p50, handshake | {:+.3} ms | ≤ +{} ms | {} |",
        extra * 1e3,
        ms3(GOAL_EXTRA_P50),
        met(extra <= GOAL_EXTRA_P50.as_secs_f64())
    );
    let extra_request = r.request[1].p50.as_secs_f64() - r.request[0].p50.as_secs_f64();
    println!(
        "| … handshake + GET /id | {:+.3} ms | ≤ +{} ms | {} |",
        extra_request * 1e3,
        ms3(GOAL_EXTRA_P50),
        met(extra_request <= GOAL_EXTRA_P50.as_secs_f64())
    );
    let switched = moved.missing == 0 && moved.first.p99 <= GOAL_SWITCH_P99;
    println!(
        "| switch after the handoff: first connection reaching the new instance, p99 over every address and move | {} ms | ≤ {} ms | {} |",
        moved.first.p99.as_millis(),
        GOAL_SWITCH_P99.as_millis(),
        met(switched)
    );
    println!(
        "| (for the record) … every connection from then on (steady), p99 | {} ms | | |",
        moved.steady.p99.as_millis()
    );
    println!(
        "| (for the record) relay / direct throughput | {:.2}× | | |",
        mb[2] / mb[0]
    );
    if !warnings.is_empty() {
        println!("\nnode log warnings and errors (count, node: level, target, message head):");
        for (line, n) in warnings.iter().take(15) {
            println!("  {n:>4}  {line}");
        }
    }
    println!(
        "\nNotes: the client, the relay and the prober are threads of this process inside the \
         lab's namespaces; everything (client, relay, app, each namespace's forwarding) shares \
         this machine's cores, so a path that costs more CPU is slower here. A switch is timed \
         to the start of the first connection that reached the new instance (±{} ms). \
         The machine's load average (1, 5, 15 min) was {} at the start and {} at the end.",
        PROBE_EVERY.as_millis(),
        load.0,
        load.1
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_lower_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.0);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn the_applications_parse() {
        let deployment = format!("version: 1\nnodes:\n  n1: [{STREAM}, {WEB}]\n");
        let parsed = crate::config::parse(
            &deployment,
            "deployment.yml",
            &applications(512),
            "application.yml",
        );
        assert!(parsed.is_ok(), "{:?}", parsed.err());
    }
}
