//! The agent: makes this node's container engine match what the cluster
//! placed on this node, and records what it observes.
//!
//! It is event-driven: it wakes on every applied Raft change that alters this
//! node's desired containers and on every engine event for its containers; a
//! periodic full resync (jittered, backing off while nothing changes) is only
//! the safety net. It touches only containers carrying this cluster's and
//! this node's labels. It does not place applications (the leader does), and
//! observations never go through the Raft log: other nodes ask for them.

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
pub use observed::{InstanceStatus, MoveReport, MoveStatus, Observations, MAX_MOVE_REPORTS};
pub use restart::{may_restart, restart_delay};

use crate::raft::StateMachineStore;
use crate::runtime::{
    ContainerEvent, ContainerId, ContainerInfo, ContainerRuntime, ContainerRuntimeExt,
    ContainerState, RuntimeError, UnixNanos, EVENT_BUFFER,
};
use crate::state::VolumeOwner;
use crate::volume::VolumeStore;
use futures::{FutureExt, StreamExt};
use lease::Lease;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
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
}

/// The agent's memory of one application on this node.
#[derive(Debug, Clone, Default)]
struct Track {
    spec_hash: String,
    /// The agent (or a previous run of it) has seen this container run: if it
    /// is then gone or exited, it died.
    started: bool,
    restarts: u32,
    /// Engine operations that failed in a row (a missing image, a taken
    /// port): retried with growing delays, never in a tight loop.
    failures: u32,
    /// No action for this app before this instant.
    next_restart: Option<Instant>,
    last_error: Option<String>,
    /// Its container as the last pass saw it: what tells a removal from
    /// outside apart from an exit the restart policy already decided on.
    seen: Option<Seen>,
    /// A container with its name but other settings was found: someone
    /// replaced it from outside (the removal is ours, the drift is not).
    replaced: bool,
    /// The last drift repair, shown in `ctl status` while nothing else is.
    drift: Option<String>,
}

#[derive(Debug, Clone)]
struct Seen {
    live: bool,
    finished_at: Option<UnixNanos>,
}

/// A container that vanished this soon after it stopped was killed by its
/// removal (`docker rm -f`); one that had exited earlier and was removed
/// later was already left stopped by its restart policy.
const REMOVAL_KILL_WINDOW: Duration = Duration::from_secs(3);

enum Action {
    Remove(ContainerId, String),
    /// Fencing: killed at once, no grace, because the app may start elsewhere.
    Kill(ContainerId, String),
    Run(Box<Desired>),
    Start(String, ContainerId),
}

