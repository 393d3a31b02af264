//! `ctl volume wait APP`: follows an app's replicas through `ctl status`
//! until every copy it asks for is in sync, drawing a bar per replica that
//! is receiving a point (a new replica's seeding is its first point).

use super::moving::{bar, human_bytes};
use super::Exit;
use crate::api::client::Client;
use crate::api::{ClientReply, ClientRequest, ReplicaView, VolumeView};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(500);
/// Progress lines when the output is not a terminal: one per this long.
const LOG_EVERY: Duration = Duration::from_secs(2);

/// Waits until every replica of `app` is in sync, or `timeout`.
pub async fn wait_for_replicas(client: &Client, app: &str, timeout: Duration) -> Exit {
    let deadline = Instant::now() + timeout;
    let tty = std::io::stderr().is_terminal();
    let mut last_line = Instant::now() - LOG_EVERY;
    loop {
        let volume = match client.request(ClientRequest::Status).await {
            ClientReply::Status(view) => match view.apps.into_iter().find(|a| a.name == app) {
                Some(a) => a.volume,
                None => {
                    eprintln!("error: no application named {app} is deployed");
                    return Exit::Refused;
                }
            },
            // No quorum for a moment: keep waiting.
            ClientReply::Failed { .. } => None,
            other => {
                eprintln!("error: unexpected reply from the node: {other:?}");
                return Exit::Unknown;
            }
        };
        if let Some(volume) = &volume {
            if all_in_sync(volume) {
                if tty {
                    eprint!("\r\x1b[2K");
                }
                print!("{}", super::output::replica_lines(app, volume));
                if volume.replicas.is_empty() {
                    println!("{app} keeps no replicas");
                }
                return Exit::Ok;
            }
            let line = progress(app, volume);
            if tty {
                eprint!("\r\x1b[2K{line}");
                let _ = std::io::stderr().flush();
            } else if last_line.elapsed() >= LOG_EVERY {
                eprintln!("{line}");
                last_line = Instant::now();
            }
        }
        if Instant::now() >= deadline {
            eprintln!("\ngave up waiting after {timeout:?}: replication goes on; follow it with `ctl status`");
            return Exit::Unknown;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every replica kept is in sync and none is missing.
fn all_in_sync(volume: &VolumeView) -> bool {
    volume
        .warning
        .as_deref()
        .is_none_or(|w| !w.contains("copies"))
        && volume.replicas.iter().all(|r| r.state == "in-sync")
}

/// `kv → n2 [#####.....] 12.0 MiB/30.0 MiB · seeding; n3 in-sync`.
fn progress(app: &str, volume: &VolumeView) -> String {
    let parts: Vec<String> = volume.replicas.iter().map(replica_progress).collect();
    format!("{app} → {}", parts.join("; "))
}

fn replica_progress(r: &ReplicaView) -> String {
    match r.sending {
        Some((sent, total)) if total > 0 => format!(
            "{} [{}] {}/{} · {}",
            r.node,
            bar(sent as f64 / total as f64),
            human_bytes(sent),
            human_bytes(total),
            r.state
        ),
        _ => format!("{} {}", r.node, r.state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(node: &str, state: &str, sending: Option<(u64, u64)>) -> ReplicaView {
        ReplicaView {
            node: node.into(),
            state: state.into(),
            epoch: None,
            seq: None,
            age_ms: None,
            bytes_behind: None,
            sending,
            last_error: None,
        }
    }

    #[test]
    fn a_seeding_replica_draws_a_bar_until_every_copy_is_in_sync() {
        let mut volume = VolumeView {
            owner: "n1".into(),
            epoch: 1,
            used_bytes: None,
            maximum_size: None,
            warning: None,
            replicas: vec![
                replica("n2", "seeding", Some((3 << 20, 12 << 20))),
                replica("n3", "in-sync", None),
            ],
            diverged: Vec::new(),
        };
        assert!(!all_in_sync(&volume));
        let line = progress("kv", &volume);
        assert!(line.starts_with("kv → n2 [########......"), "{line}");
        assert!(
            line.contains("3.0 MiB/12.0 MiB · seeding; n3 in-sync"),
            "{line}"
        );
        volume.replicas[0] = replica("n2", "in-sync", None);
        assert!(all_in_sync(&volume));
        volume.warning = Some("keeps 2 of 3 copies: no other live node".into());
        assert!(!all_in_sync(&volume), "a missing replica is not in sync");
    }
}
