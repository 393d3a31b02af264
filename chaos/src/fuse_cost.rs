//! What the lazyfs layer costs a commit, so the power faults stay
//! realistic: the p50 of one Raft commit's disk write (a small append and
//! an fdatasync, what RocksDB's synced WAL write does) on the plain file
//! system that holds the run's files and through a lazyfs over the same
//! file system. Printed at the start of the run and kept in
//! `fuse-cost.json`; a measurement that fails is reported, never fatal.

use anyhow::{Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Commits timed on each side.
const COMMITS: usize = 300;
/// One commit's bytes (a small Raft entry with its WAL framing).
const ENTRY_BYTES: usize = 256;

#[derive(Debug, Serialize)]
pub struct FuseCost {
    pub plain_p50_us: u64,
    pub lazyfs_p50_us: u64,
    pub commits: usize,
}

/// Measures, prints and records the cost under `out/fuse-cost*`.
pub fn report(out: &Path) {
    match measure(&out.join("fuse-cost")) {
        Ok(c) => {
            let ratio = c.lazyfs_p50_us as f64 / c.plain_p50_us.max(1) as f64;
            eprintln!(
                "flocker-chaos: FUSE cost: a commit's disk write (append + fdatasync) p50 {} µs plain, {} µs on lazyfs ({ratio:.1}×)",
                c.plain_p50_us, c.lazyfs_p50_us
            );
            if let Ok(text) = serde_json::to_string_pretty(&c) {
                let _ = std::fs::write(out.join("fuse-cost.json"), text + "\n");
            }
        }
        Err(e) => eprintln!("flocker-chaos: FUSE cost not measured: {e:#}"),
    }
    let _ = std::fs::remove_dir_all(out.join("fuse-cost"));
}

fn measure(dir: &Path) -> Result<FuseCost> {
    let (plain, backing, mnt) = (dir.join("plain"), dir.join("backing"), dir.join("mnt"));
    for d in [&plain, &backing, &mnt] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let plain_p50 = p50_commit(&plain)?;
    let mount = flocker_lazyfs::Mount::new(&backing, &mnt, flocker_lazyfs::DEFAULT_MAX_DIRTY_MIB)
        .context("mounting a lazyfs (root and /dev/fuse)")?;
    let lazy_p50 = p50_commit(&mnt);
    mount.unmount().context("unmounting the lazyfs")?;
    Ok(FuseCost {
        plain_p50_us: plain_p50.as_micros() as u64,
        lazyfs_p50_us: lazy_p50?.as_micros() as u64,
        commits: COMMITS,
    })
}

/// The median time of an append plus fdatasync in a fresh file in `dir`.
fn p50_commit(dir: &Path) -> Result<Duration> {
    let path = dir.join("wal");
    let mut f =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let entry = vec![0x5a; ENTRY_BYTES];
    let mut times = Vec::with_capacity(COMMITS);
    for _ in 0..COMMITS {
        let t = Instant::now();
        f.write_all(&entry)?;
        f.sync_data()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}
