//! Pause and unpause through the container's cgroup freezer (see
//! `freezer`), with Docker's own pause where the freezer cannot be used,
//! and the kill-before-thaw that stopping or removing a frozen container
//! needs.

use super::freezer::Freezer;
use super::{errors::Subject, DockerRuntime};
use crate::runtime::RuntimeError;

/// Freezers remembered at most; past it the memory starts over (each is
/// found again from the container's process at its next pause).
const MAX_FREEZERS: usize = 4096;

/// A running container's init process, with the container's full id.
struct Process {
    id: String,
    pid: u32,
}

impl DockerRuntime {
    /// Freezes `id`'s processes: directly through its cgroup, or through
    /// `docker pause` when its cgroup cannot be found from here.
    pub(super) async fn freeze(&self, id: &str) -> Result<(), RuntimeError> {
        let freezer = match self.remembered_freezer(id) {
            Some(f) => f,
            None => {
                let process = self.process_of(id).await?.ok_or_else(|| {
                    RuntimeError::Other(format!("container {id} is not running: nothing to pause"))
                })?;
                match Freezer::of_process(process.pid, &process.id) {
                    Ok(f) => self.remember_freezer(id, f),
                    Err(e) => {
                        tracing::debug!(container = id, "no cgroup freezer ({e}); docker pause");
                        return self.docker_pause(id).await;
                    }
                }
            }
        };
        let frozen = tokio::task::spawn_blocking(move || freezer.freeze()).await;
        match frozen {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RuntimeError::Other(format!("freezing container {id}: {e}"))),
            Err(e) => Err(RuntimeError::Other(format!("freeze task for {id}: {e}"))),
        }
    }

    /// Thaws what `freeze` froze (a `docker pause` is undone by Docker).
    pub(super) async fn thaw(&self, id: &str) -> Result<(), RuntimeError> {
        match self.remembered_freezer(id) {
            Some(f) if f.is_frozen().unwrap_or(false) => f
                .thaw()
                .map_err(|e| RuntimeError::Other(format!("thawing container {id}: {e}"))),
            _ => self.docker_unpause(id).await,
        }
    }

    /// Whether a container Docker reports running is frozen by us (Docker
    /// knows only of its own pauses).
    pub(super) fn frozen_directly(&self, id: &str, pid: Option<i64>) -> bool {
        let freezer = self.remembered_freezer(id).or_else(|| {
            let pid = u32::try_from(pid?).ok().filter(|p| *p > 0)?;
            Freezer::of_process(pid, id).ok()
        });
        freezer.is_some_and(|f| f.is_frozen().unwrap_or(false))
    }

    /// Before a stop or a removal: a frozen container takes no signal until
    /// thawed, and thawed it would run again. SIGKILL first, then the thaw,
    /// so it dies without running another instruction (a stop then finds it
    /// exited). Anything else is left to the stop or removal.
    pub(super) async fn kill_if_frozen(&self, id: &str) {
        let Ok(Some(process)) = self.process_of(id).await else {
            return;
        };
        let freezer = self
            .remembered_freezer(id)
            .or_else(|| Freezer::of_process(process.pid, &process.id).ok());
        let Some(freezer) = freezer.filter(|f| f.is_frozen().unwrap_or(false)) else {
            return;
        };
        let Ok(pid) = libc::pid_t::try_from(process.pid) else {
            return;
        };
        // SAFETY: kill(2) with a pid Docker reports as the container's init;
        // it touches no memory of ours.
        let killed = unsafe { libc::kill(pid, libc::SIGKILL) };
        if killed != 0 {
            tracing::warn!(
                container = id,
                "killing the frozen container: {}",
                std::io::Error::last_os_error()
            );
        }
        if let Err(e) = freezer.thaw() {
            tracing::warn!(container = id, "thawing the killed container: {e}");
        }
    }

    pub(super) fn forget_freezer(&self, id: &str) {
        self.lock_freezers().remove(id);
    }

    fn remembered_freezer(&self, id: &str) -> Option<Freezer> {
        self.lock_freezers().get(id).cloned()
    }

    fn remember_freezer(&self, id: &str, freezer: Freezer) -> Freezer {
        let mut freezers = self.lock_freezers();
        if freezers.len() >= MAX_FREEZERS {
            freezers.clear();
        }
        freezers.insert(id.to_string(), freezer.clone());
        freezer
    }

    /// The init process of `id` while it runs.
    async fn process_of(&self, id: &str) -> Result<Option<Process>, RuntimeError> {
        let Some(r) = self.inspect_raw(id).await? else {
            return Ok(None);
        };
        let pid = r
            .state
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok());
        Ok(match (r.id, pid) {
            (Some(id), Some(pid)) if pid > 0 => Some(Process { id, pid }),
            _ => None,
        })
    }

    async fn docker_pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.call(
            "pause",
            Subject::Container(id),
            self.timeouts.call,
            |d| async move { d.pause_container(id).await },
        )
        .await
    }

    async fn docker_unpause(&self, id: &str) -> Result<(), RuntimeError> {
        self.call(
            "unpause",
            Subject::Container(id),
            self.timeouts.call,
            |d| async move { d.unpause_container(id).await },
        )
        .await
    }
}
