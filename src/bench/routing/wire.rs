//! What the routing bench runs inside the lab's namespaces, on threads that
//! entered them (no helper process, no extra hop): the client's downloads
//! and timed connections, the prober that asks every node's address which
//! instance answers, and the userspace relay (tokio `copy_bidirectional`)
//! that stands for the design the mesh did not take. Also the CPU readings
//! that say whether the client or the relay was the bottleneck.

use super::super::logs::now_ms;
use crate::netlab::Lab;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Each reply of the app's busybox httpd ends the connection (HTTP/1.0).
const ID_REQUEST: &[u8] = b"GET /id HTTP/1.0\r\n\r\n";
/// A reply to GET /id is a status line, a few headers and a hostname.
const ID_REPLY_MAX: u64 = 4096;
/// Any one connect, request or read.
const IO_LIMIT: Duration = Duration::from_secs(5);
/// The client's read buffer: large, so the client is not what limits.
const READ_BUFFER: usize = 1 << 20;
/// The relay's buffer each way (tokio's default is 8 KiB; a relay built
/// for throughput would not keep that).
const RELAY_BUFFER: usize = 256 << 10;
/// Prober: one probe may wait this long for an answer.
const PROBE_LIMIT: Duration = Duration::from_secs(1);
/// Prober: probes in flight at once, all targets together.
const PROBES_IN_FLIGHT: usize = 200;
/// Prober: samples kept (~25 minutes of three targets every 20 ms).
const MAX_SAMPLES: usize = 200_000;

/// The hostname in a 200 reply to GET /id (the instance's container id,
/// cut to 12 characters).
pub fn id_of(reply: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(reply).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let ok = is_ok_status(head.as_bytes());
    let body = body.trim();
    (ok && !body.is_empty()).then(|| body.to_string())
}

/// Whether a reply starts with a 200 status line (busybox httpd answers
/// HTTP/1.1 to an HTTP/1.0 request).
fn is_ok_status(reply: &[u8]) -> bool {
    let line = reply.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    words.next().is_some_and(|v| v.starts_with(b"HTTP/1.")) && words.next() == Some(b"200")
}

/// Whether a hostname answered by an instance is that of container `id`.
pub fn is_instance(answer: &str, id: &str) -> bool {
    answer.len() >= 12 && id.starts_with(answer)
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_LIMIT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(IO_LIMIT))?;
    stream.set_write_timeout(Some(IO_LIMIT))?;
    Ok(stream)
}

/// GET /id through `addr`: which instance answers there.
pub fn get_id(addr: SocketAddr) -> Result<String> {
    let mut stream = connect(addr)?;
    stream.write_all(ID_REQUEST)?;
    let mut reply = Vec::new();
    (&mut stream).take(ID_REPLY_MAX).read_to_end(&mut reply)?;
    id_of(&reply).with_context(|| {
        format!(
            "GET /id through {addr}: {:?}",
            String::from_utf8_lossy(&reply)
        )
    })
}

/// GET /id through `addr` as the prober sees it: the instance's id, or
/// where it failed (a refusal, a timeout or a reset mean different things
/// for a route).
async fn probe_id(addr: SocketAddr) -> Result<String, &'static str> {
    use std::io::ErrorKind;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        match tokio::time::timeout(PROBE_LIMIT, tokio::net::TcpStream::connect(addr)).await {
            Err(_) => return Err("connect timed out"),
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => return Err("refused"),
            Ok(Err(_)) => return Err("connect failed"),
            Ok(Ok(s)) => s,
        };
    let exchange = async {
        stream.write_all(ID_REQUEST).await?;
        let mut reply = Vec::new();
        (&mut stream)
            .take(ID_REPLY_MAX)
            .read_to_end(&mut reply)
            .await?;
        Ok::<_, std::io::Error>(reply)
    };
    match tokio::time::timeout(PROBE_LIMIT, exchange).await {
        Err(_) => Err("reply timed out"),
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionReset => Err("reset"),
        Ok(Err(_)) => Err("read failed"),
        Ok(Ok(reply)) => id_of(&reply).ok_or("not a 200 reply with an id"),
    }
}

/// Time on a CPU of this process's thread `tid` (from the scheduler's
/// statistics, in nanoseconds).
pub fn thread_cpu(tid: i32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    Some(Duration::from_nanos(
        text.split_whitespace().next()?.parse().ok()?,
    ))
}

