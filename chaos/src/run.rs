//! One chaos run from start to verdict: network, cluster, deployment,
//! workload and nemesis for `--time`, healing, convergence, the final
//! files, teardown, then the checkers. Every wait is bounded; an error
//! before the workload starts means the run could not run (exit 2), and
//! teardown happens on every path (the guards' `Drop`s).
//!
//! Threads: this one stays in the root namespace (DOCKER-USER rules and
//! teardown live there); the clients, the nemesis and every `ctl` call run
//! on threads that entered the clients' namespace.

use crate::app::{self, Apps, LEDGER, LEDGER_FILE};
use crate::clock::RunClock;
use crate::cluster::Cluster;
use crate::ctl::{Ctl, Outcome};
use crate::docker_events::DockerEvents;
use crate::history::{EventType, OpKind};
use crate::nemesis::{sleep_until, Nemesis};
use crate::record::Op;
use crate::record::{History, Jsonl};
use crate::schedule::{self, Step};
use crate::topology::{self, Slot, Topology};
use crate::views;
use crate::witness::Witness;
use crate::workload::{self, Env, FINAL_PROCESS, SETUP_PROCESS};
use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the cluster may take to elect its first leader.
const FIRST_LEADER: Duration = Duration::from_secs(60);
/// How long the first deployment may take to run every app.
const FIRST_DEPLOY: Duration = Duration::from_secs(120);
/// The default convergence bound after the last fault healed
/// (`convergence.json`); CI passes a more generous one.
pub const CONVERGENCE_BOUND_S: u64 = 30;
/// How long a planted run goes on after the first evidence of its bug.
const CAUGHT_LINGER_NS: u64 = 2_000_000_000;
/// The checkers' time budget.
const CHECK_BUDGET: Duration = Duration::from_secs(120);
/// How long clients get to finish their last operation after the stop.
const CLIENT_DRAIN: Duration = Duration::from_secs(90);

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub time: Duration,
    pub out: PathBuf,
    pub nodes: usize,
    pub nemeses: Vec<String>,
    pub plant_bug: Option<String>,
    pub clients: u32,
    pub registers: usize,
    pub bin: PathBuf,
    /// Seconds after the heal within which the cluster must converge.
    pub convergence_bound_s: u64,
    /// Every node's data dir on its own lazyfs (the power nemeses need it).
    pub lazyfs: bool,
}

/// Runs, checks, and returns the process exit code (0, 1, 2 or 3).
pub fn run(opts: &Options) -> i32 {
    match execute(opts) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("flocker-chaos: could not run: {e:#}");
            let _ = std::fs::write(opts.out.join("error.txt"), format!("{e:#}\n"));
            return 2;
        }
    }
    if crate::signals::stop_requested() {
        eprintln!("flocker-chaos: interrupted; checking what was recorded");
    }
    match crate::check_shim::check_and_report(&opts.out, CHECK_BUDGET) {
        Ok(code) => {
            print_summary(&opts.out);
            if code == 0 {
                // The nodes' RocksDB dirs (~80 MB each) matter only for a
                // post-mortem; a valid run keeps its logs and files.
                let _ = std::fs::remove_dir_all(opts.out.join("data"));
                let _ = std::fs::remove_dir_all(opts.out.join("lazyfs"));
            }
            code
        }
        Err(e) => {
            eprintln!("flocker-chaos: checking failed: {e:#}");
            2
        }
    }
}

/// Prints each invariant's result from verdict.json.
fn print_summary(out: &Path) {
    let Ok(text) = std::fs::read_to_string(out.join("verdict.json")) else {
        return;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    if let Some(invs) = v["invariants"].as_object() {
        for (name, r) in invs {
            println!(
                "{name}: {} — {}",
                validity(&r["valid"]),
                r["summary"].as_str().unwrap_or("")
            );
        }
    }
    println!("verdict: {}", validity(&v["valid"]));
}

fn validity(v: &serde_json::Value) -> &'static str {
    match v.as_bool() {
        Some(true) => "valid",
        Some(false) => "INVALID",
        None => "unknown",
    }
}

