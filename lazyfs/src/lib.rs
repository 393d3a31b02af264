//! flocker-lazyfs: a FUSE file system that forgets, for power-cut tests.
//!
//! It serves `<backing>/root` and keeps, beside it, what a power cut would
//! keep (strict POSIX durability, [`model`]): a file's data is durable once
//! the file is fsynced or fdatasynced or written with O_SYNC/O_DSYNC; a
//! directory entry (create, mkdir, rename, unlink, link, symlink, rmdir)
//! once its directory is fsynced. Writing `cut` to `<mount>/.lazyfs` is the
//! power cut: the backing tree becomes its durable state, metadata
//! included, and every later operation fails with EIO until the file
//! system is unmounted and mounted again. Modes, owners and times count as
//! durable at once.
//!
//! Memory: overwriting durable bytes saves them (appends cost nothing).
//! Past `--max-dirty-mib` of saved bytes, the file holding the most is made
//! durable, as the kernel's writeback may do at any time: writers never
//! block and memory stays bounded, at the price of keeping more than a
//! strict cut would for a writer that overwrites that much without fsync.

pub mod fs;
pub mod model;
mod restore;
mod sys;

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The control file in the mount's root (not listed by readdir).
pub const CONTROL_NAME: &str = ".lazyfs";

/// The default bound on saved (overwritten, unsynced) bytes.
pub const DEFAULT_MAX_DIRTY_MIB: u64 = 256;

/// Makes `backing` ready to serve: its `root` (created when missing) and an
/// empty graveyard; a rebuild a crash interrupted is completed.
pub fn prepare_backing(backing: &Path) -> io::Result<()> {
    let (root, next, old) = (
        backing.join("root"),
        backing.join("next"),
        backing.join("old"),
    );
    if !root.exists() && next.exists() {
        std::fs::rename(&next, &root)?;
    }
    for leftover in [next, old, backing.join("grave")] {
        if leftover.exists() {
            std::fs::remove_dir_all(&leftover)?;
        }
    }
    std::fs::create_dir_all(&root)?;
    std::fs::create_dir(backing.join("grave"))
}

/// The mount options: `allow_other` (containers' bind mounts and other
/// users reach the tree), the kernel checking permissions.
pub fn config() -> fuser::Config {
    let mut c = fuser::Config::default();
    c.mount_options = vec![
        fuser::MountOption::FSName("flocker-lazyfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::Dev,
        fuser::MountOption::Suid,
    ];
    c.acl = fuser::SessionACL::All;
    c
}

/// A lazyfs served by a thread of this process (for tests).
pub struct Mount {
    session: Option<fuser::BackgroundSession>,
    /// The mount's device, taken while it answers (after a cut it does not).
    dev: u64,
    backing: PathBuf,
    mountpoint: PathBuf,
    max_dirty_mib: u64,
}

impl Mount {
    /// Mounts `<backing>/root` at `mountpoint`.
    pub fn new(backing: &Path, mountpoint: &Path, max_dirty_mib: u64) -> io::Result<Mount> {
        let fs = fs::LazyFs::new(backing, max_dirty_mib << 20)?;
        let session = fuser::spawn_mount(fs, mountpoint, &config())?;
        wait_mounted(mountpoint, Duration::from_secs(10))?;
        let dev = std::fs::metadata(mountpoint)?.dev();
        Ok(Mount {
            session: Some(session),
            dev,
            backing: backing.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
            max_dirty_mib,
        })
    }

    /// A power cut and a reboot: cut, unmount, mount what survived.
    pub fn power_cycle(self) -> io::Result<Mount> {
        self.cut()?;
        self.remount()
    }

    /// Unmounts and mounts again (after a cut: what survived it).
    pub fn remount(self) -> io::Result<Mount> {
        let (backing, mountpoint, max) = (
            self.backing.clone(),
            self.mountpoint.clone(),
            self.max_dirty_mib,
        );
        self.unmount()?;
        Mount::new(&backing, &mountpoint, max)
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The power cut.
    pub fn cut(&self) -> io::Result<()> {
        cut(&self.mountpoint)
    }

    /// Unmounts and waits for the serving thread. The mount is detached
    /// and its FUSE connection aborted, so files still open in it (a killed
    /// process's, a container's bind mount) cannot hold the thread up.
    pub fn unmount(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let detached = unmount(&self.mountpoint);
        abort_connection(self.dev);
        // The session's own unmount finds nothing left to unmount.
        let joined = session.join();
        detached.and(joined)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Where fusectl shows each FUSE connection.
const FUSECTL: &str = "/sys/fs/fuse/connections";

/// Ends the FUSE connection of the file system on device `dev` (fusectl's
/// `abort`): every request still open fails and the server's loop ends,
/// even while another mount namespace (a container's) still holds the
/// detached mount.
pub fn abort_connection(dev: u64) {
    ensure_fusectl();
    let abort = Path::new(FUSECTL).join(dev.to_string()).join("abort");
    let _ = std::fs::write(abort, b"1");
}

/// Mounts fusectl where it belongs when nothing is mounted there (many
/// hosts without systemd lack it). Best effort: without it an unmount
/// waits for the last holder of the mount.
fn ensure_fusectl() {
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(2) == Some("fusectl")));
    if mounted {
        return;
    }
    let (src, dir) = (c"fusectl", c"/sys/fs/fuse/connections");
    // SAFETY: NUL-terminated strings; no data argument.
    unsafe {
        libc::mount(
            src.as_ptr(),
            dir.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
}

/// Cuts the power of the lazyfs mounted at `mountpoint`.
pub fn cut(mountpoint: &Path) -> io::Result<()> {
    std::fs::write(mountpoint.join(CONTROL_NAME), b"cut\n")
}

/// Whether a FUSE file system is mounted at `mountpoint`.
pub fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(canon) = mountpoint.canonicalize() else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.get(4).is_some_and(|m| Path::new(m) == canon) && l.contains(" - fuse")
    })
}

/// Waits until `mountpoint` is a FUSE mount.
pub fn wait_mounted(mountpoint: &Path, within: Duration) -> io::Result<()> {
    let deadline = Instant::now() + within;
    while !is_mounted(mountpoint) {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{} is not mounted", mountpoint.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Detaches the mount at `mountpoint` (lazily: processes still holding
/// files in it keep them until they exit).
pub fn unmount(mountpoint: &Path) -> io::Result<()> {
    let c = sys::cstr(mountpoint.as_os_str())?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
