//! One Docker engine per lab host: a `dockerd` started inside the host's
//! network namespace (`nsenter --net`, keeping the root mounts), with its
//! data, exec root, pid file, log and socket in the host's own directory, so
//! it publishes ports on the host's address with DNAT rules inside the
//! namespace and shares nothing with the root engine.
//!
//! Talking to it while starting and tearing down is synchronous (teardown
//! runs in `Drop`, in or out of an async runtime): a few HTTP/1.0 requests
//! over the unix socket, which also makes the readiness probe independent of
//! the library's own engine client.

use super::slot::process_alive;
use super::sys::signal;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Where the root engine listens: asked which storage driver works here.
const ROOT_ENGINE: &str = "/var/run/docker.sock";

/// Log lines quoted in an error about an engine.
const LOG_TAIL: usize = 25;

/// Longest engine reply read (a container list of a lab is far smaller).
const MAX_REPLY: u64 = 8 * 1024 * 1024;

/// Grace for a dockerd to stop its containers and exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

pub(crate) fn socket(dir: &Path) -> PathBuf {
    dir.join("docker.sock")
}

pub(crate) fn pid_file(dir: &Path) -> PathBuf {
    dir.join("dockerd.pid")
}

pub(crate) fn log_file(dir: &Path) -> PathBuf {
    dir.join("dockerd.log")
}

/// The storage driver the root engine uses (what works on this file
/// system), or `None` when it does not answer: dockerd then picks its own.
pub(crate) fn root_storage_driver() -> Option<String> {
    let (status, body) = request(
        Path::new(ROOT_ENGINE),
        "GET",
        "/info",
        Duration::from_secs(10),
    )
    .ok()?;
    if status != 200 {
        return None;
    }
    let info: serde_json::Value = serde_json::from_slice(&body).ok()?;
    info.get("Driver")?
        .as_str()
        .filter(|d| !d.is_empty())
        .map(String::from)
}

/// Starts dockerd in namespace `ns` with everything under `dir`.
pub(crate) fn spawn(ns: &str, dir: &Path, driver: Option<&str>) -> Result<Child> {
    for sub in ["root", "exec"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    // An empty config file of its own: /etc/docker/daemon.json may set
    // options (data-root) that dockerd refuses to see twice with the flags.
    let config = dir.join("daemon.json");
    std::fs::write(&config, "{}\n").with_context(|| format!("writing {}", config.display()))?;
    let log = std::fs::File::create(log_file(dir))
        .with_context(|| format!("creating {}", log_file(dir).display()))?;
    let log_err = log.try_clone().context("duplicating the log file")?;
    let mut cmd = super::links::netns_command(ns, "dockerd");
    cmd.arg("--config-file")
        .arg(&config)
        .arg("--data-root")
        .arg(dir.join("root"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(pid_file(dir))
        .arg("-H")
        .arg(format!("unix://{}", socket(dir).display()));
    if let Some(driver) = driver {
        cmd.args(["--storage-driver", driver]);
    }
    // Its own process group, as `setsid` gives it: signals meant for the
    // caller's group (a ^C, a harness killing a test) leave the engine
    // running, so whoever cleans the slot still finds it to remove its
    // containers through it.
    cmd.stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0);
    cmd.spawn().context("starting dockerd through nsenter")
}

/// Waits until every engine answers `/_ping`, all within `limit`. Each entry
/// is (host name, host directory, its dockerd). An engine that exits or
/// stays silent fails the wait with the end of its log.
pub(crate) fn wait_ready(engines: &mut [(&str, &Path, &mut Child)], limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut ready = vec![false; engines.len()];
    loop {
        for (i, (host, dir, child)) in engines.iter_mut().enumerate() {
            if ready[i] {
                continue;
            }
            if let Some(status) = child.try_wait().context("waiting for dockerd")? {
                bail!(
                    "dockerd of lab host {host} exited ({status}) before answering; {}",
                    log_tail(dir)
                );
            }
            ready[i] = ping(&socket(dir));
        }
        if ready.iter().all(|r| *r) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let (host, dir, _) = &engines[ready.iter().position(|r| !r).unwrap_or(0)];
            bail!(
                "dockerd of lab host {host} did not answer on {} within {limit:?}; {}",
                socket(dir).display(),
                log_tail(dir)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last lines of the engine's log, for an error message.
pub(crate) fn log_tail(dir: &Path) -> String {
    let path = log_file(dir);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            // dockerd's gRPC chatter with containerd would fill the tail.
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("module=grpc"))
                .collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            let tail: Vec<String> = tail.iter().map(|l| l.chars().take(400).collect()).collect();
            format!("last lines of {}:\n{}", path.display(), tail.join("\n"))
        }
        Err(e) => format!("no log at {} ({e})", path.display()),
    }
}

/// One HTTP/1.0 request on a unix socket: the status and the body. HTTP/1.0
/// so the engine closes the connection after the reply and never chunks it.
fn request(sock: &Path, method: &str, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>)> {
    let mut stream =
        UnixStream::connect(sock).with_context(|| format!("connecting to {}", sock.display()))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut reply = Vec::new();
    stream
        .take(MAX_REPLY + 1)
        .read_to_end(&mut reply)
        .with_context(|| format!("reading the reply to {method} {path}"))?;
    if reply.len() as u64 > MAX_REPLY {
        bail!("the reply to {method} {path} exceeds {MAX_REPLY} bytes");
    }
    let Some(head_end) = reply.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("the reply to {method} {path} has no HTTP header");
    };
    let head = String::from_utf8_lossy(&reply[..head_end]);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("the reply to {method} {path} has no status: {head:?}"))?;
    Ok((status, reply[head_end + 4..].to_vec()))
}

