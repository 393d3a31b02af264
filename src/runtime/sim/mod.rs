//! `SimRuntime`: an in-memory `ContainerRuntime` for large in-process
//! simulations, with failures injected on purpose.
//!
//! Containers are records and processes are imaginary: a container runs
//! from `start` until the simulation says it exits (`exit`, `oom_kill`) or an
//! operator stops or removes it. It keeps Docker's observable contract where
//! the agent depends on it: the same error variants, start/stop being no-ops
//! when already done, port conflicts between running containers, events with
//! label filters and strictly increasing times, restart count staying 0. It
//! does not model networking, image layers or Docker's restart policies.

#[cfg(test)]
mod tests;

use crate::runtime::{
    labels_match, ContainerEvent, ContainerId, ContainerInfo, ContainerRuntime, ContainerSpec,
    ContainerState, EventAction, EventStream, Labels, PortBinding, RuntimeError, RuntimeFuture,
    UnixNanos, EVENT_BUFFER,
};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::broadcast;

/// Injected faults waiting for their operation; more is a harness bug.
pub const MAX_INJECTED_FAULTS: usize = 64;

/// Exit codes a real engine reports for the signals involved.
pub const EXIT_SIGTERM: i64 = 143;
pub const EXIT_SIGKILL: i64 = 137;

/// The runtime operations a fault can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimOp {
    Ping,
    Create,
    Start,
    Stop,
    Remove,
    Inspect,
    List,
    ImageId,
    Pull,
    Events,
}

#[derive(Debug, Clone)]
enum Signal {
    Event(ContainerEvent),
    EngineDown,
}

struct Container {
    spec: ContainerSpec,
    info: ContainerInfo,
}

#[derive(Default)]
struct Sim {
    containers: BTreeMap<ContainerId, Container>,
    images: BTreeMap<String, String>,
    /// Images a pull would find; the registry is reachable only for these.
    registry: BTreeMap<String, String>,
    /// A pull finds every reference (the engine `flocker node --engine sim`
    /// runs), not only those in `registry`.
    registry_has_everything: bool,
    /// Host ports held by processes outside the engine.
    occupied: BTreeSet<(IpAddr, u16)>,
    engine_down: bool,
    latency: Duration,
    faults: VecDeque<(SimOp, RuntimeError)>,
    created: u64,
    last_time: i64,
}

pub struct SimRuntime {
    endpoint: String,
    sim: Mutex<Sim>,
    events: broadcast::Sender<Signal>,
}

