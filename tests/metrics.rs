//! Prometheus metrics (issue 17) of real `flocker node` processes: what
//! `--metrics-listen` serves passes `promtool check metrics`, and a real
//! Prometheus server scraping a 3-node cluster every second sees exactly one
//! leader and a deploy's effect in the counters. Needs Debian's `prometheus`
//! package (promtool and the server; .ci/packages.sh): fails loudly without.
//! The simulated engine runs the apps: this is about the numbers, not Docker.

mod common;

use common::*;
use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// A free TCP port on 127.0.0.1 (released for the node to bind).
fn free_tcp() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral TCP port");
    listener.local_addr().expect("local addr")
}

/// A 3-node cluster on the simulated engine, each node serving metrics;
/// returns it with the metrics addresses in node order.
fn cluster() -> (Cluster, Vec<SocketAddr>) {
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_tcp()).collect();
    let for_node = addrs.clone();
    let mut c = Cluster::start_each(&["n1", "n2", "n3"], &[], move |name| {
        let i: usize = name.trim_start_matches('n').parse().unwrap();
        vec![
            "--engine".into(),
            "sim".into(),
            "--metrics-listen".into(),
            for_node[i - 1].to_string(),
        ]
    });
    c.wait_for_leader(T);
    (c, addrs)
}

/// `curl` of `url`: the body, or None unless it answered 2xx.
fn curl(url: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sSf", "--max-time", "5"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl (apt-get install curl)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn scrape(addr: SocketAddr) -> String {
    curl(&format!("http://{addr}/metrics"), &[])
        .unwrap_or_else(|| panic!("no /metrics answer from {addr}"))
}

/// Deploys one `anywhere` app through node n1, so the leader places it.
fn deploy(c: &Cluster) {
    let apps =
        format!("version: 1\napplications:\n  web:\n    image: busybox\n    command: {LOOP}\n");
    deploy_files(c, "version: 1\nanywhere: [web]\n", &apps);
}

