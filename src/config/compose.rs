//! The fig/compose form of the application file: service names at the top
//! level (fig, as Flocker read it), or under `services:` (compose, with an
//! optional `version: "2"`-style string).
//!
//! Supported service keys: `image`, `environment` (map, or list of `K=V`),
//! `ports` (`"external:internal"`, with `/tcp` or `/udp`), `links` (`"service:alias"` or
//! `"service"`), `volumes` (one container path), `mem_limit`, `cpu_shares`,
//! `command` (a string split as a shell would, or a list) and `restart`
//! (`no`, `always`, `on-failure[:N]`). Every other key is refused by name,
//! never dropped: a file that deploys differently from what it says is worse
//! than one that does not deploy.
//!
//! A link gives the linking service the TCP ports its target publishes, as
//! Flocker's fig reader did: one model link per TCP port of the target, with
//! `local_port` the target's internal port and `remote_port` its external
//! one, since that is where the target is reached (on any node). UDP ports
//! are left out: link variables are Docker's `ALIAS_PORT_N_TCP` ones.

use super::apps::{self, DraftApp, DraftLink};
use super::error::{did_you_mean, KeyPath, Position, Sink};
use super::model::{PortMapping, Protocol, RestartPolicy, VolumeSpec};
use super::names;
use super::read;
use super::yaml::{Entry, Node, Value};
use std::collections::BTreeMap;

const TOP_KEYS: &[&str] = &["version", "services"];
const TOP_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "volumes",
        "each service's volume is declared under its own 'volumes'; the cluster owns and moves it",
    ),
    (
        "networks",
        "containers reach each other through links and published ports",
    ),
    ("secrets", "pass values through 'environment'"),
    (
        "configs",
        "bake files into the image or pass values through 'environment'",
    ),
    ("name", "the cluster has one project"),
];

const SERVICE_KEYS: &[&str] = &[
    "image",
    "environment",
    "ports",
    "links",
    "volumes",
    "mem_limit",
    "cpu_shares",
    "command",
    "restart",
    "x-flocker",
];

const GENERIC: &str = "flocker does not support this compose key";
const SERVICE_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "build",
        "give 'image': the cluster runs images, it does not build them",
    ),
    (
        "depends_on",
        "the cluster starts applications independently; links reach their target wherever it runs",
    ),
    ("container_name", "the service name is the container name"),
    ("env_file", "write the variables under 'environment'"),
    ("deploy", "place applications with deployment.yml"),
    (
        "networks",
        "containers reach each other through links and published ports",
    ),
    (
        "network_mode",
        "containers reach each other through links and published ports",
    ),
    (
        "net",
        "containers reach each other through links and published ports",
    ),
    ("volumes_from", "each application has its own volume"),
    ("expose", "publish ports with 'ports'"),
    ("external_links", "link to services in this file"),
    ("extends", "write the settings out"),
    ("entrypoint", GENERIC),
    ("working_dir", GENERIC),
    ("user", GENERIC),
    ("hostname", GENERIC),
    ("domainname", GENERIC),
    ("privileged", GENERIC),
    ("dns", GENERIC),
    ("dns_search", GENERIC),
    ("healthcheck", GENERIC),
    ("labels", GENERIC),
    ("logging", GENERIC),
    ("extra_hosts", GENERIC),
    ("cap_add", GENERIC),
    ("cap_drop", GENERIC),
    ("devices", GENERIC),
    ("tmpfs", GENERIC),
    ("ulimits", GENERIC),
    ("stop_signal", GENERIC),
    ("stop_grace_period", GENERIC),
    ("memswap_limit", GENERIC),
    ("mem_reservation", GENERIC),
    ("cpuset", GENERIC),
    ("cpus", GENERIC),
    ("cpu_quota", GENERIC),
    ("cpu_period", GENERIC),
    ("shm_size", GENERIC),
    ("tty", GENERIC),
    ("stdin_open", GENERIC),
    ("read_only", GENERIC),
    ("security_opt", GENERIC),
    ("sysctls", GENERIC),
    ("pid", GENERIC),
    ("ipc", GENERIC),
    ("profiles", GENERIC),
    ("platform", GENERIC),
    ("init", GENERIC),
    ("pull_policy", GENERIC),
    ("scale", GENERIC),
    ("secrets", GENERIC),
    ("configs", GENERIC),
];

