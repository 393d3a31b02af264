//! `ContainerEvent`: one thing an engine says happened to a container, and
//! the `EventStream` contract every runtime keeps.
//!
//! The contract: a stream carries only container events whose labels match
//! the subscription's filter; any `Err` item is the last one (the engine went
//! away, or the stream fell behind and dropped events), after which the
//! subscriber resubscribes and resyncs from a full listing. Events are hints
//! that make the agent react at once; its periodic resync stays the truth.

use super::{ContainerId, Labels, RuntimeError, UnixNanos};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Events in flight between an engine and one subscriber. Docker's own
/// per-subscriber buffer holds 1024 and silently drops beyond it; ours makes
/// the loss visible as `RuntimeError::EventsLagged` instead.
pub const EVENT_BUFFER: usize = 1024;

/// Container events matching a subscription's labels. Any `Err` item is the
/// last one; the subscriber then resubscribes and resyncs from a listing.
pub type EventStream = BoxStream<'static, Result<ContainerEvent, RuntimeError>>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventAction {
    Create,
    Start,
    /// The main process exited; `ContainerEvent::exit_code` says how.
    Die,
    Stop,
    Kill,
    Oom,
    Destroy,
    Pause,
    Unpause,
    Restart,
    Rename,
    Update,
    /// Anything else (attach, exec_*, health_status: …), verbatim.
    Other(String),
}

impl EventAction {
    pub fn parse(s: &str) -> Self {
        match s {
            "create" => Self::Create,
            "start" => Self::Start,
            "die" => Self::Die,
            "stop" => Self::Stop,
            "kill" => Self::Kill,
            "oom" => Self::Oom,
            "destroy" => Self::Destroy,
            "pause" => Self::Pause,
            "unpause" => Self::Unpause,
            "restart" => Self::Restart,
            "rename" => Self::Rename,
            "update" => Self::Update,
            other => Self::Other(other.to_string()),
        }
    }
}

impl fmt::Display for EventAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Create => "create",
            Self::Start => "start",
            Self::Die => "die",
            Self::Stop => "stop",
            Self::Kill => "kill",
            Self::Oom => "oom",
            Self::Destroy => "destroy",
            Self::Pause => "pause",
            Self::Unpause => "unpause",
            Self::Restart => "restart",
            Self::Rename => "rename",
            Self::Update => "update",
            Self::Other(s) => s,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerEvent {
    pub id: ContainerId,
    /// Without Docker's leading `/`; empty if the engine did not say.
    pub name: String,
    pub action: EventAction,
    /// The engine's clock, nanoseconds (Docker's `timeNano`).
    pub time: UnixNanos,
    /// Set on `Die`.
    pub exit_code: Option<i64>,
    /// The container's labels. Docker mixes them into the event's attributes
    /// with its own keys (`name`, `image`, `exitCode`, `signal`); those keys
    /// are taken out, so a label with one of these names is not seen here.
    pub labels: Labels,
}

/// Whether `labels` carries every pair of `filter`, the AND semantics Docker
/// gives repeated `label=` filters.
pub fn labels_match(labels: &Labels, filter: &Labels) -> bool {
    filter.iter().all(|(k, v)| labels.get(k) == Some(v))
}
