//! The routing mesh on real network paths: three flocker nodes, each in its
//! own network namespace with its own Docker engine (`flocker::netlab`), a
//! client in a fourth namespace. An app answers through every node's
//! address; after a move it answers through every node again; an app
//! linking to it keeps working across the move without being recreated;
//! no rules are left after the app is removed, after a crash and restart,
//! or after a clean stop. Needs root, iproute2, iptables, nsenter, dockerd
//! and curl: without them it fails, saying which are missing.

mod common;

use common::{bundle, ctl_at, wait_until, write, BIN};
use flocker::netlab::{Lab, CLIENT};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "flocker-test/busybox:latest";
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const WEB_PORT: u16 = 18080;
const RAFT_PORT: u16 = 7000;

/// `web` serves its container's hostname (its id) at /id, so a client sees
/// which instance answered; `user` links to web and loops.
const APPLICATIONS: &str = r#"version: 1
applications:
  web:
    image: flocker-test/busybox:latest
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/id && exec httpd -f -p 80 -h /www"]
    ports: [{internal: 80, external: 18080}]
    volume: {mountpoint: /data}
  user:
    image: flocker-test/busybox:latest
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
    links: [{local_port: 80, remote_port: 18080, alias: web}]
"#;
const DEPLOYMENT: &str = "version: 1\nnodes:\n  n1: [web]\n  n3: [user]\n";
/// The same without web (user's link then leads nowhere: it stays).
const APPLICATIONS_USER_ONLY: &str = r#"version: 1
applications:
  user:
    image: flocker-test/busybox:latest
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#;
const DEPLOYMENT_USER_ONLY: &str = "version: 1\nnodes:\n  n3: [user]\n";

