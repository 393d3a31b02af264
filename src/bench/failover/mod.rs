//! `flocker bench failover`: volume replicas and automatic failover (issue
//! 15) on real three-node clusters with the local engine, all in one run,
//! against the goals:
//!
//! 1. a host crash until the stateful app runs on another node with its
//!    data, over repeated trials with the default timings (`crash`);
//! 2. the acknowledged writes each crash lost, in seconds, from an app that
//!    fsyncs and acknowledges numbered records (`writer`);
//! 3. the app's stall per replica point with 1 MiB and 10 MiB written
//!    between points (the owner's `volume point taken` lines, `points`);
//! 4. the app's fsync-write latency with its volume replicated and not;
//! 5. chunk bytes shipped to the replica against the bytes the app changed
//!    (3–5: `load`).
//!
//! 3–5 run on each backend asked for: `dir` on this machine's temporary
//! directory, btrfs and XFS on loop-mounted file systems (`LoopFs`) holding
//! the nodes' data directories; the crashes run on `dir`, the default
//! backend on ext4. It needs root (the loop mounts, killing the writer from
//! the host) and Docker. Timings on a shared VM are noisy, and the three
//! nodes share one disk, so the replica's writes compete with the app's
//! fsyncs as they would not across hosts: compare within one run only.

mod crash;
mod load;
mod points;
mod writer;

use super::cluster::FlockerCluster;
use super::docker_cli::{docker, remove_matching};
use super::logs::{log_warnings, now_ms};
use super::stats::{ms, summarize, Summary};
use crate::agent::{LABEL_APP, LABEL_CLUSTER, LABEL_NODE};
use crate::runtime::{build_busybox_image, DockerRuntime, TEST_IMAGE};
use crate::volume::backend::loopfs::{LoopFs, LoopFsKind};
use anyhow::{bail, Context, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct FailoverBenchArgs {
    /// Host-crash trials (on the dir backend).
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// The app's max_lag: its points are taken every third of it (at least
    /// every second); the loss goal.
    #[arg(long, default_value = "3s", value_parser = crate::config::parse_duration_ms)]
    pub max_lag: u64,
    /// Backends to measure stalls, latency and bytes on.
    #[arg(long, value_delimiter = ',', default_value = "dir,btrfs,xfs")]
    pub backends: Vec<BenchBackend>,
    /// The file the dirty blocks are scattered over (it is re-read whole by
    /// a `dir` capture and by the point's scan).
    #[arg(long, default_value = "64M", value_parser = crate::config::parse_size)]
    pub file_size: u64,
    /// Points measured at each dirty size.
    #[arg(long, default_value_t = 12)]
    pub points: usize,
    /// Seconds of fsync-write latency with replication off, then on.
    #[arg(long, default_value_t = 10)]
    pub window: u64,
    /// Keep the node logs (copied to the temporary directory).
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchBackend {
    Dir,
    Btrfs,
    Xfs,
}

impl fmt::Display for BenchBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BenchBackend::Dir => "dir",
            BenchBackend::Btrfs => "btrfs",
            BenchBackend::Xfs => "xfs",
        })
    }
}

/// Waiting for any one step (a deploy, a point, a failover).
pub const LIMIT: Duration = Duration::from_secs(60);
/// Each loop-mounted file system (sparse).
const LOOP_IMAGE_BYTES: u64 = 4 << 30;
const FAILOVER_GOAL: Duration = Duration::from_secs(10);
const STALL_GOAL: Duration = Duration::from_millis(50);
const LATENCY_GOAL: f64 = 1.1;
const BYTES_GOAL: f64 = 1.2;
const MIB: f64 = (1u64 << 20) as f64;

/// One cluster on one backend.
pub struct Bench {
    pub cluster: FlockerCluster,
    pub cluster_id: String,
    pub work: PathBuf,
}

impl Bench {
    /// The live copy of `app`'s volume on `node`.
    pub fn volume_dir(&self, node: &str, app: &str) -> PathBuf {
        self.work
            .join(format!("data-{node}"))
            .join("volumes")
            .join(app)
            .join("data")
    }

    /// Deploys the writer as the only app and waits for its container:
    /// (container, node).
    pub async fn deploy_writer(
        &self,
        app: &str,
        replicas: u32,
        max_lag_ms: u64,
    ) -> Result<(String, String)> {
        let leader = self.cluster.leader(&[0, 1, 2], LIMIT).await?;
        self.cluster
            .deploy(
                leader,
                &format!("version: 1\nanywhere: [{app}]\n"),
                &writer::application(app, replicas, max_lag_ms),
            )
            .await?;
        wait_for(LIMIT, &format!("{app} running"), || {
            Ok(running_of(&self.cluster_id, app)?.into_iter().next())
        })
        .await
    }