/// A compose file: `services:` and an optional `version`.
pub(crate) fn read_compose(
    sink: &mut Sink,
    entries: &[Entry],
    root_at: Position,
) -> BTreeMap<String, DraftApp> {
    let root = KeyPath::root();
    for entry in entries {
        if entry.key.starts_with("x-") {
            let message = format!("extension field '{}' is not supported", entry.key);
            sink.at(entry.key_at, &root.key(&entry.key), message);
        } else {
            read::check_key(sink, entry, &root, TOP_KEYS, TOP_UNSUPPORTED);
        }
    }
    if let Some(v) = read::get(entries, "version") {
        let p = root.key("version");
        if let Some(text) = read::text(sink, &v.value, &p, "a compose file version such as \"2\"") {
            if !is_compose_version(&text) {
                let message = format!(
                    "unsupported compose file version {}; flocker reads compose versions 2 and 3, or fig files with the services at the top level",
                    v.value.describe()
                );
                sink.at(v.value.at, &p, message);
            }
        }
    }
    let Some(services) = read::require(sink, entries, root_at, &root, "services") else {
        return BTreeMap::new();
    };
    let path = root.key("services");
    let Some(service_entries) = read::map(
        sink,
        &services.value,
        &path,
        "a map of service names to their settings",
    ) else {
        return BTreeMap::new();
    };
    apps::read_each(sink, service_entries, &path, read_service)
}

fn is_compose_version(text: &str) -> bool {
    let (major, minor) = match text.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (text, None),
    };
    matches!(major, "2" | "3")
        && minor
            .is_none_or(|m| !m.is_empty() && m.len() <= 2 && m.bytes().all(|b| b.is_ascii_digit()))
}

/// A fig file: every top-level key is a service.
pub(crate) fn read_fig(sink: &mut Sink, entries: &[Entry]) -> BTreeMap<String, DraftApp> {
    let root = KeyPath::root();
    let mut services = Vec::new();
    for entry in entries {
        // A misspelt `applications:` or `services:` would otherwise be read as
        // a service and produce a page of unrelated errors.
        let hint = did_you_mean(&entry.key, ["applications", "services", "version"]);
        if hint.is_empty() {
            services.push(entry.clone());
        } else {
            let message = format!("'{}' is read as a service name{hint}", entry.key);
            sink.at(entry.key_at, &root.key(&entry.key), message);
        }
    }
    apps::read_each(sink, &services, &root, read_service)
}

fn read_service(sink: &mut Sink, node: &Node, path: &KeyPath) -> DraftApp {
    let mut draft = DraftApp::new();
    let Some(entries) = read::map(sink, node, path, "a map of service settings") else {
        return draft;
    };
    read::check_keys(sink, entries, path, SERVICE_KEYS, SERVICE_UNSUPPORTED);
    if let Some(image) = read::require(sink, entries, node.at, path, "image") {
        if let Some(image) = apps::read_image(sink, &image.value, &path.key("image")) {
            draft.spec.image = image;
        }
    }
    for entry in entries {
        let p = path.key(&entry.key);
        let v = &entry.value;
        match entry.key.as_str() {
            "environment" => read_environment(sink, v, &p, &mut draft),
            "ports" => {
                for (text, mark) in apps::read_strings(sink, v, &p, "\"external:internal\" ports") {
                    match parse_port(&text) {
                        Ok(port) => {
                            draft.spec.ports.push(port);
                            draft.port_marks.push(mark);
                        }
                        Err(why) => sink.at(mark.at, &mark.path, why),
                    }
                }
            }
            "links" => {
                for (text, mark) in
                    apps::read_strings(sink, v, &p, "\"service\" or \"service:alias\" links")
                {
                    let (target, alias) = match text.split_once(':') {
                        Some((t, a)) => (t.to_string(), a.to_string()),
                        None => (text.clone(), text.clone()),
                    };
                    if let Err(why) = names::check_alias(&alias) {
                        sink.at(mark.at, &mark.path, why);
                        continue;
                    }
                    draft.links.push(DraftLink::ToApp {
                        target,
                        alias,
                        mark,
                    });
                }
            }
            "volumes" => read_volumes(sink, v, &p, &mut draft),
            "mem_limit" => draft.spec.mem_limit = read::size(sink, v, &p),
            "cpu_shares" => draft.spec.cpu_shares = apps::read_cpu_shares(sink, v, &p),
            "command" => draft.spec.command = read_command(sink, v, &p),
            "restart" => {
                if let Some(policy) = read_restart(sink, v, &p) {
                    draft.spec.restart_policy = policy;
                }
            }
            _ => {}
        }
    }
    if let Some(entry) = read::get(entries, "x-flocker") {
        read_x_flocker(sink, entry, &path.key("x-flocker"), &mut draft);
    }
    draft
}

