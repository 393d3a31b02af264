//! Translation between our runtime types and bollard's Docker API models:
//! spec to create body, inspect answer to `ContainerInfo`, event message to
//! `ContainerEvent`.
//!
//! Pure functions, no I/O, so every field mapping is unit-tested without an
//! engine. The one policy decided here: Docker's restart policy is always
//! `no`, set explicitly rather than left to the engine's default.

use crate::runtime::{
    ContainerEvent, ContainerId, ContainerInfo, ContainerSpec, ContainerState, EventAction, Labels,
    RuntimeError, UnixNanos,
};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EventMessage, EventMessageTypeEnum, HostConfig,
    PortBinding as DockerPortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use std::collections::HashMap;

pub(super) fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut exposed: Vec<String> = Vec::new();
    let mut port_map: HashMap<String, Option<Vec<DockerPortBinding>>> = HashMap::new();
    for p in &spec.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        port_map
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(DockerPortBinding {
                host_ip: Some(p.host_ip.to_string()),
                // Docker reads an empty host port as "pick one".
                host_port: Some(if p.host_port == 0 {
                    String::new()
                } else {
                    p.host_port.to_string()
                }),
            });
    }
    let host_config = HostConfig {
        binds: (!spec.binds.is_empty()).then(|| spec.binds.iter().map(|b| b.to_docker()).collect()),
        port_bindings: (!port_map.is_empty()).then_some(port_map),
        // Validated to fit by ContainerSpec::validate.
        memory: spec.mem_limit.and_then(|m| i64::try_from(m).ok()),
        cpu_shares: spec.cpu_shares.and_then(|c| i64::try_from(c).ok()),
        // Invariant 3: only the cluster restarts containers. Docker's
        // default is already `no`, but a daemon-wide default or a future
        // engine must not be able to change that.
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.entrypoint.clone(),
        cmd: spec.command.clone(),
        env: (!spec.env.is_empty())
            .then(|| spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        labels: Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        host_config: Some(host_config),
        ..Default::default()
    }
}

pub(super) fn container_info(r: ContainerInspectResponse) -> Result<ContainerInfo, RuntimeError> {
    let id = r
        .id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| RuntimeError::Other("Docker inspect answer has no container id".into()))?;
    let config = r.config.unwrap_or_default();
    let state = r.state.unwrap_or_default();
    let started_at = state
        .started_at
        .as_deref()
        .and_then(UnixNanos::parse_rfc3339);
    let finished_at = state
        .finished_at
        .as_deref()
        .and_then(UnixNanos::parse_rfc3339);
    let status = ContainerState::parse(&state.status.map(|s| s.to_string()).unwrap_or_default());
    // Docker reports 0 for a container that never ran and resets the code
    // on start; only a stopped container that finished has a real one.
    let exit_code = if finished_at.is_some() && !status.is_live() {
        state.exit_code
    } else {
        None
    };
    Ok(ContainerInfo {
        id: ContainerId(id),
        name: r
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.unwrap_or_default(),
        image_id: r.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        state: status,
        exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        started_at,
        finished_at,
        restart_count: r
            .restart_count
            .and_then(|c| u64::try_from(c).ok())
            .unwrap_or(0),
        error: state.error.filter(|e| !e.is_empty()),
    })
}

/// Docker's own attribute keys, mixed into an event's attributes with the
/// container's labels.
const EVENT_ATTRIBUTE_KEYS: [&str; 4] = ["name", "image", "exitCode", "signal"];

