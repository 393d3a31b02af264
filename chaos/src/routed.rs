//! Routed reads: one client thread in the clients' namespace that reads the
//! ledger's or the beacon's state line (`GET /state` on the app's external
//! port, see app.rs) through a random node's address, so the read goes
//! through that node's routing mesh to wherever the node thinks the app
//! runs. Each read is one record in `routed.jsonl`
//! ([`crate::history::RoutedRead`]): when, through which node, and what
//! answered or what the client saw instead (refused, timed out, an error).
//!
//! Plain sockets from a thread that entered the clients' namespace, not a
//! tool: the outcome is the socket's own (ECONNREFUSED is "refused"), and a
//! read is bounded by [`CONNECT_TIMEOUT`] and [`ANSWER_TIMEOUT`].

use crate::app::{BEACON, BEACON_PORT, LEDGER, LEDGER_PORT, STATE_PATH};
use crate::history::{RoutedAnswer, RoutedOutcome, RoutedRead};
use crate::record::Jsonl;
use crate::workload::Env;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long a connection may take: a node forwarding into a partition
/// never completes one.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long the answer may take once connected.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between reads (uniform in this range, ms).
const THINK_MS: (u64, u64) = (50, 150);
/// The longest answer read (the state line is under 100 bytes).
const MAX_ANSWER: u64 = 4096;

/// Starts the reader; it stops when the workload does (`env.stop`).
pub fn start(env: Arc<Env>, out: Arc<Jsonl>) -> Option<std::thread::JoinHandle<()>> {
    let nodes: Vec<(String, IpAddr)> = env
        .nodes
        .iter()
        .filter_map(|(name, addr)| Some((name.clone(), addr.parse::<SocketAddr>().ok()?.ip())))
        .collect();
    if nodes.is_empty() {
        eprintln!("flocker-chaos: no node address to route through: no routed reads");
        return None;
    }
    let spawned = std::thread::Builder::new()
        .name("routed-reads".into())
        .spawn(move || {
            if let Err(e) = crate::topology::enter_netns(&env.client_ns) {
                eprintln!("flocker-chaos: routed reads: {e:#}");
                return;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(env.seed ^ 0x726f_7574_6564);
            let apps = [(LEDGER, LEDGER_PORT), (BEACON, BEACON_PORT)];
            while !env.stop.load(Ordering::SeqCst) {
                let (app, port) = apps[rng.random_range(0..apps.len())];
                let (via, ip) = &nodes[rng.random_range(0..nodes.len())];
                let invoke_ns = env.clock.now_ns();
                let (outcome, answer, error) = read(SocketAddr::new(*ip, port));
                let complete_ns = env.clock.now_ns();
                out.write_with(|_| RoutedRead {
                    invoke_ns,
                    complete_ns,
                    app: app.to_string(),
                    port,
                    via: via.clone(),
                    outcome,
                    answer,
                    error,
                });
                let think = rng.random_range(THINK_MS.0..=THINK_MS.1);
                std::thread::sleep(Duration::from_millis(think));
            }
        });
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!("flocker-chaos: routed reads not started: {e}");
            None
        }
    }
}

/// One `GET /state` to `addr`.
fn read(addr: SocketAddr) -> (RoutedOutcome, Option<RoutedAnswer>, Option<String>) {
    let mut stream = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            return (
                connect_outcome(e.kind()),
                None,
                Some(format!("connect: {e}")),
            )
        }
    };
    let exchange = stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(ANSWER_TIMEOUT)))
        .and_then(|()| write!(stream, "GET {STATE_PATH} HTTP/1.0\r\nHost: chaos\r\n\r\n"))
        .and_then(|()| {
            let mut reply = Vec::new();
            (&mut stream).take(MAX_ANSWER).read_to_end(&mut reply)?;
            Ok(reply)
        });
    match exchange {
        Ok(reply) => match parse_reply(&reply) {
            Ok(answer) => (RoutedOutcome::Answered, Some(answer), None),
            Err(why) => (RoutedOutcome::Error, None, Some(why)),
        },
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => (
            RoutedOutcome::Timeout,
            None,
            Some(format!("no answer within {ANSWER_TIMEOUT:?}")),
        ),
        Err(e) => (
            RoutedOutcome::Error,
            None,
            Some(format!("after connecting: {e}")),
        ),
    }
}

fn connect_outcome(kind: ErrorKind) -> RoutedOutcome {
    match kind {
        ErrorKind::ConnectionRefused => RoutedOutcome::Refused,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => RoutedOutcome::Timeout,
        _ => RoutedOutcome::Error,
    }
}

/// An HTTP reply whose status is 200 and whose body is the state line
/// `<app> <instance> <container> <node> <seq>`.
pub fn parse_reply(reply: &[u8]) -> Result<RoutedAnswer, String> {
    let text = String::from_utf8_lossy(reply);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(format!("no HTTP reply: {:?}", clip(&text)));
    };
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("HTTP status {:?}", clip(status)));
    }
    let fields: Vec<&str> = body.split_whitespace().collect();
    match fields[..] {
        [app, instance, container, node, seq] => Ok(RoutedAnswer {
            app: app.to_string(),
            instance: instance.to_string(),
            container: container.to_string(),
            node: node.to_string(),
            seq: seq
                .parse()
                .map_err(|_| format!("not a state line: {:?}", clip(body)))?,
        }),
        _ => Err(format!("not a state line: {:?}", clip(body))),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_line_is_an_answer_and_anything_else_an_error() {
        let ok =
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nledger 0a1b 3f2e1d0c9b8a n2 41\n";
        let a = parse_reply(ok).unwrap();
        assert_eq!(
            (a.app.as_str(), a.container.as_str(), a.node.as_str(), a.seq),
            ("ledger", "3f2e1d0c9b8a", "n2", 41)
        );
        assert!(parse_reply(b"HTTP/1.0 404 Not Found\r\n\r\n").is_err());
        assert!(parse_reply(b"HTTP/1.0 200 OK\r\n\r\nhalf a line\n").is_err());
        assert!(parse_reply(b"").is_err());
    }

    #[test]
    fn refused_is_only_a_refused_connection() {
        assert_eq!(
            connect_outcome(ErrorKind::ConnectionRefused),
            RoutedOutcome::Refused
        );
        assert_eq!(connect_outcome(ErrorKind::TimedOut), RoutedOutcome::Timeout);
        assert_eq!(
            connect_outcome(ErrorKind::HostUnreachable),
            RoutedOutcome::Error
        );
    }
}