/// The service's `x-flocker: {replicas: N, max_lag: 10s}`: how many copies
/// of its volume the cluster keeps (compose has no place for it).
fn read_x_flocker(sink: &mut Sink, entry: &Entry, path: &KeyPath, draft: &mut DraftApp) {
    let Some(entries) = read::map(
        sink,
        &entry.value,
        path,
        "a map with 'replicas' and optionally 'max_lag'",
    ) else {
        return;
    };
    read::check_keys(sink, entries, path, &["replicas", "max_lag"], &[]);
    let Some((replicas, max_lag_ms)) = apps::read_replication(sink, entries, path) else {
        return;
    };
    match &mut draft.spec.volume {
        Some(volume) => {
            volume.replicas = replicas;
            volume.max_lag_ms = max_lag_ms;
        }
        None => sink.at(
            entry.key_at,
            path,
            "replicas are copies of the service's volume: give it one under 'volumes' (a container path)"
                .to_string(),
        ),
    }
}

fn read_environment(sink: &mut Sink, node: &Node, path: &KeyPath, draft: &mut DraftApp) {
    match &node.value {
        Value::Map(entries) => {
            let over = entries.get(names::MAX_ENV_VARS).map(|e| apps::Mark {
                at: e.key_at,
                path: path.key(&e.key),
            });
            apps::check_env_count(sink, entries.len(), over);
            for e in entries {
                let p = path.key(&e.key);
                if let Err(why) = names::check_env_name(&e.key) {
                    sink.at(e.key_at, &p, why);
                    continue;
                }
                // Compose reads `KEY:` with no value as "take it from the
                // deploying shell"; a cluster has no such shell, so it is
                // empty, as Flocker made `KEY` in the list form.
                let value = if e.value.is_null() {
                    Some(String::new())
                } else {
                    apps::read_env_value(sink, &e.value, &p)
                };
                if let Some(value) = value {
                    draft.spec.environment.insert(e.key.clone(), value);
                }
            }
        }
        Value::Seq(_) => {
            let mut first_line = BTreeMap::new();
            let items = apps::read_strings(sink, node, path, "KEY=VALUE strings");
            let over = items.get(names::MAX_ENV_VARS).map(|(_, m)| m.clone());
            apps::check_env_count(sink, items.len(), over);
            for (text, mark) in items {
                let (name, value) = text.split_once('=').unwrap_or((text.as_str(), ""));
                let checked =
                    names::check_env_name(name).and_then(|()| names::check_env_value(value));
                if let Err(why) = checked {
                    sink.at(mark.at, &mark.path, why);
                    continue;
                }
                if let Some(line) = first_line.insert(name.to_string(), mark.at.line) {
                    let message = format!(
                        "environment variable '{name}' is set twice (first at line {line})"
                    );
                    sink.at(mark.at, &mark.path, message);
                    continue;
                }
                draft
                    .spec
                    .environment
                    .insert(name.to_string(), value.to_string());
            }
        }
        Value::Scalar(_) => {
            let message = format!(
                "expected a map of variables or a list of KEY=VALUE strings, got {}",
                node.describe()
            );
            sink.at(node.at, path, message);
        }
    }
}

/// `"8080:80"`, `"8080:80/tcp"` or `"53:53/udp"`: external port, then
/// internal, then the protocol (TCP unless given).
fn parse_port(text: &str) -> Result<PortMapping, String> {
    let spec = text.trim();
    let (spec, protocol) = match spec.rsplit_once('/') {
        Some((s, "tcp")) => (s, Protocol::Tcp),
        Some((s, "udp")) => (s, Protocol::Udp),
        Some((_, proto)) => {
            return Err(format!(
                "port '{text}': the protocol is tcp or udp, not '{proto}'"
            ));
        }
        None => (spec, Protocol::Tcp),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let port = |p: &str| -> Result<u16, String> {
        if p.contains('-') {
            return Err(format!("port '{text}': port ranges are not supported"));
        }
        p.parse::<u16>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("port '{text}': '{p}' is not a port number 1-65535"))
    };
    match parts.as_slice() {
        [external, internal] => Ok(PortMapping {
            external: port(external)?,
            internal: port(internal)?,
            protocol,
        }),
        [_] => Err(format!(
            "port '{text}': expected \"external:internal\" such as \"8080:80\"; flocker publishes a port only on a host port you choose"
        )),
        _ => Err(format!(
            "port '{text}': expected \"external:internal\"; binding to a host address is not supported"
        )),
    }
}

