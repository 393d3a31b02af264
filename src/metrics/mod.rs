//! Prometheus metrics (issue 17): every metric this process records, its
//! name, help and buckets, in one place, and the text exposition of them.
//!
//! Counters and histograms live in one registry per process: a node is one
//! process (the tests and the benchmarks start nodes as processes too), and
//! every layer records through [`get`] without a handle threaded through
//! it. What describes one node's own view — its Raft term and role, the
//! members by liveness — is read when scraped, through [`NodeGauges`] that
//! the node fills from its own handles, so nodes sharing a process (the
//! scale benchmark's in-process group) never mix them.
//!
//! Labels stay bounded: request and command kinds, container states, move
//! phases, node liveness; app and node names only where the configuration
//! bounds them (replicas); never a request id.

pub mod server;

use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;
use std::time::Duration;

/// Latency buckets from 0.1 ms to ~52 s (doubling): an fsync on a fast
/// disk and a commit through a slow quorum both land inside.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.0001, 2.0, 20).expect("valid buckets")
}

/// Count buckets 1 to 4096 (doubling): batch sizes are bounded by the
/// proposer's and openraft's batch limits well below the top.
fn count_buckets() -> Vec<f64> {
    exponential_buckets(1.0, 2.0, 13).expect("valid buckets")
}

/// Move phases and downtimes: 10 ms to ~2.8 h (quadrupling).
fn move_buckets() -> Vec<f64> {
    exponential_buckets(0.01, 4.0, 11).expect("valid buckets")
}

/// Every metric the process records; see the README's Metrics section.
pub struct Metrics {
    registry: Registry,
    pub raft_commit_index: IntGauge,
    pub raft_append_seconds: Histogram,
    pub raft_append_entries: Histogram,
    pub raft_fsync_seconds: Histogram,
    pub raft_fsync_appends: Histogram,
    pub raft_commit_seconds: Histogram,
    pub raft_batch_proposals: Histogram,
    pub raft_elections_total: IntCounter,
    pub client_requests_total: IntCounterVec,
    pub client_request_seconds: HistogramVec,
    pub agent_containers: IntGaugeVec,
    pub agent_reconcile_total: IntCounter,
    pub agent_reconcile_seconds: Histogram,
    pub agent_engine_errors_total: IntCounter,
    pub fenced_apps: IntGauge,
    pub scheduler_placements_total: IntCounter,
    pub volume_sent_bytes_total: IntCounter,
    pub volume_received_bytes_total: IntCounter,
    pub move_phase_seconds: HistogramVec,
    pub move_downtime_seconds: Histogram,
    pub moves_total: IntCounter,
    pub replica_point_timestamp_seconds: GaugeVec,
    pub replica_bytes_behind: IntGaugeVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics (registered on first use).
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Registers `metric` in `registry` and hands it back.
fn add<C: Collector + Clone + 'static>(registry: &Registry, metric: C) -> C {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    add(
        registry,
        Histogram::with_opts(opts).expect("valid histogram"),
    )
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    add(
        registry,
        IntCounter::new(name, help).expect("valid counter"),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    add(registry, IntGauge::new(name, help).expect("valid gauge"))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    add(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"),
    )
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        Metrics {
            raft_commit_index: gauge(&r, "flocker_raft_commit_index", "Highest log index known committed."),
            raft_append_seconds: histogram(&r, "flocker_raft_append_seconds", "Time to write one batch of log entries to RocksDB (before its fsync).", latency_buckets()),
            raft_append_entries: histogram(&r, "flocker_raft_append_entries", "Log entries per append.", count_buckets()),
            raft_fsync_seconds: histogram(&r, "flocker_raft_fsync_seconds", "Time of one fsync of the Raft log's WAL.", latency_buckets()),
            raft_fsync_appends: histogram(&r, "flocker_raft_fsync_appends", "Appends made durable by one fsync (group commit).", count_buckets()),
            raft_commit_seconds: histogram(&r, "flocker_raft_commit_seconds", "On the leader, time from proposing a batch of writes to its committed, applied outcome.", latency_buckets()),
            raft_batch_proposals: histogram(&r, "flocker_raft_batch_proposals", "Client and node writes carried by one log entry.", count_buckets()),
            raft_elections_total: counter(&r, "flocker_raft_elections_total", "Elections this node started (became a candidate)."),
            client_requests_total: add(&r, IntCounterVec::new(Opts::new("flocker_client_requests_total", "Requests of users (ctl) that arrived at this node, by kind and outcome (ok; failed: committed but refused by the state; refused: nothing done; unknown: may or may not have been applied). A request forwarded to the leader counts once, here."), &["kind", "outcome"]).expect("valid counter")),
            client_request_seconds: add(&r, HistogramVec::new(HistogramOpts::new("flocker_client_request_seconds", "Time to answer a client request, by kind.").buckets(latency_buckets()), &["kind"]).expect("valid histogram")),
            agent_containers: gauge_vec(&r, "flocker_agent_containers", "This node's containers of the cluster by observed state.", &["state"]),
            agent_reconcile_total: counter(&r, "flocker_agent_reconcile_passes_total", "Reconcile passes the agent ran."),
            agent_reconcile_seconds: histogram(&r, "flocker_agent_reconcile_seconds", "Time of one reconcile pass.", latency_buckets()),
            agent_engine_errors_total: counter(&r, "flocker_agent_engine_errors_total", "Container engine calls that failed (listing or acting)."),
            fenced_apps: gauge(&r, "flocker_fenced_apps", "Apps this node holds stopped because its lease lapsed (invariant 3)."),
            scheduler_placements_total: counter(&r, "flocker_scheduler_placements_total", "App placements the leader committed."),
            volume_sent_bytes_total: counter(&r, "flocker_volume_sent_bytes_total", "Volume chunk bytes sent (moves and replica points)."),
            volume_received_bytes_total: counter(&r, "flocker_volume_received_bytes_total", "Volume chunk bytes received (moves and replica points)."),
            move_phase_seconds: add(&r, HistogramVec::new(HistogramOpts::new("flocker_move_phase_seconds", "Duration of each phase of a volume move, on its source.").buckets(move_buckets()), &["phase"]).expect("valid histogram")),
            move_downtime_seconds: histogram(&r, "flocker_move_downtime_seconds", "Per finished move, from the freeze to the committed handoff, on its source.", move_buckets()),
            moves_total: counter(&r, "flocker_moves_total", "Volume moves this node finished as the source."),
            replica_point_timestamp_seconds: add(&r, GaugeVec::new(Opts::new("flocker_replica_point_timestamp_seconds", "Unix time at which the newest point shipped to a replica was taken, on the owner; replica lag is time() minus this."), &["app", "replica"]).expect("valid gauge")),
            replica_bytes_behind: gauge_vec(&r, "flocker_replica_bytes_behind", "Bytes of changes a replica lacks, on the owner.", &["app", "replica"]),
            registry: r,
        }
    }
}

