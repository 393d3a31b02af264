//! `ContainerRuntime`: the one trait the agent drives, implemented by the
//! Docker adapter and by the in-memory simulation.
//!
//! It is object-safe (methods return boxed futures) so that a node can hold
//! an `Arc<dyn ContainerRuntime>` and tests can swap engines without generics
//! leaking into the agent. It exposes no engine types. It does not decide
//! anything: restarts, fencing and placement are the agent's and the
//! cluster's; a runtime never restarts a container by itself.

use super::{
    ContainerId, ContainerInfo, ContainerSpec, EventStream, Labels, LogPage, LogQuery, RuntimeError,
};
use futures::future::BoxFuture;
use std::time::Duration;

pub type RuntimeFuture<'a, T> = BoxFuture<'a, Result<T, RuntimeError>>;

pub trait ContainerRuntime: Send + Sync + 'static {
    /// Where the engine is, for messages: `unix:///var/run/docker.sock`, `sim:n1`.
    fn endpoint(&self) -> &str;

    /// Succeeds when the engine answers. The agent uses it to leave the
    /// degraded state once the engine is back.
    fn ping(&self) -> RuntimeFuture<'_, ()>;

    /// Creates (does not start) a container with the engine's restart
    /// policy off. A missing image is `ImageNotPresent`; nothing is pulled.
    fn create<'a>(&'a self, spec: &'a ContainerSpec) -> RuntimeFuture<'a, ContainerId>;

    /// Starts a created or exited container; starting a running one is a
    /// no-op. A taken host port is `PortAllocated` (the container is then
    /// left in `created`, for the caller to remove).
    fn start<'a>(&'a self, id: &'a ContainerId) -> RuntimeFuture<'a, ()>;

    /// Sends SIGTERM, then SIGKILL after `timeout`. Stopping a stopped
    /// container is a no-op.
    fn stop<'a>(&'a self, id: &'a ContainerId, timeout: Duration) -> RuntimeFuture<'a, ()>;

    /// Removes a container; `force` kills it first if it runs. Removing one
    /// that is already gone is `ContainerNotFound`.
    fn remove<'a>(&'a self, id: &'a ContainerId, force: bool) -> RuntimeFuture<'a, ()>;

    /// `None` when no such container exists.
    fn inspect<'a>(&'a self, id: &'a ContainerId) -> RuntimeFuture<'a, Option<ContainerInfo>>;

    /// Every container in any state carrying all of `labels`.
    fn list<'a>(&'a self, labels: &'a Labels) -> RuntimeFuture<'a, Vec<ContainerInfo>>;

    /// The content id of a local image, `None` if it is not on this engine.
    fn image_id<'a>(&'a self, image: &'a str) -> RuntimeFuture<'a, Option<String>>;

    /// The command a container of `image` runs by default (its entrypoint
    /// followed by its cmd), `None` when the image names none or the engine
    /// cannot tell.
    fn image_command<'a>(&'a self, _image: &'a str) -> RuntimeFuture<'a, Option<Vec<String>>> {
        Box::pin(async { Ok(None) })
    }

    fn image_present<'a>(&'a self, image: &'a str) -> RuntimeFuture<'a, bool> {
        Box::pin(async move { Ok(self.image_id(image).await?.is_some()) })
    }

    /// Tries to fetch an image from its registry, bounded in time. Failure is
    /// `ImageNotPresent` with the reason, which is what "no registry is
    /// reachable" looks like to an operator.
    fn pull_image<'a>(&'a self, image: &'a str) -> RuntimeFuture<'a, String>;

    /// Subscribes to events of containers carrying all of `labels`. Events
    /// from the moment of this call on are delivered even if the subscription
    /// is established later, so "subscribe, then list" misses nothing. See
    /// [`EventStream`] for the stream's contract.
    fn events<'a>(&'a self, labels: &'a Labels) -> RuntimeFuture<'a, EventStream>;

    /// Freezes a running container's processes (cgroup freezer), so its
    /// files hold still while a volume point is taken; `unpause` thaws it.
    /// An engine that cannot says so, and points are then taken unpaused
    /// only where the volume backend needs no pause.
    fn pause<'a>(&'a self, id: &'a ContainerId) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            Err(RuntimeError::Other(format!(
                "{} cannot pause containers ({id})",
                self.endpoint()
            )))
        })
    }

    fn unpause<'a>(&'a self, id: &'a ContainerId) -> RuntimeFuture<'a, ()> {
        self.pause(id)
    }

    /// One bounded page of a container's output (see `runtime::logs`). An
    /// engine that keeps no logs says so.
    fn logs<'a>(
        &'a self,
        _id: &'a ContainerId,
        _query: &'a LogQuery,
    ) -> RuntimeFuture<'a, LogPage> {
        Box::pin(async move {
            Err(RuntimeError::Other(format!(
                "the engine at {} keeps no container logs",
                self.endpoint()
            )))
        })
    }
}

/// Conveniences built only from the trait's methods, for every runtime
/// including `dyn ContainerRuntime`.
pub trait ContainerRuntimeExt: ContainerRuntime {
    /// `create` then `start`; a container that fails to start is removed so
    /// that a retry finds its name free.
    fn run<'a>(&'a self, spec: &'a ContainerSpec) -> RuntimeFuture<'a, ContainerId> {
        Box::pin(async move {
            let id = self.create(spec).await?;
            if let Err(e) = self.start(&id).await {
                // Best effort: the start error is what the caller must see.
                let _ = self.remove(&id, true).await;
                return Err(e);
            }
            Ok(id)
        })
    }
}

impl<R: ContainerRuntime + ?Sized> ContainerRuntimeExt for R {}