fn read_volumes(sink: &mut Sink, node: &Node, path: &KeyPath, draft: &mut DraftApp) {
    let Some(items) = read::seq(sink, node, path, "a list holding one container path") else {
        return;
    };
    if let Some(extra) = items.get(1) {
        let message = "only one volume per application is supported";
        sink.at(extra.at, &path.index(1), message);
    }
    let Some(first) = items.first() else {
        sink.at(
            node.at,
            path,
            "the list is empty; leave 'volumes' out for no volume",
        );
        return;
    };
    let p = path.index(0);
    let Some(text) = read::text(sink, first, &p, "a container path such as /var/lib/data") else {
        return;
    };
    if text.contains(':') {
        let message = format!(
            "'{text}' names a host path or a named volume; give only the container path: the cluster owns the volume and moves it with the application"
        );
        sink.at(first.at, &p, message);
        return;
    }
    if let Some(mountpoint) = read::check(
        sink,
        first,
        &p,
        names::check_mountpoint(&text).map(|()| text),
    ) {
        draft.spec.volume = Some(VolumeSpec::at(mountpoint));
    }
}

fn read_command(sink: &mut Sink, node: &Node, path: &KeyPath) -> Option<Vec<String>> {
    let words = match &node.value {
        Value::Seq(items) => {
            let words: Vec<String> = apps::read_strings(sink, node, path, "strings")
                .into_iter()
                .map(|(w, _)| w)
                .collect();
            if words.len() != items.len() {
                return None;
            }
            words
        }
        _ => {
            let text = read::text(sink, node, path, "a command string or a list of strings")?;
            match shlex::split(&text) {
                Some(words) => words,
                None => {
                    sink.at(
                        node.at,
                        path,
                        "the command has an unclosed quote or a trailing '\\'",
                    );
                    return None;
                }
            }
        }
    };
    apps::check_command(sink, node, path, words)
}

fn read_restart(sink: &mut Sink, node: &Node, path: &KeyPath) -> Option<RestartPolicy> {
    const EXPECTED: &str = "no, always, on-failure or on-failure:N";
    let text = read::text(sink, node, path, EXPECTED)?;
    let policy = match text.as_str() {
        "no" => Ok(RestartPolicy::Never),
        "always" => Ok(RestartPolicy::Always),
        "on-failure" => Ok(RestartPolicy::OnFailure {
            maximum_retry_count: None,
        }),
        "unless-stopped" => Err(
            "'unless-stopped' is not supported: the cluster, not Docker, decides when an application stops; use always"
                .to_string(),
        ),
        other => match other.strip_prefix("on-failure:").map(str::parse::<u32>) {
            Some(Ok(n)) if n > 0 => Ok(RestartPolicy::OnFailure {
                maximum_retry_count: Some(n),
            }),
            _ => Err(format!("expected {EXPECTED}, got {}", node.describe())),
        },
    };
    read::check(sink, node, path, policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_external_then_internal() {
        let tcp = |external, internal| PortMapping {
            external,
            internal,
            protocol: Protocol::Tcp,
        };
        assert_eq!(parse_port("8080:80"), Ok(tcp(8080, 80)));
        assert_eq!(parse_port("8080:80/tcp"), Ok(tcp(8080, 80)));
        assert_eq!(
            parse_port("53:5353/udp"),
            Ok(PortMapping {
                external: 53,
                internal: 5353,
                protocol: Protocol::Udp
            })
        );
        assert_eq!(
            parse_port("53:53/sctp"),
            Err("port '53:53/sctp': the protocol is tcp or udp, not 'sctp'".into())
        );
        assert!(parse_port("53:53/UDP").is_err());
        assert!(parse_port("80").unwrap_err().contains("external:internal"));
        assert!(parse_port("80/udp")
            .unwrap_err()
            .contains("external:internal"));
        assert!(parse_port("127.0.0.1:80:80")
            .unwrap_err()
            .contains("host address"));
        assert!(parse_port("8000-8001:80").unwrap_err().contains("ranges"));
        assert!(parse_port("0:80").is_err());
        assert!(parse_port("70000:80").is_err());
    }

    #[test]
    fn compose_versions() {
        for ok in ["2", "2.4", "3", "3.8"] {
            assert!(is_compose_version(ok), "{ok}");
        }
        for bad in ["1", "4", "2.", "3.x", ""] {
            assert!(!is_compose_version(bad), "{bad}");
        }
    }
}
