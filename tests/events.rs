//! Events (`ctl events`, `GET /v1/events`) on a real 3-node cluster with
//! the simulated engine: a deploy is one event with its author and request
//! id, containers starting are events with the node that saw them (served
//! by every node: members gather each other's observations), a
//! client resumes with `Last-Event-ID` or `--since` and gets only what
//! came after, and `ctl events -f` prints changes as they commit. (A slow
//! SSE consumer being cut off is tested at the channel, in
//! src/http/events.rs.)

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

const APPS: &str = "version: 1\napplications:\n  web:\n    image: flocker-test/busybox\n";

/// `ctl events -o json` lines.
fn ctl_events(c: &Cluster, via: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "-o", "json"];
    all.extend_from_slice(args);
    let r = c.ctl(via, &all);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// What `GET /v1/events` sends within `secs`: (event name, id, data).
fn sse(
    c: &Cluster,
    http: SocketAddr,
    headers: &[&str],
    query: &str,
) -> Vec<(String, String, String)> {
    let certs = c.admin_certs();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-N", "--max-time", "3"])
        .arg("--cacert")
        .arg(certs.join("ca.crt"))
        .arg("--cert")
        .arg(certs.join("users/admin.crt"))
        .arg("--key")
        .arg(certs.join("users/admin.key"));
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("https://{http}/v1/events{query}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut frames = Vec::new();
    for block in text.split("\n\n") {
        let field = |name: &str| {
            block
                .lines()
                .filter_map(|l| l.strip_prefix(name))
                .map(|v| v.trim_start().to_string())
                .next()
                .unwrap_or_default()
        };
        if block.lines().any(|l| l.starts_with("data:")) {
            frames.push((field("event:"), field("id:"), field("data:")));
        }
    }
    frames
}

fn key(id: &str) -> (u64, u32) {
    match id.split_once('.') {
        Some((i, n)) => (i.parse().unwrap(), n.parse().unwrap()),
        None => (id.parse().unwrap(), 0),
    }
}

#[test]
fn events_say_who_changed_what_and_resume_after_an_id() {
    let (c, http) = Cluster::start_https(&["n1", "n2", "n3"], T);
    let dir = c.dir.path().to_path_buf();
    let apps = write(&dir, "application.yml", APPS);
    let dep = write(&dir, "deployment.yml", "version: 1\nnodes:\n  n1: [web]\n");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let r = c.ctl(
        "n2",
        &["deploy", &s(&dep), &s(&apps), "--request-id", "ev-deploy"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);

    // The deploy, with who and request id, and the container n1 saw start.
    let seen = wait_until(T, || {
        let events = ctl_events(&c, "n1", &[]);
        let deploy = events
            .iter()
            .find(|e| e["request_id"] == "ev-deploy")?
            .clone();
        let started = events.iter().any(|e| {
            e["kind"] == "container"
                && e["node"] == "n1"
                && e["summary"].as_str().unwrap().contains("web")
        });
        started.then_some(deploy)
    });
    let deploy = seen.expect("the deploy and web's container as events on n1");
    assert_eq!(deploy["kind"], "change");
    assert_eq!(deploy["who"], "admin");
    let deploy_id = deploy["id"].as_str().unwrap().to_string();
    // Another node serves what n1 saw too, with n1 as the node that saw it.
    let gathered = wait_until(T, || {
        let events = ctl_events(&c, "n3", &[]);
        events
            .iter()
            .any(|e| {
                e["kind"] == "container"
                    && e["node"] == "n1"
                    && e["summary"].as_str().unwrap().contains("web")
            })
            .then_some(())
    });
    assert!(gathered.is_some(), "n3 never served n1's container event");
    let table = c.ctl("n1", &["events"]);
    assert!(
        table.stdout.contains("[by admin, request ev-deploy]"),
        "{}",
        table.stdout
    );

    // The same over SSE, from another node: committed changes are the
    // cluster's.
    let frames = sse(&c, http[2], &[], "");
    let frame = frames
        .iter()
        .find(|f| f.2.contains("ev-deploy"))
        .unwrap_or_else(|| panic!("no deploy event in {frames:?}"));
    assert_eq!(frame.0, "change");
    let data: Value = serde_json::from_str(&frame.2).unwrap();
    assert_eq!(data["who"], "admin");
    let deploy_at_n3 = frame.1.clone();
    assert_eq!(key(&deploy_at_n3).0, key(&deploy_id).0, "one index, one id");

    // Resume after the deploy: only later events.
    let r = c.ctl("n1", &["label", "n3", "zone=b", "--request-id", "ev-label"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(wait_for_history(c.addr("n3"), &c.admin_certs(), "zone", T));
    let header = format!("Last-Event-ID: {deploy_at_n3}");
    let later = sse(&c, http[2], &[&header], "");
    assert!(later.iter().any(|f| f.2.contains("ev-label")), "{later:?}");
    assert!(
        later.iter().all(|f| key(&f.1) > key(&deploy_at_n3)),
        "{later:?}"
    );
    let by_query = sse(&c, http[2], &[], &format!("?since={deploy_at_n3}"));
    assert!(
        by_query.iter().any(|f| f.2.contains("ev-label")),
        "{by_query:?}"
    );
    assert!(!by_query.iter().any(|f| f.2.contains("ev-deploy")));
    let after = ctl_events(&c, "n1", &["--since", &deploy_id]);
    assert!(
        after.iter().any(|e| e["request_id"] == "ev-label"),
        "{after:?}"
    );
    assert!(!after.iter().any(|e| e["request_id"] == "ev-deploy"));

    // An id older than the node keeps (n3 started after index 0): said so.
    let old = sse(&c, http[2], &[], "?since=0");
    assert!(old.first().is_some_and(|f| f.0 == "gap"), "{old:?}");
    let bad = c.ctl("n1", &["events", "--since", "x"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("not an event id"), "{}", bad.stderr);

    follow_prints_new_changes(&c, &deploy_id);
}

fn follow_prints_new_changes(c: &Cluster, since: &str) {
    let certs = c.admin_certs();
    let mut child = Command::new(BIN)
        .args(["ctl", "--node", &c.addr("n2").to_string(), "--certs"])
        .arg(&certs)
        .args(["events", "-f", "--since", since])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run ctl events -f");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let r = c.ctl(
        "n3",
        &["label", "n1", "rack=r7", "--request-id", "ev-follow"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let deadline = std::time::Instant::now() + T;
    let mut lines = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("request ev-follow") => break true,
            Ok(line) => lines.push(line),
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "ctl events -f never printed the change: {lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("request ev-label")),
        "{lines:?}"
    );
}