    /// Waits until `node` logged `count` shipped points of `app` since
    /// `since_ms`.
    pub async fn wait_shipped(
        &self,
        node: &str,
        app: &str,
        since_ms: u64,
        count: usize,
    ) -> Result<()> {
        let what = format!("{count} points of {app} shipped by {node}");
        wait_for(LIMIT, &what, || {
            let shipped = points::read(&self.work, node)
                .shipped_since(app, since_ms)
                .count();
            Ok((shipped >= count).then_some(()))
        })
        .await
        .with_context(|| {
            let warnings: Vec<String> = log_warnings(&self.work, &[node])
                .into_iter()
                .take(5)
                .map(|(line, n)| format!("{n}× {line}"))
                .collect();
            format!("{node}'s warnings: {warnings:#?}")
        })
    }

    /// The sequence number of the newest point of `app` `node` took.
    pub fn newest_point(&self, node: &str, app: &str) -> Result<u64> {
        points::read(&self.work, node)
            .taken_since(app, 0)
            .last()
            .map(|t| t.seq)
            .with_context(|| format!("{node} has taken no point of {app}"))
    }
}

pub fn now_us() -> u64 {
    now_ms() * 1000
}

/// Running (or paused) containers of `app` in this cluster: (short id,
/// node).
pub fn running_of(cluster_id: &str, app: &str) -> Result<Vec<(String, String)>> {
    Ok(docker(&[
        "ps",
        "--filter",
        &format!("label={LABEL_CLUSTER}={cluster_id}"),
        "--filter",
        &format!("label={LABEL_APP}={app}"),
        "--format",
        &format!("{{{{.ID}}}} {{{{.Label \"{LABEL_NODE}\"}}}}"),
    ])?
    .lines()
    .filter_map(|l| {
        let (id, node) = l.split_once(' ')?;
        Some((id.to_string(), node.to_string()))
    })
    .collect())
}

/// Polls `probe` until it yields, for at most `limit`.
pub async fn wait_for<T>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(found) = probe()? {
            return Ok(found);
        }
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one backend's cluster measured.
struct BackendRun {
    backend: BenchBackend,
    /// The node's own description of its backend.
    described: String,
    load: load::Load,
    crashes: Option<crash::Crashes>,
}

pub async fn run(args: FailoverBenchArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench failover needs root (loop mounts; it kills the app's process from the host)");
    }
    if args.points == 0 || args.window == 0 {
        bail!("--points and --window must be at least 1");
    }
    build_busybox_image(&DockerRuntime::local(), TEST_IMAGE)
        .await
        .context("building the test image")?;
    let interval = crate::replication::point_interval(args.max_lag);
    println!(
        "failover: max_lag {} (a point every {:.1} s), dirty blocks scattered over a {:.0} MiB file",
        crate::config::format_duration_ms(args.max_lag),
        interval.as_secs_f64(),
        args.file_size as f64 / MIB
    );
    let mut runs = Vec::new();
    let mut failed = Vec::new();
    for &backend in &args.backends {
        println!("{backend}:");
        match one_backend(backend, &args).await {
            Ok(run) => runs.push(run),
            Err(e) => {
                println!("  {backend}: not measured: {e:#}");
                failed.push(format!("{backend}: {e:#}"));
            }
        }
    }
    print_table(&runs, &args);
    if !failed.is_empty() {
        bail!("parts not measured:\n{}", failed.join("\n"));
    }
    Ok(())
}

