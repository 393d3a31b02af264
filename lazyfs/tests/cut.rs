//! The `flocker-lazyfs` binary mounted for real (needs root and /dev/fuse):
//! a cut keeps exactly what was made durable.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

struct Lazy {
    child: Option<Child>,
    backing: PathBuf,
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl Lazy {
    fn new() -> Lazy {
        let dir = tempfile::tempdir().unwrap();
        let (backing, mnt) = (dir.path().join("backing"), dir.path().join("mnt"));
        fs::create_dir_all(&backing).unwrap();
        fs::create_dir_all(&mnt).unwrap();
        let mut l = Lazy {
            child: None,
            backing,
            mnt,
            _dir: dir,
        };
        l.mount();
        l
    }

    fn mount(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_flocker-lazyfs"))
            .arg("--backing")
            .arg(&self.backing)
            .arg("--mountpoint")
            .arg(&self.mnt)
            .spawn()
            .unwrap();
        self.child = Some(child);
        flocker_lazyfs::wait_mounted(&self.mnt, Duration::from_secs(10))
            .expect("flocker-lazyfs mounts (needs root and /dev/fuse)");
    }

    /// Cut, unmount, mount again: what a rebooted host sees.
    fn power_cycle(&mut self) {
        flocker_lazyfs::cut(&self.mnt).unwrap();
        self.unmount();
        self.mount();
    }

    fn unmount(&mut self) {
        flocker_lazyfs::unmount(&self.mnt).unwrap();
        if let Some(mut c) = self.child.take() {
            c.wait().unwrap();
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

impl Drop for Lazy {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = flocker_lazyfs::unmount(&self.mnt);
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn fsync(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

fn write_file(path: &Path, data: &[u8], sync: bool) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
    if sync {
        f.sync_all().unwrap();
    }
}

#[test]
fn a_cut_loses_unsynced_data_and_keeps_synced_data() {
    let mut l = Lazy::new();
    fs::create_dir(l.p("d")).unwrap();
    fsync(&l.mnt);
    write_file(&l.p("d/synced"), b"kept", true);
    write_file(&l.p("d/unsynced"), b"lost", false);
    write_file(&l.p("d/dsync"), b"", true);
    fsync(&l.p("d"));
    // Overwrites and appends after the syncs, none of them synced ...
    let mut f = OpenOptions::new()
        .write(true)
        .open(l.p("d/synced"))
        .unwrap();
    f.write_all(b"XXXX and more").unwrap();
    drop(f);
    // ... except an O_DSYNC write.
    let mut f = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(l.p("d/dsync"))
        .unwrap();
    f.write_all(b"dsync").unwrap();
    drop(f);
    assert_eq!(fs::read(l.p("d/synced")).unwrap(), b"XXXX and more");

    l.power_cycle();
    assert_eq!(fs::read(l.p("d/synced")).unwrap(), b"kept");
    // Its entry was durable, its data never was.
    assert_eq!(fs::read(l.p("d/unsynced")).unwrap(), b"");
    assert_eq!(fs::read(l.p("d/dsync")).unwrap(), b"dsync");
}

#[test]
fn entries_are_durable_only_once_their_directory_is_synced() {
    let mut l = Lazy::new();
    write_file(&l.p("a"), b"old", true);
    write_file(&l.p("gone"), b"still here", true);
    fsync(&l.mnt);
    // The atomic-replace idiom without the directory's fsync ...
    write_file(&l.p("a.tmp"), b"new", true);
    fs::rename(l.p("a.tmp"), l.p("a")).unwrap();
    write_file(&l.p("fresh"), b"synced data, unsynced entry", true);
    fs::remove_file(l.p("gone")).unwrap();
    fs::create_dir(l.p("newdir")).unwrap();
    assert_eq!(fs::read(l.p("a")).unwrap(), b"new");

    l.power_cycle();
    assert_eq!(fs::read(l.p("a")).unwrap(), b"old");
    assert!(!l.p("a.tmp").exists());
    assert!(!l.p("fresh").exists());
    assert!(!l.p("newdir").exists());
    assert_eq!(fs::read(l.p("gone")).unwrap(), b"still here");

    // ... and with it.
    write_file(&l.p("a.tmp"), b"new", true);
    fs::rename(l.p("a.tmp"), l.p("a")).unwrap();
    fs::remove_file(l.p("gone")).unwrap();
    fsync(&l.mnt);
    l.power_cycle();
    assert_eq!(fs::read(l.p("a")).unwrap(), b"new");
    assert!(!l.p("gone").exists());
}

#[test]
fn a_truncate_or_punched_hole_without_fsync_is_undone() {
    let mut l = Lazy::new();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    write_file(&l.p("f"), &data, true);
    fsync(&l.mnt);
    let f = OpenOptions::new().write(true).open(l.p("f")).unwrap();
    // SAFETY: a descriptor we own; punches 64 KiB at 8 KiB.
    let r = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            8192,
            65536,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    f.set_len(1000).unwrap();
    drop(f);
    l.power_cycle();
    assert_eq!(fs::read(l.p("f")).unwrap(), data);
}

#[test]
fn after_a_cut_every_operation_fails_until_mounted_again() {
    let mut l = Lazy::new();
    fs::create_dir(l.p("d")).unwrap();
    write_file(&l.p("d/f"), b"x", true);
    fsync(&l.p("d"));
    fsync(&l.mnt);
    let open = File::open(l.p("d/f")).unwrap();
    flocker_lazyfs::cut(&l.mnt).unwrap();
    let eio = |r: std::io::Error| assert_eq!(r.raw_os_error(), Some(libc::EIO), "{r}");
    eio(fs::metadata(l.p("d/f")).unwrap_err());
    eio(fs::read_dir(l.p("d")).map(|_| ()).unwrap_err());
    eio(File::create(l.p("d/g")).map(|_| ()).unwrap_err());
    eio(fs::create_dir(l.p("e")).unwrap_err());
    eio(open.sync_all().unwrap_err());
    drop(open);
    l.unmount();
    l.mount();
    assert_eq!(fs::read(l.p("d/f")).unwrap(), b"x");
}

#[test]
fn metadata_of_every_kind_of_entry_passes_through() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let l = Lazy::new();
    write_file(&l.p("f"), b"x", false);
    std::os::unix::fs::symlink("f", l.p("link")).unwrap();
    let fifo = std::ffi::CString::new(l.p("fifo").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::lchown(l.p("link"), Some(7), Some(8)).unwrap();
    std::os::unix::fs::chown(l.p("f"), Some(1000), Some(1001)).unwrap();
    fs::set_permissions(l.p("f"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::rename(l.p("link"), l.p("link2")).unwrap();
    let t = std::ffi::CString::new(l.p("link2").into_os_string().into_encoded_bytes()).unwrap();
    let times = [libc::timespec {
        tv_sec: 1_000_000,
        tv_nsec: 123,
    }; 2];
    // SAFETY: a NUL-terminated path and times that outlive the call.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            t.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let m = fs::symlink_metadata(l.p("link2")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mtime(), m.mtime_nsec()),
        (7, 8, 1_000_000, 123)
    );
    let m = fs::metadata(l.p("f")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1001, 0o4755));
    assert!(fs::symlink_metadata(l.p("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}
