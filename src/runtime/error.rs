//! `RuntimeError`: what can go wrong when a node talks to its container
//! engine, in words an operator can act on.
//!
//! The variants are chosen by what the agent must do differently (report a
//! missing image, a taken port, mark the node degraded, forget a vanished
//! container), not by the engine's status codes. Translating Docker's answers
//! into these lives with the Docker adapter; this file knows nothing of Docker.

use std::time::Duration;

/// Longest engine message kept in an error. Docker echoes whole requests in
/// some messages; what reaches `ctl status` stays readable and bounded.
pub const MAX_ERROR_MESSAGE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The image is not on this engine. `pull_error` is set when a pull was
    /// tried and failed, which is what "no registry is reachable" means.
    #[error("image {image} not present on this node{}", pull_suffix(.pull_error))]
    ImageNotPresent {
        image: String,
        pull_error: Option<String>,
    },

    /// A host port binding collides with another container or process.
    /// `address` is `ip:port` when the engine's message names it.
    #[error("port {} already allocated: {message}", .address.as_deref().unwrap_or("(unknown)"))]
    PortAllocated {
        address: Option<String>,
        message: String,
    },

    /// The engine could not be reached at all (socket missing, refused,
    /// closed mid-call). The node is degraded until a ping succeeds again.
    #[error("Docker engine unreachable at {endpoint}: {reason}")]
    EngineUnreachable { endpoint: String, reason: String },

    /// The engine accepted the connection but did not answer in time.
    #[error("Docker engine at {endpoint} did not answer {operation} within {after:?}")]
    Timeout {
        endpoint: String,
        operation: &'static str,
        after: Duration,
    },

    /// No container with this id or name.
    #[error("container {0} not found")]
    ContainerNotFound(String),

    /// Another container already has this name.
    #[error("container name {name} already in use: {message}")]
    NameInUse { name: String, message: String },

    /// The spec cannot be expressed to the engine (e.g. a relative bind path,
    /// which Docker would silently read as a named volume).
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),

    /// The event stream fell behind and dropped events; the subscriber must
    /// resubscribe and resync from a full listing.
    /// `dropped` is a lower bound.
    #[error("container event stream fell behind and dropped at least {dropped} event(s)")]
    EventsLagged { dropped: u64 },

    /// Any other refusal by the engine, with its HTTP status.
    #[error("Docker engine refused {operation} (HTTP {status}): {message}")]
    Engine {
        operation: &'static str,
        status: u16,
        message: String,
    },

    /// Everything else: malformed answers, local I/O while preparing a call.
    #[error("{0}")]
    Other(String),
}

fn pull_suffix(pull_error: &Option<String>) -> String {
    match pull_error {
        None => String::new(),
        Some(e) => format!(" and no registry is reachable ({e})"),
    }
}

impl RuntimeError {
    /// True when the engine itself is down or hung, as opposed to refusing
    /// one request: the agent reports the node degraded and retries later.
    pub fn is_engine_down(&self) -> bool {
        matches!(self, Self::EngineUnreachable { .. } | Self::Timeout { .. })
    }
}

/// Cuts `message` to [`MAX_ERROR_MESSAGE`] bytes on a character boundary.
pub(crate) fn bounded(message: impl Into<String>) -> String {
    let mut message = message.into();
    if message.len() > MAX_ERROR_MESSAGE {
        let mut end = MAX_ERROR_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_the_agent_reports_them() {
        let e = RuntimeError::ImageNotPresent {
            image: "web:1".into(),
            pull_error: None,
        };
        assert_eq!(e.to_string(), "image web:1 not present on this node");
        let e = RuntimeError::ImageNotPresent {
            image: "web:1".into(),
            pull_error: Some("dial tcp: lookup registry-1.docker.io: no such host".into()),
        };
        assert!(e
            .to_string()
            .starts_with("image web:1 not present on this node and no registry is reachable"));
        let e = RuntimeError::PortAllocated {
            address: Some("127.0.0.2:8080".into()),
            message: "port is already allocated".into(),
        };
        assert_eq!(
            e.to_string(),
            "port 127.0.0.2:8080 already allocated: port is already allocated"
        );
        let e = RuntimeError::EngineUnreachable {
            endpoint: "unix:///var/run/docker.sock".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "Docker engine unreachable at unix:///var/run/docker.sock: connection refused"
        );
        assert!(e.is_engine_down());
    }

    #[test]
    fn bounded_cuts_on_char_boundary() {
        let long = "é".repeat(MAX_ERROR_MESSAGE);
        let cut = bounded(long);
        assert!(cut.len() <= MAX_ERROR_MESSAGE + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(bounded("short"), "short");
    }
}
