//! Test harness: real `flocker` processes on their own loopback ports, a
//! CA directory from `flocker ca init` (the admin's machine), each node
//! started from its own `flocker ca bundle` (no CA key on nodes), and
//! `flocker ctl` as the client, from the admin's user bundle.
#![allow(dead_code)]

use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_flocker");

/// A free UDP port on 127.0.0.1 (released for the node to bind).
pub fn free_addr() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
    sock.local_addr().expect("local addr")
}

/// A free TCP port on 127.0.0.1 (released for the node to bind).
pub fn free_tcp() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    l.local_addr().expect("local addr")
}

pub struct NodeProc {
    pub name: String,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub args: Vec<String>,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
}

impl Cluster {
    /// A CA with certificates for `names` (plus `spare` more nodes to join
    /// later) and user `admin`, and the founding nodes started with `--peers`.
    pub fn start(names: &[&str], spare: &[&str], extra: &[&str]) -> Cluster {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Cluster::start_each(names, spare, |_| extra.clone())
    }

    /// As [`Cluster::start`], with each node's extra arguments from `extra`.
    pub fn start_each(
        names: &[&str],
        spare: &[&str],
        extra: impl Fn(&str) -> Vec<String>,
    ) -> Cluster {
        Cluster::start_each_in(tempfile::tempdir().expect("tempdir"), names, spare, extra)
    }

    /// As [`Cluster::start_each`], with certificates, logs and data
    /// directories in `dir` (e.g. on a file system a test mounted).
    pub fn start_each_in(
        dir: tempfile::TempDir,
        names: &[&str],
        spare: &[&str],
        extra: impl Fn(&str) -> Vec<String>,
    ) -> Cluster {
        Cluster::start_with_ca_args(dir, names, spare, &[], extra)
    }

