//! The run's private network: a bridge in the root namespace, one network
//! namespace per node and one for the clients, each joined to the bridge by
//! a veth pair. Everything is named `fc-<slot>-…` and lives in
//! `10.213.<slot>.0/24`, so concurrent runs never collide.
//!
//! Each node's namespace also runs the node's own Docker engine
//! (`flocker::netlab::start_engines`: dockerd entered with `nsenter --net`,
//! data, log and socket under `/var/tmp/flocker-chaos/<slot>/<node>/`), so
//! an app publishes its ports on its node's address, as on a real host, and
//! the routing mesh between the nodes is the real one. Containers reach the
//! witness on the bridge through their node's namespace (Docker's
//! masquerade there).
//!
//! Guards: the bridge holds `10.213.<slot>.1/24`, so the subnet's route in
//! the root namespace points at the bridge and nothing addressed to it can
//! leave the machine; the namespaces have no default route at all. Docker
//! sets FORWARD's policy to DROP and bridged frames pass iptables
//! (`br_netfilter`), so two ACCEPT rules in `DOCKER-USER`, tagged with a
//! comment naming the slot, let the nodes talk across the bridge.
//!
//! [`Topology`] tears everything down on drop, and [`Slot::claim`] cleans
//! what a crashed run left behind in a slot whose owner is dead: its nodes
//! first (a live agent would recreate containers), then every container,
//! engine and mount of its engines, then the network.

use crate::sh;
use anyhow::{bail, Context, Result};
use flocker::netlab::process_alive;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

/// Where slot claims live: `<slot>.pid`, the owner's pid.
const SLOT_DIR: &str = "/run/flocker-chaos";
const MAX_SLOT: u8 = 250;
/// Where the nodes' engines keep their data, logs and sockets:
/// `<ENGINE_DIR>/<slot>/<node>/`.
pub const ENGINE_DIR: &str = "/var/tmp/flocker-chaos";
/// How long all engines together get to answer after starting.
const ENGINES_READY: Duration = Duration::from_secs(90);
/// Bound on one `docker` call of the harness (list, remove).
const DOCKER_CALL: Duration = Duration::from_secs(60);

/// A claimed slot: the subnet and name prefix of one run.
#[derive(Debug)]
pub struct Slot {
    pub n: u8,
}

impl Slot {
    /// Claims the first free slot, cleaning leftovers of dead owners.
    pub fn claim() -> Result<Slot> {
        std::fs::create_dir_all(SLOT_DIR).with_context(|| format!("creating {SLOT_DIR}"))?;
        for n in 1..=MAX_SLOT {
            let pid_file = Slot::pid_file(n);
            if let Ok(text) = std::fs::read_to_string(&pid_file) {
                let alive = text.trim().parse::<u32>().is_ok_and(process_alive);
                if alive {
                    continue;
                }
                eprintln!("flocker-chaos: cleaning slot {n} left by a dead run");
                cleanup(n, &mut Vec::new());
                let _ = std::fs::remove_file(&pid_file);
            } else if leftovers_exist(n) {
                // A run that died before writing its claim (or after losing it).
                cleanup(n, &mut Vec::new());
            }
            let claimed = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&pid_file);
            if let Ok(mut f) = claimed {
                use std::io::Write;
                writeln!(f, "{}", std::process::id())?;
                return Ok(Slot { n });
            }
        }
        bail!("no free network slot in {SLOT_DIR} (1..={MAX_SLOT} all in use)")
    }

    fn pid_file(n: u8) -> PathBuf {
        PathBuf::from(SLOT_DIR).join(format!("{n}.pid"))
    }

    pub fn prefix(&self) -> String {
        prefix(self.n)
    }

    pub fn bridge(&self) -> String {
        format!("{}-br", self.prefix())
    }

    /// The bridge's own address: the witness listens here.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.n, 1)
    }

    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.n, 10 + i as u8)
    }

    pub fn client_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.n, 100)
    }

    pub fn node_ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix())
    }

    pub fn client_ns(&self) -> String {
        format!("{}-cl", self.prefix())
    }

    /// The directory of `node`'s engine.
    pub fn engine_dir(&self, node: &str) -> PathBuf {
        engine_root(self.n).join(node)
    }

    /// `node`'s engine as `flocker node --engine` and `docker -H` take it.
    pub fn engine_host(&self, node: &str) -> String {
        format!(
            "unix://{}",
            flocker::netlab::engine_socket(&self.engine_dir(node)).display()
        )
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Slot::pid_file(self.n));
    }
}

fn engine_root(n: u8) -> PathBuf {
    Path::new(ENGINE_DIR).join(n.to_string())
}

fn prefix(n: u8) -> String {
    format!("fc-{n}")
}

fn comment(n: u8) -> String {
    format!("flocker-chaos {}", prefix(n))
}

fn leftovers_exist(n: u8) -> bool {
    let p = format!("{}-", prefix(n));
    let netns = sh::must(&["ip", "netns", "list"]).unwrap_or_default();
    let links = sh::must(&["ip", "-o", "link", "show"]).unwrap_or_default();
    netns.lines().any(|l| l.starts_with(&p))
        || links.contains(&format!(": {p}"))
        || engine_root(n).exists()
}

