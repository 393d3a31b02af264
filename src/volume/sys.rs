//! The few system calls std does not offer, each wrapped once with its
//! fallback: finding data and holes (`SEEK_DATA`/`SEEK_HOLE`), punching a
//! hole, setting a symlink's mtime, `syncfs`, writeback without a flush
//! (`sync_file_range`), free space (`statvfs`), the
//! file system's type (`statfs`), sharing one file's blocks with another
//! (`FICLONE`), and the durable atomic replace of a small file. Nothing here
//! knows about volumes.

use super::error::{IoContext, Result};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Start of the first data at or after `off`; `None` when only a hole
/// remains. A file system without hole support reports all of it as data.
pub(crate) fn seek_data(file: &File, off: u64) -> io::Result<Option<u64>> {
    let off = libc::off_t::try_from(off).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: lseek on a descriptor we own; it only moves the file offset,
    // and every read here is positional (pread), so the offset is unused.
    let r = unsafe { libc::lseek(file.as_raw_fd(), off, libc::SEEK_DATA) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(r as u64))
}

/// Start of the first hole at or after `off` (the end of the file counts as one).
pub(crate) fn seek_hole(file: &File, off: u64) -> io::Result<u64> {
    let off = libc::off_t::try_from(off).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: as in `seek_data`.
    let r = unsafe { libc::lseek(file.as_raw_fd(), off, libc::SEEK_HOLE) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as u64)
}

/// Deallocates `len` bytes at `off`, keeping the size. `Ok(false)` when the
/// file system cannot, so the caller writes zeros instead.
pub(crate) fn punch_hole(file: &File, off: u64, len: u64) -> io::Result<bool> {
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: fallocate on a descriptor we own, with in-range arguments.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(false),
        _ => Err(e),
    }
}

/// Sets the mtime of `path` itself (not of a symlink's target), leaving atime.
pub(crate) fn set_mtime_nofollow(path: &Path, mtime_ns: i64) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000) as libc::time_t,
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
        },
    ];
    // SAFETY: `c` is a NUL-terminated path and `times` two valid timespecs,
    // both outliving the call.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes an unprivileged writer may still use on the file system holding
/// `path` (`statvfs`: available blocks times the fragment size).
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    let st = stat_path(path, libc::statvfs)?;
    // Both are u64 on 64-bit Linux, narrower on some other targets.
    #[allow(clippy::unnecessary_cast)]
    let (blocks, size) = (st.f_bavail as u64, st.f_frsize as u64);
    Ok(blocks.saturating_mul(size))
}

/// `statvfs` or `statfs` (`call`) on `path`.
fn stat_path<T>(
    path: &Path,
    call: unsafe extern "C" fn(*const libc::c_char, *mut T) -> libc::c_int,
) -> io::Result<T> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut st = std::mem::MaybeUninit::<T>::uninit();
    // SAFETY: `call` is statvfs or statfs, which read the NUL-terminated `c`
    // and fill `st`, of the type they take; both outlive the call.
    let r = unsafe { call(c.as_ptr(), st.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call returned 0, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// The `statfs` type magic of the file system holding `path`
/// (`libc::BTRFS_SUPER_MAGIC`, `libc::XFS_SUPER_MAGIC`, ...).
pub(crate) fn fs_magic(path: &Path) -> io::Result<u64> {
    let st = stat_path(path, libc::statfs)?;
    // The magic is a 32-bit pattern in a signed word: keep the bits.
    Ok(st.f_type as u32 as u64)
}

/// Makes `dst` (open for writing) share all of `src`'s blocks, replacing its
/// content: a copy that writes no data (`FICLONE`, XFS with reflink, btrfs).
/// `EOPNOTSUPP`, `EXDEV` and `EINVAL` mean this file system or pair cannot.
pub(crate) fn reflink(src: &File, dst: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source descriptor as its argument; both
    // descriptors are ours and open for the duration of the call.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes `file`'s dirty pages back and waits, without making anything
/// durable (no journal commit, no cache flush: `sync_file_range`). What it
/// is for: writeback write-protects the pages, so a later write through an
/// `mmap` of them faults and moves the file's timestamps.
pub(crate) fn write_back(file: &File) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: sync_file_range on a descriptor we own; offset 0 and length 0
    // mean the whole file.
    if unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether this process may chown to any owner.
pub(crate) fn is_superuser() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Flushes the whole file system holding `file`: one call instead of one
/// fsync per file when a round touched many.
pub(crate) fn syncfs(file: &File) -> io::Result<()> {
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync directory", dir)
}

/// Replaces `dir/name` by `bytes` so that a crash leaves either the old or
/// the new file, whole: write a temporary, fsync it, rename over, fsync the
/// directory (without that last step the rename itself may not survive).
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let mut f = File::create(&tmp).ctx("create", &tmp)?;
    f.write_all(bytes).ctx("write", &tmp)?;
    f.sync_all().ctx("fsync", &tmp)?;
    drop(f);
    std::fs::rename(&tmp, &dst).ctx("rename into place", &dst)?;
    fsync_dir(dir)
}

/// Wall-clock nanoseconds, the clock file timestamps come from.
pub(crate) fn now_ns() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}