    /// As [`Cluster::start_each_in`], with more arguments for `ca init`
    /// (`--san 127.0.0.1`).
    pub fn start_with_ca_args(
        dir: tempfile::TempDir,
        names: &[&str],
        spare: &[&str],
        ca_args: &[&str],
        extra: impl Fn(&str) -> Vec<String>,
    ) -> Cluster {
        let all: Vec<&str> = names.iter().chain(spare).copied().collect();
        let out = Command::new(BIN)
            .args(["ca", "init", "--dir"])
            .arg(dir.path().join("certs"))
            .args(["--nodes", &all.join(","), "--users", "admin"])
            .args(ca_args)
            .output()
            .expect("run flocker ca init");
        assert!(
            out.status.success(),
            "ca init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let admin = dir.path().join("bundles").join("admin");
        bundle(&dir.path().join("certs"), "--user", "admin", &admin);
        let addrs: Vec<SocketAddr> = names.iter().map(|_| free_addr()).collect();
        let peers: Vec<String> = names
            .iter()
            .zip(&addrs)
            .map(|(n, a)| format!("{n}={a}"))
            .collect();
        let mut cluster = Cluster {
            dir,
            nodes: Vec::new(),
        };
        for (name, addr) in names.iter().zip(&addrs) {
            let mut args = vec!["--peers".to_string(), peers.join(",")];
            args.extend(extra(name));
            cluster.add_node(name, *addr, args);
        }
        cluster
    }

    /// `names` with the simulated engine, each serving HTTPS
    /// (`--http-listen`) at the returned address, with certificates naming
    /// 127.0.0.1 (`--san`), a leader elected and every node registered.
    pub fn start_https(names: &[&str], timeout: Duration) -> (Cluster, Vec<SocketAddr>) {
        let http: Vec<SocketAddr> = names.iter().map(|_| free_tcp()).collect();
        let mut c = Cluster::start_with_ca_args(
            tempfile::tempdir().expect("tempdir"),
            names,
            &[],
            &["--san", "127.0.0.1"],
            |name| {
                let i = names.iter().position(|n| *n == name).expect("a name");
                ["--engine", "sim", "--http-listen", &http[i].to_string()]
                    .map(String::from)
                    .to_vec()
            },
        );
        c.wait_for_leader(timeout);
        c.wait_for_registration(names, timeout);
        (c, http)
    }

    /// `ca bundle --user USER --p12 --out OUT`: the PKCS#12 file a browser
    /// imports, and its password (printed once).
    pub fn p12_bundle(&self, user: &str, out_dir: &Path) -> (PathBuf, String) {
        let out = Command::new(BIN)
            .args(["ca", "bundle", "--dir"])
            .arg(self.certs())
            .args(["--user", user, "--p12", "--out"])
            .arg(out_dir)
            .output()
            .expect("run flocker ca bundle");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ca bundle --p12: {stderr}");
        let password = stdout
            .lines()
            .find_map(|l| l.split_once("(shown only now): "))
            .map(|(_, p)| p.trim().to_string())
            .unwrap_or_else(|| panic!("no password in {stdout}"));
        (out_dir.join(format!("users/{user}.p12")), password)
    }

    /// The CA directory: the CA key and every certificate (the admin's
    /// machine). Nodes never see it.
    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// The bundle node `name` starts from (made on its first start).
    pub fn bundle(&self, name: &str) -> PathBuf {
        self.dir.path().join("bundles").join(name)
    }

    /// The admin's user bundle, what `ctl` uses.
    pub fn admin_certs(&self) -> PathBuf {
        self.bundle("admin")
    }

    /// Issues user `name` with `role` from the CA and bundles it; returns
    /// the bundle's directory.
    pub fn issue_user(&self, name: &str, role: &str) -> PathBuf {
        let out = Command::new(BIN)
            .args(["ca", "issue", "--dir"])
            .arg(self.certs())
            .args(["--user", name, "--role", role])
            .output()
            .expect("run flocker ca issue");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ca issue: {err}");
        let dir = self.bundle(name);
        bundle(&self.certs(), "--user", name, &dir);
        dir
    }

    /// The Docker name of `app`'s container on `node`.
    pub fn container(&self, node: &str, app: &str) -> String {
        flocker::agent::container_name(&self.cluster_id().expect("cluster id"), node, app)
    }

    /// The cluster id its containers are labelled with.
    pub fn cluster_id(&self) -> anyhow::Result<String> {
        flocker::node::cluster_id(&flocker::ca::CertsDir::new(self.certs()))
    }

    /// Registers and starts a node process.
    pub fn add_node(&mut self, name: &str, addr: SocketAddr, args: Vec<String>) {
        let data_dir = self.dir.path().join(format!("data-{name}"));
        self.nodes.push(NodeProc {
            name: name.to_string(),
            addr,
            data_dir,
            args,
            child: None,
        });
        let i = self.nodes.len() - 1;
        self.start_node(i);
    }

    pub fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.nodes[self.index(name)].addr
    }

