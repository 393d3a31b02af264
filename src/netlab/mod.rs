//! A network lab on this machine: simulated hosts, each with its own network
//! namespace and its own Docker engine inside it, plus a client namespace,
//! all on one private bridge. Integration tests (and `flocker bench`) run
//! flocker nodes and clients in it with real network paths: an engine here
//! publishes ports on its host's address with DNAT rules inside that host's
//! namespace, which one engine shared by all nodes cannot do.
//!
//! [`Lab::start`] claims a slot (`slot.rs`), builds the network (`links.rs`)
//! and starts the engines (`dockerd.rs`); dropping the [`Lab`] (or
//! [`Lab::shutdown`], which reports errors) removes containers, engines,
//! mounts, namespaces, links, iptables rules, data and the claim. A lab whose
//! process died without that is cleaned by the next lab claiming its slot.
//! Needs root, iproute2, iptables, nsenter, sysctl and dockerd, and says
//! which are missing.
//!
//! Layout of slot `n`: subnet `10.214.n.0/24`; bridge `fl-n-br` holding
//! `.1`; host `i` in namespace `fl-n-<host>` at `.10+i`; the client in
//! `fl-n-client` at `.100`; engine data, log and socket under
//! `/var/tmp/flocker-netlab/n/<host>/`.

mod dockerd;
mod links;
mod slot;
mod sys;

pub use dockerd::{
    clean_engines, log_file as engine_log, socket as engine_socket, start_engines, EngineSpec,
};
pub use links::{netns_command, netns_prefix, thread_in};
pub use slot::{process_alive, CLAIM_DIR, MAX_SLOT};

use crate::runtime::{build_busybox_image, DockerRuntime, DockerTimeouts};
use anyhow::{bail, Context, Result};
use slot::Claims;
use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// Where the engines keep their data, logs and sockets, one directory per
/// slot and host.
pub const DATA_DIR: &str = "/var/tmp/flocker-netlab";

/// The name [`Lab::command`] and [`Lab::netns`] take for the client
/// namespace (no host may be called so).
pub const CLIENT: &str = "client";

/// How long all engines together get to answer after starting.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// Hosts per lab: addresses `.10` up to below the client's `.100`.
const MAX_HOSTS: usize = 80;

/// One simulated host.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// Its address on the lab's subnet, on `eth0` in its namespace.
    pub ip: Ipv4Addr,
    /// Its network namespace (`/run/netns/<netns>`).
    pub netns: String,
    /// The root-side end of its veth pair, on the bridge (for `tc`).
    pub veth: String,
    /// Its engine, as flocker's `--engine` takes it: `unix:///…/docker.sock`.
    pub engine: String,
    /// Its engine's directory (data root, exec root, log, socket).
    pub dir: PathBuf,
}

impl Host {
    /// `program` run inside this host's namespace (see [`netns_command`]).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        netns_command(&self.netns, program)
    }

    /// The library's client for this host's engine.
    pub fn runtime(&self) -> Result<DockerRuntime> {
        DockerRuntime::new(&self.engine, DockerTimeouts::default())
            .with_context(|| format!("lab host {}'s engine", self.name))
    }

    /// Its dockerd's log (stdout and stderr).
    pub fn dockerd_log(&self) -> PathBuf {
        dockerd::log_file(&self.dir)
    }

    /// Its dockerd's pid, from the engine's pid file.
    pub fn dockerd_pid(&self) -> Option<u32> {
        dockerd::recorded_pid(&self.dir)
    }
}

/// A running lab; dropping it tears everything down.
pub struct Lab {
    slot: u8,
    hosts: Vec<Host>,
    client_ns: String,
    dockerds: Vec<Child>,
    claims: Claims,
    torn_down: bool,
}

