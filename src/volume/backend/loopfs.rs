//! `LoopFs`: a throwaway btrfs, XFS or ext4 in a sparse image file under
//! `/var/tmp`, loop-mounted, so tests and benchmarks of the volume backends
//! run on each file system whatever the host's is. It needs root and the
//! mkfs tools (btrfs-progs, xfsprogs, e2fsprogs: `.ci/packages.sh`) and says
//! which is missing rather than letting a caller skip. Dropped (also while a
//! panic unwinds) it unmounts and deletes itself; one left by a killed
//! process (its pid is in the name) is cleaned by the next `LoopFs::new`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

const DIR: &str = "/var/tmp";
const PREFIX: &str = "flocker-loopfs-";
static NEXT: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopFsKind {
    Btrfs,
    /// XFS with reflink (`mkfs.xfs -m reflink=1`).
    Xfs,
    /// XFS made without reflink: `FICLONE` is refused.
    XfsNoReflink,
    Ext4,
}

impl LoopFsKind {
    /// The mkfs program, its package and its arguments before the image.
    fn mkfs(self) -> (&'static str, &'static str, &'static [&'static str]) {
        match self {
            LoopFsKind::Btrfs => ("mkfs.btrfs", "btrfs-progs", &["-q", "-f"]),
            LoopFsKind::Xfs => ("mkfs.xfs", "xfsprogs", &["-q", "-f", "-m", "reflink=1"]),
            LoopFsKind::XfsNoReflink => ("mkfs.xfs", "xfsprogs", &["-q", "-f", "-m", "reflink=0"]),
            LoopFsKind::Ext4 => ("mkfs.ext4", "e2fsprogs", &["-q", "-F"]),
        }
    }
}

impl fmt::Display for LoopFsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoopFsKind::Btrfs => "btrfs",
            LoopFsKind::Xfs => "xfs",
            LoopFsKind::XfsNoReflink => "xfs without reflink",
            LoopFsKind::Ext4 => "ext4",
        })
    }
}

/// A mounted loop file system; see the module comment.
pub struct LoopFs {
    image: PathBuf,
    mount: PathBuf,
    mounted: bool,
}

impl LoopFs {
    /// Makes and mounts a `size`-byte (sparse) file system of `kind`.
    /// 512 MiB suits every kind (XFS needs at least 300 MB).
    pub fn new(kind: LoopFsKind, size: u64) -> Result<LoopFs, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(format!(
                "a loop-mounted {kind} needs root (this process runs as uid {euid})"
            ));
        }
        let (tool, package, args) = kind.mkfs();
        let mkfs = find_program(tool)
            .ok_or_else(|| format!("{tool} not found: install {package} (see .ci/packages.sh)"))?;
        clean_orphans();
        let base = Path::new(DIR).join(format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut fs = LoopFs {
            image: base.with_extension("img"),
            mount: base,
            mounted: false,
        };
        std::fs::File::create(&fs.image)
            .and_then(|f| f.set_len(size))
            .map_err(|e| format!("create {}: {e}", fs.image.display()))?;
        let mut cmd = Command::new(mkfs);
        cmd.args(args).arg(&fs.image);
        run(&mut cmd)?;
        std::fs::create_dir(&fs.mount)
            .map_err(|e| format!("create {}: {e}", fs.mount.display()))?;
        let mut cmd = Command::new("mount");
        cmd.args(["-o", "loop"]).arg(&fs.image).arg(&fs.mount);
        run(&mut cmd)?;
        fs.mounted = true;
        Ok(fs)
    }

    /// The mount point: the file system's root directory.
    pub fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            unmount(&self.mount);
        }
        let _ = std::fs::remove_dir(&self.mount);
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Unmounts, retrying while busy (a file still being closed), then lazily.
fn unmount(mount: &Path) {
    for _ in 0..20 {
        let ok = Command::new("umount")
            .arg(mount)
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = Command::new("umount").arg("-l").arg(mount).output();
}

/// Unmounts and removes what processes no longer running left behind.
fn clean_orphans() {
    let Ok(listing) = std::fs::read_dir(DIR) else {
        return;
    };
    for item in listing.flatten() {
        let name = item.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let path = item.path();
        if path.is_dir() {
            unmount(&path);
            let _ = std::fs::remove_dir(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("{shown}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{shown} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// `tool` on PATH or in the sbin directories (not always on a user's PATH).
fn find_program(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}
