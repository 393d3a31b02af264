//! The witness: a TCP listener the harness runs and the cluster does not
//! control. The stateful apps connect after each fsync and send one JSON
//! line (app, node, instance, seq, head); the witness stamps it with the run
//! clock and appends it to `witness.jsonl`. It listens on the chaos bridge's
//! own address, which Docker's containers reach through the root namespace.

use crate::history::Heartbeat;
use crate::record::Jsonl;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A heartbeat is one short line; anything longer is not one.
const MAX_LINE: u64 = 1024;
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;

#[derive(Deserialize)]
struct Wire {
    app: String,
    node: String,
    instance: String,
    seq: u64,
    head: String,
}

pub struct Witness {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub received: Arc<AtomicUsize>,
}

impl Witness {
    pub fn start(
        ip: std::net::Ipv4Addr,
        out: Arc<Jsonl>,
        caught: Arc<crate::caught::Caught>,
    ) -> Result<Witness> {
        let listener =
            TcpListener::bind((ip, 0)).with_context(|| format!("witness: binding {ip}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicUsize::new(0));
        let (s, r) = (stop.clone(), received.clone());
        let thread = std::thread::Builder::new()
            .name("witness".into())
            .spawn(move || accept_loop(listener, out, s, r, caught))?;
        Ok(Witness {
            addr,
            stop,
            thread: Some(thread),
            received,
        })
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    out: Arc<Jsonl>,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicUsize>,
    caught: Arc<crate::caught::Caught>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    continue; // dropped: the app's next heartbeat comes soon
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (out, active, received) = (out.clone(), active.clone(), received.clone());
                let caught = caught.clone();
                let spawned = std::thread::Builder::new()
                    .name("witness-conn".into())
                    .spawn(move || {
                        serve(stream, &out, &received, &caught);
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    eprintln!("flocker-chaos: witness cannot start a thread");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                eprintln!("flocker-chaos: witness accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn serve(stream: TcpStream, out: &Jsonl, received: &AtomicUsize, caught: &crate::caught::Caught) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream.take(MAX_LINE));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
        return;
    }
    match serde_json::from_str::<Wire>(line.trim()) {
        Ok(w) => {
            received.fetch_add(1, Ordering::SeqCst);
            out.write_with(|time_ns| {
                caught.heartbeat(&w.app, &w.instance, time_ns);
                Heartbeat {
                    time_ns,
                    app: w.app,
                    node: w.node,
                    instance: w.instance,
                    seq: w.seq,
                    head: w.head,
                }
            });
        }
        Err(e) => eprintln!(
            "flocker-chaos: witness: not a heartbeat ({e}): {}",
            line.trim()
        ),
    }
    // Dropping the stream closes it, which lets the app's `nc` exit.
}
