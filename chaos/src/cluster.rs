//! The flocker cluster under test: a CA from `flocker ca init` (kept in
//! `DIR/certs`, which no node reads), a bundle per node (`DIR/bundles/<node>`,
//! `flocker ca bundle`) and one for the admin, and one
//! `flocker node` process per node, started from its bundle, started inside its network namespace
//! (`ip netns exec`, which execs in place, so the pid we hold is the node's
//! own and kill -9 / SIGSTOP reach it directly), on its own engine
//! (`--engine`, see topology.rs) and with the routing mesh on (the default:
//! its rules live in the node's namespace).
//!
//! Every node runs under libfaketime with its own timestamp file, so the
//! clock nemesis can shift one node's wall clock while it runs; the
//! monotonic clock is left alone (faking it hangs tokio). Node output goes
//! to `DIR/logs/<node>.log`, appended across restarts.

use crate::topology::Topology;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The port every node listens on, in its own namespace.
pub const PORT: u16 = 4523;
/// Debian's `faketime` package puts the library here.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

pub struct Node {
    pub name: String,
    pub addr: String,
    pub data_dir: PathBuf,
    /// libfaketime reads the node's clock offset ("+0", "+90", "-45") here.
    pub faketime_file: PathBuf,
    /// Set once the node was removed and came back: it starts with
    /// `--join` through this member instead of `--peers`.
    join: Option<String>,
    /// Certificates this node has had (1 at first, +1 per renewal).
    pub generation: u32,
    child: Option<Child>,
    stopped: bool,
    /// Where the crash nemesis moved the data dir while the host is down.
    hidden: Option<PathBuf>,
    /// The lazyfs the data dir is on (`<mount>/<node>`), when the run
    /// uses them: what a power cut drops.
    disk: Option<flocker_lazyfs::Mount>,
}

pub struct Cluster {
    pub bin: PathBuf,
    /// The CA directory (the CA key and every certificate).
    pub certs: PathBuf,
    /// Where each node's bundle is made, `<bundles>/<node>`, and the
    /// admin's, `<bundles>/admin`.
    pub bundles: PathBuf,
    pub logs: PathBuf,
    pub nodes: Vec<Node>,
    pub cluster_id: String,
    peers: String,
    plant_bug: Option<String>,
    faketime: bool,
}

