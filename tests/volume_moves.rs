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
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

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
        &format!("version: 1\napplications:\n  {app}:\n    image: {TEST_IMAGE}\n    command: {LOOP}\n    volume: {{mountpoint: /data, maximum_size: 32M}}\n"),
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
    wait_until(T, || {
        container_running(&c.container(node, app)).then_some(())
    })
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
    assert!(container_running(&c.container("n2", "vault")));
    assert!(
        !container_running(&c.container("n1", "vault")),
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
    assert!(container_running(&c.container("n1", "vault")));
    assert!(!container_running(&c.container("n2", "vault")));
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

    // maximum_size (32M here) is reported when exceeded, not enforced.
    std::fs::write(src.join("more"), vec![1u8; 40 << 20]).unwrap();
    let warning = wait_until(Duration::from_secs(30), || {
        let s = app_status(&c, "n2", "vault")?;
        s["volume"]["warning"].as_str().map(str::to_string)
    })
    .expect("the owner reports the volume over its maximum_size");
    assert!(warning.contains("maximum_size"), "{warning}");
    let table = c.ctl("n2", &["status"]).stdout;
    assert!(table.contains("volume of vault: uses"), "{table}");
}

/// Writes `len` bytes of noise into `dir/data` (as the app would have).
fn fill(dir: &Path, len: usize) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("data"), bytes).unwrap();
}

/// Waits until the move of `app` has sent at least `bytes` in this round.
fn wait_sent(c: &Cluster, app: &str, bytes: u64) {
    wait_until(T, || {
        let s = app_status(c, "n3", app)?;
        (s["move"]["bytes_done"].as_u64()? >= bytes).then_some(())
    })
    .unwrap_or_else(|| panic!("the move of {app} never got {bytes} bytes along"));
}

/// Waits until `app` runs on `node` with no move in flight; returns its
/// last move report.
fn wait_arrived(c: &Cluster, app: &str, node: &str) -> Value {
    wait_until(T, || {
        let s = app_status(c, "n3", app)?;
        (s["move"].is_null()
            && container_running(&c.container(node, app))
            && !s["last_move"].is_null())
        .then(|| s["last_move"].clone())
    })
    .unwrap_or_else(|| panic!("{app} never arrived on {node}"))
}

/// The UDP port of `node`'s volume endpoint, from its log.
fn volume_port(c: &Cluster, node: &str) -> u16 {
    let log = c.log(node);
    let line = log
        .lines()
        .find(|l| l.contains("volume endpoint serving"))
        .expect("the node logs its volume endpoint");
    let addr = line.rsplit("volume").next().unwrap();
    let digits: String = addr
        .rsplit(':')
        .next()
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("a port")
}

/// A slow move (4 MiB/s) of a 24 MiB volume of `app` from n1 to n2, begun.
fn slow_move(c: &Cluster, app: &str) -> String {
    pinned_app(c, app, "n1");
    fill(&volume_data(c, "n1", app), 24 << 20);
    let since = unix_now().to_string();
    let r = c.ctl("n2", &["move", app, "n2"]);
    assert_eq!(r.code, 0, "move: {}", r.stderr);
    wait_sent(c, app, 4 << 20);
    since
}

const SLOW: &[&str] = &["--volume-rate", "4M"];

#[test]
fn a_source_killed_mid_transfer_resumes_and_the_app_never_starts_on_a_partial_copy() {
    let mut c = moving_cluster(140, SLOW);
    let since = slow_move(&c, "ark");
    c.kill("n1");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !container_running(&c.container("n2", "ark")),
        "the destination never starts on a partial copy"
    );
    c.restart("n1");
    let report = wait_arrived(&c, "ark", "n2");
    assert_eq!(
        tree(&volume_data(&c, "n1", "ark")),
        tree(&volume_data(&c, "n2", "ark"))
    );
    let resent = report["bytes_sent"].as_u64().unwrap();
    assert!(
        resent < 24 << 20,
        "the restarted source resumed ({resent} bytes sent), it did not start over"
    );
    let cluster = c.cluster_id().unwrap();
    died_before_started(&events(&cluster, "ark", &since), "n1", &["die"], "n2");
}

#[test]
fn a_destination_killed_mid_transfer_resumes_while_the_source_keeps_the_app() {
    let mut c = moving_cluster(150, SLOW);
    let since = slow_move(&c, "bay");
    c.kill("n2");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        container_running(&c.container("n1", "bay")),
        "the source stays authoritative and keeps the app"
    );
    c.restart("n2");
    wait_arrived(&c, "bay", "n2");
    assert_eq!(
        tree(&volume_data(&c, "n1", "bay")),
        tree(&volume_data(&c, "n2", "bay"))
    );
    let cluster = c.cluster_id().unwrap();
    died_before_started(&events(&cluster, "bay", &since), "n1", &["die"], "n2");
}

#[test]
fn a_cut_volume_link_retries_and_the_move_completes_after_it_heals() {
    let c = moving_cluster(160, SLOW);
    let port = volume_port(&c, "n2");
    let since = slow_move(&c, "cove");
    {
        let _cut = Isolation::of(port);
        // Longer than QUIC's idle timeout: the session breaks.
        std::thread::sleep(Duration::from_secs(6));
        assert!(
            container_running(&c.container("n1", "cove")),
            "the app stays on the source"
        );
        let s = app_status(&c, "n3", "cove").unwrap();
        assert!(!s["move"].is_null(), "the move is still in flight: {s}");
    }
    wait_arrived(&c, "cove", "n2");
    assert_eq!(
        tree(&volume_data(&c, "n1", "cove")),
        tree(&volume_data(&c, "n2", "cove"))
    );
    let cluster = c.cluster_id().unwrap();
    died_before_started(&events(&cluster, "cove", &since), "n1", &["die"], "n2");
}

/// Term and leader as `ctl nodes` reports them on every member.
fn terms(c: &Cluster) -> Vec<(u64, String)> {
    c.nodes_json("n3")
        .expect("ctl nodes")
        .iter()
        .map(|n| {
            (
                n["term"].as_u64().unwrap_or(0),
                n["leader"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn bulk_volume_data_does_not_disturb_raft() {
    // Invariant 7: a move at full speed (no rate limit) must not delay Raft
    // heartbeats into an election.
    let mut c = moving_cluster(170, &["--volume-rate", "0"]);
    c.wait_for_leader(T);
    pinned_app(&c, "dam", "n1");
    let data = volume_data(&c, "n1", "dam");
    for i in 0..4 {
        fill(&data, 64 << 20);
        std::fs::rename(data.join("data"), data.join(format!("part{i}"))).unwrap();
    }
    let before = terms(&c);
    let r = c.ctl("n2", &["move", "dam", "n2", "--wait", "--timeout", "120"]);
    assert_eq!(r.code, 0, "move: {}\n{}", r.stdout, r.stderr);
    let after = terms(&c);
    assert_eq!(before, after, "no election while 256 MiB moved");
    // Nothing changed after the live rounds: the final pass (app stopped)
    // re-reads nothing, however large the volume.
    let report = app_status(&c, "n1", "dam").unwrap()["last_move"].clone();
    assert_eq!(report["final_scan_bytes"], 0, "{report}");
    assert_eq!(report["final_bytes"], 0, "{report}");
}
