//! `flocker bench node-loss`: a host crash (the node's process killed with -9
//! and its containers removed) until all its `anywhere` apps run elsewhere,
//! over repeated trials, with the default timing settings.

use super::cluster::{FlockerCluster, NAMES};
use super::docker_cli::{docker, remove_matching};
use super::stats::{ms, summarize};
use crate::agent::{LABEL_CLUSTER, LABEL_NODE};
use crate::runtime::{build_busybox_image, DockerRuntime, TEST_IMAGE};
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct NodeLossBenchArgs {
    /// Crash trials.
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// `anywhere` apps spread over the three nodes.
    #[arg(long, default_value_t = 6)]
    pub apps: usize,
}

const LIMIT: Duration = Duration::from_secs(60);
const LOOP: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

/// Nodes of this cluster's running containers, one entry per container.
fn running_nodes(cluster_id: &str) -> Result<Vec<String>> {
    Ok(docker(&[
        "ps",
        "--filter",
        &format!("label={LABEL_CLUSTER}={cluster_id}"),
        "--format",
        &format!("{{{{.Label \"{LABEL_NODE}\"}}}}"),
    ])?
    .lines()
    .map(str::to_string)
    .collect())
}

pub async fn run(args: NodeLossBenchArgs) -> Result<()> {
    build_busybox_image(&DockerRuntime::local(), TEST_IMAGE)
        .await
        .context("building the test image")?;
    let work = std::env::temp_dir().join(format!(
        "flocker-bench-nodeloss-{:x}",
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&work)?;
    let mut cluster = FlockerCluster::start(&work, |name| {
        let i: u8 = name.trim_start_matches('n').parse().unwrap_or(0);
        vec![format!("--publish-ip=127.0.0.{}", 90 + i)]
    })?;
    let id = crate::node::cluster_id(&cluster.certs)?;
    let result = trials(&mut cluster, &id, &args).await;
    drop(cluster);
    remove_matching(&[&format!("label={LABEL_CLUSTER}={id}")])?;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn trials(cluster: &mut FlockerCluster, id: &str, args: &NodeLossBenchArgs) -> Result<()> {
    let leader = cluster.leader(&[0, 1, 2], LIMIT).await?;
    let mut application = String::from("version: 1\napplications:\n");
    let names: Vec<String> = (0..args.apps).map(|i| format!("app{i}")).collect();
    for name in &names {
        application.push_str(&format!(
            "  {name}:\n    image: {TEST_IMAGE}\n    command: [\"sh\", \"-c\", \"{LOOP}\"]\n"
        ));
    }
    let deployment = format!("version: 1\nanywhere: [{}]\n", names.join(", "));
    cluster.deploy(leader, &deployment, &application).await?;
    wait(|| Ok(running_nodes(id)?.len() == args.apps)).await?;

    println!(
        "node loss: kill -9 a node and remove its containers → its anywhere apps running elsewhere"
    );
    let mut samples = Vec::new();
    for trial in 0..args.trials {
        let leader = cluster.leader(&[0, 1, 2], LIMIT).await?;
        // A node holding apps, other than the leader (a leader crash adds an
        // election, measured by `bench raft`).
        let running = running_nodes(id)?;
        let victim = (0..3)
            .filter(|&i| i != leader)
            .max_by_key(|&i| running.iter().filter(|n| **n == NAMES[i]).count())
            .expect("three nodes");
        let lost = running.iter().filter(|n| **n == NAMES[victim]).count();
        cluster.nodes[victim].kill();
        // The clock starts at the crash; removing the containers is part of it.
        let crashed = Instant::now();
        remove_matching(&[
            &format!("label={LABEL_CLUSTER}={id}"),
            &format!("label={LABEL_NODE}={}", NAMES[victim]),
        ])?;
        wait(|| {
            let nodes = running_nodes(id)?;
            Ok(nodes.len() == args.apps && nodes.iter().all(|n| n != NAMES[victim]))
        })
        .await?;
        let took = crashed.elapsed();
        println!(
            "  trial {:2}: {} lost {lost} apps; all running elsewhere after {} ms",
            trial + 1,
            NAMES[victim],
            ms(took)
        );
        samples.push(took);
        cluster.nodes[victim].start()?;
        // Back up and caught up before the next crash.
        cluster.leader(&[0, 1, 2], LIMIT).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let s = summarize(&mut samples);
    println!(
        "node loss over {} trials: p50 {} ms, p99 {} ms (goal p99 ≤ 5000 ms; Swarm detects in ~15 s, Nomad ≥ 20 s)",
        s.count,
        ms(s.p50),
        ms(s.p99)
    );
    Ok(())
}

async fn wait(mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    while !done()? {
        if start.elapsed() > LIMIT {
            bail!("not done within {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