/// Three nodes in a lab. Fields drop in order: nodes before the lab.
struct Mesh {
    nodes: Vec<(String, Option<Child>)>,
    dir: tempfile::TempDir,
    lab: Lab,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Mesh {
    fn start() -> Mesh {
        let lab = Lab::start(&NODES)
            .expect("the network lab (needs root, iproute2, iptables, nsenter, dockerd)");
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(lab.load_busybox_image(IMAGE))
            .expect("test image in every lab engine");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let out = Command::new(BIN)
            .args(["ca", "init", "--dir"])
            .arg(&ca)
            .args(["--nodes", &NODES.join(","), "--users", "admin"])
            .output()
            .unwrap();
        assert!(out.status.success(), "ca init: {out:?}");
        for n in NODES {
            bundle(&ca, "--node", n, &dir.path().join(format!("{n}-certs")));
        }
        bundle(&ca, "--user", "admin", &dir.path().join("admin"));
        let mut mesh = Mesh {
            nodes: NODES.iter().map(|n| (n.to_string(), None)).collect(),
            dir,
            lab,
        };
        for n in NODES {
            mesh.start_node(n);
        }
        mesh
    }

    fn addr(&self, node: &str) -> SocketAddr {
        SocketAddr::new(self.lab.host_ip(node).unwrap().into(), RAFT_PORT)
    }

    fn start_node(&mut self, node: &str) {
        let peers: Vec<String> = NODES
            .iter()
            .map(|n| format!("{n}={}", self.addr(n)))
            .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(node))
            .unwrap();
        let child = self
            .lab
            .command(node, BIN)
            .unwrap()
            .args([
                "node",
                "--name",
                node,
                "--listen",
                &self.addr(node).to_string(),
            ])
            .args(["--peers", &peers.join(",")])
            .args(["--engine", &self.lab.engine(node).unwrap()])
            .args(["--reserve", "0"])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("{node}-data")))
            .arg("--certs")
            .arg(self.dir.path().join(format!("{node}-certs")))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start flocker node in its namespace");
        let slot = self.nodes.iter_mut().find(|(n, _)| n == node).unwrap();
        slot.1 = Some(child);
    }

    fn log_path(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("{node}.log"))
    }

    fn kill(&mut self, node: &str) {
        let slot = self.nodes.iter_mut().find(|(n, _)| n == node).unwrap();
        let mut child = slot.1.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn terminate(&mut self, node: &str) {
        let slot = self.nodes.iter_mut().find(|(n, _)| n == node).unwrap();
        let mut child = slot.1.take().expect("running");
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = wait_until(Duration::from_secs(20), || child.try_wait().unwrap())
            .expect("node stops on SIGTERM");
        assert!(status.success(), "{node} exited with {status}");
    }

    fn ctl(&self, args: &[&str]) -> common::CtlResult {
        ctl_at(self.addr("n1"), &self.dir.path().join("admin"), args)
    }

    fn status(&self) -> Value {
        let out = self.ctl(&["status", "-o", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        serde_json::from_str(&out.stdout).unwrap()
    }

    /// The running container of `app` as (node, container id), once there
    /// is exactly one.
    fn running(&self, app: &str) -> Option<(String, String)> {
        let status = self.status();
        let apps = status["apps"].as_array()?;
        let a = apps.iter().find(|a| a["name"] == app)?;
        let running: Vec<&Value> = a["instances"]
            .as_array()?
            .iter()
            .filter(|i| i["state"] == "running")
            .collect();
        match running[..] {
            [one] => Some((
                one["node"].as_str()?.to_string(),
                one["container_id"].as_str()?.to_string(),
            )),
            _ => None,
        }
    }

    /// What `url` answers from the client's namespace, if it answers.
    fn fetch(&self, ip: impl std::fmt::Display, path: &str) -> Option<String> {
        let out = self
            .lab
            .command(CLIENT, "curl")
            .unwrap()
            .args([
                "-sS",
                "--max-time",
                "2",
                &format!("http://{ip}:{WEB_PORT}{path}"),
            ])
            .output()
            .expect("curl in the client namespace");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Every node's address answers with the instance `id` (a hostname is
    /// the first 12 characters of the container id).
    fn every_node_answers(&self, id: &str) -> bool {
        NODES.iter().all(|n| {
            self.fetch(self.lab.host_ip(n).unwrap(), "/id")
                .is_some_and(|got| id.starts_with(&got) && got.len() >= 12)
        })
    }

    fn docker(&self, node: &str, args: &[&str]) -> String {
        let out = Command::new("docker")
            .args(["-H", &self.lab.engine(node).unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "docker {args:?} on {node}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// This node's own routing rules, as iptables-save prints them in its
    /// namespace.
    fn rules(&self, node: &str) -> Vec<String> {
        let out = self
            .lab
            .command(node, "iptables-save")
            .unwrap()
            .output()
            .unwrap();
        assert!(out.status.success(), "iptables-save in {node}: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("FLK-") || l.contains("flocker:"))
            .map(str::to_string)
            .collect()
    }

    /// Runs a command in `node`'s namespace; it must succeed.
    fn in_ns(&self, node: &str, args: &[&str]) {
        let out = self
            .lab
            .command(node, args[0])
            .unwrap()
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?} in {node}: {out:?}");
    }

    fn logs(&self) -> String {
        NODES
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(self.log_path(n)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                format!(
                    "--- {n}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn deploy(mesh: &Mesh, dir: &Path, deployment: &str, applications: &str) {
    let d = write(dir, "deployment.yml", deployment);
    let a = write(dir, "application.yml", applications);
    // A leader that just died leaves the outcome unknown (exit 3): retry
    // with the same request id, which applies once.
    let id = format!("routing-test-{}", common::unix_now());
    let mut out = mesh.ctl(&[
        "deploy",
        d.to_str().unwrap(),
        a.to_str().unwrap(),
        "--request-id",
        &id,
    ]);
    for _ in 0..20 {
        if out.code != 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        out = mesh.ctl(&[
            "deploy",
            d.to_str().unwrap(),
            a.to_str().unwrap(),
            "--request-id",
            &id,
        ]);
    }
    assert_eq!(out.code, 0, "deploy: {}\n{}", out.stderr, mesh.logs());
}

#[test]
fn every_node_answers_for_an_app_wherever_it_runs() {
    let mut mesh = Mesh::start();
    let registered = wait_until(Duration::from_secs(60), || {
        let out = mesh.ctl(&["history", "-o", "json"]);
        let h: Value = serde_json::from_str(&out.stdout).ok()?;
        let all = NODES.iter().all(|n| {
            h.as_array().is_some_and(|es| {
                es.iter().any(|e| {
                    e["author"] == format!("node {n}")
                        && e["summary"]
                            .as_str()
                            .is_some_and(|s| s.contains("publishes on"))
                })
            })
        });
        all.then_some(())
    });
    assert!(
        registered.is_some(),
        "nodes did not register\n{}",
        mesh.logs()
    );
    let files = tempfile::tempdir().unwrap();
    deploy(&mesh, files.path(), DEPLOYMENT, APPLICATIONS);

    // 1. web runs on n1 and answers through every node's address.
    let (node, web) = wait_until(Duration::from_secs(60), || mesh.running("web"))
        .unwrap_or_else(|| panic!("web never ran\n{}", mesh.logs()));
    assert_eq!(node, "n1");
    assert!(
        wait_until(Duration::from_secs(30), || mesh
            .every_node_answers(&web)
            .then_some(()))
        .is_some(),
        "web ({web}) does not answer through every node\n{}",
        mesh.logs()
    );
    let routing = mesh.status()["routing"].clone();
    let line = routing
        .as_array()
        .and_then(|r| r.iter().find(|v| v["app"] == "web"))
        .cloned()
        .expect("a routing line for web");
    assert_eq!(line["serving"], "n1");
    assert_eq!(
        line["routed_by"].as_array().map(Vec::len),
        Some(3),
        "{line}"
    );

    // 2. The linking app reaches web through its own node's address.
    let (user_node, user) =
        wait_until(Duration::from_secs(60), || mesh.running("user")).expect("user runs");
    assert_eq!(user_node, "n3");
    let n3_ip = mesh.lab.host_ip("n3").unwrap().to_string();
    let env = mesh.docker("n3", &["inspect", "-f", "{{json .Config.Env}}", &user]);
    assert!(
        env.contains(&format!("WEB_PORT_80_TCP=tcp://{n3_ip}:{WEB_PORT}")),
        "user's link leads to its own node: {env}"
    );
    let started = mesh.docker("n3", &["inspect", "-f", "{{.State.StartedAt}}", &user]);
    let through_link = |mesh: &Mesh| {
        let out = Command::new("docker")
            .args(["-H", &mesh.lab.engine("n3").unwrap(), "exec", &user])
            // busybox wget crashes on this kind of machine; nc does not.
            .args([
                "sh",
                "-c",
                "printf 'GET /id HTTP/1.0\\r\\n\\r\\n' | nc -w 2 $WEB_PORT_80_TCP_ADDR $WEB_PORT_80_TCP_PORT",
            ])
            .output()
            .unwrap();
        let reply = String::from_utf8_lossy(&out.stdout).to_string();
        // The body follows the headers: the instance's hostname.
        let body = reply.split("\r\n\r\n").nth(1)?.trim().to_string();
        (out.status.success()
            && reply.starts_with("HTTP/1.")
            && reply.contains(" 200 ")
            && !body.is_empty())
        .then_some(body)
    };
    let got =
        wait_until(Duration::from_secs(20), || through_link(&mesh)).expect("the link answers");
    assert!(
        web.starts_with(&got),
        "through the link: {got}, web is {web}"
    );

    // 3. Move web to n2: every node answers with the new instance.
    let moved = mesh.ctl(&["move", "web", "n2", "--wait", "--timeout", "120"]);
    assert_eq!(moved.code, 0, "move: {}\n{}", moved.stderr, mesh.logs());
    let handed_off = Instant::now();
    let (node, web2) = wait_until(Duration::from_secs(60), || {
        mesh.running("web").filter(|(n, _)| n == "n2")
    })
    .expect("web runs on n2");
    assert_eq!(node, "n2");
    assert_ne!(web2, web);
    let answered = wait_until(Duration::from_secs(30), || {
        mesh.every_node_answers(&web2)
            .then_some(handed_off.elapsed())
    });
    let answered = answered
        .unwrap_or_else(|| panic!("web on n2 not reached through every node\n{}", mesh.logs()));
    println!(
        "every node's address reached web on n2 {answered:?} after `ctl move --wait` returned"
    );
    let got = wait_until(Duration::from_secs(20), || {
        through_link(&mesh).filter(|g| web2.starts_with(g))
    });
    assert!(got.is_some(), "the link does not reach web on n2");
    assert_eq!(
        mesh.docker("n3", &["inspect", "-f", "{{.State.StartedAt}}", &user]),
        started,
        "the linking container was not recreated or restarted"
    );

    // 3b. Cut n3 off from its peers: once its lease runs out it forwards
    //     nothing, and a client reaching it is refused at once (never sent
    //     to a location n3 can no longer vouch for); healed, it forwards again.
    let n3 = mesh.lab.host_ip("n3").unwrap().to_string();
    let peers: Vec<String> = ["n1", "n2"]
        .iter()
        .map(|n| mesh.lab.host_ip(n).unwrap().to_string())
        .collect();
    for peer in &peers {
        mesh.in_ns("n3", &["iptables", "-I", "INPUT", "-s", peer, "-j", "DROP"]);
    }
    let stopped = wait_until(Duration::from_secs(20), || {
        (!mesh.rules("n3").iter().any(|r| r.contains("-j DNAT"))).then_some(())
    });
    assert!(
        stopped.is_some(),
        "n3 still forwards while cut off: {:?}",
        mesh.rules("n3")
    );
    let refused = mesh
        .lab
        .command(CLIENT, "curl")
        .unwrap()
        .args([
            "-sS",
            "--max-time",
            "2",
            &format!("http://{n3}:{WEB_PORT}/id"),
        ])
        .output()
        .unwrap();
    // 7: the connection was refused at once (28 would be a timeout).
    assert_eq!(
        refused.status.code(),
        Some(7),
        "curl through cut-off n3: {refused:?}"
    );
    for peer in &peers {
        mesh.in_ns("n3", &["iptables", "-D", "INPUT", "-s", peer, "-j", "DROP"]);
    }
    assert!(
        wait_until(Duration::from_secs(30), || mesh
            .every_node_answers(&web2)
            .then_some(()))
        .is_some(),
        "n3 does not forward again after the partition healed\n{}",
        mesh.logs()
    );

    // 4. A crashed node keeps its rules until it starts again; a change
    //    made meanwhile (web removed) leaves nothing behind once it is back.
    assert!(mesh
        .rules("n3")
        .iter()
        .any(|r| r.contains(&format!("--dport {WEB_PORT}"))));
    mesh.kill("n3");
    deploy(
        &mesh,
        files.path(),
        DEPLOYMENT_USER_ONLY,
        APPLICATIONS_USER_ONLY,
    );
    mesh.start_node("n3");
    let clean = wait_until(Duration::from_secs(60), || {
        NODES
            .iter()
            .all(|n| {
                !mesh
                    .rules(n)
                    .iter()
                    .any(|r| r.contains(&format!("--dport {WEB_PORT}")))
            })
            .then_some(())
    });
    assert!(
        clean.is_some(),
        "rules for a removed app remain: {:?}\n{}",
        NODES.map(|n| mesh.rules(n)),
        mesh.logs()
    );
    let gone = wait_until(Duration::from_secs(30), || {
        NODES
            .iter()
            .all(|n| mesh.fetch(mesh.lab.host_ip(n).unwrap(), "/id").is_none())
            .then_some(())
    });
    assert!(gone.is_some(), "a node still answers for the removed web");

    // 5. A clean stop removes the node's chains and jumps.
    mesh.terminate("n1");
    let left = mesh.rules("n1");
    assert!(left.is_empty(), "n1 left rules behind: {left:?}");
}
