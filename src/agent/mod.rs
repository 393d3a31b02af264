//! The agent: makes this node's container engine match what the cluster
//! placed on this node, and records what it observes.
//!
//! It is event-driven: it wakes on every applied Raft change that alters this
//! node's desired containers and on every engine event for its containers; a
//! periodic full resync (jittered, backing off while nothing changes) is only
//! the safety net. It touches only containers carrying this cluster's and
//! this node's labels. It does not place applications (the leader does), and
//! observations never go through the Raft log: other nodes ask for them.

mod decide;
mod desired;
pub mod fence;
pub mod lease;
mod observed;
mod restart;
pub mod usage;

pub use desired::{
    container_name, desired_containers, link_environment, port_protocol, Desired, NodeContext,
    LABEL_APP, LABEL_CLUSTER, LABEL_CONFIG_VERSION, LABEL_NODE, LABEL_SPEC,
};
pub use observed::{
    InstanceStatus, MoveReport, MoveStatus, Observations, ReplicaProgress, MAX_MOVE_REPORTS,
};
pub use restart::{may_restart, restart_delay};

use crate::raft::StateMachineStore;
use crate::runtime::{
    ContainerEvent, ContainerInfo, ContainerRuntime, ContainerRuntimeExt, ContainerState,
    EventStream, RuntimeError, UnixNanos, EVENT_BUFFER,
};
use crate::state::VolumeOwner;
use crate::volume::VolumeStore;
use decide::{Action, Decision, Now, Pass, Track, Tracks, Why};
use futures::{FutureExt, StreamExt};
use lease::Lease;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Safety-net resync interval: starts here after any change, doubles while
/// nothing changes, up to the maximum; each wait is jittered by ±20 %.
pub const RESYNC_MIN: Duration = Duration::from_secs(5);
pub const RESYNC_MAX: Duration = Duration::from_secs(60);
/// How long the agent lets a burst of engine events gather before one pass.
const EVENT_COALESCE: Duration = Duration::from_millis(20);
/// Engine operations the agent runs at once.
pub const MAX_PARALLEL_OPS: usize = 8;
/// How long a container may take to stop gracefully before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Wait before re-subscribing to a failed engine, growing to the maximum.
const ENGINE_RETRY_MIN: Duration = Duration::from_millis(500);
const ENGINE_RETRY_MAX: Duration = Duration::from_secs(10);

/// What this node's agent sees, served to `ctl status` on request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// `None` while the engine answers; otherwise why the node is degraded.
    pub degraded: Option<String>,
    /// By application.
    pub instances: BTreeMap<String, InstanceStatus>,
    /// Volume moves this node is sending, by application (`crate::moves`).
    #[serde(default)]
    pub moves: BTreeMap<String, MoveStatus>,
    /// The last finished move this node sent, by application.
    #[serde(default)]
    pub moved: BTreeMap<String, MoveReport>,
    /// Disk used by the volumes this node owns, by application.
    #[serde(default)]
    pub volumes: BTreeMap<String, usage::VolumeUsage>,
    /// The applied index of the state the last finished pass acted on.
    #[serde(default)]
    pub reconciled_index: u64,
    /// Points this node ships as owner, by app and replica (issue 15).
    #[serde(default)]
    pub replication: BTreeMap<String, BTreeMap<String, ReplicaProgress>>,
}

/// Why the agent stopped following its event stream.
#[derive(PartialEq)]
enum Followed {
    /// The state machine is gone: the node is stopping.
    StateGone,
    /// The stream failed or lagged: subscribe again and resync.
    Resubscribe,
}

pub struct Agent {
    ctx: NodeContext,
    runtime: Arc<dyn ContainerRuntime>,
    sm: StateMachineStore,
    lease: Arc<Lease>,
    observed: Observations,
    tracks: Tracks,
    /// Desired containers at the last reconcile, to skip applied changes that
    /// do not concern this node.
    last_desired: Vec<Desired>,
    /// Apps placed here but fenced at the last reconcile (no lease).
    fenced: Vec<String>,
    /// Apps placed here that cannot run for their volume, and why.
    held: BTreeMap<String, String>,
    /// This node's volume copies; `None` if the store could not be opened.
    volumes: Option<VolumeStore>,
}