/// `ctl deploy` of these deployment and application files through n1.
fn deploy_files(c: &Cluster, dep: &str, apps: &str) {
    let dir = c.dir.path();
    let r = c.ctl(
        "n1",
        &[
            "deploy",
            write(dir, "dep.yml", dep).to_str().unwrap(),
            write(dir, "app.yml", apps).to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "deploy: {}", r.stderr);
}

#[test]
fn a_node_serves_metrics_promtool_accepts() {
    let (c, addrs) = cluster();
    deploy(&c);
    for (i, addr) in addrs.iter().enumerate() {
        let text = scrape(*addr);
        let file = write(c.dir.path(), &format!("n{}.prom", i + 1), &text);
        let out = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .expect("promtool (apt-get install prometheus)");
        assert!(
            out.status.success(),
            "promtool check metrics rejects n{}'s metrics: {}{}\n{text}",
            i + 1,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for name in [
            "flocker_raft_is_leader",
            "flocker_raft_term",
            "flocker_raft_commit_index",
            "flocker_raft_applied_index",
            "flocker_raft_commit_seconds_bucket",
            "flocker_raft_fsync_seconds_bucket",
            "flocker_raft_append_seconds_bucket",
            "flocker_agent_reconcile_passes_total",
            r#"flocker_nodes{liveness="up"} 3"#,
        ] {
            assert!(text.contains(name), "n{} lacks {name}:\n{text}", i + 1);
        }
    }
    // ctl deploy asked n1: it counted the request.
    let n1 = scrape(addrs[0]);
    assert!(
        n1.contains(r#"flocker_client_requests_total{kind="deploy",outcome="ok"} 1"#),
        "{n1}"
    );
    // Anything but /metrics is not found; the endpoint stays up.
    assert!(curl(&format!("http://{}/", addrs[0]), &[]).is_none());
    scrape(addrs[0]);
}

/// The value of `series` (name and labels as exposed) in a scrape.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_volume_move_shows_in_both_nodes_metrics() {
    let (c, addrs) = cluster();
    c.wait_for_registration(&["n1", "n2", "n3"], T);
    let apps = format!(
        "version: 1\napplications:\n  kv:\n    image: busybox\n    command: {LOOP}\n    \
         volume:\n      mountpoint: /data\n"
    );
    deploy_files(&c, "version: 1\nnodes:\n  n1: [kv]\n", &apps);
    let data = c.nodes[0].data_dir.join("volumes/kv/data");
    let made = wait_until(T, || data.is_dir().then_some(()));
    assert!(
        made.is_some(),
        "n1 made no volume for kv at {}",
        data.display()
    );
    let blob: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(data.join("blob"), &blob).unwrap();

    let r = c.ctl("n1", &["move", "kv", "n2", "--wait", "--timeout", "60"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let source = scrape(addrs[0]);
    let sent = value(&source, "flocker_volume_sent_bytes_total");
    assert!(sent.is_some_and(|b| b >= (1 << 20) as f64), "{sent:?}");
    assert_eq!(value(&source, "flocker_moves_total"), Some(1.0));
    assert_eq!(
        value(&source, "flocker_move_downtime_seconds_count"),
        Some(1.0)
    );
    let handoff = r#"flocker_move_phase_seconds_count{phase="handoff"}"#;
    assert_eq!(value(&source, handoff), Some(1.0), "{source}");
    let received = value(&scrape(addrs[1]), "flocker_volume_received_bytes_total");
    assert!(
        received.is_some_and(|b| b >= (1 << 20) as f64),
        "{received:?}"
    );
}

/// A Prometheus server on 127.0.0.1, scraping `targets` every second.
struct Prometheus {
    child: Child,
    api: SocketAddr,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[SocketAddr]) -> Prometheus {
        let list: Vec<String> = targets.iter().map(|a| format!("'{a}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: flocker\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let file = write(dir, "prometheus.yml", &config);
        let api = free_tcp();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={api}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (apt-get install prometheus)");
        Prometheus { child, api }
    }

    /// The values of an instant query, by the `instance` label.
    fn query(&self, promql: &str) -> Option<Vec<(String, f64)>> {
        let url = format!("http://{}/api/v1/query", self.api);
        let body = curl(&url, &["--data-urlencode", &format!("query={promql}")])?;
        let reply: Value = serde_json::from_str(&body).ok()?;
        let results = reply["data"]["result"].as_array()?;
        results
            .iter()
            .map(|r| {
                let instance = r["metric"]["instance"].as_str().unwrap_or("").to_string();
                let value = r["value"][1].as_str()?.parse().ok()?;
                Some((instance, value))
            })
            .collect()
    }

    /// The single value of a query that aggregates to one series.
    fn scalar(&self, promql: &str) -> Option<f64> {
        match self.query(promql)?.as_slice() {
            [(_, v)] => Some(*v),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_sees_one_leader_and_a_deploy() {
    let (c, addrs) = cluster();
    let dir = c.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let prom = Prometheus::start(&dir, &addrs);
    let up = wait_until(T, || (prom.scalar("count(up == 1)")? == 3.0).then_some(()));
    let log = || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    assert!(
        up.is_some(),
        "Prometheus never scraped all 3 nodes:\n{}",
        log()
    );

    let leaders = wait_until(T, || {
        let series = prom.query("flocker_raft_is_leader")?;
        (series.len() == 3).then_some(series)
    })
    .unwrap_or_else(|| panic!("no flocker_raft_is_leader of all 3 nodes:\n{}", log()));
    let reporting: Vec<&String> = leaders
        .iter()
        .filter(|(_, v)| *v == 1.0)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(reporting.len(), 1, "leaders: {leaders:?}");
    let terms = prom.query("flocker_raft_term").unwrap();
    assert!(terms.iter().all(|(_, t)| *t >= 1.0), "terms: {terms:?}");
    // Someone stood for election; every node has seen entries committed.
    let elections = prom.scalar("sum(flocker_raft_elections_total)");
    assert!(elections.is_some_and(|e| e >= 1.0), "{elections:?}");
    let committed = wait_until(T, || {
        (prom.scalar("min(flocker_raft_commit_index)")? >= 1.0).then_some(())
    });
    assert!(
        committed.is_some(),
        "{:?}",
        prom.query("flocker_raft_commit_index")
    );

    // Nothing placed yet; then a deploy of an `anywhere` app is counted
    // where ctl sent it and where the leader placed it.
    let placed = "sum(flocker_scheduler_placements_total)";
    assert_eq!(prom.scalar(placed), Some(0.0));
    deploy(&c);
    let deploys = r#"sum(flocker_client_requests_total{kind="deploy",outcome="ok"})"#;
    let seen = wait_until(T, || {
        let d = prom.scalar(deploys)?;
        let p = prom.scalar(placed)?;
        (d == 1.0 && p == 1.0).then_some(())
    });
    assert!(
        seen.is_some(),
        "deploy not seen: {deploys} = {:?}, {placed} = {:?}",
        prom.scalar(deploys),
        prom.scalar(placed)
    );
    let running = r#"sum(flocker_agent_containers{state="running"})"#;
    let ran = wait_until(T, || (prom.scalar(running)? == 1.0).then_some(()));
    assert!(ran.is_some(), "{running} = {:?}", prom.scalar(running));
}

#[test]
fn a_taken_metrics_address_stops_the_node_with_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let c = Cluster::start(
        &["n1"],
        &[],
        &["--engine", "sim", "--metrics-listen", &addr],
    );
    let mut node = c;
    let stopped = wait_until(T, || {
        let child = node.nodes[0].child.as_mut()?;
        child.try_wait().ok().flatten()
    });
    let status = stopped.expect("the node exits when it cannot bind --metrics-listen");
    assert!(!status.success());
    let log = node.log("n1");
    assert!(log.contains(&format!("--metrics-listen {addr}")), "{log}");
}

#[test]
fn the_sample_scrape_config_passes_promtool() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/cluster-examples/prometheus.yml"
    );
    let out = Command::new("promtool")
        .args(["check", "config", sample])
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
