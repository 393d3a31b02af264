//! Watches volume moves of one app as they happen: a thread in the
//! clients' namespace polls `ctl status -o json` (through each node in
//! turn) and writes a `moves.jsonl` record when a move it saw in flight is
//! over — the app placed on the destination and running there alone. The
//! record says how many bytes the move reported and whether the
//! destination's log continues the source's whole log (the source's last
//! state arrived), compared on the nodes' data dirs.
//!
//! Moves that start and finish between two polls are missed; the
//! volume-integrity checker's heartbeat comparison covers them anyway.
//!
//! The same polls record every change of the volume's owner or epoch in
//! `owners.jsonl` (a handoff or a failover, on the run's clock): the
//! bounded-loss checker times the failovers the cluster's history names by
//! them. Statuses are linearizable, so an epoch lower than one already seen
//! is never shown; one through a node that is down just fails. After each
//! change the observer also reads the newest history entries and copies
//! the failovers among them to `failovers.jsonl`: the cluster keeps a
//! bounded history, which a long run outgrows before it ends.

use crate::check::bounded_loss::parse_failover;
use crate::ctl::Outcome;
use crate::history::{FailoverEntry, MoveRecord, OwnerSeen};
use crate::record::Jsonl;
use crate::views;
use crate::workload::Env;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(250);
/// How long a node whose status call failed is left out of the rotation: a
/// call through a dead or cut-off node takes ctl's whole timeout, which
/// would blind the observer to the failover that follows.
const SKIP_FAILED: Duration = Duration::from_secs(5);

pub struct Observer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A move seen in flight.
struct InFlight {
    start_ns: u64,
    from: String,
    to: String,
    bytes: Option<u64>,
}

impl Observer {
    pub fn start(env: Arc<Env>, app: &str, logs: Logs) -> Observer {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, app) = (stop.clone(), app.to_string());
        let thread = std::thread::Builder::new()
            .name("move-observer".into())
            .spawn(move || {
                if let Err(e) = crate::topology::enter_netns(&env.client_ns) {
                    eprintln!("flocker-chaos: move observer: {e:#}");
                    return;
                }
                observe(&env, &app, &logs, &s);
            })
            .ok();
        Observer { stop, thread }
    }

    /// Stops polling (after at most one ctl call) and joins the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The volume's owner and epoch as last seen, and when the read that
/// showed them began.
struct Owner {
    node: String,
    epoch: u64,
    invoke_ns: u64,
}

/// Newest history entries read after an owner change: the failover is
/// among them unless this many changes were committed since.
const HISTORY_TAIL: &str = "50";

/// Where the observer writes besides `moves.jsonl`.
pub struct Logs {
    /// `owners.jsonl`.
    pub owners: Arc<Jsonl>,
    /// `failovers.jsonl`.
    pub failovers: Arc<Jsonl>,
}