fn execute(opts: &Options) -> Result<()> {
    let out = &opts.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = &out.canonicalize()?;
    let work = out.join("work");
    std::fs::create_dir_all(&work)?;
    let clock = RunClock::start();
    let names: Vec<String> = (1..=opts.nodes).map(|i| format!("n{i}")).collect();

    let slot = Slot::claim()?;
    eprintln!(
        "flocker-chaos: network slot {} (10.213.{}.0/24)",
        slot.n, slot.n
    );
    let topo = Arc::new(Topology::create(slot, &names)?);
    if opts.lazyfs {
        crate::fuse_cost::report(out);
    }
    let cluster = Cluster::prepare(&opts.bin, out, &topo, opts.plant_bug.clone(), opts.lazyfs)?;
    let cluster_id = cluster.cluster_id.clone();
    let cluster = Arc::new(Mutex::new(cluster));

    let steps = schedule::schedule(
        opts.seed,
        opts.time,
        &opts.nemeses,
        opts.plant_bug.as_deref(),
    );
    write_run_json(out, opts, &names, &cluster_id, &steps)?;
    eprintln!(
        "flocker-chaos: {} faults scheduled over {:?}",
        steps.len(),
        opts.time
    );

    app::build_images(&work, &topo.engine_hosts())?;
    let history = Arc::new(History::create(&out.join("history.jsonl"), clock)?);
    let witness_log = Arc::new(Jsonl::create(&out.join("witness.jsonl"), clock)?);
    let events_log = Arc::new(Jsonl::create(&out.join("docker-events.jsonl"), clock)?);
    let nemesis_log = Arc::new(Jsonl::create(&out.join("nemesis.jsonl"), clock)?);
    let moves_log = Arc::new(Jsonl::create(&out.join("moves.jsonl"), clock)?);
    let cuts_log = Arc::new(Jsonl::create(&out.join("cuts.jsonl"), clock)?);
    let routed_log = Arc::new(Jsonl::create(&out.join("routed.jsonl"), clock)?);
    let owners_log = Arc::new(Jsonl::create(&out.join("owners.jsonl"), clock)?);
    let failovers_log = Arc::new(Jsonl::create(&out.join("failovers.jsonl"), clock)?);
    let caught = Arc::new(crate::caught::Caught::default());
    let witness = Witness::start(topo.slot.gateway(), witness_log, caught.clone())?;
    let events = DockerEvents::start(&topo.engine_hosts(), &cluster_id, events_log)?;

    {
        let mut c = cluster.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..names.len() {
            c.start(&topo, i)?;
        }
    }
    let apps = Apps::new(opts.registers, &names[0], witness.addr);
    let ctl = {
        let c = cluster.lock().unwrap_or_else(|e| e.into_inner());
        Ctl {
            bin: c.bin.clone(),
            certs: c.admin_certs(),
        }
    };
    let node_addrs: Vec<(String, String)> = {
        let c = cluster.lock().unwrap_or_else(|e| e.into_inner());
        c.nodes
            .iter()
            .map(|n| (n.name.clone(), n.addr.clone()))
            .collect()
    };
    let env = Arc::new(Env::new(
        ctl,
        node_addrs,
        apps,
        history,
        moves_log,
        topo.slot.client_ns(),
        work.clone(),
        clock,
        opts.seed,
        caught,
    ));

    // Everything that talks to the cluster runs in the clients' namespace.
    let phases = {
        let env = env.clone();
        let cluster = cluster.clone();
        let topo = topo.clone();
        let opts = opts.clone();
        let out = out.clone();
        std::thread::Builder::new()
            .name("run".into())
            .spawn(move || -> Result<Phases> {
                topology::enter_netns(&env.client_ns)?;
                let logs = Logs {
                    nemesis: nemesis_log,
                    cuts: cuts_log,
                    routed: routed_log,
                    observer: crate::moves::Logs {
                        owners: owners_log,
                        failovers: failovers_log,
                    },
                };
                drive(&opts, &out, &env, cluster, topo, logs, &steps, clock)
            })?
    };
    let phases = phases
        .join()
        .map_err(|_| anyhow::anyhow!("the run thread panicked"))??;

    // No heartbeat arrives after this, so the log copied next holds every
    // record a recorded heartbeat acknowledged.
    drop(witness);
    copy_ledger_log(out, &cluster, phases.ledger_owner.as_deref())?;
    // Docker's stream lags a little behind the engine.
    std::thread::sleep(Duration::from_millis(500));
    drop(events);
    if crate::signals::stop_requested() {
        // Convergence was never waited for: leave it unknown, not failed.
        eprintln!("flocker-chaos: interrupted: convergence.json not written");
    } else {
        std::fs::write(
            out.join("convergence.json"),
            serde_json::to_string_pretty(&json!({
                "healed_at_ns": phases.healed_at_ns,
                "converged_at_ns": phases.converged_at_ns,
                "bound_s": opts.convergence_bound_s,
                "last_problem": phases.last_problem,
            }))?,
        )?;
    }
    cluster.lock().unwrap_or_else(|e| e.into_inner()).kill_all();
    topo.remove_all_containers();
    // The engines' directories go with the topology; their logs stay.
    for node in &names {
        let log = flocker::netlab::engine_log(&topo.slot.engine_dir(node));
        let _ = std::fs::copy(&log, out.join("logs").join(format!("{node}.dockerd.log")));
    }
    let _ = std::fs::remove_dir_all(&work);
    // `topo` (and with it the namespaces, bridge and rules) goes here; the
    // data dirs stay in DIR/data for inspection.
    drop(env);
    Ok(())
}

