//! The owner's side of replication: takes points of the volumes this node
//! owns and runs, ships them to their replicas, commits what arrived.
//!
//! One app at a time and one replica at a time: points of one node share
//! its disk and its volume rate limit, and a replica that is slow to take a
//! point must not make the next point of another app late. A failure
//! (a replica down, a refused session) is retried at the next interval; a
//! replica that stays behind shows as lagging in `ctl status`.

use crate::agent::lease::Lease;
use crate::agent::{ReplicaProgress, LABEL_APP};
use crate::moves::protocol::ToReceiver;
use crate::moves::sender::SenderSession;
use crate::moves::MoveContext;
use crate::runtime::{ContainerId, ContainerState};
use crate::state::Command;
use crate::volume::{CaptureMethod, ScanOptions, VolumeStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the replicator looks for points that are due.
const TICK: Duration = Duration::from_millis(250);
/// Rounds of one point to one replica before giving up until the next
/// interval: a point holds still, so the first round normally matches.
const MAX_ROUNDS: u32 = 3;
/// Tries to thaw a container after a capture before leaving it to the
/// next pass (each is one engine call, bounded by the engine's timeout).
const UNPAUSE_TRIES: u32 = 5;
/// Shortest interval between points of one volume.
const MIN_POINT_INTERVAL: Duration = Duration::from_secs(1);

/// The interval between points of a volume whose objective is `max_lag_ms`:
/// a third of it, so a point, its shipping and its commit fit in the lag
/// with room for one failed attempt.
pub fn point_interval(max_lag_ms: u64) -> Duration {
    Duration::from_millis(max_lag_ms / 3).max(MIN_POINT_INTERVAL)
}

/// Makes a captured point durable (see `Backend::capture_unsettled`), off
/// the async threads.
async fn settled(settle: crate::volume::Settle) -> Result<(), String> {
    tokio::task::spawn_blocking(move || settle.settle())
        .await
        .map_err(|e| format!("settle task: {e}"))?
        .map_err(|e| format!("making the point durable: {e}"))
}

pub struct Replicator {
    ctx: Arc<MoveContext>,
    /// `<data-dir>/points`: the last point of each volume this node owns.
    points: VolumeStore,
    /// The node's lease: a container frozen for a point is thawed only
    /// while it holds (invariant 3).
    lease: Arc<Lease>,
    progress: HashMap<String, Progress>,
}

/// Where one owned volume's points stand.
#[derive(Default)]
struct Progress {
    epoch: u64,
    /// The last point taken at `epoch`.
    seq: u64,
    next_due: Option<Instant>,
}

/// A point of one volume that is due, as the applied state describes it.
struct Due {
    app: String,
    epoch: u64,
    seq: u64,
    replicas: Vec<String>,
    interval: Duration,
}

/// A point taken.
struct Taken {
    at: Instant,
    root: String,
    /// How long the app was paused (zero when it was not).
    stall: Duration,
    /// Bytes the capture wrote or shared (what changed, for `dir`).
    captured_bytes: u64,
}

impl Replicator {
    pub fn new(ctx: Arc<MoveContext>, points: VolumeStore, lease: Arc<Lease>) -> Replicator {
        Replicator {
            ctx,
            points,
            lease,
            progress: HashMap::new(),
        }
    }

    pub async fn run(mut self) {
        self.thaw_leftovers().await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for due in self.due() {
                self.replicate(due).await;
            }
        }
    }

    /// A process that died inside a capture left its app paused; this
    /// node is the only one that pauses its containers, so at start any
    /// paused one of ours is such a leftover. It is killed while still
    /// frozen, never thawed: its node's lease ended with that process, so
    /// the app may be running elsewhere by now, and a thawed app writes
    /// before its fence notices. The agent starts it again if it is still
    /// meant to run here.
    async fn thaw_leftovers(&self) {
        let Ok(containers) = self.ctx.runtime.list(&self.ctx.labels).await else {
            return;
        };
        for c in containers
            .iter()
            .filter(|c| c.state == ContainerState::Paused)
        {
            tracing::warn!(container = %c.id, "removing a container left paused by an interrupted volume point");
            let _ = self.ctx.runtime.remove(&c.id, true).await;
        }
    }

    /// Points due now: of volumes this node owns and runs, that have
    /// replicas, whose interval has passed.
    fn due(&mut self) -> Vec<Due> {
        let applied = self.ctx.sm.read();
        let state = &applied.state;
        let now = Instant::now();
        let mut due = Vec::new();
        for (app, set) in &state.replicas {
            let Some(owner) = state.volumes.get(app) else {
                continue;
            };
            let runs_here = state.runs_on(app) == Some(self.ctx.node.as_str());
            if owner.node != self.ctx.node || !runs_here || set.nodes.is_empty() {
                continue;
            }
            let max_lag_ms = state
                .deployed
                .config
                .applications
                .get(app)
                .and_then(|s| s.volume.as_ref())
                .map_or(10_000, |v| v.max_lag_ms);
            let progress = self.progress.entry(app.clone()).or_default();
            if progress.epoch != owner.epoch {
                // A new epoch (first point, a handoff, a failover): count
                // on from the newest point committed at it.
                let committed = set
                    .nodes
                    .values()
                    .flatten()
                    .filter(|p| p.epoch == owner.epoch)
                    .map(|p| p.seq)
                    .max();
                *progress = Progress {
                    epoch: owner.epoch,
                    seq: committed.unwrap_or(0),
                    next_due: None,
                };
            }
            if progress.next_due.is_some_and(|at| at > now) {
                continue;
            }
            due.push(Due {
                app: app.clone(),
                epoch: owner.epoch,
                seq: progress.seq + 1,
                replicas: set.nodes.keys().cloned().collect(),
                interval: point_interval(max_lag_ms),
            });
        }
        let owned: Vec<&String> = state
            .replicas
            .keys()
            .filter(|app| {
                state
                    .volumes
                    .get(*app)
                    .is_some_and(|o| o.node == self.ctx.node)
            })
            .collect();
        self.progress.retain(|app, _| owned.contains(&app));
        self.ctx.observed.replicating(&owned);
        due
    }

    async fn replicate(&mut self, due: Due) {
        let app = due.app.clone();
        let next_due = Instant::now() + due.interval;
        if let Some(p) = self.progress.get_mut(&app) {
            p.next_due = Some(next_due);
        }
        let taken = match self.take_point(&app, due.epoch).await {
            Ok(taken) => taken,
            Err(why) => {
                tracing::warn!(%app, "volume point not taken: {why}");
                return;
            }
        };
        if let Some(p) = self.progress.get_mut(&app) {
            p.seq = due.seq;
        }
        // One line per point: the failover benchmark reads the stall and
        // the bytes from it.
        tracing::info!(
            %app,
            epoch = due.epoch,
            seq = due.seq,
            stall_us = taken.stall.as_micros() as u64,
            captured_bytes = taken.captured_bytes,
            "volume point taken"
        );
        let mut shipped = BTreeMap::new();
        for node in &due.replicas {
            match self.ship(&due, node).await {
                Ok(bytes) => {
                    tracing::info!(%app, replica = %node, seq = due.seq, sent_bytes = bytes, "volume point shipped");
                    record_shipped(&app, node, taken.at.elapsed());
                    shipped.insert(node.clone(), bytes);
                }
                Err(why) => {
                    tracing::warn!(%app, replica = %node, seq = due.seq, "point not shipped: {why}");
                    self.report(&app, node, |p| {
                        p.sending = None;
                        p.last_error = Some(why);
                    });
                }
            }
        }
        for node in shipped.keys() {
            let command = Command::ReplicaPoint {
                app: app.clone(),
                node: node.clone(),
                epoch: due.epoch,
                seq: due.seq,
                root: taken.root.clone(),
                age_ms: taken.at.elapsed().as_millis() as u64,
            };
            if let Err(why) = self.ctx.api.submit_as_node(command).await {
                tracing::warn!(%app, replica = %node, seq = due.seq, "point not committed: {why}");
            }
        }
    }

    /// Captures the live copy of `app` into its point, the app paused
    /// around it when the backend needs that, and returns the point's root.
    async fn take_point(&self, app: &str, epoch: u64) -> Result<Taken, String> {
        let live = self.ctx.store.data_dir(app).map_err(|e| e.to_string())?;
        // Only the volume itself is a point's source: a copy that is not
        // complete at the owner's epoch (not made yet, a move writing into
        // it, a promotion not done) may be a mix of moments (invariant 5).
        let (store, name) = (self.ctx.store.clone(), app.to_string());
        let complete = tokio::task::spawn_blocking(move || store.mountable(&name, epoch))
            .await
            .unwrap_or(false);
        if !complete {
            return Err(format!(
                "this node's copy is not complete at epoch {epoch}: no point of it"
            ));
        }
        let point_dir = self.points.volume_dir(app).map_err(|e| e.to_string())?;
        let point = self.points.data_dir(app).map_err(|e| e.to_string())?;
        crate::durable::create_dir_all(&point_dir, 0o777)
            .map_err(|e| format!("creating {}: {e}", point_dir.display()))?;
        let method = self
            .ctx
            .backend
            .capture_method(&live)
            .map_err(|e| e.to_string())?;
        if method == CaptureMethod::Update {
            // Bring the point close while the app runs, so the paused pass
            // copies only what changed meanwhile (a new owner's first point
            // would otherwise copy the whole volume in the pause).
            self.capture(&live, &point)
                .await
                .map_err(|e| format!("copying ahead of the pause: {e}"))?;
        }
        let paused = match method.needs_pause() {
            true => self.running_container(app).await?,
            false => None,
        };
        // The app's stall counts the engine's pause and unpause calls too.
        let at = Instant::now();
        if let Some(id) = &paused {
            self.ctx
                .runtime
                .pause(id)
                .await
                .map_err(|e| format!("pausing {app} for its point: {e}"))?;
        }
        let captured = self.capture_unsettled(&live, &point).await;
        if let Some(id) = &paused {
            self.thaw(app, id).await;
        }
        // The app stalls only while paused; a snapshot costs it nothing.
        let stall = match paused {
            Some(_) => at.elapsed(),
            None => Duration::ZERO,
        };
        let (stats, settle) = captured.map_err(|e| format!("capturing the volume: {e}"))?;
        // The point's fsyncs run with the app thawed; it is scanned and
        // shipped only once durable.
        settled(settle).await?;
        tracing::trace!(%app, ?stats, "captured");
        Ok(Taken {
            at,
            root: self.point_root(app).await?,
            stall,
            captured_bytes: stats.bytes_copied + stats.bytes_reflinked,
        })
    }

    /// The backend's capture of `live` into `point`, durable, off the
    /// async threads.
    async fn capture(
        &self,
        live: &std::path::Path,
        point: &std::path::Path,
    ) -> Result<crate::volume::CaptureStats, String> {
        let (stats, settle) = self.capture_unsettled(live, point).await?;
        settled(settle).await?;
        Ok(stats)
    }

    /// The backend's capture of `live` into `point` up to its data written
    /// (see `Backend::capture_unsettled`), off the async threads.
    async fn capture_unsettled(
        &self,
        live: &std::path::Path,
        point: &std::path::Path,
    ) -> Result<(crate::volume::CaptureStats, crate::volume::Settle), String> {
        let (backend, live, point) = (
            self.ctx.backend.clone(),
            live.to_path_buf(),
            point.to_path_buf(),
        );
        tokio::task::spawn_blocking(move || backend.capture_unsettled(&live, &point))
            .await
            .map_err(|e| format!("capture task: {e}"))?
            .map_err(|e| e.to_string())
    }

    /// The root of `app`'s point as captured (its hash cache makes the
    /// scan cost what changed), in hex.
    async fn point_root(&self, app: &str) -> Result<String, String> {
        let points = self.points.clone();
        let app = app.to_string();
        let root = tokio::task::spawn_blocking(move || {
            let mut scanner = points.scanner(&app, ScanOptions::default())?;
            let (manifest, _) = scanner.scan()?;
            scanner.save()?;
            Ok::<_, crate::volume::VolumeError>(manifest.root())
        })
        .await
        .map_err(|e| format!("scan task: {e}"))?
        .map_err(|e| format!("scanning the point: {e}"))?;
        Ok(crate::volume::replica::root_to_hex(&root))
    }

    /// The container of `app` running here, if one is: the one to pause.
    async fn running_container(&self, app: &str) -> Result<Option<ContainerId>, String> {
        let containers = self
            .ctx
            .runtime
            .list(&self.ctx.labels)
            .await
            .map_err(|e| format!("listing containers: {e}"))?;
        Ok(containers
            .into_iter()
            .find(|c| {
                c.labels.get(LABEL_APP).map(String::as_str) == Some(app)
                    && c.state == ContainerState::Running
            })
            .map(|c| c.id))
    }

    async fn thaw(&self, app: &str, id: &ContainerId) {
        for attempt in 1..=UNPAUSE_TRIES {
            if !self.lease.is_valid() {
                // This process stalled inside the capture (SIGSTOP, a VM
                // pause) past its lease: the leader may have started the
                // app elsewhere already. Thawed, the app would write before
                // its fence saw the lease gone; a SIGKILL while it is
                // frozen runs none of it.
                tracing::warn!(%app, "the lease ran out during the point: removing the frozen container instead of thawing it");
                if let Err(e) = self.ctx.runtime.remove(id, true).await {
                    tracing::error!(%app, "removing the frozen container failed: {e}");
                }
                return;
            }
            match self.ctx.runtime.unpause(id).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(%app, attempt, "unpausing after the point failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        }
        tracing::error!(%app, "left paused after {UNPAUSE_TRIES} tries; the next start removes it");
    }

    /// Publishes a change to what `ctl status` shows of `replica`.
    fn report(&self, app: &str, replica: &str, change: impl FnOnce(&mut ReplicaProgress)) {
        self.ctx.observed.replica_progress(app, replica, change);
    }

    /// Sends the point to `node`'s spare slot; the chunk bytes it took.
    async fn ship(&self, due: &Due, node: &str) -> Result<u64, String> {
        let addr = self.ctx.api.volume_address_of(node).await?;
        let points = self.points.clone();
        let app = due.app.clone();
        let scanner =
            tokio::task::spawn_blocking(move || points.scanner(&app, ScanOptions::default()))
                .await
                .map_err(|e| format!("scan task: {e}"))?
                .map_err(|e| e.to_string())?;
        let hello = ToReceiver::ReplicaHello {
            app: due.app.clone(),
            epoch: due.epoch,
            seq: due.seq,
        };
        let mut session = SenderSession::open_with(
            &self.ctx.volume_net,
            addr,
            node,
            hello,
            scanner,
            self.ctx.rate_limit,
        )
        .await?;
        let mut bytes = 0;
        for _ in 0..MAX_ROUNDS {
            let prepared = session.prepare().await?;
            let total = prepared.stats().send_bytes;
            self.report(&due.app, node, |p| {
                p.bytes_behind = Some(total);
                p.sending = Some((0, total));
            });
            crate::metrics::get()
                .replica_bytes_behind
                .with_label_values(&[&due.app, node])
                .set(total as i64);
            let round = session
                .send_round(prepared, Some(due.epoch), |sent| {
                    self.report(&due.app, node, |p| p.sending = Some((sent, total)))
                })
                .await?;
            bytes += round.bytes;
            if round.complete {
                session.close().await;
                self.report(&due.app, node, |p| {
                    *p = ReplicaProgress {
                        shipped_seq: due.seq,
                        bytes_behind: Some(0),
                        ..ReplicaProgress::default()
                    }
                });
                return Ok(bytes);
            }
        }
        session.close().await;
        Err(format!(
            "{node}'s copy did not match the point after {MAX_ROUNDS} rounds"
        ))
    }
}

/// The metrics of a point of `app` taken `age` ago that reached `replica`:
/// its time (the replica's lag is the time since) and nothing behind.
fn record_shipped(app: &str, replica: &str, age: std::time::Duration) {
    let taken = std::time::SystemTime::now()
        .checked_sub(age)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    let metrics = crate::metrics::get();
    metrics
        .replica_point_timestamp_seconds
        .with_label_values(&[app, replica])
        .set(taken);
    metrics
        .replica_bytes_behind
        .with_label_values(&[app, replica])
        .set(0);
}
