//! Power cuts, not process kills: every node's data directory on its own
//! lazyfs (a FUSE file system that keeps what was not fsynced apart and
//! drops it on a cut, as a host losing power does). Needs root and
//! /dev/fuse.

mod common;

use common::*;
use flocker_lazyfs::Mount;
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const NODES: [&str; 3] = ["n1", "n2", "n3"];

/// Moves every node of `c` onto a fresh data directory on its own lazyfs
/// (the cluster forms anew there) and returns the mounts.
fn onto_lazyfs(c: &mut Cluster, dir: &std::path::Path) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for n in NODES {
        c.kill(n);
        let (backing, mnt) = (
            dir.join(format!("backing-{n}")),
            dir.join(format!("mnt-{n}")),
        );
        std::fs::create_dir_all(&backing).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        let mount = Mount::new(&backing, &mnt, 256)
            .unwrap_or_else(|e| panic!("lazyfs must mount (root and /dev/fuse): {e}"));
        let i = c.index(n);
        c.nodes[i].data_dir = mnt.join(n);
        mounts.push(mount);
    }
    for n in NODES {
        c.restart(n);
    }
    mounts
}

#[test]
fn acknowledged_writes_survive_the_whole_cluster_losing_power() {
    let lazy = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(&NODES, &[], &[]);
    let mounts = onto_lazyfs(&mut c, lazy.path());
    c.wait_for_leader(T);
    for (i, n) in NODES.iter().enumerate() {
        let w = c.ctl(n, &["label", n, &format!("written=w{i}")]);
        assert_eq!(w.code, 0, "label via {n}: {}", w.stderr);
    }

    // Frozen first (nothing more reaches the disk), then the cut, then the
    // host is gone; every node at once.
    for n in NODES {
        c.signal(n, "-STOP");
    }
    for m in &mounts {
        m.cut().unwrap();
    }
    for n in NODES {
        c.kill(n);
    }
    let mounts: Vec<Mount> = mounts.into_iter().map(|m| m.remount().unwrap()).collect();
    for n in NODES {
        c.restart(n);
    }
    c.wait_for_leader(T);
    let nodes = c.nodes_json("n2").expect("nodes after the power cut");
    for (i, n) in NODES.iter().enumerate() {
        assert_eq!(
            labels_of(&nodes, n),
            json!({ "written": format!("w{i}") }),
            "{n}'s acknowledged label after the power cut"
        );
    }
    // The nodes first, then their file systems.
    drop(c);
    for m in mounts {
        m.unmount().unwrap();
    }
}