impl Lab {
    /// Builds a lab with one host per name (1 to 8 characters of `a-z0-9`,
    /// not `client` or `br`) and waits until every host's engine answers.
    /// Blocks for a few seconds: async callers may want `spawn_blocking`.
    pub fn start(hosts: &[&str]) -> Result<Lab> {
        validate_hosts(hosts)?;
        sys::require_root_and_tools()?;
        let claims = Claims::new(CLAIM_DIR, MAX_SLOT);
        let slot = claims.claim(leftovers_exist, |n| {
            eprintln!("flocker netlab: cleaning slot {n}, left by a lab that is gone");
            teardown_slot(n, &mut Vec::new())
        })?;
        let hosts: Vec<Host> = hosts
            .iter()
            .zip(0u8..)
            .map(|(name, i)| {
                let dir = data_dir(slot).join(name);
                Host {
                    name: name.to_string(),
                    ip: links::host_ip(slot, i),
                    netns: links::member_ns(slot, name),
                    veth: links::member_ns(slot, name),
                    engine: format!("unix://{}", dockerd::socket(&dir).display()),
                    dir,
                }
            })
            .collect();
        let mut lab = Lab {
            slot,
            hosts,
            client_ns: links::member_ns(slot, CLIENT),
            dockerds: Vec::new(),
            claims,
            torn_down: false,
        };
        // From here on an error drops `lab`, which undoes what was done.
        lab.build().with_context(|| {
            format!(
                "starting network lab slot {slot} with hosts {}",
                lab.host_names().join(", ")
            )
        })?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        let n = self.slot;
        links::create_bridge(n)?;
        links::accept_bridged(n)?;
        for host in &self.hosts {
            links::add_namespace(n, &host.netns, host.ip, true)?;
        }
        links::add_namespace(n, &self.client_ns, links::client_ip(n), false)?;
        let specs: Vec<EngineSpec> = self
            .hosts
            .iter()
            .map(|h| EngineSpec {
                name: format!("lab host {}", h.name),
                ns: h.netns.clone(),
                dir: h.dir.clone(),
            })
            .collect();
        start_engines(&specs, &mut self.dockerds, READY_LIMIT)
    }

    /// The slot: the third octet of the subnet and the number in every name.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn host_names(&self) -> Vec<&str> {
        self.hosts.iter().map(|h| h.name.as_str()).collect()
    }

    pub fn host(&self, name: &str) -> Result<&Host> {
        match self.hosts.iter().find(|h| h.name == name) {
            Some(h) => Ok(h),
            None => bail!(
                "the lab has no host {name:?} (hosts: {})",
                self.host_names().join(", ")
            ),
        }
    }

    pub fn host_ip(&self, host: &str) -> Result<Ipv4Addr> {
        Ok(self.host(host)?.ip)
    }

    /// `unix:///…/docker.sock` of the host's engine, as `--engine` takes it.
    pub fn engine(&self, host: &str) -> Result<String> {
        Ok(self.host(host)?.engine.clone())
    }

    pub fn client_ip(&self) -> Ipv4Addr {
        links::client_ip(self.slot)
    }

    /// The bridge's address in the root namespace.
    pub fn gateway(&self) -> Ipv4Addr {
        links::gateway(self.slot)
    }

    /// `10.214.<slot>.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}/24", Ipv4Addr::from(u32::from(self.gateway()) & !0xff))
    }

    pub fn bridge(&self) -> String {
        links::bridge(self.slot)
    }

    /// The network namespace of a host, or of the client for [`CLIENT`].
    pub fn netns(&self, host_or_client: &str) -> Result<String> {
        if host_or_client == CLIENT {
            return Ok(self.client_ns.clone());
        }
        Ok(self.host(host_or_client)?.netns.clone())
    }

    /// `program` run inside the namespace of a host, of the client
    /// ([`CLIENT`]), or any of the lab's namespaces by its full name.
    pub fn command(&self, ns_or_host: &str, program: impl AsRef<OsStr>) -> Result<Command> {
        Ok(netns_command(&self.resolve_ns(ns_or_host)?, program))
    }

    /// A namespace of this lab by its full name, or a host's or the
    /// client's by theirs.
    fn resolve_ns(&self, ns_or_host: &str) -> Result<String> {
        if ns_or_host == self.client_ns || self.hosts.iter().any(|h| h.netns == ns_or_host) {
            return Ok(ns_or_host.to_string());
        }
        self.netns(ns_or_host)
    }

    /// Like [`Lab::command`], as the words to put before a program.
    pub fn command_prefix(&self, ns_or_host: &str) -> Result<[String; 3]> {
        Ok(netns_prefix(&self.resolve_ns(ns_or_host)?))
    }

    /// Runs `f` on a new thread inside the namespace of a host or of the
    /// client (see [`thread_in`]).
    pub fn thread_in<T: Send + 'static>(
        &self,
        ns_or_host: &str,
        name: &str,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T>>> {
        thread_in(&self.resolve_ns(ns_or_host)?, name, f)
    }

    /// The data directory of this lab's engines.
    pub fn data_dir(&self) -> PathBuf {
        data_dir(self.slot)
    }

    /// Builds the project's FROM-scratch busybox test image as `tag` in
    /// every host's engine, at once.
    pub async fn load_busybox_image(&self, tag: &str) -> Result<()> {
        let builds = self.hosts.iter().map(|host| async move {
            let runtime = host.runtime()?;
            build_busybox_image(&runtime, tag)
                .await
                .with_context(|| format!("building {tag} in lab host {}'s engine", host.name))
        });
        futures::future::try_join_all(builds).await?;
        Ok(())
    }

    /// Tears the lab down now, reporting what could not be removed (the
    /// claim is then kept, and the slot cleaned again once this process is
    /// gone).
    pub fn shutdown(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        self.torn_down = true;
        teardown_slot(self.slot, &mut self.dockerds)?;
        self.claims.release(self.slot)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.torn_down {
            if let Err(e) = self.teardown() {
                eprintln!("flocker netlab: {e:#}");
            }
        }
    }
}