impl Agent {
    pub fn new(
        ctx: NodeContext,
        runtime: Arc<dyn ContainerRuntime>,
        sm: StateMachineStore,
        lease: Arc<Lease>,
    ) -> Agent {
        Agent {
            runtime,
            sm,
            lease,
            observed: Observations::default(),
            tracks: Tracks::new(),
            last_desired: Vec::new(),
            fenced: Vec::new(),
            held: BTreeMap::new(),
            volumes: match ctx_volume_store(&ctx) {
                Ok(store) => Some(store),
                Err(e) => {
                    tracing::error!("volume store unusable; apps with volumes will not start: {e}");
                    None
                }
            },
            ctx,
        }
    }

    /// The node's lease, as this agent acts on it.
    pub fn lease(&self) -> Arc<Lease> {
        self.lease.clone()
    }

    pub fn observed(&self) -> Observations {
        self.observed.clone()
    }

    /// The containers to run, and the applied index they were read at.
    fn desired(&self) -> (Vec<Desired>, u64) {
        let applied = self.sm.read();
        let index = applied.index();
        (desired_containers(&self.ctx, &applied.state), index)
    }

    /// Runs until the state machine goes away.
    pub async fn run(mut self) {
        let mut applied = self.sm.subscribe();
        let mut lease = self.lease.subscribe();
        let mut engine_retry = ENGINE_RETRY_MIN;
        loop {
            // Subscribe before listing, so no event between the two is lost.
            match self.runtime.events(&self.ctx.ownership_labels()).await {
                Ok(events) => {
                    engine_retry = ENGINE_RETRY_MIN;
                    if self.follow(events, &mut applied, &mut lease).await == Followed::StateGone {
                        return;
                    }
                }
                Err(e) => {
                    self.set_degraded(Some(&e));
                    tokio::time::sleep(jitter(engine_retry)).await;
                    engine_retry = (engine_retry * 2).min(ENGINE_RETRY_MAX);
                    continue;
                }
            }
            tokio::time::sleep(jitter(engine_retry)).await;
        }
    }

    /// Reconciles on every change of the applied state, the lease or the
    /// engine, on due restarts and on the safety-net resync, until the state
    /// machine goes away or the engine's event stream must be replaced.
    async fn follow(
        &mut self,
        mut events: EventStream,
        applied: &mut watch::Receiver<u64>,
        lease: &mut watch::Receiver<bool>,
    ) -> Followed {
        let mut resync = RESYNC_MIN;
        let mut resync_at = Instant::now() + jitter(resync);
        self.reconcile().await;
        loop {
            tokio::select! {
                changed = lease.changed() => {
                    if changed.is_err() {
                        return Followed::StateGone;
                    }
                    self.reconcile().await;
                }
                changed = applied.changed() => {
                    if changed.is_err() {
                        return Followed::StateGone;
                    }
                    if self.on_applied().await {
                        resync = RESYNC_MIN;
                        resync_at = Instant::now() + jitter(resync);
                    }
                }
                event = events.next() => if !self.on_event(event, &mut events).await {
                    return Followed::Resubscribe;
                },
                _ = tokio::time::sleep_until(self.wake_at(resync_at)) => {
                    self.reconcile().await;
                    if Instant::now() >= resync_at {
                        resync = (resync * 2).min(RESYNC_MAX);
                        resync_at = Instant::now() + jitter(resync);
                    }
                }
            }
        }
    }

    /// The next pass due without an event: a restart, the lease running
    /// out with something to fence, or the resync.
    fn wake_at(&self, resync_at: Instant) -> Instant {
        let restart = self.tracks.values().filter_map(|t| t.next_restart).min();
        let mut wake = restart.map_or(resync_at, |r| r.min(resync_at));
        if let Some(expiry) = self.lease_expiry_that_matters() {
            wake = wake.min(expiry);
        }
        wake
    }

