//! `flocker bench volume`: moving a volume between nodes, on a real
//! three-node cluster with the local engine, against anchors measured in the
//! same run on the same data:
//!
//! 1. the whole volume (incompressible data in a few files) moved by
//!    `ctl move --wait`, against `tar | nc` over loopback, `rsync
//!    --whole-file` to another directory, and `dd conv=fdatasync` per file
//!    (the disk's limit), each followed by `sync`;
//! 2. moves back after 1 % of the volume's 4 KiB blocks changed on the
//!    owner's copy (scattered, then clustered): bytes on the wire;
//! 3. moves where ~1 % (at most 10 MiB) is written just as the app is being
//!    stopped: the app's downtime split into the container's stop, our part
//!    (final delta and handoff) and the container's start, at the main size
//!    and at a smaller one.
//!
//! Every source file is in the page cache when read (it was just written or
//! received); nothing drops the cache between runs, so every copy reads from
//! memory and writes to the disk. Timings on a shared VM are noisy: compare
//! within one run only.

use super::cluster::{FlockerCluster, NAMES};
use super::docker_cli::{docker, remove_matching};
use super::logs::{log_warnings, now_ms, rfc3339_ms, strip_ansi};
use super::procs::{free_tcp, free_udp};
use crate::agent::{container_name, LABEL_CLUSTER};
use crate::api::client::Client;
use crate::api::{AppStatus, ClientReply, ClientRequest, MoveReport};
use crate::runtime::{build_busybox_image, DockerRuntime, TEST_IMAGE};
use anyhow::{bail, Context, Result};
use rand::RngCore;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct VolumeBenchArgs {
    /// Size of the main volume (e.g. 100M, 1G).
    #[arg(long, default_value = "1G", value_parser = crate::config::parse_size)]
    pub size: u64,
    /// Files the volume's data is split into.
    #[arg(long, default_value_t = 4)]
    pub files: u64,
    /// A second, smaller volume for the downtime split (0: none).
    #[arg(long, default_value = "100M", value_parser = size_or_zero)]
    pub small: u64,
    /// Passed to every node as --volume-rate (default: the node's default).
    #[arg(long)]
    pub volume_rate: Option<String>,
    /// Do not count the volume endpoints' UDP bytes with iptables.
    #[arg(long)]
    pub no_iptables: bool,
    /// Keep the working directory (node logs, copies).
    #[arg(long)]
    pub keep: bool,
}

fn size_or_zero(text: &str) -> Result<u64, String> {
    if text.trim() == "0" {
        Ok(0)
    } else {
        crate::config::parse_size(text)
    }
}

const BLOCK: u64 = 4096;
const MIB: f64 = (1u64 << 20) as f64;
/// The dirty data the downtime goal speaks of.
const DOWNTIME_DIRTY_MAX: u64 = 10 << 20;
const GOAL_OURS: Duration = Duration::from_millis(100);
const GOAL_WIRE_PERCENT: f64 = 1.5;
const GOAL_VS_DD: f64 = 0.7;
/// Waiting for any one move or copy.
const LIMIT: Duration = Duration::from_secs(600);
/// Answers SIGTERM at once, so the container's stop is not a sleep's tail.
const LOOP: &str = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done";
const BIG: &str = "big";
const SMALL: &str = "small";

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn span_ms(from: u64, to: u64) -> String {
    if from == 0 || to == 0 {
        return "?".into();
    }
    format!("{}", to as i64 - from as i64)
}

