//! Turns bollard's errors into `RuntimeError`, reading Docker's status codes
//! and messages.
//!
//! Docker reports a taken port as a 500 from start whose message says "port
//! is already allocated" (another container holds it) or "address already in
//! use" (another process does); a missing image is a 404 from create. Those
//! messages are matched here and nowhere else. Anything bollard could not
//! send or receive is "engine unreachable"; a malformed answer is not.

use crate::runtime::error::bounded;
use crate::runtime::RuntimeError;
use bollard::errors::Error as BollardError;
use std::time::Duration;

/// What a failed call was about, so errors can name it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Subject<'a> {
    Engine,
    Container(&'a str),
    Create { name: &'a str, image: &'a str },
    Image(&'a str),
}

pub(super) fn map_error(
    endpoint: &str,
    operation: &'static str,
    subject: Subject<'_>,
    error: BollardError,
    client_timeout: Duration,
) -> RuntimeError {
    match error {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => map_status(operation, subject, status_code, message),
        BollardError::RequestTimeoutError => RuntimeError::Timeout {
            endpoint: endpoint.to_string(),
            operation,
            after: client_timeout,
        },
        BollardError::DockerStreamError { error } => {
            RuntimeError::Other(bounded(format!("{operation}: {error}")))
        }
        e @ (BollardError::JsonDataError { .. }
        | BollardError::JsonSerdeError { .. }
        | BollardError::StrParseError { .. }
        | BollardError::APIVersionParseError { .. }
        | BollardError::URLEncodedError { .. }
        | BollardError::URLParseError { .. }
        | BollardError::InvalidURIError { .. }
        | BollardError::InvalidURIPartsError { .. }
        | BollardError::HttpClientError { .. }) => RuntimeError::Other(bounded(format!(
            "{operation}: unexpected exchange with the Docker engine: {}",
            chain(&e)
        ))),
        // Socket missing, connection refused or reset, body cut short: the
        // engine is not there to answer.
        e => RuntimeError::EngineUnreachable {
            endpoint: endpoint.to_string(),
            reason: bounded(chain(&e)),
        },
    }
}

fn map_status(
    operation: &'static str,
    subject: Subject<'_>,
    status: u16,
    message: String,
) -> RuntimeError {
    if is_port_conflict(&message) {
        return RuntimeError::PortAllocated {
            address: port_in_message(&message),
            message: bounded(message),
        };
    }
    match (status, subject) {
        (404, Subject::Create { image, .. }) => RuntimeError::ImageNotPresent {
            image: image.to_string(),
            pull_error: None,
        },
        (404, Subject::Image(image)) => RuntimeError::ImageNotPresent {
            image: image.to_string(),
            pull_error: None,
        },
        (404, Subject::Container(id)) => RuntimeError::ContainerNotFound(id.to_string()),
        (409, Subject::Create { name, .. }) if message.contains("already in use") => {
            RuntimeError::NameInUse {
                name: name.to_string(),
                message: bounded(message),
            }
        }
        _ => RuntimeError::Engine {
            operation,
            status,
            message: bounded(message),
        },
    }
}

pub(super) fn is_port_conflict(message: &str) -> bool {
    message.contains("port is already allocated") || message.contains("address already in use")
}

/// Finds the `ip:port` Docker names in a port conflict:
/// `... Bind for 127.0.0.2:8080 failed: port is already allocated` or
/// `... listen tcp4 127.0.0.2:8080: bind: address already in use`.
pub(super) fn port_in_message(message: &str) -> Option<String> {
    if let Some(rest) = message.split("Bind for ").nth(1) {
        if let Some(addr) = rest.split(" failed").next() {
            return Some(addr.trim().to_string()).filter(|a| !a.is_empty());
        }
    }
    for prefix in [
        "listen tcp4 ",
        "listen tcp6 ",
        "listen tcp ",
        "listen udp4 ",
        "listen udp6 ",
        "listen udp ",
    ] {
        if let Some(rest) = message.split(prefix).nth(1) {
            if let Some(addr) = rest.split(": bind").next() {
                return Some(addr.trim().to_string()).filter(|a| !a.is_empty());
            }
        }
    }
    None
}

/// An error and its sources on one line: hyper's top-level messages alone
/// ("client error (Connect)") do not say what happened.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    let mut depth = 0;
    while let Some(s) = source {
        depth += 1;
        if depth > 8 {
            break;
        }
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16, message: &str) -> BollardError {
        BollardError::DockerResponseServerError {
            status_code,
            message: message.into(),
        }
    }

    const EP: &str = "unix:///var/run/docker.sock";
    const T: Duration = Duration::from_secs(1);

    #[test]
    fn port_conflicts_name_the_address() {
        let m = "driver failed programming external connectivity on endpoint web (abc): \
                 Bind for 127.0.0.2:8080 failed: port is already allocated";
        let e = map_error(EP, "start", Subject::Container("web"), server(500, m), T);
        assert_eq!(
            e,
            RuntimeError::PortAllocated {
                address: Some("127.0.0.2:8080".into()),
                message: m.into()
            }
        );
        let m = "driver failed programming external connectivity on endpoint web (abc): Error \
                 starting userland proxy: listen tcp4 127.0.0.3:9000: bind: address already in use";
        let e = map_error(EP, "start", Subject::Container("web"), server(500, m), T);
        assert!(
            matches!(e, RuntimeError::PortAllocated { address: Some(ref a), .. } if a == "127.0.0.3:9000"),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .starts_with("port 127.0.0.3:9000 already allocated"));
    }

    #[test]
    fn missing_image_and_container() {
        let e = map_error(
            EP,
            "create",
            Subject::Create {
                name: "web",
                image: "nope:1",
            },
            server(404, "No such image: nope:1"),
            T,
        );
        assert_eq!(e.to_string(), "image nope:1 not present on this node");
        let e = map_error(
            EP,
            "inspect",
            Subject::Container("abc"),
            server(404, "No such container: abc"),
            T,
        );
        assert_eq!(e, RuntimeError::ContainerNotFound("abc".into()));
    }

    #[test]
    fn name_conflicts_and_other_refusals() {
        let e = map_error(
            EP,
            "create",
            Subject::Create {
                name: "web",
                image: "x",
            },
            server(
                409,
                "Conflict. The container name \"/web\" is already in use by container \"1\"",
            ),
            T,
        );
        assert!(matches!(e, RuntimeError::NameInUse { .. }));
        let e = map_error(EP, "stop", Subject::Engine, server(500, "boom"), T);
        assert!(matches!(e, RuntimeError::Engine { status: 500, .. }));
    }

    #[test]
    fn transport_failures_are_unreachable() {
        let e = map_error(
            EP,
            "ping",
            Subject::Engine,
            BollardError::SocketNotFoundError("/var/run/docker.sock".into()),
            T,
        );
        assert!(e.is_engine_down());
        assert!(e
            .to_string()
            .starts_with("Docker engine unreachable at unix:///var/run/docker.sock"));
        let e = map_error(
            EP,
            "ping",
            Subject::Engine,
            BollardError::RequestTimeoutError,
            T,
        );
        assert!(matches!(e, RuntimeError::Timeout { .. }));
    }
}
