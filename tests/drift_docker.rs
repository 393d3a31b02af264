//! Drift repair on the real Docker engine: a container removed or replaced
//! from outside is recreated whatever its restart policy (the policy governs
//! exits, not removals) and `ctl status` says so; a container carrying this
//! cluster's and node's labels that the cluster does not know is removed.
//! Assertions go through the docker CLI. Needs a Docker engine: fails loudly
//! without one.

mod common;

use common::*;
use flocker::runtime::TEST_IMAGE;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn container_id(name: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{.Id}} {{.State.Running}}", name])
        .output()
        .expect("docker CLI");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (id, running) = text.trim().split_once(' ')?;
    (out.status.success() && running == "true").then(|| id.to_string())
}

fn exists(name: &str) -> bool {
    Command::new("docker")
        .args(["inspect", name])
        .output()
        .expect("docker CLI")
        .status
        .success()
}

fn instance(c: &Cluster, app: &str) -> Option<Value> {
    let r = c.ctl("n1", &["status", "-o", "json"]);
    let s: Value = serde_json::from_str(&r.stdout).ok()?;
    s["apps"].as_array()?.iter().find(|a| a["name"] == app)?["instances"]
        .get(0)
        .cloned()
}

fn signal(which: &str, pid: &str) {
    let ok = Command::new("kill")
        .args([which, pid])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {which} {pid}");
}

#[test]
fn removed_or_replaced_containers_are_recreated_and_strays_removed() {
    build_image();
    let mut c = Cluster::start_each(&["n1"], &[], |_| {
        vec!["--publish-ip".into(), "127.0.0.141".into()]
    });
    c.wait_for_leader(T);
    let dir = c.dir.path().to_path_buf();
    let dep = write(&dir, "deployment.yml", "version: 1\nnodes:\n  n1: [keep]\n");
    let app = write(
        &dir,
        "app.yml",
        &format!(
            "version: 1\napplications:\n  keep:\n    image: {TEST_IMAGE}\n    command: {LOOP}\n    restart_policy: {{name: never}}\n"
        ),
    );
    let r = c.ctl(
        "n1",
        &["deploy", dep.to_str().unwrap(), app.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "deploy: {}", r.stderr);
    let name = c.container("n1", "keep");
    let first = wait_until(T, || container_id(&name)).expect("keep runs");

    // Removed from outside, restart policy `never`: recreated, and noted.
    docker(&["rm", "-f", &name]);
    let second = wait_until(T, || container_id(&name).filter(|id| *id != first))
        .expect("a removed container of a never-policy app is recreated");
    let seen = wait_until(T, || {
        instance(&c, "keep").filter(|i| {
            i["state"] == "running" && second.starts_with(i["container_id"].as_str().unwrap_or("-"))
        })
    })
    .expect("status shows the new container");
    let note = seen["last_error"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("recreated: its container was removed from outside at "),
        "{seen}"
    );

    // Replaced from outside: same name, this node's labels, other settings.
    let id = c.cluster_id().unwrap();
    // The agent recreates a removed container at once: it is paused (the
    // node process, SIGSTOP) while the impostor takes the name.
    let pid = c.nodes[0].child.as_ref().expect("n1 runs").id().to_string();
    signal("-STOP", &pid);
    docker(&["rm", "-f", &name]);
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("flocker.cluster={id}"),
        "--label",
        "flocker.node=n1",
        "--label",
        "flocker.app=keep",
        "--label",
        "flocker.spec=not-the-cluster-s",
        TEST_IMAGE,
        "sh",
        "-c",
        "sleep 600",
    ]);
    signal("-CONT", &pid);
    let impostor = container_id(&name);
    let third = wait_until(T, || {
        container_id(&name).filter(|id| *id != second && Some(id) != impostor.as_ref())
    })
    .expect("a replaced container is recreated with the cluster's settings");
    let seen = wait_until(T, || {
        instance(&c, "keep").filter(|i| {
            i["state"] == "running" && third.starts_with(i["container_id"].as_str().unwrap_or("-"))
        })
    })
    .expect("status shows the new container");
    assert!(
        seen["last_error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("recreated: its container was replaced from outside"),
        "{seen}"
    );
    let labels = docker(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"flocker.spec\"}}",
        &third,
    ]);
    assert_ne!(labels.trim(), "not-the-cluster-s");

    // A container the cluster does not know, with this cluster's and node's
    // labels (as a crashed earlier run could leave one): removed.
    let stray = format!("{name}-stray");
    docker(&[
        "run",
        "-d",
        "--name",
        &stray,
        "--label",
        &format!("flocker.cluster={id}"),
        "--label",
        "flocker.node=n1",
        "--label",
        "flocker.app=gone",
        TEST_IMAGE,
        "sh",
        "-c",
        "sleep 600",
    ]);
    wait_until(T, || (!exists(&stray)).then_some(())).expect("the stray container is removed");
    // Another node's container on the same engine is not ours: left alone.
    let foreign = format!("{name}-other-node");
    docker(&[
        "run",
        "-d",
        "--name",
        &foreign,
        "--label",
        &format!("flocker.cluster={id}"),
        "--label",
        "flocker.node=n9",
        "--label",
        "flocker.app=gone",
        TEST_IMAGE,
        "sh",
        "-c",
        "sleep 600",
    ]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(exists(&foreign), "another node's container is left alone");
    docker(&["rm", "-f", &foreign]);
    assert_eq!(container_id(&name), Some(third), "keep left running");
}