fn my_tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// The machine's CPU time so far as (busy, all), in clock ticks, from the
/// first line of /proc/stat (idle and iowait are not busy).
pub fn machine_cpu() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let all: u64 = fields.iter().sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((all - idle, all))
}

/// One throughput run.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub bytes: u64,
    pub elapsed: Duration,
    /// The client thread's CPU time meanwhile.
    pub client_cpu: Duration,
}

impl Transfer {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

/// Downloads `path` through `addr` again and again for `span`, one
/// connection at a time; counts every byte received. Run it in the client's
/// namespace.
pub fn download(addr: SocketAddr, path: &str, length: u64, span: Duration) -> Result<Transfer> {
    let tid = my_tid();
    let cpu_before = thread_cpu(tid).unwrap_or_default();
    let mut buf = vec![0u8; READ_BUFFER];
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    let start = Instant::now();
    let mut bytes = 0u64;
    'runs: while start.elapsed() < span {
        let mut stream = connect(addr)?;
        stream.write_all(request.as_bytes())?;
        let mut this_one = 0u64;
        loop {
            let n = stream
                .read(&mut buf)
                .with_context(|| format!("reading {path} through {addr}"))?;
            if n == 0 {
                break;
            }
            if this_one == 0 && !is_ok_status(&buf[..n]) {
                bail!(
                    "GET {path} through {addr}: {:?}",
                    String::from_utf8_lossy(&buf[..n.min(200)])
                );
            }
            this_one += n as u64;
            bytes += n as u64;
            if start.elapsed() >= span {
                break 'runs;
            }
        }
        if this_one < length {
            bail!("GET {path} through {addr} ended after {this_one} of {length} bytes");
        }
    }
    let elapsed = start.elapsed();
    Ok(Transfer {
        bytes,
        elapsed,
        client_cpu: thread_cpu(tid)
            .unwrap_or_default()
            .saturating_sub(cpu_before),
    })
}

/// Times `count` connections to each target, interleaved (target 1, 2, 3,
/// 1, 2, 3, …) so drifts of the machine hit every target alike: the
/// handshake alone (connect() returned), or the handshake plus GET /id
/// until the reply's end. Run it in the client's namespace.
///
/// After a timed handshake the client half-closes and waits for the
/// server to close too (untimed): busybox httpd accepts from a backlog of
/// 9, and connections left queued would make later SYNs wait out a 1 s
/// retransmission, timing the app's accept loop rather than the path.
pub fn connect_times(
    targets: &[SocketAddr],
    count: usize,
    request: bool,
) -> Result<Vec<Vec<Duration>>> {
    let mut times = vec![Vec::with_capacity(count); targets.len()];
    for _ in 0..count {
        for (i, addr) in targets.iter().enumerate() {
            let start = Instant::now();
            if request {
                get_id(*addr)?;
                times[i].push(start.elapsed());
            } else {
                let mut stream = connect(*addr)?;
                times[i].push(start.elapsed());
                stream.shutdown(std::net::Shutdown::Write)?;
                let mut rest = Vec::new();
                (&mut stream)
                    .take(ID_REPLY_MAX)
                    .read_to_end(&mut rest)
                    .with_context(|| format!("waiting for {addr} to close"))?;
            }
        }
    }
    Ok(times)
}

/// A userspace TCP relay in a lab namespace: every connection to `listen`
/// is copied both ways to and from a connection to `upstream`.
pub struct Relay {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
    tid: i32,
}

impl Relay {
    pub fn start(lab: &Lab, host: &str, listen: SocketAddr, upstream: SocketAddr) -> Result<Relay> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, bound) = std::sync::mpsc::sync_channel::<Result<i32>>(1);
        let thread = lab.thread_in(host, "bench-relay", move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(relay(listen, upstream, ready, stopped))
        })?;
        let tid = match bound.recv_timeout(IO_LIMIT) {
            Ok(Ok(tid)) => tid,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let why = match thread.join() {
                    Ok(Err(e)) => format!("{e:#}"),
                    _ => "it did not start".into(),
                };
                bail!("the relay on {listen}: {why}");
            }
        };
        Ok(Relay {
            stop: Some(stop),
            thread: Some(thread),
            tid,
        })
    }

    /// The relay thread's CPU time so far (all its copying runs there).
    pub fn cpu(&self) -> Option<Duration> {
        thread_cpu(self.tid)
    }

    pub fn stop(mut self) -> Result<()> {
        self.stop.take();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => bail!("the relay thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Dropping the sender ends the accept loop; the thread then exits.
        self.stop.take();
    }
}