/// The files the cluster-facing phases write besides the history.
struct Logs {
    nemesis: Arc<Jsonl>,
    cuts: Arc<Jsonl>,
    routed: Arc<Jsonl>,
    observer: crate::moves::Logs,
}

/// What the cluster-facing phases found.
struct Phases {
    healed_at_ns: u64,
    converged_at_ns: Option<u64>,
    last_problem: Option<String>,
    ledger_owner: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn drive(
    opts: &Options,
    out: &Path,
    env: &Arc<Env>,
    cluster: Arc<Mutex<Cluster>>,
    topo: Arc<Topology>,
    logs: Logs,
    steps: &[Step],
    clock: RunClock,
) -> Result<Phases> {
    let stop = || crate::signals::stop_requested();
    // A planted run ends once its bug has shown for a little while (more
    // evidence for the report), not when its time is up.
    let planted = opts.plant_bug.is_some();
    let enough = || {
        stop()
            || planted
                && env
                    .caught
                    .at_ns()
                    .is_some_and(|t| clock.now_ns().saturating_sub(t) > CAUGHT_LINGER_NS)
    };
    wait_for_leader(env)?;
    deploy_initial(env, &work_dir(out))?;
    wait_for_apps(env, FIRST_DEPLOY, &stop).context("the first deployment did not converge")?;
    eprintln!("flocker-chaos: cluster up, apps running; workload and nemesis start");

    let observer = crate::moves::Observer::start(env.clone(), LEDGER, logs.observer);
    let clients = workload::start(env.clone(), opts.clients);
    let routed = crate::routed::start(env.clone(), logs.routed);
    let mut nemesis = Nemesis::new(
        cluster,
        topo,
        env.clone(),
        logs.nemesis,
        logs.cuts,
        opts.seed,
    );
    let start = Instant::now();
    nemesis.run(steps, start, &enough);
    sleep_until(start + opts.time, &enough);
    env.stop.store(true, Ordering::SeqCst);
    nemesis.heal_all();
    let healed_at_ns = clock.now_ns();
    eprintln!(
        "flocker-chaos: healed at {:.1} s; waiting for convergence",
        healed_at_ns as f64 / 1e9
    );
    let (converged_at_ns, last_problem) =
        converge(env, clock, healed_at_ns, opts.convergence_bound_s);
    match converged_at_ns {
        _ if stop() => {}
        Some(t) => eprintln!(
            "flocker-chaos: converged {:.1} s after healing",
            (t - healed_at_ns) as f64 / 1e9
        ),
        None => eprintln!(
            "flocker-chaos: did not converge within {} s: {}",
            opts.convergence_bound_s,
            last_problem.as_deref().unwrap_or("?")
        ),
    }
    let drain = Instant::now() + CLIENT_DRAIN;
    for c in clients {
        while !c.is_finished() && Instant::now() < drain {
            std::thread::sleep(Duration::from_millis(50));
        }
        if c.is_finished() {
            let _ = c.join();
        }
    }
    if let Some(r) = routed {
        // Each read is bounded (a few seconds): no deadline needed.
        let _ = r.join();
    }
    nemesis.join_moves(CLIENT_DRAIN);
    observer.stop();
    final_reads(env);
    save_cluster_history(env, out);
    let ledger_owner = owner_of(env, LEDGER);
    Ok(Phases {
        healed_at_ns,
        converged_at_ns,
        last_problem,
        ledger_owner,
    })
}

fn work_dir(out: &Path) -> PathBuf {
    out.join("work")
}

fn wait_for_leader(env: &Env) -> Result<String> {
    let deadline = Instant::now() + FIRST_LEADER;
    let mut last = String::new();
    while Instant::now() < deadline && !crate::signals::stop_requested() {
        for (_, addr) in &env.nodes {
            match env.ctl.call(addr, &["nodes", "-o", "json"]) {
                Outcome::Ok(o) => match views::agreed_leader(&o) {
                    Some(l) => return Ok(l),
                    None => last = "no agreed leader yet".into(),
                },
                Outcome::Fail(w) | Outcome::Unknown(w) => last = w,
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("no leader within {FIRST_LEADER:?}: {last}")
}

fn deploy_initial(env: &Env, work: &Path) -> Result<()> {
    let (d, a) = env.apps.files(&Default::default());
    let dir = work.join("initial");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("deployment.yml"), d)?;
    std::fs::write(dir.join("application.yml"), a)?;
    let dp = dir.join("deployment.yml").display().to_string();
    let ap = dir.join("application.yml").display().to_string();
    let id = format!("chaos-initial-{}", env.seed);
    // The history starts with the registers' initial values, written by
    // this deploy (one write per register, all with its request id).
    let ops: Vec<Op> = env
        .apps
        .registers
        .iter()
        .zip(0u32..)
        .map(|(key, i)| Op {
            process: SETUP_PROCESS + i,
            f: OpKind::Write,
            key: key.clone(),
            value: Some(app::INITIAL_VALUE.to_string()),
            node: env.nodes[0].0.clone(),
            request_id: id.clone(),
        })
        .collect();
    let invoked: Vec<u64> = ops
        .iter()
        .map(|op| {
            env.history
                .record(op, EventType::Invoke, op.value.clone(), None)
        })
        .collect();
    let mut last = String::new();
    for _ in 0..10 {
        for (_, addr) in &env.nodes {
            match env
                .ctl
                .call(addr, &["deploy", &dp, &ap, "--request-id", &id])
            {
                Outcome::Ok(_) => {
                    for (op, invoke_ns) in ops.iter().zip(&invoked) {
                        let ok_ns = env
                            .history
                            .record(op, EventType::Ok, op.value.clone(), None);
                        env.caught
                            .write_ok(&op.key, app::INITIAL_VALUE, *invoke_ns, ok_ns);
                    }
                    return Ok(());
                }
                Outcome::Fail(w) if w.contains("error(s)") => {
                    bail!("the generated configuration is invalid: {w}")
                }
                Outcome::Fail(w) | Outcome::Unknown(w) => last = w,
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    for op in &ops {
        env.history
            .record(op, EventType::Info, op.value.clone(), Some(last.clone()));
    }
    bail!("deploying the initial configuration: {last}")
}

/// Waits until every app runs once, where placed; the last problem on timeout.
fn wait_for_apps(env: &Env, bound: Duration, stop: &dyn Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + bound;
    let mut last = String::from("not checked");
    while Instant::now() < deadline && !stop() {
        match apps_settled(env) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("{last}")
}

fn apps_settled(env: &Env) -> Result<(), String> {
    let mut last = String::new();
    for (_, addr) in &env.nodes {
        match env.ctl.call(addr, &["status", "-o", "json"]) {
            Outcome::Ok(o) => {
                let apps = views::status_apps(&o).ok_or("unreadable status")?;
                return views::all_apps_placed_once(&apps, &env.apps.all());
            }
            Outcome::Fail(w) | Outcome::Unknown(w) => last = w,
        }
    }
    Err(format!("no node answered status: {last}"))
}

/// After the heal: every node answers and agrees, every app runs once where
/// placed, and a linearizable read succeeds — polled up to the bound.
fn converge(
    env: &Env,
    clock: RunClock,
    healed_at_ns: u64,
    bound_s: u64,
) -> (Option<u64>, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(bound_s + 15);
    let mut last = None;
    while Instant::now() < deadline && !crate::signals::stop_requested() {
        match converged_now(env) {
            Ok(()) => return (Some(clock.now_ns()), None),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = healed_at_ns;
    (None, last)
}

fn converged_now(env: &Env) -> Result<(), String> {
    for (name, addr) in &env.nodes {
        match env.ctl.call(addr, &["nodes", "-o", "json"]) {
            Outcome::Ok(o) => views::all_nodes_healthy(&o, env.nodes.len())
                .map_err(|e| format!("via {name}: {e}"))?,
            Outcome::Fail(w) | Outcome::Unknown(w) => {
                return Err(format!("{name} does not answer: {w}"))
            }
        }
    }
    apps_settled(env)?;
    match env
        .ctl
        .call(&env.nodes[0].1, &["config", "show", "-o", "json"])
    {
        Outcome::Ok(_) => Ok(()),
        Outcome::Fail(w) | Outcome::Unknown(w) => Err(format!("linearizable read failed: {w}")),
    }
}

/// One read of every register through every node, after convergence: the
/// history ends with what the cluster finally holds.
fn final_reads(env: &Env) {
    let mut rng = ChaCha8Rng::seed_from_u64(env.seed ^ 0xf1);
    for (node, _) in &env.nodes {
        for key in &env.apps.registers {
            workload::read(env, &mut rng, FINAL_PROCESS, key, node);
        }
    }
}

/// Pages of `ctl history` read at most: the cluster keeps at most
/// `flocker::state::history::HISTORY_CAPACITY` (1000) changes.
const HISTORY_PAGES: usize = 12;
const HISTORY_PAGE: u32 = 100;

/// Writes the cluster's whole history of changes (oldest first) to
/// `cluster-history.json`: the bounded-loss checker finds the failovers in
/// it. Not written when no node answers (the checker then says unknown).
fn save_cluster_history(env: &Env, out: &Path) {
    let mut entries: Vec<serde_json::Value> = Vec::new();
    let mut before: Option<u64> = None;
    for _ in 0..HISTORY_PAGES {
        let limit = HISTORY_PAGE.to_string();
        let mut args = vec!["history", "-o", "json", "--limit", &limit];
        let cursor = before.map(|b| b.to_string());
        if let Some(c) = &cursor {
            args.extend(["--before", c]);
        }
        let page = env
            .nodes
            .iter()
            .find_map(|(_, addr)| match env.ctl.call(addr, &args) {
                Outcome::Ok(o) => serde_json::from_str::<Vec<serde_json::Value>>(&o).ok(),
                _ => None,
            });
        let Some(page) = page else {
            eprintln!("flocker-chaos: the cluster's history could not be read");
            return;
        };
        // A page may be short of the limit (a reply's byte bound): go on
        // until one comes back empty.
        let oldest = page.iter().filter_map(|e| e["index"].as_u64()).min();
        entries.extend(page);
        match oldest {
            Some(i) => before = Some(i),
            None => break,
        }
    }
    entries.sort_by_key(|e| e["index"].as_u64());
    entries.dedup_by_key(|e| e["index"].as_u64());
    match serde_json::to_string_pretty(&entries) {
        Ok(text) => {
            if let Err(e) = std::fs::write(out.join("cluster-history.json"), text) {
                eprintln!("flocker-chaos: writing cluster-history.json: {e}");
            }
        }
        Err(e) => eprintln!("flocker-chaos: cluster history: {e}"),
    }
}

fn owner_of(env: &Env, app: &str) -> Option<String> {
    for (_, addr) in &env.nodes {
        if let Outcome::Ok(o) = env.ctl.call(addr, &["status", "-o", "json"]) {
            return views::status_apps(&o)?
                .into_iter()
                .find(|a| a.name == app)?
                .desired_node;
        }
    }
    None
}

/// Copies the ledger's log from its owner's volume to DIR/volumes/.
fn copy_ledger_log(out: &Path, cluster: &Arc<Mutex<Cluster>>, owner: Option<&str>) -> Result<()> {
    let dir = out.join("volumes");
    std::fs::create_dir_all(&dir)?;
    let Some(owner) = owner else {
        eprintln!("flocker-chaos: the ledger's owner is unknown: volumes/{LEDGER}.log not copied");
        return Ok(());
    };
    let c = cluster.lock().unwrap_or_else(|e| e.into_inner());
    let Some(i) = c.index(owner) else {
        return Ok(());
    };
    let src = c.nodes[i]
        .data_dir
        .join("volumes")
        .join(LEDGER)
        .join("data")
        .join(LEDGER_FILE);
    std::fs::copy(&src, dir.join(format!("{LEDGER}.log")))
        .with_context(|| format!("copying {}", src.display()))?;
    Ok(())
}

fn write_run_json(
    out: &Path,
    opts: &Options,
    names: &[String],
    cluster_id: &str,
    steps: &[Step],
) -> Result<()> {
    let v = json!({
        "seed": opts.seed,
        "nodes": names,
        "nemeses": opts.nemeses,
        "plant_bug": opts.plant_bug,
        "time_s": opts.time.as_secs(),
        "cluster_id": cluster_id,
        "clients": opts.clients,
        "registers": (1..=opts.registers).map(|i| format!("reg{i}")).collect::<Vec<_>>(),
        // Apps whose heartbeats acknowledge durable records on a volume
        // (volumes/<app>.log); `beacon` heartbeats with seq 0.
        "volume_apps": [LEDGER],
        // Apps whose volume has replicas: a failover may lose what they
        // acknowledged within max_lag of losing their host (bounded-loss).
        "replicated": {LEDGER: {
            "replicas": app::LEDGER_REPLICAS,
            "max_lag_ms": app::LEDGER_MAX_LAG_MS,
        }},
        "witness_apps": [LEDGER, app::BEACON],
        "schedule": steps.iter().map(|st| json!({
            "at_ms": st.at.as_millis() as u64,
            "duration_ms": st.duration.as_millis() as u64,
            "fault": st.fault,
            "with_move": st.with_move,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(out.join("run.json"), serde_json::to_string_pretty(&v)?)?;
    Ok(())
}
