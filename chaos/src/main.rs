//! `flocker-chaos`: one chaos run against a real flocker cluster.
//!
//! Exit codes: 0 every invariant holds, 1 a violation, 2 the run could not
//! run (bad arguments, missing tools, no cluster), 3 a checker ran out of
//! its budget or input (unknown). `chaos/run` builds and then execs this.

use clap::Parser;
use flocker_chaos::{run, schedule, signals};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "flocker-chaos",
    about = "Jepsen-style chaos run against a real flocker cluster"
)]
struct Args {
    /// Seeds the nemesis schedule and every workload choice.
    #[arg(long)]
    seed: u64,
    /// Seconds of workload and faults (setup and checking come on top).
    #[arg(long, value_name = "SECONDS")]
    time: u64,
    /// Where the run writes its files (created; should be empty).
    #[arg(long)]
    out: PathBuf,
    /// Cluster size: 3 or 5.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Comma-separated:
    /// partition,kill,pause,clock,link,membership,crash,power,power-all.
    #[arg(
        long,
        default_value = "partition,kill,pause,clock,link,membership,crash,power,power-all"
    )]
    nemesis: String,
    /// Data dirs on the plain file system, not each on its own lazyfs (no
    /// power nemeses then).
    #[arg(long)]
    no_lazyfs: bool,
    /// Passed to every node (`flocker node --plant-bug NAME`); the run uses
    /// the schedule that exposes it: stale-reads or no-fencing.
    #[arg(long, value_name = "NAME")]
    plant_bug: Option<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 3)]
    clients: u32,
    /// Register apps the clients write and read.
    #[arg(long, default_value_t = 3)]
    registers: usize,
    /// The flocker binary (default: `flocker` next to this binary).
    #[arg(long)]
    flocker: Option<PathBuf>,
    /// Seconds after the last fault heals within which every node must
    /// agree and every app run once where placed.
    #[arg(long, default_value_t = run::CONVERGENCE_BOUND_S)]
    convergence_bound: u64,
}

fn main() {
    let args = Args::parse();
    match options(args) {
        Ok(opts) => {
            signals::install();
            std::process::exit(run::run(&opts));
        }
        Err(e) => {
            eprintln!("flocker-chaos: {e}");
            std::process::exit(2);
        }
    }
}

fn options(a: Args) -> Result<run::Options, String> {
    if a.nodes != 3 && a.nodes != 5 {
        return Err(format!("--nodes must be 3 or 5, not {}", a.nodes));
    }
    if a.time < 10 {
        return Err("--time must be at least 10 seconds".into());
    }
    if !(1..=16).contains(&a.clients) {
        return Err("--clients must be 1..=16".into());
    }
    if !(1..=16).contains(&a.registers) {
        return Err("--registers must be 1..=16".into());
    }
    let nemeses = schedule::parse_nemeses(&a.nemesis)?;
    if a.no_lazyfs && nemeses.iter().any(|n| n.starts_with("power")) {
        return Err(
            "--no-lazyfs leaves nothing for the power nemeses to cut: drop them from --nemesis"
                .into(),
        );
    }
    if let Some(bug) = &a.plant_bug {
        if bug != "stale-reads" && bug != "no-fencing" {
            return Err(format!(
                "--plant-bug must be stale-reads or no-fencing, not '{bug}'"
            ));
        }
    }
    if a.out.exists()
        && std::fs::read_dir(&a.out)
            .map_err(|e| e.to_string())?
            .next()
            .is_some()
    {
        return Err(format!("--out {} exists and is not empty", a.out.display()));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("must run as root (network namespaces, iptables)".into());
    }
    let bin = match a.flocker {
        Some(b) => b,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("flocker"),
    };
    if !bin.exists() {
        return Err(format!(
            "flocker binary {} not found (pass --flocker)",
            bin.display()
        ));
    }
    Ok(run::Options {
        seed: a.seed,
        time: Duration::from_secs(a.time),
        out: a.out,
        nodes: a.nodes,
        nemeses,
        plant_bug: a.plant_bug,
        clients: a.clients,
        registers: a.registers,
        bin,
        convergence_bound_s: a.convergence_bound,
        lazyfs: !a.no_lazyfs,
    })
}
