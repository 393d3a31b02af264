//! `ContainerSpec`: everything the agent asks an engine to create, in our
//! own types, plus the checks that keep an engine from misreading it.
//!
//! A spec says nothing about restarts: every runtime creates containers with
//! the engine's own restart policy off, because only the cluster may decide
//! that a container runs again (a fenced container resurrected by Docker would
//! break "at most one running instance"). Deciding *what* to run (links,
//! labels, volume paths) belongs to the agent, not here.

use super::RuntimeError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// Labels, ordered so that specs compare and hash the same on every node.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Engine-wide unique name; several nodes may share one engine, so the
    /// agent puts its node into it.
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint when set (the agent's fence wrapper).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's command when set.
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<PortBinding>,
    pub binds: Vec<Bind>,
    /// Bytes.
    pub mem_limit: Option<u64>,
    /// Relative CPU weight (Docker's `--cpu-shares`).
    pub cpu_shares: Option<u64>,
    pub labels: Labels,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    /// Each node binds only its own `--publish-ip`, so nodes sharing an
    /// engine do not collide.
    pub host_ip: IpAddr,
    /// 0 lets the engine choose.
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// Absolute path on the host.
    pub host_path: String,
    /// Absolute path inside the container.
    pub container_path: String,
    pub read_only: bool,
}

impl Bind {
    /// Docker's `-v` form: `host:container[:ro]`.
    pub fn to_docker(&self) -> String {
        let mode = if self.read_only { ":ro" } else { "" };
        format!("{}:{}{}", self.host_path, self.container_path, mode)
    }
}

impl ContainerSpec {
    /// Refuses what an engine would misread rather than reject: a relative
    /// host path becomes a named volume, a `:` in a path shifts the fields of
    /// the bind string, an `=` in an env key moves the split.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let invalid = |m: String| Err(RuntimeError::InvalidSpec(m));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            || !self.name.starts_with(|c: char| c.is_ascii_alphanumeric())
        {
            return invalid(format!(
                "container name {:?} must be [a-zA-Z0-9][a-zA-Z0-9_.-]*",
                self.name
            ));
        }
        if self.image.trim().is_empty() {
            return invalid(format!("container {} has no image", self.name));
        }
        if matches!(&self.command, Some(c) if c.is_empty()) {
            return invalid(format!("container {} has an empty command", self.name));
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return invalid(format!("environment variable name {key:?} is not valid"));
            }
        }
        for b in &self.binds {
            for path in [&b.host_path, &b.container_path] {
                if !path.starts_with('/') || path.contains(':') || path.contains(',') {
                    return invalid(format!(
                        "bind path {path:?} must be absolute and contain no ':' or ','"
                    ));
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.ports {
            if p.container_port == 0 {
                return invalid(format!("container {} binds container port 0", self.name));
            }
            if !seen.insert((p.container_port, p.protocol, p.host_ip, p.host_port)) {
                return invalid(format!(
                    "port {}:{}->{}/{} is bound twice",
                    p.host_ip, p.host_port, p.container_port, p.protocol
                ));
            }
        }
        // Docker refuses limits below 6 MiB with a 400; saying it here names the spec.
        if matches!(self.mem_limit, Some(m) if m < 6 * 1024 * 1024) {
            return invalid(format!(
                "container {} memory limit {} bytes is below Docker's 6 MiB minimum",
                self.name,
                self.mem_limit.unwrap_or_default()
            ));
        }
        if self.mem_limit.is_some_and(|m| i64::try_from(m).is_err())
            || self.cpu_shares.is_some_and(|c| i64::try_from(c).is_err())
        {
            return invalid(format!("container {} limits overflow", self.name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "flocker-n1-web".into(),
            image: "busybox".into(),
            entrypoint: None,
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_plain_spec() {
        spec().validate().unwrap();
    }

    #[test]
    fn refuses_what_docker_would_misread() {
        let mut s = spec();
        s.binds.push(Bind {
            host_path: "data".into(),
            container_path: "/data".into(),
            read_only: false,
        });
        assert!(matches!(s.validate(), Err(RuntimeError::InvalidSpec(_))));

        let mut s = spec();
        s.env.insert("A=B".into(), "c".into());
        assert!(s.validate().is_err());

        let mut s = spec();
        s.name = "/web".into();
        assert!(s.validate().is_err());

        let mut s = spec();
        s.mem_limit = Some(1024);
        assert!(s.validate().is_err());

        let mut s = spec();
        s.command = Some(vec![]);
        assert!(s.validate().is_err());
    }

    #[test]
    fn bind_strings_use_docker_syntax() {
        let b = Bind {
            host_path: "/var/lib/flocker/v1".into(),
            container_path: "/data".into(),
            read_only: true,
        };
        assert_eq!(b.to_docker(), "/var/lib/flocker/v1:/data:ro");
    }
}
