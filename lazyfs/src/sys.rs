//! The `*at` system calls the passthrough makes on the backing tree, each
//! through an `O_PATH` descriptor held per inode (so a rename never has to
//! rewrite a path table), with errors as `io::Error`.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

pub fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `/proc/self/fd/N`: reopens an `O_PATH` descriptor with real access.
pub fn proc_path(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

/// An `O_PATH` handle on `name` in `dir` (the entry itself, not a
/// symlink's target).
pub fn open_path(dir: RawFd, name: &OsStr) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: a NUL-terminated name; the returned descriptor is ours.
    let fd = unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `lstat` of `name` in `dir`, or of `dir` itself when `name` is empty.
pub fn stat_at(dir: RawFd, name: &OsStr) -> io::Result<libc::stat> {
    let c = cstr(name)?;
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    // SAFETY: zeroed plain-old-data filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers for the call's duration.
    check(unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

pub fn stat_fd(fd: RawFd) -> io::Result<libc::stat> {
    stat_at(fd, OsStr::new(""))
}

pub fn mkdir_at(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: a NUL-terminated name.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode) })
}

pub fn mknod_at(dir: RawFd, name: &OsStr, mode: u32, rdev: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: a NUL-terminated name.
    check(unsafe { libc::mknodat(dir, c.as_ptr(), mode, rdev as libc::dev_t) })
}

pub fn symlink_at(target: &OsStr, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let (t, c) = (cstr(target)?, cstr(name)?);
    // SAFETY: NUL-terminated strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) })
}

/// A new name for the inode `fd` holds (`AT_EMPTY_PATH` needs
/// CAP_DAC_READ_SEARCH: lazyfs runs as root).
pub fn link_fd(fd: RawFd, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: NUL-terminated strings.
    check(unsafe { libc::linkat(fd, c"".as_ptr(), dir, c.as_ptr(), libc::AT_EMPTY_PATH) })
}

pub fn unlink_at(dir: RawFd, name: &OsStr, is_dir: bool) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: a NUL-terminated name.
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), flags) })
}

pub fn rename_at(
    from_dir: RawFd,
    from: &OsStr,
    to_dir: RawFd,
    to: &OsStr,
    flags: u32,
) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: NUL-terminated names; renameat2 through syscall (older libc
    // wrappers lack it).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            from_dir,
            f.as_ptr(),
            to_dir,
            t.as_ptr(),
            flags,
        )
    };
    check(ret as libc::c_int)
}

pub fn read_link(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: the buffer outlives the call; its length is passed.
    let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

pub fn chown_fd(fd: RawFd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let (u, g) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
    let flags = libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: an empty path with AT_EMPTY_PATH acts on `fd`.
    check(unsafe { libc::fchownat(fd, c"".as_ptr(), u, g, flags) })
}

/// utimensat(2): `name` in `dir`.
pub fn utimens_at(
    dir: RawFd,
    name: &OsStr,
    times: [libc::timespec; 2],
    flags: i32,
) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: a NUL-terminated name and `times` outlive the call.
    check(unsafe { libc::utimensat(dir, c.as_ptr(), times.as_ptr(), flags) })
}

pub fn fallocate(file: &File, mode: i32, off: u64, len: u64) -> io::Result<()> {
    // SAFETY: a descriptor we own.
    check(unsafe { libc::fallocate(file.as_raw_fd(), mode, off as i64, len as i64) })
}

pub fn lseek(file: &File, off: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: a descriptor we own.
    let r = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn statvfs(fd: RawFd) -> io::Result<libc::statvfs> {
    // SAFETY: zeroed plain-old-data filled by the kernel.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer for the call's duration.
    check(unsafe { libc::fstatvfs(fd, &mut s) })?;
    Ok(s)
}

/// Reads `len` bytes at `off`, zero-filled past the end of the file.
pub fn read_zero_filled(file: &File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}
