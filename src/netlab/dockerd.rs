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
//!
//! [`start_engines`] and [`clean_engines`] are the whole life cycle for
//! anyone else who needs engines in namespaces (the chaos suite): start
//! several at once, and later remove their containers, stop them and
//! whatever they left, from the children held or from the pid files of a
//! process that died.

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

/// The engine's socket in its directory (`--engine unix://<this>`).
pub fn socket(dir: &Path) -> PathBuf {
    dir.join("docker.sock")
}

pub(crate) fn pid_file(dir: &Path) -> PathBuf {
    dir.join("dockerd.pid")
}

/// The engine's log (its stdout and stderr) in its directory.
pub fn log_file(dir: &Path) -> PathBuf {
    dir.join("dockerd.log")
}

/// The storage driver the root engine uses (what works on this file
/// system), or `None` when it does not answer: dockerd then picks its own.
fn root_storage_driver() -> Option<String> {
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
fn spawn(ns: &str, dir: &Path, driver: Option<&str>) -> Result<Child> {
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

/// One engine to start: a name for messages, the network namespace
/// (`/run/netns/<ns>`) and the directory for its data, log and socket.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    pub name: String,
    pub ns: String,
    pub dir: PathBuf,
}

/// Starts one dockerd per spec, all at once, and waits until each answers
/// within `limit`. Each child is pushed to `children` as soon as it is
/// spawned, so the caller's [`clean_engines`] stops it even when a later one
/// fails. Engines use the storage driver the root engine uses, when one
/// answers.
pub fn start_engines(
    specs: &[EngineSpec],
    children: &mut Vec<Child>,
    limit: Duration,
) -> Result<()> {
    let driver = root_storage_driver();
    let first = children.len();
    for spec in specs {
        let child = spawn(&spec.ns, &spec.dir, driver.as_deref())
            .with_context(|| format!("engine of {}", spec.name))?;
        children.push(child);
    }
    let mut engines: Vec<(&str, &Path, &mut Child)> = specs
        .iter()
        .zip(children[first..].iter_mut())
        .map(|(s, child)| (s.name.as_str(), s.dir.as_path(), child))
        .collect();
    wait_ready(&mut engines, limit)
}

/// Removes everything engines left whose directories are the
/// subdirectories of `dir`: their containers (through each engine that
/// still answers), the engines themselves (`children`, reaped, and any
/// whose pid file is there), processes left in `namespaces` (names under
/// `/run/netns`) or running from a root under `dir` (containers of an
/// engine that had to be killed), and the mounts under `dir`. Every step
/// runs even when an earlier one failed; returns what could not be done.
/// Processes of the caller's own in those namespaces (the nodes that would
/// recreate containers) must be gone first.
pub fn clean_engines(dir: &Path, namespaces: &[String], children: &mut Vec<Child>) -> Vec<String> {
    let mut errors: Vec<String> = Vec::new();
    let engine_dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    for d in &engine_dirs {
        let sock = socket(d);
        if ping(&sock) {
            if let Err(e) = remove_containers(&sock) {
                errors.push(format!("{e:#}"));
            }
        }
    }
    let recorded: Vec<u32> = engine_dirs.iter().filter_map(|d| recorded_pid(d)).collect();
    let left = stop(children, &recorded);
    if !left.is_empty() {
        errors.push(format!("dockerd pids {left:?} survived SIGKILL"));
    }
    let real = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    // A container still running (an engine that had to be killed) keeps its
    // root mounted; detaching first lets the fuse daemons still serve it.
    let _ = super::sys::unmount_under(&real);
    let ids: Vec<(u64, u64)> = namespaces
        .iter()
        .filter_map(|ns| super::sys::netns_id(&Path::new("/run/netns").join(ns)))
        .collect();
    let left = super::sys::kill_strays(&ids, &real);
    if !left.is_empty() {
        errors.push(format!("processes {left:?} survived SIGKILL"));
    }
    if let Err(e) = super::sys::unmount_under(&real) {
        errors.push(format!("{e:#}"));
    }
    errors
}

/// Waits until every engine answers `/_ping`, all within `limit`. Each entry
/// is (host name, host directory, its dockerd). An engine that exits or
/// stays silent fails the wait with the end of its log.
fn wait_ready(engines: &mut [(&str, &Path, &mut Child)], limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut ready = vec![false; engines.len()];
    loop {
        for (i, (host, dir, child)) in engines.iter_mut().enumerate() {
            if ready[i] {
                continue;
            }
            if let Some(status) = child.try_wait().context("waiting for dockerd")? {
                bail!(
                    "dockerd of {host} exited ({status}) before answering; {}",
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
                "dockerd of {host} did not answer on {} within {limit:?}; {}",
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
