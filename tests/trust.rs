//! The trust model end to end, on real nodes: what a user certificate, a
//! node certificate, each role, a removed member and a revoked user can and
//! cannot do. Each refusal is checked to have changed nothing.

mod common;

use common::*;
use flocker::api::client::Client;
use flocker::api::{ClientReply, ClientRequest};
use flocker::ca::{CertsDir, Role};
use flocker::net::tls::TlsMaterial;
use flocker::state::{Capacity, Command, MoveStep};
use serde_json::Value;
use std::process::Command as Process;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// `flocker ca issue` for a user with a role, in the cluster's CA.
fn issue_user(c: &Cluster, name: &str, role: &str) {
    let out = Process::new(BIN)
        .args(["ca", "issue", "--dir"])
        .arg(c.certs())
        .args(["--user", name, "--role", role])
        .output()
        .expect("run flocker ca issue");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ctl` as user `name` (from the CA directory, which holds every user).
fn ctl_as(c: &Cluster, via: &str, name: &str, args: &[&str]) -> CtlResult {
    let mut all = vec!["--user", name];
    all.extend_from_slice(args);
    ctl_at(c.addr(via), &c.certs(), &all)
}

fn history(c: &Cluster, via: &str) -> Vec<Value> {
    let r = c.ctl(via, &["history", "-o", "json", "--limit", "1000"]);
    assert_eq!(r.code, 0, "history: {}", r.stderr);
    serde_json::from_str(&r.stdout).expect("history json")
}

/// What a refused request must leave alone: history and the node table.
fn snapshot(c: &Cluster) -> (usize, Vec<(String, String, bool, Value)>) {
    let nodes = c.nodes_json("n1").expect("nodes");
    let table = nodes
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default().to_string(),
                n["liveness"].as_str().unwrap_or_default().to_string(),
                n["drained"].as_bool().unwrap_or_default(),
                n["labels"].clone(),
            )
        })
        .collect();
    (history(c, "n1").len(), table)
}

fn written_or_refused(reply: ClientReply) -> Result<String, String> {
    match reply {
        ClientReply::Written(outcome) => outcome.result,
        ClientReply::Failed { message, .. } => Err(message),
        other => panic!("unexpected reply {other:?}"),
    }
}

async fn send(client: &Client, id: &str, command: Command) -> Result<String, String> {
    written_or_refused(
        client
            .request(ClientRequest::Write {
                request_id: id.into(),
                command,
            })
            .await,
    )
}

#[test]
fn forged_commands_roles_and_limits_are_refused_and_change_nothing() {
    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &["--engine", "sim"]);
    let leader = c.wait_for_leader(T);
    c.wait_for_registration(&["n1", "n2", "n3"], T);
    // Once every voter registered a build that reads signed commands, the
    // leader turns on apply-time authorization.
    let enforced = wait_for_history(c.addr("n1"), &c.admin_certs(), "authorization enforced", T);
    assert!(
        enforced,
        "authorization never enforced: {:?}",
        history(&c, "n1")
    );
    issue_user(&c, "vic", "viewer");
    issue_user(&c, "ops", "operator");
    let before = snapshot(&c);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // An admin's user certificate cannot propose what only nodes may.
        let admin = Client::new(&CertsDir::new(c.certs()), "admin", c.addr("n2")).unwrap();
        let internal = [
            Command::RegisterNode {
                node: "n1".into(),
                publish_ip: "10.9.9.9".into(),
                capacity: Capacity::default(),
                command_kinds: 1,
            },
            Command::Released {
                app: "web".into(),
                node: "n1".into(),
            },
            Command::Place {
                changes: vec![("web".into(), Some("n1".into()))],
            },
            Command::SetNodeDown {
                node: "n3".into(),
                down: true,
            },
            Command::MoveStep {
                app: "web".into(),
                epoch: 9,
                step: MoveStep::Freeze,
            },
            Command::EnforceAuthorization,
            Command::NodeCertificate {
                node: "n1".into(),
                fingerprint: "e".repeat(64),
                not_after: 1,
            },
        ];
        for (i, command) in internal.iter().enumerate() {
            let why = send(&admin, &format!("forge-{i}"), command.clone())
                .await
                .unwrap_err();
            assert!(why.contains("permission denied"), "{command:?}: {why}");
        }
        // A node certificate cannot act for another node, nor for the
        // leader when it is not the leader.
        let follower = ["n1", "n2", "n3"]
            .into_iter()
            .find(|n| *n != leader)
            .unwrap();
        let other = ["n1", "n2", "n3"]
            .into_iter()
            .find(|n| *n != follower)
            .unwrap();
        let tls =
            TlsMaterial::load(&CertsDir::new(c.bundle(follower)), Role::Node, follower).unwrap();
        let as_follower = Client::with_tls(&tls, c.addr(&leader)).unwrap();
        for (i, command) in [
            Command::Released {
                app: "web".into(),
                node: other.into(),
            },
            Command::RegisterNode {
                node: other.into(),
                publish_ip: "10.9.9.9".into(),
                capacity: Capacity::default(),
                command_kinds: 1,
            },
            Command::SetNodeDown {
                node: other.into(),
                down: true,
            },
        ]
        .into_iter()
        .enumerate()
        {
            let why = send(&as_follower, &format!("node-forge-{i}"), command.clone())
                .await
                .unwrap_err();
            assert!(why.contains("permission denied"), "{command:?}: {why}");
        }
        // A request id of 120 KB is refused before it is proposed.
        let long = "x".repeat(120_000);
        let why = send(
            &admin,
            &long,
            Command::SetDrained {
                node: "n2".into(),
                drained: true,
            },
        )
        .await
        .unwrap_err();
        assert!(why.contains("invalid request id"), "{why}");
    });
    assert_eq!(snapshot(&c), before, "a refused request changed something");

    // Roles: a viewer reads but cannot write; an operator labels but cannot
    // change membership; each refusal names the role needed.
    let vic = ctl_as(&c, "n2", "vic", &["label", "n1", "zone=a"]);
    assert_eq!(vic.code, 1, "{}", vic.stderr);
    assert!(
        vic.stderr.contains("role viewer") && vic.stderr.contains("operator"),
        "{}",
        vic.stderr
    );
    assert_eq!(ctl_as(&c, "n2", "vic", &["nodes"]).code, 0);
    let whoami = ctl_as(&c, "n3", "ops", &["whoami", "-o", "json"]);
    assert_eq!(whoami.code, 0, "{}", whoami.stderr);
    let me: Value = serde_json::from_str(&whoami.stdout).unwrap();
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("ops"), Some("operator"))
    );
    let remove = ctl_as(&c, "n3", "ops", &["members", "remove", "n3"]);
    assert_eq!(remove.code, 1, "{}", remove.stderr);
    assert!(
        remove.stderr.contains("needs role admin"),
        "{}",
        remove.stderr
    );
    assert_eq!(snapshot(&c), before, "a refused request changed something");

    // Oversize or malformed input is refused by ctl before anything is sent.
    let long_id = "r".repeat(200);
    let r = c.ctl("n1", &["label", "n1", "k=v", "--request-id", &long_id]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let long_value = format!("k={}", "v".repeat(300));
    assert_eq!(c.ctl("n1", &["label", "n1", &long_value]).code, 2);
    assert_eq!(snapshot(&c), before, "a refused request changed something");

    // The operator's write through a follower: history names the user and
    // the node that forwarded it.
    let follower = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    let ok = ctl_as(
        &c,
        follower,
        "ops",
        &["label", "n1", "zone=a", "--request-id", "ops-1"],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let entry = history(&c, "n1")
        .into_iter()
        .find(|e| e["request_id"] == "ops-1")
        .expect("the write is in history");
    assert_eq!(entry["author"], "ops");
    assert_eq!(entry["via"], follower);
}

#[test]
fn removed_members_stay_out_and_revoked_users_are_cut_off() {
    let mut c = Cluster::start(&["n1", "n2", "n3"], &["n4"], &["--engine", "sim"]);
    c.wait_for_leader(T);
    let join = vec![
        "--join".to_string(),
        c.addr("n1").to_string(),
        "--engine".into(),
        "sim".into(),
    ];
    c.add_node("n4", free_addr(), join);
    // n4 joins and reports its certificate.
    let reported = wait_until(T, || {
        let nodes = c.nodes_json("n1")?;
        let n4 = nodes.iter().find(|n| n["name"] == "n4")?;
        n4["certificate"]["fingerprint"]
            .as_str()
            .map(str::to_string)
    });
    assert!(
        reported.is_some(),
        "n4 never reported its certificate: {:?}",
        c.nodes_json("n1")
    );

    let removed = c.ctl("n2", &["members", "remove", "n4"]);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert!(removed.stdout.contains("revoked"), "{}", removed.stdout);
    // The members closed the connections n4 still had open.
    let closed = wait_until(T, || {
        ["n1", "n2", "n3"]
            .iter()
            .any(|n| {
                let log = c.log(n);
                log.contains("closing the connection of a revoked certificate")
                    && log.contains("node 'n4'")
            })
            .then_some(())
    });
    assert!(closed.is_some(), "no member closed n4's connections");
    // n4 is gone for good: started afresh with the same certificate, its
    // --join is refused and it exits 1 saying why.
    c.kill("n4");
    let i = c.index("n4");
    std::fs::remove_dir_all(&c.nodes[i].data_dir).unwrap();
    c.start_node(i);
    let exited = wait_until(T, || {
        let child = c.nodes[i].child.as_mut()?;
        child.try_wait().ok().flatten()
    });
    let status = exited.unwrap_or_else(|| panic!("n4 kept running: {}", c.log("n4")));
    assert_eq!(status.code(), Some(1), "{}", c.log("n4"));
    assert!(c.log("n4").contains("revoked"), "{}", c.log("n4"));
    let nodes = c.nodes_json("n1").unwrap();
    assert!(
        nodes.iter().all(|n| n["name"] != "n4"),
        "n4 is back: {nodes:?}"
    );
    // The leader logged the refusal at the handshake.
    let logs: String = ["n1", "n2", "n3"].iter().map(|n| c.log(n)).collect();
    assert!(logs.contains("is revoked"), "no node logged the refusal");

    // A revoked user is refused by every node, without restarts.
    issue_user(&c, "bob", "admin");
    assert_eq!(ctl_as(&c, "n3", "bob", &["nodes"]).code, 0);
    let bob_cert = c.certs().join("users").join("bob.crt");
    let revoke = c.ctl(
        "n1",
        &[
            "revoke",
            "--cert",
            bob_cert.to_str().unwrap(),
            "--reason",
            "left",
        ],
    );
    assert_eq!(revoke.code, 0, "{}", revoke.stderr);
    for via in ["n1", "n2", "n3"] {
        let cut = wait_until(Duration::from_secs(2), || {
            let r = ctl_as(&c, via, "bob", &["nodes"]);
            (r.code != 0).then_some(r)
        })
        .unwrap_or_else(|| panic!("{via} still serves a revoked user 2 s after the commit"));
        assert!(cut.stderr.contains("revoked"), "{via}: {}", cut.stderr);
    }
    assert_eq!(c.ctl("n3", &["nodes"]).code, 0, "the admin still works");
}
