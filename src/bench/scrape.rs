//! The cost of being scraped (issue 17): commit latency of the same cluster
//! with and without every node's `/metrics` fetched once a second, as a
//! Prometheus server would, in interleaved trials of the same run (so drift
//! of the machine falls on both sides alike). The anchor is the unscraped
//! half; the goal is a scraped commit p99 within 5 % of it.

use super::stats::{ms, summarize, Summary};
use anyhow::{bail, Result};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How often each node is scraped: Prometheus's shortest usual interval.
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
/// Most bytes read of one scrape: the exposition is a few tens of KiB.
const MAX_SCRAPE: u64 = 4 << 20;

/// One `GET /metrics` over HTTP/1.1; the body's length.
async fn scrape_once(addr: SocketAddr) -> Result<usize> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut reply = Vec::new();
    stream.take(MAX_SCRAPE).read_to_end(&mut reply).await?;
    let text = String::from_utf8_lossy(&reply);
    if !text.starts_with("HTTP/1.1 200") {
        bail!("{addr}: {}", text.lines().next().unwrap_or("no answer"));
    }
    Ok(text
        .split_once("\r\n\r\n")
        .map_or(0, |(_, body)| body.len()))
}

/// Scrapes of one trial: made, failed, and the last body's size.
#[derive(Default)]
pub struct Scrapes {
    pub done: AtomicUsize,
    pub failed: AtomicUsize,
    pub bytes: AtomicUsize,
}

/// Scrapes every one of `targets` each [`SCRAPE_EVERY`] until aborted.
pub fn start_scraping(
    targets: Vec<SocketAddr>,
    tally: Arc<Scrapes>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SCRAPE_EVERY);
        loop {
            tick.tick().await;
            for addr in &targets {
                match tokio::time::timeout(SCRAPE_EVERY, scrape_once(*addr)).await {
                    Ok(Ok(bytes)) => {
                        tally.done.fetch_add(1, Ordering::Relaxed);
                        tally.bytes.store(bytes, Ordering::Relaxed);
                    }
                    _ => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    })
}

/// Commit latencies of one side (scraped or not), over all its trials.
#[derive(Default)]
pub struct Side {
    pub samples: Vec<Duration>,
    pub secs: f64,
    pub errors: usize,
    /// Each trial's own p99, in trial order (pairs line up across sides).
    pub trial_p99: Vec<Duration>,
}

impl Side {
    pub fn summary(&mut self) -> Summary {
        summarize(&mut self.samples)
    }
}

/// Prints the two sides as rows, the anchor (unscraped) first, and the ratio.
pub fn report(mut plain: Side, mut scraped: Side, tally: &Scrapes) {
    println!(
        "{:<10} {:>10} {:>8} {:>8} {:>7}",
        "/metrics", "commits/s", "p50 ms", "p99 ms", "errors"
    );
    let mut p99 = Vec::new();
    for (name, side) in [("unscraped", &mut plain), ("scraped", &mut scraped)] {
        let s = side.summary();
        println!(
            "{:<10} {:>10.0} {:>8} {:>8} {:>7}",
            name,
            s.count as f64 / side.secs.max(1e-9),
            ms(s.p50),
            ms(s.p99),
            side.errors
        );
        p99.push(s.p99.as_secs_f64());
    }
    println!(
        "scrapes: {} ok, {} failed, {} bytes each",
        tally.done.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.bytes.load(Ordering::Relaxed)
    );
    // Other work on a shared machine lands in one trial or another; the
    // median of the pairs' ratios is the figure such bursts move least.
    let mut ratios: Vec<f64> = plain
        .trial_p99
        .iter()
        .zip(&scraped.trial_p99)
        .map(|(a, b)| b.as_secs_f64() / a.as_secs_f64().max(1e-9))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "commit p99 scraped/unscraped: {:.3}x over all trials, median of {} pairs {:.3}x (goal ≤ 1.05)",
        p99[1] / p99[0].max(1e-9),
        ratios.len(),
        median
    );
}