fn observe(env: &Env, app: &str, logs: &Logs, stop: &AtomicBool) {
    let mut current: Option<InFlight> = None;
    let mut copied: BTreeSet<u64> = BTreeSet::new();
    let mut owner: Option<Owner> = None;
    let mut failed_at: Vec<Option<Instant>> = vec![None; env.nodes.len()];
    let mut turn = 0usize;
    while !stop.load(Ordering::SeqCst) {
        turn = next_turn(&failed_at, turn);
        let (_, addr) = &env.nodes[turn];
        let invoke_ns = env.clock.now_ns();
        let called = env.ctl.call(addr, &["status", "-o", "json"]);
        failed_at[turn] = match called {
            Outcome::Ok(_) => None,
            _ => Some(Instant::now()),
        };
        let seen = match called {
            Outcome::Ok(out) => {
                if let Some((node, epoch)) = views::volume_owner(&out, app) {
                    if note_owner(&logs.owners, app, &mut owner, node, epoch, invoke_ns) {
                        copy_failovers(env, addr, &logs.failovers, &mut copied);
                    }
                }
                views::status_apps(&out).and_then(|apps| apps.into_iter().find(|a| a.name == app))
            }
            _ => None,
        };
        if let Some(a) = seen {
            let now = env.clock.now_ns();
            match (&mut current, &a.moving) {
                (Some(m), Some((from, to, total))) if *from == m.from && *to == m.to => {
                    m.bytes = Some(*total);
                }
                (_, Some((from, to, total))) => {
                    // A new move (a superseded one is dropped unrecorded).
                    current = Some(InFlight {
                        start_ns: now,
                        from: from.clone(),
                        to: to.clone(),
                        bytes: Some(*total),
                    });
                }
                (Some(m), None) => {
                    if a.desired_node.as_deref() == Some(m.to.as_str())
                        && a.running_on == [m.to.clone()]
                    {
                        let checksum_ok = continues(env, app, &m.from, &m.to);
                        env.moves.write_with(|end_ns| MoveRecord {
                            start_ns: m.start_ns,
                            end_ns,
                            app: app.to_string(),
                            from: m.from.clone(),
                            to: m.to.clone(),
                            bytes: m.bytes,
                            checksum_ok,
                        });
                        current = None;
                    } else if a.desired_node.as_deref() != Some(m.to.as_str()) {
                        current = None; // abandoned or redirected
                    }
                }
                (None, None) => {}
            }
        }
        std::thread::sleep(POLL);
    }
}

/// The node to ask next after `turn`: the next one in turn whose last call
/// did not fail within [`SKIP_FAILED`], else simply the next one.
fn next_turn(failed_at: &[Option<Instant>], turn: usize) -> usize {
    let n = failed_at.len();
    (1..=n)
        .map(|k| (turn + k) % n)
        .find(|&i| failed_at[i].is_none_or(|t| t.elapsed() >= SKIP_FAILED))
        .unwrap_or((turn + 1) % n)
}

/// Copies the failovers among the newest history entries (through `addr`)
/// that are not in `failovers.jsonl` yet.
fn copy_failovers(env: &Env, addr: &str, out: &Jsonl, copied: &mut BTreeSet<u64>) {
    let args = ["history", "-o", "json", "--limit", HISTORY_TAIL];
    let Outcome::Ok(text) = env.ctl.call(addr, &args) else {
        return;
    };
    let Ok(entries) = serde_json::from_str::<Vec<FailoverEntry>>(&text) else {
        return;
    };
    for e in entries {
        if parse_failover(&e.summary).is_some() && copied.insert(e.index) {
            out.write_with(|time_ns| FailoverEntry { time_ns, ..e });
        }
    }
}

/// Records an owner or epoch not seen before (true); remembers when the
/// read that showed the current one began.
fn note_owner(
    owners: &Jsonl,
    app: &str,
    last: &mut Option<Owner>,
    node: String,
    epoch: u64,
    invoke_ns: u64,
) -> bool {
    match last {
        Some(o) if o.node == node && o.epoch == epoch => {
            o.invoke_ns = invoke_ns;
            false
        }
        // Older than what was seen: cannot happen on linearizable reads.
        Some(o) if epoch < o.epoch => false,
        _ => {
            let prev_invoke_ns = last.as_ref().map(|o| o.invoke_ns);
            owners.write_with(|time_ns| OwnerSeen {
                time_ns,
                prev_invoke_ns,
                app: app.to_string(),
                owner: node.clone(),
                epoch,
            });
            *last = Some(Owner {
                node,
                epoch,
                invoke_ns,
            });
            true
        }
    }
}

/// Whether the destination's log starts with the source's whole log.
/// `None` when either file cannot be read.
fn continues(env: &Env, app: &str, from: &str, to: &str) -> Option<bool> {
    let file = |node: &str| {
        env.data_root
            .join(node)
            .join("volumes")
            .join(app)
            .join("data")
            .join(crate::app::LEDGER_FILE)
    };
    let src = std::fs::read(file(from)).ok()?;
    let dst = std::fs::read(file(to)).ok()?;
    Some(dst.starts_with(&src))
}