async fn one_backend(backend: BenchBackend, args: &FailoverBenchArgs) -> Result<BackendRun> {
    let fs = match backend {
        BenchBackend::Dir => None,
        BenchBackend::Btrfs => Some(LoopFs::new(LoopFsKind::Btrfs, LOOP_IMAGE_BYTES)),
        BenchBackend::Xfs => Some(LoopFs::new(LoopFsKind::Xfs, LOOP_IMAGE_BYTES)),
    }
    .transpose()
    .map_err(|e| anyhow::anyhow!(e))?;
    let base = fs
        .as_ref()
        .map_or_else(std::env::temp_dir, |f| f.path().to_path_buf());
    let work = base.join(format!(
        "flocker-bench-failover-{backend}-{:x}",
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&work)?;
    let cluster = FlockerCluster::start(&work, |name| {
        let i: u8 = name.trim_start_matches('n').parse().unwrap_or(0);
        vec![
            format!("--volume-backend={backend}"),
            format!("--publish-ip=127.0.0.{}", 130 + i),
        ]
    })?;
    let cluster_id = crate::node::cluster_id(&cluster.certs)?;
    let mut bench = Bench {
        cluster,
        cluster_id,
        work,
    };
    let result = measure(&mut bench, backend, args).await;
    let Bench {
        cluster,
        cluster_id,
        work,
    } = bench;
    drop(cluster);
    remove_matching(&[&format!("label={LABEL_CLUSTER}={cluster_id}")])?;
    if args.keep {
        keep_logs(&work, backend);
    }
    if fs.is_none() && !args.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    drop(fs);
    result
}

async fn measure(
    bench: &mut Bench,
    backend: BenchBackend,
    args: &FailoverBenchArgs,
) -> Result<BackendRun> {
    bench.cluster.leader(&[0, 1, 2], LIMIT).await?;
    let n1 = std::fs::read_to_string(bench.work.join("n1.log")).unwrap_or_default();
    let described = n1
        .lines()
        .find_map(|l| Some(l.split_once("volume backend: ")?.1.to_string()))
        .unwrap_or_else(|| "?".into());
    println!("  volume backend: {described}");
    let load = load::measure(bench, args).await?;
    print_load(&load);
    let crashes = if backend == BenchBackend::Dir && args.trials > 0 {
        Some(crash::run(bench, args).await)
    } else {
        None
    };
    Ok(BackendRun {
        backend,
        described,
        load,
        crashes,
    })
}

fn keep_logs(work: &Path, backend: BenchBackend) {
    let to = std::env::temp_dir().join(format!(
        "flocker-bench-failover-logs-{backend}-{:x}",
        rand::random::<u32>()
    ));
    if std::fs::create_dir_all(&to).is_ok() {
        for name in super::cluster::NAMES {
            let log = format!("{name}.log");
            let _ = std::fs::copy(work.join(&log), to.join(&log));
        }
        println!("  {backend}: node logs kept in {}", to.display());
    }
}

fn summary(samples: &[Duration]) -> Summary {
    summarize(&mut samples.to_vec())
}

fn p50_p99(samples: &[Duration]) -> String {
    let s = summary(samples);
    format!("p50 {} ms, p99 {} ms (n={})", ms(s.p50), ms(s.p99), s.count)
}

fn print_load(load: &load::Load) {
    println!(
        "  fsync-write latency, replicas 1: {}; replicas 2: {}",
        p50_p99(&load.solo),
        p50_p99(&load.replicated)
    );
    let gaps = |costs: &[load::PointCost]| -> Vec<Duration> {
        costs.iter().filter_map(|c| c.gap).collect()
    };
    println!(
        "  writer's longest wait per second, replicas 1: {}",
        p50_p99(&load.solo_gaps)
    );
    let stalls: Vec<Duration> = load.idle.iter().map(|c| c.stall).collect();
    println!(
        "  points with only the log changing: stall {}; writer's longest wait per point {}",
        p50_p99(&stalls),
        p50_p99(&gaps(&load.idle))
    );
    for run in &load.dirty {
        let stalls: Vec<Duration> = run.points.iter().map(|c| c.stall).collect();
        let captured: u64 = run.points.iter().map(|c| c.captured).sum();
        let sent: u64 = run.points.iter().map(|c| c.sent).sum();
        println!(
            "  {:.0} MiB dirty per point: stall {}; writer's longest wait per point {}; captured {:.1} MiB, shipped {:.1} MiB for {:.1} MiB changed",
            run.dirty as f64 / MIB,
            p50_p99(&stalls),
            p50_p99(&gaps(&run.points)),
            captured as f64 / MIB,
            sent as f64 / MIB,
            run.changed as f64 / MIB
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**not met**"
    }
}

fn print_table(runs: &[BackendRun], args: &FailoverBenchArgs) {
    let max_lag = Duration::from_millis(args.max_lag);
    println!();
    println!("| measurement | result | goal | |");
    println!("|---|---|---|---|");
    for run in runs {
        let Some(crashes) = &run.crashes else {
            continue;
        };
        let took: Vec<Duration> = crashes.trials.iter().map(|t| t.took).collect();
        let lost: Vec<Duration> = crashes.trials.iter().map(|t| t.loss.lost).collect();
        let s = summary(&took);
        let leaders = crashes.trials.iter().filter(|t| t.was_leader).count();
        println!(
            "| host crash → app running elsewhere with its data, {} crashes ({leaders} of the leader), {} | p50 {:.2} s, p99 {:.2} s | p99 ≤ {} s | {} |",
            s.count,
            run.backend,
            s.p50.as_secs_f64(),
            s.p99.as_secs_f64(),
            FAILOVER_GOAL.as_secs(),
            verdict(s.count >= args.trials && s.p99 <= FAILOVER_GOAL)
        );
        let l = summary(&lost);
        let worst = lost.iter().max().copied().unwrap_or_default();
        println!(
            "| acknowledged writes lost per crash | p50 {:.2} s, p99 {:.2} s, max {:.2} s | always ≤ max_lag {:.0} s | {} |",
            l.p50.as_secs_f64(),
            l.p99.as_secs_f64(),
            worst.as_secs_f64(),
            max_lag.as_secs_f64(),
            verdict(l.count >= args.trials && worst <= max_lag)
        );
        let first: Vec<Duration> = crashes.trials.iter().map(|t| t.first_point).collect();
        let f = summary(&first);
        println!(
            "| the new owner's first point after a failover (a whole-volume capture) | stall p50 {} ms, p99 {} ms | — | |",
            ms(f.p50),
            ms(f.p99)
        );
        for anomaly in &crashes.anomalies {
            println!("| anomaly | {anomaly} | — | **not met** |");
        }
    }
    for run in runs {
        let b = run.backend;
        // btrfs snapshots with the app running: the capture is no pause,
        // but the app's fsyncs wait on the snapshot's commit.
        let what = match b {
            BenchBackend::Btrfs => "capture (snapshot, no pause)",
            _ => "stall (paused capture)",
        };
        for dirty in &run.load.dirty {
            let stalls: Vec<Duration> = dirty.points.iter().map(|c| c.stall).collect();
            let s = summary(&stalls);
            let goal = dirty.dirty >= 10 << 20;
            println!(
                "| {what} per point, {:.0} MiB dirty, {b} | p50 {} ms, p99 {} ms | {} | {} |",
                dirty.dirty as f64 / MIB,
                ms(s.p50),
                ms(s.p99),
                if goal { "p99 ≤ 50 ms" } else { "—" },
                if goal {
                    verdict(s.p99 <= STALL_GOAL)
                } else {
                    ""
                }
            );
        }
        if let Some(most) = run.load.dirty.last() {
            let waits: Vec<Duration> = most.points.iter().filter_map(|c| c.gap).collect();
            let w = summary(&waits);
            let base = summary(&run.load.solo_gaps);
            println!(
                "| the app's longest wait per point, {:.0} MiB dirty, {b} (without replication: per second) | p50 {} ms, p99 {} ms ({} / {} ms) | — | |",
                most.dirty as f64 / MIB,
                ms(w.p50),
                ms(w.p99),
                ms(base.p50),
                ms(base.p99)
            );
        }
        let off = summary(&run.load.solo).p99;
        let on = summary(&run.load.replicated).p99;
        let ratio = on.as_secs_f64() / off.as_secs_f64().max(1e-9);
        let default = b == BenchBackend::Dir;
        println!(
            "| app fsync-write p99, replicas 1 → 2, {b} | {} → {} ms ({ratio:.2}×) | {} | {} |",
            ms(off),
            ms(on),
            if default {
                "≤ 1.1× (default backend)"
            } else {
                "— (goal on the default backend)"
            },
            if default {
                verdict(ratio <= LATENCY_GOAL)
            } else {
                ""
            }
        );
        let sent: u64 = run
            .load
            .dirty
            .iter()
            .flat_map(|d| &d.points)
            .map(|c| c.sent)
            .sum();
        let changed: u64 = run.load.dirty.iter().map(|d| d.changed).sum();
        let ratio = sent as f64 / (changed as f64).max(1.0);
        println!(
            "| bytes shipped / bytes changed, {b} | {:.1} / {:.1} MiB = {ratio:.2}× | ≤ 1.2× | {} |",
            sent as f64 / MIB,
            changed as f64 / MIB,
            verdict(changed > 0 && ratio <= BYTES_GOAL)
        );
    }
    for run in runs {
        println!("({}: {})", run.backend, run.described);
    }
}
