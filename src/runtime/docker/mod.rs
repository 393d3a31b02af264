//! `DockerRuntime`: the `ContainerRuntime` for a real Docker engine on a
//! local unix socket, through bollard.
//!
//! It owns the connection: created lazily, version-negotiated (bollard 0.21
//! speaks API 1.53 by default; Debian's docker.io 20.10 speaks 1.41), and
//! dropped after any sign that the engine went away so that the next call
//! reconnects and renegotiates. That is how a node recovers when Docker comes
//! back. Every call has its own deadline. It never pulls on its own, never
//! restarts anything, and never touches a container it was not named.

mod convert;
mod errors;
mod events;
mod freeze_ops;
mod freezer;
mod test_image;

pub use test_image::{build_busybox_image, BUSYBOX_PATH, TEST_IMAGE};

use crate::runtime::logs::{self, PageBuilder};
use crate::runtime::{
    ContainerId, ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, EventStream,
    Labels, LogLine, LogPage, LogQuery, RuntimeError, RuntimeFuture, UnixNanos,
};
use bollard::container::LogOutput;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, EventsOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use errors::{map_error, Subject};
use futures::{Future, StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Where Docker listens unless `DOCKER_HOST` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";

/// Containers inspected at once when listing: enough to list a node's
/// containers in a few round trips, few enough not to crowd the engine.
const LIST_CONCURRENCY: usize = 8;

/// Longest stop grace accepted; a larger request is clamped.
pub const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(300);

/// bollard's own per-request deadline. Ours are all shorter and fire first;
/// this only backs them up.
const BOLLARD_BACKSTOP: Duration = Duration::from_secs(3600);

/// Deadlines for calls to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DockerTimeouts {
    /// Connecting, version negotiation and ping: a healthy local engine
    /// answers in milliseconds.
    pub ping: Duration,
    /// Create, start, inspect, list, remove, image inspect.
    pub call: Duration,
    /// Added to the stop grace for `stop`.
    pub stop_margin: Duration,
    /// A registry pull; past it the registry counts as unreachable.
    pub pull: Duration,
    /// Building an image from a local context.
    pub build: Duration,
}

impl Default for DockerTimeouts {
    fn default() -> Self {
        DockerTimeouts {
            ping: Duration::from_secs(5),
            call: Duration::from_secs(30),
            stop_margin: Duration::from_secs(30),
            pull: Duration::from_secs(120),
            build: Duration::from_secs(300),
        }
    }
}

pub struct DockerRuntime {
    /// `unix:///path`, as given; used in every message.
    endpoint: String,
    socket: String,
    timeouts: DockerTimeouts,
    /// The negotiated client, `None` until the first call and after the
    /// engine was seen gone.
    client: Mutex<Option<Docker>>,
    /// Freezers of the containers this runtime paused, by the id it was
    /// given (`freeze_ops`).
    freezers: Mutex<HashMap<String, freezer::Freezer>>,
}