impl Cluster {
    /// Issues the CA and lays out the nodes (nothing starts yet).
    pub fn prepare(
        bin: &Path,
        out: &Path,
        topo: &Topology,
        plant_bug: Option<String>,
        lazyfs: bool,
    ) -> Result<Cluster> {
        let certs = out.join("certs");
        let logs = out.join("logs");
        std::fs::create_dir_all(&logs)?;
        let names = topo.nodes.join(",");
        let init = crate::sh::run(
            Command::new(bin)
                .args(["ca", "init", "--dir"])
                .arg(&certs)
                .args(["--nodes", &names, "--users", "admin"]),
            Duration::from_secs(30),
        )?;
        if !init.ok() {
            bail!("flocker ca init: {}", init.why());
        }
        let bundles = out.join("bundles");
        bundle(bin, &certs, "--user", "admin", &bundles.join("admin"))?;
        let faketime = Path::new(LIBFAKETIME).exists();
        if !faketime {
            eprintln!(
                "flocker-chaos: {LIBFAKETIME} missing (apt-get install faketime): no clock faults"
            );
        }
        let mut nodes = Vec::new();
        for (i, name) in topo.nodes.iter().enumerate() {
            // The data dir's last component is the node's name: the chaos app
            // finds it in /proc/self/mountinfo (see app.rs).
            let (data_dir, disk) = if lazyfs {
                let (mount, dir) = lazy_disk(out, name)?;
                (dir, Some(mount))
            } else {
                (out.join("data").join(name), None)
            };
            std::fs::create_dir_all(out.join("data"))?;
            flocker::durable::create_dir_all(&data_dir, 0o700)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let faketime_file = out.join("data").join(format!("{name}.faketime"));
            std::fs::write(&faketime_file, "+0\n")?;
            nodes.push(Node {
                name: name.clone(),
                addr: format!("{}:{PORT}", topo.slot.node_ip(i)),
                data_dir,
                faketime_file,
                join: None,
                generation: 1,
                child: None,
                stopped: false,
                hidden: None,
                disk,
            });
        }
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}", n.name, n.addr))
            .collect::<Vec<_>>()
            .join(",");
        let cluster_id = crate::ids::cluster_id(&certs)?;
        Ok(Cluster {
            bin: bin.to_path_buf(),
            certs,
            bundles,
            logs,
            nodes,
            cluster_id,
            peers,
            plant_bug,
            faketime,
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    pub fn addr(&self, name: &str) -> Option<String> {
        self.index(name).map(|i| self.nodes[i].addr.clone())
    }

    /// The admin's bundle: what `ctl` uses.
    pub fn admin_certs(&self) -> PathBuf {
        self.bundles.join("admin")
    }

    pub fn faketime_enabled(&self) -> bool {
        self.faketime
    }

    /// Starts node `i` in its namespace (a no-op when it runs).
    pub fn start(&mut self, topo: &Topology, i: usize) -> Result<()> {
        if self.nodes[i].child.is_some() {
            return Ok(());
        }
        if self.nodes[i].hidden.is_some() {
            bail!(
                "{}'s data dir is moved away (crashed host): restore it first",
                self.nodes[i].name
            );
        }
        let node = &self.nodes[i];
        // Made on first start, so a node issued later gets one too.
        let certs = self.bundles.join(&node.name);
        if !certs.exists() {
            bundle(&self.bin, &self.certs, "--node", &node.name, &certs)?;
        }
        let log_path = self.logs.join(format!("{}.log", node.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &topo.slot.node_ns(&node.name)])
            .arg(&self.bin)
            .arg("node")
            .args(["--name", &node.name, "--listen", &node.addr])
            .args(["--engine", &topo.slot.engine_host(&node.name)])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--certs")
            .arg(&certs)
            // Release builds check the state after every entry only when asked.
            .arg("--check-invariants");
        match &node.join {
            Some(via) => cmd.args(["--join", via]),
            None => cmd.args(["--peers", &self.peers]),
        };
        if let Some(bug) = &self.plant_bug {
            cmd.args(["--plant-bug", bug]);
        }
        if self.faketime {
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", &node.faketime_file)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                // Re-read the file at most once a second: a jump lands
                // within a second, without a file read on every clock call.
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("FAKETIME_DONT_RESET", "1");
        }
        // Its own process group: a Ctrl-C at the terminal reaches the
        // harness, which stops the nodes itself after healing.
        use std::os::unix::process::CommandExt;
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {}", node.name))?;
        self.nodes[i].child = Some(child);
        self.nodes[i].stopped = false;
        Ok(())
    }

    pub fn pid(&self, i: usize) -> Option<i32> {
        self.nodes[i].child.as_ref().map(|c| c.id() as i32)
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        match self.nodes[i].child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// kill -9 and reap.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].stopped = false;
    }

    /// Brings back node `i` after its removal, as an operator would a
    /// host: `flocker ca renew` (new key and certificate, same name), a new
    /// bundle (the old one is kept as `<node>.revoked-<generation>`), an
    /// empty data dir, and a start with `--join via`. The node must be
    /// stopped.
    pub fn rejoin(&mut self, topo: &Topology, i: usize, via: &str) -> Result<()> {
        if self.nodes[i].child.is_some() {
            bail!("{} still runs: kill it first", self.nodes[i].name);
        }
        let name = self.nodes[i].name.clone();
        let renewed = crate::sh::run(
            Command::new(&self.bin)
                .args(["ca", "renew", "--dir"])
                .arg(&self.certs)
                .args(["--node", &name]),
            Duration::from_secs(30),
        )?;
        if !renewed.ok() {
            bail!("flocker ca renew --node {name}: {}", renewed.why());
        }
        let old = self.bundles.join(&name);
        if old.exists() {
            let kept = self
                .bundles
                .join(format!("{name}.revoked-{}", self.nodes[i].generation));
            std::fs::rename(&old, &kept)
                .with_context(|| format!("moving {} aside", old.display()))?;
        }
        bundle(&self.bin, &self.certs, "--node", &name, &old)?;
        self.nodes[i].generation += 1;
        let data = &self.nodes[i].data_dir;
        if data.exists() {
            std::fs::remove_dir_all(data).with_context(|| format!("wiping {}", data.display()))?;
        }
        flocker::durable::create_dir_all(data, 0o700)?;
        // The wipe is the operator's, not the app's: durable at once.
        flocker::durable::fsync_dir(data.parent().unwrap_or(Path::new("/")))?;
        self.nodes[i].join = Some(via.to_string());
        self.start(topo, i)
    }

    /// Moves node `i`'s data dir out of reach (`<data-dir>.crashed`), as a
    /// dead host's disk is: nothing of it can be read or mounted until
    /// [`Cluster::restore_data`]. The node must be stopped.
    pub fn hide_data(&mut self, i: usize) -> Result<PathBuf> {
        if self.nodes[i].child.is_some() {
            bail!("{} still runs: kill it first", self.nodes[i].name);
        }
        let node = &self.nodes[i];
        let hidden = node
            .data_dir
            .with_file_name(format!("{}.crashed", node.name));
        std::fs::rename(&node.data_dir, &hidden)
            .with_context(|| format!("moving {} away", node.data_dir.display()))?;
        sync_parent(&hidden)?;
        self.nodes[i].hidden = Some(hidden.clone());
        Ok(hidden)
    }

    /// Puts back a data dir [`Cluster::hide_data`] moved away; true when
    /// there was one.
    pub fn restore_data(&mut self, i: usize) -> Result<bool> {
        let Some(hidden) = self.nodes[i].hidden.take() else {
            return Ok(false);
        };
        let data = &self.nodes[i].data_dir;
        std::fs::rename(&hidden, data)
            .with_context(|| format!("putting {} back as {}", hidden.display(), data.display()))?;
        sync_parent(data)?;
        Ok(true)
    }

    /// Whether the data dirs are on lazyfs (the power nemeses need it).
    pub fn on_lazyfs(&self) -> bool {
        self.nodes.iter().all(|n| n.disk.is_some())
    }

    /// The power cut of node `i`'s disk: everything not fsynced is gone,
    /// every later access fails until [`Cluster::reboot_disk`].
    pub fn power_cut(&mut self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let disk = node
            .disk
            .as_ref()
            .with_context(|| format!("{}'s data dir is not on lazyfs", node.name))?;
        disk.cut()
            .with_context(|| format!("cutting {}'s lazyfs", node.name))
    }

    /// Mounts node `i`'s lazyfs again, on what its last cut kept (the host
    /// boots). The node must be stopped.
    pub fn reboot_disk(&mut self, i: usize) -> Result<()> {
        if self.nodes[i].child.is_some() {
            bail!("{} still runs: kill it first", self.nodes[i].name);
        }
        let Some(disk) = self.nodes[i].disk.take() else {
            bail!("{}'s data dir is not on lazyfs", self.nodes[i].name);
        };
        let disk = disk
            .remount()
            .with_context(|| format!("mounting {}'s lazyfs again", self.nodes[i].name))?;
        self.nodes[i].disk = Some(disk);
        Ok(())
    }

    /// The bundle node `i` runs with now.
    pub fn bundle_dir(&self, i: usize) -> PathBuf {
        self.bundles.join(&self.nodes[i].name)
    }

    /// SIGSTOP (true) or SIGCONT (false).
    pub fn pause(&mut self, i: usize, stop: bool) -> Result<()> {
        let Some(pid) = self.pid(i) else {
            bail!("{} is not running", self.nodes[i].name);
        };
        let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: signalling a child we spawned and have not reaped.
        if unsafe { libc::kill(pid, sig) } != 0 {
            bail!("kill({pid}): {}", std::io::Error::last_os_error());
        }
        self.nodes[i].stopped = stop;
        Ok(())
    }

    /// Sets node `i`'s wall-clock offset in seconds (libfaketime).
    pub fn set_clock_offset(&self, i: usize, secs: i64) -> Result<()> {
        let text = if secs >= 0 {
            format!("+{secs}\n")
        } else {
            format!("{secs}\n")
        };
        let path = &self.nodes[i].faketime_file;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Stops every node (SIGCONT first, so a paused node can die).
    pub fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].stopped {
                let _ = self.pause(i, false);
            }
            self.kill(i);
        }
    }
}

