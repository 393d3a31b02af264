//! Scheduling on real processes and the real Docker engine: `anywhere` apps
//! are placed by the leader, re-placed when their node is lost, never run
//! twice when a node is cut off (its lease fences them before the leader's
//! grace runs out), stay put when their volume is on the lost node, and leave
//! drained nodes. Needs Docker and iptables (root): fails loudly without.

mod common;

use common::*;
use flocker::runtime::TEST_IMAGE;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn running_nodes(cluster_id: &str, app: &str) -> Vec<String> {
    docker(&[
        "ps",
        "--filter",
        &format!("label=flocker.cluster={cluster_id}"),
        "--filter",
        &format!("label=flocker.app={app}"),
        "--format",
        "{{.Label \"flocker.node\"}}",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

fn status(c: &Cluster, via: &str) -> Option<Value> {
    let r = c.ctl(via, &["status", "-o", "json"]);
    (r.code == 0).then(|| serde_json::from_str(&r.stdout).ok())?
}

fn app_of(status: &Value, app: &str) -> Option<Value> {
    status["apps"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == app)
        .cloned()
}

fn start(base: u8) -> Cluster {
    build_image();
    let mut c = Cluster::start_each(&["n1", "n2", "n3"], &[], move |name| {
        let i: u8 = name.trim_start_matches('n').parse().unwrap();
        vec!["--publish-ip".into(), format!("127.0.0.{}", base + i)]
    });
    c.wait_for_leader(T);
    c
}

fn deploy(c: &Cluster, with_volume_app: bool) {
    let dir = c.dir.path();
    let mut apps = format!(
        "version: 1\napplications:\n  svc:\n    image: {TEST_IMAGE}\n    command: {LOOP}\n    restart_policy: {{name: always}}\n"
    );
    let mut anywhere = vec!["svc"];
    if with_volume_app {
        apps.push_str(&format!(
            "  data:\n    image: {TEST_IMAGE}\n    command: {LOOP}\n    volume: {{mountpoint: /data}}\n"
        ));
        anywhere.push("data");
    }
    let dep = format!("version: 1\nanywhere: [{}]\n", anywhere.join(", "));
    let r = c.ctl(
        "n1",
        &[
            "deploy",
            write(dir, "dep.yml", &dep).to_str().unwrap(),
            write(dir, "app.yml", &apps).to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// The one node running `svc`, once it runs.
fn node_running_svc(cluster_id: &str) -> String {
    wait_until(T, || {
        let nodes = running_nodes(cluster_id, "svc");
        (nodes.len() == 1).then(|| nodes[0].clone())
    })
    .expect("svc placed and running on one node")
}

#[test]
fn a_cut_off_node_fences_its_app_before_the_leader_places_it_elsewhere() {
    let c = start(70);
    let id = c.cluster_id().unwrap();
    deploy(&c, false);
    let first = node_running_svc(&id);
    let since = unix_now().to_string();
    let isolated = Isolation::of(c.addr(&first).port());

    let others: Vec<&str> = ["n1", "n2", "n3"]
        .into_iter()
        .filter(|n| *n != first)
        .collect();
    let second = wait_until(T, || {
        let nodes = running_nodes(&id, "svc");
        (nodes.len() == 1 && nodes[0] != first).then(|| nodes[0].clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "svc not moved off the cut-off {first}: {:?}",
            running_nodes(&id, "svc")
        )
    });
    assert!(others.contains(&second.as_str()));
    let nodes = c.nodes_json(others[0]).expect("the majority serves");
    let down = nodes.iter().find(|n| n["name"] == first.as_str()).unwrap();
    assert_eq!(down["liveness"], "down", "{down}");

    // Docker's own clock: the old instance died before the new one started.
    std::thread::sleep(Duration::from_millis(500));
    let ev = events(&id, "svc", &since);
    died_before_started(&ev, &first, &["die", "kill"], &second);

    // Healed: the returning node removes its copy and never restarts it.
    drop(isolated);
    wait_until(T, || {
        let nodes = c.nodes_json(&first)?;
        (nodes.iter().find(|n| n["name"] == first.as_str())?["liveness"] == "up").then_some(())
    })
    .expect("the node comes back up");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        running_nodes(&id, "svc"),
        vec![second.clone()],
        "exactly one instance after healing"
    );
}

#[test]
fn lost_nodes_apps_are_replaced_unless_their_volume_is_there_and_drain_moves_them() {
    let mut c = start(80);
    let id = c.cluster_id().unwrap();
    deploy(&c, true);
    let (svc_node, data_node) = wait_until(T, || {
        let svc = running_nodes(&id, "svc");
        let data = running_nodes(&id, "data");
        (svc.len() == 1 && data.len() == 1).then(|| (svc[0].clone(), data[0].clone()))
    })
    .expect("both apps placed and running");
    assert_ne!(svc_node, data_node, "spread over nodes");

    // A host crash: the process dies and its containers with it.
    c.kill(&data_node);
    let _ = Command::new("docker")
        .args(["rm", "-f", &c.container(&data_node, "data")])
        .output();
    let via = if svc_node == "n1" || data_node == "n1" {
        if svc_node == "n2" || data_node == "n2" {
            "n3"
        } else {
            "n2"
        }
    } else {
        "n1"
    };
    let waiting = wait_until(T, || {
        let s = status(&c, via)?;
        let w = app_of(&s, "data")?["waiting"].as_str()?.to_string();
        w.contains("its volume is there").then_some(w)
    })
    .expect("data says it waits for its volume's node");
    assert!(
        waiting.contains(&format!("waiting for {data_node}: its volume is there")),
        "{waiting}"
    );
    assert!(
        running_nodes(&id, "data").is_empty(),
        "data is not started elsewhere without its volume"
    );

    c.restart(&data_node);
    wait_until(T, || {
        (running_nodes(&id, "data") == vec![data_node.clone()]).then_some(())
    })
    .expect("data runs again on its own node once it returns");

    // Draining svc's node moves svc (it has no volume).
    let r = c.ctl(via, &["drain", &svc_node]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let moved = wait_until(T, || {
        let nodes = running_nodes(&id, "svc");
        (nodes.len() == 1 && nodes[0] != svc_node).then(|| nodes[0].clone())
    })
    .expect("svc leaves the drained node");
    let nodes = c.nodes_json(via).unwrap();
    assert_eq!(
        nodes
            .iter()
            .find(|n| n["name"] == svc_node.as_str())
            .unwrap()["drained"],
        true
    );
    let r = c.ctl(via, &["activate", &svc_node]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        running_nodes(&id, "svc"),
        vec![moved],
        "activation does not bounce apps back"
    );
}

#[test]
fn a_paused_flocker_process_cannot_keep_its_app_running() {
    let mut c = start(100);
    let id = c.cluster_id().unwrap();
    deploy(&c, false);
    let first = node_running_svc(&id);
    let since = unix_now().to_string();
    // The process is frozen; Docker keeps the container running. Only the
    // fence inside the container can stop it now.
    c.signal(&first, "-STOP");
    let second = wait_until(T, || {
        let nodes = running_nodes(&id, "svc");
        (nodes.len() == 1 && nodes[0] != first).then(|| nodes[0].clone())
    });
    c.signal(&first, "-CONT");
    let second = second.unwrap_or_else(|| {
        panic!(
            "svc not moved off the frozen {first}: {:?}",
            running_nodes(&id, "svc")
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    let ev = events(&id, "svc", &since);
    died_before_started(&ev, &first, &["die"], &second);
    // Thawed, the node catches up and never restarts its copy.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        running_nodes(&id, "svc"),
        vec![second],
        "exactly one instance after thawing"
    );
}
