//! btrfs subvolumes through their ioctls: create one, snapshot one
//! (read-only or writable), delete one, tell one from a directory, bound
//! the bytes one references (quota groups: a volume's `maximum_size`). Called
//! through libc rather than the `btrfs` command: no process per point (a
//! point every few seconds per volume), the error is the errno on the exact
//! path, and btrfs-progs is needed only to make file systems (tests).

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

const IOCTL_MAGIC: u32 = 0x94;
/// `BTRFS_PATH_NAME_MAX` and `BTRFS_SUBVOL_NAME_MAX` (linux/btrfs.h).
const PATH_NAME_MAX: usize = 4087;
const SUBVOL_NAME_MAX: usize = 4039;
const SUBVOL_RDONLY: u64 = 1 << 1;
/// Inode number of every subvolume's root directory
/// (`BTRFS_FIRST_FREE_OBJECTID`); no other directory has it.
const SUBVOLUME_ROOT_INO: u64 = 256;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2`, its unions reduced to the members used
/// here (the qgroup union as its 32 reserved bytes, the name union as name).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_quota_ctl_args`.
#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

/// `struct btrfs_ioctl_qgroup_limit_args` with its `btrfs_qgroup_limit`.
#[repr(C)]
struct QgroupLimitArgs {
    /// 0: the subvolume the descriptor is in.
    qgroupid: u64,
    flags: u64,
    max_referenced: u64,
    max_exclusive: u64,
    reserved_referenced: u64,
    reserved_exclusive: u64,
}

/// `BTRFS_QUOTA_CTL_ENABLE`.
const QUOTA_CTL_ENABLE: u64 = 1;
/// `BTRFS_QGROUP_LIMIT_MAX_RFER`.
const QGROUP_LIMIT_MAX_REFERENCED: u64 = 1;

const _: () = assert!(std::mem::size_of::<VolArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<VolArgsV2>() == 4096);

const IOC_SUBVOL_CREATE: libc::Ioctl = libc::_IOW::<VolArgs>(IOCTL_MAGIC, 14);
const IOC_SNAP_DESTROY: libc::Ioctl = libc::_IOW::<VolArgs>(IOCTL_MAGIC, 15);
const IOC_SNAP_CREATE_V2: libc::Ioctl = libc::_IOW::<VolArgsV2>(IOCTL_MAGIC, 23);
const IOC_QUOTA_CTL: libc::Ioctl = libc::_IOWR::<QuotaCtlArgs>(IOCTL_MAGIC, 40);
// The kernel header declares this one as read, although it passes the limit in.
const IOC_QGROUP_LIMIT: libc::Ioctl = libc::_IOR::<QgroupLimitArgs>(IOCTL_MAGIC, 43);

/// Whether `m` (from `lstat`, on a btrfs) is a subvolume's root.
pub(super) fn is_subvolume(m: &std::fs::Metadata) -> bool {
    m.file_type().is_dir() && m.ino() == SUBVOLUME_ROOT_INO
}

/// A new, empty subvolume at `path` (mode 0755, owned by this process).
pub(super) fn create_subvolume(path: &Path) -> io::Result<()> {
    by_name(IOC_SUBVOL_CREATE, path)
}

/// A snapshot of the subvolume `source` at `dest` (which must not exist),
/// read-only or writable. Atomic: it holds the subvolume as one transaction
/// commit left it, which includes every write that returned before the call.
pub(super) fn snapshot(source: &Path, dest: &Path, read_only: bool) -> io::Result<()> {
    let src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(source)?;
    let (parent, name) = parent_and_name(dest)?;
    let mut args = VolArgsV2 {
        fd: i64::from(src.as_raw_fd()),
        transid: 0,
        flags: if read_only { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; SUBVOL_NAME_MAX + 1],
    };
    put_name(&mut args.name, name)?;
    // SAFETY: the ioctl reads one `VolArgsV2` naming a descriptor we hold
    // open; both outlive the call.
    let r = unsafe { libc::ioctl(parent.as_raw_fd(), IOC_SNAP_CREATE_V2, &args) };
    check(r)
}

/// Deletes the subvolume (or snapshot, read-only too) at `path` with
/// everything in it. `ENOTEMPTY` when it holds another subvolume; `EPERM`
/// unless root (or mounted `user_subvol_rm_allowed`).
pub(super) fn delete_subvolume(path: &Path) -> io::Result<()> {
    by_name(IOC_SNAP_DESTROY, path)
}

/// Turns quota groups on for the file system holding `path` (a no-op when
/// they are on). Needs CAP_SYS_ADMIN.
pub(super) fn enable_quota(path: &Path) -> io::Result<()> {
    let dir = open_dir(path)?;
    let args = QuotaCtlArgs {
        cmd: QUOTA_CTL_ENABLE,
        status: 0,
    };
    // SAFETY: the ioctl reads and writes one `QuotaCtlArgs` that outlives
    // the call, on a directory descriptor we own.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), IOC_QUOTA_CTL, &args) };
    check(r)
}

/// Bounds the bytes the subvolume at `path` references (`None`: no bound).
/// Writes past it fail with EDQUOT. Quota groups must be on.
pub(super) fn limit_referenced(path: &Path, max: Option<u64>) -> io::Result<()> {
    let dir = open_dir(path)?;
    let args = QgroupLimitArgs {
        qgroupid: 0,
        flags: QGROUP_LIMIT_MAX_REFERENCED,
        max_referenced: max.unwrap_or(u64::MAX),
        max_exclusive: 0,
        reserved_referenced: 0,
        reserved_exclusive: 0,
    };
    // SAFETY: the ioctl reads one `QgroupLimitArgs` that outlives the
    // call, on a directory descriptor we own.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), IOC_QGROUP_LIMIT, &args) };
    check(r)
}

fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
}

/// An ioctl that takes a `VolArgs` naming its target in its parent directory.
fn by_name(request: libc::Ioctl, path: &Path) -> io::Result<()> {
    let (parent, name) = parent_and_name(path)?;
    let mut args = VolArgs {
        fd: 0,
        name: [0; PATH_NAME_MAX + 1],
    };
    put_name(&mut args.name, name)?;
    // SAFETY: `request` is one of the ioctls above that read one `VolArgs`;
    // it outlives the call, on a directory descriptor we own.
    let r = unsafe { libc::ioctl(parent.as_raw_fd(), request, &args) };
    check(r)
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The directory holding `path`, opened, and `path`'s last component: the
/// subvolume ioctls name their target relative to its parent.
fn parent_and_name(path: &Path) -> io::Result<(File, &OsStr)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no last name"))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(parent)?;
    Ok((dir, name))
}

/// Copies `name` into a NUL-terminated fixed buffer.
fn put_name(buf: &mut [u8], name: &OsStr) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.len() >= buf.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "name too long for a subvolume or holds a NUL byte",
        ));
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}
