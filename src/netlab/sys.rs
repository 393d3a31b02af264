//! The host-side chores of the lab: running the system tools it needs (and
//! saying which are missing), finding and killing processes left in its
//! namespaces or under its data directory, and unmounting what its engines
//! mounted there.

use super::slot::process_alive;
use anyhow::{bail, Context, Result};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The programs the lab runs, with the Debian package that has each.
const TOOLS: [(&str, &str); 5] = [
    ("ip", "iproute2"),
    ("iptables", "iptables"),
    ("nsenter", "util-linux"),
    ("sysctl", "procps"),
    ("dockerd", "docker.io"),
];

/// Fails, naming everything missing, unless this process is root and every
/// tool in [`TOOLS`] is on `PATH`.
pub(crate) fn require_root_and_tools() -> Result<()> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        missing.push(format!(
            "root (running as uid {euid}; namespaces, veths, iptables and dockerd need it)"
        ));
    }
    for (tool, package) in TOOLS {
        if find_on_path(tool).is_none() {
            missing.push(format!("{tool} (apt-get install {package})"));
        }
    }
    if !missing.is_empty() {
        bail!(
            "the network lab cannot run here; missing: {}",
            missing.join(", ")
        );
    }
    Ok(())
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

/// Runs `program args…`; its standard output on success, else an error with
/// the command line and what it said on standard error.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    output(&mut cmd)
}

/// As [`run`], for a prepared command.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sends `signal` to `pid`; a process already gone is not an error.
pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory effects; pids come from our own children,
    // pid files of our engines or /proc scans of our namespaces.
    unsafe { libc::kill(pid, signal) };
}

/// Waits until none of `pids` runs, at most `limit`; returns those still
/// running.
pub(crate) fn wait_gone(pids: &[u32], limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|p| process_alive(*p)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (device, inode) of a network namespace: how `/proc/<pid>/ns/net` and a
/// `/run/netns/<name>` bind mount are compared.
pub(crate) fn netns_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Processes (other than this one) in one of `namespaces`, or whose root
/// directory is under `dir` (containers of the lab's engines).
pub(crate) fn stray_processes(namespaces: &[(u64, u64)], dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            let proc_dir = PathBuf::from(format!("/proc/{pid}"));
            let in_ns =
                netns_id(&proc_dir.join("ns/net")).is_some_and(|id| namespaces.contains(&id));
            in_ns
                || std::fs::read_link(proc_dir.join("root"))
                    .is_ok_and(|root| root != Path::new("/") && root.starts_with(dir))
        })
        .filter(|&pid| process_alive(pid))
        .collect()
}

/// Kills every stray process (see [`stray_processes`]) and waits for them
/// to go; the pids still there after a few rounds.
pub(crate) fn kill_strays(namespaces: &[(u64, u64)], dir: &Path) -> Vec<u32> {
    let mut left = Vec::new();
    for _ in 0..4 {
        let strays = stray_processes(namespaces, dir);
        if strays.is_empty() {
            return Vec::new();
        }
        for &pid in &strays {
            signal(pid, libc::SIGKILL);
        }
        left = wait_gone(&strays, Duration::from_secs(5));
    }
    left
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(p))))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points.dedup();
    points
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Detaches every mount at or under `dir` (stacked mounts take a few
/// rounds); fails naming those that stay.
pub(crate) fn unmount_under(dir: &Path) -> Result<()> {
    for _ in 0..5 {
        let points = mounts_under(dir);
        if points.is_empty() {
            return Ok(());
        }
        for p in points {
            let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
                continue;
            };
            // SAFETY: a valid NUL-terminated path; MNT_DETACH never blocks.
            // A failure shows in the next round's listing.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let left = mounts_under(dir);
    if left.is_empty() {
        return Ok(());
    }
    bail!(
        "mounts under {} would not go: {}",
        dir.display(),
        left.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), b"/a b\\c");
        assert_eq!(unescape_mountinfo(r"/plain"), b"/plain");
        assert_eq!(unescape_mountinfo(r"/odd\04"), b"/odd\\04");
    }

    #[test]
    fn common_tools_are_found_on_path() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("surely-no-such-program-here").is_none());
    }
}
