//! Volume replicas and automatic failover (issue 15), on the real Docker
//! engine with real QUIC streams: the owner of a replicated volume ships
//! crash-consistent points to its replica; when the owner's host dies (the
//! node killed, its containers removed, its data directory gone), the app
//! runs on the replica with the data of the last committed point; the old
//! owner, back, never mounts its copy again. Needs Docker.

mod common;

use common::*;
use flocker::runtime::TEST_IMAGE;
use std::path::PathBuf;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// The node whose container of `app` runs, if one does.
fn runs_on(c: &Cluster, app: &str) -> Option<String> {
    c.nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| container_running(&c.container(n, app)))
}

fn data_dir(c: &Cluster, node: &str) -> PathBuf {
    c.nodes[c.index(node)].data_dir.clone()
}

/// What `file` holds in the complete replica slot of `app` on `node`, if a
/// slot holds a complete point.
fn replica_file(c: &Cluster, node: &str, app: &str, file: &str) -> Option<String> {
    ["a", "b"].iter().find_map(|slot| {
        let dir = data_dir(c, node).join("replicas").join(slot).join(app);
        let point = std::fs::read_to_string(dir.join("point")).ok()?;
        let mark = flocker::volume::mark::read_mark(&dir).ok()??;
        (mark.state == flocker::volume::MarkState::Complete && !point.is_empty())
            .then(|| std::fs::read_to_string(dir.join("data").join(file)).ok())?
    })
}

/// The seq of the newest complete point a slot of `node` holds of `app`.
fn held_seq(c: &Cluster, node: &str, app: &str) -> Option<u64> {
    ["a", "b"]
        .iter()
        .filter_map(|slot| {
            let dir = data_dir(c, node).join("replicas").join(slot).join(app);
            let mark = flocker::volume::mark::read_mark(&dir).ok()??;
            (mark.state == flocker::volume::MarkState::Complete).then_some(())?;
            let point: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("point")).ok()?).ok()?;
            point["seq"].as_u64()
        })
        .max()
}

/// Removes every container of this cluster's `node`, as a dead host's
/// would be gone.
fn remove_containers_of(c: &Cluster, node: &str) {
    let id = c.cluster_id().expect("cluster id");
    let out = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=flocker.cluster={id}"),
        "--filter",
        &format!("label=flocker.node={node}"),
    ]);
    for container in out.split_whitespace() {
        docker(&["rm", "-f", container]);
    }
}

/// Three nodes (publish IPs 127.0.0.<base+i>, `extra` arguments each) and
/// `kv` deployed anywhere with two copies; returns the cluster and the
/// node kv runs on.
fn replicated_kv(base: u8, extra: &'static [&'static str]) -> (Cluster, String) {
    replicated_kv_with(base, extra, 2)
}

