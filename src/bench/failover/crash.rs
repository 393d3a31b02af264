//! Host crashes under the replicated writer: the owner's node killed with
//! -9 and, in the same instant, the writer (its container's init, killed
//! from the host), then its containers removed, as a dead host's would be
//! gone. Timed from the crash until the app runs on another node; then the
//! volume there is read for the dead writer's records: acknowledged records
//! it lacks are the loss. The crashed node comes back (its disk intact, as
//! after a power cut) before the next trial, which starts once the new
//! owner has shipped points again, at a random moment of its point interval.

use super::super::cluster::NAMES;
use super::super::docker_cli::{docker, remove_matching};
use super::super::logs::now_ms;
use super::super::stats::ms;
use super::load::REP;
use super::points;
use super::writer::{self, Loss};
use super::{running_of, wait_for, Bench, FailoverBenchArgs, LIMIT};
use crate::agent::{LABEL_CLUSTER, LABEL_NODE};
use anyhow::{bail, Context, Result};
use rand::Rng;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Trial {
    pub victim: &'static str,
    pub was_leader: bool,
    pub to: String,
    /// Crash → the app's container running on another node.
    pub took: Duration,
    pub loss: Loss,
    /// The new owner's first point: it has no previous point to update,
    /// so its capture is of the whole volume.
    pub first_point: Duration,
}

#[derive(Debug, Default)]
pub struct Crashes {
    pub trials: Vec<Trial>,
    /// What went wrong that a user would notice (two instances running, a
    /// torn log, a trial that did not finish).
    pub anomalies: Vec<String>,
}

pub async fn run(bench: &mut Bench, args: &FailoverBenchArgs) -> Crashes {
    let mut crashes = Crashes::default();
    let interval = crate::replication::point_interval(args.max_lag);
    let mut since = now_ms();
    for n in 1..=args.trials {
        match trial(bench, interval, since).await {
            Ok((trial, back_ms)) => {
                println!(
                    "  crash {n:2}: {}{} → {} running after {} ms; lost {} ms of acknowledged writes ({} records){}; the new owner's first point stalled it {} ms",
                    trial.victim,
                    if trial.was_leader { " (leader)" } else { "" },
                    trial.to,
                    ms(trial.took),
                    ms(trial.loss.lost),
                    trial.loss.records,
                    if trial.loss.none_kept { ", none of its records kept" } else { "" },
                    ms(trial.first_point),
                );
                if !trial.loss.prefix {
                    crashes.anomalies.push(format!(
                        "crash {n}: the failed-over log holds the dead writer's records with a gap"
                    ));
                }
                crashes.trials.push(trial);
                since = back_ms;
            }
            Err(e) => {
                crashes
                    .anomalies
                    .push(format!("crash {n} did not finish: {e:#}"));
                break;
            }
        }
    }
    crashes
}

/// One crash; returns it and when the crashed node was started again.
async fn trial(bench: &mut Bench, interval: Duration, since_ms: u64) -> Result<(Trial, u64)> {
    let leader = bench.cluster.leader(&[0, 1, 2], LIMIT).await?;
    let (container, owner) = wait_for(LIMIT, "one running writer", || {
        single_instance(bench)?;
        Ok(running_of(&bench.cluster_id, REP)?.into_iter().next())
    })
    .await?;
    // Replicating steadily: two points shipped since the last disturbance.
    bench.wait_shipped(&owner, REP, since_ms, 2).await?;
    single_instance(bench)?;
    let phase = rand::rng().random_range(0..interval.as_millis() as u64);
    tokio::time::sleep(Duration::from_millis(phase)).await;

    let victim = NAMES
        .iter()
        .position(|n| *n == owner)
        .context("the owner is one of the cluster's nodes")?;
    let pid: i32 = docker(&["inspect", "-f", "{{.State.Pid}}", &container])?
        .trim()
        .parse()
        .context("the writer's pid")?;
    bench.cluster.nodes[victim].kill();
    let crashed = Instant::now();
    let crashed_ms = now_ms();
    // SAFETY: kill has no memory preconditions; pid is the writer's init,
    // read just now from the engine.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for(LIMIT, "the killed writer to exit", || {
        let state = docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.Paused}}",
            &container,
        ])?;
        match state.trim() {
            "false false" => Ok(Some(())),
            // The node died inside a capture and left the writer frozen
            // (cgroup v1 freezes even SIGKILL): thawed, it dies at once,
            // before running anything more. A real crash takes the app
            // down with the host.
            "true true" => {
                let _ = docker(&["unpause", &container]);
                Ok(None)
            }
            _ => Ok(None),
        }
    })
    .await?;
    let acks = writer::acks(&container)?;
    remove_matching(&[
        &format!("label={LABEL_CLUSTER}={}", bench.cluster_id),
        &format!("label={LABEL_NODE}={owner}"),
    ])?;
    let (_, to) = wait_for(Duration::from_secs(90), "the app running elsewhere", || {
        Ok(running_of(&bench.cluster_id, REP)?
            .into_iter()
            .find(|(_, node)| *node != owner))
    })
    .await?;
    let took = crashed.elapsed();
    let log =
        std::fs::read_to_string(bench.volume_dir(&to, REP).join(writer::LOG)).unwrap_or_default();
    // The hostname is the container's short id.
    let host = container.get(..12).unwrap_or(&container);
    let Some(loss) = writer::loss(&acks, &writer::records_of(&log, host)) else {
        bail!("the writer acknowledged nothing before the crash");
    };

    bench.cluster.nodes[victim].start()?;
    let back_ms = now_ms();
    bench.cluster.leader(&[0, 1, 2], LIMIT).await?;
    let first_point = wait_for(LIMIT, "the new owner's first point", || {
        Ok(points::read(&bench.work, &to)
            .taken_since(REP, crashed_ms)
            .next()
            .map(|t| t.stall))
    })
    .await?;
    Ok((
        Trial {
            victim: NAMES[victim],
            was_leader: victim == leader,
            to,
            took,
            loss,
            first_point,
        },
        back_ms,
    ))
}

/// At most one running instance of the writer.
fn single_instance(bench: &Bench) -> Result<()> {
    let running = running_of(&bench.cluster_id, REP)?;
    if running.len() > 1 {
        let nodes: Vec<&str> = running.iter().map(|r| r.1.as_str()).collect();
        bail!("the app runs on {} nodes at once: {nodes:?}", running.len());
    }
    Ok(())
}