/// A lazyfs for `node` (`<out>/lazyfs/<node>/{backing,mnt}`) and its data
/// dir on it, `<mnt>/<node>`: one level below the mount, so the ledger
/// finds its node's name as the last part of its fence mount's source.
fn lazy_disk(out: &Path, node: &str) -> Result<(flocker_lazyfs::Mount, PathBuf)> {
    let base = out.join("lazyfs").join(node);
    let (backing, mnt) = (base.join("backing"), base.join("mnt"));
    std::fs::create_dir_all(&backing)?;
    std::fs::create_dir_all(&mnt)?;
    let mount = flocker_lazyfs::Mount::new(&backing, &mnt, flocker_lazyfs::DEFAULT_MAX_DIRTY_MIB)
        .with_context(|| {
        format!("mounting lazyfs at {} (root and /dev/fuse)", mnt.display())
    })?;
    Ok((mount, mnt.join(node)))
}

/// fsync of `path`'s directory: the harness's own renames are durable.
fn sync_parent(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    flocker::durable::fsync_dir(parent).with_context(|| format!("fsync {}", parent.display()))
}

/// `flocker ca bundle --dir CA --node|--user NAME --out OUT`.
fn bundle(bin: &Path, ca: &Path, kind: &str, name: &str, out: &Path) -> Result<()> {
    let made = crate::sh::run(
        Command::new(bin)
            .args(["ca", "bundle", "--dir"])
            .arg(ca)
            .args([kind, name, "--out"])
            .arg(out),
        Duration::from_secs(30),
    )?;
    if !made.ok() {
        bail!("flocker ca bundle {kind} {name}: {}", made.why());
    }
    Ok(())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