/// `None` for anything that is not a container event with an id.
pub(super) fn container_event(m: EventMessage) -> Option<ContainerEvent> {
    if !matches!(m.typ, Some(EventMessageTypeEnum::CONTAINER)) {
        return None;
    }
    let actor = m.actor?;
    let id = actor.id.filter(|id| !id.is_empty())?;
    let mut attributes = actor.attributes.unwrap_or_default();
    let name = attributes.get("name").cloned().unwrap_or_default();
    let exit_code = attributes.get("exitCode").and_then(|c| c.parse().ok());
    for key in EVENT_ATTRIBUTE_KEYS {
        attributes.remove(key);
    }
    let labels: Labels = attributes.into_iter().collect();
    let time = m
        .time_nano
        .or_else(|| m.time.and_then(|s| s.checked_mul(1_000_000_000)))
        .unwrap_or(0);
    Some(ContainerEvent {
        id: ContainerId(id),
        name,
        action: EventAction::parse(m.action.as_deref().unwrap_or("")),
        time: UnixNanos(time),
        exit_code,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Bind, PortBinding, Protocol};
    use bollard::models::{ContainerConfig, ContainerStateStatusEnum, EventActor};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "n1-web".into(),
            image: "flocker-test/busybox:latest".into(),
            entrypoint: None,
            command: Some(vec!["sh".into(), "-c".into(), "sleep 1000".into()]),
            env: [("A".to_string(), "1".to_string())].into(),
            ports: vec![
                PortBinding {
                    host_ip: "127.0.0.2".parse().unwrap(),
                    host_port: 8080,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                },
                PortBinding {
                    host_ip: "127.0.0.2".parse().unwrap(),
                    host_port: 0,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                },
            ],
            binds: vec![Bind {
                host_path: "/srv/v".into(),
                container_path: "/data".into(),
                read_only: false,
            }],
            mem_limit: Some(64 << 20),
            cpu_shares: Some(512),
            labels: [("flocker.node".to_string(), "n1".to_string())].into(),
        }
    }

    #[test]
    fn create_body_carries_every_setting() {
        let body = create_body(&spec());
        let hc = body.host_config.clone().unwrap();
        assert_eq!(
            hc.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        assert_eq!(hc.memory, Some(64 << 20));
        assert_eq!(hc.cpu_shares, Some(512));
        assert_eq!(hc.binds, Some(vec!["/srv/v:/data".to_string()]));
        let bindings = hc.port_bindings.unwrap()["80/tcp"].clone().unwrap();
        assert_eq!(bindings.len(), 2);
        assert_eq!(bindings[0].host_ip.as_deref(), Some("127.0.0.2"));
        assert_eq!(bindings[0].host_port.as_deref(), Some("8080"));
        assert_eq!(bindings[1].host_port.as_deref(), Some(""));
        assert_eq!(body.exposed_ports, Some(vec!["80/tcp".to_string()]));
        assert_eq!(body.env, Some(vec!["A=1".to_string()]));
        // The JSON Docker receives: restart policy spelled out.
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["HostConfig"]["RestartPolicy"]["Name"], "no");
        assert!(json["ExposedPorts"]["80/tcp"].is_object());
    }

    #[test]
    fn inspect_maps_to_info() {
        let r = ContainerInspectResponse {
            id: Some("abc".into()),
            name: Some("/n1-web".into()),
            image: Some("sha256:1".into()),
            restart_count: Some(0),
            config: Some(ContainerConfig {
                image: Some("busybox".into()),
                labels: Some([("k".to_string(), "v".to_string())].into()),
                ..Default::default()
            }),
            state: Some(bollard::models::ContainerState {
                status: Some(ContainerStateStatusEnum::EXITED),
                exit_code: Some(3),
                started_at: Some("2024-05-01T10:00:00Z".into()),
                finished_at: Some("2024-05-01T10:00:01Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let info = container_info(r).unwrap();
        assert_eq!(info.name, "n1-web");
        assert_eq!(info.state, ContainerState::Exited);
        assert_eq!(info.exit_code, Some(3));
        assert_eq!(info.labels["k"], "v");
        assert!(info.finished_at > info.started_at);

        let never_ran = ContainerInspectResponse {
            id: Some("abc".into()),
            state: Some(bollard::models::ContainerState {
                status: Some(ContainerStateStatusEnum::CREATED),
                exit_code: Some(0),
                finished_at: Some("0001-01-01T00:00:00Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(container_info(never_ran).unwrap().exit_code, None);
        assert!(container_info(ContainerInspectResponse::default()).is_err());
    }

    #[test]
    fn events_split_labels_from_docker_attributes() {
        let m = EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some("die".into()),
            actor: Some(EventActor {
                id: Some("abc".into()),
                attributes: Some(
                    [
                        ("name", "n1-web"),
                        ("image", "busybox"),
                        ("exitCode", "7"),
                        ("flocker.node", "n1"),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ),
            }),
            time: Some(1),
            time_nano: Some(1_000_000_123),
            ..Default::default()
        };
        let e = container_event(m).unwrap();
        assert_eq!(e.action, EventAction::Die);
        assert_eq!(e.exit_code, Some(7));
        assert_eq!(e.name, "n1-web");
        assert_eq!(e.time, UnixNanos(1_000_000_123));
        assert_eq!(e.labels.len(), 1);
        assert_eq!(
            container_event(EventMessage {
                typ: Some(EventMessageTypeEnum::IMAGE),
                ..Default::default()
            }),
            None
        );
    }
}
