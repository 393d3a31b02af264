//! `ctl move APP NODE --wait`: follows a move through `ctl status` until the
//! app runs on NODE, drawing a progress bar (bytes, rate, ETA, phase).

use super::Exit;
use crate::api::client::Client;
use crate::api::{AppStatus, ClientReply, ClientRequest, MoveStatus};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(250);
/// Progress lines when the output is not a terminal: one per this long.
const LOG_EVERY: Duration = Duration::from_secs(2);
const BAR_WIDTH: usize = 30;

/// Waits until `app` runs on `node` with no move in flight, or `timeout`.
pub async fn wait_for_move(client: &Client, app: &str, node: &str, timeout: Duration) -> Exit {
    let deadline = Instant::now() + timeout;
    let tty = std::io::stderr().is_terminal();
    let mut last_line = Instant::now() - LOG_EVERY;
    let mut drawn = false;
    loop {
        let mut routing = Vec::new();
        let status = match client.request(ClientRequest::Status).await {
            ClientReply::Status(view) => {
                routing = view.routing;
                view.apps.into_iter().find(|a| a.name == app)
            }
            // No quorum for a moment (a failover): keep waiting.
            ClientReply::Failed { .. } => None,
            other => {
                eprintln!("error: unexpected reply from the node: {other:?}");
                return Exit::Unknown;
            }
        };
        if let Some(status) = &status {
            if status.desired_node.as_deref() != Some(node) {
                end_line(tty, drawn);
                eprintln!(
                    "error: {app} is now placed on {}, not {node}: someone moved it again",
                    status.desired_node.as_deref().unwrap_or("no node")
                );
                return Exit::Refused;
            }
            if arrived(status, node) {
                end_line(tty, drawn);
                match &status.last_move {
                    Some(r) if r.to == node => println!(
                        "{app} runs on {node}; its volume moved {} in {} rounds, {} with the app stopped",
                        human_bytes(r.bytes_sent),
                        r.rounds,
                        human_bytes(r.final_bytes)
                    ),
                    _ => println!("{app} runs on {node}"),
                }
                // Which nodes already send new connections there (the
                // routing mesh switches when the handoff commits).
                for r in routing.iter().filter(|r| r.app == app) {
                    print!("{}", super::output::routing_line(r));
                }
                return Exit::Ok;
            }
            let line = match &status.moving {
                Some(m) => progress_line(app, m),
                None => format!(
                    "{app}: {}",
                    status
                        .waiting
                        .as_deref()
                        .unwrap_or("starting on the new node")
                ),
            };
            if tty {
                eprint!("\r\x1b[2K{line}");
                let _ = std::io::stderr().flush();
                drawn = true;
            } else if last_line.elapsed() >= LOG_EVERY {
                eprintln!("{line}");
                last_line = Instant::now();
            }
        }
        if Instant::now() >= deadline {
            end_line(tty, drawn);
            eprintln!(
                "gave up waiting after {timeout:?}: the move goes on; follow it with `ctl status`"
            );
            return Exit::Unknown;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn arrived(status: &AppStatus, node: &str) -> bool {
    status.moving.is_none()
        && status
            .instances
            .iter()
            .any(|i| i.node == node && i.state == "running")
}

fn end_line(tty: bool, drawn: bool) {
    if tty && drawn {
        eprintln!();
    }
}

/// `db n1→n2 [#########.....] 412 MiB/1.0 GiB 205 MiB/s ETA 3s · pushing round 1`
pub fn progress_line(app: &str, m: &MoveStatus) -> String {
    let fraction = if m.bytes_total == 0 {
        0.0
    } else {
        (m.bytes_done as f64 / m.bytes_total as f64).min(1.0)
    };
    let bar = bar(fraction);
    let eta = if m.bytes_per_sec > 0 && m.bytes_total > m.bytes_done {
        format!(
            " ETA {}s",
            (m.bytes_total - m.bytes_done).div_ceil(m.bytes_per_sec)
        )
    } else {
        String::new()
    };
    let error = m
        .last_error
        .as_deref()
        .map(|e| format!(" (last error: {e})"))
        .unwrap_or_default();
    format!(
        "{app} {}→{} [{bar}] {}/{} {}/s{eta} · {}{error}",
        m.from,
        m.to,
        human_bytes(m.bytes_done),
        human_bytes(m.bytes_total),
        human_bytes(m.bytes_per_sec),
        m.phase
    )
}

/// `#########.....`: `fraction` (0..=1) of the bar filled.
pub fn bar(fraction: f64) -> String {
    let filled = (fraction.clamp(0.0, 1.0) * BAR_WIDTH as f64).round() as usize;
    "#".repeat(filled) + &".".repeat(BAR_WIDTH - filled)
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_shows_bytes_rate_eta_and_phase() {
        let m = MoveStatus {
            from: "n1".into(),
            to: "n2".into(),
            phase: "pushing round 1".into(),
            bytes_done: 512 << 20,
            bytes_total: 1 << 30,
            bytes_per_sec: 128 << 20,
            ..MoveStatus::default()
        };
        let line = progress_line("db", &m);
        assert!(
            line.starts_with("db n1→n2 [###############..............."),
            "{line}"
        );
        assert!(
            line.contains("512.0 MiB/1.0 GiB 128.0 MiB/s ETA 4s · pushing round 1"),
            "{line}"
        );
        assert_eq!(human_bytes(100), "100 B");
    }
}