impl SimRuntime {
    /// An engine named `sim:<name>` with no images and no containers, whose
    /// registry has only what `add_registry_image` puts there: simulations
    /// decide which images exist.
    pub fn new(name: &str) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        SimRuntime {
            endpoint: format!("sim:{name}"),
            sim: Mutex::new(Sim::default()),
            events,
        }
    }

    /// An engine whose registry has every image reference: a pull of any
    /// reference succeeds, so every app can run. This is what `flocker node
    /// --engine sim` uses, where nothing could ever add an image.
    pub fn with_every_image(name: &str) -> Self {
        let runtime = SimRuntime::new(name);
        runtime.lock().registry_has_everything = true;
        runtime
    }

    fn lock(&self) -> MutexGuard<'_, Sim> {
        // Every mutation below is completed before the guard drops, so a
        // panic elsewhere cannot leave a half-applied change.
        self.sim.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `reference` present locally; returns its (deterministic) id.
    pub fn add_image(&self, reference: &str) -> String {
        let id = image_id_for(reference);
        self.lock().images.insert(reference.to_string(), id.clone());
        id
    }

    pub fn remove_image(&self, reference: &str) {
        self.lock().images.remove(reference);
    }

    /// Makes `reference` available to `pull_image`, as if a registry had it.
    pub fn add_registry_image(&self, reference: &str) {
        self.lock()
            .registry
            .insert(reference.to_string(), image_id_for(reference));
    }

    /// A process outside the engine holds `ip:port`.
    pub fn occupy_port(&self, ip: IpAddr, port: u16) {
        self.lock().occupied.insert((ip, port));
    }

    pub fn release_port(&self, ip: IpAddr, port: u16) {
        self.lock().occupied.remove(&(ip, port));
    }

    /// Takes the engine away (every call fails as unreachable and every event
    /// stream ends with that error) or brings it back. Containers keep their
    /// state, as with Docker's live restore.
    pub fn set_engine_down(&self, down: bool) {
        self.lock().engine_down = down;
        if down {
            let _ = self.events.send(Signal::EngineDown);
        }
    }

    /// Delay added to every call, to model a slow engine.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// The next call of `op` fails with `error`. Returns false (and injects
    /// nothing) when [`MAX_INJECTED_FAULTS`] are already waiting.
    #[must_use]
    pub fn fail_next(&self, op: SimOp, error: RuntimeError) -> bool {
        let mut sim = self.lock();
        if sim.faults.len() >= MAX_INJECTED_FAULTS {
            return false;
        }
        sim.faults.push_back((op, error));
        true
    }

    /// The container's main process exits with `code`. Returns false if the
    /// container is unknown or not running.
    pub fn exit(&self, id: &ContainerId, code: i64) -> bool {
        let mut sim = self.lock();
        let Some(running) = sim.live_id(id) else {
            return false;
        };
        let events = sim.finish(&running, code, false);
        drop(sim);
        self.publish(events);
        true
    }

    /// The kernel kills the container for exceeding its memory limit:
    /// `oom`, then `die` with 137, and `oom_killed` set.
    pub fn oom_kill(&self, id: &ContainerId) -> bool {
        let mut sim = self.lock();
        let Some(running) = sim.live_id(id) else {
            return false;
        };
        let mut events = vec![sim.event(&running, EventAction::Oom, None)];
        events.extend(sim.finish(&running, EXIT_SIGKILL, true));
        drop(sim);
        self.publish(events);
        true
    }

    /// Someone runs `docker rm -f` behind the cluster's back.
    pub fn remove_outside(&self, id: &ContainerId) -> bool {
        let mut sim = self.lock();
        let Some(found) = sim.resolve(id) else {
            return false;
        };
        let events = sim.destroy(&found);
        drop(sim);
        self.publish(events);
        true
    }

    /// The spec a container was created from, for assertions (what `docker
    /// inspect` is to the real engine).
    pub fn spec_of(&self, id: &ContainerId) -> Option<ContainerSpec> {
        let sim = self.lock();
        let found = sim.resolve(id)?;
        Some(sim.containers[&found].spec.clone())
    }

    /// Every container, whatever its labels.
    pub fn all_containers(&self) -> Vec<ContainerInfo> {
        let mut all: Vec<ContainerInfo> = self
            .lock()
            .containers
            .values()
            .map(|c| c.info.clone())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn publish(&self, events: Vec<ContainerEvent>) {
        for e in events {
            // No subscriber is not an error: events are hints.
            let _ = self.events.send(Signal::Event(e));
        }
    }

    /// Common prologue: latency, engine down, injected fault.
    async fn enter(&self, op: SimOp) -> Result<(), RuntimeError> {
        let latency = self.lock().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut sim = self.lock();
        if sim.engine_down {
            return Err(RuntimeError::EngineUnreachable {
                endpoint: self.endpoint.clone(),
                reason: "the simulated engine is down".into(),
            });
        }
        if let Some(at) = sim.faults.iter().position(|(o, _)| *o == op) {
            if let Some((_, e)) = sim.faults.remove(at) {
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Sim {
    fn now(&mut self) -> UnixNanos {
        // Strictly increasing, so events order even within one clock tick.
        let t = UnixNanos::now().0.max(self.last_time + 1);
        self.last_time = t;
        UnixNanos(t)
    }

    /// By id, id prefix of 12+ characters, or name, as Docker resolves.
    fn resolve(&self, id: &ContainerId) -> Option<ContainerId> {
        if self.containers.contains_key(id) {
            return Some(id.clone());
        }
        self.containers
            .iter()
            .find(|(k, c)| {
                c.info.name == id.as_str()
                    || (id.as_str().len() >= 12 && k.as_str().starts_with(id.as_str()))
            })
            .map(|(k, _)| k.clone())
    }

    fn live_id(&self, id: &ContainerId) -> Option<ContainerId> {
        self.resolve(id)
            .filter(|found| self.containers[found].info.state.is_live())
    }

    fn event(
        &mut self,
        id: &ContainerId,
        action: EventAction,
        exit_code: Option<i64>,
    ) -> ContainerEvent {
        let time = self.now();
        let c = &self.containers[id];
        ContainerEvent {
            id: id.clone(),
            name: c.info.name.clone(),
            action,
            time,
            exit_code,
            labels: c.info.labels.clone(),
        }
    }

    /// The main process of a live container ends.
    fn finish(&mut self, id: &ContainerId, code: i64, oom: bool) -> Vec<ContainerEvent> {
        let event = self.event(id, EventAction::Die, Some(code));
        if let Some(c) = self.containers.get_mut(id) {
            c.info.state = ContainerState::Exited;
            c.info.exit_code = Some(code);
            c.info.oom_killed = oom;
            c.info.finished_at = Some(event.time);
        }
        vec![event]
    }

    fn destroy(&mut self, id: &ContainerId) -> Vec<ContainerEvent> {
        let mut events = Vec::new();
        if self.containers[id].info.state.is_live() {
            events.push(self.event(id, EventAction::Kill, None));
            events.extend(self.finish(id, EXIT_SIGKILL, false));
        }
        events.push(self.event(id, EventAction::Destroy, None));
        self.containers.remove(id);
        events
    }

    /// The first host binding of `ports` that something else holds.
    fn port_conflict(&self, own: &ContainerId, ports: &[PortBinding]) -> Option<String> {
        let overlaps = |a: IpAddr, b: IpAddr| a == b || a.is_unspecified() || b.is_unspecified();
        for p in ports.iter().filter(|p| p.host_port != 0) {
            let outside = self
                .occupied
                .iter()
                .any(|&(ip, port)| port == p.host_port && overlaps(ip, p.host_ip));
            let inside = self.containers.iter().any(|(id, c)| {
                id != own
                    && c.info.state.is_live()
                    && c.spec.ports.iter().any(|q| {
                        q.host_port == p.host_port
                            && q.protocol == p.protocol
                            && overlaps(q.host_ip, p.host_ip)
                    })
            });
            if outside || inside {
                return Some(format!("{}:{}", p.host_ip, p.host_port));
            }
        }
        None
    }
}

fn image_id_for(reference: &str) -> String {
    format!("sha256:{}", blake3::hash(reference.as_bytes()).to_hex())
}

impl ContainerRuntime for SimRuntime {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn ping(&self) -> RuntimeFuture<'_, ()> {
        Box::pin(self.enter(SimOp::Ping))
    }

    fn create<'a>(&'a self, spec: &'a ContainerSpec) -> RuntimeFuture<'a, ContainerId> {
        Box::pin(async move {
            self.enter(SimOp::Create).await?;
            spec.validate()?;
            let mut sim = self.lock();
            let image_id = sim.images.get(&spec.image).cloned().ok_or_else(|| {
                RuntimeError::ImageNotPresent {
                    image: spec.image.clone(),
                    pull_error: None,
                }
            })?;
            if let Some((existing, _)) = sim
                .containers
                .iter()
                .find(|(_, c)| c.info.name == spec.name)
            {
                return Err(RuntimeError::NameInUse {
                    name: spec.name.clone(),
                    message: format!(
                        "Conflict. The container name \"/{}\" is already in use by container \"{existing}\"",
                        spec.name
                    ),
                });
            }
            sim.created += 1;
            let id = ContainerId(
                blake3::hash(format!("{}/{}", self.endpoint, sim.created).as_bytes())
                    .to_hex()
                    .to_string(),
            );
            let info = ContainerInfo::created(id.clone(), spec, image_id);
            sim.containers.insert(
                id.clone(),
                Container {
                    spec: spec.clone(),
                    info,
                },
            );
            let event = sim.event(&id, EventAction::Create, None);
            drop(sim);
            self.publish(vec![event]);
            Ok(id)
        })
    }

    fn start<'a>(&'a self, id: &'a ContainerId) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            self.enter(SimOp::Start).await?;
            let mut sim = self.lock();
            let found = sim
                .resolve(id)
                .ok_or_else(|| RuntimeError::ContainerNotFound(id.to_string()))?;
            if sim.containers[&found].info.state.is_live() {
                return Ok(());
            }
            let ports = sim.containers[&found].spec.ports.clone();
            if let Some(address) = sim.port_conflict(&found, &ports) {
                let message = format!(
                    "driver failed programming external connectivity on endpoint {}: \
                     Bind for {address} failed: port is already allocated",
                    sim.containers[&found].info.name
                );
                if let Some(c) = sim.containers.get_mut(&found) {
                    c.info.error = Some(message.clone());
                }
                return Err(RuntimeError::PortAllocated {
                    address: Some(address),
                    message,
                });
            }
            let event = sim.event(&found, EventAction::Start, None);
            if let Some(c) = sim.containers.get_mut(&found) {
                c.info.state = ContainerState::Running;
                c.info.started_at = Some(event.time);
                c.info.exit_code = None;
                c.info.oom_killed = false;
                c.info.error = None;
            }
            drop(sim);
            self.publish(vec![event]);
            Ok(())
        })
    }

    fn stop<'a>(&'a self, id: &'a ContainerId, _timeout: Duration) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            self.enter(SimOp::Stop).await?;
            let mut sim = self.lock();
            let found = sim
                .resolve(id)
                .ok_or_else(|| RuntimeError::ContainerNotFound(id.to_string()))?;
            if !sim.containers[&found].info.state.is_live() {
                return Ok(());
            }
            // Docker's order: kill (SIGTERM), die, stop.
            let mut events = vec![sim.event(&found, EventAction::Kill, None)];
            events.extend(sim.finish(&found, EXIT_SIGTERM, false));
            events.push(sim.event(&found, EventAction::Stop, None));
            drop(sim);
            self.publish(events);
            Ok(())
        })
    }

    fn remove<'a>(&'a self, id: &'a ContainerId, force: bool) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            self.enter(SimOp::Remove).await?;
            let mut sim = self.lock();
            let found = sim
                .resolve(id)
                .ok_or_else(|| RuntimeError::ContainerNotFound(id.to_string()))?;
            if !force && sim.containers[&found].info.state.is_live() {
                return Err(RuntimeError::Engine {
                    operation: "remove",
                    status: 409,
                    message: format!(
                        "You cannot remove a running container {found}. Stop the container before \
                         attempting removal or force remove"
                    ),
                });
            }
            let events = sim.destroy(&found);
            drop(sim);
            self.publish(events);
            Ok(())
        })
    }

    fn inspect<'a>(&'a self, id: &'a ContainerId) -> RuntimeFuture<'a, Option<ContainerInfo>> {
        Box::pin(async move {
            self.enter(SimOp::Inspect).await?;
            let sim = self.lock();
            Ok(sim
                .resolve(id)
                .map(|found| sim.containers[&found].info.clone()))
        })
    }

    fn list<'a>(&'a self, labels: &'a Labels) -> RuntimeFuture<'a, Vec<ContainerInfo>> {
        Box::pin(async move {
            self.enter(SimOp::List).await?;
            let mut found: Vec<ContainerInfo> = self
                .lock()
                .containers
                .values()
                .filter(|c| labels_match(&c.info.labels, labels))
                .map(|c| c.info.clone())
                .collect();
            found.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
            Ok(found)
        })
    }

    fn image_id<'a>(&'a self, image: &'a str) -> RuntimeFuture<'a, Option<String>> {
        Box::pin(async move {
            self.enter(SimOp::ImageId).await?;
            Ok(self.lock().images.get(image).cloned())
        })
    }

    fn pull_image<'a>(&'a self, image: &'a str) -> RuntimeFuture<'a, String> {
        Box::pin(async move {
            self.enter(SimOp::Pull).await?;
            let mut sim = self.lock();
            let found = match sim.registry.get(image) {
                Some(id) => Some(id.clone()),
                None if sim.registry_has_everything => Some(image_id_for(image)),
                None => None,
            };
            match found {
                Some(id) => {
                    sim.images.insert(image.to_string(), id.clone());
                    Ok(id)
                }
                None => Err(RuntimeError::ImageNotPresent {
                    image: image.to_string(),
                    pull_error: Some(format!("no simulated registry has {image}")),
                }),
            }
        })
    }

    fn events<'a>(&'a self, labels: &'a Labels) -> RuntimeFuture<'a, EventStream> {
        Box::pin(async move {
            // Subscribed before the engine check, so that going down right
            // after it still reaches this stream.
            let rx = self.events.subscribe();
            self.enter(SimOp::Events).await?;
            let endpoint = self.endpoint.clone();
            let filter = labels.clone();
            // `Some(rx)` while the stream is open; `None` once it has
            // yielded its final error.
            let stream = futures::stream::unfold(Some(rx), move |rx| {
                let endpoint = endpoint.clone();
                let filter = filter.clone();
                async move {
                    let mut rx = rx?;
                    loop {
                        match rx.recv().await {
                            Ok(Signal::Event(e)) if labels_match(&e.labels, &filter) => {
                                return Some((Ok(e), Some(rx)))
                            }
                            Ok(Signal::Event(_)) => continue,
                            Ok(Signal::EngineDown) => {
                                let e = RuntimeError::EngineUnreachable {
                                    endpoint,
                                    reason: "the simulated engine went down".into(),
                                };
                                return Some((Err(e), None));
                            }
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                return Some((Err(RuntimeError::EventsLagged { dropped: n }), None))
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                }
            });
            Ok(stream.boxed())
        })
    }
}
