//! The agent on the real Docker engine: three nodes sharing it, each on its
//! own publish IP. Deployed apps run with their settings; a changed app is
//! recreated alone; an agent restart adopts running containers; containers
//! killed from outside follow the restart policy, removed ones are recreated
//! (more in `drift_docker.rs`); undeployed apps
//! are removed; failures (missing image, taken port, unreachable engine) are
//! reported. Assertions go through `docker inspect`, not through our adapter.
//! Needs a Docker engine: fails loudly without one.

mod common;

use common::*;
use flocker::runtime::TEST_IMAGE;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn inspect(name: &str) -> Option<Value> {
    let out = Command::new("docker")
        .args(["inspect", name])
        .output()
        .expect("docker CLI");
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(0).cloned()
}

fn running(name: &str) -> Option<Value> {
    inspect(name).filter(|v| v["State"]["Running"] == true)
}

fn apps(mode: &str, with_web: bool) -> String {
    let web = format!(
        r#"  web:
    image: {TEST_IMAGE}
    command: {LOOP}
    environment: {{MODE: {mode}}}
    ports: [{{internal: 80, external: 18080}}]
    links: [{{local_port: 5432, remote_port: 15432, alias: db}}]
    mem_limit: 64M
    cpu_shares: 512
    restart_policy: {{name: always}}
"#
    );
    format!(
        r#"version: 1
applications:
{}  db:
    image: {TEST_IMAGE}
    command: {LOOP}
    ports: [{{internal: 5432, external: 15432}}]
    volume: {{mountpoint: /data}}
    restart_policy: {{name: never}}
"#,
        if with_web { web } else { String::new() }
    )
}