async fn relay(
    listen: SocketAddr,
    upstream: SocketAddr,
    ready: std::sync::mpsc::SyncSender<Result<i32>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) -> Result<()> {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(anyhow::anyhow!("binding {listen}: {e}")));
            return Ok(());
        }
    };
    let _ = ready.send(Ok(my_tid()));
    loop {
        tokio::select! {
            _ = &mut stopped => return Ok(()),
            accepted = listener.accept() => {
                let (mut down, _) = accepted?;
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = down.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional_with_sizes(
                        &mut down,
                        &mut up,
                        RELAY_BUFFER,
                        RELAY_BUFFER,
                    )
                    .await;
                });
            }
        }
    }
}

/// One probe: which instance answered through target `target`, for a
/// connection begun at `at_ms` (wall clock), or why none did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub target: usize,
    pub at_ms: u64,
    pub answer: Result<String, &'static str>,
}

/// Asks every target which instance answers, every `every`, from the
/// client's namespace; a probe starts on time even while earlier ones
/// still wait (a lost SYN must not hide when the path came back).
pub struct Prober {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Prober {
    pub fn start(lab: &Lab, ns: &str, targets: Vec<SocketAddr>, every: Duration) -> Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (stop.clone(), samples.clone());
        let thread = lab.thread_in(ns, "bench-prober", move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(probe_loop(targets, every, s, out));
            Ok(())
        })?;
        Ok(Prober {
            stop,
            samples,
            thread: Some(thread),
        })
    }

    /// The samples of connections begun at or after `since_ms`.
    pub fn since(&self, since_ms: u64) -> Vec<Sample> {
        self.samples
            .lock()
            .expect("prober samples lock")
            .iter()
            .filter(|s| s.at_ms >= since_ms)
            .cloned()
            .collect()
    }

    /// Stops probing (waiting for probes in flight) and returns every sample.
    pub fn finish(mut self) -> Result<Vec<Sample>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(result) => result?,
                Err(_) => bail!("the prober thread panicked"),
            }
        }
        let mut all = std::mem::take(&mut *self.samples.lock().expect("prober samples lock"));
        all.sort_by_key(|s| (s.at_ms, s.target));
        Ok(all)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn probe_loop(
    targets: Vec<SocketAddr>,
    every: Duration,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut probes = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        while probes.try_join_next().is_some() {}
        for (target, addr) in targets.iter().copied().enumerate() {
            if probes.len() >= PROBES_IN_FLIGHT {
                break;
            }
            let samples = samples.clone();
            probes.spawn(async move {
                let at_ms = now_ms();
                let answer = probe_id(addr).await;
                let mut kept = samples.lock().expect("prober samples lock");
                if kept.len() < MAX_SAMPLES {
                    kept.push(Sample {
                        target,
                        at_ms,
                        answer,
                    });
                }
            });
        }
    }
    while probes.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_the_body_of_a_200_reply() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-type: text/plain\r\n\r\n3f2a9c0d1e4b\n";
        assert_eq!(id_of(ok).as_deref(), Some("3f2a9c0d1e4b"));
        assert_eq!(id_of(b"HTTP/1.0 404 Not Found\r\n\r\nnope"), None);
        let eleven = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n3f2a9c0d1e4b\n";
        assert_eq!(id_of(eleven).as_deref(), Some("3f2a9c0d1e4b"));
        assert!(is_ok_status(b"HTTP/1.1 200 OK\r\nDate"));
        assert!(!is_ok_status(b"HTTP/1.1 2000 OK\r\n"));
        assert_eq!(id_of(b"HTTP/1.0 200 OK\r\n\r\n  \n"), None);
        assert_eq!(id_of(b"HTTP/1.0 200 OK\r\nhalf a header"), None);
        assert!(is_instance("3f2a9c0d1e4b", "3f2a9c0d1e4b77aa"));
        assert!(!is_instance("3f2a", "3f2a9c0d1e4b77aa"));
        assert!(!is_instance("3f2a9c0d1e4c", "3f2a9c0d1e4b77aa"));
    }

    #[test]
    fn machine_cpu_is_read() {
        let (busy, all) = machine_cpu().expect("/proc/stat");
        assert!(busy <= all && all > 0);
        assert!(thread_cpu(my_tid()).is_some());
    }
}
