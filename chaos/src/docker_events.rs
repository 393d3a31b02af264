//! Docker's own record of this cluster's containers starting and dying:
//! `docker events` of every node's engine, filtered by the cluster label,
//! merged into `docker-events.jsonl` on the run clock (each line on
//! Docker's own timestamp, so the file is not in time order; the checkers
//! sort). Docker, not flocker, is the source, so a container the cluster
//! believes stopped but Docker ran still shows.

use crate::history::ContainerEvent;
use crate::record::Jsonl;
use anyhow::{Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

/// One `docker events` per engine, each with the thread that records it.
pub struct DockerEvents {
    streams: Vec<(Child, Option<std::thread::JoinHandle<()>>)>,
}

impl DockerEvents {
    /// Follows every engine of `hosts` ((node, `unix://…`) pairs).
    pub fn start(
        hosts: &[(String, String)],
        cluster_id: &str,
        out: Arc<Jsonl>,
    ) -> Result<DockerEvents> {
        let mut events = DockerEvents {
            streams: Vec::new(),
        };
        // On an error `events` drops, ending the streams already started.
        for (node, host) in hosts {
            let stream = follow(host, cluster_id, out.clone())
                .with_context(|| format!("following {node}'s engine"))?;
            events.streams.push(stream);
        }
        Ok(events)
    }
}

fn follow(
    host: &str,
    cluster_id: &str,
    out: Arc<Jsonl>,
) -> Result<(Child, Option<std::thread::JoinHandle<()>>)> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("docker")
        .args(["-H", host])
        .args([
            "events",
            "--format",
            "{{json .}}",
            "--filter",
            "type=container",
        ])
        .args(["--filter", &format!("label=flocker.cluster={cluster_id}")])
        .args(["--filter", "event=start", "--filter", "event=die"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting `docker events`")?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("docker events: no stdout");
    };
    let thread = std::thread::Builder::new()
        .name("docker-events".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((wall_ns, event)) = parse(&line) {
                    // Docker's own timestamp, not our receipt time: the
                    // stream lags, and a late "die" would look like an
                    // overlap with the next start.
                    out.write_at(|clock| ContainerEvent {
                        time_ns: match wall_ns {
                            Some(w) => clock.from_wall_ns(w),
                            None => clock.now_ns(),
                        },
                        ..event
                    });
                }
            }
        });
    match thread {
        Ok(t) => Ok((child, Some(t))),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e).context("starting the docker-events thread")
        }
    }
}

impl Drop for DockerEvents {
    fn drop(&mut self) {
        for (child, _) in &mut self.streams {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (_, thread) in &mut self.streams {
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// One `docker events` JSON line → Docker's wall-clock time (ns) and the
/// event (its run-clock time filled in by the caller).
fn parse(line: &str) -> Option<(Option<u128>, ContainerEvent)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let action = v["Action"].as_str().or(v["status"].as_str())?;
    if action != "start" && action != "die" {
        return None;
    }
    let attrs = &v["Actor"]["Attributes"];
    let wall_ns = v["timeNano"].as_u64().map(u128::from);
    Some((
        wall_ns,
        ContainerEvent {
            time_ns: 0,
            app: attrs["flocker.app"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            node: attrs["flocker.node"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            container: v["Actor"]["ID"]
                .as_str()
                .or(v["id"].as_str())
                .unwrap_or_default()
                .to_string(),
            action: action.to_string(),
            exit_code: attrs["exitCode"]
                .as_str()
                .and_then(|c| c.parse().ok())
                .filter(|_| action == "die"),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_docker_event_line() {
        let line = r#"{"status":"die","id":"abc","Type":"container","Action":"die","Actor":{"ID":"abc","Attributes":{"flocker.app":"ledger","flocker.node":"n2","exitCode":"137"}},"time":1}"#;
        let (wall, e) = parse(line).unwrap();
        assert_eq!(wall, None);
        assert_eq!(
            (e.app.as_str(), e.node.as_str(), e.action.as_str()),
            ("ledger", "n2", "die")
        );
        assert!(parse(r#"{"Action":"create","Actor":{}}"#).is_none());
    }
}
