//! A three-node cluster of real processes on loopback: formation from
//! `--peers`, reads and writes through any node, request-id retries, leader
//! failover after kill -9, catch-up, and durability across a full restart.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[test]
fn three_nodes_form_one_cluster_visible_from_every_node() {
    let mut c = Cluster::start_each(&["n1", "n2", "n3"], &[], |name| {
        if name == "n1" {
            vec!["--label".into(), "disk=ssd".into()]
        } else {
            Vec::new()
        }
    });
    let leader = c.wait_for_leader(T);
    for via in ["n1", "n2", "n3"] {
        let nodes = c.nodes_json(via).expect("nodes -o json");
        assert_eq!(nodes.len(), 3, "{nodes:?}");
        let leaders: Vec<_> = nodes.iter().filter(|n| n["role"] == "leader").collect();
        assert_eq!(leaders.len(), 1, "exactly one leader: {nodes:?}");
        assert_eq!(leaders[0]["name"], leader.as_str());
        for n in &nodes {
            for key in ["name", "address", "role", "term", "leader", "applied_index"] {
                assert!(!n[key].is_null(), "{key} missing in {n}");
            }
            assert_eq!(n["leader"], leader.as_str());
            assert_eq!(
                n["address"],
                c.addr(n["name"].as_str().unwrap()).to_string()
            );
        }
        // One initial membership, however the nodes raced: one term-1 config,
        // and all members voters.
        assert!(nodes.iter().all(|n| n["membership"] == "voter"));
    }
    // A node's --label reaches the cluster state.
    let labelled = wait_until(T, || {
        let nodes = c.nodes_json("n3")?;
        (labels_of(&nodes, "n1") == json!({"disk": "ssd"})).then_some(())
    });
    assert!(
        labelled.is_some(),
        "n1's --label never arrived: {:?}",
        c.nodes_json("n3")
    );

    let table = c.ctl("n2", &["nodes"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    let header = table.stdout.lines().next().unwrap_or_default();
    for col in [
        "NAME", "ADDRESS", "ROLE", "TERM", "LEADER", "APPLIED", "STATE",
    ] {
        assert!(header.contains(col), "table header {header:?} lacks {col}");
    }
    assert_eq!(table.stdout.lines().count(), 4, "{}", table.stdout);
}

#[test]
fn writes_via_any_node_commit_once_and_survive_failover_and_full_restart() {
    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &[]);
    let leader = c.wait_for_leader(T);
    let follower = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();

    // A write sent to a follower is forwarded, committed, and visible through
    // a linearizable read on another node right after it is acknowledged.
    let w = c.ctl(follower, &["label", "n1", "zone=a", "disk=ssd"]);
    assert_eq!(w.code, 0, "label via follower: {}", w.stderr);
    assert!(
        w.stderr.contains("request id:"),
        "generated id is printed: {}",
        w.stderr
    );
    for via in ["n1", "n2", "n3"] {
        let nodes = c.nodes_json(via).expect("nodes");
        assert_eq!(
            labels_of(&nodes, "n1"),
            json!({"zone": "a", "disk": "ssd"}),
            "via {via}"
        );
    }

    // A retried request id is applied once; reusing it for something else is refused.
    let first = c.ctl(
        follower,
        &["label", "n2", "rack=1", "--request-id", "req-1"],
    );
    assert_eq!(first.code, 0, "{}", first.stderr);
    let other = c.ctl(&leader, &["label", "n2", "rack=2", "--request-id", "req-2"]);
    assert_eq!(other.code, 0, "{}", other.stderr);
    let retry = c.ctl(&leader, &["label", "n2", "rack=1", "--request-id", "req-1"]);
    assert_eq!(retry.code, 0, "{}", retry.stderr);
    assert!(retry.stdout.contains("already applied"), "{}", retry.stdout);
    let nodes = c.nodes_json("n3").unwrap();
    assert_eq!(
        labels_of(&nodes, "n2"),
        json!({"rack": "2"}),
        "the retry must not re-apply"
    );
    let reuse = c.ctl("n3", &["label", "n2", "rack=9", "--request-id", "req-1"]);
    assert_eq!(reuse.code, 1, "reused id refused: {}", reuse.stderr);
    assert!(reuse.stderr.contains("already used"), "{}", reuse.stderr);

    // Refusals exit 1 and change nothing; usage errors exit 2.
    let unknown = c.ctl("n1", &["label", "n9", "a=b"]);
    assert_eq!(unknown.code, 1, "{}", unknown.stderr);
    let usage = c.ctl("n1", &["label", "n1", "not-a-label"]);
    assert_eq!(usage.code, 2, "{}", usage.stderr);

    // kill -9 of the leader: the others elect a new one and keep serving.
    c.kill(&leader);
    let survivor = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    let new_leader = c.wait_for_leader(T);
    assert_ne!(new_leader, leader);
    let w = c.ctl(survivor, &["label", "n3", "after=failover"]);
    assert_eq!(w.code, 0, "write after failover: {}", w.stderr);

    // The killed node restarts with the same flags and catches up.
    c.restart(&leader);
    let caught_up = wait_until(T, || {
        let nodes = c.nodes_json(&leader)?;
        let applied: Vec<u64> = nodes
            .iter()
            .filter_map(|n| n["applied_index"].as_u64())
            .collect();
        (applied.len() == 3
            && applied.iter().all(|a| *a == applied[0])
            && labels_of(&nodes, "n3") == json!({"after": "failover"}))
        .then_some(())
    });
    assert!(caught_up.is_some(), "restarted {leader} did not catch up");

    // Kill all three and restart: nothing committed is lost.
    for n in ["n1", "n2", "n3"] {
        c.kill(n);
    }
    for n in ["n1", "n2", "n3"] {
        c.restart(n);
    }
    c.wait_for_leader(T);
    let nodes = c.nodes_json("n2").expect("nodes after full restart");
    assert_eq!(labels_of(&nodes, "n1"), json!({"zone": "a", "disk": "ssd"}));
    assert_eq!(labels_of(&nodes, "n2"), json!({"rack": "2"}));
    assert_eq!(labels_of(&nodes, "n3"), json!({"after": "failover"}));
}

#[test]
fn a_leader_without_quorum_answers_unknown_and_a_retry_settles_it() {
    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &[]);
    let leader = c.wait_for_leader(T);
    let others: Vec<&str> = ["n1", "n2", "n3"]
        .into_iter()
        .filter(|n| *n != leader)
        .collect();
    c.kill(others[0]);
    c.kill(others[1]);
    let r = c.ctl(&leader, &["nodes"]);
    assert_eq!(
        r.code, 3,
        "no quorum: read outcome unknown, got {}: {}",
        r.code, r.stderr
    );
    let stale = c.ctl(&leader, &["nodes", "--stale", "-o", "json"]);
    assert_eq!(
        stale.code, 0,
        "stale reads need no quorum: {}",
        stale.stderr
    );
    let w = c.ctl(&leader, &["label", "n1", "a=b", "--request-id", "lonely"]);
    assert_eq!(w.code, 3, "write without quorum is unknown: {}", w.stderr);
    assert!(
        w.stderr.contains("lonely"),
        "says which id to retry: {}",
        w.stderr
    );

    // Once a quorum is back, the retry with the same id settles it, once.
    c.restart(others[0]);
    c.wait_for_leader(T);
    let retry = c.ctl(others[0], &["label", "n1", "a=b", "--request-id", "lonely"]);
    assert_eq!(retry.code, 0, "{}", retry.stderr);
    let nodes = c.nodes_json(others[0]).unwrap();
    assert_eq!(labels_of(&nodes, "n1"), json!({"a": "b"}));
}

