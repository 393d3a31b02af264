//! Files on disk (issue 11, item 8), with real `flocker node` processes: the
//! data directory, `raft/` and `volumes/` are private and are made private
//! again at start; a node already short of its `--reserve` says so; and a
//! move into a node whose disk would cross its reserve fails cleanly: the
//! source keeps the app and `ctl status` shows why. The move test needs
//! Docker.

mod common;

use common::*;
use flocker::runtime::TEST_IMAGE;
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn private_dirs(c: &Cluster, node: &str) -> [PathBuf; 3] {
    let data = c.nodes[c.index(node)].data_dir.clone();
    [data.clone(), data.join("raft"), data.join("volumes")]
}

#[test]
fn the_data_directory_raft_and_volumes_are_private_and_tightened_at_start() {
    let mut c = Cluster::start(&["n1"], &[], &["--engine", "sim"]);
    c.wait_for_leader(T);
    for dir in private_dirs(&c, "n1") {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    assert!(!c.log("n1").contains("tightened"), "{}", c.log("n1"));

    c.kill("n1");
    for dir in private_dirs(&c, "n1") {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Already short of its reserve (a thousand times the disk): it says so.
    c.nodes[0]
        .args
        .extend(["--reserve".to_string(), "1024T".to_string()]);
    c.restart("n1");
    c.wait_for_leader(T);
    for dir in private_dirs(&c, "n1") {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let log = c.log("n1");
    assert_eq!(log.matches("tightened").count(), 3, "{log}");
    assert!(log.contains("from mode 0755 to 0700"), "{log}");
    assert!(log.contains("free space is below the reserve"), "{log}");
}

fn app_status(c: &Cluster, via: &str, app: &str) -> Option<Value> {
    let r = c.ctl(via, &["status", "-o", "json"]);
    let s: Value = serde_json::from_str(&r.stdout).ok()?;
    s["apps"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == app)
        .cloned()
}

#[test]
fn a_move_that_would_cross_the_destinations_reserve_fails_and_the_source_keeps_the_app() {
    build_image();
    let dir = tempfile::tempdir().unwrap();
    // More than this disk will have free: n2 can receive nothing.
    let reserve = flocker::volume::available_bytes(dir.path()).unwrap() + (1 << 30);
    let c = Cluster::start_each(&["n1", "n2", "n3"], &[], move |name: &str| {
        let i: u8 = name.trim_start_matches('n').parse().unwrap();
        let mut args = vec!["--publish-ip".to_string(), format!("127.0.0.{}", 200 + i)];
        if name == "n2" {
            args.extend(["--reserve".to_string(), reserve.to_string()]);
        }
        args
    });
    c.wait_for_registration(&["n1", "n2", "n3"], T);
    assert!(
        c.log("n2").contains("free space is below the reserve"),
        "n2 warns at start"
    );

    let apps = write(
        dir.path(),
        "app.yml",
        &format!("version: 1\napplications:\n  keg:\n    image: {TEST_IMAGE}\n    command: {LOOP}\n    volume: {{mountpoint: /data}}\n"),
    );
    let dep = write(dir.path(), "d.yml", "version: 1\nnodes:\n  n1: [keg]\n");
    let r = c.ctl(
        "n1",
        &["deploy", dep.to_str().unwrap(), apps.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "deploy: {}", r.stderr);
    wait_until(T, || {
        container_running(&c.container("n1", "keg")).then_some(())
    })
    .expect("keg runs on n1");
    let data = c.nodes[c.index("n1")].data_dir.join("volumes/keg/data");
    std::fs::write(data.join("file"), vec![7u8; 1 << 20]).unwrap();

    let r = c.ctl("n3", &["move", "keg", "n2"]);
    assert_eq!(r.code, 0, "move: {}", r.stderr);
    let why = wait_until(T, || {
        let s = app_status(&c, "n3", "keg")?;
        s["move"]["last_error"].as_str().map(str::to_string)
    })
    .expect("the move reports why it fails");
    assert!(
        why.contains("receiving would leave less than the")
            && why.contains("reserve free on n2's disk"),
        "{why}"
    );
    // The move has not frozen: the source still owns the volume and runs the
    // app, the destination does not, and its copy is not complete.
    let s = app_status(&c, "n3", "keg").unwrap();
    assert!(!s["move"].is_null(), "still in flight, retrying: {s}");
    assert!(
        container_running(&c.container("n1", "keg")),
        "the source keeps the app"
    );
    assert!(!container_running(&c.container("n2", "keg")));
    let history = c.ctl("n1", &["history"]).stdout;
    assert!(!history.contains("handed off"), "{history}");
    let table = c.ctl("n1", &["status"]).stdout;
    assert!(table.contains("reserve free on n2's disk"), "{table}");
}