    /// A new applied state: a pass if it changes what runs here (true).
    async fn on_applied(&mut self) -> bool {
        let (desired, index) = self.desired();
        if desired != self.last_desired {
            self.reconcile().await;
            return true;
        }
        // Between passes nothing is in flight, and this state asks for
        // nothing new: acted on as well.
        self.observed.reconciled(index);
        false
    }

    /// An engine event (or the stream's end): one pass for the whole burst
    /// it starts; false when the stream must be replaced.
    async fn on_event(
        &mut self,
        event: Option<Result<ContainerEvent, RuntimeError>>,
        events: &mut EventStream,
    ) -> bool {
        match event {
            Some(Ok(event)) => {
                self.note_event(&event);
                // Our own creates and starts come as bursts of events: one
                // pass answers the whole burst.
                tokio::time::sleep(EVENT_COALESCE).await;
                if let Some(e) = self.drain_burst(events) {
                    // Resubscribe and resync; a lagging stream is not an
                    // unreachable engine.
                    if !matches!(e, RuntimeError::EventsLagged { .. }) {
                        self.set_degraded(Some(&e));
                    }
                    return false;
                }
                self.reconcile().await;
                true
            }
            Some(Err(RuntimeError::EventsLagged { dropped })) => {
                tracing::warn!(dropped, "engine events lagged; resubscribing and resyncing");
                false
            }
            Some(Err(e)) => {
                self.set_degraded(Some(&e));
                false
            }
            None => {
                let ended = RuntimeError::Other("the engine's event stream ended".into());
                self.set_degraded(Some(&ended));
                false
            }
        }
    }

    /// Takes the events already waiting (bounded); the stream's error, if
    /// it failed among them.
    fn drain_burst(&self, events: &mut EventStream) -> Option<RuntimeError> {
        for _ in 0..EVENT_BUFFER {
            match events.next().now_or_never() {
                Some(Some(Ok(event))) => self.note_event(&event),
                Some(Some(Err(e))) => return Some(e),
                Some(None) | None => return None,
            }
        }
        None
    }

    /// Apps with a volume that must not run here now, and why.
    async fn volume_holds(
        &self,
        desired: impl Iterator<Item = &Desired>,
    ) -> BTreeMap<String, String> {
        let mut held = BTreeMap::new();
        for d in desired {
            let Some(owner) = &d.volume else { continue };
            // `runs_on` puts an app with a volume only on the owner.
            debug_assert_eq!(owner.node, self.ctx.node);
            if let Err(why) = self.volume_ready(&d.app, owner).await {
                held.insert(d.app.clone(), why);
            }
        }
        held
    }

    /// Makes sure this owner has a complete copy at `epoch`: a brand new
    /// volume (epoch 1, no copy anywhere yet) starts empty. File work runs
    /// off the async threads (adopting a copy scans all of it).
    async fn volume_ready(&self, app: &str, owner: &VolumeOwner) -> Result<(), String> {
        let Some(store) = self.volumes.clone() else {
            return Err("this node's volume store is unusable".into());
        };
        let (app, owner) = (app.to_string(), owner.clone());
        tokio::task::spawn_blocking(move || prepare_volume(&store, &app, &owner))
            .await
            .map_err(|e| format!("volume check: {e}"))?
    }

    /// When the lease runs out, if this node runs anything it must fence then.
    /// When the lease runs out, if this node runs anything it must fence then.
    fn lease_expiry_that_matters(&self) -> Option<Instant> {
        if crate::plant::planted(crate::plant::PlantedBug::NoFencing) {
            return None;
        }
        decide::fence_deadline(&self.last_desired, self.lease.expires_at(), Instant::now())
    }

    fn note_event(&self, event: &ContainerEvent) {
        tracing::debug!(id = %event.id.short(), action = ?event.action, exit = ?event.exit_code, "engine event");
    }

    fn set_degraded(&self, error: Option<&RuntimeError>) {
        if error.is_some() {
            crate::metrics::get().agent_engine_errors_total.inc();
        }
        let now = error.map(|e| e.to_string());
        if self.observed.engine_degraded(now.clone()) {
            match &now {
                Some(why) => tracing::warn!("node degraded: {why}"),
                None => tracing::info!("container engine reachable again"),
            }
        }
    }