fn deploy(c: &Cluster, dep: &Path, app: &Path) {
    let r = c.ctl(
        "n3",
        &["deploy", dep.to_str().unwrap(), app.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "deploy: {}", r.stderr);
}

fn status(c: &Cluster) -> Value {
    let r = c.ctl("n2", &["status", "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

fn instance(status: &Value, app: &str) -> Option<Value> {
    status["apps"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == app)?["instances"]
        .get(0)
        .cloned()
}

fn publish_ips(base: u8) -> impl Fn(&str) -> Vec<String> {
    move |name: &str| {
        let i: u8 = name.trim_start_matches('n').parse().unwrap();
        vec!["--publish-ip".into(), format!("127.0.0.{}", base + i)]
    }
}

#[test]
fn agents_converge_docker_and_follow_restart_policies() {
    build_image();
    let mut c = Cluster::start_each(&["n1", "n2", "n3"], &[], publish_ips(20));
    c.wait_for_leader(T);
    let dir = c.dir.path().to_path_buf();
    let dep = write(
        &dir,
        "deployment.yml",
        "version: 1\nnodes:\n  n1: [web]\n  n2: [db]\n",
    );
    deploy(&c, &dep, &write(&dir, "app1.yml", &apps("prod", true)));

    // Links point at n2's publish IP once n2 has registered it (the web
    // container is recreated if it started before that).
    let web = wait_until(T, || {
        running(&c.container("n1", "web"))
            .filter(|w| w["Config"]["Env"].to_string().contains("127.0.0.22:15432"))
    })
    .expect("web runs on n1, linked to db on n2's publish IP");
    let db = wait_until(T, || running(&c.container("n2", "db"))).expect("db runs on n2");
    let id = c.cluster_id().unwrap();
    assert_eq!(web["Config"]["Labels"]["flocker.cluster"], id.as_str());
    assert_eq!(web["Config"]["Labels"]["flocker.node"], "n1");
    assert_eq!(web["Config"]["Labels"]["flocker.app"], "web");
    assert_eq!(
        web["HostConfig"]["RestartPolicy"]["Name"], "no",
        "Docker must never restart on its own"
    );
    assert_eq!(
        web["HostConfig"]["PortBindings"]["80/tcp"][0]["HostIp"],
        "127.0.0.21"
    );
    assert_eq!(
        web["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"],
        "18080"
    );
    assert_eq!(web["HostConfig"]["Memory"], 64 << 20);
    assert_eq!(web["HostConfig"]["CpuShares"], 512);
    let env: Vec<&str> = web["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(env.contains(&"MODE=prod"), "{env:?}");
    // The link points at n2's publish IP, where db's port is published.
    assert!(
        env.contains(&"DB_PORT_5432_TCP=tcp://127.0.0.22:15432"),
        "{env:?}"
    );
    assert!(env.contains(&"DB_PORT_5432_TCP_ADDR=127.0.0.22"), "{env:?}");
    let mount = &db["Mounts"][0];
    assert_eq!(mount["Destination"], "/data");
    assert!(
        mount["Source"].as_str().unwrap().contains("data-n2"),
        "{mount}"
    );

    // ctl status shows what the nodes observe.
    let seen = wait_until(T, || {
        let s = status(&c);
        let w = instance(&s, "web")?;
        (w["state"] == "running" && w["node"] == "n1").then_some(w)
    })
    .expect("status shows web running on n1");
    assert_eq!(
        seen["container_id"].as_str().unwrap(),
        &web["Id"].as_str().unwrap()[..12]
    );
    for key in [
        "image_id",
        "started_at",
        "restarts",
        "exit_code",
        "last_error",
        "observed_at",
    ] {
        assert!(seen.get(key).is_some(), "{key} missing in {seen}");
    }

    // Changing web recreates web alone.
    deploy(&c, &dep, &write(&dir, "app2.yml", &apps("debug", true)));
    let web2 = wait_until(T, || {
        running(&c.container("n1", "web")).filter(|w| w["Id"] != web["Id"])
    })
    .expect("web recreated with its new settings");
    let env: Vec<&str> = web2["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(env.contains(&"MODE=debug"), "{env:?}");
    let db_now = running(&c.container("n2", "db")).expect("db still runs");
    assert_eq!(db_now["Id"], db["Id"], "db untouched");
    assert_eq!(
        db_now["State"]["StartedAt"], db["State"]["StartedAt"],
        "db not restarted"
    );

    // A clean stop (SIGTERM) leaves the container running, and the
    // restarted agent adopts it without restarting it.
    let stopped = c.terminate("n2", T);
    assert_eq!(stopped.code(), Some(0), "{}", c.log("n2"));
    let during = running(&c.container("n2", "db")).expect("db runs while its node is stopped");
    assert_eq!(during["State"]["StartedAt"], db["State"]["StartedAt"]);
    c.restart("n2");
    c.wait_for_leader(T);
    std::thread::sleep(Duration::from_secs(2));
    let db_after =
        running(&c.container("n2", "db")).expect("db still runs after its agent restarted");
    assert_eq!(db_after["Id"], db["Id"]);
    assert_eq!(db_after["State"]["StartedAt"], db["State"]["StartedAt"]);

    // Killed from outside with restart policy `always`: brought back.
    docker(&["kill", &c.container("n1", "web")]);
    wait_until(T, || {
        let s = status(&c);
        let w = instance(&s, "web")?;
        (w["state"] == "running" && w["restarts"].as_u64()? >= 1).then_some(())
    })
    .expect("web restarted by its agent");
    // Removed from outside: recreated.
    docker(&["rm", "-f", &c.container("n1", "web")]);
    wait_until(T, || running(&c.container("n1", "web"))).expect("web recreated after removal");

    // Killed with restart policy `never`: stays down, and status says how it ended.
    docker(&["kill", &c.container("n2", "db")]);
    let dead = wait_until(T, || {
        let s = status(&c);
        let d = instance(&s, "db")?;
        (d["state"] == "exited").then_some(d)
    })
    .expect("db reported exited");
    assert_eq!(dead["exit_code"], 137);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        running(&c.container("n2", "db")).is_none(),
        "restart policy never is respected"
    );

    // Undeployed: removed.
    let dep_db_only = write(&dir, "deployment2.yml", "version: 1\nnodes:\n  n2: [db]\n");
    deploy(
        &c,
        &dep_db_only,
        &write(&dir, "app4.yml", &apps("debug", false)),
    );
    wait_until(T, || {
        inspect(&c.container("n1", "web")).is_none().then_some(())
    })
    .expect("web removed");
}

#[test]
fn failures_are_reported_without_disturbing_anything_else() {
    build_image();
    let mut c = Cluster::start_each(&["n1", "n2", "n3"], &[], |name| {
        let mut args = publish_ips(30)(name);
        if name == "n3" {
            args.extend(["--engine".into(), "unix:///nonexistent/docker.sock".into()]);
        }
        args
    });
    c.wait_for_leader(T);
    let dir = c.dir.path().to_path_buf();
    // Something else holds n2's port.
    let squatter = std::net::TcpListener::bind("127.0.0.32:18090").unwrap();
    let app = write(
        &dir,
        "app.yml",
        &format!(
            r#"version: 1
applications:
  ghost:
    image: flocker-test/no-such-image:1
  blocked:
    image: {TEST_IMAGE}
    command: {LOOP}
    ports: [{{internal: 80, external: 18090}}]
  fine:
    image: {TEST_IMAGE}
    command: {LOOP}
"#
        ),
    );
    let dep = write(
        &dir,
        "dep.yml",
        "version: 1\nnodes:\n  n1: [ghost, fine]\n  n2: [blocked]\n",
    );
    deploy(&c, &dep, &app);

    wait_until(T, || running(&c.container("n1", "fine")))
        .expect("a good app runs beside a broken one");
    let waiting = |app: &str| -> Option<String> {
        let s = status(&c);
        let a = s["apps"]
            .as_array()?
            .iter()
            .find(|a| a["name"] == app)?
            .clone();
        a["waiting"].as_str().map(str::to_string)
    };
    let ghost = wait_until(T, || waiting("ghost")).expect("ghost says why it waits");
    assert!(ghost.contains("not present on n1"), "{ghost}");
    let blocked = wait_until(T, || waiting("blocked").filter(|w| w.contains("port")))
        .expect("blocked says why");
    assert!(blocked.contains("18090"), "{blocked}");

    // Once the port is free, the agent gets there by itself.
    drop(squatter);
    wait_until(Duration::from_secs(60), || {
        running(&c.container("n2", "blocked"))
    })
    .expect("blocked runs once the port is free");

    // A node whose engine is unreachable is degraded, and says so.
    let nodes = c.nodes_json("n1").unwrap();
    let n3 = nodes.iter().find(|n| n["name"] == "n3").unwrap();
    assert!(
        n3["degraded"]
            .as_str()
            .unwrap_or("")
            .contains("unreachable"),
        "{n3}"
    );
    assert!(nodes
        .iter()
        .filter(|n| n["name"] != "n3")
        .all(|n| n["degraded"].is_null()));
}

/// A stand-in for the Docker socket that forwards to the real engine and can
/// be cut: how a test takes "Docker" away from one node and gives it back.
struct SocketProxy {
    path: PathBuf,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl SocketProxy {
    fn new(path: PathBuf) -> SocketProxy {
        SocketProxy {
            path,
            tasks: Default::default(),
        }
    }

    fn up(&mut self, rt: &tokio::runtime::Runtime) {
        let _ = std::fs::remove_file(&self.path);
        let listener = {
            let _guard = rt.enter();
            tokio::net::UnixListener::bind(&self.path).unwrap()
        };
        let tasks = self.tasks.clone();
        let accept = rt.spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut engine) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
                tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// Closes the socket and every connection through it, as an engine that
    /// went away would.
    fn down(&mut self, rt: &tokio::runtime::Runtime) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn a_node_whose_engine_goes_away_is_degraded_and_recovers() {
    build_image();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sock_dir = tempfile::tempdir().unwrap();
    let mut proxy = SocketProxy::new(sock_dir.path().join("docker.sock"));
    proxy.up(&rt);
    let engine = format!("unix://{}", proxy.path.display());
    let mut c = Cluster::start_each(&["n1", "n2", "n3"], &[], |name| {
        let mut args = publish_ips(60)(name);
        if name == "n1" {
            args.extend(["--engine".to_string(), engine.clone()]);
        }
        args
    });
    c.wait_for_leader(T);
    let dir = c.dir.path().to_path_buf();
    let app = write(
        &dir,
        "app.yml",
        &format!("version: 1\napplications:\n  svc:\n    image: {TEST_IMAGE}\n    command: {LOOP}\n    restart_policy: {{name: always}}\n"),
    );
    let dep = write(&dir, "dep.yml", "version: 1\nnodes:\n  n1: [svc]\n");
    deploy(&c, &dep, &app);
    let first = wait_until(T, || running(&c.container("n1", "svc"))).expect("svc runs on n1");

    proxy.down(&rt);
    let degraded = |c: &Cluster| -> Option<String> {
        let nodes = c.nodes_json("n2")?;
        nodes.iter().find(|n| n["name"] == "n1")?["degraded"]
            .as_str()
            .map(str::to_string)
    };
    // The agent notices at once from its event stream, or at the latest at
    // its next resync.
    let why = wait_until(Duration::from_secs(90), || degraded(&c)).expect("n1 reported degraded");
    assert!(why.contains("unreachable"), "{why}");
    // Meanwhile the container is killed behind the agent's back.
    docker(&["kill", &c.container("n1", "svc")]);

    proxy.up(&rt);
    wait_until(Duration::from_secs(60), || {
        degraded(&c).is_none().then_some(())
    })
    .expect("n1 recovers");
    let again =
        wait_until(T, || running(&c.container("n1", "svc"))).expect("svc restarted after recovery");
    assert_eq!(
        again["Id"], first["Id"],
        "restarted in place, not recreated"
    );
    drop(c);
    proxy.down(&rt);
}

#[test]
fn a_volume_whose_owner_is_gone_is_recovered_elsewhere_and_never_mounted_by_the_old_owner() {
    build_image();
    let mut c = Cluster::start_each(&["n1", "n2", "n3"], &[], publish_ips(120));
    // Every node has registered what its build can apply (the leader
    // proposes a newer command kind only then; invariant 8).
    c.wait_for_registration(&["n1", "n2", "n3"], T);
    let dir = c.dir.path().to_path_buf();
    let app = write(
        &dir,
        "app.yml",
        &format!("version: 1\napplications:\n  ledger:\n    image: {TEST_IMAGE}\n    command: {LOOP}\n    volume: {{mountpoint: /data}}\n"),
    );
    deploy(
        &c,
        &write(&dir, "d.yml", "version: 1\nanywhere: [ledger]\n"),
        &app,
    );
    let owner = wait_until(T, || {
        ["n1", "n2", "n3"]
            .into_iter()
            .find(|n| running(&c.container(n, "ledger")).is_some())
            .map(str::to_string)
    })
    .expect("ledger placed and running");
    docker(&[
        "exec",
        &c.container(&owner, "ledger"),
        "sh",
        "-c",
        "echo old > /data/file",
    ]);

    // The owner is gone: its process and container.
    c.kill(&owner);
    docker(&["rm", "-f", &c.container(&owner, "ledger")]);
    let target = if owner == "n2" { "n3" } else { "n2" };
    let refused = c.ctl(target, &["volume", "recover", "ledger", "--to", target]);
    assert_eq!(
        refused.code, 2,
        "data loss must be accepted explicitly: {}",
        refused.stderr
    );
    // The killed owner may have been the leader: an unknown outcome (exit 3)
    // is retried with the same request id, as ctl asks.
    let r = wait_until(T, || {
        let r = c.ctl(
            target,
            &[
                "volume",
                "recover",
                "ledger",
                "--to",
                target,
                "--accept-data-loss",
                "--request-id",
                "recover-ledger-1",
            ],
        );
        (r.code != 3).then_some(r)
    })
    .expect("recover gets a known outcome");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("epoch 2"), "{}", r.stdout);
    wait_until(T, || running(&c.container(target, "ledger")))
        .expect("ledger runs on the recovery node");

    // The old owner returns: it never starts ledger, and its copy stays on disk.
    c.restart(&owner);
    c.wait_for_leader(T);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        running(&c.container(&owner, "ledger")).is_none(),
        "stale owner never mounts"
    );
    let kept = std::fs::read_to_string(
        c.nodes[c.index(&owner)]
            .data_dir
            .join("volumes/ledger/data/file"),
    );
    assert_eq!(kept.unwrap(), "old\n");
}