fn sh(script: &str) -> Result<()> {
    let out = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{script}`"))?;
    if !out.status.success() {
        bail!(
            "`{script}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn sync() -> Result<()> {
    sh("sync")
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Byte counters on the volume endpoints' UDP ports (both directions; every
/// loopback packet passes OUTPUT once), in a chain of this run's own.
struct UdpCounter {
    chain: String,
}

impl UdpCounter {
    fn setup(ports: &[u16]) -> Result<UdpCounter> {
        let chain = format!("FLKBENCHVOL{:x}", rand::random::<u16>());
        let ipt = |args: &[&str]| -> Result<()> {
            let out = Command::new("iptables").args(args).output()?;
            if !out.status.success() {
                bail!(
                    "iptables {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        };
        ipt(&["-N", &chain])?;
        let counter = UdpCounter {
            chain: chain.clone(),
        };
        ipt(&["-I", "OUTPUT", "1", "-j", &chain])?;
        for flag in ["--dport", "--sport"] {
            for p in ports {
                ipt(&[
                    "-A",
                    &chain,
                    "-p",
                    "udp",
                    flag,
                    &p.to_string(),
                    "-j",
                    "RETURN",
                ])?;
            }
        }
        Ok(counter)
    }

    fn zero(&self) {
        let _ = Command::new("iptables").args(["-Z", &self.chain]).output();
    }

    fn bytes(&self) -> Option<u64> {
        let out = Command::new("iptables")
            .args(["-nvxL", &self.chain])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Some(
            text.lines()
                .skip(2)
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum(),
        )
    }
}

impl Drop for UdpCounter {
    fn drop(&mut self) {
        for args in [
            vec!["-D", "OUTPUT", "-j", &self.chain],
            vec!["-F", &self.chain],
            vec!["-X", &self.chain],
        ] {
            let _ = Command::new("iptables").args(&args).output();
        }
    }
}

/// One volume's files on whichever node holds a copy.
#[derive(Clone)]
struct Volume {
    app: &'static str,
    /// Names and sizes, in order.
    files: Vec<(String, u64)>,
}

impl Volume {
    fn new(app: &'static str, size: u64, files: u64) -> Volume {
        let per = (size / files.max(1)) / BLOCK * BLOCK;
        Volume {
            app,
            files: (0..files.max(1)).map(|i| (format!("f{i}"), per)).collect(),
        }
    }

    fn size(&self) -> u64 {
        self.files.iter().map(|(_, s)| s).sum()
    }

    fn blocks(&self) -> u64 {
        self.size() / BLOCK
    }

    /// File index and offset of the volume's `block`-th block.
    fn locate(&self, mut block: u64) -> (usize, u64) {
        for (i, (_, size)) in self.files.iter().enumerate() {
            let n = size / BLOCK;
            if block < n {
                return (i, block * BLOCK);
            }
            block -= n;
        }
        panic!("block beyond the volume");
    }

    /// Fills the files under `dir` with random data, then syncs them.
    fn write_all(&self, dir: &Path) -> Result<()> {
        let mut rng = rand::rng();
        let mut buf = vec![0u8; 4 << 20];
        for (name, size) in &self.files {
            let f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(dir.join(name))
                .with_context(|| format!("creating {}", dir.join(name).display()))?;
            let mut at = 0;
            while at < *size {
                let n = (*size - at).min(buf.len() as u64) as usize;
                rng.fill_bytes(&mut buf[..n]);
                f.write_all_at(&buf[..n], at)?;
                at += n as u64;
            }
            f.sync_all()?;
        }
        Ok(())
    }
}

/// Blocks to overwrite: scattered at random over the whole volume, or one
/// contiguous run at a random place.
struct Dirty {
    /// (file index, offset, length), sorted.
    writes: Vec<(usize, u64, u64)>,
    bytes: u64,
}

impl Dirty {
    fn plan(volume: &Volume, blocks: u64, clustered: bool) -> Dirty {
        let total = volume.blocks();
        let blocks = blocks.clamp(1, total);
        let mut rng = rand::rng();
        let mut writes: Vec<(usize, u64, u64)> = Vec::new();
        if clustered {
            let first = rand::Rng::random_range(&mut rng, 0..=total - blocks);
            for b in first..first + blocks {
                let (file, offset) = volume.locate(b);
                match writes.last_mut() {
                    Some((f, o, len)) if *f == file && *o + *len == offset => *len += BLOCK,
                    _ => writes.push((file, offset, BLOCK)),
                }
            }
        } else {
            let mut picked: Vec<u64> =
                rand::seq::index::sample(&mut rng, total as usize, blocks as usize)
                    .into_iter()
                    .map(|b| b as u64)
                    .collect();
            picked.sort_unstable();
            writes = picked
                .into_iter()
                .map(|b| {
                    let (file, offset) = volume.locate(b);
                    (file, offset, BLOCK)
                })
                .collect();
        }
        Dirty {
            writes,
            bytes: blocks * BLOCK,
        }
    }

    /// Writes fresh random data at the planned places (no fsync: the page
    /// cache, as an app's writes would be).
    fn apply(&self, volume: &Volume, dir: &Path) -> Result<()> {
        let mut rng = rand::rng();
        let longest = self.writes.iter().map(|w| w.2).max().unwrap_or(0) as usize;
        let mut buf = vec![0u8; longest];
        let mut files = Vec::new();
        for (name, _) in &volume.files {
            files.push(
                OpenOptions::new()
                    .write(true)
                    .open(dir.join(name))
                    .with_context(|| format!("opening {}", dir.join(name).display()))?,
            );
        }
        for &(file, offset, len) in &self.writes {
            let part = &mut buf[..len as usize];
            rng.fill_bytes(part);
            files[file].write_all_at(part, offset)?;
        }
        Ok(())
    }
}

/// When the dirty data of a move is written.
#[derive(Clone, Copy, PartialEq)]
enum When {
    /// No writes: the whole volume's first move.
    Whole,
    /// On the owner's copy while the app runs, before the move.
    Before,
    /// As soon as the move's phase is `freezing` or `stopping the app`.
    AtFreeze,
}

struct MoveRun {
    label: String,
    volume_size: u64,
    when: When,
    /// Command until `ctl move --wait` returned (the app ran on the destination).
    total: Duration,
    command_ms: u64,
    report: MoveReport,
    /// The destination's container's State.StartedAt.
    started_ms: Option<u64>,
    udp_bytes: Option<u64>,
    /// Bytes and files the final scan re-read, from the source's log.
    final_reread: Option<(u64, Option<u64>)>,
    /// At-freeze writes: when they were done, or why not made.
    writes_done_ms: Option<u64>,
    missed: Option<String>,
    /// A whole move: when round 1's sending began and ended, as seen.
    round_one: Option<(Duration, Duration)>,
}

impl MoveRun {
    /// Live rounds and the final delta: from the command to the freeze,
    /// plus stopped → final.
    fn transfer(&self) -> Option<Duration> {
        let r = &self.report;
        if r.frozen_ms < self.command_ms || r.final_ms < r.stopped_ms || r.stopped_ms == 0 {
            return None;
        }
        Some(Duration::from_millis(
            (r.frozen_ms - self.command_ms) + (r.final_ms - r.stopped_ms),
        ))
    }

    fn ours(&self) -> Option<Duration> {
        let r = &self.report;
        (r.stopped_ms > 0 && r.handed_off_ms >= r.stopped_ms)
            .then(|| Duration::from_millis(r.handed_off_ms - r.stopped_ms))
    }
}

struct Bench {
    cluster: FlockerCluster,
    work: PathBuf,
    cluster_id: String,
    client: Client,
    counter: Option<UdpCounter>,
}

impl Bench {
    fn volume_dir(&self, node: &str, app: &str) -> PathBuf {
        self.work
            .join(format!("data-{node}"))
            .join("volumes")
            .join(app)
            .join("data")
    }

    fn running(&self, node: &str, app: &str) -> bool {
        docker(&[
            "inspect",
            "-f",
            "{{.State.Running}}",
            &container_name(&self.cluster_id, node, app),
        ])
        .is_ok_and(|s| s.trim() == "true")
    }

    async fn status(&self, app: &str) -> Option<AppStatus> {
        match self.client.request(ClientRequest::Status).await {
            ClientReply::Status(view) => view.apps.into_iter().find(|a| a.name == app),
            _ => None,
        }
    }

    /// `ctl move APP TO --wait`, timed from the command to its return, with
    /// `dirty` written at the freeze when asked.
    async fn timed_move(
        &self,
        label: &str,
        volume: &Volume,
        from: &str,
        to: &str,
        dirty: Option<&Dirty>,
        when: When,
    ) -> Result<MoveRun> {
        if when == When::Before {
            if let Some(d) = dirty {
                d.apply(volume, &self.volume_dir(from, volume.app))?;
            }
        }
        sync()?;
        if let Some(c) = &self.counter {
            c.zero();
        }
        let exe = std::env::current_exe()?;
        let command_ms = now_ms();
        let start = Instant::now();
        let child = tokio::process::Command::new(exe)
            .arg("ctl")
            .arg("--node")
            .arg(self.cluster.addrs[2].to_string())
            .arg("--certs")
            .arg(&self.cluster.certs.root)
            .args(["move", volume.app, to, "--wait", "--timeout"])
            .arg(LIMIT.as_secs().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting flocker ctl move")?;
        let waiter = tokio::spawn(async move {
            let out = child.wait_with_output().await;
            (Instant::now(), out)
        });
        let mut writes_done_ms = None;
        let mut missed = None;
        if when == When::AtFreeze {
            let dirty = dirty.expect("at-freeze moves write");
            let dir = self.volume_dir(from, volume.app);
            loop {
                if waiter.is_finished() {
                    missed = Some("the move ended before a freeze was seen".to_string());
                    break;
                }
                let phase = self
                    .status(volume.app)
                    .await
                    .and_then(|s| s.moving)
                    .map(|m| m.phase);
                match phase.as_deref() {
                    Some("freezing") | Some("stopping the app") => {
                        // Inline on purpose: as soon as possible, and the
                        // only other task is the waiter.
                        dirty.apply(volume, &dir)?;
                        writes_done_ms = Some(now_ms());
                        break;
                    }
                    Some(p) if p.starts_with("final") || p.starts_with("handing") => {
                        missed = Some(format!("first saw the phase `{p}`"));
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(2)).await,
                }
                if start.elapsed() > LIMIT {
                    bail!("{label}: no freeze within {LIMIT:?}");
                }
            }
        }
        // A whole move's phases, seen every 100 ms: where the time goes.
        let mut phases: Vec<(Duration, String)> = Vec::new();
        if when == When::Whole {
            while !waiter.is_finished() {
                if let Some(m) = self.status(volume.app).await.and_then(|s| s.moving) {
                    let seen = if m.bytes_total > 0 && m.bytes_done >= m.bytes_total {
                        format!("{}: all {} sent", m.phase, mib(m.bytes_total))
                    } else {
                        m.phase
                    };
                    if phases.last().map(|p| &p.1) != Some(&seen) {
                        phases.push((start.elapsed(), seen));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let (ended, out) = waiter.await?;
        let out = out?;
        let total = ended - start;
        if !out.status.success() {
            bail!(
                "{label}: ctl move failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let udp_bytes = self.counter.as_ref().and_then(UdpCounter::bytes);
        let report = loop {
            if let Some(r) = self.status(volume.app).await.and_then(|s| s.last_move) {
                if r.to == to && r.finished_ms >= command_ms {
                    break r;
                }
            }
            if start.elapsed() > LIMIT {
                bail!("{label}: no report of the move");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let started_ms = docker(&[
            "inspect",
            "-f",
            "{{.State.StartedAt}}",
            &container_name(&self.cluster_id, to, volume.app),
        ])
        .ok()
        .and_then(|s| rfc3339_ms(&s));
        if let Some(done) = writes_done_ms {
            if report.stopped_ms > 0 && done > report.stopped_ms {
                missed = Some(format!(
                    "writes ended {} ms after the stop",
                    done - report.stopped_ms
                ));
            }
        }
        let final_reread = final_reread(&self.work, from, volume.app, report.epoch)
            .map(|(b, f)| (b, Some(f)))
            .or(Some((report.final_scan_bytes, None)));
        let run = MoveRun {
            label: label.to_string(),
            volume_size: volume.size(),
            when,
            total,
            command_ms,
            report,
            started_ms,
            final_reread,
            udp_bytes,
            writes_done_ms,
            missed,
            round_one: {
                let began = phases
                    .iter()
                    .find(|p| p.1 == "pushing round 1")
                    .map(|p| p.0);
                let sent = phases
                    .iter()
                    .find(|p| p.1.starts_with("pushing round 1: all"))
                    .map(|p| p.0);
                began.zip(sent)
            },
        };
        println!(
            "  {label}: {} s, {} sent in {} rounds ({} with the app stopped){}",
            secs(run.total),
            mib(run.report.bytes_sent),
            run.report.rounds,
            mib(run.report.final_bytes),
            run.missed
                .as_ref()
                .map(|m| format!(" [{m}]"))
                .unwrap_or_default()
        );
        if !phases.is_empty() {
            let line: Vec<String> = phases
                .iter()
                .map(|(at, p)| format!("{}s {p}", secs(*at)))
                .collect();
            println!(
                "    phases first seen (polling status every 100 ms): {}",
                line.join(" → ")
            );
        }
        // Let the source save its hash cache and the agents settle.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(run)
    }
}

struct Anchor {
    name: String,
    took: Duration,
}

/// Times `run`, which copies `src` into a fresh `dst`, then `sync`s; checks
/// the copy's size and removes it.
fn anchor(
    name: &str,
    volume: &Volume,
    dst: &Path,
    run: impl FnOnce() -> Result<()>,
) -> Result<Anchor> {
    let _ = std::fs::remove_dir_all(dst);
    std::fs::create_dir_all(dst)?;
    sync()?;
    let start = Instant::now();
    run()?;
    sync()?;
    let took = start.elapsed();
    for (file, size) in &volume.files {
        let got = std::fs::metadata(dst.join(file))
            .with_context(|| format!("{name}: {} not copied", file))?
            .len();
        if got != *size {
            bail!("{name}: {file} has {got} bytes, not {size}");
        }
    }
    std::fs::remove_dir_all(dst)?;
    sync()?;
    println!("  {name}: {} s", secs(took));
    Ok(Anchor {
        name: name.to_string(),
        took,
    })
}

/// Waits until a TCP socket listens on 127.0.0.1:`port` (a few ms).
fn wait_listening(port: u16) -> Result<()> {
    let local = format!("0100007F:{port:04X}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let listening = table.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.nth(1) == Some(local.as_str()) && f.nth(1) == Some("0A")
        });
        if listening {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nc does not listen on port {port}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn anchors(volume: &Volume, src: &Path, work: &Path) -> Result<Vec<Anchor>> {
    let dst = work.join("anchor-copy");
    let mut out = Vec::new();
    out.push(anchor(
        "`dd bs=4M conv=fdatasync` per file (the disk)",
        volume,
        &dst,
        || {
            for (file, _) in &volume.files {
                sh(&format!(
                    "dd if={} of={} bs=4M conv=fdatasync status=none",
                    quote(&src.join(file)),
                    quote(&dst.join(file))
                ))?;
            }
            Ok(())
        },
    )?);
    out.push(anchor(
        "`tar | nc` over loopback, then sync",
        volume,
        &dst,
        || {
            let port = free_tcp().port();
            let mut receiver = Command::new("sh")
                .args([
                    "-c",
                    &format!(
                        "nc -l -s 127.0.0.1 -p {port} </dev/null | tar -C {} -xf -",
                        quote(&dst)
                    ),
                ])
                .stdin(Stdio::null())
                .spawn()?;
            wait_listening(port)?;
            sh(&format!(
                "tar -C {} -cf - . | nc -q0 127.0.0.1 {port}",
                quote(src)
            ))?;
            if !receiver.wait()?.success() {
                bail!("nc -l | tar -x failed");
            }
            Ok(())
        },
    )?);
    out.push(anchor(
        "`rsync -a --whole-file` to another directory, then sync",
        volume,
        &dst,
        || {
            sh(&format!(
                "rsync -a --whole-file {}/ {}/",
                quote(src),
                quote(&dst)
            ))
        },
    )?);
    Ok(out)
}

fn tools_present() -> Result<()> {
    for tool in ["nc", "rsync", "tar", "dd", "sync"] {
        if sh(&format!("command -v {tool} >/dev/null")).is_err() {
            bail!("`{tool}` is missing (apt-get install -y netcat-openbsd rsync)");
        }
    }
    Ok(())
}

pub async fn run(args: VolumeBenchArgs) -> Result<()> {
    tools_present()?;
    build_busybox_image(&DockerRuntime::local(), TEST_IMAGE)
        .await
        .context("building the test image")?;
    let work =
        std::env::temp_dir().join(format!("flocker-bench-volume-{:x}", rand::random::<u32>()));
    std::fs::create_dir_all(&work)?;
    println!("working directory: {}", work.display());
    let volume_ports: Vec<u16> = NAMES.iter().map(|_| free_udp().port()).collect();
    let counter = if args.no_iptables {
        None
    } else {
        match UdpCounter::setup(&volume_ports) {
            Ok(c) => Some(c),
            Err(e) => {
                println!("no UDP byte counts: {e:#}");
                None
            }
        }
    };
    let rate = args.volume_rate.clone();
    let cluster = FlockerCluster::start(&work, |name| {
        let i: usize = name.trim_start_matches('n').parse().unwrap_or(1);
        let mut extra = vec![
            format!("--publish-ip=127.0.0.{}", 200 + i),
            format!("--volume-listen=127.0.0.1:{}", volume_ports[i - 1]),
        ];
        if let Some(r) = &rate {
            extra.push(format!("--volume-rate={r}"));
        }
        extra
    })?;
    let cluster_id = crate::node::cluster_id(&cluster.certs)?;
    let client = cluster.client(2)?;
    let bench = Bench {
        cluster,
        work: work.clone(),
        cluster_id: cluster_id.clone(),
        client,
        counter,
    };
    let result = measure(&bench, &args).await;
    let warnings = log_warnings(&work, &NAMES);
    let Bench { cluster, .. } = bench;
    drop(cluster);
    remove_matching(&[&format!("label={LABEL_CLUSTER}={cluster_id}")])?;
    if args.keep || result.is_err() {
        println!("kept {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    let (anchors, moves, main) = result?;
    print_tables(&args, &main, &anchors, &moves, &warnings);
    Ok(())
}

/// What the source's `final delta` log line says the final scan re-read
/// (bytes, files), if it logs that.
fn final_reread(work: &Path, from: &str, app: &str, epoch: u64) -> Option<(u64, u64)> {
    let log = std::fs::read_to_string(work.join(format!("{from}.log"))).ok()?;
    let field = |line: &str, key: &str| -> Option<u64> {
        let at = line.find(&format!(" {key}="))? + key.len() + 2;
        line[at..].split_whitespace().next()?.parse().ok()
    };
    log.lines()
        .rev()
        .map(strip_ansi)
        .find(|l| {
            l.contains(" final delta")
                && l.contains(&format!(" app={app} "))
                && field(l, "epoch") == Some(epoch)
        })
        .and_then(|l| Some((field(&l, "reread")?, field(&l, "files")?)))
}

async fn measure(
    bench: &Bench,
    args: &VolumeBenchArgs,
) -> Result<(Vec<Anchor>, Vec<MoveRun>, Volume)> {
    let leader = bench
        .cluster
        .leader(&[0, 1, 2], Duration::from_secs(60))
        .await?;
    let main = Volume::new(BIG, args.size, args.files);
    let small = (args.small > 0 && args.small < args.size)
        .then(|| Volume::new(SMALL, args.small, args.files));
    let mut application = String::from("version: 1\napplications:\n");
    let mut apps = vec![BIG];
    if small.is_some() {
        apps.push(SMALL);
    }
    for app in &apps {
        application.push_str(&format!(
            "  {app}:\n    image: {TEST_IMAGE}\n    command: [\"sh\", \"-c\", \"{LOOP}\"]\n    volume: {{mountpoint: /data}}\n"
        ));
    }
    let deployment = format!("version: 1\nnodes:\n  n1: [{}]\n", apps.join(", "));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match bench
            .cluster
            .deploy(leader, &deployment, &application)
            .await
        {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    for app in &apps {
        while !bench.running("n1", app) {
            if Instant::now() > deadline {
                bail!("{app} does not run on n1");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut all = vec![&main];
    all.extend(small.as_ref());
    for v in &all {
        let dir = bench.volume_dir("n1", v.app);
        std::fs::create_dir_all(&dir)?;
        println!(
            "writing {} of random data in {} files into {}",
            mib(v.size()),
            v.files.len(),
            dir.display()
        );
        v.write_all(&dir)?;
    }
    sync()?;

    println!("anchors, on {}'s data:", BIG);
    let anchors = anchors(&main, &bench.volume_dir("n1", BIG), &bench.work)?;

    println!("moves:");
    let mut moves = Vec::new();
    let size = mib(main.size());
    moves.push(
        bench
            .timed_move(
                &format!("{size} whole n1→n2"),
                &main,
                "n1",
                "n2",
                None,
                When::Whole,
            )
            .await?,
    );
    let one_percent = (main.blocks() / 100).max(1);
    let scattered = Dirty::plan(&main, one_percent, false);
    moves.push(
        bench
            .timed_move(
                &format!("{size} 1% scattered written before, n2→n1"),
                &main,
                "n2",
                "n1",
                Some(&scattered),
                When::Before,
            )
            .await?,
    );
    let clustered = Dirty::plan(&main, one_percent, true);
    moves.push(
        bench
            .timed_move(
                &format!("{size} 1% clustered written before, n1→n2"),
                &main,
                "n1",
                "n2",
                Some(&clustered),
                When::Before,
            )
            .await?,
    );
    let downtime = |v: &Volume| {
        let blocks = (v.blocks() / 100).clamp(1, DOWNTIME_DIRTY_MAX / BLOCK);
        (Dirty::plan(v, blocks, false), Dirty::plan(v, blocks, true))
    };
    let (s, c) = downtime(&main);
    moves.push(
        bench
            .timed_move(
                &format!("{size} {} scattered at the freeze, n2→n1", mib(s.bytes)),
                &main,
                "n2",
                "n1",
                Some(&s),
                When::AtFreeze,
            )
            .await?,
    );
    moves.push(
        bench
            .timed_move(
                &format!("{size} {} clustered at the freeze, n1→n2", mib(c.bytes)),
                &main,
                "n1",
                "n2",
                Some(&c),
                When::AtFreeze,
            )
            .await?,
    );
    if let Some(v) = &small {
        let size = mib(v.size());
        moves.push(
            bench
                .timed_move(
                    &format!("{size} whole n1→n2"),
                    v,
                    "n1",
                    "n2",
                    None,
                    When::Whole,
                )
                .await?,
        );
        let (s, c) = downtime(v);
        moves.push(
            bench
                .timed_move(
                    &format!("{size} {} scattered at the freeze, n2→n1", mib(s.bytes)),
                    v,
                    "n2",
                    "n1",
                    Some(&s),
                    When::AtFreeze,
                )
                .await?,
        );
        moves.push(
            bench
                .timed_move(
                    &format!("{size} {} clustered at the freeze, n1→n2", mib(c.bytes)),
                    v,
                    "n1",
                    "n2",
                    Some(&c),
                    When::AtFreeze,
                )
                .await?,
        );
    }
    Ok((anchors, moves, main))
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "not met"
    }
}

fn print_tables(
    args: &VolumeBenchArgs,
    main: &Volume,
    anchors: &[Anchor],
    moves: &[MoveRun],
    warnings: &[(String, usize)],
) {
    let size = main.size();
    let rate = |d: Duration| size as f64 / MIB / d.as_secs_f64();
    let whole = &moves[0];
    let find = |prefix: &str| anchors.iter().find(|a| a.name.starts_with(prefix));
    let dd = find("`dd");
    let tar = find("`tar");
    println!(
        "\n## Whole volume: {} in {} files of random data, same run (node --volume-rate: {})\n",
        mib(size),
        main.files.len(),
        args.volume_rate.as_deref().unwrap_or("default")
    );
    println!("| copy | time (s) | MiB/s | flocker move / this (speed) | flocker transfer / this (speed) |");
    println!("|---|---:|---:|---:|---:|");
    let transfer = whole.transfer();
    let row = |name: &str, d: Duration| {
        println!(
            "| {} | {} | {:.0} | {:.2}× | {} |",
            name.replace('|', "\\|"),
            secs(d),
            rate(d),
            d.as_secs_f64() / whole.total.as_secs_f64(),
            transfer.map_or("?".into(), |t| format!(
                "{:.2}×",
                d.as_secs_f64() / t.as_secs_f64()
            ))
        )
    };
    for a in anchors {
        row(&a.name, a.took);
    }
    println!(
        "| flocker `ctl move --wait` n1→n2 (command → app running on n2) | {} | {:.0} | | |",
        secs(whole.total),
        rate(whole.total)
    );
    if let Some(t) = transfer {
        println!(
            "| flocker transfer only (command → freeze, + final delta; MoveReport) | {} | {:.0} | | |",
            secs(t),
            rate(t)
        );
    }

    if let Some((began, sent)) = whole.round_one {
        let send = sent.saturating_sub(began);
        println!(
            "| … of which before round 1 sends (scan, summary, delta; ±0.1 s) | {} | | | |",
            secs(began)
        );
        println!(
            "| … of which round 1's sending (±0.1 s) | {} | {:.0} | | |",
            secs(send),
            rate(send)
        );
    }
    println!("\n## Moves (times in ms unless marked; ours = final delta + handoff)\n");
    println!("| move | rounds | bytes sent | % of volume | UDP bytes both ways (iptables) | sent with app stopped | final scan re-read | command → freeze (s) | stop | final delta | handoff | **ours** | start | total (s) | note |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for m in moves {
        let r = &m.report;
        let pct = 100.0 * r.bytes_sent as f64 / m.volume_size as f64;
        println!(
            "| {} | {} | {} | {:.2} % | {} | {} | {} | {} | {} | {} | {} | **{}** | {} | {} | {} |",
            m.label,
            r.rounds,
            mib(r.bytes_sent),
            pct,
            m.udp_bytes.map_or("–".into(), |b| format!(
                "{} ({:.2} %)",
                mib(b),
                100.0 * b as f64 / m.volume_size as f64
            )),
            mib(r.final_bytes),
            m.final_reread.map_or("–".into(), |(b, f)| match f {
                Some(f) => format!("{} in {f} files", mib(b)),
                None => mib(b),
            }),
            if r.frozen_ms >= m.command_ms {
                format!("{:.2}", (r.frozen_ms - m.command_ms) as f64 / 1000.0)
            } else {
                "?".into()
            },
            span_ms(r.frozen_ms, r.stopped_ms),
            span_ms(r.stopped_ms, r.final_ms),
            span_ms(r.final_ms, r.handed_off_ms),
            span_ms(r.stopped_ms, r.handed_off_ms),
            m.started_ms
                .map_or("?".into(), |s| span_ms(r.handed_off_ms, s)),
            secs(m.total),
            match (&m.missed, m.writes_done_ms) {
                (Some(why), _) => why.clone(),
                (None, Some(done)) => format!(
                    "writes done {} ms before the stop",
                    r.stopped_ms as i64 - done as i64
                ),
                _ => String::new(),
            }
        );
    }

    println!("\n## Goals\n");
    println!("| goal | measured | target | |");
    println!("|---|---:|---:|---|");
    if let Some(t) = tar {
        let x = t.took.as_secs_f64() / whole.total.as_secs_f64();
        println!(
            "| whole move faster than `tar \\| nc` (command → running) | {x:.2}× | > 1.00× | {} |",
            met(x > 1.0)
        );
        if let Some(tr) = transfer {
            let x = t.took.as_secs_f64() / tr.as_secs_f64();
            println!(
                "| … transfer only (no container stop/start, no ctl polling) | {x:.2}× | > 1.00× | {} |",
                met(x > 1.0)
            );
        }
    }
    if let Some(d) = dd {
        let x = d.took.as_secs_f64() / whole.total.as_secs_f64();
        println!(
            "| whole move vs local `dd conv=fdatasync` (command → running) | {x:.2}× | ≥ {GOAL_VS_DD:.2}× | {} |",
            met(x >= GOAL_VS_DD)
        );
        if let Some(tr) = transfer {
            let x = d.took.as_secs_f64() / tr.as_secs_f64();
            println!(
                "| … transfer only | {x:.2}× | ≥ {GOAL_VS_DD:.2}× | {} |",
                met(x >= GOAL_VS_DD)
            );
        }
    }
    for m in moves.iter().filter(|m| m.when == When::Before) {
        let pct = 100.0 * m.report.bytes_sent as f64 / m.volume_size as f64;
        println!(
            "| on the wire, {} | {pct:.2} % | ≤ {GOAL_WIRE_PERCENT} % | {} |",
            m.label,
            met(pct <= GOAL_WIRE_PERCENT)
        );
        if let Some(b) = m.udp_bytes {
            let pct = 100.0 * b as f64 / m.volume_size as f64;
            println!(
                "| … UDP bytes both ways | {pct:.2} % | ≤ {GOAL_WIRE_PERCENT} % | {} |",
                met(pct <= GOAL_WIRE_PERCENT)
            );
        }
    }
    for m in moves {
        let Some(ours) = m.ours() else { continue };
        if m.report.final_bytes > DOWNTIME_DIRTY_MAX {
            continue;
        }
        println!(
            "| our downtime, {} ({} dirty at the stop) | {} ms | ≤ {} ms | {} |",
            m.label,
            mib(m.report.final_bytes),
            ours.as_millis(),
            GOAL_OURS.as_millis(),
            met(ours <= GOAL_OURS)
        );
    }
    if !warnings.is_empty() {
        println!("\nnode log warnings and errors (count, node: level, target, message head):");
        for (line, n) in warnings.iter().take(15) {
            println!("  {n:>4}  {line}");
        }
    }
    println!(
        "\nNotes: every copy read its source from the page cache (just written or received; \
         the cache is not dropped); each timed run starts after `sync` and ends after its data \
         is synced. Flocker's rows come from `ctl move --wait` (which polls every 250 ms) and \
         the source's MoveReport; \"start\" ends at the new container's State.StartedAt."
    );
}
