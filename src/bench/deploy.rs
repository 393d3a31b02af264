//! `flocker bench deploy`: time from `ctl deploy` of N containers spread over
//! three nodes until all run, against N parallel `docker run -d` and against
//! `docker service create --replicas N` on a single-node Swarm, all on the
//! same engine with the same image in the same run.

use super::cluster::FlockerCluster;
use super::docker_cli::{docker, remove_matching};
use crate::agent::LABEL_CLUSTER;
use crate::runtime::{build_busybox_image, DockerRuntime, TEST_IMAGE};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct DeployBenchArgs {
    /// Containers to start.
    #[arg(long, default_value_t = 30)]
    pub containers: usize,
    /// Skip the Swarm anchor (it turns the engine into a swarm manager for
    /// the measurement, and leaves the swarm afterwards).
    #[arg(long)]
    pub no_swarm: bool,
}

/// How long any one measurement may take before the benchmark gives up.
const LIMIT: Duration = Duration::from_secs(300);
const LOOP: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

fn running_with(filter: &str) -> Result<usize> {
    Ok(
        docker(&["ps", "-q", "--filter", filter, "--filter", "status=running"])?
            .lines()
            .count(),
    )
}

async fn wait_running(filter: &str, n: usize, start: Instant) -> Result<Duration> {
    loop {
        if running_with(filter)? >= n {
            return Ok(start.elapsed());
        }
        if start.elapsed() > LIMIT {
            bail!("fewer than {n} containers running after {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn flocker_run(work: &Path, n: usize) -> Result<Duration> {
    let cluster = FlockerCluster::start(work, |name| {
        let i: u8 = name.trim_start_matches('n').parse().unwrap_or(0);
        vec![format!("--publish-ip=127.0.0.{}", 50 + i)]
    })?;
    let leader = cluster.leader(&[0, 1, 2], Duration::from_secs(30)).await?;
    let id = crate::node::cluster_id(&cluster.certs)?;
    let filter = format!("label={LABEL_CLUSTER}={id}");
    let mut application = String::from("version: 1\napplications:\n");
    let mut deployment = String::from("version: 1\nnodes:\n");
    let mut per_node: Vec<Vec<String>> = vec![Vec::new(); 3];
    for i in 0..n {
        application.push_str(&format!(
            "  app{i}:\n    image: {TEST_IMAGE}\n    command: [\"sh\", \"-c\", \"{LOOP}\"]\n"
        ));
        per_node[i % 3].push(format!("app{i}"));
    }
    for (k, apps) in per_node.iter().enumerate() {
        deployment.push_str(&format!("  n{}: [{}]\n", k + 1, apps.join(", ")));
    }
    // Like `ctl deploy`: the clock includes reading the files.
    let start = Instant::now();
    cluster.deploy(leader, &deployment, &application).await?;
    let took = wait_running(&filter, n, start).await;
    drop(cluster);
    remove_matching(&[&filter])?;
    took
}

async fn raw_docker_run(n: usize) -> Result<Duration> {
    let tag = format!("flocker-bench-raw={:x}", rand::random::<u32>());
    let filter = format!("label={}", tag.split('=').next().unwrap_or_default());
    let start = Instant::now();
    let runs: Vec<_> = (0..n)
        .map(|_| {
            tokio::process::Command::new("docker")
                .args(["run", "-d", "--label", &tag, TEST_IMAGE, "sh", "-c", LOOP])
                .output()
        })
        .collect();
    for out in futures::future::join_all(runs).await {
        let out = out?;
        if !out.status.success() {
            bail!(
                "docker run: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let took = wait_running(&filter, n, start).await;
    remove_matching(&[&filter])?;
    took
}

async fn swarm_service(n: usize) -> Result<Duration> {
    let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
    let joined_here = state.trim() != "active";
    if joined_here {
        docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
    }
    let name = format!("flocker-bench-{:x}", rand::random::<u32>());
    let start = Instant::now();
    let result = async {
        docker(&[
            "service",
            "create",
            "--detach",
            "--name",
            &name,
            "--replicas",
            &n.to_string(),
            TEST_IMAGE,
            "sh",
            "-c",
            LOOP,
        ])?;
        wait_running(
            &format!("label=com.docker.swarm.service.name={name}"),
            n,
            start,
        )
        .await
    }
    .await;
    let _ = docker(&["service", "rm", &name]);
    if joined_here {
        let _ = docker(&["swarm", "leave", "--force"]);
    }
    result
}

pub async fn run(args: DeployBenchArgs) -> Result<()> {
    build_busybox_image(&DockerRuntime::local(), TEST_IMAGE)
        .await
        .context("building the test image")?;
    let work =
        std::env::temp_dir().join(format!("flocker-bench-deploy-{:x}", rand::random::<u32>()));
    std::fs::create_dir_all(&work)?;
    let n = args.containers;
    println!("{n} containers, image {TEST_IMAGE}, one engine, same run");
    let ours = flocker_run(&work, n).await?;
    println!(
        "flocker deploy over 3 nodes until all run: {:>7.2} s",
        ours.as_secs_f64()
    );
    let raw = raw_docker_run(n).await?;
    println!(
        "{n} parallel docker run -d:               {:>7.2} s",
        raw.as_secs_f64()
    );
    let swarm = if args.no_swarm {
        None
    } else {
        let s = swarm_service(n).await?;
        println!(
            "swarm service create --replicas {n}:      {:>7.2} s",
            s.as_secs_f64()
        );
        Some(s)
    };
    println!(
        "flocker / raw docker: {:.2}x (goal <= 1.2)",
        ours.as_secs_f64() / raw.as_secs_f64()
    );
    if let Some(s) = swarm {
        println!(
            "flocker / swarm:      {:.2}x (goal <= 0.5)",
            ours.as_secs_f64() / s.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