    /// One full pass: compare the engine with the desired containers and act.
    pub async fn reconcile(&mut self) {
        let started = Instant::now();
        self.reconcile_pass().await;
        let metrics = crate::metrics::get();
        metrics.agent_reconcile_total.inc();
        metrics
            .agent_reconcile_seconds
            .observe(crate::metrics::secs(started.elapsed()));
    }

    async fn reconcile_pass(&mut self) {
        let (desired, index) = self.desired();
        // Invariant 3: without a lease, nothing the cluster may start
        // elsewhere runs here.
        let lease_valid =
            self.lease.is_valid() || crate::plant::planted(crate::plant::PlantedBug::NoFencing);
        let fenced = decide::fenced(&desired, lease_valid);
        // Invariant 4: only the owner runs an app with a volume, and only on
        // a complete copy at the committed epoch.
        let held = self
            .volume_holds(desired.iter().filter(|d| !fenced.contains(&d.app)))
            .await;
        let actual = match self.runtime.list(&self.ctx.ownership_labels()).await {
            Ok(actual) => actual,
            Err(e) => {
                self.set_degraded(Some(&e));
                return;
            }
        };
        self.set_degraded(None);
        let pass = Pass {
            desired: &desired,
            fenced: &fenced,
            held: &held,
            actual: &actual,
            now: Now {
                instant: Instant::now(),
                wall: UnixNanos::now(),
            },
        };
        let Decision { actions, tracks } = decide::decide(&pass, &self.tracks);
        self.tracks = tracks;
        self.act(actions).await;
        self.last_desired = desired;
        self.fenced = fenced;
        self.held = held;
        self.observe().await;
        // Every engine operation of this pass has returned: nothing it
        // started is still on its way (the movers wait on this).
        self.observed.reconciled(index);
    }

    /// Runs a pass's actions, at most [`MAX_PARALLEL_OPS`] at once, and
    /// records their results in the apps' tracks.
    async fn act(&mut self, actions: Vec<Action>) {
        actions.iter().for_each(log_action);
        let runtime = self.runtime.clone();
        let results: Vec<(String, bool, Result<(), RuntimeError>)> = futures::stream::iter(actions)
            .map(|action| {
                let runtime = runtime.clone();
                async move { execute(&*runtime, action).await }
            })
            .buffer_unordered(MAX_PARALLEL_OPS)
            .collect()
            .await;
        for (app, starts, result) in results {
            let Some(track) = self.tracks.get_mut(&app) else {
                continue;
            };
            match result {
                Ok(()) => track.succeeded(starts),
                Err(e) => {
                    crate::metrics::get().agent_engine_errors_total.inc();
                    tracing::warn!(%app, "{e}");
                    track.failed(describe_error(&self.ctx.node, &e), Instant::now());
                }
            }
        }
    }

    /// Refreshes the observed instances from the engine.
    async fn observe(&mut self) {
        let actual = match self.runtime.list(&self.ctx.ownership_labels()).await {
            Ok(actual) => actual,
            Err(e) => {
                self.set_degraded(Some(&e));
                return;
            }
        };
        let observed_at = rfc3339(UnixNanos::now());
        let mut instances = BTreeMap::new();
        for d in &self.last_desired {
            let track = self.tracks.get(&d.app).cloned().unwrap_or_default();
            let container = actual.iter().find(|c| c.name == d.spec.name);
            let mut seen = instance(&self.ctx.node, container, &track, &observed_at);
            if self.fenced.contains(&d.app) {
                seen.last_error = Some(format!(
                    "fenced: {} has not heard from a quorum within its lease",
                    self.ctx.node
                ));
            } else if let Some(why) = self.held.get(&d.app) {
                seen.last_error = Some(why.clone());
            }
            instances.insert(d.app.clone(), seen);
        }
        for c in &actual {
            if let Some(app) = c.labels.get(LABEL_APP) {
                instances.entry(app.clone()).or_insert_with(|| {
                    instance(&self.ctx.node, Some(c), &Track::default(), &observed_at)
                });
            }
        }
        count_containers(&instances, self.fenced.len());
        self.observed.instances_seen(instances);
    }
}

