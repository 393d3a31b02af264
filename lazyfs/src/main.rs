//! `flocker-lazyfs`: mounts a lazyfs and serves it until it is unmounted.

use std::path::PathBuf;

use clap::Parser;

/// A FUSE passthrough that keeps unsynced writes and directory changes
/// apart and drops them on `echo cut > <mountpoint>/.lazyfs` (a power cut).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Directory holding the files (`<backing>/root`) and lazyfs's own
    /// bookkeeping.
    #[arg(long)]
    backing: PathBuf,
    /// Where to mount.
    #[arg(long)]
    mountpoint: PathBuf,
    /// Overwritten unsynced bytes kept before the largest file's are made
    /// durable (as a writeback would).
    #[arg(long, default_value_t = flocker_lazyfs::DEFAULT_MAX_DIRTY_MIB)]
    max_dirty_mib: u64,
}

fn main() {
    let args = Args::parse();
    let run = || -> std::io::Result<()> {
        let fs = flocker_lazyfs::fs::LazyFs::new(&args.backing, args.max_dirty_mib << 20)?;
        let session = fuser::Session::new(fs, &args.mountpoint, &flocker_lazyfs::config())?;
        eprintln!(
            "flocker-lazyfs: {} mounted over {}",
            args.mountpoint.display(),
            args.backing.display()
        );
        session.run()
    };
    if let Err(e) = run() {
        eprintln!("flocker-lazyfs: {}: {e}", args.mountpoint.display());
        std::process::exit(1);
    }
}