/// [`replicated_kv`] with `copies` copies of kv's volume.
fn replicated_kv_with(base: u8, extra: &'static [&'static str], copies: u8) -> (Cluster, String) {
    build_image();
    let c = Cluster::start_each(&["n1", "n2", "n3"], &[], move |name: &str| {
        let i: u8 = name.trim_start_matches('n').parse().unwrap();
        let mut args = vec!["--publish-ip".to_string(), format!("127.0.0.{}", base + i)];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    });
    c.wait_for_registration(&["n1", "n2", "n3"], T);
    let dir = c.dir.path().to_path_buf();
    let apps = write(
        &dir,
        "app.yml",
        &format!("version: 1\napplications:\n  kv:\n    image: {TEST_IMAGE}\n    command: {LOOP}\n    volume: {{mountpoint: /data, replicas: {copies}, max_lag: 3s}}\n"),
    );
    let dep = write(&dir, "d.yml", "version: 1\nanywhere: [kv]\n");
    let r = c.ctl(
        "n1",
        &["deploy", dep.to_str().unwrap(), apps.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "deploy: {}", r.stderr);
    let owner = wait_until(T, || runs_on(&c, "kv")).expect("kv runs somewhere");
    (c, owner)
}

/// The replica of kv that holds `file` with `content` in a complete slot.
fn replica_holding(c: &Cluster, owner: &str, file: &str, content: &str) -> String {
    wait_until(T, || {
        c.nodes
            .iter()
            .map(|n| n.name.clone())
            .filter(|n| n != owner)
            .find(|n| replica_file(c, n, "kv", file).as_deref() == Some(content))
    })
    .unwrap_or_else(|| panic!("a replica holds {file}; owner's log:\n{}", c.log(owner)))
}

/// Kills `node` as a dead host: its process, its containers, its disk
/// (renamed away; the path it went to is returned).
fn crash(c: &mut Cluster, node: &str) -> PathBuf {
    c.kill(node);
    remove_containers_of(c, node);
    let hidden = data_dir(c, node).with_extension("unreachable");
    std::fs::rename(data_dir(c, node), &hidden).unwrap();
    hidden
}

#[test]
fn a_dead_owners_app_runs_on_its_replica_with_the_last_point() {
    let (mut c, owner) = replicated_kv(170, &[]);

    // The app writes (here: the host, into its bind-mounted volume).
    let live = data_dir(&c, &owner).join("volumes/kv/data");
    std::fs::write(live.join("record"), "first\n").unwrap();
    let waited = c.ctl(&owner, &["volume", "wait", "kv", "--timeout", "60"]);
    assert_eq!(waited.code, 0, "{}{}", waited.stdout, waited.stderr);
    assert!(
        waited.stdout.contains("in-sync (point"),
        "{}",
        waited.stdout
    );
    let replica = replica_holding(&c, &owner, "record", "first\n");
    // Later points follow the volume.
    std::fs::write(live.join("record"), "second\n").unwrap();
    wait_until(T, || {
        (replica_file(&c, &replica, "kv", "record").as_deref() == Some("second\n")).then_some(())
    })
    .expect("the next point reaches the replica");
    // `ctl status` shows the replica in sync with a recent point.
    let replica_view = wait_until(T, || {
        let volume = volume_status(&c, &owner, "kv")?;
        let r = volume["replicas"].as_array()?.first()?.clone();
        (r["node"] == replica.as_str() && r["state"] == "in-sync" && r["seq"].as_u64()? >= 2)
            .then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "status shows the replica in sync: {}",
            c.ctl(&owner, &["status"]).stdout
        )
    });
    assert!(
        replica_view["age_ms"].as_u64().unwrap() < 3_000,
        "{replica_view}"
    );
    let table = c.ctl(&owner, &["status"]).stdout;
    assert!(
        table.contains(&format!("replicas: {replica} in-sync (point")),
        "{table}"
    );

    // The owner's host dies: its process, its containers, its disk.
    let hidden = crash(&mut c, &owner);
    let via = c
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| *n != owner)
        .unwrap();

    let now = wait_until(Duration::from_secs(90), || {
        runs_on(&c, "kv").filter(|n| *n != owner)
    })
    .unwrap_or_else(|| {
        panic!(
            "kv fails over; status:\n{}\nreplica's log:\n{}",
            c.ctl(&via, &["status"]).stdout,
            c.log(&replica)
        )
    });
    assert_eq!(
        now, replica,
        "the failover goes to the replica with the point"
    );
    let promoted = data_dir(&c, &replica).join("volumes/kv/data/record");
    assert_eq!(
        std::fs::read_to_string(&promoted).unwrap(),
        "second\n",
        "the app runs with the last committed point's data"
    );
    let history = c.ctl(&via, &["history"]).stdout;
    assert!(history.contains("failed over from"), "{history}");

    let volume = volume_status(&c, &via, "kv").expect("status");
    assert_eq!(volume["owner"], replica.as_str());
    assert_eq!(
        volume["diverged"][0].as_str().unwrap(),
        format!("{owner} (epoch 1)")
    );

    // The old owner returns: it never mounts its copy again, and keeps it
    // aside (it may hold writes after the promoted point).
    std::fs::rename(&hidden, data_dir(&c, &owner)).unwrap();
    c.restart(&owner);
    let kept = data_dir(&c, &owner).join("volumes/kv/diverged-1/data/record");
    wait_until(T, || kept.exists().then_some(()))
        .unwrap_or_else(|| panic!("the old copy is kept aside; log:\n{}", c.log(&owner)));
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "second\n");
    assert_eq!(runs_on(&c, "kv").as_deref(), Some(replica.as_str()));
    assert!(!container_running(&c.container(&owner, "kv")));
    let r = c.ctl(&via, &["volume", "forget-diverged", "kv"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    wait_until(T, || (!kept.exists()).then_some(())).expect("forgotten copies are removed");
}

/// `apps[].volume` of `app` in `ctl status -o json` through `via`.
fn volume_status(c: &Cluster, via: &str, app: &str) -> Option<serde_json::Value> {
    let r = c.ctl(via, &["status", "-o", "json"]);
    let s: serde_json::Value = serde_json::from_str(&r.stdout).ok()?;
    s["apps"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == app)
        .map(|a| a["volume"].clone())
}

#[test]
fn draining_the_owner_moves_the_app_to_its_replica_sending_only_the_difference() {
    let (mut c, owner) = replicated_kv(180, &[]);
    let live = data_dir(&c, &owner).join("volumes/kv/data");
    let big: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(live.join("big"), &big).unwrap();
    std::fs::write(live.join("record"), "before the drain\n").unwrap();
    let replica = replica_holding(&c, &owner, "record", "before the drain\n");
    let r = c.ctl(&owner, &["drain", &owner]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    wait_until(T, || {
        (runs_on(&c, "kv").as_deref() == Some(replica.as_str())).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "kv moves to its replica {replica}: {}",
            c.ctl(&replica, &["status"]).stdout
        )
    });
    let moved = data_dir(&c, &replica).join("volumes/kv/data");
    assert_eq!(std::fs::read(moved.join("big")).unwrap(), big);
    let report = wait_until(T, || {
        let r = c.ctl(&replica, &["status", "-o", "json"]);
        let s: serde_json::Value = serde_json::from_str(&r.stdout).ok()?;
        s["apps"]
            .as_array()?
            .iter()
            .find(|a| a["name"] == "kv")?
            .get("last_move")
            .cloned()
            .filter(|m| !m.is_null())
    })
    .expect("the move's report");
    let sent = report["bytes_sent"].as_u64().unwrap();
    assert!(
        sent < 1 << 20,
        "the replica's point seeded the copy: {sent} bytes sent, {report}"
    );

    // A lost replica is replaced: with the drained node back in service,
    // kill the new owner's replica.
    let r = c.ctl(&replica, &["activate", &owner]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let volume = volume_status(&c, &replica, "kv").unwrap();
    let old_replica = volume["replicas"][0]["node"].as_str().unwrap().to_string();
    c.kill(&old_replica);
    let view = wait_until(Duration::from_secs(60), || {
        let v = volume_status(&c, &replica, "kv")?;
        let r = v["replicas"].as_array()?.first()?.clone();
        (r["node"] != old_replica.as_str() && r["state"] == "in-sync").then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "a new replica is seeded: {}",
            c.ctl(&replica, &["status"]).stdout
        )
    });
    assert_eq!(
        view["node"],
        owner.as_str(),
        "the drained node takes no replica; the only other live one does"
    );
    let _ = &mut c;
}

#[test]
fn a_crash_in_the_middle_of_a_point_never_leaves_a_mixed_copy() {
    // 4 MiB/s: a 32 MiB point takes about 8 s on its way.
    let (mut c, owner) = replicated_kv(190, &["--volume-rate", "4M"]);
    let live = data_dir(&c, &owner).join("volumes/kv/data");
    std::fs::write(live.join("record"), "v1\n").unwrap();
    let replica = replica_holding(&c, &owner, "record", "v1\n");
    wait_until(T, || {
        let r = volume_status(&c, &owner, "kv")?["replicas"][0].clone();
        (r["state"] == "in-sync").then_some(())
    })
    .expect("point v1 committed");
    let big: Vec<u8> = (0..32u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    std::fs::write(live.join("big"), &big).unwrap();
    std::fs::write(live.join("record"), "v2\n").unwrap();
    let on_its_way = |c: &Cluster| {
        wait_until(T, || {
            let r = volume_status(c, &owner, "kv")?["replicas"][0].clone();
            let (sent, total) = (r["sending"][0].as_u64()?, r["sending"][1].as_u64()?);
            (total > 16 << 20 && sent < total / 2).then_some(())
        })
        .expect("point v2 on its way")
    };
    on_its_way(&c);
    // The replica dies mid-point and comes back: its committed point is
    // intact; the owner sends the point again.
    c.kill(&replica);
    c.restart(&replica);
    on_its_way(&c);
    // Now the owner dies mid-point.
    crash(&mut c, &owner);
    wait_until(Duration::from_secs(90), || {
        (runs_on(&c, "kv").as_deref() == Some(replica.as_str())).then_some(())
    })
    .unwrap_or_else(|| panic!("kv fails over to {replica}: {}", c.log(&replica)));
    let data = data_dir(&c, &replica).join("volumes/kv/data");
    let record = std::fs::read_to_string(data.join("record")).unwrap();
    match record.as_str() {
        "v1\n" => assert!(!data.join("big").exists(), "point v1 has no big file"),
        "v2\n" => assert_eq!(std::fs::read(data.join("big")).unwrap(), big),
        other => panic!("not a point's record: {other:?}"),
    }
}

#[test]
fn a_pinned_apps_volume_is_recovered_on_its_in_sync_replica_without_accepting_loss() {
    build_image();
    let mut c = Cluster::start_each(&["n1", "n2", "n3"], &[], |name: &str| {
        let i: u8 = name.trim_start_matches('n').parse().unwrap();
        vec!["--publish-ip".to_string(), format!("127.0.0.{}", 200 + i)]
    });
    c.wait_for_registration(&["n1", "n2", "n3"], T);
    // Pinned on a node that is not the Raft leader: a leader's crash adds
    // an election before it is declared down, which the estimate of the
    // loss counts against the point (see `replica_view`).
    let leader = wait_until(T, || {
        c.nodes_json("n2")?
            .iter()
            .find(|n| n["role"] == "leader")
            .and_then(|n| n["name"].as_str().map(str::to_string))
    })
    .expect("a leader");
    let pinned = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    let dir = c.dir.path().to_path_buf();
    let apps = write(
        &dir,
        "app.yml",
        &format!("version: 1\napplications:\n  kv:\n    image: {TEST_IMAGE}\n    command: {LOOP}\n    volume: {{mountpoint: /data, replicas: 2, max_lag: 5s}}\n"),
    );
    let dep = write(
        &dir,
        "d.yml",
        &format!("version: 1\nnodes:\n  {pinned}: [kv]\n"),
    );
    let r = c.ctl(
        "n2",
        &["deploy", dep.to_str().unwrap(), apps.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "deploy: {}", r.stderr);
    wait_until(T, || {
        container_running(&c.container(pinned, "kv")).then_some(())
    })
    .expect("kv runs on its node");
    let live = data_dir(&c, pinned).join("volumes/kv/data");
    std::fs::write(live.join("record"), "pinned\n").unwrap();
    let replica = replica_holding(&c, pinned, "record", "pinned\n");
    let other = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != replica && *n != pinned)
        .unwrap();
    // In sync when the owner is lost: that point committed, and fresh.
    let seq = held_seq(&c, &replica, "kv").expect("the replica's point");
    wait_until(T, || {
        let r = volume_status(&c, pinned, "kv")?["replicas"][0].clone();
        (r["state"] == "in-sync" && r["seq"].as_u64()? >= seq).then_some(())
    })
    .unwrap_or_else(|| panic!("point {seq} commits: {}", c.ctl(pinned, &["status"]).stdout));
    crash(&mut c, pinned);
    // Pinned: it waits, and says how to move it.
    let waiting = wait_until(T, || {
        let r = c.ctl(&replica, &["status", "-o", "json"]);
        let s: serde_json::Value = serde_json::from_str(&r.stdout).ok()?;
        let kv = s["apps"]
            .as_array()?
            .iter()
            .find(|a| a["name"] == "kv")?
            .clone();
        kv["waiting"]
            .as_str()
            .filter(|w| w.contains("pinned"))
            .map(str::to_string)
    })
    .expect("kv waits for its node");
    assert!(waiting.contains("ctl volume recover"), "{waiting}");
    // Not a replica: the loss must be accepted.
    let refused = c.ctl(&replica, &["volume", "recover", "kv", "--to", other]);
    assert_eq!(refused.code, 2, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("holds no replica of kv"),
        "{}",
        refused.stderr
    );
    // The in-sync replica: no flag needed; it names the point.
    let r = c.ctl(&replica, &["volume", "recover", "kv", "--to", &replica]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("from its replica's point"),
        "{}",
        r.stdout
    );
    wait_until(T, || {
        container_running(&c.container(&replica, "kv")).then_some(())
    })
    .unwrap_or_else(|| panic!("kv runs on {replica}: {}", c.log(&replica)));
    let record = data_dir(&c, &replica).join("volumes/kv/data/record");
    assert_eq!(std::fs::read_to_string(record).unwrap(), "pinned\n");
}

#[test]
fn on_btrfs_volumes_are_subvolumes_and_points_are_snapshots_taken_without_a_pause() {
    use flocker::volume::backend::loopfs::{LoopFs, LoopFsKind};
    use std::os::unix::fs::MetadataExt;
    build_image();
    // Declared first, dropped last: after the nodes and their containers.
    let fs = LoopFs::new(LoopFsKind::Btrfs, 2 << 30).expect("a loop-mounted btrfs (needs root)");
    let dir = tempfile::tempdir_in(fs.path()).unwrap();
    let c = Cluster::start_each_in(dir, &["n1", "n2", "n3"], &[], |name: &str| {
        let i: u8 = name.trim_start_matches('n').parse().unwrap();
        vec!["--publish-ip".to_string(), format!("127.0.0.{}", 210 + i)]
    });
    c.wait_for_registration(&["n1", "n2", "n3"], T);
    let work = c.dir.path().to_path_buf();
    let apps = write(
        &work,
        "app.yml",
        &format!("version: 1\napplications:\n  kv:\n    image: {TEST_IMAGE}\n    command: {LOOP}\n    volume: {{mountpoint: /data, replicas: 2, max_lag: 3s, maximum_size: 64M}}\n"),
    );
    let dep = write(&work, "d.yml", "version: 1\nanywhere: [kv]\n");
    let r = c.ctl(
        "n1",
        &["deploy", dep.to_str().unwrap(), apps.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "deploy: {}", r.stderr);
    let owner = wait_until(T, || runs_on(&c, "kv")).expect("kv runs somewhere");
    assert!(
        c.log(&owner).contains("volume backend: btrfs"),
        "{}",
        c.log(&owner)
    );
    let live = data_dir(&c, &owner).join("volumes/kv/data");
    // The root directory of a btrfs subvolume is inode 256.
    assert_eq!(
        std::fs::metadata(&live).unwrap().ino(),
        256,
        "the volume is a subvolume"
    );
    std::fs::write(live.join("record"), "on btrfs\n").unwrap();
    replica_holding(&c, &owner, "record", "on btrfs\n");
    let log = c.log(&owner);
    let points: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("volume point taken"))
        .collect();
    assert!(!points.is_empty(), "{log}");
    assert!(
        points.iter().all(|l| l.contains("stall_us=0")),
        "a snapshot needs no pause: {points:?}"
    );

    // maximum_size is enforced (a quota group per subvolume): a write past
    // it fails with EDQUOT, on the owner and, after a move, on the new one.
    wait_until(T, || writing_past_64m_fails(&live).then_some(()))
        .unwrap_or_else(|| panic!("writes past 64M fail; log:\n{}", c.log(&owner)));
    let dest = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != owner)
        .unwrap();
    let r = c.ctl(&owner, &["move", "kv", dest, "--wait", "--timeout", "60"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let moved = data_dir(&c, dest).join("volumes/kv/data");
    assert_eq!(
        std::fs::read_to_string(moved.join("record")).unwrap(),
        "on btrfs\n"
    );
    wait_until(T, || writing_past_64m_fails(&moved).then_some(()))
        .unwrap_or_else(|| panic!("writes past 64M fail after the move; log:\n{}", c.log(dest)));
    drop(c);
    drop(fs);
}

/// Whether writing 96 MiB into `dir` fails with EDQUOT (the file is
/// removed either way).
fn writing_past_64m_fails(dir: &std::path::Path) -> bool {
    use std::io::Write;
    let path = dir.join("fill");
    let chunk = vec![0x5au8; 1 << 20];
    let outcome = std::fs::File::create(&path).and_then(|mut f| {
        for _ in 0..96 {
            f.write_all(&chunk)?;
        }
        f.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    match outcome {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(libc::EDQUOT) => true,
        Err(e) => panic!("writing into {}: {e}", dir.display()),
    }
}

#[test]
fn a_crash_right_after_a_move_fails_over_without_losing_what_the_move_carried() {
    let (mut c, owner) = replicated_kv(220, &[]);
    let live = data_dir(&c, &owner).join("volumes/kv/data");
    std::fs::write(live.join("record"), "before the move\n").unwrap();
    let replica = replica_holding(&c, &owner, "record", "before the move\n");
    // Written after the replica's last point: only the move carries it.
    std::fs::write(live.join("record"), "carried by the move\n").unwrap();
    let dest = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != owner && *n != replica)
        .unwrap()
        .to_string();
    let r = c.ctl(&owner, &["move", "kv", &dest, "--wait", "--timeout", "60"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // The new owner dies at once, before (or just after) its first point.
    crash(&mut c, &dest);
    let now = wait_until(Duration::from_secs(90), || {
        runs_on(&c, "kv").filter(|n| *n != dest)
    })
    .unwrap_or_else(|| panic!("kv fails over: {}", c.ctl(&owner, &["status"]).stdout));
    let history = c.ctl(&now, &["history"]).stdout;
    let failover = history.lines().find(|l| l.contains("failed over from"));
    eprintln!("{failover:?}");
    let record = data_dir(&c, &now).join("volumes/kv/data/record");
    assert_eq!(
        std::fs::read_to_string(record).unwrap(),
        "carried by the move\n",
        "failed over to {now}: what the move carried is not lost"
    );
}

/// A failed-over owner that comes back becomes a replica again, and its
/// first point starts from the copy it kept aside: of an 8 MiB volume the
/// new owner sends it only what changed, never the whole volume.
#[test]
fn a_returning_owner_becomes_a_replica_and_is_sent_only_the_difference() {
    let (mut c, owner) = replicated_kv_with(230, &[], 3);
    let live = data_dir(&c, &owner).join("volumes/kv/data");
    // Points committed for each replica so far, by seq: the ones taken
    // after the write below are at least two further on.
    let committed_seqs = |c: &Cluster| -> Option<Vec<u64>> {
        let volume = volume_status(c, &owner, "kv")?;
        let replicas = volume["replicas"].as_array()?;
        (replicas.len() == 2).then_some(())?;
        replicas
            .iter()
            .map(|r| r["seq"].as_u64().or(Some(0)))
            .collect()
    };
    let before = wait_until(T, || committed_seqs(&c)).expect("two replicas listed");
    let big: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(live.join("big"), &big).unwrap();
    std::fs::write(live.join("record"), "before the crash\n").unwrap();
    let floor = before.iter().max().unwrap() + 2;
    wait_until(T, || {
        committed_seqs(&c)?
            .iter()
            .all(|seq| *seq >= floor)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "both replicas commit a point taken after the write: {}",
            c.ctl(&owner, &["status"]).stdout
        )
    });

    let hidden = crash(&mut c, &owner);
    let new_owner = wait_until(Duration::from_secs(90), || {
        runs_on(&c, "kv").filter(|n| *n != owner)
    })
    .unwrap_or_else(|| {
        let via = ["n1", "n2", "n3"]
            .into_iter()
            .find(|n| *n != owner)
            .unwrap();
        panic!("kv fails over: {}", c.ctl(via, &["status"]).stdout)
    });
    std::fs::rename(&hidden, data_dir(&c, &owner)).unwrap();
    c.restart(&owner);

    wait_until(Duration::from_secs(90), || {
        let volume = volume_status(&c, &new_owner, "kv")?;
        volume["replicas"]
            .as_array()?
            .iter()
            .any(|r| r["node"] == owner.as_str() && r["state"] == "in-sync")
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the returning owner {owner} is an in-sync replica again: {}\n{}",
            c.ctl(&new_owner, &["status"]).stdout,
            c.log(&owner)
        )
    });
    assert_eq!(
        replica_file(&c, &owner, "kv", "record").as_deref(),
        Some("before the crash\n")
    );
    let log = c.log(&new_owner);
    let sent: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("volume point shipped") && l.contains(&format!("replica={owner}")))
        .filter_map(|l| {
            l.split("sent_bytes=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(!sent.is_empty(), "points shipped to {owner}:\n{log}");
    assert!(
        sent.iter().all(|b| *b < 1 << 20),
        "{owner} started from its own copy: bytes sent per point {sent:?}"
    );
}
