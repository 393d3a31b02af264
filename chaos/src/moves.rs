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

use crate::ctl::Outcome;
use crate::history::MoveRecord;
use crate::views;
use crate::workload::Env;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(250);

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
    pub fn start(env: Arc<Env>, app: &str) -> Observer {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, app) = (stop.clone(), app.to_string());
        let thread = std::thread::Builder::new()
            .name("move-observer".into())
            .spawn(move || {
                if let Err(e) = crate::topology::enter_netns(&env.client_ns) {
                    eprintln!("flocker-chaos: move observer: {e:#}");
                    return;
                }
                observe(&env, &app, &s);
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

fn observe(env: &Env, app: &str, stop: &AtomicBool) {
    let mut current: Option<InFlight> = None;
    let mut turn = 0usize;
    while !stop.load(Ordering::SeqCst) {
        turn = turn.wrapping_add(1);
        let (_, addr) = &env.nodes[turn % env.nodes.len()];
        let seen = match env.ctl.call(addr, &["status", "-o", "json"]) {
            Outcome::Ok(out) => {
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