/// Container states the metrics name; any other state counts as `other`,
/// so the label stays bounded whatever an engine reports.
const CONTAINER_STATES: [&str; 7] = [
    "created",
    "running",
    "paused",
    "restarting",
    "exited",
    "missing",
    "other",
];

/// Sets the containers-by-state and fenced-apps gauges from a pass.
fn count_containers(instances: &BTreeMap<String, InstanceStatus>, fenced: usize) {
    let metrics = crate::metrics::get();
    for state in CONTAINER_STATES {
        let count = instances
            .values()
            .filter(|i| {
                let known = CONTAINER_STATES.contains(&i.state.as_str());
                i.state == state || (state == "other" && !known)
            })
            .count();
        metrics
            .agent_containers
            .with_label_values(&[state])
            .set(count as i64);
    }
    metrics.fenced_apps.set(fenced as i64);
}

/// What the log says of an action before it runs.
fn log_action(action: &Action) {
    let (app, why) = match action {
        Action::Kill { app, .. } => {
            tracing::warn!(%app, "lease expired: killing a container the cluster may start elsewhere");
            return;
        }
        Action::Remove { .. } => return,
        Action::Run { desired, why } => (&desired.app, why),
        Action::Start { app, why, .. } => (app, why),
    };
    match why {
        Why::First => {}
        Why::Restart {
            restarts,
            exit_code,
        } => {
            tracing::info!(%app, restarts, exit = ?exit_code, "restarting per its restart policy")
        }
        Why::Recreate { note } => tracing::warn!(%app, "{note}"),
    }
}

