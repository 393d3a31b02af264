//! Membership: joining with `--join` and `ctl members add`, learners promoted
//! while voters are fewer than `--max-voters`, removal, and a node far behind
//! a compacted log catching up from a snapshot sent over QUIC.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn member<'a>(nodes: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    nodes.iter().find(|n| n["name"] == name)
}

#[test]
fn join_promote_remove_and_snapshot_catch_up() {
    let limits = ["--max-voters", "4", "--snapshot-logs", "10"];
    let mut c = Cluster::start(&["n1", "n2", "n3"], &["n4", "n5"], &limits);
    c.wait_for_leader(T);

    // Enough writes that the log is compacted behind a snapshot.
    for i in 0..40 {
        let r = c.ctl("n2", &["label", "n1", &format!("k{i}=v{i}")]);
        assert_eq!(r.code, 0, "write {i}: {}", r.stderr);
    }
    let compacted = wait_until(T, || {
        let nodes = c.nodes_json("n1")?;
        nodes
            .iter()
            .all(|n| n["purged_index"].as_u64().unwrap_or(0) > 10)
            .then_some(())
    });
    assert!(
        compacted.is_some(),
        "log not compacted: {:?}",
        c.nodes_json("n1")
    );

    // n4 joins through n1 and must be sent a snapshot: the log it lacks is gone.
    let n1 = c.addr("n1").to_string();
    let mut args = vec!["--join".to_string(), n1];
    args.extend(limits.iter().map(|s| s.to_string()));
    c.add_node("n4", free_addr(), args);
    let promoted = wait_until(T, || {
        let nodes = c.nodes_json("n4")?;
        let n4 = member(&nodes, "n4")?;
        (n4["membership"] == "voter" && n4["role"] == "follower").then(|| nodes.clone())
    })
    .unwrap_or_else(|| panic!("n4 never became a voter: {:?}", c.nodes_json("n1")));
    let n4 = member(&promoted, "n4").unwrap();
    assert!(
        n4["snapshot_index"].as_u64().unwrap_or(0) > 0,
        "n4 caught up without a snapshot: {n4}"
    );
    assert!(
        c.log("n4").contains("installed snapshot"),
        "n4 got no snapshot"
    );
    assert_eq!(
        labels_of(&promoted, "n1").as_object().map(|m| m.len()),
        Some(40),
        "n4 serves the whole state"
    );

    // n5 is added by an operator and started with neither --peers nor --join:
    // it never initialises a cluster of its own. With 4 voters it stays a learner.
    let n5_addr = free_addr();
    let add = c.ctl("n3", &["members", "add", "n5", &n5_addr.to_string()]);
    assert_eq!(add.code, 0, "members add: {}", add.stderr);
    c.add_node(
        "n5",
        n5_addr,
        limits.iter().map(|s| s.to_string()).collect(),
    );
    let learner = wait_until(T, || {
        let nodes = c.nodes_json("n1")?;
        let n5 = member(&nodes, "n5")?;
        let leader_applied =
            nodes.iter().find(|n| n["role"] == "leader")?["applied_index"].as_u64()?;
        (n5["role"] == "learner" && n5["applied_index"].as_u64()? + 2 >= leader_applied)
            .then(|| nodes.clone())
    })
    .unwrap_or_else(|| panic!("n5 not a caught-up learner: {:?}", c.nodes_json("n1")));
    assert_eq!(member(&learner, "n5").unwrap()["membership"], "learner");
    let voters = learner
        .iter()
        .filter(|n| n["membership"] == "voter")
        .count();
    assert_eq!(voters, 4, "max-voters is respected: {learner:?}");
    // Adding an existing member again changes nothing.
    let again = c.ctl("n2", &["members", "add", "n5", &n5_addr.to_string()]);
    assert_eq!(again.code, 0, "{}", again.stderr);

    // Removing a voter makes room: the learner is promoted.
    let rm = c.ctl("n1", &["members", "remove", "n4"]);
    assert_eq!(rm.code, 0, "members remove: {}", rm.stderr);
    let after = wait_until(T, || {
        let nodes = c.nodes_json("n2")?;
        (member(&nodes, "n4").is_none() && member(&nodes, "n5")?["membership"] == "voter")
            .then(|| nodes.clone())
    })
    .unwrap_or_else(|| panic!("n5 not promoted after n4 left: {:?}", c.nodes_json("n2")));
    assert_eq!(after.len(), 4);

    // Writes still commit with the new membership.
    let w = c.ctl("n5", &["label", "n5", "joined=late"]);
    assert_eq!(w.code, 0, "{}", w.stderr);
}
