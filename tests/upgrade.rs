//! Upgrades: this build starts on a data dir written by the first release
//! (`tests/fixtures/first-release`, made by that release's binary: one node,
//! `--engine sim`, `--snapshot-logs 10`, a deploy of a pinned `web` and an
//! `anywhere` `db` with a volume, then 15 label writes, so the data holds a
//! first-release snapshot and log entries after it) and keeps its apps,
//! volumes, history and retry window, then carries on in the new formats.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
/// The address the first release's membership records for n1.
const ADDR: &str = "127.0.0.1:7991";

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The node process, killed when the test ends, passing or not (it holds
/// a fixed port).
struct Node(std::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path) -> Node {
    let log = std::fs::File::create(dir.join("node.log")).unwrap();
    let child = Command::new(BIN)
        .args(["node", "--name", "n1", "--listen", ADDR, "--engine", "sim"])
        .args(["--routing", "off"])
        .args(["--snapshot-logs", "10", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--certs")
        .arg(dir.join("certs"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start flocker node");
    Node(child)
}

fn ctl(dir: &Path, args: &[&str]) -> CtlResult {
    ctl_at(ADDR.parse().unwrap(), &dir.join("certs"), args)
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let r = ctl(dir, args);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

#[test]
fn this_build_carries_on_from_a_first_release_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/first-release");
    copy_tree(&fixture.join("data"), &dir.join("data"));
    copy_tree(&fixture.join("certs"), &dir.join("certs"));
    // Git keeps neither empty directories nor key modes.
    std::fs::create_dir_all(dir.join("data/volumes/db/data")).unwrap();
    let node = start(dir);
    let log = || std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();

    let nodes = wait_until(T, || {
        let r = ctl(dir, &["nodes", "-o", "json"]);
        (r.code == 0).then(|| serde_json::from_str::<Vec<Value>>(&r.stdout).ok())?
    })
    .unwrap_or_else(|| panic!("the node never served: {}", log()));
    let n1 = &nodes[0];
    assert!(
        n1["snapshot_index"].as_u64().unwrap_or(0) > 0,
        "the first release's snapshot was loaded: {n1}"
    );
    assert_eq!(n1["labels"]["zone"], "first");
    assert_eq!(n1["labels"].as_object().unwrap().len(), 15);

    // The deployed configuration, placements and the volume's owner.
    let config = json(dir, &["config", "show", "-o", "json"]);
    assert_eq!(config["version"], 1);
    let status = json(dir, &["status", "-o", "json"]);
    let db = status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "db")
        .expect("db is still deployed");
    assert_eq!(db["desired_node"], "n1");
    assert_eq!(db["volume"]["owner"], "n1");
    assert_eq!(db["volume"]["epoch"], 1);

    // History from the first release, and its retry window: a retry of an
    // old request gets its first outcome, a reused id is refused.
    let history = json(dir, &["history", "-o", "json"]);
    let zone = history
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["request_id"] == "w1-zone")
        .expect("old history kept");
    assert_eq!(zone["author"], "admin");
    let retry = ctl(
        dir,
        &["label", "n1", "zone=first", "--request-id", "w1-zone"],
    );
    assert_eq!(retry.code, 0, "{}", retry.stderr);
    assert!(retry.stdout.contains("already applied"), "{}", retry.stdout);
    let reuse = ctl(
        dir,
        &["label", "n1", "zone=other", "--request-id", "w1-zone"],
    );
    assert_eq!(reuse.code, 1, "{}", reuse.stderr);

    // The new build turns on signed commands and writes on.
    let enforced = wait_for_history(
        ADDR.parse().unwrap(),
        &dir.join("certs"),
        "authorization enforced",
        T,
    );
    assert!(enforced, "authorization never enforced: {}", log());
    for i in 0..12 {
        let r = ctl(dir, &["label", "n1", &format!("new{i}=yes")]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }

    // After a restart everything is read back in the new formats (the log
    // has passed another snapshot since).
    let before = n1["snapshot_index"].as_u64().unwrap();
    drop(node);
    let _node = start(dir);
    let nodes = wait_until(T, || {
        let r = ctl(dir, &["nodes", "-o", "json"]);
        (r.code == 0).then(|| serde_json::from_str::<Vec<Value>>(&r.stdout).ok())?
    })
    .unwrap_or_else(|| panic!("the node never served again: {}", log()));
    assert!(
        nodes[0]["snapshot_index"].as_u64().unwrap() > before,
        "{}",
        nodes[0]
    );
    assert_eq!(nodes[0]["labels"].as_object().unwrap().len(), 27);
    assert_eq!(json(dir, &["config", "show", "-o", "json"])["version"], 1);
}
