//! What replication costs the app on one backend: the writer's
//! fsync-write latency with its volume unreplicated and replicated, the
//! stall of each point with only the writer's log changing, then with
//! exactly 1 MiB and 10 MiB written between points (scattered 4 KiB blocks
//! of one large file, written and fsynced from the host right after a point
//! was taken, so the next point holds exactly them), and the chunk bytes
//! shipped for what changed.

use super::points::{self, Taken};
use super::writer::{self, Ack};
use super::{now_us, wait_for, Bench, FailoverBenchArgs, LIMIT};
use crate::bench::logs::now_ms;
use anyhow::{Context, Result};
use rand::RngCore;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::Duration;

pub const SOLO: &str = "solo";
pub const REP: &str = "rep";
const BLOCK: u64 = 4096;
const BLOB: &str = "blob";
/// Writer records before a window opens (its start is not steady).
const WARM_UP: Duration = Duration::from_secs(2);

/// One point: the capture's stall, the writer's longest wait in the
/// interval the point closes (from the host's writes, when there are
/// any), and bytes.
#[derive(Clone, Debug)]
pub struct PointCost {
    pub stall: Duration,
    pub gap: Option<Duration>,
    pub captured: u64,
    pub sent: u64,
}

/// Points with `dirty` bytes written between them.
#[derive(Clone, Debug)]
pub struct DirtyRun {
    pub dirty: u64,
    pub points: Vec<PointCost>,
    /// Bytes the app's volume changed across these points (the blocks
    /// written plus the log's growth).
    pub changed: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Load {
    /// fsync-write latencies, replicas 1 and 2.
    pub solo: Vec<Duration>,
    pub replicated: Vec<Duration>,
    /// The writer's longest wait per second without replication: what the
    /// per-point gaps compare with.
    pub solo_gaps: Vec<Duration>,
    /// Points with only the writer's log changing.
    pub idle: Vec<PointCost>,
    pub dirty: Vec<DirtyRun>,
}

pub async fn measure(bench: &Bench, args: &FailoverBenchArgs) -> Result<Load> {
    let mut load = Load::default();
    let window = Duration::from_secs(args.window);

    // Replication off.
    let (container, _) = bench.deploy_writer(SOLO, 1, args.max_lag).await?;
    tokio::time::sleep(WARM_UP).await;
    let (from, to) = timed_window(window).await;
    let acks = writer::acks(&container)?;
    load.solo = writer::latencies(&acks, from, to);
    let mut second = from;
    while second + 1_000_000 <= to {
        load.solo_gaps
            .extend(writer::longest_gap(&acks, second, second + 1_000_000));
        second += 1_000_000;
    }

    // Replication on (the solo app goes: one writer at a time).
    let deployed = now_ms();
    let (container, owner) = bench.deploy_writer(REP, 2, args.max_lag).await?;
    bench.wait_shipped(&owner, REP, deployed, 1).await?;
    tokio::time::sleep(WARM_UP).await;
    let (from, to) = timed_window(window).await;
    let acks = writer::acks(&container)?;
    load.replicated = writer::latencies(&acks, from, to);
    let p = points::read(&bench.work, &owner);
    // Each point closes the interval since the one before it.
    let mut opened_us = from;
    let taken: Vec<(&Taken, u64)> = p
        .taken_since(REP, from / 1000)
        .filter(|t| t.at_ms * 1000 <= to)
        .map(|t| (t, std::mem::replace(&mut opened_us, t.at_ms * 1000)))
        .collect();
    load.idle = costs(&p, &taken, &acks);

    // A large file for the dirty blocks, seeded to the replica first.
    let live = bench.volume_dir(&owner, REP);
    let blob = live.join(BLOB);
    fill(&blob, args.file_size)?;
    bench.wait_shipped(&owner, REP, now_ms(), 2).await?;
    for dirty in [1u64 << 20, 10 << 20] {
        load.dirty
            .push(dirty_points(bench, &owner, &container, dirty, args).await?);
    }
    Ok(load)
}

/// Sleeps `window` and returns its bounds in µs since the Unix epoch.
async fn timed_window(window: Duration) -> (u64, u64) {
    let from = now_us();
    tokio::time::sleep(window).await;
    (from, now_us())
}

/// The cost of each point of `taken`, the writer's longest wait measured
/// from the µs paired with the point to its line.
fn costs(p: &points::Points, taken: &[(&Taken, u64)], acks: &[Ack]) -> Vec<PointCost> {
    taken
        .iter()
        .map(|&(t, opened_us)| PointCost {
            stall: t.stall,
            gap: writer::longest_gap(acks, opened_us, t.at_ms * 1000),
            captured: t.captured_bytes,
            sent: p.sent(&t.app, t.at_ms, t.seq).unwrap_or(0),
        })
        .collect()
}

/// `args.points` points of `REP`, each after exactly `dirty` bytes were
/// written (and fsynced, as a database does) into the blob.
async fn dirty_points(
    bench: &Bench,
    owner: &str,
    container: &str,
    dirty: u64,
    args: &FailoverBenchArgs,
) -> Result<DirtyRun> {
    let live = bench.volume_dir(owner, REP);
    let blob = OpenOptions::new()
        .write(true)
        .open(live.join(BLOB))
        .with_context(|| format!("opening {}", live.join(BLOB).display()))?;
    let blocks = (args.file_size / BLOCK) as usize;
    let count = ((dirty / BLOCK) as usize).min(blocks);
    let log_size = || std::fs::metadata(live.join(writer::LOG)).map_or(0, |m| m.len());
    let since = now_ms();
    let mut last = bench.newest_point(owner, REP)?;
    // Each measured point, with when the writes it holds were done: the
    // writer's wait is measured from then, so the host's own writing and
    // fsyncing is not counted as the point's.
    let mut measured: Vec<(Taken, u64)> = Vec::new();
    let mut written_us = 0;
    let mut changed = 0;
    let mut log_before = 0;
    let mut rng = rand::rng();
    let mut buf = vec![0u8; BLOCK as usize];
    for round in 0..=args.points {
        let point = wait_for(LIMIT, "the next volume point", || {
            Ok(points::read(&bench.work, owner)
                .taken_since(REP, since)
                .find(|t| t.seq > last)
                .cloned())
        })
        .await?;
        let log_now = log_size();
        if round > 0 {
            changed += dirty + log_now.saturating_sub(log_before);
            measured.push((point.clone(), written_us));
        }
        if round == args.points {
            break;
        }
        let picked = rand::seq::index::sample(&mut rng, blocks, count);
        for block in picked {
            rng.fill_bytes(&mut buf);
            blob.write_all_at(&buf, block as u64 * BLOCK)?;
        }
        blob.sync_data()?;
        written_us = now_us();
        log_before = log_now;
        last = point.seq;
    }
    // The last point's shipped line follows its taken line.
    let final_seq = measured.last().map_or(last, |t| t.0.seq);
    let p = wait_for(LIMIT, "the last point shipped", || {
        let p = points::read(&bench.work, owner);
        Ok(p.sent(REP, since, final_seq).is_some().then_some(p))
    })
    .await?;
    let acks = writer::acks(container)?;
    let refs: Vec<(&Taken, u64)> = measured.iter().map(|(t, at)| (t, *at)).collect();
    Ok(DirtyRun {
        dirty,
        points: costs(&p, &refs, &acks),
        changed,
    })
}

/// Creates `path` with `size` random bytes, fsynced.
fn fill(path: &std::path::Path, size: u64) -> Result<()> {
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut rng = rand::rng();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    f.sync_all()?;
    Ok(())
}
