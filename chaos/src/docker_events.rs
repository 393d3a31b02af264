//! Docker's own record of this cluster's containers starting and dying:
//! `docker events` filtered by the cluster label, written to
//! `docker-events.jsonl` on the run clock. Docker, not flocker, is the
//! source, so a container the cluster believes stopped but Docker ran
//! still shows.

use crate::history::ContainerEvent;
use crate::record::Jsonl;
use anyhow::{Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

pub struct DockerEvents {
    child: Child,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DockerEvents {
    pub fn start(cluster_id: &str, out: Arc<Jsonl>) -> Result<DockerEvents> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("docker")
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
        let stdout = child.stdout.take().context("docker events stdout")?;
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
            })?;
        Ok(DockerEvents {
            child,
            thread: Some(thread),
        })
    }
}

impl Drop for DockerEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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