/// Seconds as Prometheus records them.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One node's own view, set from its handles right before each scrape.
pub struct NodeGauges {
    registry: Registry,
    pub raft_term: IntGauge,
    pub raft_is_leader: IntGauge,
    pub raft_applied_index: IntGauge,
    pub raft_last_log_index: IntGauge,
    pub raft_voters: IntGauge,
    pub nodes: IntGaugeVec,
}

impl Default for NodeGauges {
    fn default() -> NodeGauges {
        let r = Registry::new();
        NodeGauges {
            raft_term: gauge(&r, "flocker_raft_term", "This node's current Raft term."),
            raft_is_leader: gauge(
                &r,
                "flocker_raft_is_leader",
                "1 while this node is the Raft leader, else 0.",
            ),
            raft_applied_index: gauge(
                &r,
                "flocker_raft_applied_index",
                "Highest log index applied to this node's state.",
            ),
            raft_last_log_index: gauge(
                &r,
                "flocker_raft_last_log_index",
                "Highest log index in this node's log.",
            ),
            raft_voters: gauge(
                &r,
                "flocker_raft_voters",
                "Voters in the membership this node knows.",
            ),
            nodes: gauge_vec(
                &r,
                "flocker_nodes",
                "Cluster members by liveness (up, down, drained) in this node's applied state.",
                &["liveness"],
            ),
            registry: r,
        }
    }
}

/// The text exposition of the process's metrics and `node`'s.
pub fn render(node: &NodeGauges) -> Result<String, String> {
    let mut families = get().registry.gather();
    families.extend(node.registry.gather());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut out)
        .map_err(|e| format!("encoding metrics: {e}"))?;
    String::from_utf8(out).map_err(|e| format!("encoding metrics: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_prefixed_and_the_exposition_names_the_required_ones() {
        let node = NodeGauges::default();
        node.raft_is_leader.set(1);
        get()
            .client_requests_total
            .with_label_values(&["deploy", "ok"])
            .inc();
        let text = render(&node).unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("flocker_"), "{line}");
        }
        assert!(text.contains("flocker_raft_is_leader 1"), "{text}");
        assert!(text.contains("flocker_raft_term 0"), "{text}");
        assert!(
            text.contains(r#"flocker_client_requests_total{kind="deploy",outcome="ok"}"#),
            "{text}"
        );
    }
}
