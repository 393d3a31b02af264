//! Disaster recovery on real nodes: a cluster that lost two of three members
//! for good is refounded on the survivor (`flocker recover
//! --force-new-cluster`), keeps its apps and volume records with fresh
//! epochs, and takes fresh members; recovery is refused while a former member
//! with a longer log is reachable; a `ctl snapshot save` file founds a new
//! first member.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

const APPS: &str = "version: 1
applications:
  web:
    image: busybox
  db:
    image: busybox
    volume:
      mountpoint: /data
";

fn recover(c: &Cluster, name: &str, extra: &[&str]) -> std::process::Output {
    let i = c.index(name);
    Command::new(BIN)
        .args(["recover", "--name", name, "--data-dir"])
        .arg(&c.nodes[i].data_dir)
        .arg("--certs")
        .arg(c.bundle(name))
        .args(extra)
        .output()
        .expect("run flocker recover")
}

fn stop(c: &mut Cluster, name: &str) {
    let status = c.terminate(name, T);
    assert_eq!(status.code(), Some(0), "{}", c.log(name));
}

fn status_of(c: &Cluster, via: &str, app: &str) -> Value {
    let r = c.ctl(via, &["status", "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    v["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == app)
        .cloned()
        .unwrap_or_else(|| panic!("{app} not deployed: {v}"))
}

#[test]
fn a_survivor_refounds_the_cluster_and_fresh_members_join() {
    let mut c = Cluster::start(&["n1", "n2", "n3"], &["n4"], &["--engine", "sim"]);
    c.wait_for_leader(T);
    c.wait_for_registration(&["n1", "n2", "n3"], T);
    let dir = c.dir.path().to_path_buf();
    let dep = write(
        &dir,
        "deployment.yml",
        "version: 1\nnodes:\n  n3: [db]\n  n1: [web]\n",
    );
    let apps = write(&dir, "application.yml", APPS);
    let r = c.ctl(
        "n1",
        &["deploy", dep.to_str().unwrap(), apps.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = wait_until(T, || {
        let db = status_of(&c, "n3", "db");
        db["volume"]["epoch"].as_u64().map(|e| (e, db))
    })
    .expect("db has a volume record");
    // A backup while the cluster is whole.
    let snap = dir.join("backup.snap");
    let saved = c.ctl("n2", &["snapshot", "save", snap.to_str().unwrap()]);
    assert_eq!(saved.code, 0, "{}", saved.stderr);

    // n1 and n2 are lost for good; n3 is stopped and refounds the cluster.
    for lost in ["n1", "n2"] {
        c.kill(lost);
        std::fs::remove_dir_all(&c.nodes[c.index(lost)].data_dir).unwrap();
    }
    stop(&mut c, "n3");
    let out = recover(&c, "n3", &["--force-new-cluster"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("asked n1") && said.contains("unreachable"),
        "{said}"
    );
    assert!(said.contains("volume of db: owner n3, epoch"), "{said}");
    c.restart("n3");
    let nodes = wait_until(T, || {
        let nodes = c.nodes_json("n3")?;
        (nodes.len() == 1 && nodes[0]["role"] == "leader").then_some(nodes)
    })
    .unwrap_or_else(|| panic!("n3 did not lead alone: {}", c.log("n3")));
    assert_eq!(nodes[0]["name"], "n3");
    let db = status_of(&c, "n3", "db");
    assert_eq!(db["desired_node"], "n3");
    assert_eq!(db["volume"]["owner"], "n3");
    assert!(
        db["volume"]["epoch"].as_u64().unwrap() > before.0,
        "the epoch was not bumped: {db}"
    );
    status_of(&c, "n3", "web");

    // Two fresh members join the recovered cluster and writes work.
    let n3 = c.addr("n3").to_string();
    for fresh in ["n1", "n2"] {
        let i = c.index(fresh);
        c.nodes[i].args = vec!["--join".into(), n3.clone(), "--engine".into(), "sim".into()];
        c.start_node(i);
    }
    let grown = wait_until(T, || {
        let nodes = c.nodes_json("n3")?;
        (nodes.len() == 3 && nodes.iter().all(|n| n["reachable"] == true)).then_some(())
    });
    assert!(
        grown.is_some(),
        "fresh members did not join: {:?}",
        c.nodes_json("n3")
    );
    let w = c.ctl("n1", &["label", "n2", "zone=b"]);
    assert_eq!(w.code, 0, "{}", w.stderr);

    // The backup founds a new first member elsewhere (n4, a new data dir).
    let addr = free_addr();
    let i4 = {
        c.add_node("n4", addr, vec!["--engine".into(), "sim".into()]);
        c.kill("n4");
        c.index("n4")
    };
    let _ = std::fs::remove_dir_all(&c.nodes[i4].data_dir);
    let out = recover(
        &c,
        "n4",
        &[
            "--from-snapshot",
            snap.to_str().unwrap(),
            "--listen",
            &addr.to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.start_node(i4);
    let alone = wait_until(T, || {
        let nodes = c.nodes_json("n4")?;
        (nodes.len() == 1 && nodes[0]["role"] == "leader").then_some(())
    });
    assert!(
        alone.is_some(),
        "n4 did not start from the snapshot: {}",
        c.log("n4")
    );
    status_of(&c, "n4", "db");
}

#[test]
fn recovery_is_refused_while_a_former_member_is_ahead() {
    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &["--engine", "sim"]);
    c.wait_for_leader(T);
    stop(&mut c, "n3");
    // n1 and n2 keep a quorum and go on without n3.
    for i in 0..5 {
        let r = c.ctl("n1", &["label", "n1", &format!("later{i}=yes")]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let out = recover(&c, "n3", &["--force-new-cluster"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused") && err.contains("ahead"), "{err}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("asked n1") && said.contains("asked n2"),
        "{said}"
    );
    // Nothing was changed: n3 rejoins its old cluster as it was.
    let data = &c.nodes[c.index("n3")].data_dir;
    assert!(data.join("raft").exists());
    assert!(std::fs::read_dir(data).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("before-recovery")));
    c.restart("n3");
    let caught_up = wait_until(T, || {
        let nodes = c.nodes_json("n3")?;
        let n1 = nodes.iter().find(|n| n["name"] == "n1")?;
        (n1["labels"]["later4"] == "yes" && nodes.len() == 3).then_some(())
    });
    assert!(caught_up.is_some(), "{}", c.log("n3"));
}