/// Removes everything of slot `n`: its nodes, its engines (`children` are
/// the ones this process started) with their containers and mounts, then
/// namespaces, links, DOCKER-USER rules and the engines' directory. Each
/// step tolerates "already gone" and runs even when an earlier one failed.
pub fn cleanup(n: u8, children: &mut Vec<Child>) {
    let p = format!("{}-", prefix(n));
    let namespaces: Vec<String> = sh::must(&["ip", "netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(&p))
        .map(str::to_string)
        .collect();
    // Nodes first: a live agent would recreate the containers removed next.
    kill_nodes(&namespaces);
    let root = engine_root(n);
    for e in flocker::netlab::clean_engines(&root, &namespaces, children) {
        eprintln!("flocker-chaos: slot {n}: {e}");
    }
    for ns in &namespaces {
        sh::quiet(&["ip", "netns", "del", ns]);
    }
    if let Ok(links) = sh::must(&["ip", "-o", "link", "show"]) {
        for line in links.lines() {
            // "12: fc-3-br: <…>" or "13: fc-3-n1@if2: <…>"
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            if name.starts_with(&p) {
                sh::quiet(&["ip", "link", "del", name]);
            }
        }
    }
    remove_rules(n);
    if root.exists() {
        if let Err(e) = std::fs::remove_dir_all(&root) {
            eprintln!("flocker-chaos: removing {}: {e}", root.display());
        }
    }
}

/// Kills (-9) every flocker process in `namespaces` (nodes, probes, `ctl`)
/// and waits a little for the kernel to reap them; the engines stay.
fn kill_nodes(namespaces: &[String]) {
    let mut killed = false;
    for ns in namespaces {
        let Ok(pids) = sh::must(&["ip", "netns", "pids", ns]) else {
            continue;
        };
        for pid in pids.split_whitespace() {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            // "flocker", or "flocker (deleted)" after a rebuild.
            let is_flocker = exe
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("flocker"));
            if is_flocker {
                sh::quiet(&["kill", "-9", pid]);
                killed = true;
            }
        }
    }
    if killed {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Deletes every DOCKER-USER rule carrying slot `n`'s comment.
fn remove_rules(n: u8) {
    let tag = comment(n);
    let Ok(rules) = sh::must(&["iptables", "-S", "DOCKER-USER"]) else {
        return;
    };
    for rule in rules.lines().filter(|r| r.contains(&tag)) {
        // "-A DOCKER-USER -i fc-3-br -m comment --comment "…" -j ACCEPT"
        let Some(spec) = rule.strip_prefix("-A DOCKER-USER ") else {
            continue;
        };
        let Some(args) = split_rule(spec) else {
            continue;
        };
        let mut cmd = vec!["iptables", "-D", "DOCKER-USER"];
        cmd.extend(args.iter().map(String::as_str));
        sh::quiet(&cmd);
    }
}

/// Splits an `iptables -S` rule into arguments, honouring double quotes.
fn split_rule(spec: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in spec.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if quoted {
        return None;
    }
    if any {
        out.push(cur);
    }
    Some(out)
}

/// Removes `node`'s containers of this cluster (running or not) from its
/// engine, as wiping that host would; how many there were.
pub fn remove_node_containers(slot: &Slot, cluster_id: &str, node: &str) -> Result<usize> {
    let host = slot.engine_host(node);
    let cluster = format!("label=flocker.cluster={cluster_id}");
    let owner = format!("label=flocker.node={node}");
    let ids = docker(
        &host,
        &["ps", "-aq", "--filter", &cluster, "--filter", &owner],
    )?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().copied());
        docker(&host, &args)?;
    }
    Ok(ids.len())
}

/// `docker -H host ARGS…`, bounded; its standard output.
pub fn docker(host: &str, args: &[&str]) -> Result<String> {
    let out = sh::run(
        std::process::Command::new("docker")
            .args(["-H", host])
            .args(args),
        DOCKER_CALL,
    )?;
    if !out.ok() {
        bail!("docker -H {host} {}: {}", args.join(" "), out.why());
    }
    Ok(out.stdout)
}

/// The live network of one run, with the nodes' engines; dropping it
/// removes it all.
pub struct Topology {
    pub slot: Slot,
    pub nodes: Vec<String>,
    /// The engines' dockerd processes (reaped at teardown).
    engines: Mutex<Vec<Child>>,
}

impl Topology {
    /// Builds the bridge, one namespace per node with its engine and the
    /// clients' namespace; returns once every engine answers.
    pub fn create(slot: Slot, nodes: &[String]) -> Result<Topology> {
        let topo = Topology {
            slot,
            nodes: nodes.to_vec(),
            engines: Mutex::new(Vec::new()),
        };
        // From here on, a failure drops `topo`, which undoes what was done.
        let s = &topo.slot;
        let br = s.bridge();
        sh::must(&["ip", "link", "add", &br, "type", "bridge"])?;
        sh::must(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", s.gateway()),
            "dev",
            &br,
        ])?;
        sh::must(&["ip", "link", "set", &br, "up"])?;
        let tag = comment(s.n);
        // Without Docker's chain (an engine not managing iptables) there is
        // no FORWARD DROP to get past either.
        let has_chain = sh::quiet(&["iptables", "-S", "DOCKER-USER"]);
        if !has_chain {
            eprintln!("flocker-chaos: no DOCKER-USER chain: no ACCEPT rules added");
        }
        for dir in ["-i", "-o"].into_iter().filter(|_| has_chain) {
            sh::must(&[
                "iptables",
                "-I",
                "DOCKER-USER",
                dir,
                &br,
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
                "ACCEPT",
            ])?;
        }
        for (i, node) in nodes.iter().enumerate() {
            topo.add_ns(
                &s.node_ns(node),
                &format!("{}-{node}", s.prefix()),
                s.node_ip(i),
            )?;
        }
        topo.add_ns(&s.client_ns(), &format!("{}-cl", s.prefix()), s.client_ip())?;
        let specs: Vec<flocker::netlab::EngineSpec> = nodes
            .iter()
            .map(|node| {
                // Forwarding for the routing mesh and the containers' way
                // out (dockerd would turn it on too; say so explicitly).
                topo.in_node(node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
                Ok(flocker::netlab::EngineSpec {
                    name: format!("node {node}"),
                    ns: s.node_ns(node),
                    dir: s.engine_dir(node),
                })
            })
            .collect::<Result<_>>()?;
        {
            let mut engines = topo.engines.lock().unwrap_or_else(|e| e.into_inner());
            flocker::netlab::start_engines(&specs, &mut engines, ENGINES_READY)
                .context("starting the nodes' engines")?;
        }
        Ok(topo)
    }

    /// Every node's engine host (`unix://…`), by node name.
    pub fn engine_hosts(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .map(|n| (n.clone(), self.slot.engine_host(n)))
            .collect()
    }

    /// Removes every container from every node's engine (the end of a
    /// run; the engines keep running until the drop).
    pub fn remove_all_containers(&self) {
        for (node, host) in self.engine_hosts() {
            let listed = docker(&host, &["ps", "-aq"]);
            let ids = match listed {
                Ok(ids) => ids,
                Err(e) => {
                    eprintln!("flocker-chaos: containers of {node}: {e:#}");
                    continue;
                }
            };
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if ids.is_empty() {
                continue;
            }
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            if let Err(e) = docker(&host, &args) {
                eprintln!("flocker-chaos: removing the containers of {node}: {e:#}");
            }
        }
    }

    fn add_ns(&self, ns: &str, veth: &str, ip: Ipv4Addr) -> Result<()> {
        let peer = format!("{veth}p");
        sh::must(&["ip", "netns", "add", ns])?;
        sh::must(&[
            "ip", "link", "add", veth, "type", "veth", "peer", "name", &peer,
        ])?;
        sh::must(&["ip", "link", "set", &peer, "netns", ns])?;
        sh::must(&["ip", "link", "set", veth, "master", &self.slot.bridge()])?;
        sh::must(&["ip", "link", "set", veth, "up"])?;
        let inside = |args: &[&str]| {
            let mut cmd = vec!["ip", "netns", "exec", ns];
            cmd.extend_from_slice(args);
            sh::must(&cmd)
        };
        inside(&["ip", "link", "set", &peer, "name", "eth0"])?;
        inside(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        inside(&["ip", "link", "set", "eth0", "up"])?;
        inside(&["ip", "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The host-side veth of a node (for `tc` on its traffic).
    pub fn node_veth(&self, node: &str) -> String {
        format!("{}-{node}", self.slot.prefix())
    }

    /// Runs a command inside `node`'s namespace; it must succeed.
    pub fn in_node(&self, node: &str, args: &[&str]) -> Result<String> {
        let ns = self.slot.node_ns(node);
        let mut cmd = vec!["ip", "netns", "exec", ns.as_str()];
        cmd.extend_from_slice(args);
        sh::must(&cmd)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let engines = self.engines.get_mut().unwrap_or_else(|e| e.into_inner());
        cleanup(self.slot.n, engines);
    }
}

/// Moves the calling thread into namespace `ns`: processes it spawns from
/// then on run there (namespaces are per thread and inherited on fork).
pub fn enter_netns(ns: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns into {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_pid_zero_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX));
    }

    #[test]
    fn splits_iptables_rules_with_quotes() {
        let r = split_rule(r#"-i fc-3-br -m comment --comment "flocker-chaos fc-3" -j ACCEPT"#)
            .unwrap();
        assert_eq!(
            r,
            [
                "-i",
                "fc-3-br",
                "-m",
                "comment",
                "--comment",
                "flocker-chaos fc-3",
                "-j",
                "ACCEPT"
            ]
        );
        assert!(split_rule("\"open").is_none());
    }
}