/// SIGTERM stops a node cleanly (exit 0, no abort from RocksDB's threads),
/// the leader as well as a follower, and the others carry on writing.
#[test]
fn sigterm_stops_leader_and_follower_with_exit_zero() {
    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &["--engine", "sim"]);
    let leader = c.wait_for_leader(T);
    let follower = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap()
        .to_string();
    for name in [follower.clone(), leader.clone()] {
        let status = c.terminate(&name, T);
        assert_eq!(status.code(), Some(0), "{name}: {}", c.log(&name));
        assert!(
            !c.log(&name).contains("terminate called"),
            "{}",
            c.log(&name)
        );
        c.restart(&name);
        c.wait_for_leader(T);
        let r = c.ctl(&name, &["label", "n1", &format!("after-{name}=yes")]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
}

/// A rolling restart (SIGTERM, start again) of every member, one at a time,
/// under a steady write load: every acknowledged write is there at the end,
/// and the longest time without a successful write is reported.
#[test]
fn a_rolling_restart_under_load_loses_no_acknowledged_write() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &["--engine", "sim"]);
    c.wait_for_leader(T);
    let addrs: Vec<_> = ["n1", "n2", "n3"].iter().map(|n| c.addr(n)).collect();
    let certs = c.admin_certs();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(usize, std::time::Instant)>>> = Arc::default();
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("roll-{i}");
                // Retried with the same id (through the next node) until it
                // is acknowledged: applied once.
                for attempt in 0..50 {
                    let addr = addrs[(i + attempt) % addrs.len()];
                    let key = format!("w{}=v", i % 50);
                    let r = ctl_at(addr, &certs, &["label", "n1", &key, "--request-id", &id]);
                    if r.code == 0 {
                        acked.lock().unwrap().push((i, std::time::Instant::now()));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                i += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    for name in ["n1", "n2", "n3"] {
        let status = c.terminate(name, T);
        assert_eq!(status.code(), Some(0), "{}", c.log(name));
        c.restart(name);
        c.wait_for_leader(T);
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 3, "only {} writes acknowledged", acked.len());
    let longest = acked
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .max()
        .unwrap_or_default();
    eprintln!(
        "rolling restart: {} writes acknowledged, longest gap between acknowledged writes {longest:?}",
        acked.len()
    );
    // Every acknowledged request is in history exactly once.
    let r = c.ctl("n2", &["history", "-o", "json", "--limit", "1000"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let history: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    for (i, _) in &acked {
        let id = format!("roll-{i}");
        let n = history
            .iter()
            .filter(|e| e["request_id"] == id.as_str())
            .count();
        // A label already set to the same value is not a change: such a
        // write is acknowledged but leaves no history entry.
        assert!(n <= 1, "{id} applied {n} times");
    }
    let labels = c.nodes_json("n3").unwrap();
    let n1 = labels.iter().find(|n| n["name"] == "n1").unwrap();
    for (i, _) in &acked {
        assert_eq!(n1["labels"][format!("w{}", i % 50)], "v", "write {i} lost");
    }
}

/// Node logs written to a file carry no colour codes, and `--log-format
/// json` writes one JSON object per line with the level and the message.
#[test]
fn logs_are_plain_text_off_a_terminal_and_json_on_request() {
    let mut c = Cluster::start_each(&["n1", "n2"], &[], |name| {
        let mut args = vec!["--engine".to_string(), "sim".to_string()];
        if name == "n1" {
            args.extend(["--log-format".to_string(), "json".to_string()]);
        }
        args
    });
    c.wait_for_leader(T);
    let r = c.ctl("n2", &["label", "n1", "logged=yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let text = c.log("n2");
    assert!(text.contains(" INFO "), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text}"
    );

    let json_log = c.log("n1");
    let lines: Vec<&str> = json_log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "n1 logged nothing");
    for line in lines {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        assert!(entry["level"].is_string(), "{line}");
        assert!(entry["fields"]["message"].is_string(), "{line}");
    }
}
