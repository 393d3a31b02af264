//! The lab's network: a bridge in the root namespace, one namespace per host
//! and one for the client, each joined to the bridge by a veth pair whose
//! inner end is `eth0`. Names are `fl-<slot>-…`, addresses `10.214.<slot>.x`.
//!
//! Guards, so nothing leaves the machine: the bridge holds
//! `10.214.<slot>.1/24`, so the root namespace routes the subnet to the
//! bridge; the namespaces have no default route. The root engine sets
//! FORWARD's policy to DROP and bridged frames pass iptables
//! (`br_netfilter`), so two ACCEPT rules in `DOCKER-USER`, commented with the
//! slot, let the namespaces talk across the bridge.

use super::sys::{output, run};
use anyhow::Result;
use std::net::Ipv4Addr;
use std::process::Command;

/// The subnet's first two octets (the chaos suite uses 10.213).
const NET: [u8; 2] = [10, 214];

/// The longest interface name Linux takes (IFNAMSIZ - 1).
pub(crate) const MAX_IFNAME: usize = 15;

pub(crate) fn prefix(n: u8) -> String {
    format!("fl-{n}")
}

pub(crate) fn bridge(n: u8) -> String {
    format!("fl-{n}-br")
}

/// The namespace (and root-side veth) of `member`, a host or the client.
pub(crate) fn member_ns(n: u8, member: &str) -> String {
    format!("fl-{n}-{member}")
}

pub(crate) fn gateway(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(NET[0], NET[1], n, 1)
}

pub(crate) fn host_ip(n: u8, i: u8) -> Ipv4Addr {
    Ipv4Addr::new(NET[0], NET[1], n, 10 + i)
}

pub(crate) fn client_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(NET[0], NET[1], n, 100)
}

fn tag(n: u8) -> String {
    format!("flocker-netlab {}", prefix(n))
}

/// A command that runs `program` in namespace `ns` through `nsenter
/// --net`: only the network changes, mounts (and `/sys`) stay the caller's,
/// which dockerd needs (`ip netns exec` remounts `/sys`).
pub fn netns_command(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let [nsenter, net, dashes] = netns_prefix(ns);
    let mut cmd = Command::new(nsenter);
    cmd.arg(net).arg(dashes).arg(program);
    cmd
}

/// The words [`netns_command`] puts before the program, for callers that
/// keep a command line as strings (to start it again later).
pub fn netns_prefix(ns: &str) -> [String; 3] {
    [
        "nsenter".into(),
        format!("--net=/run/netns/{ns}"),
        "--".into(),
    ]
}

/// Runs `f` on a new thread that first moves into namespace `ns`: sockets it
/// opens (and processes it starts) live there, while the rest of this
/// process stays where it is. Namespaces are per thread, so this needs no
/// helper process and adds no hop to what `f` measures.
pub fn thread_in<T: Send + 'static>(
    ns: &str,
    name: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<T>>> {
    let path = format!("/run/netns/{ns}");
    // Opened here, so a wrong name fails the caller rather than the thread.
    let file = std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("opening {path}: {e}"))?;
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: `file` is an open namespace file; setns changes only
            // this thread's network namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                anyhow::bail!("entering {path}: {}", std::io::Error::last_os_error());
            }
            drop(file);
            f()
        })?;
    Ok(handle)
}

/// The bridge with the gateway address, up.
pub(crate) fn create_bridge(n: u8) -> Result<()> {
    let br = bridge(n);
    run("ip", &["link", "add", &br, "type", "bridge"])?;
    run(
        "ip",
        &["addr", "add", &format!("{}/24", gateway(n)), "dev", &br],
    )?;
    run("ip", &["link", "set", &br, "up"])?;
    Ok(())
}

/// The ACCEPT rules of one direction across the bridge (`-i` or `-o`).
fn rule(n: u8, direction: &str) -> Vec<String> {
    [
        "DOCKER-USER",
        direction,
        &bridge(n),
        "-m",
        "comment",
        "--comment",
        &tag(n),
        "-j",
        "ACCEPT",
    ]
    .map(String::from)
    .to_vec()
}

fn iptables(op: &str, rule: &[String]) -> Result<String> {
    let mut args = vec!["-w", "10", op];
    args.extend(rule.iter().map(String::as_str));
    run("iptables", &args)
}

/// Lets bridged traffic of slot `n` past the root engine's FORWARD DROP.
/// Without a `DOCKER-USER` chain no engine manages iptables here, so there
/// is no DROP to pass; returns whether rules were added.
pub(crate) fn accept_bridged(n: u8) -> Result<bool> {
    if run("iptables", &["-w", "10", "-S", "DOCKER-USER"]).is_err() {
        return Ok(false);
    }
    for direction in ["-i", "-o"] {
        iptables("-I", &rule(n, direction))?;
    }
    Ok(true)
}

/// Namespace `ns` joined to the bridge with `ip`/24 on its `eth0`, `lo` up,
/// no default route; `forward` turns IPv4 forwarding on inside it.
pub(crate) fn add_namespace(n: u8, ns: &str, ip: Ipv4Addr, forward: bool) -> Result<()> {
    run("ip", &["netns", "add", ns])?;
    // The root-side end is named like the namespace; the inner end is
    // created in the namespace directly, so no temporary name is needed.
    run(
        "ip",
        &[
            "link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    )?;
    run("ip", &["link", "set", ns, "master", &bridge(n), "up"])?;
    run(
        "ip",
        &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
    )?;
    run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
    run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    if forward {
        output(netns_command(ns, "sysctl").args(["-qw", "net.ipv4.ip_forward=1"]))?;
    }
    Ok(())
}

/// Names in `/run/netns` of slot `n`.
pub(crate) fn namespaces(n: u8) -> Vec<String> {
    names_in("/run/netns", n)
}

/// Interfaces of slot `n` in the root namespace (bridge and veths).
pub(crate) fn links(n: u8) -> Vec<String> {
    names_in("/sys/class/net", n)
}

fn names_in(dir: &str, n: u8) -> Vec<String> {
    let p = format!("{}-", prefix(n));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&p))
        .collect();
    names.sort();
    names
}

/// Whether `DOCKER-USER` still has a rule of slot `n`.
pub(crate) fn rules_left(n: u8) -> bool {
    run("iptables", &["-w", "10", "-S", "DOCKER-USER"])
        .is_ok_and(|rules| rules.lines().any(|r| r.contains(&tag(n))))
}

/// Deletes slot `n`'s namespaces, links and rules, each step tolerating
/// "already gone"; returns what could not be removed. Processes inside the
/// namespaces must be gone first, or a namespace outlives its name.
pub(crate) fn remove_network(n: u8) -> Vec<String> {
    let mut errors = Vec::new();
    for ns in namespaces(n) {
        if let Err(e) = run("ip", &["netns", "del", &ns]) {
            errors.push(format!("{e:#}"));
        }
    }
    // Deleting a namespace takes its `eth0` and so the veth's root end.
    for link in links(n) {
        if let Err(e) = run("ip", &["link", "del", &link]) {
            if std::path::Path::new("/sys/class/net").join(&link).exists() {
                errors.push(format!("{e:#}"));
            }
        }
    }
    for direction in ["-i", "-o"] {
        // Each rule once per start, but a crashed start may have added it twice.
        for _ in 0..8 {
            if iptables("-D", &rule(n, direction)).is_err() {
                break;
            }
        }
    }
    if rules_left(n) {
        errors.push(format!("DOCKER-USER still has rules tagged {:?}", tag(n)));
    }
    errors
}
