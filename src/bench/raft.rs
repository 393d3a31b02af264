//! `flocker bench raft`: commits/s and commit latency of a 3-node flocker
//! cluster against a 3-member etcd on the same loopback, same load shape, same
//! run; then leader failover (kill -9 of the leader until the first committed
//! write through a survivor).

use super::cluster::{FlockerCluster, NAMES};
use super::etcd::{EtcdCluster, EtcdConn};
use super::https::HttpsConn;
use super::procs::free_tcp;
use super::scrape;
use super::stats::{ms, summarize, Summary};
use crate::api::client::Client;
use crate::api::{ClientReply, ClientRequest};
use crate::state::Command;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct RaftBenchArgs {
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent clients, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub clients: Vec<usize>,
    /// Leader failover trials.
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// Pairs of interleaved 1-client trials with and without every node's
    /// /metrics scraped each second (0: skip).
    #[arg(long, default_value_t = 6)]
    pub scrape_trials: usize,
    /// Keep the working directory (logs, data) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

struct Load {
    commits_per_sec: f64,
    latency: Summary,
    errors: usize,
    /// Every successful request's latency, sorted.
    samples: Vec<Duration>,
    secs: f64,
}

/// Per-attempt deadline of the failover probe; it retries with the same
/// request id, as a client should.
const FAILOVER_ATTEMPT: Duration = Duration::from_millis(100);

fn label_write(worker: usize, seq: u64) -> ClientRequest {
    ClientRequest::Write {
        request_id: format!("bench-{worker}-{seq}-{:x}", rand::random::<u64>()),
        command: Command::SetLabels {
            node: "n1".into(),
            changes: [(format!("k{worker}"), Some(seq.to_string()))].into(),
        },
    }
}

async fn flocker_load(
    cluster: &FlockerCluster,
    leader: usize,
    clients: usize,
    secs: u64,
) -> Result<Load> {
    let mut workers = Vec::new();
    for _ in 0..clients {
        let client = cluster.client(leader)?;
        // Connect before the clock starts.
        client.request(ClientRequest::Nodes { stale: true }).await;
        workers.push(client);
    }
    run_workers(
        workers,
        secs,
        |client: Arc<Client>, worker, seq| async move {
            matches!(
                client.request(label_write(worker, seq)).await,
                ClientReply::Written(o) if o.result.is_ok()
            )
        },
    )
    .await
}

/// The same writes as [`flocker_load`] through the leader's HTTPS API
/// (`PUT /v1/nodes/n1/labels`), one kept-alive connection per client.
async fn https_load(
    cluster: &FlockerCluster,
    https: SocketAddr,
    clients: usize,
    secs: u64,
) -> Result<Load> {
    let mut workers = Vec::new();
    for _ in 0..clients {
        workers.push(HttpsConn::connect(&cluster.certs, "admin", https).await?);
    }
    run_workers(
        workers,
        secs,
        |conn: Arc<HttpsConn>, worker, seq| async move {
            let body = format!(r#"{{"labels": {{"k{worker}": "{seq}"}}}}"#);
            matches!(
                conn.send("PUT", "/v1/nodes/n1/labels", body).await,
                Ok((200, _))
            )
        },
    )
    .await
}

async fn etcd_load(etcd: &EtcdCluster, clients: usize, secs: u64) -> Result<Load> {
    let leader = etcd.leader().await?;
    let mut workers = Vec::new();
    for _ in 0..clients {
        workers.push(tokio::sync::Mutex::new(EtcdConn::connect(leader).await?));
    }
    run_workers(
        workers,
        secs,
        |conn: Arc<tokio::sync::Mutex<EtcdConn>>, worker, seq| async move {
            conn.lock()
                .await
                .put(&format!("k{worker}"), &seq.to_string())
                .await
                .is_ok()
        },
    )
    .await
}

/// Runs one worker per connection for `secs`, each issuing one request at a
/// time, and summarises successful requests.
async fn run_workers<C, F, Fut>(conns: Vec<C>, secs: u64, op: F) -> Result<Load>
where
    C: Send + Sync + 'static,
    F: Fn(Arc<C>, usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (worker, conn) in conns.into_iter().enumerate() {
        let conn = Arc::new(conn);
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if op(conn.clone(), worker, seq).await {
                    latencies.push(t.elapsed());
                } else {
                    errors += 1;
                }
                seq += 1;
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(Load {
        commits_per_sec: all.len() as f64 / elapsed,
        latency: summarize(&mut all),
        errors,
        samples: all,
        secs: elapsed,
    })
}

async fn failover(cluster: &mut FlockerCluster, trials: usize) -> Result<Summary> {
    let mut samples = Vec::new();
    for trial in 0..trials {
        let leader = cluster.leader(&[0, 1, 2], Duration::from_secs(30)).await?;
        let survivor = (leader + 1) % 3;
        let client = cluster.client(survivor)?;
        client.request(ClientRequest::Nodes { stale: true }).await;
        let request = label_write(1000 + trial, 0);
        cluster.nodes[leader].kill();
        let killed = Instant::now();
        loop {
            let attempt =
                tokio::time::timeout(FAILOVER_ATTEMPT, client.request(request.clone())).await;
            if let Ok(ClientReply::Written(o)) = attempt {
                if o.result.is_ok() {
                    break;
                }
            }
            if killed.elapsed() > Duration::from_secs(30) {
                bail!("trial {trial}: no write committed within 30s of killing the leader");
            }
        }
        let took = killed.elapsed();
        println!(
            "  failover trial {:2}: killed {} → first commit after {} ms",
            trial + 1,
            NAMES[leader],
            ms(took)
        );
        samples.push(took);
        cluster.nodes[leader].start()?;
    }
    Ok(summarize(&mut samples))
}

pub async fn run(args: RaftBenchArgs) -> Result<()> {
    let work = tempfile_dir()?;
    println!("working directory: {}", work.display());
    let result = run_in(&args, &work).await;
    if args.keep || result.is_err() {
        println!("kept {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

async fn run_in(args: &RaftBenchArgs, work: &Path) -> Result<()> {
    // The simulated engine: this measures consensus, not Docker. Every
    // node serves /metrics; the scrape rows fetch it.
    let metrics: Vec<SocketAddr> = NAMES.iter().map(|_| free_tcp()).collect();
    let https: Vec<SocketAddr> = NAMES.iter().map(|_| free_tcp()).collect();
    let mut flocker = FlockerCluster::start(&work.join("flocker"), |name| {
        let i = NAMES.iter().position(|n| *n == name).unwrap_or(0);
        vec![
            "--engine=sim".into(),
            format!("--metrics-listen={}", metrics[i]),
            format!("--http-listen={}", https[i]),
        ]
    })?;
    std::fs::create_dir_all(work.join("etcd"))?;
    let etcd = EtcdCluster::start(&work.join("etcd"))
        .await
        .context("starting etcd (apt-get install etcd-server)")?;
    let leader = flocker.leader(&[0, 1, 2], Duration::from_secs(30)).await?;

    println!(
        "\n3 nodes on loopback, fsync on, {}s per row, same run",
        args.seconds
    );
    println!(
        "{:<8} {:<8} {:>10} {:>8} {:>8} {:>7}",
        "clients", "system", "commits/s", "p50 ms", "p99 ms", "errors"
    );
    let mut ratios = Vec::new();
    for &clients in &args.clients {
        let ours = flocker_load(&flocker, leader, clients, args.seconds).await?;
        let over_https = https_load(&flocker, https[leader], clients, args.seconds).await?;
        let theirs = etcd_load(&etcd, clients, args.seconds).await?;
        for (name, load) in [
            ("flocker", &ours),
            ("  https", &over_https),
            ("etcd", &theirs),
        ] {
            println!(
                "{:<8} {:<8} {:>10.0} {:>8} {:>8} {:>7}",
                clients,
                name,
                load.commits_per_sec,
                ms(load.latency.p50),
                ms(load.latency.p99),
                load.errors
            );
        }
        ratios.push((
            clients,
            ours.commits_per_sec / theirs.commits_per_sec.max(1e-9),
            over_https.commits_per_sec / ours.commits_per_sec.max(1e-9),
        ));
    }
    for (clients, ratio, https_ratio) in &ratios {
        println!("throughput flocker/etcd at {clients} clients: {ratio:.2}x (goal ≥ 1.0); through HTTPS / QUIC: {https_ratio:.2}x");
    }
    drop(etcd);

    if args.scrape_trials > 0 {
        scrape_rows(&flocker, leader, &metrics, args).await?;
    }
    if args.trials > 0 {
        println!("\nleader failover: kill -9 leader → first committed write via a survivor");
        let s = failover(&mut flocker, args.trials).await?;
        println!(
            "failover over {} trials: p50 {} ms, p99 {} ms (goal p99 ≤ 1500 ms)",
            s.count,
            ms(s.p50),
            ms(s.p99)
        );
    }
    Ok(())
}

/// Commit latency at one client with every node's /metrics scraped each
/// second against the same load unscraped, in interleaved trials (the
/// order alternates, so neither side always runs first).
async fn scrape_rows(
    cluster: &FlockerCluster,
    leader: usize,
    targets: &[SocketAddr],
    args: &RaftBenchArgs,
) -> Result<()> {
    println!(
        "
/metrics of every node scraped each 1 s vs not: {} interleaved pairs of {}s at 1 client",
        args.scrape_trials, args.seconds
    );
    let tally = Arc::new(scrape::Scrapes::default());
    let (mut plain, mut scraped) = (scrape::Side::default(), scrape::Side::default());
    for trial in 0..args.scrape_trials {
        let order = if trial % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for scraping in order {
            let scraper = scraping.then(|| scrape::start_scraping(targets.to_vec(), tally.clone()));
            let load = flocker_load(cluster, leader, 1, args.seconds).await;
            if let Some(scraper) = scraper {
                scraper.abort();
            }
            let load = load?;
            let side = if scraping { &mut scraped } else { &mut plain };
            side.trial_p99.push(load.latency.p99);
            side.samples.extend(load.samples);
            side.secs += load.secs;
            side.errors += load.errors;
        }
    }
    scrape::report(plain, scraped, &tally);
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("flocker-bench-{:x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
