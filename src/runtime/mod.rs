//! The container runtime layer: what a node's agent asks of its container
//! engine, behind one small trait, [`ContainerRuntime`].
//!
//! Two engines implement it: [`DockerRuntime`] (a real Docker engine through
//! bollard) and [`SimRuntime`] (in memory, with injectable failures, for
//! large in-process simulations). The layer translates and reports; it does
//! not decide. Placement, restarts, fencing and which containers belong to
//! whom are the agent's: a runtime never restarts a container by itself, and
//! Docker's own restart policy is always `no`.

pub mod docker;
mod engine;
mod error;
mod event;
mod info;
pub mod logs;
pub mod sim;
mod spec;

pub use docker::{build_busybox_image, DockerRuntime, DockerTimeouts, BUSYBOX_PATH, TEST_IMAGE};
pub use engine::{ContainerRuntime, ContainerRuntimeExt, RuntimeFuture};
pub use error::{RuntimeError, MAX_ERROR_MESSAGE};
pub use event::{labels_match, ContainerEvent, EventAction, EventStream, EVENT_BUFFER};
pub use info::{ContainerId, ContainerInfo, ContainerState, UnixNanos};
pub use logs::{LogLine, LogPage, LogQuery};
pub use sim::{SimOp, SimRuntime};
pub use spec::{Bind, ContainerSpec, Labels, PortBinding, Protocol};