/// Runs one action; returns the app, whether the action starts its
/// container, and the result.
async fn execute(
    runtime: &dyn ContainerRuntime,
    action: Action,
) -> (String, bool, Result<(), RuntimeError>) {
    match action {
        Action::Remove { id, app } => {
            // Graceful first, so an app can flush; then gone.
            let _ = runtime.stop(&id, STOP_GRACE).await;
            let result = match runtime.remove(&id, true).await {
                Err(RuntimeError::ContainerNotFound(_)) => Ok(()),
                other => other,
            };
            (app, false, result)
        }
        Action::Run { desired, .. } => {
            let app = desired.app.clone();
            let mut spec = desired.spec.clone();
            if spec.entrypoint.is_some() && spec.command.is_none() {
                // The fence replaces the entrypoint, which makes Docker drop
                // the image's command: pass the image's own command to it.
                match runtime.image_command(&spec.image).await {
                    Ok(Some(command)) => spec.command = Some(command),
                    Ok(None) => {
                        let e = RuntimeError::InvalidSpec(format!(
                            "image {} names no command; give the app a `command`",
                            spec.image
                        ));
                        return (app, true, Err(e));
                    }
                    Err(e) => return (app, true, Err(e)),
                }
            }
            let result = match runtime.image_present(&spec.image).await {
                Ok(true) => runtime.run(&spec).await.map(|_| ()),
                // Not here: try a pull (bounded in time), which fails with
                // "no registry is reachable" where there is none.
                Ok(false) => match runtime.pull_image(&spec.image).await {
                    Ok(_) => runtime.run(&spec).await.map(|_| ()),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            (app, true, result)
        }
        Action::Start { id, app, .. } => (app, true, runtime.start(&id).await),
        Action::Kill { id, app } => {
            let result = match runtime.remove(&id, true).await {
                Err(RuntimeError::ContainerNotFound(_)) => Ok(()),
                other => other,
            };
            (app, false, result)
        }
    }
}

fn describe_error(node: &str, e: &RuntimeError) -> String {
    match e {
        RuntimeError::ImageNotPresent { image, pull_error } => format!(
            "image {image} not present on {node} and no registry is reachable{}",
            pull_error
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

fn instance(
    node: &str,
    c: Option<&ContainerInfo>,
    track: &Track,
    observed_at: &str,
) -> InstanceStatus {
    InstanceStatus {
        node: node.to_string(),
        state: match c.map(|c| &c.state) {
            None => "missing",
            Some(s) if s.is_live() => "running",
            Some(ContainerState::Created) => "created",
            Some(_) => "exited",
        }
        .to_string(),
        container_id: c.map(|c| c.id.short().to_string()),
        image_id: c.map(|c| c.image_id.clone()),
        started_at: c.and_then(|c| c.started_at).map(rfc3339),
        restarts: track.restarts,
        exit_code: c.and_then(|c| c.exit_code),
        last_error: track
            .last_error
            .clone()
            .or_else(|| c.and_then(|c| c.error.clone()))
            .or_else(|| track.drift.clone()),
        observed_at: observed_at.to_string(),
    }
}

pub fn rfc3339(t: UnixNanos) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// ±20 % so that many agents do not resync in lockstep.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.8..1.2))
}

/// The volume store under this node's data directory (`<data-dir>/volumes`).
fn ctx_volume_store(ctx: &NodeContext) -> Result<VolumeStore, String> {
    let data_dir = ctx
        .volumes_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", ctx.volumes_dir.display()))?;
    let store = VolumeStore::open(data_dir).map_err(|e| e.to_string())?;
    Ok(match &ctx.volume_backend {
        Some(backend) => store.with_backend(backend.clone()),
        None => store,
    })
}

/// A failover made this node the owner from its replica's `point`: that
/// slot, and only that one, becomes the live copy at `epoch`.
fn promote_replica(
    store: &VolumeStore,
    app: &str,
    point: &crate::state::ReplicaPoint,
    epoch: u64,
) -> Result<(), String> {
    use crate::volume::replica::{root_from_hex, HeldPoint, ReplicaSlots};
    if point.seq == 0 {
        // The copy this node handed off (`State::failover_source`): its own,
        // complete at the epoch it owned the volume at.
        return match store.remark_complete(app, point.epoch, epoch) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "its copy here is not complete at epoch {}; it will not be mounted",
                point.epoch
            )),
            Err(e) => Err(format!("taking back its copy: {e}")),
        };
    }
    let data_dir = store
        .root()
        .parent()
        .ok_or("the volume store has no parent directory")?;
    let slots = ReplicaSlots::open(data_dir).map_err(|e| e.to_string())?;
    let held = HeldPoint {
        epoch: point.epoch,
        seq: point.seq,
        root: root_from_hex(&point.root).ok_or("the committed point's root is not hex")?,
    };
    let slot = slots.holding(app, &held).ok_or_else(|| {
        format!(
            "no replica slot here holds point {} of epoch {}; it will not be mounted",
            point.seq, point.epoch
        )
    })?;
    slots
        .promote(slot, app, &held, store, epoch)
        .map_err(|e| format!("promoting the replica: {e}"))
}

/// The owner's side of `volume_ready`, blocking.
fn prepare_volume(store: &VolumeStore, app: &str, owner: &VolumeOwner) -> Result<(), String> {
    let epoch = owner.epoch;
    let exists = store.exists(app).map_err(|e| e.to_string())?;
    if !exists && (epoch == 1 || owner.adopt) {
        store
            .create_empty(app, epoch)
            .map_err(|e| format!("creating its volume: {e}"))?;
        tracing::info!(%app, epoch, "created an empty volume");
    } else if let Some(point) = owner
        .from_point
        .as_ref()
        .filter(|_| !store.mountable(app, epoch))
    {
        promote_replica(store, app, point, epoch)?;
        tracing::warn!(%app, epoch, seq = point.seq, point_epoch = point.epoch, "failed over: this node's replica of the volume is now the volume");
    } else if exists && owner.adopt && !store.mountable(app, epoch) {
        // `volume recover --accept-data-loss`: this copy becomes the
        // volume at the new epoch, whatever it holds.
        store
            .adopt_as_complete(app, epoch, crate::volume::ScanOptions::default())
            .map_err(|e| format!("adopting its copy at epoch {epoch}: {e}"))?;
        tracing::warn!(%app, epoch, "adopted this node's copy of the volume (data loss accepted)");
    }
    if store.mountable(app, epoch) {
        Ok(())
    } else {
        Err(format!(
            "its volume here is not a complete copy at epoch {epoch}; it will not be mounted"
        ))
    }
}