pub struct Agent {
    ctx: NodeContext,
    runtime: Arc<dyn ContainerRuntime>,
    sm: StateMachineStore,
    lease: Arc<Lease>,
    observed: Observations,
    tracks: HashMap<String, Track>,
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
            tracks: HashMap::new(),
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
            let mut events = match self.runtime.events(&self.ctx.ownership_labels()).await {
                Ok(events) => events,
                Err(e) => {
                    self.set_degraded(Some(&e));
                    tokio::time::sleep(jitter(engine_retry)).await;
                    engine_retry = (engine_retry * 2).min(ENGINE_RETRY_MAX);
                    continue;
                }
            };
            engine_retry = ENGINE_RETRY_MIN;
            let mut resync = RESYNC_MIN;
            let mut resync_at = Instant::now() + jitter(resync);
            self.reconcile().await;
            loop {
                let mut wake = self.next_restart().map_or(resync_at, |r| r.min(resync_at));
                if let Some(expiry) = self.lease_expiry_that_matters() {
                    wake = wake.min(expiry);
                }
                tokio::select! {
                    changed = lease.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        self.reconcile().await;
                    }
                    changed = applied.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let (desired, index) = self.desired();
                        if desired != self.last_desired {
                            self.reconcile().await;
                            resync = RESYNC_MIN;
                            resync_at = Instant::now() + jitter(resync);
                        } else {
                            // Between passes nothing is in flight, and this
                            // state asks for nothing new: acted on as well.
                            self.observed.reconciled(index);
                        }
                    }
                    event = events.next() => match event {
                        Some(Ok(event)) => {
                            self.note_event(&event);
                            // Our own creates and starts come as bursts of
                            // events: one pass answers the whole burst.
                            tokio::time::sleep(EVENT_COALESCE).await;
                            let mut failed = None;
                            for _ in 0..EVENT_BUFFER {
                                match events.next().now_or_never() {
                                    Some(Some(Ok(event))) => self.note_event(&event),
                                    Some(Some(Err(e))) => {
                                        failed = Some(e);
                                        break;
                                    }
                                    Some(None) | None => break,
                                }
                            }
                            if let Some(e) = failed {
                                // Resubscribe and resync; a lagging stream
                                // is not an unreachable engine.
                                if !matches!(e, RuntimeError::EventsLagged { .. }) {
                                    self.set_degraded(Some(&e));
                                }
                                break;
                            }
                            self.reconcile().await;
                        }
                        Some(Err(RuntimeError::EventsLagged { dropped })) => {
                            tracing::warn!(dropped, "engine events lagged; resubscribing and resyncing");
                            break;
                        }
                        Some(Err(e)) => {
                            self.set_degraded(Some(&e));
                            break;
                        }
                        None => {
                            self.set_degraded(Some(&RuntimeError::Other("the engine's event stream ended".into())));
                            break;
                        }
                    },
                    _ = tokio::time::sleep_until(wake) => {
                        self.reconcile().await;
                        if Instant::now() >= resync_at {
                            resync = (resync * 2).min(RESYNC_MAX);
                            resync_at = Instant::now() + jitter(resync);
                        }
                    }
                }
            }
            tokio::time::sleep(jitter(engine_retry)).await;
        }
    }

    /// Apps with a volume that must not run here now, and why.
    async fn volume_holds(&self, desired: &[Desired]) -> BTreeMap<String, String> {
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
    fn lease_expiry_that_matters(&self) -> Option<Instant> {
        if crate::plant::planted(crate::plant::PlantedBug::NoFencing) {
            return None;
        }
        let fenceable = self.last_desired.iter().any(|d| d.fenceable);
        let expiry = self.lease.expires_at()?;
        (fenceable && expiry > Instant::now()).then_some(expiry)
    }

    fn next_restart(&self) -> Option<Instant> {
        self.tracks.values().filter_map(|t| t.next_restart).min()
    }

    fn note_event(&mut self, event: &ContainerEvent) {
        tracing::debug!(id = %event.id.short(), action = ?event.action, exit = ?event.exit_code, "engine event");
    }

    fn set_degraded(&self, error: Option<&RuntimeError>) {
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
        let (all_desired, index) = self.desired();
        let mut desired = all_desired.clone();
        // Invariant 3: without a lease, nothing the cluster may start
        // elsewhere runs here.
        let fenced: Vec<String> = if self.lease.is_valid()
            || crate::plant::planted(crate::plant::PlantedBug::NoFencing)
        {
            Vec::new()
        } else {
            desired
                .iter()
                .filter(|d| d.fenceable)
                .map(|d| d.app.clone())
                .collect()
        };
        desired.retain(|d| !fenced.contains(&d.app));
        // Invariant 4: only the owner runs an app with a volume, and only on
        // a complete copy at the committed epoch.
        let held = self.volume_holds(&desired).await;
        desired.retain(|d| !held.contains_key(&d.app));
        let actual = match self.runtime.list(&self.ctx.ownership_labels()).await {
            Ok(actual) => actual,
            Err(e) => {
                self.set_degraded(Some(&e));
                return;
            }
        };
        self.set_degraded(None);
        let mut actions = Vec::new();
        for c in &actual {
            if c.labels
                .get(LABEL_APP)
                .is_some_and(|app| fenced.contains(app))
                && c.state.is_live()
            {
                tracing::warn!(app = %c.labels[LABEL_APP], "lease expired: killing a container the cluster may start elsewhere");
                actions.push(Action::Kill(c.id.clone(), c.labels[LABEL_APP].clone()));
            }
        }
        let actual: Vec<ContainerInfo> = actual
            .into_iter()
            .filter(|c| {
                !c.labels
                    .get(LABEL_APP)
                    .is_some_and(|app| fenced.contains(app))
            })
            .collect();
        actions.extend(self.plan(&desired, &actual));
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
                Ok(()) => {
                    track.last_error = None;
                    track.failures = 0;
                    track.started |= starts;
                }
                Err(e) => {
                    tracing::warn!(%app, "{e}");
                    track.last_error = Some(describe_error(&self.ctx.node, &e));
                    track.next_restart = Some(Instant::now() + restart_delay(track.failures));
                    track.failures += 1;
                }
            }
        }
        self.last_desired = all_desired;
        self.fenced = fenced;
        self.held = held;
        self.observe().await;
        // Every engine operation of this pass has returned: nothing it
        // started is still on its way (the movers wait on this).
        self.observed.reconciled(index);
    }

    /// Decides what to do; updates the agent's memory of each app.
    fn plan(&mut self, desired: &[Desired], actual: &[ContainerInfo]) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut by_app: BTreeMap<&str, Vec<&ContainerInfo>> = BTreeMap::new();
        for c in actual {
            match c.labels.get(LABEL_APP) {
                Some(app) => by_app.entry(app.as_str()).or_default().push(c),
                None => actions.push(Action::Remove(c.id.clone(), String::new())),
            }
        }
        let now = Instant::now();
        for d in desired {
            let track = self.tracks.entry(d.app.clone()).or_default();
            if track.spec_hash != d.spec_hash {
                *track = Track {
                    spec_hash: d.spec_hash.clone(),
                    ..Track::default()
                };
            }
            let waiting = track.next_restart.is_some_and(|at| at > now);
            let mut current = None;
            let mut name_taken = false;
            for c in by_app.remove(d.app.as_str()).unwrap_or_default() {
                let matches =
                    c.labels.get(LABEL_SPEC) == Some(&d.spec_hash) && c.name == d.spec.name;
                if matches && current.is_none() {
                    current = Some(c);
                } else {
                    // Our name with other settings than the ones this agent
                    // gave it (the track's hash is the desired one): it was
                    // replaced from outside.
                    if c.name == d.spec.name {
                        name_taken = true;
                        track.replaced |= track.started;
                    }
                    // Outdated settings or a duplicate: only the current one stays.
                    actions.push(Action::Remove(c.id.clone(), d.app.clone()));
                }
            }
            if let Some(c) = current {
                track.seen = Some(Seen {
                    live: c.state.is_live(),
                    finished_at: c.finished_at,
                });
            }
            match current {
                None if track.started && removed_from_outside(track) => {
                    // The restart policy governs exits, not removals: the
                    // app is still placed here, so it runs again at once,
                    // through the same checks (lease, volume, releases) as
                    // any start, since `desired` has passed them. Not while
                    // this pass still removes the replacement that holds
                    // its name: its removal's events bring the next pass.
                    if !waiting && !name_taken {
                        let how = if track.replaced {
                            "replaced from outside (other settings)"
                        } else {
                            "removed from outside"
                        };
                        let note = format!(
                            "recreated: its container was {how} at {}",
                            rfc3339(UnixNanos::now())
                        );
                        tracing::warn!(app = %d.app, "{note}");
                        track.drift = Some(note);
                        track.started = false;
                        track.replaced = false;
                        track.seen = None;
                        track.next_restart = None;
                        actions.push(Action::Run(Box::new(d.clone())));
                    }
                }
                Some(c) if c.state.is_live() => {
                    track.started = true;
                    track.next_restart = None;
                    if ran_stably(c) {
                        track.restarts = 0;
                    }
                }
                // Never seen running: a first start (or a retry of one that failed).
                Some(c) if c.state == ContainerState::Created && !track.started => {
                    if !waiting {
                        track.next_restart = None;
                        actions.push(Action::Start(d.app.clone(), c.id.clone()));
                    }
                }
                None if !track.started => {
                    if !waiting {
                        track.next_restart = None;
                        actions.push(Action::Run(Box::new(d.clone())));
                    }
                }
                dead => {
                    // It ran and is now exited, dead, or gone from outside.
                    let exit_code = dead.and_then(|c| c.exit_code);
                    if !may_restart(d.restart, exit_code, track.restarts) {
                        track.next_restart = None;
                        continue;
                    }
                    match track.next_restart {
                        None => track.next_restart = Some(now + restart_delay(track.restarts)),
                        Some(at) if at <= now => {
                            track.next_restart = None;
                            track.restarts += 1;
                            tracing::info!(app = %d.app, restarts = track.restarts, exit = ?exit_code, "restarting per its restart policy");
                            actions.push(match dead {
                                Some(c) => Action::Start(d.app.clone(), c.id.clone()),
                                None => Action::Run(Box::new(d.clone())),
                            });
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        // Containers of apps no longer placed here.
        for (app, containers) in by_app {
            for c in containers {
                actions.push(Action::Remove(c.id.clone(), app.to_string()));
            }
        }
        let wanted: std::collections::HashSet<&str> =
            desired.iter().map(|d| d.app.as_str()).collect();
        self.tracks.retain(|app, _| wanted.contains(app.as_str()));
        actions
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
        self.observed.instances_seen(instances);
    }
}

/// Whether the app's container, gone now, was taken away rather than left
/// stopped by its restart policy: it was last seen live (or never seen since
/// this agent started it), or it stopped just before it vanished.
fn removed_from_outside(track: &Track) -> bool {
    if track.replaced {
        return true;
    }
    match &track.seen {
        None => true,
        Some(seen) if seen.live => true,
        Some(seen) => seen.finished_at.is_none_or(|f| {
            UnixNanos::now().0.saturating_sub(f.0) < REMOVAL_KILL_WINDOW.as_nanos() as i64
        }),
    }
}

fn ran_stably(c: &ContainerInfo) -> bool {
    c.started_at.is_some_and(|s| {
        UnixNanos::now().0.saturating_sub(s.0) > restart::STABLE_RUN.as_nanos() as i64
    })
}

/// Runs one action; returns the app, whether the action starts its
/// container, and the result.
async fn execute(
    runtime: &dyn ContainerRuntime,
    action: Action,
) -> (String, bool, Result<(), RuntimeError>) {
    match action {
        Action::Remove(id, app) => {
            // Graceful first, so an app can flush; then gone.
            let _ = runtime.stop(&id, STOP_GRACE).await;
            let result = match runtime.remove(&id, true).await {
                Err(RuntimeError::ContainerNotFound(_)) => Ok(()),
                other => other,
            };
            (app, false, result)
        }
        Action::Run(desired) => {
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
        Action::Start(app, id) => (app, true, runtime.start(&id).await),
        Action::Kill(id, app) => {
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
    VolumeStore::open(data_dir).map_err(|e| e.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gone_after(seen: Option<Seen>) -> bool {
        removed_from_outside(&Track {
            started: true,
            seen,
            ..Track::default()
        })
    }

    #[test]
    fn a_removal_is_told_from_an_exit_the_policy_decided_on() {
        assert!(
            gone_after(None),
            "started, then gone before any pass saw it"
        );
        assert!(gone_after(Some(Seen {
            live: true,
            finished_at: None
        })));
        // `docker rm -f`: a pass may see it killed just before it vanishes.
        let just_now = UnixNanos(UnixNanos::now().0 - 500_000_000);
        assert!(gone_after(Some(Seen {
            live: false,
            finished_at: Some(just_now)
        })));
        // Exited a minute ago and left stopped, then cleaned up: not drift.
        let a_minute_ago = UnixNanos(UnixNanos::now().0 - 60_000_000_000);
        assert!(!gone_after(Some(Seen {
            live: false,
            finished_at: Some(a_minute_ago)
        })));
        assert!(removed_from_outside(&Track {
            started: true,
            replaced: true,
            seen: Some(Seen {
                live: false,
                finished_at: Some(a_minute_ago)
            }),
            ..Track::default()
        }));
    }
}