    pub fn start_node(&mut self, i: usize) {
        let certs = self.bundle(&self.nodes[i].name);
        if !certs.exists() {
            bundle(&self.certs(), "--node", &self.nodes[i].name, &certs);
        }
        let log_path = self.dir.path().join(format!("{}.log", self.nodes[i].name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("node log");
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} already running", node.name);
        let child = Command::new(BIN)
            .arg("node")
            .args(["--name", &node.name])
            .arg("--listen")
            .arg(node.addr.to_string())
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--certs")
            .arg(&certs)
            .args(&node.args)
            // Nodes here share the host's network namespace and loopback
            // addresses: no routing rules unless a test asks for them.
            .args(if node.args.iter().any(|a| a.starts_with("--routing")) {
                &[][..]
            } else {
                &["--routing", "off"][..]
            })
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn flocker node");
        node.child = Some(child);
    }

    /// kill -9.
    pub fn kill(&mut self, name: &str) {
        let i = self.index(name);
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// SIGSTOP / SIGCONT: the process stays, but does nothing.
    pub fn signal(&mut self, name: &str, signal: &str) {
        let i = self.index(name);
        let pid = self.nodes[i].child.as_ref().expect("running").id();
        let out = Command::new("kill")
            .args([signal, &pid.to_string()])
            .output()
            .expect("kill");
        assert!(out.status.success(), "kill {signal} {pid}");
    }

    pub fn restart(&mut self, name: &str) {
        let i = self.index(name);
        self.start_node(i);
    }

    /// SIGTERM, then waits for the process to end; returns how it ended.
    pub fn terminate(&mut self, name: &str, timeout: Duration) -> std::process::ExitStatus {
        self.signal(name, "-TERM");
        let i = self.index(name);
        let status = wait_until(timeout, || {
            self.nodes[i].child.as_mut()?.try_wait().ok().flatten()
        })
        .unwrap_or_else(|| panic!("{name} did not stop on SIGTERM within {timeout:?}"));
        self.nodes[i].child = None;
        status
    }

    pub fn is_running(&mut self, name: &str) -> bool {
        let i = self.index(name);
        match self.nodes[i].child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Runs `flocker ctl` against node `via`, as the admin.
    pub fn ctl(&self, via: &str, args: &[&str]) -> CtlResult {
        ctl_at(self.addr(via), &self.admin_certs(), args)
    }

    /// `ctl nodes -o json` against `via`, or None when it fails.
    pub fn nodes_json(&self, via: &str) -> Option<Vec<Value>> {
        let r = self.ctl(via, &["nodes", "-o", "json"]);
        if r.code != 0 {
            return None;
        }
        serde_json::from_str::<Vec<Value>>(&r.stdout).ok()
    }

    /// Waits until every running member reports the same single leader, and
    /// returns its name.
    pub fn wait_for_leader(&mut self, timeout: Duration) -> String {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        let running: Vec<String> = names.into_iter().filter(|n| self.is_running(n)).collect();
        let mut last = String::new();
        let leader = wait_until(timeout, || {
            let via = &running[0];
            let nodes = self.nodes_json(via)?;
            let reported: Vec<(&str, Option<&str>, &str)> = nodes
                .iter()
                .filter(|n| {
                    running
                        .iter()
                        .any(|r| r == n["name"].as_str().unwrap_or(""))
                })
                .map(|n| {
                    (
                        n["name"].as_str().unwrap_or(""),
                        n["leader"].as_str(),
                        n["role"].as_str().unwrap_or(""),
                    )
                })
                .collect();
            last = format!("{reported:?}");
            let leaders: Vec<&str> = reported
                .iter()
                .filter(|(_, _, role)| *role == "leader")
                .map(|(n, _, _)| *n)
                .collect();
            if leaders.len() != 1 || reported.len() != running.len() {
                return None;
            }
            let all_agree = reported.iter().all(|(_, l, _)| *l == Some(leaders[0]));
            all_agree.then(|| leaders[0].to_string())
        });
        leader.unwrap_or_else(|| panic!("no agreed leader within {timeout:?}; last view: {last}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Containers this cluster's agents made (the label is unique per CA).
        if let Ok(id) = self.cluster_id() {
            let filter = format!("label=flocker.cluster={id}");
            if let Ok(out) = Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                if !ids.is_empty() {
                    let _ = Command::new("docker")
                        .args(["rm", "-f"])
                        .args(&ids)
                        .output();
                }
            }
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!("----- log of {} -----\n{}", node.name, self.log(&node.name));
            }
        }
    }
}

/// `flocker ca bundle --dir CA --node|--user NAME --out OUT`.
pub fn bundle(ca: &Path, kind: &str, name: &str, out: &Path) {
    let out_arg = out.to_owned();
    let result = Command::new(BIN)
        .args(["ca", "bundle", "--dir"])
        .arg(ca)
        .args([kind, name, "--out"])
        .arg(out_arg)
        .output()
        .expect("run flocker ca bundle");
    assert!(
        result.status.success(),
        "ca bundle {kind} {name}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
}

pub struct CtlResult {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn ctl_at(addr: SocketAddr, certs: &Path, args: &[&str]) -> CtlResult {
    let out: Output = Command::new(BIN)
        .arg("ctl")
        .arg("--node")
        .arg(addr.to_string())
        .arg("--certs")
        .arg(certs)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run flocker ctl");
    CtlResult {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Waits until the history read through `addr` has a change whose summary
/// contains `text` (e.g. "authorization enforced": every voter reads signed
/// commands, the leader switched them on).
pub fn wait_for_history(addr: SocketAddr, certs: &Path, text: &str, timeout: Duration) -> bool {
    wait_until(timeout, || {
        let r = ctl_at(addr, certs, &["history", "-o", "json", "--limit", "1000"]);
        let entries: Vec<Value> = serde_json::from_str(&r.stdout).ok()?;
        entries
            .iter()
            .any(|e| e["summary"].as_str().is_some_and(|s| s.contains(text)))
            .then_some(())
    })
    .is_some()
}

/// Polls `f` every 100 ms until it returns Some, or the timeout passes.
/// Whether Docker runs the container named `name`.
pub fn container_running(name: &str) -> bool {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", name])
        .output()
        .expect("docker CLI");
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "true"
}

pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Cluster {
    /// Waits until every node in `names` registered what its build can apply
    /// (the leader proposes a newer command kind only then; invariant 8).
    pub fn wait_for_registration(&self, names: &[&str], timeout: Duration) {
        wait_until(timeout, || {
            let r = self.ctl(names[0], &["history", "-o", "json"]);
            let h: Value = serde_json::from_str(&r.stdout).ok()?;
            let registered = names.iter().all(|n| {
                h.as_array().unwrap().iter().any(|e| {
                    e["author"] == format!("node {n}")
                        && e["summary"].as_str().unwrap_or("").contains("publishes on")
                })
            });
            registered.then_some(())
        })
        .expect("every node registers its command kinds");
    }
}

/// The labels of `node` in a `ctl nodes -o json` answer.
pub fn labels_of(nodes: &[Value], node: &str) -> Value {
    nodes
        .iter()
        .find(|n| n["name"] == node)
        .map(|n| n["labels"].clone())
        .unwrap_or(Value::Null)
}

/// Loops until SIGTERM, which it answers at once (so graceful stops are quick).
pub const LOOP: &str = r#"["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]"#;

/// Builds the FROM-scratch busybox image the Docker tests run (no registry).
pub fn build_image() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(flocker::runtime::build_busybox_image(
        &flocker::runtime::DockerRuntime::local(),
        flocker::runtime::TEST_IMAGE,
    ))
    .expect("building the test image needs a Docker engine and busybox-static");
}

/// Writes a file into `dir` and returns its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the docker CLI; panics with its error when it fails.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (time in ns, action, node) of this cluster's container events for `app`.
pub fn events(cluster_id: &str, app: &str, since: &str) -> Vec<(i64, String, String)> {
    let until = (unix_now() + 1).to_string();
    docker(&[
        "events",
        "--since",
        since,
        "--until",
        &until,
        "--filter",
        &format!("label=flocker.cluster={cluster_id}"),
        "--filter",
        &format!("label=flocker.app={app}"),
        "--filter",
        "type=container",
        "--format",
        "{{.TimeNano}} {{.Action}} {{index .Actor.Attributes \"flocker.node\"}}",
    ])
    .lines()
    .filter_map(|l| {
        let mut parts = l.split_whitespace();
        Some((
            parts.next()?.parse().ok()?,
            parts.next()?.to_string(),
            parts.next()?.to_string(),
        ))
    })
    .collect()
}

/// Docker's own clock: `old`'s instance ended (one of `ended`) before
/// `new`'s started.
pub fn died_before_started(ev: &[(i64, String, String)], old: &str, ended: &[&str], new: &str) {
    let died = ev
        .iter()
        .find(|(_, a, n)| ended.contains(&a.as_str()) && n == old)
        .map(|e| e.0)
        .unwrap_or_else(|| panic!("the old instance on {old} never ended: {ev:?}"));
    let started = ev
        .iter()
        .find(|(_, a, n)| a == "start" && n == new)
        .map(|e| e.0)
        .unwrap_or_else(|| panic!("no new instance started on {new}: {ev:?}"));
    assert!(
        died < started,
        "old died at {died}, new started at {started}: {ev:?}"
    );
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Blocks all UDP to and from a node's port: it cannot reach anyone and
/// no one can reach it, while its process and containers keep running.
pub struct Isolation(Vec<Vec<String>>);

impl Isolation {
    pub fn of(port: u16) -> Isolation {
        let rules: Vec<Vec<String>> = ["--dport", "--sport"]
            .iter()
            .map(|dir| {
                ["INPUT", "-p", "udp", dir, &port.to_string(), "-j", "DROP"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            })
            .collect();
        for rule in &rules {
            let out = Command::new("iptables")
                .arg("-I")
                .args(rule)
                .output()
                .expect("iptables");
            assert!(
                out.status.success(),
                "iptables: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Isolation(rules)
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        for rule in &self.0 {
            let _ = Command::new("iptables").arg("-D").args(rule).output();
        }
    }
}