fn data_dir(n: u8) -> PathBuf {
    Path::new(DATA_DIR).join(n.to_string())
}

fn validate_hosts(hosts: &[&str]) -> Result<()> {
    // The longest prefix ("fl-250-") and the name make one interface name.
    let max_len = links::MAX_IFNAME - links::member_ns(MAX_SLOT, "").len();
    if hosts.is_empty() || hosts.len() > MAX_HOSTS {
        bail!(
            "a network lab has 1 to {MAX_HOSTS} hosts, not {}",
            hosts.len()
        );
    }
    for (i, name) in hosts.iter().enumerate() {
        if name.is_empty()
            || name.len() > max_len
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            bail!("lab host name {name:?} must be 1 to {max_len} characters of a-z and 0-9");
        }
        if *name == CLIENT || *name == "br" {
            bail!("lab host name {name:?} is taken by the lab itself");
        }
        if hosts[..i].contains(name) {
            bail!("lab host name {name:?} is given twice");
        }
    }
    Ok(())
}

/// Whether slot `n` has anything of a lab, claimed or not.
fn leftovers_exist(n: u8) -> bool {
    !links::namespaces(n).is_empty() || !links::links(n).is_empty() || data_dir(n).exists()
}

/// Removes everything of slot `n`: the containers (while their engines
/// answer), the engines (`children`, reaped, and any whose pid file is
/// under the slot's directory), processes left in its namespaces or
/// containers, mounts, namespaces, links, rules and the data directory.
/// Every step runs even when an earlier one failed.
fn teardown_slot(n: u8, children: &mut Vec<Child>) -> Result<()> {
    let data = data_dir(n);
    let mut errors = clean_engines(&data, &links::namespaces(n), children);
    errors.extend(links::remove_network(n));
    if data.exists() {
        if let Err(e) = std::fs::remove_dir_all(&data) {
            errors.push(format!("removing {}: {e}", data.display()));
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    bail!("tearing down network lab slot {n}: {}", errors.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_fit_interface_names_and_stay_clear_of_the_labs_own() {
        assert!(validate_hosts(&["a", "b", "node1234"]).is_ok());
        for bad in [
            &["node12345"][..],
            &["A"],
            &["a-b"],
            &[""],
            &["client"],
            &["br"],
            &["a", "a"],
            &[],
        ] {
            assert!(validate_hosts(bad).is_err(), "{bad:?} accepted");
        }
        let longest = links::member_ns(MAX_SLOT, "node1234");
        assert!(longest.len() <= links::MAX_IFNAME, "{longest}");
        assert!(links::member_ns(MAX_SLOT, CLIENT).len() <= links::MAX_IFNAME);
    }

    #[test]
    fn addresses_stay_in_the_slot_subnet() {
        assert_eq!(links::gateway(7), Ipv4Addr::new(10, 214, 7, 1));
        assert_eq!(links::host_ip(7, 0), Ipv4Addr::new(10, 214, 7, 10));
        assert_eq!(
            links::host_ip(7, MAX_HOSTS as u8 - 1),
            Ipv4Addr::new(10, 214, 7, 89)
        );
        assert_eq!(links::client_ip(7), Ipv4Addr::new(10, 214, 7, 100));
    }
}