impl DockerRuntime {
    /// The engine at `DOCKER_HOST` when it is a `unix://` address, else at
    /// [`DEFAULT_ENDPOINT`]. Does not contact the engine.
    pub fn local() -> Self {
        let endpoint = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| h.starts_with("unix://"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        Self::on_socket(
            endpoint.trim_start_matches("unix://").to_string(),
            DockerTimeouts::default(),
        )
    }

    /// An engine on a unix socket (`unix:///run/docker.sock` or a bare path).
    /// Does not contact the engine, so a node can start while Docker is down.
    pub fn new(endpoint: &str, timeouts: DockerTimeouts) -> Result<Self, RuntimeError> {
        let socket = match endpoint.strip_prefix("unix://") {
            Some(path) => path.to_string(),
            None if endpoint.starts_with('/') => endpoint.to_string(),
            None => {
                return Err(RuntimeError::Other(format!(
                    "Docker endpoint {endpoint:?}: only unix:// sockets are supported"
                )))
            }
        };
        Ok(Self::on_socket(socket, timeouts))
    }

    fn on_socket(socket: String, timeouts: DockerTimeouts) -> Self {
        DockerRuntime {
            endpoint: format!("unix://{socket}"),
            socket,
            timeouts,
            client: Mutex::new(None),
            freezers: Mutex::new(HashMap::new()),
        }
    }

    pub fn timeouts(&self) -> DockerTimeouts {
        self.timeouts
    }

    /// The API version in use after negotiation (e.g. "1.41").
    pub async fn api_version(&self) -> Result<String, RuntimeError> {
        Ok(self.client().await?.client_version().to_string())
    }

    /// A connected, negotiated client.
    async fn client(&self) -> Result<Docker, RuntimeError> {
        if let Some(docker) = self.lock_client().clone() {
            return Ok(docker);
        }
        let unreachable = |reason: String| RuntimeError::EngineUnreachable {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let docker = Docker::connect_with_unix(
            &self.socket,
            BOLLARD_BACKSTOP.as_secs(),
            API_DEFAULT_VERSION,
        )
        .map_err(|e| unreachable(e.to_string()))?;
        let docker =
            match tokio::time::timeout(self.timeouts.ping, docker.negotiate_version()).await {
                Err(_) => {
                    return Err(RuntimeError::Timeout {
                        endpoint: self.endpoint.clone(),
                        operation: "version negotiation",
                        after: self.timeouts.ping,
                    })
                }
                Ok(Err(e)) => {
                    return Err(map_error(
                        &self.endpoint,
                        "version negotiation",
                        Subject::Engine,
                        e,
                        BOLLARD_BACKSTOP,
                    ))
                }
                Ok(Ok(docker)) => docker,
            };
        // bollard 0.21 builds its URLs with `Url::join` on an absolute path,
        // which drops the `/v1.xx` prefix: every request would be served at
        // whatever version the engine defaults to, whatever was negotiated.
        // The prefix is put back so the engine answers in the version whose
        // models bollard was built from (or older, for an older engine).
        let prefix = format!("/v{}", docker.client_version());
        let docker = docker.with_request_modifier(move |mut request| {
            if let Some(uri) = versioned(&request.uri().to_string(), &prefix) {
                if let Ok(uri) = uri.parse() {
                    *request.uri_mut() = uri;
                }
            }
            request
        });
        *self.lock_client() = Some(docker.clone());
        Ok(docker)
    }

    fn lock_freezers(&self) -> std::sync::MutexGuard<'_, HashMap<String, freezer::Freezer>> {
        // A map of small values; a panic elsewhere cannot leave one half-written.
        self.freezers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_client(&self) -> std::sync::MutexGuard<'_, Option<Docker>> {
        // The guarded value is a cheap handle; a panic elsewhere cannot leave
        // it half-written.
        self.client.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one engine call under `after`, mapping its error, and forgets the
    /// client when the engine looks gone.
    async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        subject: Subject<'_>,
        after: Duration,
        f: F,
    ) -> Result<T, RuntimeError>
    where
        F: FnOnce(Docker) -> Fut,
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        let docker = self.client().await?;
        let result = match tokio::time::timeout(after, f(docker)).await {
            Err(_) => Err(RuntimeError::Timeout {
                endpoint: self.endpoint.clone(),
                operation,
                after,
            }),
            Ok(Err(e)) => Err(map_error(
                &self.endpoint,
                operation,
                subject,
                e,
                BOLLARD_BACKSTOP,
            )),
            Ok(Ok(v)) => Ok(v),
        };
        if matches!(&result, Err(e) if e.is_engine_down()) {
            *self.lock_client() = None;
        }
        result
    }