pub(crate) fn ping(sock: &Path) -> bool {
    request(sock, "GET", "/_ping", Duration::from_secs(2)).is_ok_and(|(status, _)| status == 200)
}

/// Force-removes every container of the engine (with anonymous volumes);
/// how many there were.
pub(crate) fn remove_containers(sock: &Path) -> Result<usize> {
    let timeout = Duration::from_secs(30);
    let (status, body) = request(sock, "GET", "/containers/json?all=1", timeout)?;
    if status != 200 {
        bail!(
            "listing containers on {}: HTTP {status}: {}",
            sock.display(),
            String::from_utf8_lossy(&body).trim()
        );
    }
    let list: Vec<serde_json::Value> =
        serde_json::from_slice(&body).context("decoding the container list")?;
    let ids: Vec<&str> = list
        .iter()
        .filter_map(|c| c.get("Id")?.as_str())
        .filter(|id| id.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    for id in &ids {
        let (status, body) = request(
            sock,
            "DELETE",
            &format!("/containers/{id}?force=1&v=1"),
            timeout,
        )?;
        // 404: it went by itself meanwhile.
        if !matches!(status, 204 | 404) {
            bail!(
                "removing container {id} on {}: HTTP {status}: {}",
                sock.display(),
                String::from_utf8_lossy(&body).trim()
            );
        }
    }
    Ok(ids.len())
}

/// Stops dockerds: SIGTERM (they stop their containers and unmount), up to
/// [`STOP_GRACE`], then SIGKILL. `children` are reaped; `pids` (engines of a
/// dead lab, from their pid files) are only signalled. Returns the pids
/// still running after all that.
pub(crate) fn stop(children: &mut Vec<Child>, pids: &[u32]) -> Vec<u32> {
    let mut others: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| !children.iter().any(|c| c.id() == *p))
        .collect();
    for pid in children.iter().map(Child::id).chain(others.iter().copied()) {
        signal(pid, libc::SIGTERM);
    }
    if !wait_exit(children, &mut others, STOP_GRACE) {
        for pid in children.iter().map(Child::id).chain(others.iter().copied()) {
            signal(pid, libc::SIGKILL);
        }
        wait_exit(children, &mut others, Duration::from_secs(5));
    }
    children.iter().map(Child::id).chain(others).collect()
}

/// Waits at most `limit` until every child is reaped and every other pid
/// is gone, dropping each from its list as it goes; whether all went.
fn wait_exit(children: &mut Vec<Child>, others: &mut Vec<u32>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        // Not process_alive for children: a leader thread shows as a zombie
        // while its other threads still exit, and waitpid would still miss it.
        children.retain_mut(|child| !matches!(child.try_wait(), Ok(Some(_)) | Err(_)));
        others.retain(|pid| process_alive(*pid));
        if children.is_empty() && others.is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid in an engine's pid file, if that process is still the dockerd
/// started for `dir` (its command line names the directory): a pid file of a
/// lab long gone may name a pid reused by something else.
pub(crate) fn recorded_pid(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let dir = dir.as_os_str().as_encoded_bytes();
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg.starts_with(dir))
        .then_some(pid)
}
