//! The volume endpoint: a second QUIC endpoint (its own UDP port) on its
//! own tokio runtime whose threads run at a lower CPU priority, so bulk
//! volume data never delays Raft heartbeats into elections (invariant 7).
//!
//! Separating the socket keeps volume packets out of the Raft socket's
//! receive queue; separating the runtime keeps QUIC encryption of volume
//! data (the expensive part) off the threads that run Raft and the API, and
//! the kernel's scheduler, not tokio's cooperative one, shares the CPU
//! between them. The sender's rate limit (`RateLimit`) bounds the rest.

use crate::net::tls::TlsMaterial;
use crate::net::{Net, StreamHandler};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
// The tokio clock, so tests can run the limit on paused time.
use tokio::time::Instant;

/// Nice value of the volume runtime's threads (0 is normal, 19 lowest).
pub const VOLUME_THREAD_NICE: i32 = 10;
/// Worker threads of the volume runtime; blocking file I/O has its own pool.
const VOLUME_WORKERS: usize = 1;
/// Most blocking threads (scans, chunk reads and writes) at once.
const VOLUME_BLOCKING_THREADS: usize = 8;

pub struct VolumeEndpoint {
    runtime: Option<tokio::runtime::Runtime>,
    pub net: Arc<Net>,
}

impl VolumeEndpoint {
    /// Binds `listen` (port 0: any free port) and serves volume streams
    /// with `handler` on the volume runtime.
    pub fn start(
        listen: SocketAddr,
        tls: &TlsMaterial,
        handler: Arc<dyn StreamHandler>,
    ) -> Result<VolumeEndpoint> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(VOLUME_WORKERS)
            .max_blocking_threads(VOLUME_BLOCKING_THREADS)
            .thread_name("flocker-volume")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .context("starting the volume runtime")?;
        // quinn binds its endpoint driver to the runtime it is created in.
        let net = {
            let _inside = runtime.enter();
            let net = Net::server(listen, tls).context("binding the volume endpoint")?;
            net.serve(handler);
            net
        };
        Ok(VolumeEndpoint {
            runtime: Some(runtime),
            net,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.net.local_addr()
    }

    /// Where volume work runs: spawn move tasks here.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the endpoint")
            .handle()
            .clone()
    }
}

impl Drop for VolumeEndpoint {
    fn drop(&mut self) {
        self.net.close();
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime inside another one would panic.
            runtime.shutdown_background();
        }
    }
}

fn lower_priority() {
    // On Linux PRIO_PROCESS with 0 names the calling thread, not the process.
    // SAFETY: setpriority takes plain integers and has no memory effects.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, VOLUME_THREAD_NICE) };
    if rc != 0 {
        tracing::debug!(
            "could not lower the volume thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A token bucket over bytes: `take(n)` waits until `n` bytes may be sent.
/// Bursts are at most a quarter second of the rate.
pub struct RateLimit {
    bytes_per_sec: u64,
    available: f64,
    last: Instant,
}

impl RateLimit {
    /// `bytes_per_sec == 0` means no limit.
    pub fn new(bytes_per_sec: u64) -> RateLimit {
        RateLimit {
            bytes_per_sec,
            available: 0.0,
            last: Instant::now(),
        }
    }

    pub async fn take(&mut self, bytes: u64) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let rate = self.bytes_per_sec as f64;
        let burst = rate / 4.0;
        let now = Instant::now();
        self.available = (self.available + now.duration_since(self.last).as_secs_f64() * rate)
            .min(burst.max(bytes as f64));
        self.last = now;
        self.available -= bytes as f64;
        if self.available < 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(-self.available / rate)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_spreads_bytes_over_time() {
        let mut limit = RateLimit::new(1 << 20);
        let start = tokio::time::Instant::now();
        for _ in 0..8 {
            limit.take(256 << 10).await;
        }
        // 2 MiB at 1 MiB/s, less the first quarter-second burst.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1700), "{took:?}");
        assert!(took <= Duration::from_millis(2100), "{took:?}");
    }
}
