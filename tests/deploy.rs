//! `ctl deploy` on a real cluster: one entry per deploy, idempotent redeploys,
//! dry runs that commit nothing, `--if-version`, invalid files refused before
//! anything is sent, node keys by name or address, and `status`, `history`
//! and `config show` reading it back from any node.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

const APPS: &str = r#"version: 1
applications:
  web:
    image: "flocker-test/busybox:latest"
    ports:
      - internal: 80
        external: 8080
    links:
      - local_port: 5432
        remote_port: 15432
        alias: db
  db:
    image: flocker-test/busybox
    ports:
      - internal: 5432
        external: 15432
    volume:
      mountpoint: /var/lib/db
"#;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(r: &CtlResult) -> Value {
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

#[test]
fn deploy_is_one_versioned_change_read_back_from_any_node() {
    // The simulated engine: this test is about configuration, not Docker.
    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &["--engine", "sim"]);
    c.wait_for_leader(T);
    let dir = c.dir.path().to_path_buf();
    let apps = write(&dir, "application.yml", APPS);
    // n2 by its address, as Flocker's files named nodes.
    let n2 = c.addr("n2").to_string();
    let dep = write(
        &dir,
        "deployment.yml",
        &format!("version: 1\nnodes:\n  n1: [web]\n  \"{n2}\": [db]\n"),
    );

    let r = c.ctl("n3", &["deploy", s(&dep), s(&apps), "--request-id", "d1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("configuration version 1"), "{}", r.stdout);

    let status = json(&c.ctl("n1", &["status", "-o", "json"]));
    assert_eq!(status["config_version"], 1);
    let desired: Vec<(String, String)> = status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().into(),
                a["desired_node"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        desired,
        vec![("db".into(), "n2".into()), ("web".into(), "n1".into())]
    );
    for a in status["apps"].as_array().unwrap() {
        for key in ["image", "instances", "waiting", "move"] {
            assert!(a.get(key).is_some(), "{key} missing in {a}");
        }
    }

    // The same files again change nothing.
    let again = c.ctl("n2", &["deploy", s(&dep), s(&apps)]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("unchanged at version 1"),
        "{}",
        again.stdout
    );

    // A dry run shows the plan and commits nothing.
    let apps2 = write(&dir, "application2.yml", &APPS.replace("8080", "8081"));
    let dep2 = write(
        &dir,
        "deployment2.yml",
        &format!("version: 1\nnodes:\n  n3: [web]\n  \"{n2}\": [db]\n"),
    );
    let plan = c.ctl("n1", &["deploy", s(&dep2), s(&apps2), "--dry-run"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(plan.stdout.contains("changed  web"), "{}", plan.stdout);
    assert!(plan.stdout.contains("web (n1 -> n3)"), "{}", plan.stdout);
    assert_eq!(
        json(&c.ctl("n2", &["status", "-o", "json"]))["config_version"],
        1
    );

    // --if-version guards against another operator's deploy.
    let stale = c.ctl("n1", &["deploy", s(&dep2), s(&apps2), "--if-version", "0"]);
    assert_eq!(stale.code, 1, "{}", stale.stderr);
    assert!(
        stale.stderr.contains("version 1, not 0"),
        "{}",
        stale.stderr
    );
    let ok = c.ctl("n1", &["deploy", s(&dep2), s(&apps2), "--if-version", "1"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(
        ok.stdout.contains("configuration version 2"),
        "{}",
        ok.stdout
    );

    // An invalid file is refused before anything is sent.
    let bad = write(
        &dir,
        "bad.yml",
        &APPS.replace("internal: 80\n", "internal: eighty\n"),
    );
    let r = c.ctl("n1", &["deploy", s(&dep2), s(&bad)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("applications.web.ports[0].internal"),
        "{}",
        r.stderr
    );
    // A node key matching two members (all share 127.0.0.1) is refused by the cluster.
    let ambiguous = write(
        &dir,
        "amb.yml",
        "version: 1\nnodes:\n  \"127.0.0.1\": [web, db]\n",
    );
    let r = c.ctl("n1", &["deploy", s(&ambiguous), s(&apps2)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("127.0.0.1"), "{}", r.stderr);
    assert_eq!(
        json(&c.ctl("n3", &["status", "-o", "json"]))["config_version"],
        2
    );

    // History names who made each change and its request id.
    let out = std::process::Command::new(BIN)
        .args(["ca", "issue", "--dir", s(&c.certs()), "--user", "ops"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let r = ctl_at(
        c.addr("n2"),
        &c.certs(),
        &[
            "--user",
            "ops",
            "deploy",
            s(&dep),
            s(&apps),
            "--request-id",
            "by-ops",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let history = json(&c.ctl("n3", &["history", "-o", "json"]));
    let rows: Vec<(String, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["author"].as_str().unwrap().into(),
                h["request_id"].as_str().unwrap().into(),
            )
        })
        // Nodes record their own changes too (registration, liveness).
        .filter(|(author, _): &(String, String)| !author.starts_with("node "))
        .collect();
    assert_eq!(
        rows.first(),
        Some(&("admin".to_string(), "d1".to_string())),
        "{history}"
    );
    assert_eq!(
        rows.last(),
        Some(&("ops".to_string(), "by-ops".to_string())),
        "{history}"
    );
    assert_eq!(
        rows.len(),
        3,
        "unchanged redeploys and refusals are not changes: {history}"
    );

    // The configuration reads back from any node.
    let shown = json(&c.ctl("n1", &["config", "show", "-o", "json"]));
    assert_eq!(shown["version"], 3);
    assert_eq!(
        shown["configuration"]["deployment"]["pinned"]["n1"],
        serde_json::json!(["web"])
    );

    // `config show` gives back Flocker's files, which deploy to the same thing.
    let back = dir.join("shown");
    let r = c.ctl("n2", &["config", "show", "--dir", s(&back)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let again = c.ctl(
        "n3",
        &[
            "deploy",
            s(&back.join("deployment.yml")),
            s(&back.join("application.yml")),
        ],
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("unchanged at version 3"),
        "{}",
        again.stdout
    );
    let text = c.ctl("n1", &["config", "show"]);
    assert!(
        text.stdout.contains("# deployment.yml") && text.stdout.contains("applications:"),
        "{}",
        text.stdout
    );
}

/// The last configurations are kept: shown by version, compared, and
/// rolled back to (a new version, through the same plan, in history).
#[test]
fn earlier_versions_are_shown_compared_and_rolled_back_to() {
    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &["--engine", "sim"]);
    c.wait_for_leader(T);
    c.wait_for_registration(&["n1", "n2", "n3"], T);
    // Versions are kept once every voter runs a build that keeps them.
    assert!(wait_for_history(
        c.addr("n1"),
        &c.admin_certs(),
        "authorization enforced",
        T
    ));
    let dir = c.dir.path().to_path_buf();
    let dep = write(&dir, "deployment.yml", "version: 1\nnodes:\n  n1: [web]\n");
    let v1 = write(
        &dir,
        "v1.yml",
        "version: 1\napplications:\n  web:\n    image: busybox:1\n",
    );
    let v2 = write(
        &dir,
        "v2.yml",
        "version: 1\napplications:\n  web:\n    image: busybox:2\n    environment:\n      MODE: new\n",
    );
    assert_eq!(c.ctl("n2", &["deploy", s(&dep), s(&v1)]).code, 0);
    assert_eq!(c.ctl("n2", &["deploy", s(&dep), s(&v2)]).code, 0);

    let old = json(&c.ctl("n3", &["config", "show", "--version", "1", "-o", "json"]));
    assert_eq!(old["version"], 1);
    assert_eq!(
        old["configuration"]["applications"]["web"]["image"]["tag"],
        "1"
    );
    let diff = c.ctl("n1", &["config", "diff", "1", "2"]);
    assert_eq!(diff.code, 0, "{}", diff.stderr);
    assert!(
        diff.stdout.contains("~web: environment, image"),
        "{}",
        diff.stdout
    );
    let missing = c.ctl("n1", &["config", "show", "--version", "9"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("not kept"), "{}", missing.stderr);

    // A dry run commits nothing; a stale --if-version is refused.
    let dry = c.ctl("n1", &["rollback", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains("rollback to version 1"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        json(&c.ctl("n1", &["config", "show", "-o", "json"]))["version"],
        2
    );
    let stale = c.ctl("n1", &["rollback", "--if-version", "1"]);
    assert_eq!(stale.code, 1, "{}", stale.stderr);

    let back = c.ctl(
        "n3",
        &["rollback", "--if-version", "2", "--request-id", "rb1"],
    );
    assert_eq!(back.code, 0, "{}", back.stderr);
    let now = json(&c.ctl("n2", &["config", "show", "-o", "json"]));
    assert_eq!(now["version"], 3);
    assert_eq!(now["configuration"], old["configuration"]);
    let history = json(&c.ctl("n1", &["history", "-o", "json"]));
    let entry = history
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["request_id"] == "rb1")
        .expect("the rollback is in history");
    assert!(
        entry["summary"]
            .as_str()
            .unwrap()
            .starts_with("rollback to version 1"),
        "{entry}"
    );
}

/// `flocker node --engine sim` runs any image reference (there is nothing
/// to pull from), so placement, status and moves can be shown without
/// Docker.
#[test]
fn under_engine_sim_any_image_runs_and_moves_with_its_volume() {
    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &["--engine", "sim"]);
    c.wait_for_leader(T);
    c.wait_for_registration(&["n1", "n2", "n3"], T);
    let dir = c.dir.path().to_path_buf();
    let apps = write(
        &dir,
        "application.yml",
        "version: 1\napplications:\n  kv:\n    image: example.org/never-pushed/kv:3\n    \
         ports:\n      - internal: 8080\n        external: 18090\n    \
         volume:\n      mountpoint: /data\n",
    );
    let dep = write(&dir, "deployment.yml", "version: 1\nnodes:\n  n1: [kv]\n");
    let r = c.ctl("n2", &["deploy", s(&dep), s(&apps)]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let running_on = |c: &Cluster| -> Option<String> {
        let status = json(&c.ctl("n3", &["status", "-o", "json"]));
        let kv = status["apps"]
            .as_array()?
            .iter()
            .find(|a| a["name"] == "kv")?;
        let running: Vec<&Value> = kv["instances"]
            .as_array()?
            .iter()
            .filter(|i| i["state"] == "running")
            .collect();
        match running.as_slice() {
            [one] => one["node"].as_str().map(str::to_string),
            _ => None,
        }
    };
    let on = wait_until(T, || running_on(&c)).expect("kv runs under sim");
    assert_eq!(on, "n1");

    let r = c.ctl("n1", &["move", "kv", "n3", "--wait", "--timeout", "60"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let on = wait_until(T, || running_on(&c).filter(|n| n == "n3"));
    assert_eq!(on.as_deref(), Some("n3"));
}