    /// Docker's whole inspect answer for `id`, `None` when it is gone.
    async fn inspect_raw(
        &self,
        id: &str,
    ) -> Result<Option<bollard::models::ContainerInspectResponse>, RuntimeError> {
        let answer = self
            .call(
                "inspect",
                Subject::Container(id),
                self.timeouts.call,
                |d| async move {
                    d.inspect_container(id, None::<InspectContainerOptions>)
                        .await
                },
            )
            .await;
        match answer {
            Ok(r) => Ok(Some(r)),
            Err(RuntimeError::ContainerNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn inspect_one(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let Some(r) = self.inspect_raw(id).await? else {
            return Ok(None);
        };
        let pid = r.state.as_ref().and_then(|s| s.pid);
        let mut info = convert::container_info(r)?;
        if info.state == ContainerState::Running && self.frozen_directly(info.id.as_str(), pid) {
            info.state = ContainerState::Paused;
        }
        Ok(Some(info))
    }
}

impl ContainerRuntime for DockerRuntime {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn ping(&self) -> RuntimeFuture<'_, ()> {
        Box::pin(async move {
            self.call(
                "ping",
                Subject::Engine,
                self.timeouts.ping,
                |d| async move { d.ping().await },
            )
            .await
            .map(|_| ())
        })
    }

    fn create<'a>(&'a self, spec: &'a ContainerSpec) -> RuntimeFuture<'a, ContainerId> {
        Box::pin(async move {
            spec.validate()?;
            let subject = Subject::Create {
                name: &spec.name,
                image: &spec.image,
            };
            let options = bollard::query_parameters::CreateContainerOptionsBuilder::default()
                .name(&spec.name)
                .build();
            let body = convert::create_body(spec);
            let created = self
                .call("create", subject, self.timeouts.call, |d| async move {
                    d.create_container(Some(options), body).await
                })
                .await?;
            Ok(ContainerId(created.id))
        })
    }

    fn start<'a>(&'a self, id: &'a ContainerId) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            self.call(
                "start",
                Subject::Container(id.as_str()),
                self.timeouts.call,
                |d| async move { d.start_container(id.as_str(), None).await },
            )
            .await
        })
    }

    fn stop<'a>(&'a self, id: &'a ContainerId, timeout: Duration) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            // A frozen app could not shut down gracefully, and must not run
            // again to try: it is killed where it stands.
            self.kill_if_frozen(id.as_str()).await;
            let grace = timeout.min(MAX_STOP_TIMEOUT);
            // Docker takes whole seconds; rounding up never shortens the grace.
            let secs = i32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
                .unwrap_or(i32::MAX);
            let options = StopContainerOptionsBuilder::default().t(secs).build();
            let after = grace + self.timeouts.stop_margin;
            self.call(
                "stop",
                Subject::Container(id.as_str()),
                after,
                |d| async move { d.stop_container(id.as_str(), Some(options)).await },
            )
            .await
        })
    }

    fn pause<'a>(&'a self, id: &'a ContainerId) -> RuntimeFuture<'a, ()> {
        Box::pin(self.freeze(id.as_str()))
    }

    fn unpause<'a>(&'a self, id: &'a ContainerId) -> RuntimeFuture<'a, ()> {
        Box::pin(self.thaw(id.as_str()))
    }

    fn remove<'a>(&'a self, id: &'a ContainerId, force: bool) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            if force {
                self.kill_if_frozen(id.as_str()).await;
            }
            self.forget_freezer(id.as_str());
            // Anonymous volumes from the image's VOLUME lines go with the
            // container; cluster volumes are bind mounts and are not touched.
            let options = RemoveContainerOptionsBuilder::default()
                .force(force)
                .v(true)
                .build();
            self.call(
                "remove",
                Subject::Container(id.as_str()),
                self.timeouts.call,
                |d| async move { d.remove_container(id.as_str(), Some(options)).await },
            )
            .await
        })
    }

    fn inspect<'a>(&'a self, id: &'a ContainerId) -> RuntimeFuture<'a, Option<ContainerInfo>> {
        Box::pin(self.inspect_one(id.as_str()))
    }

    fn list<'a>(&'a self, labels: &'a Labels) -> RuntimeFuture<'a, Vec<ContainerInfo>> {
        Box::pin(async move {
            let filters = label_filters(labels, false);
            let options = ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            let summaries = self
                .call(
                    "list",
                    Subject::Engine,
                    self.timeouts.call,
                    |d| async move { d.list_containers(Some(options)).await },
                )
                .await?;
            let ids: Vec<String> = summaries.into_iter().filter_map(|s| s.id).collect();
            // A container removed between the listing and its inspect is
            // simply not there any more.
            let mut infos: Vec<ContainerInfo> = futures::stream::iter(ids)
                .map(|id| async move { self.inspect_one(&id).await })
                .buffer_unordered(LIST_CONCURRENCY)
                .try_filter_map(|info| async move { Ok(info) })
                .try_collect()
                .await?;
            infos.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
            Ok(infos)
        })
    }

    fn image_id<'a>(&'a self, image: &'a str) -> RuntimeFuture<'a, Option<String>> {
        Box::pin(async move {
            let answer = self
                .call(
                    "image inspect",
                    Subject::Image(image),
                    self.timeouts.call,
                    |d| async move { d.inspect_image(image).await },
                )
                .await;
            match answer {
                Ok(inspect) => Ok(inspect.id),
                Err(RuntimeError::ImageNotPresent { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn image_command<'a>(&'a self, image: &'a str) -> RuntimeFuture<'a, Option<Vec<String>>> {
        Box::pin(async move {
            let inspect = self
                .call(
                    "image inspect",
                    Subject::Image(image),
                    self.timeouts.call,
                    |d| async move { d.inspect_image(image).await },
                )
                .await?;
            let config = inspect.config.unwrap_or_default();
            let mut command = config.entrypoint.unwrap_or_default();
            command.extend(config.cmd.unwrap_or_default());
            Ok((!command.is_empty()).then_some(command))
        })
    }

    fn pull_image<'a>(&'a self, image: &'a str) -> RuntimeFuture<'a, String> {
        Box::pin(async move {
            let reference = with_default_tag(image);
            let options = CreateImageOptionsBuilder::default()
                .from_image(&reference)
                .build();
            let pulled = self
                .call(
                    "pull",
                    Subject::Image(image),
                    self.timeouts.pull,
                    |d| async move {
                        d.create_image(Some(options), None, None)
                            .try_for_each(|_| async { Ok(()) })
                            .await
                    },
                )
                .await;
            let not_present = |reason: String| RuntimeError::ImageNotPresent {
                image: image.to_string(),
                pull_error: Some(reason),
            };
            match pulled {
                Ok(()) => {}
                Err(e @ RuntimeError::EngineUnreachable { .. }) => return Err(e),
                Err(RuntimeError::Timeout { after, .. }) => {
                    return Err(not_present(format!("no answer within {after:?}")))
                }
                Err(RuntimeError::Engine { message, .. }) => return Err(not_present(message)),
                Err(RuntimeError::Other(message)) => return Err(not_present(message)),
                Err(e) => return Err(not_present(e.to_string())),
            }
            self.image_id(image).await?.ok_or_else(|| {
                not_present("the pull finished but the engine does not have the image".into())
            })
        })
    }

    fn events<'a>(&'a self, labels: &'a Labels) -> RuntimeFuture<'a, EventStream> {
        Box::pin(async move {
            // Taken before anything else so that events from this moment on
            // are replayed by the engine even if the subscription is slow.
            let since = UnixNanos::now();
            let docker = self.client().await?;
            let filters = label_filters(labels, true);
            let since = format!("{}.{:09}", since.0 / 1_000_000_000, since.0 % 1_000_000_000);
            let options = EventsOptionsBuilder::default()
                .since(&since)
                .filters(&filters)
                .build();
            let source = docker.events(Some(options));
            Ok(events::forward(
                source,
                self.endpoint.clone(),
                BOLLARD_BACKSTOP,
            ))
        })
    }

    fn logs<'a>(&'a self, id: &'a ContainerId, query: &'a LogQuery) -> RuntimeFuture<'a, LogPage> {
        Box::pin(async move {
            // Docker's `since` counts whole seconds: the lines of the
            // cursor's second come again and are skipped here.
            let since = query.after.map_or(0, |t| {
                i32::try_from(t.0.div_euclid(1_000_000_000)).unwrap_or(i32::MAX)
            });
            let tail = query.tail.map_or("all".to_string(), |n| n.to_string());
            let options = LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .timestamps(true)
                .follow(false)
                .since(since)
                .tail(&tail)
                .build();
            let after = query.after;
            self.call(
                "logs",
                Subject::Container(id.as_str()),
                self.timeouts.call,
                |d| async move {
                    let mut source = Box::pin(d.logs(id.as_str(), Some(options)));
                    let mut page = PageBuilder::default();
                    while let Some(chunk) = source.next().await {
                        let (stderr, bytes) = match chunk? {
                            LogOutput::StdErr { message } => (true, message),
                            LogOutput::StdOut { message }
                            | LogOutput::Console { message }
                            | LogOutput::StdIn { message } => (false, message),
                        };
                        let text = String::from_utf8_lossy(&bytes);
                        for raw in text.lines() {
                            let Some((at, text)) = logs::split_timestamped(raw) else {
                                continue;
                            };
                            if after.is_some_and(|after| at <= after) {
                                continue;
                            }
                            let line = LogLine {
                                at,
                                stderr,
                                text: text.to_string(),
                            };
                            if !page.push(line) {
                                return Ok(page.finish());
                            }
                        }
                    }
                    Ok(page.finish())
                },
            )
            .await
        })
    }
}

/// Docker's `label=k=v` filters (ANDed when repeated), plus `type=container`
/// for the event stream.
fn label_filters(labels: &Labels, events: bool) -> HashMap<String, Vec<String>> {
    let mut filters = HashMap::new();
    if !labels.is_empty() {
        filters.insert(
            "label".to_string(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        );
    }
    if events {
        filters.insert("type".to_string(), vec!["container".to_string()]);
    }
    filters
}

/// `uri` with `prefix` in front of its path, unless it already has a
/// version; `None` if it has no path to prefix.
fn versioned(uri: &str, prefix: &str) -> Option<String> {
    let authority_start = uri.find("://").map_or(0, |i| i + 3);
    let path_start = authority_start + uri[authority_start..].find('/')?;
    let path = &uri[path_start..];
    let has_version = path
        .strip_prefix("/v")
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'));
    if has_version {
        return None;
    }
    Some(format!("{}{prefix}{path}", &uri[..path_start]))
}

/// Docker pulls every tag of a repository when `fromImage` has none.
fn with_default_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || image.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tags_only_where_missing() {
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(
            with_default_tag("localhost:5000/web"),
            "localhost:5000/web:latest"
        );
        assert_eq!(with_default_tag("web:1"), "web:1");
        assert_eq!(with_default_tag("web@sha256:00"), "web@sha256:00");
    }

    #[test]
    fn requests_carry_the_negotiated_version() {
        assert_eq!(
            versioned("unix://2f7661722f72756e/events?since=1", "/v1.41").as_deref(),
            Some("unix://2f7661722f72756e/v1.41/events?since=1")
        );
        assert_eq!(
            versioned("unix://2f76/containers/abc/json", "/v1.41").as_deref(),
            Some("unix://2f76/v1.41/containers/abc/json")
        );
        assert_eq!(versioned("unix://2f76/v1.41/version", "/v1.41"), None);
        // A container named like a version is still a path, not a version.
        assert_eq!(
            versioned("unix://2f76/volumes/v1", "/v1.41").as_deref(),
            Some("unix://2f76/v1.41/volumes/v1")
        );
    }

    #[test]
    fn endpoints_must_be_unix_sockets() {
        assert!(DockerRuntime::new("tcp://localhost:2375", DockerTimeouts::default()).is_err());
        let rt = DockerRuntime::new("/run/docker.sock", DockerTimeouts::default()).unwrap();
        assert_eq!(rt.endpoint(), "unix:///run/docker.sock");
    }

    #[tokio::test]
    async fn a_missing_socket_is_unreachable_not_a_panic() {
        let rt = DockerRuntime::new("unix:///nonexistent/docker.sock", DockerTimeouts::default())
            .unwrap();
        let e = rt.ping().await.unwrap_err();
        assert!(e.is_engine_down(), "{e}");
        assert!(e
            .to_string()
            .starts_with("Docker engine unreachable at unix:///nonexistent/docker.sock"));
        let e = rt.events(&Labels::new()).await.err().unwrap();
        assert!(e.is_engine_down());
    }
}
